//! What a replica says became of each datagram (`Replica::on_datagram`
//! returns `Received`): the host learns a client's address only from a
//! request whose MAC verified, without decoding anything itself.

use bytes::Bytes;
use pbft::auth::{public_key, Audience, KeyTable};
use pbft::metrics::DropReason;
use pbft::service::{ExecContext, ReadContext, Service};
use pbft::wire::{Message, Prepare, Request};
use pbft::{ClientId, Config, Digest, Instant, NodeId, Outbox, Received, Replica, ReplicaId, SeqNo, Timestamp, View};

struct Echo;

impl Service for Echo {
    fn state_pages(&self) -> u64 {
        1
    }
    fn execute(&mut self, op: &[u8], _ctx: &mut ExecContext<'_>) -> Vec<u8> {
        op.to_vec()
    }
    fn execute_read_only(&self, op: &[u8], _ctx: &ReadContext<'_>) -> Option<Vec<u8>> {
        Some(op.to_vec())
    }
}

fn secret(node: NodeId) -> [u8; 32] {
    match node {
        NodeId::Replica(r) => [r.0 as u8 + 1; 32],
        NodeId::Client(c) => [c.0 as u8 + 101; 32],
    }
}

fn keys(cfg: &Config, me: NodeId) -> KeyTable {
    let replicas: Vec<_> = (0..cfg.n()).map(|i| public_key(&secret(NodeId::Replica(ReplicaId(i as u16))))).collect();
    let clients: Vec<_> = (0..2).map(|c| public_key(&secret(NodeId::Client(ClientId(c))))).collect();
    KeyTable::from_static_dh(me, &secret(me), &replicas, if matches!(me, NodeId::Replica(_)) { &clients } else { &[] })
}

#[test]
fn each_datagram_is_authenticated_vouched_or_dropped_with_a_reason() {
    let mut cfg = Config::new(1);
    cfg.max_clients = 2;
    let mut replica = Replica::new(cfg.clone(), ReplicaId(1), keys(&cfg, NodeId::Replica(ReplicaId(1))), Echo).expect("valid");
    let mut out = Outbox::new();
    let now = Instant(1_000);

    assert_eq!(replica.on_datagram(now, Bytes::from_static(b"junk"), &mut out), Received::Dropped(DropReason::Malformed));

    let client = keys(&cfg, NodeId::Client(ClientId(1)));
    let req = Request { client: ClientId(1), timestamp: Timestamp(7), read_only: true, replier: None, op: Bytes::from_static(b"x") };
    let sealed = client.seal(&Message::Request(req.clone()), Audience::Replicas);
    assert_eq!(
        replica.on_datagram(now, sealed.clone(), &mut out),
        Received::Authenticated { from: NodeId::Client(ClientId(1)), timestamp: Some(Timestamp(7)) }
    );

    // The same request with its MAC for this replica broken: no batch names
    // it, so nothing vouches for it.
    let mut forged = sealed.to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged_for_me = replica.on_datagram(now, Bytes::from(forged), &mut out);
    // Tags are in replica order; the last one is replica 3's, so replica 1's still verifies.
    assert!(matches!(forged_for_me, Received::Authenticated { .. }), "{forged_for_me:?}");
    let mut forged = sealed.to_vec();
    let tags_at = forged.len() - cfg.n() * pbft::wire::TAG_LEN;
    forged[tags_at + pbft::wire::TAG_LEN] ^= 1; // replica 1's tag
    assert_eq!(replica.on_datagram(now, Bytes::from(forged), &mut out), Received::Dropped(DropReason::BadMac));

    // A replica's message verifies as from that replica.
    let peer = keys(&cfg, NodeId::Replica(ReplicaId(2)));
    let prepare = peer.seal(&Message::Prepare(Prepare { view: View(0), seq: SeqNo(1), digest: Digest([4; 32]) }), Audience::Replicas);
    assert_eq!(
        replica.on_datagram(now, prepare, &mut out),
        Received::Authenticated { from: NodeId::Replica(ReplicaId(2)), timestamp: None }
    );
    // A client may not send a replica's message.
    let fake = client.seal(&Message::Prepare(Prepare { view: View(0), seq: SeqNo(1), digest: Digest([4; 32]) }), Audience::Replicas);
    assert_eq!(replica.on_datagram(now, fake, &mut out), Received::Dropped(DropReason::WrongSenderKind));
    assert_eq!(replica.metrics().dropped(DropReason::BadMac), 1);
}
