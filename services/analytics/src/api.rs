//! Analytics' public HTTP API: the summary of a time window, for administrators.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use kit::Problem;
use kit::security::Identity;

use crate::domain::{self, PaymentCounts, Summary, TopProduct, Window};
use crate::store::AnalyticsStore;

/// The window when the query names none.
pub const DEFAULT_WINDOW: &str = "1h";

/// The public routes.
pub fn router(store: Arc<dyn AnalyticsStore>) -> Router {
    Router::new()
        .route("/api/analytics/summary", get(summary))
        .with_state(store)
}

/// The OpenAPI description of these routes, served on the admin listener at
/// `/openapi.json` and merged into the gateway's.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "analytics",
        description = "Projections of the events on the bus."
    ),
    paths(summary),
    components(schemas(Summary, TopProduct, PaymentCounts))
)]
pub struct ApiDoc;

/// Reads `window` from the query: present at most once, valid per [`Window::parse`].
fn window(query: Option<&str>) -> Result<Window, Problem> {
    let mut found: Option<String> = None;
    let mut seen = HashMap::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        *seen.entry(key.to_owned()).or_insert(0) += 1;
        if key == "window" {
            found = Some(value.to_owned());
        } else {
            return Err(Problem::invalid_field(key, "unknown query parameter"));
        }
    }
    if seen.get("window").copied().unwrap_or(0) > 1 {
        return Err(Problem::invalid_field("window", "given more than once"));
    }
    Window::parse(found.as_deref().unwrap_or(DEFAULT_WINDOW))
        .map_err(|why| Problem::invalid_field("window", why))
}

/// Orders, revenue, best sellers and event rate over a window.
#[utoipa::path(get, path = "/api/analytics/summary", tag = "analytics",
    params(("window" = Option<String>, Query, description = "`<n>m`, `<n>h` or `<n>d`, 1m to 90d; default 1h", pattern = "^[1-9][0-9]{0,5}[mhd]$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The summary of the window", body = Summary),
        (status = 401, description = "No access token (problem document)"),
        (status = 403, description = "The caller is not an administrator (problem document)"),
        (status = 422, description = "Invalid window (problem document)"),
    ))]
async fn summary(
    caller: Identity,
    State(store): State<Arc<dyn AnalyticsStore>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Summary>, Problem> {
    caller.require_role("admin")?;
    let window = window(query.as_deref())?;
    let totals = store
        .totals(window.first_bucket(SystemTime::now()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "analytics store failed");
            Problem::unavailable("the analytics store is unavailable", Duration::from_secs(1))
        })?;
    Ok(Json(domain::summarize(
        window,
        &totals.counters,
        &totals.products,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_read_strictly() {
        assert_eq!(window(None).unwrap().minutes(), 60);
        assert_eq!(window(Some("window=30m")).unwrap().minutes(), 30);
        for bad in [
            "window=",
            "window=1x",
            "window=1h&window=2h",
            "foo=1",
            "window=1%68",
        ] {
            let p = window(Some(bad)).unwrap_err();
            assert_eq!(p.status, 422, "{bad}");
        }
    }
}
