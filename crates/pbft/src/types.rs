//! Newtypes for the protocol's quantities, so that a view can never be passed
//! where a sequence number is expected (STYLE.md rule 5).

use std::fmt;

/// Index of a replica, `0..n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReplicaId(pub u16);

/// Identifier of a client, `0..max_clients` (a slot in the replicated reply table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClientId(pub u32);

/// Any principal that holds session keys: a replica or a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeId {
    Replica(ReplicaId),
    Client(ClientId),
}

/// A view number; the primary of view `v` is replica `v mod n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct View(pub u64);

/// A sequence number assigned by the primary to a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SeqNo(pub u64);

/// A client's request timestamp: strictly increasing per client, gives exactly-once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

/// Time as the core sees it: microseconds since an epoch chosen by the host. The core never reads a clock; it is handed `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

/// A 256-bit BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl ReplicaId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl View {
    /// The primary of this view in a cluster of `n` replicas.
    pub fn primary(self, n: usize) -> ReplicaId {
        ReplicaId((self.0 % n as u64) as u16)
    }
}

impl SeqNo {
    pub fn next(self) -> SeqNo {
        SeqNo(self.0 + 1)
    }
}

impl Instant {
    pub fn plus_us(self, us: u64) -> Instant {
        Instant(self.0.saturating_add(us))
    }
    pub fn as_us(self) -> u64 {
        self.0
    }
}

impl Digest {
    /// Digest of arbitrary bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}
