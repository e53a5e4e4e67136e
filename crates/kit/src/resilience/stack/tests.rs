//! The layers against a scripted transport: what reaches it, what comes back.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};

use super::*;
use crate::resilience::{BreakerConfig, PolicyConfig, ResilienceConfig, RetryConfig};

/// What the scripted transport answers.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Grpc(u32),
    Refused,
    Hang,
}

#[derive(Clone)]
struct Transport {
    answer: Arc<Mutex<Answer>>,
    calls: Arc<AtomicU32>,
    seen: Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>,
}

impl Transport {
    fn new(answer: Answer) -> Self {
        Self {
            answer: Arc::new(Mutex::new(answer)),
            calls: Arc::default(),
            seen: Arc::default(),
        }
    }

    fn set(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<http::Request<Full<Bytes>>> for Transport {
    type Response = http::Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Full<Bytes>>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = *self.answer.lock().unwrap();
        let seen = self.seen.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            seen.lock().unwrap().push((parts.headers, bytes));
            match answer {
                Answer::Status(s) => Ok(http::Response::builder()
                    .status(s)
                    .body(Full::default())
                    .unwrap()),
                Answer::Grpc(code) => Ok(http::Response::builder()
                    .header("grpc-status", code)
                    .body(Full::default())
                    .unwrap()),
                Answer::Refused => Err(Box::new(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )) as BoxError),
                Answer::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    unreachable!("the deadline cuts this off")
                }
            }
        })
    }
}

fn policy(name: &str, breaker: BreakerConfig, retry: RetryConfig) -> Policy {
    Policy::new(
        name,
        &ResilienceConfig {
            default: PolicyConfig {
                breaker,
                retry,
                ..Default::default()
            },
            targets: Default::default(),
        },
    )
}

fn no_retries() -> RetryConfig {
    RetryConfig {
        max_attempts: 1,
        ..Default::default()
    }
}

fn get() -> http::Request<Full<Bytes>> {
    http::Request::get("http://x/api/products")
        .body(Full::default())
        .unwrap()
}

fn post(body: &'static str, key: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::post("http://x/api/orders");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    b.body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn send<S>(svc: &mut S, req: http::Request<Full<Bytes>>) -> Result<u16, BoxError>
where
    S: Service<
            http::Request<Full<Bytes>>,
            Response = http::Response<Full<Bytes>>,
            Error = BoxError,
        >,
{
    svc.ready()
        .await?
        .call(req)
        .await
        .map(|r| r.status().as_u16())
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_at_the_threshold_and_then_spares_the_target() {
    let t = Transport::new(Answer::Status(503));
    let p = policy("stack-open", BreakerConfig::default(), no_retries());
    let mut svc = ClientStack::new(&p, Duration::from_secs(1)).layer(t.clone(), Full::new);
    for _ in 0..5 {
        assert_eq!(send(&mut svc, get()).await.unwrap(), 503);
    }
    assert_eq!(p.breaker.state(), State::Open);
    let e = send(&mut svc, get()).await.unwrap_err();
    assert!(
        matches!(CallError::find(&e), Some(CallError::BreakerOpen { .. })),
        "{e}"
    );
    assert_eq!(t.calls(), 5, "the open breaker answers without the network");
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_refused_connections_do_not_charge_the_breaker() {
    let t = Transport::new(Answer::Status(404));
    let p = policy("stack-4xx", BreakerConfig::default(), no_retries());
    let mut svc = ClientStack::new(&p, Duration::from_secs(1)).layer(t.clone(), Full::new);
    for _ in 0..10 {
        send(&mut svc, get()).await.unwrap();
    }
    t.set(Answer::Refused);
    for _ in 0..10 {
        let e = send(&mut svc, get()).await.unwrap_err();
        assert!(CallError::find(&e).is_some_and(CallError::not_sent));
    }
    assert_eq!(p.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn grpc_answers_are_classified_by_their_status_code() {
    let t = Transport::new(Answer::Grpc(5));
    let p = policy("stack-grpc", BreakerConfig::default(), no_retries());
    let mut svc = ClientStack::new(&p, Duration::from_secs(1))
        .grpc()
        .layer(t.clone(), Full::new);
    for _ in 0..10 {
        send(&mut svc, get()).await.unwrap();
    }
    assert_eq!(p.breaker.state(), State::Closed, "NOT_FOUND is an answer");
    t.set(Answer::Grpc(14));
    for _ in 0..5 {
        send(&mut svc, get()).await.unwrap();
    }
    assert_eq!(p.breaker.state(), State::Open, "UNAVAILABLE is a failure");
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_budget_times_out_and_counts_as_a_failure() {
    let t = Transport::new(Answer::Hang);
    let p = policy(
        "stack-timeout",
        BreakerConfig {
            failure_threshold: 2,
            ..Default::default()
        },
        no_retries(),
    );
    let mut svc = ClientStack::new(&p, Duration::from_millis(200)).layer(t.clone(), Full::new);
    for _ in 0..2 {
        let e = send(&mut svc, get()).await.unwrap_err();
        assert!(
            matches!(CallError::find(&e), Some(CallError::TimedOut { after, .. }) if *after == Duration::from_millis(200)),
            "{e}"
        );
    }
    assert_eq!(p.breaker.state(), State::Open);
    let (headers, _) = t.seen.lock().unwrap()[0].clone();
    assert_eq!(headers[crate::resilience::deadline::DEADLINE_HEADER], "200");
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_cut_to_the_callers_deadline_and_sent_as_grpc_timeout() {
    let t = Transport::new(Answer::Grpc(0));
    let p = policy("stack-deadline", BreakerConfig::default(), no_retries());
    let mut svc = ClientStack::new(&p, Duration::from_secs(5))
        .grpc()
        .layer(t.clone(), Full::new);
    let caller = crate::resilience::deadline::Deadline(
        tokio::time::Instant::now() + Duration::from_millis(750),
    );
    let req = http::Request::post("http://x/flotilla.inventory.Inventory/Reserve")
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(Full::default())
        .unwrap();
    crate::resilience::deadline::with_deadline(caller, send(&mut svc, req))
        .await
        .unwrap();
    let (headers, _) = t.seen.lock().unwrap()[0].clone();
    assert_eq!(headers["x-flotilla-deadline-ms"], "750");
    assert_eq!(headers["grpc-timeout"], "750m");
}

#[tokio::test(start_paused = true)]
async fn only_safe_calls_are_retried_and_each_attempt_carries_the_body() {
    let t = Transport::new(Answer::Status(503));
    let p = policy(
        "stack-retry",
        BreakerConfig {
            failure_threshold: 0,
            ..Default::default()
        },
        RetryConfig {
            max_attempts: 3,
            budget_min_per_sec: 100,
            ..Default::default()
        },
    );
    let mut svc = ClientStack::new(&p, Duration::from_secs(10)).layer(t.clone(), Full::new);
    send(&mut svc, post("{\"a\":1}", None)).await.unwrap();
    assert_eq!(
        t.calls(),
        1,
        "a POST without an idempotency key is sent once"
    );
    send(&mut svc, post("{\"a\":1}", Some("k1"))).await.unwrap();
    assert_eq!(t.calls(), 4, "with a key it is retried");
    let bodies: Vec<Bytes> = t
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    assert!(
        bodies[1..].iter().all(|b| b == "{\"a\":1}"),
        "same body every time"
    );
    send(&mut svc, get()).await.unwrap();
    assert_eq!(t.calls(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_rejects_at_once() {
    let t = Transport::new(Answer::Hang);
    let mut p = policy("stack-bulkhead", BreakerConfig::default(), no_retries());
    p.bulkhead = crate::resilience::Bulkhead::new(
        "stack-bulkhead",
        crate::resilience::BulkheadConfig {
            max_concurrent: 1,
            max_queue: 0,
            queue_timeout: Duration::from_millis(10),
        },
    );
    let svc = ClientStack::new(&p, Duration::from_secs(60)).layer(t.clone(), Full::new);
    let mut first = svc.clone();
    let hung = tokio::spawn(async move { send(&mut first, get()).await });
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let e = send(&mut svc.clone(), get()).await.unwrap_err();
    assert!(
        matches!(CallError::find(&e), Some(CallError::BulkheadFull { .. })),
        "{e}"
    );
    hung.abort();
}

#[tokio::test(start_paused = true)]
async fn per_instance_breakers_cut_off_one_instance_only() {
    let p = policy(
        "stack-instances",
        BreakerConfig {
            per_instance: true,
            ..Default::default()
        },
        no_retries(),
    );
    let bad = Transport::new(Answer::Status(500));
    let good = Transport::new(Answer::Status(200));
    let stack = ClientStack::new(&p, Duration::from_secs(1));
    let mut to_bad = stack.clone().instance("i-1").layer(bad.clone(), Full::new);
    let mut to_good = stack.clone().instance("i-2").layer(good.clone(), Full::new);
    for _ in 0..5 {
        send(&mut to_bad, get()).await.unwrap();
    }
    assert!(p.is_open_for("i-1"));
    assert!(!p.is_open_for("i-2"));
    assert_eq!(send(&mut to_good, get()).await.unwrap(), 200);
    assert_eq!(
        p.breaker.state(),
        State::Closed,
        "the target's breaker is untouched"
    );
    assert!(
        crate::resilience::breakers()
            .iter()
            .any(|b| b.target == "stack-instances/i-1" && b.state == State::Open)
    );
}

/// The standard order assembled from the standalone layers, as someone who wants only
/// some of them would stack them.
fn stacked(
    stack: &ClientStack,
    t: Transport,
) -> impl Service<
    http::Request<Full<Bytes>>,
    Response = http::Response<Full<Bytes>>,
    Error = BoxError,
    Future: Send,
> + Clone
+ use<> {
    use crate::resilience::bulkhead::BulkheadLayer;
    use crate::resilience::circuit_breaker::CircuitBreakerLayer;
    use crate::resilience::deadline::DeadlineLayer;
    tower::ServiceBuilder::new()
        .layer(BulkheadLayer::new(stack.policy.bulkhead.clone()))
        .layer(
            RetryLayer::new(stack.policy.retry.clone(), stack.classifier, Full::new)
                .all_idempotent(stack.idempotent),
        )
        .layer(CircuitBreakerLayer::new(
            stack.breaker.clone(),
            stack.classifier,
        ))
        .layer(DeadlineLayer::new(
            stack.policy.breaker.target(),
            stack.timeout,
        ))
        .service(t)
}

#[tokio::test(start_paused = true)]
async fn the_standalone_layers_stacked_by_hand_behave_as_the_stack() {
    let t = Transport::new(Answer::Status(503));
    let p = policy("stacked-open", BreakerConfig::default(), no_retries());
    let mut svc = stacked(&ClientStack::new(&p, Duration::from_secs(1)), t.clone());
    for _ in 0..5 {
        assert_eq!(send(&mut svc, get()).await.unwrap(), 503);
    }
    let e = send(&mut svc, get()).await.unwrap_err();
    assert!(
        matches!(CallError::find(&e), Some(CallError::BreakerOpen { .. })),
        "{e}"
    );
    assert_eq!(t.calls(), 5, "the open breaker answers without the network");

    let t = Transport::new(Answer::Status(503));
    let p = policy(
        "stacked-retry",
        BreakerConfig {
            failure_threshold: 0,
            ..Default::default()
        },
        RetryConfig {
            max_attempts: 3,
            budget_min_per_sec: 100,
            ..Default::default()
        },
    );
    let mut svc = stacked(&ClientStack::new(&p, Duration::from_secs(10)), t.clone());
    send(&mut svc, post("{\"a\":1}", None)).await.unwrap();
    assert_eq!(
        t.calls(),
        1,
        "a POST without an idempotency key is sent once"
    );
    send(&mut svc, post("{\"a\":1}", Some("k1"))).await.unwrap();
    assert_eq!(t.calls(), 4, "with a key it is retried");
    assert!(
        t.seen.lock().unwrap()[1..]
            .iter()
            .all(|(_, b)| b == "{\"a\":1}"),
        "same body every time"
    );

    let t = Transport::new(Answer::Hang);
    let p = policy("stacked-timeout", BreakerConfig::default(), no_retries());
    let mut svc = stacked(&ClientStack::new(&p, Duration::from_millis(200)), t.clone());
    let e = send(&mut svc, get()).await.unwrap_err();
    assert!(
        matches!(CallError::find(&e), Some(CallError::TimedOut { .. })),
        "{e}"
    );
    let (headers, _) = t.seen.lock().unwrap()[0].clone();
    assert_eq!(headers[crate::resilience::deadline::DEADLINE_HEADER], "200");
}

#[tokio::test(start_paused = true)]
async fn an_answer_ready_at_once_and_one_that_takes_time_both_pass_the_deadline() {
    // The deadline layer sets no timer for an answer ready at the first poll; one that
    // is not ready still gets its answer (and its timeout).
    #[derive(Clone)]
    struct Slow;
    impl Service<http::Request<Full<Bytes>>> for Slow {
        type Response = http::Response<Full<Bytes>>;
        type Error = BoxError;
        type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<Full<Bytes>>) -> Self::Future {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok(http::Response::new(Full::default()))
            })
        }
    }
    let p = policy("stack-slow", BreakerConfig::default(), no_retries());
    let stack = ClientStack::new(&p, Duration::from_millis(200));
    assert_eq!(
        send(&mut stack.layer(Slow, Full::new), get())
            .await
            .unwrap(),
        200
    );
    let quick = Transport::new(Answer::Status(204));
    assert_eq!(
        send(&mut stack.layer(quick, Full::new), get())
            .await
            .unwrap(),
        204
    );
    let p = policy("stack-too-slow", BreakerConfig::default(), no_retries());
    let stack = ClientStack::new(&p, Duration::from_millis(100));
    let e = send(&mut stack.layer(Slow, Full::new), get())
        .await
        .unwrap_err();
    assert!(
        matches!(CallError::find(&e), Some(CallError::TimedOut { .. })),
        "{e}"
    );
}
