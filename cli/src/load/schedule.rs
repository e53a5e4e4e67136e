//! The arrival schedule: when each arrival is due, fixed before the run starts.
//!
//! The generator is open-loop: arrival `n` is due at `n / rate` seconds whatever the
//! system did with the earlier ones, and its latency is measured from that instant. A
//! closed loop (send, wait, send again) slows down with the system under test and so
//! hides exactly the stalls it should show (coordinated omission).

use std::time::Duration;

/// A constant arrival rate over a fixed duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
    duration: Duration,
}

impl Schedule {
    /// `rate` arrivals per second for `duration`; the rate must be positive and finite.
    pub fn new(rate: f64, duration: Duration) -> Result<Self, String> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("--rate must be a positive number, not {rate}"));
        }
        if duration.is_zero() {
            return Err("--duration must be longer than zero".into());
        }
        Ok(Self { rate, duration })
    }

    /// Arrivals per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How long arrivals are issued for.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// How many arrivals the run has: those due strictly before the end.
    pub fn len(&self) -> u64 {
        let exact = self.rate * self.duration.as_secs_f64();
        // `n / rate < duration` for n = 0 .. len; an exact product lands on the end.
        let n = exact.ceil() as u64;
        if n == 0 { 1 } else { n }
    }

    /// When arrival `n` is due, from the start of the run.
    pub fn due(&self, n: u64) -> Duration {
        Duration::from_secs_f64(n as f64 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_evenly_spaced_from_zero() {
        let s = Schedule::new(4.0, Duration::from_secs(2)).unwrap();
        assert_eq!(s.len(), 8);
        let due: Vec<_> = (0..s.len()).map(|n| s.due(n).as_millis()).collect();
        assert_eq!(due, [0, 250, 500, 750, 1000, 1250, 1500, 1750]);
    }

    #[test]
    fn the_last_arrival_is_due_before_the_end() {
        for (rate, secs) in [(3.0, 1.0), (0.5, 3.0), (1000.0, 0.25), (7.3, 11.0)] {
            let s = Schedule::new(rate, Duration::from_secs_f64(secs)).unwrap();
            assert!(s.due(s.len() - 1) < s.duration(), "{rate}/s for {secs}s");
            assert!(s.due(s.len()) >= s.duration(), "{rate}/s for {secs}s");
        }
    }

    #[test]
    fn a_rate_slower_than_the_run_still_sends_one() {
        let s = Schedule::new(0.1, Duration::from_secs(1)).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.due(0), Duration::ZERO);
    }

    #[test]
    fn nonsense_rates_and_durations_are_refused() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                Schedule::new(rate, Duration::from_secs(1)).is_err(),
                "{rate}"
            );
        }
        assert!(Schedule::new(1.0, Duration::ZERO).is_err());
    }
}
