//! The circuit breaker: stops calling a failing target so failures do not cascade.
//!
//! ```text
//!            N consecutive failures, or failure rate ≥ R over the window
//!  Closed ───────────────────────────────────────────────────────────▶ Open
//!    ▲                                                                  │ open time elapsed
//!    │ all probes succeed                                               ▼
//!    └──────────────────────────── HalfOpen ◀───────────────────────────┘
//!                                     │ any probe fails
//!                                     └──────────────────────────────▶ Open
//! ```
//!
//! The first opening lasts `open_for`; each probe that fails doubles the next one, up to
//! `max_open_for`, and closing starts again from `open_for`. A target that blipped (a
//! restart, a store failing over) is probed again within seconds; one that stays down
//! is probed ever more rarely.
//!
//! The closed path is lock-free: admitting a call is one atomic load, recording a
//! success is a load (and a store only after failures), recording a failure is an
//! atomic add (plus bucket updates when rate mode is on). Time comes from
//! `tokio::time::Instant`, so tests with paused time are deterministic.
//!
//! What counts as a failure is the caller's decision ([`Permit::failure`]); the HTTP
//! classifier in [`super::classify`] treats 5xx, timeouts and connection errors as
//! failures and 4xx as successes. Slow calls can count as failures too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::stack::{BoxError, CallError, Classifier};

/// Breaker settings for one target. Defaults: trip after 5 consecutive failures, stay
/// open 5 s, let 1 probe through; each failed probe doubles the open time, up to 60 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (0 disables this trigger).
    pub failure_threshold: u32,
    /// Failure rate (0.0–1.0) over the window that opens the breaker (`None`: off).
    pub failure_rate: Option<f64>,
    /// Length of the sliding window for the failure rate.
    #[serde(with = "crate::config::duration")]
    pub window: Duration,
    /// Calls needed in the window before the rate can trip the breaker.
    pub minimum_calls: u32,
    /// How long the breaker stays open before its first probe.
    #[serde(with = "crate::config::duration")]
    pub open_for: Duration,
    /// The longest it stays open: each failed probe doubles the open time up to this.
    #[serde(with = "crate::config::duration")]
    pub max_open_for: Duration,
    /// Probes admitted while half-open; all must succeed to close.
    pub half_open_probes: u32,
    /// A successful call slower than this counts as a failure (`None`: off).
    #[serde(with = "crate::config::optional_duration")]
    pub slow_call: Option<Duration>,
    /// One breaker per instance (`target/instance`) instead of one for the whole
    /// target, so one bad instance is cut off while its healthy peers keep serving.
    pub per_instance: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_rate: None,
            window: Duration::from_secs(10),
            minimum_calls: 20,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            half_open_probes: 1,
            slow_call: None,
            per_instance: false,
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls flow; failures are counted.
    Closed,
    /// Calls are rejected at once.
    Open,
    /// A few probes are let through to test the target.
    HalfOpen,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }

    /// The value of the `breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A call was not admitted because the breaker is open (or its probes are taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry after {retry_after:?}")]
pub struct Rejected {
    /// When the breaker will next admit a probe.
    pub retry_after: Duration,
}

/// What `/admin/breakers` shows for one breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    /// The target it protects.
    pub target: String,
    /// Current state.
    pub state: State,
    /// Consecutive failures (closed) or failures in the window (rate mode).
    pub failures: u32,
    /// When it last opened (RFC 3339), if it ever did.
    pub opened_at: Option<String>,
    /// Transitions since start.
    pub transitions: u64,
}

const BUCKETS: usize = 10;

/// One slice of the sliding window: calls and failures during one tenth of it.
#[derive(Debug, Default)]
struct Bucket {
    /// Which slice of time this bucket currently counts (slice number since `origin`).
    epoch: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
}

/// A circuit breaker for one target.
#[derive(Debug)]
pub struct CircuitBreaker {
    target: Arc<str>,
    cfg: BreakerConfig,
    origin: Instant,
    state: AtomicU8,
    consecutive: AtomicU32,
    /// Nanoseconds since `origin` when the breaker last opened.
    opened_at: AtomicU64,
    opened_wall: std::sync::Mutex<Option<SystemTime>>,
    probes_in_flight: AtomicU32,
    probe_successes: AtomicU32,
    /// Probes failed since the breaker last closed: the open time doubles with each.
    failed_probes: AtomicU32,
    transitions: AtomicU64,
    window: [Bucket; BUCKETS],
}

impl CircuitBreaker {
    /// A closed breaker for `target`.
    pub fn new(target: &str, cfg: BreakerConfig) -> Self {
        let b = Self {
            target: Arc::from(target),
            cfg,
            origin: Instant::now(),
            state: AtomicU8::new(0),
            consecutive: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            opened_wall: std::sync::Mutex::new(None),
            probes_in_flight: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
            failed_probes: AtomicU32::new(0),
            transitions: AtomicU64::new(0),
            window: Default::default(),
        };
        metrics::gauge!("breaker_state", "target" => b.target.to_string()).set(0.0);
        b
    }

    /// The protected target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// The current state (an open breaker whose time is up still reads `Open` until
    /// the next call moves it to half-open).
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long this opening lasts: `open_for`, doubled for every probe failed since
    /// the breaker last closed, at most `max_open_for`.
    pub fn open_time(&self) -> Duration {
        let doublings = self.failed_probes.load(Ordering::Acquire).min(31);
        let grown = self.cfg.open_for.saturating_mul(1 << doublings);
        grown.min(self.cfg.max_open_for.max(self.cfg.open_for))
    }

    fn open_nanos(&self) -> u64 {
        u64::try_from(self.open_time().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a call now would be rejected (open and not yet due for a probe).
    pub fn is_rejecting(&self) -> bool {
        self.state() == State::Open
            && self
                .now_nanos()
                .saturating_sub(self.opened_at.load(Ordering::Acquire))
                < self.open_nanos()
    }

    /// Makes the call `call` starts if the breaker admits it (else fails at once with
    /// [`CallError::BreakerOpen`]) and records its outcome as `classifier` judges it; a
    /// call that surely never reached the target (a refused connection) is not charged.
    pub async fn guard<R, F, Fut>(
        &self,
        classifier: Classifier,
        call: F,
    ) -> Result<http::Response<R>, BoxError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<http::Response<R>, BoxError>>,
    {
        let permit = self.try_acquire().map_err(|r| CallError::BreakerOpen {
            target: self.target.clone(),
            retry_after: r.retry_after,
        })?;
        match call().await {
            Ok(res) => {
                permit.record(!classifier.is_failure(&res));
                Ok(res)
            }
            Err(e) => {
                let e = CallError::from_inner(&self.target, e);
                if CallError::find(&e).is_some_and(CallError::not_sent) {
                    drop(permit);
                } else {
                    permit.failure();
                }
                Err(e)
            }
        }
    }

    /// Asks to make a call. Closed: always admitted. Open: rejected until the open time
    /// ([`Self::open_time`]) has passed, then the breaker turns half-open. Half-open: up to
    /// `half_open_probes` calls are admitted at a time.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        match self.state() {
            State::Closed => Ok(self.permit(false)),
            State::Open => {
                let elapsed = self
                    .now_nanos()
                    .saturating_sub(self.opened_at.load(Ordering::Acquire));
                let open_for = self.open_nanos();
                if elapsed < open_for {
                    self.reject(Duration::from_nanos(open_for - elapsed))
                } else {
                    if self.transition(State::Open, State::HalfOpen) {
                        self.probes_in_flight.store(0, Ordering::Release);
                        self.probe_successes.store(0, Ordering::Release);
                    }
                    self.try_probe()
                }
            }
            State::HalfOpen => self.try_probe(),
        }
    }

    fn try_probe(&self) -> Result<Permit<'_>, Rejected> {
        let max = self.cfg.half_open_probes.max(1);
        let taken = self.probes_in_flight.fetch_add(1, Ordering::AcqRel);
        if taken < max && self.state() == State::HalfOpen {
            Ok(self.permit(true))
        } else {
            self.probes_in_flight.fetch_sub(1, Ordering::AcqRel);
            self.reject(Duration::from_secs(1))
        }
    }

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            started: self.cfg.slow_call.map(|_| Instant::now()),
            done: false,
        }
    }

    fn reject(&self, retry_after: Duration) -> Result<Permit<'_>, Rejected> {
        metrics::counter!("rejected_total", "target" => self.target.to_string(), "reason" => "breaker_open")
            .increment(1);
        Err(Rejected { retry_after })
    }

    /// Moves `from` → `to` if the breaker is in `from`; logs, counts and records it.
    fn transition(&self, from: State, to: State) -> bool {
        if self
            .state
            .compare_exchange(
                from.as_u8(),
                to.as_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return false;
        }
        if from == State::HalfOpen && to == State::Open {
            self.failed_probes.fetch_add(1, Ordering::AcqRel);
        }
        if to == State::Open {
            self.opened_at.store(self.now_nanos(), Ordering::Release);
            if let Ok(mut w) = self.opened_wall.lock() {
                *w = Some(SystemTime::now());
            }
        }
        if to == State::Closed {
            self.consecutive.store(0, Ordering::Release);
            self.failed_probes.store(0, Ordering::Release);
            for b in &self.window {
                b.calls.store(0, Ordering::Relaxed);
                b.failures.store(0, Ordering::Relaxed);
            }
        }
        self.transitions.fetch_add(1, Ordering::Relaxed);
        let target = self.target.to_string();
        metrics::gauge!("breaker_state", "target" => target.clone()).set(f64::from(to.as_u8()));
        metrics::counter!("breaker_transitions_total", "target" => target, "from" => from.as_str(), "to" => to.as_str())
            .increment(1);
        // An event inside the current span becomes a span event in the trace.
        tracing::warn!(target_service = %self.target, from = from.as_str(), to = to.as_str(), "circuit breaker transition");
        true
    }

    fn bucket(&self) -> &Bucket {
        let slice = (self.cfg.window.as_nanos() / BUCKETS as u128).max(1);
        let epoch = (u128::from(self.now_nanos()) / slice) as u64;
        let b = &self.window[(epoch % BUCKETS as u64) as usize];
        let seen = b.epoch.load(Ordering::Acquire);
        if seen != epoch
            && b.epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.calls.store(0, Ordering::Relaxed);
            b.failures.store(0, Ordering::Relaxed);
        }
        b
    }

    /// Calls and failures in the window (buckets older than the window are ignored).
    fn window_totals(&self) -> (u32, u32) {
        let slice = (self.cfg.window.as_nanos() / BUCKETS as u128).max(1);
        let now_epoch = (u128::from(self.now_nanos()) / slice) as u64;
        self.window
            .iter()
            .filter(|b| now_epoch.saturating_sub(b.epoch.load(Ordering::Acquire)) < BUCKETS as u64)
            .fold((0, 0), |(c, f), b| {
                (
                    c + b.calls.load(Ordering::Relaxed),
                    f + b.failures.load(Ordering::Relaxed),
                )
            })
    }

    fn on_success(&self, probe: bool) {
        if probe {
            self.probes_in_flight.fetch_sub(1, Ordering::AcqRel);
            let ok = self.probe_successes.fetch_add(1, Ordering::AcqRel) + 1;
            if ok >= self.cfg.half_open_probes.max(1) {
                self.transition(State::HalfOpen, State::Closed);
            }
            return;
        }
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if self.cfg.failure_rate.is_some() {
            self.bucket().calls.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_failure(&self, probe: bool) {
        if probe {
            self.probes_in_flight.fetch_sub(1, Ordering::AcqRel);
            self.transition(State::HalfOpen, State::Open);
            return;
        }
        let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        let mut trip = self.cfg.failure_threshold > 0 && n >= self.cfg.failure_threshold;
        if let Some(rate) = self.cfg.failure_rate {
            let b = self.bucket();
            b.calls.fetch_add(1, Ordering::Relaxed);
            b.failures.fetch_add(1, Ordering::Relaxed);
            let (calls, failures) = self.window_totals();
            trip |= calls >= self.cfg.minimum_calls.max(1)
                && f64::from(failures) >= rate * f64::from(calls);
        }
        if trip {
            self.transition(State::Closed, State::Open);
        }
    }

    /// What `/admin/breakers` shows.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let failures = if self.cfg.failure_rate.is_some() {
            self.window_totals().1
        } else {
            self.consecutive.load(Ordering::Relaxed)
        };
        BreakerSnapshot {
            target: self.target.to_string(),
            state: self.state(),
            failures,
            opened_at: self
                .opened_wall
                .lock()
                .ok()
                .and_then(|w| *w)
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            transitions: self.transitions.load(Ordering::Relaxed),
        }
    }
}

/// Permission for one call; report how it went with [`Permit::success`] or
/// [`Permit::failure`]. Dropped without a verdict (the caller gave up), it counts as
/// neither, but frees its half-open probe slot.
#[derive(Debug)]
#[must_use = "report the outcome with success() or failure()"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    started: Option<Instant>,
    done: bool,
}

impl Permit<'_> {
    /// The call succeeded (a slow success counts as a failure when `slow_call` is set).
    pub fn success(mut self) {
        self.done = true;
        let slow = match (self.started, self.breaker.cfg.slow_call) {
            (Some(s), Some(limit)) => s.elapsed() > limit,
            _ => false,
        };
        if slow {
            self.breaker.on_failure(self.probe);
        } else {
            self.breaker.on_success(self.probe);
        }
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.on_failure(self.probe);
    }

    /// Records the outcome from a boolean.
    pub fn record(self, ok: bool) {
        if ok { self.success() } else { self.failure() }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.probes_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Tower layer: calls pass through a [`CircuitBreaker`]; while it is open they fail at
/// once with [`CallError::BreakerOpen`] without touching the network.
///
/// The outcome of each call is judged by a [`Classifier`]; a refused connection is not
/// charged (the request never reached the target); a [`CallError::TimedOut`] from the
/// deadline layer below counts as a failure.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: Arc<CircuitBreaker>,
    classifier: Classifier,
}

impl CircuitBreakerLayer {
    /// Calls through `breaker`, judged by `classifier`.
    pub fn new(breaker: Arc<CircuitBreaker>, classifier: Classifier) -> Self {
        Self {
            breaker,
            classifier,
        }
    }
}

impl<S> tower::Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier,
        }
    }
}

/// The service of [`CircuitBreakerLayer`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    classifier: Classifier,
}

impl<S, B, R> tower::Service<http::Request<B>> for CircuitBreakerService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    super::stack::always_ready!();

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let breaker = self.breaker.clone();
        let classifier = self.classifier;
        let inner = self.inner.clone();
        Box::pin(async move {
            breaker
                .guard(classifier, || super::stack::ready_call(inner, req))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cfg: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker::new("inventory", cfg)
    }

    fn fail(b: &CircuitBreaker, n: u32) {
        for _ in 0..n {
            b.try_acquire().unwrap().failure();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_exactly_at_the_threshold_and_rejects_while_open() {
        let b = breaker(BreakerConfig::default());
        fail(&b, 4);
        assert_eq!(b.state(), State::Closed);
        b.try_acquire().unwrap().success();
        fail(&b, 4);
        assert_eq!(b.state(), State::Closed, "a success resets the count");
        fail(&b, 1);
        assert_eq!(b.state(), State::Open);
        let rejected = b.try_acquire().unwrap_err();
        assert_eq!(rejected.retry_after, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after,
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_the_configured_probes_then_closes() {
        let b = breaker(BreakerConfig {
            half_open_probes: 2,
            open_for: Duration::from_secs(5),
            ..Default::default()
        });
        fail(&b, 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        let p1 = b.try_acquire().unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        let p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "only two probes at a time");
        p1.success();
        assert_eq!(b.state(), State::HalfOpen, "needs every probe");
        p2.success();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.snapshot().failures, 0);
        assert_eq!(b.snapshot().transitions, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn each_failed_probe_doubles_the_open_time_up_to_the_maximum() {
        let b = breaker(BreakerConfig {
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(30),
            ..Default::default()
        });
        fail(&b, 5);
        for expected in [20, 30, 30] {
            tokio::time::advance(b.open_time()).await;
            b.try_acquire().unwrap().failure();
            assert_eq!(b.state(), State::Open);
            assert_eq!(
                b.try_acquire().unwrap_err().retry_after,
                Duration::from_secs(expected)
            );
        }
        // Closing starts again from the shortest open time.
        tokio::time::advance(Duration::from_secs(30)).await;
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), State::Closed);
        fail(&b, 5);
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn a_maximum_below_the_first_open_time_is_the_first_open_time() {
        let b = breaker(BreakerConfig {
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(1),
            ..Default::default()
        });
        assert_eq!(b.open_time(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_its_slot() {
        let b = breaker(BreakerConfig {
            open_for: Duration::from_secs(1),
            ..Default::default()
        });
        fail(&b, 5);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(b.try_acquire().unwrap());
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_mode_respects_the_minimum_number_of_calls() {
        let b = breaker(BreakerConfig {
            failure_threshold: 0,
            failure_rate: Some(0.5),
            minimum_calls: 10,
            window: Duration::from_secs(10),
            ..Default::default()
        });
        // 4 failures of 4 calls: 100 % but under the minimum.
        fail(&b, 4);
        assert_eq!(b.state(), State::Closed);
        for _ in 0..5 {
            b.try_acquire().unwrap().success();
        }
        // 5 of 10 = 50 % with the minimum reached.
        fail(&b, 1);
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_window_forgets_old_calls() {
        let b = breaker(BreakerConfig {
            failure_threshold: 0,
            failure_rate: Some(0.5),
            minimum_calls: 4,
            window: Duration::from_secs(10),
            ..Default::default()
        });
        fail(&b, 3);
        tokio::time::advance(Duration::from_secs(11)).await;
        b.try_acquire().unwrap().success();
        fail(&b, 1);
        assert_eq!(b.state(), State::Closed, "the old failures left the window");
        assert_eq!(b.snapshot().failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_count_as_failures() {
        let b = breaker(BreakerConfig {
            failure_threshold: 2,
            slow_call: Some(Duration::from_millis(100)),
            ..Default::default()
        });
        for _ in 0..2 {
            let p = b.try_acquire().unwrap();
            tokio::time::advance(Duration::from_millis(150)).await;
            p.success();
        }
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn config_from_toml_like_values() {
        let cfg: BreakerConfig = serde_json::from_value(serde_json::json!({
            "failure_threshold": 3, "open_for": "2s", "slow_call": "250ms", "failure_rate": 0.5
        }))
        .unwrap();
        assert_eq!(cfg.open_for, Duration::from_secs(2));
        assert_eq!(cfg.slow_call, Some(Duration::from_millis(250)));
        assert_eq!(cfg.half_open_probes, 1);
    }
}
