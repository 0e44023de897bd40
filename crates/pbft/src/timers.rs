//! The timers a node keeps for itself (STYLE.md rule 16, after quinn-proto):
//! the host asks when to wake the node ([`crate::Replica::poll_timeout`],
//! [`crate::Client::poll_timeout`]) and hands in the time
//! (`handle_timeout`); it keeps no timer table of its own.

use crate::effects::Timer;
use crate::types::Instant;

/// The time of the input a node is handling, and the deadlines of its
/// timers, one per kind. A node has only a handful of timer kinds, so a small
/// vector beats any map.
#[derive(Clone, Debug, Default)]
pub struct Timers {
    now: Instant,
    deadlines: Vec<(Timer, Instant)>,
}

impl Timers {
    /// The time the host handed in with the current input.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Records the time of a new input.
    pub fn advance(&mut self, now: Instant) {
        self.now = now;
    }

    /// Sets (or moves) `timer` to fire `us` microseconds after now.
    pub fn set_in(&mut self, timer: Timer, us: u64) {
        self.set(timer, self.now.plus_us(us));
    }

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

    /// Whether `timer` is set.
    pub fn is_set(&self, timer: Timer) -> bool {
        self.deadlines.iter().any(|(t, _)| *t == timer)
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().map(|(_, at)| *at).min()
    }

    /// Removes and returns the earliest timer due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let (i, _) = self.deadlines.iter().enumerate().filter(|(_, (_, at))| *at <= now).min_by_key(|(_, (t, at))| (*at, *t))?;
        Some(self.deadlines.swap_remove(i).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_once_in_deadline_order_and_can_be_moved_or_cancelled() {
        let mut t = Timers::default();
        t.set(Timer::Status, Instant(100));
        t.set(Timer::ClientRetransmit, Instant(50));
        t.set(Timer::ClientRetransmit, Instant(200));
        t.set(Timer::ViewChange, Instant(90));
        assert_eq!(t.next(), Some(Instant(90)));
        assert_eq!(t.pop_due(Instant(89)), None);
        assert_eq!(t.pop_due(Instant(150)), Some(Timer::ViewChange));
        assert_eq!(t.pop_due(Instant(150)), Some(Timer::Status));
        assert_eq!(t.pop_due(Instant(150)), None);
        assert!(t.is_set(Timer::ClientRetransmit));
        t.cancel(Timer::ClientRetransmit);
        assert!(!t.is_set(Timer::ClientRetransmit));
        assert_eq!(t.next(), None);
    }
}
