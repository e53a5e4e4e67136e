//! Closed-path overhead of the circuit breaker alone and of the whole standard stack
//! (bulkhead + breaker + retry wrapper) around a call that does nothing.
//!
//! `cargo bench -p flotilla-kit --bench resilience`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kit::resilience::{
    BreakerConfig, CircuitBreaker, Policy, PolicyConfig, ResilienceConfig, Verdict,
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

criterion_group!(benches, breaker);
criterion_main!(benches);
