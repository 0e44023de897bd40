//! Faulty clients: registered clients with real keys that send whatever the
//! adversary likes. Byzantine replicas are `pbft::adversary`, which the real
//! runtime shares.

use bytes::Bytes;
use pbft::adversary::forge;
use pbft::auth::{Audience, KeyTable};
use pbft::wire::{self, Message, Request};
use pbft::{ClientId, NodeId, Timestamp};
use pbft_kv::KvOp;

use crate::scenario::ClientFault;
use crate::world::World;

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
