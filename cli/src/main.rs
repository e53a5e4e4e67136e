//! `flotilla`: run, supervise and inspect the whole system from one binary.
//!
//! `flotilla up` spawns this same binary as `flotilla run <service>` once per service,
//! so every service is its own OS process while users build one artifact.
#![forbid(unsafe_code)]

mod analytics;
mod auth;
mod bus;
mod chaos;
mod r#gen;
mod load;
mod logs;
mod profile;
mod scale;
mod services;
mod status;
mod trace;
mod traffic;
mod up;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "The Flotilla microservices system"
)]
struct Cli {
    /// Which servers the system runs on: `embedded` (nothing to install) or `infra`
    /// (PostgreSQL, MariaDB, Redis, NATS, etcd: `flotilla.infra.toml`).
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_PROFILE",
        value_enum,
        default_value_t
    )]
    profile: profile::Profile,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the whole system: registry, then every service as its own process.
    Up {
        /// Where stores, logs and snapshots live.
        #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
        /// Instances per service at start: `orders=3,inventory=2` (default 1 each).
        #[arg(long, env = "FLOTILLA_REPLICAS", value_delimiter = ',', value_parser = replicas)]
        replicas: Vec<(String, usize)>,
    },
    /// Run a number of instances of one service on a running system.
    Scale(scale::Scale),
    /// Replace a service's instances one at a time, or as a canary; `--undo` goes back.
    Rollout(scale::Rollout),
    /// Show or set how calls to a service are split over its versions.
    Traffic(traffic::Traffic),
    /// Show services, instances, addresses, health, uptime and memory.
    Status,
    /// Break things on purpose: inject faults, kill instances.
    #[command(subcommand)]
    Chaos(chaos::Chaos),
    /// Put the shop under load: open-loop arrivals at a fixed rate through the gateway,
    /// with latency histograms per endpoint and a report (JSON and an SVG chart).
    Load(load::LoadCommand),
    /// Check the system's invariants after an experiment: a verdict for each; exits 1 on
    /// a violation, 3 when the system could not be read.
    Verify(verify::Verify),
    /// Inspect the event bus: subjects, groups and lag, events, dead letters; replay.
    Bus(bus::Bus),
    /// Print one trace from the dashboard as a waterfall: spans by parent, with their
    /// service, duration, status and a bar on the trace's time axis.
    Trace(trace::TraceArgs),
    /// Read the fleet's aggregated logs from the dashboard; `--follow` keeps printing.
    Logs(logs::LogsArgs),
    /// Operate auth: rotate its signing key.
    #[command(subcommand)]
    Auth(auth::Auth),
    /// Operate analytics: rebuild its projections by replaying the stream.
    #[command(subcommand)]
    Analytics(analytics::Analytics),
    /// Write the deployment files: Dockerfiles, compose, Kubernetes, CI workflows.
    Gen(r#gen::Gen),
    /// Run one service in the foreground (what `up` spawns; what a container runs).
    Run {
        /// The service: one of the names `flotilla status` lists.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(services::NAMES))]
        service: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let data_dir = match &cli.command {
        Command::Up { data_dir, .. } => data_dir.clone(),
        _ => std::env::var_os("FLOTILLA_DATA_DIR")
            .map_or_else(|| PathBuf::from(".flotilla"), PathBuf::from),
    };
    if let Err(e) = profile::apply(cli.profile, &data_dir) {
        eprintln!("flotilla: --profile {:?}: {e:#}", cli.profile);
        return ExitCode::from(kit::config::EX_USAGE as u8);
    }
    // One TLS provider (ring) for every client this process builds, mTLS or not.
    kit::security::mtls::install_crypto_provider();
    // These talk to the registry and the bus, which only take callers with a
    // certificate from the system's CA.
    if matches!(
        cli.command,
        Command::Status
            | Command::Chaos(_)
            | Command::Bus(_)
            | Command::Traffic(_)
            | Command::Verify(_)
    ) && let Err(e) = install_operator(&kit::config::Config::load())
    {
        eprintln!("flotilla: {e:#}");
        return ExitCode::from(kit::config::EX_USAGE as u8);
    }
    match cli.command {
        Command::Run { service } => services::run(&service),
        Command::Up { data_dir, replicas } => up::up(data_dir, replicas),
        Command::Scale(cmd) => scale::scale(cmd),
        Command::Rollout(cmd) => scale::rollout(cmd),
        Command::Traffic(cmd) => traffic::traffic(cmd),
        Command::Status => status::status(),
        Command::Chaos(cmd) => chaos::chaos(cmd),
        Command::Bus(cmd) => bus::bus(cmd),
        Command::Trace(args) => trace::trace(args),
        Command::Logs(args) => logs::logs(args),
        Command::Load(args) => load::load(args),
        Command::Verify(args) => verify::verify(args),
        Command::Auth(cmd) => auth::auth(cmd),
        Command::Analytics(cmd) => analytics::analytics(cmd),
        Command::Gen(args) => r#gen::gen_command(args),
    }
}

/// `orders=3` as a service and an instance count.
fn replicas(text: &str) -> Result<(String, usize), String> {
    let (name, n) = text
        .split_once('=')
        .ok_or_else(|| format!("expected service=count, like orders=3, not {text:?}"))?;
    let n: usize = n
        .parse()
        .map_err(|_| format!("the count of {name} is not a whole number"))?;
    if n == 0 {
        return Err(format!("{name} needs at least one instance"));
    }
    Ok((name.to_owned(), n))
}

/// Makes this process's clients speak as `operator`, the identity `flotilla up` issues
/// for the commands (`<data dir>/tls/operator.crt`), unless internal traffic is plain
/// text (`FLOTILLA_INSECURE_INTERNAL=1`).
fn install_operator(config: &kit::config::Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use kit::security::mtls;
    let common = config.common()?;
    let tls: mtls::TlsConfig = config.section("tls")?;
    let transport = mtls::InternalTransport::load(mtls::OPERATOR, &common, &tls).context(
        "cannot load the operator's certificate (does `flotilla up` run with this data directory?)",
    )?;
    mtls::install(transport);
    Ok(())
}

/// Runs one command's async body on a small runtime, printing its error as
/// `flotilla <name>: …`.
fn block_on(name: &str, body: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
