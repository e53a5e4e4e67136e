//! Following an accepted order to its end: what one read of `GET /api/orders/{id}` says
//! about the saga, timed by the order's own (server-side) timestamps.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// The row of the end table for orders that reached `CONFIRMED`.
pub const TO_CONFIRMED: &str = "saga: accepted → CONFIRMED";
/// The row of the end table for orders that reached `CANCELLED`.
pub const TO_CANCELLED: &str = "saga: accepted → CANCELLED";

/// What an order document says about its saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not ended yet, or a document this reader cannot make sense of (read it again).
    Pending,
    /// `CONFIRMED`, with the time from acceptance to the `confirm_order` step when the
    /// document carries both timestamps.
    Confirmed(Option<Duration>),
    /// `CANCELLED`, with the time from acceptance to the order's last change.
    Cancelled(Option<Duration>),
}

/// Reads an order document (`{status, steps:[{name, status, at}], created_at,
/// updated_at, …}`). Missing or malformed timestamps give an ending without a duration,
/// never a guess.
pub fn seen(order: &Value) -> Seen {
    match order["status"].as_str() {
        Some("CONFIRMED") => {
            let confirmed_at = order["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == "confirm_order")
                .and_then(|s| s["at"].as_str());
            Seen::Confirmed(between(order["created_at"].as_str(), confirmed_at))
        }
        Some("CANCELLED") => Seen::Cancelled(between(
            order["created_at"].as_str(),
            order["updated_at"].as_str(),
        )),
        _ => Seen::Pending,
    }
}

/// `to - from` of two RFC 3339 times; `None` if either is absent, unreadable or `to`
/// comes first.
fn between(from: Option<&str>, to: Option<&str>) -> Option<Duration> {
    let from: SystemTime = humantime::parse_rfc3339(from?).ok()?;
    let to: SystemTime = humantime::parse_rfc3339(to?).ok()?;
    to.duration_since(from).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order(status: &str, confirm_at: Value) -> Value {
        json!({
            "id": "0193",
            "status": status,
            "steps": [
                {"name": "reserve_stock", "status": "done", "at": "2026-12-01T10:00:00.050Z"},
                {"name": "authorize_payment", "status": "done", "at": "2026-12-01T10:00:00.120Z"},
                {"name": "confirm_order", "status": "done", "at": confirm_at},
                {"name": "capture_payment", "status": "pending", "at": null},
            ],
            "created_at": "2026-12-01T10:00:00.000Z",
            "updated_at": "2026-12-01T10:00:00.900Z",
        })
    }

    #[test]
    fn a_confirmed_order_is_timed_to_its_confirm_step() {
        let doc = order("CONFIRMED", json!("2026-12-01T10:00:00.250Z"));
        assert_eq!(
            seen(&doc),
            Seen::Confirmed(Some(Duration::from_millis(250)))
        );
    }

    #[test]
    fn a_cancelled_order_is_timed_to_its_last_change() {
        let doc = order("CANCELLED", Value::Null);
        assert_eq!(
            seen(&doc),
            Seen::Cancelled(Some(Duration::from_millis(900)))
        );
    }

    #[test]
    fn a_pending_order_or_an_unknown_status_is_read_again() {
        assert_eq!(seen(&order("PENDING", Value::Null)), Seen::Pending);
        assert_eq!(seen(&order("SHIPPED", Value::Null)), Seen::Pending);
        assert_eq!(seen(&json!({})), Seen::Pending);
        assert_eq!(seen(&Value::Null), Seen::Pending);
        assert_eq!(seen(&json!({"status": 3})), Seen::Pending);
    }

    #[test]
    fn missing_or_malformed_timestamps_give_no_sample() {
        for at in [
            Value::Null,
            json!(17),
            json!("yesterday"),
            json!("2026-13-01T10:00:00Z"),
            // Before the order was created: a clock oddity, not a negative duration.
            json!("2026-12-01T09:59:59.000Z"),
        ] {
            let doc = order("CONFIRMED", at.clone());
            assert_eq!(seen(&doc), Seen::Confirmed(None), "{at}");
        }
        let mut doc = order("CONFIRMED", json!("2026-12-01T10:00:00.250Z"));
        doc["created_at"] = Value::Null;
        assert_eq!(seen(&doc), Seen::Confirmed(None));
        doc["steps"] = json!("not a list");
        assert_eq!(seen(&doc), Seen::Confirmed(None));
        doc.as_object_mut().unwrap().remove("steps");
        assert_eq!(seen(&doc), Seen::Confirmed(None));
        let no_update = json!({"status": "CANCELLED", "created_at": "2026-12-01T10:00:00Z"});
        assert_eq!(seen(&no_update), Seen::Cancelled(None));
    }
}
