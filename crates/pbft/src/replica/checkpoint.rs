//! Checkpoints and garbage collection (TOCS 2002 §4.3).
//!
//! After executing and committing a batch whose sequence number is a multiple of
//! K, a replica snapshots its state (copy-on-write, with the partition tree
//! updated incrementally) and multicasts CHECKPOINT(n, d). A checkpoint is stable
//! once this replica's own digest is matched by 2f+1 replicas (itself included):
//! then the log up to n is discarded and the water marks advance to (n, n + L].
//!
//! Votes are kept only for multiples of K inside the water marks and only one per
//! replica and sequence number, so a lying replica cannot grow the table.

use super::Replica;
use crate::effects::{Effect, Outbox};
use crate::metrics::DropReason;
use crate::service::Service;
use crate::tally::Inserted;
use crate::types::{Digest, ReplicaId, SeqNo};
use crate::wire::{Checkpoint, Message};

impl<S: Service> Replica<S> {
    pub(super) fn take_checkpoint(&mut self, n: SeqNo, out: &mut Outbox) {
        // Checkpoints are taken in execution order, each above the last
        // (a transfer or a restart moves execution past the last one).
        let digest = self.machine.state_mut().take_checkpoint(n).expect("checkpoints are taken at increasing sequence numbers");
        let msg = Message::Checkpoint(Checkpoint { seq: n, state_digest: digest });
        let raw = self.multicast(&msg, out);
        self.checkpoints.record_mine(n, digest, raw);
        self.check_stable(n, out);
    }

    pub(super) fn on_checkpoint(&mut self, from: ReplicaId, c: Checkpoint, out: &mut Outbox) {
        if !c.seq.0.is_multiple_of(self.cfg.checkpoint_interval) || c.seq.0 == 0 {
            return self.metrics.drop(DropReason::Invalid);
        }
        // Remember each replica's latest checkpoint, even beyond the window: it is
        // how a replica that fell behind learns where to transfer state to.
        self.checkpoints.note_latest(from, c.seq, c.state_digest);
        if c.seq > self.high_water_mark() {
            self.transfer_if_far_behind(out);
        }
        self.retarget_if_discarded(out);
        let ours = self.checkpoints.mine(c.seq).is_some();
        // Votes for a checkpoint this replica went past without taking (it
        // transferred state beyond it) are of no use.
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.low_water_mark_moves_back && c.seq == self.log.low_water_mark() {
            self.log.bug_move_back(self.cfg.checkpoint_interval);
        }
        let skipped = c.seq < self.executed.last() && !ours;
        if c.seq <= self.log.low_water_mark() || skipped || (!self.in_window(c.seq) && !ours) {
            return self.metrics.drop(DropReason::OutOfWindow);
        }
        if self.checkpoints.add_vote(from, c.seq, c.state_digest) != Inserted::New {
            return self.metrics.drop(DropReason::Duplicate);
        }
        self.commit_by_checkpoint(c.seq, out);
        self.check_stable(c.seq, out);
    }

    /// A batch executed tentatively whose commits were lost and garbage collected
    /// by the others would never commit here. f+1 matching CHECKPOINTs for its
    /// sequence number prove that a correct replica executed it committed, and
    /// prepared certificates are unique per sequence number, so it committed.
    fn commit_by_checkpoint(&mut self, n: SeqNo, out: &mut Outbox) {
        if self.executed.tentative() == Some(n) && self.checkpoint_proves_commit(n) {
            self.try_execute(out);
        }
    }

    /// Whether f+1 replicas announced the same checkpoint at `n`.
    pub(super) fn checkpoint_proves_commit(&self, n: SeqNo) -> bool {
        self.checkpoints.proves_commit(n, self.cfg.f)
    }

    pub(super) fn check_stable(&mut self, n: SeqNo, out: &mut Outbox) {
        if n <= self.log.low_water_mark() {
            return;
        }
        if let Some(digest) = self.checkpoints.certified_mine(n, self.cfg.f) {
            self.make_stable(n, digest, out);
        }
    }

    fn make_stable(&mut self, n: SeqNo, digest: Digest, out: &mut Outbox) {
        assert!(n <= self.executed.last(), "a stable checkpoint is one this replica took");
        self.log.advance_to(n);
        self.record_view_state();
        self.checkpoints.discard_below(n);
        self.machine.state_mut().discard_checkpoints_before(n);
        self.metrics.checkpoints_stable += 1;
        out.push(Effect::StableCheckpoint { seq: n, digest });
        // Batches the current view chose beyond the old window enter it now.
        let entering: Vec<SeqNo> =
            self.vc_choices_in_window().into_iter().filter(|s| self.log.batch(*s).is_none()).collect();
        for seq in entering {
            self.adopt_choice(seq);
            self.advance_slot(seq, out);
        }
        self.try_send_batches_after_execution(out);
    }
}
