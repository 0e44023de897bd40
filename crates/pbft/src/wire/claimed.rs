//! What a datagram's bytes claim, read without decoding or authenticating
//! them: for a host's own bookkeeping (fault injection, routing replies among
//! the clients of one socket), never for trust.

use super::{Kind, HEADER_LEN, MAGIC};
use crate::types::{ClientId, Timestamp};

/// The kind a datagram's header claims (byte 3), without decoding it: for a
/// host's own fault injection, never for trust.
pub fn claimed_kind(bytes: &[u8]) -> Option<Kind> {
    bytes.get(3).and_then(|b| Kind::from_u8(*b).ok())
}

/// The client and timestamp a REPLY's body claims, without decoding or
/// authenticating it: for a host that serves several clients on one socket to
/// route a reply to the client it names, never for trust (the client core
/// authenticates it). `None` for anything that does not claim to be a reply.
pub fn claimed_reply(bytes: &[u8]) -> Option<(ClientId, Timestamp)> {
    if bytes.get(..2)? != MAGIC || claimed_kind(bytes)? != Kind::Reply {
        return None;
    }
    // The body: view (8 bytes), timestamp (8), client (4).
    let at = |from: usize, len: usize| bytes.get(HEADER_LEN + from..HEADER_LEN + from + len);
    let timestamp = u64::from_le_bytes(at(8, 8)?.try_into().ok()?);
    let client = u32::from_le_bytes(at(16, 4)?.try_into().ok()?);
    Some((ClientId(client), Timestamp(timestamp)))
}
