//! OTLP log export: every log event the filter lets through becomes an OpenTelemetry
//! log record (severity, body, the event's fields as attributes, the trace and span id
//! of the span it was logged in, the `service.name`/`service.instance.id` resource),
//! posted as OTLP/HTTP protobuf to `<endpoint>/v1/logs`.
//!
//! Export never holds up the code that logs: records go into a bounded queue that a
//! background thread drains in batches. When the collector is down the queue fills and
//! further records are dropped (the SDK counts them), and every batch the collector
//! refused or never got counts in `otlp_export_failures_total{signal="logs"}` and
//! `otlp_log_records_dropped_total`. Nothing about a failed export is logged: the
//! exporter's own work runs with telemetry suppressed, and the client libraries it uses
//! are filtered out of the export (see [`filter`]), so export cannot feed itself.

use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder, BatchLogProcessor, LogBatch, LogExporter, SdkLogger, SdkLoggerProvider,
};
use tracing_subscriber::EnvFilter;

use super::TelemetryConfig;

/// Records waiting for export at most; past this, new records are dropped.
pub const MAX_QUEUED_LOG_RECORDS: usize = 4096;

/// The logger provider exporting to `endpoint` (`None`, with a message on stderr, when
/// the exporter cannot be built).
pub(super) fn logger_provider(cfg: &TelemetryConfig, endpoint: &str) -> Option<SdkLoggerProvider> {
    use opentelemetry_otlp::WithExportConfig;

    let url = super::trace::signal_url(endpoint, "logs");
    let exporter = match opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("FLOTILLA_OTLP_ENDPOINT={url}: cannot export logs: {e}");
            return None;
        }
    };
    Some(provider_with(cfg, Counted(exporter)))
}

/// A logger provider for `cfg`'s resource with a bounded batch processor over
/// `exporter`.
pub fn provider_with<E: LogExporter + 'static>(
    cfg: &TelemetryConfig,
    exporter: E,
) -> SdkLoggerProvider {
    let processor = BatchLogProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUED_LOG_RECORDS)
                .build(),
        )
        .build();
    SdkLoggerProvider::builder()
        .with_resource(super::trace::resource(cfg))
        .with_log_processor(processor)
        .build()
}

/// The `tracing` layer turning events into log records of `provider`.
pub fn layer(
    provider: &SdkLoggerProvider,
) -> OpenTelemetryTracingBridge<SdkLoggerProvider, SdkLogger> {
    OpenTelemetryTracingBridge::new(provider)
}

/// The filter of exported records: the log filter (`FLOTILLA_LOG` syntax), with the
/// HTTP client and OpenTelemetry crates the exporter itself runs on turned off.
pub fn filter(log_filter: &str) -> EnvFilter {
    const QUIET: &str = "opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,\
                         opentelemetry_http=off,reqwest=off,hyper=off,hyper_util=off,h2=off";
    let directives = if log_filter.trim().is_empty() {
        format!("info,{QUIET}")
    } else {
        format!("{log_filter},{QUIET}")
    };
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET}")))
}

/// An exporter that counts what it failed to deliver.
#[derive(Debug)]
pub struct Counted<E>(pub E);

impl<E: LogExporter> LogExporter for Counted<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let records = batch.iter().count() as u64;
        let result = self.0.export(batch).await;
        if result.is_err() {
            metrics::counter!("otlp_export_failures_total", "signal" => "logs").increment(1);
            metrics::counter!("otlp_log_records_dropped_total").increment(records);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.0.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Duration;

    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn cfg(endpoint: &str) -> TelemetryConfig {
        TelemetryConfig {
            service: "logtest".to_owned(),
            instance: "logtest-1".to_owned(),
            filter: "info".to_owned(),
            otlp_endpoint: Some(endpoint.to_owned()),
            sampling: super::super::trace::Sampling::AlwaysOn,
        }
    }

    /// One OTLP/HTTP request as a collector sees it: path, content type, body.
    struct Posted {
        path: String,
        content_type: String,
        body: Vec<u8>,
    }

    /// A collector on a free port that answers every POST with 200 and hands over what
    /// it got.
    fn collector() -> (String, mpsc::Receiver<Posted>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (mut length, mut content_type) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap_or((&h, ""));
                    match k.trim().to_ascii_lowercase().as_str() {
                        "content-length" => length = v.trim().parse().unwrap_or(0),
                        "content-type" => content_type = v.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                let _ = tx.send(Posted {
                    path,
                    content_type,
                    body,
                });
            }
        });
        (url, rx)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn log_records_reach_the_collector_with_their_trace_and_span() {
        crate::security::mtls::install_crypto_provider();
        let (url, posted) = collector();
        let provider = logger_provider(&cfg(&url), &url).expect("an exporter");
        let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .build()
            .tracer("t");
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .with(layer(&provider).with_filter(filter("info")));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("work");
            let _entered = span.enter();
            tracing::warn!(order_id = "o-17", "stock is low");
            tracing::debug!("filtered out");
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            (sc.trace_id(), sc.span_id())
        });
        provider.force_flush().expect("the collector answered");

        let got = posted
            .recv_timeout(Duration::from_secs(10))
            .expect("a POST");
        assert_eq!(got.path, "/v1/logs");
        assert_eq!(got.content_type, "application/x-protobuf");
        // Protobuf carries ids as raw bytes and strings as UTF-8.
        assert!(contains(&got.body, &trace_id.to_bytes()), "trace id");
        assert!(contains(&got.body, &span_id.to_bytes()), "span id");
        for text in [
            "stock is low",
            "order_id",
            "o-17",
            "service.name",
            "logtest",
            "logtest-1",
            "WARN",
        ] {
            assert!(contains(&got.body, text.as_bytes()), "{text}");
        }
        assert!(!contains(&got.body, b"filtered out"));
        let _ = provider.shutdown();
    }

    #[test]
    fn a_collector_that_is_down_costs_the_logger_nothing() {
        crate::security::mtls::install_crypto_provider();
        // Nothing listens on this port: every export fails.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let provider = logger_provider(&cfg(&url), &url).expect("an exporter");
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        let started = std::time::Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..(MAX_QUEUED_LOG_RECORDS * 3) {
                tracing::info!(i, "while the collector is away");
            }
        });
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "logging waited for the exporter: {:?}",
            started.elapsed()
        );
        let _ = provider.shutdown();
    }

    #[test]
    fn exported_logs_leave_out_the_exporters_own_crates() {
        let f = filter("debug").to_string();
        assert!(f.contains("reqwest=off"), "{f}");
        assert!(f.contains("opentelemetry_sdk=off"), "{f}");
        assert!(filter("not a [filter").to_string().contains("info"));
    }
}
