//! How long to wait after consecutive failures: the one backoff rule of the server, used by the
//! outbox for a mail's next attempt after a transient failure, by the outbox sender's loop after
//! a failed step, and by the reply reader before it opens its source again.
//!
//! The wait's cap doubles with each failure up to a maximum, and the wait itself is drawn at
//! random below the cap (jitter): servers and workers that failed together (one SMTP outage
//! fails every queued mail at once) do not all come back at the same instant. A floor keeps a
//! retry from following its failure at once.
use std::time::Duration;

/// Exponential backoff with jitter; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The cap after the first failure; doubles with each further one.
    pub base_ms: i64,
    /// The largest cap.
    pub max_ms: i64,
    /// The shortest wait, or the cap when that is smaller.
    pub floor_ms: i64,
}

impl Backoff {
    /// The cap after `failures` consecutive failures: non-decreasing, at most `max_ms`, never
    /// overflowing however many failures are counted.
    pub fn cap_ms(&self, failures: i64) -> i64 {
        let base = self.base_ms.max(0);
        let max = self.max_ms.max(base);
        let doublings = (failures - 1).clamp(0, 62) as u32;
        base.saturating_mul(1_i64 << doublings).min(max)
    }

    /// The wait after `failures` consecutive failures, in ms: uniform in `[floor, cap]`, the
    /// floor being `floor_ms` or the cap when smaller.
    pub fn wait_ms(&self, failures: i64) -> i64 {
        let cap = self.cap_ms(failures);
        let floor = cap.min(self.floor_ms.max(0));
        rand::random_range(floor..=cap)
    }

    /// [`Backoff::wait_ms`] as a duration to sleep.
    pub fn wait(&self, failures: u32) -> Duration {
        Duration::from_millis(u64::try_from(self.wait_ms(i64::from(failures))).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: Backoff = Backoff {
        base_ms: 5_000,
        max_ms: 3_600_000,
        floor_ms: 1_000,
    };

    #[test]
    fn caps_double_and_stop_at_the_maximum() {
        let caps: Vec<i64> = (1..=14).map(|f| MAIL.cap_ms(f)).collect();
        assert_eq!(&caps[..4], &[5_000, 10_000, 20_000, 40_000]);
        assert!(caps.windows(2).all(|w| w[0] <= w[1]), "{caps:?}");
        assert_eq!(caps.last().copied(), Some(3_600_000));
        // No overflow however many failures are counted; none counted is the first cap.
        assert_eq!(MAIL.cap_ms(i64::MAX), 3_600_000);
        assert_eq!(MAIL.cap_ms(0), 5_000);
    }

    #[test]
    fn waits_spread_between_the_floor_and_the_cap() {
        for failures in 1..20 {
            let cap = MAIL.cap_ms(failures);
            let waits: Vec<i64> = (0..200).map(|_| MAIL.wait_ms(failures)).collect();
            assert!(
                waits.iter().all(|&w| (1_000..=cap).contains(&w)),
                "failure {failures}: {waits:?} outside [1000, {cap}]"
            );
            // Jitter, not a fixed delay: the values spread over the range.
            let (min, max) = (
                waits.iter().min().copied().unwrap_or_default(),
                waits.iter().max().copied().unwrap_or_default(),
            );
            assert!(
                max - min > (cap - 1_000) / 4,
                "failure {failures}: {min}..{max}"
            );
        }
    }

    #[test]
    fn a_cap_below_the_floor_is_the_wait() {
        let quick = Backoff {
            base_ms: 200,
            max_ms: 400,
            floor_ms: 1_000,
        };
        assert_eq!(quick.wait_ms(1), 200);
        assert_eq!(quick.wait(5), Duration::from_millis(400));
    }

    #[test]
    fn a_wait_as_a_duration_stays_within_its_bounds() {
        let reopen = Backoff {
            base_ms: 500,
            max_ms: 60_000,
            floor_ms: 500,
        };
        for failures in 1..30 {
            let wait = reopen.wait(failures);
            let cap = Duration::from_millis(reopen.cap_ms(i64::from(failures)) as u64);
            assert!(
                wait >= Duration::from_millis(500) && wait <= cap,
                "{failures}: {wait:?} vs {cap:?}"
            );
        }
        assert!(reopen.wait(u32::MAX) <= Duration::from_secs(60));
    }
}
