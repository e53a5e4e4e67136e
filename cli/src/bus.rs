//! `flotilla bus`: look into the embedded event bus — subjects, consumer groups and their
//! lag, events, dead letters — and replay a dead letter to the group that gave up on it.
//!
//! It talks to the bus service's HTTP API (`bus://host:port`, from `--bus`,
//! `FLOTILLA_BUS` or the default of `flotilla up`). NATS JetStream has its own tooling
//! (`nats stream ls`, `nats consumer report`); the dead-letter subjects are the same.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use kit_events::embedded::wire::DeliveryLine;
use serde::Deserialize;

/// `flotilla bus …`
#[derive(Debug, clap::Args)]
pub struct Bus {
    /// The bus (`bus://host:port`).
    #[arg(long, env = "FLOTILLA_BUS", default_value = kit_events::DEFAULT_BUS_URL, global = true)]
    bus: String,
    #[command(subcommand)]
    command: BusCommand,
}

#[derive(Debug, Subcommand)]
enum BusCommand {
    /// Subjects with their retained events and newest position.
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
        after: i64,
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
    /// Offer a dead letter's event again to the group that dead-lettered it.
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

/// A consumer group as the bus reports it.
#[derive(Debug, Deserialize)]
pub(crate) struct GroupInfo {
    pub name: String,
    pub subjects: Vec<String>,
    pub cursor: i64,
    /// Events of its subjects not yet delivered.
    pub lag: i64,
    /// Delivered, not yet acknowledged.
    pub pending: i64,
}

/// Runs a bus command.
pub fn bus(cmd: Bus) -> ExitCode {
    crate::block_on("bus", run(cmd))
}

pub(crate) fn base_url(url: &str) -> anyhow::Result<String> {
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

fn print_events(events: &[DeliveryLine]) {
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
    let base = base_url(&cmd.bus)?;
    match cmd.command {
        BusCommand::Subjects => {
            let subjects: Vec<SubjectInfo> = get(format!("{base}/v1/subjects")).await?;
            println!("{:<48} {:>10} {:>10}", "SUBJECT", "EVENTS", "LAST");
            for s in subjects {
                println!("{:<48} {:>10} {:>10}", s.subject, s.events, s.last_seq);
            }
        }
        BusCommand::Groups => {
            let groups: Vec<GroupInfo> = get(format!("{base}/v1/groups")).await?;
            println!(
                "{:<28} {:>10} {:>8} {:>8}  SUBJECTS",
                "GROUP", "CURSOR", "LAG", "PENDING"
            );
            for g in groups {
                println!(
                    "{:<28} {:>10} {:>8} {:>8}  {}",
                    g.name,
                    g.cursor,
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
            let url = reqwest::Url::parse_with_params(
                &format!("{base}/v1/events"),
                &[
                    ("subject", subject),
                    ("after", after.to_string()),
                    ("limit", limit.to_string()),
                ],
            )?;
            print_events(&get::<Vec<DeliveryLine>>(url.into()).await?);
        }
        BusCommand::DeadLetters { group, limit } => {
            let filter = match group {
                Some(g) => format!("deadletter.{g}.>"),
                None => "deadletter.>".to_owned(),
            };
            let url = reqwest::Url::parse_with_params(
                &format!("{base}/v1/events"),
                &[("subject", filter), ("limit", limit.to_string())],
            )?;
            print_events(&get::<Vec<DeliveryLine>>(url.into()).await?);
        }
        BusCommand::Replay { seq } => {
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
