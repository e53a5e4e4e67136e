//! A read-only view of a bus for operators' tools (`flotilla verify`): the events of the
//! log, the consumer groups with how far behind they are, and the dead letters — the
//! same answers from the embedded bus and from NATS JetStream.
//!
//! Nothing here publishes, acknowledges or creates anything that outlives the call
//! (JetStream reads go through a short-lived ephemeral consumer that is deleted after).

use std::sync::Arc;

use crate::{BoxFuture, BusError, Event};

/// Most events one [`Inspect::events`] call asks the broker for in one request.
pub const PAGE: usize = 1000;

/// A consumer group as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// The group's name (as in [`crate::Group::name`]).
    pub name: String,
    /// Its subject filters, as the bus names them (no NATS prefix).
    pub subjects: Vec<String>,
    /// Events of its subjects not yet delivered to it.
    pub lag: u64,
    /// Delivered to it and not yet acknowledged (including those waiting for redelivery).
    pub pending: u64,
}

/// One event as it stands in the log.
#[derive(Debug, Clone)]
pub struct Logged {
    /// Its position: the embedded log's sequence, or the JetStream stream sequence.
    /// Positions grow with publish order; pass the last one as `after` to read on.
    pub seq: u64,
    /// The subject it was published on, as the bus names it (no NATS prefix).
    pub subject: String,
    /// The event.
    pub event: Event,
}

/// Reads a bus without changing it.
pub trait Inspect: Send + Sync + std::fmt::Debug {
    /// Up to `limit` events on subjects matching `subject` (wildcards `*` and a final
    /// `>`) after position `after` (0: from the start), oldest first. Returns what the
    /// log holds now and never waits for more.
    fn events<'a>(
        &'a self,
        subject: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Logged>, BusError>>;

    /// Every durable consumer group, by name.
    fn groups(&self) -> BoxFuture<'_, Result<Vec<GroupState>, BusError>>;

    /// Every dead letter (subjects `deadletter.<group>.<subject>`, see
    /// [`crate::dead_letter_subject`]), oldest first; each carries the original event.
    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<Logged>, BusError>> {
        Box::pin(every_event(self, "deadletter.>", 0))
    }
}

/// Every event on `subject` after `after`, read [`PAGE`] at a time.
pub async fn every_event<I: Inspect + ?Sized>(
    bus: &I,
    subject: &str,
    after: u64,
) -> Result<Vec<Logged>, BusError> {
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let page = bus.events(subject, after, PAGE).await?;
        let full = page.len() == PAGE;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// Checks a subject filter before it goes to the broker.
pub(crate) fn check_filter(subject: &str) -> Result<(), BusError> {
    if crate::valid_subject(subject, true) {
        Ok(())
    } else {
        Err(BusError::Protocol(format!(
            "invalid subject filter {subject:?}"
        )))
    }
}

/// Connects a read-only view to the bus named by `url` (`bus://host:port` or
/// `nats://host:port?stream=…&prefix=…`, as for [`crate::connect`]); `setting` names
/// where the URL came from, for errors. On NATS the stream must exist already.
pub async fn connect(url: &str, setting: &str) -> Result<Arc<dyn Inspect>, BusError> {
    match kit::store::scheme(url) {
        "bus" => Ok(Arc::new(
            crate::embedded::EmbeddedBus::connect(url, setting).await?,
        )),
        "nats" => Ok(Arc::new(
            crate::nats::NatsBus::connect_existing(url, setting).await?,
        )),
        _ => Err(crate::unsupported_url(url, setting)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_schemes_and_filters_are_refused() {
        let e = connect("kafka://x", "FLOTILLA_BUS").await.unwrap_err();
        assert!(e.to_string().contains("FLOTILLA_BUS"), "{e}");
        assert!(check_filter("orders.>").is_ok());
        assert!(check_filter("orders..x").is_err());
    }
}
