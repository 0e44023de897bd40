//! Installing a new view (TOCS 2002 §4.5.2): what happens once a NEW-VIEW is
//! sent or accepted, and the batches it chose by digest.
//!
//! - A tentative execution the decision did not keep is undone.
//! - A replica behind the chosen checkpoint fetches its state.
//! - The log becomes the chosen batches, re-proposed in the new view (a
//!   replica that lacks one waits for its body, which STATUS brings and which
//!   is accepted from anyone because its digest vouches for it); nothing above
//!   them that has not executed survives.
//! - The new primary continues after them and proposes the requests that
//!   waited.
//!
//! The same by-digest path serves a backup that an equivocating primary sent a
//! batch other than the one 2f+1 COMMITs certify.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::view_change::{null_batch_digest, Installed};
use super::Replica;
use crate::auth::Vouched;
use crate::journal::Entry;
use crate::effects::{Effect, Outbox, Received, Timer};
use crate::metrics::DropReason;
use crate::service::Service;
use crate::types::{Digest, ReplicaId, SeqNo, View};
use crate::view_change::{Choice, NewViewDecision};
use crate::wire::{self, Message, NewView};

impl<S: Service> Replica<S> {
    pub(super) fn install(&mut self, nv: NewView, raw: Bytes, decision: NewViewDecision, out: &mut Outbox) {
        let v = nv.view;
        let view_changes: Vec<Bytes> = nv
            .view_changes
            .iter()
            .filter_map(|(j, d)| self.trusted_view_change(v, *j, *d).map(|s| s.raw.clone()))
            .collect();
        let sources: Vec<ReplicaId> = nv
            .view_changes
            .iter()
            .filter(|(j, d)| {
                self.trusted_view_change(v, *j, *d).is_some_and(|s| s.msg.checkpoints.contains(&decision.checkpoint))
            })
            .map(|(j, _)| *j)
            .filter(|j| *j != self.id)
            .collect();
        self.view_changes.install_view(v);
        self.log.record_view(Entry::NewViewInstalled { raw: raw.clone(), view_changes: view_changes.clone() });
        self.view_changes.forget_below(View(v.0 + 1));
        self.view_changes.installed = Some(Installed { new_view: nv, raw, view_changes });
        self.view_changes.pending = None;
        self.timers.cancel(Timer::ViewChange);
        self.metrics.views_installed += 1;

        let (h_new, d_new) = decision.checkpoint;
        let null = null_batch_digest();
        let choices: BTreeMap<SeqNo, Digest> = decision
            .choices
            .iter()
            .map(|(n, c)| (*n, if let Choice::Request(d) = c { *d } else { null }))
            .collect();
        let last_chosen = choices.keys().next_back().copied().unwrap_or(h_new).max(h_new);

        // A tentative execution the new view does not keep is undone. At or
        // below the chosen checkpoint it committed somewhere: it stays.
        if let Some(t) = self.executed.tentative() {
            let executed = self.log.batch(t).map(|b| b.digest());
            if t > h_new && choices.get(&t) != executed.as_ref() {
                self.undo_tentative(t, out);
            }
        }
        if h_new > self.executed.last() && !sources.is_empty() {
            self.start_transfer(h_new, d_new, sources, out);
        }

        // The log: the chosen batches, re-proposed in this view, and nothing
        // above them that has not executed.
        self.log.discard_above(last_chosen.max(self.executed.last()));
        let floor = self.log.low_water_mark().max(h_new);
        self.view_changes.choices = choices.into_iter().filter(|(n, _)| *n > floor).collect();
        let adopt: Vec<SeqNo> = self.view_changes.choices.keys().copied().filter(|n| self.in_window(*n)).collect();
        for n in &adopt {
            self.adopt_choice(*n);
        }

        if self.is_primary() {
            self.become_primary(last_chosen);
        }
        out.push(Effect::ViewInstalled { view: v });
        for n in adopt {
            self.advance_slot(n, out);
        }
        if self.waiting_for_execution() {
            self.start_view_change_timer();
        }
        self.try_send_batches(self.timers.now(), out);
        self.try_execute(out);
    }

    /// Re-proposes the chosen batch at `n` in the current view: reuses the
    /// body this replica holds when its digest matches, else waits for it.
    pub(super) fn adopt_choice(&mut self, n: SeqNo) {
        let Some(d) = self.view_changes.choices.get(&n).copied() else { return };
        let executed = n <= self.executed.last();
        let view = self.view();
        self.log.repropose(n, view, d, executed);
    }

    /// The new primary continues after the last chosen batch, with a
    /// non-deterministic value no lower than any it may follow, and proposes
    /// the requests that waited for a working primary.
    fn become_primary(&mut self, last_chosen: SeqNo) {
        let mut floor = self.proposer.last_nondet_us().max(self.executed.nondet_us());
        let mut proposed = BTreeSet::new();
        for (_, slot) in self.log.slots() {
            if let Some(b) = slot.batch() {
                floor = floor.max(b.nondet_time_us());
                for e in b.requests() {
                    proposed.insert(e.digest);
                    if let Some((r, _)) = &e.body {
                        self.requests.note_ordered(r.client, r.timestamp);
                    }
                }
            }
        }
        self.proposer.take_over(last_chosen.max(self.executed.last()).next(), floor);
        let mut waiting: Vec<(crate::wire::Request, Bytes)> = self
            .requests
            .bodies()
            .filter(|(d, (r, _))| !proposed.contains(*d) && r.timestamp > self.last_timestamp(r.client))
            .map(|(_, body)| body.clone())
            .collect();
        waiting.sort_by_key(|(r, _)| (r.client, r.timestamp));
        for (req, raw) in waiting {
            self.enqueue(req, raw);
        }
    }

    /// Undoes the tentative execution of batch `t`: pages, reply table and
    /// the non-deterministic value go back to before it; its requests are
    /// pending again.
    fn undo_tentative(&mut self, t: SeqNo, out: &mut Outbox) {
        // A tentative batch always has an undo mark (an invariant checked after every input).
        assert!(self.machine.undo(), "the tentative batch {} has no undo mark", t.0);
        self.executed.undo_tentative();
        let bodies: Vec<(crate::wire::Request, Bytes)> =
            self.log.batch(t).map(|b| b.requests().iter().filter_map(|e| e.body.clone()).collect()).unwrap_or_default();
        for (req, raw) in bodies {
            self.remember_request(&req, req.digest(), &raw);
        }
        self.metrics.rollbacks += 1;
        out.push(Effect::RolledBack { seq: t });
    }

    /// Sequence numbers the current view chose that lie in the window.
    pub(super) fn vc_choices_in_window(&self) -> Vec<SeqNo> {
        self.view_changes.choices.keys().copied().filter(|n| self.in_window(*n)).collect()
    }

    // ----- batches chosen by digest -----

    /// Whether slot `seq` waits for the body of a batch known by digest only:
    /// one a NEW-VIEW chose, or one 2f+1 COMMITs certify.
    pub(super) fn wants_batch(&self, seq: SeqNo) -> bool {
        self.log.batch(seq).is_some_and(|b| b.body_pending())
    }

    /// A batch that 2f+1 replicas committed (2f+1 matching COMMITs: f+1
    /// correct replicas prepared it, so every later view keeps it) is
    /// committed here too, whatever view this replica is in. If this replica
    /// holds no batch or another one at that number (it missed the
    /// pre-prepare, an equivocating primary lied to it, or it restarted
    /// without its log: a restarted primary would not even accept its own
    /// pre-prepare relayed back), it takes the certified one by digest, its
    /// body to come through STATUS, and as primary it will not propose at that
    /// number again.
    pub(super) fn adopt_certified_batch(&mut self, seq: SeqNo) {
        let certified = match self.log.get(seq) {
            Some(s) if s.commit_voters() >= self.cfg.quorum() && !s.committed() => self.certified_batch(seq),
            _ => None,
        };
        let Some((view, digest)) = certified else { return };
        self.log.adopt_certified(seq, view, digest);
        self.proposer.skip_past(seq);
    }

    /// The batch 2f+1 replicas committed at `seq` in one view (2f+1 matching
    /// COMMITs), if any.
    pub(super) fn certified_batch(&self, seq: SeqNo) -> Option<(View, Digest)> {
        self.log.get(seq)?.certified_batch(self.cfg.f)
    }

    /// Accepts a pre-prepare (of any view, from anyone) as the body of the
    /// batch chosen at its sequence number if its digest matches.
    pub(super) fn fill_chosen_batch(&mut self, env: wire::Envelope, out: &mut Outbox) -> Received {
        let Message::PrePrepare(p) = env.message else { return Received::Dropped(DropReason::Invalid) };
        let Some((entries, digest)) = self.batch_entries(&p) else { return Received::Dropped(DropReason::Invalid) };
        let chosen = self.log.batch(p.seq).map(|b| b.digest());
        let Some(vouched) = Vouched::by_digest(p, env.raw, digest, |d| chosen == Some(*d)) else {
            return Received::Dropped(DropReason::Invalid);
        };
        let (p, raw, _) = vouched.into_parts();
        let unauthenticated: Vec<Digest> = entries.iter().filter(|e| !e.authenticated).map(|e| e.digest).collect();
        if self.log.get(p.seq).is_some() {
            self.log.fill_batch(p.seq, entries, p.nondet_time_us, raw);
        }
        for d in unauthenticated {
            self.log.await_body(d, p.seq);
        }
        self.advance_slot(p.seq, out);
        Received::Vouched
    }
}
