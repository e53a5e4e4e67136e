//! Payments' gRPC and HTTP behaviour against the real service and a real SQLite store.

use kit::config::Config;
use kit::service::Context;
use proto::payments::payments_client::PaymentsClient;
use proto::payments::{
    AuthorizeRequest, CaptureRequest, Card, PaymentStatus, RefundRequest, VoidRequest,
};
use serde_json::{Value, json};

struct TestApp {
    base: String,
    admin: String,
    grpc: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: kit::service::Running,
}

async fn spawn_payments() -> TestApp {
    spawn_in(tempfile::tempdir().unwrap(), json!({})).await
}

/// Payments with its data in `dir` and `section` as its `[payments]` settings.
async fn spawn_in(dir: tempfile::TempDir, section: Value) -> TestApp {
    kit::telemetry::init_for_tests();
    let config = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("payments", section);
    let ctx = Context::new("payments", config).unwrap();
    let service = payments::build(ctx).await.unwrap();
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
    /// `GET /admin/payments{query}`.
    async fn admin_payments(&self, query: &str) -> Vec<Value> {
        self.http
            .get(format!("{}/admin/payments{query}", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn client(&self) -> PaymentsClient<tonic::transport::Channel> {
        PaymentsClient::connect(self.grpc.clone()).await.unwrap()
    }

    async fn get(&self, path: &str, user: Option<(&str, &str)>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some((id, roles)) = user {
            req = req
                .header("x-flotilla-user-id", id)
                .header("x-flotilla-roles", roles);
        }
        let res = req.send().await.unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }
}

fn authorize(order: &str, number: &str, cents: i64, currency: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        order_id: order.into(),
        user_id: "alice".into(),
        amount_cents: cents,
        currency: currency.into(),
        card: Some(Card {
            number: number.into(),
            exp_month: 12,
            exp_year: 2099,
            cvc: "123".into(),
        }),
        idempotency_key: format!("k-{order}"),
    }
}

#[tokio::test]
async fn every_grpc_method_is_idempotent() {
    let app = spawn_payments().await;
    let mut c = app.client().await;
    let a1 = c
        .authorize(authorize("o1", "4242424242424242", 2500, "EUR"))
        .await
        .unwrap()
        .into_inner();
    let a2 = c
        .authorize(authorize("o1", "4242424242424242", 2500, "EUR"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a1, a2);
    assert_eq!(a1.status, PaymentStatus::Authorized as i32);
    assert_eq!(a1.card_last4, "4242");

    let cap = |key: &str| CaptureRequest {
        payment_id: a1.payment_id.clone(),
        idempotency_key: key.into(),
    };
    let c1 = c.capture(cap("c")).await.unwrap().into_inner();
    let c2 = c.capture(cap("c")).await.unwrap().into_inner();
    assert_eq!(c1, c2);
    assert_eq!(c1.status, PaymentStatus::Captured as i32);

    let refund = |key: &str, cents: i64, cur: &str| RefundRequest {
        payment_id: a1.payment_id.clone(),
        amount_cents: cents,
        currency: cur.into(),
        idempotency_key: key.into(),
    };
    let r1 = c
        .refund(refund("r", 1000, "EUR"))
        .await
        .unwrap()
        .into_inner();
    let r2 = c
        .refund(refund("r", 1000, "EUR"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r1.refunded_cents, r2.refunded_cents), (1000, 1000));
    let err = c.refund(refund("r-usd", 10, "USD")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    let err = c
        .void(VoidRequest {
            payment_id: a1.payment_id.clone(),
            idempotency_key: "v".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");

    let b = c
        .authorize(authorize("o2", "4242424242424242", 100, "EUR"))
        .await
        .unwrap()
        .into_inner();
    let void = VoidRequest {
        payment_id: b.payment_id.clone(),
        idempotency_key: "v".into(),
    };
    let v1 = c.void(void.clone()).await.unwrap().into_inner();
    let v2 = c.void(void).await.unwrap().into_inner();
    assert_eq!(v1, v2);
    assert_eq!(v1.status, PaymentStatus::Voided as i32);
}

#[tokio::test]
async fn test_cards_behave_as_documented() {
    let app = spawn_payments().await;
    let mut c = app.client().await;
    let d = c
        .authorize(authorize("d1", "4000000000000002", 100, "EUR"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (d.status, d.decline_reason.as_str()),
        (PaymentStatus::Declined as i32, "card_declined")
    );
    let f = c
        .authorize(authorize("d2", "4000000000009995", 100, "EUR"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f.decline_reason, "insufficient_funds");
    let err = c
        .authorize(authorize("d3", "4000000000000119", 100, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn invalid_input_names_the_field() {
    let app = spawn_payments().await;
    let mut c = app.client().await;
    for (req, field) in [
        (
            authorize("x", "4242424242424241", 100, "EUR"),
            "card.number",
        ),
        (authorize("x", "4242424242424242", 100, "eur"), "currency"),
        (
            authorize("x", "4242424242424242", -1, "EUR"),
            "amount_cents",
        ),
        (
            authorize("x", "4242424242424242", i64::MAX, "EUR"),
            "amount_cents",
        ),
        (authorize("", "4242424242424242", 100, "EUR"), "order_id"),
    ] {
        let err = c.authorize(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
}

#[tokio::test]
async fn payments_are_read_by_their_owner_or_an_admin() {
    let app = spawn_payments().await;
    let mut c = app.client().await;
    let p = c
        .authorize(authorize("o9", "4242424242424242", 700, "EUR"))
        .await
        .unwrap()
        .into_inner();
    let path = format!("/api/payments/{}", p.payment_id);
    let (status, body) = app.get(&path, Some(("alice", "customer"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["amount_cents"], 700);
    assert_eq!(body["status"], "authorized");
    assert_eq!(body["order_id"], "o9");
    assert!(!body.to_string().contains("4242424242424242"));
    assert_eq!(app.get(&path, Some(("root", "admin"))).await.0, 200);
    assert_eq!(app.get(&path, Some(("mallory", "customer"))).await.0, 404);
    assert_eq!(app.get(&path, None).await.0, 401);
    assert_eq!(
        app.get("/api/payments/not-a-uuid", Some(("alice", "customer")))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn describes_its_api_in_openapi_on_the_admin_listener() {
    let app = spawn_payments().await;
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
    assert!(doc["paths"]["/api/payments/{id}"].is_object(), "{doc}");
}

#[tokio::test]
async fn the_admin_api_lists_payments_with_their_captures_page_by_page() {
    let app = spawn_payments().await;
    let mut c = app.client().await;
    let captured = c
        .authorize(authorize("o-a", "4242424242424242", 2500, "EUR"))
        .await
        .unwrap()
        .into_inner();
    let cap = CaptureRequest {
        payment_id: captured.payment_id.clone(),
        idempotency_key: "k".into(),
    };
    c.capture(cap.clone()).await.unwrap();
    c.capture(cap).await.unwrap();
    c.authorize(authorize("o-b", "4000000000000002", 900, "EUR"))
        .await
        .unwrap();

    let all = app.admin_payments("").await;
    assert_eq!(all.len(), 2, "{all:?}");
    let a = all.iter().find(|p| p["order_id"] == "o-a").unwrap();
    assert_eq!(
        (&a["status"], &a["amount_cents"], &a["captures"]),
        (&json!("captured"), &json!(2500), &json!(1)),
        "a replayed capture is one capture: {a}"
    );
    let b = all.iter().find(|p| p["order_id"] == "o-b").unwrap();
    assert_eq!(
        (&b["status"], &b["captures"]),
        (&json!("declined"), &json!(0))
    );

    let first = app.admin_payments("?limit=1").await;
    let rest = app
        .admin_payments(&format!("?after={}", first[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(first.len() + rest.len(), 2);
    assert_ne!(first[0]["id"], rest[0]["id"]);
}

#[tokio::test]
async fn a_zero_reconcile_interval_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    for key in ["reconcile_interval", "reconcile_stale_after"] {
        let config = Config::for_tests(dir.path())
            .insecure_internal()
            .merged("discovery", "static://")
            .merged("payments", json!({ key: "0s" }));
        let err = payments::build(Context::new("payments", config).unwrap())
            .await
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 64, "{err}");
        let setting = format!("FLOTILLA_PAYMENTS__{}", key.to_uppercase());
        assert!(err.to_string().contains(&setting), "{err}");
    }
}

/// A claim a killed process left pending, with its hold at the provider, in the stores
/// of the data directory: the service's own sweeper records the hold without any call.
#[tokio::test]
async fn the_running_service_reconciles_what_a_crash_left_pending() {
    use payments::domain::{Card as DomainCard, Money};
    use payments::ledger::AuthorizeInput;
    use payments::provider::{PaymentProvider, SimulatedProvider};

    let dir = tempfile::tempdir().unwrap();
    let at = |file: &str| format!("sqlite://{}/payments/{file}", dir.path().display());
    let id = {
        let ledger = payments::store::open(&at("payments.db"), "FLOTILLA_PAYMENTS__STORE")
            .await
            .unwrap();
        let sim = SimulatedProvider::open(&at("provider.db"), "X", Default::default())
            .await
            .unwrap();
        let card = DomainCard::parse("4242424242424242", 12, 2099, "123", (2026, 1)).unwrap();
        let input = AuthorizeInput {
            order_id: "crashed".into(),
            user_id: "alice".into(),
            amount: Money::parse(2500, "EUR").unwrap(),
            card,
            idempotency_key: "k-crashed".into(),
        };
        let claim = input.claim();
        let id = claim.id.clone();
        ledger
            .begin(claim, input.idempotency_key.clone())
            .await
            .unwrap();
        sim.authorize(&id, &input.card, &input.amount)
            .await
            .unwrap();
        id
    };
    let app = spawn_in(
        dir,
        json!({"reconcile_interval": "50ms", "reconcile_stale_after": "1ms"}),
    )
    .await;
    let mut status = Value::Null;
    for _ in 0..100 {
        status = app.admin_payments("").await[0]["status"].clone();
        if status == "authorized" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, "authorized");
    // The saga's retry gets that payment.
    let mut c = app.client().await;
    let mut retry = authorize("crashed", "4242424242424242", 2500, "EUR");
    retry.idempotency_key = "k-crashed".into();
    let p = c.authorize(retry).await.unwrap().into_inner();
    assert_eq!(
        (p.payment_id.as_str(), p.status),
        (id.as_str(), PaymentStatus::Authorized as i32)
    );
}
