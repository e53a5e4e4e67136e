//! What inventory publishes, through its outbox in the same transaction (SQLite) or Lua
//! script (Redis) as the change:
//! `inventory.reserved` when an order's stock is held, `inventory.released` when it is
//! returned (released by the saga, or expired by the sweeper: `reason`), and
//! `inventory.low_stock` when a reservation leaves a product at or below
//! [`LOW_STOCK`] units available.

use kit_events::Event;
use serde_json::json;

use crate::domain::{Line, Reservation, ReservationStatus};

/// The `source` of every event inventory publishes.
pub const SOURCE: &str = "inventory";

/// Units available at or below which a reservation announces `inventory.low_stock`.
pub const LOW_STOCK: i64 = 5;

fn lines(lines: &[Line]) -> serde_json::Value {
    lines
        .iter()
        .map(|l| json!({"sku": l.sku.as_str(), "quantity": l.quantity}))
        .collect()
}

/// `inventory.reserved` for a new reservation.
pub fn reserved(r: &Reservation) -> (&'static str, Event) {
    let subject = "inventory.reserved";
    let data = json!({
        "orderId": r.order_id,
        "items": lines(&r.lines),
        "expires_at_ms": r.expires_at_ms,
    });
    (subject, Event::new(SOURCE, subject, data))
}

/// `inventory.released` for a reservation whose stock went back (`reason`: `released`
/// or `expired`).
pub fn released(order_id: &str, held: &[Line], reason: &str) -> (&'static str, Event) {
    let subject = "inventory.released";
    let data = json!({"orderId": order_id, "items": lines(held), "reason": reason});
    (subject, Event::new(SOURCE, subject, data))
}

/// The event of a held reservation's move to `to`: `inventory.released` when its stock
/// went back (`reason` `released` or `expired`), none for a commit.
pub fn transition(
    order_id: &str,
    held: &[Line],
    to: ReservationStatus,
) -> Option<(&'static str, Event)> {
    let reason = match to {
        ReservationStatus::Released => "released",
        ReservationStatus::Expired => "expired",
        _ => return None,
    };
    Some(released(order_id, held, reason))
}

/// `inventory.low_stock` when `available` units of `sku` are left, if that is low.
pub fn low_stock(sku: &str, available: i64) -> Option<(&'static str, Event)> {
    (available <= LOW_STOCK).then(|| low_stock_event(sku, available))
}

/// `inventory.low_stock` for `sku` at `available` units, low or not: what a store that
/// learns the units left only inside its atomic change (the Redis scripts) completes
/// and keeps when they are at or below `data.threshold`.
pub fn low_stock_event(sku: &str, available: i64) -> (&'static str, Event) {
    let subject = "inventory.low_stock";
    let data = json!({"sku": sku, "available": available, "threshold": LOW_STOCK});
    (subject, Event::new(SOURCE, subject, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Sku;

    #[test]
    fn events_carry_the_order_and_lines() {
        let r = Reservation {
            order_id: "o1".into(),
            lines: vec![Line {
                sku: Sku::parse("FLT-BOAT-001").unwrap(),
                quantity: 2,
            }],
            status: ReservationStatus::Reserved,
            expires_at_ms: 10,
        };
        let (s, e) = reserved(&r);
        assert_eq!(s, "inventory.reserved");
        assert_eq!(e.data["items"][0]["sku"], "FLT-BOAT-001");
        assert_eq!(e.data["items"][0]["quantity"], 2);
        let (s, e) = released("o1", &r.lines, "expired");
        assert_eq!(s, "inventory.released");
        assert_eq!(e.data["reason"], "expired");
        let (_, e) = transition("o1", &r.lines, ReservationStatus::Released).unwrap();
        assert_eq!(e.data["reason"], "released");
        assert!(transition("o1", &r.lines, ReservationStatus::Committed).is_none());
    }

    #[test]
    fn low_stock_only_at_or_below_the_threshold() {
        assert!(low_stock("A", LOW_STOCK + 1).is_none());
        assert_eq!(
            low_stock("A", LOW_STOCK).unwrap().1.data["available"],
            LOW_STOCK
        );
        assert!(low_stock("A", 0).is_some());
    }
}
