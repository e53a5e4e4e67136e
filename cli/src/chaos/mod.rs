//! `flotilla chaos`: break things on purpose, to watch the resilience patterns work.
//! Faults are set through each instance's admin API (`PUT /admin/faults`);
//! `chaos run` runs a whole experiment under load and judges it ([`experiment`]).

mod experiment;
mod plan;
mod resilience;
mod store;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use kit::discovery::Instance;
use kit::resilience::fault::{FaultRule, FaultSet};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::RngExt;

/// `flotilla chaos …`
#[derive(Debug, Subcommand)]
pub enum Chaos {
    /// Inject faults into every instance of a service (or of one version of it).
    Fault {
        /// The service.
        service: String,
        /// Only the instances that registered this version (a canary, say).
        #[arg(long)]
        version: Option<String>,
        /// Answer with this status (400–599).
        #[arg(long)]
        abort: Option<u16>,
        /// For gRPC calls, answer this gRPC status code (1–16, e.g. 14 UNAVAILABLE);
        /// without `--abort`, only gRPC calls are aborted.
        #[arg(long)]
        grpc_code: Option<u32>,
        /// Add latency: `200ms`, or a range `100ms..300ms`.
        #[arg(long)]
        delay: Option<String>,
        /// Share of requests affected.
        #[arg(long, default_value_t = 100.0)]
        percent: f64,
        /// Only paths starting with this prefix.
        #[arg(long)]
        route: Option<String>,
        /// Only requests from this calling service.
        #[arg(long)]
        caller: Option<String>,
        /// How long the fault lasts (`60s`); until `chaos clear` if absent.
        #[arg(long = "for")]
        lasting: Option<String>,
    },
    /// Remove injected faults (from one service, or all).
    Clear {
        /// The service; all services if absent.
        service: Option<String>,
    },
    /// SIGKILL one instance of a service (`flotilla up` restarts it).
    Kill {
        /// The service.
        service: String,
    },
    /// Run an experiment under load with a steady-state hypothesis: healthy before, the
    /// load within its error budget, every instance struck back, and `verify`'s
    /// invariants holding after. Exits 1 on any violation.
    Run(Box<experiment::RunArgs>),
}

/// Runs a chaos command.
pub fn chaos(cmd: Chaos) -> ExitCode {
    match cmd {
        Chaos::Run(args) => experiment::run(*args),
        cmd => crate::block_on("chaos", run(cmd)),
    }
}

fn millis(text: &str) -> anyhow::Result<u64> {
    let d = humantime::parse_duration(text.trim())
        .with_context(|| format!("{text:?} is not a duration"))?;
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn rule(
    abort: Option<u16>,
    grpc_code: Option<u32>,
    delay: Option<String>,
    percent: f64,
    route: Option<String>,
    caller: Option<String>,
    lasting: Option<String>,
) -> anyhow::Result<FaultRule> {
    if abort.is_none() && grpc_code.is_none() && delay.is_none() {
        bail!("say what to inject: --abort STATUS, --grpc-code CODE and/or --delay DURATION");
    }
    let (delay_ms, delay_max_ms) = match delay.as_deref() {
        None => (None, None),
        Some(d) => match d.split_once("..") {
            Some((lo, hi)) => (Some(millis(lo)?), Some(millis(hi)?)),
            None => (Some(millis(d)?), None),
        },
    };
    let for_secs = lasting
        .as_deref()
        .map(|l| humantime::parse_duration(l).map(|d| d.as_secs().max(1)))
        .transpose()
        .context("--for takes a duration like 60s")?;
    let rule = FaultRule {
        abort,
        grpc_code,
        delay_ms,
        delay_max_ms,
        percent,
        route,
        caller,
        for_secs,
    };
    garde::Validate::validate(&rule).map_err(|e| anyhow::anyhow!("invalid fault: {e}"))?;
    Ok(rule)
}

async fn instances(service: Option<&str>) -> anyhow::Result<Vec<(String, Instance)>> {
    let client = crate::status::directory()?;
    let all = client.services().await.context("is Flotilla running?")?;
    let found: Vec<_> = all
        .into_iter()
        .filter(|s| service.is_none_or(|n| s.name == n))
        .flat_map(|s| s.instances.into_iter().map(move |i| (s.name.clone(), i)))
        .collect();
    if let Some(name) = service
        && found.is_empty()
    {
        bail!("no instance of {name} is registered");
    }
    Ok(found)
}

async fn run(cmd: Chaos) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()?;
    match cmd {
        Chaos::Fault {
            service,
            version,
            abort,
            grpc_code,
            delay,
            percent,
            route,
            caller,
            lasting,
        } => {
            let set = FaultSet {
                rules: vec![rule(
                    abort, grpc_code, delay, percent, route, caller, lasting,
                )?],
            };
            let targets: Vec<_> = instances(Some(&service))
                .await?
                .into_iter()
                .filter(|(_, i)| {
                    version
                        .as_deref()
                        .is_none_or(|v| i.metadata.get("version").map(String::as_str) == Some(v))
                })
                .collect();
            if targets.is_empty() {
                bail!(
                    "no instance of {service} has version {}",
                    version.as_deref().unwrap_or("-")
                );
            }
            for (_, i) in targets {
                let admin = i
                    .metadata
                    .get("admin_addr")
                    .context("instance without admin_addr")?;
                let res = http
                    .put(format!("http://{admin}/admin/faults"))
                    .json(&set)
                    .send()
                    .await?;
                if !res.status().is_success() {
                    bail!(
                        "{} refused the fault: {}",
                        i.id,
                        res.text().await.unwrap_or_default()
                    );
                }
                println!("fault set on {} ({})", i.id, i.addr);
            }
        }
        Chaos::Clear { service } => {
            for (_, i) in instances(service.as_deref()).await? {
                if let Some(admin) = i.metadata.get("admin_addr") {
                    http.delete(format!("http://{admin}/admin/faults"))
                        .send()
                        .await?;
                    println!("faults cleared on {}", i.id);
                }
            }
        }
        Chaos::Kill { service } => {
            let found = instances(Some(&service)).await?;
            let (_, victim) = &found[rand::rng().random_range(0..found.len())];
            let pid: i32 = victim
                .metadata
                .get("pid")
                .and_then(|p| p.parse().ok())
                .context("instance without pid")?;
            kill(Pid::from_raw(pid), Signal::SIGKILL)
                .with_context(|| format!("cannot kill pid {pid}"))?;
            println!("killed {} (pid {pid})", victim.id);
        }
        Chaos::Run(_) => unreachable!("run by experiment::run"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_rules_from_flags() {
        let r = rule(
            Some(503),
            None,
            Some("100ms..300ms".into()),
            50.0,
            None,
            None,
            Some("1m".into()),
        )
        .unwrap();
        assert_eq!(
            (r.delay_ms, r.delay_max_ms, r.for_secs),
            (Some(100), Some(300), Some(60))
        );
        assert!(rule(None, None, None, 100.0, None, None, None).is_err());
        assert!(rule(Some(200), None, None, 100.0, None, None, None).is_err());
        assert!(rule(Some(503), None, None, 101.0, None, None, None).is_err());
        assert!(rule(Some(503), None, Some("soon".into()), 1.0, None, None, None).is_err());
        assert!(rule(None, Some(17), None, 100.0, None, None, None).is_err());
        let g = rule(None, Some(14), None, 100.0, None, None, None).unwrap();
        assert_eq!((g.abort, g.grpc_code), (None, Some(14)));
    }
}
