//! The merged API reference: `GET /openapi.json` (OpenAPI 3.1) and `GET /docs`.
//!
//! Every service describes its own public API (generated from its code) at
//! `/openapi.json` on its admin listener, whose address it registers as
//! `metadata.admin_addr`. The gateway fetches each routed service's document from one
//! live instance, keeps the paths its route table actually exposes, and merges paths
//! and schemas into one document. A service that cannot be reached is named in
//! `x-flotilla-unavailable` instead of failing the whole document.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::proxy::Gateway;

/// The public routes `/openapi.json` and `/docs`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("a client without TLS or proxies builds");
    Router::new()
        .route("/openapi.json", get(document))
        .route("/docs", get(docs))
        .with_state((gateway, http))
}

/// Whether `path` is served under `prefix` (whole segments, as the gateway routes).
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || (path.starts_with(prefix) && path[prefix.len()..].starts_with('/'))
        || prefix == "/"
}

/// Merges service documents: `docs` maps a service to its document and the route
/// prefixes it is reachable under.
pub fn merge(docs: &[(String, Vec<String>, Value)], unavailable: &[String]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for (_, prefixes, doc) in docs {
        if let Some(p) = doc["paths"].as_object() {
            for (path, item) in p {
                if prefixes.iter().any(|prefix| under(path, prefix)) {
                    paths.insert(path.clone(), item.clone());
                }
            }
        }
        if let Some(s) = doc["components"]["schemas"].as_object() {
            schemas.extend(s.clone());
        }
    }
    paths.insert(
        crate::aggregate::SUMMARY_PATH.to_owned(),
        crate::aggregate::summary_openapi(),
    );
    let mut merged = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Flotilla",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The public API of every Flotilla service, as routed by the gateway. \
                Errors are RFC 9457 problem documents (application/problem+json).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
        "x-flotilla-unavailable": unavailable,
    });
    document_edge_answers(&mut merged);
    kit::openapi::document_problems(&mut merged);
    merged
}

/// The answers the gateway itself may give to any request it routes, whatever the
/// service documents: a malformed path or header, the rate limit, and a service that is
/// down, failing or slow (a body's size limit and JSON check are the kit's `413`/`415`).
fn document_edge_answers(doc: &mut Value) {
    for op in kit::openapi::operations_mut(doc) {
        for (status, description) in [
            (400, "Malformed path, headers or body (problem document)"),
            (
                429,
                "Rate limited; `Retry-After` says when to try again (problem document)",
            ),
            (502, "The service failed to answer (problem document)"),
            (
                503,
                "The service is unavailable or its circuit breaker is open; `Retry-After` says when to try again (problem document)",
            ),
            (504, "The service did not answer in time (problem document)"),
        ] {
            kit::openapi::add_response(op, status, description);
        }
    }
}

async fn fetch(http: &reqwest::Client, gateway: &Gateway, service: &str) -> Option<Value> {
    let endpoints = gateway
        .routes
        .iter()
        .find(|(r, _)| r.service == service)
        .map(|(_, u)| u.endpoints.current())?;
    for endpoint in endpoints.iter() {
        let Some(admin) = endpoint.instance.metadata.get("admin_addr") else {
            continue;
        };
        let url = format!("http://{admin}/openapi.json");
        let span = kit::telemetry::trace::http_client_span(&http::Method::GET, &url);
        let mut headers = http::HeaderMap::new();
        kit::telemetry::trace::inject(&span, &mut headers);
        let sent = http
            .get(&url)
            .headers(headers)
            .send()
            .instrument(span.clone())
            .await;
        match &sent {
            Ok(res) => kit::telemetry::trace::record_http_status(&span, res.status()),
            Err(_) => kit::telemetry::trace::record_failure(&span, "transport"),
        }
        match sent {
            Ok(res) if res.status().is_success() => {
                if let Ok(doc) = res.json::<Value>().await {
                    return Some(doc);
                }
            }
            Ok(res) => tracing::warn!(%service, status = %res.status(), "no OpenAPI document"),
            Err(e) => tracing::warn!(%service, error = %e, "fetching the OpenAPI document failed"),
        }
    }
    None
}

async fn document(State((gateway, http)): State<(Arc<Gateway>, reqwest::Client)>) -> Response {
    let mut prefixes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (route, _) in &gateway.routes {
        prefixes
            .entry(route.service.clone())
            .or_default()
            .push(route.prefix.clone());
    }
    let fetched = futures_util::future::join_all(prefixes.keys().map(|service| {
        let (http, gateway) = (http.clone(), gateway.clone());
        async move { fetch(&http, &gateway, service).await }
    }))
    .await;
    let mut docs = Vec::new();
    let mut unavailable = Vec::new();
    for ((service, prefixes), doc) in prefixes.into_iter().zip(fetched) {
        match doc {
            Some(doc) => docs.push((service, prefixes, doc)),
            None => unavailable.push(service),
        }
    }
    axum::Json(merge(&docs, &unavailable)).into_response()
}

/// A self-contained reference page (no CDN): it loads `/openapi.json` and lists every
/// operation with its parameters, body and answers.
async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_only_routed_paths() {
        let inv = json!({"openapi": "3.1.0", "paths": {
            "/api/products": {"get": {}}, "/api/products/{sku}": {"get": {}}, "/internal": {"get": {}}
        }, "components": {"schemas": {"ProductView": {"type": "object"}}}});
        let merged = merge(
            &[("inventory".into(), vec!["/api/products".into()], inv)],
            &["payments".into()],
        );
        assert_eq!(merged["openapi"], "3.1.0");
        assert!(merged["paths"]["/api/products/{sku}"].is_object());
        assert!(merged["paths"]["/internal"].is_null());
        assert!(merged["components"]["schemas"]["ProductView"].is_object());
        assert_eq!(merged["x-flotilla-unavailable"][0], "payments");
        assert!(!under("/api/productsX", "/api/products"));
    }

    #[test]
    fn every_operation_documents_the_gateways_own_answers_as_problems() {
        let inv = json!({"openapi": "3.1.0", "paths": {
            "/api/products/{sku}": {"get": {"responses": {
                "200": {"description": "The product", "content": {"application/json": {}}},
                "404": {"description": "No such product"},
            }}},
            "/api/products/{sku}/stock": {"put": {
                "requestBody": {"content": {"application/json": {}}},
                "responses": {"200": {"description": "The product"}},
            }},
        }});
        let merged = merge(
            &[("inventory".into(), vec!["/api/products".into()], inv)],
            &[],
        );
        let problem = |op: &Value, status: &str| {
            op["responses"][status]["content"]["application/problem+json"]["schema"]["$ref"].clone()
        };
        let get = &merged["paths"]["/api/products/{sku}"]["get"];
        for status in ["400", "404", "429", "502", "503", "504"] {
            assert_eq!(
                problem(get, status),
                "#/components/schemas/Problem",
                "{status}: {get}"
            );
        }
        assert!(get["responses"]["415"].is_null(), "{get}");
        let put = &merged["paths"]["/api/products/{sku}/stock"]["put"];
        for status in ["413", "415", "422", "429"] {
            assert_eq!(
                problem(put, status),
                "#/components/schemas/Problem",
                "{status}"
            );
        }
        assert!(merged["components"]["schemas"]["Problem"].is_object());
        let summary = &merged["paths"]["/api/orders/{id}/summary"]["get"];
        assert_eq!(summary["operationId"], "order_summary");
        assert_eq!(problem(summary, "503"), "#/components/schemas/Problem");
    }
}
