//! Publish→deliver benchmark of the bus backends on this machine:
//! `cargo run --release -p flotilla-bus --example bench_events [-- EVENTS]`.
//!
//! Starts an embedded bus in-process (on a temporary database) and uses NATS JetStream
//! at `FLOTILLA_TEST_NATS` (default `nats://127.0.0.1:4222`, file storage, a fresh
//! stream). Four tasks publish; one consumer receives and acknowledges each event.
//! Latency is from the start of a publish to its delivery; throughput is events
//! delivered and acknowledged per second.
//!
//! Then the outbox relay: as many rows written to a SQLite outbox in one transaction,
//! published by one [`Relay`] to each backend (rows published and marked sent per
//! second).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kit_events::outbox::{self, Relay, RelayConfig};
use kit_events::{Event, EventBus, Group};

/// The outbox's tables, as a producer's migrations would create them.
static OUTBOX: [kit::store::Migration; 1] = [kit::store::Migration {
    version: 1,
    description: "outbox and inbox",
    sql: outbox::SQLITE_SCHEMA,
}];

/// Rows per second one relay publishes from a SQLite outbox to `bus`.
async fn relay(name: &str, bus: Arc<dyn EventBus>, rows: usize) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    let pool = kit::store::sqlite::open(&url, "bench", &OUTBOX)
        .await
        .expect("outbox database");
    let mut tx = pool.begin().await.unwrap();
    for n in 0..rows {
        let e = Event::new("bench", "bench.relay", serde_json::json!({ "n": n }));
        outbox::enqueue(&mut *tx, "bench.relay", &e).await.unwrap();
    }
    tx.commit().await.unwrap();
    let relay = Relay::new(pool, bus, RelayConfig::default());
    let begin = Instant::now();
    let mut sent = 0;
    while sent < rows {
        let round = relay.relay_once().await.expect("relay round");
        assert!(!round.failed, "a publish failed");
        sent += round.sent;
    }
    let total = begin.elapsed();
    println!(
        "| {name} | {rows} | {:.0} |",
        rows as f64 / total.as_secs_f64()
    );
}

const PUBLISHERS: usize = 4;

async fn bench(name: &str, bus: Arc<dyn EventBus>, events: usize) {
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let group = Group::new("bench", &["bench.events"]).max_in_flight(256);
    let mut sub = bus.subscribe(&group).await.expect("subscribe");
    let begin = Instant::now();
    for p in 0..PUBLISHERS {
        let (bus, started) = (bus.clone(), started.clone());
        tokio::spawn(async move {
            for n in (p..events).step_by(PUBLISHERS) {
                let e = Event::new("bench", "bench.events", serde_json::json!({ "n": n }));
                started.lock().unwrap().insert(e.id.clone(), Instant::now());
                bus.publish("bench.events", &e).await.expect("publish");
            }
        });
    }
    let mut latencies = Vec::with_capacity(events);
    while latencies.len() < events {
        let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("deliveries keep coming")
            .expect("delivery");
        let now = Instant::now();
        if let Some(t) = started.lock().unwrap().remove(&d.event.id) {
            latencies.push(now - t);
        }
        d.ack().await.expect("ack");
    }
    let total = begin.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "| {name} | {events} | {:.0} | {:.2} | {:.2} |",
        events as f64 / total.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
    );
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().unwrap();
    let config = kit::config::Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("log", "warn")
        .merged("bus", serde_json::json!({ "listen": "127.0.0.1:0" }));
    let ctx = kit::service::Context::new("bus", config).unwrap();
    let service = bus::build(ctx).await.expect("bus starts");
    let url = format!("bus://{}", service.public_addr());
    tokio::spawn(service.run_until(std::future::pending()));

    println!("| backend | events | events/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    let embedded = kit_events::connect(&url, "bench").await.unwrap();
    bench("embedded bus (SQLite WAL)", embedded.clone(), events).await;

    let base =
        std::env::var("FLOTILLA_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    match kit_events::nats::NatsBus::connect(
        &format!("{base}?stream=BENCH{id}&prefix=bench{id}"),
        "FLOTILLA_TEST_NATS",
    )
    .await
    {
        Ok(nats) => {
            bench("NATS JetStream (file)", Arc::new(nats.clone()), events).await;
            println!("\n| outbox relay (SQLite) to | rows | rows/s |");
            println!("|---|---|---|");
            relay("embedded bus", embedded, events).await;
            relay("NATS JetStream (file)", Arc::new(nats.clone()), events).await;
            let _ = nats.delete_stream().await;
        }
        Err(e) => eprintln!("NATS skipped: {e}"),
    }
}
