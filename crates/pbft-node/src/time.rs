//! The host's clock and timers.
//!
//! The core's [`pbft::Instant`] is microseconds on an epoch the host chooses.
//! Replicas in different processes compare times (a backup checks the primary's
//! non-deterministic time against its own clock), so every process uses the same
//! epoch: the UNIX epoch, read once at start, advanced by the monotonic clock so
//! that time never runs backwards within a process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pbft::{Instant, Timer};

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

/// The deadlines of a node's timers. A node has only a handful of timer kinds,
/// so a small vector beats any map.
#[derive(Clone, Debug, Default)]
pub struct Timers {
    deadlines: Vec<(Timer, Instant)>,
}

impl Timers {
    /// Sets (or moves) `timer` to fire at `at`.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        match self.deadlines.iter_mut().find(|(t, _)| *t == timer) {
            Some(entry) => entry.1 = at,
            None => self.deadlines.push((timer, at)),
        }
    }

    /// Cancels `timer` if it is set.
    pub fn cancel(&mut self, timer: Timer) {
        self.deadlines.retain(|(t, _)| *t != timer);
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().map(|(_, at)| *at).min()
    }

    /// Removes and returns a timer due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let i = self.deadlines.iter().position(|(_, at)| *at <= now)?;
        Some(self.deadlines.swap_remove(i).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_once_and_can_be_moved_or_cancelled() {
        let mut t = Timers::default();
        t.set(Timer::Status, Instant(100));
        t.set(Timer::ClientRetransmit, Instant(50));
        t.set(Timer::ClientRetransmit, Instant(200));
        assert_eq!(t.next(), Some(Instant(100)));
        assert_eq!(t.pop_due(Instant(99)), None);
        assert_eq!(t.pop_due(Instant(150)), Some(Timer::Status));
        assert_eq!(t.pop_due(Instant(150)), None);
        t.cancel(Timer::ClientRetransmit);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn clock_is_near_the_wall_clock_and_monotonic() {
        let c = Clock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        assert!(a.as_us().abs_diff(unix_micros()) < 1_000_000);
    }
}
