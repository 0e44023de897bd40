//! Retransmission driven by STATUS messages (Castro's thesis §5.2).
//!
//! Every `status_interval` a replica multicasts what it has: its view, stable
//! checkpoint, last executed batch, and for each open sequence number whether it
//! holds the pre-prepare, is prepared, is committed; plus the large requests it
//! lacks. A peer answers by resending, unchanged, the messages the sender lacks:
//! the pre-prepare (its authenticator still holds a MAC for every replica), its
//! own PREPARE and COMMIT, its CHECKPOINTs, and request bodies. Answers to one
//! peer are rate-limited to one per half interval, so STATUS cannot be used to
//! amplify traffic.

use super::Replica;
use crate::effects::{Dest, Outbox};
use crate::metrics::DropReason;
use crate::service::Service;
use crate::types::{Digest, Instant, ReplicaId, SeqNo};
use crate::wire::{slot_flags, Message, Status};

/// Largest number of sequence numbers described in one STATUS.
const MAX_STATUS_SLOTS: u64 = 512;
/// Largest number of missing request digests listed in one STATUS.
const MAX_STATUS_MISSING: usize = 32;

impl<S: Service> Replica<S> {
    pub(super) fn send_status(&mut self, out: &mut Outbox) {
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.no_status {
            return;
        }
        let first_open = self.executed.tentative().unwrap_or(self.executed.next());
        let last = self.high_water_mark().0.min(first_open.0 + MAX_STATUS_SLOTS - 1);
        let mut slots = Vec::new();
        let mut missing = Vec::new();
        for seq in first_open.0..=last {
            let flags = match self.log.get(SeqNo(seq)) {
                None => 0,
                Some(s) => {
                    if let Some(b) = s.batch() {
                        // Bodies we lack, or could not authenticate (a genuine copy
                        // from a peer carries the client's MAC for us).
                        for e in b.requests().iter().filter(|e| e.body.is_none() || !e.authenticated) {
                            if missing.len() < MAX_STATUS_MISSING {
                                missing.push(e.digest);
                            }
                        }
                    }
                    let pre_prepared = s.batch().is_some_and(|b| !b.body_pending());
                    ((pre_prepared as u8) * slot_flags::PRE_PREPARED)
                        | ((s.prepared() as u8) * slot_flags::PREPARED)
                        | ((s.committed() as u8) * slot_flags::COMMITTED)
                }
            };
            slots.push(flags);
        }
        while slots.last() == Some(&0) {
            slots.pop();
        }
        let msg = Message::Status(Status {
            view: self.view(),
            view_active: self.view_active(),
            stable: self.log.low_water_mark(),
            first_open,
            last_executed: self.executed.last(),
            slots,
            missing_requests: missing,
        });
        self.multicast(&msg, out);
    }

    pub(super) fn on_status(&mut self, now: Instant, from: ReplicaId, s: Status, out: &mut Outbox) {
        // How far each peer got in which view: evidence, for the view-change
        // timer, that the primary works and this replica merely lags.
        if s.view_active {
            self.peers.note_progress(from, s.view, s.last_executed);
        }
        if !self.peers.may_answer_status(from, now, self.cfg.status_interval_us / 2) {
            return self.metrics.drop(DropReason::RateLimited);
        }
        // A peer behind our view, or still changing to it: what installed it.
        if self.view_active() && (s.view < self.view() || (s.view == self.view() && !s.view_active)) {
            return self.send_installed_view(from, out);
        }
        // A peer in our view, or one changing to a later view (it still
        // learns what commits in ours), gets what it lacks.
        let changing_past_us = s.view > self.view() && !s.view_active;
        if !self.view_active() || (s.view != self.view() && !changing_past_us) || (s.view == self.view() && !s.view_active) {
            return self.metrics.drop(DropReason::WrongView);
        }
        let to = Dest::Replica(from);
        let mut sent = 0u64;

        // Our checkpoints above the peer's stable one: those it has reached need
        // our vote to become stable; those beyond it tell a peer that fell
        // behind the garbage-collected log where to transfer state to. At most
        // L/K + 1 of them.
        for raw in self.checkpoints.mine_after(s.stable) {
            out.send(to, raw.clone());
            sent += 1;
        }

        // Protocol messages for the sequence numbers it has not finished. Its slot
        // list may be shorter than its window: an absent flag byte means "nothing".
        let first = s.first_open.0.max(self.log.low_water_mark().0 + 1);
        let last = self.high_water_mark().0.min(s.first_open.0.saturating_add(MAX_STATUS_SLOTS - 1));
        for seq in first..=last {
            let Some(slot) = self.log.get(SeqNo(seq)) else { continue };
            let flags = s.slots.get((seq - s.first_open.0) as usize).copied().unwrap_or(0);
            // The batch itself, even for a slot the peer committed: a NEW-VIEW
            // may have chosen it by digest, and the peer cannot execute it yet.
            if flags & slot_flags::PRE_PREPARED == 0 {
                if let Some(b) = slot.batch().filter(|b| !b.raw().is_empty()) {
                    out.send(to, b.raw().clone());
                    sent += 1;
                }
            }
            if flags & slot_flags::COMMITTED != 0 {
                continue;
            }
            if flags & slot_flags::PREPARED == 0 {
                if let Some(raw) = slot.my_prepare() {
                    out.send(to, raw.clone());
                    sent += 1;
                }
            }
            if let Some(raw) = slot.my_commit() {
                out.send(to, raw.clone());
                sent += 1;
            }
        }

        // Request bodies it lacks.
        for d in s.missing_requests.iter().take(MAX_STATUS_MISSING) {
            if let Some(raw) = self.find_request_raw(d) {
                out.send(to, raw);
                sent += 1;
            }
        }
        self.metrics.retransmitted += sent;
    }

    fn find_request_raw(&self, d: &Digest) -> Option<bytes::Bytes> {
        if let Some((_, raw)) = self.requests.body(d) {
            return Some(raw.clone());
        }
        self.log.slots().filter_map(|(_, s)| s.batch()).flat_map(|b| b.requests().iter()).find_map(|e| {
            (e.digest == *d).then(|| e.body.as_ref().map(|(_, raw)| raw.clone())).flatten()
        })
    }
}
