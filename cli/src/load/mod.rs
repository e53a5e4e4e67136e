//! `flotilla load`: an open-loop load generator against the gateway.
//!
//! Arrivals come on a fixed schedule (`--rate` per second for `--duration`) whatever the
//! system answers; each arrival runs one scenario from the public API, picked from a
//! weighted mix. Latencies count from when a request was due, so a stall shows as the
//! latency every waiting arrival really saw (no coordinated omission). At most
//! `--max-in-flight` scenarios run at once; an arrival beyond that is counted as an error,
//! never queued. The end prints a table and writes `report.json` and `chart.svg`.
//! With `--follow-orders` each accepted order is read until its saga ends, timed by the
//! order's own timestamps; `--sweep` runs one such step per offered rate.

mod chart;
mod cpu;
mod saga;
mod scenario;
mod schedule;
mod shop;
mod stats;
mod sweep;

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

/// `flotilla load …`: one run, or a sweep of runs at rising rates.
#[derive(Debug, clap::Args)]
pub struct LoadCommand {
    #[command(flatten)]
    load: Load,
    #[command(flatten)]
    sweep: sweep::Sweep,
}

/// What one load run does (also what `flotilla chaos run` puts under load).
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
    /// After an order is accepted (`202`), read it every 250 ms (every second once it is
    /// older than 5 s) until it is CONFIRMED or CANCELLED and record the time from
    /// acceptance to its end by the order's own timestamps (`saga: accepted → …` rows);
    /// those reads are not in the table.
    #[arg(long)]
    follow_orders: bool,
    /// How long a followed order may take to end before it counts as not settled.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    follow_deadline: Duration,
}

/// Runs `flotilla load`.
pub fn load(args: LoadCommand) -> ExitCode {
    if args.sweep.is_sweep() {
        crate::block_on("load", sweep::run(args.load, args.sweep))
    } else {
        crate::block_on("load", run(args.load))
    }
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
    Schedule::new(args.rate, args.duration).map_err(anyhow::Error::msg)?;
    let prepared = prepare(args).await?;
    let follow = args.follow_orders.then_some(args.follow_deadline);
    drive(
        args,
        args.rate,
        follow,
        &prepared,
        progress_bar,
        stop,
        started,
    )
    .await
}

/// What the runs against one gateway share: the client, and the virtual users and
/// catalog set up before the first of them.
#[derive(Debug)]
struct Prepared {
    http: reqwest::Client,
    base: String,
    run_id: String,
    users: usize,
    setup: Arc<Setup>,
}

/// Checks `args` and does the unmeasured set-up: the catalog, the virtual users, the
/// administrator and the stock.
async fn prepare(args: &Load) -> anyhow::Result<Prepared> {
    let mix = &args.scenario;
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
    Ok(Prepared {
        http,
        base,
        run_id,
        users,
        setup: Arc::new(setup),
    })
}

/// One measured run at `rate` arrivals/s over a prepared set-up, following accepted
/// orders for up to `follow` each when it is given.
async fn drive(
    args: &Load,
    rate: f64,
    follow: Option<Duration>,
    prepared: &Prepared,
    progress_bar: bool,
    stop: impl std::future::Future<Output = ()>,
    started: impl FnOnce(Instant),
) -> anyhow::Result<Report> {
    let schedule = Schedule::new(rate, args.duration).map_err(anyhow::Error::msg)?;
    let mix = &args.scenario;
    let base = prepared.base.clone();
    let mut recorder = Recorder::default();
    if let Some(deadline) = follow {
        recorder.follow_orders(deadline);
    }
    let recorder = Arc::new(Mutex::new(recorder));
    let start = Instant::now();
    started(start);
    let shop = Arc::new(Shop::new(
        prepared.http.clone(),
        base.clone(),
        prepared.setup.clone(),
        prepared.run_id.clone(),
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
    // Scenarios and the followers of their orders; a follower gives its scenario's
    // in-flight permit back first (waiting for a saga is not a request in flight).
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    let mut interrupted = false;
    for n in 0..schedule.len() {
        while tasks.try_join_next().is_some() {}
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
            tasks.spawn(async move {
                let placed = shop.run(scenario, due).await;
                drop(permit);
                if let (Some(placed), Some(deadline)) = (placed, follow) {
                    shop.follow(placed, deadline).await;
                }
            });
        }
        bar.inc(1);
    }
    // A scenario makes at most four requests (refresh, login, order, read back); a
    // follower reads until its deadline, the last read bounded by the timeout.
    // Interrupted, the followers are not waited for.
    let followers = follow.filter(|_| !interrupted);
    let drain = args.timeout * 4
        + Duration::from_secs(1)
        + followers.map_or(Duration::ZERO, |d| d + args.timeout);
    let drained = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_ok();
    tasks.abort_all();
    // Until the last answer: with followers, the last of the scenarios' own requests.
    let elapsed = match follow {
        None => start.elapsed(),
        Some(_) => recorder.lock().expect("recorder lock").last_answer(),
    };
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
        users: prepared.users,
        max_in_flight: args.max_in_flight,
        started_at: humantime::format_rfc3339_seconds(SystemTime::now() - elapsed).to_string(),
    };
    Ok(recorder.lock().expect("recorder lock").report(run, elapsed))
}

/// Writes `report.json` and `chart.svg` into `dir`.
pub fn write_report(dir: &std::path::Path, report: &Report) -> anyhow::Result<()> {
    write_files(
        dir,
        ("report.json", report),
        ("chart.svg", chart::svg(report)),
    )
}

/// Writes `json` as JSON and the drawn `svg` into `dir`, each under its file name.
fn write_files(
    dir: &std::path::Path,
    (json_name, json): (&str, &impl serde::Serialize),
    (svg_name, svg): (&str, Result<String, String>),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_vec_pretty(json)?;
    std::fs::write(dir.join(json_name), json)
        .with_context(|| format!("writing {}", dir.join(json_name).display()))?;
    let svg = svg.map_err(anyhow::Error::msg)?;
    std::fs::write(dir.join(svg_name), svg)
        .with_context(|| format!("writing {}", dir.join(svg_name).display()))?;
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
