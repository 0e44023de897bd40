//! The invariants the papers' proofs rely on, checked after every input
//! (STYLE.md rule 15, after TigerBeetle's `invariants()`).
//!
//! Each part checks its own (`Log::check_invariants`,
//! `Checkpoints::check_invariants`, ...); this module checks
//! those that span parts, and those that compare one input with the next
//! (the [`Witness`]): the low water mark never moves back, and a batch that
//! committed at a sequence number is never replaced by another there.
//!
//! They run after every input in debug builds and with the `invariants`
//! feature (the simulator and the fuzzers turn it on for release builds too).
//! A violation panics, naming the invariant, the replica and the input, so a
//! simulator run stops at the step that broke it.

use std::collections::BTreeMap;

use super::Replica;
use crate::service::Service;
use crate::types::{Digest, SeqNo};

/// What the checks remember from one input to the next.
#[derive(Debug, Default)]
pub(super) struct Witness {
    low_water_mark: SeqNo,
    /// The batch that committed at each sequence number above h.
    committed: BTreeMap<SeqNo, Digest>,
}

/// Whether the invariants run after every input.
pub const INVARIANTS_CHECKED: bool = cfg!(any(debug_assertions, feature = "invariants"));

impl<S: Service> Replica<S> {
    /// Checks every invariant after an input; panics on a violation.
    pub(super) fn after_input(&mut self, input: &str) {
        if !INVARIANTS_CHECKED {
            return;
        }
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.unchecked_invariants {
            return;
        }
        if let Err(e) = self.check_invariants() {
            panic!("invariant violated at replica {} after input {input} at t={}us: {e}", self.id.0, self.timers.now().as_us());
        }
        self.update_witness();
    }

    /// Checks the replica's invariants: each part's, those across parts, and
    /// those against the previous input. `Err` names the one that fails.
    pub fn check_invariants(&self) -> Result<(), String> {
        let (f, n) = (self.cfg.f, self.cfg.n());
        let h = self.log.low_water_mark();
        if h < self.witness.low_water_mark {
            return Err(format!("the low water mark moved back from {} to {}", self.witness.low_water_mark.0, h.0));
        }
        for (seq, digest) in self.witness.committed.range(h.next()..) {
            if let Some(b) = self.log.batch(*seq) {
                if b.digest() != *digest {
                    return Err(format!("the batch committed at {} ({digest:?}) was replaced by {:?}", seq.0, b.digest()));
                }
            }
        }
        self.log.check_invariants(f, n).map_err(|e| format!("log: {e}"))?;
        self.checkpoints
            .check_invariants(h, self.cfg.checkpoint_interval, self.cfg.log_window, f)
            .map_err(|e| format!("checkpoints: {e}"))?;
        if h > SeqNo(0) {
            let (ours, state) = (self.checkpoints.mine(h), self.machine.state().checkpoint_digest(h));
            if state.is_some() && ours != state {
                return Err(format!("the stable checkpoint {}'s digest is not the state's", h.0));
            }
        }
        self.requests.check_invariants().map_err(|e| format!("request pool: {e}"))?;
        self.check_execution()
    }

    /// Execution: at most one batch is tentative, and it is the last executed
    /// (with an undo mark to undo it); nothing executed lies below h; the
    /// primary never proposes at a number it executed.
    fn check_execution(&self) -> Result<(), String> {
        self.executed.check_invariants().map_err(|e| format!("execution: {e}"))?;
        if let Some(t) = self.executed.tentative() {
            if !self.machine.state().has_undo_mark() {
                return Err(format!("the tentative batch {} cannot be undone: no undo mark", t.0));
            }
        }
        if self.executed.last() < self.log.low_water_mark() {
            return Err(format!(
                "last executed {} is below the stable checkpoint {}",
                self.executed.last().0,
                self.log.low_water_mark().0
            ));
        }
        let next = self.proposer.next_seq();
        if self.is_primary() && self.view_active() && next <= self.executed.last() {
            return Err(format!("next sequence number {} is not above last executed {}", next.0, self.executed.last().0));
        }
        Ok(())
    }

    fn update_witness(&mut self) {
        let h = self.log.low_water_mark();
        self.witness.low_water_mark = h;
        // A slot the log discarded (below h, replaced by a fetched state, or
        // dropped by a new view) is no longer watched.
        let log = &self.log;
        self.witness.committed.retain(|seq, _| *seq > h && log.get(*seq).is_some());
        for (seq, slot) in self.log.range(h.next()) {
            if let Some(b) = slot.batch().filter(|_| slot.committed()) {
                self.witness.committed.insert(seq, b.digest());
            }
        }
    }
}
