//! Protocol parameters. Every bound a peer could push on (log, queues, tables)
//! comes from here, so that a Byzantine peer can never make a replica grow
//! without limit (STYLE.md rule 6).

use crate::state::TreeShape;
use crate::types::{ClientId, ReplicaId};

/// The cluster's parameters, identical at every replica and client.
#[derive(Clone, Debug)]
pub struct Config {
    /// Number of faults tolerated; the cluster has n = 3f + 1 replicas. f = 0 is
    /// the unreplicated baseline of the benchmarks: one replica, quorums of
    /// one, the same code and transport path, no fault tolerated.
    pub f: usize,
    /// Clients have ids `0..max_clients`; each owns a slot in the replicated reply table.
    pub max_clients: u32,
    /// K: a checkpoint is taken every K sequence numbers.
    pub checkpoint_interval: u64,
    /// L: sequence numbers accepted lie in (h, h + L], h the last stable checkpoint.
    pub log_window: u64,
    /// Largest number of requests in one batch.
    pub max_batch_requests: usize,
    /// Largest encoded size of the requests inlined in one pre-prepare.
    pub max_batch_bytes: usize,
    /// How many batches the primary keeps in flight (pre-prepared, not executed).
    /// One, as in Castro's library: requests that arrive meanwhile wait and go
    /// out together, which on loopback gave 1.7x the throughput of four in
    /// flight at half the CPU per operation (`pbft bench`). Raise it on
    /// high-latency links.
    pub max_outstanding_batches: u64,
    /// Requests whose operation is larger than this are sent by the client to all
    /// replicas and named by digest in the pre-prepare.
    pub large_request_threshold: usize,
    /// Largest datagram accepted or produced.
    pub max_message_bytes: usize,
    /// Largest operation a client may send.
    pub max_op_bytes: usize,
    /// Largest result a service may return (it is cached in the reply table).
    pub max_reply_bytes: usize,
    /// Bound of the primary's queue of requests waiting to be batched.
    pub max_request_queue: usize,
    /// Bound of the table of request bodies received directly from clients or
    /// forwarded by replicas (large requests, requests awaiting a pre-prepare).
    pub max_known_requests: usize,
    /// Bound of the queue of read-only requests waiting for a tentative batch to commit.
    pub max_read_only_queue: usize,
    /// Backups accept the primary's non-deterministic time if it is within this
    /// many microseconds of their own clock.
    pub nondet_skew_us: u64,
    /// Period of STATUS messages, which drive retransmission.
    pub status_interval_us: u64,
    /// A client retransmits a request (to all replicas) after this long.
    pub client_retransmit_us: u64,
    /// A backup that waits this long for a request to execute starts a view
    /// change; the timeout doubles with each view that fails to install.
    pub view_change_timeout_us: u64,
    /// Execute batches tentatively once prepared (the TOCS optimisation).
    pub tentative_execution: bool,
    /// Execute read-only requests at once, without ordering them (one round
    /// trip). Clients then need 2f+1 matching replies for every request; see
    /// `client.rs` for why.
    pub read_only_optimization: bool,
    /// Shape of the partition tree over the paged state.
    pub tree: TreeShape,
    /// Deliberate protocol bugs (simulator tests only).
    #[cfg(feature = "deliberate-bugs")]
    pub bugs: crate::bugs::Bugs,
}

impl Config {
    /// A configuration with the papers' defaults for a cluster tolerating `f` faults.
    pub fn new(f: usize) -> Config {
        Config {
            f,
            max_clients: 256,
            checkpoint_interval: 128,
            log_window: 256,
            max_batch_requests: 64,
            max_batch_bytes: 48 * 1024,
            max_outstanding_batches: 1,
            large_request_threshold: 1024,
            max_message_bytes: 65_000,
            max_op_bytes: 8 * 1024 + 512,
            max_reply_bytes: 16 * 1024 + 64,
            max_request_queue: 1024,
            max_known_requests: 1024,
            max_read_only_queue: 256,
            nondet_skew_us: 500_000,
            status_interval_us: 100_000,
            client_retransmit_us: 300_000,
            view_change_timeout_us: 300_000,
            tentative_execution: true,
            read_only_optimization: true,
            tree: TreeShape::default(),
            #[cfg(feature = "deliberate-bugs")]
            bugs: Default::default(),
        }
    }

    /// n = 3f + 1.
    pub fn n(&self) -> usize {
        3 * self.f + 1
    }

    /// Size of a quorum: 2f + 1.
    pub fn quorum(&self) -> usize {
        2 * self.f + 1
    }

    /// Whether `r` names a replica of this cluster.
    pub fn is_replica(&self, r: ReplicaId) -> bool {
        r.index() < self.n()
    }

    pub fn is_client(&self, c: ClientId) -> bool {
        c.0 < self.max_clients
    }

    /// Checks that the parameters are consistent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.n() > u16::MAX as usize / 2 {
            return Err(ConfigError("too many replicas".into()));
        }
        if self.checkpoint_interval == 0 || self.log_window < self.checkpoint_interval {
            return Err(ConfigError("need 0 < checkpoint_interval <= log_window".into()));
        }
        if !self.log_window.is_multiple_of(self.checkpoint_interval) {
            return Err(ConfigError("log_window must be a multiple of checkpoint_interval".into()));
        }
        if self.max_batch_requests == 0 || self.max_outstanding_batches == 0 {
            return Err(ConfigError("batches need room for at least one request".into()));
        }
        if self.max_op_bytes + 256 > self.max_message_bytes
            || self.max_reply_bytes + 256 > self.max_message_bytes
        {
            return Err(ConfigError("max_op_bytes and max_reply_bytes must fit in a message".into()));
        }
        if self.view_change_timeout_us == 0 {
            return Err(ConfigError("view_change_timeout_us must be positive".into()));
        }
        if self.large_request_threshold > self.max_batch_bytes {
            return Err(ConfigError("large_request_threshold must not exceed max_batch_bytes".into()));
        }
        Ok(())
    }
}

/// An inconsistent configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);
