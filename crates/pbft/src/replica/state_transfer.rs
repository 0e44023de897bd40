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
//! This is the simple version needed for liveness in the normal case; fetching
//! while the service keeps changing, META-DATA-D and restart from disk come with
//! the view-change and state-transfer issue.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::Replica;
use crate::effects::{Dest, Effect, Outbox};
use crate::metrics::DropReason;
use crate::service::{ReadContext, Service, StateRegionRef};
use crate::state::{PagedState, Page, PAGE_SIZE};
use crate::types::{Digest, Instant, ReplicaId, SeqNo};
use crate::wire::{Checkpoint, Data, Fetch, Message, MetaData};

/// Requests outstanding at once during a transfer, counted in nodes and pages
/// (3 MiB of pages, within the 4 MiB socket buffer a node asks for; measured:
/// 97 MiB/s with 256, 132 MiB/s with 768 for a 256 MiB state).
const FETCH_WINDOW: usize = 768;
/// Consecutive pages asked for in one FETCH and sent back in one DATA (60 KiB,
/// within one datagram): a datagram per page made the transfer syscall-bound.
pub const PAGES_PER_DATA: usize = 15;
/// FETCH answers one replica gets per status interval (at the default 100 ms,
/// up to 160 MiB/s of pages from each source): enough for a fast transfer,
/// bounded so that a Byzantine replica cannot make a source do more.
const FETCH_ANSWERS_PER_INTERVAL: u32 = 4096;

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
    wanted: BTreeMap<(u32, u64), Digest>,
    /// Of `wanted`, those requested from the current source.
    requested: BTreeSet<(u32, u64)>,
    pages: BTreeMap<u64, Box<Page>>,
    /// Pages fetched for an earlier target of this transfer.
    carried: BTreeMap<u64, Box<Page>>,
    pub(super) pages_fetched: u64,
}

/// Per-peer budget for answering FETCH.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FetchBudget {
    window_start: Instant,
    answered: u32,
}

impl<S: Service> Replica<S> {
    /// Checks, at each status tick, whether this replica is stuck behind a
    /// checkpoint that f+1 others vouch for; if so it starts a transfer.
    pub(super) fn maybe_start_transfer(&mut self, out: &mut Outbox) {
        let stuck = self.last_executed == self.executed_at_last_tick;
        self.executed_at_last_tick = self.last_executed;
        if !stuck && self.transfer.is_none() {
            return;
        }
        // The highest checkpoint above our last executed batch that f+1 other
        // replicas agree on.
        // Votes come from the checkpoint records inside the window and from each
        // replica's latest announcement (which may lie beyond it).
        let mut tally: BTreeMap<(SeqNo, Digest), BTreeSet<ReplicaId>> = BTreeMap::new();
        for (seq, votes) in self.checkpoints.range(self.last_executed.next()..) {
            for (r, (d, _)) in &votes.votes {
                tally.entry((*seq, *d)).or_default().insert(*r);
            }
        }
        for (r, (seq, d)) in &self.latest_checkpoint_votes {
            if *seq > self.last_executed {
                tally.entry((*seq, *d)).or_default().insert(*r);
            }
        }
        let target = tally.into_iter().rev().find(|(_, voters)| voters.len() > self.cfg.f);
        match (target, self.transfer.as_ref()) {
            // A newer certified checkpoint replaces the target: sources may have
            // discarded the old one.
            (Some(((seq, digest), sources)), t) if t.is_none_or(|t| seq > t.seq) => {
                self.start_transfer(seq, digest, sources.into_iter().collect(), out)
            }
            (_, Some(_)) => self.request_wanted(true, out),
            _ => {}
        }
    }

    pub(super) fn start_transfer(&mut self, seq: SeqNo, digest: Digest, sources: Vec<ReplicaId>, out: &mut Outbox) {
        // Undo tentative execution: the tree is compared with the last checkpoint.
        self.state.clear_undo_mark();
        if self.state.rollback_to_last_checkpoint().is_err() {
            return self.metrics.drop(DropReason::Invalid);
        }
        self.tentative = None;
        let Some((base, _)) = self.state.last_checkpoint() else { return };
        let mut wanted = BTreeMap::new();
        wanted.insert((0, 0), digest);
        let rotate = (self.id.index() + seq.0 as usize) % sources.len();
        // A transfer retargeted to a newer checkpoint keeps the pages it
        // fetched: those the new tree still names are not fetched again. The
        // state keeps changing while a large transfer runs, and sources drop
        // old checkpoints as theirs become stable.
        let carried = self.transfer.take().map(|t| t.pages).unwrap_or_default();
        self.transfer = Some(Transfer {
            seq,
            digest,
            sources,
            source: rotate,
            base,
            wanted,
            requested: BTreeSet::new(),
            pages: BTreeMap::new(),
            carried,
            pages_fetched: 0,
        });
        self.metrics.state_transfers += 1;
        self.request_wanted(false, out);
    }

    /// Sends FETCH for wanted nodes, up to the window. On `retry`, what was
    /// requested and has not come is asked of the next source.
    fn request_wanted(&mut self, retry: bool, out: &mut Outbox) {
        let Some(t) = self.transfer.as_mut() else { return };
        if retry && !t.requested.is_empty() {
            t.source = (t.source + 1) % t.sources.len();
            t.requested.clear();
        }
        let depth = self.state.shape().depth;
        let mut fetches: Vec<(ReplicaId, Fetch)> = Vec::new();
        for key in t.wanted.keys() {
            if t.requested.len() >= FETCH_WINDOW {
                break;
            }
            if !t.requested.insert(*key) {
                continue;
            }
            // Consecutive pages go in one FETCH, up to a datagram's worth.
            if let Some((_, last)) = fetches.last_mut() {
                let follows = key.0 == depth && last.level == depth && last.index + u64::from(last.count) == key.1;
                if follows && usize::from(last.count) < PAGES_PER_DATA {
                    last.count += 1;
                    continue;
                }
            }
            let to = t.sources[(key.1 as usize / PAGES_PER_DATA + t.source) % t.sources.len()];
            fetches.push((to, Fetch { seq: t.seq, level: key.0, index: key.1, count: 1 }));
        }
        for (to, f) in fetches {
            let bytes = self.keys.seal(&Message::Fetch(f), crate::auth::Audience::Replicas);
            out.send(Dest::Replica(to), bytes);
        }
    }

    pub(super) fn on_fetch(&mut self, now: Instant, from: ReplicaId, f: Fetch, out: &mut Outbox) {
        let budget = self.fetch_budget.entry(from).or_default();
        if now.as_us() >= budget.window_start.as_us() + self.cfg.status_interval_us {
            *budget = FetchBudget { window_start: now, answered: 0 };
        }
        if budget.answered >= FETCH_ANSWERS_PER_INTERVAL {
            return self.metrics.drop(DropReason::RateLimited);
        }
        let depth = self.state.shape().depth;
        let reply = if f.level == depth {
            let count = usize::from(f.count).clamp(1, PAGES_PER_DATA) as u64;
            let last = f.index.saturating_add(count).min(self.state.num_pages());
            let mut pages = Vec::with_capacity(count as usize * PAGE_SIZE);
            for index in f.index..last.max(f.index.saturating_add(1)) {
                match self.state.page_at(f.seq, index) {
                    Ok(page) => pages.extend_from_slice(page),
                    Err(_) => return self.metrics.drop(DropReason::Unexpected),
                }
            }
            budget.answered += (pages.len() / PAGE_SIZE) as u32;
            Message::Data(Data { seq: f.seq, index: f.index, page: Bytes::from(pages) })
        } else {
            budget.answered += 1;
            match self.state.children_at(f.seq, f.level, f.index) {
                Ok(children) => Message::MetaData(MetaData { seq: f.seq, level: f.level, index: f.index, children }),
                Err(_) => return self.metrics.drop(DropReason::Unexpected),
            }
        };
        let bytes = self.keys.seal(&reply, crate::auth::Audience::Replicas);
        out.send(Dest::Replica(from), bytes);
    }

    /// Rejects a source that sent something that does not verify.
    fn reject_source(&mut self, from: ReplicaId, out: &mut Outbox) {
        self.metrics.drop(DropReason::Invalid);
        let Some(t) = self.transfer.as_mut() else { return };
        if t.sources.len() > 1 {
            t.sources.retain(|s| *s != from);
            t.source %= t.sources.len();
            t.requested.clear();
            self.request_wanted(false, out);
        }
    }

    pub(super) fn on_meta_data(&mut self, from: ReplicaId, m: MetaData, out: &mut Outbox) {
        let fanout = self.state.shape().fanout as u64;
        let depth = self.state.shape().depth;
        let Some(t) = self.transfer.as_mut() else { return self.metrics.drop(DropReason::Unexpected) };
        let Some(expected) = (m.seq == t.seq).then(|| t.wanted.get(&(m.level, m.index))).flatten().copied() else {
            return self.metrics.drop(DropReason::Unexpected);
        };
        if m.level >= depth || m.children.len() as u64 != fanout || PagedState::hash_children(m.level, &m.children) != expected {
            return self.reject_source(from, out);
        }
        t.wanted.remove(&(m.level, m.index));
        t.requested.remove(&(m.level, m.index));
        let base = t.base;
        let mut differing = Vec::new();
        for (k, d) in m.children.iter().enumerate() {
            let child = m.index * fanout + k as u64;
            if !self.state.contains_node(m.level + 1, child) {
                continue; // beyond the state: an all-zero subtree, checked by the hash above
            }
            let mine = self.state.node_digest_at(base, m.level + 1, child).ok();
            if mine != Some(*d) {
                differing.push(((m.level + 1, child), *d));
            }
        }
        let t = self.transfer.as_mut().expect("checked above");
        for ((level, index), d) in differing {
            // A page fetched for an earlier target that the new tree names.
            if level == depth {
                if let Some(page) = t.carried.remove(&index).filter(|p| PagedState::page_digest(p) == d) {
                    t.pages.insert(index, page);
                    continue;
                }
            }
            t.wanted.insert((level, index), d);
        }
        self.after_transfer_progress(out);
    }

    pub(super) fn on_data(&mut self, from: ReplicaId, d: Data, out: &mut Outbox) {
        let depth = self.state.shape().depth;
        let Some(t) = self.transfer.as_mut() else { return self.metrics.drop(DropReason::Unexpected) };
        if d.seq != t.seq {
            return self.metrics.drop(DropReason::Unexpected);
        }
        if d.page.is_empty() || !d.page.len().is_multiple_of(PAGE_SIZE) || d.page.len() / PAGE_SIZE > PAGES_PER_DATA {
            return self.reject_source(from, out);
        }
        // Every page must be one we want, with the digest we expect; pages we
        // no longer want (a duplicate answer) are skipped.
        let mut accepted = Vec::new();
        for (k, chunk) in d.page.chunks_exact(PAGE_SIZE).enumerate() {
            let index = d.index.saturating_add(k as u64);
            let Some(expected) = t.wanted.get(&(depth, index)).copied() else { continue };
            let page = <&Page>::try_from(chunk).expect("chunks are page-sized");
            if PagedState::page_digest(page) != expected {
                return self.reject_source(from, out);
            }
            accepted.push((index, Box::new(*page)));
        }
        if accepted.is_empty() {
            return self.metrics.drop(DropReason::Duplicate);
        }
        for (index, page) in accepted {
            t.wanted.remove(&(depth, index));
            t.requested.remove(&(depth, index));
            t.pages.insert(index, page);
            t.pages_fetched += 1;
            self.metrics.transfer_pages += 1;
            self.metrics.transfer_bytes += PAGE_SIZE as u64;
        }
        self.after_transfer_progress(out);
    }

    fn after_transfer_progress(&mut self, out: &mut Outbox) {
        let done = self.transfer.as_ref().is_some_and(|t| t.wanted.is_empty());
        if !done {
            return self.request_wanted(false, out);
        }
        let Some(t) = self.transfer.take() else { return };
        self.needs_transfer = false;
        for (index, page) in &t.pages {
            if self.state.replace_page(*index, page).is_err() {
                return self.metrics.drop(DropReason::Invalid);
            }
        }
        let installed = match self.state.take_checkpoint(t.seq) {
            Ok(d) => d,
            Err(_) => return self.metrics.drop(DropReason::Invalid),
        };
        // Every page was checked against the certified tree, so the root matches.
        assert_eq!(installed, t.digest, "state transfer installed a state that does not match its checkpoint");
        {
            let region = StateRegionRef::new(&self.state, self.service_first_page(), self.service_pages()).expect("service region is inside the state");
            self.service.state_replaced(&ReadContext { client: crate::types::ClientId(0), state: region });
        }
        self.last_executed = t.seq;
        self.executed_at_last_tick = t.seq;
        // Unknown after a transfer; the next batch's value is checked only against the clock.
        self.last_executed_nondet_us = 0;
        self.tentative = None;
        self.read_only_queue.clear();
        self.log = self.log.split_off(&t.seq.next());
        self.awaiting.retain(|(_, seq)| *seq > t.seq);
        let low = self.low_water_mark;
        self.checkpoints.retain(|seq, _| *seq == low || *seq > t.seq);
        // Our own CHECKPOINT for the installed state, and the votes we already have for it.
        let msg = Message::Checkpoint(Checkpoint { seq: t.seq, state_digest: t.digest });
        let raw = self.multicast(&msg, out);
        let votes: Vec<(ReplicaId, Digest)> =
            self.latest_checkpoint_votes.iter().filter(|(_, (s, _))| *s == t.seq).map(|(r, (_, d))| (*r, *d)).collect();
        let record = self.checkpoints.entry(t.seq).or_default();
        record.mine = Some((t.digest, raw));
        for (r, d) in votes {
            record.votes.entry(r).or_insert((d, Bytes::new()));
        }
        out.push(Effect::StateTransferred { seq: t.seq, digest: t.digest, pages: t.pages_fetched });
        if self.next_seq <= t.seq {
            self.next_seq = t.seq.next();
        }
        self.check_stable(t.seq, out);
        self.try_execute(out);
    }

    pub(super) fn service_first_page(&self) -> u64 {
        self.reply_slot_pages * self.cfg.max_clients as u64
    }

    pub(super) fn service_pages(&self) -> u64 {
        self.state.num_pages() - self.service_first_page()
    }
}
