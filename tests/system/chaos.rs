//! Resilience end to end: `flotilla chaos` breaks inventory, the gateway's breaker opens
//! and fails fast without reaching it, and traffic flows again once it recovers.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::System;

const PRODUCT: &str = "/api/products/FLT-BOAT-001";
const ROUTE_LABEL: &str = "route=\"/api/products/{sku}\"";

/// The gateway's breaker for inventory, from `/admin/breakers`.
async fn inventory_breaker(sys: &System) -> Value {
    let breakers: Vec<Value> = sys
        .http
        .get(format!("{}/admin/breakers", sys.admin("gateway").await))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    breakers
        .into_iter()
        .find(|b| b["target"] == "inventory")
        .unwrap()
}

#[tokio::test]
async fn breaker_opens_fails_fast_and_recovers() {
    let sys = System::start_with(&[
        ("FLOTILLA_RESILIENCE__DEFAULT__BREAKER__OPEN_FOR", "2s"),
        (
            "FLOTILLA_RESILIENCE__DEFAULT__BREAKER__FAILURE_THRESHOLD",
            "5",
        ),
    ])
    .await;
    let url = format!("{}{PRODUCT}", sys.gateway);
    assert_eq!(sys.http.get(&url).send().await.unwrap().status(), 200);

    sys.cli(&[
        "chaos",
        "fault",
        "inventory",
        "--abort",
        "503",
        "--percent",
        "100",
    ]);

    // Failing calls trip the breaker after the threshold.
    let mut opened = false;
    for _ in 0..10 {
        let res = sys.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 503);
        let body: Value = res.json().await.unwrap();
        if body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("circuit breaker is open")
        {
            opened = true;
            break;
        }
    }
    assert!(opened, "the breaker did not open");
    let inv = inventory_breaker(&sys).await;
    assert_eq!(inv["state"], "open");

    // While open: 503 with Retry-After at once, and inventory sees none of it.
    let seen_before = sys
        .counter("inventory", "http_requests_total", ROUTE_LABEL)
        .await;
    for _ in 0..20 {
        let started = Instant::now();
        let res = sys.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 503);
        assert!(res.headers().contains_key("retry-after"));
        assert!(started.elapsed() < Duration::from_millis(500), "fails fast");
    }
    let seen_after = sys
        .counter("inventory", "http_requests_total", ROUTE_LABEL)
        .await;
    assert_eq!(
        seen_before, seen_after,
        "no request reached inventory while open"
    );

    // Recovery: clear the fault; after the open interval a probe succeeds and traffic flows.
    sys.cli(&["chaos", "clear", "inventory"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if sys.http.get(&url).send().await.unwrap().status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "traffic did not flow again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..5 {
        assert_eq!(sys.http.get(&url).send().await.unwrap().status(), 200);
    }
    let inv = inventory_breaker(&sys).await;
    assert_eq!(inv["state"], "closed");
    assert!(
        sys.counter("gateway", "breaker_transitions_total", "to=\"open\"")
            .await
            >= 1.0
    );
}
