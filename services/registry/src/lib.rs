//! The Flotilla registry: instances register with a lease and heartbeat, clients list
//! and watch (long-poll) the instances of a service.
//!
//! State lives in memory and is written to a snapshot file after every change, so a
//! restarted registry answers with the last known instances at once; they stay only if
//! they keep heartbeating. In production Kubernetes DNS or etcd take this role.

pub mod api;
pub mod domain;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::service::{Context, Service, StartError};
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use domain::{Registry, SnapshotFile};

/// The `[registry]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// Public listener (`FLOTILLA_REGISTRY__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_REGISTRY__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// Snapshot file (`FLOTILLA_REGISTRY__SNAPSHOT`); default `<data dir>/registry/snapshot.json`.
    pub snapshot: Option<PathBuf>,
    /// How often leases are checked (`FLOTILLA_REGISTRY__REAP_INTERVAL`).
    #[serde(with = "kit::config::duration")]
    pub reap_interval: Duration,
    /// Traffic rules per service at start (`[registry.traffic.orders] split = {…}`);
    /// rules set at run time (`flotilla traffic`) and kept in the snapshot win.
    pub traffic: std::collections::BTreeMap<String, kit::discovery::traffic::TrafficPolicy>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8082).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            snapshot: None,
            reap_interval: Duration::from_millis(250),
            traffic: std::collections::BTreeMap::new(),
        }
    }
}

/// Shared state of the registry process.
#[derive(Debug)]
pub struct State {
    registry: Mutex<Registry>,
    /// Bumped on every change; watchers wait on it.
    changes: watch::Sender<u64>,
    /// Wakes the snapshot writer.
    dirty: Notify,
}

impl State {
    fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::new(registry),
            changes: watch::channel(0).0,
            dirty: Notify::new(),
        })
    }

    /// Runs `f` on the registry; if it reports a change, watchers and the snapshot
    /// writer are told.
    pub fn update<T>(&self, f: impl FnOnce(&mut Registry) -> (T, bool)) -> T {
        let (out, changed) = {
            let mut r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut r)
        };
        if changed {
            self.changes.send_modify(|c| *c += 1);
            self.dirty.notify_one();
        }
        out
    }

    /// Reads the registry.
    pub fn read<T>(&self, f: impl FnOnce(&Registry) -> T) -> T {
        f(&self.registry.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

fn load_snapshot(path: &PathBuf) -> Registry {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<SnapshotFile>(&bytes) {
            Ok(file) => {
                let r = Registry::restore(file, Instant::now());
                tracing::info!(path = %path.display(), services = r.services(Instant::now()).len(), "restored registry snapshot");
                r
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable snapshot");
                Registry::default()
            }
        },
        Err(_) => Registry::default(),
    }
}

async fn write_snapshot(path: &PathBuf, file: &SnapshotFile) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, serde_json::to_vec_pretty(file)?).await?;
    tokio::fs::rename(&tmp, path).await
}

/// Runs the registry until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Binds the registry's listeners, restores its snapshot and starts its background
/// tasks; the returned service is ready to run.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let cfg: RegistryConfig = ctx.config.section("registry")?;
    let service = Service::bind(&ctx, cfg.listen, cfg.admin_listen).await?;
    let snapshot = cfg
        .snapshot
        .clone()
        .unwrap_or_else(|| ctx.common.data_dir.join("registry").join("snapshot.json"));
    if let Some(dir) = snapshot.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            StartError::Other(format!(
                "setting `FLOTILLA_REGISTRY__SNAPSHOT`: cannot create {}: {e}",
                dir.display()
            ))
        })?;
    }
    let mut registry = load_snapshot(&snapshot);
    for (name, rules) in cfg.traffic {
        rules
            .validate()
            .map_err(|e| StartError::Other(format!("setting `[registry.traffic.{name}]`: {e}")))?;
        if registry.traffic(&name).is_none() {
            registry.set_traffic(&name, Some(rules));
        }
    }
    let state = State::new(registry);
    spawn_background(state.clone(), snapshot, cfg.reap_interval);
    spawn_self_registration(&ctx, &service, state.clone());
    Ok(service.without_registration().router(api::router(state)))
}

/// Lists the registry itself as service `registry`, renewed like any instance, so
/// `flotilla status` and the dashboard see it with its address, pid and memory.
fn spawn_self_registration(ctx: &Context, service: &Service, state: Arc<State>) {
    let (id, version, ttl) = (
        ctx.instance_id.clone(),
        ctx.common.version.clone(),
        ctx.common.lease_ttl,
    );
    let addr = kit::service::advertised(service.public_addr());
    let admin = service.admin_addr();
    let started = std::time::SystemTime::now();
    tokio::spawn(async move {
        loop {
            let req = kit::discovery::registry::RegisterRequest {
                addr: addr.clone(),
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                metadata: kit::service::instance_metadata(admin, &version, started),
            };
            state.update(|r| ((), r.register("registry", &id, req, Instant::now())));
            tokio::time::sleep(ttl / 3).await;
        }
    });
}

/// Starts the lease reaper and the snapshot writer.
pub fn spawn_background(state: Arc<State>, snapshot: PathBuf, reap_interval: Duration) {
    let reaper = state.clone();
    tokio::spawn(async move {
        let mut last = Instant::now();
        let mut tick = tokio::time::interval(reap_interval);
        loop {
            tick.tick().await;
            let now = Instant::now();
            reaper.update(|r| {
                let changed = r.expire(now, last);
                for name in &changed {
                    tracing::info!(service = %name, "leases expired");
                }
                ((), !changed.is_empty())
            });
            last = now;
        }
    });
    tokio::spawn(async move {
        loop {
            state.dirty.notified().await;
            // Coalesce bursts of changes into one write.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let file = state.read(Registry::snapshot);
            if let Err(e) = write_snapshot(&snapshot, &file).await {
                tracing::warn!(path = %snapshot.display(), error = %e, "cannot write snapshot");
            }
        }
    });
}
