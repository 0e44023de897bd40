//! State transfer over the partition tree (TOCS 2002 §5.3.2, Castro's thesis §5.3).
//!
//! A replica that cannot make progress because the others have garbage-collected
//! the log it needs (it was partitioned, crashed, or lost too many messages)
//! fetches the state of a checkpoint that f+1 replicas vouch for, so at least one
//! correct replica has that state. It walks the partition tree from the root:
//! FETCH asks for a node, META-DATA returns the node's children's digests, which
//! are checked against the node's digest; only subtrees whose digests differ
//! from the replica's own last checkpoint are descended; DATA returns a page,
//! checked against its leaf digest. Nothing unverified is ever installed, so a
//! lying replica can only waste a request, and a source that sends bad data is
//! not asked again during that transfer.
//!
//! While a transfer runs the replica executes nothing. When every differing
//! page has arrived it installs them, takes the checkpoint (whose root must equal
//! the certified digest), and resumes from there.
//!
//! The state keeps changing during a large transfer, and sources discard a
//! checkpoint once a newer one is stable, so the transfer retargets to the
//! newest certified checkpoint at each status tick, and in between (once an
//! interval) when a source shows it has discarded the target: it answers from
//! its oldest checkpoint after the one asked for, and a node or page there
//! differs. A retarget loses nothing it learned: fetched pages and answers
//! still in flight are kept by digest, and subtrees whose digests did not
//! change are expanded again from the children already known, without asking.
//! Requests go out in a window of FETCH_WINDOW, up to PAGES_PER_FETCH
//! consecutive pages in one FETCH, answered with one DATA per PAGES_PER_DATA;
//! one left unanswered for a whole status interval is asked of the next
//! source.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Replica;
use crate::effects::{Dest, Effect, Outbox};
use crate::metrics::DropReason;
use crate::service::Service;
use crate::state::{PagedState, Page, PAGE_SIZE, ZERO_PAGE};
use crate::types::{Digest, Instant, ReplicaId, SeqNo};
use crate::wire::{Checkpoint, Data, Fetch, Message, MetaData};

/// Requests outstanding at once during a transfer, counted in nodes and pages
/// (3 MiB of pages, within the 4 MiB socket buffer a node asks for; measured:
/// 97 MiB/s with 256, 132 MiB/s with 768 for a 256 MiB state).
const FETCH_WINDOW: usize = 768;
pub use crate::wire::PAGES_PER_DATA;
/// Consecutive pages asked for in one FETCH, answered with one DATA for
/// every `PAGES_PER_DATA`: a FETCH per DATA cost the fetching replica a
/// send (and each source a wake-up) for every 60 KiB it received.
pub const PAGES_PER_FETCH: usize = 8 * PAGES_PER_DATA;
/// Pages (or nodes) one replica gets per status interval in answer to FETCH:
/// at the default 100 ms, up to 640 MiB/s from each source, above what one
/// transfer takes from three sources (4096 capped a 256 MiB transfer near
/// 480 MiB/s and dropped the excess), bounded so that a Byzantine replica
/// cannot make a source do more.
const FETCH_ANSWERS_PER_INTERVAL: u32 = 16384;

/// A node or page of the partition tree: (level, index).
type Node = (u32, u64);

/// A page fetched and checked, with the digest it was checked against.
type Fetched = (Digest, Arc<Page>);

/// An ongoing state transfer.
#[derive(Debug)]
pub(super) struct Transfer {
    seq: SeqNo,
    digest: Digest,
    /// Replicas that vouched for (seq, digest): each request goes to one of
    /// them, spread by node, so the load and the rate limits are shared.
    sources: Vec<ReplicaId>,
    /// Rotates the spread on each retry, so a silent source's share moves on.
    source: usize,
    /// The checkpoint of our own the tree is compared with.
    base: SeqNo,
    /// Nodes and pages still to fetch, with the digest each must have.
    wanted: BTreeMap<Node, Digest>,
    /// Of `wanted`, those not asked for yet, in tree order.
    queue: BTreeSet<Node>,
    /// Of `wanted`, those asked for, with the status tick they were asked at.
    requested: BTreeMap<Node, u64>,
    /// Status ticks since the transfer began (a retargeted transfer goes on
    /// counting).
    ticks: u64,
    /// Pages fetched and checked for this target, in the order they came
    /// (each at most once: a page leaves `wanted` when it is taken).
    pages: Vec<(u64, Fetched)>,
    /// Pages fetched for an earlier target of this transfer.
    carried: BTreeMap<u64, Fetched>,
    /// The pages an earlier target still wanted, with their digests and, for
    /// those asked for, the tick they were asked at: answers that arrive
    /// after the retarget are kept in `carried`, and a page the new target
    /// wants with the same digest counts as already asked for.
    previous: BTreeMap<u64, (Digest, Option<u64>)>,
    /// The children of every internal node learned from META-DATA, in this
    /// target or an earlier one: a node whose digest is unchanged after a
    /// retarget is expanded again without asking.
    children_known: BTreeMap<Node, (Digest, Vec<Digest>)>,
    /// A source answered from a newer checkpoint with a node or page that
    /// differs from the target's: the sources have discarded the target,
    /// so the transfer moves on as soon as f+1 vouch for a newer one.
    discarded: bool,
    /// Status ticks seen during the transfer, retargets included, and the
    /// one at which it last retargeted between ticks: at most once an
    /// interval, so that neither fast checkpoints nor a lying source make it
    /// walk the tree again for every checkpoint. (`ticks` skips the ticks
    /// that retargeted; counting them in the overdue clock made transfers
    /// wait longer, docs/decisions.md §28.)
    interval: u64,
    moved_on_at: Option<u64>,
    pub(super) pages_fetched: u64,
}

impl<S: Service> Replica<S> {
    /// Checks, at each status tick, whether this replica is stuck behind a
    /// checkpoint that f+1 others vouch for; if so it starts a transfer.
    pub(super) fn maybe_start_transfer(&mut self, out: &mut Outbox) {
        let stuck = !self.executed.progressed_since_last_tick();
        if !stuck && self.transfer.is_none() {
            return;
        }
        if let Some(t) = self.transfer.as_mut() {
            t.interval += 1;
        }
        match (self.transfer_target(), self.transfer.as_ref()) {
            // A newer certified checkpoint replaces the target: sources may have
            // discarded the old one.
            (Some((seq, digest, sources)), t) if t.is_none_or(|t| seq > t.seq) => {
                self.start_transfer(seq, digest, sources, out)
            }
            (_, Some(_)) => self.retry_overdue(out),
            _ => {}
        }
    }

    /// On a CHECKPOINT beyond our window: if f+1 replicas vouch for a
    /// checkpoint that far ahead, the log that leads there is beyond reach
    /// (the others have collected it), so the transfer starts at once instead
    /// of at a status tick that finds this replica stuck.
    pub(super) fn transfer_if_far_behind(&mut self, out: &mut Outbox) {
        if self.transfer.is_some() {
            return;
        }
        let horizon = self.high_water_mark();
        if let Some((seq, digest, sources)) = self.transfer_target().filter(|(seq, _, _)| *seq > horizon) {
            self.start_transfer(seq, digest, sources, out);
        }
    }

    /// The highest checkpoint above our last executed batch that f+1 other
    /// replicas agree on, with those replicas.
    fn transfer_target(&self) -> Option<(SeqNo, Digest, Vec<ReplicaId>)> {
        self.checkpoints.transfer_target(self.executed.last(), self.cfg.f)
    }

    pub(super) fn start_transfer(&mut self, seq: SeqNo, digest: Digest, sources: Vec<ReplicaId>, out: &mut Outbox) {
        // Undo tentative execution: the tree is compared with the last checkpoint.
        self.machine.state_mut().clear_undo_mark();
        // Checkpoint 0 is taken at creation and the stable one is never discarded.
        self.machine.state_mut().rollback_to_last_checkpoint().expect("a replica always retains a checkpoint");
        self.executed.forget_tentative();
        let Some((base, _)) = self.machine.state().last_checkpoint() else { return };
        let depth = self.machine.state().shape().depth;
        let rotate = (self.id.index() + seq.0 as usize) % sources.len();
        // A transfer retargeted to a newer checkpoint keeps what it learned:
        // the pages it fetched (those the new tree still names are not fetched
        // again), the children of the nodes it walked (unchanged subtrees are
        // not walked again), and its requests in flight (their answers still
        // count where the new tree wants the same page). The state keeps
        // changing while a large transfer runs, and sources drop old
        // checkpoints as theirs become stable.
        let mut t = Transfer {
            seq,
            digest,
            sources,
            source: rotate,
            base,
            wanted: BTreeMap::new(),
            queue: BTreeSet::new(),
            requested: BTreeMap::new(),
            ticks: 0,
            pages: Vec::new(),
            carried: BTreeMap::new(),
            previous: BTreeMap::new(),
            children_known: BTreeMap::new(),
            discarded: false,
            interval: 0,
            moved_on_at: None,
            pages_fetched: 0,
        };
        match self.transfer.take() {
            None => out.push(Effect::StateTransferStarted { seq }),
            Some(old) => {
                t.ticks = old.ticks;
                t.interval = old.interval;
                t.moved_on_at = old.moved_on_at;
                t.pages_fetched = old.pages_fetched;
                t.children_known = old.children_known;
                t.carried = old.carried;
                t.carried.extend(old.pages);
                t.previous = old
                    .wanted
                    .into_iter()
                    .filter(|((level, _), _)| *level == depth)
                    .map(|(node, d)| (node.1, (d, old.requested.get(&node).copied())))
                    .collect();
            }
        }
        self.transfer = Some(t);
        self.metrics.state_transfers += 1;
        self.want(vec![((0, 0), digest)]);
        self.after_transfer_progress(out);
    }

    /// Adds nodes whose digests differ from our base checkpoint to the
    /// transfer: a page fetched earlier with that digest is taken as is, a
    /// node whose children are known is expanded at once, anything else is
    /// queued to be fetched (or counted as in flight, if an earlier target
    /// asked for that very page).
    fn want(&mut self, mut nodes: Vec<(Node, Digest)>) {
        let depth = self.machine.state().shape().depth;
        let fanout = self.machine.state().shape().fanout as u64;
        let Some(t) = self.transfer.as_mut() else { return };
        while let Some(((level, index), d)) = nodes.pop() {
            if level == depth {
                if let Some(page) = t.carried.remove(&index).filter(|(pd, _)| *pd == d) {
                    t.pages.push((index, page));
                    continue;
                }
                t.wanted.insert((level, index), d);
                match t.previous.get(&index) {
                    Some((pd, Some(at))) if *pd == d => {
                        t.requested.insert((level, index), *at);
                    }
                    _ => {
                        t.queue.insert((level, index));
                    }
                }
                continue;
            }
            match t.children_known.get(&(level, index)) {
                Some((node_digest, children)) if *node_digest == d => {
                    for (k, cd) in children.iter().enumerate() {
                        let child = index * fanout + k as u64;
                        // Beyond the state: an all-zero subtree, checked by the
                        // node's hash. Equal to ours: nothing to fetch.
                        if self.machine.state().contains_node(level + 1, child)
                            && self.machine.state().node_digest_at(t.base, level + 1, child).ok() != Some(*cd)
                        {
                            nodes.push(((level + 1, child), *cd));
                        }
                    }
                }
                _ => {
                    t.wanted.insert((level, index), d);
                    t.queue.insert((level, index));
                }
            }
        }
    }

    /// Sends FETCH for queued nodes while fewer than the window are in flight.
    fn request_wanted(&mut self, out: &mut Outbox) {
        let Some(t) = self.transfer.as_mut() else { return };
        let depth = self.machine.state().shape().depth;
        let mut fetches: Vec<(ReplicaId, Fetch)> = Vec::new();
        while t.requested.len() < FETCH_WINDOW {
            let Some(&key) = t.queue.first() else { break };
            // Consecutive pages go in one FETCH, up to PAGES_PER_FETCH.
            if let Some((_, last)) = fetches.last_mut() {
                let follows = key.0 == depth && last.level == depth && last.index + u64::from(last.count) == key.1;
                if follows && usize::from(last.count) < PAGES_PER_FETCH {
                    last.count += 1;
                    t.queue.pop_first();
                    t.requested.insert(key, t.ticks);
                    continue;
                }
            }
            // A new FETCH waits until a whole one fits in the window (or
            // what is left does), so that FETCHes stay large.
            let free = FETCH_WINDOW - t.requested.len();
            if free < PAGES_PER_FETCH && t.queue.len() > free {
                break;
            }
            t.queue.pop_first();
            t.requested.insert(key, t.ticks);
            let to = t.sources[(key.1 as usize / PAGES_PER_FETCH + t.source) % t.sources.len()];
            fetches.push((to, Fetch { seq: t.seq, level: key.0, index: key.1, count: 1 }));
        }
        for (to, f) in fetches {
            let bytes = self.keys.seal(&Message::Fetch(f), crate::auth::Audience::Replicas);
            out.send(Dest::Replica(to), bytes);
        }
    }

    /// At a status tick: requests unanswered for a whole interval are asked
    /// again, of the next source.
    fn retry_overdue(&mut self, out: &mut Outbox) {
        let Some(t) = self.transfer.as_mut() else { return };
        t.ticks += 1;
        let overdue: Vec<Node> = t.requested.iter().filter(|(_, at)| **at + 1 < t.ticks).map(|(k, _)| *k).collect();
        if !overdue.is_empty() {
            t.source = (t.source + 1) % t.sources.len();
            for k in overdue {
                t.requested.remove(&k);
                t.queue.insert(k);
            }
        }
        self.request_wanted(out);
    }

    pub(super) fn on_fetch(&mut self, now: Instant, from: ReplicaId, f: Fetch, out: &mut Outbox) {
        let budget = self.peers.fetch_budget(from, now, self.cfg.status_interval_us);
        if budget.left(FETCH_ANSWERS_PER_INTERVAL) == 0 {
            return self.metrics.drop(DropReason::RateLimited);
        }
        // Nodes and pages from the checkpoint asked for or, if we have
        // already discarded it, from our oldest one after it: the receiver
        // takes what did not change in between (most of it) as the answer,
        // and what did tells it that its target is gone, at once rather
        // than by a request left unanswered until a status tick.
        let Some(seq) = self.machine.state().retained_from(f.seq) else {
            return self.metrics.drop(DropReason::Unexpected);
        };
        let depth = self.machine.state().shape().depth;
        if f.level != depth {
            budget.spend(1);
            let reply = match self.machine.state().children_at(seq, f.level, f.index) {
                Ok(children) => Message::MetaData(MetaData { seq, level: f.level, index: f.index, children }),
                Err(_) => return self.metrics.drop(DropReason::Unexpected),
            };
            let bytes = self.keys.seal(&reply, crate::auth::Audience::Replicas);
            return out.send(Dest::Replica(from), bytes);
        }
        let count = usize::from(f.count).clamp(1, PAGES_PER_FETCH) as u64;
        let end = f.index.saturating_add(count).min(self.machine.state().num_pages()).max(f.index.saturating_add(1));
        let mut first = f.index;
        let mut zero: Option<Arc<Page>> = None;
        // One DATA for every PAGES_PER_DATA pages, while the budget lasts.
        while first < end && budget.left(FETCH_ANSWERS_PER_INTERVAL) > 0 {
            let left = u64::from(budget.left(FETCH_ANSWERS_PER_INTERVAL));
            let last = end.min(first + (PAGES_PER_DATA as u64).min(left));
            let mut pages = Vec::with_capacity((last - first) as usize);
            let mut digests = Vec::with_capacity(pages.capacity());
            // The pages are shared, not copied; the digests come from the
            // tree (the MAC covers them), so the pages are not hashed here.
            for index in first..last {
                match (self.machine.state().shared_page_at(seq, index), self.machine.state().node_digest_at(seq, depth, index)) {
                    (Ok(page), Ok(digest)) => {
                        pages.push(page.unwrap_or_else(|| zero.get_or_insert_with(|| Arc::new(ZERO_PAGE)).clone()));
                        digests.push(digest);
                    }
                    _ => return self.metrics.drop(DropReason::Unexpected),
                }
            }
            budget.spend(digests.len() as u32);
            let bytes = self.keys.seal(&Message::Data(Data { seq, index: first, pages, digests }), crate::auth::Audience::Replicas);
            out.send(Dest::Replica(from), bytes);
            first = last;
        }
        if first < end {
            self.metrics.drop(DropReason::RateLimited);
        }
    }

    /// Rejects a source that sent something that does not verify.
    fn reject_source(&mut self, from: ReplicaId, out: &mut Outbox) {
        self.metrics.drop(DropReason::Invalid);
        let Some(t) = self.transfer.as_mut() else { return };
        if t.sources.len() > 1 && t.sources.contains(&from) {
            t.sources.retain(|s| *s != from);
            t.source %= t.sources.len();
            // Whatever it was asked for is asked of the others.
            let requested = std::mem::take(&mut t.requested);
            t.queue.extend(requested.into_keys());
            self.request_wanted(out);
        }
    }

    pub(super) fn on_meta_data(&mut self, from: ReplicaId, m: MetaData, out: &mut Outbox) {
        let fanout = self.machine.state().shape().fanout as u64;
        let depth = self.machine.state().shape().depth;
        let Some(t) = self.transfer.as_mut() else { return self.metrics.drop(DropReason::Unexpected) };
        let Some(expected) = (m.seq >= t.seq).then(|| t.wanted.get(&(m.level, m.index))).flatten().copied() else {
            return self.metrics.drop(DropReason::Unexpected);
        };
        if m.level >= depth || m.children.len() as u64 != fanout {
            return self.reject_source(from, out);
        }
        let digest = PagedState::hash_children(m.level, &m.children);
        if digest != expected {
            if m.seq == t.seq {
                return self.reject_source(from, out);
            }
            // From a newer checkpoint, where the node changed: the source
            // has discarded the target. Its children are kept by their
            // digest (a newer target may want this very node).
            t.children_known.insert((m.level, m.index), (digest, m.children));
            self.metrics.drop(DropReason::Unexpected);
            return self.target_discarded(out);
        }
        t.wanted.remove(&(m.level, m.index));
        t.requested.remove(&(m.level, m.index));
        t.queue.remove(&(m.level, m.index));
        t.children_known.insert((m.level, m.index), (expected, m.children));
        self.want(vec![((m.level, m.index), expected)]);
        self.after_transfer_progress(out);
    }

    pub(super) fn on_data(&mut self, from: ReplicaId, d: Data, out: &mut Outbox) {
        let depth = self.machine.state().shape().depth;
        let Some(t) = self.transfer.as_mut() else { return self.metrics.drop(DropReason::Unexpected) };
        if d.pages.is_empty() || d.pages.len() > PAGES_PER_DATA || d.digests.len() != d.pages.len() {
            return self.reject_source(from, out);
        }
        // A page is taken by its digest, whatever checkpoint the DATA names:
        // one the current target wants, or one an earlier target wanted (an
        // answer that was in flight when the transfer retargeted). Pages
        // wanted by neither (a duplicate answer) are skipped; a page the
        // current target asked for with the wrong digest rejects the source.
        let mut accepted = Vec::new();
        let mut kept = 0;
        let mut newer = false;
        for (k, (page, digest)) in d.pages.into_iter().zip(d.digests).enumerate() {
            let index = d.index.saturating_add(k as u64);
            let wanted = t.wanted.get(&(depth, index)).copied();
            let previous = t.previous.get(&index).map(|(d, _)| *d);
            if wanted.is_none() && previous.is_none() {
                continue;
            }
            // The digest was computed when the DATA was decoded (the MAC covers it).
            if wanted == Some(digest) {
                accepted.push((index, (digest, page)));
            } else if previous == Some(digest) {
                t.previous.remove(&index);
                t.carried.insert(index, (digest, page));
                kept += 1;
            } else if d.seq == t.seq && wanted.is_some() {
                return self.reject_source(from, out);
            } else if d.seq > t.seq {
                // From a newer checkpoint, where the page changed: the
                // source has discarded the target. The page is kept by its
                // digest for a newer target.
                t.carried.insert(index, (digest, page));
                newer = true;
            }
        }
        if accepted.is_empty() && kept == 0 {
            if newer {
                self.metrics.drop(DropReason::Unexpected);
                return self.target_discarded(out);
            }
            return self.metrics.drop(DropReason::Duplicate);
        }
        let accepted_count = accepted.len();
        for (index, page) in accepted {
            t.wanted.remove(&(depth, index));
            // A wanted page is either queued or asked for, never both.
            if t.requested.remove(&(depth, index)).is_none() {
                t.queue.remove(&(depth, index));
            }
            t.previous.remove(&index);
            t.pages.push((index, page));
        }
        let verified = (accepted_count + kept) as u64;
        t.pages_fetched += verified;
        self.metrics.transfer_pages += verified;
        self.metrics.transfer_bytes += verified * PAGE_SIZE as u64;
        self.after_transfer_progress(out);
        if newer {
            self.target_discarded(out);
        }
    }

    /// A source answered from a checkpoint newer than the target with
    /// something the target does not have: it has discarded the target (as
    /// the others will), and what it is still asked for would wait a status
    /// tick to be found overdue. The transfer moves to the newest checkpoint
    /// f+1 vouch for now if there is one, or when one is certified.
    fn target_discarded(&mut self, out: &mut Outbox) {
        let Some(t) = self.transfer.as_mut() else { return };
        t.discarded = true;
        self.retarget_if_discarded(out);
    }

    /// Moves a transfer whose target the sources discarded to the newest
    /// checkpoint f+1 vouch for, if that is newer (on a CHECKPOINT, and
    /// when an answer shows the target gone), once a status interval at
    /// most; the status tick retargets as before.
    pub(super) fn retarget_if_discarded(&mut self, out: &mut Outbox) {
        let Some(t) = self.transfer.as_ref().filter(|t| t.discarded && t.moved_on_at != Some(t.interval)) else { return };
        let (current, interval) = (t.seq, t.interval);
        if let Some((seq, digest, sources)) = self.transfer_target().filter(|(seq, _, _)| *seq > current) {
            self.start_transfer(seq, digest, sources, out);
            if let Some(t) = self.transfer.as_mut() {
                t.moved_on_at = Some(interval);
            }
        }
    }

    fn after_transfer_progress(&mut self, out: &mut Outbox) {
        let done = self.transfer.as_ref().is_some_and(|t| t.wanted.is_empty());
        if !done {
            return self.request_wanted(out);
        }
        let Some(t) = self.transfer.take() else { return };
        // Every page was asked for by a leaf of the certified tree, so it lies in the state.
        let installed = self
            .machine
            .install(t.seq, t.pages.into_iter().map(|(i, (d, p))| (i, p, d)))
            .expect("fetched pages lie inside the state, above the last checkpoint");
        // Every page was checked against the certified tree, so the root matches.
        assert_eq!(installed, t.digest, "state transfer installed a state that does not match its checkpoint");
        // The last value is unknown after a transfer: the next batch's is
        // checked only against the clock.
        self.executed.jump_to(t.seq);
        // Read-only requests that waited for the old state go unanswered:
        // their clients retry.
        self.requests.take_read_only();
        self.log.discard_through(t.seq);
        // Our own CHECKPOINT for the installed state, and the votes we already have for it.
        let msg = Message::Checkpoint(Checkpoint { seq: t.seq, state_digest: t.digest });
        let raw = self.multicast(&msg, out);
        self.checkpoints.installed(self.log.low_water_mark(), t.seq, t.digest, raw);
        out.push(Effect::StateTransferred { seq: t.seq, digest: t.digest, pages: t.pages_fetched });
        self.proposer.skip_past(t.seq);
        self.check_stable(t.seq, out);
        self.try_execute(out);
    }
}
