//! The OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/logs`, protobuf
//! (`application/x-protobuf`) or the OTLP JSON encoding (`application/json`: hex ids,
//! enums as numbers, 64-bit integers as strings or numbers), optionally gzipped, answered
//! in the request's encoding with a partial success when records were refused.
//!
//! Records are turned into rows ([`SpanRow`], [`LogRow`]) here and handed to the
//! ingest queue; a full queue is answered `503` with `Retry-After`, which OTLP exporters
//! retry.

use std::io::Read;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kit::Problem;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{Map, Value};

use crate::ingest::{Batch, Ingest, Refused};
use crate::now_ns;

/// `Content-Type` of OTLP protobuf.
pub const PROTOBUF: &str = "application/x-protobuf";
/// `Content-Type` of OTLP JSON.
pub const JSON: &str = "application/json";

/// How long a refused exporter is asked to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The receiver's routes over `ingest`; bodies (compressed, and once decompressed) over
/// `body_limit` bytes are answered `413`.
pub fn router(ingest: Ingest, body_limit: usize) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(Receiver { ingest, body_limit })
}

#[derive(Clone)]
struct Receiver {
    ingest: Ingest,
    body_limit: usize,
}

/// How a request is encoded (and so its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Binary protobuf.
    Protobuf,
    /// The OTLP JSON mapping of protobuf.
    Json,
}

impl Encoding {
    /// From the `Content-Type` (parameters such as `charset` ignored); `415` otherwise.
    pub fn of(headers: &HeaderMap) -> Result<Self, Problem> {
        let value = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let essence = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Self::Protobuf),
            "application/json" => Ok(Self::Json),
            _ => Err(Problem::unsupported_media_type(format!(
                "expected content-type: {PROTOBUF} or {JSON}, got {value:?}"
            ))),
        }
    }

    fn decode<M: Message + Default + serde::de::DeserializeOwned>(
        self,
        body: &[u8],
    ) -> Result<M, Problem> {
        match self {
            Self::Protobuf => M::decode(body)
                .map_err(|e| Problem::bad_request(format!("the body is not OTLP protobuf: {e}"))),
            Self::Json => serde_json::from_slice(body)
                .map_err(|e| Problem::bad_request(format!("the body is not OTLP JSON: {e}"))),
        }
    }
}

fn protobuf_answer<M: Message>(message: &M) -> Response {
    answer(PROTOBUF, message.encode_to_vec())
}

fn json_answer(value: Value) -> Response {
    answer(JSON, value.to_string().into_bytes())
}

fn answer(content_type: &'static str, body: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// The body, gunzipped when `Content-Encoding: gzip`, never over `limit` bytes.
pub fn body(headers: &HeaderMap, raw: Bytes, limit: usize) -> Result<Bytes, Problem> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(raw),
        Some("gzip" | "x-gzip") => {
            let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Problem::bad_request(format!("the body is not valid gzip: {e}")))?;
            if out.len() > limit {
                return Err(Problem::payload_too_large(format!(
                    "the decompressed body exceeds {limit} bytes"
                )));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(Problem::unsupported_media_type(format!(
            "content-encoding {other:?} is not supported (gzip or none)"
        ))),
    }
}

fn raw_body(raw: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    raw.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::payload_too_large("the body exceeds the receiver's limit")
        } else {
            Problem::bad_request(e.body_text())
        }
    })
}

fn refused(e: Refused) -> Problem {
    match e {
        Refused::Full => Problem::unavailable("the ingest queue is full; retry later", RETRY_AFTER),
        Refused::Stopped => Problem::unavailable("the dashboard is stopping", RETRY_AFTER),
    }
}

async fn traces(
    State(rx): State<Receiver>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let encoding = Encoding::of(&headers)?;
    let body = body(&headers, raw_body(raw)?, rx.body_limit)?;
    let request: ExportTraceServiceRequest = encoding.decode(&body)?;
    let (spans, rejected) = span_rows(&request);
    let errors = rejected.first().cloned();
    rx.ingest
        .submit(Batch {
            spans,
            logs: Vec::new(),
        })
        .map_err(refused)?;
    let partial_success = errors.map(|error_message| ExportTracePartialSuccess {
        rejected_spans: rejected.len() as i64,
        error_message,
    });
    Ok(match encoding {
        Encoding::Protobuf => protobuf_answer(&ExportTraceServiceResponse { partial_success }),
        // The OTLP JSON mapping writes 64-bit integers as strings and leaves unset fields
        // out, which the messages' own serde does not.
        Encoding::Json => json_answer(match partial_success {
            Some(p) => serde_json::json!({"partialSuccess": {
                "rejectedSpans": p.rejected_spans.to_string(),
                "errorMessage": p.error_message,
            }}),
            None => serde_json::json!({}),
        }),
    })
}

async fn logs(
    State(rx): State<Receiver>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let encoding = Encoding::of(&headers)?;
    let body = body(&headers, raw_body(raw)?, rx.body_limit)?;
    let request: ExportLogsServiceRequest = encoding.decode(&body)?;
    let logs = log_rows(&request, now_ns());
    rx.ingest
        .submit(Batch {
            spans: Vec::new(),
            logs,
        })
        .map_err(refused)?;
    Ok(match encoding {
        Encoding::Protobuf => protobuf_answer(&ExportLogsServiceResponse {
            partial_success: None::<ExportLogsPartialSuccess>,
        }),
        Encoding::Json => json_answer(serde_json::json!({})),
    })
}

/// A span as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRow {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id; `None` for a root.
    pub parent_span_id: Option<String>,
    /// `service.name` of its resource.
    pub service: String,
    /// `service.instance.id` of its resource.
    pub instance: Option<String>,
    /// The span name.
    pub name: String,
    /// OTLP `SpanKind` (0 unspecified, 1 internal, 2 server, 3 client, 4 producer,
    /// 5 consumer).
    pub kind: i32,
    /// Start, Unix ns.
    pub start_ns: i64,
    /// End, Unix ns (never before the start).
    pub end_ns: i64,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status: i32,
    /// The status message, if any.
    pub status_message: Option<String>,
    /// Attributes as a JSON object.
    pub attributes: Value,
    /// Events: `[{"name", "time_ns", "attributes"}]`.
    pub events: Value,
}

impl SpanRow {
    /// The route the span served: its `http.route`, else its `url.path`.
    pub fn route(&self) -> Option<&str> {
        ["http.route", "url.path"]
            .iter()
            .find_map(|k| self.attributes.get(*k).and_then(Value::as_str))
    }
}

/// A log record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    /// When it happened (or was observed, or received), Unix ns.
    pub time_ns: i64,
    /// `service.name` of its resource.
    pub service: String,
    /// `service.instance.id` of its resource.
    pub instance: Option<String>,
    /// OTLP severity number (1-24; 0 unspecified).
    pub severity: i32,
    /// The severity text as sent, if any.
    pub severity_text: Option<String>,
    /// The body as text (JSON for structured bodies).
    pub message: String,
    /// 32 hex digits, when the record was emitted in a span.
    pub trace_id: Option<String>,
    /// 16 hex digits, when the record was emitted in a span.
    pub span_id: Option<String>,
    /// Attributes as a JSON object.
    pub attributes: Value,
}

/// `service.name` and `service.instance.id` of a resource.
fn identity(resource: Option<&Resource>) -> (String, Option<String>) {
    let attrs = resource
        .map(|r| r.attributes.as_slice())
        .unwrap_or_default();
    let get = |key: &str| {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .map(text_of)
            .filter(|s| !s.is_empty())
    };
    (
        get("service.name").unwrap_or_else(|| "unknown_service".to_owned()),
        get("service.instance.id"),
    )
}

/// A valid id (the right length, not all zero) as lowercase hex.
fn hex_id(bytes: &[u8], len: usize) -> Option<String> {
    (bytes.len() == len && bytes.iter().any(|b| *b != 0)).then(|| {
        bytes
            .iter()
            .fold(String::with_capacity(len * 2), |mut s, b| {
                use std::fmt::Write;
                let _ = write!(s, "{b:02x}");
                s
            })
    })
}

fn nanos(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The rows of a trace export, and why each refused span was refused.
pub fn span_rows(request: &ExportTraceServiceRequest) -> (Vec<SpanRow>, Vec<String>) {
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
    for rs in &request.resource_spans {
        let (service, instance) = identity(rs.resource.as_ref());
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let Some(trace_id) = hex_id(&span.trace_id, 16) else {
                    rejected.push(format!("span {:?}: invalid trace id", span.name));
                    continue;
                };
                let Some(span_id) = hex_id(&span.span_id, 8) else {
                    rejected.push(format!("span {:?}: invalid span id", span.name));
                    continue;
                };
                let start_ns = nanos(span.start_time_unix_nano);
                let status = span.status.as_ref();
                rows.push(SpanRow {
                    trace_id,
                    span_id,
                    parent_span_id: hex_id(&span.parent_span_id, 8),
                    service: service.clone(),
                    instance: instance.clone(),
                    name: span.name.clone(),
                    kind: span.kind,
                    start_ns,
                    end_ns: nanos(span.end_time_unix_nano).max(start_ns),
                    status: status.map_or(0, |s| s.code),
                    status_message: status.map(|s| s.message.clone()).filter(|m| !m.is_empty()),
                    attributes: attributes(&span.attributes),
                    events: Value::Array(
                        span.events
                            .iter()
                            .map(|e| {
                                serde_json::json!({
                                    "name": e.name,
                                    "time_ns": nanos(e.time_unix_nano),
                                    "attributes": attributes(&e.attributes),
                                })
                            })
                            .collect(),
                    ),
                });
            }
        }
    }
    (rows, rejected)
}

/// The rows of a logs export; records without a time get `now_ns`.
pub fn log_rows(request: &ExportLogsServiceRequest, now_ns: i64) -> Vec<LogRow> {
    let mut rows = Vec::new();
    for rl in &request.resource_logs {
        let (service, instance) = identity(rl.resource.as_ref());
        for sl in &rl.scope_logs {
            for record in &sl.log_records {
                let time = [record.time_unix_nano, record.observed_time_unix_nano]
                    .into_iter()
                    .find(|t| *t > 0)
                    .map_or(now_ns, nanos);
                rows.push(LogRow {
                    time_ns: time,
                    service: service.clone(),
                    instance: instance.clone(),
                    severity: severity(record.severity_number, &record.severity_text),
                    severity_text: Some(record.severity_text.clone()).filter(|t| !t.is_empty()),
                    message: record.body.as_ref().map(text_of).unwrap_or_default(),
                    trace_id: hex_id(&record.trace_id, 16),
                    span_id: hex_id(&record.span_id, 8),
                    attributes: attributes(&record.attributes),
                });
            }
        }
    }
    rows
}

/// The severity number, from the text when the number is unspecified (`WARN`,
/// `Information`…); a record that says neither counts as `INFO` (9).
fn severity(number: i32, text: &str) -> i32 {
    if number > 0 {
        return number;
    }
    let text = text.to_ascii_lowercase();
    [
        ("trace", 1),
        ("debug", 5),
        ("info", 9),
        ("warn", 13),
        ("err", 17),
        ("fatal", 21),
        ("crit", 21),
    ]
    .iter()
    .find(|(prefix, _)| text.starts_with(prefix))
    .map_or(9, |(_, n)| *n)
}

/// Key-values as a JSON object (a repeated key keeps its last value).
pub fn attributes(kvs: &[KeyValue]) -> Value {
    let mut map = Map::new();
    for kv in kvs {
        map.insert(
            kv.key.clone(),
            kv.value.as_ref().map_or(Value::Null, json_of),
        );
    }
    Value::Object(map)
}

/// An OTLP value as JSON: strings, booleans, numbers, arrays and maps as themselves,
/// bytes as lowercase hex.
pub fn json_of(value: &AnyValue) -> Value {
    use any_value::Value as V;
    match &value.value {
        None => Value::Null,
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => Value::from(*i),
        Some(V::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(d.to_string())),
        Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(json_of).collect()),
        Some(V::KvlistValue(kv)) => attributes(&kv.values),
        Some(V::BytesValue(b)) => {
            Value::String(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        }
        // An index into a dictionary only profiles carry: nothing to resolve it with.
        Some(V::StringValueStrindex(i)) => Value::from(*i),
    }
}

/// An OTLP value as text: a string as itself, anything else as JSON.
fn text_of(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        None => String::new(),
        Some(_) => json_of(value).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            Encoding::of(&h)
        };
        assert_eq!(with("application/x-protobuf").unwrap(), Encoding::Protobuf);
        assert_eq!(
            with("application/json; charset=utf-8").unwrap(),
            Encoding::Json
        );
        assert_eq!(
            with("text/plain").unwrap_err().status_code(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            Encoding::of(&HeaderMap::new()).unwrap_err().status_code(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn gzip_is_inflated_within_the_limit() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[7u8; 10_000]).unwrap();
        let packed = Bytes::from(gz.finish().unwrap());
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(body(&h, packed.clone(), 10_000).unwrap().len(), 10_000);
        let e = body(&h, packed, 9_999).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
        let e = body(&h, Bytes::from_static(b"not gzip"), 100).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
        h.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        let e = body(&h, Bytes::from_static(b"x"), 100).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn ids_must_have_their_length_and_not_be_zero() {
        assert_eq!(hex_id(&[0xab; 8], 8).as_deref(), Some("abababababababab"));
        assert_eq!(hex_id(&[0; 8], 8), None);
        assert_eq!(hex_id(&[1; 7], 8), None);
        assert_eq!(hex_id(&[], 16), None);
    }

    /// The OTLP specification's example export (ids in upper case, times as numbers).
    const SPEC_TRACES: &str = include_str!("../tests/data/trace.json");
    /// The OTLP specification's example logs.
    const SPEC_LOGS: &str = include_str!("../tests/data/logs.json");

    #[test]
    fn the_specifications_json_examples_decode() {
        let request: ExportTraceServiceRequest =
            Encoding::Json.decode(SPEC_TRACES.as_bytes()).unwrap();
        let (spans, rejected) = span_rows(&request);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.trace_id, "5b8efff798038103d269b633813fc60c");
        assert_eq!(s.span_id, "eee19b7ec3c1b174");
        assert_eq!(s.parent_span_id.as_deref(), Some("eee19b7ec3c1b173"));
        assert_eq!(s.service, "my.service");
        assert_eq!(s.kind, 2);
        assert_eq!(s.start_ns, 1_544_712_660_000_000_000);
        assert_eq!(s.end_ns, 1_544_712_661_000_000_000);
        assert_eq!(s.attributes["my.span.attr"], "some value");

        let request: ExportLogsServiceRequest =
            Encoding::Json.decode(SPEC_LOGS.as_bytes()).unwrap();
        let logs = log_rows(&request, 1);
        assert_eq!(logs.len(), 1);
        let l = &logs[0];
        assert_eq!(l.message, "Example log record");
        assert_eq!(l.severity, 9, "from the text Information");
        assert_eq!(l.time_ns, 1_544_712_660_300_000_000);
        assert_eq!(
            l.trace_id.as_deref(),
            Some("5b8efff798038103d269b633813fc60c")
        );
        assert_eq!(l.span_id.as_deref(), Some("eee19b7ec3c1b174"));
        assert_eq!(l.attributes["int.attribute"], 10);
        assert_eq!(l.attributes["boolean.attribute"], true);
        assert_eq!(l.attributes["array.attribute"][1], "values");
        assert_eq!(l.attributes["map.attribute"]["some.map.key"], "some value");
    }

    #[test]
    fn int64s_may_be_strings_in_json() {
        let json = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{
            "timeUnixNano":"1700000000000000001","severityNumber":13,
            "body":{"stringValue":"slow"},
            "attributes":[{"key":"n","value":{"intValue":"9007199254740993"}}]}]}]}]}"#;
        let request: ExportLogsServiceRequest = Encoding::Json.decode(json.as_bytes()).unwrap();
        let logs = log_rows(&request, 1);
        assert_eq!(logs[0].time_ns, 1_700_000_000_000_000_001);
        assert_eq!(logs[0].severity, 13);
        assert_eq!(logs[0].service, "unknown_service");
        assert_eq!(logs[0].attributes["n"], 9_007_199_254_740_993_i64);
    }

    #[test]
    fn invalid_ids_are_refused_one_by_one() {
        let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"traceId":"","spanId":"eee19b7ec3c1b174","name":"a"},
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"b"}]}]}]}"#;
        let request: ExportTraceServiceRequest = Encoding::Json.decode(json.as_bytes()).unwrap();
        let (rows, rejected) = span_rows(&request);
        assert_eq!(rows.len(), 1);
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].contains("\"a\""), "{rejected:?}");
    }
}
