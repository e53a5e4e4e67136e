//! `flotilla`: run, supervise and inspect the whole system from one binary.
//!
//! `flotilla up` spawns this same binary as `flotilla run <service>` once per service,
//! so every service is its own OS process while users build one artifact.
#![forbid(unsafe_code)]

mod analytics;
mod auth;
mod bus;
mod chaos;
mod services;
mod status;
mod up;

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
    },
    /// Show services, instances, addresses, health, uptime and memory.
    Status,
    /// Break things on purpose: inject faults, kill instances.
    #[command(subcommand)]
    Chaos(chaos::Chaos),
    /// Inspect the event bus: subjects, groups and lag, events, dead letters; replay.
    Bus(bus::Bus),
    /// Operate auth: rotate its signing key.
    #[command(subcommand)]
    Auth(auth::Auth),
    /// Operate analytics: rebuild its projections by replaying the stream.
    #[command(subcommand)]
    Analytics(analytics::Analytics),
    /// Run one service in the foreground (what `up` spawns; what a container runs).
    Run {
        /// The service: one of the names `flotilla status` lists.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(services::NAMES))]
        service: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { service } => services::run(&service),
        Command::Up { data_dir } => up::up(data_dir),
        Command::Status => status::status(),
        Command::Chaos(cmd) => chaos::chaos(cmd),
        Command::Bus(cmd) => bus::bus(cmd),
        Command::Auth(cmd) => auth::auth(cmd),
        Command::Analytics(cmd) => analytics::analytics(cmd),
    }
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
