//! Analytics against a real embedded bus (started in this process) and a real store:
//! every subject projected once, the summary API, and a rebuild that replays the stream
//! into the same numbers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kit::config::Config;
use kit::service::{Context, Running};
use kit_events::{Event, EventBus};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

struct TestBus {
    _dir: tempfile::TempDir,
    _running: Running,
    bus: Arc<dyn EventBus>,
}

async fn start_bus() -> TestBus {
    kit::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("bus", json!({"listen": "127.0.0.1:0"}));
    let service = bus::build(Context::new("bus", config).unwrap())
        .await
        .unwrap();
    let url = format!("bus://{}", service.public_addr());
    let running = service.spawn();
    let bus = kit_events::connect(&url, "test").await.unwrap();
    TestBus {
        _dir: dir,
        _running: running,
        bus,
    }
}

struct App {
    base: String,
    admin: String,
    config: Config,
    _running: Running,
}

async fn start_analytics(bus: &TestBus, data: &std::path::Path) -> App {
    let config = Config::for_tests(data)
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("analytics", json!({"generation_check": "100ms"}));
    let service = analytics::build_with_bus(
        Context::new("analytics", config.clone()).unwrap(),
        bus.bus.clone(),
    )
    .await
    .unwrap();
    App {
        base: format!("http://{}", service.public_addr()),
        admin: format!("http://{}", service.admin_addr()),
        config,
        _running: service.spawn(),
    }
}

impl App {
    async fn summary(&self, query: &str, roles: Option<&str>) -> (u16, Value) {
        let mut req =
            reqwest::Client::new().get(format!("{}/api/analytics/summary{query}", self.base));
        if let Some(roles) = roles {
            req = req
                .header("x-flotilla-user-id", "0190a0b0-0000-7000-8000-000000000001")
                .header("x-flotilla-roles", roles);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// The whole inbox from `GET /admin/inbox`, read `limit` at a time: the group it
    /// names and the event ids in order.
    async fn inbox(&self, limit: u32) -> (String, Vec<String>) {
        let mut ids = Vec::new();
        let mut query = format!("?limit={limit}");
        loop {
            let url = format!("{}/admin/inbox{query}", self.admin);
            let res = reqwest::get(url).await.unwrap();
            assert_eq!(res.status(), 200);
            let page: Value = res.json().await.unwrap();
            let events = page["events"].as_array().unwrap();
            assert!(events.len() <= limit as usize, "{page}");
            ids.extend(
                events
                    .iter()
                    .map(|e| e["event_id"].as_str().unwrap().to_owned()),
            );
            match page["next"].as_str() {
                Some(next) => query = format!("?limit={limit}&after={next}"),
                None => return (page["group"].as_str().unwrap().to_owned(), ids),
            }
        }
    }

    /// Polls the admin inbox until it holds `n` events.
    async fn wait_for_inbox(&self, n: usize) -> (String, Vec<String>) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (group, ids) = self.inbox(5).await;
            assert!(ids.len() <= n, "more in the inbox than published: {ids:?}");
            if ids.len() == n {
                return (group, ids);
            }
            assert!(
                Instant::now() < deadline,
                "the inbox stayed at {}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the admin summary until it counts `events` events.
    async fn wait_for_events(&self, events: i64) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, s) = self.summary("?window=1d", Some("admin")).await;
            assert_eq!(status, 200, "{s}");
            if s["events"].as_i64() == Some(events) {
                return s;
            }
            assert!(
                s["events"].as_i64().unwrap_or(0) <= events,
                "counted more than published: {s}"
            );
            assert!(Instant::now() < deadline, "the summary stayed at {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn order(kind: &str, items: Value, total: i64) -> Event {
    Event::new(
        "orders",
        kind,
        json!({"orderId": uuid::Uuid::now_v7().to_string(), "userId": "u1", "items": items,
               "total_cents": total, "currency": "EUR"}),
    )
}

/// 13 events across producers, plus a dead letter that must not count.
fn history() -> Vec<Event> {
    let mut events = vec![
        Event::new(
            "auth",
            "users.registered",
            json!({"userId": "u1", "email": "a@example.com"}),
        ),
        Event::new(
            "auth",
            "users.registered",
            json!({"userId": "u2", "email": "b@example.com"}),
        ),
    ];
    for _ in 0..3 {
        events.push(order(
            "orders.created",
            json!([{"sku": "A", "quantity": 1}]),
            1000,
        ));
    }
    events.push(order(
        "orders.confirmed",
        json!([{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}]),
        2500,
    ));
    events.push(order(
        "orders.confirmed",
        json!([{"sku": "B", "quantity": 5}]),
        4000,
    ));
    events.push(order(
        "orders.cancelled",
        json!([{"sku": "C", "quantity": 1}]),
        900,
    ));
    for kind in [
        "payments.authorized",
        "payments.captured",
        "payments.captured",
    ] {
        events.push(Event::new("payments", kind, json!({"amount_cents": 2500})));
    }
    events.push(Event::new(
        "payments",
        "payments.refunded",
        json!({"refund_cents": 300}),
    ));
    events.push(Event::new("inventory", "inventory.reserved", json!({})));
    events
}

#[tokio::test]
async fn every_subject_is_projected_once_and_a_rebuild_replays_to_the_same_numbers() {
    let bus = start_bus().await;
    let mut published: Vec<String> = Vec::new();
    for e in history() {
        bus.bus.publish(&e.kind, &e).await.unwrap();
        published.push(e.id.clone());
    }
    let dead = Event::new("orders", "orders.created", json!({}));
    bus.bus
        .publish("deadletter.notifications.orders.created", &dead)
        .await
        .unwrap();
    published.push(dead.id.clone());
    published.sort();

    let data = tempfile::tempdir().unwrap();
    let app = start_analytics(&bus, data.path()).await;
    let before = app.wait_for_events(13).await;
    assert_eq!(before["window"], "1d");
    assert_eq!(
        (
            &before["orders"],
            &before["confirmed"],
            &before["cancelled"]
        ),
        (&json!(3), &json!(2), &json!(1))
    );
    assert_eq!(before["revenue_cents"], 6500);
    assert_eq!(
        before["top_products"],
        json!([{"sku": "B", "quantity": 6}, {"sku": "A", "quantity": 2}])
    );
    assert_eq!(before["registrations"], 2);
    assert_eq!(before["payments"]["captured"], 2);
    assert_eq!(before["refunded_cents"], 300);
    assert!(before["events_per_minute"].as_f64().unwrap() > 0.0);
    let (group, inbox) = app.wait_for_inbox(published.len()).await;
    assert_eq!(group, "analytics-g1");
    assert_eq!(inbox, published, "every event in the inbox once, by id");

    // Drop the projections and replay from the beginning.
    let group = analytics::rebuild(&app.config).await.unwrap();
    assert_eq!(group, "analytics-g2");
    let after = app.wait_for_events(13).await;
    assert_eq!(after, before, "the replay gives the same numbers");
    let (group, inbox) = app.wait_for_inbox(published.len()).await;
    assert_eq!(group, "analytics-g2", "the new generation's group");
    assert_eq!(inbox, published);

    // Live events keep counting in the new generation, once.
    let late = order("orders.created", json!([]), 100);
    bus.bus.publish(&late.kind, &late).await.unwrap();
    let s = app.wait_for_events(14).await;
    assert_eq!(s["orders"], 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, again) = app.summary("?window=1d", Some("admin")).await;
    assert_eq!(again["events"], 14, "nothing counted twice: {again}");
}

#[tokio::test]
async fn the_summary_is_for_administrators_and_validates_its_window() {
    let bus = start_bus().await;
    let data = tempfile::tempdir().unwrap();
    let app = start_analytics(&bus, data.path()).await;

    let (status, s) = app.summary("", Some("admin")).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["window"], "1h", "the default window");
    assert_eq!(s["orders"], 0);
    assert_eq!(s["top_products"], json!([]));

    let (status, p) = app.summary("?window=1h", Some("customer")).await;
    assert_eq!(status, 403, "{p}");
    let (status, _) = app.summary("?window=1h", None).await;
    assert_eq!(status, 401);
    for bad in [
        "?window=",
        "?window=0m",
        "?window=1w",
        "?window=91d",
        "?window=abc",
        "?window=1h&window=2h",
    ] {
        let (status, p) = app.summary(bad, Some("admin")).await;
        assert_eq!(status, 422, "{bad}: {p}");
        assert_eq!(p["errors"][0]["field"], "window", "{bad}: {p}");
    }
    for bad in ["?limit=0", "?limit=1001", "?after=x&after=y", "?window=1h"] {
        let res = reqwest::get(format!("{}/admin/inbox{bad}", app.admin))
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{bad}");
    }
}
