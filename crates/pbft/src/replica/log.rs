//! The message log (TOCS 2002 §4.2–4.3): one slot per sequence number inside
//! the water marks (h, h + L], each holding the accepted PRE-PREPARE, the
//! PREPAREs and COMMITs received for it, what this replica sent, and the P and
//! Q entries a VIEW-CHANGE reports.
//!
//! The log owns the low water mark h and is the only place slots are removed:
//! [`Log::advance_to`] at a stable checkpoint, [`Log::discard_through`] after a
//! state transfer, [`Log::discard_above`] when a new view replaces what was not
//! executed. It also remembers which batch requests wait for a body.
//!
//! Invariants ([`Log::check_invariants`]): h never moves back; every slot lies
//! in (h, h + L]; a slot marked prepared holds a batch, its own COMMIT and 2f
//! matching PREPAREs from distinct replicas other than the primary of the
//! batch's view (the prepared certificate); a committed slot holds a batch; Q holds at most [`MAX_Q_PER_SEQ`] entries and
//! P's batch among them; a body is awaited only for a slot in the log.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::journal::{Entry, JournalRequest, Record};
use crate::tally::{Inserted, Tally};
use crate::types::{Digest, ReplicaId, SeqNo, View};
use crate::wire::Request;

pub(super) use crate::wire::MAX_Q_PER_SEQ;

/// One request of a batch.
#[derive(Clone, Debug)]
pub(super) struct BatchRequest {
    pub(super) digest: Digest,
    /// The request and its client envelope, once known.
    pub(super) body: Option<(Request, Bytes)>,
    /// This replica checked the client's MAC on the body.
    pub(super) authenticated: bool,
}

/// A batch at a sequence number: from a PRE-PREPARE, or known by digest only.
#[derive(Clone, Debug)]
pub(super) struct Batch {
    view: View,
    digest: Digest,
    nondet_time_us: u64,
    /// The pre-prepare datagram as received (or sent), for retransmission.
    raw: Bytes,
    requests: Vec<BatchRequest>,
    /// The non-deterministic value passed this replica's own check.
    nondet_ok: bool,
    /// Chosen by a NEW-VIEW (or certified by COMMITs): backups prepare it
    /// without validating it again (a quorum did when it first prepared).
    reproposed: bool,
    /// Known by digest only, its pre-prepare not yet received: `requests` is empty.
    body_pending: bool,
}

impl Batch {
    /// A batch from a pre-prepare (sent by this replica as primary, or received).
    pub(super) fn pre_prepared(
        view: View,
        digest: Digest,
        nondet_time_us: u64,
        raw: Bytes,
        requests: Vec<BatchRequest>,
        nondet_ok: bool,
    ) -> Batch {
        Batch { view, digest, nondet_time_us, raw, requests, nondet_ok, reproposed: false, body_pending: false }
    }

    /// A batch known only by its digest (chosen by a NEW-VIEW, or certified
    /// by 2f+1 COMMITs): its body comes later, except the null batch's, which
    /// has none.
    pub(super) fn by_digest(view: View, digest: Digest) -> Batch {
        Batch {
            view,
            digest,
            nondet_time_us: 0,
            raw: Bytes::new(),
            requests: Vec::new(),
            nondet_ok: true,
            reproposed: true,
            body_pending: digest != super::view_change::null_batch_digest(),
        }
    }

    pub(super) fn view(&self) -> View {
        self.view
    }
    pub(super) fn digest(&self) -> Digest {
        self.digest
    }
    pub(super) fn nondet_time_us(&self) -> u64 {
        self.nondet_time_us
    }
    pub(super) fn raw(&self) -> &Bytes {
        &self.raw
    }
    pub(super) fn requests(&self) -> &[BatchRequest] {
        &self.requests
    }
    pub(super) fn nondet_ok(&self) -> bool {
        self.nondet_ok
    }
    pub(super) fn reproposed(&self) -> bool {
        self.reproposed
    }
    /// Known by digest only: its pre-prepare has not arrived.
    pub(super) fn body_pending(&self) -> bool {
        self.body_pending
    }
    /// Every request body is here: the batch can execute.
    pub(super) fn complete(&self) -> bool {
        !self.body_pending && self.requests.iter().all(|e| e.body.is_some())
    }
    /// This replica could validate the whole batch itself.
    pub(super) fn validated(&self) -> bool {
        self.nondet_ok && self.requests.iter().all(|e| e.body.is_some() && e.authenticated)
    }
}

/// The log entry for one sequence number.
#[derive(Clone, Debug, Default)]
pub(super) struct Slot {
    batch: Option<Batch>,
    /// PREPAREs and COMMITs, one per replica: (view, batch digest).
    prepares: Tally<(View, Digest)>,
    commits: Tally<(View, Digest)>,
    my_prepare: Option<Bytes>,
    my_commit: Option<Bytes>,
    prepared: bool,
    committed: bool,
    /// P: the batch that prepared here in the latest view, kept across views.
    prepared_cert: Option<(Digest, View)>,
    /// Q: the batches that pre-prepared here, each with the latest view it
    /// did, kept across views (at most `MAX_Q_PER_SEQ`).
    pre_prepared_in: Vec<(Digest, View)>,
}

impl Slot {
    pub(super) fn batch(&self) -> Option<&Batch> {
        self.batch.as_ref()
    }
    pub(super) fn prepared(&self) -> bool {
        self.prepared
    }
    pub(super) fn committed(&self) -> bool {
        self.committed
    }
    pub(super) fn my_prepare(&self) -> Option<&Bytes> {
        self.my_prepare.as_ref()
    }
    pub(super) fn my_commit(&self) -> Option<&Bytes> {
        self.my_commit.as_ref()
    }
    /// P for a VIEW-CHANGE.
    pub(super) fn prepared_cert(&self) -> Option<(Digest, View)> {
        self.prepared_cert
    }
    /// Q for a VIEW-CHANGE.
    pub(super) fn pre_prepared_in(&self) -> &[(Digest, View)] {
        &self.pre_prepared_in
    }
    /// The (view, digest) of the batch this slot holds.
    fn batch_id(&self) -> Option<(View, Digest)> {
        self.batch.as_ref().map(|b| (b.view, b.digest))
    }
    /// PREPAREs that match the slot's batch.
    pub(super) fn matching_prepares(&self) -> usize {
        self.batch_id().map_or(0, |id| self.prepares.count(&id))
    }
    /// COMMITs that match the slot's batch.
    pub(super) fn matching_commits(&self) -> usize {
        self.batch_id().map_or(0, |id| self.commits.count(&id))
    }
    /// Replicas that sent a COMMIT, whatever for.
    pub(super) fn commit_voters(&self) -> usize {
        self.commits.len()
    }
    /// The batch 2f+1 replicas committed here in one view, if any.
    pub(super) fn certified_batch(&self, f: usize) -> Option<(View, Digest)> {
        self.commits.quorum_certificate(f)
    }

    /// Accepts a pre-prepared batch (the slot held none) and notes it in Q.
    fn accept_batch(&mut self, batch: Batch) {
        debug_assert!(self.batch.is_none(), "a slot accepts one pre-prepare");
        self.note_pre_prepared(batch.digest, batch.view);
        self.batch = Some(batch);
    }

    /// Records a replica's PREPARE; its first one stands.
    fn add_prepare(&mut self, from: ReplicaId, view: View, digest: Digest) -> Inserted {
        self.prepares.insert_first(from, (view, digest))
    }
    /// Records a replica's COMMIT; its first one stands.
    fn add_commit(&mut self, from: ReplicaId, view: View, digest: Digest) -> Inserted {
        self.commits.insert_first(from, (view, digest))
    }

    /// This replica sent `raw`, its PREPARE for the slot's batch.
    fn prepare_sent(&mut self, me: ReplicaId, raw: Bytes) {
        let Some(id) = self.batch_id() else { return };
        self.my_prepare = Some(raw);
        self.prepares.insert(me, id);
    }
    /// This replica sent `raw`, its COMMIT for the slot's batch.
    fn commit_sent(&mut self, me: ReplicaId, raw: Bytes) {
        let Some(id) = self.batch_id() else { return };
        self.my_commit = Some(raw);
        self.commits.insert(me, id);
    }
    /// The slot's batch is prepared here: it becomes P.
    fn mark_prepared(&mut self) {
        let Some((view, digest)) = self.batch_id() else { return };
        self.prepared = true;
        self.prepared_cert = Some((digest, view));
    }
    /// The slot's batch committed (2f+1 COMMITs, or f+1 CHECKPOINTs after it).
    fn mark_committed(&mut self) {
        debug_assert!(self.batch.is_some(), "only a batch commits");
        self.committed = self.batch.is_some();
    }

    /// Takes the batch 2f+1 COMMITs certify, by digest if this slot holds
    /// no batch or another one, and marks it committed.
    fn adopt_certified(&mut self, view: View, digest: Digest) {
        if self.batch.as_ref().is_none_or(|b| b.digest != digest) {
            self.batch = Some(Batch::by_digest(view, digest));
            self.my_prepare = None;
            self.prepared = false;
        }
        self.committed = true;
    }

    /// Re-proposes batch `digest` here in view `view` (a NEW-VIEW chose it):
    /// keeps the body this slot holds when its digest matches, and restarts
    /// the three phases. `executed` says whether this replica executed the
    /// slot already (then it stays committed if it was).
    fn repropose(&mut self, view: View, digest: Digest, executed: bool) {
        let batch = match self.batch.take().filter(|b| b.digest == digest && !b.body_pending) {
            Some(mut b) => {
                b.view = view;
                b.reproposed = true;
                b
            }
            None => Batch::by_digest(view, digest),
        };
        self.committed = self.committed && executed;
        self.batch = Some(batch);
        self.prepares.clear();
        self.commits.clear();
        self.my_prepare = None;
        self.my_commit = None;
        self.prepared = false;
        self.note_pre_prepared(digest, view);
    }

    /// Fills the body of a batch known by digest from its pre-prepare.
    fn fill_batch(&mut self, requests: Vec<BatchRequest>, nondet_time_us: u64, raw: Bytes) {
        let Some(batch) = self.batch.as_mut() else { return };
        batch.requests = requests;
        batch.nondet_time_us = nondet_time_us;
        batch.raw = raw;
        batch.body_pending = false;
    }

    /// Fills `req` (digest `digest`) into every request of the batch that
    /// names it and lacks a body, or holds one this replica could not
    /// authenticate while this one is authenticated.
    fn fill_request(&mut self, digest: Digest, req: &Request, raw: &Bytes, authenticated: bool) {
        let Some(batch) = self.batch.as_mut() else { return };
        for e in batch.requests.iter_mut() {
            if e.digest == digest && (e.body.is_none() || (authenticated && !e.authenticated)) {
                e.body = Some((req.clone(), raw.clone()));
                e.authenticated = authenticated;
            }
        }
    }

    /// Records that batch `d` pre-prepared in view `v`, keeping the latest view
    /// per batch and at most [`MAX_Q_PER_SEQ`] batches: the oldest views go, but
    /// never P's batch.
    fn note_pre_prepared(&mut self, d: Digest, v: View) {
        let q = &mut self.pre_prepared_in;
        match q.iter_mut().find(|(e, _)| *e == d) {
            Some(entry) => entry.1 = entry.1.max(v),
            None => q.push((d, v)),
        }
        if q.len() > MAX_Q_PER_SEQ {
            let prepared = self.prepared_cert.map(|(d, _)| d);
            q.sort_by_key(|e| std::cmp::Reverse((Some(e.0) == prepared, e.1)));
            q.truncate(MAX_Q_PER_SEQ);
        }
    }

    /// The slot's own invariants, given f and the cluster size.
    fn check(&self, f: usize, n: usize) -> Result<(), String> {
        if self.prepared {
            let b = self.batch.as_ref().ok_or("a prepared slot holds no batch")?;
            if self.my_commit.is_none() {
                return Err("a prepared slot has not sent its COMMIT".into());
            }
            let primary = b.view.primary(n);
            let backups = self.prepares.count_where(|r, v| *v == (b.view, b.digest) && r != primary);
            if backups < 2 * f {
                return Err(format!("prepared with {backups} matching PREPAREs from backups, fewer than 2f = {}", 2 * f));
            }
            if self.prepared_cert != Some((b.digest, b.view)) {
                return Err("a prepared slot's P is not its batch".into());
            }
        }
        if self.committed && self.batch.is_none() {
            return Err("a committed slot holds no batch".into());
        }
        if self.pre_prepared_in.len() > MAX_Q_PER_SEQ {
            return Err(format!("Q holds {} entries, more than {MAX_Q_PER_SEQ}", self.pre_prepared_in.len()));
        }
        Ok(())
    }
}

/// The log: slots in (h, h + L] and the batch requests waiting for a body.
#[derive(Debug)]
pub(super) struct Log {
    slots: BTreeMap<SeqNo, Slot>,
    /// h: the last stable checkpoint.
    low_water_mark: SeqNo,
    /// L.
    window: u64,
    /// Batch requests waiting for a body, or for one that passes this
    /// replica's MAC check: (request digest, sequence number).
    bodies_awaited: BTreeSet<(Digest, SeqNo)>,
    /// Whether changes are recorded for the durable log.
    journaling: bool,
    /// Changes recorded since the replica last took them.
    records: Vec<Record>,
}

impl Log {
    pub(super) fn new(low_water_mark: SeqNo, window: u64, journaling: bool) -> Log {
        Log {
            slots: BTreeMap::new(),
            low_water_mark,
            window,
            bodies_awaited: BTreeSet::new(),
            journaling,
            records: Vec::new(),
        }
    }

    /// The changes recorded since the last call, for the durable log.
    pub(super) fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    fn record(&mut self, entry: impl FnOnce() -> Entry) {
        if self.journaling {
            self.records.push(Record(entry()));
        }
    }

    /// Records a change of view for the durable log (the log and the view are
    /// replayed together).
    pub(super) fn record_view(&mut self, entry: Entry) {
        self.record(|| entry);
    }

    // ----- changes, each recorded -----

    /// Accepts a pre-prepared batch at `seq` (the slot holds none).
    pub(super) fn accept_batch(&mut self, seq: SeqNo, batch: Batch) {
        self.record(|| Entry::Accept {
            seq,
            view: batch.view,
            digest: batch.digest,
            nondet_time_us: batch.nondet_time_us,
            nondet_ok: batch.nondet_ok,
            raw: batch.raw.clone(),
            requests: journal_requests(&batch.requests),
        });
        self.slot(seq).accept_batch(batch);
    }

    /// Records replica `from`'s PREPARE (`commit` false) or COMMIT at `seq`;
    /// its first one stands.
    pub(super) fn add_vote(&mut self, seq: SeqNo, commit: bool, from: ReplicaId, view: View, digest: Digest) -> Inserted {
        let slot = self.slot(seq);
        let inserted =
            if commit { slot.add_commit(from, view, digest) } else { slot.add_prepare(from, view, digest) };
        if inserted == Inserted::New {
            self.record(|| Entry::Vote { seq, commit, from, view, digest });
        }
        inserted
    }

    /// This replica (`me`) sent `raw`, its PREPARE (`commit` false) or COMMIT
    /// for the batch at `seq`.
    pub(super) fn sent(&mut self, seq: SeqNo, commit: bool, me: ReplicaId, raw: Bytes) {
        let Some(slot) = self.slots.get_mut(&seq) else { return };
        if commit {
            slot.commit_sent(me, raw.clone());
        } else {
            slot.prepare_sent(me, raw.clone());
        }
        self.record(|| Entry::Sent { seq, commit, me, raw });
    }

    /// The batch at `seq` is prepared here: it becomes P.
    pub(super) fn mark_prepared(&mut self, seq: SeqNo) {
        let Some(slot) = self.slots.get_mut(&seq) else { return };
        slot.mark_prepared();
        self.record(|| Entry::Prepared { seq });
    }

    /// The batch at `seq` committed.
    pub(super) fn mark_committed(&mut self, seq: SeqNo) {
        let Some(slot) = self.slots.get_mut(&seq) else { return };
        slot.mark_committed();
        self.record(|| Entry::Committed { seq });
    }

    /// Takes the batch 2f+1 COMMITs certify at `seq` (see [`Slot::adopt_certified`]).
    pub(super) fn adopt_certified(&mut self, seq: SeqNo, view: View, digest: Digest) {
        let Some(slot) = self.slots.get_mut(&seq) else { return };
        slot.adopt_certified(view, digest);
        self.record(|| Entry::AdoptCertified { seq, view, digest });
    }

    /// Re-proposes batch `digest` at `seq` in `view` (see [`Slot::repropose`]).
    pub(super) fn repropose(&mut self, seq: SeqNo, view: View, digest: Digest, executed: bool) {
        self.slot(seq).repropose(view, digest, executed);
        self.record(|| Entry::Repropose { seq, view, digest, executed });
    }

    /// Fills the body of the batch at `seq`, known by digest, from its pre-prepare.
    pub(super) fn fill_batch(&mut self, seq: SeqNo, requests: Vec<BatchRequest>, nondet_time_us: u64, raw: Bytes) {
        let Some(slot) = self.slots.get_mut(&seq) else { return };
        let recorded = self.journaling.then(|| journal_requests(&requests));
        slot.fill_batch(requests, nondet_time_us, raw.clone());
        if let Some(requests) = recorded {
            self.record(|| Entry::FillBatch { seq, nondet_time_us, raw, requests });
        }
    }

    /// Fills request `digest`'s body into the batch at `seq` (see [`Slot::fill_request`]).
    pub(super) fn fill_request(&mut self, seq: SeqNo, digest: Digest, req: &Request, raw: &Bytes, authenticated: bool) {
        let Some(slot) = self.slots.get_mut(&seq) else { return };
        slot.fill_request(digest, req, raw, authenticated);
        self.record(|| Entry::FillRequest { seq, digest, raw: raw.clone(), authenticated });
    }

    // ----- replay -----

    /// Applies one recorded change after a restart, without recording it
    /// again. Changes to slots outside the window are skipped, and so is
    /// truncation past the checkpoint the replica restarted from (the crash
    /// came before its state was saved: keeping slots never contradicts what
    /// was said). `request` decodes a request's envelope.
    pub(super) fn replay(&mut self, entry: Entry, request: impl Fn(&Bytes) -> Option<Request>) {
        let journaling = std::mem::replace(&mut self.journaling, false);
        let requests = |list: Vec<JournalRequest>| -> Vec<BatchRequest> {
            list.into_iter()
                .map(|q| {
                    let body = q.body.and_then(|raw| request(&raw).map(|r| (r, raw)));
                    BatchRequest { digest: q.digest, authenticated: q.authenticated && body.is_some(), body }
                })
                .collect()
        };
        match entry {
            Entry::Accept { seq, view, digest, nondet_time_us, nondet_ok, raw, requests: list } => {
                if self.in_window(seq) && self.batch(seq).is_none() {
                    let batch = Batch::pre_prepared(view, digest, nondet_time_us, raw, requests(list), nondet_ok);
                    self.accept_batch(seq, batch);
                }
            }
            Entry::Vote { seq, commit, from, view, digest } => {
                if self.in_window(seq) {
                    self.add_vote(seq, commit, from, view, digest);
                }
            }
            Entry::Sent { seq, commit, me, raw } => self.sent(seq, commit, me, raw),
            Entry::Prepared { seq } => {
                if self.batch(seq).is_some() {
                    self.mark_prepared(seq);
                }
            }
            Entry::Committed { seq } => {
                if self.batch(seq).is_some() {
                    self.mark_committed(seq);
                }
            }
            Entry::AdoptCertified { seq, view, digest } => self.adopt_certified(seq, view, digest),
            Entry::Repropose { seq, view, digest, executed } => {
                if self.in_window(seq) {
                    self.repropose(seq, view, digest, executed);
                }
            }
            Entry::FillBatch { seq, nondet_time_us, raw, requests: list } => {
                self.fill_batch(seq, requests(list), nondet_time_us, raw)
            }
            Entry::FillRequest { seq, digest, raw, authenticated } => {
                if let Some(req) = request(&raw) {
                    self.fill_request(seq, digest, &req, &raw, authenticated);
                }
            }
            // Up to the restart point the log is already truncated; beyond it
            // the state was not saved.
            Entry::AdvanceTo { .. } | Entry::DiscardThrough { .. } => {}
            Entry::DiscardAbove { seq } => self.discard_above(seq),
            Entry::Awaited { seq, digest, arrived: false } => {
                if self.slots.contains_key(&seq) {
                    self.await_body(digest, seq);
                }
            }
            Entry::Awaited { seq, digest, arrived: true } => self.body_arrived(digest, seq),
            Entry::ViewChangeSent { .. } | Entry::ViewInstalled { .. } | Entry::NewViewInstalled { .. } => {}
        }
        self.journaling = journaling;
    }

    /// The highest sequence number holding a batch, and the highest
    /// non-deterministic value of any batch: what a restarted primary must
    /// never propose again or go below.
    pub(super) fn highest_proposal(&self) -> (SeqNo, u64) {
        let seq = self.slots.iter().rev().find(|(_, s)| s.batch.is_some()).map_or(SeqNo(0), |(n, _)| *n);
        let nondet = self.slots.values().filter_map(|s| s.batch.as_ref()).map(|b| b.nondet_time_us).max().unwrap_or(0);
        (seq, nondet)
    }

    pub(super) fn low_water_mark(&self) -> SeqNo {
        self.low_water_mark
    }
    /// H = h + L.
    pub(super) fn high_water_mark(&self) -> SeqNo {
        SeqNo(self.low_water_mark.0 + self.window)
    }
    pub(super) fn in_window(&self, seq: SeqNo) -> bool {
        seq > self.low_water_mark && seq <= self.high_water_mark()
    }

    pub(super) fn get(&self, seq: SeqNo) -> Option<&Slot> {
        self.slots.get(&seq)
    }
    /// The slot at `seq`, created empty if absent. `seq` must be in the window.
    fn slot(&mut self, seq: SeqNo) -> &mut Slot {
        debug_assert!(self.in_window(seq), "slot {seq:?} outside the window");
        self.slots.entry(seq).or_default()
    }
    /// The batch at `seq`, if any.
    pub(super) fn batch(&self, seq: SeqNo) -> Option<&Batch> {
        self.slots.get(&seq).and_then(|s| s.batch())
    }
    pub(super) fn range(&self, from: SeqNo) -> impl Iterator<Item = (SeqNo, &Slot)> {
        self.slots.range(from..).map(|(n, s)| (*n, s))
    }
    pub(super) fn slots(&self) -> impl Iterator<Item = (SeqNo, &Slot)> {
        self.slots.iter().map(|(n, s)| (*n, s))
    }
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
    pub(super) fn bounds(&self) -> Option<(SeqNo, SeqNo)> {
        Some((*self.slots.keys().next()?, *self.slots.keys().next_back()?))
    }

    /// A checkpoint at `n` became stable: h moves to `n` and the log up to it goes.
    pub(super) fn advance_to(&mut self, n: SeqNo) {
        assert!(n > self.low_water_mark, "the low water mark never moves back");
        self.low_water_mark = n;
        self.forget_through(n);
        self.record(|| Entry::AdvanceTo { seq: n });
    }

    /// The deliberate bug `low_water_mark_moves_back`.
    #[cfg(feature = "deliberate-bugs")]
    pub(super) fn bug_move_back(&mut self, interval: u64) {
        self.low_water_mark = SeqNo(self.low_water_mark.0.saturating_sub(interval));
    }

    /// Forgets the slots up to `n` (executed, or replaced by a fetched state).
    pub(super) fn discard_through(&mut self, n: SeqNo) {
        self.forget_through(n);
        self.record(|| Entry::DiscardThrough { seq: n });
    }

    fn forget_through(&mut self, n: SeqNo) {
        self.slots = self.slots.split_off(&n.next());
        self.bodies_awaited.retain(|(_, seq)| *seq > n);
    }

    /// Forgets the slots above `n` (a new view re-proposes nothing there).
    pub(super) fn discard_above(&mut self, n: SeqNo) {
        self.slots.split_off(&n.next());
        self.bodies_awaited.retain(|(_, seq)| *seq <= n);
        self.record(|| Entry::DiscardAbove { seq: n });
    }

    /// The request `digest` of the batch at `seq` waits for a body.
    pub(super) fn await_body(&mut self, digest: Digest, seq: SeqNo) {
        debug_assert!(self.slots.contains_key(&seq), "a body is awaited for a slot in the log");
        self.bodies_awaited.insert((digest, seq));
        self.record(|| Entry::Awaited { seq, digest, arrived: false });
    }
    /// The slots whose batch waits for the body of request `digest`.
    pub(super) fn awaiting_body(&self, digest: Digest) -> Vec<SeqNo> {
        self.bodies_awaited.range((digest, SeqNo(0))..=(digest, SeqNo(u64::MAX))).map(|(_, seq)| *seq).collect()
    }
    /// Whether some batch waits for the body of request `digest`.
    pub(super) fn is_awaited(&self, digest: Digest) -> bool {
        self.bodies_awaited.range((digest, SeqNo(0))..=(digest, SeqNo(u64::MAX))).next().is_some()
    }
    /// The body of `digest` arrived (authenticated) for slot `seq`.
    pub(super) fn body_arrived(&mut self, digest: Digest, seq: SeqNo) {
        if self.bodies_awaited.remove(&(digest, seq)) {
            self.record(|| Entry::Awaited { seq, digest, arrived: true });
        }
    }
    pub(super) fn bodies_awaited(&self) -> usize {
        self.bodies_awaited.len()
    }

    /// Checks the log's invariants (module doc). `f` and `n` size the cluster.
    pub(super) fn check_invariants(&self, f: usize, n: usize) -> Result<(), String> {
        if let Some((lo, hi)) = self.bounds() {
            if !self.in_window(lo) || !self.in_window(hi) {
                return Err(format!(
                    "log spans {}..={} outside the water marks ({}, {}]",
                    lo.0,
                    hi.0,
                    self.low_water_mark.0,
                    self.high_water_mark().0
                ));
            }
        }
        for (seq, slot) in &self.slots {
            slot.check(f, n).map_err(|e| format!("slot {}: {e}", seq.0))?;
        }
        if let Some((d, seq)) = self.bodies_awaited.iter().find(|(_, seq)| !self.slots.contains_key(seq)) {
            return Err(format!("a body ({d:?}) is awaited for slot {}, which is not in the log", seq.0));
        }
        Ok(())
    }
}

/// A batch's requests as the journal keeps them.
fn journal_requests(requests: &[BatchRequest]) -> Vec<JournalRequest> {
    requests
        .iter()
        .map(|q| JournalRequest { digest: q.digest, body: q.body.as_ref().map(|(_, raw)| raw.clone()), authenticated: q.authenticated })
        .collect()
}
