//! Bundles: the framing that lets small messages for one address share a
//! datagram. A bundle is [`BUNDLE_MAGIC`], then for each message its length
//! (two bytes, little-endian) and its bytes, at most [`BUNDLE_BYTES`] in all.
//! The transport bundles what one flush sends to an address and splits
//! bundles before anything else sees them; each message keeps its own
//! authenticator.

use std::net::SocketAddr;

use bytes::Bytes;

/// A datagram that carries several messages starts with these two bytes (a
/// message starts with [`pbft::wire::MAGIC`]), followed, for each message, by
/// its length (two bytes, little-endian) and its bytes.
pub const BUNDLE_MAGIC: [u8; 2] = *b"PN";

/// Largest bundle sent or accepted: within one Ethernet frame, so that
/// bundling never makes a datagram that IP must fragment.
pub const BUNDLE_BYTES: usize = 1_400;

/// Merges the messages in `queued` for the same address into bundles of at
/// most [`BUNDLE_BYTES`], in place. Each address's messages keep their order,
/// and a bundle takes the place of its first message (so urgent ones stay
/// first). A message too large to share a bundle goes alone, and closes the
/// bundle open for its address. Returns the bundles made and the messages in
/// them.
pub(super) fn bundle(queued: &mut Vec<(SocketAddr, Bytes)>) -> (u64, u64) {
    const ENTRY: usize = 2;
    // Per outgoing datagram: its address, bundled size and message count;
    // and for each message, the datagram it goes in.
    let mut out: Vec<(SocketAddr, usize, usize)> = Vec::with_capacity(queued.len());
    let mut into: Vec<usize> = Vec::with_capacity(queued.len());
    // The bundle still open for each address, by index in `out`.
    let mut open: Vec<(SocketAddr, usize)> = Vec::new();
    for (addr, bytes) in queued.iter() {
        let size = ENTRY + bytes.len();
        let slot = open.iter().position(|(a, _)| a == addr);
        if BUNDLE_MAGIC.len() + size > BUNDLE_BYTES {
            if let Some(k) = slot {
                open.swap_remove(k);
            }
            into.push(out.len());
            out.push((*addr, 0, 1));
            continue;
        }
        if let Some(k) = slot {
            let i = open[k].1;
            if out[i].1 + size <= BUNDLE_BYTES {
                out[i].1 += size;
                out[i].2 += 1;
                into.push(i);
                continue;
            }
            open[k].1 = out.len();
        } else {
            open.push((*addr, out.len()));
        }
        into.push(out.len());
        out.push((*addr, BUNDLE_MAGIC.len() + size, 1));
    }
    if out.len() == queued.len() {
        return (0, 0);
    }
    // Messages by datagram, each datagram's in queueing order (a stable sort).
    let mut order: Vec<usize> = (0..queued.len()).collect();
    order.sort_by_key(|&j| into[j]);
    let messages = std::mem::take(queued);
    let (mut bundles, mut bundled) = (0, 0);
    let mut next = order.into_iter().peekable();
    for (i, (addr, size, count)) in out.into_iter().enumerate() {
        if count == 1 {
            queued.extend(next.next().map(|j| (addr, messages[j].1.clone())));
            continue;
        }
        bundles += 1;
        bundled += count as u64;
        let mut b = bytes::BytesMut::with_capacity(size);
        b.extend_from_slice(&BUNDLE_MAGIC);
        while let Some(j) = next.next_if(|&j| into[j] == i) {
            let m = &messages[j].1;
            b.extend_from_slice(&(m.len() as u16).to_le_bytes());
            b.extend_from_slice(m);
        }
        queued.push((addr, b.freeze()));
    }
    (bundles, bundled)
}

/// Appends the messages of `bundle` (which starts with [`BUNDLE_MAGIC`]) to
/// `out`, each from `from`; a bundle larger than [`BUNDLE_BYTES`], with an
/// empty message or a length past its end, is dropped whole (returns false).
pub(super) fn unbundle(bundle: Bytes, from: SocketAddr, out: &mut Vec<(Bytes, SocketAddr)>) -> bool {
    if bundle.len() > BUNDLE_BYTES {
        return false;
    }
    let mut parts = Vec::new();
    let mut at = BUNDLE_MAGIC.len();
    while at < bundle.len() {
        let Some(len) = bundle.get(at..at + 2).map(|l| usize::from(u16::from_le_bytes([l[0], l[1]]))) else { return false };
        let (start, end) = (at + 2, at + 2 + len);
        if len == 0 || end > bundle.len() {
            return false;
        }
        parts.push(bundle.slice(start..end));
        at = end;
    }
    if parts.len() < 2 {
        return false;
    }
    out.extend(parts.into_iter().map(|p| (p, from)));
    true
}
