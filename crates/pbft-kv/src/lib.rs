//! A replicated key-value service on PBFT.
//!
//! [`KvService`] implements [`pbft::service::Service`]: clients send encoded
//! [`KvOp`]s and get encoded [`KvResult`]s back (see [`ops`] for the
//! encoding). Every byte of data lives in the replicated paged state (layout in
//! the private `store` module); the service object holds only its configuration, so a state
//! replaced by state transfer needs no rebuilding. [`KvModel`] is the same
//! service as a plain `BTreeMap`, for linearizability checkers.
//!
//! Invariant: an operation either succeeds or returns [`KvResult::Error`] and
//! changes nothing; execution depends only on the operation and the state
//! (no clock, no randomness, no hash-map iteration order).

pub mod linearizability;
pub mod model;
pub mod ops;
mod store;

#[cfg(test)]
mod tests;

use pbft::service::{ExecContext, ReadContext, Service, StateRegion, StateRegionRef};

pub use model::KvModel;
pub use ops::{
    KvError, KvOp, KvResult, FORMAT_VERSION, MAX_KEY_LEN, MAX_NULL_RESULT_LEN, MAX_REPLY_LEN,
    MAX_SCAN_BOUND_LEN, MAX_SCAN_LIMIT, MAX_VALUE_LEN,
};

use store::{Change, Layout};

/// Configuration of a [`KvService`]. Every replica must use the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvConfig {
    /// Pages (4 KiB) of replicated state: one superblock, the bucket directory
    /// (16 bytes a bucket) and data pages. The service has `max(1, pages / 4)`
    /// hash buckets unless built with [`KvService::with_buckets`].
    pub pages: u64,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig { pages: 1024 }
    }
}

impl KvConfig {
    /// The bucket count [`KvService::new`] uses.
    pub fn default_buckets(&self) -> u64 {
        (self.pages / 4).max(1)
    }
}

/// Why a configuration is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvConfigError {
    #[error("zero buckets")]
    NoBuckets,
    #[error("{pages} pages leave no data page after the superblock and the directory of {buckets} buckets")]
    TooFewPages { pages: u64, buckets: u64 },
}

/// The replicated key-value service.
#[derive(Clone, Debug)]
pub struct KvService {
    config: KvConfig,
    layout: Layout,
}

impl KvService {
    /// # Panics
    /// If the configuration is unusable (see [`KvService::try_new`]).
    pub fn new(config: KvConfig) -> Self {
        match Self::try_new(config) {
            Ok(service) => service,
            Err(e) => panic!("invalid KvConfig {config:?}: {e}"),
        }
    }

    /// The service with the default number of buckets.
    pub fn try_new(config: KvConfig) -> Result<Self, KvConfigError> {
        Self::with_buckets(config, config.default_buckets())
    }

    /// The service with `buckets` hash buckets. More buckets make operations
    /// cheaper (a mutation rewrites its key's bucket) but waste more space when
    /// keys are few and small (a non-empty bucket holds at least one page).
    pub fn with_buckets(config: KvConfig, buckets: u64) -> Result<Self, KvConfigError> {
        if buckets == 0 {
            return Err(KvConfigError::NoBuckets);
        }
        let layout = Layout::new(config.pages, buckets).ok_or(KvConfigError::TooFewPages {
            pages: config.pages,
            buckets,
        })?;
        Ok(KvService { config, layout })
    }

    /// Number of hash buckets.
    pub fn buckets(&self) -> u64 {
        self.layout.buckets
    }

    pub fn config(&self) -> KvConfig {
        self.config
    }

    /// Executes a typed operation on the service's state region.
    pub fn apply(&mut self, op: &KvOp, state: &mut StateRegion<'_>) -> KvResult {
        if let Err(e) = op.validate() {
            return KvResult::Error(e);
        }
        let layout = &self.layout;
        let outcome = match op {
            KvOp::Put { key, value } => {
                store::modify(state, layout, key, |_| (Change::Set(value), KvResult::Ok))
            }
            KvOp::Delete { key } => store::modify(state, layout, key, |current| match current {
                Some(_) => (Change::Remove, KvResult::Deleted { existed: true }),
                None => (Change::Keep, KvResult::Deleted { existed: false }),
            }),
            KvOp::Cas { key, expected, new } => store::modify(state, layout, key, |current| {
                if current != *expected {
                    return (Change::Keep, KvResult::CasFailed { current });
                }
                match new {
                    Some(value) => (Change::Set(value), KvResult::Ok),
                    None => (Change::Remove, KvResult::Ok),
                }
            }),
            KvOp::Get { .. } | KvOp::Scan { .. } | KvOp::Null { .. } => {
                self.read_valid(op, &state.as_ref())
            }
        };
        outcome.unwrap_or_else(KvResult::Error)
    }

    /// Executes a read-only operation; `None` for one that is not.
    pub fn read(&self, op: &KvOp, state: &StateRegionRef<'_>) -> Option<KvResult> {
        if !op.is_read_only() {
            return None;
        }
        if let Err(e) = op.validate() {
            return Some(KvResult::Error(e));
        }
        Some(self.read_valid(op, state).unwrap_or_else(KvResult::Error))
    }

    fn read_valid(&self, op: &KvOp, state: &StateRegionRef<'_>) -> Result<KvResult, KvError> {
        match op {
            KvOp::Get { key } => Ok(KvResult::Value(store::get(state, &self.layout, key)?)),
            KvOp::Scan { start, end, limit } => {
                store::scan(state, &self.layout, start, end, *limit)
            }
            KvOp::Null { result_len, .. } => Ok(KvResult::Null(vec![0; *result_len as usize])),
            KvOp::Put { .. } | KvOp::Delete { .. } | KvOp::Cas { .. } => {
                unreachable!("read_valid() is only called for read-only operations")
            }
        }
    }
}

impl Service for KvService {
    fn state_pages(&self) -> u64 {
        self.config.pages
    }

    fn execute(&mut self, op: &[u8], ctx: &mut ExecContext<'_>) -> Vec<u8> {
        match KvOp::decode(op) {
            Ok(op) => self.apply(&op, &mut ctx.state),
            Err(e) => KvResult::Error(e),
        }
        .encode()
    }

    /// Malformed bytes get an error reply here rather than `None`: retrying
    /// them read-write could only give the same error.
    fn execute_read_only(&self, op: &[u8], ctx: &ReadContext<'_>) -> Option<Vec<u8>> {
        let result = match KvOp::decode(op) {
            Ok(op) => self.read(&op, &ctx.state)?,
            Err(e) => KvResult::Error(e),
        };
        Some(result.encode())
    }
}
