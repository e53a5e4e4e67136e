//! Identity end to end through the gateway: sign-up and log-in at auth, tokens
//! verified by the gateway, ownership checked by each service, and what an attacker
//! tries on the way in.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::System;

struct Session {
    access: String,
    refresh: String,
}

async fn call(
    sys: &System,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = sys.http.request(method, format!("{}{path}", sys.gateway));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn login(sys: &System, email: &str, password: &str) -> Session {
    let (status, body) = call(
        sys,
        reqwest::Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    Session {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

async fn register(sys: &System, email: &str) -> (String, Session) {
    let password = "correct horse battery staple";
    let (status, body) = call(
        sys,
        reqwest::Method::POST,
        "/api/auth/register",
        None,
        Some(json!({"email": email, "password": password, "name": email})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["user_id"].as_str().unwrap().to_owned();
    (id, login(sys, email, password).await)
}

#[tokio::test]
async fn users_sign_up_log_in_and_reach_only_what_is_theirs_through_the_gateway() {
    let sys = System::start().await;
    let (alice_id, alice) = register(&sys, "alice@example.com").await;
    let (_, bob) = register(&sys, "bob@example.com").await;

    // The profile auth asked users to create (asynchronously, so poll briefly).
    let deadline = Instant::now() + Duration::from_secs(10);
    let me = loop {
        let (status, me) = call(
            &sys,
            reqwest::Method::GET,
            "/api/users/me",
            Some(&alice.access),
            None,
        )
        .await;
        if status == 200 {
            break me;
        }
        assert!(
            Instant::now() < deadline,
            "no profile: {status} {me}\n{}",
            sys.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(me["id"], alice_id.as_str());
    assert_eq!(me["email"], "alice@example.com");

    // No token, a forged identity header, a garbage token: 401.
    let (status, _) = call(&sys, reqwest::Method::GET, "/api/users/me", None, None).await;
    assert_eq!(status, 401);
    let res = sys
        .http
        .get(format!("{}/api/users/me", sys.gateway))
        .header("x-flotilla-user-id", &alice_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        401,
        "identity headers from clients are not trusted"
    );
    let (status, _) = call(
        &sys,
        reqwest::Method::GET,
        "/api/users/me",
        Some("not.a.token"),
        None,
    )
    .await;
    assert_eq!(status, 401);

    // BFLA: a customer on an admin route; mass assignment on the profile.
    let path = format!("/api/users/{alice_id}");
    let (status, _) = call(&sys, reqwest::Method::GET, &path, Some(&bob.access), None).await;
    assert_eq!(status, 403);
    let (status, body) = call(
        &sys,
        reqwest::Method::PATCH,
        "/api/users/me",
        Some(&alice.access),
        Some(json!({"name": "Alice", "email": "mallory@example.com"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // The seeded admin may read any profile.
    let creds: Value = serde_json::from_slice(
        &std::fs::read(sys.data.path().join("admin-credentials.json")).unwrap(),
    )
    .unwrap();
    let admin = login(
        &sys,
        creds["email"].as_str().unwrap(),
        creds["password"].as_str().unwrap(),
    )
    .await;
    let (status, body) = call(&sys, reqwest::Method::GET, &path, Some(&admin.access), None).await;
    assert_eq!(status, 200, "{body}");

    // BOLA on orders: Alice's order is not Bob's to see.
    let res = sys
        .http
        .post(format!("{}/api/orders", sys.gateway))
        .bearer_auth(&alice.access)
        .header("idempotency-key", "alice-1")
        .json(&json!({"items": [{"sku": "FLT-BOAT-001", "quantity": 1}],
            "payment": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2099, "cvc": "123"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let order = res.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/orders/{order}");
    let (status, body) = call(&sys, reqwest::Method::GET, &path, Some(&alice.access), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], alice_id.as_str());
    let (status, _) = call(&sys, reqwest::Method::GET, &path, Some(&bob.access), None).await;
    assert_eq!(status, 404, "another user's order does not exist for them");
    let (status, summary) = call(
        &sys,
        reqwest::Method::GET,
        &format!("{path}/summary"),
        Some(&alice.access),
        None,
    )
    .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["user"]["id"], alice_id.as_str());

    // Choreography: notifications mailed Alice a welcome and, once the saga confirmed
    // her order, a confirmation (into the maildir); she sees only hers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mail = loop {
        let (status, body) = call(
            &sys,
            reqwest::Method::GET,
            "/api/notifications",
            Some(&alice.access),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let types: Vec<&str> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["event_type"].as_str())
            .collect();
        if types.contains(&"users.registered") && types.contains(&"orders.confirmed") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "Alice's emails did not arrive: {body}\n{}",
            sys.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        mail["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["to"] == "alice@example.com"),
        "{mail}"
    );
    let maildir = sys.data.path().join("notifications/maildir/new");
    assert!(
        std::fs::read_dir(&maildir).unwrap().count() >= 4,
        "welcome emails for admin, Alice and Bob, and Alice's confirmation in {maildir:?}"
    );
    let (status, _) = call(&sys, reqwest::Method::GET, "/api/notifications", None, None).await;
    assert_eq!(status, 401);

    // Analytics counts the registrations and the order, for administrators only.
    let (status, _) = call(
        &sys,
        reqwest::Method::GET,
        "/api/analytics/summary?window=1h",
        Some(&bob.access),
        None,
    )
    .await;
    assert_eq!(status, 403, "a customer cannot read analytics");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, s) = call(
            &sys,
            reqwest::Method::GET,
            "/api/analytics/summary?window=1h",
            Some(&admin.access),
            None,
        )
        .await;
        assert_eq!(status, 200, "{s}");
        if s["registrations"].as_i64() >= Some(3)
            && s["orders"].as_i64() >= Some(1)
            && s["confirmed"].as_i64() >= Some(1)
        {
            assert!(s["revenue_cents"].as_i64() > Some(0), "{s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "analytics did not count the sign-ups and the order: {s}\n{}",
            sys.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, p) = call(
        &sys,
        reqwest::Method::GET,
        "/api/analytics/summary?window=forever",
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(status, 422, "{p}");

    // Refresh rotation: the new pair works; reusing the old token revokes the family.
    let (status, rotated) = call(
        &sys,
        reqwest::Method::POST,
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": alice.refresh})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let (status, _) = call(
        &sys,
        reqwest::Method::POST,
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": alice.refresh})),
    )
    .await;
    assert_eq!(status, 401, "a rotated token is refused");
    let (status, _) = call(
        &sys,
        reqwest::Method::POST,
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": rotated["refresh_token"]})),
    )
    .await;
    assert_eq!(status, 401, "its reuse revoked the whole family");
}
