//! Redis backend (production). Layout under a key prefix (default `flotilla:inventory:`):
//! `product:{sku}` is a hash of the product's fields; `skus` is a sorted set of every SKU
//! (all scores 0, so it orders lexicographically and pages with `ZRANGE … BYLEX`);
//! `seeded` marks that the demo catalog was added once.

use kit::discovery::BoxFuture;
use kit::store::StoreError;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::{CatalogError, CatalogStore};
use crate::domain::{Product, Sku};

/// Products in Redis.
#[derive(Clone)]
pub struct RedisCatalog {
    conn: ConnectionManager,
    prefix: String,
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
    })
}

impl RedisCatalog {
    /// Connects to `url`; every key starts with `prefix`.
    pub async fn open(url: &str, setting: &str, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self {
            conn: kit::store::redis::connect(url, setting).await?,
            prefix: prefix.to_owned(),
        })
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

    /// Deletes every key under this store's prefix (tests).
    pub async fn clear(&self) -> Result<(), CatalogError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = conn.keys(format!("{}*", self.prefix)).await?;
        if !keys.is_empty() {
            let _: () = conn.del(keys).await?;
        }
        Ok(())
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
}
