//! Resilience end to end: `flotilla chaos` breaks inventory, the gateway's breaker opens
//! and fails fast without reaching it, and traffic flows again once it recovers.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::System;

const PRODUCT: &str = "/api/products/FLT-BOAT-001";
const ROUTE_LABEL: &str = "route=\"/api/products/{sku}\"";

/// The breaker `service` keeps for `target`, from its `/admin/breakers`.
async fn breaker(sys: &System, service: &str, target: &str) -> Option<Value> {
    let breakers: Vec<Value> = sys
        .http
        .get(format!("{}/admin/breakers", sys.admin(service).await))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    breakers.into_iter().find(|b| b["target"] == target)
}

/// The gateway's breaker for inventory.
async fn inventory_breaker(sys: &System) -> Value {
    breaker(sys, "gateway", "inventory").await.unwrap()
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

    // Failing calls trip the breaker after the threshold. (`no-cache`: these clients
    // refuse the stale catalog answer the gateway would otherwise fall back to.)
    let fresh = || sys.http.get(&url).header("cache-control", "no-cache");
    let mut opened = false;
    for _ in 0..10 {
        let res = fresh().send().await.unwrap();
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
        let res = fresh().send().await.unwrap();
        assert_eq!(res.status(), 503);
        assert!(res.headers().contains_key("retry-after"));
        assert!(started.elapsed() < Duration::from_millis(500), "fails fast");
    }
    // The fallback: a client that takes a stale answer gets the product as inventory
    // last gave it, marked as such.
    let stale = sys.http.get(&url).send().await.unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["x-flotilla-fallback"], "stale-if-error");
    assert_eq!(stale.json::<Value>().await.unwrap()["sku"], "FLT-BOAT-001");
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
        if fresh().send().await.unwrap().status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "traffic did not flow again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..5 {
        let res = fresh().send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(!res.headers().contains_key("x-flotilla-fallback"));
    }
    let inv = inventory_breaker(&sys).await;
    assert_eq!(inv["state"], "closed");
    assert!(
        sys.counter("gateway", "breaker_transitions_total", "to=\"open\"")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn failing_payments_grpc_opens_the_orders_breaker_and_the_saga_finishes_after_recovery() {
    let sys = System::start_with(&[
        ("FLOTILLA_RESILIENCE__DEFAULT__BREAKER__OPEN_FOR", "1s"),
        ("FLOTILLA_ORDERS__STEP_DEADLINE", "60s"),
    ])
    .await;
    let orders = loop {
        if let Some(i) = sys.instances("orders").await.first() {
            break format!("https://{}", i["addr"].as_str().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Payments' gRPC API answers UNAVAILABLE to every call.
    sys.cli(&[
        "chaos",
        "fault",
        "payments",
        "--grpc-code",
        "14",
        "--route",
        "/flotilla.payments",
    ]);

    let body = serde_json::json!({"items": [{"sku": "FLT-BOAT-001", "quantity": 1}],
        "payment": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2099, "cvc": "123"}});
    let res = sys
        .as_gateway
        .post(format!("{orders}/api/orders"))
        .header("x-flotilla-user-id", "grpc-chaos-user")
        .header("idempotency-key", "grpc-chaos-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The saga's authorize calls fail over gRPC; orders' breaker for payments opens.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = breaker(&sys, "orders", "payments").await;
        if b.as_ref()
            .is_some_and(|b| b["transitions"].as_u64() >= Some(1))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orders' payments breaker never opened: {b:?}\n{}",
            sys.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sys.counter("payments", "faults_injected_total", "abort")
            .await
            >= 5.0,
        "the faults were answered as gRPC errors"
    );

    // Recovery: the saga, still retrying within its deadline, confirms the order.
    sys.cli(&["chaos", "clear", "payments"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o: Value = sys
            .as_gateway
            .get(format!("{orders}/api/orders/{id}"))
            .header("x-flotilla-user-id", "grpc-chaos-user")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if o["status"] == "CONFIRMED" {
            break;
        }
        assert_ne!(o["status"], "CANCELLED", "{o}");
        assert!(
            Instant::now() < deadline,
            "not confirmed: {o}\n{}",
            sys.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        breaker(&sys, "orders", "payments").await.unwrap()["state"],
        "closed"
    );
}
