//! A backend that is any NFSv3 server over TCP (nfs-ganesha, a BFS relay):
//! each request goes out as the NFS call it encodes, with its AUTH_UNIX
//! credential. `bfs mount --nfs` uses it so that the Andrew benchmark runs the
//! same client path against BFS and against another server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use nfs3_types::nfs3::nfs_fh3;
use nfs3_types::xdr_codec::Opaque;

use crate::backend::{Backend, BackendError};
use crate::request::{self, Cred, Xdr};

/// One TCP connection to an NFS server; one call at a time.
pub struct NfsTcp {
    stream: TcpStream,
    xid: u32,
}

fn io(e: std::io::Error) -> BackendError {
    BackendError::Remote(e.to_string())
}

impl NfsTcp {
    pub fn connect(addr: SocketAddr) -> Result<NfsTcp, BackendError> {
        let stream = TcpStream::connect(addr).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        // Distinct xids across connections, so a server's reply cache never mixes them.
        let xid = (std::process::id() << 16) ^ (addr.port() as u32) ^ rand_xid();
        Ok(NfsTcp { stream, xid })
    }

    /// Sends one call; returns (accept_stat, result bytes).
    pub fn call(
        &mut self,
        prog: u32,
        vers: u32,
        proc_: u32,
        cred: &Cred,
        args: &[u8],
    ) -> Result<(u32, Vec<u8>), BackendError> {
        self.xid = self.xid.wrapping_add(1);
        let mut body = Vec::with_capacity(64);
        for w in [0u32, 3, u32::from_be_bytes(*b"bfs\0"), cred.uid, cred.gid, cred.gids.len() as u32] {
            body.extend_from_slice(&w.to_be_bytes());
        }
        for g in &cred.gids {
            body.extend_from_slice(&g.to_be_bytes());
        }
        let mut call = Vec::with_capacity(64 + body.len() + args.len());
        for w in [self.xid, 0, 2, prog, vers, proc_, 1, body.len() as u32] {
            call.extend_from_slice(&w.to_be_bytes());
        }
        call.extend_from_slice(&body);
        call.extend_from_slice(&[0; 8]);
        call.extend_from_slice(args);
        let mut framed = (0x8000_0000u32 | call.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&call);
        self.stream.write_all(&framed).map_err(io)?;
        loop {
            let reply = self.read_record()?;
            let mut x = Xdr(&reply);
            let bad = || BackendError::Remote("malformed RPC reply".into());
            if x.u32().ok_or_else(bad)? != self.xid {
                continue; // A late reply to an earlier call.
            }
            if x.u32().ok_or_else(bad)? != 1 || x.u32().ok_or_else(bad)? != 0 {
                return Err(BackendError::Remote("call denied".into()));
            }
            x.u32().ok_or_else(bad)?;
            x.opaque(400).ok_or_else(bad)?;
            let stat = x.u32().ok_or_else(bad)?;
            return Ok((stat, x.0.to_vec()));
        }
    }

    fn read_record(&mut self) -> Result<Vec<u8>, BackendError> {
        let mut record = Vec::new();
        loop {
            let mut h = [0u8; 4];
            self.stream.read_exact(&mut h).map_err(io)?;
            let h = u32::from_be_bytes(h);
            let at = record.len();
            let len = (h & 0x7FFF_FFFF) as usize;
            if at + len > crate::relay::MAX_RECORD {
                return Err(BackendError::Remote("reply record too large".into()));
            }
            record.resize(at + len, 0);
            self.stream.read_exact(&mut record[at..]).map_err(io)?;
            if h & 0x8000_0000 != 0 {
                return Ok(record);
            }
        }
    }

    /// MOUNT v3 MNT of `path` at a server's mount port: the export's root handle.
    pub fn mount(addr: SocketAddr, path: &str) -> Result<nfs_fh3, BackendError> {
        let mut c = NfsTcp::connect(addr)?;
        let mut args = (path.len() as u32).to_be_bytes().to_vec();
        args.extend_from_slice(path.as_bytes());
        args.resize(args.len().div_ceil(4) * 4, 0);
        let (stat, body) = c.call(100_005, 3, 1, &Cred::root(), &args)?;
        let mut x = Xdr(&body);
        match (stat, x.u32()) {
            (0, Some(0)) => {
                let fh = x.opaque(64).ok_or_else(|| BackendError::Remote("malformed MNT reply".into()))?;
                Ok(nfs_fh3 { data: Opaque::owned(fh.to_vec()) })
            }
            (_, s) => Err(BackendError::Remote(format!("MNT {path} refused (status {s:?})"))),
        }
    }
}

fn rand_xid() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
}

impl Backend for NfsTcp {
    fn invoke(&mut self, op: &[u8], _read_only: bool) -> Result<Vec<u8>, BackendError> {
        let (proc_, cred, args) =
            request::decode(op).ok_or_else(|| BackendError::Remote("malformed request".into()))?;
        if proc_ == crate::PROC_NULL {
            // The format call of a BFS front end: another server has nothing to format.
            return Ok(request::SUCCESS.to_be_bytes().to_vec());
        }
        let (stat, body) = self.call(100_003, 3, proc_, &cred, args)?;
        let mut out = stat.to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        Ok(out)
    }
}
