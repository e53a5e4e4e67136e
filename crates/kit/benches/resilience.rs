//! Closed-path overhead of the circuit breaker alone, of the policy calls the gateway
//! makes (bulkhead + breaker + retry wrapper), and of the tower `ClientStack` that
//! service-to-service calls pass (the same plus the deadline layer and request
//! rebuilding for retries, in one boxed future), each around a call that does nothing,
//! with that no-op call alone as the baseline.
//!
//! `cargo bench -p flotilla-kit --bench resilience`

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tower::ServiceExt;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kit::resilience::{
    BreakerConfig, CircuitBreaker, ClientStack, Policy, PolicyConfig, ResilienceConfig, Verdict,
};

fn breaker(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let b = CircuitBreaker::new("bench", BreakerConfig::default());
    c.bench_function("breaker closed: acquire + success", |bench| {
        bench.iter(|| b.try_acquire().unwrap().success())
    });

    let rate = CircuitBreaker::new(
        "bench-rate",
        BreakerConfig {
            failure_rate: Some(0.5),
            ..Default::default()
        },
    );
    c.bench_function(
        "breaker closed, rate window on: acquire + success",
        |bench| bench.iter(|| rate.try_acquire().unwrap().success()),
    );

    let policy = Policy::new(
        "bench-stack",
        &ResilienceConfig {
            default: PolicyConfig::default(),
            targets: Default::default(),
        },
    );
    c.bench_function(
        "standard stack: bulkhead + breaker + retry around a no-op",
        |bench| {
            bench.to_async(&rt).iter(|| async {
                let _slot = policy.bulkhead.enter().await.unwrap();
                policy
                    .retry
                    .run(
                        true,
                        None,
                        |_| async {
                            let permit = policy.breaker.try_acquire().unwrap();
                            permit.success();
                            black_box(200u16)
                        },
                        |_| Verdict::Done,
                    )
                    .await
            })
        },
    );
}

fn tower_stack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let policy = Policy::new("bench-tower", &ResilienceConfig::default());
    let transport = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
    });
    let stack = ClientStack::new(&policy, Duration::from_secs(5)).layer(transport, Full::new);
    // The request is built outside the timed part (it is the caller's, not the stack's);
    // the no-op transport alone is the baseline the stack's overhead sits on.
    let request = || {
        http::Request::get("http://bench/x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    c.bench_function("no-op transport alone (baseline)", |bench| {
        bench.to_async(&rt).iter_batched(
            request,
            |req| {
                let svc = transport;
                async move { black_box(svc.oneshot(req).await.unwrap().status()) }
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function(
        "tower ClientStack (bulkhead, deadline, retry, breaker) around a no-op",
        |bench| {
            bench.to_async(&rt).iter_batched(
                request,
                |req| {
                    let svc = stack.clone();
                    async move { black_box(svc.oneshot(req).await.unwrap().status()) }
                },
                BatchSize::SmallInput,
            )
        },
    );
}

criterion_group!(benches, breaker, tower_stack);
criterion_main!(benches);
