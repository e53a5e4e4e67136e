//! `flotilla bus`: look into the event bus — consumer groups and their lag, events, dead
//! letters, on the embedded bus or NATS JetStream (through [`kit_events::inspect`]) — and,
//! on the embedded bus, list subjects and replay a dead letter to the group that gave up
//! on it.
//!
//! The bus is `--bus`, else the configured one (`FLOTILLA_BUS`, the profile's file, or
//! the default of `flotilla up`). On NATS, `nats stream ls` and `nats consumer report`
//! show the rest; the dead-letter subjects are the same.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use kit_events::inspect::{self, Logged};
use serde::Deserialize;

/// `flotilla bus …`
#[derive(Debug, clap::Args)]
pub struct Bus {
    /// The bus (`bus://host:port` or `nats://…`); by default the configured one.
    #[arg(long, global = true)]
    bus: Option<String>,
    #[command(subcommand)]
    command: BusCommand,
}

#[derive(Debug, Subcommand)]
enum BusCommand {
    /// Subjects with their retained events and newest position (embedded bus).
    Subjects,
    /// Consumer groups with their filters, lag (not yet delivered) and pending (unacked).
    Groups,
    /// Events on a subject (wildcards `*`, `>`), oldest first.
    Peek {
        /// Subject filter.
        #[arg(default_value = ">")]
        subject: String,
        /// Only events after this position.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Dead letters (of one group, or all), oldest first.
    DeadLetters {
        /// The consumer group.
        group: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Offer a dead letter's event again to the group that dead-lettered it (embedded
    /// bus).
    Replay {
        /// The dead letter's position (from `dead-letters`).
        seq: i64,
    },
}

#[derive(Debug, Deserialize)]
struct SubjectInfo {
    subject: String,
    events: i64,
    last_seq: i64,
}

/// Runs a bus command.
pub fn bus(cmd: Bus) -> ExitCode {
    crate::block_on("bus", run(cmd))
}

fn base_url(url: &str) -> anyhow::Result<String> {
    match url.strip_prefix("bus://") {
        Some(authority) if !authority.is_empty() => Ok(format!(
            "{}://{}",
            kit::security::mtls::scheme(),
            authority.trim_end_matches('/')
        )),
        _ => bail!(
            "{url:?} is not an embedded bus (bus://host:port); for NATS JetStream use the \
             `nats` tool (dead letters are on subjects deadletter.<group>.<subject>)"
        ),
    }
}

/// A client of the bus with the operator's identity.
fn client() -> anyhow::Result<reqwest::Client> {
    Ok(kit::security::mtls::reqwest_builder().build()?)
}

/// `GET url` with the operator's client, as JSON.
pub(crate) async fn get<T: serde::de::DeserializeOwned>(url: String) -> anyhow::Result<T> {
    get_json(&client()?, url).await
}

/// `GET url` with `http`, as JSON; any status but a success is an error.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
) -> anyhow::Result<T> {
    let response = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "{url}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    response
        .json()
        .await
        .with_context(|| format!("{url}: unexpected answer"))
}

fn print_events(events: &[Logged]) {
    if events.is_empty() {
        println!("(none)");
    }
    for e in events {
        println!(
            "{:>8}  {:<40} {}  {}",
            e.seq,
            e.subject,
            e.event.id,
            serde_json::to_string(&e.event.data).unwrap_or_default()
        );
    }
}

async fn run(cmd: Bus) -> anyhow::Result<()> {
    let url = cmd
        .bus
        .unwrap_or_else(|| kit_events::url_from_config(&kit::config::Config::load()));
    let bus = || async {
        inspect::connect(&url, "--bus")
            .await
            .with_context(|| format!("cannot read the bus {}", kit::store::redact(&url)))
    };
    match cmd.command {
        BusCommand::Subjects => {
            let base = base_url(&url)?;
            let subjects: Vec<SubjectInfo> = get(format!("{base}/v1/subjects")).await?;
            println!("{:<48} {:>10} {:>10}", "SUBJECT", "EVENTS", "LAST");
            for s in subjects {
                println!("{:<48} {:>10} {:>10}", s.subject, s.events, s.last_seq);
            }
        }
        BusCommand::Groups => {
            let groups = bus().await?.groups().await?;
            println!("{:<28} {:>8} {:>8}  SUBJECTS", "GROUP", "LAG", "PENDING");
            for g in groups {
                println!(
                    "{:<28} {:>8} {:>8}  {}",
                    g.name,
                    g.lag,
                    g.pending,
                    g.subjects.join(",")
                );
            }
        }
        BusCommand::Peek {
            subject,
            after,
            limit,
        } => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            print_events(&bus().await?.events(&subject, after, limit).await?);
        }
        BusCommand::DeadLetters { group, limit } => {
            let mut dead = bus().await?.dead_letters().await?;
            if let Some(g) = group {
                let prefix = format!("deadletter.{g}.");
                dead.retain(|d| d.subject.starts_with(&prefix));
            }
            dead.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            print_events(&dead);
        }
        BusCommand::Replay { seq } => {
            let base = base_url(&url)?;
            let url = format!("{base}/v1/deadletters/{seq}/replay");
            let response = client()?
                .post(&url)
                .send()
                .await
                .with_context(|| format!("cannot reach the bus at {url}"))?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!("replay of dead letter {seq}: {status}: {body}");
            }
            println!("replayed dead letter {seq}: {body}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_embedded_bus_has_an_http_api() {
        assert_eq!(
            base_url("bus://127.0.0.1:8083").unwrap(),
            "http://127.0.0.1:8083"
        );
        assert!(base_url("nats://127.0.0.1:4222").is_err());
        assert!(base_url("bus://").is_err());
    }
}
