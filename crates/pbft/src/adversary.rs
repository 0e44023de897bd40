//! Byzantine behaviour for tests: rewrites of what a faulty replica sends.
//!
//! Compiled only with the `adversary` feature. A faulty replica runs the real
//! replica code with its real keys; its host passes every outgoing datagram
//! through a [`Liar`], which can lie with valid MACs (wrong digests, wrong
//! checkpoints, wrong results to clients, commits before it is prepared) or
//! forge (corrupted MACs, messages in another replica's name). The simulator and
//! the real runtime (`pbft replica --faulty ...`) share this one implementation.
//! Randomness comes from a seed, so the core stays deterministic.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::auth::{Audience, KeyTable};
use crate::config::Config;
use crate::types::{Digest, NodeId, ReplicaId};
use crate::wire::{self, Checkpoint, Commit, Message, Prepare, Reply, ReplyBody, TAG_LEN};

/// The lies a [`Liar`] tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// Corrupts the MACs of everything it sends, and sends each message again
    /// in another replica's name.
    ForgeMacs,
    /// PREPARE and COMMIT carry random digests.
    WrongDigests,
    /// CHECKPOINT carries a random state digest.
    LyingCheckpoints,
    /// Replies to clients carry a made-up result, always in full.
    WrongReplies,
    /// Sends COMMIT together with PREPARE, before it is prepared.
    EagerCommit,
}

/// Rewrites a faulty replica's outgoing datagrams.
pub struct Liar {
    lie: Lie,
    keys: KeyTable,
    n: usize,
    rng: u64,
}

/// Encodes `message` as sent by `sender` with `tags` random MACs: a forgery,
/// which no correct node accepts.
pub fn forge(sender: NodeId, message: &Message, tags: usize, mut random: impl FnMut() -> u64) -> Bytes {
    let (mut buf, at) = wire::encode_unauthenticated(sender, message, tags);
    for i in 0..tags * TAG_LEN {
        buf[at + 1 + i] = random() as u8;
    }
    buf.freeze()
}

/// The result a replica telling [`Lie::WrongReplies`] sends.
pub const FORGED_RESULT: &[u8] = b"forged-result";

impl Liar {
    /// A liar with the faulty replica's own keys, in a cluster of `n`.
    pub fn new(lie: Lie, keys: KeyTable, n: usize, seed: u64) -> Liar {
        Liar { lie, keys, n, rng: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: enough for lies, and deterministic.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn random_digest(&mut self) -> Digest {
        let mut d = [0u8; 32];
        for chunk in d.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        Digest(d)
    }

    fn forge(&mut self, sender: NodeId, message: &Message, tags: usize) -> Bytes {
        forge(sender, message, tags, || self.next())
    }

    /// What the faulty replica sends instead of `bytes` (to the same destination).
    pub fn rewrite(&mut self, bytes: Bytes, max_message_bytes: usize) -> Vec<Bytes> {
        let Ok(env) = wire::decode(bytes.clone(), max_message_bytes) else { return vec![bytes] };
        let audience = match env.message {
            Message::Reply(ref r) => Audience::One(NodeId::Client(r.client)),
            _ => Audience::Replicas,
        };
        match (self.lie, env.message) {
            (Lie::ForgeMacs, message) => {
                let own = self.forge(env.sender, &message, env.tags.len());
                let other = NodeId::Replica(ReplicaId((self.next() % self.n as u64) as u16));
                let forged = self.forge(other, &message, env.tags.len());
                vec![own, forged]
            }
            (Lie::WrongDigests, Message::Prepare(p)) => {
                let digest = self.random_digest();
                vec![self.keys.seal(&Message::Prepare(Prepare { digest, ..p }), audience)]
            }
            (Lie::WrongDigests, Message::Commit(c)) => {
                let digest = self.random_digest();
                vec![self.keys.seal(&Message::Commit(Commit { digest, ..c }), audience)]
            }
            (Lie::LyingCheckpoints, Message::Checkpoint(c)) => {
                let state_digest = self.random_digest();
                vec![self.keys.seal(&Message::Checkpoint(Checkpoint { state_digest, ..c }), audience)]
            }
            (Lie::WrongReplies, Message::Reply(r)) => {
                let forged = Reply { body: ReplyBody::Full(Bytes::from_static(FORGED_RESULT)), ..r };
                vec![self.keys.seal(&Message::Reply(forged), audience)]
            }
            (Lie::EagerCommit, Message::Prepare(p)) => {
                let commit = Commit { view: p.view, seq: p.seq, digest: p.digest };
                vec![bytes, self.keys.seal(&Message::Commit(commit), audience)]
            }
            _ => vec![bytes],
        }
    }
}

/// How long a slow primary holds each PRE-PREPARE: 90% of the view-change
/// timeout, just under what would make a backup suspect it (the papers'
/// known weak spot). The simulator and `pbft replica --faulty slow-primary`
/// both use it.
pub fn slow_primary_hold_us(cfg: &Config) -> u64 {
    cfg.view_change_timeout_us * 9 / 10
}

/// The PRE-PREPAREs a slow primary holds, each with where it goes (`T`: a
/// host's destination), in the order they are due.
#[derive(Debug)]
pub struct HeldPrePrepares<T> {
    held: VecDeque<(u64, T, Bytes)>,
}

impl<T> Default for HeldPrePrepares<T> {
    fn default() -> Self {
        HeldPrePrepares { held: VecDeque::new() }
    }
}

impl<T> HeldPrePrepares<T> {
    /// Holds `bytes` for `to` if it is a PRE-PREPARE, until `now_us` plus
    /// [`slow_primary_hold_us`]; gives anything else back.
    pub fn hold(&mut self, now_us: u64, cfg: &Config, to: T, bytes: Bytes) -> Option<(T, Bytes)> {
        if wire::claimed_kind(&bytes) != Some(wire::Kind::PrePrepare) {
            return Some((to, bytes));
        }
        self.held.push_back((now_us + slow_primary_hold_us(cfg), to, bytes));
        None
    }

    /// When the next held PRE-PREPARE is due.
    pub fn next_release_us(&self) -> Option<u64> {
        self.held.front().map(|(at, _, _)| *at)
    }

    /// The held PRE-PREPAREs due at `now_us`, in order.
    pub fn release_due(&mut self, now_us: u64) -> Vec<(T, Bytes)> {
        let mut due = Vec::new();
        while self.held.front().is_some_and(|(at, _, _)| *at <= now_us) {
            if let Some((_, to, bytes)) = self.held.pop_front() {
                due.push((to, bytes));
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::public_key;
    use crate::types::{SeqNo, View};
    use crate::wire::PrePrepare;

    #[test]
    fn a_slow_primary_holds_pre_prepares_only_and_releases_them_in_order() {
        let cfg = Config::new(1);
        let secret = [9u8; 32];
        let keys = KeyTable::from_static_dh(NodeId::Replica(ReplicaId(0)), &secret, &[public_key(&secret); 4], &[]);
        let pp = |seq| keys.seal(&Message::PrePrepare(PrePrepare { view: View(0), seq: SeqNo(seq), nondet_time_us: 1, entries: vec![] }), Audience::Replicas);
        let prepare = keys.seal(&Message::Prepare(Prepare { view: View(0), seq: SeqNo(1), digest: Digest([1; 32]) }), Audience::Replicas);
        let mut held = HeldPrePrepares::default();
        assert_eq!(held.hold(1_000, &cfg, 'a', prepare.clone()), Some(('a', prepare)), "only PRE-PREPAREs are held");
        assert!(held.hold(1_000, &cfg, 'b', pp(1)).is_none());
        assert!(held.hold(2_000, &cfg, 'c', pp(2)).is_none());
        let hold = slow_primary_hold_us(&cfg);
        assert_eq!(hold, 270_000);
        assert_eq!(held.next_release_us(), Some(1_000 + hold));
        assert!(held.release_due(1_000 + hold - 1).is_empty());
        assert_eq!(held.release_due(2_000 + hold).into_iter().map(|(t, _)| t).collect::<Vec<_>>(), vec!['b', 'c']);
        assert_eq!(held.next_release_us(), None);
    }
}
