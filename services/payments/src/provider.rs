//! The payment provider behind a trait, so a real one (a card processor's API) can
//! replace the simulated one without touching the rest.
//!
//! Every call carries an idempotency key, as card processors' APIs take one: an
//! authorization's key is the payment's id, so asking twice (a retry, a reconciliation
//! after a crash) never places two holds, and [`PaymentProvider::lookup`] finds out what
//! became of an attempt whose answer was lost. Capture, void and refund carry the
//! caller's key of that operation, scoped by the hold's reference.

pub mod simulated;

use kit::discovery::BoxFuture;
use tracing::Instrument;

use crate::domain::{Card, Money};

pub use simulated::{SimulatedAttempt, SimulatedProvider};

/// What the provider said to an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Funds held; the provider's reference for later calls.
    Approved(String),
    /// Refused for good (`card_declined`, `insufficient_funds`).
    Declined(String),
}

/// What the provider knows of an authorization attempt, looked up by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The attempt reached the provider, which answered this (and answers it again to
    /// a repeated authorization with the same key).
    Answered(Authorization),
    /// The provider has no attempt with this key: it never reached the provider.
    Unknown,
}

/// The provider failed in a way worth retrying (timeouts, its own outage).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct ProviderUnavailable(pub String);

/// A card processor.
pub trait PaymentProvider: Send + Sync + 'static {
    /// Holds `amount` on `card`, once per `key` (the payment's id): a repeated call with
    /// the same key returns the first answer and places no second hold.
    fn authorize<'a>(
        &'a self,
        key: &'a str,
        card: &'a Card,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<Authorization, ProviderUnavailable>>;
    /// What became of the authorization attempt with `key`.
    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Lookup, ProviderUnavailable>>;
    /// Takes the funds held under `reference`; repeating it is a no-op.
    fn capture<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>>;
    /// Cancels the hold `reference`; repeating it is a no-op.
    fn void<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>>;
    /// Gives back captured money, once per `(reference, key)`.
    fn refund<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>>;
}

/// A provider whose calls are client spans (`provider authorize`, …) in the caller's
/// trace, with `peer.service` naming the provider and failures marked, so a slow or
/// failing processor shows in the waterfall as what it is: an outbound call.
pub struct Traced<P> {
    inner: P,
    peer: &'static str,
}

impl<P: PaymentProvider> Traced<P> {
    /// Wraps `inner`, named `peer` in its spans.
    pub fn new(inner: P, peer: &'static str) -> Self {
        Self { inner, peer }
    }

    fn call<'a, T: Send + 'a>(
        &self,
        operation: &'static str,
        call: BoxFuture<'a, Result<T, ProviderUnavailable>>,
    ) -> BoxFuture<'a, Result<T, ProviderUnavailable>> {
        let span = tracing::info_span!(
            "payment.provider",
            otel.name = %format_args!("provider {operation}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            peer.service = self.peer,
            payment.provider.operation = operation,
            error.type = tracing::field::Empty,
        );
        Box::pin(async move {
            let result = call.instrument(span.clone()).await;
            if result.is_err() {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", "provider_unavailable");
            }
            result
        })
    }
}

impl<P: PaymentProvider> PaymentProvider for Traced<P> {
    fn authorize<'a>(
        &'a self,
        key: &'a str,
        card: &'a Card,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<Authorization, ProviderUnavailable>> {
        self.call("authorize", self.inner.authorize(key, card, amount))
    }
    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Lookup, ProviderUnavailable>> {
        self.call("lookup", self.inner.lookup(key))
    }
    fn capture<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        self.call("capture", self.inner.capture(reference, key))
    }
    fn void<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        self.call("void", self.inner.void(reference, key))
    }
    fn refund<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        self.call("refund", self.inner.refund(reference, key, amount))
    }
}

/// API.md's test cards.
pub mod test_cards {
    /// Approves.
    pub const APPROVE: &str = "4242424242424242";
    /// Declines.
    pub const DECLINE: &str = "4000000000000002";
    /// Declines for insufficient funds.
    pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
    /// Fails with a retryable provider error.
    pub const PROVIDER_ERROR: &str = "4000000000000119";
}
