//! `GET /api/orders/{id}/summary` over the real registry, inventory, payments and
//! orders (no users service exists here, so `user` is always degraded), behind the
//! gateway's real authentication with tokens from a test JWKS.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gateway::proxy::{Gateway, Upstream};
use kit::config::Config;
use kit::discovery::Discovery;
use kit::resilience::{Policy, ResilienceConfig};
use kit::security::jwt::{JwksCache, JwtConfig, Verifier};
use kit::service::{Context, Running};
use serde_json::{Value, json};

struct Setup {
    registry: String,
    gateway: String,
    orders: String,
    inventory: String,
    payments: Option<Running>,
    orders_running: Option<Running>,
    http: reqwest::Client,
    jwks: support::Jwks,
    _keep: Vec<Running>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
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
    let cfg = || {
        Config::for_tests(dir.path())
            .insecure_internal()
            .merged("discovery", format!("registry://{reg}"))
    };
    let inventory = inventory::build(Context::new("inventory", cfg()).unwrap())
        .await
        .unwrap()
        .spawn();
    let payments = payments::build(Context::new("payments", cfg()).unwrap())
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

    let discovery = Discovery::from_url(&format!("registry://{reg}")).unwrap();
    let table = gateway::routes::default_routes()
        .into_iter()
        .chain([gateway::routes::RouteConfig::new("/api/users", "users")])
        .map(|r| {
            let upstream = Upstream::new(
                r.clone(),
                discovery.endpoints(&r.service),
                Policy::new(&r.service, &ResilienceConfig::default()),
            );
            (r, upstream)
        })
        .collect();
    let jwks = support::Jwks::start(&["k1"]).await;
    let gateway = Arc::new(Gateway::new(table));
    let edge = Arc::new(gateway::edge::Edge {
        gateway: gateway.clone(),
        verifier: Verifier::new(
            JwtConfig::default(),
            Arc::new(JwksCache::from_url(
                &jwks.url,
                Duration::from_secs(1),
                Duration::from_secs(300),
            )),
        ),
        limiter: None,
    });
    let app = gateway::edge::stack(
        gateway::aggregate::router_with_timeout(gateway, Duration::from_millis(500)),
        edge,
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let s = Setup {
        registry: reg,
        gateway: format!("http://{gw}"),
        orders: format!("http://{}", orders.public_addr()),
        inventory: format!("http://{}", inventory.public_addr()),
        payments: Some(payments),
        orders_running: Some(orders),
        http: reqwest::Client::new(),
        jwks,
        _keep: vec![registry, inventory],
        _dir: dir,
    };
    for service in ["inventory", "payments", "orders"] {
        s.wait_instances(service, true).await;
    }
    let (status, _) = s
        .call(
            reqwest::Method::POST,
            &format!("{}/api/products", s.inventory),
            "admin-1 admin",
            json!({"sku": "SUM-1", "name": "Sum", "description": "x",
                   "price_cents": 700, "currency": "EUR", "stock": 10}),
        )
        .await;
    assert_eq!(status, 201);
    s
}

impl Setup {
    async fn wait_instances(&self, service: &str, present: bool) {
        for _ in 0..300 {
            let body: Value = self
                .http
                .get(format!("http://{}/v1/services/{service}", self.registry))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or(Value::Null);
            if body["instances"].as_array().is_some_and(|i| !i.is_empty()) == present {
                // Give the gateway's discovery view a moment to follow.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{service} never became {present}");
    }

    /// `who` is "user-id roles".
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        who: &str,
        body: Value,
    ) -> (u16, Value) {
        let (user, roles) = who.split_once(' ').unwrap();
        let res = self
            .http
            .request(method, url)
            .header("x-flotilla-user-id", user)
            .header("x-flotilla-roles", roles)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn confirmed_order(&self) -> String {
        let (status, accepted) = self
            .call(
                reqwest::Method::POST,
                &format!("{}/api/orders", self.orders),
                "u-1 customer",
                json!({"items": [{"sku": "SUM-1", "quantity": 2}],
                       "payment": {"card_number": "4242424242424242", "exp_month": 1, "exp_year": 2099, "cvc": "123"}}),
            )
            .await;
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["order_id"].as_str().unwrap().to_owned();
        for _ in 0..500 {
            let (_, o) = self
                .call(
                    reqwest::Method::GET,
                    &format!("{}/api/orders/{id}", self.orders),
                    "u-1 customer",
                    Value::Null,
                )
                .await;
            if o["steps"][3]["status"] == "done" {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("order {id} not confirmed");
    }

    /// Through the gateway, with an access token for `who` ("user-id roles").
    async fn summary(&self, id: &str, who: &str) -> (u16, Value) {
        let (user, roles) = who.split_once(' ').unwrap();
        let res = self
            .http
            .get(format!("{}/api/orders/{id}/summary", self.gateway))
            .bearer_auth(self.jwks.token(user, roles == "admin"))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn summary_combines_the_parts_and_degrades_those_whose_service_is_down() {
    let mut s = setup().await;
    let id = s.confirmed_order().await;

    let (status, sum) = s.summary(&id, "u-1 customer").await;
    assert_eq!(status, 200, "{sum}");
    assert_eq!(sum["order"]["id"], id.as_str());
    assert_eq!(sum["order"]["status"], "CONFIRMED");
    assert_eq!(sum["products"][0]["sku"], "SUM-1");
    assert_eq!(sum["payment"]["status"], "captured");
    assert_eq!(sum["payment"]["order_id"], id.as_str());
    assert!(sum["user"].is_null(), "no users service here");
    assert_eq!(sum["degraded"], json!(["user"]));

    // Another customer's order is not found, exactly as orders answers.
    let (status, _) = s.summary(&id, "u-2 customer").await;
    assert_eq!(status, 404);
    // Without a token, or with identity headers instead of one: 401.
    let res = s
        .http
        .get(format!("{}/api/orders/{id}/summary", s.gateway))
        .header("x-flotilla-user-id", "u-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Payments down: its part is null and named, the rest still comes.
    s.payments.take().unwrap().stop().await;
    s.wait_instances("payments", false).await;
    let (status, sum) = s.summary(&id, "u-1 customer").await;
    assert_eq!(status, 200, "{sum}");
    assert!(sum["payment"].is_null());
    assert_eq!(sum["degraded"], json!(["user", "payment"]));
    assert_eq!(sum["products"][0]["price_cents"], 700);

    // Orders down: nothing can be combined, still 200 with every part degraded.
    s.orders_running.take().unwrap().stop().await;
    s.wait_instances("orders", false).await;
    let (status, sum) = s.summary(&id, "u-1 customer").await;
    assert_eq!(status, 200, "{sum}");
    assert!(sum["order"].is_null());
    assert_eq!(
        sum["degraded"],
        json!(["order", "user", "products", "payment"])
    );
}
