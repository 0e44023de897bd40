//! The durable log: what a replica must have on disk before it may speak.
//!
//! Every change to a replica's message log (a batch accepted, a PREPARE or
//! COMMIT received or sent, a slot prepared or committed, a view's choices,
//! truncation) and every change of view is a [`Record`]. After each input the
//! replica hands its new records to the host in one [`crate::Effect::Persist`],
//! and the host makes them durable before it sends any datagram that the same
//! input produced (see [`crate::host::carry_out`]). A replica restarted from
//! its saved checkpoint and these records ([`crate::Replica::recover`]) has the
//! log, the view and the messages it had before the crash: it never
//! contradicts what it said, and what it committed executes again.
//!
//! Records are opaque to hosts: they store [`Record::encode`]'s bytes and give
//! back [`Record::decode`]'s result. Decoding never panics; a damaged record
//! is an error, and the host then discards the whole journal.

use bytes::Bytes;

use crate::types::{Digest, ReplicaId, SeqNo, View};

/// One change a replica made, to replay after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record(pub(crate) Entry);

/// A request of a batch as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JournalRequest {
    pub digest: Digest,
    /// The client's envelope, once known.
    pub body: Option<Bytes>,
    pub authenticated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A pre-prepared batch accepted at `seq` (sent as primary, or received).
    Accept {
        seq: SeqNo,
        view: View,
        digest: Digest,
        nondet_time_us: u64,
        nondet_ok: bool,
        raw: Bytes,
        requests: Vec<JournalRequest>,
    },
    /// A PREPARE (`commit` false) or COMMIT received from `from`, or sent.
    Vote { seq: SeqNo, commit: bool, from: ReplicaId, view: View, digest: Digest },
    /// This replica's own PREPARE or COMMIT for the slot's batch, as sent.
    Sent { seq: SeqNo, commit: bool, me: ReplicaId, raw: Bytes },
    /// The slot's batch prepared here.
    Prepared { seq: SeqNo },
    /// The slot's batch committed here.
    Committed { seq: SeqNo },
    /// 2f+1 COMMITs certified batch `digest` of `view` here.
    AdoptCertified { seq: SeqNo, view: View, digest: Digest },
    /// A NEW-VIEW re-proposed `digest` here in `view`.
    Repropose { seq: SeqNo, view: View, digest: Digest, executed: bool },
    /// The body of a batch known by digest, from its pre-prepare.
    FillBatch { seq: SeqNo, nondet_time_us: u64, raw: Bytes, requests: Vec<JournalRequest> },
    /// A request body for the batch at `seq`.
    FillRequest { seq: SeqNo, digest: Digest, raw: Bytes, authenticated: bool },
    /// The low water mark moved to `seq` (a stable checkpoint).
    AdvanceTo { seq: SeqNo },
    /// Slots up to `seq` were replaced by a fetched state.
    DiscardThrough { seq: SeqNo },
    /// Slots above `seq` were dropped by a new view.
    DiscardAbove { seq: SeqNo },
    /// The batch at `seq` waits for the body of `digest` (`arrived` false), or
    /// no longer does.
    Awaited { seq: SeqNo, digest: Digest, arrived: bool },
    /// This replica left its view and sent this VIEW-CHANGE.
    ViewChangeSent { raw: Bytes },
    /// This replica installed `view` (view 0, which needs no NEW-VIEW, or a
    /// log written before [`Entry::NewViewInstalled`] existed).
    ViewInstalled { view: View },
    /// This replica installed the view of this NEW-VIEW, whose VIEW-CHANGE
    /// messages are `view_changes`: restarted, it still hands them to a
    /// replica that did not see the view installed, as it did before.
    NewViewInstalled { raw: Bytes, view_changes: Vec<Bytes> },
}

/// Why a journal record could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("record ends early")]
    Truncated,
    #[error("unknown record tag {0}")]
    BadTag(u8),
    #[error("trailing bytes after a record")]
    Trailing,
    #[error("a list longer than any replica writes")]
    TooLong,
}

/// Most requests a batch record holds: more than any wire batch.
const MAX_REQUESTS: usize = crate::wire::MAX_LIST;

impl Record {
    /// Whether a datagram produced with this record may depend on it, so that
    /// the host must make it durable before that datagram leaves.
    ///
    /// Three kinds of record need not wait: a COMMIT received, a slot
    /// committed, and a batch adopted on 2f+1 COMMITs. Nothing this replica
    /// says rests on them alone. A COMMIT's sender sent it only once its own
    /// prepared certificate was durable, so 2f+1 COMMITs leave f+1 correct
    /// replicas that keep the batch through any crash and any view change;
    /// a replica that forgets having seen them learns the batch again from
    /// those replicas, and executes the same batch at the same sequence
    /// number. Its own COMMIT, PREPARE and pre-prepare, and the certificate
    /// they rest on, always wait. The host still writes these three kinds
    /// with the rest of the turn; only the `fdatasync` can come later (the
    /// next one covers them), which takes one sync per batch off every
    /// replica's disk under durability "power".
    pub fn gates_sends(&self) -> bool {
        !matches!(
            self.0,
            Entry::Vote { commit: true, .. } | Entry::Committed { .. } | Entry::AdoptCertified { .. }
        )
    }

    /// The record's bytes (the host adds its own framing and checksum).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(64);
        match &self.0 {
            Entry::Accept { seq, view, digest, nondet_time_us, nondet_ok, raw, requests } => {
                w.push(1);
                put_u64(&mut w, seq.0);
                put_u64(&mut w, view.0);
                w.extend_from_slice(&digest.0);
                put_u64(&mut w, *nondet_time_us);
                w.push(*nondet_ok as u8);
                put_bytes(&mut w, raw);
                put_requests(&mut w, requests);
            }
            Entry::Vote { seq, commit, from, view, digest } => {
                w.push(2);
                put_u64(&mut w, seq.0);
                w.push(*commit as u8);
                w.extend_from_slice(&from.0.to_le_bytes());
                put_u64(&mut w, view.0);
                w.extend_from_slice(&digest.0);
            }
            Entry::Sent { seq, commit, me, raw } => {
                w.push(3);
                put_u64(&mut w, seq.0);
                w.push(*commit as u8);
                w.extend_from_slice(&me.0.to_le_bytes());
                put_bytes(&mut w, raw);
            }
            Entry::Prepared { seq } => {
                w.push(4);
                put_u64(&mut w, seq.0);
            }
            Entry::Committed { seq } => {
                w.push(5);
                put_u64(&mut w, seq.0);
            }
            Entry::AdoptCertified { seq, view, digest } => {
                w.push(6);
                put_u64(&mut w, seq.0);
                put_u64(&mut w, view.0);
                w.extend_from_slice(&digest.0);
            }
            Entry::Repropose { seq, view, digest, executed } => {
                w.push(7);
                put_u64(&mut w, seq.0);
                put_u64(&mut w, view.0);
                w.extend_from_slice(&digest.0);
                w.push(*executed as u8);
            }
            Entry::FillBatch { seq, nondet_time_us, raw, requests } => {
                w.push(8);
                put_u64(&mut w, seq.0);
                put_u64(&mut w, *nondet_time_us);
                put_bytes(&mut w, raw);
                put_requests(&mut w, requests);
            }
            Entry::FillRequest { seq, digest, raw, authenticated } => {
                w.push(9);
                put_u64(&mut w, seq.0);
                w.extend_from_slice(&digest.0);
                put_bytes(&mut w, raw);
                w.push(*authenticated as u8);
            }
            Entry::AdvanceTo { seq } => {
                w.push(10);
                put_u64(&mut w, seq.0);
            }
            Entry::DiscardThrough { seq } => {
                w.push(11);
                put_u64(&mut w, seq.0);
            }
            Entry::DiscardAbove { seq } => {
                w.push(12);
                put_u64(&mut w, seq.0);
            }
            Entry::Awaited { seq, digest, arrived } => {
                w.push(13);
                put_u64(&mut w, seq.0);
                w.extend_from_slice(&digest.0);
                w.push(*arrived as u8);
            }
            Entry::ViewChangeSent { raw } => {
                w.push(14);
                put_bytes(&mut w, raw);
            }
            Entry::ViewInstalled { view } => {
                w.push(15);
                put_u64(&mut w, view.0);
            }
            Entry::NewViewInstalled { raw, view_changes } => {
                w.push(16);
                put_bytes(&mut w, raw);
                w.extend_from_slice(&(view_changes.len() as u32).to_le_bytes());
                for vc in view_changes {
                    put_bytes(&mut w, vc);
                }
            }
        }
        w
    }

    /// A record from [`Record::encode`]'s bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Record, JournalError> {
        let whole = Bytes::copy_from_slice(bytes);
        let mut r = Reader { buf: &whole, pos: 0 };
        let entry = match r.u8()? {
            1 => Entry::Accept {
                seq: r.seq()?,
                view: View(r.u64()?),
                digest: r.digest()?,
                nondet_time_us: r.u64()?,
                nondet_ok: r.bool()?,
                raw: r.bytes()?,
                requests: r.requests()?,
            },
            2 => Entry::Vote {
                seq: r.seq()?,
                commit: r.bool()?,
                from: r.replica()?,
                view: View(r.u64()?),
                digest: r.digest()?,
            },
            3 => Entry::Sent { seq: r.seq()?, commit: r.bool()?, me: r.replica()?, raw: r.bytes()? },
            4 => Entry::Prepared { seq: r.seq()? },
            5 => Entry::Committed { seq: r.seq()? },
            6 => Entry::AdoptCertified { seq: r.seq()?, view: View(r.u64()?), digest: r.digest()? },
            7 => Entry::Repropose { seq: r.seq()?, view: View(r.u64()?), digest: r.digest()?, executed: r.bool()? },
            8 => Entry::FillBatch {
                seq: r.seq()?,
                nondet_time_us: r.u64()?,
                raw: r.bytes()?,
                requests: r.requests()?,
            },
            9 => Entry::FillRequest { seq: r.seq()?, digest: r.digest()?, raw: r.bytes()?, authenticated: r.bool()? },
            10 => Entry::AdvanceTo { seq: r.seq()? },
            11 => Entry::DiscardThrough { seq: r.seq()? },
            12 => Entry::DiscardAbove { seq: r.seq()? },
            13 => Entry::Awaited { seq: r.seq()?, digest: r.digest()?, arrived: r.bool()? },
            14 => Entry::ViewChangeSent { raw: r.bytes()? },
            15 => Entry::ViewInstalled { view: View(r.u64()?) },
            16 => {
                let raw = r.bytes()?;
                let count = r.u32()? as usize;
                if count > MAX_REQUESTS {
                    return Err(JournalError::TooLong);
                }
                let view_changes = (0..count).map(|_| r.bytes()).collect::<Result<_, _>>()?;
                Entry::NewViewInstalled { raw, view_changes }
            }
            tag => return Err(JournalError::BadTag(tag)),
        };
        if r.pos != whole.len() {
            return Err(JournalError::Trailing);
        }
        Ok(Record(entry))
    }
}

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&(b.len() as u32).to_le_bytes());
    w.extend_from_slice(b);
}

fn put_requests(w: &mut Vec<u8>, requests: &[JournalRequest]) {
    w.extend_from_slice(&(requests.len() as u32).to_le_bytes());
    for q in requests {
        w.extend_from_slice(&q.digest.0);
        w.push(q.authenticated as u8);
        match &q.body {
            Some(b) => {
                w.push(1);
                put_bytes(w, b);
            }
            None => w.push(0),
        }
    }
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], JournalError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(JournalError::Truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, JournalError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, JournalError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(JournalError::BadTag(t)),
        }
    }
    fn u32(&mut self) -> Result<u32, JournalError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, JournalError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn seq(&mut self) -> Result<SeqNo, JournalError> {
        Ok(SeqNo(self.u64()?))
    }
    fn replica(&mut self) -> Result<ReplicaId, JournalError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(ReplicaId(u16::from_le_bytes(b)))
    }
    fn digest(&mut self) -> Result<Digest, JournalError> {
        let mut d = [0u8; 32];
        d.copy_from_slice(self.take(32)?);
        Ok(Digest(d))
    }
    fn bytes(&mut self) -> Result<Bytes, JournalError> {
        let len = self.u32()? as usize;
        let start = self.pos;
        self.take(len)?;
        Ok(self.buf.slice(start..start + len))
    }
    fn requests(&mut self) -> Result<Vec<JournalRequest>, JournalError> {
        let count = self.u32()? as usize;
        if count > MAX_REQUESTS {
            return Err(JournalError::TooLong);
        }
        let mut out = Vec::with_capacity(count.min(256));
        for _ in 0..count {
            let digest = self.digest()?;
            let authenticated = self.bool()?;
            let body = if self.bool()? { Some(self.bytes()?) } else { None };
            out.push(JournalRequest { digest, body, authenticated });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Record> {
        let d = Digest([7; 32]);
        let req = JournalRequest { digest: d, body: Some(Bytes::from_static(b"request")), authenticated: true };
        let pending = JournalRequest { digest: Digest([8; 32]), body: None, authenticated: false };
        [
            Entry::Accept {
                seq: SeqNo(5),
                view: View(2),
                digest: d,
                nondet_time_us: 99,
                nondet_ok: true,
                raw: Bytes::from_static(b"pre-prepare"),
                requests: vec![req.clone(), pending.clone()],
            },
            Entry::Vote { seq: SeqNo(5), commit: true, from: ReplicaId(3), view: View(2), digest: d },
            Entry::Sent { seq: SeqNo(5), commit: false, me: ReplicaId(1), raw: Bytes::from_static(b"prepare") },
            Entry::Prepared { seq: SeqNo(5) },
            Entry::Committed { seq: SeqNo(5) },
            Entry::AdoptCertified { seq: SeqNo(6), view: View(3), digest: d },
            Entry::Repropose { seq: SeqNo(6), view: View(4), digest: d, executed: true },
            Entry::FillBatch { seq: SeqNo(6), nondet_time_us: 5, raw: Bytes::new(), requests: vec![pending] },
            Entry::FillRequest { seq: SeqNo(6), digest: d, raw: Bytes::from_static(b"body"), authenticated: false },
            Entry::AdvanceTo { seq: SeqNo(128) },
            Entry::DiscardThrough { seq: SeqNo(256) },
            Entry::DiscardAbove { seq: SeqNo(300) },
            Entry::Awaited { seq: SeqNo(7), digest: d, arrived: true },
            Entry::ViewChangeSent { raw: Bytes::from_static(b"view-change") },
            Entry::ViewInstalled { view: View(9) },
            Entry::NewViewInstalled {
                raw: Bytes::from_static(b"new-view"),
                view_changes: vec![Bytes::from_static(b"vc-1"), Bytes::from_static(b"vc-2")],
            },
        ]
        .into_iter()
        .map(Record)
        .collect()
    }

    #[test]
    fn every_record_kind_round_trips() {
        for r in samples() {
            assert_eq!(Record::decode(&r.encode()), Ok(r.clone()), "{r:?}");
        }
    }

    #[test]
    fn a_record_cut_short_or_extended_is_an_error() {
        for r in samples() {
            let bytes = r.encode();
            for cut in 0..bytes.len() {
                assert!(Record::decode(&bytes[..cut]).is_err(), "{r:?} cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(Record::decode(&longer), Err(JournalError::Trailing));
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Record::decode(&bytes);
        }
    }
}
