//! Retention: every `interval`, traces that started and log records written more than
//! `age` ago are deleted; then, while the database's live pages take more than `size`
//! bytes, the oldest traces or logs (whichever are older) go, a chunk at a time. Freed
//! pages are returned to the file system (incremental vacuum) and the write-ahead log is
//! truncated, so the file follows.

use std::time::Duration;

use crate::now_ns;
use crate::store::{StoreError, TelemetryStore};

/// Traces deleted per transaction.
const TRACE_CHUNK: u32 = 500;
/// Log records deleted per transaction.
const LOG_CHUNK: u32 = 5000;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Older telemetry is deleted.
    pub age: Duration,
    /// The database is kept under this many bytes.
    pub size: u64,
    /// How often retention runs.
    pub interval: Duration,
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Traces deleted for their age.
    pub old_traces: u64,
    /// Log records deleted for their age.
    pub old_logs: u64,
    /// Traces deleted to bring the size down.
    pub traces_for_size: u64,
    /// Log records deleted to bring the size down.
    pub logs_for_size: u64,
    /// Live bytes after the pass.
    pub used_bytes: u64,
}

impl Pass {
    /// Traces and log records deleted, for any reason.
    pub fn deleted(&self) -> u64 {
        self.old_traces + self.old_logs + self.traces_for_size + self.logs_for_size
    }
}

/// Runs [`run_once`] every `policy.interval` in the background.
pub fn spawn(store: TelemetryStore, policy: Policy) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(policy.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match run_once(&store, &policy, now_ns()).await {
                Ok(pass) if pass.deleted() > 0 => {
                    tracing::info!(
                        old_traces = pass.old_traces,
                        old_logs = pass.old_logs,
                        traces_for_size = pass.traces_for_size,
                        logs_for_size = pass.logs_for_size,
                        used_bytes = pass.used_bytes,
                        "retention deleted telemetry"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "retention failed; retrying at the next interval")
                }
            }
        }
    })
}

/// One pass of retention at `now_ns`.
pub async fn run_once(
    store: &TelemetryStore,
    policy: &Policy,
    now_ns: i64,
) -> Result<Pass, StoreError> {
    let mut pass = Pass::default();
    let cutoff = now_ns.saturating_sub(i64::try_from(policy.age.as_nanos()).unwrap_or(i64::MAX));
    loop {
        let n = store.delete_traces_before(cutoff, TRACE_CHUNK).await?;
        pass.old_traces += n;
        if n < u64::from(TRACE_CHUNK) {
            break;
        }
    }
    loop {
        let n = store.delete_logs_before(cutoff, LOG_CHUNK).await?;
        pass.old_logs += n;
        if n < u64::from(LOG_CHUNK) {
            break;
        }
    }
    let mut used = store.used_bytes().await?;
    while used > policy.size {
        // Whichever kind holds the oldest telemetry loses a chunk of it.
        let deleted = match store.oldest().await? {
            (Some(t), Some(l)) if t <= l => {
                let n = store.delete_traces_before(i64::MAX, TRACE_CHUNK).await?;
                pass.traces_for_size += n;
                n
            }
            (_, Some(_)) => {
                let n = store.delete_logs_before(i64::MAX, LOG_CHUNK).await?;
                pass.logs_for_size += n;
                n
            }
            (Some(_), None) => {
                let n = store.delete_traces_before(i64::MAX, TRACE_CHUNK).await?;
                pass.traces_for_size += n;
                n
            }
            (None, None) => 0,
        };
        used = store.used_bytes().await?;
        if deleted == 0 {
            break;
        }
    }
    if pass.deleted() > 0 {
        store.vacuum(None).await?;
    }
    pass.used_bytes = used;
    Ok(pass)
}
