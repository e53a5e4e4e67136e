//! The gateway in front of the real inventory service (and, for header and failure
//! checks, a small echo upstream), all on free ports.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use kit::config::Config;
use kit::service::Context;
use serde_json::{Value, json};

fn config(dir: &std::path::Path) -> Config {
    Config::for_tests(dir).insecure_internal()
}

async fn spawn(service: kit::service::Service) -> SocketAddr {
    let addr = service.public_addr();
    tokio::spawn(service.run_until(std::future::pending()));
    addr
}

/// An upstream that answers with the headers it received, or sleeps.
async fn spawn_echo() -> SocketAddr {
    let app = Router::new()
        .route(
            "/echo/{*rest}",
            any(|headers: http::HeaderMap| async move {
                let h: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or(""))))
                    .collect();
                axum::Json(Value::Object(h))
            }),
        )
        .route(
            "/slow/{*rest}",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct Setup {
    gateway: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    kit::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let inv_cfg = config(dir.path())
        .merged("discovery", "static://")
        .merged("inventory", json!({"seed": true}));
    let inventory = spawn(
        inventory::build(Context::new("inventory", inv_cfg).unwrap())
            .await
            .unwrap(),
    )
    .await;
    let echo = spawn_echo().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw_cfg = config(dir.path())
        .merged(
            "discovery",
            format!("static://inventory={inventory};echo={echo};slow={echo};dead={dead}"),
        )
        .merged(
            "gateway",
            json!({
                "listen": "127.0.0.1:0",
                "routes": [
                    {"prefix": "/api/products", "service": "inventory", "auth": "public"},
                    {"prefix": "/echo", "service": "echo", "body_limit": 1024, "auth": "public"},
                    {"prefix": "/slow", "service": "slow", "timeout": "200ms", "auth": "public"},
                    {"prefix": "/dead", "service": "dead", "auth": "public"},
                    {"prefix": "/nobody", "service": "nobody", "auth": "public"},
                ]
            }),
        );
    let gateway = spawn(
        gateway::build(Context::new("gateway", gw_cfg).unwrap())
            .await
            .unwrap(),
    )
    .await;
    Setup {
        gateway: format!("http://{gateway}"),
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Setup {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.gateway))
            .send()
            .await
            .unwrap()
    }
}

async fn raw_request(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

async fn problem(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status);
    body
}

#[tokio::test]
async fn forwards_to_inventory() {
    let s = setup().await;
    let res = s.get("/api/products?limit=5").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    assert!(res.headers().contains_key("traceparent"));
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    let res = s.get("/api/products/FLT-BOAT-001").await;
    assert_eq!(res.status(), 200);
    // The upstream's own problem documents pass through.
    problem(s.get("/api/products?limit=0").await, 422).await;
}

#[tokio::test]
async fn sets_forwarding_headers_and_strips_hop_by_hop() {
    let s = setup().await;
    let res = s
        .http
        .get(format!("{}/echo/x", s.gateway))
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("proxy-authorization", "Basic Zm9v")
        .header("x-request-id", "rid-7")
        .header("x-flotilla-user-id", "forged-admin")
        .header("x-flotilla-roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-request-id"], "rid-7");
    assert!(seen["traceparent"].as_str().unwrap().starts_with("00-"));
    assert!(seen.get("x-private").is_none());
    assert!(seen.get("proxy-authorization").is_none());
    assert!(
        seen.get("x-flotilla-user-id").is_none(),
        "identity cannot be forged"
    );
    assert!(seen.get("x-flotilla-roles").is_none());
}

#[tokio::test]
async fn upstream_failures_are_problems() {
    let s = setup().await;
    let slow = problem(s.get("/slow/x").await, 504).await;
    assert!(slow["detail"].as_str().unwrap().contains("slow"));
    let dead = s.get("/dead/x").await;
    assert_eq!(dead.headers()["retry-after"], "1");
    problem(dead, 503).await;
    let res = s.get("/nobody/x").await;
    assert_eq!(res.headers()["retry-after"], "1");
    problem(res, 503).await;
}

#[tokio::test]
async fn bad_requests_never_reach_upstreams() {
    let s = setup().await;
    problem(s.get("/unrouted").await, 404).await;
    for internal in ["/admin/routes", "/metrics", "/healthz", "/readyz"] {
        problem(s.get(internal).await, 404).await;
    }
    // HTTP clients normalise dot segments themselves; send these raw.
    for bad in [
        "/echo/%2e%2e/admin",
        "/echo/a%2Fb",
        "/echo//x",
        "/echo/a/../../admin",
        "/echo/a\\b",
    ] {
        let raw = raw_request(
            &s.gateway,
            &format!("GET {bad} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert!(raw.starts_with("HTTP/1.1 400"), "{bad}: {raw}");
        assert!(raw.contains("application/problem+json"), "{bad}: {raw}");
    }
    let res = s
        .http
        .post(format!("{}/echo/x", s.gateway))
        .body(vec![b'a'; 4096])
        .send()
        .await
        .unwrap();
    problem(res, 413).await;
    let huge = "h".repeat(32 * 1024);
    let res = s
        .http
        .get(format!("{}/echo/x", s.gateway))
        .header("x-big", huge)
        .send()
        .await
        .unwrap();
    problem(res, 431).await;
}

#[tokio::test]
async fn forwards_over_h2c() {
    kit::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let inv_cfg = config(dir.path())
        .merged("discovery", "static://")
        .merged("inventory", json!({"seed": true}));
    let inventory = spawn(
        inventory::build(Context::new("inventory", inv_cfg).unwrap())
            .await
            .unwrap(),
    )
    .await;
    let gw_cfg = config(dir.path())
        .merged("discovery", format!("static://inventory={inventory}"))
        .merged(
            "gateway",
            json!({
                "listen": "127.0.0.1:0",
                "routes": [{"prefix": "/api/products", "service": "inventory", "protocol": "h2c", "auth": "public"}]
            }),
        );
    let gateway = spawn(
        gateway::build(Context::new("gateway", gw_cfg).unwrap())
            .await
            .unwrap(),
    )
    .await;
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let res = http
            .get(format!("http://{gateway}/api/products/FLT-BOAT-003"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["name"], "Canoe");
    }
}
