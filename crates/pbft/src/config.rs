//! Protocol parameters. Every bound a peer could push on (log, queues, tables)
//! comes from here, so that a Byzantine peer can never make a replica grow
//! without limit (STYLE.md rule 6).

use crate::state::TreeShape;
use crate::wire;
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
    /// Results larger than this are sent in full by the replica the client
    /// designated and as a digest by the others (digest replies); smaller
    /// ones in full by every replica. A digest saves nothing on a small
    /// result, and when the designated replier is the last of the quorum to
    /// answer (one request in four with n = 4) the client would otherwise
    /// have to ask everyone again for it.
    pub digest_reply_threshold: usize,
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
    /// Record every change to the log and the view for the durable log
    /// ([`crate::journal`]): the host persists the records before it sends
    /// what depends on them. Off, a restarted replica has forgotten what it
    /// said and counts as faulty until it has caught up.
    pub journal: bool,
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
            digest_reply_threshold: 256,
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
            journal: true,
            tree: TreeShape::default(),
            #[cfg(feature = "deliberate-bugs")]
            bugs: Default::default(),
        }
    }

    /// Whether replicas record for the durable log ([`Config::journal`],
    /// unless a deliberate bug says otherwise).
    pub fn journaling(&self) -> bool {
        #[cfg(feature = "deliberate-bugs")]
        if self.bugs.forgetful_restart {
            return false;
        }
        self.journal
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
        if self.n() > wire::MAX_TAGS {
            return Err(ConfigError(format!(
                "{} replicas: an authenticator carries at most {} MACs (f <= {})",
                self.n(),
                wire::MAX_TAGS,
                (wire::MAX_TAGS - 1) / 3
            )));
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
        if self.max_batch_requests > wire::MAX_LIST {
            return Err(ConfigError(format!("max_batch_requests above the wire's list bound {}", wire::MAX_LIST)));
        }
        if self.log_window as usize * wire::MAX_Q_PER_SEQ > wire::MAX_LIST {
            return Err(ConfigError(format!(
                "log_window {}: a VIEW-CHANGE would list up to {} pre-prepared batches, above the wire's bound {}",
                self.log_window,
                self.log_window as usize * wire::MAX_Q_PER_SEQ,
                wire::MAX_LIST
            )));
        }
        if (self.log_window / self.checkpoint_interval + 1) as usize > wire::MAX_VC_CHECKPOINTS {
            return Err(ConfigError(format!(
                "log_window / checkpoint_interval + 1 checkpoints would not fit a VIEW-CHANGE (at most {})",
                wire::MAX_VC_CHECKPOINTS
            )));
        }
        if self.tree.fanout as usize > wire::MAX_LIST {
            return Err(ConfigError(format!("tree fanout above the wire's list bound {}", wire::MAX_LIST)));
        }
        if self.max_message_bytes > MAX_UDP_PAYLOAD {
            return Err(ConfigError(format!("max_message_bytes above a UDP datagram's {MAX_UDP_PAYLOAD} bytes")));
        }
        for (what, bytes) in self.largest_messages() {
            if bytes > self.max_message_bytes {
                return Err(ConfigError(format!(
                    "the largest {what} this configuration allows is {bytes} bytes, above max_message_bytes = {}",
                    self.max_message_bytes
                )));
            }
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

/// Largest payload of a UDP datagram over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

impl Config {
    /// An upper bound on the encoded size of the largest message of each
    /// kind this configuration lets a correct node produce, from the wire
    /// format (`wire.rs`): envelope header, body, and one MAC tag per
    /// receiver. [`Config::validate`] checks each against `max_message_bytes`.
    pub fn largest_messages(&self) -> Vec<(&'static str, usize)> {
        let n = self.n();
        let envelope = |body: usize, tags: usize| wire::HEADER_LEN + body + 1 + tags * wire::TAG_LEN;
        // client u32, timestamp u64, read-only u8, replier u16, op (u32 length + bytes)
        let request = |op: usize| envelope(4 + 8 + 1 + 2 + 4 + op, n);
        // A batch packs requests up to max_batch_bytes (its own count: each
        // inline entry is its datagram plus 5 bytes of framing, each by
        // digest 33); the first entry goes in whatever its size.
        let first_entry = request(self.large_request_threshold) + 5;
        let pre_prepare = envelope(8 + 8 + 8 + 2 + self.max_batch_bytes.max(first_entry), n);
        let l = self.log_window as usize;
        let checkpoints = (l / self.checkpoint_interval.max(1) as usize + 1).min(wire::MAX_VC_CHECKPOINTS);
        let entry = 8 + 32 + 8;
        let view_change = envelope(8 + 8 + 2 + checkpoints * (8 + 32) + 2 + l * entry + 2 + l * wire::MAX_Q_PER_SEQ * entry, n);
        vec![
            ("request", request(self.max_op_bytes)),
            // view u64, timestamp u64, client u32, tentative u8, body tag u8, result
            ("reply", envelope(8 + 8 + 4 + 1 + 1 + 4 + self.max_reply_bytes, 1)),
            ("PRE-PREPARE", pre_prepare),
            ("VIEW-CHANGE", view_change),
            ("NEW-VIEW", envelope(8 + 2 + n * (2 + 32), n)),
            ("META-DATA", envelope(8 + 4 + 8 + 2 + self.tree.fanout as usize * 32, n)),
            ("DATA", envelope(8 + 8 + 4 + wire::PAGES_PER_DATA * crate::state::PAGE_SIZE, n)),
        ]
    }
}

/// An inconsistent configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);
