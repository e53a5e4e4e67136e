//! The executor: one transition at a time ([`Engine::advance`]), driven by a task per
//! saga ([`Engine::start`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tracing::Instrument;

use crate::{
    Call, Cancellable, Definition, SagaError, SagaState, SagaStatus, SagaStore, StepError,
    StepStatus, Steps, Transition,
};

/// The time in Unix milliseconds (injectable so tests control deadlines).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// How the engine retries.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// First retry delay; doubles per attempt.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Failed attempts of a compensation (or of a step without deadline) after which
    /// the saga is flagged stuck.
    pub stuck_after: u32,
    /// How long an engine that lost a saga to another engine (another instance of the
    /// service saved it first) waits for that engine's next transition before taking
    /// the saga over; longer than the longest retry delay plus one step call.
    pub watch: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            stuck_after: 10,
            watch: Duration::from_secs(15),
        }
    }
}

impl EngineConfig {
    /// The delay before attempt `attempts + 1`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        self.min_backoff
            .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(20)))
            .min(self.max_backoff)
    }
}

/// What [`Engine::advance`] left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Advance again now.
    Continue,
    /// Advance again after this delay (a retry).
    RetryIn(Duration),
    /// The saga reached a terminal state.
    Finished(SagaStatus),
    /// Another engine saved the saga first (its compare-and-set won): that engine
    /// drives it now, and this one stands back (see [`Engine::start`]).
    Contended,
}

/// The answer to [`Engine::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The saga will compensate (or already does).
    Accepted,
    /// It completed or passed its pivot.
    TooLate,
}

struct Inner {
    definition: Definition,
    steps: Arc<dyn Steps>,
    store: Arc<dyn SagaStore>,
    config: EngineConfig,
    clock: Clock,
    active: Mutex<HashMap<String, Arc<Notify>>>,
}

/// Runs the sagas of one [`Definition`] over a store.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("kind", &self.inner.definition.kind)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Engine {
    /// An engine for `definition`, calling `steps`, persisting in `store`.
    pub fn new(
        definition: Definition,
        steps: Arc<dyn Steps>,
        store: Arc<dyn SagaStore>,
        config: EngineConfig,
    ) -> Self {
        Self::with_clock(definition, steps, store, config, system_clock())
    }

    /// Like [`Engine::new`] with a given clock.
    pub fn with_clock(
        definition: Definition,
        steps: Arc<dyn Steps>,
        store: Arc<dyn SagaStore>,
        config: EngineConfig,
        clock: Clock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                definition,
                steps,
                store,
                config,
                clock,
                active: Mutex::default(),
            }),
        }
    }

    /// The saga definition.
    pub fn definition(&self) -> &Definition {
        &self.inner.definition
    }

    /// A new saga's initial state, for the service to insert in the transaction that
    /// creates what the saga is about; then call [`Engine::start`]. It keeps the current
    /// span's `traceparent`, so the saga's steps stay in the request's trace even when
    /// another engine resumes it.
    pub fn new_state(&self, id: &str, data: serde_json::Value) -> SagaState {
        let mut state = SagaState::new(&self.inner.definition, id, data, (self.inner.clock)());
        state.traceparent = kit::telemetry::trace::traceparent(&tracing::Span::current());
        state
    }

    /// Drives the saga `id` in the background until it is terminal; does nothing if
    /// this engine drives it already.
    ///
    /// Several engines over one store (instances of one service) may drive the same
    /// saga, say after one of them restarted and resumed everything in flight. Saves are
    /// compare-and-set, so one of them wins each transition; the one that loses stands
    /// back and watches: it takes the saga over only if no transition happens for
    /// [`EngineConfig::watch`] (the other engine died), or at once when woken here
    /// (a cancel). Two engines never keep undoing each other's progress.
    ///
    /// The saga's span is a child of the current span (the request that started it).
    pub fn start(&self, id: &str) {
        self.spawn(id, false, None);
    }

    /// Starts driving `id`; with `stand_back_first`, only after the saga has been quiet
    /// for [`EngineConfig::watch`] (another engine may be driving it). With a stored
    /// `traceparent`, the saga's span continues that trace instead of the current one.
    fn spawn(&self, id: &str, stand_back_first: bool, traceparent: Option<&str>) {
        let notify = {
            let mut active = self.inner.active.lock().unwrap_or_else(|p| p.into_inner());
            if active.contains_key(id) {
                return;
            }
            let n = Arc::new(Notify::new());
            active.insert(id.to_owned(), n.clone());
            n
        };
        let span = tracing::info_span!(
            "saga",
            otel.name = %format_args!("saga {}", self.inner.definition.kind),
            saga_id = %id,
            saga_kind = self.inner.definition.kind
        );
        kit::telemetry::trace::set_parent_from(&span, traceparent);
        tokio::spawn(
            self.clone()
                .drive(id.to_owned(), notify, stand_back_first)
                .instrument(span),
        );
        metrics::gauge!("saga_in_flight", "kind" => self.inner.definition.kind).increment(1.0);
    }

    /// Starts every saga the store holds in flight (after a crash or a restart);
    /// returns how many. A saga with a transition less than [`EngineConfig::watch`]
    /// ago may be in the hands of a live engine (another instance, or the old one of a
    /// rollout finishing its work): it is taken over only once it has been quiet that
    /// long, so a new instance never snatches work from one that is still on it.
    pub async fn resume_all(&self) -> Result<usize, SagaError> {
        let ids = self.inner.store.in_flight().await?;
        let now = (self.inner.clock)();
        let watch = i64::try_from(self.inner.config.watch.as_millis()).unwrap_or(i64::MAX);
        for id in &ids {
            let (fresh, traceparent) = match self.inner.store.load(id).await? {
                Some(s) => (now.saturating_sub(s.updated_ms) < watch, s.traceparent),
                None => continue,
            };
            tracing::info!(target: "saga", saga_id = %id, wait_for_quiet = fresh, "resuming saga");
            self.spawn(id, fresh, traceparent.as_deref());
        }
        Ok(ids.len())
    }

    /// Waits until this engine drives no saga any more, at most `timeout`; whether it
    /// got there. For a graceful stop: let the sagas in hand reach their end.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self
                .inner
                .active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            if idle {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks saga `id` to stop and compensate. Takes effect at the next step boundary;
    /// refused once the saga completed or started its pivot step.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<Cancel, SagaError> {
        for _ in 0..32 {
            let mut s = self.load(id).await?;
            match s.cancellable(&self.inner.definition) {
                Cancellable::TooLate => return Ok(Cancel::TooLate),
                Cancellable::Already => return Ok(Cancel::Accepted),
                Cancellable::Yes => {}
            }
            s.cancel_requested = Some(reason.to_owned());
            let t = Transition::CancelRequested {
                reason: reason.to_owned(),
            };
            if self.save(&mut s, t).await? {
                self.wake(id);
                self.start(id);
                return Ok(Cancel::Accepted);
            }
        }
        Err(SagaError::Conflict(id.to_owned()))
    }

    fn wake(&self, id: &str) {
        let active = self.inner.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = active.get(id) {
            n.notify_one();
        }
    }

    async fn load(&self, id: &str) -> Result<SagaState, SagaError> {
        self.inner
            .store
            .load(id)
            .await?
            .ok_or_else(|| SagaError::Unknown(id.to_owned()))
    }

    /// Bumps the version, saves, and records the transition once it is persisted.
    async fn save(&self, s: &mut SagaState, t: Transition) -> Result<bool, SagaError> {
        s.version += 1;
        s.updated_ms = (self.inner.clock)();
        let saved = self.inner.store.save(s, &t).await?;
        if saved {
            record(s, &t);
        }
        Ok(saved)
    }

    async fn drive(self, id: String, notify: Arc<Notify>, stand_back_first: bool) {
        let mut store_failures = 0u32;
        let mut go = !stand_back_first || self.stand_back(&id, &notify).await;
        while go {
            match self.advance(&id).await {
                Ok(Next::Continue) => store_failures = 0,
                Ok(Next::RetryIn(d)) => {
                    store_failures = 0;
                    let _ = tokio::time::timeout(d, notify.notified()).await;
                }
                Ok(Next::Finished(_)) | Err(SagaError::Unknown(_)) => go = false,
                Ok(Next::Contended) => {
                    store_failures = 0;
                    go = self.stand_back(&id, &notify).await;
                }
                Err(e) => {
                    store_failures += 1;
                    let d = self.inner.config.backoff(store_failures);
                    tracing::warn!(target: "saga", error = %e, retry_in = ?d, "saga store failed; retrying");
                    tokio::time::sleep(d).await;
                }
            }
        }
        self.inner
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        metrics::gauge!("saga_in_flight", "kind" => self.inner.definition.kind).decrement(1.0);
    }

    /// Waits while another engine drives saga `id`; `true` when this engine should
    /// drive it (no transition for [`EngineConfig::watch`]: the other engine is gone;
    /// or a local wake-up, a cancel), `false` when the saga ended or is gone.
    async fn stand_back(&self, id: &str, notify: &Notify) -> bool {
        let watch = self.inner.config.watch;
        loop {
            let quiet = match self.inner.store.load(id).await {
                Ok(Some(s)) if s.status.is_terminal() => return false,
                Ok(None) => return false,
                Ok(Some(s)) => (self.inner.clock)().saturating_sub(s.updated_ms),
                // The store is unreachable: the drive loop's backoff handles that.
                Err(_) => return true,
            };
            let quiet = Duration::from_millis(u64::try_from(quiet).unwrap_or(0));
            if quiet >= watch {
                tracing::info!(target: "saga", saga_id = %id, quiet = ?quiet, "no transition from the engine driving this saga; taking it over");
                return true;
            }
            if tokio::time::timeout(watch - quiet, notify.notified())
                .await
                .is_ok()
            {
                return true;
            }
        }
    }

    /// Makes one transition of saga `id` (calling at most one action or compensation)
    /// and persists it. A lost compare-and-set (someone else saved first) answers
    /// [`Next::Contended`]: the next call starts from the stored state. Exposed for tests
    /// that drive a saga by hand and crash it between transitions.
    pub async fn advance(&self, id: &str) -> Result<Next, SagaError> {
        let s = self.load(id).await?;
        match s.status {
            SagaStatus::Completed | SagaStatus::Compensated => Ok(Next::Finished(s.status)),
            SagaStatus::Running => self.forward(s).await,
            SagaStatus::Compensating => self.backward(s).await,
        }
    }

    async fn forward(&self, mut s: SagaState) -> Result<Next, SagaError> {
        let def = &self.inner.definition;
        let now = (self.inner.clock)();
        let i = s.current;
        // A cancel takes effect between steps; a step already attempted is finished
        // first (its effect may have happened), then compensated with the others.
        if let Some(reason) = s.cancel_requested.clone()
            && s.steps.get(i).is_none_or(|st| st.attempts == 0)
        {
            s.status = SagaStatus::Compensating;
            s.reason = Some(reason.clone());
            return self
                .saved(&mut s, Transition::Cancelled { reason }, Next::Continue)
                .await;
        }
        if i >= def.steps.len() {
            s.status = SagaStatus::Completed;
            return self
                .saved(&mut s, Transition::Completed, Next::Continue)
                .await;
        }
        let step = &def.steps[i];
        let st = &mut s.steps[i];
        st.attempts += 1;
        let attempt = st.attempts;
        if st.deadline_ms.is_none() {
            st.deadline_ms = step
                .deadline
                .map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
        }
        st.at_ms = Some(now);
        let started = Transition::StepStarted {
            step: step.name.to_owned(),
            attempt,
        };
        if !self.save(&mut s, started).await? {
            return Ok(Next::Contended);
        }
        let call = Call {
            saga: &s,
            step: step.name,
            name: step.name,
            key: s.idempotency_key(step.name),
            attempt,
        };
        let span = step_span(self.inner.definition.kind, step.name, attempt, false);
        let outcome = self.inner.steps.run(call).instrument(span).await;
        let now = (self.inner.clock)();
        let st = &mut s.steps[i];
        st.at_ms = Some(now);
        match outcome {
            Ok(result) => {
                st.status = StepStatus::Done;
                st.result = Some(result);
                st.error = None;
                s.current += 1;
                let t = Transition::StepDone {
                    step: step.name.to_owned(),
                };
                self.saved(&mut s, t, Next::Continue).await
            }
            Err(StepError::Retryable(e)) if st.deadline_ms.is_none_or(|d| now < d) => {
                st.error = Some(e.clone());
                if step.deadline.is_none() && attempt >= self.inner.config.stuck_after {
                    if !s.stuck {
                        tracing::error!(target: "saga", saga_id = %s.id, step = step.name, attempts = attempt, error = %e, "saga stuck: a step past its pivot keeps failing");
                        metrics::counter!("saga_stuck_total", "kind" => def.kind).increment(1);
                    }
                    s.stuck = true;
                }
                let delay = self.inner.config.backoff(attempt);
                let t = Transition::StepRetrying {
                    step: step.name.to_owned(),
                    error: e,
                };
                self.saved(&mut s, t, Next::RetryIn(delay)).await
            }
            Err(e) => {
                let error = match e {
                    StepError::Retryable(e) => format!("{e} (retried until the deadline)"),
                    StepError::Fatal(e) => e,
                };
                st.status = StepStatus::Failed;
                st.error = Some(error.clone());
                s.status = SagaStatus::Compensating;
                s.reason = Some(format!("{}: {error}", step.name));
                let t = Transition::StepFailed {
                    step: step.name.to_owned(),
                    error,
                };
                self.saved(&mut s, t, Next::Continue).await
            }
        }
    }

    async fn backward(&self, mut s: SagaState) -> Result<Next, SagaError> {
        let def = &self.inner.definition;
        // The latest completed step that has a compensation goes first.
        let next = (0..def.steps.len()).rev().find(|&i| {
            s.steps[i].status == StepStatus::Done && def.steps[i].compensation.is_some()
        });
        let Some(i) = next else {
            s.status = SagaStatus::Compensated;
            s.stuck = false;
            let reason = s.reason.clone().unwrap_or_default();
            return self
                .saved(&mut s, Transition::Aborted { reason }, Next::Continue)
                .await;
        };
        let step = &def.steps[i];
        let compensation = step.compensation.unwrap_or(step.name);
        s.steps[i].compensation_attempts += 1;
        let attempt = s.steps[i].compensation_attempts;
        let call = Call {
            saga: &s,
            step: step.name,
            name: compensation,
            key: s.idempotency_key(compensation),
            attempt,
        };
        let span = step_span(self.inner.definition.kind, compensation, attempt, true);
        let outcome = self.inner.steps.compensate(call).instrument(span).await;
        let now = (self.inner.clock)();
        let st = &mut s.steps[i];
        match outcome {
            Ok(()) => {
                st.status = StepStatus::Compensated;
                st.at_ms = Some(now);
                let t = Transition::Compensated {
                    step: step.name.to_owned(),
                    compensation: compensation.to_owned(),
                };
                self.saved(&mut s, t, Next::Continue).await
            }
            Err(StepError::Retryable(e) | StepError::Fatal(e)) => {
                st.error = Some(format!("{compensation}: {e}"));
                if attempt >= self.inner.config.stuck_after {
                    if !s.stuck {
                        tracing::error!(target: "saga", saga_id = %s.id, step = step.name, compensation, attempts = attempt, "saga stuck: a compensation keeps failing");
                        metrics::counter!("saga_stuck_total", "kind" => def.kind).increment(1);
                    }
                    s.stuck = true;
                }
                let t = Transition::CompensationRetrying {
                    step: step.name.to_owned(),
                    error: e,
                };
                let delay = self.inner.config.backoff(attempt);
                self.saved(&mut s, t, Next::RetryIn(delay)).await
            }
        }
    }

    /// Saves and answers `next`, or [`Next::Contended`] when the compare-and-set lost.
    async fn saved(&self, s: &mut SagaState, t: Transition, next: Next) -> Result<Next, SagaError> {
        if self.save(s, t).await? {
            Ok(next)
        } else {
            Ok(Next::Contended)
        }
    }
}

/// The span of one attempt of a step's action or compensation, inside the saga's span:
/// the calls the step makes are its children.
fn step_span(kind: &str, name: &str, attempt: u32, compensation: bool) -> tracing::Span {
    tracing::info_span!(
        "saga.step",
        otel.name = %format_args!("saga {kind} {name}"),
        saga.step = name,
        saga.attempt = attempt,
        saga.compensation = compensation,
    )
}

/// Logs, counts and adds to the current span one persisted transition.
fn record(s: &SagaState, t: &Transition) {
    metrics::counter!("saga_transitions_total", "kind" => s.kind.clone(), "transition" => t.name())
        .increment(1);
    let step = t.step().unwrap_or("");
    match t {
        Transition::StepRetrying { error, .. }
        | Transition::StepFailed { error, .. }
        | Transition::CompensationRetrying { error, .. } => {
            tracing::warn!(target: "saga", saga_id = %s.id, saga_kind = %s.kind, transition = t.name(), step, error = %error, version = s.version, "saga transition");
        }
        _ => {
            tracing::info!(target: "saga", saga_id = %s.id, saga_kind = %s.kind, transition = t.name(), step, status = s.status.as_str(), version = s.version, "saga transition");
        }
    }
    if s.status.is_terminal() {
        let seconds = (s.updated_ms - s.created_ms).max(0) as f64 / 1000.0;
        metrics::histogram!("saga_duration_seconds", "kind" => s.kind.clone(), "status" => s.status.as_str())
            .record(seconds);
    }
}
