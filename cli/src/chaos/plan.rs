//! What an experiment will do and when, decided before it starts: the experiments asked
//! for, the instants of their actions (drawn from a seeded generator, so a run can be
//! repeated with `--seed`), who may be struck, and how the load's errors are counted
//! against the error budget.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::RngExt;
use serde::Serialize;

use crate::services::NAMES;

/// One kind of experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Experiment {
    /// SIGKILL an instance of a random (or `--service`) service every `--every`;
    /// `flotilla up` restarts it.
    Kill,
    /// Inject aborts or latency into a random (or `--service`) service every `--every`,
    /// each for `--fault-for`, through its admin API.
    Fault,
    /// SIGKILL the embedded bus once, halfway through the run.
    BusRestart,
    /// Restart one of the real servers (PostgreSQL, MariaDB, Redis, NATS, etcd) every
    /// `--every`: needs the infra profile.
    StoreRestart,
    /// Cut one service (`--caller`, else a random one) off from every other service for
    /// `--fault-for`, every `--every`: through the fault layer, not the network.
    Partition,
}

impl Experiment {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::Kill => "kill",
            Experiment::Fault => "fault",
            Experiment::BusRestart => "bus-restart",
            Experiment::StoreRestart => "store-restart",
            Experiment::Partition => "partition",
        }
    }
}

/// The services a random kill picks from: every business service and the registry
/// (clients keep the instances they last knew while it restarts). Not the gateway —
/// every request fails until it is back, which shows nothing but its restart time; name
/// it with `--service gateway` to see that — and not the bus, which `bus-restart` kills.
pub fn killable() -> Vec<&'static str> {
    NAMES
        .iter()
        .copied()
        .filter(|n| !matches!(*n, "gateway" | "bus"))
        .collect()
}

/// The services random faults and partitions pick from: the business services (a fault
/// in the gateway, registry or bus is a fault in every request).
pub fn faultable() -> Vec<&'static str> {
    NAMES
        .iter()
        .copied()
        .filter(|n| !matches!(*n, "gateway" | "bus" | "registry"))
        .collect()
}

/// A range of durations, `5s..10s`, or one duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub min: Duration,
    pub max: Duration,
}

impl std::str::FromStr for Interval {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parse = |t: &str| {
            humantime::parse_duration(t.trim()).map_err(|_| format!("{t:?} is not a duration"))
        };
        let (min, max) = match text.split_once("..") {
            Some((lo, hi)) => (parse(lo)?, parse(hi)?),
            None => {
                let d = parse(text)?;
                (d, d)
            }
        };
        if min.is_zero() || min > max {
            return Err(format!(
                "{text:?}: expected a duration like 5s or a range like 5s..10s, shortest first, longer than zero"
            ));
        }
        Ok(Self { min, max })
    }
}

impl Interval {
    /// A duration drawn uniformly from the range.
    pub fn draw(&self, rng: &mut impl rand::Rng) -> Duration {
        if self.min == self.max {
            return self.min;
        }
        let ms = rng.random_range(self.min.as_millis()..=self.max.as_millis());
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

/// A share of requests, `5%` or `5`, between 0 and 100.
pub fn percent(text: &str) -> Result<f64, String> {
    let n: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&n) {
        return Err(format!("{text:?} is not between 0% and 100%"));
    }
    Ok(n)
}

/// When each action of each experiment happens, from the start of the run, in order.
/// Repeating experiments act first one `every` after the start, then every `every`
/// until the end; `bus-restart` acts once, halfway.
pub fn schedule(
    experiments: &[Experiment],
    duration: Duration,
    every: Interval,
    rng: &mut impl rand::Rng,
) -> Vec<(Duration, Experiment)> {
    let mut actions = Vec::new();
    for &e in experiments {
        match e {
            Experiment::Kill
            | Experiment::Fault
            | Experiment::Partition
            | Experiment::StoreRestart => {
                let mut at = every.draw(rng);
                while at < duration {
                    actions.push((at, e));
                    at += every.draw(rng);
                }
            }
            Experiment::BusRestart => actions.push((duration / 2, e)),
        }
    }
    actions.sort();
    actions
}

/// Whether an error key of the load report (`503`, `timeout`, `429`, `in-flight limit`)
/// counts against the error budget: server errors and requests that got no answer.
/// `429` is the gateway's rate limit doing its job, and other `4xx` are the client's.
pub fn counts_against_budget(key: &str) -> bool {
    match key.parse::<u16>() {
        Ok(status) => status >= 500,
        Err(_) => true,
    }
}

/// Errors that count against the budget, and their share of all attempts (requests
/// answered or not, plus arrivals not sent for the in-flight limit), in percent.
pub fn budget_errors(errors: &BTreeMap<String, u64>, requests: u64, overflow: u64) -> (u64, f64) {
    let counted: u64 = errors
        .iter()
        .filter(|(k, _)| counts_against_budget(k))
        .map(|(_, n)| n)
        .sum();
    let attempts = requests + overflow;
    let share = if attempts == 0 {
        0.0
    } else {
        counted as f64 * 100.0 / attempts as f64
    };
    (counted, share)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn intervals_parse_as_ranges_or_single_durations() {
        let i: Interval = "5s..10s".parse().unwrap();
        assert_eq!(
            (i.min, i.max),
            (Duration::from_secs(5), Duration::from_secs(10))
        );
        let i: Interval = "750ms".parse().unwrap();
        assert_eq!((i.min, i.max), (Duration::from_millis(750), i.min));
        for bad in ["10s..5s", "0s", "soon", "5s..", "..5s"] {
            assert!(bad.parse::<Interval>().is_err(), "{bad}");
        }
    }

    #[test]
    fn percentages_take_a_sign_or_not() {
        assert_eq!(percent("5%"), Ok(5.0));
        assert_eq!(percent("0.5"), Ok(0.5));
        assert!(percent("101%").is_err());
        assert!(percent("-1").is_err());
        assert!(percent("lots").is_err());
    }

    #[test]
    fn actions_come_every_interval_until_the_end() {
        let every: Interval = "5s..10s".parse().unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let plan = schedule(
            &[Experiment::Kill],
            Duration::from_secs(60),
            every,
            &mut rng,
        );
        assert!(plan.len() >= 5 && plan.len() <= 12, "{plan:?}");
        let mut last = Duration::ZERO;
        for &(at, e) in &plan {
            assert_eq!(e, Experiment::Kill);
            let gap = at - last;
            assert!(gap >= every.min && gap <= every.max, "{plan:?}");
            assert!(at < Duration::from_secs(60));
            last = at;
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let every: Interval = "1s..3s".parse().unwrap();
        let both = [Experiment::Kill, Experiment::Fault];
        let plan = |seed| {
            schedule(
                &both,
                Duration::from_secs(30),
                every,
                &mut StdRng::seed_from_u64(seed),
            )
        };
        assert_eq!(plan(1), plan(1));
        assert_ne!(plan(1), plan(2));
        let p = plan(1);
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0), "in order: {p:?}");
        assert!(p.iter().any(|a| a.1 == Experiment::Kill));
        assert!(p.iter().any(|a| a.1 == Experiment::Fault));
    }

    #[test]
    fn the_bus_restarts_once_halfway() {
        let every: Interval = "5s".parse().unwrap();
        let plan = schedule(
            &[Experiment::BusRestart],
            Duration::from_secs(20),
            every,
            &mut StdRng::seed_from_u64(0),
        );
        assert_eq!(plan, [(Duration::from_secs(10), Experiment::BusRestart)]);
    }

    #[test]
    fn store_restarts_repeat_like_kills() {
        let every: Interval = "5s".parse().unwrap();
        let plan = schedule(
            &[Experiment::StoreRestart],
            Duration::from_secs(16),
            every,
            &mut StdRng::seed_from_u64(0),
        );
        let at: Vec<u64> = plan.iter().map(|(d, _)| d.as_secs()).collect();
        assert_eq!(at, [5, 10, 15]);
    }

    #[test]
    fn the_budget_counts_server_errors_and_no_answers_but_not_429() {
        let errors: BTreeMap<String, u64> = [
            ("429", 50),
            ("404", 1),
            ("502", 2),
            ("503", 3),
            ("timeout", 1),
            ("connection", 2),
            ("in-flight limit", 2),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
        let (n, share) = budget_errors(&errors, 198, 2);
        assert_eq!(n, 10);
        assert!((share - 5.0).abs() < 1e-9, "{share}");
        assert_eq!(budget_errors(&BTreeMap::new(), 0, 0), (0, 0.0));
    }

    #[test]
    fn the_gateway_and_bus_are_not_struck_at_random() {
        let kill = killable();
        assert!(!kill.contains(&"gateway") && !kill.contains(&"bus"));
        assert!(kill.contains(&"registry") && kill.contains(&"orders"));
        let fault = faultable();
        assert!(!fault.contains(&"registry") && fault.contains(&"payments"));
        assert_eq!(fault.len(), NAMES.len() - 3);
    }
}
