//! Starts `flotilla up` in a temporary data directory on free ports and cleans up after.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The `flotilla` binary under test.
pub fn flotilla() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
}

/// A finished command's stdout, then its stderr, as text.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port nothing listens on right now, below the kernel's ephemeral range: the
/// services `up` starts on port 0 take ephemeral ports, so one of them cannot grab this
/// port between the test choosing it and the gateway, registry or bus binding it.
pub fn free_port() -> u16 {
    use rand::RngExt;
    for _ in 0..1000 {
        let port = rand::rng().random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// A client with `identity`'s certificate from `<data dir>/tls/`.
pub fn internal_client(data_dir: &std::path::Path, identity: &str) -> reqwest::Client {
    use kit::security::mtls::{self, CallPolicy, InternalTransport, Mtls, SpiffeId, TlsConfig};
    let (ca, cert, key) = TlsConfig::default().files(data_dir, identity);
    let id = SpiffeId::new(mtls::DEFAULT_TRUST_DOMAIN, identity).unwrap();
    let mtls = Mtls::from_files(id, &ca, &cert, &key, CallPolicy::default())
        .expect("flotilla up issued the certificate");
    InternalTransport::Mtls(std::sync::Arc::new(mtls))
        .reqwest_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Whether a process exists.
pub fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// A running system.
pub struct System {
    up: Option<Child>,
    pub gateway: String,
    pub registry: String,
    /// The dashboard's public listener (`http://127.0.0.1:port`).
    pub dashboard: String,
    /// Where the services register (`FLOTILLA_DISCOVERY`): the embedded registry, or
    /// what the test gave (`etcd://…`).
    pub discovery: String,
    /// For the gateway (the edge) and admin listeners.
    pub http: reqwest::Client,
    /// For internal listeners (the registry): mTLS as `operator`, the identity
    /// `flotilla up` issues for the commands.
    pub operator: reqwest::Client,
    /// For calling a service directly with identity headers, which only the gateway
    /// may send: mTLS with the gateway's certificate.
    pub as_gateway: reqwest::Client,
    pub data: tempfile::TempDir,
    seen_pids: Vec<u32>,
}

impl System {
    /// Environment for every `flotilla` command aimed at this system.
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("FLOTILLA_DISCOVERY", &self.discovery)
            .env("FLOTILLA_DATA_DIR", self.data.path())
            .env("FLOTILLA_DASHBOARD", &self.dashboard);
    }

    /// Starts `flotilla up` and waits until the gateway serves products.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Like [`System::start`], with the services exporting their spans and logs to the
    /// fleet's dashboard, as `flotilla up` does by default. The other tests run without
    /// export: a few dozen fleets start at once on two cores, and the tests that are
    /// not about telemetry should not pay for it (`.ci/chaos` runs the full fleet with
    /// export on, under load and kills).
    pub async fn start_traced() -> Self {
        Self::start_inner(&[], true).await
    }

    /// Like [`System::start`], with extra environment for every service.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_inner(env, false).await
    }

    async fn start_inner(env: &[(&str, &str)], traced: bool) -> Self {
        kit::security::mtls::install_crypto_provider();
        // With the insecure switch the internal listeners speak plain HTTP and `up`
        // issues no certificates.
        let insecure = env
            .iter()
            .any(|&(k, v)| k == "FLOTILLA_INSECURE_INTERNAL" && v == "1");
        let data = tempfile::tempdir().unwrap();
        let (gw, reg, bus, dash) = (free_port(), free_port(), free_port(), free_port());
        let discovery = env
            .iter()
            .find(|&&(k, _)| k == "FLOTILLA_DISCOVERY")
            .map_or_else(
                || format!("registry://127.0.0.1:{reg}"),
                |&(_, v)| v.to_owned(),
            );
        let up = flotilla()
            .arg("up")
            .arg("--data-dir")
            .arg(data.path())
            .env("FLOTILLA_GATEWAY__LISTEN", format!("127.0.0.1:{gw}"))
            .env("FLOTILLA_BUS__LISTEN", format!("127.0.0.1:{bus}"))
            .env("FLOTILLA_REGISTRY__LISTEN", format!("127.0.0.1:{reg}"))
            // Tests run several systems at once: none on the dashboard's fixed port.
            .env("FLOTILLA_DASHBOARD__LISTEN", format!("127.0.0.1:{dash}"))
            .env("FLOTILLA_LEASE_TTL", "1s")
            .env_remove("FLOTILLA_DISCOVERY")
            .env_remove("FLOTILLA_OTLP_ENDPOINT")
            .envs((!traced).then_some(("FLOTILLA_OTLP_ENDPOINT", "")))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("flotilla up starts");
        let mut sys = Self {
            up: Some(up),
            gateway: format!("http://127.0.0.1:{gw}"),
            dashboard: format!("http://127.0.0.1:{dash}"),
            registry: format!(
                "{}://127.0.0.1:{reg}",
                if insecure { "http" } else { "https" }
            ),
            discovery,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            // Replaced by the operator's client once `up` has issued the certificates.
            operator: reqwest::Client::new(),
            as_gateway: reqwest::Client::new(),
            data,
            seen_pids: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = sys
                .http
                .get(format!("{}/api/products", sys.gateway))
                .send()
                .await
                && r.status() == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the system did not come up in 60 s"
            );
            if let Some(status) = sys.up.as_mut().unwrap().try_wait().unwrap() {
                let logs = sys.logs();
                panic!("flotilla up exited early ({status}); logs:\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !insecure {
            sys.operator = internal_client(sys.data.path(), kit::security::mtls::OPERATOR);
            sys.as_gateway = internal_client(sys.data.path(), "gateway");
        }
        sys.remember_pids().await;
        sys
    }

    /// Logs in through the gateway as the administrator `up` seeded; returns an access
    /// token.
    pub async fn admin_token(&self) -> String {
        let creds: Value = serde_json::from_slice(
            &std::fs::read(self.data.path().join("admin-credentials.json")).unwrap(),
        )
        .unwrap();
        let res = self
            .http
            .post(format!("{}/api/auth/login", self.gateway))
            .json(&serde_json::json!({"email": creds["email"], "password": creds["password"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "the seeded administrator logs in");
        let body: Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Every service's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(dir) = std::fs::read_dir(self.data.path().join("logs")) {
            for f in dir.flatten() {
                out.push_str(&format!("== {}\n", f.path().display()));
                out.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
            }
        }
        out
    }

    /// `GET /v1/services/{name}` instances.
    pub async fn instances(&self, service: &str) -> Vec<Value> {
        let v: Value = self
            .operator
            .get(format!("{}/v1/services/{service}", self.registry))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["instances"].as_array().cloned().unwrap_or_default()
    }

    /// The admin address of the first instance of `service`.
    pub async fn admin(&self, service: &str) -> String {
        let i = self.instances(service).await;
        let addr = i[0]["metadata"]["admin_addr"].as_str().expect("admin_addr");
        format!("http://{addr}")
    }

    /// Sum of a Prometheus counter of the first instance of `service` over the series
    /// whose labels contain `filter`.
    pub async fn counter(&self, service: &str, name: &str, filter: &str) -> f64 {
        self.counter_at(&self.admin(service).await, name, filter)
            .await
    }

    /// Like [`System::counter`], of the instance whose admin listener is `admin`
    /// (`http://host:port`).
    pub async fn counter_at(&self, admin: &str, name: &str, filter: &str) -> f64 {
        let text = self
            .http
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Runs a `flotilla` subcommand against this system; panics unless it succeeds.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = flotilla();
        self.env(&mut cmd);
        let out = cmd.args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "flotilla {args:?} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Records the pids of every registered instance (checked at stop).
    pub async fn remember_pids(&mut self) {
        if self.discovery.starts_with("etcd://") {
            let directory = kit::discovery::directory_from_url(&self.discovery).unwrap();
            let services = directory.services().await.expect("etcd answers");
            for i in services.iter().flat_map(|s| &s.instances) {
                if let Some(pid) = i.metadata.get("pid").and_then(|p| p.parse().ok())
                    && !self.seen_pids.contains(&pid)
                {
                    self.seen_pids.push(pid);
                }
            }
            return;
        }
        // A connection kept from before a registry restart fails once: ask again.
        let mut attempts = 0;
        let all: Value = loop {
            attempts += 1;
            let answer = self
                .operator
                .get(format!("{}/v1/services", self.registry))
                .send()
                .await;
            match answer {
                Ok(r) => break r.json().await.unwrap(),
                Err(e) if attempts >= 5 => panic!("the registry does not answer: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        for s in all.as_array().unwrap() {
            for i in s["instances"].as_array().unwrap() {
                if let Some(pid) = i["metadata"]["pid"].as_str().and_then(|p| p.parse().ok())
                    && !self.seen_pids.contains(&pid)
                {
                    self.seen_pids.push(pid);
                }
            }
        }
    }

    /// Every pid seen so far.
    pub fn pids(&self) -> &[u32] {
        &self.seen_pids
    }

    /// Sends SIGINT to `flotilla up` and waits for it to exit.
    pub fn interrupt(&mut self) -> ExitStatus {
        let mut up = self.up.take().expect("running");
        kill(Pid::from_raw(up.id() as i32), Signal::SIGINT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = up.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "flotilla up did not stop within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some(mut up) = self.up.take() {
            let _ = kill(Pid::from_raw(up.id() as i32), Signal::SIGINT);
            std::thread::sleep(Duration::from_secs(2));
            let _ = up.kill();
            let _ = up.wait();
        }
        for &pid in &self.seen_pids {
            if alive(pid) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}
