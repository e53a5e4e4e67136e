//! Flotilla events: the [`EventBus`] every service publishes to and consumes from, the
//! CloudEvents [`Event`] envelope, and the backends behind the bus chosen by URL
//! (`FLOTILLA_BUS`): `bus://host:port` for the embedded broker (`services/bus`) and
//! `nats://host:port` for NATS JetStream.
//!
//! Delivery is at least once. A *consumer group* is durable and sees every event on the
//! subjects it follows (stream semantics: every group gets every event, from the
//! beginning or from now); the consumers attached to one group share its events
//! (queue semantics). Consumers acknowledge each delivery; an unacknowledged one comes
//! back after the group's ack timeout, and an event that failed `max_deliveries` times is
//! moved to the dead-letter subject [`dead_letter_subject`]. Per-subject order holds for
//! a group with one consumer as long as nothing is redelivered.
//!
//! Producers publish through the transactional [`outbox`]; consumers make redelivery
//! harmless with its idempotent inbox. Operators' tools read a bus through
//! [`inspect`], the same on both backends.
#![forbid(unsafe_code)]

pub mod embedded;
pub mod envelope;
pub mod inspect;
pub mod nats;
pub mod outbox;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::sync::Arc;
use std::time::Duration;

pub use envelope::Event;
pub use kit::discovery::BoxFuture;

/// Default bus URL: the embedded broker of `flotilla up`.
pub const DEFAULT_BUS_URL: &str = "bus://127.0.0.1:8083";

/// Something went wrong talking to the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The URL or an option is invalid.
    #[error("setting `{setting}`: {message}")]
    Config {
        /// The setting, as an environment variable name.
        setting: String,
        /// What is wrong.
        message: String,
    },
    /// The broker could not be reached or failed the request.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    /// The broker answered something this client does not understand.
    #[error("event bus protocol error: {0}")]
    Protocol(String),
}

impl BusError {
    /// A short name of the failure's kind (`error.type` on spans).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::Unavailable(_) => "unavailable",
            Self::Protocol(_) => "protocol",
        }
    }
}

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Every retained event.
    Beginning,
    /// Only events published after the group is created.
    Now,
}

/// A durable consumer group and what it follows. Subscribing to an existing group
/// resumes it where it stopped (`start` only matters the first time).
#[derive(Debug, Clone)]
pub struct Group {
    /// Name: letters, digits, `-` and `_`.
    pub name: String,
    /// Subject filters: tokens separated by `.`, `*` matches one token, a final `>` the rest.
    pub subjects: Vec<String>,
    /// Where a new group starts.
    pub start: StartAt,
    /// How long a delivery may stay unacknowledged before it is delivered again.
    pub ack_timeout: Duration,
    /// Deliveries of one event before it goes to the dead-letter subject.
    pub max_deliveries: u32,
    /// Deliveries a consumer holds unacknowledged at most.
    pub max_in_flight: u32,
}

impl Group {
    /// A group following `subjects`, from the beginning, 30 s ack timeout, 5 deliveries.
    pub fn new(name: &str, subjects: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            start: StartAt::Beginning,
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            max_in_flight: 64,
        }
    }

    /// Sets where a new group starts.
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// Sets the ack timeout.
    pub fn ack_timeout(mut self, d: Duration) -> Self {
        self.ack_timeout = d;
        self
    }

    /// Sets the deliveries before dead-lettering.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// Sets the unacknowledged deliveries a consumer may hold.
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Checks the name and the filters.
    pub fn validate(&self) -> Result<(), BusError> {
        let bad = |message: String| BusError::Config {
            setting: "consumer group".to_owned(),
            message,
        };
        if !valid_group_name(&self.name) {
            return Err(bad(format!(
                "group name {:?} must be letters, digits, `-` or `_`",
                self.name
            )));
        }
        if self.subjects.is_empty() {
            return Err(bad(format!("group {:?} follows no subject", self.name)));
        }
        for s in &self.subjects {
            if !valid_subject(s, true) {
                return Err(bad(format!("invalid subject filter {s:?}")));
            }
        }
        Ok(())
    }
}

/// `true` for a valid group name.
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `true` for a valid subject (`orders.created`); with `pattern`, `*` and a final `>`
/// are allowed as whole tokens.
pub fn valid_subject(subject: &str, pattern: bool) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    !subject.is_empty()
        && subject.len() <= 255
        && tokens.iter().enumerate().all(|(i, t)| {
            (pattern && (*t == "*" || (*t == ">" && i == tokens.len() - 1)))
                || (!t.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        })
}

/// Whether `subject` matches the filter `pattern` (NATS wildcards: `*` one token, a
/// final `>` one or more).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Where the events that `group` failed to handle `max_deliveries` times go:
/// `deadletter.<group>.<subject>`.
pub fn dead_letter_subject(group: &str, subject: &str) -> String {
    format!("deadletter.{group}.{subject}")
}

/// The original group and subject of a dead-letter subject.
pub fn parse_dead_letter_subject(subject: &str) -> Option<(&str, &str)> {
    subject.strip_prefix("deadletter.")?.split_once('.')
}

/// What the broker said about a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The event id had been published before (within the deduplication window); the
    /// bus kept the first copy only.
    pub duplicate: bool,
}

/// The bus: publish events on subjects, consume them in durable groups.
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes `event` on `subject`; returns once the broker has stored it durably.
    /// The event id deduplicates retries of the same publish.
    fn publish<'a>(
        &'a self,
        subject: &'a str,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<Published, BusError>>;

    /// Creates `group` if missing and attaches one consumer to it.
    fn subscribe<'a>(&'a self, group: &'a Group) -> BoxFuture<'a, Result<Subscriber, BusError>>;

    /// `messaging.system` of this backend, for producer spans.
    fn system(&self) -> &'static str {
        "flotilla.bus"
    }
}

/// One consumer attached to a group. Dropping it without acknowledging its deliveries
/// lets them come back to another consumer after the ack timeout.
pub struct Subscriber {
    inner: Box<dyn SubscriberBackend>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Wraps a backend's consumer.
    pub fn new(inner: Box<dyn SubscriberBackend>) -> Self {
        Self { inner }
    }

    /// The next delivery; waits until there is one (reconnecting if the broker goes away).
    pub async fn next(&mut self) -> Result<Delivery, BusError> {
        self.inner.next().await
    }
}

/// What a backend implements for [`Subscriber`].
pub trait SubscriberBackend: Send {
    /// The next delivery.
    fn next(&mut self) -> BoxFuture<'_, Result<Delivery, BusError>>;
}

/// Settles one delivery with the broker.
pub trait Acker: Send + Sync {
    /// Done: never deliver it to this group again.
    fn ack(&self) -> BoxFuture<'_, Result<(), BusError>>;
    /// Failed: deliver it again after `delay` (or dead-letter it if this was the last try).
    fn nack(&self, delay: Duration) -> BoxFuture<'_, Result<(), BusError>>;
}

/// One event handed to one consumer.
pub struct Delivery {
    /// The subject it was published on.
    pub subject: String,
    /// The event.
    pub event: Event,
    /// 1 for the first delivery to this group, 2 for the first redelivery…
    pub attempt: u32,
    acker: Arc<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("id", &self.event.id)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl Delivery {
    /// A delivery settled through `acker`.
    pub fn new(subject: String, event: Event, attempt: u32, acker: Arc<dyn Acker>) -> Self {
        Self {
            subject,
            event,
            attempt,
            acker,
        }
    }

    /// Acknowledges: handled.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    /// Rejects: deliver again after `delay`, or dead-letter after the last attempt.
    pub async fn nack(&self, delay: Duration) -> Result<(), BusError> {
        self.acker.nack(delay).await
    }
}

/// Connects to the bus named by `url` (`bus://…` or `nats://…`); `setting` names where
/// the URL came from, for errors.
pub async fn connect(url: &str, setting: &str) -> Result<Arc<dyn EventBus>, BusError> {
    match kit::store::scheme(url) {
        "bus" => Ok(Arc::new(
            embedded::EmbeddedBus::connect(url, setting).await?,
        )),
        "nats" => Ok(Arc::new(nats::NatsBus::connect(url, setting).await?)),
        _ => Err(unsupported_url(url, setting)),
    }
}

/// The error for a bus URL of an unknown scheme.
pub(crate) fn unsupported_url(url: &str, setting: &str) -> BusError {
    BusError::Config {
        setting: setting.to_owned(),
        message: format!(
            "unsupported bus URL {:?}; expected bus://host:port or nats://host:port",
            kit::store::redact(url)
        ),
    }
}

/// The bus URL of this process: `FLOTILLA_BUS` if set, else the top-level `bus`
/// setting of the configuration (`bus = "nats://…"` in `flotilla.toml`), else
/// [`DEFAULT_BUS_URL`]. A `[bus]` table configures the embedded broker itself and names
/// no URL. The variable is read first because `FLOTILLA_BUS__LISTEN` and its like turn
/// the configuration's `bus` into that table.
pub fn url_from_config(config: &kit::config::Config) -> String {
    let url = |u: String| (!u.trim().is_empty()).then_some(u);
    std::env::var("FLOTILLA_BUS")
        .ok()
        .and_then(url)
        .or_else(|| config.section::<String>("bus").ok().and_then(url))
        .unwrap_or_else(|| DEFAULT_BUS_URL.to_owned())
}

/// The bus for a producer that must start even when the bus is not up yet: the embedded
/// bus is reached lazily (its outbox relay retries until it answers); NATS is connected
/// at once, since its client reconnects by itself once it has connected.
pub async fn for_producer(url: &str, setting: &str) -> Result<Arc<dyn EventBus>, BusError> {
    match kit::store::scheme(url) {
        "bus" => Ok(Arc::new(embedded::EmbeddedBus::new(url, setting)?)),
        _ => connect(url, setting).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bus_url_is_the_top_level_setting_not_the_brokers_table() {
        if std::env::var_os("FLOTILLA_BUS").is_some() {
            return; // the variable wins, as it must
        }
        let dir = tempfile::tempdir().unwrap();
        let base = || kit::config::Config::from_file(&dir.path().join("absent.toml"));
        let url = base().merged("bus", "nats://127.0.0.1:4222");
        assert_eq!(url_from_config(&url), "nats://127.0.0.1:4222");
        let table = base().merged("bus", serde_json::json!({"listen": "127.0.0.1:9"}));
        assert_eq!(url_from_config(&table), DEFAULT_BUS_URL);
        std::fs::write(dir.path().join("f.toml"), "bus = \"nats://n:4222\"\n").unwrap();
        let file = kit::config::Config::from_file(&dir.path().join("f.toml"));
        assert_eq!(url_from_config(&file), "nats://n:4222");
    }

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("orders.created", "orders.created"));
        assert!(subject_matches("orders.*", "orders.created"));
        assert!(!subject_matches("orders.*", "orders.created.v2"));
        assert!(subject_matches("orders.>", "orders.created.v2"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches(">", "payments.refunded"));
        assert!(!subject_matches("orders.created", "orders.cancelled"));
    }

    #[test]
    fn validates_names() {
        assert!(valid_subject("orders.created", false));
        assert!(!valid_subject("orders.*", false));
        assert!(valid_subject("orders.*", true));
        assert!(!valid_subject("orders..x", true));
        assert!(!valid_subject("orders.>.x", true));
        assert!(Group::new("bad.name", &["x"]).validate().is_err());
        assert!(Group::new("ok-1", &[]).validate().is_err());
        assert!(Group::new("ok-1", &["a.>"]).validate().is_ok());
    }

    #[test]
    fn dead_letter_subjects_round_trip() {
        let s = dead_letter_subject("mail", "orders.created");
        assert_eq!(s, "deadletter.mail.orders.created");
        assert_eq!(
            parse_dead_letter_subject(&s),
            Some(("mail", "orders.created"))
        );
    }

    #[tokio::test]
    async fn unknown_scheme_names_the_setting() {
        let e = connect("kafka://x", "FLOTILLA_BUS").await.unwrap_err();
        assert!(e.to_string().contains("FLOTILLA_BUS"), "{e}");
    }
}
