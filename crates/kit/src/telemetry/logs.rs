//! JSON log lines: one object a line with `time`, `level`, `service`, `instance`,
//! `message`, `trace_id`, `span_id`, `target`, the event's `fields` and the fields of
//! the spans it happened in (`span`: route, request id…).

use std::io::Write;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// A `tracing` layer that writes each event as one JSON object per line.
pub struct JsonLayer<W> {
    service: String,
    instance: String,
    sink: W,
}

impl<W> JsonLayer<W> {
    /// A layer writing lines for `service`/`instance` to `sink`.
    pub fn new(service: &str, instance: &str, sink: W) -> Self {
        Self {
            service: service.to_owned(),
            instance: instance.to_owned(),
            sink,
        }
    }
}

/// The fields recorded on a span, kept so events inside it can repeat them.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.0.insert(field.name().to_owned(), Value::String(text));
    }
}

impl<S, W> tracing_subscriber::Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(f) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut f.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "time".into(),
            Value::String(
                humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            ),
        );
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("service".into(), Value::String(self.service.clone()));
        line.insert("instance".into(), Value::String(self.instance.clone()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));

        let mut span_fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            let mut innermost = None;
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    span_fields.extend(f.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                innermost = Some(span.id());
            }
            if let Some(id) = innermost {
                let otel = tracing::dispatcher::get_default(|d| {
                    tracing_opentelemetry::get_otel_context(&id, d)
                });
                if let Some(cx) = otel {
                    let sc = cx.span().span_context().clone();
                    if sc.is_valid() {
                        line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
                        line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
                    }
                }
            }
        }
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let message = fields
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        line.insert("message".into(), message);
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        if !span_fields.is_empty() {
            line.insert("span".into(), Value::Object(span_fields));
        }
        let mut buf = serde_json::to_vec(&line).unwrap_or_default();
        buf.push(b'\n');
        let _ = self.sink.make_writer().write_all(&buf);
    }
}
