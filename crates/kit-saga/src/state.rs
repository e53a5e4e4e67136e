//! What a saga is (its [`Definition`]) and what is persisted about one run of it
//! ([`SagaState`]), with the [`Transition`]s between states.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One step: an action, and the compensation that undoes it (if it needs undoing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepDef {
    /// The step's name (`reserve_stock`); part of its idempotency key.
    pub name: &'static str,
    /// The compensation's name (`release_stock`); `None` when nothing needs undoing.
    pub compensation: Option<&'static str>,
    /// How long retryable errors are retried from the first attempt before the step
    /// fails; `None` retries until it succeeds (a step that must not fail, after the
    /// pivot).
    pub deadline: Option<Duration>,
    /// Once this step has started, the saga can no longer be cancelled.
    pub pivot: bool,
}

impl StepDef {
    /// A step without compensation, with a 30 s retry deadline.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            compensation: None,
            deadline: Some(Duration::from_secs(30)),
            pivot: false,
        }
    }

    /// Undone by `compensation`.
    pub const fn compensated_by(mut self, compensation: &'static str) -> Self {
        self.compensation = Some(compensation);
        self
    }

    /// Sets the retry deadline (`None`: retry until it succeeds).
    pub const fn deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Marks the point of no return: cancelling is refused once this step started.
    pub const fn pivot(mut self) -> Self {
        self.pivot = true;
        self
    }
}

/// A kind of saga: its name and its steps in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The kind (`place_order`), stored with each saga.
    pub kind: &'static str,
    /// The steps, run in order.
    pub steps: Vec<StepDef>,
}

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Running its steps forward.
    Running,
    /// A step failed or the saga was cancelled: undoing the completed steps.
    Compensating,
    /// Every step succeeded (terminal).
    Completed,
    /// Every completed step was undone (terminal).
    Compensated,
}

impl SagaStatus {
    /// Whether nothing more will happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated)
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
        }
    }
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not done yet (possibly attempted: see [`StepState::attempts`]).
    Pending,
    /// Its action succeeded.
    Done,
    /// Its action failed for good.
    Failed,
    /// It was done, then undone.
    Compensated,
}

/// What is kept about one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// The step's name.
    pub name: String,
    /// Where it is.
    pub status: StepStatus,
    /// Attempts of its action so far.
    pub attempts: u32,
    /// When retrying stops (Unix ms), set at the first attempt.
    pub deadline_ms: Option<i64>,
    /// What the action returned (ids the later steps and the compensation need).
    pub result: Option<Value>,
    /// The last error of its action or compensation.
    pub error: Option<String>,
    /// Attempts of its compensation so far.
    pub compensation_attempts: u32,
    /// When its status last changed (Unix ms); `None` while never attempted.
    pub at_ms: Option<i64>,
}

/// One run of a saga, as persisted after every transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    /// The saga id (for an order saga, the order id).
    pub id: String,
    /// The [`Definition::kind`].
    pub kind: String,
    /// The saga's input, as the service chose to keep it.
    pub data: Value,
    /// Where it is.
    pub status: SagaStatus,
    /// The index of the step running forward (`steps.len()` once all are done).
    pub current: usize,
    /// Every step, in order.
    pub steps: Vec<StepState>,
    /// Why it is compensating (the failed step's error, or the cancel reason).
    pub reason: Option<String>,
    /// A cancel asked for and not yet acted on.
    pub cancel_requested: Option<String>,
    /// A step that must succeed or a compensation keeps failing: an operator should look.
    pub stuck: bool,
    /// Bumped by every saved transition; saves are compare-and-set on it.
    pub version: u64,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms of the last transition.
    pub updated_ms: i64,
    /// W3C `traceparent` of the request that started the saga: a saga resumed after a
    /// crash or by another instance continues that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl SagaState {
    /// A new saga of `definition`, before its first step.
    pub fn new(definition: &Definition, id: &str, data: Value, now_ms: i64) -> Self {
        Self {
            id: id.to_owned(),
            kind: definition.kind.to_owned(),
            data,
            status: SagaStatus::Running,
            current: 0,
            steps: definition
                .steps
                .iter()
                .map(|s| StepState {
                    name: s.name.to_owned(),
                    status: StepStatus::Pending,
                    attempts: 0,
                    deadline_ms: None,
                    result: None,
                    error: None,
                    compensation_attempts: 0,
                    at_ms: None,
                })
                .collect(),
            reason: None,
            cancel_requested: None,
            stuck: false,
            version: 0,
            created_ms: now_ms,
            updated_ms: now_ms,
            traceparent: None,
        }
    }

    /// The idempotency key of an action or compensation: stable across retries, crashes
    /// and instances (`<saga id>:<name>`).
    pub fn idempotency_key(&self, name: &str) -> String {
        format!("{}:{name}", self.id)
    }

    /// The step called `name`.
    pub fn step(&self, name: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// What step `name` returned, once done.
    pub fn result(&self, name: &str) -> Option<&Value> {
        self.step(name).and_then(|s| s.result.as_ref())
    }

    /// Whether a cancel can still be asked for.
    pub fn cancellable(&self, definition: &Definition) -> Cancellable {
        match self.status {
            SagaStatus::Completed => return Cancellable::TooLate,
            SagaStatus::Compensating | SagaStatus::Compensated => return Cancellable::Already,
            SagaStatus::Running => {}
        }
        if self.cancel_requested.is_some() {
            return Cancellable::Already;
        }
        let past_pivot = definition
            .steps
            .iter()
            .zip(&self.steps)
            .any(|(d, s)| d.pivot && s.attempts > 0);
        if past_pivot {
            Cancellable::TooLate
        } else {
            Cancellable::Yes
        }
    }
}

/// Whether a saga may be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellable {
    /// It may.
    Yes,
    /// It is cancelled or compensating already.
    Already,
    /// It completed or passed its pivot.
    TooLate,
}

/// One change of a saga's state: what the store persists it with, what is logged,
/// counted and added to the span.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// An attempt of a step's action begins.
    StepStarted {
        /// The step.
        step: String,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// A step's action succeeded.
    StepDone {
        /// The step.
        step: String,
    },
    /// A step's action failed retryably; it is tried again.
    StepRetrying {
        /// The step.
        step: String,
        /// Why.
        error: String,
    },
    /// A step's action failed for good; compensation begins.
    StepFailed {
        /// The step.
        step: String,
        /// Why.
        error: String,
    },
    /// A cancel was asked for; it takes effect at the next step boundary.
    CancelRequested {
        /// Why.
        reason: String,
    },
    /// A cancel took effect; compensation begins.
    Cancelled {
        /// Why.
        reason: String,
    },
    /// A step was undone.
    Compensated {
        /// The step.
        step: String,
        /// The compensation that undid it.
        compensation: String,
    },
    /// A compensation failed; it is tried again.
    CompensationRetrying {
        /// The step.
        step: String,
        /// Why.
        error: String,
    },
    /// Every step succeeded (terminal).
    Completed,
    /// Every completed step was undone (terminal).
    Aborted {
        /// Why the saga did not complete.
        reason: String,
    },
}

impl Transition {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::StepStarted { .. } => "step_started",
            Self::StepDone { .. } => "step_done",
            Self::StepRetrying { .. } => "step_retrying",
            Self::StepFailed { .. } => "step_failed",
            Self::CancelRequested { .. } => "cancel_requested",
            Self::Cancelled { .. } => "cancelled",
            Self::Compensated { .. } => "compensated",
            Self::CompensationRetrying { .. } => "compensation_retrying",
            Self::Completed => "completed",
            Self::Aborted { .. } => "aborted",
        }
    }

    /// The step it concerns, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Self::StepStarted { step, .. }
            | Self::StepDone { step }
            | Self::StepRetrying { step, .. }
            | Self::StepFailed { step, .. }
            | Self::Compensated { step, .. }
            | Self::CompensationRetrying { step, .. } => Some(step),
            _ => None,
        }
    }
}
