//! What each consumed event means as an email: pure rules, no I/O.
//!
//! [`Notice::from_event`] reads an event's data (the shapes auth, orders and payments
//! publish), [`render`] turns a notice and its recipient into a subject and a plain-text
//! body.

use serde_json::Value;

/// The subjects notifications follows.
pub const SUBJECTS: &[&str] = &[
    "users.registered",
    "orders.confirmed",
    "orders.cancelled",
    "payments.refunded",
];

/// An event that names a subject we mail about but lacks what the email needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject}: {message}")]
pub struct BadEvent {
    /// The subject.
    pub subject: String,
    /// What is missing or wrong.
    pub message: String,
}

/// Something that happened to a user and deserves an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `users.registered`: a new account (the event carries the address).
    Welcome {
        /// The new user.
        user_id: String,
        /// Their email address.
        email: String,
        /// Their display name.
        name: String,
    },
    /// `orders.confirmed`.
    OrderConfirmed {
        /// The buyer.
        user_id: String,
        /// The order.
        order_id: String,
        /// The order total in cents.
        total_cents: i64,
        /// ISO 4217.
        currency: String,
        /// `(sku, quantity)` per line.
        items: Vec<(String, u64)>,
    },
    /// `orders.cancelled`.
    OrderCancelled {
        /// The buyer.
        user_id: String,
        /// The order.
        order_id: String,
        /// Why, as orders says it.
        reason: String,
    },
    /// `payments.refunded`.
    PaymentRefunded {
        /// The payer.
        user_id: String,
        /// The order paid.
        order_id: String,
        /// The refund in cents.
        refund_cents: i64,
        /// ISO 4217.
        currency: String,
    },
}

fn text<'a>(subject: &str, data: &'a Value, key: &str) -> Result<&'a str, BadEvent> {
    match data.get(key).and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(BadEvent {
            subject: subject.to_owned(),
            message: format!("`{key}` is missing or not a string"),
        }),
    }
}

fn cents(subject: &str, data: &Value, key: &str) -> Result<i64, BadEvent> {
    data.get(key)
        .and_then(Value::as_i64)
        .ok_or_else(|| BadEvent {
            subject: subject.to_owned(),
            message: format!("`{key}` is missing or not an integer"),
        })
}

impl Notice {
    /// The notice an event on `subject` stands for; `Ok(None)` for a subject that sends
    /// no email.
    pub fn from_event(subject: &str, data: &Value) -> Result<Option<Self>, BadEvent> {
        let s = subject;
        let notice = match subject {
            "users.registered" => Self::Welcome {
                user_id: text(s, data, "userId")?.to_owned(),
                email: text(s, data, "email")?.to_owned(),
                name: data
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            },
            "orders.confirmed" => Self::OrderConfirmed {
                user_id: text(s, data, "userId")?.to_owned(),
                order_id: text(s, data, "orderId")?.to_owned(),
                total_cents: cents(s, data, "total_cents")?,
                currency: text(s, data, "currency")?.to_owned(),
                items: data
                    .get("items")
                    .and_then(Value::as_array)
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|i| {
                                Some((
                                    i.get("sku")?.as_str()?.to_owned(),
                                    i.get("quantity")?.as_u64()?,
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            "orders.cancelled" => Self::OrderCancelled {
                user_id: text(s, data, "userId")?.to_owned(),
                order_id: text(s, data, "orderId")?.to_owned(),
                reason: data
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("cancelled")
                    .to_owned(),
            },
            "payments.refunded" => Self::PaymentRefunded {
                user_id: text(s, data, "userId")?.to_owned(),
                order_id: text(s, data, "orderId")?.to_owned(),
                refund_cents: cents(s, data, "refund_cents")
                    .or_else(|_| cents(s, data, "refunded_cents"))?,
                currency: text(s, data, "currency")?.to_owned(),
            },
            _ => return Ok(None),
        };
        Ok(Some(notice))
    }

    /// The user it is about.
    pub fn user_id(&self) -> &str {
        match self {
            Self::Welcome { user_id, .. }
            | Self::OrderConfirmed { user_id, .. }
            | Self::OrderCancelled { user_id, .. }
            | Self::PaymentRefunded { user_id, .. } => user_id,
        }
    }

    /// A stable name of the message's kind (`welcome`, `order_confirmed`…).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Welcome { .. } => "welcome",
            Self::OrderConfirmed { .. } => "order_confirmed",
            Self::OrderCancelled { .. } => "order_cancelled",
            Self::PaymentRefunded { .. } => "payment_refunded",
        }
    }

    /// The recipient the event itself names (only `users.registered` carries one).
    pub fn own_recipient(&self) -> Option<Recipient> {
        match self {
            Self::Welcome { email, name, .. } => Some(Recipient {
                email: email.clone(),
                name: name.clone(),
            }),
            _ => None,
        }
    }
}

/// Who an email goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address.
    pub email: String,
    /// The display name (may be empty).
    pub name: String,
}

/// An email's subject and plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line (one line, no control characters).
    pub subject: String,
    /// The body.
    pub body: String,
}

/// `1234` cents in `EUR` as `12.34 EUR`.
pub fn money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
}

/// Keeps a value from an event safe for a header line: no control characters (a CR or
/// LF would start a new header), at most 200 characters.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The subject and body of the email for `notice` to `to`.
pub fn render(notice: &Notice, to: &Recipient) -> Rendered {
    let hello = match one_line(&to.name) {
        n if n.is_empty() => "Hello,".to_owned(),
        n => format!("Hello {n},"),
    };
    let (subject, text) = match notice {
        Notice::Welcome { .. } => (
            "Welcome to Flotilla".to_owned(),
            "your account is ready. Sign in any time to browse the fleet and place orders."
                .to_owned(),
        ),
        Notice::OrderConfirmed {
            order_id,
            total_cents,
            currency,
            items,
            ..
        } => {
            let mut lines = format!(
                "your order {} is confirmed. Total: {}.\n",
                one_line(order_id),
                money(*total_cents, currency)
            );
            for (sku, quantity) in items {
                lines.push_str(&format!("\n  {quantity} x {}", one_line(sku)));
            }
            (format!("Order {} confirmed", one_line(order_id)), lines)
        }
        Notice::OrderCancelled {
            order_id, reason, ..
        } => (
            format!("Order {} cancelled", one_line(order_id)),
            format!(
                "your order {} was cancelled ({}). Nothing was charged, or the charge was refunded.",
                one_line(order_id),
                one_line(reason)
            ),
        ),
        Notice::PaymentRefunded {
            order_id,
            refund_cents,
            currency,
            ..
        } => (
            format!("Refund for order {}", one_line(order_id)),
            format!(
                "we refunded {} for your order {}. It reaches your card within a few days.",
                money(*refund_cents, currency),
                one_line(order_id)
            ),
        ),
    };
    Rendered {
        subject,
        body: format!("{hello}\n\n{text}\n\n-- \nFlotilla\n"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ada() -> Recipient {
        Recipient {
            email: "ada@example.com".into(),
            name: "Ada".into(),
        }
    }

    #[test]
    fn reads_the_events_producers_publish() {
        let welcome = Notice::from_event(
            "users.registered",
            &json!({"userId": "u1", "email": "ada@example.com", "name": "Ada", "timestamp": "t"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(welcome.kind(), "welcome");
        assert_eq!(welcome.own_recipient(), Some(ada()));

        let confirmed = Notice::from_event(
            "orders.confirmed",
            &json!({"orderId": "o1", "userId": "u1", "items": [{"sku": "FLT-1", "quantity": 2}],
                    "total_cents": 2500, "currency": "EUR", "timestamp": "t"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(confirmed.user_id(), "u1");
        assert_eq!(confirmed.own_recipient(), None);

        let refunded = Notice::from_event(
            "payments.refunded",
            &json!({"paymentId": "p1", "orderId": "o1", "userId": "u1", "amount_cents": 900,
                    "currency": "EUR", "refunded_cents": 900, "refund_cents": 400}),
        )
        .unwrap()
        .unwrap();
        assert!(matches!(
            refunded,
            Notice::PaymentRefunded {
                refund_cents: 400,
                ..
            }
        ));
    }

    #[test]
    fn other_subjects_send_nothing_and_bad_data_is_named() {
        assert_eq!(
            Notice::from_event("orders.created", &json!({})).unwrap(),
            None
        );
        let e = Notice::from_event("orders.confirmed", &json!({"orderId": "o1"})).unwrap_err();
        assert!(e.message.contains("userId"), "{e}");
        let e = Notice::from_event("users.registered", &json!({"userId": "u", "email": 5}))
            .unwrap_err();
        assert!(e.message.contains("email"), "{e}");
    }

    #[test]
    fn renders_each_kind() {
        let n = Notice::OrderConfirmed {
            user_id: "u1".into(),
            order_id: "o1".into(),
            total_cents: 12_345,
            currency: "EUR".into(),
            items: vec![("FLT-BOAT-002".into(), 3)],
        };
        let r = render(&n, &ada());
        assert_eq!(r.subject, "Order o1 confirmed");
        assert!(r.body.starts_with("Hello Ada,\n"), "{}", r.body);
        assert!(r.body.contains("123.45 EUR"), "{}", r.body);
        assert!(r.body.contains("3 x FLT-BOAT-002"), "{}", r.body);

        let r = render(
            &Notice::OrderCancelled {
                user_id: "u1".into(),
                order_id: "o1".into(),
                reason: "payment declined".into(),
            },
            &Recipient {
                email: "x@example.com".into(),
                name: String::new(),
            },
        );
        assert!(r.body.starts_with("Hello,\n"));
        assert!(r.body.contains("payment declined"));
    }

    #[test]
    fn event_values_cannot_inject_header_lines() {
        let n = Notice::OrderCancelled {
            user_id: "u1".into(),
            order_id: "o1\r\nBcc: victim@example.com".into(),
            reason: "x".into(),
        };
        let r = render(&n, &ada());
        assert!(!r.subject.contains('\n') && !r.subject.contains('\r'));
    }

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(money(5, "EUR"), "0.05 EUR");
        assert_eq!(money(100, "EUR"), "1.00 EUR");
        assert_eq!(money(-250, "USD"), "-2.50 USD");
        assert_eq!(money(i64::MIN, "EUR"), "-92233720368547758.08 EUR");
    }
}
