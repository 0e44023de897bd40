//! What the primary proposes next (TOCS 2002 §4.2, §4.4): the next sequence
//! number it assigns and the non-deterministic value (its clock) it last
//! proposed, kept monotonic so that backups can check the next one.
//!
//! Invariant: a replica never assigns a sequence number twice, nor one that
//! another batch took (one certified by 2f+1 COMMITs, one a NEW-VIEW chose,
//! one reached by a state transfer): [`Proposer::skip_past`] moves past it.

use crate::types::SeqNo;

/// The primary's proposal state (kept by every replica: any may become primary).
#[derive(Debug)]
pub(super) struct Proposer {
    next_seq: SeqNo,
    last_nondet_us: u64,
}

impl Proposer {
    /// A proposer that continues after `executed`.
    pub(super) fn after(executed: SeqNo) -> Proposer {
        Proposer { next_seq: executed.next(), last_nondet_us: 0 }
    }

    /// The next sequence number this replica would assign.
    pub(super) fn next_seq(&self) -> SeqNo {
        self.next_seq
    }

    /// Assigns the next sequence number to a batch proposed at local time
    /// `now_us`, with a non-deterministic value never below the last one.
    pub(super) fn propose(&mut self, now_us: u64) -> (SeqNo, u64) {
        let seq = self.next_seq;
        self.next_seq = seq.next();
        self.last_nondet_us = now_us.max(self.last_nondet_us);
        (seq, self.last_nondet_us)
    }

    /// Batches up to `seq` are taken: never propose at or below it.
    pub(super) fn skip_past(&mut self, seq: SeqNo) {
        if self.next_seq <= seq {
            self.next_seq = seq.next();
        }
    }

    /// Becoming primary of a new view: continue at `next`, with values no
    /// lower than `nondet_floor` (any batch this one may follow).
    pub(super) fn take_over(&mut self, next: SeqNo, nondet_floor: u64) {
        self.next_seq = next;
        self.last_nondet_us = self.last_nondet_us.max(nondet_floor);
    }

    pub(super) fn last_nondet_us(&self) -> u64 {
        self.last_nondet_us
    }
}
