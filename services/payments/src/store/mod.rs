//! The payments ledger: one trait, one module per backend. SQLite is the embedded
//! default; MariaDB (`FLOTILLA_PAYMENTS__STORE=mysql://…`) is the production engine.
//! Both pass the same conformance tests (`tests.rs`). The SQL is the same on both
//! (placeholders `?`, times written by the application), so one macro implements both.

pub mod sql;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use kit::discovery::BoxFuture;
use kit::store::StoreError;
use kit::telemetry::db::Db;

use crate::domain::{Payment, Status};

/// The ledger failed.
#[derive(Debug, thiserror::Error)]
#[error("payments store: {0}")]
pub struct LedgerError(pub String);

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.to_string())
    }
}

/// The outcome of starting an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The pending payment was recorded: this caller talks to the provider.
    Started,
    /// The order already has a payment (possibly still pending).
    Existing(Box<Payment>),
}

/// The outcome of recording a pending authorization's answer (compare-and-set: only a
/// `pending` payment changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    /// This call recorded the answer (and wrote its event); the payment as it is now.
    Recorded(Box<Payment>),
    /// The payment was no longer pending: another caller resolved it first (the payment
    /// as that caller left it), or released the claim (`None`).
    Lost(Option<Box<Payment>>),
}

/// The outcome of applying an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Done; the payment as it is now.
    Done(Box<Payment>),
    /// The idempotency key was used before: nothing changed.
    Duplicate,
    /// The payment changed since it was read: read again and decide again.
    Lost,
}

/// A change of a payment, applied only if the payment is still as it was read
/// (compare-and-set on status and refunded total).
#[derive(Debug, Clone)]
pub struct Change {
    /// The payment.
    pub payment_id: String,
    /// The status it was read with.
    pub from_status: Status,
    /// The refunded total it was read with.
    pub from_refunded: i64,
    /// The new status.
    pub status: Status,
    /// The new refunded total.
    pub refunded_cents: i64,
    /// `(kind, key, amount)` recorded with the change, making the key single-use.
    pub operation: Option<(&'static str, String, i64)>,
}

/// One payment as an invariant checker reads it: its state and how often it was
/// captured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct PaymentLine {
    /// The payment.
    pub id: String,
    /// The order it pays for.
    pub order_id: String,
    /// Its status (`captured`, `voided`, `refunded`…).
    pub status: String,
    /// The amount authorized.
    pub amount_cents: i64,
    /// How much of it was refunded.
    pub refunded_cents: i64,
    /// Capture operations recorded for it.
    pub captures: i64,
}

/// Where payments are kept.
pub trait Ledger: Send + Sync + 'static {
    /// Records `pending` (status [`Status::Pending`]) unless its order has a payment.
    fn begin(&self, pending: Payment, key: String) -> BoxFuture<'_, Result<Begin, LedgerError>>;
    /// Sets the outcome of a pending authorization, if it is still pending (see
    /// [`Completed`]), with its event in the same transaction.
    fn complete(
        &self,
        id: String,
        status: Status,
        provider_ref: Option<String>,
        decline_reason: Option<String>,
    ) -> BoxFuture<'_, Result<Completed, LedgerError>>;
    /// Forgets a pending authorization (the provider never processed it), so a retry
    /// starts afresh; whether this call removed it (only a `pending` payment goes).
    fn abandon(&self, id: String) -> BoxFuture<'_, Result<bool, LedgerError>>;
    /// Up to `limit` pending payments created at or before `before` (RFC 3339 UTC, as
    /// [`crate::domain::now_rfc3339`] writes it), oldest first: claims whose
    /// authorization may have been cut short.
    fn stale_pending(
        &self,
        before: String,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Payment>, LedgerError>>;
    /// One payment.
    fn get(&self, id: String) -> BoxFuture<'_, Result<Option<Payment>, LedgerError>>;
    /// Whether `key` was used on the payment before.
    fn seen(&self, payment_id: String, key: String) -> BoxFuture<'_, Result<bool, LedgerError>>;
    /// Applies a change (see [`Change`]).
    fn apply(&self, change: Change) -> BoxFuture<'_, Result<Applied, LedgerError>>;
    /// The outbox in the ledger's database, and the notifier poked after each commit
    /// that wrote to it (for the relay).
    fn outbox(
        &self,
    ) -> (
        Arc<dyn kit_events::outbox::OutboxStore>,
        Arc<tokio::sync::Notify>,
    );
    /// Checks the backend answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), LedgerError>>;
    /// Up to `limit` payments in id order, after `after`, with their capture counts.
    fn lines(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<PaymentLine>, LedgerError>>;
}

/// Opens the ledger a URL names. The calls a request makes (claim, outcome, reads,
/// changes) are database client spans (see `kit::telemetry::db`); the sweeper's poll
/// for stale claims, the admin listing and the readiness probe are not, so an idle
/// service sends no trace.
pub async fn open(url: &str, setting: &str) -> Result<Arc<dyn Ledger>, StoreError> {
    let db = Db::from_url(url);
    match kit::store::scheme(url) {
        "sqlite" => Ok(Arc::new(Traced {
            inner: sql::SqliteLedger::open(url, setting).await?,
            db,
        })),
        "mysql" | "mariadb" => Ok(Arc::new(Traced {
            inner: sql::MySqlLedger::open(&url.replacen("mariadb://", "mysql://", 1), setting)
                .await?,
            db,
        })),
        _ => Err(StoreError::UnknownScheme {
            setting: setting.to_owned(),
            url: kit::store::redact(url),
            expected: "sqlite://, mysql://",
        }),
    }
}

/// A ledger whose request-path calls are database client spans.
struct Traced<L> {
    inner: L,
    db: Db,
}

impl<L: Ledger> Ledger for Traced<L> {
    fn begin(&self, pending: Payment, key: String) -> BoxFuture<'_, Result<Begin, LedgerError>> {
        Box::pin(
            self.db
                .run("INSERT", "payments", self.inner.begin(pending, key)),
        )
    }
    fn complete(
        &self,
        id: String,
        status: Status,
        provider_ref: Option<String>,
        decline_reason: Option<String>,
    ) -> BoxFuture<'_, Result<Completed, LedgerError>> {
        Box::pin(
            self.db.run(
                "UPDATE",
                "payments",
                self.inner
                    .complete(id, status, provider_ref, decline_reason),
            ),
        )
    }
    fn abandon(&self, id: String) -> BoxFuture<'_, Result<bool, LedgerError>> {
        Box::pin(self.db.run("DELETE", "payments", self.inner.abandon(id)))
    }
    fn stale_pending(
        &self,
        before: String,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Payment>, LedgerError>> {
        self.inner.stale_pending(before, limit)
    }
    fn get(&self, id: String) -> BoxFuture<'_, Result<Option<Payment>, LedgerError>> {
        Box::pin(self.db.run("SELECT", "payments", self.inner.get(id)))
    }
    fn seen(&self, payment_id: String, key: String) -> BoxFuture<'_, Result<bool, LedgerError>> {
        Box::pin(
            self.db
                .run("SELECT", "operations", self.inner.seen(payment_id, key)),
        )
    }
    fn apply(&self, change: Change) -> BoxFuture<'_, Result<Applied, LedgerError>> {
        Box::pin(self.db.run("UPDATE", "payments", self.inner.apply(change)))
    }
    fn outbox(
        &self,
    ) -> (
        Arc<dyn kit_events::outbox::OutboxStore>,
        Arc<tokio::sync::Notify>,
    ) {
        self.inner.outbox()
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
        self.inner.ping()
    }
    fn lines(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<PaymentLine>, LedgerError>> {
        self.inner.lines(after, limit)
    }
}
