//! The registry's HTTP API (`/v1/services…`), as in API.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json as AxJson, Router};
use garde::Validate;
use kit::Problem;
use kit::discovery::registry::{INDEX_HEADER, RegisterRequest};
use kit::discovery::traffic::TrafficPolicy;
use kit::extract::{Json, Query};
use kit::security::mtls::PeerIdentity;
use serde::Deserialize;
use tokio::time::Instant;

use crate::State;

/// Longest a watch may wait.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The registry's routes.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/v1/services", get(list))
        .route("/v1/services/{name}", get(one))
        .route(
            "/v1/services/{name}/instances/{id}",
            put(register).delete(deregister),
        )
        .route(
            "/v1/services/{name}/traffic",
            get(traffic).put(set_traffic).delete(clear_traffic),
        )
        .with_state(state)
}

fn valid_name(name: &str) -> Result<(), Problem> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid_field(
            "name",
            "service names are 1-63 of a-z, 0-9 and '-', starting with a letter",
        ))
    }
}

fn valid_id(id: &str) -> Result<(), Problem> {
    let ok = (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid_field(
            "id",
            "instance ids are 1-128 of A-Z, a-z, 0-9, '-', '_' and '.'",
        ))
    }
}

fn host_port(addr: &str, _: &()) -> garde::Result {
    match addr.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && host.len() <= 253
                && port.parse::<u16>().is_ok_and(|p| p > 0) =>
        {
            Ok(())
        }
        _ => Err(garde::Error::new("must be host:port")),
    }
}

fn metadata_limits(m: &BTreeMap<String, String>, _: &()) -> garde::Result {
    if m.len() > 32 {
        return Err(garde::Error::new("at most 32 entries"));
    }
    if m.iter()
        .any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 512)
    {
        return Err(garde::Error::new("keys are 1-64 bytes, values at most 512"));
    }
    Ok(())
}

#[derive(Debug, Deserialize, Validate)]
struct RegisterBody {
    #[garde(custom(host_port))]
    addr: String,
    #[garde(range(min = 200, max = 300_000))]
    ttl_ms: u64,
    #[serde(default)]
    #[garde(custom(metadata_limits))]
    metadata: BTreeMap<String, String>,
}

async fn register(
    AxState(state): AxState<Arc<State>>,
    Path((name, id)): Path<(String, String)>,
    Json(body): Json<RegisterBody>,
) -> Result<Response, Problem> {
    valid_name(&name)?;
    valid_id(&id)?;
    let req = RegisterRequest {
        addr: body.addr,
        ttl_ms: body.ttl_ms,
        metadata: body.metadata,
    };
    let now = Instant::now();
    let created = state.update(|r| {
        let is_new = !r.service(&name, now).instances.iter().any(|i| i.id == id);
        let changed = r.register(&name, &id, req, now);
        if is_new {
            tracing::info!(service = %name, instance = %id, "registered");
        }
        (is_new, changed)
    });
    let entry = state.read(|r| r.service(&name, now));
    let instance = entry.instances.into_iter().find(|i| i.id == id);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, AxJson(instance)).into_response())
}

async fn deregister(
    AxState(state): AxState<Arc<State>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    valid_name(&name)?;
    valid_id(&id)?;
    let removed = state.update(|r| {
        let removed = r.deregister(&name, &id);
        (removed, removed)
    });
    if removed {
        tracing::info!(service = %name, instance = %id, "deregistered");
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn list(AxState(state): AxState<Arc<State>>) -> Response {
    let now = Instant::now();
    let services = state.read(|r| r.services(now));
    let body: Vec<_> = services
        .into_iter()
        .map(|s| serde_json::json!({"name": s.name, "instances": s.instances}))
        .collect();
    AxJson(body).into_response()
}

#[derive(Debug, Deserialize, Validate)]
struct WatchQuery {
    /// Answer only once the service's index differs from this.
    #[garde(skip)]
    index: Option<u64>,
    /// How long to wait for a change (`30s`).
    #[garde(skip)]
    wait: Option<String>,
}

async fn one(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
    Query(q): Query<WatchQuery>,
) -> Result<Response, Problem> {
    valid_name(&name)?;
    if let Some(after) = q.index {
        let wait = match q.wait.as_deref() {
            None => Duration::from_secs(30),
            Some(w) => humantime::parse_duration(w)
                .map_err(|_| Problem::invalid_field("wait", "must be a duration like 30s"))?,
        }
        .min(MAX_WAIT);
        let mut changes = state.subscribe();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        while state.read(|r| r.index(&name)) == after {
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                _ = &mut deadline => break,
            }
        }
    }
    let entry = state.read(|r| r.service(&name, Instant::now()));
    let index = entry.index.to_string();
    Ok(([(INDEX_HEADER, index)], AxJson(entry)).into_response())
}

async fn traffic(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    valid_name(&name)?;
    match state.read(|r| r.traffic(&name).cloned()) {
        Some(t) => Ok(AxJson(t).into_response()),
        None => Err(Problem::not_found(format!("{name} has no traffic rules"))),
    }
}

/// Traffic rules move every client's calls, so only the operator (the `flotilla`
/// commands, `up`) may change them; services may register and read, not reroute. A
/// request without a peer identity only gets here with internal mTLS switched off.
fn operator_only(peer: Option<&PeerIdentity>) -> Result<(), Problem> {
    match peer {
        Some(p) if p.0.service() != kit::security::mtls::OPERATOR => {
            Err(Problem::forbidden(format!(
                "{} may not change traffic rules; only the operator may",
                p.0.service()
            )))
        }
        _ => Ok(()),
    }
}

async fn set_traffic(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
    peer: Option<Extension<PeerIdentity>>,
    Json(body): Json<TrafficBody>,
) -> Result<Response, Problem> {
    valid_name(&name)?;
    operator_only(peer.as_deref())?;
    let rules = body.0;
    let changed = state.update(|r| {
        let changed = r.set_traffic(&name, Some(rules.clone()));
        (changed, changed)
    });
    if changed {
        tracing::info!(service = %name, split = ?rules.split, sticky = rules.sticky, "traffic rules set");
    }
    Ok(AxJson(rules).into_response())
}

async fn clear_traffic(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
    peer: Option<Extension<PeerIdentity>>,
) -> Result<StatusCode, Problem> {
    valid_name(&name)?;
    operator_only(peer.as_deref())?;
    let changed = state.update(|r| {
        let changed = r.set_traffic(&name, None);
        (changed, changed)
    });
    if changed {
        tracing::info!(service = %name, "traffic rules removed");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `PUT /v1/services/{name}/traffic`.
#[derive(Debug, Deserialize, Validate)]
#[serde(transparent)]
struct TrafficBody(#[garde(custom(valid_rules))] TrafficPolicy);

fn valid_rules(rules: &TrafficPolicy, _: &()) -> garde::Result {
    rules.validate().map_err(garde::Error::new)
}
