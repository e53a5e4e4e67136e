//! Test access tokens: Ed25519 keys generated per test, a real JWKS HTTP server that
//! counts its requests, and tokens shaped as `auth` issues them.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

/// Customer scopes, as `auth` issues them.
pub const CUSTOMER_SCOPES: &str =
    "orders:read orders:write users:read users:write payments:read notifications:read";

/// An Ed25519 signing key with its `kid`.
pub struct TestKey {
    pub kid: String,
    pub pkcs8: Vec<u8>,
    pub public: Vec<u8>,
}

impl TestKey {
    pub fn generate(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        Self {
            kid: kid.to_owned(),
            pkcs8: doc.as_ref().to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "alg": "EdDSA", "use": "sig",
               "x": URL_SAFE_NO_PAD.encode(&self.public)})
    }

    /// Signs `claims` with header `{alg: EdDSA, kid}`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims as `auth` issues them.
pub fn claims(sub: &str, admin: bool) -> Value {
    let now = now();
    let (scope, roles) = if admin {
        (format!("{CUSTOMER_SCOPES} admin"), json!(["admin"]))
    } else {
        (CUSTOMER_SCOPES.to_owned(), json!(["customer"]))
    };
    json!({
        "iss": "flotilla-auth", "aud": "flotilla", "sub": sub, "exp": now + 900,
        "iat": now, "nbf": now, "jti": uuid_like(), "scope": scope, "roles": roles,
    })
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// A JWKS server for a set of keys, counting the requests it answers.
pub struct Jwks {
    pub url: String,
    pub keys: Vec<TestKey>,
    hits: Arc<AtomicU64>,
    doc: Arc<RwLock<Value>>,
}

impl Jwks {
    /// Serves `kids` (one fresh key each) at `/.well-known/jwks.json` on a free port.
    pub async fn start(kids: &[&str]) -> Self {
        let keys: Vec<TestKey> = kids.iter().map(|k| TestKey::generate(k)).collect();
        let doc = Arc::new(RwLock::new(
            json!({"keys": keys.iter().map(TestKey::jwk).collect::<Vec<_>>()}),
        ));
        let hits = Arc::new(AtomicU64::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (d, h) = (d.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    axum::Json(d.read().unwrap().clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            keys,
            hits,
            doc,
        }
    }

    /// Requests answered so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// A token for `sub`, customer or admin, signed with the first key.
    pub fn token(&self, sub: &str, admin: bool) -> String {
        self.keys[0].sign(&claims(sub, admin))
    }
}
