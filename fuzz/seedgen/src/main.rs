//! Writes seed inputs for the fuzz targets into `fuzz/corpus/<target>/seed-*`,
//! in the input format documented in `fuzz_targets/replica_datagram.rs`.
//! Run from `fuzz/`: `cargo run --manifest-path seedgen/Cargo.toml`.

use std::fs;
use std::path::Path;

use bytes::Bytes;
use pbft::wire::{self, BatchEntry, Message};
use pbft::{ClientId, Digest, NodeId, ReplicaId, SeqNo, Timestamp, View};

fn r(i: u16) -> NodeId {
    NodeId::Replica(ReplicaId(i))
}
fn c(i: u32) -> NodeId {
    NodeId::Client(ClientId(i))
}
/// A digest the harness replaces: k = 0 newest pool entry, 0xFF initial root.
fn hint(k: u8) -> Digest {
    let mut d = [0u8; 32];
    d[0] = k;
    Digest(d)
}
fn env(sender: NodeId, m: &Message, tags: usize) -> Vec<u8> {
    wire::encode_unauthenticated(sender, m, tags).0.to_vec()
}
fn request(client: u32, ts: u64, read_only: bool, op: &[u8]) -> Message {
    Message::Request(wire::Request {
        client: ClientId(client),
        timestamp: Timestamp(ts),
        read_only,
        replier: None,
        op: Bytes::copy_from_slice(op),
    })
}
fn pre_prepare(seq: u64, reqs: &[(u32, u64)]) -> Message {
    Message::PrePrepare(wire::PrePrepare {
        view: View(0),
        seq: SeqNo(seq),
        nondet_time_us: 0,
        entries: reqs.iter().map(|&(cl, ts)| BatchEntry::Inline(Bytes::from(env(c(cl), &request(cl, ts, false, &[1]), 0)))).collect(),
    })
}
fn prepare(seq: u64) -> Message {
    Message::Prepare(wire::Prepare { view: View(0), seq: SeqNo(seq), digest: hint(0) })
}
fn commit(seq: u64) -> Message {
    Message::Commit(wire::Commit { view: View(0), seq: SeqNo(seq), digest: hint(0) })
}
fn checkpoint(seq: u64, d: Digest) -> Message {
    Message::Checkpoint(wire::Checkpoint { seq: SeqNo(seq), state_digest: d })
}

/// An input for `replica_datagram`.
struct Input {
    conf: u8,
    chunks: Vec<Vec<u8>>,
}

impl Input {
    fn new(conf: u8) -> Input {
        Input { conf, chunks: Vec::new() }
    }
    fn sealed(&mut self, sender: NodeId, m: Message) -> &mut Self {
        let mut chunk = vec![0xA5];
        chunk.extend(env(sender, &m, 0));
        self.chunks.push(chunk);
        self
    }
    fn raw(&mut self, bytes: Vec<u8>) -> &mut Self {
        self.chunks.push(bytes);
        self
    }
    fn tick(&mut self) -> &mut Self {
        self.chunks.push(vec![0x5A]);
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = vec![self.conf, self.chunks.len() as u8];
        for ch in &self.chunks {
            out.extend_from_slice(&(ch.len() as u16).to_le_bytes());
            out.extend_from_slice(ch);
        }
        out
    }
}

/// Backup `me` (primary 0) orders and commits `seqs`, with backup `other`'s votes.
fn backup_orders(i: &mut Input, me: u16, other: u16, seqs: std::ops::RangeInclusive<u64>) {
    let _ = me;
    for seq in seqs {
        i.sealed(r(0), pre_prepare(seq, &[(0, seq), (1, seq)]))
            .sealed(r(other), prepare(seq))
            .sealed(r(0), commit(seq))
            .sealed(r(other), commit(seq));
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("corpus");
    let rd = dir.join("replica_datagram");
    let wd = dir.join("wire_decode");
    fs::create_dir_all(&rd).unwrap();
    fs::create_dir_all(&wd).unwrap();
    let mut seeds: Vec<(&str, Input)> = Vec::new();

    // Backup 1, checkpoint interval 2, tentative execution: two batches, a
    // stable checkpoint, status ticks.
    let mut a = Input::new(1 | 4 | 8 | 16);
    backup_orders(&mut a, 1, 2, 1..=2);
    a.sealed(r(0), checkpoint(2, hint(0))).sealed(r(2), checkpoint(2, hint(0))).tick().tick();
    backup_orders(&mut a, 1, 2, 3..=4);
    seeds.push(("backup-commit-checkpoint", a));

    // The same without tentative execution, interval 4.
    let mut a2 = Input::new(2 | 8);
    backup_orders(&mut a2, 2, 3, 1..=4);
    a2.sealed(r(0), checkpoint(4, hint(0))).sealed(r(3), checkpoint(4, hint(0)));
    seeds.push(("backup2-no-tentative", a2));

    // Primary 0: client requests are batched; backups 1 and 2 prepare and commit.
    let mut b = Input::new(4 | 8);
    for seq in 1..=4u64 {
        b.sealed(c((seq % 4) as u32), request((seq % 4) as u32, seq, false, &[seq as u8]))
            .sealed(r(1), prepare(seq))
            .sealed(r(2), prepare(seq))
            .sealed(r(1), commit(seq))
            .sealed(r(2), commit(seq));
    }
    b.sealed(r(1), checkpoint(4, hint(0)))
        .sealed(r(2), checkpoint(4, hint(0)))
        .sealed(c(2), request(2, 9, true, b"get"))
        .sealed(c(3), request(3, 9, true, &[0xFF]))
        .sealed(r(1), Message::Fetch(wire::Fetch { seq: SeqNo(4), level: 0, index: 0, count: 1 }))
        .sealed(r(1), Message::Fetch(wire::Fetch { seq: SeqNo(4), level: 4, index: 20, count: 1 }))
        .sealed(
            r(2),
            Message::Status(wire::Status {
                view: View(0),
                view_active: true,
                stable: SeqNo(0),
                first_open: SeqNo(1),
                last_executed: SeqNo(0),
                slots: vec![0, 1, 3],
                missing_requests: vec![hint(0)],
            }),
        )
        .tick();
    seeds.push(("primary-batches", b));

    // Backup 3 executes two batches, then f+1 replicas vouch for checkpoint 6
    // with the initial state's digest: it transfers state back to it.
    let mut t = Input::new(3 | 16);
    backup_orders(&mut t, 3, 1, 1..=2);
    t.sealed(r(0), checkpoint(6, hint(0xFF))).sealed(r(1), checkpoint(6, hint(0xFF))).tick().tick();
    for level in 0..4 {
        t.sealed(r(0), Message::MetaData(wire::MetaData { seq: SeqNo(6), level, index: 0, children: vec![] }));
    }
    for index in [0u64, 5, 10, 15, 20] {
        t.sealed(r(0), Message::Data(wire::Data::new(SeqNo(6), index, vec![std::sync::Arc::new(pbft::state::ZERO_PAGE)])));
    }
    t.tick();
    seeds.push(("state-transfer", t));

    // Large request named by digest, status, client misbehaviour, raw garbage.
    let mut m = Input::new(1 | 8);
    let big = vec![7u8; 2000];
    m.sealed(c(0), request(0, 1, false, &big))
        .sealed(
            r(0),
            Message::PrePrepare(wire::PrePrepare {
                view: View(0),
                seq: SeqNo(1),
                nondet_time_us: 0,
                entries: vec![BatchEntry::ByDigest(hint(0))],
            }),
        )
        .sealed(r(2), prepare(1))
        .sealed(r(0), commit(1))
        .sealed(r(2), commit(1))
        .sealed(r(2), request(0, 2, false, b"x"))
        .sealed(c(1), prepare(1))
        .sealed(c(1), request(0, 3, false, b"y"))
        .raw(env(c(1), &request(1, 1, false, b"unsealed"), 4))
        .raw(b"garbage".to_vec())
        .sealed(
            r(0),
            Message::Reply(wire::Reply {
                view: View(0),
                timestamp: Timestamp(1),
                client: ClientId(0),
                tentative: false,
                body: wire::ReplyBody::Digest(hint(0)),
            }),
        )
        .tick();
    seeds.push(("misc", m));

    for (name, input) in &seeds {
        fs::write(rd.join(format!("seed-{name}")), input.bytes()).unwrap();
    }

    // wire_decode: one envelope of every kind.
    let msgs = vec![
        (c(1), request(1, 5, false, b"op")),
        (
            r(2),
            Message::Reply(wire::Reply {
                view: View(1),
                timestamp: Timestamp(5),
                client: ClientId(1),
                tentative: true,
                body: wire::ReplyBody::Full(Bytes::from_static(b"res")),
            }),
        ),
        (r(0), pre_prepare(3, &[(1, 5), (2, 6)])),
        (r(1), prepare(3)),
        (r(1), commit(3)),
        (r(1), checkpoint(128, hint(9))),
        (
            r(3),
            Message::Status(wire::Status {
                view: View(0),
                view_active: true,
                stable: SeqNo(0),
                first_open: SeqNo(1),
                last_executed: SeqNo(0),
                slots: vec![7, 1],
                missing_requests: vec![hint(1)],
            }),
        ),
        (r(1), Message::Fetch(wire::Fetch { seq: SeqNo(4), level: 1, index: 2, count: 1 })),
        (r(1), Message::MetaData(wire::MetaData { seq: SeqNo(4), level: 1, index: 2, children: vec![hint(1); 3] })),
        (r(1), Message::Data(wire::Data::new(SeqNo(4), 2, vec![std::sync::Arc::new([7u8; pbft::state::PAGE_SIZE])]))),
    ];
    for (k, (sender, m)) in msgs.iter().enumerate() {
        fs::write(wd.join(format!("seed-{k:02}-4tags")), env(*sender, m, 4)).unwrap();
        fs::write(wd.join(format!("seed-{k:02}-1tag")), env(*sender, m, 1)).unwrap();
    }
    println!("wrote {} replica_datagram seeds and {} wire_decode seeds under {}", seeds.len(), 2 * msgs.len(), dir.display());
}
