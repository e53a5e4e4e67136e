//! Redis backend (production). Layout under a key prefix (default `flotilla:inventory:`):
//! `product:{sku}` is a hash of the product's fields; `skus` is a sorted set of every SKU
//! (all scores 0, so it orders lexicographically and pages with `ZRANGE … BYLEX`);
//! `seeded` marks that the demo catalog was added once; `reservation:{order_id}` is a hash
//! (`status`, `expires_at`, `lines` as JSON); `due` is a sorted set of held reservations
//! scored by expiry; `outbox:*` is the outbox ([`outbox`]).
//!
//! Every change that must not interleave with another (create, set stock, reserve, a
//! reservation's transition) is one Lua script, which Redis runs atomically: that is
//! what prevents overselling. Transitions are decided in Rust by
//! [`crate::domain::decide`] and applied by a script that checks the reservation is
//! still held (compare-and-set), retrying after a lost race. The scripts that reserve
//! and return stock append their `inventory.*` events to the outbox in the same run, so
//! an event exists exactly when its change does; the kit's relay publishes them.

#[macro_use]
pub mod outbox;

use std::sync::Arc;

use kit::discovery::BoxFuture;
use kit::store::StoreError;
use kit_events::outbox::OutboxStore;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;

use super::{CatalogError, CatalogStore};
use crate::domain::{
    Action, Line, Product, Reservation, ReservationError, ReservationStatus, Sku, Step, decide,
};
use outbox::{OutboxKeys, RedisOutbox};

/// Products in Redis.
#[derive(Clone)]
pub struct RedisCatalog {
    conn: ConnectionManager,
    prefix: String,
    outbox: OutboxKeys,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for RedisCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCatalog")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Seeds atomically, once: KEYS[1] is the `seeded` marker, KEYS[2] the SKU set, then one
/// product key per product; ARGV holds 6 fields per product.
const SEED: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX') == false then return 0 end
local added = 0
for i = 3, #KEYS do
  local a = (i - 3) * 6
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'sku', ARGV[a+1], 'name', ARGV[a+2], 'description', ARGV[a+3],
      'price_cents', ARGV[a+4], 'currency', ARGV[a+5], 'stock', ARGV[a+6], 'reserved', 0)
    redis.call('ZADD', KEYS[2], 0, ARGV[a+1])
    added = added + 1
  end
end
return added
";

/// Creates a product unless its SKU exists: KEYS[1] the product, KEYS[2] the SKU set.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'sku', ARGV[1], 'name', ARGV[2], 'description', ARGV[3],
  'price_cents', ARGV[4], 'currency', ARGV[5], 'stock', ARGV[6], 'reserved', 0, 'sold', 0)
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
";

/// Sets the stock of KEYS[1] to ARGV[1]: -1 if unknown, the reserved units (>= 0) if
/// the new stock is below them, else -2.
const SET_STOCK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved'))
if tonumber(ARGV[1]) < reserved then return reserved end
redis.call('HSET', KEYS[1], 'stock', ARGV[1])
return -2
";

/// Holds every line or none, and writes its events. KEYS[1] the reservation, KEYS[2]
/// the due set, KEYS[3..5] the outbox (for its `outbox` function), KEYS[6..] the
/// products; ARGV[1] order id, ARGV[2] expiry, ARGV[3] lines JSON, ARGV[4] and ARGV[5]
/// the subject and JSON of `inventory.reserved`, ARGV[6] the low-stock threshold,
/// ARGV[7] the subject of `inventory.low_stock`, then per line its quantity and its
/// `inventory.low_stock` event, whose `data.available` the script sets to the units
/// left. Answers {'ok'}, {'exists'}, {'unknown', i} or {'insufficient', i}.
const RESERVE: &str = concat!(
    outbox_lua!(),
    r"
local function quantity(i) return tonumber(ARGV[8 + 2 * (i - 6)]) end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
for i = 6, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'stock', 'reserved')
  if not v[1] then return {'unknown', tostring(i - 6)} end
  if tonumber(v[1]) - tonumber(v[2]) < quantity(i) then
    return {'insufficient', tostring(i - 6)}
  end
end
for i = 6, #KEYS do redis.call('HINCRBY', KEYS[i], 'reserved', quantity(i)) end
redis.call('HSET', KEYS[1], 'status', 'reserved', 'expires_at', ARGV[2], 'lines', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
outbox(ARGV[4], ARGV[5])
for i = 6, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'stock', 'reserved')
  local available = tonumber(v[1]) - tonumber(v[2])
  if available <= tonumber(ARGV[6]) then
    local event = cjson.decode(ARGV[9 + 2 * (i - 6)])
    event.data.available = available
    outbox(ARGV[7], cjson.encode(event))
  end
end
return {'ok'}
"
);

/// Moves a held reservation to ARGV[2], if it is still held (else 0), and writes its
/// event. KEYS as in RESERVE; ARGV[1] order id, ARGV[3] and ARGV[4] the subject and
/// JSON of the event (an empty subject for none), ARGV[5..] the quantities.
const TRANSITION: &str = concat!(
    outbox_lua!(),
    r"
if redis.call('HGET', KEYS[1], 'status') ~= 'reserved' then return 0 end
for i = 6, #KEYS do
  local q = tonumber(ARGV[i - 1])
  redis.call('HINCRBY', KEYS[i], 'reserved', -q)
  if ARGV[2] == 'committed' then
    redis.call('HINCRBY', KEYS[i], 'stock', -q)
    redis.call('HINCRBY', KEYS[i], 'sold', q)
  end
end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] ~= '' then outbox(ARGV[3], ARGV[4]) end
return 1
"
);

fn backend(e: redis::RedisError) -> ReservationError {
    ReservationError::Backend(e.to_string())
}

fn field<'a>(
    h: &'a std::collections::HashMap<String, String>,
    k: &str,
) -> Result<&'a str, CatalogError> {
    h.get(k)
        .map(String::as_str)
        .ok_or_else(|| CatalogError::Backend(format!("product hash lacks {k}")))
}

fn number(h: &std::collections::HashMap<String, String>, k: &str) -> Result<i64, CatalogError> {
    field(h, k)?
        .parse()
        .map_err(|_| CatalogError::Backend(format!("product field {k} is not a number")))
}

fn product_from(h: &std::collections::HashMap<String, String>) -> Result<Product, CatalogError> {
    Ok(Product {
        sku: Sku::parse(field(h, "sku")?).map_err(|e| CatalogError::Backend(e.to_owned()))?,
        name: field(h, "name")?.to_owned(),
        description: field(h, "description")?.to_owned(),
        price_cents: number(h, "price_cents")?,
        currency: field(h, "currency")?.to_owned(),
        stock: number(h, "stock")?,
        reserved: number(h, "reserved")?,
        // Products stored before reservations existed have no `sold` yet.
        sold: if h.contains_key("sold") {
            number(h, "sold")?
        } else {
            0
        },
    })
}

impl RedisCatalog {
    /// Connects to `url`; every key starts with `prefix`.
    pub async fn open(url: &str, setting: &str, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self {
            conn: kit::store::redis::connect(url, setting).await?,
            prefix: prefix.to_owned(),
            outbox: OutboxKeys::new(prefix),
            wake: Arc::new(Notify::new()),
        })
    }

    /// The outbox the reservation scripts write, for a relay.
    pub fn redis_outbox(&self) -> RedisOutbox {
        RedisOutbox::new(self.conn.clone(), self.outbox.clone())
    }

    /// Starts a script of reservation `order_id` over `lines`: its keys in the order
    /// RESERVE and TRANSITION expect.
    fn reservation_script<'s>(
        &self,
        script: &'s redis::Script,
        order_id: &str,
        lines: &[Line],
    ) -> redis::ScriptInvocation<'s> {
        let mut inv = script.key(self.reservation_key(order_id));
        inv.key(self.key("due"));
        self.outbox.add_to(&mut inv);
        for line in lines {
            inv.key(self.product_key(&line.sku));
        }
        inv
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    async fn fetch(&self, skus: &[String]) -> Result<Vec<Product>, CatalogError> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for sku in skus {
            pipe.hgetall(self.key(&format!("product:{sku}")));
        }
        let hashes: Vec<std::collections::HashMap<String, String>> =
            pipe.query_async(&mut self.conn.clone()).await?;
        hashes
            .iter()
            .filter(|h| !h.is_empty())
            .map(product_from)
            .collect()
    }

    fn product_key(&self, sku: &Sku) -> String {
        self.key(&format!("product:{sku}"))
    }

    fn reservation_key(&self, order_id: &str) -> String {
        self.key(&format!("reservation:{order_id}"))
    }

    async fn load_reservation(
        &self,
        order_id: &str,
    ) -> Result<Option<Reservation>, ReservationError> {
        let h: std::collections::HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.reservation_key(order_id))
            .await
            .map_err(backend)?;
        if h.is_empty() {
            return Ok(None);
        }
        let bad =
            |what: &str| ReservationError::Backend(format!("reservation {order_id:?}: bad {what}"));
        let status = h
            .get("status")
            .and_then(|s| ReservationStatus::parse(s))
            .ok_or_else(|| bad("status"))?;
        let expires_at_ms = h
            .get("expires_at")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("expires_at"))?;
        let lines: Vec<Line> = serde_json::from_str(h.get("lines").map_or("[]", String::as_str))
            .map_err(|_| bad("lines"))?;
        Ok(Some(Reservation {
            order_id: order_id.to_owned(),
            lines,
            status,
            expires_at_ms,
        }))
    }

    /// Deletes every key under this store's prefix (tests). Scans rather than `KEYS`,
    /// which the service's ACL user may not run.
    pub async fn clear(&self) -> Result<(), CatalogError> {
        let mut conn = self.conn.clone();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: () = conn.del(keys).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl CatalogStore for RedisCatalog {
    fn list(
        &self,
        limit: u32,
        after: Option<Sku>,
    ) -> BoxFuture<'_, Result<Vec<Product>, CatalogError>> {
        Box::pin(async move {
            let min = after.map_or_else(|| "-".to_owned(), |s| format!("({s}"));
            let skus: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.key("skus"))
                .arg(min)
                .arg("+")
                .arg("BYLEX")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut self.conn.clone())
                .await?;
            self.fetch(&skus).await
        })
    }

    fn get(&self, sku: Sku) -> BoxFuture<'_, Result<Option<Product>, CatalogError>> {
        Box::pin(async move { Ok(self.fetch(&[sku.to_string()]).await?.into_iter().next()) })
    }

    fn seed_once(&self, products: Vec<Product>) -> BoxFuture<'_, Result<usize, CatalogError>> {
        Box::pin(async move {
            let script = redis::Script::new(SEED);
            let mut inv = script.key(self.key("seeded"));
            inv.key(self.key("skus"));
            for p in &products {
                inv.key(self.key(&format!("product:{}", p.sku)));
            }
            for p in &products {
                inv.arg(p.sku.as_str())
                    .arg(&p.name)
                    .arg(&p.description)
                    .arg(p.price_cents)
                    .arg(&p.currency)
                    .arg(p.stock);
            }
            let added: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
            Ok(usize::try_from(added).unwrap_or(0))
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), CatalogError>> {
        Box::pin(async move {
            let _: String = redis::cmd("PING")
                .query_async(&mut self.conn.clone())
                .await?;
            Ok(())
        })
    }

    fn create(&self, p: Product) -> BoxFuture<'_, Result<Product, CatalogError>> {
        Box::pin(async move {
            let created: i64 = redis::Script::new(CREATE)
                .key(self.product_key(&p.sku))
                .key(self.key("skus"))
                .arg(p.sku.as_str())
                .arg(&p.name)
                .arg(&p.description)
                .arg(p.price_cents)
                .arg(&p.currency)
                .arg(p.stock)
                .invoke_async(&mut self.conn.clone())
                .await?;
            if created == 0 {
                return Err(CatalogError::Exists(p.sku));
            }
            Ok(Product {
                reserved: 0,
                sold: 0,
                ..p
            })
        })
    }

    fn set_stock(&self, sku: Sku, stock: i64) -> BoxFuture<'_, Result<Product, CatalogError>> {
        Box::pin(async move {
            let answer: i64 = redis::Script::new(SET_STOCK)
                .key(self.product_key(&sku))
                .arg(stock)
                .invoke_async(&mut self.conn.clone())
                .await?;
            match answer {
                -1 => Err(CatalogError::NotFound(sku)),
                -2 => self
                    .get(sku.clone())
                    .await?
                    .ok_or(CatalogError::NotFound(sku)),
                reserved => Err(CatalogError::BelowReserved { sku, reserved }),
            }
        })
    }

    fn reserve(
        &self,
        order_id: String,
        lines: Vec<Line>,
        expires_at_ms: i64,
    ) -> BoxFuture<'_, Result<Reservation, ReservationError>> {
        Box::pin(async move {
            let encode = |e: serde_json::Error| ReservationError::Backend(e.to_string());
            let json = serde_json::to_string(&lines).map_err(encode)?;
            let reservation = Reservation {
                order_id,
                lines,
                status: ReservationStatus::Reserved,
                expires_at_ms,
            };
            let (subject, event) = crate::events::reserved(&reservation);
            let script = redis::Script::new(RESERVE);
            let mut inv =
                self.reservation_script(&script, &reservation.order_id, &reservation.lines);
            inv.arg(&reservation.order_id)
                .arg(expires_at_ms)
                .arg(json)
                .arg(subject)
                .arg(serde_json::to_string(&event).map_err(encode)?)
                .arg(crate::events::LOW_STOCK);
            let mut low_subject = "";
            let mut low = Vec::with_capacity(reservation.lines.len());
            for line in &reservation.lines {
                let (subject, event) = crate::events::low_stock_event(line.sku.as_str(), 0);
                low_subject = subject;
                low.push((
                    line.quantity,
                    serde_json::to_string(&event).map_err(encode)?,
                ));
            }
            inv.arg(low_subject);
            for (quantity, event) in &low {
                inv.arg(*quantity).arg(event);
            }
            let answer: Vec<String> = inv
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(backend)?;
            let Reservation {
                order_id, lines, ..
            } = &reservation;
            let line_at = |i: Option<&String>| {
                i.and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| lines.get(i))
                    .map(|l| l.sku.clone())
                    .ok_or_else(|| ReservationError::Backend("bad script answer".into()))
            };
            match answer.first().map(String::as_str) {
                Some("ok") => {
                    self.wake.notify_one();
                    Ok(reservation)
                }
                Some("unknown") => Err(ReservationError::UnknownSku(line_at(answer.get(1))?)),
                Some("insufficient") => {
                    Err(ReservationError::Insufficient(line_at(answer.get(1))?))
                }
                _ => match self.load_reservation(order_id).await? {
                    Some(existing) if existing.lines == *lines || existing.lines.is_empty() => {
                        Ok(existing)
                    }
                    Some(_) => Err(ReservationError::Mismatch(order_id.clone())),
                    None => Err(ReservationError::Backend(
                        "a reservation vanished while being read".into(),
                    )),
                },
            }
        })
    }

    fn finish(
        &self,
        order_id: String,
        action: Action,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<Reservation>, ReservationError>> {
        Box::pin(async move {
            // Each round decides on a fresh read; a script that finds the reservation
            // no longer held (another caller won) sends us round again.
            loop {
                let current = self.load_reservation(&order_id).await?;
                match decide(&order_id, current.as_ref(), action, now_ms) {
                    Step::Nothing => return Ok(current),
                    Step::Refuse(e) => return Err(e),
                    Step::Tombstone => {
                        let created: bool = redis::cmd("HSETNX")
                            .arg(self.reservation_key(&order_id))
                            .arg("status")
                            .arg("released")
                            .query_async(&mut self.conn.clone())
                            .await
                            .map_err(backend)?;
                        if created {
                            let _: () = self
                                .conn
                                .clone()
                                .hset_multiple(
                                    self.reservation_key(&order_id),
                                    &[("expires_at", "0"), ("lines", "[]")],
                                )
                                .await
                                .map_err(backend)?;
                            return Ok(Some(Reservation {
                                order_id,
                                lines: Vec::new(),
                                status: ReservationStatus::Released,
                                expires_at_ms: 0,
                            }));
                        }
                    }
                    Step::Transition { to, refuse } => {
                        let mut r = current.expect("a transition has a reservation");
                        let event = crate::events::transition(&order_id, &r.lines, to);
                        let (subject, json) = match &event {
                            Some((subject, event)) => (
                                *subject,
                                serde_json::to_string(event)
                                    .map_err(|e| ReservationError::Backend(e.to_string()))?,
                            ),
                            None => ("", String::new()),
                        };
                        let script = redis::Script::new(TRANSITION);
                        let mut inv = self.reservation_script(&script, &order_id, &r.lines);
                        inv.arg(&order_id).arg(to.as_str()).arg(subject).arg(json);
                        for line in &r.lines {
                            inv.arg(line.quantity);
                        }
                        let applied: i64 = inv
                            .invoke_async(&mut self.conn.clone())
                            .await
                            .map_err(backend)?;
                        if applied == 1 {
                            if event.is_some() {
                                self.wake.notify_one();
                            }
                            r.status = to;
                            return match refuse {
                                Some(e) => Err(e),
                                None => Ok(Some(r)),
                            };
                        }
                    }
                }
            }
        })
    }

    fn reservation(
        &self,
        order_id: String,
    ) -> BoxFuture<'_, Result<Option<Reservation>, ReservationError>> {
        Box::pin(async move { self.load_reservation(&order_id).await })
    }

    fn outbox(&self) -> (Arc<dyn OutboxStore>, Arc<Notify>) {
        (Arc::new(self.redis_outbox()), self.wake.clone())
    }

    fn due(&self, now_ms: i64, limit: u32) -> BoxFuture<'_, Result<Vec<String>, ReservationError>> {
        Box::pin(async move {
            let ids: Vec<String> = self
                .conn
                .clone()
                .zrangebyscore_limit(self.key("due"), "-inf", now_ms, 0, limit as isize)
                .await
                .map_err(backend)?;
            Ok(ids)
        })
    }
}
