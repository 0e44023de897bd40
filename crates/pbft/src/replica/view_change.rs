//! View changes with MAC authenticators only (TOCS 2002 §4.5, Castro's thesis
//! ch. 3): VIEW-CHANGE, VIEW-CHANGE-ACK, NEW-VIEW and the view-change timer.
//!
//! - A backup that waits longer than its timeout for a request to execute
//!   (or for its tentative execution to commit) moves to view v+1: it stops
//!   accepting normal-case messages and multicasts VIEW-CHANGE(v+1, h, C, P,
//!   Q). Once it holds 2f+1 VIEW-CHANGE messages for v+1 it restarts its
//!   timer; if v+1 does not install in time it moves to v+2 with twice the
//!   timeout. A replica alone in a view change therefore waits for the others
//!   instead of running ahead of them. A replica also joins a view change
//!   once f+1 others ask for a view above its own.
//! - Every replica that receives a VIEW-CHANGE multicasts an ack naming its
//!   sender and digest. The new primary admits a VIEW-CHANGE into its set once
//!   2f-1 replicas other than itself and the sender acked it; with 2f+1
//!   admitted messages on which the decision procedure (`view_change::decide`)
//!   succeeds, it multicasts NEW-VIEW(v+1, V), V listing (sender, digest).
//! - A backup checks NEW-VIEW by running the same procedure on the messages V
//!   names. It needs each message's body: its own copy (MAC checked), or a
//!   relayed copy with that digest that f+1 replicas other than the sender
//!   acked, so at least one correct replica received it from its sender.
//! - Installing the view (`new_view.rs`): a tentative execution the decision did not keep is
//!   undone; the log becomes the chosen batches (in the new view, prepared
//!   again by every replica); batches chosen by digest that a replica lacks are
//!   fetched through STATUS and accepted by digest; a replica behind the chosen
//!   checkpoint fetches its state.
//!
//! Departure from the papers (docs/decisions.md): acks are multicast rather
//! than sent to the new primary alone, so that backups can vouch for relayed
//! view-change messages without a separate fetch protocol. It costs O(n^3)
//! small messages per view change, which happens rarely.
//!
//! Bounds: messages are kept only for views in (v, v + MAX_VIEWS_AHEAD] (and v
//! itself while changing to it), one VIEW-CHANGE and one ack per sender, view
//! and subject.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::log::MAX_Q_PER_SEQ;
use super::Replica;
use crate::auth::{Audience, Vouched};
use crate::journal::Entry;
use crate::effects::{Dest, Outbox, Timer};
use crate::metrics::DropReason;
use crate::service::Service;
use crate::tally::{Inserted, Tally};
use crate::types::{Digest, NodeId, ReplicaId, SeqNo, View};
use crate::view_change::{decide, NewViewDecision, Undecided, ViewChangeInfo};
use crate::wire::{self, Message, NewView, Request, VcEntry, ViewChange, ViewChangeAck, MAX_VC_CHECKPOINTS};

/// Views ahead of the current one for which messages are kept.
const MAX_VIEWS_AHEAD: u64 = 16;
/// The view-change timeout stops doubling at this many times the configured one.
const MAX_TIMEOUT_FACTOR: u64 = 64;
/// Timeouts a lagging backup lets pass before it blames the primary anyway.
const MAX_DEFERRALS: u32 = 4;

/// A VIEW-CHANGE message kept for a view change.
#[derive(Clone, Debug)]
pub(super) struct StoredVc {
    pub(super) msg: ViewChange,
    pub(super) digest: Digest,
    pub(super) raw: Bytes,
}

/// What the current view was installed from, to pass on to replicas that
/// missed it.
#[derive(Clone, Debug)]
pub(super) struct Installed {
    pub(super) new_view: NewView,
    pub(super) raw: Bytes,
    pub(super) view_changes: Vec<Bytes>,
}

/// The view-change state of a replica: its view, whether that view is
/// installed, and what it gathered to change views.
#[derive(Debug)]
pub(super) struct ViewChanges {
    /// The current view, or the one this replica is changing to.
    view: View,
    /// False from sending a VIEW-CHANGE for `view` until its NEW-VIEW installs:
    /// meanwhile no normal-case message is sent or accepted.
    active: bool,
    /// VIEW-CHANGE messages whose MAC this replica checked, by (view, sender).
    pub(super) msgs: BTreeMap<(View, ReplicaId), StoredVc>,
    /// VIEW-CHANGE messages a pending NEW-VIEW names, received relayed or
    /// with a MAC that did not check for us: trusted once f+1 acks vouch.
    pub(super) relayed: BTreeMap<(View, ReplicaId), StoredVc>,
    /// acks[(view, sender of the VIEW-CHANGE)]: each acker's digest.
    pub(super) acks: BTreeMap<(View, ReplicaId), Tally<Digest>>,
    /// A NEW-VIEW waiting for the VIEW-CHANGE messages it names.
    pub(super) pending: Option<(NewView, Bytes)>,
    pub(super) installed: Option<Installed>,
    /// The choices of the installed view, for sequence numbers that enter the
    /// window only later (this replica was behind the chosen checkpoint).
    pub(super) choices: BTreeMap<SeqNo, Digest>,
    /// The current timeout (doubled by each view that fails to install).
    pub(super) timeout_us: u64,
    /// Timeouts let pass since the last execution because this replica lagged.
    pub(super) deferrals: u32,
}

impl ViewChanges {
    pub(super) fn new(timeout_us: u64) -> ViewChanges {
        ViewChanges {
            view: View(0),
            active: true,
            msgs: BTreeMap::new(),
            relayed: BTreeMap::new(),
            acks: BTreeMap::new(),
            pending: None,
            installed: None,
            choices: BTreeMap::new(),
            timeout_us,
            deferrals: 0,
        }
    }

    pub(super) fn view(&self) -> View {
        self.view
    }
    pub(super) fn active(&self) -> bool {
        self.active
    }

    /// Leaves the current view for `v`, not yet installed.
    pub(super) fn leave_for(&mut self, v: View) {
        assert!(v > self.view || (v == self.view && self.active), "views only move forward");
        self.view = v;
        self.active = false;
    }

    /// View `v` is installed.
    pub(super) fn install_view(&mut self, v: View) {
        assert!(v >= self.view, "views only move forward");
        self.view = v;
        self.active = true;
    }

    /// Forgets everything about views below `v`.
    pub(super) fn forget_below(&mut self, v: View) {
        self.msgs.retain(|(w, _), _| *w >= v);
        self.relayed.retain(|(w, _), _| *w >= v);
        self.acks.retain(|(w, _), _| *w >= v);
    }
}

/// The digest that names a VIEW-CHANGE in acks and NEW-VIEW: that of its
/// authenticated part (sender and body), as every receiver computes it.
pub fn view_change_digest(sender: ReplicaId, vc: &ViewChange) -> Digest {
    let (buf, len) = wire::encode_unauthenticated(NodeId::Replica(sender), &Message::ViewChange(vc.clone()), 0);
    Digest::of(&buf[..len])
}

/// The batch digest that stands for the null request.
pub fn null_batch_digest() -> Digest {
    super::normal_case::batch_digest(0, std::iter::empty())
}

fn info(replica: ReplicaId, vc: &ViewChange) -> ViewChangeInfo {
    ViewChangeInfo {
        replica,
        stable: vc.stable,
        checkpoints: vc.checkpoints.clone(),
        prepared: vc.prepared.clone(),
        pre_prepared: vc.pre_prepared.clone(),
    }
}

impl<S: Service> Replica<S> {
    // ----- the timer -----

    /// A backup that holds a request not yet executed starts the timer, unless
    /// it is running.
    pub(super) fn start_view_change_timer(&mut self) {
        if self.timers.is_set(Timer::ViewChange) || !self.view_active() || self.is_primary() {
            return;
        }
        self.timers.set_in(Timer::ViewChange, self.view_changes.timeout_us);
    }

    /// Re-arms the view-change timer after a restart: for the view change
    /// under way, or for the requests waiting.
    pub(super) fn restart_view_change_timer(&mut self) {
        self.timers.cancel(Timer::ViewChange);
        if self.view_active() {
            if self.waiting_for_execution() {
                self.start_view_change_timer();
            }
        } else {
            self.arm_timer_for_quorum();
        }
    }

    /// After a request executed in an installed view: the view works, so the
    /// timeout goes back to its configured value and the timer restarts for
    /// the requests still waiting, or stops.
    pub(super) fn view_change_timer_after_progress(&mut self) {
        if !self.view_active() {
            return;
        }
        self.view_changes.timeout_us = self.cfg.view_change_timeout_us;
        self.view_changes.deferrals = 0;
        if !self.waiting_for_execution() {
            self.timers.cancel(Timer::ViewChange);
        } else {
            self.timers.set_in(Timer::ViewChange, self.view_changes.timeout_us);
        }
    }

    pub(super) fn on_view_change_timer(&mut self, out: &mut Outbox) {
        self.timers.cancel(Timer::ViewChange);
        if self.view_active() {
            self.forget_executed_requests();
            if !self.waiting_for_execution() {
                return;
            }
            // A replica that is behind cannot blame the primary: it is fetching
            // state, or the others committed a batch it cannot execute yet
            // (retransmission brings it). Leaving the view alone would only
            // take it out of service until the next view change, and clients
            // need 2f+1 correct replicas to answer.
            if self.transfer.is_some() || (self.lagging() && self.view_changes.deferrals < MAX_DEFERRALS) {
                self.view_changes.deferrals += 1;
                return self.start_view_change_timer();
            }
        } else {
            // The view we moved to did not install in time: try the next one,
            // with more patience.
            self.view_changes.timeout_us = (self.view_changes.timeout_us * 2).min(self.cfg.view_change_timeout_us * MAX_TIMEOUT_FACTOR);
        }
        let next = View(self.view().0 + 1);
        self.start_view_change(next, out);
    }

    /// Whether the primary orders requests and this replica merely lags:
    /// 2f+1 replicas committed, in this view, the next batch it should
    /// execute (it lacks the pre-prepare or a request body), or f+1 others
    /// report in STATUS that they executed further in this view (one of them
    /// is correct).
    fn lagging(&self) -> bool {
        let ahead =
            self.peers.progress().weak_where(self.cfg.f, |_, (v, executed)| *v == self.view() && *executed > self.executed.last());
        ahead || self.certified_batch(self.executed.next()).is_some_and(|(v, _)| v == self.view())
    }

    /// Whether this backup waits for the primary: a request it holds has not
    /// executed, or its tentative execution has not committed.
    pub(super) fn waiting_for_execution(&self) -> bool {
        !self.is_primary() && (self.requests.has_bodies() || self.executed.tentative().is_some())
    }

    /// Drops request bodies whose requests have executed (by another path, a
    /// state transfer for example), so that they do not keep the timer going.
    fn forget_executed_requests(&mut self) {
        let stale: Vec<(Request, Digest)> = self
            .requests
            .bodies()
            .filter(|(_, (r, _))| r.timestamp <= self.last_timestamp(r.client))
            .map(|(d, (r, _))| (r.clone(), *d))
            .collect();
        for (req, d) in stale {
            self.requests.forget(&req, &d);
        }
    }

    // ----- moving to a new view -----

    /// Leaves the current view for `v` (> the current view, or equal while the
    /// view change to it has not started here) and multicasts VIEW-CHANGE.
    pub(super) fn start_view_change(&mut self, v: View, out: &mut Outbox) {
        self.view_changes.leave_for(v);
        // The old primary's queued requests stay known, for whoever proposes them.
        for (req, raw) in self.requests.leave_view() {
            self.remember_request(&req, req.digest(), &raw);
        }
        let msg = self.build_view_change(v);
        let raw = self.multicast(&Message::ViewChange(msg.clone()), out);
        self.log.record_view(Entry::ViewChangeSent { raw: raw.clone() });
        let digest = view_change_digest(self.id, &msg);
        self.view_changes.forget_below(v);
        self.view_changes.msgs.insert((v, self.id), StoredVc { msg, digest, raw });
        self.metrics.view_changes += 1;
        self.timers.cancel(Timer::ViewChange);
        self.arm_timer_for_quorum();
        self.try_new_view(out);
        self.try_pending_new_view(out);
    }

    /// While changing view: once 2f+1 replicas (this one included) ask for
    /// the view, the timer runs for it to install.
    fn arm_timer_for_quorum(&mut self) {
        if self.view_active() || self.timers.is_set(Timer::ViewChange) {
            return;
        }
        let v = self.view();
        let asking = self.view_changes.msgs.range((v, ReplicaId(0))..=(v, ReplicaId(u16::MAX))).count();
        if asking >= self.cfg.quorum() {
            self.timers.set_in(Timer::ViewChange, self.view_changes.timeout_us);
        }
    }

    /// VIEW-CHANGE(v, h, C, P, Q) from this replica's log.
    fn build_view_change(&self, v: View) -> ViewChange {
        let h = self.log.low_water_mark();
        // Checkpoints of states this replica reached by executing (a damaged
        // state restored from disk is none), within its window.
        let checkpoints: Vec<(SeqNo, Digest)> = if self.executed.awaits_trusted_state() {
            Vec::new()
        } else {
            self.machine.state()
                .checkpoints()
                .into_iter()
                .filter(|(n, _)| *n >= h && n.0 <= h.0 + self.cfg.log_window)
                .take(MAX_VC_CHECKPOINTS)
                .collect()
        };
        let mut prepared = Vec::new();
        let mut pre_prepared = Vec::new();
        for (n, slot) in self.log.range(h.next()) {
            if let Some((digest, view)) = slot.prepared_cert() {
                prepared.push(VcEntry { seq: n, digest, view });
            }
            for (digest, view) in slot.pre_prepared_in() {
                pre_prepared.push(VcEntry { seq: n, digest: *digest, view: *view });
            }
        }
        ViewChange { view: v, stable: h, checkpoints, prepared, pre_prepared }
    }

    /// A VIEW-CHANGE is well formed: it moves to a view above 0, its
    /// checkpoints and entries lie in its window, P has one entry per sequence
    /// number, and every entry is from an earlier view.
    fn view_change_well_formed(&self, vc: &ViewChange) -> bool {
        let (k, l) = (self.cfg.checkpoint_interval, self.cfg.log_window);
        let h = vc.stable;
        let in_window = |n: SeqNo| n > h && n.0 <= h.0.saturating_add(l);
        let mut seqs = BTreeSet::new();
        vc.view.0 > 0
            && h.0.is_multiple_of(k)
            && vc.checkpoints.iter().all(|(n, _)| *n >= h && n.0 <= h.0.saturating_add(l) && n.0.is_multiple_of(k))
            && vc.prepared.iter().all(|e| in_window(e.seq) && e.view < vc.view && seqs.insert(e.seq))
            && vc.pre_prepared.len() <= l as usize * MAX_Q_PER_SEQ
            && vc.pre_prepared.iter().all(|e| in_window(e.seq) && e.view < vc.view)
    }

    /// Whether messages about view `v` are of interest: a view ahead (within
    /// bounds), or the one being changed to.
    fn view_change_relevant(&self, v: View) -> bool {
        (v > self.view() || (v == self.view() && !self.view_active())) && v.0 <= self.view().0 + MAX_VIEWS_AHEAD
    }

    pub(super) fn on_view_change(&mut self, from: ReplicaId, vc: ViewChange, raw: Bytes, out: &mut Outbox) {
        if !self.view_change_relevant(vc.view) {
            return self.metrics.drop(DropReason::WrongView);
        }
        if !self.view_change_well_formed(&vc) {
            return self.metrics.drop(DropReason::Invalid);
        }
        let digest = view_change_digest(from, &vc);
        let key = (vc.view, from);
        if let Some(stored) = self.view_changes.msgs.get(&key) {
            if stored.digest == digest {
                // A retransmission: its sender is still changing view, so our
                // ack may have been lost.
                self.send_ack(vc.view, from, digest, out);
                return self.metrics.drop(DropReason::Duplicate);
            }
            // The sender equivocates. Keep the first, unless a NEW-VIEW names this one.
            self.metrics.drop(DropReason::Conflicting);
            self.keep_if_named(from, vc, raw, digest, out);
            return;
        }
        self.view_changes.msgs.insert(key, StoredVc { msg: vc.clone(), digest, raw });
        self.send_ack(vc.view, from, digest, out);
        self.maybe_join(out);
        self.arm_timer_for_quorum();
        self.try_new_view(out);
        self.try_pending_new_view(out);
    }

    /// A VIEW-CHANGE from `from` whose MAC did not check for us (relayed, or
    /// from a sender that broke our MAC): of use only if a pending NEW-VIEW
    /// names it by digest. Returns whether one did.
    pub(super) fn on_relayed_view_change(
        &mut self,
        from: ReplicaId,
        vc: ViewChange,
        raw: Bytes,
        digest: Digest,
        out: &mut Outbox,
    ) -> bool {
        if !self.cfg.is_replica(from) || !self.view_change_well_formed(&vc) {
            return false;
        }
        self.keep_if_named(from, vc, raw, digest, out)
    }

    /// Keeps `from`'s VIEW-CHANGE if the pending NEW-VIEW names it by digest.
    fn keep_if_named(&mut self, from: ReplicaId, vc: ViewChange, raw: Bytes, digest: Digest, out: &mut Outbox) -> bool {
        let view = vc.view;
        let named = |d: &Digest| {
            self.view_changes.pending.as_ref().is_some_and(|(nv, _)| nv.view == view && nv.view_changes.contains(&(from, *d)))
        };
        let Some(vouched) = Vouched::by_digest(vc, raw, digest, named) else { return false };
        let (msg, raw, digest) = vouched.into_parts();
        self.view_changes.relayed.insert((view, from), StoredVc { msg, digest, raw });
        self.try_pending_new_view(out);
        true
    }

    fn send_ack(&mut self, v: View, subject: ReplicaId, digest: Digest, out: &mut Outbox) {
        if subject == self.id {
            return;
        }
        self.multicast(&Message::ViewChangeAck(ViewChangeAck { view: v, replica: subject, digest }), out);
    }

    pub(super) fn on_view_change_ack(&mut self, from: ReplicaId, ack: ViewChangeAck, out: &mut Outbox) {
        if !self.view_change_relevant(ack.view) {
            return self.metrics.drop(DropReason::WrongView);
        }
        if ack.replica == from || !self.cfg.is_replica(ack.replica) {
            return self.metrics.drop(DropReason::Invalid);
        }
        // One ack per acker: a later one (after a relay) replaces the first.
        if self.view_changes.acks.entry((ack.view, ack.replica)).or_default().insert(from, ack.digest) == Inserted::Same {
            return self.metrics.drop(DropReason::Duplicate);
        }
        self.try_new_view(out);
        self.try_pending_new_view(out);
    }

    /// Acks for `subject`'s VIEW-CHANGE for `v` with `digest`, from replicas
    /// other than the subject and `also_not`.
    fn acks_for(&self, v: View, subject: ReplicaId, digest: Digest, also_not: ReplicaId) -> usize {
        self.view_changes.acks.get(&(v, subject)).map_or(0, |a| a.count_excluding(&digest, &[subject, also_not]))
    }

    /// Joins a view change once f+1 other replicas ask for views above ours:
    /// the highest view that f+1 of them ask for at least.
    fn maybe_join(&mut self, out: &mut Outbox) {
        // Keys ascend by view, so each replica's last entry is its highest.
        let asking: Tally<View> =
            self.view_changes.msgs.keys().filter(|(v, r)| *r != self.id && *v > self.view()).map(|(v, r)| (*r, *v)).collect();
        if let Some(v) = asking.highest_reached_by(self.cfg.f + 1) {
            self.start_view_change(v, out);
        }
    }

    // ----- the new primary -----

    /// The new primary sends NEW-VIEW once 2f+1 admitted VIEW-CHANGE messages
    /// decide every sequence number.
    fn try_new_view(&mut self, out: &mut Outbox) {
        if self.view_active() || !self.is_primary() {
            return;
        }
        let v = self.view();
        let needed = self.admission_acks();
        let admitted: Vec<(ReplicaId, &StoredVc)> = self
            .view_changes
            .msgs
            .range((v, ReplicaId(0))..=(v, ReplicaId(u16::MAX)))
            .filter(|((_, j), s)| *j == self.id || self.acks_for(v, *j, s.digest, self.id) >= needed)
            .map(|((_, j), s)| (*j, s))
            .collect();
        if admitted.len() < self.cfg.quorum() {
            return;
        }
        let infos: Vec<ViewChangeInfo> = admitted.iter().map(|(j, s)| info(*j, &s.msg)).collect();
        let Ok(decision) = self.decide(&infos) else { return };
        let nv = NewView { view: v, view_changes: admitted.iter().map(|(j, s)| (*j, s.digest)).collect() };
        let raw = self.multicast(&Message::NewView(nv.clone()), out);
        self.install(nv, raw, decision, out);
    }

    /// Acks a VIEW-CHANGE needs before the new primary admits it: 2f-1, so
    /// that with the primary and the sender 2f+1 replicas hold it.
    fn admission_acks(&self) -> usize {
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.view_change_without_acks {
            return 0;
        }
        (2 * self.cfg.f).saturating_sub(1)
    }

    fn decide(&self, infos: &[ViewChangeInfo]) -> Result<NewViewDecision, Undecided> {
        #[cfg(feature = "deliberate-bugs")]
        let decide = if self.cfg.bugs.new_view_skips_a2 { crate::view_change::decision::decide_without_a2 } else { decide };
        #[allow(unused_mut)]
        let mut decision = decide(self.cfg.f, self.cfg.log_window, infos)?;
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.new_view_drops_prepared {
            for (_, c) in decision.choices.iter_mut() {
                *c = crate::view_change::Choice::Null;
            }
        }
        Ok(decision)
    }

    // ----- backups: checking NEW-VIEW -----

    pub(super) fn on_new_view(&mut self, from: ReplicaId, nv: NewView, raw: Bytes, out: &mut Outbox) {
        if from != nv.view.primary(self.cfg.n()) {
            return self.metrics.drop(DropReason::WrongRole);
        }
        if !self.view_change_relevant(nv.view) {
            return self.metrics.drop(DropReason::WrongView);
        }
        if self.view_changes.pending.as_ref().is_some_and(|(p, _)| p.view >= nv.view) {
            return self.metrics.drop(DropReason::Duplicate);
        }
        let mut senders = BTreeSet::new();
        let well_formed = nv.view_changes.len() >= self.cfg.quorum()
            && nv.view_changes.iter().all(|(j, _)| self.cfg.is_replica(*j) && senders.insert(*j))
            && senders.contains(&from);
        if !well_formed {
            return self.metrics.drop(DropReason::Invalid);
        }
        self.view_changes.pending = Some((nv, raw));
        self.try_pending_new_view(out);
    }

    /// The body of the VIEW-CHANGE (v, j, d) if this replica may trust it: its
    /// own copy, or a relayed one that f+1 replicas other than j acked.
    pub(super) fn trusted_view_change(&self, v: View, j: ReplicaId, d: Digest) -> Option<&StoredVc> {
        if let Some(s) = self.view_changes.msgs.get(&(v, j)).filter(|s| s.digest == d) {
            return Some(s);
        }
        let s = self.view_changes.relayed.get(&(v, j)).filter(|s| s.digest == d)?;
        (self.acks_for(v, j, d, j) > self.cfg.f).then_some(s)
    }

    fn try_pending_new_view(&mut self, out: &mut Outbox) {
        let Some((nv, raw)) = self.view_changes.pending.clone() else { return };
        if !self.view_change_relevant(nv.view) {
            self.view_changes.pending = None;
            return;
        }
        let mut infos = Vec::with_capacity(nv.view_changes.len());
        for (j, d) in &nv.view_changes {
            match self.trusted_view_change(nv.view, *j, *d) {
                Some(s) => infos.push(info(*j, &s.msg)),
                None => return, // wait for it (STATUS brings relays)
            }
        }
        self.view_changes.pending = None;
        match self.decide(&infos) {
            Ok(decision) => self.install(nv, raw, decision, out),
            // A primary that sends an undecidable NEW-VIEW is faulty: the timer
            // moves us on.
            Err(_) => self.metrics.drop(DropReason::Invalid),
        }
    }

    // ----- retransmission -----

    /// On each status tick while changing view: our VIEW-CHANGE again (it or
    /// its acks may have been lost).
    pub(super) fn retransmit_view_change(&mut self, out: &mut Outbox) {
        if self.view_active() {
            return;
        }
        if let Some(s) = self.view_changes.msgs.get(&(self.view(), self.id)) {
            out.send(Dest::AllReplicas, s.raw.clone());
            self.metrics.retransmitted += 1;
        }
    }

    /// Sends a replica that has not installed our view what installed it:
    /// the NEW-VIEW, the VIEW-CHANGE messages it names, and our acks for them,
    /// its own included: a replica restarted without its log has lost the
    /// VIEW-CHANGE it sent, and trusts the relayed copy only on f+1 acks.
    pub(super) fn send_installed_view(&mut self, to: ReplicaId, out: &mut Outbox) {
        let Some(installed) = &self.view_changes.installed else { return };
        let dest = Dest::Replica(to);
        out.send(dest, installed.raw.clone());
        for vc in &installed.view_changes {
            out.send(dest, vc.clone());
        }
        let v = installed.new_view.view;
        let acks: Vec<Bytes> = installed
            .new_view
            .view_changes
            .iter()
            .filter(|(j, _)| *j != self.id)
            .map(|(j, d)| {
                // A replica checks the MAC at its own index of an authenticator
                // with one MAC per replica: a single-MAC seal never verifies.
                let ack = Message::ViewChangeAck(ViewChangeAck { view: v, replica: *j, digest: *d });
                self.keys.seal(&ack, Audience::Replicas)
            })
            .collect();
        self.metrics.retransmitted += (1 + installed.view_changes.len() + acks.len()) as u64;
        for a in acks {
            out.send(dest, a);
        }
    }
}
