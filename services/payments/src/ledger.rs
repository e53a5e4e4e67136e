//! The payment operations the gRPC API offers, over the ledger and the provider:
//! validation, idempotency, the state machine and the provider calls in one place.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{
    Card, Effect, Invalid, Money, Operation, Payment, Refusal, Status, apply, now_rfc3339,
};
use crate::provider::{Lookup, PaymentProvider};
use crate::reconcile::{self, Resolved};
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

impl AuthorizeInput {
    /// The claim recorded for this authorization before the provider is called: a
    /// `pending` payment with a fresh id (the provider's idempotency key).
    pub fn claim(&self) -> Payment {
        Payment {
            id: uuid::Uuid::now_v7().to_string(),
            order_id: self.order_id.clone(),
            user_id: self.user_id.clone(),
            amount_cents: self.amount.cents,
            currency: self.amount.currency.clone(),
            status: Status::Pending,
            refunded_cents: 0,
            card_last4: self.card.last4(),
            decline_reason: None,
            provider_ref: None,
            created_at: now_rfc3339(),
        }
    }
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
    stale_after: Duration,
}

impl Payments {
    /// Payments kept in `ledger`, processed by `provider`; a pending claim counts as
    /// stale after [`reconcile::DEFAULT_STALE_AFTER`].
    pub fn new(ledger: Arc<dyn Ledger>, provider: Arc<dyn PaymentProvider>) -> Self {
        Self {
            ledger,
            provider,
            stale_after: reconcile::DEFAULT_STALE_AFTER,
        }
    }

    /// The same, with pending claims older than `stale_after` resolved by asking the
    /// provider (by a retried `Authorize` and by the [`reconcile::Reconciler`]).
    pub fn with_stale_after(mut self, stale_after: Duration) -> Self {
        self.stale_after = stale_after;
        self
    }

    /// The ledger (for the REST reads).
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn PaymentProvider> {
        &self.provider
    }

    /// How old a pending claim must be before it is resolved by asking the provider.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// Authorizes once per order: a repeated call returns the first outcome (approved or
    /// declined) without placing a second hold.
    ///
    /// The payment is first claimed (`pending`), then the provider is asked with the
    /// payment's id as its idempotency key, then the answer is recorded. A repeated call
    /// that finds the claim still pending gets [`PaymentError::InProgress`] while the
    /// claim is younger than [`Self::stale_after`]; once it is older (its process
    /// probably died mid-call) the call resolves it at once, as the reconciler would
    /// ([`reconcile::resolve`]): the answer the provider has for the key is recorded and
    /// returned, or, if the provider has no record, the claim is released and this call
    /// starts afresh. Every resolution is compare-and-set on `pending`, so concurrent
    /// callers and sweepers record one outcome.
    pub async fn authorize(&self, input: AuthorizeInput) -> Result<Payment, PaymentError> {
        check_authorize_ids(&input.order_id, &input.user_id, &input.idempotency_key)?;
        // Each round either answers or released a stale claim; a claim released twice
        // in a row means others are racing for the order: let the caller retry.
        for _ in 0..3 {
            let pending = input.claim();
            let id = pending.id.clone();
            match self
                .ledger
                .begin(pending, input.idempotency_key.clone())
                .await?
            {
                Begin::Started => return self.attempt(id, &input).await,
                Begin::Existing(p) => {
                    if p.amount_cents != input.amount.cents || p.currency != input.amount.currency {
                        return Err(PaymentError::OrderMismatch(input.order_id));
                    }
                    if p.status != Status::Pending {
                        return Ok(*p);
                    }
                    if !reconcile::is_stale(&p, self.stale_after) {
                        return Err(PaymentError::InProgress(input.order_id));
                    }
                    match reconcile::resolve(self, &p).await?.1 {
                        Resolved::Settled(p) => return Ok(*p),
                        Resolved::Released => continue,
                        Resolved::Unreachable(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(PaymentError::InProgress(input.order_id))
    }

    /// Asks the provider for the claim `id` and records its answer.
    async fn attempt(&self, id: String, input: &AuthorizeInput) -> Result<Payment, PaymentError> {
        let answer = match self
            .provider
            .authorize(&id, &input.card, &input.amount)
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                // The request may or may not have been processed: ask. Without a record
                // the claim goes, so a retry starts afresh; without an answer it stays
                // for reconciliation (the provider may hold funds under this key).
                match self.provider.lookup(&id).await {
                    Ok(Lookup::Answered(answer)) => answer,
                    Ok(Lookup::Unknown) => {
                        self.ledger.abandon(id).await?;
                        return Err(e.into());
                    }
                    Err(_) => return Err(e.into()),
                }
            }
        };
        match reconcile::settle(self, &id, answer).await?.0 {
            Resolved::Settled(p) => Ok(*p),
            // A reconciler released the claim while the provider was answering (the
            // hold, if any, was voided): a retry starts afresh.
            Resolved::Released | Resolved::Unreachable(_) => {
                Err(PaymentError::InProgress(input.order_id.clone()))
            }
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
                    self.provider.capture(&reference, key).await?;
                    ("capture", p.amount_cents)
                }
                Operation::Void => {
                    self.provider.void(&reference, key).await?;
                    ("void", 0)
                }
                Operation::Refund(m) => {
                    self.provider.refund(&reference, key, m).await?;
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
