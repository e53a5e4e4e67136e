//! `flotilla load --sweep 5,10,20,40,80`: the saga's throughput curve. One step per
//! offered rate, one after another over the same virtual users, each a full load run
//! that follows its accepted orders to their end with histograms of its own; then a
//! table, `sweep.json` and `sweep.svg` of offered against achieved rates and time to
//! `CONFIRMED`, with the CPU each step used.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::cpu::{self, CpuUse};
use super::schedule::Schedule;
use super::stats::{Percentiles, Report};
use super::{Load, chart, drive, prepare, write_files, write_report};

/// The sweep's options of `flotilla load`.
#[derive(Debug, clap::Args)]
pub struct Sweep {
    /// Instead of one run at `--rate`, one step per offered rate (`5,10,20,40,80`), each
    /// for `--duration`, following every accepted order to its end (as with
    /// `--follow-orders`). Writes `sweep.json` and `sweep.svg` to `--report`, and each
    /// step's own report to `--report/<rate>/`.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    sweep: Vec<f64>,
    /// Pause between two steps, so one step's leftovers do not start the next one's.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    sweep_pause: Duration,
    /// The `flotilla up` whose processes' CPU each step samples (it and its children);
    /// without it, every process running `flotilla run <service>` on this machine.
    #[arg(long)]
    up_pid: Option<u32>,
}

impl Sweep {
    /// Whether a sweep was asked for.
    pub fn is_sweep(&self) -> bool {
        !self.sweep.is_empty()
    }
}

/// One step of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Arrivals per second offered.
    pub offered: f64,
    /// Arrivals per second sent (not refused by the in-flight limit).
    pub achieved: f64,
    /// `202` answers to `POST /api/orders` per second of the step's duration.
    pub accepted_rate: f64,
    /// Orders seen `CONFIRMED` or `CANCELLED` per second (over the step's duration, or
    /// until its last order ended if that was later).
    pub settled_rate: f64,
    /// Orders seen `CONFIRMED` per second, likewise.
    pub confirmed_rate: f64,
    pub confirmed: u64,
    /// Accepted orders that had not ended at the follow deadline.
    pub unsettled: u64,
    /// From acceptance to `CONFIRMED`, by the orders' own timestamps.
    pub to_confirmed_ms: Percentiles,
    pub requests: u64,
    pub errors: u64,
    pub errors_by_status: BTreeMap<String, u64>,
    /// CPU used from the first arrival until the last order of the step ended.
    pub cpu: CpuUse,
    /// How long the step took, its followers included.
    pub elapsed_s: f64,
}

impl StepReport {
    fn of(report: &Report, cpu: CpuUse) -> Self {
        let run = &report.run;
        let accepted = report
            .endpoints
            .iter()
            .find(|e| e.endpoint == "POST /api/orders")
            .map_or(0, |e| e.ok);
        let saga = report.saga.as_ref();
        Self {
            offered: run.rate,
            achieved: report.achieved_arrival_rate,
            accepted_rate: round3(accepted as f64 / run.duration_s),
            settled_rate: saga.map_or(0.0, |s| s.settled_rate),
            confirmed_rate: saga.map_or(0.0, |s| s.confirmed_rate),
            confirmed: saga.map_or(0, |s| s.confirmed),
            unsettled: saga.map_or(0, |s| s.unsettled),
            to_confirmed_ms: saga.map_or_else(Percentiles::none, |s| s.to_confirmed_ms.clone()),
            requests: report.requests,
            errors: report.errors,
            errors_by_status: report.errors_by_status.clone(),
            cpu,
            elapsed_s: saga.map_or(report.elapsed_s, |s| report.elapsed_s.max(s.last_settled_s)),
        }
    }
}

/// What `sweep.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub gateway: String,
    pub scenario: String,
    /// How long each step issued arrivals.
    pub duration_s: f64,
    pub users: usize,
    pub follow_deadline_s: f64,
    pub started_at: String,
    /// Cores of the machine (load generator and system share them).
    pub cores: usize,
    pub steps: Vec<StepReport>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0}"))
}

impl SweepReport {
    /// The table printed at the end of the sweep.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sweep against {} (mix {}, {} users, {}s per step, orders followed up to {}s, {} cores)\n",
            self.gateway,
            self.scenario,
            self.users,
            self.duration_s,
            self.follow_deadline_s,
            self.cores
        );
        let _ = writeln!(
            out,
            "{:>9} {:>10} {:>10} {:>10} {:>12} {:>9} {:>9} {:>9} {:>7} {:>11} {:>11} {:>9}",
            "offered/s",
            "achieved/s",
            "accepted/s",
            "settled/s",
            "CONFIRMED/s",
            "p50 ms",
            "p99 ms",
            "unsettled",
            "errors",
            "system CPU",
            "servers CPU",
            "machine"
        );
        for s in &self.steps {
            let c = &s.cpu;
            let _ = writeln!(
                out,
                "{:>9} {:>10.2} {:>10.2} {:>10.2} {:>12.2} {:>9} {:>9} {:>9} {:>7} {:>11} {:>11} {:>9}",
                s.offered,
                s.achieved,
                s.accepted_rate,
                s.settled_rate,
                s.confirmed_rate,
                ms(s.to_confirmed_ms.p50),
                ms(s.to_confirmed_ms.p99),
                s.unsettled,
                s.errors,
                format!("{:.2} cores", c.system_cores),
                format!("{:.2} cores", c.servers_cores),
                c.machine_busy
                    .map_or_else(|| "-".into(), |b| format!("{:.0} %", b * 100.0)),
            );
        }
        let _ = writeln!(
            out,
            "\np50/p99: accepted → CONFIRMED by the orders' timestamps; CPU from /proc over each step (machine: share of all cores busy)"
        );
        out
    }
}

/// Runs the sweep `sweep` over the load `load` describes.
pub async fn run(load: Load, sweep: Sweep) -> anyhow::Result<()> {
    for &rate in &sweep.sweep {
        Schedule::new(rate, load.duration).map_err(anyhow::Error::msg)?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
    });
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let prepared = prepare(&load).await?;
    let mut steps = Vec::new();
    for (i, &rate) in sweep.sweep.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(sweep.sweep_pause).await;
        }
        if *stop_rx.borrow() {
            break;
        }
        eprintln!(
            "step {}/{}: {rate} arrivals/s for {:?}",
            i + 1,
            sweep.sweep.len(),
            load.duration
        );
        let mut stop = stop_rx.clone();
        let before = cpu::sample(sweep.up_pid);
        let report = drive(
            &load,
            rate,
            Some(load.follow_deadline),
            &prepared,
            true,
            async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            },
            |_| {},
        )
        .await?;
        let used = CpuUse::between(&before, &cpu::sample(sweep.up_pid));
        write_report(&load.report.join(rate.to_string()), &report)?;
        let step = StepReport::of(&report, used);
        eprintln!(
            "  {:.2} accepted/s, {:.2} CONFIRMED/s, p99 to CONFIRMED {} ms, {} errors",
            step.accepted_rate,
            step.confirmed_rate,
            ms(step.to_confirmed_ms.p99),
            step.errors
        );
        steps.push(step);
    }
    if steps.is_empty() {
        bail!("interrupted before the first step");
    }
    let report = SweepReport {
        gateway: prepared.base.clone(),
        scenario: load.scenario.to_string(),
        duration_s: load.duration.as_secs_f64(),
        users: prepared.users,
        follow_deadline_s: load.follow_deadline.as_secs_f64(),
        started_at,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        steps,
    };
    print!("{}", report.table());
    write_sweep(&load.report, &report)?;
    println!(
        "\nreport: {} and {} (each step's in {}/<rate>/)",
        load.report.join("sweep.json").display(),
        load.report.join("sweep.svg").display(),
        load.report.display()
    );
    if report.steps.iter().all(|s| s.confirmed == 0) {
        bail!("no order was CONFIRMED in any step");
    }
    Ok(())
}

/// Writes `sweep.json` and `sweep.svg` into `dir`.
fn write_sweep(dir: &Path, report: &SweepReport) -> anyhow::Result<()> {
    write_files(
        dir,
        ("sweep.json", report),
        ("sweep.svg", chart::sweep_svg(report)),
    )
}

#[cfg(test)]
impl SweepReport {
    /// Three steps, the last one past the knee.
    pub fn example() -> Self {
        let step = |offered: f64, confirmed: f64, p99: f64| StepReport {
            offered,
            achieved: offered,
            accepted_rate: offered,
            settled_rate: confirmed / 0.85,
            confirmed_rate: confirmed,
            confirmed: (confirmed * 30.0) as u64,
            unsettled: 0,
            to_confirmed_ms: Percentiles {
                p50: Some(p99 / 2.0),
                p90: Some(p99 * 0.8),
                p99: Some(p99),
                p99_9: Some(p99),
                max: Some(p99),
            },
            requests: (offered * 60.0) as u64,
            errors: 0,
            errors_by_status: BTreeMap::new(),
            cpu: CpuUse {
                cores: 2,
                machine_busy: Some(offered / 100.0),
                system_cores: offered / 60.0,
                system_processes: 11,
                servers_cores: 0.0,
                generator_cores: Some(0.1),
            },
            elapsed_s: 31.0,
        };
        Self {
            gateway: "http://127.0.0.1:8080".into(),
            scenario: "order=1".into(),
            duration_s: 30.0,
            users: 20,
            follow_deadline_s: 60.0,
            started_at: "2026-12-01T00:00:00Z".into(),
            cores: 2,
            steps: vec![
                step(5.0, 4.2, 180.0),
                step(20.0, 17.0, 240.0),
                step(80.0, 40.0, 9000.0),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::{Outcome, Recorder, Run};
    use super::*;

    #[test]
    fn a_step_reads_rates_and_times_from_its_run() {
        let mut r = Recorder::default();
        r.follow_orders(Duration::from_secs(60));
        for i in 0..20u64 {
            let at = Duration::from_millis(i * 100);
            r.arrival(Duration::ZERO);
            r.request("POST /api/orders", Outcome::Ok(202), at, at);
            r.settled(i % 5 != 0, Some(Duration::from_millis(200 + i)), at);
        }
        let report = r.report(Run::example(), Duration::from_secs(2));
        let cpu = CpuUse::between(&cpu::sample(None), &cpu::sample(None));
        let step = StepReport::of(&report, cpu);
        assert_eq!(step.offered, 10.0);
        assert_eq!((step.achieved, step.accepted_rate), (10.0, 10.0));
        assert_eq!((step.confirmed, step.confirmed_rate), (16, 8.0));
        assert_eq!(step.settled_rate, 10.0);
        assert!(step.to_confirmed_ms.p99.unwrap() >= 200.0);
        // A run without followed orders gives an empty step, not a panic.
        let plain = Recorder::default().report(Run::example(), Duration::from_secs(1));
        let empty = StepReport::of(&plain, step.cpu.clone());
        assert_eq!((empty.confirmed, empty.to_confirmed_ms.p99), (0, None));
    }

    #[test]
    fn the_table_has_a_row_per_step_and_the_json_round_trips() {
        let report = SweepReport::example();
        let table = report.table();
        assert_eq!(table.lines().filter(|l| l.ends_with(" %")).count(), 3);
        assert!(
            table.contains("CONFIRMED/s") && table.contains("9000"),
            "{table}"
        );
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<SweepReport>(&json).unwrap(), report);
    }

    #[test]
    fn the_sweep_options_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            sweep: Sweep,
        }
        let cli = Cli::parse_from(["t", "--sweep", "5,10,20", "--up-pid", "42"]);
        assert_eq!(cli.sweep.sweep, [5.0, 10.0, 20.0]);
        assert_eq!(cli.sweep.up_pid, Some(42));
        assert!(cli.sweep.is_sweep());
        assert!(!Cli::parse_from(["t"]).sweep.is_sweep());
    }
}
