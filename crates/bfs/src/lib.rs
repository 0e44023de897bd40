//! BFS: an NFSv3 file service replicated by the PBFT library (DESIGN.md §6).
//!
//! - [`BfsService`] implements [`pbft::service::Service`]: a request is one
//!   NFS call (procedure, AUTH_UNIX credential, XDR arguments as received; see
//!   [`request`]) and the result is the whole XDR reply, computed the same way
//!   on every replica;
//! - the file system lives in the library's paged state only (`store`, `dir`):
//!   checkpoints, state transfer and restarts cover it unchanged;
//! - [`relay`] speaks ONC RPC over TCP (NFSv3, MOUNT, PORTMAP GETPORT) to
//!   unmodified clients and sends each call as one request to a [`backend`]:
//!   the replicated cluster, or the same service in process (the baseline);
//! - [`fuse`] mounts it through FUSE with the same requests (`bfs mount`).
//!
//! Invariant: execution depends only on the request, the state and the
//! agreed time; no clock, no randomness, no hash-map order, and no panic on
//! any bytes a client sends.

pub mod backend;
mod dir;
pub mod fuse;
pub mod local;
pub mod nfs;
pub mod nfs_client;
mod proc_read;
mod proc_write;
pub mod relay;
mod rename;
pub mod request;
mod store;

#[cfg(test)]
mod tests;

use pbft::service::{ExecContext, ReadContext, Service};

use request::{Cred, NOBODY};
use store::{Fs, Layout, Super};

pub use store::Layout as StateLayout;

/// Configuration of a [`BfsService`]. Every replica must use the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfsConfig {
    /// Pages (4 KiB) of replicated state; up to 2³² - 1 (16 TiB). Pages never
    /// written cost no memory.
    pub pages: u64,
    /// Map uid 0 to the anonymous user (65534), as NFS servers do by default.
    pub root_squash: bool,
}

/// Why a configuration is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BfsConfigError {
    #[error("{0} pages: the state needs at least 128 pages and at most 2^32 - 1")]
    BadSize(u64),
}

/// The replicated NFSv3 file service.
#[derive(Clone, Debug)]
pub struct BfsService {
    config: BfsConfig,
    layout: Layout,
}

/// NFS procedure 0 (NULL): sent read-write by a relay at start, it formats an
/// empty state, so that read-only requests never meet an unformatted one.
pub const PROC_NULL: u32 = 0;

impl BfsService {
    pub fn new(config: BfsConfig) -> Result<BfsService, BfsConfigError> {
        let layout = Layout::new(config.pages).ok_or(BfsConfigError::BadSize(config.pages))?;
        Ok(BfsService { config, layout })
    }

    fn cred(&self, cred: Cred) -> Cred {
        if self.config.root_squash && cred.uid == 0 {
            Cred { uid: NOBODY, gid: NOBODY, gids: Vec::new() }
        } else {
            cred
        }
    }
}

fn reply_status(status: u32) -> Vec<u8> {
    status.to_be_bytes().to_vec()
}

impl Service for BfsService {
    fn state_pages(&self) -> u64 {
        self.config.pages
    }

    fn execute(&mut self, op: &[u8], ctx: &mut ExecContext<'_>) -> Vec<u8> {
        let Some((proc_, cred, args)) = request::decode(op) else {
            return reply_status(request::GARBAGE_ARGS);
        };
        if !request::lengths_plausible(proc_, args) {
            return reply_status(request::GARBAGE_ARGS);
        }
        let call = nfs::Call { cred: self.cred(cred), now: nfs::now_of(ctx.nondet_time_us) };
        let Ok(sb) = Super::load(&ctx.state) else {
            return reply_status(request::SYSTEM_ERR);
        };
        let mut fs = Fs { s: &mut ctx.state, l: self.layout, sb };
        if !fs.sb.formatted && fs.format(call.now).is_err() {
            return reply_status(request::SYSTEM_ERR);
        }
        if proc_ == PROC_NULL {
            return reply_status(request::SUCCESS);
        }
        if request::is_read_only(proc_) {
            return proc_read::run(&fs, &call, proc_, args).unwrap_or_else(|| reply_status(request::GARBAGE_ARGS));
        }
        match proc_ {
            2 | 7..=15 | 21 => {
                proc_write::run(&mut fs, &call, proc_, args).unwrap_or_else(|| reply_status(request::GARBAGE_ARGS))
            }
            _ => reply_status(request::PROC_UNAVAIL),
        }
    }

    fn execute_read_only(&self, op: &[u8], ctx: &ReadContext<'_>) -> Option<Vec<u8>> {
        let (proc_, cred, args) = request::decode(op)?;
        if !request::is_read_only(proc_) {
            return None;
        }
        if !request::lengths_plausible(proc_, args) {
            return Some(reply_status(request::GARBAGE_ARGS));
        }
        let mut region = ctx.state;
        let sb = Super::load(&region).ok()?;
        if !sb.formatted {
            // Only a read-write request may format; the client falls back to one.
            return None;
        }
        let fs = Fs { s: &mut region, l: self.layout, sb };
        let call = nfs::Call { cred: self.cred(cred), now: (0, 0) };
        Some(proc_read::run(&fs, &call, proc_, args).unwrap_or_else(|| reply_status(request::GARBAGE_ARGS)))
    }
}
