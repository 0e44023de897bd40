//! The host's clock. (Timers live in the core: hosts ask it when to wake.)
//!
//! The core's [`pbft::Instant`] is microseconds on an epoch the host chooses.
//! Replicas in different processes compare times (a backup checks the primary's
//! non-deterministic time against its own clock), so every process uses the same
//! epoch: the UNIX epoch, read once at start, advanced by the monotonic clock so
//! that time never runs backwards within a process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pbft::Instant;

/// Monotonic microseconds since the UNIX epoch.
#[derive(Clone, Debug)]
pub struct Clock {
    start: std::time::Instant,
    base_us: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock reading the wall clock once, now.
    pub fn new() -> Clock {
        Clock { start: std::time::Instant::now(), base_us: unix_micros() }
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        Instant(self.base_us + self.start.elapsed().as_micros() as u64)
    }

    /// How long from now until `at` (zero if it has passed).
    pub fn until(&self, at: Instant) -> Duration {
        Duration::from_micros(at.as_us().saturating_sub(self.now().as_us()))
    }
}

/// Microseconds since the UNIX epoch by the wall clock (0 if the clock is set
/// before 1970).
pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_near_the_wall_clock_and_monotonic() {
        let c = Clock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        assert!(a.as_us().abs_diff(unix_micros()) < 1_000_000);
    }
}
