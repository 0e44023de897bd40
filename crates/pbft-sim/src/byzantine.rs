//! Byzantine replicas and faulty clients.
//!
//! A Byzantine replica runs the real replica code and holds its real keys; the
//! simulator rewrites what it sends (and adds what it makes up), so it can lie
//! with valid MACs, forge, replay and flood. Faulty clients are registered
//! clients with real keys that send whatever the adversary likes.

use bytes::Bytes;
use pbft::adversary::{forge, HeldPrePrepares, Liar, Lie};
use pbft::auth::{Audience, KeyTable};
use pbft::wire::{self, Checkpoint, Commit, Data, Message, MetaData, NewView, Prepare, PrePrepare, Request, Status, VcEntry, ViewChange, ViewChangeAck};
use pbft::state::PAGE_SIZE;
use pbft::{ClientId, Config, Digest, NodeId, SeqNo, Timestamp, View};
use pbft_kv::KvOp;

use crate::rng::SimRng;
use crate::scenario::{ByzMode, ClientFault};
use crate::world::{Addr, World};

/// Bound on the datagrams a replaying replica remembers.
const REPLAY_MEMORY: usize = 512;

pub struct ByzReplica {
    pub mode: ByzMode,
    keys: KeyTable,
    /// The lies shared with the real runtime, for the modes that rewrite.
    liar: Option<Liar>,
    seen: Vec<Bytes>,
    /// A slow primary's held pre-prepares.
    held: HeldPrePrepares<Addr>,
    rng: SimRng,
}

fn random_digest(rng: &mut SimRng) -> Digest {
    let mut d = [0u8; 32];
    d.copy_from_slice(&rng.bytes(32));
    Digest(d)
}

impl ByzReplica {
    pub fn new(mode: ByzMode, keys: KeyTable, n: usize, seed: u64) -> ByzReplica {
        let lie = match mode {
            ByzMode::ForgeMacs => Some(Lie::ForgeMacs),
            ByzMode::WrongDigests => Some(Lie::WrongDigests),
            ByzMode::LyingCheckpoints => Some(Lie::LyingCheckpoints),
            ByzMode::WrongReplies => Some(Lie::WrongReplies),
            ByzMode::EagerCommit => Some(Lie::EagerCommit),
            _ => None,
        };
        let liar = lie.map(|l| Liar::new(l, keys.clone(), n, seed));
        ByzReplica { mode, keys, liar, seen: Vec::new(), held: HeldPrePrepares::default(), rng: SimRng::new(seed ^ 0xb1a5) }
    }

    /// The pre-prepares a slow primary holds that are due at `now`.
    pub fn release_due(&mut self, now: u64) -> Vec<(Addr, Bytes)> {
        self.held.release_due(now)
    }

    /// The primary's lies, which differ per target or per message kind.
    fn rewrite_as_primary(&mut self, now: u64, cfg: &Config, targets: &[Addr], bytes: Bytes) -> Vec<(Addr, Bytes)> {
        let Ok(env) = wire::decode(bytes.clone(), cfg.max_message_bytes) else { return Vec::new() };
        let seal = |keys: &KeyTable, m: Message| keys.seal(&m, Audience::Replicas);
        let to_all = |b: Bytes| targets.iter().map(|t| (*t, b.clone())).collect::<Vec<_>>();
        match (self.mode, env.message) {
            (ByzMode::Equivocate, Message::PrePrepare(p)) => {
                let other = seal(&self.keys, Message::PrePrepare(PrePrepare { nondet_time_us: p.nondet_time_us + 1, ..p }));
                targets.iter().enumerate().map(|(i, t)| (*t, if i % 2 == 0 { bytes.clone() } else { other.clone() })).collect()
            }
            (ByzMode::SkipSeq, Message::PrePrepare(p)) => {
                to_all(seal(&self.keys, Message::PrePrepare(PrePrepare { seq: SeqNo(p.seq.0 + 1), ..p })))
            }
            (ByzMode::BadNondet, Message::PrePrepare(p)) => {
                let nondet_time_us = p.nondet_time_us + 10 * cfg.nondet_skew_us;
                to_all(seal(&self.keys, Message::PrePrepare(PrePrepare { nondet_time_us, ..p })))
            }
            (ByzMode::SlowPrimary, Message::PrePrepare(_)) => {
                for t in targets {
                    self.held.hold(now, cfg, *t, bytes.clone());
                }
                Vec::new()
            }
            // Its pre-prepares are withheld, so the others change view and
            // its lies in the view change matter.
            (ByzMode::LyingViewChange | ByzMode::PrivateViewChange, Message::PrePrepare(_)) => Vec::new(),
            (ByzMode::PrivateViewChange, Message::ViewChange(vc)) => to_all(for_primary_only(&bytes, vc.view, cfg.n())),
            (ByzMode::LyingViewChange, Message::ViewChange(vc)) => {
                let mut vc: ViewChange = vc;
                let last = View(vc.view.0 - 1);
                // Made-up requests "prepared" in the last view: one just above
                // the stable checkpoint (where correct replicas usually have
                // the real one) and one just above anything really prepared
                // (where nobody has anything, so only rule A2 keeps it out).
                let top = vc.prepared.iter().chain(&vc.pre_prepared).map(|e| e.seq.0).max().unwrap_or(vc.stable.0);
                let fresh = (top + 1 <= vc.stable.0 + cfg.log_window).then_some(top + 1 - vc.stable.0);
                for k in [Some(1), fresh].into_iter().flatten() {
                    let digest = random_digest(&mut self.rng);
                    let e = VcEntry { seq: SeqNo(vc.stable.0 + k), digest, view: last };
                    vc.prepared.retain(|p| p.seq != e.seq);
                    vc.prepared.push(e);
                    vc.pre_prepared.push(e);
                }
                to_all(seal(&self.keys, Message::ViewChange(vc)))
            }
            (ByzMode::LyingViewChange, Message::ViewChangeAck(a)) => {
                let digest = random_digest(&mut self.rng);
                to_all(seal(&self.keys, Message::ViewChangeAck(ViewChangeAck { digest, ..a })))
            }
            (ByzMode::LyingTransfer, Message::Data(d)) => {
                let mut pages = d.pages;
                let at = self.rng.below(pages.len() as u64 * PAGE_SIZE as u64) as usize;
                if let Some(page) = pages.get_mut(at / PAGE_SIZE) {
                    std::sync::Arc::make_mut(page)[at % PAGE_SIZE] ^= 0x81;
                }
                to_all(seal(&self.keys, Message::Data(Data::new(d.seq, d.index, pages))))
            }
            (ByzMode::LyingTransfer, Message::MetaData(m)) => {
                let mut m: MetaData = m;
                if let Some(k) = (!m.children.is_empty()).then(|| self.rng.below(m.children.len() as u64) as usize) {
                    m.children[k] = random_digest(&mut self.rng);
                }
                to_all(seal(&self.keys, Message::MetaData(m)))
            }
            (ByzMode::LyingViewChange, Message::NewView(nv)) => {
                let mut nv: NewView = nv;
                if let Some(first) = nv.view_changes.first_mut() {
                    first.1 = random_digest(&mut self.rng);
                }
                to_all(seal(&self.keys, Message::NewView(nv)))
            }
            _ => to_all(bytes),
        }
    }

    fn remember(&mut self, b: &Bytes) {
        if self.seen.len() < REPLAY_MEMORY {
            self.seen.push(b.clone());
        }
    }

    /// Sees a datagram delivered to this replica.
    pub fn observe(&mut self, b: &Bytes) {
        if self.mode == ByzMode::Replay {
            self.remember(b);
        }
    }

    /// Rewrites one outgoing datagram into what the faulty replica really sends.
    pub fn outbound(&mut self, now: u64, cfg: &Config, targets: &[Addr], bytes: Bytes) -> Vec<(Addr, Bytes)> {
        if matches!(
            self.mode,
            ByzMode::Equivocate
                | ByzMode::SkipSeq
                | ByzMode::BadNondet
                | ByzMode::SlowPrimary
                | ByzMode::LyingViewChange
                | ByzMode::PrivateViewChange
                | ByzMode::LyingTransfer
        ) {
            return self.rewrite_as_primary(now, cfg, targets, bytes);
        }
        let sent = match (self.mode, self.liar.as_mut()) {
            (ByzMode::Silent, _) => Vec::new(),
            (ByzMode::Replay, _) => {
                self.remember(&bytes);
                vec![bytes]
            }
            (_, Some(liar)) => liar.rewrite(bytes, cfg.max_message_bytes),
            (_, None) => vec![bytes],
        };
        sent.into_iter().flat_map(|b| targets.iter().map(move |t| (*t, b.clone()))).collect()
    }
}

/// What a Byzantine replica sends of its own accord, every few milliseconds.
pub fn byz_tick(world: &mut World, r: usize) -> Vec<(usize, Bytes)> {
    let n = world.replicas.len();
    let cfg = world.cfg.clone();
    let node = &mut world.replicas[r];
    let Some(byz) = node.byz.as_mut() else { return Vec::new() };
    let rng = &mut world.rng;
    let mut out = Vec::new();
    let others: Vec<usize> = (0..n).filter(|j| *j != r).collect();
    match byz.mode {
        ByzMode::Replay => {
            for _ in 0..4 {
                if byz.seen.is_empty() {
                    break;
                }
                let b = byz.seen[rng.below(byz.seen.len() as u64) as usize].clone();
                out.push((others[rng.below(others.len() as u64) as usize], b));
            }
        }
        ByzMode::Flood => {
            let view = node.replica.view();
            let h = node.replica.low_water_mark().0;
            for _ in 0..16 {
                let seq = SeqNo(match rng.below(3) {
                    0 => h + 1 + rng.below(cfg.log_window),
                    1 => h + cfg.log_window + 1 + rng.below(1_000_000),
                    _ => rng.next_u64(),
                });
                let digest = random_digest(rng);
                let msg = match rng.below(7) {
                    0 => Message::Prepare(Prepare { view, seq, digest }),
                    1 => Message::Commit(Commit { view, seq, digest }),
                    2 => Message::Checkpoint(Checkpoint { seq: SeqNo(seq.0 / cfg.checkpoint_interval * cfg.checkpoint_interval), state_digest: digest }),
                    3 => Message::Status(Status {
                        view,
                        view_active: rng.below(2) == 0,
                        stable: SeqNo(0),
                        first_open: SeqNo(1),
                        last_executed: SeqNo(0),
                        slots: vec![0; 512],
                        missing_requests: (0..32).map(|_| random_digest(rng)).collect(),
                    }),
                    4 => Message::PrePrepare(PrePrepare { view, seq, nondet_time_us: rng.next_u64(), entries: Vec::new() }),
                    5 => Message::Prepare(Prepare { view: View(view.0 + 1 + rng.below(5)), seq, digest }),
                    _ => {
                        let len = rng.below(300) as usize;
                        let junk = Bytes::from(rng.bytes(len));
                        out.push((others[rng.below(others.len() as u64) as usize], junk));
                        continue;
                    }
                };
                let b = byz.keys.seal(&msg, Audience::Replicas);
                for &j in &others {
                    out.push((j, b.clone()));
                }
            }
        }
        // Ahead of time, a VIEW-CHANGE for each of the next n views, to its
        // primary only, so that it arrives among the first there.
        ByzMode::PrivateViewChange => {
            let r = &node.replica;
            let stable = r.low_water_mark();
            let checkpoints: Vec<(SeqNo, Digest)> = r.state().checkpoints().into_iter().filter(|(s, _)| *s >= stable).collect();
            for ahead in 1..=n as u64 {
                let view = View(r.view().0 + ahead);
                let primary = view.primary(n).index();
                if primary == r.id().index() {
                    continue;
                }
                let vc = ViewChange { view, stable, checkpoints: checkpoints.clone(), prepared: Vec::new(), pre_prepared: Vec::new() };
                let b = byz.keys.seal(&Message::ViewChange(vc), Audience::Replicas);
                out.push((primary, for_primary_only(&b, view, n)));
            }
        }
        _ => {}
    }
    out
}

/// A sealed multicast with only the MAC for `view`'s primary left right:
/// nobody else can take it, first-hand or relayed, nor ack it.
fn for_primary_only(bytes: &Bytes, view: View, n: usize) -> Bytes {
    let primary = view.primary(n).index();
    let mut b = bytes.to_vec();
    let tags_at = b.len() - n * wire::TAG_LEN;
    for i in (0..n).filter(|i| *i != primary) {
        b[tags_at + i * wire::TAG_LEN] ^= 0xff;
    }
    Bytes::from(b)
}

/// A faulty client: a registered principal that sends what it likes.
pub struct FaultyClient {
    pub fault: ClientFault,
    id: ClientId,
    keys: KeyTable,
    next_ts: u64,
    own: Vec<Bytes>,
}

impl FaultyClient {
    pub fn new(fault: ClientFault, id: ClientId, keys: KeyTable) -> FaultyClient {
        FaultyClient { fault, id, keys, next_ts: 1, own: Vec::new() }
    }

    fn request(&mut self, op: KvOp, ts: u64) -> Request {
        Request { client: self.id, timestamp: Timestamp(ts), read_only: false, replier: None, op: Bytes::from(op.encode()) }
    }

    fn own_key(&self) -> Vec<u8> {
        format!("z{}", self.id.0).into_bytes()
    }
}

/// What faulty client `c` sends at one of its ticks: (replica, datagram) pairs.
pub fn faulty_client_tick(world: &mut World, c: usize) -> Vec<(usize, Bytes)> {
    let n = world.replicas.len();
    let cfg = world.cfg.clone();
    let correct_clients = world.scenario.clients;
    let rng = &mut world.rng;
    let fc = &mut world.faulty_clients[c];
    let mut out = Vec::new();
    let to_all = |b: Bytes, out: &mut Vec<(usize, Bytes)>| {
        for r in 0..n {
            out.push((r, b.clone()));
        }
    };
    match fc.fault {
        ClientFault::Garbage => {
            for _ in 0..4 {
                let len = rng.below(400) as usize;
                let mut b = rng.bytes(len);
                if rng.chance(0.5) && b.len() > 4 {
                    b[..4].copy_from_slice(&[b'P', b'B', 1, 1 + rng.below(8) as u8]);
                }
                out.push((rng.below(n as u64) as usize, Bytes::from(b)));
            }
        }
        ClientFault::ForgedAuth => {
            let ts = fc.next_ts;
            fc.next_ts += 1;
            let own = fc.request(KvOp::Put { key: fc.own_key(), value: b"forged-mac".to_vec() }, ts);
            to_all(forge(NodeId::Client(fc.id), &Message::Request(own), n, || rng.next_u64()), &mut out);
            // A write in a correct client's name: if it ever executes, that
            // client's history shows a value nobody wrote.
            let victim = ClientId(rng.below(correct_clients as u64) as u32);
            let req = Request {
                client: victim,
                timestamp: Timestamp(1_000_000 + rng.below(1_000_000)),
                read_only: false,
                replier: None,
                op: Bytes::from(KvOp::Put { key: crate::workload::key(0), value: b"forged-by-client".to_vec() }.encode()),
            };
            to_all(forge(NodeId::Client(victim), &Message::Request(req), n, || rng.next_u64()), &mut out);
        }
        ClientFault::Replay => {
            let ts = fc.next_ts;
            fc.next_ts += 1;
            let req = fc.request(KvOp::Put { key: fc.own_key(), value: format!("v{ts}").into_bytes() }, ts);
            let b = fc.keys.seal(&Message::Request(req), Audience::Replicas);
            if fc.own.len() < 64 {
                fc.own.push(b.clone());
            }
            to_all(b, &mut out);
            // An old request of its own (out-of-order timestamp), and another
            // client's request captured on the network.
            if !fc.own.is_empty() {
                let old = fc.own[rng.below(fc.own.len() as u64) as usize].clone();
                to_all(old, &mut out);
            }
            if !world.recent_requests.is_empty() {
                let i = rng.below(world.recent_requests.len() as u64) as usize;
                to_all(world.recent_requests[i].clone(), &mut out);
            }
        }
        ClientFault::Oversized => {
            let ts = fc.next_ts;
            fc.next_ts += 1;
            let big = fc.request(KvOp::Put { key: fc.own_key(), value: vec![7u8; cfg.max_op_bytes + 100] }, ts);
            to_all(fc.keys.seal(&Message::Request(big), Audience::Replicas), &mut out);
            let huge = Bytes::from(vec![0u8; cfg.max_message_bytes + 1]);
            to_all(huge, &mut out);
        }
        ClientFault::PartialMacs => {
            let ts = fc.next_ts;
            fc.next_ts += 1;
            let req = fc.request(KvOp::Put { key: fc.own_key(), value: format!("pm{ts}").into_bytes() }, ts);
            let b = fc.keys.seal(&Message::Request(req), Audience::Replicas);
            // Break the MAC for one backup, the same for every such client: a
            // backup that cannot check a request follows f+1 that could, so the
            // normal case survives one victim; MACs broken at more backups than
            // that stall the batch until a view change replaces the primary's
            // proposal (the view-change issue).
            let victim = n - 1;
            let mut v = b.to_vec();
            let at = v.len() - (n - victim) * wire::TAG_LEN;
            v[at] ^= 0xff;
            to_all(Bytes::from(v), &mut out);
        }
        ClientFault::LargeToPrimaryOnly => {
            let ts = fc.next_ts;
            fc.next_ts += 1;
            let value = vec![b'L'; cfg.large_request_threshold + 500];
            let req = fc.request(KvOp::Put { key: fc.own_key(), value }, ts);
            out.push((0, fc.keys.seal(&Message::Request(req), Audience::Replicas)));
        }
        ClientFault::Flood => {
            for _ in 0..20 {
                let ts = fc.next_ts;
                fc.next_ts += 1;
                let req = fc.request(KvOp::Null { arg: Vec::new(), result_len: 0 }, ts);
                out.push((0, fc.keys.seal(&Message::Request(req), Audience::Replicas)));
            }
        }
    }
    out
}
