//! `flotilla up`: the supervisor. Starts the registry, then every service as its own
//! process, waits for each to be ready, interleaves their logs on the terminal (full
//! JSON lines go to `<data dir>/logs/<service>.log`), restarts crashed services with
//! exponential backoff, and stops everything gracefully on Ctrl-C or SIGTERM.
//!
//! A service may run as several instances (`up --replicas`, `flotilla scale`), and
//! instances of one service may run different binaries and versions during a rollout
//! ([`fleet`]); `flotilla scale`/`rollout` reach the running `up` through its control
//! socket ([`control`]).

pub mod control;
pub mod fleet;
pub mod preflight;

pub use control::Request;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kit::config::{Config, EX_USAGE};
use kit::service::SUPERVISOR_PID_ENV;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use crate::services::NAMES;

/// How long a service may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stopping may take before the rest is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// A service that ran this long before crashing restarts without backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// What `up` needs to know about the system it starts.
#[derive(Debug, Clone)]
pub struct Plan {
    data_dir: PathBuf,
    /// The embedded registry's address, when discovery is the registry (not etcd, DNS…).
    registry: Option<SocketAddr>,
    /// How services find each other (`registry://…` of the embedded one, or `etcd://…`).
    discovery: String,
    /// The embedded bus's address, when the bus is the embedded one (not NATS).
    bus: Option<SocketAddr>,
    /// The bus every service uses.
    bus_url: String,
    gateway: SocketAddr,
    /// The dashboard's listener (its UI, and the OTLP receiver).
    dashboard: SocketAddr,
    /// `FLOTILLA_OTLP_ENDPOINT` for the services: the dashboard, unless the user chose
    /// an endpoint (an empty one disables export).
    otlp_endpoint: String,
    /// What every instance runs unless a scale or rollout says otherwise.
    spec: Spec,
    /// Instances per service at start (1 unless `--replicas` says otherwise).
    replicas: HashMap<String, usize>,
}

impl Plan {
    fn replicas(&self, name: &str) -> usize {
        self.replicas.get(name).copied().unwrap_or(1)
    }

    fn discovery(&self) -> String {
        self.discovery.clone()
    }

    fn bus_url(&self) -> String {
        self.bus_url.clone()
    }

    /// Whether `up` runs `name`: not the embedded registry or bus when the profile
    /// uses etcd or NATS instead.
    fn runs(&self, name: &str) -> bool {
        match name {
            "registry" => self.registry.is_some(),
            "bus" => self.bus.is_some(),
            _ => true,
        }
    }
}

/// Runs `flotilla up`.
pub fn up(data_dir: PathBuf, replicas: Vec<(String, usize)>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla up: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let plan = match plan(data_dir, replicas) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("flotilla up: {e:#}");
                return ExitCode::from(EX_USAGE as u8);
            }
        };
        match Supervisor::new(plan).run().await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("flotilla up: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

fn plan(data_dir: PathBuf, replicas: Vec<(String, usize)>) -> anyhow::Result<Plan> {
    for (name, n) in &replicas {
        fleet::check_scalable(name, *n)?;
    }
    std::fs::create_dir_all(data_dir.join("logs"))
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&data_dir)?;
    let config = Config::load().merged("data_dir", &data_dir);
    internal_identities(&config)?;
    let common = config.common()?;
    let registry = kit::store::scheme(&common.discovery) == "registry";
    let registry = registry
        .then(|| config.section::<registry::RegistryConfig>("registry"))
        .transpose()?
        .map(|r| r.listen);
    let discovery = match registry {
        Some(addr) => format!("registry://{addr}"),
        None => common.discovery.clone(),
    };
    let bus_url = kit_events::url_from_config(&config);
    let bus = (kit::store::scheme(&bus_url) == "bus")
        .then(|| bus::config(&config))
        .transpose()?
        .map(|b| b.listen);
    let bus_url = match bus {
        Some(addr) => format!("bus://{}", kit::service::advertised(addr)),
        None => bus_url,
    };
    if registry.is_none() || bus.is_none() {
        preflight::servers_reachable(&config)?;
    }
    let gateway: gateway::GatewayConfig = config.section("gateway")?;
    let dashboard = dashboard::section(&config)?.listen;
    // Every service exports to the dashboard unless the user named an endpoint (set,
    // even empty, in the environment or the configuration file).
    let otlp_endpoint = common
        .otlp_endpoint
        .clone()
        .unwrap_or_else(|| dashboard_url(dashboard));
    let listeners = [
        registry.map(|a| (a, "FLOTILLA_REGISTRY__LISTEN")),
        bus.map(|a| (a, "FLOTILLA_BUS__LISTEN")),
        Some((gateway.listen, "FLOTILLA_GATEWAY__LISTEN")),
        Some((dashboard, "FLOTILLA_DASHBOARD__LISTEN")),
    ];
    for (addr, setting) in listeners.into_iter().flatten() {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                bail!(
                    "port {} ({addr}) is already in use (is Flotilla already running?); set {setting} to another address",
                    addr.port()
                );
            }
            bail!("cannot listen on {addr} ({setting}): {e}");
        }
    }
    let binary = std::env::current_exe().context("cannot find the flotilla binary")?;
    Ok(Plan {
        data_dir,
        registry,
        discovery,
        bus,
        bus_url,
        gateway: gateway.listen,
        dashboard,
        otlp_endpoint,
        spec: Spec {
            binary,
            version: common.version,
        },
        replicas: replicas.into_iter().collect(),
    })
}

/// The dashboard's URL: its UI, and the endpoint services export OTLP to.
fn dashboard_url(listen: SocketAddr) -> String {
    format!("http://{}", kit::service::advertised(listen))
}

/// Issues every service (and the operator) a certificate from the development CA under
/// `<data dir>/tls/` (created at the first start, kept after), then gives this process
/// the operator identity. With `FLOTILLA_INSECURE_INTERNAL=1`, says loudly that
/// internal traffic is plain text instead.
fn internal_identities(config: &Config) -> anyhow::Result<()> {
    use kit::security::mtls::{self, SpiffeId, TlsConfig, dev_ca::DevCa};
    let common = config.common()?;
    if common.insecure_internal {
        eprintln!(
            "flotilla up: WARNING: {} is set: services talk to each other in plain text, \
             without certificates or call policy",
            mtls::INSECURE_ENV
        );
        return Ok(());
    }
    let tls: TlsConfig = config.section("tls")?;
    let dir = common.data_dir.join("tls");
    let ca = DevCa::load_or_create(&dir)
        .with_context(|| format!("cannot set up the development CA in {}", dir.display()))?;
    for name in NAMES.iter().copied().chain([mtls::OPERATOR]) {
        let id = SpiffeId::new(&tls.trust_domain, name)
            .map_err(|e| anyhow::anyhow!("setting `FLOTILLA_TLS__TRUST_DOMAIN`: {e}"))?;
        ca.issue(&id)
            .with_context(|| format!("cannot issue the certificate of {name}"))?;
    }
    crate::install_operator(config)
}

/// What an instance runs: which `flotilla` binary, registering which version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spec {
    /// The binary (`flotilla run <service>` is what it is asked to do).
    pub binary: PathBuf,
    /// The version it registers (`FLOTILLA_VERSION`), what traffic rules route on.
    pub version: String,
}

/// One instance `up` runs: a process of one service, or one waiting to be restarted.
struct Proc {
    /// `up`'s own number for it, stable across its restarts.
    id: u64,
    service: &'static str,
    /// 1 for a service's first instance, 2 for its second… (in log file names).
    ordinal: u32,
    spec: Spec,
    /// `None` while it waits to be restarted.
    pid: Option<u32>,
    started: Instant,
    restarts: u32,
    /// Restarted when it crashes. A new instance a scale or rollout starts is adopted
    /// once it has been ready; until then a crash gives it up (a version that cannot
    /// start is not retried forever).
    adopted: bool,
    /// Stopping on purpose: told to drain, and these wait for its exit.
    stopping: Option<Vec<oneshot::Sender<()>>>,
}

/// An instance as the fleet operations see it.
#[derive(Debug, Clone)]
pub struct View {
    pub id: u64,
    pub pid: Option<u32>,
    pub spec: Spec,
    pub stopping: bool,
}

pub enum Event {
    Exited {
        id: u64,
        pid: u32,
        status: std::process::ExitStatus,
    },
    Restart(u64),
    Spawn {
        service: &'static str,
        spec: Spec,
        reply: oneshot::Sender<anyhow::Result<(u64, u32)>>,
    },
    Adopt(u64),
    /// A stopping instance's drain time is over: kill it if it still runs.
    Overdue {
        id: u64,
        pid: u32,
    },
    Stop {
        id: u64,
        reply: oneshot::Sender<()>,
    },
    List {
        service: &'static str,
        reply: oneshot::Sender<Vec<View>>,
    },
}

struct Supervisor {
    plan: Plan,
    procs: Vec<Proc>,
    next_id: u64,
    events: mpsc::UnboundedSender<Event>,
    inbox: mpsc::UnboundedReceiver<Event>,
    out: Arc<Printer>,
    http: reqwest::Client,
}

impl Supervisor {
    fn new(plan: Plan) -> Self {
        let (events, inbox) = mpsc::unbounded_channel();
        Self {
            plan,
            procs: Vec::new(),
            next_id: 1,
            events,
            inbox,
            out: Arc::new(Printer::new()),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    async fn run(mut self) -> anyhow::Result<ExitCode> {
        let begun = Instant::now();
        // Bound first, so `flotilla scale` run while `up` starts waits instead of failing.
        let bound = control::bind(&self.plan.data_dir)?;
        let bars: HashMap<&str, ProgressBar> = NAMES
            .iter()
            .filter(|name| self.plan.runs(name))
            .map(|name| {
                let bar = self.out.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:<13} {msg}")
                        .expect("static template"),
                );
                bar.set_prefix(*name);
                bar.set_message("waiting");
                bar.enable_steady_tick(Duration::from_millis(100));
                (*name, bar)
            })
            .collect();

        let credentials_before = credentials_stamp(&self.plan.data_dir);
        let ready = self.start_all(&bars, begun).await;
        for bar in bars.values() {
            bar.finish_and_clear();
        }
        if let Err(e) = ready {
            bound.close();
            self.stop_all().await;
            return Err(e);
        }
        let fleet = fleet::Fleet::new(
            self.events.clone(),
            self.registry_client()?,
            self.http.clone(),
            self.plan.spec.clone(),
            self.out.clone(),
        );
        let control = bound.serve(fleet);
        self.out.line(&format!(
            "\nFlotilla is up in {:.2}s\n  gateway   http://{}\n  dashboard {}\n  discovery {}\n  bus       {}\n  logs      {}\nPress Ctrl-C to stop.\n",
            begun.elapsed().as_secs_f64(),
            self.plan.gateway,
            dashboard_url(self.plan.dashboard),
            match self.plan.registry {
                Some(addr) => format!("{}://{addr}", kit::security::mtls::scheme()),
                None => kit::store::redact(&self.plan.discovery),
            },
            kit::store::redact(&self.plan.bus_url),
            self.plan.data_dir.join("logs").display(),
        ));
        if let Some(admin) = new_admin_credentials(&self.plan.data_dir, credentials_before) {
            self.out.line(&admin);
        }
        self.out
            .live
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let code = self.supervise().await;
        control.close();
        self.stop_all().await;
        Ok(code)
    }

    async fn start_all(
        &mut self,
        bars: &HashMap<&str, ProgressBar>,
        begun: Instant,
    ) -> anyhow::Result<()> {
        let names: Vec<&'static str> = NAMES
            .iter()
            .copied()
            .filter(|n| self.plan.runs(n))
            .collect();
        for name in names {
            bars[name].set_message("starting");
            for _ in 0..self.plan.replicas(name) {
                let (id, pid) = self.spawn_new(name, self.plan.spec.clone(), true)?;
                let waited = if name == "registry" {
                    self.wait_registry().await
                } else {
                    self.wait_ready(name, pid).await
                };
                if let Err(e) = waited {
                    bars[name].abandon_with_message("failed");
                    bail!(
                        "{name} did not become ready: {e:#}; see {}",
                        self.log_path(name, self.proc(id).map_or(1, |p| p.ordinal))
                            .display()
                    );
                }
            }
            bars[name].set_message(format!("ready ({:.2}s)", begun.elapsed().as_secs_f64()));
            self.out.line_if_plain(&format!(
                "{name:<13} ready ({:.2}s)",
                begun.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    }

    fn proc(&self, id: u64) -> Option<&Proc> {
        self.procs.iter().find(|p| p.id == id)
    }

    fn proc_mut(&mut self, id: u64) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.id == id)
    }

    fn log_path(&self, name: &str, ordinal: u32) -> PathBuf {
        let file = if ordinal <= 1 {
            format!("{name}.log")
        } else {
            format!("{name}-{ordinal}.log")
        };
        self.plan.data_dir.join("logs").join(file)
    }

    /// Starts a new instance of `name` running `spec`.
    fn spawn_new(
        &mut self,
        name: &'static str,
        spec: Spec,
        adopted: bool,
    ) -> anyhow::Result<(u64, u32)> {
        let ordinal = (1..)
            .find(|o| {
                !self
                    .procs
                    .iter()
                    .any(|p| p.service == name && p.ordinal == *o)
            })
            .expect("an unused ordinal exists");
        let id = self.next_id;
        self.next_id += 1;
        self.procs.push(Proc {
            id,
            service: name,
            ordinal,
            spec,
            pid: None,
            started: Instant::now(),
            restarts: 0,
            adopted,
            stopping: None,
        });
        match self.spawn(id) {
            Ok(pid) => Ok((id, pid)),
            Err(e) => {
                self.procs.retain(|p| p.id != id);
                Err(e)
            }
        }
    }

    /// Starts the process of instance `id`.
    fn spawn(&mut self, id: u64) -> anyhow::Result<u32> {
        let proc = self.proc(id).context("no such instance")?;
        let (name, ordinal, spec) = (proc.service, proc.ordinal, proc.spec.clone());
        let mut cmd = Command::new(&spec.binary);
        cmd.arg("run")
            .arg(name)
            .env("FLOTILLA_DATA_DIR", &self.plan.data_dir)
            .env("FLOTILLA_DISCOVERY", self.plan.discovery())
            .env("FLOTILLA_BUS", self.plan.bus_url())
            .env("FLOTILLA_VERSION", &spec.version)
            .envs(Config::chosen_file().map(|f| ("FLOTILLA_CONFIG", f)))
            .env(SUPERVISOR_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C reaches only `up`, which stops services in order.
            .process_group(0)
            .kill_on_drop(false);
        if std::env::var_os("FLOTILLA_DRAIN_DELAY").is_none() {
            // Long enough for every client to hear of the deregistration (the registry
            // pushes it at once) before the listener stops taking connections.
            cmd.env("FLOTILLA_DRAIN_DELAY", "300ms");
        }
        let endpoint = self.plan.otlp_endpoint.as_str();
        // The dashboard does not export its own spans to itself.
        let own = name == "dashboard" && dashboard::is_own_endpoint(endpoint, self.plan.dashboard);
        cmd.env("FLOTILLA_OTLP_ENDPOINT", if own { "" } else { endpoint });
        if name == "inventory" && std::env::var_os("FLOTILLA_INVENTORY__SEED").is_none() {
            cmd.env("FLOTILLA_INVENTORY__SEED", "true");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", spec.binary.display()))?;
        let pid = child.id().context("the child has no pid")?;
        let path = self.log_path(name, ordinal);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let log = Arc::new(std::sync::Mutex::new(log));
        let label: Arc<str> = if ordinal <= 1 {
            Arc::from(name)
        } else {
            Arc::from(format!("{name}-{ordinal}"))
        };
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(pump(label.clone(), stdout, log.clone(), self.out.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(pump(label, stderr, log, self.out.clone()));
        }
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = events.send(Event::Exited { id, pid, status });
            }
        });
        let proc = self.proc_mut(id).expect("checked above");
        proc.pid = Some(pid);
        proc.started = Instant::now();
        Ok(pid)
    }

    async fn wait_registry(&mut self) -> anyhow::Result<()> {
        let client = self.registry_client()?;
        self.poll_until(|| {
            let client = client.clone();
            async move { client.services().await.is_ok() }
        })
        .await
    }

    /// Ready means: registered with this pid, and its admin `/readyz` answers 200.
    async fn wait_ready(&mut self, name: &'static str, pid: u32) -> anyhow::Result<()> {
        let client = self.registry_client()?;
        let http = self.http.clone();
        self.poll_until(|| {
            let (client, http) = (client.clone(), http.clone());
            async move { fleet::is_ready(&*client, &http, name, pid).await }
        })
        .await
    }

    /// The directory of the discovery the plan uses, as the operator.
    fn registry_client(&self) -> anyhow::Result<Arc<dyn kit::discovery::Directory>> {
        Ok(kit::discovery::directory_from_url(&self.plan.discovery())?)
    }

    /// Polls `check` until it holds, a service exits, or the timeout passes.
    async fn poll_until<F, Fut>(&mut self, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut delay = Duration::from_millis(10);
        loop {
            if check().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not ready after {READY_TIMEOUT:?}");
            }
            if let Ok(Event::Exited { id, status, .. }) = self.inbox.try_recv() {
                let name = self.proc(id).map_or("a service", |p| p.service);
                self.procs.retain(|p| p.id != id);
                bail!("{name} exited during start-up ({})", describe(status));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Restarts what crashes and carries out the fleet operations' requests until a stop
    /// signal; returns the exit code for `up`.
    async fn supervise(&mut self) -> ExitCode {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            let event = tokio::select! {
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => return ExitCode::SUCCESS,
                e = self.inbox.recv() => e,
            };
            let Some(event) = event else {
                return ExitCode::FAILURE;
            };
            if let Some(code) = self.handle(event) {
                return code;
            }
        }
    }

    /// Handles one event; `Some` ends `up` with that code.
    fn handle(&mut self, event: Event) -> Option<ExitCode> {
        match event {
            Event::Exited { id, pid, status } => return self.exited(id, pid, status),
            Event::Restart(id) => {
                if self
                    .proc(id)
                    .is_some_and(|p| p.pid.is_none() && p.stopping.is_none())
                {
                    match self.spawn(id) {
                        Ok(pid) => {
                            let name = self.proc(id).map_or("?", |p| p.service);
                            self.out.line(&format!("{name} restarted (pid {pid})"));
                        }
                        Err(e) => self.out.line(&format!("cannot restart: {e:#}")),
                    }
                }
            }
            Event::Spawn {
                service,
                spec,
                reply,
            } => {
                let _ = reply.send(self.spawn_new(service, spec, false));
            }
            Event::Adopt(id) => {
                if let Some(p) = self.proc_mut(id) {
                    p.adopted = true;
                }
            }
            Event::Stop { id, reply } => self.stop_one(id, reply),
            Event::Overdue { id, pid } => {
                if self.proc(id).is_some_and(|p| p.pid == Some(pid)) {
                    let name = self.proc(id).map_or("?", |p| p.service);
                    self.out.line(&format!(
                        "{name} (pid {pid}) did not stop in time; killing it"
                    ));
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
            Event::List { service, reply } => {
                let views = self
                    .procs
                    .iter()
                    .filter(|p| p.service == service)
                    .map(|p| View {
                        id: p.id,
                        pid: p.pid,
                        spec: p.spec.clone(),
                        stopping: p.stopping.is_some(),
                    })
                    .collect();
                let _ = reply.send(views);
            }
        }
        None
    }

    /// An instance's process ended: done if it was stopped on purpose, else restarted
    /// with backoff (or given up on, if it never was ready).
    fn exited(&mut self, id: u64, pid: u32, status: std::process::ExitStatus) -> Option<ExitCode> {
        let proc = self.proc_mut(id)?;
        if proc.pid != Some(pid) {
            return None;
        }
        proc.pid = None;
        let name = proc.service;
        if let Some(waiters) = proc.stopping.take() {
            self.procs.retain(|p| p.id != id);
            for w in waiters {
                let _ = w.send(());
            }
            return None;
        }
        if !proc.adopted {
            self.out.line(&format!(
                "{name} (new instance, pid {pid}) exited before it was ready ({}); not restarting it",
                describe(status)
            ));
            self.procs.retain(|p| p.id != id);
            return None;
        }
        if status.code() == Some(EX_USAGE) {
            self.out.line(&format!(
                "{name} stopped: invalid configuration ({}); see {}",
                describe(status),
                self.log_path(name, self.proc(id).map_or(1, |p| p.ordinal))
                    .display()
            ));
            self.procs.retain(|p| p.id != id);
            return Some(ExitCode::from(EX_USAGE as u8));
        }
        self.forget(name, pid);
        let proc = self.proc_mut(id).expect("checked above");
        if proc.started.elapsed() > STABLE_AFTER {
            proc.restarts = 0;
        }
        let backoff = backoff(proc.restarts);
        proc.restarts += 1;
        let restarts = proc.restarts;
        self.out.line(&format!(
            "{name} exited ({}); restarting in {backoff:?} (restart #{restarts})",
            describe(status),
        ));
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            let _ = events.send(Event::Restart(id));
        });
        None
    }

    /// Removes the registration of `name`'s instance that ran as `pid`, which just died,
    /// from discovery at once: otherwise callers keep picking it (and failing over)
    /// until its lease runs out. In the background; if it fails, the lease still does.
    fn forget(&self, name: &'static str, pid: u32) {
        if name == "registry" {
            return;
        }
        let Ok(directory) = self.registry_client() else {
            return;
        };
        tokio::spawn(async move {
            let pid = pid.to_string();
            let Ok(entry) = directory.service(name).await else {
                return;
            };
            for i in entry
                .instances
                .iter()
                .filter(|i| i.metadata.get("pid") == Some(&pid))
            {
                match directory.deregister(name, &i.id).await {
                    Ok(()) => {
                        tracing::debug!(service = name, instance = %i.id, "dead instance deregistered")
                    }
                    Err(e) => {
                        tracing::debug!(service = name, error = %e, "deregistering a dead instance failed; its lease will run out")
                    }
                }
            }
        });
    }

    /// Tells instance `id` to drain and stop (SIGTERM); `reply` hears when it exited.
    fn stop_one(&mut self, id: u64, reply: oneshot::Sender<()>) {
        let Some(proc) = self.proc_mut(id) else {
            let _ = reply.send(());
            return;
        };
        let Some(pid) = proc.pid else {
            // Waiting for a restart: nothing runs, so nothing to drain.
            self.procs.retain(|p| p.id != id);
            let _ = reply.send(());
            return;
        };
        proc.stopping.get_or_insert_with(Vec::new).push(reply);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        // A service that does not stop within its drain is killed (by the supervisor,
        // which knows whether that pid is still this instance's).
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(STOP_TIMEOUT).await;
            let _ = events.send(Event::Overdue { id, pid });
        });
    }

    /// SIGTERM to every instance, gateway first, then the business services together,
    /// then the bus and the registry, each stage given time to drain; whatever is left
    /// after [`STOP_TIMEOUT`] is killed.
    async fn stop_all(&mut self) {
        self.out.line("stopping Flotilla…");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let stages: [&dyn Fn(&str) -> bool; 4] = [
            &|n| n == "gateway",
            &|n| !matches!(n, "gateway" | "bus" | "registry"),
            &|n| n == "bus",
            &|n| n == "registry",
        ];
        for stage in stages {
            let mut running: Vec<(u64, u32, &'static str)> = self
                .procs
                .iter()
                .filter(|p| stage(p.service))
                .filter_map(|p| Some((p.id, p.pid?, p.service)))
                .collect();
            self.procs.retain(|p| !stage(p.service));
            running.retain(|&(_, pid, _)| kill(Pid::from_raw(pid as i32), Signal::SIGTERM).is_ok());
            while !running.is_empty() && Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_millis(50), self.inbox.recv()).await {
                    Ok(Some(Event::Exited { id, pid, .. })) => {
                        running.retain(|r| (r.0, r.1) != (id, pid));
                    }
                    Ok(Some(Event::Stop { reply, .. })) => {
                        let _ = reply.send(());
                    }
                    Ok(None) => break,
                    _ => {}
                }
                running.retain(|&(_, pid, _)| kill(Pid::from_raw(pid as i32), None).is_ok());
            }
            for (_, pid, name) in running {
                self.out
                    .line(&format!("{name} did not stop in time; killing it"));
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        self.out.line("stopped.");
    }
}

/// The file auth writes the seeded administrator's credentials to.
fn credentials_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("admin-credentials.json")
}

/// When the credentials file was last written, if it exists.
fn credentials_stamp(data_dir: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(credentials_path(data_dir))
        .and_then(|m| m.modified())
        .ok()
}

/// The lines announcing the administrator's credentials, when auth wrote them during this
/// start (so they are shown once, at first start, and never again).
fn new_admin_credentials(
    data_dir: &std::path::Path,
    before: Option<std::time::SystemTime>,
) -> Option<String> {
    let now = credentials_stamp(data_dir)?;
    if before.is_some_and(|b| b >= now) {
        return None;
    }
    let path = credentials_path(data_dir);
    let creds: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    Some(format!(
        "Administrator account (shown once; kept in {}, mode 0600):\n  email     {}\n  password  {}\n",
        path.display(),
        creds["email"].as_str()?,
        creds["password"].as_str()?,
    ))
}

/// 200 ms doubling per restart, at most 10 s.
fn backoff(restarts: u32) -> Duration {
    Duration::from_millis(200)
        .saturating_mul(1u32 << restarts.min(6))
        .min(Duration::from_secs(10))
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?");
            format!("signal {sig} {name}")
        }
        _ => "unknown status".to_owned(),
    }
}

/// Copies a child's output line by line to its log file and the terminal.
async fn pump(
    name: Arc<str>,
    stream: impl AsyncRead + Unpin,
    log: Arc<std::sync::Mutex<std::fs::File>>,
    out: Arc<Printer>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{line}");
        }
        out.service_line(&name, &line);
    }
}

/// The terminal: progress bars during start-up, then coloured log lines.
struct Printer {
    multi: MultiProgress,
    colour: bool,
    /// Whether start-up is over (logs of level info and below are shown only then).
    live: std::sync::atomic::AtomicBool,
}

impl Printer {
    fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
            colour: std::io::stdout().is_terminal(),
            live: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn line(&self, text: &str) {
        self.multi.suspend(|| println!("{text}"));
    }

    fn line_if_plain(&self, text: &str) {
        if !std::io::stderr().is_terminal() {
            self.line(text);
        }
    }

    fn service_line(&self, name: &str, raw: &str) {
        let live = self.live.load(std::sync::atomic::Ordering::Relaxed);
        let rendered = render(name, raw, self.colour);
        if live || rendered.1 {
            self.line(&rendered.0);
        }
    }
}

const PALETTE: [u8; 6] = [36, 35, 33, 32, 34, 91];

/// Renders one JSON log line for the terminal; the flag says whether it is a warning or
/// an error (shown even during start-up).
fn render(name: &str, raw: &str, colour: bool) -> (String, bool) {
    let service = name.split('-').next().unwrap_or(name);
    let idx = NAMES.iter().position(|n| *n == service).unwrap_or(0) % PALETTE.len();
    let prefix = if colour {
        format!("\x1b[{}m{name:>13} |\x1b[0m", PALETTE[idx])
    } else {
        format!("{name:>13} |")
    };
    let Ok(serde_json::Value::Object(v)) = serde_json::from_str::<serde_json::Value>(raw) else {
        return (format!("{prefix} {raw}"), true);
    };
    let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("INFO");
    let time = v
        .get("time")
        .and_then(|t| t.as_str())
        .and_then(|t| t.get(11..19))
        .unwrap_or("");
    let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let fields = v
        .get("fields")
        .and_then(|f| f.as_object())
        .map(|f| {
            f.iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!(" {k}={s}"),
                    other => format!(" {k}={other}"),
                })
                .collect::<String>()
        })
        .unwrap_or_default();
    let loud = matches!(level, "WARN" | "ERROR");
    let level_text = if colour {
        let c = match level {
            "ERROR" => 31,
            "WARN" => 33,
            "DEBUG" | "TRACE" => 90,
            _ => 32,
        };
        format!("\x1b[{c}m{level:<5}\x1b[0m")
    } else {
        format!("{level:<5}")
    };
    (
        format!("{prefix} {time} {level_text} {message}{fields}"),
        loud,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_credentials_are_announced_only_when_new() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(new_admin_credentials(dir.path(), None), None);
        std::fs::write(
            credentials_path(dir.path()),
            r#"{"email":"admin@flotilla.local","password":"pw-123"}"#,
        )
        .unwrap();
        let shown = new_admin_credentials(dir.path(), None).unwrap();
        assert!(shown.contains("admin@flotilla.local") && shown.contains("pw-123"));
        let stamp = credentials_stamp(dir.path());
        assert_eq!(new_admin_credentials(dir.path(), stamp), None);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(20), Duration::from_secs(10));
    }

    #[test]
    fn renders_json_log_lines() {
        let (line, loud) = render(
            "inventory",
            r#"{"time":"2026-01-02T03:04:05.123Z","level":"WARN","message":"slow","fields":{"ms":12,"sku":"A1"}}"#,
            false,
        );
        assert_eq!(line, "    inventory | 03:04:05 WARN  slow ms=12 sku=A1");
        assert!(loud);
        let (raw, _) = render("gateway", "not json", false);
        assert_eq!(raw, "      gateway | not json");
    }
}
