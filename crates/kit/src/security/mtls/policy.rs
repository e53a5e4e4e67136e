//! The call policy: which service may call which, enforced by the callee from the
//! peer's verified identity.
//!
//! Configured as `[tls.policy]`, caller → callees, where `"*"` stands for every
//! service on either side:
//!
//! ```toml
//! [tls.policy]
//! "*" = ["registry", "bus"]
//! gateway = ["auth", "users", "inventory", "orders", "payments"]
//! orders = ["inventory", "payments"]
//! ```
//!
//! A configured policy replaces the default as a whole.

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::identity::PeerIdentity;
use crate::errors::Problem;

/// Caller → the services it may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallPolicy(BTreeMap<String, Vec<String>>);

impl Default for CallPolicy {
    /// The calls Flotilla's own services make: everyone (the operator's `flotilla`
    /// commands included) → registry and bus; the gateway → every routed service;
    /// auth → users (profiles); orders → inventory (stock, catalog prices) and payments.
    fn default() -> Self {
        Self::from_pairs(&[
            ("*", &["registry", "bus"]),
            (
                "gateway",
                &[
                    "auth",
                    "users",
                    "inventory",
                    "orders",
                    "payments",
                    "notifications",
                    "analytics",
                ],
            ),
            ("auth", &["users"]),
            ("orders", &["inventory", "payments"]),
        ])
    }
}

impl CallPolicy {
    /// A policy from (caller, callees) pairs.
    pub fn from_pairs(pairs: &[(&str, &[&str])]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(caller, callees)| {
                    (
                        (*caller).to_owned(),
                        callees.iter().map(|c| (*c).to_owned()).collect(),
                    )
                })
                .collect(),
        )
    }

    /// Whether `caller` may call `callee`.
    pub fn allows(&self, caller: &str, callee: &str) -> bool {
        [caller, "*"].iter().any(|who| {
            self.0
                .get(*who)
                .is_some_and(|callees| callees.iter().any(|c| c == callee || c == "*"))
        })
    }
}

/// What [`enforce`] needs: the service being called and its policy.
#[derive(Debug, Clone)]
pub struct Enforcement {
    /// The callee (this service).
    pub service: String,
    /// The trust domain peers must belong to.
    pub trust_domain: String,
    /// The policy.
    pub policy: CallPolicy,
    /// Whether denials are answered as gRPC (`PERMISSION_DENIED`) rather than `403`.
    pub grpc: bool,
}

/// Middleware: lets a request through only if its peer identity (from the mTLS
/// handshake) is in the trust domain and the policy allows it to call this service.
/// A denial is logged and answered `403` (gRPC: `PERMISSION_DENIED`).
pub async fn enforce(
    State(e): State<std::sync::Arc<Enforcement>>,
    req: Request,
    next: Next,
) -> Response {
    let peer = req.extensions().get::<PeerIdentity>().map(|p| p.0.clone());
    let reason = match &peer {
        None => "the client certificate carries no SPIFFE id".to_owned(),
        Some(id) if id.trust_domain() != e.trust_domain => {
            format!("{id} is not in the trust domain {}", e.trust_domain)
        }
        Some(id) if !e.policy.allows(id.service(), &e.service) => {
            format!("{} may not call {}", id.service(), e.service)
        }
        Some(_) => return next.run(req).await,
    };
    tracing::warn!(
        peer = peer.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        service = %e.service,
        method = %req.method(),
        path = %req.uri().path(),
        "call denied by the call policy: {reason}"
    );
    metrics::counter!("mtls_denied_total", "service" => e.service.clone()).increment(1);
    if e.grpc {
        permission_denied(&reason)
    } else {
        Problem::forbidden(reason).into_response()
    }
}

/// A trailers-only gRPC answer with status `PERMISSION_DENIED` (7).
fn permission_denied(message: &str) -> Response {
    let mut res = Response::new(axum::body::Body::empty());
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", http::HeaderValue::from_static("7"));
    // grpc-message is percent-encoded; the reason is ASCII without `%` in practice.
    if let Ok(v) = http::HeaderValue::from_str(&message.replace('%', "%25")) {
        h.insert("grpc-message", v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_matches_the_calls_services_make() {
        let p = CallPolicy::default();
        for (caller, callee) in [
            ("gateway", "orders"),
            ("gateway", "auth"),
            ("gateway", "notifications"),
            ("auth", "users"),
            ("orders", "inventory"),
            ("orders", "payments"),
            ("payments", "bus"),
            ("inventory", "registry"),
            ("operator", "registry"),
            ("operator", "bus"),
        ] {
            assert!(p.allows(caller, callee), "{caller} → {callee} denied");
        }
        for (caller, callee) in [
            ("inventory", "payments"),
            ("payments", "orders"),
            ("users", "auth"),
            ("auth", "orders"),
            ("orders", "users"),
            ("operator", "payments"),
            ("bus", "gateway"),
        ] {
            assert!(!p.allows(caller, callee), "{caller} → {callee} allowed");
        }
    }

    #[test]
    fn wildcards_on_either_side() {
        let p = CallPolicy::from_pairs(&[("admin", &["*"]), ("*", &["registry"])]);
        assert!(p.allows("admin", "payments"));
        assert!(p.allows("anyone", "registry"));
        assert!(!p.allows("anyone", "payments"));
        assert!(!CallPolicy::from_pairs(&[]).allows("a", "b"));
    }

    #[test]
    fn configured_as_caller_to_callees() {
        let p: CallPolicy =
            serde_json::from_value(serde_json::json!({"gateway": ["orders"]})).unwrap();
        assert!(p.allows("gateway", "orders"));
        assert!(!p.allows("gateway", "registry"), "replaces the default");
    }
}
