//! The gateway's edge, against the real gateway on a free port, a real upstream that
//! echoes what it received, and a real JWKS server with a key set generated per test:
//! token attacks, authorization, rate limits, the JWKS refresh floor, CORS, JSON body
//! checks, security headers, TLS, shared limits on Redis, and the fuzz corpus.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::any;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kit::config::Config;
use kit::service::Context;
use serde_json::{Value, json};
use support::{Jwks, TestKey, claims};

/// An upstream that answers 200 with the headers it received.
async fn spawn_echo() -> SocketAddr {
    let app = Router::new().fallback(any(|headers: http::HeaderMap| async move {
        let h: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or(""))))
            .collect();
        axum::Json(Value::Object(h))
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct Edge {
    url: String,
    jwks: Jwks,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The routes under test, all served by the echo upstream.
fn routes() -> Value {
    json!([
        {"prefix": "/api/products", "service": "echo", "role": "admin",
         "methods": {"GET": {"auth": "public"}}},
        {"prefix": "/api/orders", "service": "echo", "scope": "orders:write",
         "methods": {"GET": {"scope": "orders:read"}}, "body_limit": 1024},
        {"prefix": "/api/analytics", "service": "echo", "role": "admin"},
        {"prefix": "/api/auth", "service": "echo", "auth": "public"},
        {"prefix": "/limited", "service": "echo", "auth": "public",
         "rate_limit": {"per_second": 2, "burst": 5}},
        {"prefix": "/limited-users", "service": "echo",
         "rate_limit": {"per_second": 1, "burst": 3}},
    ])
}

async fn start(extra: Value) -> Edge {
    let jwks = Jwks::start(&["k1"]).await;
    start_with(jwks, extra).await
}

async fn start_with(jwks: Jwks, extra: Value) -> Edge {
    kit::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let echo = spawn_echo().await;
    let mut gateway = json!({
        "listen": "127.0.0.1:0",
        "routes": routes(),
        "jwt": {"jwks": jwks.url, "jwks_refresh_floor": "1s"},
        "cors": {"allowed_origins": ["https://shop.example"]},
    });
    for (k, v) in extra.as_object().unwrap() {
        gateway[k] = v.clone();
    }
    let cfg = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", format!("static://echo={echo}"))
        .merged("gateway", gateway);
    let service = gateway::build(Context::new("gateway", cfg).unwrap())
        .await
        .unwrap();
    let addr = service.public_addr();
    tokio::spawn(service.run_until(std::future::pending()));
    Edge {
        url: format!("http://{addr}"),
        jwks,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Edge {
    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
}

async fn problem(res: reqwest::Response, status: u16) -> (http::HeaderMap, Value) {
    assert_eq!(res.status(), status);
    let headers = res.headers().clone();
    assert_eq!(headers["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status);
    (headers, body)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn every_forged_or_broken_token_is_401() {
    let e = start(json!({})).await;
    let key = &e.jwks.keys[0];
    let good = claims("u-1", false);
    let with = |k: &str, v: Value| {
        let mut c = claims("u-1", false);
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v;
        }
        key.sign(&c)
    };
    let valid = key.sign(&good);
    let (h, sig) = {
        let mut parts = valid.split('.');
        (parts.next().unwrap().to_owned(), {
            parts.next();
            parts.next().unwrap().to_owned()
        })
    };
    let _ = h;
    let attacker = TestKey::generate("k1");
    let mut attacks: Vec<(String, String)> = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let hdr = json!({"alg": alg, "typ": "JWT", "kid": "k1"});
        attacks.push((
            format!("alg {alg}"),
            format!("{}.{}.", b64(&hdr), b64(&good)),
        ));
        attacks.push((
            format!("alg {alg}, signed"),
            format!("{}.{}.{sig}", b64(&hdr), b64(&good)),
        ));
    }
    attacks.push((
        "stripped signature".into(),
        valid[..valid.rfind('.').unwrap() + 1].to_owned(),
    ));
    attacks.push((
        "no signature part".into(),
        valid[..valid.rfind('.').unwrap()].to_owned(),
    ));
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    attacks.push((
        "HS256 with the public key".into(),
        jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(&key.public).unwrap()).unwrap(),
    ));
    let mut embedded = Header::new(Algorithm::EdDSA);
    embedded.kid = Some("k1".into());
    embedded.jwk = serde_json::from_value(attacker.jwk()).ok();
    attacks.push((
        "embedded jwk".into(),
        jsonwebtoken::encode(&embedded, &good, &EncodingKey::from_ed_der(&attacker.pkcs8)).unwrap(),
    ));
    let mut jku = Header::new(Algorithm::EdDSA);
    jku.kid = Some("evil".into());
    jku.jku = Some("http://127.0.0.1:9/jwks.json".into());
    attacks.push((
        "jku elsewhere".into(),
        jsonwebtoken::encode(&jku, &good, &EncodingKey::from_ed_der(&attacker.pkcs8)).unwrap(),
    ));
    for kid in [
        "../../dev/null",
        "/dev/null",
        "k1' OR '1'='1",
        "k1\"; DROP TABLE keys;--",
        "k1\u{0}",
    ] {
        let signer = TestKey {
            kid: kid.to_owned(),
            ..TestKey::generate("")
        };
        attacks.push((format!("kid {kid:?}"), signer.sign(&good)));
    }
    attacks.push(("expired".into(), with("exp", json!(support::now() - 3600))));
    attacks.push((
        "future nbf".into(),
        with("nbf", json!(support::now() + 3600)),
    ));
    attacks.push((
        "future iat".into(),
        with("iat", json!(support::now() + 3600)),
    ));
    attacks.push(("wrong aud".into(), with("aud", json!("someone-else"))));
    attacks.push((
        "wrong iss".into(),
        with("iss", json!("https://evil.example")),
    ));
    attacks.push(("missing exp".into(), with("exp", Value::Null)));
    attacks.push(("string exp".into(), with("exp", json!("9999999999"))));
    attacks.push((
        "a day long".into(),
        with("exp", json!(support::now() + 86_400)),
    ));
    attacks.push(("key not in the JWKS".into(), attacker.sign(&good)));
    attacks.push((
        "oversized".into(),
        format!(
            "{}.{}.{sig}",
            b64(&json!({"alg": "EdDSA", "kid": "k1", "pad": "x".repeat(100_000)})),
            b64(&good)
        ),
    ));
    attacks.push(("garbage base64".into(), "!!!.@@@.###".into()));
    attacks.push(("not base64 json".into(), "aGVsbG8.d29ybGQ.c2ln".into()));
    attacks.push(("empty".into(), "a".into()));

    for (what, token) in &attacks {
        let res = e.get("/api/orders/x", Some(token)).await;
        let status = res.status().as_u16();
        assert!(
            status == 401 || (what == "oversized" && status == 431),
            "{what}: {status}"
        );
        if status == 401 {
            let challenge = res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                challenge.contains(r#"error="invalid_token""#),
                "{what}: {challenge}"
            );
            problem(res, 401).await;
        }
    }
    // No token at all: 401 with a bare challenge.
    let res = e.get("/api/orders/x", None).await;
    assert_eq!(
        res.headers()["www-authenticate"],
        r#"Bearer realm="flotilla""#
    );
    problem(res, 401).await;
    // Another scheme.
    let res = e
        .http
        .get(format!("{}/api/orders/x", e.url))
        .header("authorization", "Basic dTpw")
        .send()
        .await
        .unwrap();
    problem(res, 401).await;
    // And the real thing passes, with the identity the token says.
    let res = e.get("/api/orders/x", Some(&valid)).await;
    assert_eq!(res.status(), 200);
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["x-flotilla-user-id"], "u-1");
    assert_eq!(seen["x-flotilla-roles"], "customer");
    assert!(
        seen["x-flotilla-scopes"]
            .as_str()
            .unwrap()
            .contains("orders:read")
    );
}

#[tokio::test]
async fn an_oversized_token_never_reaches_verification() {
    let e = start(json!({})).await;
    // 9 KiB passes the header limit but not the token cap.
    let token = format!("{}.{}.c2ln", "a".repeat(9 * 1024), "b");
    let (_, body) = problem(e.get("/api/orders/x", Some(&token)).await, 401).await;
    assert!(
        body["detail"].as_str().unwrap().contains("longer than"),
        "{body}"
    );
}

#[tokio::test]
async fn customers_cannot_use_admin_functions_nor_forge_identity() {
    let e = start(json!({})).await;
    let customer = e.jwks.token("u-1", false);
    let admin = e.jwks.token("a-1", true);
    let post = |token: &str, path: &str| {
        e.http
            .post(format!("{}{path}", e.url))
            .bearer_auth(token)
            .json(&json!({"sku": "X"}))
            .send()
    };
    let (h, body) = problem(post(&customer, "/api/products").await.unwrap(), 403).await;
    assert!(body["detail"].as_str().unwrap().contains("admin"));
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    problem(e.get("/api/analytics/summary", Some(&customer)).await, 403).await;
    assert_eq!(post(&admin, "/api/products").await.unwrap().status(), 200);
    assert_eq!(
        e.get("/api/analytics/summary", Some(&admin)).await.status(),
        200
    );
    // A token without the route's scope.
    let mut c = claims("u-3", false);
    c["scope"] = json!("users:read");
    let narrow = e.jwks.keys[0].sign(&c);
    problem(e.get("/api/orders/1", Some(&narrow)).await, 403).await;
    // Public reads need nothing; a stale token on a public route is ignored.
    assert_eq!(e.get("/api/products/X", None).await.status(), 200);
    assert_eq!(
        e.get("/api/auth/login", Some("stale.token.x"))
            .await
            .status(),
        200
    );

    // Identity headers come from the token only.
    let res = e
        .http
        .get(format!("{}/api/orders/1", e.url))
        .bearer_auth(&customer)
        .header("x-flotilla-user-id", "a-1")
        .header("x-flotilla-roles", "admin")
        .header("x-flotilla-scopes", "admin")
        .send()
        .await
        .unwrap();
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["x-flotilla-user-id"], "u-1");
    assert_eq!(seen["x-flotilla-roles"], "customer");
    assert!(
        !seen["x-flotilla-scopes"]
            .as_str()
            .unwrap()
            .split(' ')
            .any(|s| s == "admin")
    );
    let res = e
        .http
        .get(format!("{}/api/products/X", e.url))
        .header("x-flotilla-user-id", "a-1")
        .header("x-flotilla-roles", "admin")
        .send()
        .await
        .unwrap();
    let seen: Value = res.json().await.unwrap();
    assert!(seen.get("x-flotilla-user-id").is_none(), "{seen}");
    assert!(seen.get("x-flotilla-roles").is_none(), "{seen}");
}

#[tokio::test]
async fn rate_limits_admit_at_most_burst_plus_rate_and_say_when_to_retry() {
    let e = start(json!({})).await;
    let (per_second, burst) = (2.0, 5.0);
    let started = Instant::now();
    let (mut admitted, mut limited) = (0u32, 0u32);
    for _ in 0..40 {
        let res = e.get("/limited/x", None).await;
        match res.status().as_u16() {
            200 => {
                admitted += 1;
                let policy = res.headers()["ratelimit-policy"].to_str().unwrap();
                assert_eq!(policy, "\"/limited\";q=5;w=3");
                assert!(
                    res.headers()["ratelimit"]
                        .to_str()
                        .unwrap()
                        .starts_with("\"/limited\";r=")
                );
            }
            429 => {
                limited += 1;
                let retry: u64 = res.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                // One request every 0.5 s: the next slot is at most 1 s away.
                assert_eq!(retry, 1, "Retry-After");
                assert!(
                    res.headers()["ratelimit"]
                        .to_str()
                        .unwrap()
                        .contains(";r=0;")
                );
                problem(res, 429).await;
            }
            s => panic!("status {s}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let most = burst + per_second * elapsed;
    assert!(
        f64::from(admitted) <= most.floor() + 1.0,
        "{admitted} admitted in {elapsed:.2}s"
    );
    assert!(
        admitted >= 5 && limited > 0,
        "{admitted} admitted, {limited} limited"
    );

    // Waiting as long as Retry-After says lets the next one through.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(e.get("/limited/x", None).await.status(), 200);

    // Users have their own buckets, independent of each other and of the address.
    let (a, b) = (e.jwks.token("u-a", false), e.jwks.token("u-b", false));
    let mut a_ok = 0;
    for _ in 0..6 {
        if e.get("/limited-users/x", Some(&a)).await.status() == 200 {
            a_ok += 1;
        }
    }
    assert!((3..=4).contains(&a_ok), "{a_ok}");
    assert_eq!(e.get("/limited-users/x", Some(&a)).await.status(), 429);
    assert_eq!(e.get("/limited-users/x", Some(&b)).await.status(), 200);
}

#[tokio::test]
async fn unknown_kids_fetch_the_jwks_at_most_once_per_floor() {
    // Bad tokens are charged to the address: lift the limit so only the floor counts.
    let e = start(json!({"rate_limit": {"per_second": 100000, "burst": 100000}})).await;
    // The gateway fetches once at start.
    let valid = e.jwks.token("u-1", false);
    assert_eq!(e.get("/api/orders/1", Some(&valid)).await.status(), 200);
    let before = e.jwks.hits();
    assert!(before <= 1, "{before}");
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let forger = TestKey::generate(&format!("made-up-{sent}"));
        let res = e
            .get("/api/orders/1", Some(&forger.sign(&claims("u-1", false))))
            .await;
        assert_eq!(res.status(), 401);
        sent += 1;
    }
    let fetched = e.jwks.hits() - before;
    let floors = (started.elapsed().as_secs_f64() / 1.0).ceil() as u64;
    assert!(sent > 20, "{sent}");
    assert!(
        fetched <= floors + 1,
        "{fetched} JWKS fetches for {sent} unknown kids"
    );
}

#[tokio::test]
async fn cors_preflights_are_answered_for_allowed_origins_only() {
    let e = start(json!({})).await;
    let preflight = |origin: &'static str| {
        e.http
            .request(reqwest::Method::OPTIONS, format!("{}/api/orders", e.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let res = preflight("https://shop.example").await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(h.contains_key("access-control-max-age"));
    let res = preflight("https://evil.example").await.unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    // Actual requests: the header is there on rejections too, so browsers can read them.
    let res = e
        .http
        .get(format!("{}/api/orders/1", e.url))
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(
        res.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("retry-after")
    );
}

#[tokio::test]
async fn json_bodies_are_checked_at_the_edge() {
    let e = start(json!({})).await;
    let token = e.jwks.token("u-1", false);
    let post = |body: Vec<u8>, content_type: &'static str| {
        e.http
            .post(format!("{}/api/orders", e.url))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(
        post(
            br#"{"items":[{"sku":"A","quantity":1}]}"#.to_vec(),
            "application/json"
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let deep = format!("{}1{}", "[".repeat(33), "]".repeat(33));
    let (_, body) = problem(
        post(deep.into_bytes(), "application/json").await.unwrap(),
        400,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("deeper than 32"),
        "{body}"
    );
    problem(
        post(b"{\"a\":".to_vec(), "application/json").await.unwrap(),
        400,
    )
    .await;
    problem(
        post(b"a=1".to_vec(), "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        415,
    )
    .await;
    problem(
        post(vec![b' '; 2048], "application/json").await.unwrap(),
        413,
    )
    .await;
    // A body too large to declare: sent chunked.
    let chunks = futures_util::stream::iter((0..8).map(|_| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            b' ';
            256
        ])))
    }));
    let res = e
        .http
        .post(format!("{}/api/orders", e.url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
        .send()
        .await
        .unwrap();
    problem(res, 413).await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let e = start(json!({})).await;
    for res in [
        e.get("/api/products/X", None).await,
        e.get("/api/orders/1", None).await,
        e.get("/nowhere", None).await,
        e.get("/admin/routes", None).await,
    ] {
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(
            !h.contains_key("strict-transport-security"),
            "not over plain HTTP"
        );
    }
    let huge = "h".repeat(32 * 1024);
    let res = e
        .http
        .get(format!("{}/api/products/X", e.url))
        .header("x-big", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    problem(res, 431).await;
    let mut many = e.http.get(format!("{}/api/products/X", e.url));
    for i in 0..120 {
        many = many.header(format!("x-h-{i}"), "1");
    }
    // hyper refuses past 100 headers itself, as the edge would.
    assert_eq!(many.send().await.unwrap().status(), 431);
}

/// One HTTP/1.1 request over TLS, trusting only `ca` (PEM); the raw answer.
async fn tls_get(addr: &str, ca: &str, path: &str) -> String {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn serves_tls_at_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    let e = start(json!({"tls_cert": c, "tls_key": k})).await;
    let addr = e.url.trim_start_matches("http://");
    let raw = tls_get(addr, &cert.cert.pem(), "/api/products/X").await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("strict-transport-security: max-age="),
        "{raw}"
    );
    assert!(raw.contains("\"x-forwarded-proto\":\"https\""), "{raw}");
    // Plain HTTP on the TLS port gets nowhere.
    assert!(
        e.http
            .get(format!("{}/api/products/X", e.url))
            .send()
            .await
            .is_err()
    );
    // Half a configuration is a start-up error naming the setting.
    let cfg = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("gateway", json!({"listen": "127.0.0.1:0", "tls_cert": c}));
    let err = gateway::build(Context::new("gateway", cfg).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FLOTILLA_GATEWAY__TLS"), "{err}");
    assert_eq!(err.exit_code(), 64);
}

#[tokio::test]
async fn shared_limits_on_redis_hold_across_gateways() {
    let url =
        std::env::var("FLOTILLA_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    if let Err(e) = kit::store::redis::connect(&url, "FLOTILLA_TEST_REDIS").await {
        kit::store::testing::skip::<()>(
            "the Redis rate-limit test",
            e,
            "start redis-server or set FLOTILLA_TEST_REDIS",
        );
        return;
    }
    // A prefix of its own, so earlier runs' buckets do not count.
    let prefix = format!("/rl-{}", std::process::id() ^ support::now() as u32);
    let mut routes = routes();
    routes.as_array_mut().unwrap().push(json!({
        "prefix": prefix, "service": "echo", "auth": "public",
        "rate_limit": {"per_second": 1, "burst": 4},
    }));
    let jwks = Jwks::start(&["k1"]).await;
    let extra = json!({"rate_limit_store": url, "routes": routes});
    let a = start_with(jwks, extra.clone()).await;
    let b = start_with(Jwks::start(&["k1"]).await, extra).await;
    let started = Instant::now();
    let mut admitted = 0;
    for i in 0..16 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let res = gw.get(&format!("{prefix}/x"), None).await;
        match res.status().as_u16() {
            200 => admitted += 1,
            429 => {
                let retry: u64 = res.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=1).contains(&retry), "{retry}");
            }
            s => panic!("{s}"),
        }
    }
    let most = 4.0 + started.elapsed().as_secs_f64();
    assert!(
        admitted >= 4 && f64::from(admitted) <= most.floor() + 1.0,
        "{admitted}"
    );
}

#[test]
fn the_fuzz_corpus_replays_without_panics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut seen = 0;
    for (target, run) in [
        (
            "jwt_verify",
            (|d: &[u8]| {
                let _ = kit::security::jwt::fuzzing::verify_token(d);
            }) as fn(&[u8]),
        ),
        ("jwks_parse", |d: &[u8]| {
            let _ = kit::security::jwt::fuzzing::parse_jwks(d);
        }),
        ("gateway_request", |d: &[u8]| {
            let _ = gateway::edge::fuzzing::request(d);
        }),
    ] {
        let dir = root.join(target);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            run(&data);
            seen += 1;
        }
    }
    assert!(seen >= 10, "{seen} corpus entries");
    // What the gateway request seeds should come to.
    let r = gateway::edge::fuzzing::request;
    assert_eq!(r(b"GET /api/products/X"), None);
    assert_eq!(r(b"GET /api/orders/1"), Some(401));
    assert_eq!(r(b"GET /api/../admin"), Some(400));
    assert_eq!(
        r(b"POST /api/auth/login\ncontent-type: text/plain\n\nx"),
        Some(415)
    );
}
