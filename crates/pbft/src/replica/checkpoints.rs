//! The checkpoint records of a replica (TOCS 2002 §4.3): for each checkpoint
//! sequence number in the window, this replica's own digest (and the
//! CHECKPOINT it sent) and the votes of every replica; and each replica's
//! latest announced checkpoint, which may lie beyond the window and tells a
//! replica that fell behind where to transfer state to.
//!
//! Invariants ([`Checkpoints::check_invariants`]): records are kept only for
//! multiples of K, at most L/K + 1 of them, none below the stable checkpoint;
//! a replica's own vote in a record is its own digest; the stable
//! checkpoint's record is kept, and if it holds anyone's vote but this
//! replica's, 2f+1 replicas vouched for its digest.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::tally::{Inserted, Tally};
use crate::types::{Digest, ReplicaId, SeqNo};

/// One checkpoint: this replica's digest and CHECKPOINT, and every replica's vote.
#[derive(Clone, Debug, Default)]
struct Record {
    mine: Option<(Digest, Bytes)>,
    votes: Tally<Digest>,
}

/// Checkpoint records and latest announcements.
#[derive(Debug)]
pub(super) struct Checkpoints {
    me: ReplicaId,
    records: BTreeMap<SeqNo, Record>,
    /// The latest checkpoint each replica announced.
    latest: Tally<(SeqNo, Digest)>,
}

impl Checkpoints {
    pub(super) fn new(me: ReplicaId) -> Checkpoints {
        Checkpoints { me, records: BTreeMap::new(), latest: Tally::new() }
    }

    /// This replica took checkpoint `n` with `digest` and sent `raw`.
    pub(super) fn record_mine(&mut self, n: SeqNo, digest: Digest, raw: Bytes) {
        let record = self.records.entry(n).or_default();
        record.mine = Some((digest, raw));
        record.votes.insert(self.me, digest);
    }

    /// This replica's digest of checkpoint `n`, if it took it.
    pub(super) fn mine(&self, n: SeqNo) -> Option<Digest> {
        self.records.get(&n).and_then(|r| r.mine.as_ref()).map(|(d, _)| *d)
    }

    /// Notes `from`'s announcement of checkpoint `n`, if later than its last.
    pub(super) fn note_latest(&mut self, from: ReplicaId, n: SeqNo, digest: Digest) {
        if self.latest.get(from).is_none_or(|(seq, _)| n > *seq) {
            self.latest.insert(from, (n, digest));
        }
    }

    /// Records `from`'s vote for checkpoint `n`; its first vote stands.
    pub(super) fn add_vote(&mut self, from: ReplicaId, n: SeqNo, digest: Digest) -> Inserted {
        self.records.entry(n).or_default().votes.insert_first(from, digest)
    }

    /// Whether f+1 replicas announced the same checkpoint at `n`: at least
    /// one correct replica executed up to `n`, so the batch at `n` committed.
    pub(super) fn proves_commit(&self, n: SeqNo, f: usize) -> bool {
        self.records.get(&n).is_some_and(|r| r.votes.weak_certificate(f).is_some())
    }

    /// This replica's digest of `n` if 2f+1 replicas (itself included) vouch for it.
    pub(super) fn certified_mine(&self, n: SeqNo, f: usize) -> Option<Digest> {
        let record = self.records.get(&n)?;
        let (digest, _) = record.mine.as_ref()?;
        record.votes.certifies(digest, f).then_some(*digest)
    }

    /// A checkpoint at `n` became stable: records below it go (its own
    /// stays: it proves the state to peers).
    pub(super) fn discard_below(&mut self, n: SeqNo) {
        self.records = self.records.split_off(&n);
    }

    /// A state transfer installed checkpoint `n` (with `digest`, announced as
    /// `raw`): records between the stable checkpoint `stable` and `n` are of
    /// no use, and the announcements already heard for `n` count as votes.
    pub(super) fn installed(&mut self, stable: SeqNo, n: SeqNo, digest: Digest, raw: Bytes) {
        self.records.retain(|seq, _| *seq == stable || *seq > n);
        self.record_mine(n, digest, raw);
        let heard: Vec<(ReplicaId, Digest)> =
            self.latest.iter().filter(|(_, (s, _))| *s == n).map(|(r, (_, d))| (r, *d)).collect();
        let record = self.records.entry(n).or_default();
        for (r, d) in heard {
            record.votes.insert_first(r, d);
        }
    }

    /// The CHECKPOINTs this replica sent for checkpoints after `n`.
    pub(super) fn mine_after(&self, n: SeqNo) -> impl Iterator<Item = &Bytes> {
        self.records.range(n.next()..).filter_map(|(_, r)| r.mine.as_ref().map(|(_, raw)| raw))
    }

    /// The highest checkpoint above `executed` that f+1 replicas vouch for
    /// (in a record inside the window, or as their latest announcement,
    /// which may lie beyond it), with those replicas.
    pub(super) fn transfer_target(&self, executed: SeqNo, f: usize) -> Option<(SeqNo, Digest, Vec<ReplicaId>)> {
        let mut by_seq: BTreeMap<SeqNo, Tally<Digest>> = BTreeMap::new();
        for (seq, record) in self.records.range(executed.next()..) {
            by_seq.insert(*seq, record.votes.clone());
        }
        for (r, (seq, d)) in self.latest.iter() {
            if *seq > executed {
                by_seq.entry(*seq).or_default().insert_first(r, *d);
            }
        }
        by_seq.into_iter().rev().find_map(|(seq, votes)| {
            let digest = votes.weak_certificate(f)?;
            let voters = votes.iter().filter(|(_, d)| **d == digest).map(|(r, _)| r).collect();
            Some((seq, digest, voters))
        })
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// For failure reports: the record sequence numbers and the latest announcements.
    pub(super) fn describe(&self) -> String {
        format!(
            "checkpoints={:?} votes={:?}",
            self.records.keys().map(|k| k.0).collect::<Vec<_>>(),
            self.latest.iter().map(|(r, (s, d))| (r.0, s.0, *d)).collect::<Vec<_>>()
        )
    }

    /// Checks the module's invariants, given the stable checkpoint and K, L, f.
    pub(super) fn check_invariants(&self, stable: SeqNo, interval: u64, window: u64, f: usize) -> Result<(), String> {
        if let Some(n) = self.records.keys().find(|n| !n.0.is_multiple_of(interval)) {
            return Err(format!("a checkpoint record at {}, not a multiple of K = {interval}", n.0));
        }
        if self.records.len() as u64 > window / interval + 1 {
            return Err(format!("{} checkpoint records, more than L/K + 1", self.records.len()));
        }
        if let Some(n) = self.records.keys().next().filter(|n| **n < stable) {
            return Err(format!("a checkpoint record at {} below the stable checkpoint {}", n.0, stable.0));
        }
        for (n, record) in &self.records {
            let mine = record.mine.as_ref().map(|(d, _)| *d);
            if record.votes.get(self.me).copied() != mine && mine.is_some() {
                return Err(format!("checkpoint {}: this replica's vote is not its own digest", n.0));
            }
        }
        if stable > SeqNo(0) {
            let record = self.records.get(&stable).ok_or_else(|| format!("the stable checkpoint {}'s record is gone", stable.0))?;
            let (digest, _) = record.mine.as_ref().ok_or("the stable checkpoint is not one this replica took")?;
            if record.votes.len() > 1 && !record.votes.certifies(digest, f) {
                return Err(format!("the stable checkpoint {} has a digest fewer than 2f+1 replicas vouched for", stable.0));
            }
        }
        Ok(())
    }
}
