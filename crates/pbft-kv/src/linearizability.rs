//! A linearizability checker for KV clients' histories, the simulator's and
//! `pbft chaos`'s (Wing & Gong's search with memoisation, as in Lowe's and
//! Porcupine's checkers).
//!
//! Each correct client runs one operation at a time, so a partial linearization
//! is a frontier (the next operation of each client) plus the model's state. An
//! operation may be linearized next if no other pending operation finished before
//! it started. Operations still outstanding at the end (no response) may take
//! effect at any point after their invocation, or never.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use crate::{KvModel, KvOp, KvResult};

/// One operation of a client: what it asked, when, and what it got (if it
/// completed). Times are in any one clock's microseconds.
#[derive(Clone, Debug)]
pub struct OpRecord {
    pub client: usize,
    pub op: KvOp,
    pub invoke_us: u64,
    pub complete: Option<(u64, KvResult)>,
}

/// Fewest search states explored before giving up (reported as an error); a
/// long history gets 8 per operation.
const MAX_STATES: usize = 2_000_000;

pub fn check(history: &[OpRecord]) -> Result<(), String> {
    let clients = history.iter().map(|o| o.client + 1).max().unwrap_or(0);
    let mut per_client: Vec<Vec<&OpRecord>> = vec![Vec::new(); clients];
    for op in history {
        per_client[op.client].push(op);
    }
    let budget = MAX_STATES.max(8 * history.len());
    let mut search = Search { per_client, visited: HashSet::new(), deepest: (0, String::new()), budget };
    let mut frontier = vec![0usize; clients];
    if search.dfs(&mut frontier, &KvModel::new()) {
        return Ok(());
    }
    if search.visited.len() >= search.budget {
        return Err(format!("search gave up after {} states", search.budget));
    }
    Err(format!("no linearization; longest prefix had {} operations, stuck at: {}", search.deepest.0, search.deepest.1))
}

struct Search<'a> {
    per_client: Vec<Vec<&'a OpRecord>>,
    visited: HashSet<u64>,
    deepest: (usize, String),
    budget: usize,
}

fn state_key(frontier: &[usize], model: &KvModel) -> u64 {
    let mut h = DefaultHasher::new();
    frontier.hash(&mut h);
    model.entries().hash(&mut h);
    h.finish()
}

impl Search<'_> {
    fn dfs(&mut self, frontier: &mut Vec<usize>, model: &KvModel) -> bool {
        // Done when every completed operation is linearized.
        let done = self.per_client.iter().zip(frontier.iter()).all(|(ops, &i)| ops[i..].iter().all(|o| o.complete.is_none()));
        if done {
            return true;
        }
        if self.visited.len() >= self.budget || !self.visited.insert(state_key(frontier, model)) {
            return false;
        }
        let depth: usize = frontier.iter().sum();
        // The earliest response among the operations not yet linearized.
        let min_response = self
            .per_client
            .iter()
            .zip(frontier.iter())
            .filter_map(|(ops, &i)| ops.get(i).and_then(|o| o.complete.as_ref().map(|c| c.0)))
            .min()
            .unwrap_or(u64::MAX);
        for c in 0..self.per_client.len() {
            let Some(op) = self.per_client[c].get(frontier[c]).copied() else { continue };
            if op.invoke_us > min_response {
                continue;
            }
            let mut next = model.clone();
            let result = next.apply(&op.op);
            if let Some((_, expected)) = &op.complete {
                if result != *expected {
                    if depth >= self.deepest.0 {
                        self.deepest = (
                            depth,
                            format!(
                                "client {c} op {:?} at t={}us returned {:?}, model says {:?}",
                                op.op, op.invoke_us, expected, result
                            ),
                        );
                    }
                    continue;
                }
            }
            frontier[c] += 1;
            if self.dfs(frontier, &next) {
                return true;
            }
            frontier[c] -= 1;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, op: KvOp, invoke: u64, resp: Option<(u64, KvResult)>) -> OpRecord {
        OpRecord { client, op, invoke_us: invoke, complete: resp }
    }
    fn put(v: &str) -> KvOp {
        KvOp::Put { key: b"k".to_vec(), value: v.as_bytes().to_vec() }
    }
    fn get() -> KvOp {
        KvOp::Get { key: b"k".to_vec() }
    }
    fn val(v: &str) -> KvResult {
        KvResult::Value(Some(v.as_bytes().to_vec()))
    }

    #[test]
    fn concurrent_ops_may_take_either_order() {
        let h = vec![
            op(0, put("a"), 0, Some((10, KvResult::Ok))),
            op(1, get(), 1, Some((5, KvResult::Value(None)))),
            op(1, get(), 11, Some((12, val("a")))),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = vec![op(0, put("a"), 0, Some((10, KvResult::Ok))), op(1, get(), 20, Some((25, KvResult::Value(None))))];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_value_nobody_wrote_is_caught() {
        let h = vec![op(0, put("a"), 0, Some((10, KvResult::Ok))), op(1, get(), 20, Some((25, val("b"))))];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_pending_write_may_or_may_not_take_effect() {
        let with = vec![op(0, put("a"), 0, None), op(1, get(), 20, Some((25, val("a"))))];
        let without = vec![op(0, put("a"), 0, None), op(1, get(), 20, Some((25, KvResult::Value(None))))];
        assert!(check(&with).is_ok());
        assert!(check(&without).is_ok());
    }
}
