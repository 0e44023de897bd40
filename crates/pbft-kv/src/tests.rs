//! The service against the model, capacity exhaustion and space reuse, over a
//! real `PagedState` driven by hand as a replica would.

use pbft::service::{ExecContext, ReadContext, Service, StateRegion, StateRegionRef};
use pbft::state::{PagedState, TreeShape, PAGE_SIZE};
use pbft::ClientId;
use proptest::prelude::*;

use super::*;
use crate::store::{audit, Usage};

struct Harness {
    state: PagedState,
    kv: KvService,
}

impl Harness {
    fn new(pages: u64) -> Harness {
        Harness::with(KvService::new(KvConfig { pages }))
    }
    fn with_buckets(pages: u64, buckets: u64) -> Harness {
        Harness::with(
            KvService::with_buckets(KvConfig { pages }, buckets).expect("valid configuration"),
        )
    }
    fn with(kv: KvService) -> Harness {
        let state = PagedState::new(kv.state_pages(), TreeShape::default()).expect("valid state");
        Harness { state, kv }
    }
    fn exec_bytes(&mut self, op: &[u8]) -> KvResult {
        let pages = self.state.num_pages();
        let mut ctx = ExecContext {
            client: ClientId(0),
            nondet_time_us: 0,
            state: StateRegion::new(&mut self.state, 0, pages).expect("in range"),
        };
        KvResult::decode(&self.kv.execute(op, &mut ctx)).expect("service results decode")
    }
    fn exec(&mut self, op: &KvOp) -> KvResult {
        self.exec_bytes(&op.encode())
    }
    fn read(&self, op: &KvOp) -> Option<KvResult> {
        let ctx = ReadContext {
            client: ClientId(0),
            state: self.region(),
        };
        self.kv
            .execute_read_only(&op.encode(), &ctx)
            .map(|b| KvResult::decode(&b).expect("service results decode"))
    }
    fn region(&self) -> StateRegionRef<'_> {
        StateRegionRef::new(&self.state, 0, self.state.num_pages()).expect("in range")
    }
    fn audit(&self) -> Usage {
        audit(&self.region(), &self.kv.layout).expect("layout invariants hold")
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> KvResult {
        self.exec(&KvOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        })
    }
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        match self.exec(&KvOp::Get { key: key.to_vec() }) {
            KvResult::Value(v) => v,
            other => panic!("get gave {other:?}"),
        }
    }
}

fn small_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (0u8..12).prop_map(|k| vec![b'k', k]),
        1 => Just(Vec::new()),
        1 => (0u8..4).prop_map(|k| vec![k; 256]),
        1 => Just(vec![b'x'; 257]),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..40),
        2 => (4000usize..4200, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        1 => (8180usize..8200, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

fn op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        4 => (small_key(), value()).prop_map(|(key, value)| KvOp::Put { key, value }),
        3 => small_key().prop_map(|key| KvOp::Get { key }),
        2 => small_key().prop_map(|key| KvOp::Delete { key }),
        2 => (small_key(), proptest::option::of(value()), proptest::option::of(value()))
            .prop_map(|(key, expected, new)| KvOp::Cas { key, expected, new }),
        2 => (small_key(), small_key(), 0u32..300).prop_map(|(start, end, limit)| KvOp::Scan { start, end, limit }),
        1 => (0u32..300).prop_map(|limit| KvOp::scan_from(Vec::new(), limit)),
        1 => (proptest::collection::vec(any::<u8>(), 0..10), 0u32..9000)
            .prop_map(|(arg, result_len)| KvOp::Null { arg, result_len }),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn result() -> impl Strategy<Value = KvResult> {
    let error = proptest::sample::select(vec![
        KvError::Malformed,
        KvError::KeyTooLarge,
        KvError::ValueTooLarge,
        KvError::LimitTooLarge,
        KvError::ResultTooLarge,
        KvError::Full,
        KvError::Corrupt,
    ]);
    prop_oneof![
        Just(KvResult::Ok),
        proptest::option::of(bytes(20)).prop_map(KvResult::Value),
        any::<bool>().prop_map(|existed| KvResult::Deleted { existed }),
        proptest::option::of(bytes(20)).prop_map(|current| KvResult::CasFailed { current }),
        (
            proptest::collection::vec((bytes(8), bytes(8)), 0..5),
            any::<bool>()
        )
            .prop_map(|(entries, truncated)| KvResult::Entries { entries, truncated }),
        bytes(20).prop_map(KvResult::Null),
        error.prop_map(KvResult::Error),
    ]
}

/// Runs `ops` on the service and the model and compares every result, the
/// read-only path, and the allocator's accounting.
fn check_against_model(h: &mut Harness, ops: &[KvOp]) -> Result<(), TestCaseError> {
    let mut model = KvModel::new();
    for op in ops {
        let expected = model.apply(op);
        prop_assert_eq!(&h.exec(op), &expected, "op {:?}", op);
        prop_assert_eq!(h.read(op), model.apply_read_only(op), "read-only {:?}", op);
        let usage = h.audit();
        prop_assert_eq!(usage.entries, model.entries().len() as u64);
    }
    // Everything the model holds is in the state, and nothing else.
    let all = h.exec(&KvOp::scan_from(Vec::new(), MAX_SCAN_LIMIT));
    prop_assert_eq!(
        all,
        model.apply(&KvOp::scan_from(Vec::new(), MAX_SCAN_LIMIT))
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    // At most 12 + 1 + 4 keys of at most 8.5 KB: 60 data pages, and the
    // state has more, so the service never fills up.
    #[test]
    fn service_matches_model_with_default_buckets(ops in proptest::collection::vec(op(), 1..80)) {
        check_against_model(&mut Harness::new(400), &ops)?;
    }

    // One or two buckets: long chains, entries spanning pages.
    #[test]
    fn service_matches_model_with_few_buckets(ops in proptest::collection::vec(op(), 1..80), buckets in 1u64..3) {
        check_against_model(&mut Harness::with_buckets(100, buckets), &ops)?;
    }

    #[test]
    fn op_encoding_round_trips(op in op()) {
        let bytes = op.encode();
        for cut in 0..bytes.len() {
            prop_assert_eq!(KvOp::decode(&bytes[..cut]), Err(KvError::Malformed));
        }
        prop_assert_eq!(KvOp::decode(&bytes), Ok(op));
    }

    #[test]
    fn result_encoding_round_trips(result in result()) {
        let bytes = result.encode();
        for cut in 0..bytes.len() {
            prop_assert_eq!(KvResult::decode(&bytes[..cut]), Err(KvError::Malformed));
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        prop_assert_eq!(KvResult::decode(&trailing), Err(KvError::Malformed));
        prop_assert_eq!(KvResult::decode(&bytes), Ok(result));
    }

    #[test]
    fn result_decoding_never_panics(bytes in bytes(64)) {
        let _ = KvResult::decode(&bytes);
    }

    #[test]
    fn random_bytes_give_an_error_result_and_change_nothing(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut h = Harness::new(16);
        h.put(b"k", b"v");
        let before = h.audit().superblock;
        let result = h.exec_bytes(&bytes);
        if KvOp::decode(&bytes).is_err() {
            prop_assert_eq!(result, KvResult::Error(KvError::Malformed));
            prop_assert_eq!(h.audit().superblock, before);
            prop_assert_eq!(h.get(b"k"), Some(b"v".to_vec()));
        }
    }
}

#[test]
fn malformed_operations_are_error_results() {
    let mut h = Harness::new(16);
    let put = KvOp::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    }
    .encode();
    let mut trailing = put.clone();
    trailing.push(0);
    let mut wrong_version = put.clone();
    wrong_version[0] = FORMAT_VERSION + 1;
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![FORMAT_VERSION],
        vec![FORMAT_VERSION, 99],
        put[..put.len() - 1].to_vec(),
        trailing,
        wrong_version,
    ];
    for bad in &cases {
        assert_eq!(
            h.exec_bytes(bad),
            KvResult::Error(KvError::Malformed),
            "{bad:?}"
        );
        let ctx = ReadContext {
            client: ClientId(0),
            state: h.region(),
        };
        let reply =
            h.kv.execute_read_only(bad, &ctx)
                .expect("malformed read-only ops get a reply");
        assert_eq!(
            KvResult::decode(&reply),
            Ok(KvResult::Error(KvError::Malformed))
        );
    }
    assert_eq!(h.get(b"k"), None);
}

#[test]
fn writes_are_not_executed_read_only() {
    let h = Harness::new(16);
    assert_eq!(
        h.read(&KvOp::Put {
            key: b"k".to_vec(),
            value: vec![]
        }),
        None
    );
    assert_eq!(
        h.read(&KvOp::Cas {
            key: b"k".to_vec(),
            expected: None,
            new: None
        }),
        None
    );
    assert_eq!(
        h.read(&KvOp::Null {
            arg: vec![1; 4],
            result_len: 4
        }),
        Some(KvResult::Null(vec![0; 4]))
    );
}

#[test]
fn capacity_exhaustion_is_an_error_that_keeps_existing_keys() {
    // 1 bucket, 1 directory page, 4 data pages: two 4 KiB-ish values fill
    // them, nearly.
    let mut h = Harness::with_buckets(6, 1);
    let value = |i: u8| vec![i; 4000];
    let mut stored = Vec::new();
    for i in 0u8.. {
        match h.put(&[i], &value(i)) {
            KvResult::Ok => stored.push(i),
            KvResult::Error(KvError::Full) => break,
            other => panic!("put gave {other:?}"),
        }
    }
    assert_eq!(stored.len(), 4);
    let usage = h.audit();
    for &i in &stored {
        assert_eq!(h.get(&[i]), Some(value(i)));
    }
    // Growing an existing value fails too and leaves it as it was.
    assert_eq!(h.put(&[0], &vec![9; 8000]), KvResult::Error(KvError::Full));
    assert_eq!(
        h.exec(&KvOp::Cas {
            key: vec![1],
            expected: Some(value(1)),
            new: Some(vec![9; 8000])
        }),
        KvResult::Error(KvError::Full)
    );
    assert_eq!(h.get(&[0]), Some(value(0)));
    assert_eq!(h.get(&[1]), Some(value(1)));
    assert_eq!(h.audit().superblock, usage.superblock);
    // Shrinking and deleting still work when full.
    assert_eq!(h.put(&[0], b"small"), KvResult::Ok);
    assert_eq!(
        h.exec(&KvOp::Delete { key: vec![1] }),
        KvResult::Deleted { existed: true }
    );
    assert_eq!(h.put(&[200], &value(200)), KvResult::Ok);
    assert_eq!(h.get(&[200]), Some(value(200)));
    h.audit();
}

#[test]
fn deletes_free_pages_for_reuse() {
    let mut h = Harness::with_buckets(12, 3);
    // Over the rounds, far more is stored than the 10 data pages could hold.
    for round in 0u8..20 {
        for i in 0u8..6 {
            assert_eq!(
                h.put(&[i], &vec![round; 5000]),
                KvResult::Ok,
                "round {round} key {i}"
            );
        }
        for i in 0u8..6 {
            assert_eq!(h.get(&[i]), Some(vec![round; 5000]));
            assert_eq!(
                h.exec(&KvOp::Delete { key: vec![i] }),
                KvResult::Deleted { existed: true }
            );
        }
        let usage = h.audit();
        assert_eq!((usage.entries, usage.chain_pages), (0, 0));
        assert_eq!(usage.superblock.free_count, usage.superblock.bump);
    }
}

#[test]
fn deleted_bytes_do_not_linger_in_the_state() {
    let mut h = Harness::with_buckets(20, 1);
    h.put(b"a", &[b'a'; 5000]);
    h.put(b"secret", b"password");
    h.put(b"b", &[b'b'; 5000]);
    h.put(b"old", b"hunter2hunter2");
    h.put(b"old", b"new");
    h.exec(&KvOp::Delete {
        key: b"secret".to_vec(),
    });
    h.exec(&KvOp::Delete { key: b"b".to_vec() });
    let mut all = vec![0u8; 20 * PAGE_SIZE];
    h.state.read(0, &mut all).expect("in range");
    assert!(!all.windows(8).any(|w| w == b"password"));
    assert!(!all.windows(7).any(|w| w == b"hunter2"));
    assert!(!all.windows(64).any(|w| w == [b'b'; 64]));
    assert_eq!(h.get(b"a"), Some(vec![b'a'; 5000]));
}

#[test]
fn a_scan_returns_keys_in_order_within_its_range_and_limit() {
    let mut h = Harness::new(60);
    for k in [b"b", b"d", b"a", b"c", b"e"] {
        h.put(k, k);
    }
    let entry = |k: &[u8]| (k.to_vec(), k.to_vec());
    let scan = |start: &[u8], end: &[u8], limit| KvOp::Scan {
        start: start.to_vec(),
        end: end.to_vec(),
        limit,
    };
    assert_eq!(
        h.exec(&scan(b"b", b"e", 2)),
        KvResult::Entries {
            entries: vec![entry(b"b"), entry(b"c")],
            truncated: true
        }
    );
    assert_eq!(
        h.exec(&scan(b"b", b"e", 3)),
        KvResult::Entries {
            entries: vec![entry(b"b"), entry(b"c"), entry(b"d")],
            truncated: false
        }
    );
    assert_eq!(
        h.exec(&scan(b"e", b"b", 3)),
        KvResult::Entries {
            entries: vec![],
            truncated: false
        }
    );
    assert_eq!(
        h.exec(&scan(b"a", b"z", 0)),
        KvResult::Entries {
            entries: vec![],
            truncated: true
        }
    );
    assert_eq!(
        h.exec(&scan(b"a", b"z", MAX_SCAN_LIMIT + 1)),
        KvResult::Error(KvError::LimitTooLarge)
    );
}

#[test]
fn a_scan_reply_stays_within_its_size_bound() {
    let mut h = Harness::new(60);
    for k in 0u8..4 {
        h.put(&[k], &vec![k; MAX_VALUE_LEN]);
    }
    let result = h.exec(&KvOp::scan_from(Vec::new(), 10));
    assert_eq!(
        result,
        KvResult::Entries {
            entries: vec![(vec![0], vec![0; MAX_VALUE_LEN])],
            truncated: true
        }
    );
    assert!(result.encode().len() <= MAX_REPLY_LEN);
    let result = h.exec(&KvOp::scan_from(vec![1, 0], 10));
    assert_eq!(
        result,
        KvResult::Entries {
            entries: vec![(vec![2], vec![2; MAX_VALUE_LEN])],
            truncated: true
        }
    );
}

#[test]
fn limits_are_enforced() {
    let mut h = Harness::new(60);
    assert_eq!(
        h.put(&[0; MAX_KEY_LEN + 1], b"v"),
        KvResult::Error(KvError::KeyTooLarge)
    );
    assert_eq!(
        h.put(b"k", &vec![0; MAX_VALUE_LEN + 1]),
        KvResult::Error(KvError::ValueTooLarge)
    );
    assert_eq!(
        h.put(&[0; MAX_KEY_LEN], &vec![0; MAX_VALUE_LEN]),
        KvResult::Ok
    );
    assert_eq!(
        h.exec(&KvOp::Null {
            arg: vec![],
            result_len: MAX_NULL_RESULT_LEN + 1
        }),
        KvResult::Error(KvError::ResultTooLarge)
    );
    assert_eq!(
        h.exec(&KvOp::Null {
            arg: vec![0; 4096],
            result_len: 0
        }),
        KvResult::Null(vec![])
    );
    assert_eq!(h.get(b"k"), None);
}

#[test]
fn unusable_configurations_are_refused() {
    assert_eq!(
        KvService::try_new(KvConfig { pages: 2 }).err(),
        Some(KvConfigError::TooFewPages {
            pages: 2,
            buckets: 1
        })
    );
    assert_eq!(
        KvService::with_buckets(KvConfig { pages: 100 }, 0).err(),
        Some(KvConfigError::NoBuckets)
    );
    assert_eq!(
        KvService::with_buckets(KvConfig { pages: 3 }, 256).map(|kv| kv.buckets()),
        Ok(256)
    );
    assert!(KvService::with_buckets(KvConfig { pages: 3 }, 257).is_err());
    assert_eq!(KvService::new(KvConfig { pages: 1000 }).buckets(), 250);
}
