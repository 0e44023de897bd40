//! The normal-case protocol (TOCS 2002 §4.2): PRE-PREPARE, PREPARE, COMMIT.
//!
//! A batch is *prepared* at a replica once it holds the pre-prepare and 2f
//! matching PREPAREs from distinct backups; it is *committed* once, in addition,
//! it holds 2f+1 matching COMMITs from distinct replicas (its own included).
//!
//! A backup sends PREPARE once it has validated the batch itself: every request
//! present and carrying a valid client MAC for it, and the primary's
//! non-deterministic value within its clock bound. A backup that cannot validate
//! (a client gave it a bad MAC, or its clock is skewed) still follows the batch
//! once f+1 replicas have prepared it, since at least one of them is correct and
//! validated it; it still needs every request body to execute.

use bytes::Bytes;

use super::log::{Batch, BatchRequest};
use super::Replica;
use crate::effects::Outbox;
use crate::metrics::DropReason;
use crate::service::Service;
use crate::tally::Inserted;
use crate::types::{Digest, Instant, ReplicaId, SeqNo, View};
use crate::wire::{self, BatchEntry, Commit, Message, PrePrepare, Prepare};

/// The digest of a batch: its non-deterministic value and its requests' digests.
/// It leaves out the view, so a batch keeps its digest across views.
pub fn batch_digest(nondet_time_us: u64, requests: impl Iterator<Item = Digest>) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"pbft-batch");
    h.update(&nondet_time_us.to_le_bytes());
    for d in requests {
        h.update(&d.0);
    }
    Digest(*h.finalize().as_bytes())
}

impl<S: Service> Replica<S> {
    /// Multicasts a pre-prepare for `entries` (the primary only) and accepts it locally.
    pub(super) fn send_pre_prepare(&mut self, now: Instant, entries: Vec<BatchRequest>, inline: Vec<BatchEntry>, out: &mut Outbox) {
        let (seq, nondet_time_us) = self.proposer.propose(now.as_us());
        let digest = batch_digest(nondet_time_us, entries.iter().map(|e| e.digest));
        let msg = Message::PrePrepare(PrePrepare { view: self.view(), seq, nondet_time_us, entries: inline });
        let raw = self.multicast(&msg, out);
        let batch = Batch::pre_prepared(self.view(), digest, nondet_time_us, raw, entries, true);
        self.log.accept_batch(seq, batch);
        self.advance_slot(seq, out);
    }

    pub(super) fn on_pre_prepare(&mut self, now: Instant, from: ReplicaId, p: PrePrepare, raw: Bytes, out: &mut Outbox) {
        let passive = self.learns_from_old_view(p.view);
        if (p.view != self.view() || !self.view_active()) && !passive {
            return self.metrics.drop(DropReason::WrongView);
        }
        if from != p.view.primary(self.cfg.n()) || from == self.id {
            return self.metrics.drop(DropReason::WrongRole);
        }
        if !self.in_window(p.seq) {
            return self.metrics.drop(DropReason::OutOfWindow);
        }
        let Some((entries, digest)) = self.batch_entries(&p) else { return self.metrics.drop(DropReason::Invalid) };
        let nondet_ok = self.check_nondet(now, p.seq, p.nondet_time_us);
        if let Some(existing) = self.log.batch(p.seq) {
            let reason = if existing.view() == p.view && existing.digest() == digest {
                DropReason::Duplicate
            } else {
                DropReason::Conflicting
            };
            return self.metrics.drop(reason);
        }
        let unauthenticated: Vec<Digest> = entries.iter().filter(|e| !e.authenticated).map(|e| e.digest).collect();
        self.log.accept_batch(p.seq, Batch::pre_prepared(p.view, digest, p.nondet_time_us, raw, entries, nondet_ok));
        for d in unauthenticated {
            self.log.await_body(d, p.seq);
        }
        self.advance_slot(p.seq, out);
    }

    /// Checks the primary's non-deterministic value (its clock): not ahead of
    /// this replica's clock by more than the bound, and not before the previous
    /// batch's value when that is known. The papers also bound how far behind
    /// the clock it may be; a backup that receives a pre-prepare late, through
    /// retransmission, could never pass that check, so it is left out: the
    /// value is still bounded by the batches around it.
    fn check_nondet(&self, now: Instant, seq: SeqNo, nondet_time_us: u64) -> bool {
        let previous = if seq == self.executed.next() {
            Some(self.executed.nondet_us())
        } else {
            self.log.batch(SeqNo(seq.0 - 1)).map(|b| b.nondet_time_us())
        };
        nondet_time_us <= now.as_us().saturating_add(self.cfg.nondet_skew_us)
            && previous.is_none_or(|p| nondet_time_us >= p)
    }

    /// The entries of a received pre-prepare as log entries, with the batch
    /// digest. `None` when the batch is too long or an entry is malformed: a
    /// correct primary never sends one.
    pub(super) fn batch_entries(&self, p: &PrePrepare) -> Option<(Vec<BatchRequest>, Digest)> {
        if p.entries.len() > self.cfg.max_batch_requests {
            return None;
        }
        let entries = p.entries.iter().map(|e| self.batch_entry(e)).collect::<Option<Vec<BatchRequest>>>()?;
        let digest = batch_digest(p.nondet_time_us, entries.iter().map(|e| e.digest));
        Some((entries, digest))
    }

    /// Turns one entry of a received pre-prepare into a log entry. `None` when the
    /// entry is malformed: a correct primary never sends one.
    fn batch_entry(&self, e: &BatchEntry) -> Option<BatchRequest> {
        match e {
            BatchEntry::Inline(bytes) => {
                let env = wire::decode(bytes.clone(), self.cfg.max_message_bytes).ok()?;
                let Message::Request(req) = &env.message else { return None };
                if req.op.len() > self.cfg.max_op_bytes || !self.cfg.is_client(req.client) {
                    return None;
                }
                let req = req.clone();
                let authenticated = self.keys.verify(env).is_ok();
                Some(BatchRequest { digest: req.digest(), body: Some((req, bytes.clone())), authenticated })
            }
            BatchEntry::ByDigest(d) => {
                let known = self.requests.body(d);
                Some(BatchRequest { digest: *d, authenticated: known.is_some(), body: known.cloned() })
            }
        }
    }

    pub(super) fn on_prepare(&mut self, from: ReplicaId, p: Prepare, out: &mut Outbox) {
        if p.view != self.view() || !self.view_active() {
            return self.metrics.drop(DropReason::WrongView);
        }
        if from == self.primary() {
            return self.metrics.drop(DropReason::WrongRole);
        }
        if !self.in_window(p.seq) {
            return self.metrics.drop(DropReason::OutOfWindow);
        }
        if self.log.add_vote(p.seq, false, from, p.view, p.digest) != Inserted::New {
            return self.metrics.drop(DropReason::Duplicate);
        }
        self.advance_slot(p.seq, out);
    }

    pub(super) fn on_commit(&mut self, from: ReplicaId, c: Commit, out: &mut Outbox) {
        if (c.view != self.view() || !self.view_active()) && !self.learns_from_old_view(c.view) {
            return self.metrics.drop(DropReason::WrongView);
        }
        if !self.in_window(c.seq) {
            return self.metrics.drop(DropReason::OutOfWindow);
        }
        if self.log.add_vote(c.seq, true, from, c.view, c.digest) != Inserted::New {
            return self.metrics.drop(DropReason::Duplicate);
        }
        self.advance_slot(c.seq, out);
    }

    /// Advances slot `seq` as far as its messages allow: send PREPARE, become
    /// prepared and send COMMIT, become committed; then execute what can be.
    pub(super) fn advance_slot(&mut self, seq: SeqNo, out: &mut Outbox) {
        let f = self.cfg.f;
        let is_primary = self.is_primary();
        self.adopt_certified_batch(seq);
        let Some(slot) = self.log.get(seq) else { return };
        let Some(batch) = slot.batch() else { return };
        let (view, digest) = (batch.view(), batch.digest());

        // PREPARE: a backup that validated the batch, or that f+1 replicas vouch
        // for, or that a NEW-VIEW chose.
        // Nothing advances outside the current, installed view (a batch that
        // already committed still executes). A replica changing view sends
        // nothing for the old view but still learns what commits there (see
        // adopt_certified_batch), which lets it answer clients (who need 2f+1
        // matching replies) while it waits for the others to change view too.
        if !self.view_active() || view != self.view() {
            return self.try_execute(out);
        }
        let vouched = slot.matching_prepares() > f;
        if !is_primary && slot.my_prepare().is_none() && (batch.validated() || vouched || batch.reproposed()) {
            let raw = self.multicast(&Message::Prepare(Prepare { view, seq, digest }), out);
            self.log.sent(seq, false, self.id, raw);
        }

        // A batch this replica knows committed without having sent its own
        // COMMIT in this view (committed in an earlier view and re-proposed by
        // a NEW-VIEW, or certified by 2f+1 COMMITs, one of them perhaps from
        // a faulty replica that lied to the others): it vouches with a COMMIT
        // at once. The others may need it to commit, and nothing would be
        // retransmitted to this replica for a slot it finished, so its own
        // prepared certificate might never form.
        let Some(slot) = self.log.get(seq) else { return };
        if slot.committed() && slot.my_commit().is_none() {
            let raw = self.multicast(&Message::Commit(Commit { view, seq, digest }), out);
            self.log.sent(seq, true, self.id, raw);
        }

        // Prepared: the pre-prepare and 2f matching prepares from distinct backups.
        // A backup's own prepare counts among the 2f; the primary sends none.
        let Some(slot) = self.log.get(seq) else { return };
        if !slot.prepared() && slot.matching_prepares() >= 2 * f {
            let raw = self.multicast(&Message::Commit(Commit { view, seq, digest }), out);
            self.log.mark_prepared(seq);
            self.log.sent(seq, true, self.id, raw);
        }

        let quorum = self.commit_quorum();
        let Some(slot) = self.log.get(seq) else { return };
        if slot.prepared() && !slot.committed() && slot.matching_commits() >= quorum {
            self.log.mark_committed(seq);
        }
        self.try_execute(out);
    }

    /// Whether messages of view `v` are learned from passively: this replica
    /// is changing from `v` (or an earlier view) to a later one.
    fn learns_from_old_view(&self, v: View) -> bool {
        !self.view_active() && v < self.view()
    }

    fn commit_quorum(&self) -> usize {
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.commit_quorum_2f {
            return 2 * self.cfg.f;
        }
        self.cfg.quorum()
    }
}
