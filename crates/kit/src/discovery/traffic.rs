//! Traffic rules: which version of a service a call goes to.
//!
//! A service's [`TrafficPolicy`] lives in the registry next to its instances, so the
//! gateway and every kit client route alike. It splits calls by weight between the
//! versions the instances register (`{"stable": 90, "canary": 10}`), lets a request
//! name its version in a header (`x-flotilla-version: canary`, for testers), and can
//! keep a user on one version (`sticky`). Versions that are not in a non-empty split
//! get no traffic unless a header asks for them; when no instance of any weighted
//! version is healthy, every healthy instance is used, so a rule never strands calls.

use std::collections::BTreeMap;

use rand::RngExt;
use serde::{Deserialize, Serialize};

/// The request header that names the version a call wants.
pub const VERSION_HEADER: &str = "x-flotilla-version";

/// Most versions one split may name.
pub const MAX_VERSIONS: usize = 16;

/// How calls to one service are spread over its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Weight per version; empty: every healthy instance alike.
    pub split: BTreeMap<String, u32>,
    /// The header that picks a version outright (default `x-flotilla-version`).
    pub header: String,
    /// Whether a call that carries a user id always goes to the same version (for the
    /// same split).
    pub sticky: bool,
}

impl Default for TrafficPolicy {
    fn default() -> Self {
        Self {
            split: BTreeMap::new(),
            header: VERSION_HEADER.to_owned(),
            sticky: false,
        }
    }
}

/// What a caller knows about one call that rules may route on.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteHint<'a> {
    /// The version the request's header names, if any.
    pub version: Option<&'a str>,
    /// The user the call is for, if known (for stickiness).
    pub user: Option<&'a str>,
}

impl TrafficPolicy {
    /// Why this policy cannot be applied, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.split.len() > MAX_VERSIONS {
            return Err(format!("a split names at most {MAX_VERSIONS} versions"));
        }
        for (version, weight) in &self.split {
            if !valid_version(version) {
                return Err(format!(
                    "version {version:?} must be 1-64 of A-Z, a-z, 0-9, '.', '-', '_' and '+'"
                ));
            }
            if *weight > 10_000 {
                return Err(format!("the weight of {version:?} exceeds 10000"));
            }
        }
        if !self.split.is_empty() && self.split.values().all(|w| *w == 0) {
            return Err("a split needs at least one version with a weight above 0".into());
        }
        if http::HeaderName::from_bytes(self.header.as_bytes()).is_err() {
            return Err(format!("{:?} is not a header name", self.header));
        }
        Ok(())
    }

    /// The version this call goes to, or `None` for "any healthy instance".
    /// `present` says whether a version has a healthy instance.
    /// A header-named version wins when it has an instance, inside the split or not.
    pub fn choose<'a>(
        &'a self,
        hint: RouteHint<'a>,
        present: impl Fn(&str) -> bool,
    ) -> Option<&'a str> {
        if let Some(wanted) = hint.version
            && present(wanted)
        {
            return Some(wanted);
        }
        let candidates: Vec<(&str, u32)> = self
            .split
            .iter()
            .filter(|(v, w)| **w > 0 && present(v))
            .map(|(v, w)| (v.as_str(), *w))
            .collect();
        let total: u64 = candidates.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let point = match hint.user.filter(|_| self.sticky) {
            Some(user) => fnv1a(user.as_bytes()) % total,
            None => rand::rng().random_range(0..total),
        };
        let mut upto = 0u64;
        for (version, weight) in candidates {
            upto += u64::from(weight);
            if point < upto {
                return Some(version);
            }
        }
        None
    }
}

/// Whether `v` is an acceptable version name.
pub fn valid_version(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

/// FNV-1a: a stable hash, the same in every process, for sticky routing.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pairs: &[(&str, u32)]) -> TrafficPolicy {
        TrafficPolicy {
            split: pairs.iter().map(|(v, w)| ((*v).to_owned(), *w)).collect(),
            ..TrafficPolicy::default()
        }
    }

    fn share(policy: &TrafficPolicy, version: &str, n: usize) -> f64 {
        let hits = (0..n)
            .filter(|_| policy.choose(RouteHint::default(), |_| true) == Some(version))
            .count();
        hits as f64 / n as f64
    }

    #[test]
    fn a_weighted_split_spreads_by_weight() {
        let p = split(&[("stable", 90), ("canary", 10)]);
        let canary = share(&p, "canary", 20_000);
        assert!((0.08..0.12).contains(&canary), "canary share {canary}");
    }

    #[test]
    fn a_header_wins_when_its_version_has_an_instance() {
        let p = split(&[("stable", 100), ("canary", 0)]);
        let hint = RouteHint {
            version: Some("canary"),
            user: None,
        };
        assert_eq!(p.choose(hint, |_| true), Some("canary"));
        // Not in the split at all: still honoured.
        let hint = RouteHint {
            version: Some("beta"),
            user: None,
        };
        assert_eq!(p.choose(hint, |_| true), Some("beta"));
        // No instance of it: the split decides.
        assert_eq!(p.choose(hint, |v| v != "beta"), Some("stable"));
    }

    #[test]
    fn a_sticky_user_stays_on_one_version_and_users_spread() {
        let p = TrafficPolicy {
            sticky: true,
            ..split(&[("stable", 50), ("canary", 50)])
        };
        let mut on_canary = 0;
        for u in 0..1000 {
            let user = format!("user-{u}");
            let hint = RouteHint {
                version: None,
                user: Some(&user),
            };
            let first = p.choose(hint, |_| true);
            for _ in 0..5 {
                assert_eq!(p.choose(hint, |_| true), first);
            }
            on_canary += usize::from(first == Some("canary"));
        }
        assert!((400..600).contains(&on_canary), "{on_canary} of 1000");
    }

    #[test]
    fn versions_without_instances_give_their_share_away_and_none_means_any() {
        let p = split(&[("stable", 90), ("canary", 10)]);
        for _ in 0..100 {
            assert_eq!(
                p.choose(RouteHint::default(), |v| v == "stable"),
                Some("stable")
            );
        }
        assert_eq!(p.choose(RouteHint::default(), |_| false), None);
        assert_eq!(
            TrafficPolicy::default().choose(RouteHint::default(), |_| true),
            None
        );
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(split(&[("stable", 90), ("canary", 10)]).validate().is_ok());
        assert!(
            split(&[("a", 0)])
                .validate()
                .unwrap_err()
                .contains("above 0")
        );
        assert!(
            split(&[("bad version", 1)])
                .validate()
                .unwrap_err()
                .contains("version")
        );
        assert!(
            split(&[("a", 10_001)])
                .validate()
                .unwrap_err()
                .contains("10000")
        );
        let bad_header = TrafficPolicy {
            header: "not a header".into(),
            ..TrafficPolicy::default()
        };
        assert!(bad_header.validate().unwrap_err().contains("header"));
    }
}
