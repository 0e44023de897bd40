//! One BFT request per NFS call: the procedure, the AUTH_UNIX credential and
//! the XDR arguments exactly as the client sent them; and the reply: the RPC
//! accept status followed by the procedure's XDR result.
//!
//! ```text
//! request: proc u32 | uid u32 | gid u32 | ngids u32 (≤ 16) | gids | XDR args
//! reply:   accept_stat u32 | XDR result (when the status is SUCCESS)
//! ```
//! All numbers big-endian, as in XDR. The credential is what the relay read
//! from the call; the replicas trust it as an NFS server trusts AUTH_UNIX, and
//! the relay is authenticated to them by its client key.

/// AUTH_UNIX allows at most 16 supplementary groups.
pub const MAX_GIDS: usize = 16;
/// The uid and gid of the anonymous user (AUTH_NULL, squashed root).
pub const NOBODY: u32 = 65534;

/// The caller's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

impl Cred {
    pub fn root() -> Cred {
        Cred { uid: 0, gid: 0, gids: Vec::new() }
    }
    pub fn nobody() -> Cred {
        Cred { uid: NOBODY, gid: NOBODY, gids: Vec::new() }
    }
    /// Whether the caller is in group `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.gids.contains(&gid)
    }
}

/// RPC accept_stat values the service returns.
pub const SUCCESS: u32 = 0;
pub const PROC_UNAVAIL: u32 = 3;
pub const GARBAGE_ARGS: u32 = 4;
pub const SYSTEM_ERR: u32 = 5;

/// Builds a request.
pub fn encode(proc_: u32, cred: &Cred, args: &[u8]) -> Vec<u8> {
    let gids = &cred.gids[..cred.gids.len().min(MAX_GIDS)];
    let mut out = Vec::with_capacity(16 + 4 * gids.len() + args.len());
    for v in [proc_, cred.uid, cred.gid, gids.len() as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for g in gids {
        out.extend_from_slice(&g.to_be_bytes());
    }
    out.extend_from_slice(args);
    out
}

/// Splits a request into (procedure, credential, arguments); None when it is
/// malformed.
pub fn decode(op: &[u8]) -> Option<(u32, Cred, &[u8])> {
    let word = |i: usize| op.get(i * 4..i * 4 + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let (proc_, uid, gid, n) = (word(0)?, word(1)?, word(2)?, word(3)? as usize);
    if n > MAX_GIDS {
        return None;
    }
    let gids = (0..n).map(|i| word(4 + i)).collect::<Option<Vec<u32>>>()?;
    Some((proc_, Cred { uid, gid, gids }, &op[16 + 4 * n..]))
}

/// Whether NFSv3 procedure `proc_` only reads: it then goes as a read-only
/// request (GETATTR, LOOKUP, ACCESS, READLINK, READ, READDIR, READDIRPLUS,
/// FSSTAT, FSINFO, PATHCONF).
pub fn is_read_only(proc_: u32) -> bool {
    matches!(proc_, 1 | 3 | 4 | 5 | 6 | 16..=20)
}

/// A bounds-checked XDR reader for what is parsed by hand.
pub struct Xdr<'a>(pub &'a [u8]);

impl<'a> Xdr<'a> {
    pub fn u32(&mut self) -> Option<u32> {
        let (b, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*b))
    }
    pub fn opaque(&mut self, max: usize) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        let padded = len.checked_add(3)? & !3;
        if len > max || padded > self.0.len() {
            return None;
        }
        let (body, rest) = self.0.split_at(padded);
        self.0 = rest;
        Some(&body[..len])
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }
    /// Skips an optional value of `n` bytes (a bool, then the value if true).
    fn option(&mut self, n: usize) -> Option<()> {
        if self.u32()? != 0 {
            self.skip(n)?;
        }
        Some(())
    }
    /// Skips a sattr3.
    fn sattr(&mut self) -> Option<()> {
        for n in [4, 4, 4, 8] {
            self.option(n)?;
        }
        for _ in 0..2 {
            if self.u32()? == 2 {
                self.skip(8)?;
            }
        }
        Some(())
    }
}

/// Whether every variable-length field of NFSv3 procedure `proc_`'s
/// arguments declares a length that the bytes can hold. nfs3_types allocates
/// a declared length before it reads, so a forged 4 GiB length must be
/// refused before decoding, not by it.
pub fn lengths_plausible(proc_: u32, args: &[u8]) -> bool {
    lengths(proc_, args).is_some()
}

fn lengths(proc_: u32, args: &[u8]) -> Option<()> {
    let mut x = Xdr(args);
    let any = usize::MAX;
    x.opaque(64)?;
    match proc_ {
        3 | 12 | 13 => {
            x.opaque(any)?;
        }
        7 => {
            x.skip(16)?;
            x.opaque(any)?;
        }
        8 => {
            x.opaque(any)?;
        }
        9 | 11 => {
            x.opaque(any)?;
        }
        10 => {
            x.opaque(any)?;
            x.sattr()?;
            x.opaque(any)?;
        }
        14 => {
            x.opaque(any)?;
            x.opaque(64)?;
            x.opaque(any)?;
        }
        15 => {
            x.opaque(64)?;
            x.opaque(any)?;
        }
        _ => {}
    }
    Some(())
}

/// Splits a reply into (accept_stat, result).
pub fn split_reply(reply: &[u8]) -> Option<(u32, &[u8])> {
    let b = reply.get(..4)?;
    Some((u32::from_be_bytes([b[0], b[1], b[2], b[3]]), &reply[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed() {
        let cred = Cred { uid: 1000, gid: 100, gids: vec![4, 24, 27] };
        let op = encode(7, &cred, b"args");
        assert_eq!(decode(&op), Some((7, cred, &b"args"[..])));
        assert_eq!(decode(&op[..10]), None);
        let mut many = encode(1, &Cred::root(), b"");
        many[12..16].copy_from_slice(&17u32.to_be_bytes());
        assert_eq!(decode(&many), None, "more than 16 groups");
        many[12..16].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(decode(&many), None, "groups missing");
    }
}
