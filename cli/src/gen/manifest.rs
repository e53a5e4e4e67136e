//! `services/<name>/service.toml`: how one service is deployed, the one input of every
//! generator.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// One service's deployment manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The service name (its directory, its config section, its SPIFFE id's path).
    pub name: String,
    /// One line for image labels and comments.
    pub description: String,
    /// The system's public entry point (no mTLS on its public port).
    #[serde(default)]
    pub edge: bool,
    /// Whether compose and Kubernetes run it (`false`: an image only).
    #[serde(default = "yes")]
    pub cluster: bool,
    /// The services it calls (the call policy's row for it).
    #[serde(default)]
    pub calls: Vec<String>,
    /// Whether it publishes or consumes events.
    #[serde(default)]
    pub bus: bool,
    /// Instances in production.
    pub replicas: u32,
    /// Listen ports inside the container.
    pub ports: Ports,
    /// The datastore it owns.
    pub store: Option<Store>,
    /// Secrets besides the store URL.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Destinations outside the system it sends to.
    #[serde(default)]
    pub egress: Vec<Egress>,
    /// Extra settings (environment variables) every instance gets.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Requests and limits per instance.
    pub resources: Resources,
    /// The HorizontalPodAutoscaler's bounds.
    pub autoscale: Autoscale,
}

fn yes() -> bool {
    true
}

/// Listen ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    /// The public (REST) listener.
    pub http: u16,
    /// The internal gRPC listener, where the service has one.
    pub grpc: Option<u16>,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: u16,
}

/// A datastore a service owns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// `postgres`, `mysql` or `redis`.
    pub kind: StoreKind,
    /// The key in the service's section that takes the URL (`store`).
    pub setting: String,
    /// Redis database number (one per service).
    pub database: Option<u8>,
}

/// The kinds of datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// PostgreSQL.
    Postgres,
    /// MariaDB (MySQL protocol).
    Mysql,
    /// Redis.
    Redis,
}

impl StoreKind {
    /// The host name of the server in compose and in the cluster's data namespace.
    pub fn host(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mariadb",
            Self::Redis => "redis",
        }
    }

    /// Its port.
    pub fn port(self) -> u16 {
        match self {
            Self::Postgres => 5432,
            Self::Mysql => 3306,
            Self::Redis => 6379,
        }
    }
}

/// A secret setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// Its key in the service's Secret.
    pub key: String,
    /// The key in the service's section that takes it.
    pub setting: String,
    /// Whether the service starts without it.
    #[serde(default)]
    pub optional: bool,
}

/// A destination outside the system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// What it is (for comments and policy names).
    pub name: String,
    /// Its TCP port.
    pub port: u16,
}

/// Kubernetes resource quantities.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU request.
    pub cpu: String,
    /// Memory request.
    pub memory: String,
    /// CPU limit.
    pub cpu_limit: String,
    /// Memory limit.
    pub memory_limit: String,
}

/// Autoscaling bounds; the minimum is `replicas`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// The most instances.
    pub max: u32,
    /// Target average CPU utilisation.
    pub cpu_percent: u32,
}

impl Manifest {
    /// The binary the service's crate builds (`flotilla-orders`).
    pub fn bin(&self) -> String {
        format!("flotilla-{}", self.name)
    }

    /// The environment variable of a key in this service's section.
    pub fn env_name(&self, key: &str) -> String {
        kit::config::env_name(Some(&self.name), key)
    }

    /// Every secret: the store URL first, then the others.
    pub fn all_secrets(&self) -> Vec<Secret> {
        let store = self.store.iter().map(|s| Secret {
            key: "store-url".to_owned(),
            setting: s.setting.clone(),
            optional: false,
        });
        store.chain(self.secrets.iter().cloned()).collect()
    }

    /// The ports by name, in a fixed order.
    pub fn named_ports(&self) -> Vec<(&'static str, u16)> {
        let mut ports = vec![("http", self.ports.http)];
        if let Some(grpc) = self.ports.grpc {
            ports.push(("grpc", grpc));
        }
        ports.push(("admin", self.ports.admin));
        ports
    }

    /// The settings every container of this service gets (listen addresses, extras).
    pub fn listen_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                self.env_name("listen"),
                format!("0.0.0.0:{}", self.ports.http),
            ),
            (
                self.env_name("admin_listen"),
                format!("0.0.0.0:{}", self.ports.admin),
            ),
        ];
        if let Some(grpc) = self.ports.grpc {
            env.push((self.env_name("grpc_listen"), format!("0.0.0.0:{grpc}")));
        }
        env
    }
}

/// The ports every deployed service listens on. DNS gives addresses, not ports, so
/// the kit's `dns://` resolver is told them once for all services.
pub const CLUSTER_PORTS: Ports = Ports {
    http: 8080,
    grpc: Some(9090),
    admin: 9100,
};

/// The `dns://` query options naming [`CLUSTER_PORTS`].
pub fn dns_ports() -> String {
    let p = &CLUSTER_PORTS;
    format!(
        "port={}&grpc_port={}&admin_port={}",
        p.http,
        p.grpc.unwrap_or_default(),
        p.admin
    )
}

/// Reads `services/*/service.toml` under `root`, in name order.
pub fn load_all(root: &Path) -> anyhow::Result<Vec<Manifest>> {
    let dir = root.join("services");
    let mut manifests = Vec::new();
    let entries = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path().join("service.toml");
        if path.exists() {
            manifests.push(load(&path)?);
        }
    }
    manifests.sort_by(|a, b| a.name.cmp(&b.name));
    check(&manifests)?;
    Ok(manifests)
}

/// Reads one manifest.
pub fn load(path: &Path) -> anyhow::Result<Manifest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: Manifest =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let dir = path.parent().and_then(Path::file_name);
    if dir.is_some_and(|d| d != manifest.name.as_str()) {
        bail!(
            "{}: name = {:?} differs from its directory",
            path.display(),
            manifest.name
        );
    }
    Ok(manifest)
}

/// Cross-checks a set of manifests: every call names a service that runs in the cluster.
fn check(manifests: &[Manifest]) -> anyhow::Result<()> {
    for m in manifests {
        for callee in &m.calls {
            if !manifests.iter().any(|o| &o.name == callee && o.cluster) {
                bail!("{}: calls {callee:?}, which is not deployed", m.name);
            }
        }
        let c = &CLUSTER_PORTS;
        let grpc_ok = m.ports.grpc.is_none() || m.ports.grpc == c.grpc;
        if m.ports.http != c.http || m.ports.admin != c.admin || !grpc_ok {
            bail!(
                "{}: ports must be http {}, grpc {:?}, admin {} (discovery by DNS assumes one set)",
                m.name,
                c.http,
                c.grpc,
                c.admin
            );
        }
        if m.autoscale.max < m.replicas {
            bail!("{}: autoscale.max is below replicas", m.name);
        }
    }
    Ok(())
}
