//! Orders against the real registry, inventory and payments (each with its own SQLite
//! store), all in this process on free ports. Every outcome is checked in each
//! service's own database.

use std::time::Duration;

use kit::config::Config;
use kit::service::{Context, Running};
use serde_json::{Value, json};
use sqlx::SqlitePool;

const APPROVE: &str = "4242424242424242";
const DECLINE: &str = "4000000000000002";
const PROVIDER_ERROR: &str = "4000000000000119";
const SKU: &str = "SAGA-1";
const STOCK: i64 = 20;
const PRICE: i64 = 1_500;

#[derive(Clone, Default)]
struct Opts {
    /// Inventory's reservation TTL.
    reservation_ttl: Option<&'static str>,
    /// Payments' provider latency.
    provider_latency: Option<&'static str>,
    /// Orders' store URL (default: SQLite in the test's directory).
    orders_store: Option<String>,
}

struct System {
    dir: tempfile::TempDir,
    registry: String,
    orders: String,
    /// Orders' admin listener.
    orders_admin: String,
    inventory: Option<Running>,
    payments: Option<Running>,
    opts: Opts,
    http: reqwest::Client,
    _rest: Vec<Running>,
}

fn config(dir: &std::path::Path, registry: &str) -> Config {
    Config::for_tests(dir)
        .insecure_internal()
        .merged("discovery", format!("registry://{registry}"))
}

async fn start_inventory(dir: &std::path::Path, registry: &str, opts: &Opts) -> Running {
    let mut section = json!({"sweep_interval": "50ms"});
    if let Some(ttl) = opts.reservation_ttl {
        section["reservation_ttl"] = json!(ttl);
    }
    let cfg = config(dir, registry).merged("inventory", section);
    inventory::build(Context::new("inventory", cfg).unwrap())
        .await
        .unwrap()
        .spawn()
}

async fn start_payments(dir: &std::path::Path, registry: &str, opts: &Opts) -> Running {
    let mut section = json!({});
    if let Some(l) = opts.provider_latency {
        section["provider_latency"] = json!(l);
    }
    let cfg = config(dir, registry).merged("payments", section);
    payments::build(Context::new("payments", cfg).unwrap())
        .await
        .unwrap()
        .spawn()
}

impl System {
    async fn start(opts: Opts) -> Self {
        kit::telemetry::init_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let reg_cfg = Config::for_tests(dir.path())
            .insecure_internal()
            .merged("discovery", "static://")
            .merged("registry", json!({"listen": "127.0.0.1:0"}));
        let registry = registry::build(Context::new("registry", reg_cfg).unwrap())
            .await
            .unwrap()
            .without_registration()
            .spawn();
        let reg = registry.public_addr().to_string();
        let inventory = start_inventory(dir.path(), &reg, &opts).await;
        let payments = start_payments(dir.path(), &reg, &opts).await;
        let mut section = json!({
            "bus": "bus://127.0.0.1:9",
            "step_deadline": "2s",
            "call_timeout": "3s",
            "min_backoff": "20ms",
            "max_backoff": "200ms",
        });
        if let Some(url) = &opts.orders_store {
            section["store"] = json!(url);
        }
        let orders_cfg = config(dir.path(), &reg).merged("orders", section);
        let orders = orders::build(Context::new("orders", orders_cfg).unwrap())
            .await
            .unwrap();
        let orders_admin = format!("http://{}", orders.admin_addr());
        let orders = orders.spawn();
        let sys = Self {
            registry: reg,
            orders: format!("http://{}", orders.public_addr()),
            orders_admin,
            inventory: Some(inventory),
            payments: Some(payments),
            opts,
            http: reqwest::Client::new(),
            _rest: vec![registry, orders],
            dir,
        };
        sys.wait_registered("inventory", true).await;
        sys.wait_registered("payments", true).await;
        let (status, body) = sys
            .send(
                reqwest::Method::POST,
                &format!(
                    "http://{}/api/products",
                    sys.inventory.as_ref().unwrap().public_addr()
                ),
                Some(("admin-1", "admin")),
                json!({"sku": SKU, "name": "Saga test", "description": "x",
                       "price_cents": PRICE, "currency": "EUR", "stock": STOCK}),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        sys
    }

    async fn wait_registered(&self, service: &str, present: bool) {
        for _ in 0..200 {
            let res = self
                .http
                .get(format!("http://{}/v1/services/{service}", self.registry))
                .send()
                .await
                .unwrap();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            let n = body["instances"].as_array().map_or(0, Vec::len);
            if (n > 0) == present {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{service} never became {present}");
    }

    async fn stop_inventory(&mut self) {
        self.inventory.take().unwrap().stop().await;
        self.wait_registered("inventory", false).await;
    }

    async fn restart_inventory(&mut self) {
        self.inventory = Some(start_inventory(self.dir.path(), &self.registry, &self.opts).await);
        self.wait_registered("inventory", true).await;
    }

    async fn stop_payments(&mut self) {
        self.payments.take().unwrap().stop().await;
        self.wait_registered("payments", false).await;
    }

    async fn restart_payments(&mut self) {
        self.payments = Some(start_payments(self.dir.path(), &self.registry, &self.opts).await);
        self.wait_registered("payments", true).await;
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        user: Option<(&str, &str)>,
        body: Value,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, url).json(&body);
        if let Some((id, roles)) = user {
            req = req
                .header("x-flotilla-user-id", id)
                .header("x-flotilla-roles", roles);
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn place(&self, user: &str, quantity: u32, card: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            &format!("{}/api/orders", self.orders),
            Some((user, "customer")),
            order_body(quantity, card),
            None,
        )
        .await
    }

    async fn order(&self, user: &str, id: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::GET,
            &format!("{}/api/orders/{id}", self.orders),
            Some((user, "customer")),
            Value::Null,
            None,
        )
        .await
    }

    /// Polls the order until `done` says so.
    async fn wait_for(&self, user: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1000 {
            let (status, body) = self.order(user, id).await;
            assert_eq!(status, 200, "{body}");
            if done(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, body) = self.order(user, id).await;
        panic!("the order never got there: {body:#}");
    }

    async fn wait_final(&self, user: &str, id: &str) -> Value {
        self.wait_for(user, id, |o| {
            o["status"] == "CANCELLED"
                || (o["status"] == "CONFIRMED" && step(o, "capture_payment")["status"] == "done")
        })
        .await
    }

    async fn db(&self, service: &str) -> SqlitePool {
        let path = self.dir.path().join(service).join(format!("{service}.db"));
        SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap()
    }

    /// `(stock, reserved, sold)` of the test product, from inventory's database.
    async fn stock(&self) -> (i64, i64, i64) {
        sqlx::query_as("SELECT stock, reserved, sold FROM products WHERE sku = ?")
            .bind(SKU)
            .fetch_one(&self.db("inventory").await)
            .await
            .unwrap()
    }

    /// The order's reservation status in inventory's database.
    async fn reservation(&self, order_id: &str) -> Option<String> {
        sqlx::query_as::<_, (String,)>("SELECT status FROM reservations WHERE order_id = ?")
            .bind(order_id)
            .fetch_optional(&self.db("inventory").await)
            .await
            .unwrap()
            .map(|r| r.0)
    }

    /// The order's payment status and its operations, from payments' database.
    async fn payment(&self, order_id: &str) -> Option<(String, Vec<String>)> {
        let db = self.db("payments").await;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT id, status FROM payments WHERE order_id = ?")
                .bind(order_id)
                .fetch_optional(&db)
                .await
                .unwrap();
        let (id, status) = row?;
        let ops: Vec<(String,)> =
            sqlx::query_as("SELECT kind FROM operations WHERE payment_id = ? ORDER BY kind")
                .bind(id)
                .fetch_all(&db)
                .await
                .unwrap();
        Some((status, ops.into_iter().map(|o| o.0).collect()))
    }

    /// The subjects of the order's events in orders' outbox, in order.
    async fn events(&self, order_id: &str) -> Vec<String> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT subject FROM outbox WHERE json_extract(payload, '$.data.orderId') = ? ORDER BY position",
        )
        .bind(order_id)
        .fetch_all(&self.db("orders").await)
        .await
        .unwrap();
        rows.into_iter().map(|r| r.0).collect()
    }
}

fn order_body(quantity: u32, card: &str) -> Value {
    json!({
        "items": [{"sku": SKU, "quantity": quantity}],
        "payment": {"card_number": card, "exp_month": 12, "exp_year": 2099, "cvc": "123"}
    })
}

fn step<'a>(order: &'a Value, name: &str) -> &'a Value {
    order["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

fn statuses(order: &Value) -> Vec<String> {
    order["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_owned())
        .collect()
}

fn id(accepted: &Value) -> String {
    accepted["order_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_good_order_is_confirmed_captured_and_priced_by_inventory() {
    let sys = System::start(Opts::default()).await;
    let (status, accepted) = sys.place("u-1", 3, APPROVE).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "PENDING");
    let o = sys.wait_final("u-1", &id(&accepted)).await;
    assert_eq!(o["status"], "CONFIRMED", "{o:#}");
    assert_eq!(statuses(&o), ["done", "done", "done", "done"]);
    assert_eq!(o["items"][0]["unit_price_cents"], PRICE);
    assert_eq!(o["total_cents"], 3 * PRICE);
    assert_eq!(sys.stock().await, (STOCK - 3, 0, 3));
    assert_eq!(
        sys.reservation(&id(&accepted)).await.as_deref(),
        Some("committed")
    );
    let (pay, ops) = sys.payment(&id(&accepted)).await.unwrap();
    assert_eq!(pay, "captured");
    assert_eq!(ops, ["capture"]);
    assert_eq!(
        sys.events(&id(&accepted)).await,
        ["orders.created", "orders.confirmed"]
    );
}

#[tokio::test]
async fn the_saga_runs_the_same_with_orders_on_postgresql() {
    let Some(db) =
        kit::store::testing::TestDatabase::create(kit::store::testing::Server::Postgres).await
    else {
        return;
    };
    let sys = System::start(Opts {
        orders_store: Some(db.url.clone()),
        ..Opts::default()
    })
    .await;
    let (status, good) = sys.place("u-1", 3, APPROVE).await;
    assert_eq!(status, 202, "{good}");
    let (_, declined) = sys.place("u-1", 2, DECLINE).await;
    let o = sys.wait_final("u-1", &id(&good)).await;
    assert_eq!(o["status"], "CONFIRMED", "{o:#}");
    assert_eq!(statuses(&o), ["done", "done", "done", "done"]);
    let o = sys.wait_final("u-1", &id(&declined)).await;
    assert_eq!(o["status"], "CANCELLED", "{o:#}");
    assert_eq!(
        statuses(&o),
        ["compensated", "failed", "pending", "pending"]
    );
    assert_eq!(sys.stock().await, (STOCK - 3, 0, 3));
    assert_eq!(sys.payment(&id(&good)).await.unwrap().0, "captured");
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let subjects: Vec<(String,)> = sqlx::query_as("SELECT subject FROM outbox ORDER BY position")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut subjects: Vec<&str> = subjects.iter().map(|(s,)| s.as_str()).collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        [
            "orders.cancelled",
            "orders.confirmed",
            "orders.created",
            "orders.created"
        ],
        "each order's events in orders' own PostgreSQL outbox"
    );
    pool.close().await;
    drop(sys);
    db.drop_database().await;
}

#[tokio::test]
async fn out_of_stock_fails_at_reserve_and_cancels_with_nothing_to_undo() {
    let sys = System::start(Opts::default()).await;
    let (_, accepted) = sys.place("u-1", 50, APPROVE).await;
    let o = sys.wait_final("u-1", &id(&accepted)).await;
    assert_eq!(o["status"], "CANCELLED");
    assert!(
        o["reason"].as_str().unwrap().starts_with("reserve_stock"),
        "{o}"
    );
    assert_eq!(statuses(&o), ["failed", "pending", "pending", "pending"]);
    assert_eq!(sys.stock().await, (STOCK, 0, 0));
    assert!(sys.payment(&id(&accepted)).await.is_none());
    assert_eq!(
        sys.events(&id(&accepted)).await,
        ["orders.created", "orders.cancelled"]
    );
}

#[tokio::test]
async fn a_declined_card_fails_at_authorize_and_releases_the_stock() {
    let sys = System::start(Opts::default()).await;
    let (_, accepted) = sys.place("u-1", 2, DECLINE).await;
    let o = sys.wait_final("u-1", &id(&accepted)).await;
    assert_eq!(o["status"], "CANCELLED");
    assert!(
        o["reason"].as_str().unwrap().contains("payment_declined"),
        "{o}"
    );
    assert_eq!(
        statuses(&o),
        ["compensated", "failed", "pending", "pending"]
    );
    assert_eq!(step(&o, "reserve_stock")["compensation"], "release_stock");
    assert_eq!(sys.stock().await, (STOCK, 0, 0));
    assert_eq!(
        sys.reservation(&id(&accepted)).await.as_deref(),
        Some("released")
    );
    assert_eq!(sys.payment(&id(&accepted)).await.unwrap().0, "declined");
}

#[tokio::test]
async fn a_provider_error_is_retried_until_the_deadline_then_cancels() {
    let sys = System::start(Opts::default()).await;
    let (_, accepted) = sys.place("u-1", 2, PROVIDER_ERROR).await;
    let o = sys.wait_final("u-1", &id(&accepted)).await;
    assert_eq!(o["status"], "CANCELLED");
    let auth = step(&o, "authorize_payment");
    assert_eq!(auth["status"], "failed");
    assert!(auth["attempts"].as_u64().unwrap() > 1, "retried: {auth}");
    assert!(o["reason"].as_str().unwrap().contains("deadline"), "{o}");
    assert_eq!(sys.stock().await, (STOCK, 0, 0));
    assert!(
        sys.payment(&id(&accepted)).await.is_none(),
        "no payment kept"
    );
}

#[tokio::test]
async fn an_expired_reservation_fails_confirm_and_voids_the_payment() {
    // The reservation expires while the provider is authorizing.
    let sys = System::start(Opts {
        reservation_ttl: Some("150ms"),
        provider_latency: Some("400ms"),
        ..Opts::default()
    })
    .await;
    let (_, accepted) = sys.place("u-1", 4, APPROVE).await;
    let o = sys.wait_final("u-1", &id(&accepted)).await;
    assert_eq!(o["status"], "CANCELLED", "{o:#}");
    assert!(
        o["reason"].as_str().unwrap().starts_with("confirm_order"),
        "{o}"
    );
    assert_eq!(
        statuses(&o),
        ["compensated", "compensated", "failed", "pending"]
    );
    assert_eq!(
        step(&o, "authorize_payment")["compensation"],
        "void_payment"
    );
    let (pay, ops) = sys.payment(&id(&accepted)).await.unwrap();
    assert_eq!((pay.as_str(), ops), ("voided", vec!["void".to_owned()]));
    assert_eq!(sys.stock().await, (STOCK, 0, 0));
}

#[tokio::test]
async fn compensations_that_fail_transiently_are_retried_until_they_succeed() {
    let mut sys = System::start(Opts {
        reservation_ttl: None,
        provider_latency: Some("600ms"),
        ..Opts::default()
    })
    .await;
    let (_, accepted) = sys.place("u-1", 5, APPROVE).await;
    let order = id(&accepted);
    // While the provider authorizes, inventory goes away: confirm_order cannot commit.
    sys.wait_for("u-1", &order, |o| {
        step(o, "reserve_stock")["status"] == "done"
    })
    .await;
    sys.stop_inventory().await;
    // While confirm_order retries, payments goes away too: void_payment fails.
    sys.wait_for("u-1", &order, |o| {
        step(o, "authorize_payment")["status"] == "done"
    })
    .await;
    sys.stop_payments().await;
    let o = sys
        .wait_for("u-1", &order, |o| {
            step(o, "confirm_order")["status"] == "failed"
                && step(o, "authorize_payment")["error"].is_string()
        })
        .await;
    assert_eq!(o["status"], "PENDING", "still compensating: {o:#}");
    sys.restart_payments().await;
    sys.wait_for("u-1", &order, |o| {
        step(o, "authorize_payment")["status"] == "compensated"
            && step(o, "reserve_stock")["error"].is_string()
    })
    .await;
    sys.restart_inventory().await;
    let o = sys.wait_final("u-1", &order).await;
    assert_eq!(o["status"], "CANCELLED");
    assert_eq!(
        statuses(&o),
        ["compensated", "compensated", "failed", "pending"]
    );
    let (pay, ops) = sys.payment(&order).await.unwrap();
    assert_eq!((pay.as_str(), ops), ("voided", vec!["void".to_owned()]));
    assert_eq!(sys.stock().await, (STOCK, 0, 0));
}

#[tokio::test]
async fn payments_restarting_around_the_capture_still_captures_once() {
    let mut sys = System::start(Opts {
        reservation_ttl: None,
        provider_latency: Some("300ms"),
        ..Opts::default()
    })
    .await;
    let (_, accepted) = sys.place("u-1", 1, APPROVE).await;
    let order = id(&accepted);
    sys.wait_for("u-1", &order, |o| o["status"] == "CONFIRMED")
        .await;
    sys.stop_payments().await;
    sys.restart_payments().await;
    let o = sys.wait_final("u-1", &order).await;
    assert_eq!(o["status"], "CONFIRMED");
    let (pay, ops) = sys.payment(&order).await.unwrap();
    assert_eq!(
        (pay.as_str(), ops),
        ("captured", vec!["capture".to_owned()])
    );
    assert_eq!(sys.stock().await, (STOCK - 1, 0, 1));
}

#[tokio::test]
async fn the_customer_cancels_before_confirmation_and_not_after() {
    let sys = System::start(Opts {
        reservation_ttl: None,
        provider_latency: Some("300ms"),
        ..Opts::default()
    })
    .await;
    let (_, accepted) = sys.place("u-1", 2, APPROVE).await;
    let order = id(&accepted);
    let cancel = format!("{}/api/orders/{order}/cancel", sys.orders);
    let (status, body) = sys
        .send(
            reqwest::Method::POST,
            &cancel,
            Some(("u-2", "customer")),
            Value::Null,
            None,
        )
        .await;
    assert_eq!(status, 404, "another user's order: {body}");
    let (status, body) = sys
        .send(
            reqwest::Method::POST,
            &cancel,
            Some(("u-1", "customer")),
            Value::Null,
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let o = sys.wait_final("u-1", &order).await;
    assert_eq!(o["status"], "CANCELLED");
    assert_eq!(o["reason"], "cancelled_by_customer");
    assert_eq!(sys.stock().await, (STOCK, 0, 0));
    if let Some((pay, _)) = sys.payment(&order).await {
        assert_eq!(pay, "voided");
    }
    assert_eq!(
        sys.events(&order).await,
        ["orders.created", "orders.cancelled"]
    );
    // Cancelling again is accepted (it is cancelled); a confirmed order is 409.
    let (status, _) = sys
        .send(
            reqwest::Method::POST,
            &cancel,
            Some(("u-1", "customer")),
            Value::Null,
            None,
        )
        .await;
    assert_eq!(status, 202);
    let (_, accepted) = sys.place("u-1", 1, APPROVE).await;
    let confirmed = id(&accepted);
    sys.wait_for("u-1", &confirmed, |o| o["status"] == "CONFIRMED")
        .await;
    let (status, body) = sys
        .send(
            reqwest::Method::POST,
            &format!("{}/api/orders/{confirmed}/cancel", sys.orders),
            Some(("u-1", "customer")),
            Value::Null,
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn orders_are_visible_to_their_owner_only_newest_first() {
    let sys = System::start(Opts::default()).await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(id(&sys.place("u-1", 1, APPROVE).await.1));
    }
    let theirs = id(&sys.place("u-2", 1, APPROVE).await.1);
    let (status, _) = sys.order("u-1", &theirs).await;
    assert_eq!(status, 404, "BOLA: another user's order is not found");
    let (status, _) = sys.order("u-1", "not-a-uuid").await;
    assert_eq!(status, 404);
    let (status, body) = sys
        .send(
            reqwest::Method::GET,
            &format!("{}/api/orders/{theirs}", sys.orders),
            Some(("admin-1", "admin")),
            Value::Null,
            None,
        )
        .await;
    assert_eq!(status, 200, "an administrator sees any order: {body}");
    let list = format!("{}/api/orders?limit=2", sys.orders);
    let (status, page) = sys
        .send(
            reqwest::Method::GET,
            &list,
            Some(("u-1", "customer")),
            Value::Null,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine[2].as_str(), mine[1].as_str()]);
    let next = page["next_cursor"].as_str().unwrap();
    let (_, page2) = sys
        .send(
            reqwest::Method::GET,
            &format!("{list}&cursor={next}"),
            Some(("u-1", "customer")),
            Value::Null,
            None,
        )
        .await;
    assert_eq!(page2["items"][0]["id"], mine[0].as_str());
    assert!(page2["next_cursor"].is_null());
    let (status, _) = sys
        .send(reqwest::Method::GET, &list, None, Value::Null, None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn invalid_orders_are_422_and_anonymous_ones_401() {
    let sys = System::start(Opts::default()).await;
    let url = format!("{}/api/orders", sys.orders);
    let user = Some(("u-1", "customer"));
    for (body, field) in [
        (order_body(1, "4242424242424241"), "card_number"),
        (order_body(0, APPROVE), "quantity"),
        (order_body(101, APPROVE), "quantity"),
        (
            json!({"items": [], "payment": order_body(1, APPROVE)["payment"]}),
            "items",
        ),
        (
            json!({"items": [{"sku": "NOPE-1", "quantity": 1}], "payment": order_body(1, APPROVE)["payment"]}),
            "items[0].sku",
        ),
    ] {
        let (status, problem) = sys
            .send(reqwest::Method::POST, &url, user, body, None)
            .await;
        assert_eq!(status, 422, "{problem}");
        assert!(problem.to_string().contains(field), "{field}: {problem}");
    }
    let (status, _) = sys
        .send(
            reqwest::Method::POST,
            &url,
            None,
            order_body(1, APPROVE),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = sys
        .send(
            reqwest::Method::POST,
            &url,
            user,
            order_body(1, APPROVE),
            Some(&"k".repeat(256)),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(sys.stock().await, (STOCK, 0, 0));
}

#[tokio::test]
async fn one_hundred_concurrent_identical_requests_make_one_order() {
    let sys = std::sync::Arc::new(System::start(Opts::default()).await);
    let url = format!("{}/api/orders", sys.orders);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let sys = sys.clone();
            let url = url.clone();
            tokio::spawn(async move {
                sys.send(
                    reqwest::Method::POST,
                    &url,
                    Some(("u-1", "customer")),
                    order_body(2, APPROVE),
                    Some("key-100"),
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "identical answers"
    );
    assert_eq!(answers[0].0, 202, "{:?}", answers[0]);
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders")
        .fetch_one(&sys.db("orders").await)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let order = id(&answers[0].1);
    let o = sys.wait_final("u-1", &order).await;
    assert_eq!(o["status"], "CONFIRMED");
    assert_eq!(sys.stock().await, (STOCK - 2, 0, 2));
    // The same key with another body is refused; another user's same key is theirs.
    let (status, problem) = sys
        .send(
            reqwest::Method::POST,
            &url,
            Some(("u-1", "customer")),
            order_body(3, APPROVE),
            Some("key-100"),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, other) = sys
        .send(
            reqwest::Method::POST,
            &url,
            Some(("u-2", "customer")),
            order_body(2, APPROVE),
            Some("key-100"),
        )
        .await;
    assert_eq!(status, 202);
    assert_ne!(id(&other), order);
}

#[tokio::test]
async fn the_admin_api_lists_the_orders_in_flight() {
    let mut sys = System::start(Opts::default()).await;
    let in_flight = |sys: &System| {
        let (http, url) = (
            sys.http.clone(),
            format!("{}/admin/orders/in-flight", sys.orders_admin),
        );
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Vec<String>>()
                .await
                .unwrap()
        }
    };
    assert!(in_flight(&sys).await.is_empty());
    // With payments down the saga retries authorize_payment until its deadline: the
    // order is in flight, and listed, until it ends.
    sys.stop_payments().await;
    let (status, accepted) = sys.place("u-1", 1, APPROVE).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(in_flight(&sys).await, [id(&accepted)]);
    sys.restart_payments().await;
    sys.wait_final("u-1", &id(&accepted)).await;
    assert!(in_flight(&sys).await.is_empty());
}
