//! The same behaviour from every backend.

use std::sync::Arc;

use kit::store::testing::{Server, TestDatabase};
use proptest::prelude::*;

use super::*;
use crate::keys::SigningKey;

fn account(id: &str, email: &str, role: Role) -> NewAccount {
    NewAccount {
        account: Account {
            id: id.into(),
            email: email.into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$x$y".into(),
            role,
        },
        name: "Name".into(),
        created_ms: 1_000,
    }
}

fn refresh(hash: &str, family: &str, user: &str, expires_ms: i64) -> RefreshRecord {
    RefreshRecord {
        token_hash: hash.into(),
        family_id: family.into(),
        user_id: user.into(),
        issued_ms: 0,
        expires_ms,
    }
}

fn event() -> kit_events::Event {
    kit_events::Event::new("auth", "users.registered", serde_json::json!({}))
}

async fn conformance(store: Arc<dyn AuthStore>) {
    // Accounts: the email is unique; the pending profile and the event come along.
    assert!(!store.admin_exists().await.unwrap());
    let new = store
        .register(
            account("u1", "a@x.io", Role::Customer),
            "users.registered",
            event(),
        )
        .await
        .unwrap();
    assert_eq!(new, Registered::New);
    let taken = store
        .register(
            account("u2", "a@x.io", Role::Customer),
            "users.registered",
            event(),
        )
        .await
        .unwrap();
    assert_eq!(taken, Registered::EmailTaken);
    assert_eq!(store.outbox().0.unsent().await.unwrap(), 1, "one event");
    assert_eq!(
        store
            .account_by_email("a@x.io".into())
            .await
            .unwrap()
            .unwrap()
            .id,
        "u1"
    );
    assert_eq!(
        store
            .account_by_id("u1".into())
            .await
            .unwrap()
            .unwrap()
            .role,
        Role::Customer
    );
    assert!(store.account_by_id("u2".into()).await.unwrap().is_none());
    store
        .register(
            account("u3", "root@x.io", Role::Admin),
            "users.registered",
            event(),
        )
        .await
        .unwrap();
    assert!(store.admin_exists().await.unwrap());

    // Pending profiles: due ones, retried later, forgotten once created.
    let due = store.due_profiles(1_000, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    store
        .profile_failed("u1".into(), 1, 5_000, "down".into())
        .await
        .unwrap();
    let due = store.due_profiles(2_000, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|p| p.user_id.as_str()).collect::<Vec<_>>(),
        ["u3"]
    );
    store.profile_created("u3".into()).await.unwrap();
    let due = store.due_profiles(6_000, 10).await.unwrap();
    assert_eq!((due.len(), due[0].attempts), (1, 1));

    // Refresh rotation, reuse, logout, expiry.
    store
        .issue_refresh(refresh("h1", "f1", "u1", 10_000))
        .await
        .unwrap();
    let r = store
        .rotate_refresh("h1".into(), refresh("h2", "", "", 10_000), 100)
        .await
        .unwrap();
    assert_eq!(
        r,
        Rotation::Rotated {
            user_id: "u1".into()
        }
    );
    let r = store
        .rotate_refresh("h1".into(), refresh("h3", "", "", 10_000), 200)
        .await
        .unwrap();
    assert_eq!(r, Rotation::Reused);
    let r = store
        .rotate_refresh("h2".into(), refresh("h4", "", "", 10_000), 300)
        .await
        .unwrap();
    assert_eq!(r, Rotation::Rejected, "the family is revoked");
    let r = store
        .rotate_refresh("nope".into(), refresh("h5", "", "", 10_000), 300)
        .await
        .unwrap();
    assert_eq!(r, Rotation::Rejected);
    store
        .issue_refresh(refresh("g1", "f2", "u1", 10_000))
        .await
        .unwrap();
    assert!(store.revoke_family("g1".into(), 400).await.unwrap());
    assert!(!store.revoke_family("nope".into(), 400).await.unwrap());
    let r = store
        .rotate_refresh("g1".into(), refresh("g2", "", "", 10_000), 500)
        .await
        .unwrap();
    assert_eq!(r, Rotation::Rejected);
    store
        .issue_refresh(refresh("e1", "f3", "u1", 1_000))
        .await
        .unwrap();
    let r = store
        .rotate_refresh("e1".into(), refresh("e2", "", "", 10_000), 1_000)
        .await
        .unwrap();
    assert_eq!(r, Rotation::Rejected, "expired");
    assert!(store.purge_refresh(5_000).await.unwrap() >= 1);

    // Keys: the newest unrotated is active; rotated ones carry their retirement.
    let k1 = SigningKey::generate(1_000);
    store.add_key(k1.to_stored(), 1_000).await.unwrap();
    let k2 = SigningKey::generate(2_000);
    store.add_key(k2.to_stored(), 9_000).await.unwrap();
    let keys = store.keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (keys[0].kid.as_str(), keys[0].rotated_ms),
        (k2.kid.as_str(), None)
    );
    assert_eq!(
        (keys[1].rotated_ms, keys[1].retire_after_ms),
        (Some(2_000), Some(9_000))
    );
    assert_eq!(SigningKey::from_stored(&keys[1]).unwrap().public, k1.public);

    // Throttling: consecutive failures within the window, locks, clearing.
    let key = "account:a@x.io".to_owned();
    assert_eq!(
        store.record_failure(key.clone(), 1_000, 500).await.unwrap(),
        1
    );
    assert_eq!(
        store.record_failure(key.clone(), 1_400, 500).await.unwrap(),
        2
    );
    assert_eq!(
        store.record_failure(key.clone(), 2_000, 500).await.unwrap(),
        1,
        "older than the window"
    );
    assert_eq!(
        store.locked_until(vec![key.clone()], 2_000).await.unwrap(),
        None
    );
    store.lock(key.clone(), 9_000).await.unwrap();
    store.lock(key.clone(), 5_000).await.unwrap();
    assert_eq!(
        store
            .locked_until(vec!["address:1.2.3.4".into(), key.clone()], 2_000)
            .await
            .unwrap(),
        Some(9_000),
        "a lock never shrinks"
    );
    assert_eq!(
        store.record_failure(key.clone(), 8_000, 500).await.unwrap(),
        2,
        "a locked key keeps counting"
    );
    store.clear_failures(key.clone()).await.unwrap();
    assert_eq!(store.locked_until(vec![key], 2_000).await.unwrap(), None);
    store.ping().await.unwrap();
}

#[tokio::test]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/auth.db", dir.path().display());
    conformance(open(&url, "X").await.unwrap()).await;
}

#[tokio::test]
async fn postgres_conforms() {
    let Some(db) = TestDatabase::create(Server::Postgres).await else {
        return;
    };
    conformance(open(&db.url, "X").await.unwrap()).await;
    db.drop_database().await;
}

#[derive(Debug, Clone)]
enum Op {
    /// Present the i-th token ever issued (modulo how many there are).
    Refresh(usize),
    /// Log out with the i-th token.
    Logout(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..8).prop_map(Op::Refresh),
        (0usize..8).prop_map(Op::Logout)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any sequence of refreshes and logouts on one family, against the real SQLite
    /// store: a token yields a successor at most once, a family never has two live
    /// tokens, and once a spent token is replayed or the family logs out nothing in it
    /// works again.
    #[test]
    fn a_refresh_family_never_forks_and_stays_dead(ops in proptest::collection::vec(op(), 1..12)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}/auth.db", dir.path().display());
            let store = open(&url, "X").await.unwrap();
            let mut issued = vec!["t0".to_owned()];
            store.issue_refresh(refresh("t0", "f", "u", i64::MAX)).await.unwrap();
            let mut spent = std::collections::HashSet::new();
            let mut dead = false;
            for (step, op) in ops.into_iter().enumerate() {
                let now = i64::try_from(step).unwrap() + 1;
                match op {
                    Op::Refresh(i) => {
                        let token = issued[i % issued.len()].clone();
                        let next = format!("t{}", issued.len());
                        let r = store
                            .rotate_refresh(token.clone(), refresh(&next, "", "", i64::MAX), now)
                            .await
                            .unwrap();
                        let live = issued.last() == Some(&token) && !dead;
                        match r {
                            Rotation::Rotated { .. } => {
                                assert!(live, "only the live token rotates");
                                assert!(spent.insert(token));
                                issued.push(next);
                            }
                            Rotation::Reused => {
                                assert!(spent.contains(&token) && !dead);
                                dead = true;
                            }
                            Rotation::Rejected => {
                                let replayed = spent.contains(&token) && !dead;
                                assert!(!live, "the live token rotates");
                                assert!(!replayed, "a replay revokes");
                            }
                        }
                    }
                    Op::Logout(i) => {
                        let token = issued[i % issued.len()].clone();
                        store.revoke_family(token, now).await.unwrap();
                        dead = true;
                    }
                }
            }
            if dead {
                let last = issued.last().unwrap().clone();
                let r = store
                    .rotate_refresh(last, refresh("final", "", "", i64::MAX), i64::MAX - 1)
                    .await
                    .unwrap();
                assert_eq!(r, Rotation::Rejected);
            }
        });
    }
}
