//! What payments publishes, through its outbox in the same transaction as the change:
//! `payments.authorized`, `payments.declined`, `payments.captured`, `payments.voided`
//! and `payments.refunded`, each with the payment as it is after the change.

use kit_events::Event;
use serde_json::json;

use crate::domain::{Payment, Status, now_rfc3339};

/// The `source` of every event payments publishes.
pub const SOURCE: &str = "payments";

/// The event of an authorization's outcome; none for a status that is not one.
pub fn authorization(p: &Payment) -> Option<(&'static str, Event)> {
    let subject = match p.status {
        Status::Authorized => "payments.authorized",
        Status::Declined => "payments.declined",
        _ => return None,
    };
    Some((subject, event(subject, p, None)))
}

/// The event of an operation (`capture`, `void`, `refund` of `amount_cents`) that left
/// the payment as `p`.
pub fn operation(kind: &str, amount_cents: i64, p: &Payment) -> Option<(&'static str, Event)> {
    let subject = match kind {
        "capture" => "payments.captured",
        "void" => "payments.voided",
        "refund" => "payments.refunded",
        _ => return None,
    };
    let refund = (kind == "refund").then_some(amount_cents);
    Some((subject, event(subject, p, refund)))
}

fn event(subject: &str, p: &Payment, refund_cents: Option<i64>) -> Event {
    let mut data = json!({
        "paymentId": p.id,
        "orderId": p.order_id,
        "userId": p.user_id,
        "amount_cents": p.amount_cents,
        "currency": p.currency,
        "status": p.status.as_str(),
        "refunded_cents": p.refunded_cents,
        "timestamp": now_rfc3339(),
    });
    if let Some(reason) = &p.decline_reason {
        data["reason"] = json!(reason);
    }
    if let Some(cents) = refund_cents {
        data["refund_cents"] = json!(cents);
    }
    Event::new(SOURCE, subject, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(status: Status) -> Payment {
        Payment {
            id: "p1".into(),
            order_id: "o1".into(),
            user_id: "u1".into(),
            amount_cents: 1500,
            currency: "EUR".into(),
            status,
            refunded_cents: 0,
            card_last4: "4242".into(),
            decline_reason: (status == Status::Declined).then(|| "card_declined".into()),
            provider_ref: None,
            created_at: now_rfc3339(),
        }
    }

    #[test]
    fn authorization_outcomes_have_their_subjects() {
        let (s, e) = authorization(&payment(Status::Authorized)).unwrap();
        assert_eq!(s, "payments.authorized");
        assert_eq!(e.data["orderId"], "o1");
        assert_eq!(e.data["amount_cents"], 1500);
        let (s, e) = authorization(&payment(Status::Declined)).unwrap();
        assert_eq!(s, "payments.declined");
        assert_eq!(e.data["reason"], "card_declined");
        assert!(authorization(&payment(Status::Pending)).is_none());
    }

    #[test]
    fn operations_have_their_subjects() {
        let p = payment(Status::Captured);
        assert_eq!(
            operation("capture", 1500, &p).unwrap().0,
            "payments.captured"
        );
        let (s, e) = operation("refund", 500, &p).unwrap();
        assert_eq!(s, "payments.refunded");
        assert_eq!(e.data["refund_cents"], 500);
        assert_eq!(operation("void", 0, &p).unwrap().0, "payments.voided");
        assert!(operation("other", 0, &p).is_none());
    }
}
