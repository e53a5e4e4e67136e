//! The engine's state machine under random step outcomes, cancels and crash points.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use crate::{
    BoxFuture, Call, Cancel, Definition, Engine, EngineConfig, Next, SagaState, SagaStatus,
    SagaStore, StepDef, StepError, StepStatus, Steps, StoreError, Transition,
};

/// A saga store in memory that "crashes" (fails a save, keeping nothing) at chosen saves.
#[derive(Default)]
struct MemStore {
    sagas: Mutex<HashMap<String, SagaState>>,
    saves: AtomicUsize,
    crash_at: Vec<usize>,
    /// Saves answered "someone else saved first" although nobody did.
    lose_at: Vec<usize>,
    transitions: Mutex<Vec<Transition>>,
}

impl SagaStore for MemStore {
    fn save<'a>(
        &'a self,
        state: &'a SagaState,
        transition: &'a Transition,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let n = self.saves.fetch_add(1, Ordering::SeqCst);
            if self.crash_at.contains(&n) {
                return Err(StoreError("crash".into()));
            }
            if self.lose_at.contains(&n) {
                return Ok(false);
            }
            let mut sagas = self.sagas.lock().unwrap();
            let stored = sagas.get(&state.id).map(|s| s.version);
            if stored.is_some_and(|v| v + 1 != state.version) {
                return Ok(false);
            }
            sagas.insert(state.id.clone(), state.clone());
            self.transitions.lock().unwrap().push(transition.clone());
            Ok(true)
        })
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SagaState>, StoreError>> {
        Box::pin(async move { Ok(self.sagas.lock().unwrap().get(id).cloned()) })
    }

    fn in_flight(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .sagas
                .lock()
                .unwrap()
                .values()
                .filter(|s| !s.status.is_terminal())
                .map(|s| s.id.clone())
                .collect())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Retry,
    Fatal,
}

/// Remote services that apply each effect once per idempotency key and answer a
/// repeated call with the first success.
#[derive(Default)]
struct Remote {
    /// Per step, the outcomes of successive calls (then `Ok`).
    outcomes: Vec<Vec<Outcome>>,
    /// Per step, how many times its compensation fails before it succeeds.
    comp_failures: Vec<u32>,
    calls: Mutex<HashMap<String, usize>>,
    applied: Mutex<Vec<String>>,
}

impl Remote {
    fn applied_once(&self, key: &str) -> bool {
        let mut applied = self.applied.lock().unwrap();
        if applied.iter().any(|k| k == key) {
            return false;
        }
        applied.push(key.to_owned());
        true
    }

    fn effect_count(&self, key: &str) -> usize {
        self.applied
            .lock()
            .unwrap()
            .iter()
            .filter(|k| *k == key)
            .count()
    }
}

fn step_index(name: &str) -> usize {
    name.trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap()
}

impl Steps for Remote {
    fn run<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<serde_json::Value, StepError>> {
        Box::pin(async move {
            let i = step_index(call.step);
            if self.effect_count(&call.key) > 0 {
                return Ok(json!({"step": i}));
            }
            let n = {
                let mut calls = self.calls.lock().unwrap();
                let c = calls.entry(call.key.clone()).or_default();
                *c += 1;
                *c - 1
            };
            match self.outcomes[i].get(n).copied().unwrap_or(Outcome::Ok) {
                Outcome::Ok => {
                    self.applied_once(&call.key);
                    Ok(json!({"step": i}))
                }
                Outcome::Retry => Err(StepError::Retryable("busy".into())),
                Outcome::Fatal => Err(StepError::Fatal("refused".into())),
            }
        })
    }

    fn compensate<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            let i = step_index(call.step);
            assert_eq!(
                self.effect_count(&call.saga.idempotency_key(call.step)),
                1,
                "compensating a step whose effect never happened"
            );
            if call.attempt <= self.comp_failures[i] {
                return Err(StepError::Retryable("compensation target down".into()));
            }
            self.applied_once(&call.key);
            Ok(())
        })
    }
}

const NAMES: [&str; 5] = ["s0", "s1", "s2", "s3", "s4"];
const UNDO: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];

fn definition(n: usize, compensated: &[bool], pivot: Option<usize>) -> Definition {
    Definition {
        kind: "test",
        steps: (0..n)
            .map(|i| {
                let mut s = StepDef::new(NAMES[i]).deadline(Some(Duration::from_secs(5)));
                if compensated[i] {
                    s = s.compensated_by(UNDO[i]);
                }
                if pivot == Some(i) {
                    s = s.pivot();
                }
                // The last step must succeed: it retries without deadline.
                if i == n - 1 {
                    s = s.deadline(None);
                }
                s
            })
            .collect(),
    }
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => Just(Outcome::Ok),
        3 => Just(Outcome::Retry),
        1 => Just(Outcome::Fatal),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_saga_ends_terminal_with_each_effect_once_and_undone_in_reverse(
        n in 1usize..=5,
        compensated in proptest::collection::vec(any::<bool>(), 5),
        outcomes in proptest::collection::vec(proptest::collection::vec(outcome(), 0..8), 5),
        comp_failures in proptest::collection::vec(0u32..4, 5),
        crash_at in proptest::collection::vec(0usize..60, 0..6),
        cancel_after in proptest::option::of(0usize..20),
        pivot in proptest::option::of(0usize..5),
    ) {
        let pivot = pivot.filter(|p| *p < n);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let def = definition(n, &compensated, pivot);
            let store = Arc::new(MemStore { crash_at: crash_at.clone(), ..MemStore::default() });
            let remote = Arc::new(Remote {
                outcomes: outcomes.clone(),
                comp_failures: comp_failures.clone(),
                ..Remote::default()
            });
            // Each reading of the clock moves it a second: retry deadlines pass.
            let now = Arc::new(AtomicI64::new(0));
            let clock_now = now.clone();
            let clock = Arc::new(move || clock_now.fetch_add(1000, Ordering::SeqCst));
            let engine = Engine::with_clock(
                def.clone(),
                remote.clone(),
                store.clone(),
                EngineConfig { stuck_after: 2, ..EngineConfig::default() },
                clock,
            );
            let initial = engine.new_state("saga-1", json!({}));
            store.sagas.lock().unwrap().insert(initial.id.clone(), initial);

            let mut cancel = None;
            let mut terminal = None;
            for round in 0..2000 {
                if cancel_after == Some(round) {
                    cancel = Some(engine.cancel("saga-1", "customer").await);
                }
                // An error is a crash: the next round restarts from the stored state.
                if let Ok(Next::Finished(status)) = engine.advance("saga-1").await {
                    terminal = Some(status);
                    break;
                }
            }
            let status = terminal.expect("the saga never reached a terminal state");
            let s = store.sagas.lock().unwrap()["saga-1"].clone();
            let applied = remote.applied.lock().unwrap().clone();
            let key = |name: &str| s.idempotency_key(name);
            for name in NAMES.iter().chain(UNDO.iter()) {
                assert!(applied.iter().filter(|k| **k == key(name)).count() <= 1, "{name} applied twice");
            }
            match status {
                SagaStatus::Completed => {
                    for (i, name) in NAMES.iter().enumerate().take(n) {
                        assert!(applied.contains(&key(name)), "step {i} not applied");
                        assert_eq!(s.steps[i].status, StepStatus::Done);
                    }
                    assert!(UNDO.iter().all(|u| !applied.contains(&key(u))), "completed yet compensated");
                    assert!(!matches!(cancel, Some(Ok(Cancel::Accepted))), "an accepted cancel completed");
                }
                SagaStatus::Compensated => {
                    // Every applied step with a compensation was undone, latest first.
                    let done: Vec<usize> = (0..n).filter(|i| applied.contains(&key(NAMES[*i]))).collect();
                    let expected: Vec<String> = done.iter().rev()
                        .filter(|i| compensated[**i])
                        .map(|i| key(UNDO[*i]))
                        .collect();
                    let undos: Vec<String> = applied.iter().filter(|k| k.contains(":u")).cloned().collect();
                    assert_eq!(undos, expected);
                    for (i, st) in s.steps.iter().enumerate() {
                        if done.contains(&i) && compensated[i] {
                            assert_eq!(st.status, StepStatus::Compensated);
                        } else {
                            assert_ne!(st.status, StepStatus::Compensated);
                        }
                    }
                    assert!(s.reason.is_some());
                    assert!(!s.stuck, "a compensated saga is not stuck");
                }
                other => panic!("not terminal: {other:?}"),
            }
            // The pivot is respected: no cancel after it started.
            if let (Some(p), Some(Ok(Cancel::Accepted))) = (pivot, &cancel)
                && s.cancel_requested.is_some() {
                    let transitions = store.transitions.lock().unwrap();
                    let asked = transitions.iter().position(|t| matches!(t, Transition::CancelRequested { .. })).unwrap();
                    let pivot_started = transitions.iter().position(|t| matches!(t, Transition::StepStarted { step, .. } if *step == NAMES[p]));
                    assert!(pivot_started.is_none_or(|ps| ps > asked), "cancel accepted after the pivot started");
                    assert!(pivot_started.is_none(), "the pivot ran after a cancel");
            }
        });
    }
}

#[tokio::test(start_paused = true)]
async fn a_driven_saga_retries_compensations_until_they_succeed_and_is_stuck_meanwhile() {
    let def = definition(2, &[true, true], None);
    let store = Arc::new(MemStore::default());
    let remote = Arc::new(Remote {
        outcomes: vec![vec![], vec![Outcome::Fatal]],
        comp_failures: vec![3, 0],
        ..Remote::default()
    });
    let engine = Engine::new(
        def,
        remote.clone(),
        store.clone(),
        EngineConfig {
            stuck_after: 2,
            ..EngineConfig::default()
        },
    );
    let mut initial = engine.new_state("s", json!({}));
    // Left by an engine that stopped a minute ago: resumed at once.
    initial.updated_ms -= 60_000;
    store.sagas.lock().unwrap().insert("s".into(), initial);
    assert_eq!(engine.resume_all().await.unwrap(), 1);
    let mut saw_stuck = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = store.sagas.lock().unwrap()["s"].clone();
        saw_stuck |= s.stuck;
        if s.status.is_terminal() {
            assert_eq!(s.status, SagaStatus::Compensated);
            assert_eq!(s.steps[0].status, StepStatus::Compensated);
            assert_eq!(s.steps[0].compensation_attempts, 4);
            assert_eq!(s.steps[1].status, StepStatus::Failed);
            assert_eq!(s.reason.as_deref(), Some("s1: refused"));
            assert!(saw_stuck, "stuck while the compensation kept failing");
            return;
        }
    }
    panic!("the saga did not finish");
}

/// Steps that take a while and always succeed, counting calls.
#[derive(Default)]
struct Slow {
    calls: AtomicUsize,
}

impl Steps for Slow {
    fn run<'a>(&'a self, _: Call<'a>) -> BoxFuture<'a, Result<serde_json::Value, StepError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(json!({}))
        })
    }

    fn compensate<'a>(&'a self, _: Call<'a>) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(start_paused = true)]
async fn two_engines_on_one_saga_finish_it_instead_of_undoing_each_other() {
    // Two instances of a service both resume the same saga (one restarted while the
    // other ran). Without standing back, each one's step start voids the other's
    // result, forever.
    let store = Arc::new(MemStore::default());
    let steps = Arc::new(Slow::default());
    let engines: Vec<Engine> = (0..2)
        .map(|_| {
            Engine::new(
                definition(3, &[false; 3], None),
                steps.clone(),
                store.clone(),
                EngineConfig::default(),
            )
        })
        .collect();
    let initial = engines[0].new_state("s", json!({}));
    store.sagas.lock().unwrap().insert("s".into(), initial);
    for e in &engines {
        e.start("s");
    }
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = store.sagas.lock().unwrap()["s"].clone();
        if s.status.is_terminal() {
            assert_eq!(s.status, SagaStatus::Completed);
            // Each step ran at most twice (once per engine), not over and over.
            assert!(
                steps.calls.load(Ordering::SeqCst) <= 6,
                "{} calls",
                steps.calls.load(Ordering::SeqCst)
            );
            return;
        }
    }
    panic!(
        "the saga did not finish: {} step calls",
        steps.calls.load(Ordering::SeqCst)
    );
}

#[tokio::test(start_paused = true)]
async fn an_engine_that_stood_back_takes_over_when_the_other_goes_quiet() {
    let steps = Arc::new(Slow::default());
    let config = EngineConfig {
        watch: Duration::from_secs(2),
        ..EngineConfig::default()
    };
    let store = Arc::new(MemStore {
        lose_at: vec![0],
        ..MemStore::default()
    });
    // The engine's clock follows the test's (paused) time.
    let t0 = tokio::time::Instant::now();
    let clock: crate::Clock =
        Arc::new(move || 1_000_000 + i64::try_from(t0.elapsed().as_millis()).unwrap());
    let engine = Engine::with_clock(
        definition(2, &[false; 2], None),
        steps.clone(),
        store.clone(),
        config,
        clock,
    );
    let initial = engine.new_state("s", json!({}));
    store.sagas.lock().unwrap().insert("s".into(), initial);
    let began = tokio::time::Instant::now();
    engine.start("s");
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if store.sagas.lock().unwrap()["s"].status.is_terminal() {
            // It stood back for one watch period with no transition, then took over.
            assert!(
                began.elapsed() >= Duration::from_secs(2),
                "{:?}",
                began.elapsed()
            );
            assert_eq!(
                store.sagas.lock().unwrap()["s"].status,
                SagaStatus::Completed
            );
            return;
        }
    }
    panic!("the saga was never taken over");
}

#[tokio::test(start_paused = true)]
async fn resuming_leaves_a_saga_another_engine_just_moved_and_takes_a_quiet_one_at_once() {
    let t0 = tokio::time::Instant::now();
    let clock: crate::Clock =
        Arc::new(move || 1_000_000 + i64::try_from(t0.elapsed().as_millis()).unwrap());
    let store = Arc::new(MemStore::default());
    let steps = Arc::new(Slow::default());
    let engine = Engine::with_clock(
        definition(2, &[false; 2], None),
        steps.clone(),
        store.clone(),
        EngineConfig {
            watch: Duration::from_secs(5),
            ..EngineConfig::default()
        },
        clock,
    );
    let mut fresh = engine.new_state("fresh", json!({}));
    fresh.updated_ms = 1_000_000; // a transition just now
    let mut quiet = engine.new_state("quiet", json!({}));
    quiet.updated_ms = 1_000_000 - 60_000; // a minute ago: whoever drove it is gone
    store.sagas.lock().unwrap().insert("fresh".into(), fresh);
    store.sagas.lock().unwrap().insert("quiet".into(), quiet);
    assert_eq!(engine.resume_all().await.unwrap(), 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = |id: &str| store.sagas.lock().unwrap()[id].status;
    assert_eq!(status("quiet"), SagaStatus::Completed);
    assert_eq!(
        status("fresh"),
        SagaStatus::Running,
        "taken from a live engine"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(status("fresh"), SagaStatus::Completed, "never taken over");
    assert!(engine.settle(Duration::from_secs(1)).await);
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let c = EngineConfig::default();
    assert_eq!(c.backoff(1), Duration::from_millis(100));
    assert_eq!(c.backoff(3), Duration::from_millis(400));
    assert_eq!(c.backoff(99), Duration::from_secs(10));
}

/// Steps that record the trace each call ran in.
#[derive(Default)]
struct TraceRecorder {
    traces: Mutex<Vec<String>>,
}

impl Steps for TraceRecorder {
    fn run<'a>(&'a self, _: Call<'a>) -> BoxFuture<'a, Result<serde_json::Value, StepError>> {
        Box::pin(async move {
            let tp = kit::telemetry::trace::traceparent(&tracing::Span::current())
                .expect("steps run in a traced span");
            self.traces.lock().unwrap().push(tp[3..35].to_owned());
            Ok(json!({}))
        })
    }

    fn compensate<'a>(&'a self, _: Call<'a>) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_resumed_saga_continues_the_trace_of_the_request_that_started_it() {
    kit::telemetry::init_for_tests();
    let store = Arc::new(MemStore::default());
    let steps = Arc::new(TraceRecorder::default());
    let engine = Engine::new(
        definition(2, &[false; 2], None),
        steps.clone(),
        store.clone(),
        EngineConfig::default(),
    );
    let request = tracing::info_span!("request");
    let mut state = request.in_scope(|| engine.new_state("t", json!({})));
    let request_trace = kit::telemetry::trace::traceparent(&request).unwrap()[3..35].to_owned();
    assert_eq!(
        state.traceparent.as_deref().map(|t| &t[3..35]),
        Some(request_trace.as_str()),
        "the state keeps the request's trace"
    );
    // Left by an engine that died a minute ago; the new one runs outside any request.
    state.updated_ms -= 60_000;
    store.sagas.lock().unwrap().insert("t".into(), state);
    assert_eq!(engine.resume_all().await.unwrap(), 1);
    assert!(engine.settle(Duration::from_secs(5)).await);
    assert_eq!(
        store.sagas.lock().unwrap()["t"].status,
        SagaStatus::Completed
    );
    let traces = steps.traces.lock().unwrap().clone();
    assert_eq!(traces, vec![request_trace.clone(), request_trace]);
}
