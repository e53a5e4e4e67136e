//! Orders per second through the whole saga, and time from placement to `CONFIRMED`.
//!
//! Starts the registry, inventory, payments and orders in this process (SQLite stores
//! in a temporary directory, real gRPC between them), places `ORDERS` orders from
//! `CLIENTS` concurrent clients, waits until every saga is finished, and prints
//! throughput and p50/p99 of `confirm_order.at - created_at` (server-side times).
//!
//! `cargo run --release -p flotilla-orders --example saga_bench -- [ORDERS] [CLIENTS]`

use std::time::{Duration, Instant};

use kit::config::Config;
use kit::service::Context;
use serde_json::{Value, json};

fn ms(rfc3339: &str) -> i64 {
    let t = humantime::parse_rfc3339(rfc3339).expect("RFC 3339");
    i64::try_from(t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let orders_n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let dir = tempfile::tempdir().unwrap();
    let reg = registry::build(
        Context::new(
            "registry",
            Config::for_tests(dir.path())
                .insecure_internal()
                .merged("discovery", "static://")
                .merged("registry", json!({"listen": "127.0.0.1:0"})),
        )
        .unwrap(),
    )
    .await
    .unwrap()
    .without_registration()
    .spawn();
    let cfg = || {
        Config::for_tests(dir.path())
            .insecure_internal()
            .merged("discovery", format!("registry://{}", reg.public_addr()))
            .merged("log", "warn")
    };
    let inventory = inventory::build(Context::new("inventory", cfg()).unwrap())
        .await
        .unwrap()
        .spawn();
    let _payments = payments::build(Context::new("payments", cfg()).unwrap())
        .await
        .unwrap()
        .spawn();
    let orders = orders::build(
        Context::new(
            "orders",
            cfg().merged("orders", json!({"bus": "bus://127.0.0.1:9"})),
        )
        .unwrap(),
    )
    .await
    .unwrap()
    .spawn();
    let http = reqwest::Client::new();
    let admin = |r: reqwest::RequestBuilder| {
        r.header("x-flotilla-user-id", "bench-admin")
            .header("x-flotilla-roles", "admin")
    };
    admin(http.post(format!("http://{}/api/products", inventory.public_addr())))
        .json(
            &json!({"sku": "BENCH-1", "name": "Bench", "description": "x",
                      "price_cents": 100, "currency": "EUR", "stock": 1_000_000}),
        )
        .send()
        .await
        .unwrap();
    // Let discovery see inventory and payments.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let base = format!("http://{}", orders.public_addr());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base) = (http.clone(), base.clone());
        let share = orders_n / clients + usize::from(c < orders_n % clients);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..share {
                let res = http
                    .post(format!("{base}/api/orders"))
                    .header("x-flotilla-user-id", format!("bench-{c}"))
                    .json(&json!({"items": [{"sku": "BENCH-1", "quantity": 1}],
                        "payment": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2099, "cvc": "123"}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 202);
                let v: Value = res.json().await.unwrap();
                ids.push((c, v["order_id"].as_str().unwrap().to_owned()));
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    let placed = started.elapsed();
    let mut to_confirmed = Vec::new();
    for (c, id) in &ids {
        loop {
            let o: Value = http
                .get(format!("{base}/api/orders/{id}"))
                .header("x-flotilla-user-id", format!("bench-{c}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if o["steps"][3]["status"] == "done" {
                let confirmed = o["steps"][2]["at"].as_str().unwrap();
                to_confirmed.push(ms(confirmed) - ms(o["created_at"].as_str().unwrap()));
                break;
            }
            assert_ne!(o["status"], "CANCELLED", "{o}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let finished = started.elapsed();
    to_confirmed.sort_unstable();
    let pct = |p: f64| {
        to_confirmed[((to_confirmed.len() as f64 * p) as usize).min(to_confirmed.len() - 1)]
    };
    println!(
        "orders={orders_n} clients={clients} placed_in={placed:.2?} all_captured_in={finished:.2?} \
         throughput={:.0} orders/s p50_to_confirmed={}ms p99_to_confirmed={}ms",
        orders_n as f64 / finished.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
}
