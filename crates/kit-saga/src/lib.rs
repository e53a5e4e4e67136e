//! Flotilla sagas: a distributed transaction as a list of steps, each an action and
//! (where needed) a compensation, run by an [`Engine`] that never loses its place.
//!
//! - Every action and compensation gets a stable idempotency key
//!   ([`SagaState::idempotency_key`]: saga id + step name), so calling it again after a
//!   crash or a lost answer has no second effect at the callee.
//! - The saga's [`SagaState`] (current step, each step's status, result, attempts and
//!   deadline) is persisted by the owning service's [`SagaStore`] after every
//!   [`Transition`], in the same database transaction as the service's own state change
//!   and its outbox events (the store decides what a transition means for the service).
//!   Saves are compare-and-set on [`SagaState::version`], so a cancel and a running step
//!   never overwrite each other.
//! - Retryable errors ([`StepError::Retryable`]) are retried with exponential backoff up
//!   to the step's deadline; fatal ones fail the step at once. A failed step (or a
//!   cancel) starts compensation: the compensations of the completed steps run in
//!   reverse order, each retried with backoff until it succeeds and flagged
//!   [`SagaState::stuck`] (logged and counted) while it keeps failing.
//! - [`Engine::resume_all`] at start-up continues every saga that was in flight.
//! - Every transition is a log line (target `saga`), a metric
//!   (`saga_transitions_total{kind,transition}`) and an event on the saga's span.
#![forbid(unsafe_code)]

mod engine;
mod state;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;

pub use engine::{Cancel, Clock, Engine, EngineConfig, Next, system_clock};
pub use state::{
    Cancellable, Definition, SagaState, SagaStatus, StepDef, StepState, StepStatus, Transition,
};

/// A boxed, sendable future (what the traits below return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How an action or compensation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Worth trying again (timeouts, an unavailable callee).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Trying again cannot help (declined card, out of stock).
    #[error("{0}")]
    Fatal(String),
}

/// The saga store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saga store: {0}")]
pub struct StoreError(pub String);

/// What went wrong driving a saga.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SagaError {
    /// No saga with this id.
    #[error("no saga {0:?}")]
    Unknown(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The saga kept changing under a cancel.
    #[error("saga {0:?} keeps changing; retry")]
    Conflict(String),
}

/// One call of an action or compensation.
#[derive(Debug)]
pub struct Call<'a> {
    /// The saga as persisted just before the call.
    pub saga: &'a SagaState,
    /// The step concerned.
    pub step: &'a str,
    /// The action's or compensation's name.
    pub name: &'a str,
    /// Its idempotency key.
    pub key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// The service's side of a saga: what each action and compensation does.
pub trait Steps: Send + Sync + 'static {
    /// Runs the action of `call.step`; returns what later steps or the compensation
    /// need. Must be idempotent under `call.key`.
    fn run<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<serde_json::Value, StepError>>;
    /// Undoes `call.step`. Must be idempotent under `call.key`; any error is retried.
    fn compensate<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<(), StepError>>;
}

/// Where sagas are persisted: the owning service's own database.
pub trait SagaStore: Send + Sync + 'static {
    /// Saves `state` if the stored version is `state.version - 1` (returns `false`
    /// otherwise), and applies whatever `transition` means for the service (its state
    /// change, its outbox events) in the same transaction.
    fn save<'a>(
        &'a self,
        state: &'a SagaState,
        transition: &'a Transition,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// One saga.
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SagaState>, StoreError>>;
    /// The ids of every saga not in a terminal state.
    fn in_flight(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;
}
