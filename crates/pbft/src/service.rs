//! The `Service` trait: what an application implements to be replicated.
//!
//! The replicated state of a service is a region of fixed-size pages owned by the
//! library ([`PagedState`]); the service reads and writes it through a
//! [`StateRegion`]. The library tracks what was modified, keeps copy-on-write
//! versions for checkpoints and a partition tree of digests, so the service only
//! has to be deterministic: the same operations on the same state with the same
//! non-deterministic value give the same results and the same pages.
//!
//! A complete small service, a replicated counter:
//!
//! ```
//! use pbft::service::{ExecContext, ReadContext, Service};
//!
//! struct Counter;
//!
//! impl Service for Counter {
//!     fn state_pages(&self) -> u64 { 1 }
//!
//!     fn execute(&mut self, op: &[u8], ctx: &mut ExecContext<'_>) -> Vec<u8> {
//!         let mut buf = [0u8; 8];
//!         ctx.state.read(0, &mut buf).expect("offset 0 is inside the region");
//!         let add = op.first().copied().unwrap_or(1) as u64;
//!         let value = u64::from_le_bytes(buf) + add;
//!         ctx.state.write(0, &value.to_le_bytes()).expect("offset 0 is inside the region");
//!         value.to_le_bytes().to_vec()
//!     }
//!
//!     fn execute_read_only(&self, _op: &[u8], ctx: &ReadContext<'_>) -> Option<Vec<u8>> {
//!         let mut buf = [0u8; 8];
//!         ctx.state.read(0, &mut buf).ok()?;
//!         Some(buf.to_vec())
//!     }
//! }
//!
//! // Drive it by hand (a replica does this for every executed request):
//! let mut state = pbft::state::PagedState::new(1, pbft::state::TreeShape::default()).unwrap();
//! let mut counter = Counter;
//! let mut ctx = ExecContext {
//!     client: pbft::ClientId(7),
//!     nondet_time_us: 0,
//!     state: pbft::service::StateRegion::new(&mut state, 0, 1).unwrap(),
//! };
//! assert_eq!(counter.execute(&[5], &mut ctx), 5u64.to_le_bytes());
//! ```

use crate::state::{PagedState, StateError, PAGE_SIZE};
use crate::types::ClientId;

/// A replicated, deterministic service.
pub trait Service {
    /// Number of 4 KiB pages of replicated state the service needs. Fixed for the
    /// life of the cluster.
    fn state_pages(&self) -> u64;

    /// Executes a read-write operation. Must be deterministic in (`op`, the state,
    /// `ctx.client`, `ctx.nondet_time_us`). Malformed operations must produce an
    /// error *result*, never a panic: the bytes come from clients.
    fn execute(&mut self, op: &[u8], ctx: &mut ExecContext<'_>) -> Vec<u8>;

    /// Executes an operation that the client sent as read-only. Returns `None` when
    /// the operation is not read-only; the client then retries it as read-write.
    fn execute_read_only(&self, op: &[u8], ctx: &ReadContext<'_>) -> Option<Vec<u8>>;

    /// Called after the library replaced pages of the state (state transfer or a
    /// rollback), so that a service that caches anything derived from the state
    /// can rebuild it. Services that cache nothing ignore it.
    fn state_replaced(&mut self, _state: &ReadContext<'_>) {}
}

/// What a read-write execution sees.
pub struct ExecContext<'a> {
    /// The authenticated client that sent the operation (for access control).
    pub client: ClientId,
    /// The batch's agreed non-deterministic value: the primary's clock, checked by
    /// the backups. Use it for timestamps (file mtimes), never a local clock.
    pub nondet_time_us: u64,
    pub state: StateRegion<'a>,
}

/// What a read-only execution sees.
pub struct ReadContext<'a> {
    pub client: ClientId,
    pub state: StateRegionRef<'a>,
}

/// A window of the paged state, addressed from 0, that a service may write.
pub struct StateRegion<'a> {
    state: &'a mut PagedState,
    base: u64,
    len: u64,
}

/// A read-only window of the paged state.
#[derive(Clone, Copy)]
pub struct StateRegionRef<'a> {
    state: &'a PagedState,
    base: u64,
    len: u64,
}

fn check_range(base: u64, len: u64, offset: u64, n: usize) -> Result<u64, StateError> {
    let end = offset.checked_add(n as u64).ok_or(StateError::OutOfRange)?;
    if end > len {
        return Err(StateError::OutOfRange);
    }
    Ok(base + offset)
}

impl<'a> StateRegion<'a> {
    /// The region of `pages` pages that starts at page `first_page`.
    pub fn new(state: &'a mut PagedState, first_page: u64, pages: u64) -> Result<Self, StateError> {
        let (base, len) = StateRegionRef::new(state, first_page, pages).map(|r| (r.base, r.len))?;
        Ok(StateRegion { state, base, len })
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StateError> {
        self.as_ref().read(offset, buf)
    }
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StateError> {
        let at = check_range(self.base, self.len, offset, data.len())?;
        self.state.write(at, data)
    }
    pub fn as_ref(&self) -> StateRegionRef<'_> {
        StateRegionRef { state: self.state, base: self.base, len: self.len }
    }
}

impl<'a> StateRegionRef<'a> {
    pub fn new(state: &'a PagedState, first_page: u64, pages: u64) -> Result<Self, StateError> {
        if first_page.checked_add(pages).ok_or(StateError::OutOfRange)? > state.num_pages() {
            return Err(StateError::OutOfRange);
        }
        Ok(StateRegionRef { state, base: first_page * PAGE_SIZE as u64, len: pages * PAGE_SIZE as u64 })
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StateError> {
        let at = check_range(self.base, self.len, offset, buf.len())?;
        self.state.read(at, buf)
    }
}
