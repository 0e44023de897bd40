//! Byzantine replicas, for tests: every way a faulty replica misbehaves, in one
//! place that the simulator and the real runtime (`pbft replica --faulty NAME`,
//! `bfs replica --faulty NAME`) share.
//!
//! A faulty replica runs the real replica code with its real keys. Its host
//! passes every datagram the replica sends through [`Adversary::outbound`],
//! which can lie with valid MACs (wrong digests, wrong checkpoints, wrong
//! results to clients, commits before it is prepared, equivocation, made-up
//! view changes, corrupt state), forge (corrupted MACs, messages in another
//! replica's name) or hold messages back; [`Adversary::tick`] sends what it makes
//! up of its own accord (replays, floods, view changes ahead of time).
//! Randomness comes from a seed, so the core stays deterministic and the
//! simulator replays a seed byte for byte.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::auth::{Audience, KeyTable};
use crate::config::Config;
use crate::replica::Replica;
use crate::service::Service;
use crate::state::PAGE_SIZE;
use crate::types::{Digest, NodeId, ReplicaId, SeqNo, View};
use crate::wire::{
    self, Checkpoint, Commit, Data, Message, MetaData, NewView, Prepare, PrePrepare, Reply, ReplyBody, Status, VcEntry,
    ViewChange, ViewChangeAck, TAG_LEN,
};

/// How a faulty replica misbehaves. One enum for the simulator's scenarios and
/// the command lines' `--faulty` (by [`FaultyMode::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultyMode {
    /// Receives everything and sends nothing (a crashed or partitioned replica
    /// that still holds its port).
    Silent,
    /// Corrupts the MACs of everything it sends, and sends each message again
    /// in another replica's name.
    ForgeMacs,
    /// Sends PREPARE and COMMIT with random digests, with valid MACs.
    WrongDigests,
    /// Sends CHECKPOINT with random state digests, with valid MACs.
    LyingCheckpoints,
    /// Replays old messages, its own and others', to random replicas.
    Replay,
    /// Floods replicas with garbage and with well-authenticated junk.
    Flood,
    /// Sends clients a made-up result, always in full, with valid MACs.
    WrongReplies,
    /// Sends COMMIT together with PREPARE, before it is prepared.
    EagerCommit,
    /// As primary, sends half the backups one pre-prepare and the other half
    /// another (a different non-deterministic value, so a different digest).
    Equivocate,
    /// As primary, sends each pre-prepare one sequence number too far.
    SkipSeq,
    /// As primary, proposes non-deterministic values far in the future.
    BadNondet,
    /// As primary, holds every pre-prepare for 90% of the view-change timeout
    /// before sending it: the slowest primary the backups put up with.
    SlowPrimary,
    /// Claims prepared batches that never were in its VIEW-CHANGE (just above
    /// the stable checkpoint, and just above anything really prepared), acks
    /// digests it never saw, and names made-up messages in its NEW-VIEW. As
    /// primary it withholds pre-prepares, so that views do change.
    LyingViewChange,
    /// Sends a VIEW-CHANGE whose MAC is right for the new primary only, which
    /// may then name it in NEW-VIEW only if it does not wait for acks. As
    /// primary it withholds pre-prepares, so that views do change.
    PrivateViewChange,
    /// Answers state-transfer requests with corrupt pages and made-up digests.
    LyingTransfer,
}

impl FaultyMode {
    /// Every mode, as the command lines name them.
    pub const ALL: [FaultyMode; 15] = [
        FaultyMode::Silent,
        FaultyMode::ForgeMacs,
        FaultyMode::WrongDigests,
        FaultyMode::LyingCheckpoints,
        FaultyMode::Replay,
        FaultyMode::Flood,
        FaultyMode::WrongReplies,
        FaultyMode::EagerCommit,
        FaultyMode::Equivocate,
        FaultyMode::SkipSeq,
        FaultyMode::BadNondet,
        FaultyMode::SlowPrimary,
        FaultyMode::LyingViewChange,
        FaultyMode::PrivateViewChange,
        FaultyMode::LyingTransfer,
    ];

    /// The modes that matter in any replica (the simulator picks from these
    /// for faulty backups).
    pub const ANY_REPLICA: [FaultyMode; 9] = [
        FaultyMode::Silent,
        FaultyMode::ForgeMacs,
        FaultyMode::WrongDigests,
        FaultyMode::LyingCheckpoints,
        FaultyMode::Replay,
        FaultyMode::Flood,
        FaultyMode::WrongReplies,
        FaultyMode::EagerCommit,
        FaultyMode::LyingTransfer,
    ];

    /// The modes that matter most in a primary.
    pub const PRIMARY: [FaultyMode; 11] = [
        FaultyMode::Silent,
        FaultyMode::ForgeMacs,
        FaultyMode::WrongDigests,
        FaultyMode::Equivocate,
        FaultyMode::SkipSeq,
        FaultyMode::BadNondet,
        FaultyMode::SlowPrimary,
        FaultyMode::LyingViewChange,
        FaultyMode::PrivateViewChange,
        FaultyMode::LyingCheckpoints,
        FaultyMode::LyingTransfer,
    ];

    /// The mode's name on a command line (`--faulty NAME`).
    pub fn name(self) -> &'static str {
        match self {
            FaultyMode::Silent => "silent",
            FaultyMode::ForgeMacs => "forge",
            FaultyMode::WrongDigests => "bad-digest",
            FaultyMode::LyingCheckpoints => "lying-checkpoint",
            FaultyMode::Replay => "replay",
            FaultyMode::Flood => "flood",
            FaultyMode::WrongReplies => "wrong-reply",
            FaultyMode::EagerCommit => "eager-commit",
            FaultyMode::Equivocate => "equivocate",
            FaultyMode::SkipSeq => "skip-seq",
            FaultyMode::BadNondet => "bad-nondet",
            FaultyMode::SlowPrimary => "slow-primary",
            FaultyMode::LyingViewChange => "lying-view-change",
            FaultyMode::PrivateViewChange => "private-view-change",
            FaultyMode::LyingTransfer => "lying-transfer",
        }
    }

    /// Whether the mode sends anything of its own accord ([`Adversary::tick`]).
    fn makes_things_up(self) -> bool {
        matches!(self, FaultyMode::Replay | FaultyMode::Flood | FaultyMode::PrivateViewChange)
    }
}

impl std::fmt::Display for FaultyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FaultyMode {
    type Err = String;

    /// A mode by its name ([`FaultyMode::name`]).
    fn from_str(s: &str) -> Result<FaultyMode, String> {
        FaultyMode::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<&str> = FaultyMode::ALL.iter().map(|m| m.name()).collect();
            format!("unknown faulty mode {s:?}; one of: {}", names.join(", "))
        })
    }
}

/// The result a replica in [`FaultyMode::WrongReplies`] sends.
pub const FORGED_RESULT: &[u8] = b"forged-result";

/// Bound on the datagrams a replaying replica remembers.
const REPLAY_MEMORY: usize = 512;

/// Encodes `message` as sent by `sender` with `tags` random MACs: a forgery,
/// which no correct node accepts.
pub fn forge(sender: NodeId, message: &Message, tags: usize, mut random: impl FnMut() -> u64) -> Bytes {
    let (mut buf, at) = wire::encode_unauthenticated(sender, message, tags);
    for i in 0..tags * TAG_LEN {
        buf[at + 1 + i] = random() as u8;
    }
    buf.freeze()
}

/// How long a slow primary holds each PRE-PREPARE: 90% of the view-change
/// timeout, just under what would make a backup suspect it (the papers'
/// known weak spot).
pub fn slow_primary_hold_us(cfg: &Config) -> u64 {
    cfg.view_change_timeout_us * 9 / 10
}

/// What a faulty replica does besides running the real code: rewrites what it
/// sends and makes things up. `T` is its host's address of a node.
pub struct Adversary<T> {
    mode: FaultyMode,
    keys: KeyTable,
    cfg: Config,
    n: usize,
    rng: u64,
    /// What a replaying replica saw and sent.
    seen: Vec<Bytes>,
    /// A slow primary's held PRE-PREPAREs.
    held: HeldPrePrepares<T>,
    /// When it next makes something up, for the modes that do.
    next_tick_us: u64,
}

impl<T: Copy> Adversary<T> {
    /// The adversary of a replica holding `keys`, in a cluster configured by `cfg`.
    pub fn new(mode: FaultyMode, keys: KeyTable, cfg: Config, seed: u64) -> Adversary<T> {
        let n = cfg.n();
        Adversary { mode, keys, cfg, n, rng: seed | 1, seen: Vec::new(), held: HeldPrePrepares::default(), next_tick_us: 0 }
    }

    pub fn mode(&self) -> FaultyMode {
        self.mode
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: enough for lies, and deterministic.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    fn random_digest(&mut self) -> Digest {
        let mut d = [0u8; 32];
        for chunk in d.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        Digest(d)
    }

    fn seal(&self, m: Message, audience: Audience) -> Bytes {
        self.keys.seal(&m, audience)
    }

    fn remember(&mut self, b: &Bytes) {
        if self.seen.len() < REPLAY_MEMORY {
            self.seen.push(b.clone());
        }
    }

    /// Sees a datagram delivered to this replica.
    pub fn observe(&mut self, bytes: &Bytes) {
        if self.mode == FaultyMode::Replay {
            self.remember(bytes);
        }
    }

    /// What the replica really sends at `now_us` instead of `bytes` to
    /// `targets`: each datagram with where it goes.
    pub fn outbound(&mut self, now_us: u64, targets: &[T], bytes: Bytes) -> Vec<(T, Bytes)> {
        let to_all = |b: Bytes| targets.iter().map(|t| (*t, b.clone())).collect::<Vec<_>>();
        match self.mode {
            FaultyMode::Silent => Vec::new(),
            FaultyMode::Replay => {
                self.remember(&bytes);
                to_all(bytes)
            }
            FaultyMode::Flood => to_all(bytes),
            FaultyMode::SlowPrimary => {
                targets.iter().filter_map(|t| self.held.hold(now_us, &self.cfg, *t, bytes.clone())).collect()
            }
            FaultyMode::Equivocate => {
                let Some(Message::PrePrepare(p)) = decode(&bytes, &self.cfg) else { return to_all(bytes) };
                let other = self.seal(
                    Message::PrePrepare(PrePrepare { nondet_time_us: p.nondet_time_us + 1, ..p }),
                    Audience::Replicas,
                );
                targets.iter().enumerate().map(|(i, t)| (*t, if i % 2 == 0 { bytes.clone() } else { other.clone() })).collect()
            }
            _ => match self.rewrite(bytes) {
                Rewritten::Same(b) => to_all(b),
                Rewritten::Instead(many) => many.into_iter().flat_map(to_all).collect(),
            },
        }
    }

    /// The lies that rewrite one message the same way for every target.
    fn rewrite(&mut self, bytes: Bytes) -> Rewritten {
        let Ok(env) = wire::decode(bytes.clone(), self.cfg.max_message_bytes) else { return Rewritten::Same(bytes) };
        let audience = match env.message {
            Message::Reply(ref r) => Audience::Client(r.client),
            _ => Audience::Replicas,
        };
        let one = |b: Bytes| Rewritten::Instead(vec![b]);
        match (self.mode, env.message) {
            (FaultyMode::ForgeMacs, message) => {
                let own = forge(env.sender, &message, env.tags.len(), || self.next());
                let other = NodeId::Replica(ReplicaId(self.below(self.n as u64) as u16));
                let forged = forge(other, &message, env.tags.len(), || self.next());
                Rewritten::Instead(vec![own, forged])
            }
            (FaultyMode::WrongDigests, Message::Prepare(p)) => {
                let digest = self.random_digest();
                one(self.seal(Message::Prepare(Prepare { digest, ..p }), audience))
            }
            (FaultyMode::WrongDigests, Message::Commit(c)) => {
                let digest = self.random_digest();
                one(self.seal(Message::Commit(Commit { digest, ..c }), audience))
            }
            (FaultyMode::LyingCheckpoints, Message::Checkpoint(c)) => {
                let state_digest = self.random_digest();
                one(self.seal(Message::Checkpoint(Checkpoint { state_digest, ..c }), audience))
            }
            (FaultyMode::WrongReplies, Message::Reply(r)) => {
                let forged = Reply { body: ReplyBody::Full(Bytes::from_static(FORGED_RESULT)), ..r };
                one(self.seal(Message::Reply(forged), audience))
            }
            (FaultyMode::EagerCommit, Message::Prepare(p)) => {
                let commit = Commit { view: p.view, seq: p.seq, digest: p.digest };
                Rewritten::Instead(vec![bytes, self.seal(Message::Commit(commit), audience)])
            }
            (FaultyMode::SkipSeq, Message::PrePrepare(p)) => {
                one(self.seal(Message::PrePrepare(PrePrepare { seq: SeqNo(p.seq.0 + 1), ..p }), audience))
            }
            (FaultyMode::BadNondet, Message::PrePrepare(p)) => {
                let nondet_time_us = p.nondet_time_us + 10 * self.cfg.nondet_skew_us;
                one(self.seal(Message::PrePrepare(PrePrepare { nondet_time_us, ..p }), audience))
            }
            // Its pre-prepares are withheld, so the others change view and
            // its lies in the view change matter.
            (FaultyMode::LyingViewChange | FaultyMode::PrivateViewChange, Message::PrePrepare(_)) => {
                Rewritten::Instead(Vec::new())
            }
            (FaultyMode::PrivateViewChange, Message::ViewChange(vc)) => one(for_primary_only(&bytes, vc.view, self.n)),
            (FaultyMode::LyingViewChange, Message::ViewChange(vc)) => one(self.lying_view_change(vc)),
            (FaultyMode::LyingViewChange, Message::ViewChangeAck(a)) => {
                let digest = self.random_digest();
                one(self.seal(Message::ViewChangeAck(ViewChangeAck { digest, ..a }), audience))
            }
            (FaultyMode::LyingViewChange, Message::NewView(nv)) => {
                let mut nv: NewView = nv;
                if let Some(first) = nv.view_changes.first_mut() {
                    first.1 = self.random_digest();
                }
                one(self.seal(Message::NewView(nv), audience))
            }
            (FaultyMode::LyingTransfer, Message::Data(d)) => {
                let mut pages = d.pages;
                if !pages.is_empty() {
                    let at = self.below(pages.len() as u64 * PAGE_SIZE as u64) as usize;
                    std::sync::Arc::make_mut(&mut pages[at / PAGE_SIZE])[at % PAGE_SIZE] ^= 0x81;
                }
                one(self.seal(Message::Data(Data::new(d.seq, d.index, pages)), audience))
            }
            (FaultyMode::LyingTransfer, Message::MetaData(m)) => {
                let mut m: MetaData = m;
                if !m.children.is_empty() {
                    let k = self.below(m.children.len() as u64) as usize;
                    m.children[k] = self.random_digest();
                }
                one(self.seal(Message::MetaData(m), audience))
            }
            _ => Rewritten::Same(bytes),
        }
    }

    /// A VIEW-CHANGE with made-up requests "prepared" in the last view: one
    /// just above the stable checkpoint (where correct replicas usually have
    /// the real one) and one just above anything really prepared (where
    /// nobody has anything, so only rule A2 keeps it out).
    fn lying_view_change(&mut self, mut vc: ViewChange) -> Bytes {
        let last = View(vc.view.0.saturating_sub(1));
        let top = vc.prepared.iter().chain(&vc.pre_prepared).map(|e| e.seq.0).max().unwrap_or(vc.stable.0);
        let fresh = (top < vc.stable.0 + self.cfg.log_window).then_some(top + 1 - vc.stable.0);
        for k in [Some(1), fresh].into_iter().flatten() {
            let e = VcEntry { seq: SeqNo(vc.stable.0 + k), digest: self.random_digest(), view: last };
            vc.prepared.retain(|p| p.seq != e.seq);
            vc.prepared.push(e);
            vc.pre_prepared.push(e);
        }
        self.seal(Message::ViewChange(vc), Audience::Replicas)
    }

    /// When the host should call [`Adversary::tick`] next.
    pub fn next_tick_us(&self) -> Option<u64> {
        let own = self.mode.makes_things_up().then_some(self.next_tick_us);
        [own, self.held.next_release_us()].into_iter().flatten().min()
    }

    /// What the replica sends at `now_us` of its own accord: held
    /// PRE-PREPAREs that are due, and (every 5 to 25 ms) replays, floods or
    /// view changes ahead of time. `peers` holds every replica's address, by id.
    pub fn tick<S: Service>(&mut self, now_us: u64, replica: &Replica<S>, peers: &[T]) -> Vec<(T, Bytes)> {
        let mut out = self.held.release_due(now_us);
        if !self.mode.makes_things_up() || now_us < self.next_tick_us {
            return out;
        }
        self.next_tick_us = now_us + 5_000 + self.below(20_000);
        let me = replica.id().index();
        let others: Vec<T> = peers.iter().enumerate().filter(|(j, _)| *j != me).map(|(_, a)| *a).collect();
        if others.is_empty() {
            return out;
        }
        match self.mode {
            FaultyMode::Replay => {
                for _ in 0..4 {
                    if self.seen.is_empty() {
                        break;
                    }
                    let k = self.below(self.seen.len() as u64) as usize;
                    let b = self.seen[k].clone();
                    out.push((others[self.below(others.len() as u64) as usize], b));
                }
            }
            FaultyMode::Flood => self.flood(replica, &others, &mut out),
            // Ahead of time, a VIEW-CHANGE for each of the next n views, to its
            // primary only, so that it arrives among the first there.
            FaultyMode::PrivateViewChange => {
                let stable = replica.low_water_mark();
                let checkpoints: Vec<(SeqNo, Digest)> =
                    replica.state().checkpoints().into_iter().filter(|(s, _)| *s >= stable).collect();
                for ahead in 1..=self.n as u64 {
                    let view = View(replica.view().0 + ahead);
                    let primary = view.primary(self.n).index();
                    let Some(to) = peers.get(primary).filter(|_| primary != me) else { continue };
                    let vc = ViewChange {
                        view,
                        stable,
                        checkpoints: checkpoints.clone(),
                        prepared: Vec::new(),
                        pre_prepared: Vec::new(),
                    };
                    let b = self.seal(Message::ViewChange(vc), Audience::Replicas);
                    out.push((*to, for_primary_only(&b, view, self.n)));
                }
            }
            _ => {}
        }
        out
    }

    /// Garbage, and well-authenticated junk for slots in and far out of the
    /// window, to every other replica.
    fn flood<S: Service>(&mut self, replica: &Replica<S>, others: &[T], out: &mut Vec<(T, Bytes)>) {
        let cfg = replica.config();
        let view = replica.view();
        let h = replica.low_water_mark().0;
        for _ in 0..16 {
            let seq = SeqNo(match self.below(3) {
                0 => h + 1 + self.below(cfg.log_window),
                1 => h + cfg.log_window + 1 + self.below(1_000_000),
                _ => self.next(),
            });
            let digest = self.random_digest();
            let msg = match self.below(7) {
                0 => Message::Prepare(Prepare { view, seq, digest }),
                1 => Message::Commit(Commit { view, seq, digest }),
                2 => Message::Checkpoint(Checkpoint {
                    seq: SeqNo(seq.0 / cfg.checkpoint_interval * cfg.checkpoint_interval),
                    state_digest: digest,
                }),
                3 => Message::Status(Status {
                    view,
                    view_active: self.below(2) == 0,
                    stable: SeqNo(0),
                    first_open: SeqNo(1),
                    last_executed: SeqNo(0),
                    slots: vec![0; 512],
                    missing_requests: (0..32).map(|_| self.random_digest()).collect(),
                }),
                4 => Message::PrePrepare(PrePrepare { view, seq, nondet_time_us: self.next(), entries: Vec::new() }),
                5 => Message::Prepare(Prepare { view: View(view.0 + 1 + self.below(5)), seq, digest }),
                _ => {
                    let len = self.below(300) as usize;
                    let junk: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
                    out.push((others[self.below(others.len() as u64) as usize], Bytes::from(junk)));
                    continue;
                }
            };
            let b = self.seal(msg, Audience::Replicas);
            out.extend(others.iter().map(|t| (*t, b.clone())));
        }
    }
}

/// What [`Adversary::rewrite`] made of one datagram.
enum Rewritten {
    Same(Bytes),
    Instead(Vec<Bytes>),
}

fn decode(bytes: &Bytes, cfg: &Config) -> Option<Message> {
    wire::decode(bytes.clone(), cfg.max_message_bytes).ok().map(|env| env.message)
}

/// A sealed multicast with only the MAC for `view`'s primary left right:
/// nobody else can take it, first-hand or relayed, nor ack it.
fn for_primary_only(bytes: &Bytes, view: View, n: usize) -> Bytes {
    let primary = view.primary(n).index();
    let mut b = bytes.to_vec();
    let Some(tags_at) = b.len().checked_sub(n * TAG_LEN) else { return bytes.clone() };
    for i in (0..n).filter(|i| *i != primary) {
        b[tags_at + i * TAG_LEN] ^= 0xff;
    }
    Bytes::from(b)
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
        let pp = |seq| {
            keys.seal(
                &Message::PrePrepare(PrePrepare { view: View(0), seq: SeqNo(seq), nondet_time_us: 1, entries: vec![] }),
                Audience::Replicas,
            )
        };
        let prepare =
            keys.seal(&Message::Prepare(Prepare { view: View(0), seq: SeqNo(1), digest: Digest([1; 32]) }), Audience::Replicas);
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

    #[test]
    fn every_faulty_mode_parses_from_its_name_and_nothing_else_does() {
        for mode in FaultyMode::ALL {
            assert_eq!(mode.name().parse::<FaultyMode>(), Ok(mode));
        }
        for mode in FaultyMode::ANY_REPLICA.into_iter().chain(FaultyMode::PRIMARY) {
            assert!(FaultyMode::ALL.contains(&mode), "{mode:?} is missing from ALL");
        }
        let err = "bogus".parse::<FaultyMode>().expect_err("no such mode");
        assert!(err.contains("slow-primary") && err.contains("wrong-reply"), "{err}");
    }
}
