//! Ingest throughput of the dashboard over OTLP/HTTP protobuf: a real dashboard (its
//! HTTP stack, queue, writer and SQLite file) in this process, `SENDERS` concurrent
//! exporters each posting `BATCHES` batches of 512 spans (traces of 8 spans with the
//! attributes a kit server span carries), retrying `503`s after their `Retry-After`
//! as OTLP exporters do. Prints spans/s accepted (until the last `200`) and written
//! (until every span is in the database).
//!
//!   cargo bench -p flotilla-dashboard --bench ingest
//!
//! Environment: `SENDERS` (default 4), `BATCHES` (per sender, default 100).

use std::time::{Duration, Instant};

use kit::config::Config;
use kit::service::Context;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sqlx::Connection;

const SPANS_PER_BATCH: usize = 512;
const SPANS_PER_TRACE: usize = 8;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// Batch `n` of sender `sender`: 64 traces of 8 spans, ids unique across the run.
fn batch(sender: usize, n: usize) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans = (0..SPANS_PER_BATCH)
        .map(|i| {
            let trace = ((sender as u128) << 96)
                | ((n as u128) << 32)
                | ((i / SPANS_PER_TRACE) as u128 + 1);
            let span = (i % SPANS_PER_TRACE) as u64 + 1;
            let start = now + span * 1_000_000;
            Span {
                trace_id: trace.to_be_bytes().to_vec(),
                span_id: span.to_be_bytes().to_vec(),
                parent_span_id: if span == 1 {
                    Vec::new()
                } else {
                    1u64.to_be_bytes().to_vec()
                },
                name: "POST /api/orders".to_owned(),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 2_500_000,
                attributes: vec![
                    kv("http.request.method", "POST"),
                    kv("http.route", "/api/orders"),
                    kv("url.path", "/api/orders"),
                    kv("request_id", "0190a0b0-0000-7000-8000-000000000001"),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "orders"),
                    kv("service.instance.id", &format!("orders-{sender}")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::main]
async fn main() {
    let senders = env("SENDERS", 4);
    let batches = env("BATCHES", 100);
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", "static://")
        .merged(
            "dashboard",
            serde_json::json!({"listen": "127.0.0.1:0", "retention_size": "4GiB"}),
        );
    let service = dashboard::build(Context::new("dashboard", config).unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/v1/traces", service.public_addr());
    let _running = service.spawn();
    let bodies: Vec<Vec<Vec<u8>>> = (0..senders)
        .map(|s| (0..batches).map(|n| batch(s, n)).collect())
        .collect();
    let http = reqwest::Client::new();

    let start = Instant::now();
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|mine| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut refused = 0u64;
                for body in mine {
                    loop {
                        let res = http
                            .post(&url)
                            .header("content-type", "application/x-protobuf")
                            .body(body.clone())
                            .send()
                            .await
                            .unwrap();
                        match res.status().as_u16() {
                            200 => break,
                            503 => {
                                refused += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            other => panic!("the receiver answered {other}"),
                        }
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    let accepted = start.elapsed();

    let total = (senders * batches * SPANS_PER_BATCH) as i64;
    let db = format!(
        "sqlite://{}",
        dir.path().join("dashboard").join("dashboard.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM spans")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if n >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = start.elapsed();
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "dashboard ingest: {total} spans in {senders} senders x {batches} batches of {SPANS_PER_BATCH}: \
         accepted {:.0} spans/s ({:.2}s), written {:.0} spans/s ({:.2}s), {refused} batches refused (503) and retried",
        rate(accepted),
        accepted.as_secs_f64(),
        rate(written),
        written.as_secs_f64(),
    );
}
