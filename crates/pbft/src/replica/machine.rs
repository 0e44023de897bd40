//! The replicated state machine: the service, the paged state it lives in, and
//! the reply table ahead of the service's pages.
//!
//! The reply table holds one slot per client: `timestamp u64 | result length
//! u32 | reserved u32 | result`. Because it is part of the state, checkpoints
//! cover it and state transfer carries it, so every correct replica decides
//! alike whether a request is new, a duplicate or stale.
//!
//! Invariant: the service sees only its own pages, and is told whenever they
//! change under it (an undo, a state transfer, a restart from disk).

use bytes::Bytes;

use crate::config::Config;
use crate::service::{ExecContext, ReadContext, Service, StateRegion, StateRegionRef};
use crate::state::{Page, PagedState, StateError, PAGE_SIZE};
use crate::types::{ClientId, Digest, SeqNo, Timestamp};

/// Bytes of a reply-table slot before the cached result.
pub const REPLY_HEADER_LEN: usize = 16;

pub(super) struct Machine<S> {
    service: S,
    state: PagedState,
    /// Pages per client slot of the reply table.
    reply_slot_pages: u64,
    max_clients: u32,
    max_reply_bytes: usize,
}

impl<S: Service> Machine<S> {
    /// Pages of a replica's state: the reply table, then the service's pages.
    pub fn total_pages(cfg: &Config, service: &S) -> u64 {
        Self::reply_slot_pages(cfg) * cfg.max_clients as u64 + service.state_pages()
    }

    fn reply_slot_pages(cfg: &Config) -> u64 {
        (REPLY_HEADER_LEN + cfg.max_reply_bytes).div_ceil(PAGE_SIZE) as u64
    }

    /// A machine with all-zero state, checkpointed at 0 (the base a state
    /// transfer compares with).
    pub fn new(cfg: &Config, service: S) -> Result<Self, StateError> {
        let mut state = PagedState::new(Self::total_pages(cfg, &service), cfg.tree)?;
        state.take_checkpoint(SeqNo(0))?;
        Ok(Machine {
            service,
            state,
            reply_slot_pages: Self::reply_slot_pages(cfg),
            max_clients: cfg.max_clients,
            max_reply_bytes: cfg.max_reply_bytes,
        })
    }

    /// Replaces the state with `pages` (all others zero), checkpointed at 0,
    /// and tells the service. Returns the pages' digest.
    pub fn restore(&mut self, cfg: &Config, pages: &[(u64, Box<Page>)]) -> Result<Digest, StateError> {
        self.state = PagedState::new(self.state.num_pages(), cfg.tree)?;
        for (index, page) in pages {
            self.state.replace_page(*index, page)?;
        }
        let digest = self.state.take_checkpoint(SeqNo(0))?;
        self.state_replaced();
        Ok(digest)
    }

    pub fn service(&self) -> &S {
        &self.service
    }

    pub fn state(&self) -> &PagedState {
        &self.state
    }

    /// The paged state, for checkpoints, undo marks and state transfer.
    /// Changes to the service's pages through it must be followed by
    /// [`Machine::state_replaced`].
    pub fn state_mut(&mut self) -> &mut PagedState {
        &mut self.state
    }

    fn service_first_page(&self) -> u64 {
        self.reply_slot_pages * self.max_clients as u64
    }

    /// Tells the service that its pages changed under it.
    pub fn state_replaced(&mut self) {
        let region = service_region(&self.state, self.service_first_page());
        self.service.state_replaced(&ReadContext { client: ClientId(0), state: region });
    }

    /// Undoes everything since the undo mark and tells the service; false if
    /// there was no mark.
    pub fn undo(&mut self) -> bool {
        let undone = self.state.undo();
        if undone {
            self.state_replaced();
        }
        undone
    }

    /// Installs pages fetched for checkpoint `seq` and tells the service.
    /// Returns the digest of the state they make.
    pub fn install(&mut self, seq: SeqNo, pages: impl IntoIterator<Item = (u64, std::sync::Arc<Page>, Digest)>) -> Result<Digest, StateError> {
        let digest = self.state.install_pages(seq, pages)?;
        self.state_replaced();
        Ok(digest)
    }

    /// Runs one read-write operation for `client`.
    pub fn execute(&mut self, client: ClientId, nondet_time_us: u64, op: &[u8]) -> Vec<u8> {
        let first = self.service_first_page();
        let pages = self.state.num_pages() - first;
        let region = StateRegion::new(&mut self.state, first, pages).expect("service region is inside the state");
        let mut ctx = ExecContext { client, nondet_time_us, state: region };
        self.service.execute(op, &mut ctx)
    }

    /// Runs one read-only operation for `client`, if the service allows it.
    pub fn execute_read_only(&self, client: ClientId, op: &[u8]) -> Option<Vec<u8>> {
        let ctx = ReadContext { client, state: service_region(&self.state, self.service_first_page()) };
        self.service.execute_read_only(op, &ctx)
    }

    fn reply_slot_offset(&self, client: ClientId) -> u64 {
        assert!(client.0 < self.max_clients, "client {} has no reply-table slot", client.0);
        client.0 as u64 * self.reply_slot_pages * PAGE_SIZE as u64
    }

    /// The last timestamp executed for `client` (0 if none). `client` must
    /// be one of the configuration's (callers check `is_client`).
    pub fn last_timestamp(&self, client: ClientId) -> Timestamp {
        let mut b = [0u8; 8];
        self.state.read(self.reply_slot_offset(client), &mut b).expect("the reply table is inside the state");
        Timestamp(u64::from_le_bytes(b))
    }

    /// Clients with a cached reply. Reads one slot header per configured
    /// client: for metrics, not the hot path.
    pub fn reply_cache_entries(&self) -> usize {
        (0..self.max_clients).filter(|c| self.last_timestamp(ClientId(*c)).0 > 0).count()
    }

    /// The cached result of `client`'s last executed request.
    pub fn cached_result(&self, client: ClientId) -> Option<Bytes> {
        let at = self.reply_slot_offset(client);
        let mut hdr = [0u8; REPLY_HEADER_LEN];
        self.state.read(at, &mut hdr).expect("the reply table is inside the state");
        let len = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
        // A length above the bound can only come from a state that a faulty
        // replica sent (a state transfer checks digests, not contents): no reply.
        if len > self.max_reply_bytes {
            return None;
        }
        let mut result = vec![0u8; len];
        self.state.read(at + REPLY_HEADER_LEN as u64, &mut result).expect("the reply slot holds max_reply_bytes");
        Some(Bytes::from(result))
    }

    /// Records `result` as `client`'s reply to its request `ts`. The result
    /// is at most `max_reply_bytes` (the caller empties a longer one).
    pub fn store_reply(&mut self, client: ClientId, ts: Timestamp, result: &[u8]) {
        assert!(result.len() <= self.max_reply_bytes, "a result of {} bytes does not fit its slot", result.len());
        let at = self.reply_slot_offset(client);
        let mut hdr = [0u8; REPLY_HEADER_LEN];
        hdr[..8].copy_from_slice(&ts.0.to_le_bytes());
        hdr[8..12].copy_from_slice(&(result.len() as u32).to_le_bytes());
        self.state.write(at, &hdr).expect("the reply table is inside the state");
        self.state.write(at + REPLY_HEADER_LEN as u64, result).expect("the reply slot holds max_reply_bytes");
    }
}

/// The service's pages: everything after the reply table.
fn service_region(state: &PagedState, first: u64) -> StateRegionRef<'_> {
    StateRegionRef::new(state, first, state.num_pages() - first).expect("service region is inside the state")
}
