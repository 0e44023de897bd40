//! The relay: ONC RPC over TCP (record marking, RFC 5531) for unmodified NFS
//! clients. NFSv3, MOUNT v3 and PORTMAP v2 share one port.
//!
//! Each NFS call becomes ONE request to the backend pool: (procedure,
//! AUTH_UNIX credential, XDR arguments as received); the reply the replicas
//! computed goes back under the client's xid. MOUNT and PORTMAP are answered
//! here: the root handle is fixed (inode 1, generation 1) and the relay knows
//! its own port. Calls of one connection are handed to the pool as they
//! arrive and answered as they complete (pipelining); the pool's bounded
//! queue holds a connection back when the cluster is busy.
//!
//! Nothing a client sends panics the relay: a record over [`MAX_RECORD`]
//! closes the connection; a malformed call header is dropped or answered with
//! GARBAGE_ARGS or AUTH_BADCRED.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nfs3_types::mount::{fhandle3, mountres3, mountres3_ok};
use nfs3_types::portmap::mapping;
use nfs3_types::xdr_codec::{Opaque, Pack};

use crate::backend::{BackendError, Pool};
use crate::nfs::{root_handle, unpack};
use crate::request::{self, Cred, Xdr, NOBODY};

/// Largest RPC record accepted: a 32 KiB WRITE with its headers fits many
/// times over.
pub const MAX_RECORD: usize = 256 * 1024;
const NFS_PROG: u32 = 100_003;
const MOUNT_PROG: u32 = 100_005;
const PMAP_PROG: u32 = 100_000;

/// A relay bound to its port.
pub struct Relay {
    listener: TcpListener,
    pool: Arc<Pool>,
    /// Largest request the backend takes (the cluster's max_op_bytes).
    max_op: usize,
}

impl Relay {
    /// Binds `addr` (port 0 picks one). Formats the file system if it is new,
    /// so that read-only requests never meet an unformatted state.
    pub fn bind(addr: SocketAddr, pool: Arc<Pool>, max_op: usize) -> Result<Relay, RelayError> {
        pool.call(request::encode(crate::PROC_NULL, &Cred::root(), &[]), false)?;
        let listener = TcpListener::bind(addr).map_err(RelayError::Bind)?;
        Ok(Relay { listener, pool, max_op })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, RelayError> {
        self.listener.local_addr().map_err(RelayError::Bind)
    }

    /// Serves connections until `stop` is set.
    pub fn run(&self, stop: &AtomicBool) -> Result<(), RelayError> {
        let port = self.local_addr()?.port();
        self.listener.set_nonblocking(true).map_err(RelayError::Bind)?;
        while !stop.load(Ordering::Relaxed) {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let (pool, max_op) = (self.pool.clone(), self.max_op);
                    std::thread::spawn(move || {
                        if let Err(e) = serve_connection(stream, &pool, port, max_op) {
                            tracing::debug!(error = %e, "connection closed");
                        }
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("binding the relay's port: {0}")]
    Bind(std::io::Error),
    #[error("formatting the file system: {0}")]
    Backend(#[from] BackendError),
}

type Writer = Arc<Mutex<TcpStream>>;

fn serve_connection(stream: TcpStream, pool: &Pool, port: u16, max_op: usize) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let writer: Writer = Arc::new(Mutex::new(stream.try_clone()?));
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, stream);
    loop {
        let record = read_record(&mut reader)?;
        handle_call(&record, &writer, pool, port, max_op);
    }
}

/// Reads one record (its fragments joined).
fn read_record(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut record = Vec::new();
    loop {
        let mut h = [0u8; 4];
        r.read_exact(&mut h)?;
        let h = u32::from_be_bytes(h);
        let len = (h & 0x7FFF_FFFF) as usize;
        if record.len() + len > MAX_RECORD {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "RPC record too large"));
        }
        let at = record.len();
        record.resize(at + len, 0);
        r.read_exact(&mut record[at..])?;
        if h & 0x8000_0000 != 0 {
            return Ok(record);
        }
    }
}

fn send(writer: &Writer, reply: &[u8]) {
    let mut framed = Vec::with_capacity(4 + reply.len());
    framed.extend_from_slice(&(0x8000_0000u32 | reply.len() as u32).to_be_bytes());
    framed.extend_from_slice(reply);
    if let Ok(mut w) = writer.lock() {
        // A client that went away: its reader sees the error and ends.
        let _ = w.write_all(&framed);
    }
}

/// A parsed call header.
struct Header<'a> {
    xid: u32,
    prog: u32,
    vers: u32,
    proc_: u32,
    cred: Option<Cred>,
    args: &'a [u8],
}

/// Parses an AUTH_UNIX body: stamp, machine name, uid, gid, groups.
fn auth_unix(body: &[u8]) -> Option<Cred> {
    let mut x = Xdr(body);
    x.u32()?;
    x.opaque(255)?;
    let (uid, gid, n) = (x.u32()?, x.u32()?, x.u32()? as usize);
    if n > request::MAX_GIDS {
        return None;
    }
    let gids = (0..n).map(|_| x.u32()).collect::<Option<Vec<u32>>>()?;
    Some(Cred { uid, gid, gids })
}

/// None when the record is no RPC call at all (it is dropped).
fn parse_call(record: &[u8]) -> Option<Header<'_>> {
    let mut x = Xdr(record);
    let xid = x.u32()?;
    if x.u32()? != 0 || x.u32()? != 2 {
        return None;
    }
    let (prog, vers, proc_) = (x.u32()?, x.u32()?, x.u32()?);
    let flavor = x.u32()?;
    let body = x.opaque(400)?;
    x.u32()?;
    x.opaque(400)?;
    let cred = match flavor {
        0 => Some(Cred { uid: NOBODY, gid: NOBODY, gids: Vec::new() }),
        1 => auth_unix(body),
        _ => None,
    };
    Some(Header { xid, prog, vers, proc_, cred, args: x.0 })
}

/// The RPC reply header of an accepted call with status `stat`.
fn accepted(xid: u32, stat: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(256);
    for w in [xid, 1, 0, 0, 0, stat] {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v
}

fn handle_call(record: &[u8], writer: &Writer, pool: &Pool, port: u16, max_op: usize) {
    let Some(h) = parse_call(record) else { return };
    let Some(cred) = h.cred.clone() else {
        // MSG_DENIED, AUTH_ERROR, AUTH_BADCRED.
        let mut v = Vec::new();
        for w in [h.xid, 1, 1, 1, 1] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        return send(writer, &v);
    };
    let reply = match (h.prog, h.vers) {
        (NFS_PROG, 3) if h.proc_ == 0 => accepted(h.xid, request::SUCCESS),
        (NFS_PROG, 3) => {
            let op = request::encode(h.proc_, &cred, h.args);
            if op.len() > max_op {
                return send(writer, &accepted(h.xid, request::GARBAGE_ARGS));
            }
            let (xid, proc_, writer) = (h.xid, h.proc_, writer.clone());
            tracing::trace!(proc_, bytes = op.len(), "nfs call");
            return pool.submit(
                op,
                request::is_read_only(proc_),
                Box::new(move |r| send(&writer, &nfs_reply(xid, proc_, r))),
            );
        }
        (MOUNT_PROG, 3) => mount(&h, pool),
        (PMAP_PROG, 2) => portmap(&h, port),
        (NFS_PROG | MOUNT_PROG, _) | (PMAP_PROG, _) => {
            let (low, high) = if h.prog == PMAP_PROG { (2, 2) } else { (3, 3) };
            let mut v = accepted(h.xid, 2);
            v.extend_from_slice(&u32::to_be_bytes(low));
            v.extend_from_slice(&u32::to_be_bytes(high));
            v
        }
        _ => accepted(h.xid, 1),
    };
    send(writer, &reply);
}

/// The reply to an NFS call from the backend's result. When the cluster gave
/// no result in time, NFS3ERR_JUKEBOX tells the client to try again later,
/// with its failure body: as many absent attribute words as the procedure's
/// resfail has.
fn nfs_reply(xid: u32, proc_: u32, r: Result<Vec<u8>, BackendError>) -> Vec<u8> {
    match r.as_deref().ok().and_then(request::split_reply) {
        Some((stat, body)) => {
            let mut v = accepted(xid, stat);
            v.extend_from_slice(body);
            v
        }
        None => {
            if let Err(e) = &r {
                tracing::warn!(error = %e, proc_, "no result from the backend; answering JUKEBOX");
            }
            let words = match proc_ {
                1 => 0,
                3..=6 | 16..=20 => 1,
                15 => 3,
                14 => 4,
                _ => 2,
            };
            let mut v = accepted(xid, request::SUCCESS);
            v.extend_from_slice(&10008u32.to_be_bytes());
            v.resize(v.len() + 4 * words, 0);
            v
        }
    }
}

fn pack_after(mut v: Vec<u8>, body: &impl Pack) -> Vec<u8> {
    let _ = body.pack(&mut v);
    v
}

/// The handle of the directory at `path` below the root, found by LOOKUPs
/// (as root: what may be mounted is not the caller's business here).
fn resolve_path(pool: &Pool, path: &[u8]) -> Option<nfs3_types::nfs3::nfs_fh3> {
    use nfs3_types::nfs3::{diropargs3, filename3, ftype3, LOOKUP3args, LOOKUP3res, Nfs3Option, Nfs3Result};
    let mut fh = root_handle();
    for name in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
        let args = LOOKUP3args { what: diropargs3 { dir: fh, name: filename3(Opaque::borrowed(name)) } };
        let mut a = Vec::new();
        args.pack(&mut a).ok()?;
        let reply = pool.call(request::encode(3, &Cred::root(), &a), true).ok()?;
        let (_, body) = request::split_reply(&reply)?;
        match unpack::<LOOKUP3res>(body)? {
            Nfs3Result::Ok(ok) => match ok.obj_attributes {
                Nfs3Option::Some(attr) if attr.type_ == ftype3::NF3DIR => fh = ok.object,
                _ => return None,
            },
            Nfs3Result::Err(_) => return None,
        }
    }
    Some(fh)
}

fn mount(h: &Header<'_>, pool: &Pool) -> Vec<u8> {
    let ok = accepted(h.xid, request::SUCCESS);
    match h.proc_ {
        // NULL, UMNT, UMNTALL: nothing to say.
        0 | 3 | 4 => ok,
        1 => {
            let mut x = Xdr(h.args);
            let Some(path) = x.opaque(1024) else {
                return accepted(h.xid, request::GARBAGE_ARGS);
            };
            let Some(fh) = resolve_path(pool, path) else {
                return pack_after(ok, &mountres3::Err(nfs3_types::mount::mountstat3::MNT3ERR_NOENT));
            };
            let res =
                mountres3::Ok(mountres3_ok { fhandle: fhandle3(Opaque::borrowed(&fh.data)), auth_flavors: vec![1, 0] });
            pack_after(ok, &res)
        }
        // DUMP: no mount list is kept.
        2 => pack_after(ok, &false),
        // EXPORT: "/" to everyone.
        5 => {
            let mut v = ok;
            for w in [1u32, 1, u32::from(b'/') << 24, 0, 0] {
                v.extend_from_slice(&w.to_be_bytes());
            }
            v
        }
        _ => accepted(h.xid, 3),
    }
}

fn portmap(h: &Header<'_>, port: u16) -> Vec<u8> {
    let ok = accepted(h.xid, request::SUCCESS);
    let ours = |prog| prog == NFS_PROG || prog == MOUNT_PROG || prog == PMAP_PROG;
    match h.proc_ {
        0 => ok,
        3 => match unpack::<mapping>(h.args) {
            Some(m) => {
                let p = if ours(m.prog) && m.prot == nfs3_types::portmap::IPPROTO_TCP { u32::from(port) } else { 0 };
                pack_after(ok, &p)
            }
            None => accepted(h.xid, request::GARBAGE_ARGS),
        },
        4 => {
            let mut v = ok;
            for (prog, vers) in [(PMAP_PROG, 2), (NFS_PROG, 3), (MOUNT_PROG, 3)] {
                let m = mapping { prog, vers, prot: nfs3_types::portmap::IPPROTO_TCP, port: u32::from(port) };
                v = pack_after(pack_after(v, &true), &m);
            }
            pack_after(v, &false)
        }
        _ => accepted(h.xid, 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_headers_never_panic_and_credentials_parse() {
        let mut call = Vec::new();
        let cred_body: Vec<u8> =
            [7u32, 3, u32::from_be_bytes(*b"host"), 1000, 100, 2, 4, 24].iter().flat_map(|w| w.to_be_bytes()).collect();
        for w in [9u32, 0, 2, NFS_PROG, 3, 1, 1, cred_body.len() as u32] {
            call.extend_from_slice(&w.to_be_bytes());
        }
        call.extend_from_slice(&cred_body);
        call.extend_from_slice(&[0; 8]);
        call.extend_from_slice(b"ARGS");
        let h = parse_call(&call).expect("a valid call");
        assert_eq!((h.xid, h.prog, h.vers, h.proc_), (9, NFS_PROG, 3, 1));
        assert_eq!(h.cred, Some(Cred { uid: 1000, gid: 100, gids: vec![4, 24] }));
        assert_eq!(h.args, b"ARGS");
        for cut in 0..call.len() - 4 {
            let _ = parse_call(&call[..cut]);
        }
        let mut huge = call.clone();
        huge[28..32].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_call(&huge).is_none());
    }

    #[test]
    fn records_over_the_limit_are_refused() {
        let mut data = ((MAX_RECORD as u32 + 1) | 0x8000_0000).to_be_bytes().to_vec();
        data.extend_from_slice(&[0; 16]);
        assert!(read_record(&mut &data[..]).is_err());
        let mut two = (0x0000_0002u32).to_be_bytes().to_vec();
        two.extend_from_slice(b"ab");
        two.extend_from_slice(&0x8000_0001u32.to_be_bytes());
        two.push(b'c');
        assert_eq!(read_record(&mut &two[..]).expect("two fragments"), b"abc");
    }
}
