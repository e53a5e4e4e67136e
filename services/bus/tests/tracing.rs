//! A bus hop joins the producer's trace end to end: an event written to the outbox
//! inside a request span is published by the relay (a producer span in that trace) to
//! a real `flotilla-bus`, and the consumer's span is in the same trace again.

mod support;

use std::time::Duration;

use kit::store::Migration;
use kit_events::conformance::Harness;
use kit_events::outbox::{self, Relay, RelayConfig};
use kit_events::{Event, Group, StartAt};
use opentelemetry::trace::{SpanKind, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::BusProcess;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

static SCHEMA: &[Migration] = &[Migration {
    version: 1,
    description: "outbox and inbox",
    sql: outbox::SQLITE_SCHEMA,
}];

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test]
async fn a_consumer_joins_the_trace_of_the_request_that_wrote_the_event() {
    kit::security::mtls::install_crypto_provider();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // A current-thread runtime: everything below runs on this thread, in this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let bus = BusProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pool = kit::store::sqlite::open(
        &format!("sqlite://{}", dir.path().join("producer.db").display()),
        "test",
        SCHEMA,
    )
    .await
    .unwrap();
    let group = Group::new("trace-test", &["orders.created"]).start_at(StartAt::Beginning);
    let mut sub = bus.bus().subscribe(&group).await.unwrap();

    // The request: writes its event to the outbox and commits.
    let request = tracing::info_span!("request", otel.kind = "server");
    let request_trace = request.context().span().span_context().trace_id();
    async {
        let event = Event::new("orders", "orders.created", serde_json::json!({ "n": 1 }));
        let mut tx = pool.begin().await.unwrap();
        outbox::enqueue(&mut *tx, "orders.created", &event)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    .instrument(request.clone())
    .await;
    drop(request);

    // The relay, later and outside any request, publishes it.
    let relay = Relay::new(pool.clone(), bus.bus(), RelayConfig::default());
    assert_eq!(relay.relay_once().await.unwrap().sent, 1);

    let delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery")
        .unwrap();
    let consumer = delivery.event.consumer_span(&delivery.subject);
    async { delivery.ack().await.unwrap() }
        .instrument(consumer.clone())
        .await;
    drop(consumer);
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let of_kind = |kind: SpanKind| -> Vec<&SpanData> {
        spans.iter().filter(|s| s.span_kind == kind).collect()
    };
    let names: Vec<_> = spans
        .iter()
        .map(|s| (s.name.to_string(), s.span_kind.clone()))
        .collect();
    let producer = of_kind(SpanKind::Producer);
    assert_eq!(producer.len(), 1, "one publish: {names:?}");
    let producer = producer[0];
    assert_eq!(producer.name, "send orders.created");
    assert_eq!(
        producer.span_context.trace_id(),
        request_trace,
        "publish in the request's trace"
    );
    assert_eq!(
        attr(producer, "messaging.system").as_deref(),
        Some("flotilla.bus")
    );
    assert_eq!(
        attr(producer, "messaging.destination.name").as_deref(),
        Some("orders.created")
    );
    assert_eq!(
        attr(producer, "messaging.message.id").as_deref(),
        Some(delivery.event.id.as_str())
    );
    let consumer = of_kind(SpanKind::Consumer);
    assert_eq!(consumer.len(), 1);
    assert_eq!(
        consumer[0].span_context.trace_id(),
        request_trace,
        "the consumer joins the producer's trace"
    );
    // The outbox write was a database span of the request.
    let insert = spans
        .iter()
        .find(|s| s.name == "INSERT outbox")
        .expect("a database span for the outbox write");
    assert_eq!(insert.span_kind, SpanKind::Client);
    assert_eq!(insert.span_context.trace_id(), request_trace);
    assert_eq!(attr(insert, "db.system.name").as_deref(), Some("sqlite"));
    assert_eq!(attr(insert, "db.operation.name").as_deref(), Some("INSERT"));
    assert_eq!(
        attr(insert, "db.collection.name").as_deref(),
        Some("outbox")
    );
    // Marking the row sent happened inside the publish.
    let mark = spans
        .iter()
        .find(|s| s.name == "UPDATE outbox")
        .expect("a database span for marking the row sent");
    assert_eq!(mark.parent_span_id, producer.span_context.span_id());
}
