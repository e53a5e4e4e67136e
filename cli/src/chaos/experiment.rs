//! `flotilla chaos run`: an experiment with a steady-state hypothesis. Before, the
//! system must be healthy; during, `flotilla load`'s engine drives the shop while the
//! experiment strikes on its schedule; after, the load must have kept within its error
//! budget, every instance struck must be back, and `flotilla verify`'s invariants must
//! hold. A verdict for each; any violation exits 1.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kit::discovery::Directory;
use kit::discovery::registry::ServiceEntry;
use kit::resilience::fault::{FaultRule, FaultSet};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::plan::{self, Experiment, Interval};
use super::{resilience, store};
use crate::load::{self, Load, Report};
use crate::services::NAMES;
use crate::verify::{self, Finding, Verdict};

/// How long a struck instance may take to be back before that is a violation.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the system may take to look healthy, before and after.
const STEADY_TIMEOUT: Duration = Duration::from_secs(30);

/// `flotilla chaos run …`
#[derive(Debug, clap::Args)]
#[command(
    mut_arg("duration", |a| a.default_value("60s")),
    mut_arg("rate", |a| a.default_value("10")),
    mut_arg("report", |a| a.default_value("chaos-report")
        .help("Directory for the load's `report.json` and `chart.svg`, and `chaos.json`"))
)]
pub struct RunArgs {
    /// What to do, one experiment or several at once: `kill`, `kill,fault`. One of kill,
    /// fault, bus-restart, partition, store-restart.
    #[arg(value_enum, value_delimiter = ',', required = true)]
    experiments: Vec<Experiment>,
    /// How often `kill`, `fault` and `partition` strike: `5s..10s` (a random gap in
    /// the range each time) or `7s`.
    #[arg(long, default_value = "5s..10s")]
    every: Interval,
    /// Strike only these services (`orders,payments`). By default `kill` picks any but
    /// the gateway and the bus, `fault` any business service.
    #[arg(long, value_delimiter = ',', value_parser = service_name)]
    service: Vec<String>,
    /// `partition` cuts off this service (by default a random business service).
    #[arg(long, value_parser = service_name)]
    caller: Option<String>,
    /// How long each fault and partition lasts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    fault_for: Duration,
    /// Share of requests an abort fault fails (`503`, gRPC `UNAVAILABLE`).
    #[arg(long, default_value = "20%", value_parser = plan::percent)]
    fault_percent: f64,
    /// Latency a delay fault adds to every request: `100ms..500ms` or `200ms`.
    #[arg(long, default_value = "100ms..500ms")]
    fault_delay: String,
    /// The error budget: at most this share of the load's requests may end in a `5xx`
    /// or without an answer (a `429` is the rate limit working and does not count).
    #[arg(long, default_value = "5%", value_parser = plan::percent)]
    max_error_rate: f64,
    /// How long `verify` waits afterwards for sagas in flight to settle.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    verify_deadline: Duration,
    /// `store-restart` restarts only these servers (`nats,redis`; of postgresql,
    /// mariadb, redis, nats, etcd). By default any the configuration runs on.
    #[arg(long, value_delimiter = ',')]
    store: Vec<String>,
    /// How `store-restart` restarts a server: this command, given `--kill` (with
    /// `--store-kill`) and the server's name, must return once it accepts connections.
    #[arg(long, default_value = "deploy/infra/restart-server.sh")]
    restart_with: String,
    /// `store-restart` SIGKILLs the server instead of stopping it cleanly: it recovers
    /// from its own files, as after a crash.
    #[arg(long)]
    store_kill: bool,
    /// Seed of the schedule and the choice of targets, to repeat a run (random if absent;
    /// printed either way).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    load: Load,
}

fn service_name(text: &str) -> Result<String, String> {
    if NAMES.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!("no service is called {text:?}; one of {NAMES:?}"))
    }
}

/// What the experiment did at one moment.
#[derive(Debug, Clone, Serialize)]
struct Action {
    /// Seconds from the first arrival of the load.
    at_s: f64,
    experiment: Experiment,
    /// The service struck (`-` when nothing could be).
    target: String,
    /// What was done, or why nothing was.
    what: String,
    /// An instance was killed.
    killed: bool,
    /// For a kill: seconds until the service had a healthy instance again.
    #[serde(skip_serializing_if = "Option::is_none")]
    back_after_s: Option<f64>,
}

/// A verdict as `chaos.json` records it.
#[derive(Debug, Serialize)]
struct Judged {
    hypothesis: &'static str,
    verdict: &'static str,
    details: Vec<String>,
}

impl From<&Finding> for Judged {
    fn from(f: &Finding) -> Self {
        let (verdict, details) = match &f.verdict {
            Verdict::Holds(what) => ("holds", vec![what.clone()]),
            Verdict::Violated(lines) => ("violated", lines.clone()),
        };
        Self {
            hypothesis: f.invariant,
            verdict,
            details,
        }
    }
}

/// `chaos.json`.
#[derive(Debug, Serialize)]
struct ChaosReport<'a> {
    experiments: &'a [Experiment],
    seed: u64,
    every: String,
    max_error_rate_percent: f64,
    actions: &'a [Action],
    verdicts: Vec<Judged>,
    /// What the breakers, retries and load shedding did.
    resilience: &'a [resilience::Line],
}

/// Runs `flotilla chaos run`.
pub fn run(args: RunArgs) -> ExitCode {
    let config = kit::config::Config::load();
    if let Err(why) = refusal(&args, &config) {
        eprintln!("flotilla chaos run: {why:#}");
        return ExitCode::from(kit::config::EX_USAGE as u8);
    }
    crate::block_on("chaos run", async {
        let findings = experiment(args).await?;
        if findings
            .iter()
            .any(|f| matches!(f.verdict, Verdict::Violated(_)))
        {
            println!("\nverdict: the steady-state hypothesis was VIOLATED");
            anyhow::bail!("a hypothesis was violated");
        }
        println!("\nverdict: the steady-state hypothesis holds");
        Ok(())
    })
}

/// Why these experiments cannot run on this configuration.
fn refusal(args: &RunArgs, config: &kit::config::Config) -> anyhow::Result<()> {
    let embedded_bus = kit::store::scheme(&kit_events::url_from_config(config)) == "bus";
    if args.experiments.contains(&Experiment::BusRestart) && !embedded_bus {
        anyhow::bail!(
            "bus-restart kills the embedded bus, and this system runs on NATS: \
             `store-restart --store nats` restarts the NATS server"
        );
    }
    if args.experiments.contains(&Experiment::StoreRestart) {
        let servers = store::servers(config)?;
        if servers.is_empty() {
            anyhow::bail!(
                "store-restart restarts the real PostgreSQL, MariaDB, Redis, NATS and etcd \
                 servers, so it needs the infra profile (`--profile infra`); on the embedded \
                 profile every store lives inside its service's process, and `kill` already \
                 restarts it"
            );
        }
        if let Some(unknown) = args
            .store
            .iter()
            .find(|s| !servers.iter().any(|srv| srv.kind == s.as_str()))
        {
            let known: Vec<_> = servers.iter().map(|s| s.kind).collect();
            anyhow::bail!(
                "--store {unknown}: this system runs on {}",
                known.join(", ")
            );
        }
    }
    Ok(())
}

/// Whether a process exists.
fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| kill(Pid::from_raw(p), None).is_ok())
}

fn pid_of(i: &kit::discovery::Instance) -> Option<u32> {
    i.metadata.get("pid")?.parse().ok()
}

/// Services, among `names`, that have no healthy instance.
fn unhealthy(services: &[ServiceEntry], names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|n| {
            !services
                .iter()
                .any(|s| s.name == **n && s.instances.iter().any(|i| i.healthy))
        })
        .map(|n| format!("{n}: no healthy instance"))
        .collect()
}

/// Every service has a healthy instance and the gateway serves the catalog, three
/// times in a row; waits up to [`STEADY_TIMEOUT`] for it.
async fn steady_state(
    registry: &dyn Directory,
    http: &reqwest::Client,
    gateway: &str,
    names: &[&str],
) -> Verdict {
    let deadline = Instant::now() + STEADY_TIMEOUT;
    loop {
        let mut bad = match registry.services().await {
            Ok(services) => unhealthy(&services, names),
            Err(e) => vec![format!("discovery did not answer: {e}")],
        };
        if bad.is_empty() {
            for _ in 0..3 {
                let answer = http
                    .get(format!("{gateway}/api/products?limit=1"))
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => bad.push(format!("GET /api/products answered {}", r.status())),
                    Err(e) => bad.push(format!("GET /api/products: {e}")),
                }
            }
        }
        if bad.is_empty() {
            return Verdict::Holds(format!(
                "all {} services have a healthy instance; the gateway served the catalog 3 times",
                names.len()
            ));
        }
        if Instant::now() >= deadline {
            bad.dedup();
            return Verdict::Violated(bad);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Chooses a live instance of one of `pool` (services first, uniformly, then one of its
/// instances): `(service, instance id, pid)`.
fn choose_victim(
    services: &[ServiceEntry],
    pool: &[&str],
    rng: &mut StdRng,
) -> Option<(String, String, u32)> {
    let mut candidates: Vec<(&str, Vec<(&str, u32)>)> = pool
        .iter()
        .filter_map(|name| {
            let s = services.iter().find(|s| s.name == *name)?;
            let live: Vec<_> = s
                .instances
                .iter()
                .filter(|i| i.healthy)
                .filter_map(|i| Some((i.id.as_str(), pid_of(i)?)))
                .filter(|&(_, pid)| alive(pid))
                .collect();
            (!live.is_empty()).then_some((s.name.as_str(), live))
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let (name, live) = candidates.swap_remove(rng.random_range(0..candidates.len()));
    let (id, pid) = live[rng.random_range(0..live.len())];
    Some((name.to_owned(), id.to_owned(), pid))
}

/// Polls discovery until `service` has a healthy instance other than `pid` whose
/// process is alive (a killed instance stays listed until its lease runs out); how long
/// that took from `since`, or `None` past [`RECOVERY_TIMEOUT`].
async fn back_after(
    registry: Arc<dyn Directory>,
    service: String,
    pid: u32,
    since: Instant,
) -> Option<Duration> {
    while since.elapsed() < RECOVERY_TIMEOUT {
        if let Ok(services) = registry.services().await
            && services.iter().any(|s| {
                s.name == service
                    && s.instances
                        .iter()
                        .any(|i| i.healthy && pid_of(i).is_some_and(|p| p != pid && alive(p)))
            })
        {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Puts `set` on every instance of `service` through its admin API; how many took it.
async fn set_faults(
    http: &reqwest::Client,
    services: &[ServiceEntry],
    service: &str,
    set: &FaultSet,
) -> usize {
    let mut set_on = 0;
    for s in services.iter().filter(|s| s.name == service) {
        for i in s.instances.iter().filter(|i| i.healthy) {
            let Some(admin) = i.metadata.get("admin_addr") else {
                continue;
            };
            let put = http
                .put(format!("http://{admin}/admin/faults"))
                .json(set)
                .send()
                .await;
            if put.is_ok_and(|r| r.status().is_success()) {
                set_on += 1;
            }
        }
    }
    set_on
}

/// Removes every fault from every instance (faults lapse by themselves too).
async fn clear_faults(registry: &dyn Directory, http: &reqwest::Client) {
    let Ok(services) = registry.services().await else {
        return;
    };
    for i in services.iter().flat_map(|s| &s.instances) {
        if let Some(admin) = i.metadata.get("admin_addr") {
            let _ = http
                .delete(format!("http://{admin}/admin/faults"))
                .send()
                .await;
        }
    }
}

/// What strikes, and how.
struct Striker {
    registry: Arc<dyn Directory>,
    http: reqwest::Client,
    rng: StdRng,
    kill_pool: Vec<&'static str>,
    fault_pool: Vec<&'static str>,
    caller: Option<String>,
    fault_for: Duration,
    abort: FaultRule,
    delay: FaultRule,
    /// Each kill's recovery, by the kill's number.
    recoveries: JoinSet<(usize, Option<Duration>)>,
    kills: usize,
    /// The servers `store-restart` picks from.
    stores: Vec<store::Server>,
    restart_with: String,
    store_kill: bool,
}

impl Striker {
    /// Carries out one action of the schedule.
    async fn strike(&mut self, e: Experiment, at: Duration, actions: &mut Vec<Action>) {
        let mut action = Action {
            at_s: (at.as_secs_f64() * 10.0).round() / 10.0,
            experiment: e,
            target: "-".into(),
            what: String::new(),
            killed: false,
            back_after_s: None,
        };
        if e == Experiment::StoreRestart {
            self.restart_store(&mut action).await;
        } else {
            self.strike_services(e, &mut action).await;
        }
        println!(
            "{:>6.1}s  {:<11}  {:<13}  {}",
            action.at_s,
            e.name(),
            action.target,
            action.what
        );
        actions.push(action);
    }

    /// Restarts one of the servers, and waits until it is back.
    async fn restart_store(&mut self, action: &mut Action) {
        if self.stores.is_empty() {
            action.what = "skipped: no server to restart".into();
            return;
        }
        let server = self.stores[self.rng.random_range(0..self.stores.len())].clone();
        action.target = server.kind.into();
        match store::restart(&self.restart_with, server.kind, self.store_kill).await {
            Ok(took) => {
                action.what = format!(
                    "{} and back in {:.1}s (used by {})",
                    if self.store_kill {
                        "SIGKILL"
                    } else {
                        "restarted"
                    },
                    took.as_secs_f64(),
                    server.used_by.join(", ")
                );
                action.back_after_s = Some((took.as_secs_f64() * 10.0).round() / 10.0);
            }
            Err(why) => action.what = format!("restart failed: {why}"),
        }
    }

    /// Kills, faults or partitions a service.
    async fn strike_services(&mut self, e: Experiment, action: &mut Action) {
        match self.registry.services().await {
            Err(err) => action.what = format!("skipped: discovery did not answer ({err})"),
            Ok(services) => match e {
                Experiment::Kill | Experiment::BusRestart => {
                    let pool = if e == Experiment::Kill {
                        self.kill_pool.clone()
                    } else {
                        vec!["bus"]
                    };
                    self.kill(&services, &pool, action);
                }
                Experiment::Fault => self.fault(&services, action).await,
                Experiment::Partition => self.partition(&services, action).await,
                Experiment::StoreRestart => self.restart_store(action).await,
            },
        }
    }

    fn kill(&mut self, services: &[ServiceEntry], pool: &[&str], action: &mut Action) {
        let Some((service, id, pid)) = choose_victim(services, pool, &mut self.rng) else {
            action.what = "skipped: no live instance to kill (all still restarting?)".into();
            return;
        };
        action.target.clone_from(&service);
        let killed = i32::try_from(pid)
            .map_err(|_| nix::errno::Errno::ESRCH)
            .and_then(|p| kill(Pid::from_raw(p), Signal::SIGKILL));
        match killed {
            Ok(()) => {
                action.what = format!("SIGKILL {id} (pid {pid})");
                action.killed = true;
                let n = self.kills;
                self.kills += 1;
                let registry = self.registry.clone();
                let since = Instant::now();
                self.recoveries
                    .spawn(async move { (n, back_after(registry, service, pid, since).await) });
            }
            Err(err) => action.what = format!("could not kill pid {pid}: {err}"),
        }
    }

    async fn fault(&mut self, services: &[ServiceEntry], action: &mut Action) {
        let live: Vec<&str> = self
            .fault_pool
            .iter()
            .copied()
            .filter(|n| unhealthy(services, &[n]).is_empty())
            .collect();
        if live.is_empty() {
            action.what = "skipped: no healthy instance to fault".into();
            return;
        }
        let target = live[self.rng.random_range(0..live.len())];
        let rule = if self.rng.random_bool(0.5) {
            self.abort.clone()
        } else {
            self.delay.clone()
        };
        let what = match (rule.abort, rule.delay_ms, rule.delay_max_ms) {
            (Some(status), _, _) => format!("abort {status} on {}% of requests", rule.percent),
            (None, Some(lo), Some(hi)) => format!("delay {lo}..{hi} ms"),
            (None, Some(ms), None) => format!("delay {ms} ms"),
            _ => "fault".into(),
        };
        let set = FaultSet { rules: vec![rule] };
        let n = set_faults(&self.http, services, target, &set).await;
        action.target = target.into();
        action.what = format!(
            "{what} for {}, set on {n} instance(s)",
            humantime::format_duration(self.fault_for)
        );
    }

    async fn partition(&mut self, services: &[ServiceEntry], action: &mut Action) {
        let caller = match &self.caller {
            Some(c) => c.clone(),
            None => self.fault_pool[self.rng.random_range(0..self.fault_pool.len())].to_owned(),
        };
        let set = FaultSet {
            rules: vec![FaultRule {
                abort: Some(503),
                grpc_code: Some(14),
                caller: Some(caller.clone()),
                percent: 100.0,
                ..self.abort.clone()
            }],
        };
        let mut n = 0;
        for s in services.iter().filter(|s| s.name != caller) {
            n += set_faults(&self.http, services, &s.name, &set).await;
        }
        action.what = format!(
            "every call from {caller} aborted (503 / UNAVAILABLE) for {}, through the fault layer of {n} instance(s)",
            humantime::format_duration(self.fault_for)
        );
        action.target = caller;
    }
}

async fn experiment(args: RunArgs) -> anyhow::Result<Vec<Finding>> {
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let names: Vec<&str> = args.experiments.iter().map(|e| e.name()).collect();
    println!(
        "chaos run {} for {} at {} arrivals/s, every {}; seed {seed} (repeat with --seed {seed})",
        names.join(","),
        humantime::format_duration(args.load.duration()),
        args.load.rate(),
        args.every_text(),
    );
    let config = kit::config::Config::load();
    let system = crate::profile::system_services(&config);
    let stores: Vec<store::Server> = store::servers(&config)?
        .into_iter()
        .filter(|s| args.store.is_empty() || args.store.iter().any(|k| k == s.kind))
        .collect();
    let registry = crate::status::directory()?;
    // Admin listeners take plain HTTP on loopback.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()?;
    let gateway = args.load.gateway().to_owned();
    let mut findings = Vec::new();

    let before = steady_state(&*registry, &http, &gateway, &system).await;
    let healthy = matches!(before, Verdict::Holds(_));
    findings.push(Finding {
        invariant: "steady state before: every service healthy, the shop answers",
        verdict: before,
    });
    if !healthy {
        verify::print(&findings);
        println!("not running the experiment on a system that is not healthy");
        return Ok(findings);
    }

    let mut rng = StdRng::seed_from_u64(seed);
    let schedule = plan::schedule(
        &args.experiments,
        args.load.duration(),
        args.every,
        &mut rng,
    );
    let pool = |default: Vec<&'static str>| -> Vec<&'static str> {
        if args.service.is_empty() {
            default
        } else {
            NAMES
                .iter()
                .copied()
                .filter(|n| args.service.iter().any(|s| s == n))
                .collect()
        }
    };
    let fault_secs = args.fault_for.as_secs().max(1);
    let abort = super::rule(
        Some(503),
        Some(14),
        None,
        args.fault_percent,
        None,
        None,
        Some(format!("{fault_secs}s")),
    )?;
    let delay = super::rule(
        None,
        None,
        Some(args.fault_delay.clone()),
        100.0,
        None,
        None,
        Some(format!("{fault_secs}s")),
    )?;
    let mut striker = Striker {
        registry: registry.clone(),
        http: http.clone(),
        rng,
        kill_pool: pool(plan::killable()),
        fault_pool: pool(plan::faultable()),
        caller: args.caller.clone(),
        fault_for: Duration::from_secs(fault_secs),
        abort,
        delay,
        recoveries: JoinSet::new(),
        kills: 0,
        stores,
        restart_with: args.restart_with.clone(),
        store_kill: args.store_kill,
    };

    // The load and the schedule start together, once the load's set-up is done.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Instant>();
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let load = load::generate(&args.load, false, interrupt, move |start| {
        let _ = started_tx.send(start);
    });
    let strikes = async {
        let mut actions = Vec::new();
        let Ok(start) = started_rx.await else {
            return actions;
        };
        println!("  time  experiment   target         action");
        for &(at, e) in &schedule {
            tokio::select! {
                _ = tokio::time::sleep_until(start + at) => {}
                _ = tokio::signal::ctrl_c() => break,
            }
            striker.strike(e, at, &mut actions).await;
        }
        actions
    };
    // Every instance's breaker, retry and rejection counters, sampled while it lives.
    let (stop_sampling, mut sampling_stopped) = tokio::sync::watch::channel(false);
    let sampling = async {
        let mut tracker = resilience::Tracker::default();
        loop {
            if let Ok(services) = registry.services().await {
                tracker.sample(&services, &http).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(resilience::EVERY) => {}
                _ = sampling_stopped.changed() => break,
            }
        }
        tracker
    };
    let run = async {
        let done = tokio::join!(load, strikes);
        let _ = stop_sampling.send(true);
        done
    };
    let ((report, mut actions), mut tracker) = tokio::join!(run, sampling);
    let report = report?;
    if args
        .experiments
        .iter()
        .any(|e| matches!(e, Experiment::Fault | Experiment::Partition))
    {
        clear_faults(&*registry, &http).await;
        println!("faults cleared");
    }

    println!();
    print!("{}", report.table());
    findings.push(Finding {
        invariant: "error budget: the load's requests failed (5xx, no answer; not 429) within the budget",
        verdict: budget(&report, args.max_error_rate),
    });
    let kills = actions.iter().filter(|a| a.killed).count();
    let mut recoveries = striker.recoveries.join_all().await;
    recoveries.sort_by_key(|(n, _)| *n);
    let recovery = recovered(&mut actions, &recoveries);
    for a in actions.iter().filter(|a| a.killed) {
        let back = a
            .back_after_s
            .map_or_else(|| "not back".to_owned(), |s| format!("back after {s:.2} s"));
        println!("{:>6.1}s  {:<13}  killed, {back}", a.at_s, a.target);
    }
    if kills > 0 {
        findings.push(Finding {
            invariant: "every instance killed was restarted and healthy again",
            verdict: recovery,
        });
    }
    findings.push(Finding {
        invariant: "steady state after: every service healthy, the shop answers",
        verdict: steady_state(&*registry, &http, &gateway, &system).await,
    });
    println!(
        "\nverifying the invariants (waiting up to {} for sagas in flight)…",
        humantime::format_duration(args.verify_deadline)
    );
    match verify::findings(None, args.verify_deadline).await {
        Ok(invariants) => findings.extend(invariants),
        Err(e) => findings.push(Finding {
            invariant: "the invariants could be read",
            verdict: Verdict::Violated(vec![format!("{e:#}")]),
        }),
    }
    // The sagas settled meanwhile: their compensations' retries count too.
    if let Ok(services) = registry.services().await {
        tracker.sample(&services, &http).await;
    }
    let resilience = tracker.lines();
    println!(
        "\nwhat the breakers, retries and load shedding did (from every instance's /metrics):"
    );
    print!("{}", resilience::render(&resilience));
    println!();
    verify::print(&findings);
    write(&args, seed, &report, &actions, &findings, &resilience)?;
    Ok(findings)
}

impl RunArgs {
    fn every_text(&self) -> String {
        let (lo, hi) = (self.every.min, self.every.max);
        if lo == hi {
            humantime::format_duration(lo).to_string()
        } else {
            format!(
                "{}..{}",
                humantime::format_duration(lo),
                humantime::format_duration(hi)
            )
        }
    }
}

/// The error-budget verdict of the load's report.
fn budget(report: &Report, max_percent: f64) -> Verdict {
    let (errors, share) =
        plan::budget_errors(&report.errors_by_status, report.requests, report.overflow);
    let by_status: Vec<String> = report
        .errors_by_status
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    let line = format!(
        "{errors} of {} requests counted ({share:.2}%, budget {max_percent}%); all errors by status: {}",
        report.requests + report.overflow,
        if by_status.is_empty() {
            "none".into()
        } else {
            by_status.join(", ")
        }
    );
    if report.ok == 0 {
        Verdict::Violated(vec![format!("no request succeeded; {line}")])
    } else if share <= max_percent {
        Verdict::Holds(line)
    } else {
        Verdict::Violated(vec![line])
    }
}

/// Fills in each kill's recovery time (`recoveries` by kill number) and judges them.
fn recovered(actions: &mut [Action], recoveries: &[(usize, Option<Duration>)]) -> Verdict {
    let mut times = Vec::new();
    let mut bad = Vec::new();
    let kills = actions.iter_mut().filter(|a| a.killed);
    for (action, (_, back)) in kills.zip(recoveries) {
        match back {
            Some(d) => {
                action.back_after_s = Some((d.as_secs_f64() * 100.0).round() / 100.0);
                times.push(d.as_secs_f64());
            }
            None => bad.push(format!(
                "{} killed at {:.1}s: no healthy instance again within {}s",
                action.target,
                action.at_s,
                RECOVERY_TIMEOUT.as_secs()
            )),
        }
    }
    if !bad.is_empty() {
        return Verdict::Violated(bad);
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    let max = times.last().copied().unwrap_or(0.0);
    Verdict::Holds(format!(
        "{} kills, back (a healthy instance registered) after {median:.2} s median, {max:.2} s at most",
        times.len()
    ))
}

fn write(
    args: &RunArgs,
    seed: u64,
    report: &Report,
    actions: &[Action],
    findings: &[Finding],
    resilience: &[resilience::Line],
) -> anyhow::Result<()> {
    let dir: &Path = args.load.report_dir();
    load::write_report(dir, report)?;
    let chaos = ChaosReport {
        experiments: &args.experiments,
        seed,
        every: args.every_text(),
        max_error_rate_percent: args.max_error_rate,
        actions,
        verdicts: findings.iter().map(Judged::from).collect(),
        resilience,
    };
    let path = dir.join("chaos.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&chaos)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "\nreport: {}, {} and {}",
        path.display(),
        dir.join("report.json").display(),
        dir.join("chart.svg").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn parses_experiments_and_chaos_defaults() {
        let cli = Cli::try_parse_from(["chaos", "kill,fault", "--seed", "3"]).unwrap();
        let run = cli.run;
        assert_eq!(run.experiments, [Experiment::Kill, Experiment::Fault]);
        assert_eq!(run.load.duration(), Duration::from_secs(60));
        assert_eq!(run.load.rate(), 10.0);
        assert_eq!(run.load.report_dir(), Path::new("chaos-report"));
        assert_eq!(run.every.min, Duration::from_secs(5));
        assert_eq!(run.max_error_rate, 5.0);
        assert_eq!(run.seed, Some(3));

        let cli = Cli::try_parse_from([
            "chaos",
            "partition",
            "--caller",
            "orders",
            "--duration",
            "20s",
            "--rate",
            "4",
            "--max-error-rate",
            "1%",
            "--every",
            "2s..3s",
        ])
        .unwrap();
        assert_eq!(cli.run.caller.as_deref(), Some("orders"));
        assert_eq!(cli.run.load.duration(), Duration::from_secs(20));
        assert_eq!(cli.run.load.rate(), 4.0);
        assert_eq!(cli.run.max_error_rate, 1.0);

        assert!(Cli::try_parse_from(["chaos", "explode"]).is_err());
        assert!(Cli::try_parse_from(["chaos", "kill", "--service", "nobody"]).is_err());
        assert!(Cli::try_parse_from(["chaos"]).is_err());
    }

    fn action(what: &str) -> Action {
        Action {
            killed: what.starts_with("SIGKILL"),
            at_s: 1.0,
            experiment: Experiment::Kill,
            target: "orders".into(),
            what: what.into(),
            back_after_s: None,
        }
    }

    #[test]
    fn every_kill_must_come_back() {
        let mut actions = vec![
            action("SIGKILL orders-1 (pid 7)"),
            action("skipped: no live instance"),
            action("SIGKILL orders-2 (pid 8)"),
        ];
        let back = [
            (0, Some(Duration::from_millis(1500))),
            (1, Some(Duration::from_millis(500))),
        ];
        let v = recovered(&mut actions, &back);
        assert!(
            matches!(&v, Verdict::Holds(t) if t.contains("2 kills")),
            "{v:?}"
        );
        assert_eq!(actions[0].back_after_s, Some(1.5));
        assert_eq!(actions[1].back_after_s, None);
        assert_eq!(actions[2].back_after_s, Some(0.5));
        let v = recovered(&mut actions, &[(0, Some(Duration::ZERO)), (1, None)]);
        assert!(matches!(v, Verdict::Violated(l) if l.len() == 1));
    }
}
