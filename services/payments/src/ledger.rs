//! The payment operations the gRPC API offers, over the ledger and the provider:
//! validation, idempotency, the state machine and the provider calls in one place.

use std::sync::Arc;

use crate::domain::{
    Card, Effect, Invalid, Money, Operation, Payment, Refusal, Status, apply, now_rfc3339,
};
use crate::provider::{Authorization, PaymentProvider};
use crate::store::{Applied, Begin, Change, Ledger, LedgerError};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// A field is invalid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No such payment.
    #[error("no payment {0:?}")]
    NotFound(String),
    /// The state machine refuses.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The order already has a payment for another amount or currency.
    #[error("order {0:?} already has a payment for another amount")]
    OrderMismatch(String),
    /// Another call for the same order is still talking to the provider.
    #[error("a payment for order {0:?} is being authorized; retry")]
    InProgress(String),
    /// The provider failed retryably.
    #[error(transparent)]
    Provider(#[from] crate::provider::ProviderUnavailable),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What `Authorize` needs.
#[derive(Debug, Clone)]
pub struct AuthorizeInput {
    /// The order paid for.
    pub order_id: String,
    /// The paying user.
    pub user_id: String,
    /// How much.
    pub amount: Money,
    /// With what.
    pub card: Card,
    /// The caller's idempotency key.
    pub idempotency_key: String,
}

fn check_id(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > max || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Invalid {
            field,
            message: "printable ASCII, not empty, not too long",
        });
    }
    Ok(())
}

/// Checks the identifiers of an authorization.
pub fn check_authorize_ids(order_id: &str, user_id: &str, key: &str) -> Result<(), Invalid> {
    check_id("order_id", order_id, 128)?;
    check_id("user_id", user_id, 128)?;
    check_id("idempotency_key", key, 255)
}

/// Payments over a ledger and a provider.
#[derive(Clone)]
pub struct Payments {
    ledger: Arc<dyn Ledger>,
    provider: Arc<dyn PaymentProvider>,
}

impl Payments {
    /// Payments kept in `ledger`, processed by `provider`.
    pub fn new(ledger: Arc<dyn Ledger>, provider: Arc<dyn PaymentProvider>) -> Self {
        Self { ledger, provider }
    }

    /// The ledger (for the REST reads).
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// Authorizes once per order: a repeated call returns the first outcome (approved or
    /// declined) without calling the provider again.
    pub async fn authorize(&self, input: AuthorizeInput) -> Result<Payment, PaymentError> {
        check_authorize_ids(&input.order_id, &input.user_id, &input.idempotency_key)?;
        let pending = Payment {
            id: uuid::Uuid::now_v7().to_string(),
            order_id: input.order_id.clone(),
            user_id: input.user_id.clone(),
            amount_cents: input.amount.cents,
            currency: input.amount.currency.clone(),
            status: Status::Pending,
            refunded_cents: 0,
            card_last4: input.card.last4(),
            decline_reason: None,
            provider_ref: None,
            created_at: now_rfc3339(),
        };
        let id = pending.id.clone();
        match self.ledger.begin(pending, input.idempotency_key).await? {
            Begin::Existing(p) => {
                if p.amount_cents != input.amount.cents || p.currency != input.amount.currency {
                    Err(PaymentError::OrderMismatch(input.order_id))
                } else if p.status == Status::Pending {
                    Err(PaymentError::InProgress(input.order_id))
                } else {
                    Ok(*p)
                }
            }
            Begin::Started => match self.provider.authorize(&input.card, &input.amount).await {
                Ok(Authorization::Approved(reference)) => Ok(self
                    .ledger
                    .complete(id, Status::Authorized, Some(reference), None)
                    .await?),
                Ok(Authorization::Declined(reason)) => Ok(self
                    .ledger
                    .complete(id, Status::Declined, None, Some(reason))
                    .await?),
                Err(e) => {
                    self.ledger.abandon(id).await?;
                    Err(e.into())
                }
            },
        }
    }

    /// Captures, voids or refunds, once per idempotency key; repeating a capture or void
    /// that happened is a no-op.
    pub async fn operate(
        &self,
        payment_id: &str,
        key: &str,
        op: Operation,
    ) -> Result<Payment, PaymentError> {
        check_id("payment_id", payment_id, 64)?;
        check_id("idempotency_key", key, 255)?;
        // A lost compare-and-set means another call changed the payment: decide again.
        for _ in 0..8 {
            let p = self
                .ledger
                .get(payment_id.to_owned())
                .await?
                .ok_or_else(|| PaymentError::NotFound(payment_id.to_owned()))?;
            if self.ledger.seen(p.id.clone(), key.to_owned()).await? {
                return Ok(p);
            }
            let (status, refunded_cents) = match apply(&p, &op)? {
                Effect::None => return Ok(p),
                Effect::Apply {
                    status,
                    refunded_cents,
                } => (status, refunded_cents),
            };
            let reference = p.provider_ref.clone().unwrap_or_default();
            let (kind, amount) = match &op {
                Operation::Capture => {
                    self.provider.capture(&reference).await?;
                    ("capture", p.amount_cents)
                }
                Operation::Void => {
                    self.provider.void(&reference).await?;
                    ("void", 0)
                }
                Operation::Refund(m) => {
                    self.provider.refund(&reference, m).await?;
                    ("refund", m.cents)
                }
            };
            let change = Change {
                payment_id: p.id.clone(),
                from_status: p.status,
                from_refunded: p.refunded_cents,
                status,
                refunded_cents,
                operation: Some((kind, key.to_owned(), amount)),
            };
            match self.ledger.apply(change).await? {
                Applied::Done(p) => return Ok(*p),
                Applied::Duplicate | Applied::Lost => continue,
            }
        }
        Err(LedgerError("the payment keeps changing; retry".into()).into())
    }
}
