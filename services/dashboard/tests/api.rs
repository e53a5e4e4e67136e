//! The dashboard over real HTTP with a real SQLite store: OTLP batches in (protobuf,
//! JSON, gzip), read back through the query API; the receiver's and the API's refusals.

use std::time::{Duration, Instant};

use kit::config::Config;
use kit::service::{Context, Running};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;
use serde_json::{Value, json};
use sqlx::Connection;

const DEADLINE: Duration = Duration::from_secs(20);
const SPEC_TRACES: &str = include_str!("data/trace.json");

struct App {
    base: String,
    db: std::path::PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _running: Running,
}

async fn start(settings: Value) -> App {
    kit::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let mut section = json!({"listen": "127.0.0.1:0"});
    section
        .as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    let config = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("dashboard", section);
    let service = dashboard::build(Context::new("dashboard", config).unwrap())
        .await
        .unwrap();
    App {
        base: format!("http://{}", service.public_addr()),
        db: dir.path().join("dashboard").join("dashboard.db"),
        http: reqwest::Client::new(),
        _dir: dir,
        _running: service.spawn(),
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.to_owned())
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", text(service)),
            kv("service.instance.id", text(&format!("{service}-1"))),
        ],
        ..Default::default()
    })
}

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

/// A span of trace `trace` (its byte repeated), id `id`, child of `parent`.
fn otlp_span(trace: u8, id: u8, parent: Option<u8>, name: &str, start_ms: u64, ms: u64) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.to_owned(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: T0 + start_ms * MS,
        end_time_unix_nano: T0 + (start_ms + ms) * MS,
        ..Default::default()
    }
}

/// Two traces: `0x11…` gateway → orders (orders fails), `0x22…` gateway alone.
fn two_traces() -> ExportTraceServiceRequest {
    let mut root = otlp_span(0x11, 1, None, "POST /api/orders", 0, 20);
    root.attributes = vec![kv("http.route", text("/api/orders"))];
    let mut child = otlp_span(0x11, 2, Some(1), "reserve", 5, 10);
    child.kind = span::SpanKind::Client as i32;
    child.status = Some(Status {
        code: 2,
        message: "out of stock".to_owned(),
    });
    child.events = vec![span::Event {
        time_unix_nano: T0 + 7 * MS,
        name: "retry".to_owned(),
        attributes: vec![kv("attempt", any_value::Value::IntValue(2))],
        dropped_attributes_count: 0,
    }];
    let mut other = otlp_span(0x22, 1, None, "GET /api/products", 100, 1);
    other.attributes = vec![kv("url.path", text("/api/products"))];
    let rs = |service: &str, spans: Vec<Span>| ResourceSpans {
        resource: resource(service),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![rs("gateway", vec![root, other]), rs("orders", vec![child])],
    }
}

fn logs_in_span() -> ExportLogsServiceRequest {
    let record = |msg: &str, severity: i32, in_span: bool| LogRecord {
        time_unix_nano: T0 + 8 * MS,
        severity_number: severity,
        body: Some(AnyValue {
            value: Some(text(msg)),
        }),
        trace_id: if in_span { vec![0x11; 16] } else { vec![] },
        span_id: if in_span { vec![2; 8] } else { vec![] },
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("orders"),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    record("reserving stock", 9, true),
                    record("Out Of Stock for sku X", 17, true),
                    record("unrelated warning", 13, false),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

impl App {
    async fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Polls `path` until `done` holds for its body (ingest is asynchronous).
    async fn eventually(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(start.elapsed() < DEADLINE, "{path}: {status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_protobuf_batch_reads_back_with_parenting_events_and_the_spans_logs() {
    let app = start(json!({})).await;
    let res = app
        .post(
            "/v1/traces",
            "application/x-protobuf",
            two_traces().encode_to_vec(),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(res.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.partial_success, None);
    let res = app
        .post(
            "/v1/logs",
            "application/x-protobuf",
            logs_in_span().encode_to_vec(),
        )
        .await;
    assert_eq!(res.status(), 200);

    let list = app
        .eventually("/api/traces", |b| {
            b["traces"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    let traces = list["traces"].as_array().unwrap();
    assert_eq!(traces[0]["trace_id"], "22".repeat(16), "newest first");
    let t = &traces[1];
    assert_eq!(t["trace_id"], "11".repeat(16));
    assert_eq!(t["root_service"], "gateway");
    assert_eq!(t["root_name"], "POST /api/orders");
    assert_eq!(t["route"], "/api/orders");
    assert_eq!(t["span_count"], 2);
    assert_eq!(t["services"], json!(["gateway", "orders"]));
    assert_eq!(t["status"], "error");
    assert_eq!(t["duration_ms"], 20.0);
    assert_eq!(t["start_unix_ms"], 1.7e12);
    assert_eq!(t["start"], "2023-11-14T22:13:20.000Z");
    assert_eq!(
        traces[0]["route"], "/api/products",
        "url.path without http.route"
    );

    // The span's logs are reachable from it: its log_count, then the logs by its ids.
    let trace = app
        .eventually(&format!("/api/traces/{}", "11".repeat(16)), |b| {
            b["spans"][1]["log_count"] == 2
        })
        .await;
    assert_eq!(trace["duration_ms"], 20.0);
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans[0]["span_id"], "01".repeat(8));
    assert_eq!(spans[0]["parent_span_id"], Value::Null);
    assert_eq!(spans[0]["kind"], "server");
    assert_eq!(spans[0]["status"], "unset");
    assert_eq!(spans[0]["log_count"], 0);
    assert_eq!(spans[0]["attributes"]["http.route"], "/api/orders");
    let child = &spans[1];
    assert_eq!(child["parent_span_id"], "01".repeat(8));
    assert_eq!(child["service"], "orders");
    assert_eq!(child["instance"], "orders-1");
    assert_eq!(child["kind"], "client");
    assert_eq!(child["offset_ms"], 5.0);
    assert_eq!(child["duration_ms"], 10.0);
    assert_eq!(child["status"], "error");
    assert_eq!(child["status_message"], "out of stock");
    assert_eq!(child["events"][0]["name"], "retry");
    assert_eq!(child["events"][0]["offset_ms"], 7.0);
    assert_eq!(child["events"][0]["attributes"]["attempt"], 2);
    let (_, logs) = app
        .get(&format!(
            "/api/logs?trace_id={}&span_id={}",
            "11".repeat(16),
            "02".repeat(8)
        ))
        .await;
    let messages: Vec<&str> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, vec!["Out Of Stock for sku X", "reserving stock"]);
    let first = &logs["logs"][0];
    assert_eq!(first["level"], "ERROR");
    assert_eq!(first["service"], "orders");
    assert_eq!(first["trace_id"], "11".repeat(16));
    assert_eq!(first["time"], "2023-11-14T22:13:20.008Z");

    // Level is a minimum, q a case-insensitive substring.
    let (_, warn) = app.get("/api/logs?level=warn").await;
    assert_eq!(warn["logs"].as_array().unwrap().len(), 2);
    let (_, q) = app.get("/api/logs?q=out%20of%20STOCK&service=orders").await;
    assert_eq!(q["logs"].as_array().unwrap().len(), 1);
    // Follow mode: after the oldest id, oldest first.
    let (_, all) = app.get("/api/logs").await;
    let oldest = all["logs"][2]["id"].as_i64().unwrap();
    let (_, follow) = app.get(&format!("/api/logs?after_id={oldest}")).await;
    let ids: Vec<i64> = follow["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![oldest + 1, oldest + 2]);

    // Trace filters through the API.
    let count = |b: &Value| b["traces"].as_array().unwrap().len();
    assert_eq!(count(&app.get("/api/traces?status=error").await.1), 1);
    assert_eq!(count(&app.get("/api/traces?service=orders").await.1), 1);
    assert_eq!(count(&app.get("/api/traces?min_duration_ms=2").await.1), 1);
    assert_eq!(
        count(&app.get("/api/traces?route=%2Fapi%2Fproducts").await.1),
        1
    );
    assert_eq!(count(&app.get("/api/traces?limit=1").await.1), 1);
    assert_eq!(
        count(&app.get("/api/traces?service=&status=&route=").await.1),
        2,
        "empty parameters filter nothing"
    );
    let (_, before) = app
        .get(&format!("/api/traces?before_unix_ms={}", 1.7e12 + 50.0))
        .await;
    assert_eq!(before["traces"][0]["trace_id"], "11".repeat(16));
}

#[tokio::test]
async fn the_specifications_json_example_and_gzip_are_received() {
    let app = start(json!({})).await;
    let res = app
        .post(
            "/v1/traces",
            "application/json",
            SPEC_TRACES.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let answer: Value = res.json().await.unwrap();
    assert!(
        answer.get("partialSuccess").is_none_or(Value::is_null),
        "{answer}"
    );
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let trace = app
        .eventually(&format!("/api/traces/{trace_id}"), |b| {
            b["spans"].is_array()
        })
        .await;
    assert_eq!(trace["spans"][0]["span_id"], "eee19b7ec3c1b174");
    assert_eq!(trace["spans"][0]["parent_span_id"], "eee19b7ec3c1b173");
    assert_eq!(trace["spans"][0]["service"], "my.service");
    assert_eq!(trace["duration_ms"], 1000.0);

    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&logs_in_span().encode_to_vec()).unwrap();
    let res = app
        .http
        .post(format!("{}/v1/logs", app.base))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.eventually("/api/logs", |b| {
        b["logs"].as_array().is_some_and(|l| l.len() == 3)
    })
    .await;

    // A span with a bad id is refused alone, as a partial success.
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"00000000000000000000000000000000","spanId":"0102030405060708","name":"zero"},
        {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"fine",
         "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000001000000"}]}]}]}"#;
    let res = app
        .post("/v1/traces", "application/json", json.as_bytes().to_vec())
        .await;
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1", "{answer}");
}

#[tokio::test]
async fn bad_requests_are_refused_with_problems_naming_what_is_wrong() {
    let app = start(json!({"body_limit": "4KiB"})).await;
    let res = app.post("/v1/traces", "text/plain", b"x".to_vec()).await;
    assert_eq!(res.status(), 415);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let res = app
        .post(
            "/v1/traces",
            "application/x-protobuf",
            b"\xff\xff\xff garbage".to_vec(),
        )
        .await;
    assert_eq!(res.status(), 400);
    let res = app
        .post("/v1/logs", "application/json", b"{not json".to_vec())
        .await;
    assert_eq!(res.status(), 400);
    let res = app
        .post("/v1/traces", "application/x-protobuf", vec![0; 8 * 1024])
        .await;
    assert_eq!(res.status(), 413);

    for (query, field) in [
        ("/api/traces?status=broken", "status"),
        ("/api/traces?min_duration_ms=-1", "min_duration_ms"),
        ("/api/traces?limit=1001", "limit"),
        ("/api/traces?limit=0", "limit"),
        ("/api/traces?before_unix_ms=soon", "before_unix_ms"),
        ("/api/traces?colour=red", "colour"),
        ("/api/logs?level=loud", "level"),
        ("/api/logs?trace_id=ABC", "trace_id"),
        ("/api/logs?span_id=0102", "span_id"),
        ("/api/logs?after_id=-3", "after_id"),
        ("/api/logs?limit=5&limit=6", "limit"),
        ("/api/sagas?limit=100000", "limit"),
        ("/api/traces/5B8EFFF798038103D269B633813FC60C", "trace_id"),
    ] {
        let (status, body) = app.get(query).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
    let (status, _) = app.get(&format!("/api/traces/{}", "ab".repeat(16))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_full_ingest_queue_is_refused_with_503_and_retry_after() {
    let app = start(json!({"queue_capacity": 3})).await;
    // Another connection holds the database's write lock: the writer waits, so what it
    // took stays queued.
    let url = format!("sqlite://{}", app.db.display());
    let mut blocker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let body = two_traces().encode_to_vec();
    let first = app
        .post("/v1/traces", "application/x-protobuf", body.clone())
        .await;
    assert_eq!(first.status(), 200);
    let second = app
        .post("/v1/traces", "application/x-protobuf", body.clone())
        .await;
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    // Once written, there is room again.
    app.eventually("/api/traces", |b| {
        b["traces"].as_array().is_some_and(|t| t.len() == 2)
    })
    .await;
    let third = app.post("/v1/traces", "application/x-protobuf", body).await;
    assert_eq!(third.status(), 200);
}

#[tokio::test]
async fn live_events_follow_ingest() {
    let app = start(json!({})).await;
    let mut live = app
        .http
        .get(format!("{}/api/live", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let res = app
        .post(
            "/v1/traces",
            "application/x-protobuf",
            two_traces().encode_to_vec(),
        )
        .await;
    assert_eq!(res.status(), 200);
    let mut seen = String::new();
    let read = async {
        while !seen.contains("\n\n") {
            let chunk = live.chunk().await.unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(DEADLINE, read).await.unwrap();
    assert!(seen.contains("event: ingest"), "{seen}");
    assert!(seen.contains(r#"data: {"logs":0,"spans":3}"#), "{seen}");
}

#[tokio::test]
async fn the_pages_and_assets_are_served() {
    let app = start(json!({})).await;
    let res = app
        .http
        .get(format!("{}/traces/{}?span=01", app.base, "11".repeat(16)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let res = app
        .http
        .get(format!("{}/assets/app.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let (status, services) = app.get("/api/services").await;
    assert_eq!(status, 200);
    assert_eq!(
        services["services"],
        json!([]),
        "static discovery: no directory"
    );
}
