//! Telemetry: JSON logs with trace ids, RED metrics in Prometheus format, and
//! OpenTelemetry traces propagated with W3C `traceparent` on every hop (HTTP, gRPC
//! metadata, the events' `traceparent`), sampled as `FLOTILLA_TRACE_SAMPLING` says.
//! With `FLOTILLA_OTLP_ENDPOINT` set, spans go to `<endpoint>/v1/traces` and log
//! records (with the trace and span ids they were logged in) to `<endpoint>/v1/logs`.
//!
//! [`init`] takes the log sink, so tests stay quiet unless they ask for output.

pub mod db;
pub mod export;
pub mod logs;
pub mod metrics;
pub mod trace;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What [`init`] needs to know.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The service name (`service` in every log line, `service.name` on spans).
    pub service: String,
    /// This instance's id.
    pub instance: String,
    /// Log filter, `RUST_LOG` syntax.
    pub filter: String,
    /// OTLP/HTTP endpoint to export spans and log records to, if any.
    pub otlp_endpoint: Option<String>,
    /// Which traces are recorded.
    pub sampling: trace::Sampling,
}

/// Keeps the tracer and logger providers alive; flushes spans and log records when
/// dropped.
#[must_use = "dropping the guard stops trace and log export"]
pub struct Telemetry {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
    logs: Option<opentelemetry_sdk::logs::SdkLoggerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
        if let Some(logs) = &self.logs {
            let _ = logs.shutdown();
        }
    }
}

/// Installs the global subscriber (JSON logs to `sink`, spans to OpenTelemetry), the
/// W3C propagator and the Prometheus recorder. Call once per process.
pub fn init<W>(cfg: &TelemetryConfig, sink: W) -> Telemetry
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // The OTLP exporter builds an HTTP client, whose TLS needs the provider.
    crate::security::mtls::install_crypto_provider();
    metrics::install_recorder();
    let provider = trace::provider(cfg);
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, cfg.service.clone());
    let filter = EnvFilter::try_new(&cfg.filter).unwrap_or_else(|e| {
        eprintln!(
            "FLOTILLA_LOG={:?} is not a valid filter ({e}); using info",
            cfg.filter
        );
        EnvFilter::new("info")
    });
    let logs = cfg
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
        .and_then(|endpoint| export::logger_provider(cfg, endpoint));
    let otlp_logs = logs
        .as_ref()
        .map(|p| export::layer(p).with_filter(export::filter(&filter.to_string())));
    // Spans follow their own level, not the log filter: a quiet `FLOTILLA_LOG=warn` must
    // not stop `traceparent` from flowing.
    let _ = tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .with(logs::JsonLayer::new(&cfg.service, &cfg.instance, sink).with_filter(filter))
        .with(otlp_logs)
        .try_init();
    Telemetry { provider, logs }
}

/// Sets up telemetry once per test process: spans and metrics work as in production,
/// logs are discarded unless `FLOTILLA_TEST_LOG=1` sends them to stderr. Also makes
/// ring the TLS provider, so tests' own HTTP clients build.
pub fn init_for_tests() {
    crate::security::mtls::install_crypto_provider();
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let cfg = TelemetryConfig {
            service: "test".to_owned(),
            instance: "test".to_owned(),
            filter: std::env::var("FLOTILLA_LOG").unwrap_or_else(|_| "info".to_owned()),
            otlp_endpoint: None,
            sampling: trace::Sampling::AlwaysOn,
        };
        let guard = if std::env::var("FLOTILLA_TEST_LOG").as_deref() == Ok("1") {
            init(&cfg, std::io::stderr)
        } else {
            init(&cfg, std::io::sink)
        };
        // The provider must outlive every test in the process.
        std::mem::forget(guard);
    });
}
