//! A replicated key-value service over the PBFT library's paged state: put, get
//! (read-only), delete, compare-and-swap, scan of a key range (read-only), and a
//! null operation with arguments and results of a chosen size for the papers'
//! micro-benchmarks.
//!
//! [`KvService`] keeps everything in the replicated state ([`table`]); [`KvModel`]
//! is the sequential specification the simulator checks histories against. Both
//! give the same result for the same operations, errors included (the model has
//! no capacity limit: size the service so that it never fills up when comparing).

pub mod model;
pub mod ops;
pub mod table;

use pbft::service::{ExecContext, ReadContext, Service};

pub use model::KvModel;
pub use ops::{KvError, KvOp, KvResult};

/// Size of the service's state.
#[derive(Clone, Copy, Debug)]
pub struct KvConfig {
    /// Pages of replicated state; the table has `pages / 3` slots, one per key.
    pub pages: u64,
}

/// The replicated key-value service.
#[derive(Clone, Debug)]
pub struct KvService {
    cfg: KvConfig,
}

impl KvService {
    pub fn new(cfg: KvConfig) -> KvService {
        KvService { cfg }
    }
}

fn read(op: &KvOp, r: &impl table::Region) -> Result<KvResult, KvError> {
    Ok(match op {
        KvOp::Get { key } => KvResult::Value(table::get(r, key)?),
        KvOp::Scan { start, end, limit } => {
            if start >= end {
                return Ok(KvResult::Entries { entries: Vec::new(), truncated: false });
            }
            let mut all = table::range(r, start, end)?;
            all.truncate(*limit as usize + 1);
            let sizes: Vec<(usize, usize)> = all.iter().map(|(k, v)| (k.len(), v.len())).collect();
            let (taken, truncated) = ops::scan_cut(&sizes, *limit);
            all.truncate(taken);
            KvResult::Entries { entries: all, truncated }
        }
        KvOp::Null { result_len, .. } => KvResult::Null(vec![0; *result_len as usize]),
        KvOp::Put { .. } | KvOp::Delete { .. } | KvOp::Cas { .. } => return Err(KvError::Malformed),
    })
}

fn write(op: &KvOp, ctx: &mut ExecContext<'_>) -> Result<KvResult, KvError> {
    op.validate()?;
    let r = &mut ctx.state;
    Ok(match op {
        KvOp::Put { key, value } => {
            table::put(r, key, value)?;
            KvResult::Ok
        }
        KvOp::Delete { key } => KvResult::Deleted { existed: table::delete(r, key)? },
        KvOp::Cas { key, expected, new } => {
            let current = table::get(r, key)?;
            if current != *expected {
                return Ok(KvResult::CasFailed { current });
            }
            match new {
                Some(v) => table::put(r, key, v)?,
                None => {
                    table::delete(r, key)?;
                }
            }
            KvResult::Ok
        }
        KvOp::Get { .. } | KvOp::Scan { .. } | KvOp::Null { .. } => read(op, r)?,
    })
}

impl Service for KvService {
    fn state_pages(&self) -> u64 {
        self.cfg.pages
    }

    fn execute(&mut self, op: &[u8], ctx: &mut ExecContext<'_>) -> Vec<u8> {
        let result = KvOp::decode(op).and_then(|op| write(&op, ctx));
        result.unwrap_or_else(KvResult::Error).encode()
    }

    fn execute_read_only(&self, op: &[u8], ctx: &ReadContext<'_>) -> Option<Vec<u8>> {
        let op = match KvOp::decode(op) {
            Ok(op) => op,
            Err(e) => return Some(KvResult::Error(e).encode()),
        };
        if !op.is_read_only() {
            return None;
        }
        let result = op.validate().and_then(|()| read(&op, &ctx.state));
        Some(result.unwrap_or_else(KvResult::Error).encode())
    }
}

#[cfg(test)]
mod tests;
