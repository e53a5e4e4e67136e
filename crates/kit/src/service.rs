//! One way to start a service: public and admin listeners, the standard HTTP stack,
//! registration with discovery, and graceful shutdown.
//!
//! ```no_run
//! # async fn example(ctx: kit::service::Context) -> Result<(), kit::service::StartError> {
//! let router = axum::Router::new();
//! kit::service::Service::bind(&ctx, "127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap())
//!     .await?
//!     .router(router)
//!     .run_until_stopped()
//!     .await
//! # }
//! ```
//!
//! The public and gRPC listeners are internal: mutual TLS with a certificate from the
//! system's CA and the call policy ([`crate::security::mtls`]), unless the service
//! is the edge ([`Service::edge`], the gateway) or `FLOTILLA_INSECURE_INTERNAL=1`.
//! The public listener gets, outermost first: panic → `500` problem, request id and
//! header limit, a server span joined to the caller's `traceparent`, RED metrics, the
//! caller's deadline, fault injection (off unless set), a body limit, and `404`/`405`
//! problems for unknown routes and methods. The admin listener
//! (loopback by default) serves `/healthz`, `/readyz`, `/metrics`, `/admin/breakers`,
//! `/admin/faults` and the service's own `/admin/*` routes. Shutdown (SIGINT/SIGTERM) marks the instance not ready,
//! deregisters it, keeps serving for the drain delay (so clients hear of it), stops
//! accepting, and lets in-flight requests finish within the grace.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::config::{Common, Config, ConfigError, EX_USAGE, env_name};
use crate::discovery::BoxFuture;
use crate::discovery::etcd::{EtcdClient, EtcdRegistration};
use crate::discovery::registry::{Registration, RegistryClient};
use crate::errors::Problem;
use crate::security::mtls::{self, InternalTransport, TlsConfig};
use crate::store::StoreError;
use crate::telemetry::{self, TelemetryConfig};

/// Default limit on request bodies (routes may set their own).
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

/// Exit code when a required dependency is unavailable (`EX_UNAVAILABLE`).
pub const EX_UNAVAILABLE: i32 = 69;

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address is taken by another process.
    #[error("{addr} is already in use; set `{setting}` to another address")]
    AddrInUse {
        /// The address.
        addr: SocketAddr,
        /// The setting that chooses it.
        setting: String,
    },
    /// Binding failed for another reason.
    #[error("cannot listen on {addr} (`{setting}`): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The setting that chooses it.
        setting: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Discovery (registration) failed.
    #[error("setting `FLOTILLA_DISCOVERY`: {0}")]
    Discovery(#[from] crate::discovery::DiscoveryError),
    /// Anything else, with a message that says what.
    #[error("{0}")]
    Other(String),
}

impl StartError {
    /// The process exit code for this error: `64` for configuration, `69` for an
    /// unavailable dependency, `1` otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::AddrInUse { .. } => EX_USAGE as u8,
            Self::Store(StoreError::UnknownScheme { .. }) => EX_USAGE as u8,
            Self::Store(_) | Self::Discovery(_) => EX_UNAVAILABLE as u8,
            Self::Bind { .. } | Self::Other(_) => 1,
        }
    }
}

/// What a service's `run` function receives: its configuration and identity.
#[derive(Debug, Clone)]
pub struct Context {
    /// The service name.
    pub name: &'static str,
    /// This instance's id (`inventory-3f2a9c1b`).
    pub instance_id: String,
    /// All configuration layers.
    pub config: Config,
    /// The shared settings.
    pub common: Common,
    /// How this service's internal listeners and clients talk: mTLS from the `[tls]`
    /// files, or plain text with `FLOTILLA_INSECURE_INTERNAL=1`.
    pub transport: InternalTransport,
}

impl Context {
    /// A context from loaded configuration, with a fresh instance id and the service's
    /// internal transport (its certificate files are read here, so a missing or wrong
    /// one is a configuration error naming the setting).
    pub fn new(name: &'static str, config: Config) -> Result<Self, ConfigError> {
        mtls::install_crypto_provider();
        let common = config.common()?;
        let tls: TlsConfig = config.section("tls")?;
        let transport = InternalTransport::load(name, &common, &tls)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self {
            name,
            instance_id: format!("{name}-{}", &id[..8]),
            config,
            common,
            transport,
        })
    }

    /// The setting name of `key` in this service's section (`FLOTILLA_INVENTORY__STORE`).
    pub fn setting(&self, key: &str) -> String {
        env_name(Some(self.name), key)
    }
}

/// Runs a service binary: loads configuration, installs the service's internal
/// transport for the process's clients, sets up telemetry (JSON logs on stdout), runs
/// `run` on a multi-threaded runtime, and maps errors to exit codes.
pub fn main<F, Fut>(name: &'static str, run: F) -> ExitCode
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<(), StartError>>,
{
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return healthcheck(name, &Config::load());
    }
    crate::security::mtls::install_crypto_provider();
    let ctx = match Context::new(name, Config::load()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(EX_USAGE as u8);
        }
    };
    mtls::install(ctx.transport.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = telemetry::init(
            &TelemetryConfig {
                service: name.to_owned(),
                instance: ctx.instance_id.clone(),
                filter: ctx.common.log.clone(),
                otlp_endpoint: ctx.common.otlp_endpoint.clone(),
                sampling: ctx.common.trace_sampling,
            },
            std::io::stdout,
        );
        match run(ctx).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "{name} failed");
                eprintln!("{name}: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}

/// `<binary> healthcheck`: asks this service's admin listener (`admin_listen` in its
/// section, a wildcard address asked on loopback) for `/healthz` and exits `0` on a
/// `200`, `1` otherwise. It needs no shell or HTTP client in the image, so a container's
/// `HEALTHCHECK` can run the service's own binary.
fn healthcheck(name: &str, config: &Config) -> ExitCode {
    #[derive(Debug, Default, serde::Deserialize)]
    struct Admin {
        admin_listen: Option<SocketAddr>,
    }
    let setting = env_name(Some(name), "admin_listen");
    let addr = match config.section::<Admin>(name) {
        Ok(Admin {
            admin_listen: Some(a),
        }) if a.port() != 0 => a,
        Ok(_) => {
            eprintln!("{name} healthcheck: set `{setting}` to a fixed port");
            return ExitCode::from(EX_USAGE as u8);
        }
        Err(e) => {
            eprintln!("{name} healthcheck: {e}");
            return ExitCode::from(EX_USAGE as u8);
        }
    };
    match probe_healthz(addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name} healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One blocking `GET /healthz` to `addr` (loopback for a wildcard), within 2 s.
fn probe_healthz(mut addr: SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let io = |e: std::io::Error| format!("{addr}: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(io)?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(io)?;
    match std::str::from_utf8(&head) {
        Ok(line) if line.starts_with("HTTP/1.") && line.ends_with(" 200") => Ok(()),
        Ok(line) => Err(format!("{addr}/healthz answered {line:?}")),
        Err(_) => Err(format!("{addr}/healthz did not answer HTTP")),
    }
}

/// A readiness check: `Ok` when the dependency is reachable, `Err(why)` otherwise.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A bound service, ready to run.
pub struct Service {
    ctx: Context,
    public: TcpListener,
    admin: TcpListener,
    router: Router,
    admin_router: Router,
    body_limit: usize,
    checks: Vec<(String, ReadinessCheck)>,
    register: bool,
    metadata: BTreeMap<String, String>,
    grpc: Option<(TcpListener, Router)>,
    tls: Option<Arc<rustls::ServerConfig>>,
    edge: bool,
    response_headers: http::HeaderMap,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.ctx.name)
            .field("public", &self.public.local_addr().ok())
            .field("admin", &self.admin.local_addr().ok())
            .finish()
    }
}

async fn bind(addr: SocketAddr, setting: String) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            StartError::AddrInUse { addr, setting }
        } else {
            StartError::Bind {
                addr,
                setting,
                source,
            }
        }
    })
}

impl Service {
    /// Binds the public and admin listeners (port 0 picks a free port).
    pub async fn bind(
        ctx: &Context,
        listen: SocketAddr,
        admin_listen: SocketAddr,
    ) -> Result<Self, StartError> {
        let public = bind(listen, ctx.setting("listen")).await?;
        let admin = bind(admin_listen, ctx.setting("admin_listen")).await?;
        Ok(Self {
            ctx: ctx.clone(),
            public,
            admin,
            router: Router::new(),
            admin_router: Router::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            checks: Vec::new(),
            register: true,
            metadata: BTreeMap::new(),
            grpc: None,
            tls: None,
            edge: false,
            response_headers: http::HeaderMap::new(),
        })
    }

    /// The bound public address.
    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The public routes.
    pub fn router(mut self, router: Router) -> Self {
        self.router = router;
        self
    }

    /// Extra admin routes (`/admin/...`), merged with the standard ones.
    pub fn admin_routes(mut self, router: Router) -> Self {
        self.admin_router = self.admin_router.merge(router);
        self
    }

    /// The limit on public request bodies (default [`DEFAULT_BODY_LIMIT`]).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Adds a readiness check shown at `/readyz`.
    pub fn readiness(mut self, name: &str, check: ReadinessCheck) -> Self {
        self.checks.push((name.to_owned(), check));
        self
    }

    /// Adds `key = value` to the metadata this instance registers with discovery.
    pub fn metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }

    /// Binds a third listener for the service's internal gRPC API (`grpc_listen`,
    /// port 0 picks a free port) and serves `routes` there (HTTP/2, over mTLS with the
    /// call policy like the public listener, with prior knowledge when insecure). The
    /// address is advertised as `metadata.grpc_addr`, and the listener stops and drains
    /// with the others. `routes` is a tonic router turned into an axum one
    /// (`tonic::service::Routes::into_axum_router`), so the kit itself stays free of
    /// gRPC code.
    pub async fn grpc(mut self, listen: SocketAddr, routes: Router) -> Result<Self, StartError> {
        let listener = bind(listen, self.ctx.setting("grpc_listen")).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        self.metadata
            .insert("grpc_addr".to_owned(), advertised(addr));
        self.grpc = Some((listener, routes));
        Ok(self)
    }

    /// The bound gRPC address, if [`Service::grpc`] was called.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Makes the public listener the system's edge (the gateway): open to any client,
    /// without mTLS or call policy, over plain HTTP or [`Service::tls`]. Without this
    /// the public listener is internal, like the gRPC one: mTLS with a client
    /// certificate from the CA and the call policy (unless `FLOTILLA_INSECURE_INTERNAL`).
    pub fn edge(mut self) -> Self {
        self.edge = true;
        self
    }

    /// Serves the edge listener over TLS with `config` (HTTP/1.1 and HTTP/2 by ALPN;
    /// a handshake gets 10 s); only with [`Service::edge`]. The admin and gRPC
    /// listeners stay as they are.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Adds `headers` to every response of the public listener, including those the
    /// standard stack answers itself (`431`, `500`, injected faults), unless the
    /// response already has them.
    pub fn response_headers(mut self, headers: http::HeaderMap) -> Self {
        self.response_headers.extend(headers);
        self
    }

    /// Does not register with discovery (the registry itself, tools).
    pub fn without_registration(mut self) -> Self {
        self.register = false;
        self
    }

    /// Runs in the background until the returned handle is dropped or stopped (tests,
    /// and tools embedding a service).
    pub fn spawn(self) -> Running {
        let (public, admin) = (self.public_addr(), self.admin_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.run_until(async move {
            let _ = stopped.await;
        }));
        Running {
            public,
            admin,
            stop: Some(stop),
            task,
        }
    }

    /// Runs until SIGINT or SIGTERM, then drains.
    pub async fn run_until_stopped(self) -> Result<(), StartError> {
        self.run_until(async {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = supervisor_gone() => {
                    tracing::warn!("the supervising `flotilla up` is gone; stopping");
                }
            }
        })
        .await
    }

    /// Runs until `shutdown` completes, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Self {
            ctx,
            public,
            admin,
            router,
            admin_router,
            body_limit,
            checks,
            register,
            metadata: extra_metadata,
            grpc,
            tls,
            edge,
            response_headers,
        } = self;
        if tls.is_some() && !edge {
            return Err(StartError::Other(format!(
                "{}: edge TLS is for the edge listener; internal listeners use mTLS",
                ctx.name
            )));
        }
        let public_addr = public
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let admin_addr = admin
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let draining = Arc::new(AtomicBool::new(false));
        let started = SystemTime::now();

        let public_app = with_response_headers(public_stack(router, body_limit), response_headers);
        let admin_app = admin_stack(admin_router, checks, draining.clone());
        let internal = ctx.transport.mtls().map(|m| m.server_config());
        let (public_app, public_tls) = if edge {
            (public_app, tls)
        } else {
            (internal_listener(&ctx, public_app, false), internal.clone())
        };
        let grpc = grpc.map(|(listener, routes)| {
            let app = internal_listener(&ctx, grpc_stack(routes), true);
            (listener, app)
        });
        if ctx.transport.mtls().is_none() {
            tracing::warn!(
                "{} is set: internal listeners and clients use plain text, without \
                 client certificates or call policy; never do this outside tests",
                mtls::INSECURE_ENV
            );
        }

        let registration = if register {
            let version = ctx.common.version.clone();
            let metadata = move || {
                let mut m = instance_metadata(admin_addr, &version, started);
                m.extend(extra_metadata.clone());
                m
            };
            Registered::start(&ctx, advertised(public_addr), metadata).await?
        } else {
            None
        };

        tracing::info!(
            public = %public_addr,
            admin = %admin_addr,
            version = %ctx.common.version,
            "{} ready",
            ctx.name
        );

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let grace = ctx.common.shutdown_grace;
        let public_task = tokio::spawn(serve_with(
            public,
            public_app,
            public_tls,
            stop_rx.clone(),
            grace,
        ));
        let grpc_task = grpc.map(|(listener, app)| {
            tokio::spawn(serve_with(
                listener,
                app,
                internal.clone(),
                stop_rx.clone(),
                grace,
            ))
        });
        let admin_task = tokio::spawn(serve(admin, admin_app, stop_rx, grace));

        shutdown.await;
        tracing::info!(grace = ?grace, "shutting down: draining in-flight requests");
        draining.store(true, Ordering::SeqCst);
        if let Some(r) = registration {
            r.deregister().await;
        }
        // Clients hear of it (the registry and etcd push a deregistration at once; DNS and
        // Kubernetes endpoints follow the failing readiness), but a request may be on
        // its way already: keep taking them for a moment.
        tokio::time::sleep(ctx.common.drain_delay).await;
        let _ = stop_tx.send(true);
        let _ = public_task.await;
        let _ = admin_task.await;
        if let Some(task) = grpc_task {
            let _ = task.await;
        }
        tracing::info!("{} stopped", ctx.name);
        Ok(())
    }
}

/// An instance's registration with the backend `FLOTILLA_DISCOVERY` names.
enum Registered {
    Registry(Registration),
    Etcd(EtcdRegistration),
}

impl Registered {
    /// Registers with the registry or etcd; other backends (DNS, static lists) learn of
    /// instances elsewhere, so `None`.
    async fn start(
        ctx: &Context,
        addr: String,
        metadata: impl Fn() -> BTreeMap<String, String> + Send + 'static,
    ) -> Result<Option<Self>, StartError> {
        let url = &ctx.common.discovery;
        let (service, id, ttl) = (ctx.name, &ctx.instance_id, ctx.common.lease_ttl);
        let registered = match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("registry") => {
                let client =
                    RegistryClient::from_url_with(url, "FLOTILLA_DISCOVERY", &ctx.transport)?;
                Self::Registry(Registration::start(client, service, id, addr, ttl, metadata).await?)
            }
            Some("etcd") => {
                let client = EtcdClient::from_url(url, "FLOTILLA_DISCOVERY")?;
                Self::Etcd(EtcdRegistration::start(client, service, id, addr, ttl, metadata).await?)
            }
            _ => return Ok(None),
        };
        Ok(Some(registered))
    }

    async fn deregister(self) {
        match self {
            Self::Registry(r) => r.deregister().await,
            Self::Etcd(r) => r.deregister().await,
        }
    }
}

/// What an instance reports about itself at every heartbeat: `admin_addr`, `version`,
/// `pid`, `started_at` and the current `rss_bytes`.
pub fn instance_metadata(
    admin_addr: SocketAddr,
    version: &str,
    started: SystemTime,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("admin_addr".to_owned(), admin_addr.to_string());
    m.insert("version".to_owned(), version.to_owned());
    m.insert("pid".to_owned(), std::process::id().to_string());
    m.insert(
        "started_at".to_owned(),
        humantime::format_rfc3339_seconds(started).to_string(),
    );
    if let Some(rss) = process_rss_bytes() {
        m.insert("rss_bytes".to_owned(), rss.to_string());
    }
    m
}

/// A service running in the background; dropping the handle starts its drain.
#[derive(Debug)]
pub struct Running {
    public: SocketAddr,
    admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), StartError>>,
}

impl Running {
    /// The public address.
    pub fn public_addr(&self) -> SocketAddr {
        self.public
    }

    /// The admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Stops the service and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The address others should use: a wildcard bind is advertised as loopback.
pub fn advertised(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()).to_string()
    } else {
        addr.to_string()
    }
}

/// An internal listener's app: with mTLS, every request passes the call policy first
/// (the peer identity comes from the handshake, see [`serve_with`]).
fn internal_listener(ctx: &Context, app: Router, grpc: bool) -> Router {
    let Some(m) = ctx.transport.mtls() else {
        return app;
    };
    let enforcement = Arc::new(mtls::policy::Enforcement {
        service: ctx.name.to_owned(),
        trust_domain: m.identity().trust_domain().to_owned(),
        policy: m.policy().clone(),
        grpc,
    });
    app.layer(axum::middleware::from_fn_with_state(
        enforcement,
        mtls::policy::enforce,
    ))
}

/// The standard public stack around a service's routes (see the module docs).
pub fn public_stack(router: Router, body_limit: usize) -> Router {
    router
        .fallback(crate::http::not_found)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(crate::resilience::fault::inject))
        .layer(axum::middleware::from_fn(
            crate::resilience::deadline::propagate,
        ))
        .layer(axum::middleware::from_fn(telemetry::metrics::red))
        .layer(axum::middleware::from_fn(telemetry::trace::server_span))
        .layer(axum::middleware::from_fn(crate::http::request_context))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::http::panic_to_problem,
        ))
}

/// The stack around a service's internal gRPC routes: fault injection (aborts answered
/// as gRPC errors), deadline propagation (`grpc-timeout` or `x-flotilla-deadline-ms`),
/// RED metrics and server spans continuing the caller's trace.
pub fn grpc_stack(routes: Router) -> Router {
    routes
        .layer(axum::middleware::from_fn(crate::resilience::fault::inject))
        .layer(axum::middleware::from_fn(
            crate::resilience::deadline::propagate,
        ))
        .layer(axum::middleware::from_fn(telemetry::metrics::red))
        .layer(axum::middleware::from_fn(telemetry::trace::server_span))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::http::panic_to_problem,
        ))
}

fn admin_stack(
    extra: Router,
    checks: Vec<(String, ReadinessCheck)>,
    draining: Arc<AtomicBool>,
) -> Router {
    let checks = Arc::new(checks);
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "alive"})) }),
        )
        .route(
            "/readyz",
            get(move || readyz(checks.clone(), draining.clone())),
        )
        .route("/metrics", get(metrics))
        .merge(crate::resilience::admin_router())
        .merge(extra)
        .fallback(crate::http::not_found)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .layer(axum::middleware::from_fn(crate::http::request_context))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::http::panic_to_problem,
        ))
}

async fn metrics() -> Response {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::metrics::render(),
    )
        .into_response()
}

async fn readyz(checks: Arc<Vec<(String, ReadinessCheck)>>, draining: Arc<AtomicBool>) -> Response {
    if draining.load(Ordering::SeqCst) {
        return Problem::unavailable("the instance is draining", Duration::from_secs(1))
            .into_response();
    }
    let results = futures_util::future::join_all(checks.iter().map(|(name, check)| {
        let name = name.clone();
        let fut = check();
        async move {
            let r = tokio::time::timeout(Duration::from_secs(2), fut)
                .await
                .unwrap_or_else(|_| Err("timed out after 2s".to_owned()));
            (name, r)
        }
    }))
    .await;
    let failing: Vec<String> = results
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    if failing.is_empty() {
        let checks: serde_json::Map<String, serde_json::Value> = results
            .into_iter()
            .map(|(n, _)| (n, serde_json::Value::from("ok")))
            .collect();
        axum::Json(serde_json::json!({"status": "ready", "checks": checks})).into_response()
    } else {
        Problem::unavailable(
            format!("not ready: {}", failing.join("; ")),
            Duration::from_secs(1),
        )
        .into_response()
    }
}

fn with_response_headers(app: Router, headers: http::HeaderMap) -> Router {
    if headers.is_empty() {
        return app;
    }
    let headers = Arc::new(headers);
    app.layer(axum::middleware::map_response(move |mut res: Response| {
        let headers = headers.clone();
        async move {
            for (name, value) in headers.iter() {
                if !res.headers().contains_key(name) {
                    res.headers_mut().insert(name, value.clone());
                }
            }
            res
        }
    }))
}

/// Serves `app` on `listener` until `stop` turns true, then lets open connections
/// finish their in-flight requests for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    serve_with(listener, app, None, stop, grace).await
}

/// Time a client gets to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Like [`serve`], over TLS when `tls` is set. When the client presented a
/// certificate with a SPIFFE id, every request of the connection carries it as a
/// [`mtls::PeerIdentity`] extension.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let Some(acceptor) = &acceptor else {
            let service = connection_service(app, peer, None);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let conn = graceful.watch(conn.into_owned());
            tokio::spawn(async move {
                let _ = conn.await;
            });
            continue;
        };
        // The handshake runs in the connection's task so a slow client holds up no one;
        // the connection joins the graceful drain once it is established.
        let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer, "TLS handshake timed out");
                        return;
                    }
                };
            let identity = mtls::peer_identity(stream.get_ref().1);
            let service = connection_service(app, peer, identity);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?grace, "grace period over; closing remaining connections");
    }
}

/// The per-connection service: the peer's address (and identity) on every request.
fn connection_service(
    app: Router,
    peer: SocketAddr,
    identity: Option<mtls::PeerIdentity>,
) -> impl hyper::service::Service<
    Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        if let Some(id) = &identity {
            req.extensions_mut().insert(id.clone());
        }
        app.clone().oneshot(req.map(axum::body::Body::new))
    })
}

async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Set by `flotilla up` on the services it spawns: the supervisor's process id.
pub const SUPERVISOR_PID_ENV: &str = "FLOTILLA_SUPERVISOR_PID";

/// Resolves when this process was started by a supervisor (`FLOTILLA_SUPERVISOR_PID`)
/// that is no longer its parent, so a killed `flotilla up` leaves no service behind.
/// Never resolves otherwise.
pub async fn supervisor_gone() {
    #[cfg(unix)]
    if let Some(pid) = std::env::var(SUPERVISOR_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        loop {
            if std::os::unix::process::parent_id() != pid {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    std::future::pending::<()>().await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Resident set size of this process in bytes (Linux; `None` elsewhere).
pub fn process_rss_bytes() -> Option<u64> {
    rss_of("self")
}

/// Resident set size of process `pid` (`"self"` for this one) in bytes, from `/proc`.
pub fn rss_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `GET /openapi.json`, for a service's admin listener: its public API as `D` describes
/// it (generated from the code with utoipa), with the kit's own answers and every failure
/// as a problem document ([`crate::openapi::document_problems`]); the gateway merges these
/// documents.
pub fn openapi_route<D: utoipa::OpenApi>() -> Router {
    let mut doc = serde_json::to_value(D::openapi()).expect("an OpenAPI document serializes");
    crate::openapi::camel_case_links(&mut doc);
    crate::openapi::document_problems(&mut doc);
    Router::new().route(
        "/openapi.json",
        get(move || std::future::ready(axum::Json(doc.clone()))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let e = StartError::AddrInUse {
            addr: "127.0.0.1:8080".parse().unwrap(),
            setting: "FLOTILLA_GATEWAY__LISTEN".into(),
        };
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("FLOTILLA_GATEWAY__LISTEN"));
        assert!(e.to_string().contains("8080"));
    }

    #[test]
    fn healthcheck_probe_wants_a_200() {
        fn answering(status: &'static str) -> SocketAddr {
            use std::io::{Read, Write};
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 256];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes());
            });
            addr
        }
        let ok = answering("200 OK");
        probe_healthz(SocketAddr::new([0, 0, 0, 0].into(), ok.port())).unwrap();
        let err = probe_healthz(answering("503 Service Unavailable")).unwrap_err();
        assert!(err.contains("503"), "{err}");
    }

    #[test]
    fn wildcard_is_advertised_as_loopback() {
        assert_eq!(
            advertised("0.0.0.0:9000".parse().unwrap()),
            "127.0.0.1:9000"
        );
        assert_eq!(
            advertised("10.1.2.3:9000".parse().unwrap()),
            "10.1.2.3:9000"
        );
    }

    #[test]
    fn reads_own_rss() {
        assert!(process_rss_bytes().unwrap_or(1) > 0);
    }
}
