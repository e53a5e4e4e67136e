//! The `embedded` backend: a client of the Flotilla bus service (`services/bus`) over
//! HTTP. Deliveries arrive on one long-lived streamed response per consumer (NDJSON,
//! one delivery per line, empty lines as heartbeats); acks and nacks are small POSTs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::inspect::{GroupState, Inspect, Logged};
use crate::{Acker, BoxFuture, BusError, Delivery, Event, EventBus, Group, Published, Subscriber};

/// Request and response bodies of the bus service's API, shared by server and client.
pub mod wire {
    use serde::{Deserialize, Serialize};

    use crate::{Event, StartAt};

    /// `POST /v1/subjects/{subject}/events` answer.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct PublishResponse {
        /// Position in the log.
        pub seq: i64,
        /// The event id was already in the log; nothing was added.
        pub duplicate: bool,
    }

    /// `PUT /v1/groups/{group}` body: create the group or update its settings.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct GroupRequest {
        /// Subject filters.
        pub subjects: Vec<String>,
        /// Where a new group starts.
        pub start: StartAt,
        /// Ack timeout in milliseconds.
        pub ack_timeout_ms: u64,
        /// Deliveries before dead-lettering.
        pub max_deliveries: u32,
    }

    /// One line of `GET /v1/groups/{group}/deliveries`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct DeliveryLine {
        /// Position in the log (what acks name).
        pub seq: i64,
        /// Subject it was published on.
        pub subject: String,
        /// Delivery number to this group, from 1.
        pub attempt: u32,
        /// The event.
        pub event: Event,
    }

    /// One entry of `GET /v1/groups`: a group and how far behind it is.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct GroupLine {
        /// Name.
        pub name: String,
        /// Subject filters.
        pub subjects: Vec<String>,
        /// Matching events not yet delivered.
        pub lag: i64,
        /// Delivered, not yet acknowledged (including waiting redeliveries).
        pub pending: i64,
    }

    /// `POST /v1/groups/{group}/ack` body.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct AckRequest {
        /// Positions handled.
        pub seqs: Vec<i64>,
    }

    /// `POST /v1/groups/{group}/nack` body.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct NackRequest {
        /// Position that failed.
        pub seq: i64,
        /// Wait before the next delivery, in milliseconds.
        pub delay_ms: u64,
    }
}

/// How long a delivery stream may stay silent before the client reconnects; the bus
/// sends a heartbeat line well within it.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// A client of the embedded bus service.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    base: String,
    http: reqwest::Client,
}

impl EmbeddedBus {
    /// Connects to `bus://host:port`, checking that the bus answers.
    pub async fn connect(url: &str, setting: &str) -> Result<Self, BusError> {
        let bus = Self::new(url, setting)?;
        bus.http
            .get(format!("{}/v1/subjects", bus.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| BusError::Unavailable(format!("setting `{setting}`: {url}: {e}")))?;
        Ok(bus)
    }

    /// A client for `bus://host:port` that does not check the bus yet (it may start later).
    pub fn new(url: &str, setting: &str) -> Result<Self, BusError> {
        let Some(authority) = url.strip_prefix("bus://") else {
            return Err(BusError::Config {
                setting: setting.to_owned(),
                message: format!("expected bus://host:port, got {url:?}"),
            });
        };
        let authority = authority.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(BusError::Config {
                setting: setting.to_owned(),
                message: format!("expected bus://host:port, got {url:?}"),
            });
        }
        // The bus is an internal listener: the process's transport (mTLS) reaches it.
        let transport = kit::security::mtls::process();
        let http = transport
            .reqwest_builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(Self {
            base: format!("{}://{authority}", transport.scheme()),
            http,
        })
    }

    /// The bus's base URL (`https://host:port`, `http://` without mTLS).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn put_group(&self, group: &Group) -> Result<(), BusError> {
        let body = wire::GroupRequest {
            subjects: group.subjects.clone(),
            start: group.start,
            ack_timeout_ms: millis(group.ack_timeout),
            max_deliveries: group.max_deliveries,
        };
        let res = self
            .http
            .put(format!("{}/v1/groups/{}", self.base, group.name))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unavailable)?;
        check(res).await.map(|_| ())
    }
}

impl Inspect for EmbeddedBus {
    fn events<'a>(
        &'a self,
        subject: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Logged>, BusError>> {
        Box::pin(async move {
            crate::inspect::check_filter(subject)?;
            let mut out: Vec<Logged> = Vec::new();
            let mut after = after;
            // The bus answers at most a page per request.
            while out.len() < limit {
                let want = (limit - out.len()).min(crate::inspect::PAGE);
                let url = reqwest::Url::parse_with_params(
                    &format!("{}/v1/events", self.base),
                    &[
                        ("subject", subject.to_owned()),
                        ("after", after.to_string()),
                        ("limit", want.to_string()),
                    ],
                )
                .map_err(|e| BusError::Protocol(e.to_string()))?;
                let page: Vec<wire::DeliveryLine> = self.get_json(url).await?;
                let full = page.len() == want;
                for line in page {
                    let seq = u64::try_from(line.seq).unwrap_or(0);
                    after = seq;
                    out.push(Logged {
                        seq,
                        subject: line.subject,
                        event: line.event,
                    });
                }
                if !full {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn groups(&self) -> BoxFuture<'_, Result<Vec<GroupState>, BusError>> {
        Box::pin(async move {
            let url = reqwest::Url::parse(&format!("{}/v1/groups", self.base))
                .map_err(|e| BusError::Protocol(e.to_string()))?;
            let groups: Vec<wire::GroupLine> = self.get_json(url).await?;
            Ok(groups
                .into_iter()
                .map(|g| GroupState {
                    name: g.name,
                    subjects: g.subjects,
                    lag: u64::try_from(g.lag).unwrap_or(0),
                    pending: u64::try_from(g.pending).unwrap_or(0),
                })
                .collect())
        })
    }
}

impl EmbeddedBus {
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: reqwest::Url,
    ) -> Result<T, BusError> {
        let res = self
            .http
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unavailable)?;
        check(res)
            .await?
            .json()
            .await
            .map_err(|e| BusError::Protocol(e.to_string()))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unavailable(e: reqwest::Error) -> BusError {
    BusError::Unavailable(e.to_string())
}

async fn check(res: reqwest::Response) -> Result<reqwest::Response, BusError> {
    if res.status().is_success() {
        return Ok(res);
    }
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    if status.is_client_error() {
        Err(BusError::Protocol(format!("{status}: {body}")))
    } else {
        Err(BusError::Unavailable(format!("{status}: {body}")))
    }
}

impl EventBus for EmbeddedBus {
    fn system(&self) -> &'static str {
        "flotilla.bus"
    }

    fn publish<'a>(
        &'a self,
        subject: &'a str,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<Published, BusError>> {
        Box::pin(async move {
            // The bus's server span joins the publisher's trace.
            let mut headers = http::HeaderMap::new();
            kit::telemetry::trace::inject_current(&mut headers);
            let res = self
                .http
                .post(format!("{}/v1/subjects/{subject}/events", self.base))
                .headers(headers)
                .json(event)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(unavailable)?;
            let body: wire::PublishResponse = check(res)
                .await?
                .json()
                .await
                .map_err(|e| BusError::Protocol(e.to_string()))?;
            Ok(Published {
                duplicate: body.duplicate,
            })
        })
    }

    fn subscribe<'a>(&'a self, group: &'a Group) -> BoxFuture<'a, Result<Subscriber, BusError>> {
        Box::pin(async move {
            group.validate()?;
            self.put_group(group).await?;
            let consumer = EmbeddedSubscriber {
                bus: self.clone(),
                group: group.clone(),
                consumer_id: uuid::Uuid::new_v4().simple().to_string(),
                stream: None,
                buf: Vec::new(),
                ready: VecDeque::new(),
            };
            Ok(Subscriber::new(Box::new(consumer)))
        })
    }
}

struct EmbeddedSubscriber {
    bus: EmbeddedBus,
    group: Group,
    consumer_id: String,
    stream: Option<reqwest::Response>,
    buf: Vec<u8>,
    ready: VecDeque<wire::DeliveryLine>,
}

impl EmbeddedSubscriber {
    async fn open(&self) -> Result<reqwest::Response, BusError> {
        // The group is declared again on every (re)connect: a bus restarted on an empty
        // database must learn it, and an existing group keeps its cursor.
        self.bus.put_group(&self.group).await?;
        let res = self
            .bus
            .http
            .get(format!(
                "{}/v1/groups/{}/deliveries?consumer={}&max_in_flight={}",
                self.bus.base, self.group.name, self.consumer_id, self.group.max_in_flight
            ))
            .send()
            .await
            .map_err(unavailable)?;
        check(res).await
    }

    /// Reads until at least one delivery is parsed; errors mean "reconnect".
    async fn fill(&mut self) -> Result<(), BusError> {
        if self.stream.is_none() {
            self.stream = Some(self.open().await?);
        }
        let stream = self.stream.as_mut().expect("opened above");
        let chunk = tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.chunk())
            .await
            .map_err(|_| BusError::Unavailable("delivery stream went silent".into()))?
            .map_err(unavailable)?
            .ok_or_else(|| BusError::Unavailable("delivery stream ended".into()))?;
        self.buf.extend_from_slice(&chunk);
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let line = &line[..line.len() - 1];
            if line.is_empty() {
                continue; // heartbeat
            }
            let d: wire::DeliveryLine = serde_json::from_slice(line)
                .map_err(|e| BusError::Protocol(format!("bad delivery line: {e}")))?;
            self.ready.push_back(d);
        }
        Ok(())
    }
}

impl crate::SubscriberBackend for EmbeddedSubscriber {
    fn next(&mut self) -> BoxFuture<'_, Result<Delivery, BusError>> {
        Box::pin(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                if let Some(d) = self.ready.pop_front() {
                    let acker = Arc::new(EmbeddedAcker {
                        bus: self.bus.clone(),
                        group: self.group.name.clone(),
                        seq: d.seq,
                    });
                    return Ok(Delivery::new(d.subject, d.event, d.attempt, acker));
                }
                match self.fill().await {
                    Ok(()) => backoff = Duration::from_millis(50),
                    Err(BusError::Config { setting, message }) => {
                        return Err(BusError::Config { setting, message });
                    }
                    Err(e) => {
                        tracing::debug!(group = %self.group.name, error = %e, "bus stream lost; reconnecting");
                        self.stream = None;
                        self.buf.clear();
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        })
    }
}

struct EmbeddedAcker {
    bus: EmbeddedBus,
    group: String,
    seq: i64,
}

impl EmbeddedAcker {
    async fn post(&self, what: &str, body: serde_json::Value) -> Result<(), BusError> {
        let res = self
            .bus
            .http
            .post(format!("{}/v1/groups/{}/{what}", self.bus.base, self.group))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unavailable)?;
        check(res).await.map(|_| ())
    }
}

impl Acker for EmbeddedAcker {
    fn ack(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(
            self.post(
                "ack",
                serde_json::to_value(wire::AckRequest {
                    seqs: vec![self.seq],
                })
                .expect("serializable"),
            ),
        )
    }

    fn nack(&self, delay: Duration) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(
            self.post(
                "nack",
                serde_json::to_value(wire::NackRequest {
                    seq: self.seq,
                    delay_ms: millis(delay),
                })
                .expect("serializable"),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bus_urls() {
        assert_eq!(
            EmbeddedBus::new("bus://127.0.0.1:8083", "X")
                .unwrap()
                .base_url(),
            "http://127.0.0.1:8083"
        );
        let e = EmbeddedBus::new("bus://", "FLOTILLA_BUS").unwrap_err();
        assert!(e.to_string().contains("FLOTILLA_BUS"));
    }
}
