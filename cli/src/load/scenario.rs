//! What one arrival does: a scenario from the public API, picked from a weighted mix.

use std::fmt;
use std::str::FromStr;

/// One kind of visit to the shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// List the catalog, then look at one product: as a signed-in virtual user when
    /// there are any (so the gateway charges each user's bucket, as it would for
    /// shoppers on many addresses), else anonymously.
    Browse,
    /// Sign up a new account.
    Register,
    /// Log one of the virtual users in again (its tokens are replaced).
    Login,
    /// A virtual user places an order (approving or declining card) and reads it back.
    Order,
    /// A virtual user places an order and cancels it at once.
    Cancel,
    /// The administrator reads the analytics summary.
    Summary,
}

impl Scenario {
    /// Every scenario, in the order reports list them.
    pub const ALL: [Scenario; 6] = [
        Scenario::Browse,
        Scenario::Register,
        Scenario::Login,
        Scenario::Order,
        Scenario::Cancel,
        Scenario::Summary,
    ];

    /// The name `--scenario` takes.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Browse => "browse",
            Scenario::Register => "register",
            Scenario::Login => "login",
            Scenario::Order => "order",
            Scenario::Cancel => "cancel",
            Scenario::Summary => "summary",
        }
    }

    /// Whether it cannot run without the pre-registered virtual users.
    pub fn needs_users(self) -> bool {
        matches!(self, Scenario::Login | Scenario::Order | Scenario::Cancel)
    }

    /// Whether it acts as a virtual user when there are any.
    pub fn uses_users(self) -> bool {
        self == Scenario::Browse || self.needs_users()
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Scenario::ALL.iter().map(|c| c.name()).collect();
                format!("unknown scenario {s:?} (one of {})", names.join(", "))
            })
    }
}

/// Scenarios with weights: `order` alone, or `browse=6,order=3,cancel=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Scenario, u32)>,
    total: u32,
}

/// The mix `flotilla load` runs without `--scenario`: mostly browsing, a third ordering,
/// a little of everything else (register and login are few because each one hashes a
/// password with Argon2id, and the gateway allows anonymous clients only 5 auth calls/s).
pub const DEFAULT_MIX: &str = "browse=60,order=25,cancel=5,login=3,register=3,summary=4";

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights: Vec<(Scenario, u32)> = Vec::new();
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(format!("empty entry in scenario mix {s:?}"));
            }
            let (name, weight) = match part.split_once('=') {
                Some((name, w)) => {
                    let w = w.trim().parse::<u32>().map_err(|_| {
                        format!(
                            "the weight of {:?} must be a whole number, not {w:?}",
                            name.trim()
                        )
                    })?;
                    (name.trim(), w)
                }
                None => (part, 1),
            };
            let scenario: Scenario = name.parse()?;
            if weights.iter().any(|(c, _)| *c == scenario) {
                return Err(format!("scenario {name:?} is named twice"));
            }
            weights.push((scenario, weight));
        }
        let total = weights
            .iter()
            .try_fold(0u32, |sum, (_, w)| sum.checked_add(*w))
            .ok_or("the scenario weights add up to too much")?;
        if total == 0 {
            return Err(format!("scenario mix {s:?} has no positive weight"));
        }
        weights.retain(|(_, w)| *w > 0);
        Ok(Self { weights, total })
    }
}

impl Mix {
    /// The sum of the weights: [`Mix::pick`] takes a number below it.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The scenario that `ticket` (uniform in `0..total`) lands on.
    pub fn pick(&self, ticket: u32) -> Scenario {
        let mut left = ticket % self.total;
        for &(scenario, weight) in &self.weights {
            if left < weight {
                return scenario;
            }
            left -= weight;
        }
        unreachable!("ticket below the total lands on a weight")
    }

    /// Whether the mix runs `scenario` at all.
    pub fn has(&self, scenario: Scenario) -> bool {
        self.weights.iter().any(|(c, _)| *c == scenario)
    }

    /// Whether some scenario cannot run without virtual users.
    pub fn needs_users(&self) -> bool {
        self.weights.iter().any(|(c, _)| c.needs_users())
    }

    /// Whether some scenario acts as a virtual user when there are any.
    pub fn uses_users(&self) -> bool {
        self.weights.iter().any(|(c, _)| c.uses_users())
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<_> = self
            .weights
            .iter()
            .map(|(c, w)| format!("{c}={w}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Test cards from the public API, with how often orders use each: most approve.
pub const CARDS: [(&str, u32); 3] = [
    ("4242424242424242", 85), // approves
    ("4000000000000002", 10), // declined
    ("4000000000009995", 5),  // declined: insufficient funds
];

/// The card that `ticket` (uniform in `0..100`) lands on.
pub fn card(ticket: u32) -> &'static str {
    let mut left = ticket % 100;
    for (number, weight) in CARDS {
        if left < weight {
            return number;
        }
        left -= weight;
    }
    CARDS[0].0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(mix: &Mix) -> Vec<(Scenario, u32)> {
        let mut out: Vec<(Scenario, u32)> = Vec::new();
        for t in 0..mix.total() {
            let c = mix.pick(t);
            match out.iter_mut().find(|(s, _)| *s == c) {
                Some((_, n)) => *n += 1,
                None => out.push((c, 1)),
            }
        }
        out
    }

    #[test]
    fn weights_set_the_share_of_each_scenario() {
        let mix: Mix = "browse=6, order=3,cancel=1".parse().unwrap();
        assert_eq!(mix.total(), 10);
        assert_eq!(
            counts(&mix),
            [
                (Scenario::Browse, 6),
                (Scenario::Order, 3),
                (Scenario::Cancel, 1)
            ]
        );
        assert_eq!(mix.to_string(), "browse=6,order=3,cancel=1");
    }

    #[test]
    fn a_bare_name_runs_only_that_scenario() {
        let mix: Mix = "order".parse().unwrap();
        assert_eq!(counts(&mix), [(Scenario::Order, 1)]);
        assert!(mix.needs_users());
        let browse: Mix = "browse".parse().unwrap();
        assert!(!browse.needs_users() && browse.uses_users());
        assert!(!"register,summary".parse::<Mix>().unwrap().uses_users());
    }

    #[test]
    fn zero_weights_drop_out() {
        let mix: Mix = "browse=0,summary=2".parse().unwrap();
        assert!(!mix.has(Scenario::Browse));
        assert_eq!(counts(&mix), [(Scenario::Summary, 2)]);
    }

    #[test]
    fn the_default_mix_parses() {
        let mix: Mix = DEFAULT_MIX.parse().unwrap();
        assert_eq!(mix.total(), 100);
        assert!(Scenario::ALL.iter().all(|&s| mix.has(s)));
    }

    #[test]
    fn bad_mixes_say_what_is_wrong() {
        for (text, says) in [
            ("shop=1", "unknown scenario"),
            ("browse=x", "whole number"),
            ("browse=-1", "whole number"),
            ("browse=1,browse=2", "twice"),
            ("browse=0", "no positive weight"),
            ("browse,,order", "empty entry"),
            ("browse=4294967295,order=1", "too much"),
        ] {
            let err = text.parse::<Mix>().unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn cards_mostly_approve() {
        let approving = (0..100).filter(|&t| card(t) == "4242424242424242").count();
        assert_eq!(approving, 85);
        assert_eq!(card(99), "4000000000009995");
    }
}
