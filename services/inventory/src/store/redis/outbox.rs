//! The outbox in Redis, under the store's prefix like every other key:
//! `outbox:position` counts the events ever written (`INCR` gives each its position);
//! `outbox:unsent` is a sorted set of the unsent positions, scored by position, so the
//! oldest comes first; `outbox:rows` is a hash from position to the row
//! (`{"subject": …, "payload": <the CloudEvent as JSON>}`); `outbox:retry` a hash from
//! position to the failed publishes of an unsent row; `outbox:sent` a sorted set of the
//! sent positions scored by when they were sent (ms), for the purge.
//!
//! The reservation scripts append their events with the Lua function `outbox`
//! (`outbox_lua!`), in the same script run as the change, so Redis applies both or
//! neither. [`RedisOutbox`] is the [`OutboxStore`] over these keys that the kit's
//! [`kit_events::outbox::Relay`] drains: a row stays due until the relay marks it sent,
//! so a crash between the change and the publish loses nothing, and the republished
//! event keeps its id for the broker's duplicate window.

use kit::discovery::BoxFuture;
use kit_events::outbox::{OutboxError, OutboxRow, OutboxStore};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

/// The Lua function `outbox(subject, payload)` that a script puts in front of its body
/// to append one event; the script's KEYS[3], KEYS[4] and KEYS[5] must be the position
/// counter, the unsent set and the rows ([`OutboxKeys::add_to`]).
macro_rules! outbox_lua {
    () => {
        r"
local function outbox(subject, payload)
  local position = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[5], position, cjson.encode({subject = subject, payload = payload}))
  redis.call('ZADD', KEYS[4], position, position)
end
"
    };
}

/// Up to ARGV[1] unsent rows, oldest first, as position, row and retry state (empty
/// when it never failed), flattened. KEYS: unsent, rows, retry.
const DUE: &str = r"
local out = {}
local limit = tonumber(ARGV[1])
if limit < 1 then return out end
for _, p in ipairs(redis.call('ZRANGE', KEYS[1], 0, limit - 1)) do
  out[#out + 1] = p
  out[#out + 1] = redis.call('HGET', KEYS[2], p) or ''
  out[#out + 1] = redis.call('HGET', KEYS[3], p) or ''
end
return out
";

/// Marks row ARGV[1] sent at ARGV[2] (ms), if it was unsent. KEYS: unsent, retry, sent.
const SENT: &str = r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
end
return 0
";

/// Records the retry state ARGV[2] of row ARGV[1], if it is still unsent. KEYS: unsent,
/// retry.
const FAILED: &str = r"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return 0
";

/// Deletes up to ARGV[2] rows sent before ARGV[1] (ms); answers how many. KEYS: sent,
/// rows, retry.
const PURGE: &str = r"
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, p in ipairs(gone) do
  redis.call('HDEL', KEYS[2], p)
  redis.call('HDEL', KEYS[3], p)
  redis.call('ZREM', KEYS[1], p)
end
return #gone
";

/// Rows one purge script deletes at most, so no single script holds Redis for long.
const PURGE_BATCH: usize = 500;

/// The names of the outbox's keys under one prefix.
#[derive(Debug, Clone)]
pub struct OutboxKeys {
    position: String,
    unsent: String,
    rows: String,
    retry: String,
    sent: String,
}

impl OutboxKeys {
    /// The outbox under `prefix` (`flotilla:inventory:` → `flotilla:inventory:outbox:…`).
    pub fn new(prefix: &str) -> Self {
        let key = |name: &str| format!("{prefix}outbox:{name}");
        Self {
            position: key("position"),
            unsent: key("unsent"),
            rows: key("rows"),
            retry: key("retry"),
            sent: key("sent"),
        }
    }

    /// Adds the keys the `outbox` Lua function writes, as the script's next three keys.
    pub fn add_to(&self, inv: &mut redis::ScriptInvocation<'_>) {
        inv.key(&self.position).key(&self.unsent).key(&self.rows);
    }
}

/// One row as the scripts store it.
#[derive(Deserialize)]
struct Stored {
    subject: String,
    payload: String,
}

/// The failed publishes of an unsent row.
#[derive(Serialize, Deserialize)]
struct Retry {
    attempts: i64,
    next_attempt_ms: i64,
    last_error: String,
}

/// The outbox of a Redis store, for [`kit_events::outbox::Relay`].
#[derive(Clone)]
pub struct RedisOutbox {
    conn: ConnectionManager,
    keys: OutboxKeys,
}

impl std::fmt::Debug for RedisOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOutbox")
            .field("keys", &self.keys)
            .finish()
    }
}

impl RedisOutbox {
    /// The outbox at `keys`, over `conn`.
    pub fn new(conn: ConnectionManager, keys: OutboxKeys) -> Self {
        Self { conn, keys }
    }
}

fn row(position: &str, stored: &str, retry: &str) -> Result<OutboxRow, OutboxError> {
    let position: i64 = position
        .parse()
        .map_err(|_| OutboxError::backend(format!("outbox position {position:?}")))?;
    let Stored { subject, payload } =
        serde_json::from_str(stored).map_err(|source| OutboxError::Payload { position, source })?;
    let (attempts, next_attempt_ms) = if retry.is_empty() {
        (0, 0)
    } else {
        let r: Retry = serde_json::from_str(retry).map_err(|e| {
            OutboxError::backend(format!("outbox row {position}: retry state: {e}"))
        })?;
        (r.attempts, r.next_attempt_ms)
    };
    Ok(OutboxRow {
        position,
        subject,
        payload,
        attempts,
        next_attempt_ms,
    })
}

impl OutboxStore for RedisOutbox {
    fn due(&self, limit: i64) -> BoxFuture<'_, Result<Vec<OutboxRow>, OutboxError>> {
        Box::pin(async move {
            let flat: Vec<String> = redis::Script::new(DUE)
                .key(&self.keys.unsent)
                .key(&self.keys.rows)
                .key(&self.keys.retry)
                .arg(limit)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(OutboxError::backend)?;
            flat.chunks(3)
                .map(|c| match c {
                    [position, stored, retry] => row(position, stored, retry),
                    _ => Err(OutboxError::backend("outbox: a truncated answer")),
                })
                .collect()
        })
    }

    fn mark_sent(&self, position: i64) -> BoxFuture<'_, Result<(), OutboxError>> {
        Box::pin(async move {
            let _: i64 = redis::Script::new(SENT)
                .key(&self.keys.unsent)
                .key(&self.keys.retry)
                .key(&self.keys.sent)
                .arg(position)
                .arg(crate::domain::now_ms())
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(OutboxError::backend)?;
            Ok(())
        })
    }

    fn mark_failed(
        &self,
        position: i64,
        attempts: i64,
        next_attempt_ms: i64,
        error: String,
    ) -> BoxFuture<'_, Result<(), OutboxError>> {
        Box::pin(async move {
            let retry = serde_json::to_string(&Retry {
                attempts,
                next_attempt_ms,
                last_error: error,
            })
            .map_err(OutboxError::backend)?;
            let _: i64 = redis::Script::new(FAILED)
                .key(&self.keys.unsent)
                .key(&self.keys.retry)
                .arg(position)
                .arg(retry)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(OutboxError::backend)?;
            Ok(())
        })
    }

    fn unsent(&self) -> BoxFuture<'_, Result<i64, OutboxError>> {
        Box::pin(async move {
            self.conn
                .clone()
                .zcard(&self.keys.unsent)
                .await
                .map_err(OutboxError::backend)
        })
    }

    fn purge_sent(&self, cutoff_ms: i64) -> BoxFuture<'_, Result<u64, OutboxError>> {
        Box::pin(async move {
            let mut purged = 0u64;
            loop {
                let n: usize = redis::Script::new(PURGE)
                    .key(&self.keys.sent)
                    .key(&self.keys.rows)
                    .key(&self.keys.retry)
                    .arg(cutoff_ms)
                    .arg(PURGE_BATCH)
                    .invoke_async(&mut self.conn.clone())
                    .await
                    .map_err(OutboxError::backend)?;
                purged += n as u64;
                if n < PURGE_BATCH {
                    return Ok(purged);
                }
            }
        })
    }
}
