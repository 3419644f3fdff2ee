//! Time is read through one [`Clock`] so that tests move time instead of sleeping (reminder
//! intervals of hours must run in milliseconds under test).
use std::{
    fmt::Debug,
    sync::atomic::{AtomicI64, Ordering},
};

/// Milliseconds since the Unix epoch, UTC. Every stored time uses this unit.
pub type Millis = i64;

pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> Millis;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        let now = time::OffsetDateTime::now_utc();
        (now.unix_timestamp_nanos() / 1_000_000) as Millis
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        Self(AtomicI64::new(start))
    }

    pub fn advance(&self, by_ms: i64) {
        self.0.fetch_add(by_ms, Ordering::SeqCst);
    }

    pub fn set(&self, at: Millis) {
        self.0.store(at, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 rendering for logs and CLI output.
pub fn rfc3339(at: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now(), 1_000);
        clock.advance(4 * 3_600_000);
        assert_eq!(clock.now(), 1_000 + 4 * 3_600_000);
        clock.set(5);
        assert_eq!(clock.now(), 5);
    }

    #[test]
    fn rfc3339_renders_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
