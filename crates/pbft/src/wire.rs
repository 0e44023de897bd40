//! The wire codec: a canonical binary encoding of every protocol message.
//!
//! A datagram is an *envelope*:
//!
//! ```text
//! magic "PB" | version u8 | kind u8 | sender (tag u8, id u32) | body_len u32 | body | tag_count u8 | tags (16 bytes each)
//! ```
//!
//! Everything before `tag_count` is the *authenticated part*: its BLAKE3 digest is
//! what the authenticator's MACs cover (one MAC per receiving replica, or one for a
//! client), so a message is hashed once however many receivers it has.
//!
//! Invariants: decoding never panics; every length is checked against the bytes
//! present and against `max_message_bytes`; the encoding is canonical (decoding
//! then encoding gives the same bytes: booleans are 0 or 1, no trailing bytes,
//! unknown kinds, tags and versions are errors). Nothing here checks MACs: that is
//! [`crate::auth`]'s job, and protocol handlers only see what it verified.

use bytes::{BufMut, Bytes, BytesMut};

use std::sync::Arc;

use crate::state::{Page, PAGE_SIZE};
use crate::types::{ClientId, Digest, NodeId, ReplicaId, SeqNo, Timestamp, View};

pub const MAGIC: [u8; 2] = *b"PB";
pub const VERSION: u8 = 1;
/// Length in bytes of one MAC in an authenticator (128 bits).
pub const TAG_LEN: usize = 16;
/// Bytes before the body: magic, version, kind, sender tag and id, body length.
pub const HEADER_LEN: usize = 2 + 1 + 1 + 1 + 4 + 4;
/// Largest number of entries in any list a message carries (batch entries, status flags).
pub const MAX_LIST: usize = 4096;
/// Largest number of MAC tags in an authenticator: the count is one byte.
/// A replica's multicast carries one tag per replica, so this bounds n.
pub const MAX_TAGS: usize = u8::MAX as usize;
/// Distinct batches a VIEW-CHANGE reports per sequence number in Q.
pub const MAX_Q_PER_SEQ: usize = 4;
/// Consecutive pages sent back in one DATA (60 KiB, within one datagram): a
/// datagram per page made the transfer syscall-bound.
pub const PAGES_PER_DATA: usize = 15;

/// A MAC tag.
pub type Tag = [u8; TAG_LEN];

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("message larger than the limit")]
    Oversized,
    #[error("bad magic number")]
    BadMagic,
    #[error("unsupported version {0}")]
    BadVersion(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    #[error("trailing bytes after the message")]
    Trailing,
}

/// Message kinds. Numbers are part of the wire format: never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Request = 1,
    Reply = 2,
    PrePrepare = 3,
    Prepare = 4,
    Commit = 5,
    Checkpoint = 6,
    Status = 7,
    Fetch = 11,
    MetaData = 12,
    Data = 14,
    ViewChange = 8,
    ViewChangeAck = 9,
    NewView = 10,
    // Reserved for state transfer and recovery: MetaDataD = 13, NewKey = 15.
}

mod claimed;
pub use claimed::{claimed_kind, claimed_reply};

impl Kind {
    fn from_u8(b: u8) -> Result<Kind, WireError> {
        Ok(match b {
            1 => Kind::Request,
            2 => Kind::Reply,
            3 => Kind::PrePrepare,
            4 => Kind::Prepare,
            5 => Kind::Commit,
            6 => Kind::Checkpoint,
            7 => Kind::Status,
            8 => Kind::ViewChange,
            9 => Kind::ViewChangeAck,
            10 => Kind::NewView,
            11 => Kind::Fetch,
            12 => Kind::MetaData,
            14 => Kind::Data,
            other => return Err(WireError::UnknownKind(other)),
        })
    }
}

/// A client request: `<REQUEST, o, t, c>` in the paper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub client: ClientId,
    pub timestamp: Timestamp,
    pub read_only: bool,
    /// The replica asked for the full result; the others reply with its digest.
    /// `None` asks every replica for the full result (used on retransmission).
    pub replier: Option<ReplicaId>,
    pub op: Bytes,
}

impl Request {
    /// The digest that names this request in batches and pre-prepares. It leaves
    /// out `replier`, which a client changes when it retransmits.
    pub fn digest(&self) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(b"pbft-request");
        h.update(&self.client.0.to_le_bytes());
        h.update(&self.timestamp.0.to_le_bytes());
        h.update(&[self.read_only as u8]);
        h.update(&self.op);
        Digest(*h.finalize().as_bytes())
    }
}

/// The result in a reply: the full bytes from the designated replier, a digest
/// from the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyBody {
    Full(Bytes),
    Digest(Digest),
}

/// `<REPLY, v, t, c, i, r>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub view: View,
    pub timestamp: Timestamp,
    pub client: ClientId,
    /// Executed tentatively (prepared, not yet committed) or read-only: the client
    /// needs 2f+1 matching replies instead of f+1.
    pub tentative: bool,
    pub body: ReplyBody,
}

/// One request in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchEntry {
    /// The client's whole request envelope, authenticator included, so that each
    /// backup checks the client's MAC for itself.
    Inline(Bytes),
    /// A large request, sent by the client to every replica, named by digest.
    ByDigest(Digest),
}

/// `<PRE-PREPARE, v, n, d>` with the batch piggybacked, as the papers do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrePrepare {
    pub view: View,
    pub seq: SeqNo,
    /// The primary's proposal for the batch's non-deterministic value (its clock).
    pub nondet_time_us: u64,
    pub entries: Vec<BatchEntry>,
}

/// `<PREPARE, v, n, d, i>` (i is the envelope's sender).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepare {
    pub view: View,
    pub seq: SeqNo,
    pub digest: Digest,
}

/// `<COMMIT, v, n, d, i>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    pub view: View,
    pub seq: SeqNo,
    pub digest: Digest,
}

/// `<CHECKPOINT, n, d, i>`: d is the root of the partition tree after executing n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: SeqNo,
    pub state_digest: Digest,
}

/// What a replica has for one sequence number, in a STATUS message.
pub mod slot_flags {
    pub const PRE_PREPARED: u8 = 1;
    pub const PREPARED: u8 = 2;
    pub const COMMITTED: u8 = 4;
    pub const ALL: u8 = 7;
}

/// `<STATUS, v, h, le, ...>`: what a replica has, so that peers resend what it lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub view: View,
    /// The sender has installed `view` (false while it changes view to it).
    pub view_active: bool,
    /// Its last stable checkpoint.
    pub stable: SeqNo,
    /// The first sequence number it has not committed and executed.
    pub first_open: SeqNo,
    /// Its last executed sequence number.
    pub last_executed: SeqNo,
    /// `slot_flags` for `first_open`, `first_open + 1`, ...
    pub slots: Vec<u8>,
    /// Large requests named in pre-prepares that it has no body for.
    pub missing_requests: Vec<Digest>,
}

/// `<FETCH, n, l, x, c>`: asks for partition-tree node (level l, index x) of
/// checkpoint n: its children's digests, or at the leaf level the page itself
/// and the `count - 1` pages after it (answered in one DATA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub seq: SeqNo,
    pub level: u32,
    pub index: u64,
    pub count: u16,
}

/// `<META-DATA, n, l, x, digests>`: the digests of a node's children at
/// checkpoint n, exactly as hashed into the node's digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaData {
    pub seq: SeqNo,
    pub level: u32,
    pub index: u64,
    pub children: Vec<Digest>,
}

/// `<DATA, n, x, pages>`: pages x, x+1, ... as of checkpoint n (as many as
/// the FETCH asked for and one datagram holds), sent concatenated.
///
/// The pages are shared (`Arc`): a source sends its checkpoint's own pages
/// without copying them, and a receiver installs the pages decoded from the
/// datagram as they are. `digests` are not sent: they are the digests of the
/// pages, which the sender takes from its partition tree and `decode`
/// computes. The MAC covers them in place of the page bytes, so each page is
/// hashed once on each side: the receiver needs its digest anyway, to check
/// it against the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    pub seq: SeqNo,
    pub index: u64,
    pub pages: Vec<Arc<Page>>,
    pub digests: Vec<Digest>,
}

impl Data {
    /// A DATA message with its pages' digests computed.
    pub fn new(seq: SeqNo, index: u64, pages: Vec<Arc<Page>>) -> Data {
        let digests = pages.iter().map(|p| Digest::of(&p[..])).collect();
        Data { seq, index, pages, digests }
    }

    /// A DATA message of the pages in `bytes`, each copied into a page of
    /// its own; `None` if `bytes` is not a whole number of pages.
    pub fn from_bytes(seq: SeqNo, index: u64, bytes: &[u8]) -> Option<Data> {
        let (pages, rest) = bytes.as_chunks::<PAGE_SIZE>();
        rest.is_empty().then(|| Data::new(seq, index, pages.iter().map(|p| Arc::new(*p)).collect()))
    }

    /// Bytes of the pages, as sent.
    pub fn page_bytes(&self) -> usize {
        self.pages.len() * PAGE_SIZE
    }
}

/// The digest a message's MAC covers, given its authenticated bytes: their
/// BLAKE3 hash, except for DATA, whose page bytes (the last field) count by
/// their digests.
pub fn auth_digest(message: &Message, authenticated: &[u8]) -> Digest {
    match message {
        Message::Data(d) => {
            let prefix = &authenticated[..authenticated.len() - d.page_bytes()];
            let mut h = blake3::Hasher::new();
            h.update(prefix);
            for digest in &d.digests {
                h.update(&digest.0);
            }
            Digest(*h.finalize().as_bytes())
        }
        _ => Digest::of(authenticated),
    }
}

/// A (sequence number, digest, view) entry of a VIEW-CHANGE's P or Q set.
pub use crate::view_change::Entry as VcEntry;

/// Largest number of checkpoints listed in a VIEW-CHANGE's C set.
pub const MAX_VC_CHECKPOINTS: usize = 64;

/// `<VIEW-CHANGE, v, h, C, P, Q, i>` (TOCS 2002 §4.5.1): authenticated with
/// MACs like any other message; no signatures. `view` is the view the sender
/// moves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewChange {
    pub view: View,
    /// h: the sender's last stable checkpoint.
    pub stable: SeqNo,
    /// C: the checkpoints it holds, (n, state digest).
    pub checkpoints: Vec<(SeqNo, Digest)>,
    /// P: for each sequence number above h, the batch that prepared at the
    /// sender in the latest view.
    pub prepared: Vec<VcEntry>,
    /// Q: the batches that pre-prepared at the sender above h, with the
    /// latest view each did.
    pub pre_prepared: Vec<VcEntry>,
}

/// `<VIEW-CHANGE-ACK, v, i, j, d>`: the sender (i) holds j's VIEW-CHANGE for
/// view v, whose digest is d.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewChangeAck {
    pub view: View,
    pub replica: ReplicaId,
    pub digest: Digest,
}

/// `<NEW-VIEW, v, V>`: the VIEW-CHANGE messages (sender, digest) the new
/// primary decided from. Every replica runs the decision procedure on them,
/// so the checkpoint and requests it picks are not sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewView {
    pub view: View,
    pub view_changes: Vec<(ReplicaId, Digest)>,
}

/// A decoded message body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Reply(Reply),
    PrePrepare(PrePrepare),
    Prepare(Prepare),
    Commit(Commit),
    Checkpoint(Checkpoint),
    Status(Status),
    Fetch(Fetch),
    MetaData(MetaData),
    Data(Data),
    ViewChange(ViewChange),
    ViewChangeAck(ViewChangeAck),
    NewView(NewView),
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Request(_) => Kind::Request,
            Message::Reply(_) => Kind::Reply,
            Message::PrePrepare(_) => Kind::PrePrepare,
            Message::Prepare(_) => Kind::Prepare,
            Message::Commit(_) => Kind::Commit,
            Message::Checkpoint(_) => Kind::Checkpoint,
            Message::Status(_) => Kind::Status,
            Message::Fetch(_) => Kind::Fetch,
            Message::MetaData(_) => Kind::MetaData,
            Message::Data(_) => Kind::Data,
            Message::ViewChange(_) => Kind::ViewChange,
            Message::ViewChangeAck(_) => Kind::ViewChangeAck,
            Message::NewView(_) => Kind::NewView,
        }
    }
}

/// A decoded datagram whose authenticator has not been checked yet.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub sender: NodeId,
    pub message: Message,
    /// Digest of the authenticated part (what the MACs cover).
    pub auth_digest: Digest,
    pub tags: Vec<Tag>,
    /// The whole datagram, kept so that replicas can forward it unchanged.
    pub raw: Bytes,
}

/// Encodes `message` from `sender`, leaving room for `tag_count` tags that
/// [`crate::auth`] fills in. Returns the buffer and the length of the
/// authenticated part.
pub fn encode_unauthenticated(sender: NodeId, message: &Message, tag_count: usize) -> (BytesMut, usize) {
    let extra = match message {
        Message::Data(d) => d.page_bytes(),
        _ => 0,
    };
    let mut out = BytesMut::with_capacity(HEADER_LEN + 64 + extra + 1 + tag_count * TAG_LEN);
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u8(message.kind() as u8);
    match sender {
        NodeId::Replica(r) => {
            out.put_u8(0);
            out.put_u32_le(r.0 as u32);
        }
        NodeId::Client(c) => {
            out.put_u8(1);
            out.put_u32_le(c.0);
        }
    }
    // The body goes straight into the datagram; its length is filled in after.
    let len_at = out.len();
    out.put_u32_le(0);
    encode_body(message, &mut out);
    let body_len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&body_len.to_le_bytes());
    let authenticated_len = out.len();
    assert!(tag_count <= MAX_TAGS, "an authenticator holds at most {MAX_TAGS} tags");
    out.put_u8(tag_count as u8);
    out.put_bytes(0, tag_count * TAG_LEN);
    (out, authenticated_len)
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

fn encode_body(message: &Message, out: &mut BytesMut) {
    match message {
        Message::Request(r) => {
            out.put_u32_le(r.client.0);
            out.put_u64_le(r.timestamp.0);
            out.put_u8(r.read_only as u8);
            out.put_u16_le(r.replier.map_or(u16::MAX, |r| r.0));
            put_bytes(out, &r.op);
        }
        Message::Reply(r) => {
            out.put_u64_le(r.view.0);
            out.put_u64_le(r.timestamp.0);
            out.put_u32_le(r.client.0);
            out.put_u8(r.tentative as u8);
            match &r.body {
                ReplyBody::Full(b) => {
                    out.put_u8(0);
                    put_bytes(out, b);
                }
                ReplyBody::Digest(d) => {
                    out.put_u8(1);
                    out.put_slice(&d.0);
                }
            }
        }
        Message::PrePrepare(p) => {
            out.put_u64_le(p.view.0);
            out.put_u64_le(p.seq.0);
            out.put_u64_le(p.nondet_time_us);
            out.put_u16_le(p.entries.len() as u16);
            for e in &p.entries {
                match e {
                    BatchEntry::Inline(b) => {
                        out.put_u8(0);
                        put_bytes(out, b);
                    }
                    BatchEntry::ByDigest(d) => {
                        out.put_u8(1);
                        out.put_slice(&d.0);
                    }
                }
            }
        }
        Message::Prepare(Prepare { view, seq, digest }) | Message::Commit(Commit { view, seq, digest }) => {
            out.put_u64_le(view.0);
            out.put_u64_le(seq.0);
            out.put_slice(&digest.0);
        }
        Message::Checkpoint(c) => {
            out.put_u64_le(c.seq.0);
            out.put_slice(&c.state_digest.0);
        }
        Message::Status(s) => {
            out.put_u64_le(s.view.0);
            out.put_u8(s.view_active as u8);
            out.put_u64_le(s.stable.0);
            out.put_u64_le(s.first_open.0);
            out.put_u64_le(s.last_executed.0);
            out.put_u16_le(s.slots.len() as u16);
            out.put_slice(&s.slots);
            out.put_u16_le(s.missing_requests.len() as u16);
            for d in &s.missing_requests {
                out.put_slice(&d.0);
            }
        }
        Message::Fetch(f) => {
            out.put_u64_le(f.seq.0);
            out.put_u32_le(f.level);
            out.put_u64_le(f.index);
            out.put_u16_le(f.count);
        }
        Message::MetaData(m) => {
            out.put_u64_le(m.seq.0);
            out.put_u32_le(m.level);
            out.put_u64_le(m.index);
            out.put_u16_le(m.children.len() as u16);
            for d in &m.children {
                out.put_slice(&d.0);
            }
        }
        Message::Data(d) => {
            out.put_u64_le(d.seq.0);
            out.put_u64_le(d.index);
            out.put_u32_le(d.page_bytes() as u32);
            for page in &d.pages {
                out.put_slice(&page[..]);
            }
        }
        Message::ViewChange(v) => {
            out.put_u64_le(v.view.0);
            out.put_u64_le(v.stable.0);
            out.put_u16_le(v.checkpoints.len() as u16);
            for (n, d) in &v.checkpoints {
                out.put_u64_le(n.0);
                out.put_slice(&d.0);
            }
            for set in [&v.prepared, &v.pre_prepared] {
                out.put_u16_le(set.len() as u16);
                for e in set {
                    out.put_u64_le(e.seq.0);
                    out.put_slice(&e.digest.0);
                    out.put_u64_le(e.view.0);
                }
            }
        }
        Message::ViewChangeAck(a) => {
            out.put_u64_le(a.view.0);
            out.put_u16_le(a.replica.0);
            out.put_slice(&a.digest.0);
        }
        Message::NewView(nv) => {
            out.put_u64_le(nv.view.0);
            out.put_u16_le(nv.view_changes.len() as u16);
            for (r, d) in &nv.view_changes {
                out.put_u16_le(r.0);
                out.put_slice(&d.0);
            }
        }
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid("boolean")),
        }
    }
    fn digest(&mut self) -> Result<Digest, WireError> {
        let mut d = [0u8; 32];
        d.copy_from_slice(self.take(32)?);
        Ok(Digest(d))
    }
    /// Length-prefixed bytes, as a zero-copy slice of `whole`.
    fn bytes(&mut self, whole: &Bytes, base: usize) -> Result<Bytes, WireError> {
        let len = self.u32()? as usize;
        let start = self.pos;
        self.take(len)?;
        Ok(whole.slice(base + start..base + start + len))
    }
    fn finish(&self) -> Result<(), WireError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(WireError::Trailing)
        }
    }
}

/// Decodes one datagram. `max_len` is the configured message size limit.
pub fn decode(raw: Bytes, max_len: usize) -> Result<Envelope, WireError> {
    if raw.len() > max_len {
        return Err(WireError::Oversized);
    }
    let mut r = Reader { buf: &raw, pos: 0 };
    if r.take(2)? != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    let kind = Kind::from_u8(r.u8()?)?;
    let sender = match r.u8()? {
        0 => {
            let id = r.u32()?;
            let id = u16::try_from(id).map_err(|_| WireError::Invalid("replica id"))?;
            NodeId::Replica(ReplicaId(id))
        }
        1 => NodeId::Client(ClientId(r.u32()?)),
        _ => return Err(WireError::Invalid("sender tag")),
    };
    let body_len = r.u32()? as usize;
    let body_start = r.pos;
    let body = r.take(body_len)?;
    let authenticated_len = r.pos;
    let tag_count = r.u8()? as usize;
    let mut tags = Vec::with_capacity(tag_count);
    for _ in 0..tag_count {
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(r.take(TAG_LEN)?);
        tags.push(t);
    }
    r.finish()?;
    let mut br = Reader { buf: body, pos: 0 };
    let message = decode_body(kind, &mut br, &raw, body_start)?;
    br.finish()?;
    let auth_digest = auth_digest(&message, &raw[..authenticated_len]);
    Ok(Envelope { sender, message, auth_digest, tags, raw })
}

fn decode_body(kind: Kind, r: &mut Reader<'_>, whole: &Bytes, base: usize) -> Result<Message, WireError> {
    Ok(match kind {
        Kind::Request => {
            let client = ClientId(r.u32()?);
            let timestamp = Timestamp(r.u64()?);
            let read_only = r.bool()?;
            let replier = match r.u16()? {
                u16::MAX => None,
                id => Some(ReplicaId(id)),
            };
            let op = r.bytes(whole, base)?;
            Message::Request(Request { client, timestamp, read_only, replier, op })
        }
        Kind::Reply => {
            let view = View(r.u64()?);
            let timestamp = Timestamp(r.u64()?);
            let client = ClientId(r.u32()?);
            let tentative = r.bool()?;
            let body = match r.u8()? {
                0 => ReplyBody::Full(r.bytes(whole, base)?),
                1 => ReplyBody::Digest(r.digest()?),
                _ => return Err(WireError::Invalid("reply body tag")),
            };
            Message::Reply(Reply { view, timestamp, client, tentative, body })
        }
        Kind::PrePrepare => {
            let view = View(r.u64()?);
            let seq = SeqNo(r.u64()?);
            let nondet_time_us = r.u64()?;
            let count = r.u16()? as usize;
            if count > MAX_LIST {
                return Err(WireError::Invalid("batch too long"));
            }
            let mut entries = Vec::with_capacity(count.min(256));
            for _ in 0..count {
                entries.push(match r.u8()? {
                    0 => BatchEntry::Inline(r.bytes(whole, base)?),
                    1 => BatchEntry::ByDigest(r.digest()?),
                    _ => return Err(WireError::Invalid("batch entry tag")),
                });
            }
            Message::PrePrepare(PrePrepare { view, seq, nondet_time_us, entries })
        }
        Kind::Prepare | Kind::Commit => {
            let view = View(r.u64()?);
            let seq = SeqNo(r.u64()?);
            let digest = r.digest()?;
            if kind == Kind::Prepare {
                Message::Prepare(Prepare { view, seq, digest })
            } else {
                Message::Commit(Commit { view, seq, digest })
            }
        }
        Kind::Checkpoint => Message::Checkpoint(Checkpoint { seq: SeqNo(r.u64()?), state_digest: r.digest()? }),
        Kind::Status => {
            let view = View(r.u64()?);
            let view_active = r.bool()?;
            let stable = SeqNo(r.u64()?);
            let first_open = SeqNo(r.u64()?);
            let last_executed = SeqNo(r.u64()?);
            let n = r.u16()? as usize;
            if n > MAX_LIST {
                return Err(WireError::Invalid("status too long"));
            }
            let slots = r.take(n)?.to_vec();
            if slots.iter().any(|f| f & !slot_flags::ALL != 0) {
                return Err(WireError::Invalid("status flags"));
            }
            let m = r.u16()? as usize;
            if m > MAX_LIST {
                return Err(WireError::Invalid("status too long"));
            }
            let mut missing_requests = Vec::with_capacity(m.min(64));
            for _ in 0..m {
                missing_requests.push(r.digest()?);
            }
            Message::Status(Status { view, view_active, stable, first_open, last_executed, slots, missing_requests })
        }
        Kind::Fetch => Message::Fetch(Fetch { seq: SeqNo(r.u64()?), level: r.u32()?, index: r.u64()?, count: r.u16()? }),
        Kind::MetaData => {
            let seq = SeqNo(r.u64()?);
            let level = r.u32()?;
            let index = r.u64()?;
            let n = r.u16()? as usize;
            if n > MAX_LIST {
                return Err(WireError::Invalid("too many children"));
            }
            let mut children = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                children.push(r.digest()?);
            }
            Message::MetaData(MetaData { seq, level, index, children })
        }
        Kind::Data => {
            let (seq, index) = (SeqNo(r.u64()?), r.u64()?);
            let len = r.u32()? as usize;
            Message::Data(Data::from_bytes(seq, index, r.take(len)?).ok_or(WireError::Invalid("DATA of a part of a page"))?)
        }
        Kind::ViewChange => {
            let view = View(r.u64()?);
            let stable = SeqNo(r.u64()?);
            let n = r.u16()? as usize;
            if n > MAX_VC_CHECKPOINTS {
                return Err(WireError::Invalid("too many checkpoints"));
            }
            let mut checkpoints = Vec::with_capacity(n);
            for _ in 0..n {
                checkpoints.push((SeqNo(r.u64()?), r.digest()?));
            }
            let mut sets = [Vec::new(), Vec::new()];
            for set in &mut sets {
                let n = r.u16()? as usize;
                if n > MAX_LIST {
                    return Err(WireError::Invalid("view-change set too long"));
                }
                set.reserve(n.min(512));
                for _ in 0..n {
                    set.push(VcEntry { seq: SeqNo(r.u64()?), digest: r.digest()?, view: View(r.u64()?) });
                }
            }
            let [prepared, pre_prepared] = sets;
            Message::ViewChange(ViewChange { view, stable, checkpoints, prepared, pre_prepared })
        }
        Kind::ViewChangeAck => {
            Message::ViewChangeAck(ViewChangeAck { view: View(r.u64()?), replica: ReplicaId(r.u16()?), digest: r.digest()? })
        }
        Kind::NewView => {
            let view = View(r.u64()?);
            let n = r.u16()? as usize;
            if n > MAX_LIST {
                return Err(WireError::Invalid("new-view set too long"));
            }
            let mut view_changes = Vec::with_capacity(n.min(256));
            for _ in 0..n {
                view_changes.push((ReplicaId(r.u16()?), r.digest()?));
            }
            Message::NewView(NewView { view, view_changes })
        }
    })
}

#[cfg(test)]
mod tests;
