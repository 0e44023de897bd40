//! How far a replica executed (TOCS 2002 §4.2, §5.1): the last batch, the
//! one executed tentatively if any, and the non-deterministic value of the
//! last batch (the next one's must not be lower).
//!
//! Invariants ([`Executed::check_invariants`]): batches execute in sequence
//! order, one at a time; at most one batch is tentative, and it is the last
//! executed. A state transfer or a restart moves execution to a checkpoint
//! ([`Executed::jump_to`]); undoing the tentative batch is the only step back.

use crate::types::SeqNo;

/// What a replica executed.
#[derive(Debug, Default)]
pub(super) struct Executed {
    last: SeqNo,
    /// The batch executed tentatively and not yet committed, if any.
    tentative: Option<SeqNo>,
    /// The non-deterministic value of the last executed batch (0 when unknown,
    /// after a state transfer).
    nondet_us: u64,
    /// `nondet_us` before the tentative batch, restored if a view change undoes it.
    nondet_before_tentative: u64,
    /// `last` at the previous status tick, to notice being stuck.
    last_at_tick: SeqNo,
    /// The state may not be one this replica ever certified (it was restored
    /// damaged from disk): nothing executes until a state transfer replaces it.
    awaits_trusted_state: bool,
}

impl Executed {
    /// The last batch executed (tentatively or for good).
    pub(super) fn last(&self) -> SeqNo {
        self.last
    }
    /// The next batch to execute.
    pub(super) fn next(&self) -> SeqNo {
        self.last.next()
    }
    pub(super) fn tentative(&self) -> Option<SeqNo> {
        self.tentative
    }
    pub(super) fn nondet_us(&self) -> u64 {
        self.nondet_us
    }

    /// Batch `n` executed, carrying `nondet_us` (`None` for the null batch,
    /// which carries no value); `tentative` if it has not committed.
    pub(super) fn executed(&mut self, n: SeqNo, nondet_us: Option<u64>, tentative: bool) {
        assert_eq!(n, self.last.next(), "batches execute in sequence order");
        assert!(self.tentative.is_none(), "one batch at a time is tentative");
        if tentative {
            self.tentative = Some(n);
            self.nondet_before_tentative = self.nondet_us;
        }
        self.last = n;
        if let Some(v) = nondet_us {
            self.nondet_us = v;
        }
    }

    /// The tentative batch committed.
    pub(super) fn commit_tentative(&mut self) -> Option<SeqNo> {
        self.tentative.take()
    }

    /// A view change undid the tentative batch: execution goes back to
    /// before it. Returns the batch undone.
    pub(super) fn undo_tentative(&mut self) -> Option<SeqNo> {
        let t = self.tentative.take()?;
        self.last = SeqNo(t.0 - 1);
        self.nondet_us = self.nondet_before_tentative;
        Some(t)
    }

    /// The state was rolled back to the last checkpoint for a transfer:
    /// nothing is tentative any more (execution resumes from the transferred state).
    pub(super) fn forget_tentative(&mut self) {
        self.tentative = None;
    }

    /// The state is now that of checkpoint `seq` (fetched, or restored from
    /// disk): execution continues after it, the last value unknown.
    pub(super) fn jump_to(&mut self, seq: SeqNo) {
        self.last = seq;
        self.last_at_tick = seq;
        self.tentative = None;
        self.nondet_us = 0;
        self.awaits_trusted_state = false;
    }

    /// The state was restored from disk but does not match its checkpoint:
    /// nothing executes until a transfer replaces it ([`Executed::jump_to`]).
    pub(super) fn distrust_state(&mut self) {
        self.awaits_trusted_state = true;
    }
    pub(super) fn awaits_trusted_state(&self) -> bool {
        self.awaits_trusted_state
    }

    /// At a status tick: whether anything executed since the previous one.
    pub(super) fn progressed_since_last_tick(&mut self) -> bool {
        let progressed = self.last != self.last_at_tick;
        self.last_at_tick = self.last;
        progressed
    }

    /// Checks the module's invariants.
    pub(super) fn check_invariants(&self) -> Result<(), String> {
        match self.tentative {
            Some(t) if t != self.last => {
                Err(format!("the tentative batch {} is not the last executed {}", t.0, self.last.0))
            }
            _ => Ok(()),
        }
    }
}
