//! The fleet operations of a running `up`: scale one service, roll it out to a new
//! binary or version one instance at a time, or shift traffic to a canary step by step
//! and roll back on its own metrics.
//!
//! Operations run as tasks beside the supervisor and ask it (by [`Event`]s) to start
//! and stop instances; one operation per service at a time. A new instance counts only
//! once it is registered and its `/readyz` answers 200; stopping one drains it
//! (deregister, let the clients hear of it, finish in-flight requests, exit).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kit::discovery::Directory;
use kit::discovery::traffic::TrafficPolicy;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::control::{Reply, Request};
use super::{Event, Printer, Spec, View};
use crate::services::NAMES;

/// Services that listen on a fixed address, so one machine runs one instance of each.
pub const SINGLETONS: &[&str] = &["registry", "bus", "dashboard", "gateway"];

/// Most instances of one service `up` runs.
pub const MAX_REPLICAS: usize = 16;

/// Whether `up` can run `n` instances of `name`.
pub fn check_scalable(name: &str, n: usize) -> anyhow::Result<&'static str> {
    let Some(service) = NAMES.iter().copied().find(|s| *s == name) else {
        bail!(
            "unknown service {name:?}; expected one of {}",
            NAMES.join(", ")
        );
    };
    if SINGLETONS.contains(&service) && n != 1 {
        bail!(
            "{service} listens on a fixed address, so one machine runs exactly one instance \
             of it (run more behind a load balancer; see docs/operations.md)"
        );
    }
    if n > MAX_REPLICAS {
        bail!("at most {MAX_REPLICAS} instances of one service on one machine");
    }
    Ok(service)
}

/// What `flotilla rollout` asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPlan {
    pub service: String,
    /// The new binary (default: the one running now).
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// The new version (default: what the binary's `--version` says).
    #[serde(default)]
    pub version: Option<String>,
    /// Instances above the desired count while rolling.
    pub max_surge: usize,
    /// Instances below the desired count while rolling.
    pub max_unavailable: usize,
    /// How long a new instance may take to become ready.
    pub ready_timeout_ms: u64,
    /// Go back to what ran before the last rollout.
    #[serde(default)]
    pub undo: bool,
    /// Shift traffic step by step instead of replacing at once.
    #[serde(default)]
    pub canary: Option<CanaryPlan>,
}

/// How a canary rollout advances and when it rolls back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPlan {
    /// Traffic percentages, in order; 100 promotes the canary.
    pub steps: Vec<u32>,
    /// How long each step runs before it is judged.
    pub interval_ms: u64,
    /// Roll back when the canary's 5xx rate exceeds the stable version's by more than
    /// this (0.01 = one percentage point).
    pub max_error_rate: f64,
    /// Roll back when the canary's p99 exceeds this many times the stable version's
    /// (`None`: latency is not judged).
    #[serde(default)]
    pub max_p99_ratio: Option<f64>,
}

/// The spec a service runs now, and the one before its last rollout.
#[derive(Debug, Clone)]
struct Specs {
    current: Spec,
    previous: Option<Spec>,
}

/// Held while an operation changes one service.
type OneAtATime = Arc<tokio::sync::Mutex<()>>;

/// A handle on the running fleet, cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    events: mpsc::UnboundedSender<Event>,
    registry: Arc<dyn Directory>,
    http: reqwest::Client,
    default: Spec,
    specs: Arc<Mutex<HashMap<&'static str, Specs>>>,
    locks: Arc<Mutex<HashMap<&'static str, OneAtATime>>>,
    out: Arc<Printer>,
}

/// Sends progress to the client and to `up`'s terminal.
struct Say<'a> {
    tx: &'a mpsc::UnboundedSender<Reply>,
    out: &'a Printer,
}

impl Say<'_> {
    fn say(&self, text: impl Into<String>) {
        let text = text.into();
        self.out.line(&format!("{:>13} | {text}", "up"));
        let _ = self.tx.send(Reply::Progress(text));
    }
}

impl Fleet {
    pub(super) fn new(
        events: mpsc::UnboundedSender<Event>,
        registry: Arc<dyn Directory>,
        http: reqwest::Client,
        default: Spec,
        out: Arc<Printer>,
    ) -> Self {
        Self {
            events,
            registry,
            http,
            default,
            specs: Arc::default(),
            locks: Arc::default(),
            out,
        }
    }

    /// Runs one request to its end, reporting on `tx`.
    pub async fn execute(self, request: Request, tx: mpsc::UnboundedSender<Reply>) {
        let say = Say {
            tx: &tx,
            out: &self.out,
        };
        let service = match &request {
            Request::Scale { service, .. } => service.clone(),
            Request::Rollout(plan) => plan.service.clone(),
        };
        let lock = match NAMES.iter().copied().find(|s| *s == service) {
            Some(s) => self.lock(s),
            None => {
                let _ = tx.send(Reply::Failed(format!(
                    "unknown service {service:?}; expected one of {}",
                    NAMES.join(", ")
                )));
                return;
            }
        };
        let Ok(_one_at_a_time) = lock.try_lock() else {
            let _ = tx.send(Reply::Failed(format!(
                "another scale or rollout of {service} is running; try again when it ends"
            )));
            return;
        };
        let result = match request {
            Request::Scale {
                service,
                replicas,
                version,
                binary,
            } => self.scale(&service, replicas, version, binary, &say).await,
            Request::Rollout(plan) => self.rollout(plan, &say).await,
        };
        let _ = tx.send(match result {
            Ok(done) => Reply::Done(done),
            Err(e) => Reply::Failed(format!("{e:#}")),
        });
    }

    fn lock(&self, service: &'static str) -> OneAtATime {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(service).or_default().clone()
    }

    fn specs(&self, service: &'static str) -> Specs {
        let specs = self.specs.lock().unwrap_or_else(|p| p.into_inner());
        specs.get(service).cloned().unwrap_or_else(|| Specs {
            current: self.default.clone(),
            previous: None,
        })
    }

    fn set_current(&self, service: &'static str, current: Spec, previous: Spec) {
        let mut specs = self.specs.lock().unwrap_or_else(|p| p.into_inner());
        specs.insert(
            service,
            Specs {
                current,
                previous: Some(previous),
            },
        );
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Event) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(make(tx))
            .map_err(|_| anyhow::anyhow!("`up` is stopping"))?;
        rx.await.map_err(|_| anyhow::anyhow!("`up` is stopping"))
    }

    /// The instances of `service` that are not being stopped.
    async fn running(&self, service: &'static str) -> anyhow::Result<Vec<View>> {
        let all = self.ask(|reply| Event::List { service, reply }).await?;
        Ok(all.into_iter().filter(|v| !v.stopping).collect())
    }

    /// Drains and stops instance `id`; returns when it exited.
    async fn stop(&self, id: u64) -> anyhow::Result<()> {
        self.ask(|reply| Event::Stop { id, reply }).await
    }

    /// Starts an instance of `service` running `spec` and waits until it is ready; an
    /// instance that exits or is not ready within `timeout` is stopped and an error.
    async fn start_ready(
        &self,
        service: &'static str,
        spec: &Spec,
        timeout: Duration,
        say: &Say<'_>,
    ) -> anyhow::Result<u64> {
        let began = Instant::now();
        let (id, pid) = self
            .ask(|reply| Event::Spawn {
                service,
                spec: spec.clone(),
                reply,
            })
            .await??;
        say.say(format!(
            "{service}: started pid {pid} (version {}); waiting until it is ready",
            spec.version
        ));
        loop {
            if is_ready(&*self.registry, &self.http, service, pid).await {
                let _ = self.events.send(Event::Adopt(id));
                say.say(format!(
                    "{service}: pid {pid} is ready after {:.2}s",
                    began.elapsed().as_secs_f64()
                ));
                return Ok(id);
            }
            let alive = self
                .ask(|reply| Event::List { service, reply })
                .await?
                .iter()
                .any(|v| v.id == id && v.pid == Some(pid));
            if !alive {
                bail!(
                    "the new instance of {service} (pid {pid}, version {}) exited before it was ready; see its log",
                    spec.version
                );
            }
            if began.elapsed() > timeout {
                self.stop(id).await?;
                bail!(
                    "the new instance of {service} (pid {pid}, version {}) was not ready within {timeout:?}",
                    spec.version
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `flotilla scale`: runs `replicas` instances of the service's current version (or
    /// of `version`, next to the others — a canary by hand).
    async fn scale(
        &self,
        name: &str,
        replicas: usize,
        version: Option<String>,
        binary: Option<PathBuf>,
        say: &Say<'_>,
    ) -> anyhow::Result<String> {
        let service = check_scalable(name, replicas.max(1))?;
        let specs_now = self.specs(service);
        let running = self.running(service).await?;
        let spec = match version {
            None => {
                if binary.is_some() {
                    bail!("to change the binary of {service}, use `flotilla rollout --binary`");
                }
                if replicas == 0 {
                    bail!(
                        "{service} needs at least one instance; `flotilla up` runs every service"
                    );
                }
                specs_now.current.clone()
            }
            Some(v) => {
                if !kit::discovery::traffic::valid_version(&v) {
                    bail!("version {v:?} must be 1-64 of A-Z, a-z, 0-9, '.', '-', '_' and '+'");
                }
                let existing = running
                    .iter()
                    .find(|i| i.spec.version == v)
                    .map(|i| i.spec.clone());
                match (existing, binary) {
                    (Some(spec), None) => spec,
                    (Some(spec), Some(b)) if spec.binary == checked_binary(&b)? => spec,
                    (Some(_), Some(_)) => bail!(
                        "instances of {service} {v} run another binary; roll them out instead"
                    ),
                    (None, b) => Spec {
                        binary: match b {
                            Some(b) => checked_binary(&b)?,
                            None => specs_now.current.binary.clone(),
                        },
                        version: v,
                    },
                }
            }
        };
        if replicas == 0 && spec == specs_now.current {
            bail!("{service} needs at least one instance of its current version");
        }
        let total_now = running.len();
        let mut mine: Vec<View> = running.into_iter().filter(|v| v.spec == spec).collect();
        let total_after = total_now - mine.len() + replicas;
        if total_after > MAX_REPLICAS {
            bail!("at most {MAX_REPLICAS} instances of one service on one machine");
        }
        let timeout = super::READY_TIMEOUT;
        while mine.len() < replicas {
            self.start_ready(service, &spec, timeout, say).await?;
            mine = self
                .running(service)
                .await?
                .into_iter()
                .filter(|v| v.spec == spec)
                .collect();
        }
        // Newest first, so the longest-running instances stay.
        mine.sort_by_key(|v| std::cmp::Reverse(v.id));
        for victim in mine.iter().take(mine.len().saturating_sub(replicas)) {
            say.say(format!(
                "{service}: draining pid {}",
                victim.pid.map_or("-".into(), |p| p.to_string())
            ));
            self.stop(victim.id).await?;
        }
        let all = self.running(service).await?;
        Ok(format!(
            "{service}: {replicas} instance(s) of version {} ({} in all)",
            spec.version,
            all.len()
        ))
    }

    /// `flotilla rollout`.
    async fn rollout(&self, plan: RolloutPlan, say: &Say<'_>) -> anyhow::Result<String> {
        let service = check_scalable(&plan.service, 1)?;
        if SINGLETONS.contains(&service) {
            bail!(
                "{service} listens on a fixed address, so its new version cannot start beside \
                 the old one; restart `flotilla up` with the new binary instead"
            );
        }
        let specs = self.specs(service);
        let old = specs.current.clone();
        let new = if plan.undo {
            specs
                .previous
                .clone()
                .with_context(|| format!("{service} has no earlier rollout to go back to"))?
        } else {
            let binary = match &plan.binary {
                Some(b) => checked_binary(b)?,
                None => old.binary.clone(),
            };
            let version = match &plan.version {
                Some(v) => v.clone(),
                None => binary_version(&binary).await?,
            };
            if !kit::discovery::traffic::valid_version(&version) {
                bail!("version {version:?} must be 1-64 of A-Z, a-z, 0-9, '.', '-', '_' and '+'");
            }
            Spec { binary, version }
        };
        if new == old {
            bail!(
                "{service} already runs {} version {}; nothing to roll out",
                new.binary.display(),
                new.version
            );
        }
        let timeout = Duration::from_millis(plan.ready_timeout_ms);
        let began = Instant::now();
        let desired = self
            .running(service)
            .await?
            .iter()
            .filter(|v| v.spec == old)
            .count()
            .max(1);
        if let Some(canary) = &plan.canary {
            if new.version == old.version {
                bail!(
                    "a canary needs its own version (`--version`): traffic is split by version, \
                     and {service} runs {} already",
                    old.version
                );
            }
            self.canary(service, &old, &new, desired, canary, timeout, say)
                .await?;
        } else {
            if plan.max_surge == 0 && plan.max_unavailable == 0 {
                bail!("--max-surge and --max-unavailable cannot both be 0");
            }
            say.say(format!(
                "{service}: rolling {desired} instance(s) from {} to {} (max surge {}, max unavailable {})",
                old.version, new.version, plan.max_surge, plan.max_unavailable
            ));
            self.rolling(
                service,
                &new,
                desired,
                plan.max_surge,
                plan.max_unavailable,
                timeout,
                say,
            )
            .await?;
        }
        self.set_current(service, new.clone(), old);
        Ok(format!(
            "{service}: rolled out version {} ({desired} instance(s)) in {:.1}s",
            new.version,
            began.elapsed().as_secs_f64()
        ))
    }

    /// Replaces every instance not running `new` until `desired` run it, keeping between
    /// `desired - max_unavailable` and `desired + max_surge` instances up. If a new
    /// instance does not become ready, stops and leaves the old ones serving (starting
    /// old ones again where `max_unavailable` had let some go).
    #[allow(clippy::too_many_arguments)]
    async fn rolling(
        &self,
        service: &'static str,
        new: &Spec,
        desired: usize,
        max_surge: usize,
        max_unavailable: usize,
        timeout: Duration,
        say: &Say<'_>,
    ) -> anyhow::Result<()> {
        loop {
            let running = self.running(service).await?;
            let (news, olds): (Vec<View>, Vec<View>) =
                running.into_iter().partition(|v| &v.spec == new);
            if olds.is_empty() && news.len() >= desired {
                return Ok(());
            }
            let total = news.len() + olds.len();
            let can_stop = total
                .saturating_sub(desired.saturating_sub(max_unavailable))
                .min(olds.len());
            // The oldest first.
            let mut olds = olds;
            olds.sort_by_key(|v| v.id);
            for old in olds.iter().take(can_stop) {
                say.say(format!(
                    "{service}: draining pid {} (version {})",
                    old.pid.map_or("-".into(), |p| p.to_string()),
                    old.spec.version
                ));
                self.stop(old.id).await?;
            }
            let total = total - can_stop;
            let can_start = (desired + max_surge)
                .saturating_sub(total)
                .min(desired.saturating_sub(news.len()));
            for _ in 0..can_start {
                if let Err(e) = self.start_ready(service, new, timeout, say).await {
                    self.restore(
                        service,
                        olds.first().map(|o| &o.spec),
                        desired,
                        timeout,
                        say,
                    )
                    .await;
                    bail!(
                        "rollout of {service} stopped: {e:#}; the instances of the old version keep serving"
                    );
                }
            }
            if can_stop == 0 && can_start == 0 {
                bail!("rollout of {service} cannot make progress");
            }
        }
    }

    /// After a failed rollout: brings the service back to `desired` instances with the
    /// old spec where fewer run.
    async fn restore(
        &self,
        service: &'static str,
        old: Option<&Spec>,
        desired: usize,
        timeout: Duration,
        say: &Say<'_>,
    ) {
        let Some(old) = old else { return };
        while self.running(service).await.map_or(desired, |r| r.len()) < desired {
            say.say(format!("{service}: starting version {} again", old.version));
            if self.start_ready(service, old, timeout, say).await.is_err() {
                return;
            }
        }
    }

    /// A canary rollout: one instance of `new` beside the stable ones, traffic shifted
    /// to it step by step, each step judged on both versions' own metrics; promotion
    /// at 100 %, rollback (traffic back to stable, canary drained) at the first bad step.
    #[allow(clippy::too_many_arguments)]
    async fn canary(
        &self,
        service: &'static str,
        stable: &Spec,
        new: &Spec,
        desired: usize,
        plan: &CanaryPlan,
        timeout: Duration,
        say: &Say<'_>,
    ) -> anyhow::Result<()> {
        if plan.steps.is_empty() || plan.steps.iter().any(|s| *s > 100) {
            bail!("--steps must be percentages from 0 to 100, like 10,50,100");
        }
        let split = |canary: u32| TrafficPolicy {
            split: BTreeMap::from([
                (stable.version.clone(), 100 - canary),
                (new.version.clone(), canary),
            ]),
            sticky: true,
            ..TrafficPolicy::default()
        };
        // No traffic to it until the first step says so.
        self.set_traffic(service, Some(&split(0))).await?;
        say.say(format!(
            "{service}: starting a canary of version {}",
            new.version
        ));
        if let Err(e) = self.start_ready(service, new, timeout, say).await {
            self.set_traffic(service, None).await?;
            bail!("canary of {service} stopped: {e:#}; the stable version keeps serving");
        }
        let interval = Duration::from_millis(plan.interval_ms);
        for &step in &plan.steps {
            if step == 100 {
                break;
            }
            self.set_traffic(service, Some(&split(step))).await?;
            say.say(format!(
                "{service}: {step}% of traffic to {} for {interval:?}",
                new.version
            ));
            let before = self.sample(service).await;
            let mut verdict = Err(String::new());
            // A step with too little traffic to the canary to say anything runs on, up
            // to three intervals; then the canary is not promoted blind.
            for waited in 1..=3 {
                tokio::time::sleep(interval).await;
                let after = self.sample(service).await;
                let stable_delta = delta(&before, &after, &stable.version);
                let canary_delta = delta(&before, &after, &new.version);
                say.say(format!(
                    "{service}: canary {} | stable {}",
                    canary_delta.describe(),
                    stable_delta.describe()
                ));
                verdict = judge(&canary_delta, &stable_delta, plan);
                if canary_delta.total >= MIN_JUDGED {
                    break;
                }
                verdict = Err(format!(
                    "only {} requests reached it in {:?}, too few to judge it (send traffic, or raise --interval)",
                    canary_delta.total,
                    interval * waited
                ));
            }
            if let Err(why) = verdict {
                say.say(format!("{service}: rolling back: {why}"));
                self.set_traffic(service, Some(&split(0))).await?;
                for v in self.running(service).await? {
                    if &v.spec == new {
                        self.stop(v.id).await?;
                    }
                }
                self.set_traffic(service, None).await?;
                bail!(
                    "rolled back {service} {} at {step}% of traffic: {why}; all traffic is on {} again",
                    new.version,
                    stable.version
                );
            }
        }
        say.say(format!("{service}: promoting {}", new.version));
        self.set_traffic(service, Some(&split(100))).await?;
        let rolled = self
            .rolling(service, new, desired, 1, 0, timeout, say)
            .await;
        self.set_traffic(service, None).await?;
        rolled
    }

    async fn set_traffic(
        &self,
        service: &str,
        rules: Option<&TrafficPolicy>,
    ) -> anyhow::Result<()> {
        self.registry
            .set_traffic(service, rules)
            .await
            .with_context(|| format!("cannot set the traffic rules of {service}"))
    }

    /// Request counts of every instance of `service` now, from their own `/metrics`.
    async fn sample(&self, service: &str) -> HashMap<String, (String, Counts)> {
        let mut out = HashMap::new();
        let Ok(entry) = self.registry.service(service).await else {
            return out;
        };
        for i in entry.instances.iter().filter(|i| i.healthy) {
            let (Some(admin), Some(version)) =
                (i.metadata.get("admin_addr"), i.metadata.get("version"))
            else {
                continue;
            };
            let Ok(res) = self
                .http
                .get(format!("http://{admin}/metrics"))
                .send()
                .await
            else {
                continue;
            };
            let Ok(text) = res.text().await else { continue };
            out.insert(i.id.clone(), (version.clone(), Counts::parse(&text)));
        }
        out
    }
}

/// Whether instance `pid` of `name` is registered and its admin `/readyz` answers 200.
pub async fn is_ready(
    client: &dyn Directory,
    http: &reqwest::Client,
    name: &str,
    pid: u32,
) -> bool {
    let Ok(entry) = client.service(name).await else {
        return false;
    };
    let pid = pid.to_string();
    let Some(admin) = entry
        .instances
        .iter()
        .find(|i| i.healthy && i.metadata.get("pid") == Some(&pid))
        .and_then(|i| i.metadata.get("admin_addr").cloned())
    else {
        return false;
    };
    http.get(format!("http://{admin}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// An absolute path to an executable file, or why not.
fn checked_binary(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::fs::canonicalize(path)
        .with_context(|| format!("cannot find the binary {}", path.display()))?;
    let meta = std::fs::metadata(&path)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        bail!("{} is not an executable file", path.display());
    }
    Ok(path)
}

/// The version a `flotilla` binary reports (`flotilla 0.3.1` → `0.3.1`).
async fn binary_version(binary: &std::path::Path) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(binary)
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("cannot run {} --version", binary.display()))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()
        .map(str::to_owned)
        .filter(|_| out.status.success())
        .with_context(|| {
            format!(
                "{} --version says no version; pass --version",
                binary.display()
            )
        })
}

/// Requests an instance answered, from its `http_requests_total` and
/// `http_request_duration_seconds` series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Every request.
    pub total: f64,
    /// Those answered 5xx.
    pub errors: f64,
    /// Cumulative latency buckets: upper bound in seconds → count.
    pub buckets: Vec<(f64, f64)>,
}

impl Counts {
    /// Reads the Prometheus text format (the dashboard's reading of the kit's metrics).
    pub fn parse(text: &str) -> Self {
        let sample = dashboard::scrape::Sample::from_metrics(text);
        Self {
            total: sample.requests,
            errors: sample.errors,
            buckets: sample.buckets,
        }
    }

    /// `self - before`, per series, never below zero (a restarted instance starts over).
    fn since(&self, before: &Self) -> Self {
        let restarted = self.total < before.total;
        if restarted {
            return self.clone();
        }
        Self {
            total: self.total - before.total,
            errors: (self.errors - before.errors).max(0.0),
            buckets: dashboard::scrape::bucket_delta(&self.buckets, &before.buckets),
        }
    }

    fn add(&mut self, other: &Self) {
        self.total += other.total;
        self.errors += other.errors;
        for (le, n) in &other.buckets {
            match self.buckets.iter_mut().find(|(l, _)| l == le) {
                Some(slot) => slot.1 += n,
                None => self.buckets.push((*le, *n)),
            }
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    /// The 5xx share (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.total > 0.0 {
            self.errors / self.total
        } else {
            0.0
        }
    }

    /// The upper bound of the bucket holding the 99th percentile, if there were requests.
    pub fn p99(&self) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        self.buckets
            .iter()
            .find(|(_, n)| *n >= total * 0.99)
            .map(|(le, _)| *le)
    }

    fn describe(&self) -> String {
        format!(
            "{} requests, {:.1}% 5xx, p99 {}",
            self.total,
            self.error_rate() * 100.0,
            self.p99()
                .map_or("-".into(), |p| format!("≤ {:.0} ms", p * 1000.0))
        )
    }
}

pub(crate) fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &series[start..];
    Some(&rest[..rest.find('"')?])
}

/// What the instances of `version` answered between two samples.
fn delta(
    before: &HashMap<String, (String, Counts)>,
    after: &HashMap<String, (String, Counts)>,
    version: &str,
) -> Counts {
    let mut sum = Counts::default();
    for (id, (v, now)) in after {
        if v != version {
            continue;
        }
        let since = match before.get(id) {
            Some((_, was)) => now.since(was),
            None => now.clone(),
        };
        sum.add(&since);
    }
    sum
}

/// Fewer requests than this to the canary in a step say nothing about it.
const MIN_JUDGED: f64 = 10.0;

/// Whether the canary may go on, or why not.
fn judge(canary: &Counts, stable: &Counts, plan: &CanaryPlan) -> Result<(), String> {
    if canary.total < MIN_JUDGED {
        return Err(format!("only {} requests reached it", canary.total));
    }
    let (c, s) = (canary.error_rate(), stable.error_rate());
    if c > s + plan.max_error_rate {
        return Err(format!(
            "its 5xx rate is {:.1}% against the stable version's {:.1}% (allowed: {:.1} points more)",
            c * 100.0,
            s * 100.0,
            plan.max_error_rate * 100.0
        ));
    }
    if let (Some(ratio), Some(cp), Some(sp)) = (plan.max_p99_ratio, canary.p99(), stable.p99())
        && stable.total >= MIN_JUDGED
        && cp.is_finite()
        && cp > sp * ratio
        && cp - sp > 0.025
    {
        return Err(format!(
            "its p99 is ≤ {:.0} ms against the stable version's ≤ {:.0} ms (allowed: {ratio}×)",
            cp * 1000.0,
            sp * 1000.0
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# TYPE http_requests_total counter
http_requests_total{route="/api/products/{sku}",method="GET",status="2xx"} 90
http_requests_total{route="/api/products/{sku}",method="GET",status="5xx"} 10
http_requests_total{route="/api/products",method="GET",status="4xx"} 5
http_request_duration_seconds_bucket{route="/api/products/{sku}",method="GET",le="0.001"} 50
http_request_duration_seconds_bucket{route="/api/products/{sku}",method="GET",le="0.01"} 99
http_request_duration_seconds_bucket{route="/api/products/{sku}",method="GET",le="+Inf"} 100
http_request_duration_seconds_bucket{route="/api/products",method="GET",le="0.001"} 5
http_request_duration_seconds_bucket{route="/api/products",method="GET",le="0.01"} 5
http_request_duration_seconds_bucket{route="/api/products",method="GET",le="+Inf"} 5
"#;

    fn plan() -> CanaryPlan {
        CanaryPlan {
            steps: vec![10, 100],
            interval_ms: 1000,
            max_error_rate: 0.01,
            max_p99_ratio: Some(3.0),
        }
    }

    #[test]
    fn counts_read_requests_errors_and_buckets() {
        let c = Counts::parse(METRICS);
        assert_eq!(c.total, 105.0);
        assert_eq!(c.errors, 10.0);
        assert_eq!(
            c.buckets,
            vec![(0.001, 55.0), (0.01, 104.0), (f64::INFINITY, 105.0)]
        );
        assert_eq!(c.p99(), Some(0.01));
    }

    #[test]
    fn deltas_subtract_and_survive_a_restart() {
        let before = Counts::parse(METRICS);
        let mut after = before.clone();
        after.total += 20.0;
        after.errors += 10.0;
        let d = after.since(&before);
        assert_eq!((d.total, d.errors), (20.0, 10.0));
        let restarted = Counts {
            total: 3.0,
            ..Counts::default()
        };
        assert_eq!(restarted.since(&before).total, 3.0);
    }

    #[test]
    fn a_canary_worse_than_stable_by_more_than_the_threshold_is_rolled_back() {
        let stable = Counts {
            total: 900.0,
            errors: 9.0,
            ..Counts::default()
        };
        let fine = Counts {
            total: 100.0,
            errors: 1.0,
            ..Counts::default()
        };
        assert!(judge(&fine, &stable, &plan()).is_ok());
        let failing = Counts {
            total: 100.0,
            errors: 50.0,
            ..Counts::default()
        };
        let why = judge(&failing, &stable, &plan()).unwrap_err();
        assert!(why.contains("50.0%"), "{why}");
        // Too few requests to say anything: not a pass.
        let quiet = Counts {
            total: 4.0,
            ..Counts::default()
        };
        assert!(
            judge(&quiet, &stable, &plan())
                .unwrap_err()
                .contains("only 4")
        );
    }

    #[test]
    fn a_much_slower_canary_is_rolled_back_when_latency_is_judged() {
        let stable = Counts {
            total: 100.0,
            buckets: vec![(0.01, 100.0), (1.0, 100.0), (f64::INFINITY, 100.0)],
            ..Counts::default()
        };
        let slow = Counts {
            total: 100.0,
            buckets: vec![(0.01, 10.0), (1.0, 100.0), (f64::INFINITY, 100.0)],
            ..Counts::default()
        };
        assert!(judge(&slow, &stable, &plan()).unwrap_err().contains("p99"));
        let lenient = CanaryPlan {
            max_p99_ratio: None,
            ..plan()
        };
        assert!(judge(&slow, &stable, &lenient).is_ok());
    }

    #[test]
    fn singletons_and_unknown_services_cannot_be_scaled() {
        assert!(check_scalable("inventory", 3).is_ok());
        assert!(check_scalable("gateway", 1).is_ok());
        assert!(
            check_scalable("gateway", 2)
                .unwrap_err()
                .to_string()
                .contains("fixed address")
        );
        assert!(
            check_scalable("nope", 1)
                .unwrap_err()
                .to_string()
                .contains("unknown")
        );
        assert!(check_scalable("orders", 17).is_err());
    }
}
