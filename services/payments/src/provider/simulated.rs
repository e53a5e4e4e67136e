//! A card processor simulated in-process that keeps its own records as a remote one
//! does, on its side of the wire.
//!
//! Its records live in a database of their own (`FLOTILLA_PAYMENTS__PROVIDER_STORE`: by
//! default the SQLite file `<data dir>/payments/provider.db`, or a MariaDB database),
//! never in the ledger: they stand for the processor's books, which outlive a crash of
//! the payments process and are not rolled back with the ledger's transactions.
//! Instances that share a ledger must share this store too (one processor), so with a
//! MariaDB ledger point it at a MariaDB database as well.
//!
//! The test cards behave as API.md says; any other valid card approves. An
//! authorization is recorded under its idempotency key, and answered from that record
//! when asked again; a simulated provider error records nothing (it never processed
//! the request). Every call takes `latency`.

use std::time::Duration;

use kit::discovery::BoxFuture;
use kit::store::{Migration, StoreError};

use super::{Authorization, Lookup, PaymentProvider, ProviderUnavailable, test_cards};
use crate::domain::{Card, Money, now_rfc3339};

static SQLITE_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "simulated provider attempts",
    sql: include_str!("../../migrations/provider/sqlite/0001_attempts.sql"),
}];

static MYSQL_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "simulated provider attempts",
    sql: include_str!("../../migrations/provider/mysql/0001_attempts.sql"),
}];

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(sqlx::SqlitePool),
    MySql(sqlx::MySqlPool),
}

/// Runs the same statement on whichever backend the provider's records are in.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::MySql($p) => $body,
        }
    };
}

const SELECT: &str = "SELECT idempotency_key, outcome, reference, decline_reason, amount_cents, \
     currency, card_last4, state FROM sim_authorizations";

/// One authorization attempt as the simulated provider recorded it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SimulatedAttempt {
    /// The caller's idempotency key (the payment's id).
    pub idempotency_key: String,
    /// `approved` or `declined`.
    pub outcome: String,
    /// The hold's reference, for approved attempts.
    pub reference: Option<String>,
    /// Why it was declined, for declined attempts.
    pub decline_reason: Option<String>,
    /// Minor units held.
    pub amount_cents: i64,
    /// ISO 4217.
    pub currency: String,
    /// The card's last four digits.
    pub card_last4: String,
    /// `held`, `captured`, `voided` (approved attempts) or `declined`.
    pub state: String,
}

impl SimulatedAttempt {
    fn answer(&self) -> Authorization {
        match self.outcome.as_str() {
            "approved" => Authorization::Approved(self.reference.clone().unwrap_or_default()),
            _ => Authorization::Declined(self.decline_reason.clone().unwrap_or_default()),
        }
    }
}

/// The simulated card processor (see the module documentation).
#[derive(Debug, Clone)]
pub struct SimulatedProvider {
    pool: Pool,
    latency: Duration,
}

fn unavailable(e: sqlx::Error) -> ProviderUnavailable {
    ProviderUnavailable(format!("simulated provider's records: {e}"))
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl SimulatedProvider {
    /// Opens (and migrates) the provider's records at `url` (`sqlite://…` or
    /// `mysql://…`); every call will take `latency`. `setting` names the URL's setting
    /// in errors.
    pub async fn open(url: &str, setting: &str, latency: Duration) -> Result<Self, StoreError> {
        let pool = match kit::store::scheme(url) {
            "sqlite" => {
                Pool::Sqlite(kit::store::sqlite::open(url, setting, SQLITE_MIGRATIONS).await?)
            }
            "mysql" | "mariadb" => Pool::MySql(
                kit::store::mysql::open(
                    &url.replacen("mariadb://", "mysql://", 1),
                    setting,
                    MYSQL_MIGRATIONS,
                )
                .await?,
            ),
            _ => {
                return Err(StoreError::UnknownScheme {
                    setting: setting.to_owned(),
                    url: kit::store::redact(url),
                    expected: "sqlite://, mysql://",
                });
            }
        };
        Ok(Self { pool, latency })
    }

    /// The attempt recorded under `key`, if any.
    pub async fn attempt(
        &self,
        key: &str,
    ) -> Result<Option<SimulatedAttempt>, ProviderUnavailable> {
        let sql = format!("{SELECT} WHERE idempotency_key = ?");
        on_pool!(&self.pool, |p| sqlx::query_as(&sql)
            .bind(key)
            .fetch_optional(p)
            .await
            .map_err(unavailable))
    }

    /// Every attempt recorded, oldest first (for checks and tests).
    pub async fn attempts(&self) -> Result<Vec<SimulatedAttempt>, ProviderUnavailable> {
        let sql = format!("{SELECT} ORDER BY created_at, idempotency_key");
        on_pool!(&self.pool, |p| sqlx::query_as(&sql)
            .fetch_all(p)
            .await
            .map_err(unavailable))
    }

    async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    /// Records an operation once per `(reference, key)` and moves the hold `reference`
    /// from `held` to `state` (a hold elsewhere stays where it is).
    async fn operate(
        &self,
        reference: &str,
        key: &str,
        kind: &str,
        amount_cents: i64,
        state: Option<&str>,
    ) -> Result<(), ProviderUnavailable> {
        self.delay().await;
        let now = now_rfc3339();
        let inserted = on_pool!(&self.pool, |p| {
            sqlx::query(
            "INSERT INTO sim_operations (reference, idempotency_key, kind, amount_cents, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(reference)
        .bind(key)
        .bind(kind)
        .bind(amount_cents)
        .bind(&now)
        .execute(p)
        .await
        .map(|_| ())
        });
        match inserted {
            Ok(()) => {}
            Err(e) if unique_violation(&e) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let Some(state) = state else {
            return Ok(());
        };
        on_pool!(&self.pool, |p| sqlx::query(
            "UPDATE sim_authorizations SET state = ?, updated_at = ? \
             WHERE reference = ? AND state = 'held'",
        )
        .bind(state)
        .bind(&now)
        .bind(reference)
        .execute(p)
        .await
        .map(|_| ())
        .map_err(unavailable))
    }
}

/// The simulated processor's decision for a card it has not seen under this key.
fn decide(card: &Card) -> Result<Authorization, ProviderUnavailable> {
    match card.number() {
        test_cards::DECLINE => Ok(Authorization::Declined("card_declined".into())),
        test_cards::INSUFFICIENT_FUNDS => Ok(Authorization::Declined("insufficient_funds".into())),
        test_cards::PROVIDER_ERROR => Err(ProviderUnavailable("simulated provider error".into())),
        _ => Ok(Authorization::Approved(format!(
            "sim_{}",
            uuid::Uuid::now_v7().simple()
        ))),
    }
}

impl PaymentProvider for SimulatedProvider {
    fn authorize<'a>(
        &'a self,
        key: &'a str,
        card: &'a Card,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<Authorization, ProviderUnavailable>> {
        Box::pin(async move {
            self.delay().await;
            if let Some(seen) = self.attempt(key).await? {
                return Ok(seen.answer());
            }
            let answer = decide(card)?;
            let (outcome, reference, reason, state) = match &answer {
                Authorization::Approved(r) => ("approved", Some(r.as_str()), None, "held"),
                Authorization::Declined(why) => ("declined", None, Some(why.as_str()), "declined"),
            };
            let now = now_rfc3339();
            let inserted = on_pool!(&self.pool, |p| {
                sqlx::query(
                "INSERT INTO sim_authorizations (idempotency_key, outcome, reference, decline_reason, \
                 amount_cents, currency, card_last4, state, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(key)
            .bind(outcome)
            .bind(reference)
            .bind(reason)
            .bind(amount.cents)
            .bind(&amount.currency)
            .bind(card.last4())
            .bind(state)
            .bind(&now)
            .bind(&now)
            .execute(p)
            .await
            .map(|_| ())
            });
            match inserted {
                Ok(()) => Ok(answer),
                // A concurrent call with the same key got there first: its answer stands.
                Err(e) if unique_violation(&e) => self
                    .attempt(key)
                    .await?
                    .map(|a| a.answer())
                    .ok_or_else(|| ProviderUnavailable(format!("attempt {key} vanished"))),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Lookup, ProviderUnavailable>> {
        Box::pin(async move {
            self.delay().await;
            Ok(match self.attempt(key).await? {
                Some(a) => Lookup::Answered(a.answer()),
                None => Lookup::Unknown,
            })
        })
    }

    fn capture<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        Box::pin(self.operate(reference, key, "capture", 0, Some("captured")))
    }

    fn void<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        Box::pin(self.operate(reference, key, "void", 0, Some("voided")))
    }

    fn refund<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        Box::pin(self.operate(reference, key, "refund", amount.cents, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(number: &str) -> Card {
        Card::parse(number, 12, 2099, "123", (2026, 1)).unwrap()
    }

    async fn open(dir: &std::path::Path) -> SimulatedProvider {
        let url = format!("sqlite://{}/provider.db", dir.display());
        SimulatedProvider::open(&url, "FLOTILLA_PAYMENTS__PROVIDER_STORE", Duration::ZERO)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn one_hold_per_key_remembered_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let eur = Money::parse(1000, "EUR").unwrap();
        let sim = open(dir.path()).await;
        assert_eq!(sim.lookup("p-1").await.unwrap(), Lookup::Unknown);
        let first = sim
            .authorize("p-1", &card(test_cards::APPROVE), &eur)
            .await
            .unwrap();
        assert!(matches!(&first, Authorization::Approved(r) if r.starts_with("sim_")));
        drop(sim);

        // Another process, the same processor: the key answers as before.
        let sim = open(dir.path()).await;
        assert_eq!(
            sim.lookup("p-1").await.unwrap(),
            Lookup::Answered(first.clone())
        );
        let again = sim
            .authorize("p-1", &card(test_cards::APPROVE), &eur)
            .await
            .unwrap();
        assert_eq!(again, first);
        let racing: Vec<_> = (0..8)
            .map(|_| {
                let sim = sim.clone();
                let eur = eur.clone();
                tokio::spawn(async move {
                    sim.authorize("p-2", &card(test_cards::APPROVE), &eur)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut answers = Vec::new();
        for r in racing {
            answers.push(r.await.unwrap());
        }
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
        let holds = sim.attempts().await.unwrap();
        assert_eq!(holds.len(), 2, "{holds:?}");
        assert!(
            holds
                .iter()
                .all(|h| h.state == "held" && h.amount_cents == 1000)
        );
    }

    #[tokio::test]
    async fn test_cards_and_operations_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let eur = Money::parse(500, "EUR").unwrap();
        let sim = open(dir.path()).await;
        assert_eq!(
            sim.authorize("d", &card(test_cards::DECLINE), &eur)
                .await
                .unwrap(),
            Authorization::Declined("card_declined".into())
        );
        assert_eq!(
            sim.authorize("f", &card(test_cards::INSUFFICIENT_FUNDS), &eur)
                .await
                .unwrap(),
            Authorization::Declined("insufficient_funds".into())
        );
        assert!(
            sim.authorize("e", &card(test_cards::PROVIDER_ERROR), &eur)
                .await
                .is_err()
        );
        assert_eq!(
            sim.lookup("e").await.unwrap(),
            Lookup::Unknown,
            "an error records nothing"
        );
        // A declined key stays declined, whatever card comes with it next.
        assert_eq!(
            sim.authorize("d", &card(test_cards::APPROVE), &eur)
                .await
                .unwrap(),
            Authorization::Declined("card_declined".into())
        );

        let Authorization::Approved(a) = sim
            .authorize("a", &card(test_cards::APPROVE), &eur)
            .await
            .unwrap()
        else {
            panic!("approves")
        };
        let Authorization::Approved(b) = sim
            .authorize("b", &card(test_cards::APPROVE), &eur)
            .await
            .unwrap()
        else {
            panic!("approves")
        };
        sim.capture(&a, "c1").await.unwrap();
        sim.void(&a, "v1").await.unwrap();
        sim.void(&b, "v1").await.unwrap();
        sim.void(&b, "v1").await.unwrap();
        let state = |key: &'static str| {
            let sim = sim.clone();
            async move { sim.attempt(key).await.unwrap().unwrap().state }
        };
        assert_eq!(
            state("a").await,
            "captured",
            "a void after capture changes nothing"
        );
        assert_eq!(state("b").await, "voided");
        assert_eq!(state("d").await, "declined");
    }
}
