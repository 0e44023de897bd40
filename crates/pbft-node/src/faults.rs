//! Fault injection in the transport: drop, duplicate, delay or reorder a
//! fraction of outgoing datagrams, from a seeded random stream.
//!
//! This machine's kernel has no netem, so tests with real processes inject
//! network faults here. It is off unless configured; when on, every outgoing
//! datagram passes [`FaultInjector::on_send`], which says what to send now, and
//! [`FaultInjector::release_due`] hands back what was held until later.
//!
//! Invariant: the queue of held datagrams is bounded ([`MAX_HELD`]); what would
//! exceed it is dropped and counted, never allowed to grow.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use pbft::Instant;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::error::NodeError;

/// Most datagrams held back (delayed or reordered) at once.
pub const MAX_HELD: usize = 4096;

/// What to do to outgoing datagrams. Each fraction is a probability in [0, 1],
/// drawn independently per datagram in the order drop, duplicate, delay,
/// reorder.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Fraction of datagrams never sent.
    pub drop: f64,
    /// Fraction sent twice.
    pub duplicate: f64,
    /// Fraction held for a random time up to `max_delay_us`.
    pub delay: f64,
    /// Upper bound of an injected delay.
    pub max_delay_us: u64,
    /// Fraction held until the next datagram has gone (so they swap places), or
    /// for at most `max_delay_us`.
    pub reorder: f64,
    /// Seed of the random stream: a run's faults depend on it and on the traffic.
    pub seed: u64,
}

impl FaultConfig {
    /// Whether any fault is configured.
    pub fn is_active(&self) -> bool {
        self.drop > 0.0 || self.duplicate > 0.0 || self.delay > 0.0 || self.reorder > 0.0
    }

    /// Checks that every fraction is a probability.
    pub fn validate(&self) -> Result<(), NodeError> {
        for (name, p) in
            [("drop", self.drop), ("duplicate", self.duplicate), ("delay", self.delay), ("reorder", self.reorder)]
        {
            if !(0.0..=1.0).contains(&p) {
                return Err(NodeError::Faults(format!("{name} must be a fraction in [0, 1], not {p}")));
            }
        }
        if (self.delay > 0.0 || self.reorder > 0.0) && self.max_delay_us == 0 {
            return Err(NodeError::Faults("delay and reorder need a positive maximum delay".into()));
        }
        Ok(())
    }
}

/// Counts of the faults injected so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub reordered: u64,
    /// Datagrams dropped because the held queue was full.
    pub overflowed: u64,
}

/// A datagram and where it goes.
pub type Datagram = (SocketAddr, Bytes);

/// The fault layer of one transport.
#[derive(Debug)]
pub struct FaultInjector {
    cfg: FaultConfig,
    rng: ChaCha8Rng,
    /// Held datagrams by (release time, arrival order).
    held: BTreeMap<(Instant, u64), Datagram>,
    /// Keys in `held` of reordered datagrams, released after the next send.
    reordered: Vec<(Instant, u64)>,
    counter: u64,
    stats: FaultStats,
}

impl FaultInjector {
    /// An injector for a validated configuration.
    pub fn new(cfg: FaultConfig) -> Result<FaultInjector, NodeError> {
        cfg.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Ok(FaultInjector {
            cfg,
            rng,
            held: BTreeMap::new(),
            reordered: Vec::new(),
            counter: 0,
            stats: FaultStats::default(),
        })
    }

    /// Faults injected so far.
    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    fn chance(&mut self, p: f64) -> bool {
        // 53 random bits give a uniform float in [0, 1).
        p > 0.0 && ((self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn hold(&mut self, at: Instant, d: Datagram) -> Option<(Instant, u64)> {
        if self.held.len() >= MAX_HELD {
            self.stats.overflowed += 1;
            return None;
        }
        self.counter += 1;
        let key = (at, self.counter);
        self.held.insert(key, d);
        Some(key)
    }

    /// Decides the fate of one outgoing datagram; appends to `now_out` what is to
    /// be sent at once (possibly nothing, possibly two copies, possibly datagrams
    /// reordered behind this one).
    pub fn on_send(&mut self, now: Instant, d: Datagram, now_out: &mut Vec<Datagram>) {
        if self.chance(self.cfg.drop) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.chance(self.cfg.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let released: Vec<(Instant, u64)> = std::mem::take(&mut self.reordered);
        for _ in 0..copies {
            if self.chance(self.cfg.delay) {
                self.stats.delayed += 1;
                let us = self.rng.next_u64() % self.cfg.max_delay_us.max(1);
                self.hold(now.plus_us(us), d.clone());
            } else if self.chance(self.cfg.reorder) {
                self.stats.reordered += 1;
                if let Some(key) = self.hold(now.plus_us(self.cfg.max_delay_us), d.clone()) {
                    self.reordered.push(key);
                }
            } else {
                now_out.push(d.clone());
            }
        }
        // Datagrams held for reordering go out after this one.
        for key in released {
            if let Some(held) = self.held.remove(&key) {
                now_out.push(held);
            }
        }
    }

    /// When the next held datagram is due.
    pub fn next_release(&self) -> Option<Instant> {
        self.held.keys().next().map(|(at, _)| *at)
    }

    /// Appends the held datagrams due at `now` to `out`.
    pub fn release_due(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = *entry.key();
            out.push(entry.remove());
            self.reordered.retain(|k| *k != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().expect("addr")
    }

    fn run(cfg: FaultConfig, n: u64) -> (FaultInjector, Vec<Datagram>) {
        let mut f = FaultInjector::new(cfg).expect("valid");
        let mut out = Vec::new();
        for i in 0..n {
            f.on_send(Instant(i), (addr(), Bytes::from(i.to_le_bytes().to_vec())), &mut out);
        }
        f.release_due(Instant(u64::MAX), &mut out);
        (f, out)
    }

    #[test]
    fn off_sends_everything_in_order() {
        let (_, out) = run(FaultConfig::default(), 100);
        assert_eq!(out.len(), 100);
        assert!(out.windows(2).all(|w| w[0].1 < w[1].1));
    }

    #[test]
    fn fractions_are_roughly_respected_and_seeded() {
        let cfg = FaultConfig { drop: 0.1, duplicate: 0.1, seed: 7, ..Default::default() };
        let (f, out) = run(cfg.clone(), 10_000);
        let s = f.stats();
        assert!((800..1200).contains(&s.dropped), "{s:?}");
        assert!((700..1100).contains(&s.duplicated), "{s:?}");
        assert_eq!(out.len() as u64, 10_000 - s.dropped + s.duplicated);
        let (g, _) = run(cfg, 10_000);
        assert_eq!(g.stats(), s, "same seed, same faults");
    }

    #[test]
    fn delay_and_reorder_hold_datagrams_but_lose_none() {
        let cfg = FaultConfig { delay: 0.2, reorder: 0.2, max_delay_us: 50, seed: 1, ..Default::default() };
        let (f, out) = run(cfg, 1000);
        assert!(f.stats().delayed > 100 && f.stats().reordered > 100, "{:?}", f.stats());
        assert_eq!(out.len(), 1000);
        assert!(out.windows(2).any(|w| w[0].1 > w[1].1), "something was reordered");
        assert!(f.next_release().is_none());
    }

    #[test]
    fn bad_fractions_are_refused() {
        assert!(FaultInjector::new(FaultConfig { drop: 1.5, ..Default::default() }).is_err());
        assert!(FaultInjector::new(FaultConfig { delay: 0.5, ..Default::default() }).is_err());
    }
}
