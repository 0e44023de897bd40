//! Feeds a fresh replica of a 4-replica cluster (f = 1) a sequence of datagrams,
//! timer expiries and *sealed* messages, i.e. messages that carry a valid
//! authenticator from the replica or client they claim to come from, so that
//! the fuzzer gets past MAC checking into the protocol handlers.
//!
//! Input format (see README.md):
//!
//! ```text
//! byte 0   configuration: bits 0-1 replica id under test (0 = primary of view 0),
//!          bit 2 tentative_execution, bit 3 read_only_optimization,
//!          bit 4 checkpoint_interval 2 / log_window 4 (else 4 / 8)
//! byte 1   number of chunks (at most MAX_CHUNKS)
//! chunks   u16 little-endian length, then that many bytes (cut at the end of input)
//! ```
//!
//! A chunk whose first byte is
//! - `0xA5`: the rest is decoded with `wire::decode`; if it decodes, the message
//!   is fixed up (below) and re-sealed with the real keys of the claimed sender
//!   for `Audience::Replicas` (a sender without keys: zero tags);
//! - `0x5A`: the Status timer fires (the clock moves by one status interval);
//! - `0x5B`: the ClientRetransmit timer fires (unexpected at a replica);
//! - anything else: the chunk is delivered as a raw datagram.
//!
//! Fix-ups of sealed messages, for values the fuzzer cannot compute (hashes)
//! or guess (the clock):
//! - a digest whose bytes 1..32 are zero is replaced: byte 0 = 0xFF gives the
//!   root digest of the initial (all-zero) state; byte 0 = k gives entry k of a
//!   pool of recently seen digests (0 = newest), harvested from the replica's
//!   output (PREPARE, COMMIT, CHECKPOINT, computed PRE-PREPARE batch digests,
//!   META-DATA children, ...) and from sealed inputs (request and batch digests);
//! - a PRE-PREPARE with `nondet_time_us == 0` gets the current time;
//! - an inline batch entry that decodes to a client request with no tags is
//!   sealed by that client;
//! - a META-DATA with no children gets the children of that node in the initial
//!   state; a DATA with an empty page gets a zero page.
//!
//! After every step the bounds that `pbft-sim`'s checkers enforce are asserted,
//! and every datagram the replica sends must decode and fit
//! `max_message_bytes`.
#![no_main]

use std::collections::VecDeque;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pbft::auth::{public_key, Audience, KeyTable};
use pbft::service::{ExecContext, ReadContext, Service};
use pbft::state::{PagedState, PAGE_SIZE};
use pbft::wire::{self, BatchEntry, Message};
use pbft::{ClientId, Config, Digest, Effect, Instant, NodeId, Outbox, Replica, ReplicaId, SeqNo};

const N: usize = 4;
const CLIENTS: usize = 4;
const MAX_CHUNKS: usize = 64;
const POOL: usize = 32;
const START_US: u64 = 1_000_000;
const STEP_US: u64 = 1_000;

/// The replicated counter of the `Service` documentation.
struct Counter;

impl Service for Counter {
    fn state_pages(&self) -> u64 {
        1
    }

    fn execute(&mut self, op: &[u8], ctx: &mut ExecContext<'_>) -> Vec<u8> {
        let mut buf = [0u8; 8];
        ctx.state.read(0, &mut buf).expect("offset 0 is inside the region");
        let add = op.first().copied().unwrap_or(1) as u64;
        let value = u64::from_le_bytes(buf).wrapping_add(add);
        ctx.state.write(0, &value.to_le_bytes()).expect("offset 0 is inside the region");
        value.to_le_bytes().to_vec()
    }

    fn execute_read_only(&self, op: &[u8], ctx: &ReadContext<'_>) -> Option<Vec<u8>> {
        if op.first() == Some(&0xFF) {
            return None; // "not read-only": the client retries it read-write
        }
        let mut buf = [0u8; 8];
        ctx.state.read(0, &mut buf).ok()?;
        Some(buf.to_vec())
    }
}

/// Built once per process: every principal's key table and the initial state.
struct Cluster {
    replicas: Vec<KeyTable>,
    clients: Vec<KeyTable>,
    /// The state a fresh replica starts with, checkpoint 0 retained.
    initial: PagedState,
    initial_root: Digest,
    /// `PBFT_FUZZ_TRACE` is set: print every step (for looking at one input).
    trace: bool,
}

fn secret(i: u8) -> [u8; 32] {
    [i.wrapping_mul(31).wrapping_add(7); 32]
}

fn base_config() -> Config {
    let mut cfg = Config::new(1);
    cfg.max_clients = CLIENTS as u32;
    cfg
}

impl Cluster {
    fn new() -> Cluster {
        let rp: Vec<_> = (0..N).map(|i| public_key(&secret(i as u8))).collect();
        let cp: Vec<_> = (0..CLIENTS).map(|c| public_key(&secret(100 + c as u8))).collect();
        let replicas = (0..N)
            .map(|i| KeyTable::from_static_dh(NodeId::Replica(ReplicaId(i as u16)), &secret(i as u8), &rp, &cp))
            .collect();
        let clients = (0..CLIENTS)
            .map(|c| KeyTable::from_static_dh(NodeId::Client(ClientId(c as u32)), &secret(100 + c as u8), &rp, &[]))
            .collect();
        let cfg = base_config();
        let probe = Replica::new(cfg.clone(), ReplicaId(0), KeyTable::new(NodeId::Replica(ReplicaId(0)), N), Counter)
            .expect("valid configuration");
        let mut initial = PagedState::new(probe.state().num_pages(), cfg.tree).expect("valid state");
        let initial_root = initial.take_checkpoint(SeqNo(0)).expect("first checkpoint");
        let trace = std::env::var_os("PBFT_FUZZ_TRACE").is_some();
        Cluster { replicas, clients, initial, initial_root, trace }
    }

    fn keys(&self, who: NodeId) -> Option<&KeyTable> {
        match who {
            NodeId::Replica(r) => self.replicas.get(r.index()),
            NodeId::Client(c) => self.clients.get(c.0 as usize),
        }
    }
}

thread_local! {
    static CLUSTER: Cluster = Cluster::new();
}

/// Recently seen digests, newest last.
struct Pool(VecDeque<Digest>);

impl Pool {
    fn push(&mut self, d: Digest) {
        if self.0.back() == Some(&d) {
            return;
        }
        if self.0.len() == POOL {
            self.0.pop_front();
        }
        self.0.push_back(d);
    }

    fn fix(&self, d: &mut Digest, initial_root: Digest) {
        if d.0[1..].iter().any(|b| *b != 0) {
            return;
        }
        if d.0[0] == 0xFF {
            *d = initial_root;
        } else if !self.0.is_empty() {
            let k = d.0[0] as usize % self.0.len();
            *d = self.0[self.0.len() - 1 - k];
        }
    }

    /// Learns the digests a message names.
    fn harvest(&mut self, m: &Message) {
        match m {
            Message::Request(r) => self.push(r.digest()),
            Message::PrePrepare(p) => {
                for e in &p.entries {
                    if let BatchEntry::ByDigest(d) = e {
                        self.push(*d);
                    }
                }
                if let Some(d) = batch_digest(p) {
                    self.push(d);
                }
            }
            Message::Prepare(p) => self.push(p.digest),
            Message::Commit(c) => self.push(c.digest),
            Message::Checkpoint(c) => self.push(c.state_digest),
            Message::Status(s) => s.missing_requests.iter().take(4).for_each(|d| self.push(*d)),
            Message::MetaData(m) => m.children.iter().take(8).for_each(|d| self.push(*d)),
            Message::Reply(wire::Reply { body: wire::ReplyBody::Digest(d), .. }) => self.push(*d),
            Message::ViewChange(v) => {
                v.checkpoints.iter().take(4).for_each(|(_, d)| self.push(*d));
                v.prepared.iter().chain(&v.pre_prepared).take(8).for_each(|e| self.push(e.digest));
            }
            Message::ViewChangeAck(a) => self.push(a.digest),
            Message::NewView(nv) => nv.view_changes.iter().take(4).for_each(|(_, d)| self.push(*d)),
            Message::Reply(_) | Message::Fetch(_) | Message::Data(_) => {}
        }
    }
}

/// The batch digest a replica computes for a pre-prepare (`batch_digest` in
/// `replica/normal_case.rs`, which is private): BLAKE3 of "pbft-batch", the
/// non-deterministic value and the request digests. `None` if an inline entry
/// is not a request.
fn batch_digest(p: &wire::PrePrepare) -> Option<Digest> {
    let mut material = Vec::with_capacity(18 + 32 * p.entries.len());
    material.extend_from_slice(b"pbft-batch");
    material.extend_from_slice(&p.nondet_time_us.to_le_bytes());
    for e in &p.entries {
        let d = match e {
            BatchEntry::Inline(b) => match wire::decode(b.clone(), usize::MAX).ok()?.message {
                Message::Request(r) => r.digest(),
                _ => return None,
            },
            BatchEntry::ByDigest(d) => *d,
        };
        material.extend_from_slice(&d.0);
    }
    Some(Digest::of(&material))
}

/// Applies the fix-ups described at the top of this file.
fn fix_up(msg: &mut Message, pool: &Pool, cluster: &Cluster, now: Instant) {
    let root = cluster.initial_root;
    match msg {
        Message::Request(_) | Message::Fetch(_) => {}
        Message::Reply(r) => {
            if let wire::ReplyBody::Digest(d) = &mut r.body {
                pool.fix(d, root);
            }
        }
        Message::PrePrepare(p) => {
            if p.nondet_time_us == 0 {
                p.nondet_time_us = now.as_us();
            }
            for e in &mut p.entries {
                match e {
                    BatchEntry::ByDigest(d) => pool.fix(d, root),
                    BatchEntry::Inline(b) => {
                        let Ok(env) = wire::decode(b.clone(), usize::MAX) else { continue };
                        if !env.tags.is_empty() {
                            continue;
                        }
                        if let (Message::Request(_), Some(keys)) = (&env.message, cluster.keys(env.sender)) {
                            *b = keys.seal(&env.message, Audience::Replicas);
                        }
                    }
                }
            }
        }
        Message::Prepare(wire::Prepare { digest, .. }) | Message::Commit(wire::Commit { digest, .. }) => {
            pool.fix(digest, root)
        }
        Message::Checkpoint(c) => pool.fix(&mut c.state_digest, root),
        Message::Status(s) => s.missing_requests.iter_mut().for_each(|d| pool.fix(d, root)),
        Message::MetaData(m) => {
            if m.children.is_empty() {
                if let Ok(children) = cluster.initial.children_at(SeqNo(0), m.level, m.index) {
                    m.children = children;
                }
            } else {
                m.children.iter_mut().for_each(|d| pool.fix(d, root));
            }
        }
        Message::Data(d) => {
            if d.pages.is_empty() {
                *d = wire::Data::new(d.seq, d.index, vec![std::sync::Arc::new([0u8; PAGE_SIZE])]);
            }
        }
        Message::ViewChange(v) => {
            v.checkpoints.iter_mut().for_each(|(_, d)| pool.fix(d, root));
            v.prepared.iter_mut().chain(v.pre_prepared.iter_mut()).for_each(|e| pool.fix(&mut e.digest, root));
        }
        Message::ViewChangeAck(a) => pool.fix(&mut a.digest, root),
        Message::NewView(nv) => nv.view_changes.iter_mut().for_each(|(_, d)| pool.fix(d, root)),
    }
}

/// Checks what the replica produced and learns digests from it.
fn absorb(out: &mut Outbox, pool: &mut Pool, cfg: &Config, trace: bool) {
    for e in out.drain() {
        if trace {
            match &e {
                Effect::Send { to, bytes } => match wire::decode(bytes.clone(), usize::MAX) {
                    Ok(env) => eprintln!("    send {to:?}: {:?}", env.message),
                    Err(err) => eprintln!("    send {to:?}: undecodable ({err})"),
                },
                other => eprintln!("    {other:?}"),
            }
        }
        match e {
            Effect::Send { bytes, .. } => {
                assert!(bytes.len() <= cfg.max_message_bytes, "replica sent a datagram of {} bytes", bytes.len());
                let env = match wire::decode(bytes.clone(), cfg.max_message_bytes) {
                    Ok(env) => env,
                    Err(e) => panic!("replica sent a datagram that does not decode: {e}"),
                };
                pool.harvest(&env.message);
            }
            Effect::StableCheckpoint { digest, .. } | Effect::StateTransferred { digest, .. } => pool.push(digest),
            Effect::Executed(x) => pool.push(x.batch),
            _ => {}
        }
    }
}

/// The bounds `pbft-sim`'s `check_bounds` enforces.
fn check_bounds(replica: &Replica<Counter>) {
    let cfg = replica.config();
    let check = |what: &str, value: usize, bound: usize| {
        assert!(value <= bound, "bounds: {what} = {value} exceeds its bound {bound}\n{}", replica.describe());
    };
    check("log entries", replica.log_len(), cfg.log_window as usize);
    check("request queue", replica.request_queue_len(), cfg.max_request_queue);
    check("known requests", replica.known_requests_len(), cfg.max_known_requests);
    check("read-only queue", replica.read_only_queue_len(), cfg.max_read_only_queue);
    check(
        "checkpoint records",
        replica.checkpoint_records(),
        (cfg.log_window / cfg.checkpoint_interval) as usize + 1,
    );
    if let Some((lo, hi)) = replica.log_bounds() {
        let h = replica.low_water_mark().0;
        assert!(
            lo.0 > h && hi.0 <= h + cfg.log_window,
            "bounds: log spans {}..={} outside the water marks ({h}, {}]\n{}",
            lo.0,
            hi.0,
            h + cfg.log_window,
            replica.describe()
        );
    }
}

fn run(cluster: &Cluster, data: &[u8]) {
    let [conf, count, tail @ ..] = data else { return };
    let (conf, count) = (*conf, *count);
    let mut rest: &[u8] = tail;
    let id = ReplicaId((conf & 3) as u16);
    let mut cfg = base_config();
    cfg.tentative_execution = conf & 4 != 0;
    cfg.read_only_optimization = conf & 8 != 0;
    if conf & 16 != 0 {
        cfg.checkpoint_interval = 2;
        cfg.log_window = 4;
    } else {
        cfg.checkpoint_interval = 4;
        cfg.log_window = 8;
    }
    let mut replica = Replica::new(cfg.clone(), id, cluster.replicas[id.index()].clone(), Counter)
        .expect("valid configuration");
    let mut pool = Pool(VecDeque::with_capacity(POOL));
    let mut out = Outbox::new();
    let mut now = Instant(START_US);
    replica.start(now, &mut out);
    absorb(&mut out, &mut pool, &cfg, cluster.trace);

    for _ in 0..(count as usize).min(MAX_CHUNKS) {
        let &[lo, hi, ref tail @ ..] = rest else { break };
        let len = (u16::from_le_bytes([lo, hi]) as usize).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        if cluster.trace {
            eprintln!("chunk {:02x?}", &chunk[..chunk.len().min(24)]);
        }
        match chunk.first() {
            Some(0x5A) => {
                now = now.plus_us(cfg.status_interval_us);
                replica.handle_timeout(now, &mut out);
            }
            Some(0x5B) => {
                // Straight to the next deadline (the view-change timer, say).
                now = replica.poll_timeout().map_or(now, |at| at.max(now));
                replica.handle_timeout(now, &mut out);
            }
            Some(0xA5) => {
                now = now.plus_us(STEP_US);
                let Ok(env) = wire::decode(Bytes::copy_from_slice(&chunk[1..]), usize::MAX) else { continue };
                let mut msg = env.message;
                fix_up(&mut msg, &pool, cluster, now);
                if cluster.trace {
                    eprintln!("  sealed from {:?}: {msg:?}", env.sender);
                }
                pool.harvest(&msg);
                let bytes = match cluster.keys(env.sender) {
                    Some(keys) => keys.seal(&msg, Audience::Replicas),
                    None => wire::encode_unauthenticated(env.sender, &msg, N).0.freeze(),
                };
                replica.on_datagram(now, bytes, &mut out);
            }
            _ => {
                now = now.plus_us(STEP_US);
                replica.on_datagram(now, Bytes::copy_from_slice(chunk), &mut out);
            }
        }
        absorb(&mut out, &mut pool, &cfg, cluster.trace);
        check_bounds(&replica);
        if cluster.trace {
            eprintln!("  {}\n  drops: {:?}", replica.describe(), replica.metrics());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    CLUSTER.with(|cluster| run(cluster, data));
});
