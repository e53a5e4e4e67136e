//! The order saga survives `kill -9` of orders under load: after the supervisor
//! restarts it, every order ends CONFIRMED or CANCELLED, no payment is captured twice
//! and no stock is lost or double-reserved.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::harness::System;

const SKU: &str = "CRASH-1";
const STOCK: i64 = 1_000;

async fn orders_instance(sys: &System) -> (String, u32) {
    for _ in 0..300 {
        if let Some(i) = sys.instances("orders").await.first() {
            let pid = i["metadata"]["pid"].as_str().unwrap().parse().unwrap();
            return (format!("https://{}", i["addr"].as_str().unwrap()), pid);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("orders never registered:\n{}", sys.logs());
}

async fn post(
    sys: &System,
    url: &str,
    user: &str,
    roles: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    let res = sys
        .as_gateway
        .post(url)
        .header("x-flotilla-user-id", user)
        .header("x-flotilla-roles", roles)
        .json(body)
        .send()
        .await
        .ok()?;
    let status = res.status().as_u16();
    Some((status, res.json().await.unwrap_or(Value::Null)))
}

async fn order_status(sys: &System, base: &str, id: &str) -> Option<Value> {
    let res = sys
        .as_gateway
        .get(format!("{base}/api/orders/{id}"))
        .header("x-flotilla-user-id", "crash-user")
        .send()
        .await
        .ok()?;
    res.json().await.ok()
}

#[tokio::test]
async fn killing_orders_mid_saga_loses_no_order_stock_or_money() {
    // Slow payments keep many sagas in flight when orders is killed.
    let sys = System::start_with(&[("FLOTILLA_PAYMENTS__PROVIDER_LATENCY", "100ms")]).await;
    let inventory = sys.instances("inventory").await;
    let inv = format!("https://{}", inventory[0]["addr"].as_str().unwrap());
    let (status, body) = post(
        &sys,
        &format!("{inv}/api/products"),
        "admin",
        "admin",
        &json!({"sku": SKU, "name": "Crash", "description": "x", "price_cents": 100,
                "currency": "EUR", "stock": STOCK}),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let (orders, pid) = orders_instance(&sys).await;

    // Four clients place orders; orders is killed while they do.
    let mut clients = Vec::new();
    for c in 0..4 {
        let orders = orders.clone();
        let http = sys.as_gateway.clone();
        clients.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for n in 0..15 {
                let card = if n % 5 == 4 { "4000000000000002" } else { "4242424242424242" };
                let body = json!({"items": [{"sku": SKU, "quantity": 1 + (n % 3)}],
                    "payment": {"card_number": card, "exp_month": 12, "exp_year": 2099, "cvc": "123"}});
                let res = http
                    .post(format!("{orders}/api/orders"))
                    .header("x-flotilla-user-id", "crash-user")
                    .header("idempotency-key", format!("c{c}-n{n}"))
                    .json(&body)
                    .send()
                    .await;
                if let Ok(r) = res
                    && r.status().as_u16() == 202
                    && let Ok(v) = r.json::<Value>().await
                {
                    accepted.push(v["order_id"].as_str().unwrap().to_owned());
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            accepted
        }));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let mut ids = Vec::new();
    for c in clients {
        ids.extend(c.await.unwrap());
    }
    assert!(ids.len() >= 10, "too few orders accepted: {}", ids.len());

    // The supervisor restarts orders; it resumes the sagas in flight.
    let mut new_base = None;
    for _ in 0..600 {
        let (base, new_pid) = orders_instance(&sys).await;
        if new_pid != pid {
            new_base = Some(base);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = new_base.unwrap_or_else(|| panic!("orders was not restarted:\n{}", sys.logs()));
    let mut confirmed_units = 0;
    for id in &ids {
        let mut last = Value::Null;
        for _ in 0..600 {
            if let Some(o) = order_status(&sys, &base, id).await {
                let done = o["status"] == "CANCELLED"
                    || (o["status"] == "CONFIRMED" && o["steps"][3]["status"] == "done");
                last = o;
                if done {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match last["status"].as_str() {
            Some("CONFIRMED") => confirmed_units += last["items"][0]["quantity"].as_i64().unwrap(),
            Some("CANCELLED") => {}
            _ => panic!("order {id} did not finish: {last:#}\n{}", sys.logs()),
        }
    }

    let inv_db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        sys.data.path().join("inventory/inventory.db").display()
    ))
    .await
    .unwrap();
    let (stock, reserved, sold): (i64, i64, i64) =
        sqlx::query_as("SELECT stock, reserved, sold FROM products WHERE sku = ?")
            .bind(SKU)
            .fetch_one(&inv_db)
            .await
            .unwrap();
    assert_eq!(reserved, 0, "no stock left reserved");
    assert_eq!(sold, confirmed_units, "sold = confirmed");
    assert_eq!(stock + sold, STOCK, "stock conserved");

    let pay_db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        sys.data.path().join("payments/payments.db").display()
    ))
    .await
    .unwrap();
    let (twice,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT payment_id FROM operations WHERE kind = 'capture' \
         GROUP BY payment_id HAVING COUNT(*) > 1)",
    )
    .fetch_one(&pay_db)
    .await
    .unwrap();
    assert_eq!(twice, 0, "no payment captured twice");
    // Not asserted: an authorization whose answer was lost in the crash stays held
    // (orders cancels with `payment_details_lost` but has no payment id to void it);
    // the provider's hold expires. See docs/saga.md.
}
