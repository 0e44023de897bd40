//! What the examples share: every node's key table, derived from fixed secrets.

use pbft::auth::{public_key, KeyTable};
use pbft::{ClientId, NodeId, ReplicaId};

fn secret(node: NodeId) -> [u8; 32] {
    let mut s = [0u8; 32];
    match node {
        NodeId::Replica(r) => s[..2].copy_from_slice(&r.0.to_le_bytes()),
        NodeId::Client(c) => {
            s[2] = 1;
            s[3..7].copy_from_slice(&c.0.to_le_bytes());
        }
    }
    s
}

/// The key table of `me` in a cluster of `replicas` replicas and `clients`
/// clients (a client shares keys with the replicas only).
pub fn key_table(me: NodeId, replicas: usize, clients: usize) -> KeyTable {
    let rp: Vec<_> = (0..replicas).map(|i| public_key(&secret(NodeId::Replica(ReplicaId(i as u16))))).collect();
    let cp: Vec<_> = match me {
        NodeId::Replica(_) => (0..clients).map(|c| public_key(&secret(NodeId::Client(ClientId(c as u32))))).collect(),
        NodeId::Client(_) => Vec::new(),
    };
    KeyTable::from_static_dh(me, &secret(me), &rp, &cp)
}
