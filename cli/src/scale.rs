//! `flotilla scale` and `flotilla rollout`: change the instances of one service of a
//! running `flotilla up`, through its control socket. The work happens in `up`
//! (`up::fleet`); these print its progress and its verdict.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::up::Request;
use crate::up::fleet::{CanaryPlan, RolloutPlan};

/// `flotilla scale <service> <n>`
#[derive(Debug, Args)]
pub struct Scale {
    /// The service (not registry, bus or gateway: they listen on fixed addresses).
    service: String,
    /// How many instances to run.
    replicas: usize,
    /// Count only the instances of this version, starting new ones with it beside the
    /// others (0 removes them): a canary by hand, for `flotilla traffic`.
    #[arg(long)]
    version: Option<String>,
    /// The binary for new instances of `--version` (default: the running one).
    #[arg(long, requires = "version")]
    binary: Option<PathBuf>,
    /// The data directory of the running `flotilla up`.
    #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
    data_dir: PathBuf,
}

/// `flotilla rollout <service>`
#[derive(Debug, Args)]
pub struct Rollout {
    /// The service (not registry, bus or gateway: they listen on fixed addresses).
    service: String,
    /// The new binary (another build of `flotilla`); default: the running one.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The version the new instances register (default: what `<binary> --version` says).
    #[arg(long)]
    version: Option<String>,
    /// Instances allowed above the current count while rolling.
    #[arg(long, default_value_t = 1)]
    max_surge: usize,
    /// Instances allowed below the current count while rolling.
    #[arg(long, default_value_t = 0)]
    max_unavailable: usize,
    /// How long a new instance may take to become ready before the rollout stops.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
    /// Go back to what ran before the last rollout.
    #[arg(long, conflicts_with_all = ["binary", "version", "canary"])]
    undo: bool,
    /// Shift traffic to one new instance step by step, judging it on its metrics.
    #[arg(long)]
    canary: bool,
    /// Traffic percentages for the canary; 100 promotes it.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,50,100",
        requires = "canary"
    )]
    steps: Vec<u32>,
    /// How long each canary step runs before it is judged.
    #[arg(long, default_value = "30s", requires = "canary", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Roll back when the canary's 5xx rate exceeds the stable version's by more than
    /// this many percentage points.
    #[arg(long, default_value = "1%", requires = "canary")]
    max_error_rate: String,
    /// Roll back when the canary's p99 exceeds this many times the stable version's.
    #[arg(long, requires = "canary")]
    max_p99_ratio: Option<f64>,
    /// The data directory of the running `flotilla up`.
    #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
    data_dir: PathBuf,
}

/// Runs `flotilla scale`.
pub fn scale(cmd: Scale) -> ExitCode {
    let request = Request::Scale {
        service: cmd.service,
        replicas: cmd.replicas,
        version: cmd.version,
        binary: cmd.binary,
    };
    crate::block_on("scale", send(cmd.data_dir, request))
}

/// Runs `flotilla rollout`.
pub fn rollout(cmd: Rollout) -> ExitCode {
    crate::block_on("rollout", async move {
        let data_dir = cmd.data_dir.clone();
        send(data_dir, Request::Rollout(plan(cmd)?)).await
    })
}

fn plan(cmd: Rollout) -> anyhow::Result<RolloutPlan> {
    let canary = if cmd.canary {
        Some(CanaryPlan {
            steps: cmd.steps,
            interval_ms: millis(cmd.interval),
            max_error_rate: percent(&cmd.max_error_rate)?,
            max_p99_ratio: cmd.max_p99_ratio,
        })
    } else {
        None
    };
    Ok(RolloutPlan {
        service: cmd.service,
        binary: cmd.binary,
        version: cmd.version,
        max_surge: cmd.max_surge,
        max_unavailable: cmd.max_unavailable,
        ready_timeout_ms: millis(cmd.ready_timeout),
        undo: cmd.undo,
        canary,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `1%`, `0.5%` or `1` (percentage points) as a fraction.
fn percent(text: &str) -> anyhow::Result<f64> {
    let n: f64 = text.trim().trim_end_matches('%').parse().map_err(|_| {
        anyhow::anyhow!("--max-error-rate takes a percentage like 1%, not {text:?}")
    })?;
    if !(0.0..=100.0).contains(&n) {
        bail!("--max-error-rate must be between 0% and 100%");
    }
    Ok(n / 100.0)
}

async fn send(data_dir: PathBuf, request: Request) -> anyhow::Result<()> {
    let done = crate::up::control::call(&data_dir, &request, |p| println!("  {p}")).await?;
    println!("{done}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_durations_parse_with_clear_errors() {
        assert_eq!(percent("1%").unwrap(), 0.01);
        assert_eq!(percent("0.5").unwrap(), 0.005);
        assert!(percent("lots").unwrap_err().to_string().contains("1%"));
        assert!(percent("150%").is_err());
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            rollout: Rollout,
        }
        let parse = |args: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(
                ["flotilla", "orders", "--canary"].iter().chain(args),
            )
        };
        let plan = plan(parse(&["--interval", "2s"]).unwrap().rollout).unwrap();
        assert_eq!(plan.canary.unwrap().interval_ms, 2000);
        assert_eq!(plan.ready_timeout_ms, 30_000);
        let err = parse(&["--interval", "soon"]).err().unwrap().to_string();
        assert!(err.contains("--interval"), "{err}");
    }
}
