//! Auth's HTTP behaviour against the real service and a real store: SQLite, and
//! PostgreSQL when one is there (`FLOTILLA_REQUIRE_INFRA=1` makes its absence a failure).
//! The last test registers through auth into a real users service over gRPC.

use std::time::{Duration, Instant};

use auth::domain::Claims;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kit::config::Config;
use kit::service::{Context, Running};
use kit::store::testing::{Server, TestDatabase};
use serde_json::{Value, json};

struct TestApp {
    base: String,
    admin: String,
    config: Config,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    _stop: Running,
}

fn config(dir: &std::path::Path, discovery: &str, auth: Value) -> Config {
    Config::for_tests(dir)
        .insecure_internal()
        .merged("discovery", discovery)
        .merged("auth", auth)
}

async fn spawn_auth(auth: Value) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_auth_in(dir, "static://", auth).await
}

async fn spawn_auth_in(dir: tempfile::TempDir, discovery: &str, auth: Value) -> TestApp {
    kit::telemetry::init_for_tests();
    let config = config(dir.path(), discovery, auth);
    let service = auth::build(Context::new("auth", config.clone()).unwrap())
        .await
        .unwrap();
    TestApp {
        base: format!("http://{}", service.public_addr()),
        admin: format!("http://{}", service.admin_addr()),
        config,
        dir,
        http: reqwest::Client::new(),
        _stop: service.spawn(),
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl TestApp {
    async fn post_from(&self, path: &str, body: Value, client: Option<&str>) -> Answer {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(ip) = client {
            req = req.header("x-forwarded-for", ip);
        }
        let res = req.send().await.unwrap();
        Answer {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: res.json().await.unwrap_or(Value::Null),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.post_from(path, body, None).await
    }

    async fn register(&self, email: &str, password: &str) -> Answer {
        self.post(
            "/api/auth/register",
            json!({"email": email, "password": password, "name": "Test User"}),
        )
        .await
    }

    async fn login(&self, email: &str, password: &str) -> Answer {
        self.post(
            "/api/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
    }

    async fn jwks(&self) -> Value {
        self.http
            .get(format!("{}/.well-known/jwks.json", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Verifies `token` against the published JWKS, as the gateway does.
    async fn verify(&self, token: &str) -> Claims {
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let jwks = self.jwks().await;
        let key = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap_or_else(|| panic!("kid {kid} is not in {jwks}"));
        assert_eq!(
            (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
            (
                &json!("OKP"),
                &json!("Ed25519"),
                &json!("EdDSA"),
                &json!("sig")
            )
        );
        let decoding = DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["flotilla"]);
        validation.set_issuer(&["flotilla-auth"]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "sub", "iss", "aud"]);
        jsonwebtoken::decode::<Claims>(token, &decoding, &validation)
            .unwrap()
            .claims
    }
}

const PASSWORD: &str = "correct horse battery";

/// The whole token life cycle, on any store.
async fn life_cycle(app: &TestApp) {
    let reg = app.register("Ada@Example.com", PASSWORD).await;
    assert_eq!(reg.status, 201, "{}", reg.body);
    assert_eq!(reg.headers["cache-control"], "no-store");
    let user_id = reg.body["user_id"].as_str().unwrap().to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&user_id).unwrap().get_version_num(),
        7
    );
    let dup = app.register("ada@example.com", "another password").await;
    assert_eq!(dup.status, 409, "{}", dup.body);
    assert_eq!(dup.body["type"], "urn:flotilla:problem:conflict");

    let login = app.login("ADA@example.com", PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.headers["cache-control"], "no-store");
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 900);
    let access = login.body["access_token"].as_str().unwrap();
    let claims = app.verify(access).await;
    assert_eq!(claims.sub, user_id);
    assert_eq!(claims.roles, vec!["customer"]);
    assert_eq!(
        claims.scope,
        "orders:read orders:write users:read users:write payments:read notifications:read"
    );
    assert_eq!(claims.exp - claims.iat, 900);
    assert_eq!(claims.nbf, claims.iat);
    assert!(!claims.jti.is_empty());

    // Rotation: each refresh token is good once.
    let first = login.body["refresh_token"].as_str().unwrap().to_owned();
    let r1 = app
        .post("/api/auth/refresh", json!({"refresh_token": first}))
        .await;
    assert_eq!(r1.status, 200, "{}", r1.body);
    assert_eq!(r1.headers["cache-control"], "no-store");
    let second = r1.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(
        app.verify(r1.body["access_token"].as_str().unwrap())
            .await
            .sub,
        user_id
    );
    // Reuse of the spent one revokes the family: the current one dies too.
    let reuse = app
        .post("/api/auth/refresh", json!({"refresh_token": first}))
        .await;
    assert_eq!(reuse.status, 401, "{}", reuse.body);
    let after = app
        .post("/api/auth/refresh", json!({"refresh_token": second}))
        .await;
    assert_eq!(after.status, 401, "the family is revoked: {}", after.body);

    // Another sign-in is another family, untouched by that.
    let other = app.login("ada@example.com", PASSWORD).await;
    let token = other.body["refresh_token"].as_str().unwrap().to_owned();
    let logout = app
        .post("/api/auth/logout", json!({"refresh_token": token}))
        .await;
    assert_eq!(logout.status, 204);
    assert_eq!(logout.headers["cache-control"], "no-store");
    let dead = app
        .post("/api/auth/refresh", json!({"refresh_token": token}))
        .await;
    assert_eq!(dead.status, 401);
    let unknown = app
        .post("/api/auth/logout", json!({"refresh_token": "never-issued"}))
        .await;
    assert_eq!(unknown.status, 204);
    let garbage = app
        .post(
            "/api/auth/refresh",
            json!({"refresh_token": "never-issued"}),
        )
        .await;
    assert_eq!(garbage.status, 401);
}

#[tokio::test]
async fn tokens_live_and_die_as_documented_on_sqlite() {
    life_cycle(&spawn_auth(json!({})).await).await;
}

#[tokio::test]
async fn tokens_live_and_die_as_documented_on_postgres() {
    let Some(db) = TestDatabase::create(Server::Postgres).await else {
        return;
    };
    {
        let mut cfg = lockout_config();
        cfg["store"] = json!(db.url);
        let app = spawn_auth(cfg).await;
        life_cycle(&app).await;
        lockout(&app).await;
        app._stop.stop().await;
    }
    db.drop_database().await;
}

#[tokio::test]
async fn registration_validates_each_field() {
    let app = spawn_auth(json!({})).await;
    for (body, field) in [
        (
            json!({"email": "a@b.example", "password": "short", "name": "A"}),
            "password",
        ),
        (
            json!({"email": "not-an-email", "password": PASSWORD, "name": "A"}),
            "email",
        ),
        (
            json!({"email": "a@b.example", "password": PASSWORD, "name": " "}),
            "name",
        ),
    ] {
        let a = app.post("/api/auth/register", body).await;
        assert_eq!(a.status, 422, "{}", a.body);
        assert_eq!(a.body["errors"][0]["field"], field, "{}", a.body);
        assert!(!a.body.to_string().contains(PASSWORD));
    }
    let a = app
        .post(
            "/api/auth/register",
            json!({"email": "a@b.example", "password": PASSWORD}),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.body);
    let a = app
        .post(
            "/api/auth/register",
            json!({"email": "a@b.example", "password": PASSWORD, "name": "A", "role": "admin"}),
        )
        .await;
    assert_eq!(a.status, 422, "no field beyond the three: {}", a.body);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_the_same() {
    let app = spawn_auth(json!({})).await;
    app.register("kim@example.com", PASSWORD).await;
    // Warm both paths once.
    app.login("kim@example.com", "wrong password!").await;
    app.login("nobody@example.com", PASSWORD).await;
    // The fastest of a few interleaved tries of each: a busy machine slows single
    // requests by whole scheduling quanta, never makes one faster than its work.
    let (mut wrong_took, mut unknown_took) = (Duration::MAX, Duration::MAX);
    let (mut wrong, mut unknown) = (None, None);
    for _ in 0..3 {
        let started = Instant::now();
        let res = app.login("kim@example.com", "wrong password!").await;
        wrong_took = wrong_took.min(started.elapsed());
        wrong = Some(res);
        let started = Instant::now();
        let res = app.login("nobody@example.com", PASSWORD).await;
        unknown_took = unknown_took.min(started.elapsed());
        unknown = Some(res);
    }
    let (wrong, unknown) = (wrong.unwrap(), unknown.unwrap());
    assert_eq!((wrong.status, unknown.status), (401, 401));
    for key in ["type", "title", "status", "detail"] {
        assert_eq!(wrong.body[key], unknown.body[key], "{key}");
    }
    // Both ran Argon2 (tens of milliseconds); an unknown email must not answer at once.
    assert!(
        unknown_took * 4 > wrong_took,
        "unknown {unknown_took:?} vs wrong {wrong_took:?}"
    );
}

/// Locks after the configured failures: per account, then per client address.
async fn lockout(app: &TestApp) {
    app.register("lock@example.com", PASSWORD).await;
    for _ in 0..3 {
        let a = app
            .post_from(
                "/api/auth/login",
                json!({"email": "lock@example.com", "password": "not the password"}),
                Some("203.0.113.1"),
            )
            .await;
        assert_eq!(a.status, 401, "{}", a.body);
    }
    // Locked now, even with the right password and from elsewhere.
    let locked = app
        .post_from(
            "/api/auth/login",
            json!({"email": "lock@example.com", "password": PASSWORD}),
            Some("203.0.113.2"),
        )
        .await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert_eq!(locked.body["type"], "urn:flotilla:problem:rate-limited");
    assert_eq!(locked.headers["content-type"], "application/problem+json");
    let retry: u64 = locked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    // One address guessing many accounts is locked too; another address is not.
    for i in 0..5 {
        let a = app
            .post_from(
                "/api/auth/login",
                json!({"email": format!("guess{i}@example.com"), "password": PASSWORD}),
                Some("198.51.100.9"),
            )
            .await;
        assert_eq!(a.status, 401, "{}", a.body);
    }
    let a = app
        .post_from(
            "/api/auth/login",
            json!({"email": "guess9@example.com", "password": PASSWORD}),
            Some("10.0.0.1, 198.51.100.9"),
        )
        .await;
    assert_eq!(a.status, 429, "the gateway's hop is the client: {}", a.body);
    let a = app
        .post_from(
            "/api/auth/login",
            json!({"email": "guess9@example.com", "password": PASSWORD}),
            Some("198.51.100.9, 192.0.2.7"),
        )
        .await;
    assert_eq!(a.status, 401, "another client: {}", a.body);
}

fn lockout_config() -> Value {
    json!({"lockout": {"account_threshold": 3, "address_threshold": 5, "base": "30s", "max": "1m"}})
}

#[tokio::test]
async fn failed_sign_ins_lock_with_backoff() {
    lockout(&spawn_auth(lockout_config()).await).await;
}

#[tokio::test]
async fn the_seeded_administrator_is_written_once_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_auth(json!({})).await;
    let path = app.dir.path().join("admin-credentials.json");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let creds: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(creds["email"], "admin@flotilla.local");
    let password = creds["password"].as_str().unwrap();
    assert!(password.len() >= 24);
    let login = app.login("admin@flotilla.local", password).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let claims = app
        .verify(login.body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(claims.roles, vec!["admin"]);
    assert!(claims.scope.split(' ').any(|s| s == "admin"));
    assert!(claims.scope.split(' ').any(|s| s == "orders:write"));

    // A restart on the same store seeds nothing and leaves the file alone.
    let before = std::fs::read(&path).unwrap();
    let dir = app.dir;
    drop(app._stop);
    let again = spawn_auth_in(dir, "static://", json!({})).await;
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        again.login("admin@flotilla.local", password).await.status,
        200
    );
}

#[tokio::test]
async fn a_rotated_key_signs_while_the_old_one_still_verifies() {
    let app = spawn_auth(json!({"key_reload": "0s"})).await;
    app.register("rot@example.com", PASSWORD).await;
    let before = app.login("rot@example.com", PASSWORD).await;
    let old_token = before.body["access_token"].as_str().unwrap().to_owned();
    let old_kid = jsonwebtoken::decode_header(&old_token)
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(app.jwks().await["keys"].as_array().unwrap().len(), 1);

    let new_kid = auth::rotate_key(&app.config).await.unwrap();
    assert_ne!(new_kid, old_kid);
    let jwks = app.jwks().await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        vec![new_kid.as_str(), old_kid.as_str()],
        "active first"
    );
    let after = app.login("rot@example.com", PASSWORD).await;
    let new_token = after.body["access_token"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(new_token).unwrap().kid.unwrap(),
        new_kid
    );
    app.verify(new_token).await;
    app.verify(&old_token).await;
}

#[tokio::test]
async fn an_access_ttl_over_15_minutes_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "static://", json!({"access_ttl": "16m"}));
    let err = auth::build(Context::new("auth", cfg).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 64);
    assert!(
        err.to_string().contains("FLOTILLA_AUTH__ACCESS_TTL"),
        "{err}"
    );
}

#[tokio::test]
async fn describes_its_api_in_openapi_on_the_admin_listener() {
    let app = spawn_auth(json!({})).await;
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
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/.well-known/jwks.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}: {doc}");
    }
    // What the handlers validate is what the document states, and failures are problems.
    let token = &doc["components"]["schemas"]["RefreshBody"]["properties"]["refresh_token"];
    assert_eq!(
        (&token["minLength"], &token["maxLength"]),
        (&json!(1), &json!(256))
    );
    let logout = &doc["paths"]["/api/auth/logout"]["post"]["responses"];
    for status in ["400", "415", "422"] {
        assert!(
            logout[status]["content"]["application/problem+json"].is_object(),
            "{status}: {logout}"
        );
    }
}

/// Registration end to end: auth → users over real gRPC, found through the real
/// registry; with users down at first, the profile arrives once users is up.
#[tokio::test]
async fn registration_creates_the_profile_in_users_even_if_users_starts_later() {
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
    let discovery = format!("registry://{}", registry.public_addr());
    let auth_dir = tempfile::tempdir().unwrap();
    let app = spawn_auth_in(auth_dir, &discovery, json!({})).await;

    // Users is down: registration still succeeds and is kept.
    let reg = app.register("late@example.com", PASSWORD).await;
    assert_eq!(reg.status, 201, "{}", reg.body);
    let late_id = reg.body["user_id"].as_str().unwrap().to_owned();

    let users_cfg = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", discovery.as_str())
        .merged("users", json!({}));
    let users = users::build(Context::new("users", users_cfg).unwrap())
        .await
        .unwrap()
        .spawn();
    let http = reqwest::Client::new();
    let me = |id: String| {
        let http = http.clone();
        let url = format!("http://{}/api/users/me", users.public_addr());
        async move {
            let res = http
                .get(url)
                .header("x-flotilla-user-id", id)
                .header("x-flotilla-roles", "customer")
                .send()
                .await
                .unwrap();
            (
                res.status().as_u16(),
                res.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let late = loop {
        let (status, body) = me(late_id.clone()).await;
        if status == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the profile never arrived: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(late["email"], "late@example.com");
    assert_eq!(late["name"], "Test User");

    // With users up, the profile exists when registration answers.
    let reg = app.register("now@example.com", PASSWORD).await;
    assert_eq!(reg.status, 201);
    let now_id = reg.body["user_id"].as_str().unwrap().to_owned();
    let (status, body) = me(now_id.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], now_id.as_str());

    // The seeded administrator got a profile as well.
    let creds: Value = serde_json::from_slice(
        &std::fs::read(app.dir.path().join("admin-credentials.json")).unwrap(),
    )
    .unwrap();
    let admin = app
        .login("admin@flotilla.local", creds["password"].as_str().unwrap())
        .await;
    let admin_id = app
        .verify(admin.body["access_token"].as_str().unwrap())
        .await
        .sub;
    let deadline = Instant::now() + Duration::from_secs(20);
    while me(admin_id.clone()).await.0 != 200 {
        assert!(Instant::now() < deadline, "no administrator profile");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(users);
    drop(registry);
}
