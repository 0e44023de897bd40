//! Deliberate protocol bugs, compiled only with the `deliberate-bugs` feature and
//! off unless a test switches one on. Each exists to prove that one of the
//! simulator's checkers can fail.

/// Switches for deliberate bugs. All off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Replicas skip MAC verification of protocol messages (caught by agreement,
    /// with a forging replica).
    pub skip_mac_check: bool,
    /// Replicas ignore the reply table: the primary orders a retransmitted
    /// request again and replicas execute it again (caught by exactly-once).
    pub execute_twice: bool,
    /// Clients accept f matching replies instead of f+1 (caught by
    /// linearizability, with a replica that lies in its replies).
    pub weak_reply_certificate: bool,
    /// The primary's request queue ignores its bound (caught by the bounds checker,
    /// with flooding clients).
    pub unbounded_request_queue: bool,
    /// Replicas never send STATUS, so nothing lost is ever retransmitted between
    /// replicas (caught by liveness under message loss).
    pub no_status: bool,
    /// A batch commits with 2f matching commits instead of 2f+1 (caught by the
    /// agreement checker's commit-certificate invariant).
    pub commit_quorum_2f: bool,
    /// Replicas execute (tentatively) and reply as soon as they accept a
    /// pre-prepare, before the batch is prepared (caught by the agreement
    /// checker's prepared-before-executed invariant).
    pub execute_before_prepared: bool,
    /// The new-view decision re-proposes the null request wherever it should
    /// re-propose a prepared one (caught by agreement after a view change).
    pub new_view_drops_prepared: bool,
    /// The new-view decision skips rule A2 (f+1 VIEW-CHANGE messages must
    /// have pre-prepared a request it re-proposes), so a replica that lies in
    /// its VIEW-CHANGE can put a made-up request into the new view (caught by
    /// liveness: no replica has its body).
    pub new_view_skips_a2: bool,
    /// The new primary admits a VIEW-CHANGE without waiting for 2f-1 acks
    /// of it, so its NEW-VIEW may name a VIEW-CHANGE that the backups cannot
    /// authenticate or trust (caught by liveness, with a replica whose
    /// VIEW-CHANGE has a valid MAC for the new primary only).
    pub view_change_without_acks: bool,
    /// A late CHECKPOINT for the stable checkpoint moves the low water mark
    /// back one interval. Nothing a client sees goes wrong (the window only
    /// shrinks), so no checker of outcomes notices: only the replica's
    /// invariant check catches it, at the input that broke it.
    pub low_water_mark_moves_back: bool,
    /// Replicas keep no durable log, as before it existed: a replica
    /// restarted from disk has forgotten its view, its log and what it said
    /// (caught by agreement, liveness or linearizability when every replica,
    /// or one at a time, restarts from disk).
    pub forgetful_restart: bool,
    /// The simulated host sends a turn's datagrams before its durable-log
    /// records are synced (a PREPARE before its batch is on disk): a crash in
    /// between loses what the replica said (caught by linearizability or
    /// agreement when the whole cluster loses power).
    pub send_before_durable: bool,
    /// Not a bug: replicas skip their per-input invariant checks, so that a
    /// test can show that an outcome checker (agreement, liveness, ...)
    /// catches a bug on its own, where an invariant would catch it first.
    pub unchecked_invariants: bool,
}
