//! How a source answers FETCH for pages: one DATA for every 15 pages, up to
//! 120 pages a FETCH, each page with the digest its partition tree has.

use bytes::Bytes;
use pbft::auth::{public_key, Audience, KeyTable};
use pbft::service::{ExecContext, ReadContext, Service};
use pbft::wire::{Fetch, Message};
use pbft::{Config, Dest, Effect, Instant, NodeId, Outbox, Replica, ReplicaId, SeqNo};

/// A service with 300 pages of state and no operations.
struct Wide;

impl Service for Wide {
    fn state_pages(&self) -> u64 {
        300
    }
    fn execute(&mut self, _op: &[u8], _ctx: &mut ExecContext<'_>) -> Vec<u8> {
        Vec::new()
    }
    fn execute_read_only(&self, _op: &[u8], _ctx: &ReadContext<'_>) -> Option<Vec<u8>> {
        None
    }
}

fn keys(cfg: &Config, id: u16) -> KeyTable {
    let secret = |i: usize| [i as u8 + 1; 32];
    let publics: Vec<_> = (0..cfg.n()).map(|i| public_key(&secret(i))).collect();
    KeyTable::from_static_dh(NodeId::Replica(ReplicaId(id)), &secret(id as usize), &publics, &[])
}

/// What replica 0 sends replica 3 in answer to a FETCH of `count` pages from `index`.
fn answer(source: &mut Replica<Wide>, asker: &KeyTable, index: u64, count: u16) -> Vec<pbft::wire::Data> {
    let depth = source.state().shape().depth;
    let fetch = Message::Fetch(Fetch { seq: SeqNo(0), level: depth, index, count });
    let mut out = Outbox::new();
    source.on_datagram(Instant(1_000), asker.seal(&fetch, Audience::Replicas), &mut out);
    out.drain()
        .filter_map(|e| match e {
            Effect::Send { to: Dest::Replica(ReplicaId(3)), bytes } => Some(bytes),
            _ => None,
        })
        .map(|bytes: Bytes| match asker.open(bytes, 65_000).expect("a DATA that verifies").into_message() {
            Message::Data(d) => d,
            other => panic!("expected DATA, got {other:?}"),
        })
        .collect()
}

#[test]
fn a_fetch_is_answered_with_one_data_per_15_pages_up_to_120() {
    let cfg = Config::new(1);
    let mut source = Replica::new(cfg.clone(), ReplicaId(0), keys(&cfg, 0), Wide).expect("valid");
    let asker = keys(&cfg, 3);
    let depth = source.state().shape().depth;
    let pages = source.state().num_pages();
    assert!(pages >= 300);

    let data = answer(&mut source, &asker, 5, 40);
    let layout: Vec<(u64, usize)> = data.iter().map(|d| (d.index, d.pages.len())).collect();
    assert_eq!(layout, vec![(5, 15), (20, 15), (35, 10)]);
    for d in &data {
        assert_eq!(d.seq, SeqNo(0));
        for (k, (page, digest)) in d.pages.iter().zip(&d.digests).enumerate() {
            let index = d.index + k as u64;
            assert_eq!(page.as_ref(), source.state().page_at(SeqNo(0), index).expect("a page"));
            assert_eq!(*digest, source.state().node_digest_at(SeqNo(0), depth, index).expect("a leaf"));
        }
    }

    // More than 120 pages asked for: 120 are sent.
    let data = answer(&mut source, &asker, 0, 1000);
    assert_eq!(data.len(), 8);
    assert_eq!(data.iter().map(|d| d.pages.len()).sum::<usize>(), 120);
    // Asking past the end of the state: only the pages there are.
    let data = answer(&mut source, &asker, pages - 20, 100);
    assert_eq!(data.iter().map(|d| d.pages.len()).collect::<Vec<_>>(), vec![15, 5]);
    // Count 0 is taken as 1.
    let data = answer(&mut source, &asker, 7, 0);
    assert_eq!(data.iter().map(|d| (d.index, d.pages.len())).collect::<Vec<_>>(), vec![(7, 1)]);
}

#[test]
fn a_peer_gets_at_most_its_budget_of_pages_an_interval() {
    let cfg = Config::new(1);
    let mut source = Replica::new(cfg.clone(), ReplicaId(0), keys(&cfg, 0), Wide).expect("valid");
    let asker = keys(&cfg, 3);
    // 16,384 pages an interval: 136 FETCHes of 120 pages and 64 of a 137th.
    let sent: usize = (0..140).map(|_| answer(&mut source, &asker, 0, 120).iter().map(|d| d.pages.len()).sum::<usize>()).sum();
    assert_eq!(sent, 16_384);
    assert!(source.metrics().dropped(pbft::metrics::DropReason::RateLimited) >= 3);
}
