//! What the core asks its host to do. The core never performs IO: each entry
//! point appends effects to an [`Outbox`], and the host (the simulator or the real
//! runtime) carries them out.

use bytes::Bytes;

use crate::metrics::DropReason;
use crate::types::{ClientId, Digest, NodeId, ReplicaId, SeqNo, Timestamp};

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    Replica(ReplicaId),
    /// Every replica but the sender.
    AllReplicas,
    Client(ClientId),
}

/// The timers a node keeps (see [`crate::timers`]). Setting a timer replaces
/// the previous deadline of the same kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// A replica's periodic STATUS, which drives retransmission.
    Status,
    /// A client's retransmission of its outstanding request.
    ClientRetransmit,
    /// A backup's patience with the primary (and with a view change).
    ViewChange,
}

/// A record of one executed batch, for the host's metrics and the simulator's
/// checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    pub seq: SeqNo,
    /// Digest of the batch (its requests and non-deterministic value).
    pub batch: Digest,
    /// Executed before the batch committed.
    pub tentative: bool,
    /// The requests the service actually executed (duplicates are skipped).
    pub requests: Vec<(ClientId, Timestamp)>,
}

/// What a replica made of one datagram ([`crate::Replica::on_datagram`]),
/// so that its host never decodes it again or compares drop counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Its MAC for this replica verified: it came from `from` (a client's
    /// request carries its `timestamp`). The protocol may still have set it
    /// aside (a stale view, a duplicate): the metrics count why.
    Authenticated { from: NodeId, timestamp: Option<Timestamp> },
    /// It had no valid MAC for this replica, but a digest the replica trusts
    /// names its content (see [`crate::auth::Vouched`]), so it was used.
    Vouched,
    /// Dropped before it could be used: undecodable, from an unknown sender,
    /// a bad MAC, a kind its sender may not send, or unasked for.
    Dropped(DropReason),
}

/// One thing for the host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Send { to: Dest, bytes: Bytes },
    /// Records for the durable log ([`crate::journal`]): the host makes them
    /// durable before it sends any datagram of the same outbox.
    Persist(Vec<crate::journal::Record>),
    /// A replica executed a batch.
    Executed(Execution),
    /// A replica committed a batch it had executed tentatively.
    CommittedTentative { seq: SeqNo },
    /// A replica undid the batch it had executed tentatively at `seq`: the new
    /// view did not keep it.
    RolledBack { seq: SeqNo },
    /// A replica installed a new view.
    ViewInstalled { view: crate::types::View },
    /// A replica's checkpoint became stable: the log below it is gone.
    StableCheckpoint { seq: SeqNo, digest: Digest },
    /// A replica that fell behind started fetching the state of checkpoint
    /// `seq` (a retarget to a newer checkpoint is not a new start).
    StateTransferStarted { seq: SeqNo },
    /// A replica installed the state of checkpoint `seq` fetched from others.
    StateTransferred { seq: SeqNo, digest: Digest, pages: u64 },
}

/// What a client asks its host to do. Separate from a replica's [`Effect`]s,
/// so a client host never matches effects that cannot reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEffect {
    /// Send a datagram to one replica.
    Send { to: ReplicaId, bytes: Bytes },
    /// The outstanding request completed with this result, certified by a
    /// quorum of replicas.
    Completed { timestamp: Timestamp, result: Bytes, read_only: bool },
}

/// Effects produced by one call into the core, in order: a replica's
/// [`Effect`]s, or a client's [`ClientEffect`]s ([`ClientOutbox`]).
#[derive(Debug)]
pub struct Outbox<E = Effect> {
    pub effects: Vec<E>,
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Outbox { effects: Vec::new() }
    }
}

/// What a client's calls produce.
pub type ClientOutbox = Outbox<ClientEffect>;

impl<E> Outbox<E> {
    pub fn new() -> Outbox<E> {
        Outbox::default()
    }
    pub fn push(&mut self, e: E) {
        self.effects.push(e);
    }
    pub fn drain(&mut self) -> std::vec::Drain<'_, E> {
        self.effects.drain(..)
    }
    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }
}

impl Outbox<Effect> {
    pub fn send(&mut self, to: Dest, bytes: Bytes) {
        self.effects.push(Effect::Send { to, bytes });
    }
}
