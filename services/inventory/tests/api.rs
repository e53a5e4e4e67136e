//! Inventory's HTTP and gRPC behaviour against the real service and a real SQLite store.

use kit::config::Config;
use kit::service::Context;
use proto::inventory::inventory_client::InventoryClient;
use proto::inventory::{CommitRequest, Line, ReleaseRequest, ReservationStatus, ReserveRequest};
use serde_json::{Value, json};

struct TestApp {
    base: String,
    admin: String,
    grpc: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: kit::service::Running,
}

async fn spawn_inventory() -> TestApp {
    spawn_inventory_with(json!({"seed": true})).await
}

async fn spawn_inventory_with(settings: Value) -> TestApp {
    kit::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("inventory", settings);
    let ctx = Context::new("inventory", config).unwrap();
    let service = inventory::build(ctx).await.unwrap();
    let base = format!("http://{}", service.public_addr());
    let admin = format!("http://{}", service.admin_addr());
    let grpc = format!("http://{}", service.grpc_addr().unwrap());
    let running = service.spawn();
    TestApp {
        base,
        admin,
        grpc,
        http: reqwest::Client::new(),
        _dir: dir,
        _stop: running,
    }
}

impl TestApp {
    async fn inventory(&self) -> InventoryClient<tonic::transport::Channel> {
        InventoryClient::connect(self.grpc.clone()).await.unwrap()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        roles: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(&body);
        if let Some(roles) = roles {
            req = req
                .header("x-flotilla-user-id", "u-1")
                .header("x-flotilla-roles", roles);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

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

fn new_product(sku: &str, stock: i64) -> Value {
    json!({"sku": sku, "name": "Buoy", "description": "Orange.", "price_cents": 1500, "currency": "EUR", "stock": stock})
}

#[tokio::test]
async fn admins_create_products_and_set_stock() {
    let app = spawn_inventory().await;
    let post = reqwest::Method::POST;
    let put = reqwest::Method::PUT;
    let p = new_product("NEW-1", 7);
    assert_eq!(
        app.send(post.clone(), "/api/products", None, p.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        app.send(post.clone(), "/api/products", Some("customer"), p.clone())
            .await
            .0,
        403
    );
    let (status, body) = app
        .send(post.clone(), "/api/products", Some("admin"), p.clone())
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["available"], 7);
    assert_eq!(
        app.send(post.clone(), "/api/products", Some("admin"), p)
            .await
            .0,
        409
    );
    assert_eq!(app.get("/api/products/NEW-1").await.status(), 200);

    let (status, body) = app
        .send(
            put.clone(),
            "/api/products/NEW-1/stock",
            Some("admin"),
            json!({"stock": 3}),
        )
        .await;
    assert_eq!((status, body["available"].clone()), (200, json!(3)));
    assert_eq!(
        app.send(
            put.clone(),
            "/api/products/NEW-1/stock",
            Some("customer"),
            json!({"stock": 3})
        )
        .await
        .0,
        403
    );
    assert_eq!(
        app.send(
            put.clone(),
            "/api/products/NOPE-9/stock",
            Some("admin"),
            json!({"stock": 3})
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn invalid_admin_input_names_the_field() {
    let app = spawn_inventory().await;
    let post = reqwest::Method::POST;
    let mut cases = Vec::new();
    for (field, value) in [
        ("sku", json!("bad sku")),
        ("price_cents", json!(-1)),
        ("price_cents", json!(9_000_000_000_000_000_i64)),
        ("currency", json!("eur")),
        ("stock", json!(-5)),
        ("name", json!("")),
    ] {
        let mut p = new_product("OK-1", 1);
        p[field] = value;
        cases.push((post.clone(), "/api/products", p, field));
    }
    cases.push((
        reqwest::Method::PUT,
        "/api/products/FLT-BOAT-001/stock",
        json!({"stock": -1}),
        "stock",
    ));
    for (method, path, body, field) in cases {
        let (status, problem) = app.send(method, path, Some("admin"), body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
}

#[tokio::test]
async fn reserve_commit_release_over_grpc_are_idempotent() {
    let app = spawn_inventory().await;
    let mut client = app.inventory().await;
    let reserve = |order: &str, qty: u32| ReserveRequest {
        order_id: order.into(),
        items: vec![Line {
            sku: "FLT-BOAT-001".into(),
            quantity: qty,
        }],
    };
    // Reserve twice: one hold.
    let first = client
        .reserve(reserve("o-1", 2))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .reserve(reserve("o-1", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(first.status, ReservationStatus::Reserved as i32);
    let p: Value = app
        .get("/api/products/FLT-BOAT-001")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["available"], 3);

    // Commit twice: one sale; release after commit refused.
    let c1 = client
        .commit(CommitRequest {
            order_id: "o-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let c2 = client
        .commit(CommitRequest {
            order_id: "o-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c1, c2);
    assert_eq!(c1.status, ReservationStatus::Committed as i32);
    let err = client
        .release(ReleaseRequest {
            order_id: "o-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // Release twice: stock back once.
    client.reserve(reserve("o-2", 3)).await.unwrap();
    let r1 = client
        .release(ReleaseRequest {
            order_id: "o-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let r2 = client
        .release(ReleaseRequest {
            order_id: "o-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r1, r2);
    assert_eq!(r1.status, ReservationStatus::Released as i32);
    let p: Value = app
        .get("/api/products/FLT-BOAT-001")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["available"], 3);

    // Refusals.
    let err = client.reserve(reserve("o-3", 4)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    let err = client.reserve(reserve("o-3", 0)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("items[0].quantity"), "{err}");
    let err = client
        .commit(CommitRequest {
            order_id: "o-none".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn grpc_serves_health() {
    use proto::tonic_health::pb::health_client::HealthClient;
    use proto::tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let app = spawn_inventory().await;
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(app.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    for service in ["", "flotilla.inventory.v1.Inventory"] {
        let res = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(res.status, ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test]
async fn describes_its_api_in_openapi_on_the_admin_listener() {
    let app = spawn_inventory().await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    for path in [
        "/api/products",
        "/api/products/{sku}",
        "/api/products/{sku}/stock",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing: {doc}");
    }
    // What the handlers validate is what the document states, and failures are problems.
    let name = &doc["components"]["schemas"]["NewProduct"]["properties"]["name"];
    assert_eq!(
        (&name["minLength"], &name["maxLength"]),
        (&json!(1), &json!(200))
    );
    let stock = &doc["paths"]["/api/products/{sku}/stock"]["put"]["responses"];
    for status in ["400", "404", "415", "422"] {
        assert!(
            stock[status]["content"]["application/problem+json"].is_object(),
            "{status}: {stock}"
        );
    }
}

#[tokio::test]
async fn the_admin_api_shows_stock_and_reservations_held_past_their_ttl() {
    // Reservations expire after half a second, and the sweeper, which sweeps once as
    // the service starts, would only notice again in an hour. (A TTL of nothing would
    // race that first sweep on a busy machine: it may run just after the reservation.)
    let app = spawn_inventory_with(
        json!({"seed": true, "reservation_ttl": "500ms", "sweep_interval": "1h"}),
    )
    .await;
    let mut client = app.inventory().await;
    let reserve = |order: &str, qty: u32| ReserveRequest {
        order_id: order.into(),
        items: vec![Line {
            sku: "FLT-BOAT-002".into(),
            quantity: qty,
        }],
    };
    client.reserve(reserve("held", 2)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;

    let admin = |path: &str| {
        let url = format!("{}{path}", app.admin);
        let http = app.http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let find_boat = |stock: &Value| {
        let lines = stock.as_array().unwrap();
        lines
            .iter()
            .find(|l| l["sku"] == "FLT-BOAT-002")
            .unwrap()
            .clone()
    };
    let overdue = admin("/admin/reservations/overdue").await;
    assert_eq!(overdue, json!(["held"]));
    let stock = admin("/admin/stock").await;
    let boat = find_boat(&stock);
    assert_eq!(
        (&boat["stock"], &boat["reserved"], &boat["sold"]),
        (&json!(12), &json!(2), &json!(0)),
        "{boat}"
    );
    assert_eq!(stock.as_array().unwrap().len(), 24, "every product");

    // Any action on it expires it first: nothing is overdue any more, the stock is back.
    let err = client
        .commit(CommitRequest {
            order_id: "held".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert_eq!(admin("/admin/reservations/overdue").await, json!([]));
    let stock = admin("/admin/stock").await;
    let boat = find_boat(&stock);
    assert_eq!(boat["reserved"], 0, "{boat}");
}
