//! The `nats` backend: NATS JetStream through `async-nats`.
//!
//! One stream holds every subject under a prefix (`flotilla.orders.created`); a group is
//! a durable pull consumer per subject filter (one filter per consumer keeps servers
//! older than 2.10 working), created at start if missing. Publishes carry `Nats-Msg-Id`
//! (the event id) so the server drops retried duplicates within its duplicate window.
//! Dead-lettering is done by this client so both backends behave alike: the server
//! redelivers without limit, and a consumer that receives an event for the
//! `max_deliveries + 1`-th time (or nacks its last attempt) publishes it to
//! [`crate::dead_letter_subject`] and acknowledges the original.
//!
//! URL options (query string): `stream` (default `FLOTILLA`), `prefix` (`flotilla`),
//! `storage` (`file` or `memory`), `replicas` (1), `max_age` (`7d`), `max_bytes` (-1: no
//! limit), `duplicate_window` (`2m`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use futures_util::stream::{BoxStream, SelectAll};

use crate::inspect::{GroupState, Inspect, Logged};
use crate::{
    Acker, BoxFuture, BusError, Delivery, Event, EventBus, Group, Published, StartAt, Subscriber,
};

/// Stream settings, from the URL's query string.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsOptions {
    /// JetStream stream name.
    pub stream: String,
    /// Subject prefix: bus subject `orders.created` is `<prefix>.orders.created` in NATS.
    pub prefix: String,
    /// `file` (durable) or `memory`.
    pub storage: stream::StorageType,
    /// Replicas (1 on a single server, 3 on a cluster).
    pub replicas: usize,
    /// Events older than this are removed (retention by age).
    pub max_age: Duration,
    /// Size limit of the stream in bytes, oldest removed first; -1 for none.
    pub max_bytes: i64,
    /// Window in which a republished event id is recognised as a duplicate.
    pub duplicate_window: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            stream: "FLOTILLA".to_owned(),
            prefix: "flotilla".to_owned(),
            storage: stream::StorageType::File,
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: -1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl NatsOptions {
    /// Splits `nats://host:port?options` into the server address and the options.
    pub fn parse(url: &str, setting: &str) -> Result<(String, Self), BusError> {
        let bad = |message: String| BusError::Config {
            setting: setting.to_owned(),
            message,
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("{url:?}: {e}")))?;
        if parsed.scheme() != "nats" || parsed.host_str().is_none() {
            return Err(bad(format!("expected nats://host:port, got {url:?}")));
        }
        let mut opts = Self::default();
        for (k, v) in parsed.query_pairs() {
            let dur = |v: &str| {
                humantime::parse_duration(v).map_err(|e| bad(format!("option {k}={v:?}: {e}")))
            };
            match k.as_ref() {
                "stream" => opts.stream = v.into_owned(),
                "prefix" => opts.prefix = v.into_owned(),
                "storage" => {
                    opts.storage = match v.as_ref() {
                        "file" => stream::StorageType::File,
                        "memory" => stream::StorageType::Memory,
                        _ => return Err(bad(format!("storage must be file or memory, got {v:?}"))),
                    }
                }
                "replicas" => {
                    opts.replicas = v
                        .parse()
                        .map_err(|_| bad(format!("replicas must be a number, got {v:?}")))?
                }
                "max_age" => opts.max_age = dur(&v)?,
                "max_bytes" => {
                    opts.max_bytes = v
                        .parse()
                        .map_err(|_| bad(format!("max_bytes must be a number, got {v:?}")))?
                }
                "duplicate_window" => opts.duplicate_window = dur(&v)?,
                other => return Err(bad(format!("unknown option {other:?}"))),
            }
        }
        if !crate::valid_subject(&opts.prefix, false) || !crate::valid_group_name(&opts.stream) {
            return Err(bad(
                "stream must be a plain name and prefix a subject".into()
            ));
        }
        let port = parsed.port().unwrap_or(4222);
        let host = parsed.host_str().expect("checked above");
        Ok((format!("{host}:{port}"), opts))
    }
}

fn unavailable_at(url: &str, setting: &str, e: String) -> BusError {
    BusError::Unavailable(format!("setting `{setting}`: {url}: {e}"))
}

/// What the description of a group's durable consumer starts with; the group's name
/// follows, so [`Inspect::groups`] finds the group of each consumer.
pub const GROUP_DESCRIPTION: &str = "flotilla consumer group ";

/// A JetStream-backed bus.
#[derive(Debug, Clone)]
pub struct NatsBus {
    js: jetstream::Context,
    opts: NatsOptions,
}

impl NatsBus {
    /// Connects to `nats://…` and creates the stream if it is missing.
    pub async fn connect(url: &str, setting: &str) -> Result<Self, BusError> {
        let bus = Self::client(url, setting).await?;
        let opts = &bus.opts;
        bus.js
            .get_or_create_stream(stream::Config {
                name: opts.stream.clone(),
                subjects: vec![format!("{}.>", opts.prefix)],
                storage: opts.storage,
                num_replicas: opts.replicas,
                max_age: opts.max_age,
                max_bytes: opts.max_bytes,
                duplicate_window: opts.duplicate_window,
                retention: stream::RetentionPolicy::Limits,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                unavailable_at(
                    url,
                    setting,
                    format!("cannot create stream {}: {e}", opts.stream),
                )
            })?;
        Ok(bus)
    }

    /// Connects to `nats://…` whose stream must exist already (a reader creates nothing).
    pub async fn connect_existing(url: &str, setting: &str) -> Result<Self, BusError> {
        let bus = Self::client(url, setting).await?;
        bus.js.get_stream(&bus.opts.stream).await.map_err(|e| {
            unavailable_at(url, setting, format!("stream {}: {e}", bus.opts.stream))
        })?;
        Ok(bus)
    }

    async fn client(url: &str, setting: &str) -> Result<Self, BusError> {
        let (addr, opts) = NatsOptions::parse(url, setting)?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(addr.as_str())
            .await
            .map_err(|e| unavailable_at(url, setting, e.to_string()))?;
        Ok(Self {
            js: jetstream::new(client),
            opts,
        })
    }

    /// The options in force.
    pub fn options(&self) -> &NatsOptions {
        &self.opts
    }

    /// Deletes the stream and its consumers (tests clean up with it).
    pub async fn delete_stream(&self) -> Result<(), BusError> {
        self.js
            .delete_stream(&self.opts.stream)
            .await
            .map(|_| ())
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    async fn publish_raw(
        &self,
        subject: &str,
        msg_id: &str,
        event: &Event,
    ) -> Result<Published, BusError> {
        if !crate::valid_subject(subject, false) {
            return Err(BusError::Protocol(format!("invalid subject {subject:?}")));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        let payload = serde_json::to_vec(event).map_err(|e| BusError::Protocol(e.to_string()))?;
        let ack = self
            .js
            .publish_with_headers(
                format!("{}.{subject}", self.opts.prefix),
                headers,
                payload.into(),
            )
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(Published {
            duplicate: ack.duplicate,
        })
    }

    fn consumer_name(group: &Group, i: usize) -> String {
        if group.subjects.len() == 1 {
            group.name.clone()
        } else {
            format!("{}_{i}", group.name)
        }
    }
}

impl EventBus for NatsBus {
    fn system(&self) -> &'static str {
        "nats"
    }

    fn publish<'a>(
        &'a self,
        subject: &'a str,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<Published, BusError>> {
        Box::pin(self.publish_raw(subject, &event.id, event))
    }

    fn subscribe<'a>(&'a self, group: &'a Group) -> BoxFuture<'a, Result<Subscriber, BusError>> {
        Box::pin(async move {
            group.validate()?;
            let unavailable = |e: String| BusError::Unavailable(e);
            let stream = self.stream().await?;
            let mut all = SelectAll::new();
            for (i, filter) in group.subjects.iter().enumerate() {
                let name = Self::consumer_name(group, i);
                let consumer: consumer::PullConsumer = stream
                    .get_or_create_consumer(
                        &name,
                        consumer::pull::Config {
                            durable_name: Some(name.clone()),
                            description: Some(format!("{GROUP_DESCRIPTION}{}", group.name)),
                            filter_subject: format!("{}.{filter}", self.opts.prefix),
                            deliver_policy: match group.start {
                                StartAt::Beginning => consumer::DeliverPolicy::All,
                                StartAt::Now => consumer::DeliverPolicy::New,
                            },
                            ack_policy: consumer::AckPolicy::Explicit,
                            ack_wait: group.ack_timeout,
                            // Unlimited: this client dead-letters (see the module docs).
                            max_deliver: -1,
                            max_ack_pending: i64::from(group.max_in_flight),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| unavailable(format!("consumer {name}: {e}")))?;
                let messages = consumer
                    .stream()
                    .max_messages_per_batch(group.max_in_flight as usize)
                    .messages()
                    .await
                    .map_err(|e| unavailable(format!("consumer {name}: {e}")))?;
                let boxed: BoxStream<'static, _> = messages.boxed();
                all.push(boxed);
            }
            Ok(Subscriber::new(Box::new(NatsSubscriber {
                bus: self.clone(),
                group: group.clone(),
                messages: all,
            })))
        })
    }
}

impl NatsBus {
    async fn stream(&self) -> Result<stream::Stream, BusError> {
        self.js
            .get_stream(&self.opts.stream)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    fn unprefixed<'s>(&self, subject: &'s str) -> &'s str {
        subject
            .strip_prefix(self.opts.prefix.as_str())
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(subject)
    }

    async fn read_events(
        &self,
        subject: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Logged>, BusError> {
        crate::inspect::check_filter(subject)?;
        let unavailable = |e: String| BusError::Unavailable(e);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stream = self.stream().await?;
        // An ephemeral consumer from the position on: it sees only what matches, and
        // says how much of it there is, so reading stops there instead of waiting.
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: format!("{}.{subject}", self.opts.prefix),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after.saturating_add(1),
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(format!("reading {subject}: {e}")))?;
        let name = consumer.cached_info().name.clone();
        let mut left = consumer.cached_info().num_pending;
        let mut out = Vec::new();
        let read = async {
            while out.len() < limit && left > 0 {
                let want = (limit - out.len()).min(crate::inspect::PAGE);
                let mut batch = consumer
                    .fetch()
                    .max_messages(usize::try_from(left).unwrap_or(want).min(want))
                    .expires(Duration::from_secs(2))
                    .messages()
                    .await
                    .map_err(|e| unavailable(format!("reading {subject}: {e}")))?;
                let mut got = 0;
                while let Some(msg) = batch.next().await {
                    let msg = msg.map_err(|e| unavailable(format!("reading {subject}: {e}")))?;
                    got += 1;
                    let info = msg.info().map_err(|e| BusError::Protocol(e.to_string()))?;
                    let seq = info.stream_sequence;
                    left = info.pending;
                    // What is not an event is skipped, as the embedded bus does.
                    if let Ok(event) = serde_json::from_slice::<Event>(&msg.payload) {
                        out.push(Logged {
                            seq,
                            subject: self.unprefixed(msg.subject.as_str()).to_owned(),
                            event,
                        });
                    }
                    if left == 0 || out.len() >= limit {
                        break;
                    }
                }
                if got == 0 {
                    // Counted but gone (removed by retention meanwhile): nothing to wait for.
                    break;
                }
            }
            Ok::<_, BusError>(())
        }
        .await;
        let _ = stream.delete_consumer(&name).await;
        read?;
        out.truncate(limit);
        Ok(out)
    }

    async fn read_groups(&self) -> Result<Vec<GroupState>, BusError> {
        let unavailable = |e: String| BusError::Unavailable(e);
        let stream = self.stream().await?;
        let consumers: Vec<consumer::Info> = stream
            .consumers()
            .map(|c| c.map_err(|e| unavailable(e.to_string())))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let durable: Vec<&consumer::Info> = consumers
            .iter()
            .filter(|c| c.config.durable_name.is_some())
            .collect();
        let names: std::collections::BTreeSet<&str> =
            durable.iter().map(|c| c.name.as_str()).collect();
        let mut groups: std::collections::BTreeMap<String, GroupState> = Default::default();
        for c in durable {
            let name = group_of(&c.name, c.config.description.as_deref(), &names);
            let g = groups.entry(name.clone()).or_insert_with(|| GroupState {
                name,
                subjects: Vec::new(),
                lag: 0,
                pending: 0,
            });
            // One filter per consumer: what this client creates (see the module docs).
            if !c.config.filter_subject.is_empty() {
                g.subjects
                    .push(self.unprefixed(&c.config.filter_subject).to_owned());
            }
            g.lag += c.num_pending;
            g.pending += u64::try_from(c.num_ack_pending).unwrap_or(u64::MAX);
        }
        Ok(groups.into_values().collect())
    }
}

/// The group a durable consumer belongs to: named in its description, or — for
/// consumers created before descriptions were written — `<group>_<i>` when its
/// siblings `<group>_0` and `<group>_1` exist (a group of several subjects), else its
/// own name.
fn group_of(
    consumer: &str,
    description: Option<&str>,
    all: &std::collections::BTreeSet<&str>,
) -> String {
    if let Some(group) = description.and_then(|d| d.strip_prefix(GROUP_DESCRIPTION)) {
        return group.to_owned();
    }
    match consumer.rsplit_once('_') {
        Some((group, i))
            if !i.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && all.contains(format!("{group}_0").as_str())
                && all.contains(format!("{group}_1").as_str()) =>
        {
            group.to_owned()
        }
        _ => consumer.to_owned(),
    }
}

impl Inspect for NatsBus {
    fn events<'a>(
        &'a self,
        subject: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Logged>, BusError>> {
        Box::pin(self.read_events(subject, after, limit))
    }

    fn groups(&self) -> BoxFuture<'_, Result<Vec<GroupState>, BusError>> {
        Box::pin(self.read_groups())
    }
}

type MessageStream =
    SelectAll<BoxStream<'static, Result<jetstream::Message, consumer::pull::MessagesError>>>;

struct NatsSubscriber {
    bus: NatsBus,
    group: Group,
    messages: MessageStream,
}

impl crate::SubscriberBackend for NatsSubscriber {
    fn next(&mut self) -> BoxFuture<'_, Result<Delivery, BusError>> {
        Box::pin(async move {
            loop {
                let msg = match self.messages.next().await {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        // The stream reconnects by itself; a transient error is logged.
                        tracing::debug!(group = %self.group.name, error = %e, "JetStream pull error");
                        continue;
                    }
                    None => return Err(BusError::Unavailable("JetStream consumer ended".into())),
                };
                let (attempt, subject) = {
                    let info = msg.info().map_err(|e| BusError::Protocol(e.to_string()))?;
                    let subject = msg
                        .subject
                        .as_str()
                        .strip_prefix(&format!("{}.", self.bus.opts.prefix))
                        .unwrap_or(msg.subject.as_str())
                        .to_owned();
                    (u32::try_from(info.delivered).unwrap_or(u32::MAX), subject)
                };
                let acker = Arc::new(NatsAcker {
                    bus: self.bus.clone(),
                    group: self.group.name.clone(),
                    subject: subject.clone(),
                    attempt,
                    max_deliveries: self.group.max_deliveries,
                    msg,
                });
                let event: Event = match serde_json::from_slice(&acker.msg.payload) {
                    Ok(e) => e,
                    Err(e) => {
                        // Not an event: nothing can handle it, so it is terminated.
                        tracing::warn!(subject = %subject, error = %e, "dropping a message that is not a CloudEvent");
                        let _ = acker.msg.ack_with(AckKind::Term).await;
                        continue;
                    }
                };
                if attempt > self.group.max_deliveries {
                    // The consumer that had the last attempt died with it.
                    acker.dead_letter(&event).await?;
                    continue;
                }
                return Ok(Delivery::new(subject, event, attempt, acker));
            }
        })
    }
}

struct NatsAcker {
    bus: NatsBus,
    group: String,
    subject: String,
    attempt: u32,
    max_deliveries: u32,
    msg: jetstream::Message,
}

impl NatsAcker {
    async fn dead_letter(&self, event: &Event) -> Result<(), BusError> {
        let dl = crate::dead_letter_subject(&self.group, &self.subject);
        // A deterministic id: a crash after this publish and before the ack below
        // republishes the same id, which the server drops as a duplicate.
        let id = format!("dl:{}:{}", self.group, event.id);
        self.bus.publish_raw(&dl, &id, event).await?;
        tracing::warn!(group = %self.group, subject = %self.subject, id = %event.id, "event dead-lettered");
        self.msg
            .double_ack()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }
}

impl Acker for NatsAcker {
    fn ack(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.msg
                .double_ack()
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))
        })
    }

    fn nack(&self, delay: Duration) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            if self.attempt >= self.max_deliveries {
                let event: Event = serde_json::from_slice(&self.msg.payload)
                    .map_err(|e| BusError::Protocol(e.to_string()))?;
                return self.dead_letter(&event).await;
            }
            self.msg
                .ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options_from_the_url() {
        let (addr, o) = NatsOptions::parse(
            "nats://127.0.0.1:4222?stream=T1&prefix=t1&storage=memory&replicas=3&max_age=1h&duplicate_window=30s",
            "FLOTILLA_BUS",
        )
        .unwrap();
        assert_eq!(addr, "127.0.0.1:4222");
        assert_eq!(o.stream, "T1");
        assert_eq!(o.prefix, "t1");
        assert_eq!(o.storage, stream::StorageType::Memory);
        assert_eq!(o.replicas, 3);
        assert_eq!(o.max_age, Duration::from_secs(3600));
        assert_eq!(o.duplicate_window, Duration::from_secs(30));
        let e = NatsOptions::parse("nats://h?storage=disk", "FLOTILLA_BUS").unwrap_err();
        assert!(e.to_string().contains("FLOTILLA_BUS"), "{e}");
        assert_eq!(NatsOptions::parse("nats://h", "X").unwrap().0, "h:4222");
    }

    #[test]
    fn consumers_are_grouped_by_their_description_or_their_siblings() {
        let all: std::collections::BTreeSet<&str> =
            ["mail_0", "mail_1", "stats_1", "x"].into_iter().collect();
        let described = format!("{GROUP_DESCRIPTION}notifications");
        assert_eq!(group_of("n_0", Some(&described), &all), "notifications");
        assert_eq!(group_of("mail_1", None, &all), "mail");
        assert_eq!(group_of("stats_1", None, &all), "stats_1");
        assert_eq!(group_of("x", Some("something else"), &all), "x");
    }
}
