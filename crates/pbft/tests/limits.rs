//! The configuration's limits, checked together (STYLE.md rule 6): a
//! configuration is refused if a message it allows could not be carried by
//! the wire (a MAC count in one byte, bounded lists) or would not fit in
//! `max_message_bytes`; and the computed bounds are those of real encodings.

use std::sync::Arc;

use bytes::Bytes;
use pbft::auth::{public_key, Audience, KeyTable};
use pbft::state::PAGE_SIZE;
use pbft::types::{ClientId, Digest, NodeId, ReplicaId, SeqNo, Timestamp, View};
use pbft::wire::{self, Data, Message, Reply, ReplyBody, Request, VcEntry, ViewChange};
use pbft::Config;

fn keys(n: usize, me: NodeId) -> KeyTable {
    let secret = |i: usize| {
        let mut s = [7u8; 32];
        s[..8].copy_from_slice(&(i as u64).to_le_bytes());
        s
    };
    let replicas: Vec<[u8; 32]> = (0..n).map(|i| public_key(&secret(i))).collect();
    let clients = vec![public_key(&secret(10_000))];
    let mine = match me {
        NodeId::Replica(r) => secret(r.index()),
        NodeId::Client(_) => secret(10_000),
    };
    KeyTable::from_static_dh(me, &mine, &replicas, &clients)
}

fn bound(cfg: &Config, what: &str) -> usize {
    cfg.largest_messages().into_iter().find(|(w, _)| *w == what).map(|(_, b)| b).expect("a bound for every kind")
}

#[test]
fn the_defaults_fit_and_their_bounds_are_the_real_encodings() {
    let cfg = Config::new(1);
    cfg.validate().expect("the defaults are valid");
    let n = cfg.n();
    let replica = keys(n, NodeId::Replica(ReplicaId(0)));

    // The largest VIEW-CHANGE: every checkpoint in the window, a prepared
    // batch at every sequence number and Q full at each.
    let l = cfg.log_window;
    let entry = |seq: u64, k: u8| VcEntry { seq: SeqNo(seq), digest: Digest([k; 32]), view: View(9) };
    let vc = ViewChange {
        view: View(10),
        stable: SeqNo(0),
        checkpoints: (0..=l / cfg.checkpoint_interval).map(|i| (SeqNo(i * cfg.checkpoint_interval), Digest([1; 32]))).collect(),
        prepared: (1..=l).map(|s| entry(s, 2)).collect(),
        pre_prepared: (1..=l).flat_map(|s| (0..wire::MAX_Q_PER_SEQ as u8).map(move |k| entry(s, k))).collect(),
    };
    let sealed = replica.seal(&Message::ViewChange(vc), Audience::Replicas);
    assert_eq!(sealed.len(), bound(&cfg, "VIEW-CHANGE"));
    assert!(sealed.len() <= cfg.max_message_bytes);

    let pages = (0..wire::PAGES_PER_DATA).map(|_| Arc::new([3u8; PAGE_SIZE])).collect();
    let sealed = replica.seal(&Message::Data(Data::new(SeqNo(4), 0, pages)), Audience::Replicas);
    assert_eq!(sealed.len(), bound(&cfg, "DATA"));

    let result = Bytes::from(vec![5u8; cfg.max_reply_bytes]);
    let reply = Reply { view: View(1), timestamp: Timestamp(3), client: ClientId(0), tentative: true, body: ReplyBody::Full(result) };
    let sealed = replica.seal(&Message::Reply(reply), Audience::Client(ClientId(0)));
    assert_eq!(sealed.len(), bound(&cfg, "reply"));

    let client = keys(n, NodeId::Client(ClientId(0)));
    let op = Bytes::from(vec![6u8; cfg.max_op_bytes]);
    let req = Request { client: ClientId(0), timestamp: Timestamp(1), read_only: false, replier: None, op };
    let sealed = client.seal(&Message::Request(req), Audience::Replicas);
    assert_eq!(sealed.len(), bound(&cfg, "request"));
}

#[test]
fn the_number_of_replicas_is_bounded_by_what_one_datagram_carries() {
    // The largest f accepted, and the reason the next one is not.
    let largest = (1..100).take_while(|f| Config::new(*f).validate().is_ok()).last().expect("f = 1 is valid");
    let next = Config::new(largest + 1).validate().expect_err("one more is refused").to_string();
    assert!(next.contains("above max_message_bytes"), "{next}");
    let cfg = Config::new(largest);
    assert!(cfg.n() <= wire::MAX_TAGS);
    // At that limit a real VIEW-CHANGE of the largest size still fits.
    let (what, bytes) = cfg.largest_messages().into_iter().max_by_key(|(_, b)| *b).expect("bounds");
    assert!(bytes <= cfg.max_message_bytes, "{what}: {bytes}");
    println!("largest f = {largest} (n = {}), the largest message a {what} of {bytes} bytes", cfg.n());

    // However large the datagram, a MAC count is one byte.
    let mut many = Config::new((wire::MAX_TAGS - 1) / 3 + 1);
    many.max_message_bytes = pbft::config::MAX_UDP_PAYLOAD;
    let err = many.validate().expect_err("too many MACs").to_string();
    assert!(err.contains("MACs"), "{err}");
}

#[test]
fn a_window_whose_view_change_would_not_fit_is_refused() {
    let mut cfg = Config::new(1);
    cfg.log_window = 512;
    let err = cfg.validate().expect_err("a VIEW-CHANGE of a 512 window exceeds a datagram").to_string();
    assert!(err.contains("VIEW-CHANGE"), "{err}");
    cfg.log_window = 2048;
    let err = cfg.validate().expect_err("Q would exceed the wire's list bound").to_string();
    assert!(err.contains("list") || err.contains("bound"), "{err}");
    let mut cfg = Config::new(1);
    cfg.max_message_bytes = 70_000;
    assert!(cfg.validate().is_err(), "no UDP datagram is that large");
    let mut cfg = Config::new(1);
    cfg.max_reply_bytes = 64 * 1024;
    let err = cfg.validate().expect_err("a reply larger than a datagram").to_string();
    assert!(err.contains("reply"), "{err}");
}
