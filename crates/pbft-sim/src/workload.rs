//! The correct clients' workload: a random mix of every KV operation over a few
//! keys, so that operations conflict and the linearizability checker has work.
//! Values name their writer and are unique, so a forged or duplicated write shows.

use pbft_kv::KvOp;

use crate::rng::SimRng;

/// Keys of correct clients are `k<i>`; faulty clients use keys that sort after
/// `l`, outside every correct client's scans.
pub fn key(i: u64) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

pub fn next_op(rng: &mut SimRng, client: usize, n: usize, keys: usize) -> KvOp {
    let key = key(rng.below(keys as u64));
    let mut v = format!("c{client}-op{n}").into_bytes();
    // Now and then a value large enough to take the large-request path.
    if rng.chance(0.08) {
        v.resize(1_200 + rng.below(2_000) as usize, b'.');
    }
    match rng.below(100) {
        0..=29 => KvOp::Put { key, value: v },
        30..=54 => KvOp::Get { key },
        55..=64 => KvOp::Delete { key },
        65..=79 => {
            // Expect an earlier write of some client, or absence.
            let expected = if rng.chance(0.3) {
                None
            } else {
                Some(format!("c{}-op{}", rng.below(4), n.saturating_sub(rng.below(3) as usize)).into_bytes())
            };
            KvOp::Cas { key, expected, new: Some(v) }
        }
        80..=89 => KvOp::Scan { start: b"k".to_vec(), end: b"l".to_vec(), limit: 1 + rng.below(8) as u32 },
        _ => KvOp::Get { key },
    }
}
