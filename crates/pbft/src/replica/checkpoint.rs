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

use bytes::Bytes;

use super::{CheckpointVotes, Replica};
use crate::effects::{Effect, Outbox};
use crate::metrics::DropReason;
use crate::service::Service;
use crate::types::{Digest, ReplicaId, SeqNo};
use crate::wire::{Checkpoint, Message};

impl<S: Service> Replica<S> {
    pub(super) fn take_checkpoint(&mut self, n: SeqNo, out: &mut Outbox) {
        let digest = match self.state.take_checkpoint(n) {
            Ok(d) => d,
            Err(_) => return self.metrics.drop(DropReason::Invalid),
        };
        let msg = Message::Checkpoint(Checkpoint { seq: n, state_digest: digest });
        let raw = self.multicast(&msg, out);
        self.checkpoints.entry(n).or_default().mine = Some((digest, raw));
        self.check_stable(n, out);
    }

    pub(super) fn on_checkpoint(&mut self, from: ReplicaId, c: Checkpoint, raw: Bytes, out: &mut Outbox) {
        if !c.seq.0.is_multiple_of(self.cfg.checkpoint_interval) || c.seq.0 == 0 {
            return self.metrics.drop(DropReason::Invalid);
        }
        // Remember each replica's latest checkpoint, even beyond the window: it is
        // how a replica that fell behind learns where to transfer state to.
        let latest = self.latest_checkpoint_votes.entry(from).or_insert((c.seq, c.state_digest));
        if c.seq > latest.0 {
            *latest = (c.seq, c.state_digest);
        }
        if c.seq.0 > self.low_water_mark.0 + self.cfg.log_window {
            self.transfer_if_far_behind(out);
        }
        let ours = self.checkpoints.get(&c.seq).is_some_and(|v| v.mine.is_some());
        // Votes for a checkpoint this replica went past without taking (it
        // transferred state beyond it) are of no use.
        let skipped = c.seq < self.last_executed && !ours;
        if c.seq <= self.low_water_mark || skipped || (!self.in_window(c.seq) && !ours) {
            return self.metrics.drop(DropReason::OutOfWindow);
        }
        let votes = self.checkpoints.entry(c.seq).or_default();
        if votes.votes.contains_key(&from) {
            return self.metrics.drop(DropReason::Duplicate);
        }
        votes.votes.insert(from, (c.state_digest, raw));
        self.commit_by_checkpoint(c.seq, out);
        self.check_stable(c.seq, out);
    }

    /// A batch executed tentatively whose commits were lost and garbage collected
    /// by the others would never commit here. f+1 matching CHECKPOINTs for its
    /// sequence number prove that a correct replica executed it committed, and
    /// prepared certificates are unique per sequence number, so it committed.
    fn commit_by_checkpoint(&mut self, n: SeqNo, out: &mut Outbox) {
        if self.tentative == Some(n) && self.checkpoint_proves_commit(n) {
            self.try_execute(out);
        }
    }

    /// Whether f+1 replicas announced the same checkpoint at `n`.
    pub(super) fn checkpoint_proves_commit(&self, n: SeqNo) -> bool {
        let Some(votes) = self.checkpoints.get(&n) else { return false };
        let mut tally: std::collections::BTreeMap<Digest, usize> = std::collections::BTreeMap::new();
        for (d, _) in votes.votes.values() {
            *tally.entry(*d).or_default() += 1;
        }
        tally.values().any(|c| *c > self.cfg.f)
    }

    pub(super) fn check_stable(&mut self, n: SeqNo, out: &mut Outbox) {
        if n <= self.low_water_mark {
            return;
        }
        let Some(CheckpointVotes { mine: Some((digest, _)), votes }) = self.checkpoints.get(&n) else { return };
        let matching = 1 + votes.values().filter(|(d, _)| d == digest).count();
        if matching >= self.cfg.quorum() {
            let digest = *digest;
            self.make_stable(n, digest, out);
        }
    }

    fn make_stable(&mut self, n: SeqNo, digest: Digest, out: &mut Outbox) {
        assert!(n > self.low_water_mark, "the low water mark never moves back");
        assert!(n <= self.last_executed, "a stable checkpoint is one this replica took");
        self.low_water_mark = n;
        self.log = self.log.split_off(&n.next());
        self.awaiting.retain(|(_, seq)| *seq > n);
        // Keep the stable checkpoint's own record: it proves the state to peers.
        self.checkpoints = self.checkpoints.split_off(&n);
        self.state.discard_checkpoints_before(n);
        self.metrics.checkpoints_stable += 1;
        out.push(Effect::StableCheckpoint { seq: n, digest });
        // Batches the current view chose beyond the old window enter it now.
        let entering: Vec<SeqNo> =
            self.vc_choices_in_window().into_iter().filter(|s| self.log.get(s).is_none_or(|s| s.batch.is_none())).collect();
        for seq in entering {
            self.adopt_choice(seq);
            self.check_progress(seq, out);
        }
        self.try_send_batches_after_execution(out);
    }
}
