//! Scripted load: authorize + capture round trips per second over gRPC against a real
//! payments service with the store named by `STORE` (default a temporary SQLite file;
//! e.g. `STORE=mysql://root@127.0.0.1:3306/flotilla_bench`, database created first).
//! `N` pairs (default 2000) from `C` concurrent clients (default 16); the simulated
//! provider answers without latency.
//!
//! `cargo run --release -p flotilla-payments --example authorize_bench`

use std::time::Instant;

use kit::config::Config;
use kit::service::Context;
use proto::payments::payments_client::PaymentsClient;
use proto::payments::{AuthorizeRequest, CaptureRequest, Card};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (n, c) = (env("N", 2000), env("C", 16));
    let dir = tempfile::tempdir()?;
    let mut section = serde_json::json!({});
    if let Ok(store) = std::env::var("STORE") {
        section["store"] = store.into();
    }
    let config = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("payments", section);
    let service = payments::build(Context::new("payments", config)?).await?;
    let url = format!("http://{}", service.grpc_addr().expect("gRPC is served"));
    tokio::spawn(service.run_until(std::future::pending()));
    let run = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|w| {
            let (url, run) = (url.clone(), run.clone());
            tokio::spawn(async move {
                let mut client = PaymentsClient::connect(url).await.unwrap();
                for i in (w..n).step_by(c) {
                    let order_id = format!("bench-{run}-{i}");
                    let p = client
                        .authorize(AuthorizeRequest {
                            order_id: order_id.clone(),
                            user_id: "bench".into(),
                            amount_cents: 1999,
                            currency: "EUR".into(),
                            card: Some(Card {
                                number: "4242424242424242".into(),
                                exp_month: 12,
                                exp_year: 2099,
                                cvc: "123".into(),
                            }),
                            idempotency_key: order_id.clone(),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    client
                        .capture(CaptureRequest {
                            payment_id: p.payment_id,
                            idempotency_key: format!("cap-{order_id}"),
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "store={} pairs={n} clients={c} seconds={secs:.2} authorize+capture/s={:.0}",
        std::env::var("STORE")
            .map(|s| kit::store::redact(&s))
            .unwrap_or_else(|_| "sqlite".into()),
        n as f64 / secs
    );
    Ok(())
}
