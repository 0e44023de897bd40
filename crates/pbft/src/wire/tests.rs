use super::*;
use proptest::prelude::*;

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn request() -> impl Strategy<Value = Request> {
    (any::<u32>(), any::<u64>(), any::<bool>(), proptest::option::of(0u16..u16::MAX), bytes(300)).prop_map(
        |(c, t, ro, rep, op)| Request {
            client: ClientId(c),
            timestamp: Timestamp(t),
            read_only: ro,
            replier: rep.map(ReplicaId),
            op,
        },
    )
}

fn vc_entry() -> impl Strategy<Value = VcEntry> {
    (any::<u64>(), digest(), any::<u64>()).prop_map(|(n, d, v)| VcEntry { seq: SeqNo(n), digest: d, view: View(v) })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        request().prop_map(Message::Request),
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<bool>(), prop_oneof![bytes(300).prop_map(ReplyBody::Full), digest().prop_map(ReplyBody::Digest)])
            .prop_map(|(v, t, c, tentative, body)| Message::Reply(Reply {
                view: View(v),
                timestamp: Timestamp(t),
                client: ClientId(c),
                tentative,
                body
            })),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(prop_oneof![bytes(200).prop_map(BatchEntry::Inline), digest().prop_map(BatchEntry::ByDigest)], 0..8)
        )
            .prop_map(|(v, n, t, entries)| Message::PrePrepare(PrePrepare {
                view: View(v),
                seq: SeqNo(n),
                nondet_time_us: t,
                entries
            })),
        (any::<u64>(), any::<u64>(), digest()).prop_map(|(v, n, d)| Message::Prepare(Prepare { view: View(v), seq: SeqNo(n), digest: d })),
        (any::<u64>(), any::<u64>(), digest()).prop_map(|(v, n, d)| Message::Commit(Commit { view: View(v), seq: SeqNo(n), digest: d })),
        (any::<u64>(), digest()).prop_map(|(n, d)| Message::Checkpoint(Checkpoint { seq: SeqNo(n), state_digest: d })),
        (any::<u64>(), any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>(), proptest::collection::vec(0u8..8, 0..64), proptest::collection::vec(digest(), 0..4))
            .prop_map(|(v, active, h, f, le, slots, missing)| Message::Status(Status {
                view: View(v),
                view_active: active,
                stable: SeqNo(h),
                first_open: SeqNo(f),
                last_executed: SeqNo(le),
                slots,
                missing_requests: missing
            })),
        (any::<u64>(), any::<u32>(), any::<u64>(), any::<u16>())
            .prop_map(|(n, l, x, c)| Message::Fetch(Fetch { seq: SeqNo(n), level: l, index: x, count: c })),
        (any::<u64>(), any::<u32>(), any::<u64>(), proptest::collection::vec(digest(), 0..20))
            .prop_map(|(n, l, x, children)| Message::MetaData(MetaData { seq: SeqNo(n), level: l, index: x, children })),
        (any::<u64>(), any::<u64>(), proptest::collection::vec((any::<u8>(), any::<u8>()), 0..3)).prop_map(|(n, x, seeds)| {
            let pages = seeds.into_iter().map(|(a, b)| Arc::new(std::array::from_fn(|i| a.wrapping_add(b.wrapping_mul(i as u8))))).collect();
            Message::Data(Data::new(SeqNo(n), x, pages))
        }),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec((any::<u64>(), digest()), 0..5),
            proptest::collection::vec(vc_entry(), 0..6),
            proptest::collection::vec(vc_entry(), 0..6)
        )
            .prop_map(|(v, h, c, p, q)| Message::ViewChange(ViewChange {
                view: View(v),
                stable: SeqNo(h),
                checkpoints: c.into_iter().map(|(n, d)| (SeqNo(n), d)).collect(),
                prepared: p,
                pre_prepared: q
            })),
        (any::<u64>(), any::<u16>(), digest())
            .prop_map(|(v, r, d)| Message::ViewChangeAck(ViewChangeAck { view: View(v), replica: ReplicaId(r), digest: d })),
        (any::<u64>(), proptest::collection::vec((any::<u16>(), digest()), 0..7)).prop_map(|(v, vcs)| Message::NewView(NewView {
            view: View(v),
            view_changes: vcs.into_iter().map(|(r, d)| (ReplicaId(r), d)).collect()
        })),
    ]
}

fn sender() -> impl Strategy<Value = NodeId> {
    prop_oneof![any::<u16>().prop_map(|r| NodeId::Replica(ReplicaId(r))), any::<u32>().prop_map(|c| NodeId::Client(ClientId(c)))]
}

proptest! {
    #[test]
    fn round_trip_is_exact(m in message(), s in sender(), tags in 0usize..12) {
        let (buf, auth_len) = encode_unauthenticated(s, &m, tags);
        let raw = buf.freeze();
        let env = decode(raw.clone(), 1 << 20).expect("decodes");
        prop_assert_eq!(&env.message, &m);
        prop_assert_eq!(env.sender, s);
        prop_assert_eq!(env.tags.len(), tags);
        prop_assert_eq!(env.auth_digest, auth_digest(&m, &raw[..auth_len]));
        if !matches!(m, Message::Data(_)) {
            prop_assert_eq!(env.auth_digest, Digest::of(&raw[..auth_len]));
        }
        // Canonical: encoding the decoded message gives the same bytes.
        let (again, _) = encode_unauthenticated(env.sender, &env.message, tags);
        prop_assert_eq!(&again[..], &raw[..]);
        // A reply's claimed client and timestamp are the decoded ones; no
        // other message claims to be a reply.
        let claimed = match &m {
            Message::Reply(r) => Some((r.client, r.timestamp)),
            _ => None,
        };
        prop_assert_eq!(claimed_reply(&raw), claimed);
    }

    #[test]
    fn every_truncation_is_an_error(m in message(), s in sender()) {
        let (buf, _) = encode_unauthenticated(s, &m, 4);
        for cut in 0..buf.len() {
            prop_assert!(decode(Bytes::copy_from_slice(&buf[..cut]), 1 << 20).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = claimed_reply(&b);
        let _ = decode(Bytes::from(b), 1 << 20);
    }

    #[test]
    fn mutated_messages_never_panic(m in message(), pos in any::<usize>(), val in any::<u8>()) {
        let (buf, _) = encode_unauthenticated(NodeId::Replica(ReplicaId(1)), &m, 4);
        let mut v = buf.to_vec();
        let i = pos % v.len();
        v[i] = val;
        let _ = decode(Bytes::from(v), 1 << 20);
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let (buf, _) = encode_unauthenticated(NodeId::Replica(ReplicaId(0)), &Message::Checkpoint(Checkpoint { seq: SeqNo(1), state_digest: Digest::default() }), 1);
    let mut v = buf.to_vec();
    v.push(0);
    assert_eq!(decode(Bytes::from(v), 1 << 20).unwrap_err(), WireError::Trailing);
}

#[test]
fn oversized_unknown_and_bad_header_are_rejected() {
    let (buf, _) = encode_unauthenticated(NodeId::Replica(ReplicaId(0)), &Message::Checkpoint(Checkpoint { seq: SeqNo(1), state_digest: Digest::default() }), 1);
    assert_eq!(decode(buf.clone().freeze(), 10).unwrap_err(), WireError::Oversized);
    let mut v = buf.to_vec();
    v[3] = 99;
    assert_eq!(decode(Bytes::from(v), 1 << 20).unwrap_err(), WireError::UnknownKind(99));
    let mut v = buf.to_vec();
    v[2] = 2;
    assert_eq!(decode(Bytes::from(v), 1 << 20).unwrap_err(), WireError::BadVersion(2));
    let mut v = buf.to_vec();
    v[0] = b'X';
    assert_eq!(decode(Bytes::from(v), 1 << 20).unwrap_err(), WireError::BadMagic);
}

#[test]
fn non_canonical_booleans_are_rejected() {
    let req = Request { client: ClientId(1), timestamp: Timestamp(2), read_only: true, replier: None, op: Bytes::new() };
    let (buf, _) = encode_unauthenticated(NodeId::Client(ClientId(1)), &Message::Request(req), 1);
    let mut v = buf.to_vec();
    // The read_only flag follows the header, the client (4) and the timestamp (8).
    v[HEADER_LEN + 12] = 2;
    assert_eq!(decode(Bytes::from(v), 1 << 20).unwrap_err(), WireError::Invalid("boolean"));
}

#[test]
fn data_of_a_part_of_a_page_is_rejected() {
    let data = Data::from_bytes(SeqNo(3), 5, &[7u8; 2 * PAGE_SIZE]).expect("two whole pages");
    assert_eq!(data.pages.len(), 2);
    assert_eq!(data.digests[0], Digest::of(&[7u8; PAGE_SIZE]));
    assert!(Data::from_bytes(SeqNo(3), 5, &[7u8; PAGE_SIZE + 1]).is_none());
    // One byte short of two pages: the length field and the body both say so.
    let (buf, _) = encode_unauthenticated(NodeId::Replica(ReplicaId(0)), &Message::Data(data), 1);
    let mut v = buf.to_vec();
    v.remove(HEADER_LEN + 16 + 4);
    let len_at = HEADER_LEN + 16;
    let page_len = u32::from_le_bytes(v[len_at..len_at + 4].try_into().expect("4 bytes")) - 1;
    v[len_at..len_at + 4].copy_from_slice(&page_len.to_le_bytes());
    let body_len = u32::from_le_bytes(v[HEADER_LEN - 4..HEADER_LEN].try_into().expect("4 bytes")) - 1;
    v[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&body_len.to_le_bytes());
    assert_eq!(decode(Bytes::from(v), 1 << 20).unwrap_err(), WireError::Invalid("DATA of a part of a page"));
}
