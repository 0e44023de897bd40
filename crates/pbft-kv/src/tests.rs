use pbft::service::{ExecContext, ReadContext, Service, StateRegion, StateRegionRef};
use pbft::state::{PagedState, TreeShape};
use pbft::ClientId;
use proptest::prelude::*;

use super::*;

struct Harness {
    state: PagedState,
    kv: KvService,
}

impl Harness {
    fn new(pages: u64) -> Harness {
        let kv = KvService::new(KvConfig { pages });
        Harness { state: PagedState::new(pages, TreeShape::default()).expect("valid"), kv }
    }
    fn exec(&mut self, op: &KvOp) -> KvResult {
        let pages = self.state.num_pages();
        let mut ctx = ExecContext {
            client: ClientId(0),
            nondet_time_us: 0,
            state: StateRegion::new(&mut self.state, 0, pages).expect("in range"),
        };
        KvResult::decode(&self.kv.execute(&op.encode(), &mut ctx)).expect("service results decode")
    }
    fn read(&self, op: &KvOp) -> Option<KvResult> {
        let pages = self.state.num_pages();
        let ctx = ReadContext { client: ClientId(0), state: StateRegionRef::new(&self.state, 0, pages).expect("in range") };
        self.kv.execute_read_only(&op.encode(), &ctx).map(|b| KvResult::decode(&b).expect("decodes"))
    }
}

fn small_key() -> impl Strategy<Value = Vec<u8>> {
    (0u8..12).prop_map(|k| vec![b'k', k])
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => (0usize..8300).prop_map(|n| vec![7u8; n]),
    ]
}

fn op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        (small_key(), value()).prop_map(|(key, value)| KvOp::Put { key, value }),
        small_key().prop_map(|key| KvOp::Get { key }),
        small_key().prop_map(|key| KvOp::Delete { key }),
        (small_key(), proptest::option::of(value()), proptest::option::of(value()))
            .prop_map(|(key, expected, new)| KvOp::Cas { key, expected, new }),
        (small_key(), small_key(), 0u32..300).prop_map(|(start, end, limit)| KvOp::Scan { start, end, limit }),
        (proptest::collection::vec(any::<u8>(), 0..10), 0u32..9000).prop_map(|(arg, result_len)| KvOp::Null { arg, result_len }),
        proptest::collection::vec(any::<u8>(), 300..320).prop_map(|key| KvOp::Get { key }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn service_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        // 12 keys at most, 40 slots: never full.
        let mut h = Harness::new(120);
        let mut model = KvModel::new();
        for op in &ops {
            let expected = model.apply(op);
            let got = h.exec(op);
            prop_assert_eq!(&got, &expected, "op {:?}", op);
            if op.is_read_only() {
                prop_assert_eq!(h.read(op), Some(expected));
            } else {
                prop_assert_eq!(h.read(op), None);
            }
        }
    }
}

#[test]
fn malformed_operations_are_error_results() {
    let mut h = Harness::new(30);
    let pages = h.state.num_pages();
    let mut ctx = ExecContext { client: ClientId(0), nondet_time_us: 0, state: StateRegion::new(&mut h.state, 0, pages).expect("in range") };
    for bad in [&b""[..], &[0xff], &[1, 99], &[1, 0, 5, 0, 0]] {
        let r = KvResult::decode(&h.kv.execute(bad, &mut ctx)).expect("decodes");
        assert_eq!(r, KvResult::Error(KvError::Malformed));
    }
}

#[test]
fn a_full_table_refuses_new_keys_and_keeps_the_old_ones() {
    let mut h = Harness::new(9); // 3 slots
    for i in 0..3u8 {
        assert_eq!(h.exec(&KvOp::Put { key: vec![i], value: vec![i; 8000] }), KvResult::Ok);
    }
    assert_eq!(h.exec(&KvOp::Put { key: vec![9], value: vec![1] }), KvResult::Error(KvError::Full));
    for i in 0..3u8 {
        assert_eq!(h.exec(&KvOp::Get { key: vec![i] }), KvResult::Value(Some(vec![i; 8000])));
    }
    // Replacing an existing key still works, and a delete frees a slot for reuse.
    assert_eq!(h.exec(&KvOp::Put { key: vec![1], value: vec![5] }), KvResult::Ok);
    assert_eq!(h.exec(&KvOp::Delete { key: vec![0] }), KvResult::Deleted { existed: true });
    assert_eq!(h.exec(&KvOp::Put { key: vec![9], value: vec![1] }), KvResult::Ok);
    assert_eq!(h.exec(&KvOp::Get { key: vec![9] }), KvResult::Value(Some(vec![1])));
    assert_eq!(h.exec(&KvOp::Get { key: vec![1] }), KvResult::Value(Some(vec![5])));
}

#[test]
fn deleted_bytes_do_not_linger_in_the_state() {
    let mut h = Harness::new(9);
    h.exec(&KvOp::Put { key: b"secret".to_vec(), value: b"password".to_vec() });
    h.exec(&KvOp::Delete { key: b"secret".to_vec() });
    let mut all = vec![0u8; 9 * 4096];
    h.state.read(0, &mut all).expect("in range");
    assert!(!all.windows(8).any(|w| w == b"password"));
}

#[test]
fn a_scan_returns_keys_in_order_within_its_range_and_limit() {
    let mut h = Harness::new(60);
    for k in [b"b", b"d", b"a", b"c", b"e"] {
        h.exec(&KvOp::Put { key: k.to_vec(), value: k.to_vec() });
    }
    let r = h.exec(&KvOp::Scan { start: b"b".to_vec(), end: b"e".to_vec(), limit: 2 });
    assert_eq!(r, KvResult::Entries { entries: vec![(b"b".to_vec(), b"b".to_vec()), (b"c".to_vec(), b"c".to_vec())], truncated: true });
}
