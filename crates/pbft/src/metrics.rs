//! Counters every node keeps: what it did, and what it dropped and why. A
//! Byzantine peer's attempts show up here rather than as growth or panics.

/// Why an input was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Bytes that do not decode.
    Malformed,
    /// No session key for the claimed sender.
    UnknownSender,
    /// A MAC that does not verify, or an authenticator of the wrong size.
    BadMac,
    /// A message kind the sender may not send.
    WrongSenderKind,
    /// A message for another view.
    WrongView,
    /// A sequence number outside the water marks.
    OutOfWindow,
    /// A request older than the client's last executed one.
    StaleRequest,
    /// A queue or table is at its configured bound.
    QueueFull,
    /// A pre-prepare that conflicts with one already accepted (equivocation).
    Conflicting,
    /// A pre-prepare not from the primary, or a prepare from the primary.
    WrongRole,
    /// A message that is well formed but invalid (bad batch, oversized op, ...).
    Invalid,
    /// A message already seen.
    Duplicate,
    /// A reply or message that the node did not ask for.
    Unexpected,
    /// Rate limiting of responses to STATUS.
    RateLimited,
}

impl DropReason {
    pub const ALL: [DropReason; 14] = [
        DropReason::Malformed,
        DropReason::UnknownSender,
        DropReason::BadMac,
        DropReason::WrongSenderKind,
        DropReason::WrongView,
        DropReason::OutOfWindow,
        DropReason::StaleRequest,
        DropReason::QueueFull,
        DropReason::Conflicting,
        DropReason::WrongRole,
        DropReason::Invalid,
        DropReason::Duplicate,
        DropReason::Unexpected,
        DropReason::RateLimited,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::BadMac => "bad_mac",
            DropReason::WrongSenderKind => "wrong_sender_kind",
            DropReason::WrongView => "wrong_view",
            DropReason::OutOfWindow => "out_of_window",
            DropReason::StaleRequest => "stale_request",
            DropReason::QueueFull => "queue_full",
            DropReason::Conflicting => "conflicting",
            DropReason::WrongRole => "wrong_role",
            DropReason::Invalid => "invalid",
            DropReason::Duplicate => "duplicate",
            DropReason::Unexpected => "unexpected",
            DropReason::RateLimited => "rate_limited",
        }
    }

    fn index(self) -> usize {
        DropReason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl From<&crate::auth::AuthError> for DropReason {
    fn from(e: &crate::auth::AuthError) -> DropReason {
        use crate::auth::AuthError;
        match e {
            AuthError::Malformed(_) => DropReason::Malformed,
            AuthError::UnknownSender => DropReason::UnknownSender,
            AuthError::WrongTagCount | AuthError::BadMac => DropReason::BadMac,
            AuthError::WrongSenderKind => DropReason::WrongSenderKind,
        }
    }
}

/// A node's counters.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    drops: [u64; DropReason::ALL.len()],
    pub requests_executed: u64,
    pub read_only_executed: u64,
    pub batches_executed: u64,
    pub batch_requests_total: u64,
    pub checkpoints_stable: u64,
    pub replies_resent: u64,
    pub retransmitted: u64,
    pub state_transfers: u64,
    /// VIEW-CHANGE messages this replica started (one per view it moved to).
    pub view_changes: u64,
    /// Views installed (NEW-VIEW sent or accepted).
    pub views_installed: u64,
    /// Tentative executions undone by a view change.
    pub rollbacks: u64,
    /// Pages (and their bytes) fetched and checked by state transfers.
    pub transfer_pages: u64,
    pub transfer_bytes: u64,
}

impl Metrics {
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }
}
