//! What the dashboard reads from the rest of the system on request: the services view
//! (from the [`Scraper`]), the orders sagas (from a healthy orders instance's admin
//! API, `GET /admin/sagas`) and the event bus (consumer groups and dead letters, through
//! `kit_events::inspect` on the configured bus).

use std::sync::Arc;
use std::time::Duration;

use kit::Problem;
use kit_events::inspect::Inspect;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::scrape::{Scraper, ServicesView};

/// Dead letters shown at most (the newest).
pub const DEAD_LETTERS_SHOWN: usize = 100;

/// How long orders and the bus may take to answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// One saga, as orders' admin API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SagaView {
    /// The saga id (the order id).
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// `running`, `compensating`, `completed` or `compensated`.
    pub status: String,
    /// Why it is compensating.
    pub reason: Option<String>,
    /// A step that must succeed or a compensation keeps failing.
    pub stuck: bool,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339, of the last transition.
    pub updated: String,
    /// Its steps, in order.
    pub steps: Vec<SagaStepView>,
}

/// One step of a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SagaStepView {
    /// The step's name.
    pub name: String,
    /// `pending`, `done`, `failed` or `compensated`.
    pub status: String,
    /// Attempts of its action.
    pub attempts: u32,
    /// Attempts of its compensation.
    pub compensation_attempts: u32,
    /// When its status last changed (RFC 3339).
    pub at: Option<String>,
    /// Its last error.
    pub error: Option<String>,
}

/// `GET /api/sagas`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SagasView {
    /// In-flight first, then the most recently updated.
    pub sagas: Vec<SagaView>,
}

/// A consumer group of the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GroupView {
    /// Its name.
    pub name: String,
    /// Its subject filters.
    pub subjects: Vec<String>,
    /// Events not yet delivered to it.
    pub lag: u64,
    /// Delivered and not yet acknowledged.
    pub pending: u64,
}

/// A dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    /// Its position in the log.
    pub seq: u64,
    /// `deadletter.<group>.<subject>`.
    pub subject: String,
    /// The original event's id.
    pub id: String,
    /// The original event's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The original event's time.
    pub time: String,
}

/// `GET /api/bus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BusView {
    /// `embedded` or `nats`.
    pub url_kind: &'static str,
    /// Every durable consumer group, by name.
    pub groups: Vec<GroupView>,
    /// The newest dead letters, oldest first.
    pub dead_letters: Vec<DeadLetterView>,
}

/// The dashboard's view of the rest of the system.
pub struct Fleet {
    scraper: Option<Scraper>,
    bus_url: String,
    bus: Mutex<Option<Arc<dyn Inspect>>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("scraper", &self.scraper)
            .field("bus_url", &kit::store::redact(&self.bus_url))
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Over the scraper (none when discovery keeps no directory) and the bus at
    /// `bus_url`.
    pub fn new(scraper: Option<Scraper>, bus_url: String) -> Self {
        Self {
            scraper,
            bus_url,
            bus: Mutex::new(None),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(TIMEOUT)
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    /// The services as last scraped.
    pub fn services(&self) -> Arc<ServicesView> {
        self.scraper.as_ref().map(Scraper::view).unwrap_or_default()
    }

    /// Up to `limit` sagas from a healthy orders instance (they share one store).
    pub async fn sagas(&self, limit: u32) -> Result<SagasView, Problem> {
        let unavailable = |why: String| Problem::unavailable(why, Duration::from_secs(2));
        let Some(scraper) = &self.scraper else {
            return Err(unavailable(
                "discovery keeps no directory to find orders in".to_owned(),
            ));
        };
        let orders = scraper
            .directory()
            .service("orders")
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let admins: Vec<&String> = orders
            .instances
            .iter()
            .filter(|i| i.healthy)
            .filter_map(|i| i.metadata.get("admin_addr"))
            .collect();
        let mut last = "no healthy orders instance".to_owned();
        for admin in admins {
            let url = format!("http://{admin}/admin/sagas?limit={limit}");
            match self.http.get(&url).send().await {
                Ok(r) if r.status().is_success() => match r.json::<SagasView>().await {
                    Ok(view) => return Ok(view),
                    Err(e) => last = format!("orders at {admin} answered badly: {e}"),
                },
                Ok(r) => last = format!("orders at {admin} answered {}", r.status()),
                Err(e) => last = format!("orders at {admin}: {e}"),
            }
        }
        Err(unavailable(last))
    }

    /// The bus's consumer groups and newest dead letters.
    pub async fn bus(&self) -> Result<BusView, Problem> {
        let url_kind = match kit::store::scheme(&self.bus_url) {
            "nats" => "nats",
            _ => "embedded",
        };
        let mut cached = self.bus.lock().await;
        let inspect = match cached.as_ref() {
            Some(i) => i.clone(),
            None => {
                let i = tokio::time::timeout(
                    TIMEOUT,
                    kit_events::inspect::connect(&self.bus_url, "FLOTILLA_BUS"),
                )
                .await
                .map_err(|_| bus_unavailable("connecting timed out"))?
                .map_err(|e| bus_unavailable(&e.to_string()))?;
                *cached = Some(i.clone());
                i
            }
        };
        drop(cached);
        let read = async {
            let groups = inspect.groups().await?;
            let dead = newest_dead_letters(inspect.as_ref()).await?;
            Ok::<_, kit_events::BusError>((groups, dead))
        };
        let (groups, dead) = match tokio::time::timeout(TIMEOUT, read).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                // Reconnect next time: the broker may have restarted.
                *self.bus.lock().await = None;
                return Err(bus_unavailable(&e.to_string()));
            }
            Err(_) => return Err(bus_unavailable("reading timed out")),
        };
        Ok(BusView {
            url_kind,
            groups: groups
                .into_iter()
                .map(|g| GroupView {
                    name: g.name,
                    subjects: g.subjects,
                    lag: g.lag,
                    pending: g.pending,
                })
                .collect(),
            dead_letters: dead
                .into_iter()
                .map(|l| DeadLetterView {
                    seq: l.seq,
                    subject: l.subject,
                    id: l.event.id,
                    kind: l.event.kind,
                    time: l.event.time,
                })
                .collect(),
        })
    }
}

fn bus_unavailable(why: &str) -> Problem {
    Problem::unavailable(
        format!("the bus is unavailable: {why}"),
        Duration::from_secs(2),
    )
}

/// The newest [`DEAD_LETTERS_SHOWN`] dead letters, read a page at a time so that only
/// those are kept.
async fn newest_dead_letters(
    bus: &dyn Inspect,
) -> Result<Vec<kit_events::inspect::Logged>, kit_events::BusError> {
    let mut kept = std::collections::VecDeque::with_capacity(DEAD_LETTERS_SHOWN);
    let mut after = 0;
    loop {
        let page = bus
            .events("deadletter.>", after, kit_events::inspect::PAGE)
            .await?;
        let full = page.len() == kit_events::inspect::PAGE;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        for l in page {
            if kept.len() == DEAD_LETTERS_SHOWN {
                kept.pop_front();
            }
            kept.push_back(l);
        }
        if !full {
            return Ok(kept.into());
        }
    }
}
