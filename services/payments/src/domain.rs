//! Payments' pure rules: money, card checks, and the payment state machine
//! (`authorized → captured → refunded`, `authorized → voided`). No I/O here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest amount accepted, in minor units: far beyond any real order, far below
/// where sums of refunds could overflow.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// A field of a request is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field (`amount_cents`, `card.number`).
    pub field: &'static str,
    /// What is wrong.
    pub message: &'static str,
}

fn invalid(field: &'static str, message: &'static str) -> Invalid {
    Invalid { field, message }
}

/// An amount of money: positive integer minor units and an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    /// Minor units (cents), `1..=MAX_AMOUNT`.
    pub cents: i64,
    /// Three upper-case letters.
    pub currency: String,
}

impl Money {
    /// Parses an amount; the errors name the fields `amount_cents` and `currency`.
    pub fn parse(cents: i64, currency: &str) -> Result<Self, Invalid> {
        if !(1..=MAX_AMOUNT).contains(&cents) {
            return Err(invalid("amount_cents", "between 1 and 1000000000000"));
        }
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(invalid(
                "currency",
                "an ISO 4217 code: three upper-case letters",
            ));
        }
        Ok(Self {
            cents,
            currency: currency.to_owned(),
        })
    }
}

/// A payment card as given by the client. Its `Debug` shows only the last four digits,
/// so a card can never reach a log in full.
#[derive(Clone, PartialEq, Eq)]
pub struct Card {
    number: String,
    /// Expiry month, 1–12.
    pub exp_month: u32,
    /// Expiry year, four digits.
    pub exp_year: u32,
}

impl fmt::Debug for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Card(**** {})", self.last4())
    }
}

/// The Luhn check digit test.
pub fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

impl Card {
    /// Checks a card: 12–19 digits passing Luhn, a CVC of 3–4 digits, and an expiry
    /// month that has not passed (`today` is `(year, month)`). Spaces in the number are
    /// ignored. The CVC is checked and dropped: it is never kept.
    pub fn parse(
        number: &str,
        exp_month: u32,
        exp_year: u32,
        cvc: &str,
        today: (u32, u32),
    ) -> Result<Self, Invalid> {
        let number: String = number.chars().filter(|c| *c != ' ').collect();
        if !(12..=19).contains(&number.len()) || !number.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid("card.number", "12 to 19 digits"));
        }
        if !luhn(&number) {
            return Err(invalid(
                "card.number",
                "not a valid card number (Luhn check)",
            ));
        }
        if !(1..=12).contains(&exp_month) {
            return Err(invalid("card.exp_month", "between 1 and 12"));
        }
        if !(2000..=2100).contains(&exp_year) {
            return Err(invalid("card.exp_year", "a four-digit year"));
        }
        if (exp_year, exp_month) < today {
            return Err(invalid("card.exp_year", "the card has expired"));
        }
        if !(3..=4).contains(&cvc.len()) || !cvc.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid("card.cvc", "3 or 4 digits"));
        }
        Ok(Self {
            number,
            exp_month,
            exp_year,
        })
    }

    /// The full number, for the provider only.
    pub fn number(&self) -> &str {
        &self.number
    }

    /// The last four digits: all that is ever stored.
    pub fn last4(&self) -> String {
        self.number[self.number.len() - 4..].to_owned()
    }
}

/// Where a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being authorized with the provider (a placeholder that keeps a concurrent
    /// duplicate from authorizing twice).
    Pending,
    /// Funds held.
    Authorized,
    /// Funds taken (possibly partly refunded).
    Captured,
    /// The hold was cancelled.
    Voided,
    /// Fully refunded.
    Refunded,
    /// The provider declined.
    Declined,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::Voided => "voided",
            Self::Refunded => "refunded",
            Self::Declined => "declined",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "authorized" => Self::Authorized,
            "captured" => Self::Captured,
            "voided" => Self::Voided,
            "refunded" => Self::Refunded,
            "declined" => Self::Declined,
            _ => return None,
        })
    }
}

/// A payment in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// UUIDv7.
    pub id: String,
    /// The order it pays for (one payment per order).
    pub order_id: String,
    /// The user who pays (may read it over REST).
    pub user_id: String,
    /// Minor units.
    pub amount_cents: i64,
    /// ISO 4217.
    pub currency: String,
    /// Where it is.
    pub status: Status,
    /// Minor units refunded so far.
    pub refunded_cents: i64,
    /// The card's last four digits.
    pub card_last4: String,
    /// Why the provider declined, for declined payments.
    pub decline_reason: Option<String>,
    /// The provider's reference for the authorization.
    pub provider_ref: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// An operation on an existing payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Take the held funds.
    Capture,
    /// Cancel the hold.
    Void,
    /// Give back part or all of a captured amount.
    Refund(Money),
}

/// An illegal transition or amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The payment is not in a state that allows the operation.
    #[error("a {} payment cannot be {}", .status.as_str(), .operation)]
    IllegalTransition {
        /// Its state.
        status: Status,
        /// The operation's past participle (`captured`).
        operation: &'static str,
    },
    /// The refund's currency is not the payment's.
    #[error("the payment is in {payment}, the refund in {refund}")]
    CurrencyMismatch {
        /// The payment's currency.
        payment: String,
        /// The refund's currency.
        refund: String,
    },
    /// The refund exceeds what remains captured.
    #[error("only {remaining} can still be refunded")]
    RefundTooLarge {
        /// Minor units left to refund.
        remaining: i64,
    },
}

/// What an operation does to a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing: it already happened (a repeated capture or void).
    None,
    /// Move to `status` with `refunded_cents` refunded in total.
    Apply {
        /// The new status.
        status: Status,
        /// The new refunded total.
        refunded_cents: i64,
    },
}

/// The state machine: capture and void only from `authorized` (repeating the one that
/// happened is a no-op), refunds only of captured money, in its currency, up to the
/// captured amount; a full refund makes the payment `refunded`.
pub fn apply(p: &Payment, op: &Operation) -> Result<Effect, Refusal> {
    use Status as S;
    let illegal = |operation| Refusal::IllegalTransition {
        status: p.status,
        operation,
    };
    match (op, p.status) {
        (Operation::Capture, S::Authorized) => Ok(Effect::Apply {
            status: S::Captured,
            refunded_cents: 0,
        }),
        (Operation::Capture, S::Captured) => Ok(Effect::None),
        (Operation::Capture, _) => Err(illegal("captured")),
        (Operation::Void, S::Authorized) => Ok(Effect::Apply {
            status: S::Voided,
            refunded_cents: 0,
        }),
        (Operation::Void, S::Voided) => Ok(Effect::None),
        (Operation::Void, _) => Err(illegal("voided")),
        (Operation::Refund(m), S::Captured) => {
            if m.currency != p.currency {
                return Err(Refusal::CurrencyMismatch {
                    payment: p.currency.clone(),
                    refund: m.currency.clone(),
                });
            }
            let remaining = p.amount_cents - p.refunded_cents;
            if m.cents > remaining {
                return Err(Refusal::RefundTooLarge { remaining });
            }
            let refunded_cents = p.refunded_cents + m.cents;
            Ok(Effect::Apply {
                status: if refunded_cents == p.amount_cents {
                    S::Refunded
                } else {
                    S::Captured
                },
                refunded_cents,
            })
        }
        (Operation::Refund(_), _) => Err(illegal("refunded")),
    }
}

/// Today as `(year, month)` in UTC, for card expiry checks.
pub fn this_month() -> (u32, u32) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let year = now[0..4].parse().unwrap_or(2000);
    let month = now[5..7].parse().unwrap_or(1);
    (year, month)
}

/// Now as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TODAY: (u32, u32) = (2026, 11);

    #[test]
    fn cards_are_checked_and_never_shown() {
        let card = Card::parse("4242 4242 4242 4242", 12, 2030, "123", TODAY).unwrap();
        assert_eq!(card.last4(), "4242");
        assert_eq!(format!("{card:?}"), "Card(**** 4242)");
        let field = |r: Result<Card, Invalid>| r.unwrap_err().field;
        assert_eq!(
            field(Card::parse("4242424242424241", 12, 2030, "123", TODAY)),
            "card.number"
        );
        assert_eq!(
            field(Card::parse("42424242abcd", 12, 2030, "123", TODAY)),
            "card.number"
        );
        assert_eq!(
            field(Card::parse("4242424242424242", 13, 2030, "123", TODAY)),
            "card.exp_month"
        );
        assert_eq!(
            field(Card::parse("4242424242424242", 10, 2026, "123", TODAY)),
            "card.exp_year"
        );
        assert!(Card::parse("4242424242424242", 11, 2026, "123", TODAY).is_ok());
        assert_eq!(
            field(Card::parse("4242424242424242", 12, 2030, "12", TODAY)),
            "card.cvc"
        );
        for test_card in ["4000000000000002", "4000000000009995", "4000000000000119"] {
            assert!(luhn(test_card), "{test_card}");
        }
    }

    #[test]
    fn money_is_checked() {
        assert_eq!(Money::parse(0, "EUR").unwrap_err().field, "amount_cents");
        assert_eq!(Money::parse(-5, "EUR").unwrap_err().field, "amount_cents");
        assert_eq!(
            Money::parse(MAX_AMOUNT + 1, "EUR").unwrap_err().field,
            "amount_cents"
        );
        assert_eq!(Money::parse(5, "eur").unwrap_err().field, "currency");
        assert!(Money::parse(5, "EUR").is_ok());
    }

    fn payment(status: Status) -> Payment {
        Payment {
            id: "p".into(),
            order_id: "o".into(),
            user_id: "u".into(),
            amount_cents: 1000,
            currency: "EUR".into(),
            status,
            refunded_cents: 0,
            card_last4: "4242".into(),
            decline_reason: None,
            provider_ref: None,
            created_at: String::new(),
        }
    }

    #[test]
    fn illegal_transitions_are_refused() {
        let eur = |c| Operation::Refund(Money::parse(c, "EUR").unwrap());
        assert!(apply(&payment(Status::Authorized), &eur(10)).is_err());
        assert!(apply(&payment(Status::Voided), &Operation::Capture).is_err());
        assert!(apply(&payment(Status::Captured), &Operation::Void).is_err());
        assert!(apply(&payment(Status::Declined), &Operation::Capture).is_err());
        assert_eq!(
            apply(&payment(Status::Captured), &Operation::Capture),
            Ok(Effect::None)
        );
        assert!(matches!(
            apply(
                &payment(Status::Captured),
                &Operation::Refund(Money::parse(10, "USD").unwrap())
            ),
            Err(Refusal::CurrencyMismatch { .. })
        ));
        assert!(matches!(
            apply(&payment(Status::Captured), &eur(1001)),
            Err(Refusal::RefundTooLarge { remaining: 1000 })
        ));
    }

    fn op() -> impl Strategy<Value = Operation> {
        prop_oneof![
            Just(Operation::Capture),
            Just(Operation::Void),
            (1i64..600, prop_oneof![Just("EUR"), Just("USD")])
                .prop_map(|(c, cur)| Operation::Refund(Money::parse(c, cur).unwrap())),
        ]
    }

    proptest! {
        /// Whatever is attempted: only the allowed edges are taken, voided and refunded
        /// are final, and refunds never exceed the captured amount.
        #[test]
        fn the_state_machine_holds(ops in prop::collection::vec(op(), 0..30)) {
            let mut p = payment(Status::Authorized);
            for op in ops {
                let before = p.status;
                if let Ok(Effect::Apply { status, refunded_cents }) = apply(&p, &op) {
                    let allowed = matches!(
                        (before, status),
                        (Status::Authorized, Status::Captured)
                            | (Status::Authorized, Status::Voided)
                            | (Status::Captured, Status::Captured)
                            | (Status::Captured, Status::Refunded)
                    );
                    prop_assert!(allowed, "{before:?} -> {status:?}");
                    prop_assert!(refunded_cents >= p.refunded_cents);
                    p.status = status;
                    p.refunded_cents = refunded_cents;
                }
                prop_assert!(p.refunded_cents <= p.amount_cents);
                prop_assert_eq!(p.status == Status::Refunded, p.refunded_cents == p.amount_cents);
                if matches!(before, Status::Voided | Status::Refunded) {
                    prop_assert_eq!(p.status, before);
                }
            }
        }
    }
}
