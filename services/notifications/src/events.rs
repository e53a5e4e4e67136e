//! What notifications consumes: `users.registered`, `orders.confirmed`,
//! `orders.cancelled` and `payments.refunded`, as one durable consumer group that every
//! instance joins (queue semantics: instances share the events).
//!
//! Each delivery is handled as: inbox says done → ack; otherwise find the recipient,
//! render, **send, then record** (inbox entry, message row and any recipient learned,
//! in one transaction), then ack. A failed send is nacked with exponential backoff, so
//! the bus redelivers it and, after `max_deliveries`, dead-letters it: an email is
//! never lost and never recorded as sent when it was not.
//!
//! Delivery is at least once. The one window for a duplicate is a crash (or a store
//! failure) after the SMTP server accepted a message and before the transaction
//! committed: the redelivery sends it again, with the same `Message-ID` (the event id),
//! so mail clients and operators can recognise the copy. Recording before sending would
//! instead lose the email in that window; a lost receipt is worse than a recognisable
//! duplicate.

use std::sync::Arc;
use std::time::Duration;

use kit_events::{Event, EventBus, Group, StartAt};
use tracing::Instrument as _;

use crate::domain::{self, Notice};
use crate::mail::{Email, MailError, Mailer};
use crate::store::{Effect, NotificationStore, Sent};

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An email went out and was recorded.
    Sent,
    /// Handled before (a redelivery): nothing done.
    Duplicate,
    /// Nothing to send for this event; recorded as handled.
    Skipped,
    /// Failed for now (SMTP down, recipient not known yet, store failed): try again.
    Retry(String),
    /// Cannot succeed (bad event data, invalid address): dead-letter it.
    Rejected(String),
}

impl Outcome {
    /// Whether the delivery is acknowledged.
    pub fn acks(&self) -> bool {
        matches!(self, Self::Sent | Self::Duplicate | Self::Skipped)
    }
}

/// Retry delays: doubling from `min`, capped at `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first retry's delay.
    pub min: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before delivery `attempt + 1` after delivery `attempt` (from 1) failed.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.min
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
            .min(self.max)
    }
}

/// Sends one email per event and records it.
#[derive(Clone)]
pub struct Mailroom {
    store: Arc<dyn NotificationStore>,
    mailer: Arc<dyn Mailer>,
    from: String,
    group: Group,
    backoff: Backoff,
}

impl std::fmt::Debug for Mailroom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailroom")
            .field("mailer", &self.mailer)
            .field("group", &self.group.name)
            .finish_non_exhaustive()
    }
}

/// The consumer group notifications joins: `name`, the four subjects, from the
/// beginning (a first start mails about what is retained, the inbox keeps restarts
/// from mailing twice).
pub fn group(name: &str, ack_timeout: Duration, max_deliveries: u32, max_in_flight: u32) -> Group {
    Group::new(name, domain::SUBJECTS)
        .start_at(StartAt::Beginning)
        .ack_timeout(ack_timeout)
        .max_deliveries(max_deliveries)
        .max_in_flight(max_in_flight)
}

impl Mailroom {
    /// A mailroom sending through `mailer` as `from`, consuming as `group`.
    pub fn new(
        store: Arc<dyn NotificationStore>,
        mailer: Arc<dyn Mailer>,
        from: String,
        group: Group,
        backoff: Backoff,
    ) -> Self {
        Self {
            store,
            mailer,
            from,
            group,
            backoff,
        }
    }

    /// Handles one event (without acknowledging it).
    pub async fn handle(&self, subject: &str, event: &Event) -> Outcome {
        let consumer = self.group.name.as_str();
        match self.store.handled(consumer, &event.id).await {
            Ok(true) => return Outcome::Duplicate,
            Ok(false) => {}
            Err(e) => return Outcome::Retry(e.to_string()),
        }
        let notice = match Notice::from_event(subject, &event.data) {
            Ok(Some(n)) => n,
            Ok(None) => {
                return self
                    .commit(&event.id, Effect::default(), Outcome::Skipped)
                    .await;
            }
            Err(e) => return Outcome::Rejected(e.to_string()),
        };
        let recipient = match notice.own_recipient() {
            Some(r) => r,
            None => match self.store.recipient(notice.user_id()).await {
                Ok(Some(r)) => r,
                // The registration may still be on its way (another instance holds it).
                Ok(None) => {
                    return Outcome::Retry(format!(
                        "no address known yet for user {}",
                        notice.user_id()
                    ));
                }
                Err(e) => return Outcome::Retry(e.to_string()),
            },
        };
        let rendered = domain::render(&notice, &recipient);
        let email = Email {
            event_id: event.id.clone(),
            from: self.from.clone(),
            to: recipient.email.clone(),
            to_name: recipient.name.clone(),
            subject: rendered.subject,
            body: rendered.body,
        };
        match self.mailer.send(&email).await {
            Ok(()) => {}
            Err(e @ MailError::Invalid(_)) => return Outcome::Rejected(e.to_string()),
            Err(e) => return Outcome::Retry(e.to_string()),
        }
        let sent = Sent {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: notice.user_id().to_owned(),
            event_id: event.id.clone(),
            event_type: subject.to_owned(),
            kind: notice.kind().to_owned(),
            channel: "email".to_owned(),
            recipient: email.to.clone(),
            message_id: email.message_id(),
            subject: email.subject,
            body: email.body,
            status: "sent".to_owned(),
            created_at: crate::now_rfc3339(),
        };
        metrics::counter!("notifications_sent_total", "kind" => notice.kind()).increment(1);
        let effect = Effect {
            recipient: notice
                .own_recipient()
                .map(|r| (notice.user_id().to_owned(), r)),
            sent: Some(sent),
        };
        self.commit(&event.id, effect, Outcome::Sent).await
    }

    /// Records the effect, retrying the store briefly: the email is out, and every
    /// failed commit here is a duplicate on redelivery.
    async fn commit(&self, event_id: &str, effect: Effect, done: Outcome) -> Outcome {
        let mut last = String::new();
        for pause in [0u64, 50, 200, 1000] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            match self
                .store
                .record(&self.group.name, event_id, effect.clone())
                .await
            {
                Ok(true) => return done,
                Ok(false) => return Outcome::Duplicate,
                Err(e) => last = e.to_string(),
            }
        }
        Outcome::Retry(format!("cannot record the message: {last}"))
    }

    /// Consumes until the task is dropped: subscribes (retrying until the bus answers),
    /// handles each delivery, acks or nacks it.
    pub async fn run(self, bus: Arc<dyn EventBus>) {
        let mut pause = Duration::from_millis(100);
        loop {
            let mut sub = match bus.subscribe(&self.group).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(group = %self.group.name, error = %e, retry_in = ?pause, "cannot subscribe to the bus");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            pause = Duration::from_millis(100);
            tracing::info!(group = %self.group.name, mailer = %self.mailer.describe(), "consuming");
            loop {
                let delivery = match sub.next().await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(group = %self.group.name, error = %e, "bus subscription failed; subscribing again");
                        tokio::time::sleep(pause).await;
                        break;
                    }
                };
                let span = delivery.event.consumer_span(&delivery.subject);
                let outcome = self
                    .handle(&delivery.subject, &delivery.event)
                    .instrument(span)
                    .await;
                let settled = if outcome.acks() {
                    delivery.ack().await
                } else {
                    let delay = match outcome {
                        Outcome::Rejected(_) => self.backoff.min,
                        _ => self.backoff.delay(delivery.attempt),
                    };
                    let reason = match &outcome {
                        Outcome::Retry(r) | Outcome::Rejected(r) => r.as_str(),
                        _ => "",
                    };
                    metrics::counter!("notifications_failed_total").increment(1);
                    tracing::warn!(
                        subject = %delivery.subject,
                        id = %delivery.event.id,
                        attempt = delivery.attempt,
                        retry_in = ?delay,
                        reason,
                        "notification not sent; the bus will deliver it again"
                    );
                    delivery.nack(delay).await
                };
                if let Err(e) = settled {
                    // The bus redelivers after the ack timeout; the inbox makes that harmless.
                    tracing::warn!(id = %delivery.event.id, error = %e, "cannot settle a delivery");
                }
            }
        }
    }

    /// Starts [`Mailroom::run`] on the runtime.
    pub fn spawn(self, bus: Arc<dyn EventBus>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(bus))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let b = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(2), Duration::from_secs(2));
        assert_eq!(b.delay(4), Duration::from_secs(8));
        assert_eq!(b.delay(40), Duration::from_secs(60));
        assert_eq!(b.delay(0), Duration::from_secs(1));
    }

    #[test]
    fn only_done_outcomes_ack() {
        assert!(Outcome::Sent.acks() && Outcome::Duplicate.acks() && Outcome::Skipped.acks());
        assert!(!Outcome::Retry("smtp down".into()).acks());
        assert!(!Outcome::Rejected("bad".into()).acks());
    }
}
