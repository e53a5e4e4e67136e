//! What analytics consumes: every subject (`>`), as a stream consumer group that reads
//! from the beginning, into the projections of its own store, each event in one
//! transaction with its inbox entry (a redelivery counts once).
//!
//! The group is named after the projections' generation (`analytics-g1`). A rebuild
//! (`flotilla analytics rebuild`) drops the projections and bumps the generation; each
//! consumer notices within `generation_check`, leaves its group and joins
//! `analytics-g<new>`, a new group that starts from the beginning of the stream, so the
//! replay adds every retained event exactly once again. The event bus offers no cursor
//! reset; a new group is the portable way to replay on both backends (the old group
//! stays on the broker, idle).

use std::sync::Arc;
use std::time::Duration;

use kit_events::{Delivery, EventBus, Group, StartAt};
use tracing::Instrument as _;

use crate::domain;
use crate::store::{AnalyticsStore, Applied};

/// The consumer group of a generation: `<prefix>-g<generation>`.
pub fn group_name(prefix: &str, generation: i64) -> String {
    format!("{prefix}-g{generation}")
}

/// How the projector consumes.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Group name prefix.
    pub group_prefix: String,
    /// Ack timeout of the group.
    pub ack_timeout: Duration,
    /// Deliveries before dead-lettering.
    pub max_deliveries: u32,
    /// Unacknowledged deliveries per consumer.
    pub max_in_flight: u32,
    /// How often the generation is checked while no event arrives.
    pub generation_check: Duration,
}

/// Projects every event into the store.
#[derive(Clone)]
pub struct Projector {
    store: Arc<dyn AnalyticsStore>,
    config: ProjectorConfig,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What happened to one delivery.
enum Step {
    Next,
    Rebuilt,
}

impl Projector {
    /// A projector over `store`.
    pub fn new(store: Arc<dyn AnalyticsStore>, config: ProjectorConfig) -> Self {
        Self { store, config }
    }

    fn group(&self, generation: i64) -> Group {
        Group::new(&group_name(&self.config.group_prefix, generation), &[">"])
            .start_at(StartAt::Beginning)
            .ack_timeout(self.config.ack_timeout)
            .max_deliveries(self.config.max_deliveries)
            .max_in_flight(self.config.max_in_flight)
    }

    async fn generation(&self) -> i64 {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.store.generation().await {
                Ok(g) => return g,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the projections' generation");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn handle(&self, generation: i64, group: &str, d: &Delivery) -> Step {
        let projection = domain::project(&d.subject, &d.event.time, &d.event.data);
        if projection.is_none() && !domain::is_dead_letter(&d.subject) {
            tracing::warn!(subject = %d.subject, id = %d.event.id, time = %d.event.time, "event without a readable time; not counted");
        }
        let settled = match self
            .store
            .apply(generation, group, &d.event.id, projection.as_ref())
            .await
        {
            Ok(Applied::New | Applied::Duplicate) => d.ack().await,
            // Left unacknowledged: the old group is abandoned.
            Ok(Applied::Stale) => return Step::Rebuilt,
            Err(e) => {
                tracing::warn!(id = %d.event.id, error = %e, "cannot project an event; the bus will deliver it again");
                d.nack(Duration::from_secs(1)).await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(id = %d.event.id, error = %e, "cannot settle a delivery");
        }
        Step::Next
    }

    /// Consumes forever, following rebuilds.
    pub async fn run(self, bus: Arc<dyn EventBus>) {
        loop {
            let generation = self.generation().await;
            let group = self.group(generation);
            self.consume(&*bus, generation, &group).await;
        }
    }

    /// Consumes `group` until the generation changes.
    async fn consume(&self, bus: &dyn EventBus, generation: i64, group: &Group) {
        let mut pause = Duration::from_millis(100);
        let mut sub = loop {
            match bus.subscribe(group).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(group = %group.name, error = %e, "cannot subscribe to the bus");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    if self.generation().await != generation {
                        return;
                    }
                }
            }
        };
        tracing::info!(group = %group.name, "projecting");
        // Deliveries are read by a task of their own so the generation check never
        // cancels a half-read delivery.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(64);
        let reader = tokio::spawn(async move {
            loop {
                match sub.next().await {
                    Ok(d) => {
                        if tx.send(d).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "bus subscription failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let mut check = tokio::time::interval(self.config.generation_check);
        loop {
            tokio::select! {
                d = rx.recv() => {
                    let Some(d) = d else { break };
                    let span = d.event.consumer_span(&d.subject);
                    if let Step::Rebuilt = self.handle(generation, &group.name, &d).instrument(span).await {
                        break;
                    }
                }
                _ = check.tick() => {
                    if self.generation().await != generation {
                        break;
                    }
                }
            }
        }
        reader.abort();
        tracing::info!(group = %group.name, "projections rebuilt; replaying as a new group");
    }

    /// Starts [`Projector::run`] on the runtime.
    pub fn spawn(self, bus: Arc<dyn EventBus>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(bus))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_generation_has_its_own_valid_group() {
        assert_eq!(group_name("analytics", 1), "analytics-g1");
        assert!(kit_events::valid_group_name(&group_name(
            "analytics",
            i64::MAX
        )));
    }
}
