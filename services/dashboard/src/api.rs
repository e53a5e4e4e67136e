//! The dashboard's query API (the web UI's contract): traces with filters, one trace
//! with its spans for the waterfall, logs search and follow, live ingest notifications
//! (server-sent events), and the services, sagas and bus views.
//!
//! Query parameters are checked strictly: an unknown or repeated parameter, an unknown
//! status or level, a negative number, a limit over 1000 or a malformed id is a `422`
//! naming the parameter. An empty value is the same as no value (the UI's forms send
//! every field).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use kit::Problem;
use serde::Serialize;
use serde_json::Value;

use crate::fleet::{BusView, Fleet, SagasView};
use crate::ingest::Ingest;
use crate::scrape::ServicesView;
use crate::store::{LogFilter, StoredLog, StoredSpan, TelemetryStore, TraceFilter, TraceSummary};

/// The most any `limit` may ask for.
pub const MAX_LIMIT: u32 = 1000;
/// Live notifications are sent at most this often per client (ingest is coalesced).
pub const LIVE_COALESCE: Duration = Duration::from_millis(250);
/// A comment keeps idle live connections open through proxies.
pub const LIVE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The telemetry store.
    pub store: TelemetryStore,
    /// The ingest queue (for its running totals).
    pub ingest: Ingest,
    /// The rest of the system.
    pub fleet: Arc<Fleet>,
}

/// The API routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/services", get(services))
        .route("/api/traces", get(traces))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/logs", get(logs))
        .route("/api/live", get(live))
        .route("/api/sagas", get(sagas))
        .route("/api/bus", get(bus))
        .with_state(state)
}

/// The OpenAPI description of the dashboard's API, served on its admin listener at
/// `/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "dashboard",
        description = "Traces, logs, services, sagas and the bus of a Flotilla fleet; the OTLP/HTTP receiver is at `POST /v1/traces` and `POST /v1/logs`."
    ),
    paths(services, traces, trace, logs, live, sagas, bus),
    components(schemas(
        TracesPage,
        TraceListItem,
        TraceView,
        SpanView,
        SpanEventView,
        LogsPage,
        LogView,
        ServicesView,
        crate::scrape::ServiceView,
        crate::scrape::InstanceView,
        crate::scrape::BreakerView,
        SagasView,
        crate::fleet::SagaView,
        crate::fleet::SagaStepView,
        BusView,
        crate::fleet::GroupView,
        crate::fleet::DeadLetterView
    ))
)]
pub struct ApiDoc;

/// `GET /api/traces`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TracesPage {
    /// Newest first.
    pub traces: Vec<TraceListItem>,
}

/// One trace in the list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TraceListItem {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The root span's service (the earliest span's while the root has not arrived).
    pub root_service: String,
    /// The root span's name.
    pub root_name: String,
    /// The root span's `http.route` (or `url.path`).
    pub route: Option<String>,
    /// RFC 3339 with milliseconds.
    pub start: String,
    /// Unix ms.
    pub start_unix_ms: f64,
    /// From the first span's start to the last span's end.
    pub duration_ms: f64,
    /// Spans stored.
    pub span_count: i64,
    /// Every service with a span in it.
    pub services: Vec<String>,
    /// `error` when a span has status error, else `ok`.
    pub status: &'static str,
}

/// `GET /api/traces/{trace_id}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TraceView {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// RFC 3339 with milliseconds.
    pub start: String,
    /// Unix ms.
    pub start_unix_ms: f64,
    /// From the first span's start to the last span's end.
    pub duration_ms: f64,
    /// By start.
    pub spans: Vec<SpanView>,
}

/// A span of the waterfall.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SpanView {
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// `null` for the root.
    pub parent_span_id: Option<String>,
    /// `service.name`.
    pub service: String,
    /// `service.instance.id`.
    pub instance: Option<String>,
    /// The span's name.
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    /// Unix ms.
    pub start_unix_ms: f64,
    /// From the trace's start.
    pub offset_ms: f64,
    /// Its duration.
    pub duration_ms: f64,
    /// `ok`, `error` or `unset`.
    pub status: &'static str,
    /// The status message.
    pub status_message: Option<String>,
    /// Its attributes.
    #[schema(value_type = Object)]
    pub attributes: Value,
    /// Its events.
    pub events: Vec<SpanEventView>,
    /// Log records emitted in it (`GET /api/logs?trace_id=&span_id=` lists them).
    pub log_count: i64,
}

/// An event of a span.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SpanEventView {
    /// Its name.
    pub name: String,
    /// From the trace's start.
    pub offset_ms: f64,
    /// Its attributes.
    #[schema(value_type = Object)]
    pub attributes: Value,
}

/// `GET /api/logs`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogsPage {
    /// Newest first; oldest first with `after_id`.
    pub logs: Vec<LogView>,
}

/// A log record.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogView {
    /// Grows with arrival; pass the last one seen as `after_id` to follow.
    pub id: i64,
    /// RFC 3339 with milliseconds.
    pub time: String,
    /// Unix ms.
    pub time_unix_ms: f64,
    /// `service.name`.
    pub service: String,
    /// `service.instance.id`.
    pub instance: Option<String>,
    /// `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR` (OTLP's `FATAL` is `ERROR`).
    pub level: &'static str,
    /// The body.
    pub message: String,
    /// The trace it was emitted in.
    pub trace_id: Option<String>,
    /// The span it was emitted in.
    pub span_id: Option<String>,
    /// Its attributes.
    #[schema(value_type = Object)]
    pub attributes: Value,
}

/// The query's parameters, each at most once, empty ones dropped; only `known` ones.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        known: &[&str],
    ) -> Result<Self, Problem> {
        let Query(pairs) =
            query.map_err(|e| Problem::bad_request(format!("malformed query: {e}")))?;
        let mut map = HashMap::new();
        for (key, value) in pairs {
            if !known.contains(&key.as_str()) {
                return Err(Problem::invalid_field(key, "unknown query parameter"));
            }
            if map.contains_key(&key) {
                return Err(Problem::invalid_field(key, "given more than once"));
            }
            map.insert(key, value);
        }
        map.retain(|_, v| !v.is_empty());
        Ok(Self(map))
    }

    fn text(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    /// A non-negative number.
    fn number(&self, key: &str) -> Result<Option<f64>, Problem> {
        self.0
            .get(key)
            .map(|v| match v.parse::<f64>() {
                Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
                _ => Err(Problem::invalid_field(key, "must be a non-negative number")),
            })
            .transpose()
    }

    /// A non-negative integer.
    fn integer(&self, key: &str) -> Result<Option<i64>, Problem> {
        self.0
            .get(key)
            .map(|v| match v.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(n),
                _ => Err(Problem::invalid_field(
                    key,
                    "must be a non-negative integer",
                )),
            })
            .transpose()
    }

    /// `limit`: 1 to [`MAX_LIMIT`], `default` when absent.
    fn limit(&self, default: u32) -> Result<u32, Problem> {
        match self.0.get("limit") {
            None => Ok(default),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(Problem::invalid_field(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                )),
            },
        }
    }

    /// A lowercase hex id of `digits` digits.
    fn id(&self, key: &str, digits: usize) -> Result<Option<String>, Problem> {
        self.0
            .get(key)
            .map(|v| check_id(key, v, digits).map(|()| v.clone()))
            .transpose()
    }
}

fn check_id(field: &str, value: &str, digits: usize) -> Result<(), Problem> {
    let ok = value.len() == digits
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid_field(
            field,
            format!("must be {digits} lowercase hex digits"),
        ))
    }
}

fn store_failed(e: crate::store::StoreError) -> Problem {
    tracing::error!(error = %e, "dashboard store failed");
    Problem::unavailable("the dashboard store is unavailable", Duration::from_secs(1))
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// Unix ns as RFC 3339 with milliseconds.
pub fn rfc3339(ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn kind(kind: i32) -> &'static str {
    match kind {
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "internal",
    }
}

fn span_status(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

/// The level of an OTLP severity number.
pub fn level(severity: i32) -> &'static str {
    match severity {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        13..=16 => "WARN",
        17.. => "ERROR",
        _ => "INFO",
    }
}

/// The lowest severity number of a level name (`warn` → 13).
fn min_severity(level: &str) -> Option<i32> {
    match level.to_ascii_lowercase().as_str() {
        "trace" => Some(1),
        "debug" => Some(5),
        "info" => Some(9),
        "warn" | "warning" => Some(13),
        "error" => Some(17),
        _ => None,
    }
}

/// The services with their instances' health and RED metrics, as last scraped.
#[utoipa::path(get, path = "/api/services", tag = "dashboard",
    responses((status = 200, description = "The services as last scraped", body = ServicesView)))]
async fn services(State(app): State<AppState>) -> Json<ServicesView> {
    Json(ServicesView::clone(&app.fleet.services()))
}

/// Traces, newest first.
#[utoipa::path(get, path = "/api/traces", tag = "dashboard",
    params(
        ("service" = Option<String>, Query, description = "Traces with a span of this service"),
        ("status" = Option<String>, Query, description = "`ok` or `error`"),
        ("min_duration_ms" = Option<f64>, Query, description = "At least this long", minimum = 0),
        ("route" = Option<String>, Query, description = "The root span's `http.route` (or `url.path`)"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50", minimum = 1, maximum = 1000),
        ("before_unix_ms" = Option<f64>, Query, description = "Started before this (the next page)", minimum = 0),
    ),
    responses(
        (status = 200, description = "Matching traces", body = TracesPage),
        (status = 422, description = "Invalid parameter (problem document)"),
    ))]
async fn traces(
    State(app): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<TracesPage>, Problem> {
    let p = Params::parse(
        query,
        &[
            "service",
            "status",
            "min_duration_ms",
            "route",
            "limit",
            "before_unix_ms",
        ],
    )?;
    let error = match p.text("status").as_deref() {
        None => None,
        Some("ok") => Some(false),
        Some("error") => Some(true),
        Some(_) => return Err(Problem::invalid_field("status", "must be `ok` or `error`")),
    };
    let filter = TraceFilter {
        service: p.text("service"),
        error,
        min_duration_ns: p.number("min_duration_ms")?.map(|v| (v * 1e6) as i64),
        route: p.text("route"),
        before_ns: p.number("before_unix_ms")?.map(|v| (v * 1e6) as i64),
        limit: p.limit(50)?,
    };
    let traces = app.store.traces(&filter).await.map_err(store_failed)?;
    Ok(Json(TracesPage {
        traces: traces.into_iter().map(list_item).collect(),
    }))
}

fn list_item(t: TraceSummary) -> TraceListItem {
    TraceListItem {
        start: rfc3339(t.start_ns),
        start_unix_ms: ms(t.start_ns),
        duration_ms: ms(t.end_ns - t.start_ns),
        trace_id: t.trace_id,
        root_service: t.root_service,
        root_name: t.root_name,
        route: t.route,
        span_count: t.span_count,
        services: t.services,
        status: if t.error { "error" } else { "ok" },
    }
}

/// One trace with its spans, for the waterfall.
#[utoipa::path(get, path = "/api/traces/{trace_id}", tag = "dashboard",
    params(("trace_id" = String, Path, description = "32 lowercase hex digits", pattern = "^[0-9a-f]{32}$")),
    responses(
        (status = 200, description = "The trace", body = TraceView),
        (status = 404, description = "No span of this trace is stored (problem document)"),
        (status = 422, description = "Malformed trace id (problem document)"),
    ))]
async fn trace(
    State(app): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Json<TraceView>, Problem> {
    check_id("trace_id", &trace_id, 32)?;
    let spans = app.store.trace(&trace_id).await.map_err(store_failed)?;
    let start = spans.iter().map(|s| s.span.start_ns).min();
    let end = spans.iter().map(|s| s.span.end_ns).max();
    let (Some(start), Some(end)) = (start, end) else {
        return Err(Problem::not_found(format!("no trace {trace_id}")));
    };
    Ok(Json(TraceView {
        trace_id,
        start: rfc3339(start),
        start_unix_ms: ms(start),
        duration_ms: ms(end - start),
        spans: spans.into_iter().map(|s| span_view(s, start)).collect(),
    }))
}

fn span_view(stored: StoredSpan, trace_start: i64) -> SpanView {
    let s = stored.span;
    let events = s
        .events
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| SpanEventView {
                    name: e["name"].as_str().unwrap_or_default().to_owned(),
                    offset_ms: ms(e["time_ns"].as_i64().unwrap_or(trace_start) - trace_start),
                    attributes: e["attributes"].clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    SpanView {
        span_id: s.span_id,
        parent_span_id: s.parent_span_id,
        service: s.service,
        instance: s.instance,
        name: s.name,
        kind: kind(s.kind),
        start_unix_ms: ms(s.start_ns),
        offset_ms: ms(s.start_ns - trace_start),
        duration_ms: ms(s.end_ns - s.start_ns),
        status: span_status(s.status),
        status_message: s.status_message,
        attributes: s.attributes,
        events,
        log_count: stored.log_count,
    }
}

/// Log records: newest first, or with `after_id` (follow mode) the ones after it,
/// oldest first.
#[utoipa::path(get, path = "/api/logs", tag = "dashboard",
    params(
        ("service" = Option<String>, Query, description = "Of this service"),
        ("level" = Option<String>, Query, description = "Minimum level: `trace`, `debug`, `info`, `warn` or `error`"),
        ("q" = Option<String>, Query, description = "Case-insensitive substring of the message"),
        ("trace_id" = Option<String>, Query, description = "Emitted in this trace", pattern = "^[0-9a-f]{32}$"),
        ("span_id" = Option<String>, Query, description = "Emitted in this span", pattern = "^[0-9a-f]{16}$"),
        ("since_unix_ms" = Option<f64>, Query, description = "At or after this time", minimum = 0),
        ("after_id" = Option<i64>, Query, description = "Follow mode: ids above this, oldest first", minimum = 0),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 100", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "Matching log records", body = LogsPage),
        (status = 422, description = "Invalid parameter (problem document)"),
    ))]
async fn logs(
    State(app): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<LogsPage>, Problem> {
    let p = Params::parse(
        query,
        &[
            "service",
            "level",
            "q",
            "trace_id",
            "span_id",
            "since_unix_ms",
            "after_id",
            "limit",
        ],
    )?;
    let min_severity = match p.text("level") {
        None => None,
        Some(l) => Some(min_severity(&l).ok_or_else(|| {
            Problem::invalid_field("level", "must be trace, debug, info, warn or error")
        })?),
    };
    let filter = LogFilter {
        service: p.text("service"),
        min_severity,
        text: p.text("q"),
        trace_id: p.id("trace_id", 32)?,
        span_id: p.id("span_id", 16)?,
        since_ns: p.number("since_unix_ms")?.map(|v| (v * 1e6) as i64),
        after_id: p.integer("after_id")?,
        limit: p.limit(100)?,
    };
    let logs = app.store.logs(&filter).await.map_err(store_failed)?;
    Ok(Json(LogsPage {
        logs: logs.into_iter().map(log_view).collect(),
    }))
}

fn log_view(stored: StoredLog) -> LogView {
    let l = stored.log;
    LogView {
        id: stored.id,
        time: rfc3339(l.time_ns),
        time_unix_ms: ms(l.time_ns),
        service: l.service,
        instance: l.instance,
        level: level(l.severity),
        message: l.message,
        trace_id: l.trace_id,
        span_id: l.span_id,
        attributes: l.attributes,
    }
}

/// Server-sent events: `ingest` with `{"spans": n, "logs": n}` written since the last
/// one (at most four a second), and a keep-alive comment every 15 s.
#[utoipa::path(get, path = "/api/live", tag = "dashboard",
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = String)))]
async fn live(
    State(app): State<AppState>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut totals = app.ingest.totals();
    let last = *totals.borrow_and_update();
    let stream = futures_util::stream::unfold((totals, last), |(mut totals, last)| async move {
        totals.changed().await.ok()?;
        // Whatever else arrives meanwhile goes in the same event.
        tokio::time::sleep(LIVE_COALESCE).await;
        let now = *totals.borrow_and_update();
        let data = serde_json::json!({
            "spans": now.spans - last.spans,
            "logs": now.logs - last.logs,
        });
        let event = Event::default().event("ingest").data(data.to_string());
        Some((Ok(event), (totals, now)))
    });
    Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(LIVE_KEEP_ALIVE)
            .text("keep-alive"),
    )
}

/// Recent sagas from the orders service: in-flight first, then the most recently
/// updated.
#[utoipa::path(get, path = "/api/sagas", tag = "dashboard",
    params(("limit" = Option<u32>, Query, description = "1 to 1000, default 50", minimum = 1, maximum = 1000)),
    responses(
        (status = 200, description = "Sagas", body = SagasView),
        (status = 422, description = "Invalid limit (problem document)"),
        (status = 503, description = "No orders instance answered (problem document)"),
    ))]
async fn sagas(
    State(app): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<SagasView>, Problem> {
    let p = Params::parse(query, &["limit"])?;
    Ok(Json(app.fleet.sagas(p.limit(50)?).await?))
}

/// The bus's consumer groups and its newest dead letters.
#[utoipa::path(get, path = "/api/bus", tag = "dashboard",
    responses(
        (status = 200, description = "The bus", body = BusView),
        (status = 503, description = "The bus did not answer (problem document)"),
    ))]
async fn bus(State(app): State<AppState>) -> Result<Json<BusView>, Problem> {
    Ok(Json(app.fleet.bus().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_severities() {
        assert_eq!(level(9), "INFO");
        assert_eq!(level(13), "WARN");
        assert_eq!(level(21), "ERROR");
        assert_eq!(level(0), "INFO");
        assert_eq!(min_severity("WARN"), Some(13));
        assert_eq!(min_severity("loud"), None);
    }

    #[test]
    fn ids_are_lowercase_hex_of_their_length() {
        assert!(check_id("trace_id", &"a".repeat(32), 32).is_ok());
        assert!(check_id("trace_id", &"A".repeat(32), 32).is_err());
        assert!(check_id("trace_id", &"a".repeat(31), 32).is_err());
        assert!(check_id("span_id", "zzzzzzzzzzzzzzzz", 16).is_err());
    }

    #[test]
    fn times_have_milliseconds() {
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
