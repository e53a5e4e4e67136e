//! The CloudEvents 1.0 JSON envelope every event travels in, with the `traceparent`
//! extension that carries the producer's trace to its consumers.

use serde::{Deserialize, Serialize};

/// One event: a CloudEvents 1.0 structured-mode JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always `"1.0"`.
    pub specversion: String,
    /// Unique per event; the bus deduplicates publishes by it and inboxes record it.
    pub id: String,
    /// The producing service (`orders`).
    pub source: String,
    /// What happened; by convention the bus subject (`orders.created`).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (RFC 3339).
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The payload.
    pub data: serde_json::Value,
    /// W3C trace context of the producer (extension attribute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Event {
    /// A new event of `kind` from `source` with a fresh time-ordered id, carrying the
    /// current span's trace context.
    pub fn new(source: &str, kind: &str, data: serde_json::Value) -> Self {
        Self {
            specversion: "1.0".to_owned(),
            id: uuid::Uuid::now_v7().to_string(),
            source: source.to_owned(),
            kind: kind.to_owned(),
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            datacontenttype: "application/json".to_owned(),
            data,
            traceparent: current_traceparent(),
        }
    }

    /// A consumer span for handling this event, a child of the producer's trace
    /// (`otel.kind = consumer`, `messaging.destination.name`, `messaging.message.id`).
    /// Every handler of a delivery runs inside one, so its work, its database calls and
    /// the events it writes join the trace of the request that caused the event.
    pub fn consumer_span(&self, subject: &str) -> tracing::Span {
        let span = tracing::info_span!(
            "event.consume",
            otel.name = %format_args!("process {subject}"),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.operation.type = "process",
            messaging.destination.name = %subject,
            messaging.message.id = %self.id,
            error.type = tracing::field::Empty,
        );
        kit::telemetry::trace::set_parent_from(&span, self.traceparent.as_deref());
        span
    }

    /// A producer span for publishing this event on `subject` of a bus of `system`
    /// (`otel.kind = producer`, `messaging.system`, `messaging.destination.name`,
    /// `messaging.message.id`), in the trace the event carries: the outbox relay
    /// publishes long after the request, yet the publish is part of its trace.
    pub fn producer_span(&self, system: &str, subject: &str) -> tracing::Span {
        let span = tracing::info_span!(
            "event.publish",
            otel.name = %format_args!("send {subject}"),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = system,
            messaging.operation.type = "send",
            messaging.destination.name = %subject,
            messaging.message.id = %self.id,
            error.type = tracing::field::Empty,
        );
        kit::telemetry::trace::set_parent_from(&span, self.traceparent.as_deref());
        span
    }
}

/// The current span's `traceparent`, if it has a valid trace context.
pub fn current_traceparent() -> Option<String> {
    kit::telemetry::trace::traceparent(&tracing::Span::current())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    #[test]
    fn serializes_as_cloudevents_json() {
        let e = Event::new(
            "orders",
            "orders.created",
            serde_json::json!({"orderId": "o1"}),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "orders.created");
        assert_eq!(v["source"], "orders");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"]["orderId"], "o1");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn trace_continues_across_the_bus() {
        kit::telemetry::init_for_tests();
        let producer = tracing::info_span!("produce");
        let event =
            producer.in_scope(|| Event::new("orders", "orders.created", serde_json::json!({})));
        let tp = event
            .traceparent
            .clone()
            .expect("a traceparent from the current span");
        let producer_trace = producer.context().span().span_context().trace_id();
        assert!(tp.contains(&producer_trace.to_string()), "{tp}");

        let consumer = event.consumer_span("orders.created");
        assert_eq!(
            consumer.context().span().span_context().trace_id(),
            producer_trace
        );
        let publish = event.producer_span("nats", "orders.created");
        assert_eq!(
            publish.context().span().span_context().trace_id(),
            producer_trace
        );
    }
}
