//! Inventory's HTTP behaviour against the real service and a real SQLite store.

use kit::config::Config;
use kit::service::Context;
use serde_json::{Value, json};

struct TestApp {
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn spawn_inventory() -> TestApp {
    kit::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_file(std::path::Path::new("/nonexistent/flotilla.toml"))
        .merged("data_dir", dir.path())
        .merged("discovery", "static://")
        .merged("inventory", json!({"seed": true}));
    let ctx = Context::new("inventory", config).unwrap();
    let service = inventory::build(ctx).await.unwrap();
    let base = format!("http://{}", service.public_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        http: reqwest::Client::new(),
        _dir: dir,
        _stop: stop,
    }
}

impl TestApp {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn lists_the_seeded_catalog_page_by_page() {
    let app = spawn_inventory().await;
    let mut skus = Vec::new();
    let mut path = "/api/products?limit=10".to_owned();
    loop {
        let res = app.get(&path).await;
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            assert!(item["price_cents"].as_i64().unwrap() > 0);
            assert_eq!(item["currency"], "EUR");
            assert!(item["available"].as_i64().is_some());
            skus.push(item["sku"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/products?limit=10&cursor={c}"),
            None => break,
        }
    }
    assert!(skus.len() >= 20, "{}", skus.len());
    let mut sorted = skus.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(skus, sorted, "ordered, no repeats");
}

#[tokio::test]
async fn gets_one_product() {
    let app = spawn_inventory().await;
    let res = app.get("/api/products/FLT-BOAT-002").await;
    assert_eq!(res.status(), 200);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["name"], "Kayak");
    assert_eq!(p["available"], 12);
}

#[tokio::test]
async fn bad_input_gets_problem_documents() {
    let app = spawn_inventory().await;
    for (path, status, field) in [
        ("/api/products?limit=0", 422, Some("limit")),
        ("/api/products?limit=101", 422, Some("limit")),
        ("/api/products?limit=abc", 422, Some("query")),
        ("/api/products?cursor=%%%", 422, Some("cursor")),
        ("/api/products?cursor=bm90LWEtc2t1", 422, Some("cursor")),
        ("/api/products/NOPE-404", 404, None),
        ("/api/products/..%2F..%2Fetc", 404, None),
        ("/api/products/a%00b", 404, None),
        ("/api/nothing", 404, None),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), status, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], status, "{path}");
        if let Some(f) = field {
            assert_eq!(body["errors"][0]["field"], f, "{path}: {body}");
        }
    }
    let res = app
        .http
        .delete(format!("{}/api/products", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let huge = "x".repeat(20_000);
    let res = app
        .http
        .get(format!("{}/api/products", app.base))
        .header("x-huge", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn echoes_request_ids_and_continues_traces() {
    let app = spawn_inventory().await;
    let res = app
        .http
        .get(format!("{}/api/products/FLT-BOAT-001", app.base))
        .header("x-request-id", "req-42")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-42");
    let tp = res.headers()["traceparent"].to_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "same trace: {tp}"
    );
    assert!(!tp.contains("00f067aa0ba902b7"), "a new span id: {tp}");
    let res = app.get("/api/products").await;
    assert_eq!(
        res.headers()["x-request-id"].len(),
        36,
        "generated when absent"
    );
}
