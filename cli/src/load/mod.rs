//! `flotilla load`: an open-loop load generator against the gateway.
//!
//! Arrivals come on a fixed schedule (`--rate` per second for `--duration`) whatever the
//! system answers; each arrival runs one scenario from the public API, picked from a
//! weighted mix. Latencies count from when a request was due, so a stall shows as the
//! latency every waiting arrival really saw (no coordinated omission). At most
//! `--max-in-flight` scenarios run at once; an arrival beyond that is counted as an error,
//! never queued. The end prints a table and writes `report.json` and `chart.svg`.

mod chart;
mod scenario;
mod schedule;
mod shop;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::RngExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use scenario::{Mix, Scenario};
use schedule::Schedule;
use shop::{Setup, Shop};
use stats::{Recorder, Run};

pub use stats::Report;

/// `flotilla load …`
#[derive(Debug, clap::Args)]
pub struct Load {
    /// The gateway to send the load to.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Arrivals per second; each runs one scenario (one to three requests).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// How long arrivals are issued (`30s`, `2m`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Virtual users registered and logged in before the run; browsing, orders, cancels
    /// and logins act as them, reusing and refreshing their tokens.
    #[arg(long, default_value_t = 10)]
    users: usize,
    /// One scenario or a weighted mix, e.g. `browse=6,order=3,cancel=1`. Scenarios:
    /// browse, register, login, order, cancel, summary.
    #[arg(long, default_value = scenario::DEFAULT_MIX)]
    scenario: Mix,
    /// Directory for `report.json` and `chart.svg`.
    #[arg(long, default_value = "load-report")]
    report: PathBuf,
    /// Most scenarios in flight at once; an arrival beyond it is an error, not queued.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Before the run, the administrator sets every product's stock to this, so orders
    /// are not refused for want of stock (the seeded catalog has only a few of each).
    #[arg(long)]
    stock: Option<u64>,
    /// The data directory of `flotilla up`: the summary scenario and `--stock` log in with the
    /// administrator's credentials from `<data dir>/admin-credentials.json`.
    #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
    data_dir: PathBuf,
}

/// Runs `flotilla load`.
pub fn load(args: Load) -> ExitCode {
    crate::block_on("load", run(args))
}

async fn run(args: Load) -> anyhow::Result<()> {
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let report = generate(&args, true, stop, |_| {}).await?;
    print!("{}", report.table());
    write_report(&args.report, &report)?;
    println!(
        "\nreport: {} and {}",
        args.report.join("report.json").display(),
        args.report.join("chart.svg").display()
    );
    if report.ok == 0 {
        bail!("no request succeeded");
    }
    Ok(())
}

impl Load {
    /// Where `report.json` and `chart.svg` go.
    pub fn report_dir(&self) -> &std::path::Path {
        &self.report
    }

    /// Arrivals per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How long arrivals are issued.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The gateway the load goes to.
    pub fn gateway(&self) -> &str {
        self.gateway.trim_end_matches('/')
    }
}

/// Sets up and runs the load `args` describe until its schedule ends or `stop`
/// resolves, and returns what it measured (printing nothing but the progress bar, shown
/// with `progress_bar` on a terminal). `started` hears when the first arrival is due,
/// once set-up is done.
pub async fn generate(
    args: &Load,
    progress_bar: bool,
    stop: impl std::future::Future<Output = ()>,
    started: impl FnOnce(Instant),
) -> anyhow::Result<Report> {
    let schedule = Schedule::new(args.rate, args.duration).map_err(anyhow::Error::msg)?;
    let mix = args.scenario.clone();
    if mix.needs_users() && args.users == 0 {
        bail!("the mix {mix} acts as virtual users: --users must be at least 1");
    }
    if args.max_in_flight == 0 {
        bail!("--max-in-flight must be at least 1");
    }
    let base = args.gateway.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(args.timeout)
        .pool_max_idle_per_host(args.max_in_flight)
        .build()?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();

    let users = if mix.uses_users() { args.users } else { 0 };
    eprintln!("setting up: reading the catalog, registering {users} virtual users…");
    let admin = (mix.has(Scenario::Summary) || args.stock.is_some())
        .then(|| args.data_dir.join("admin-credentials.json"));
    let setup = Setup::prepare(&http, &base, &run_id, users, admin.as_deref(), args.stock)
        .await
        .with_context(|| format!("setting up against {base}"))?;
    if (mix.has(Scenario::Order) || mix.has(Scenario::Cancel)) && !setup.has_products() {
        bail!("the catalog is empty: there is nothing to order");
    }

    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let start = Instant::now();
    started(start);
    let shop = Arc::new(Shop::new(
        http,
        base.clone(),
        setup,
        run_id,
        recorder.clone(),
        start,
    ));
    let bar = if progress_bar {
        progress(schedule.len())
    } else {
        ProgressBar::hidden()
    };
    let ticker = tokio::spawn(live(bar.clone(), recorder.clone(), start));

    let in_flight = Arc::new(Semaphore::new(args.max_in_flight));
    tokio::pin!(stop);
    let mut interrupted = false;
    for n in 0..schedule.len() {
        let due = start + schedule.due(n);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = &mut stop => {
                interrupted = true;
                break;
            }
        }
        let scenario = mix.pick(rand::rng().random_range(0..mix.total()));
        let lag = Instant::now().saturating_duration_since(due);
        let permit = in_flight.clone().try_acquire_owned();
        {
            let mut r = recorder.lock().expect("recorder lock");
            r.arrival(lag);
            if permit.is_err() {
                r.overflow(due - start);
            }
        }
        if let Ok(permit) = permit {
            let shop = shop.clone();
            tokio::spawn(async move {
                shop.run(scenario, due).await;
                drop(permit);
            });
        }
        bar.inc(1);
    }
    // A scenario makes at most four requests (refresh, login, order, read back).
    let drain = args.timeout * 4 + Duration::from_secs(1);
    let all = u32::try_from(args.max_in_flight).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(drain, in_flight.acquire_many(all))
        .await
        .is_ok();
    let elapsed = start.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    if interrupted {
        eprintln!("interrupted: reporting what was measured so far");
    }
    if !drained {
        eprintln!("some scenarios were still running {drain:?} after the last arrival");
    }

    let run = Run {
        gateway: base,
        scenario: mix.to_string(),
        rate: schedule.rate(),
        duration_s: schedule.duration().as_secs_f64(),
        users,
        max_in_flight: args.max_in_flight,
        started_at: humantime::format_rfc3339_seconds(SystemTime::now() - elapsed).to_string(),
    };
    Ok(recorder.lock().expect("recorder lock").report(run, elapsed))
}

/// Writes `report.json` and `chart.svg` into `dir`.
pub fn write_report(dir: &std::path::Path, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_vec_pretty(report)?;
    std::fs::write(dir.join("report.json"), json)
        .with_context(|| format!("writing {}", dir.join("report.json").display()))?;
    let svg = chart::svg(report).map_err(anyhow::Error::msg)?;
    std::fs::write(dir.join("chart.svg"), svg)
        .with_context(|| format!("writing {}", dir.join("chart.svg").display()))?;
    Ok(())
}

/// The progress bar: arrivals issued of all scheduled (hidden when stderr is no terminal).
fn progress(arrivals: u64) -> ProgressBar {
    let bar = ProgressBar::new(arrivals);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} arrivals  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Updates the bar's message twice a second: the answer rate over the last half second,
/// errors so far and the p99 of the last whole second.
async fn live(bar: ProgressBar, recorder: Arc<Mutex<Recorder>>, start: Instant) {
    let every = Duration::from_millis(500);
    let mut tick = tokio::time::interval(every);
    let mut before = 0;
    loop {
        tick.tick().await;
        let (requests, errors, p99) = recorder
            .lock()
            .expect("recorder lock")
            .live(start.elapsed());
        let rate = (requests - before) as f64 / every.as_secs_f64();
        before = requests;
        let p99 = p99.map_or_else(|| "-".into(), |p| format!("{p:.1} ms"));
        bar.set_message(format!("{rate:.0} req/s, {errors} errors, p99 {p99}"));
    }
}
