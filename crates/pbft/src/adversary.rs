//! Byzantine behaviour for tests: rewrites of what a faulty replica sends.
//!
//! Compiled only with the `adversary` feature. A faulty replica runs the real
//! replica code with its real keys; its host passes every outgoing datagram
//! through a [`Liar`], which can lie with valid MACs (wrong digests, wrong
//! checkpoints, wrong results to clients, commits before it is prepared) or
//! forge (corrupted MACs, messages in another replica's name). The simulator and
//! the real runtime (`pbft replica --faulty ...`) share this one implementation.
//! Randomness comes from a seed, so the core stays deterministic.

use bytes::Bytes;

use crate::auth::{Audience, KeyTable};
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
