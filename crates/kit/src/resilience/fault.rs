//! Fault injection on the server side of every service: abort with a status, or add
//! latency, for a share of requests, optionally only for some routes or callers, for a
//! limited time. Off until rules are set with `PUT /admin/faults`; cleared with
//! `DELETE /admin/faults`. This is how the patterns can be seen working, and how the
//! whole-system tests prove them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use garde::Validate;
use http::StatusCode;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::errors::Problem;
use crate::security::mtls::PeerIdentity;

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct FaultRule {
    /// Answer with this status instead of calling the handler (400–599).
    #[garde(inner(range(min = 400, max = 599)))]
    #[serde(default)]
    pub abort: Option<u16>,
    /// For gRPC requests, answer this gRPC status code (0–16) instead of the one
    /// closest to `abort`; alone, it aborts gRPC requests only.
    #[garde(inner(range(min = 1, max = 16)))]
    #[serde(default)]
    pub grpc_code: Option<u32>,
    /// Add this many milliseconds of latency before handling.
    #[garde(inner(range(max = 600_000)))]
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// With `delay_ms`, the latency is drawn uniformly from `delay_ms..=delay_max_ms`.
    #[garde(inner(range(max = 600_000)))]
    #[serde(default)]
    pub delay_max_ms: Option<u64>,
    /// Share of matching requests affected, 0–100.
    #[garde(range(min = 0.0, max = 100.0))]
    #[serde(default = "hundred")]
    pub percent: f64,
    /// Only paths starting with this prefix.
    #[garde(length(max = 256))]
    #[serde(default)]
    pub route: Option<String>,
    /// Only requests from this caller: the service its mTLS certificate names, else the
    /// `x-flotilla-caller` header (plain-text internal traffic).
    #[garde(length(max = 64))]
    #[serde(default)]
    pub caller: Option<String>,
    /// The rule lapses after this many seconds (`None`: until cleared).
    #[garde(inner(range(min = 1, max = 86_400)))]
    #[serde(default)]
    pub for_secs: Option<u64>,
}

fn hundred() -> f64 {
    100.0
}

/// `PUT /admin/faults` body.
#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
pub struct FaultSet {
    /// The rules; the first matching one applies.
    #[garde(length(max = 32), dive)]
    pub rules: Vec<FaultRule>,
}

/// Header naming the calling service, for caller-specific faults.
pub const CALLER_HEADER: &str = "x-flotilla-caller";

#[derive(Debug)]
struct Active {
    rule: FaultRule,
    until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Faults {
    on: AtomicBool,
    rules: RwLock<Arc<Vec<Active>>>,
}

fn faults() -> &'static Faults {
    static FAULTS: OnceLock<Faults> = OnceLock::new();
    FAULTS.get_or_init(Faults::default)
}

/// Replaces this process's fault rules.
pub fn set(rules: Vec<FaultRule>) {
    let now = Instant::now();
    let active: Vec<Active> = rules
        .into_iter()
        .map(|rule| Active {
            until: rule.for_secs.map(|s| now + Duration::from_secs(s)),
            rule,
        })
        .collect();
    let f = faults();
    let on = !active.is_empty();
    *f.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(active);
    f.on.store(on, Ordering::Release);
    tracing::warn!(rules = on, "fault injection rules changed");
}

/// The rules in force.
pub fn current() -> Vec<FaultRule> {
    let now = Instant::now();
    faults()
        .rules
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|a| a.until.is_none_or(|u| now < u))
        .map(|a| a.rule.clone())
        .collect()
}

/// What to do to one request, if anything.
/// What to do to one request: a delay, and an abort (HTTP status, gRPC code).
type Decision = (Option<Duration>, Option<(Option<u16>, Option<u32>)>);

fn decide(path: &str, caller: Option<&str>) -> Option<Decision> {
    let rules = faults()
        .rules
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let now = Instant::now();
    let a = rules.iter().find(|a| {
        a.until.is_none_or(|u| now < u)
            && a.rule.route.as_deref().is_none_or(|r| path.starts_with(r))
            && a.rule.caller.as_deref().is_none_or(|c| Some(c) == caller)
    })?;
    if rand::rng().random_range(0.0..100.0) >= a.rule.percent {
        return None;
    }
    let delay = a.rule.delay_ms.map(|min| {
        let max = a.rule.delay_max_ms.unwrap_or(min).max(min);
        Duration::from_millis(rand::rng().random_range(min..=max))
    });
    let abort = (a.rule.abort.is_some() || a.rule.grpc_code.is_some())
        .then_some((a.rule.abort, a.rule.grpc_code));
    Some((delay, abort))
}

/// Who sent `req`: the service of its verified mTLS identity, else the caller header.
/// Every internal call carries the identity, so a rule for one caller (a partition) cuts
/// off all its calls, gRPC, HTTP, registry and bus alike.
fn caller(req: &Request) -> Option<&str> {
    match req.extensions().get::<PeerIdentity>() {
        Some(peer) => Some(peer.0.service()),
        None => req
            .headers()
            .get(CALLER_HEADER)
            .and_then(|v| v.to_str().ok()),
    }
}

/// Middleware: applies the fault rules (one atomic load when there are none).
pub async fn inject(req: Request, next: Next) -> Response {
    if !faults().on.load(Ordering::Acquire) {
        return next.run(req).await;
    }
    if let Some((delay, abort)) = decide(req.uri().path(), caller(&req)) {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let grpc = crate::http::is_grpc(req.headers());
        if let Some((status, grpc_code)) = abort
            && (grpc || status.is_some())
        {
            let status = status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            metrics::counter!("faults_injected_total", "kind" => "abort").increment(1);
            if grpc {
                let code = grpc_code.unwrap_or_else(|| crate::http::grpc_code_for(status));
                return crate::http::grpc_error(code, "injected fault");
            }
            let mut p = Problem::new(status, "injected-fault", "Injected fault")
                .with_detail("fault injection is active on this service");
            if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS
            {
                p = p.with_retry_after(Duration::from_secs(1));
            }
            return p.into_response();
        }
        metrics::counter!("faults_injected_total", "kind" => "delay").increment(1);
    }
    next.run(req).await
}

/// `GET`/`PUT`/`DELETE /admin/faults`.
pub fn admin_router() -> Router {
    Router::new().route(
        "/admin/faults",
        get(|| async { Json(FaultSet { rules: current() }) })
            .put(
                |crate::extract::Json(set_): crate::extract::Json<FaultSet>| async move {
                    set(set_.rules);
                    Json(FaultSet { rules: current() })
                },
            )
            .delete(|| async {
                set(Vec::new());
                StatusCode::NO_CONTENT
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> FaultRule {
        FaultRule {
            abort: Some(503),
            grpc_code: None,
            delay_ms: None,
            delay_max_ms: None,
            percent: 100.0,
            route: Some("/api/products".into()),
            caller: None,
            for_secs: None,
        }
    }

    // One test touches the process-wide rules, so the cases run in sequence.
    #[tokio::test(start_paused = true)]
    async fn rules_match_by_route_and_caller_and_lapse() {
        set(vec![rule()]);
        assert_eq!(
            decide("/api/products/X", None),
            Some((None, Some((Some(503), None))))
        );
        assert_eq!(decide("/api/orders", None), None);

        set(vec![FaultRule {
            caller: Some("orders".into()),
            ..rule()
        }]);
        assert!(decide("/api/products", Some("gateway")).is_none());
        assert!(decide("/api/products", Some("orders")).is_some());

        set(vec![FaultRule {
            percent: 0.0,
            ..rule()
        }]);
        assert!(decide("/api/products", None).is_none());

        set(vec![FaultRule {
            for_secs: Some(5),
            ..rule()
        }]);
        assert!(decide("/api/products", None).is_some());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(decide("/api/products", None).is_none(), "lapsed");
        assert!(current().is_empty());

        // gRPC calls get a gRPC error; a gRPC-only rule leaves plain HTTP alone.
        set(vec![FaultRule {
            abort: None,
            grpc_code: Some(14),
            route: Some("/flotilla.payments".into()),
            ..rule()
        }]);
        let app = Router::new()
            .route("/{*path}", axum::routing::post(|| async { "ok" }))
            .layer(axum::middleware::from_fn(inject));
        let call = |grpc: bool| {
            let mut b = http::Request::post("/flotilla.payments.v1.Payments/Authorize");
            if grpc {
                b = b.header(http::header::CONTENT_TYPE, "application/grpc");
            }
            tower::ServiceExt::oneshot(app.clone(), b.body(axum::body::Body::empty()).unwrap())
        };
        let res = call(true).await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "gRPC errors travel in headers"
        );
        assert_eq!(res.headers()["grpc-status"], "14");
        let res = call(false).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(!res.headers().contains_key("grpc-status"));
        set(vec![FaultRule {
            route: None,
            abort: Some(504),
            ..rule()
        }]);
        assert_eq!(call(true).await.unwrap().headers()["grpc-status"], "4");

        // A caller rule matches the mTLS identity of the peer, header or not.
        set(vec![FaultRule {
            route: None,
            caller: Some("orders".into()),
            ..rule()
        }]);
        let from = |peer: &str, header: Option<&str>| {
            let mut b = http::Request::post("/flotilla.payments.v1.Payments/Authorize");
            if let Some(h) = header {
                b = b.header(CALLER_HEADER, h);
            }
            let mut req = b.body(axum::body::Body::empty()).unwrap();
            let id = crate::security::mtls::SpiffeId::new(
                crate::security::mtls::DEFAULT_TRUST_DOMAIN,
                peer,
            )
            .unwrap();
            req.extensions_mut().insert(PeerIdentity(id));
            tower::ServiceExt::oneshot(app.clone(), req)
        };
        assert_eq!(from("orders", None).await.unwrap().status(), 503);
        assert_eq!(from("gateway", None).await.unwrap().status(), 200);
        assert_eq!(
            from("gateway", Some("orders")).await.unwrap().status(),
            200,
            "the verified identity wins over the header"
        );
        set(Vec::new());
        assert!(!faults().on.load(Ordering::Acquire));
    }

    #[test]
    fn validation_bounds() {
        let bad = FaultRule {
            abort: Some(200),
            ..rule()
        };
        assert!(bad.validate().is_err());
        let bad = FaultRule {
            percent: 150.0,
            ..rule()
        };
        assert!(bad.validate().is_err());
        assert!(rule().validate().is_ok());
    }
}
