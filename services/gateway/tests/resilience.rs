//! The gateway's fallbacks and per-instance breakers against real upstreams whose
//! health the test switches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::routing::get;
use kit::config::Config;
use kit::service::Context;
use serde_json::json;

/// An upstream answering `GET /flaky/{name}` with `{"from": label, "name": name}`, or
/// `503` while `failing` is set.
async fn spawn_flaky(label: &'static str, failing: Arc<AtomicBool>) -> SocketAddr {
    let app = Router::new().route(
        "/flaky/{name}",
        get(
            move |axum::extract::Path(name): axum::extract::Path<String>| {
                let failing = failing.clone();
                async move {
                    if failing.load(Ordering::SeqCst) {
                        Err(http::StatusCode::SERVICE_UNAVAILABLE)
                    } else {
                        Ok(axum::Json(json!({"from": label, "name": name})))
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn gateway(dir: &std::path::Path, discovery: String, routes: serde_json::Value) -> String {
    let cfg = Config::for_tests(dir)
        .insecure_internal()
        .merged("discovery", discovery)
        .merged(
            "gateway",
            json!({"listen": "127.0.0.1:0", "routes": routes}),
        )
        .merged(
            "resilience",
            json!({"targets": {
                "pair": {
                    "breaker": {"per_instance": true, "failure_threshold": 3},
                    "retry": {"max_attempts": 1}
                },
                // Recovery is seen at once, not after an open interval.
                "flaky": {"breaker": {"failure_threshold": 1000}}
            }}),
        );
    let service = gateway::build(Context::new("gateway", cfg).unwrap())
        .await
        .unwrap();
    let addr = service.public_addr();
    tokio::spawn(service.run_until(std::future::pending()));
    format!("http://{addr}")
}

#[tokio::test]
async fn stale_if_error_serves_the_last_good_answer_while_the_service_fails() {
    kit::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let flaky = spawn_flaky("only", failing.clone()).await;
    let gw = gateway(
        dir.path(),
        format!("static://flaky={flaky}"),
        json!([{"prefix": "/flaky", "service": "flaky", "stale_if_error": "1m", "auth": "public"}]),
    )
    .await;
    let http = reqwest::Client::new();
    let get = |path: &str, no_cache: bool| {
        let mut r = http.get(format!("{gw}{path}"));
        if no_cache {
            r = r.header("cache-control", "no-cache");
        }
        r.send()
    };

    let fresh = get("/flaky/a", false).await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert!(!fresh.headers().contains_key("x-flotilla-fallback"));
    let fresh: serde_json::Value = fresh.json().await.unwrap();

    failing.store(true, Ordering::SeqCst);
    let stale = get("/flaky/a", false).await.unwrap();
    assert_eq!(stale.status(), 200, "the last good answer stands in");
    assert_eq!(stale.headers()["x-flotilla-fallback"], "stale-if-error");
    assert!(stale.headers().contains_key("age"));
    assert_eq!(stale.json::<serde_json::Value>().await.unwrap(), fresh);

    assert_eq!(
        get("/flaky/a", true).await.unwrap().status(),
        503,
        "a client asking for a fresh answer gets the failure"
    );
    assert_eq!(
        get("/flaky/b", false).await.unwrap().status(),
        503,
        "nothing to fall back to"
    );

    failing.store(false, Ordering::SeqCst);
    let again = get("/flaky/a", false).await.unwrap();
    assert!(!again.headers().contains_key("x-flotilla-fallback"));
}

#[tokio::test]
async fn a_per_instance_breaker_cuts_off_the_bad_instance_and_keeps_its_peer() {
    kit::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let bad = spawn_flaky("bad", Arc::new(AtomicBool::new(true))).await;
    let good = spawn_flaky("good", Arc::new(AtomicBool::new(false))).await;
    let gw = gateway(
        dir.path(),
        format!("static://pair={bad},{good}"),
        json!([{"prefix": "/flaky", "service": "pair", "auth": "public"}]),
    )
    .await;
    let http = reqwest::Client::new();
    let mut failures = 0;
    for i in 0..60 {
        let res = http.get(format!("{gw}/flaky/x{i}")).send().await.unwrap();
        if res.status() != 200 {
            failures += 1;
        }
    }
    assert!(
        failures <= 3,
        "{failures} failures: at most the threshold reaches the client"
    );
    let breakers = kit::resilience::breakers();
    let pair: Vec<_> = breakers
        .iter()
        .filter(|b| b.target.starts_with("pair/"))
        .collect();
    assert_eq!(
        pair.iter()
            .filter(|b| b.state == kit::resilience::State::Open)
            .count(),
        1,
        "{pair:?}"
    );
    assert!(
        breakers
            .iter()
            .any(|b| b.target == "pair" && b.state == kit::resilience::State::Closed),
        "the service as a whole is not cut off"
    );
}
