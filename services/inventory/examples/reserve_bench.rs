//! Scripted load: reserve + commit round trips per second over gRPC against a real
//! inventory with the store named by `STORE` (default a temporary SQLite file; e.g.
//! `STORE=redis://127.0.0.1:6379/0`). `N` pairs (default 2000) from `C` concurrent
//! clients (default 16).
//!
//! `cargo run --release -p flotilla-inventory --example reserve_bench`

use std::time::Instant;

use kit::config::Config;
use kit::service::Context;
use proto::inventory::inventory_client::InventoryClient;
use proto::inventory::{CommitRequest, Line, ReserveRequest};

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
    let mut section = serde_json::json!({"seed": true,
        "redis_prefix": format!("flotilla-bench:{}:", uuid::Uuid::new_v4().simple())});
    if let Ok(store) = std::env::var("STORE") {
        section["store"] = store.into();
    }
    let config = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("inventory", section);
    let service = inventory::build(Context::new("inventory", config)?).await?;
    let url = format!("http://{}", service.grpc_addr().expect("gRPC is served"));
    let public = format!("http://{}", service.public_addr());
    tokio::spawn(service.run_until(std::future::pending()));
    // Plenty of stock, so every reservation succeeds.
    let admin = reqwest::Client::new();
    for sku in ["FLT-SAFE-004", "FLT-GEAR-003"] {
        let res = admin
            .put(format!("{public}/api/products/{sku}/stock"))
            .header("x-flotilla-user-id", "bench")
            .header("x-flotilla-roles", "admin")
            .json(&serde_json::json!({"stock": 100_000_000}))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "setting stock: {}", res.status());
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut client = InventoryClient::connect(url).await.unwrap();
                for i in (w..n).step_by(c) {
                    let order_id = format!("bench-{i}");
                    // Alternate SKUs so both ends of the catalog are touched.
                    let sku = if i % 2 == 0 {
                        "FLT-SAFE-004"
                    } else {
                        "FLT-GEAR-003"
                    };
                    client
                        .reserve(ReserveRequest {
                            order_id: order_id.clone(),
                            items: vec![Line {
                                sku: sku.into(),
                                quantity: 1,
                            }],
                        })
                        .await
                        .unwrap();
                    client.commit(CommitRequest { order_id }).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "store={} pairs={n} clients={c} seconds={secs:.2} reserve+commit/s={:.0}",
        std::env::var("STORE").unwrap_or_else(|_| "sqlite".into()),
        n as f64 / secs
    );
    Ok(())
}
