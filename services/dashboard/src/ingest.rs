//! The ingest queue: the receiver hands each request's rows to [`Ingest::submit`], which
//! answers at once; one writer task drains the queue, a group of requests per
//! transaction. The queue is bounded in records (spans plus log records): a request
//! that would go over it is refused ([`Refused::Full`], answered `503` with
//! `Retry-After`) instead of buffering without bound. Every written group moves the
//! running totals that `/api/live` follows.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, watch};

use crate::otlp::{LogRow, SpanRow};
use crate::store::TelemetryStore;

/// The largest queue capacity a configuration may ask for.
pub const MAX_QUEUE_CAPACITY: usize = 10_000_000;

/// Records the writer puts in one transaction at most (it takes whole requests, so one
/// large request may go over).
const GROUP_RECORDS: usize = 8192;

/// The rows of one request.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Spans.
    pub spans: Vec<SpanRow>,
    /// Log records.
    pub logs: Vec<LogRow>,
}

impl Batch {
    fn records(&self) -> usize {
        self.spans.len() + self.logs.len()
    }
}

/// Why a batch was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The queue has no room for it now.
    #[error("the ingest queue is full")]
    Full,
    /// The writer has stopped.
    #[error("the ingest writer has stopped")]
    Stopped,
}

/// Spans and log records written since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Spans written.
    pub spans: u64,
    /// Log records written.
    pub logs: u64,
}

struct Queued {
    batch: Batch,
    _room: OwnedSemaphorePermit,
}

/// The receiver's side of the queue (cheap to clone).
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    capacity: usize,
    totals: watch::Receiver<Totals>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("capacity", &self.capacity)
            .field("queued", &self.queued())
            .finish()
    }
}

impl Ingest {
    /// Starts the writer into `store`, with room for `capacity` queued records.
    pub fn start(store: TelemetryStore, capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_QUEUE_CAPACITY);
        let (tx, rx) = mpsc::unbounded_channel();
        let (totals_tx, totals) = watch::channel(Totals::default());
        tokio::spawn(write_loop(store, rx, totals_tx));
        Self {
            tx,
            room: Arc::new(Semaphore::new(capacity)),
            capacity,
            totals,
        }
    }

    /// Queues `batch` for the writer, or refuses it when the queue has no room. A batch
    /// larger than the whole queue is taken once the queue is empty.
    pub fn submit(&self, batch: Batch) -> Result<(), Refused> {
        let records = batch.records();
        if records == 0 {
            return Ok(());
        }
        let need = u32::try_from(records.min(self.capacity)).unwrap_or(u32::MAX);
        let room = match self.room.clone().try_acquire_many_owned(need) {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                metrics::counter!("dashboard_ingest_refused_total").increment(records as u64);
                return Err(Refused::Full);
            }
            Err(TryAcquireError::Closed) => return Err(Refused::Stopped),
        };
        self.tx
            .send(Queued { batch, _room: room })
            .map_err(|_| Refused::Stopped)
    }

    /// Records queued and not yet written.
    pub fn queued(&self) -> usize {
        self.capacity - self.room.available_permits().min(self.capacity)
    }

    /// The running totals, changed after every written group.
    pub fn totals(&self) -> watch::Receiver<Totals> {
        self.totals.clone()
    }
}

async fn write_loop(
    store: TelemetryStore,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    totals: watch::Sender<Totals>,
) {
    while let Some(first) = rx.recv().await {
        let mut records = first.batch.records();
        let mut group = vec![first];
        while records < GROUP_RECORDS {
            match rx.try_recv() {
                Ok(next) => {
                    records += next.batch.records();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let spans: Vec<&SpanRow> = group.iter().flat_map(|q| &q.batch.spans).collect();
        let logs: Vec<&LogRow> = group.iter().flat_map(|q| &q.batch.logs).collect();
        match store.write(&spans, &logs).await {
            Ok(written) => {
                metrics::counter!("dashboard_spans_written_total").increment(written.spans);
                metrics::counter!("dashboard_logs_written_total").increment(written.logs);
                totals.send_modify(|t| {
                    t.spans += written.spans;
                    t.logs += written.logs;
                });
            }
            Err(e) => {
                metrics::counter!("dashboard_ingest_failed_total").increment(records as u64);
                tracing::error!(
                    error = %e,
                    spans = spans.len(),
                    logs = logs.len(),
                    "writing received telemetry failed; dropped"
                );
            }
        }
        // The group's room in the queue is given back only now that it is written.
        drop(group);
    }
}
