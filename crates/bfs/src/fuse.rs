//! `bfs mount DIR`: the file service through FUSE, for machines with no
//! kernel NFS client. Each FUSE operation becomes the NFSv3 call a kernel
//! client would make, sent through the same request path as the relay's
//! (one request: procedure, the caller's uid, gid and groups, XDR
//! arguments), to the same backend pool.
//!
//! FUSE node ids are a BFS file's generation and inode number (another
//! server's file id); the NFS handle of each node seen in a reply is
//! remembered, since FUSE names files by node id only. Writes are stable when their reply arrives, so flush and
//! fsync have nothing to do.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::{Opaque, Pack, Unpack};

use crate::backend::Pool;
use crate::nfs::{root_handle, MAX_IO};
use crate::request::{self, Cred};

/// How long the kernel may keep attributes and names (as an NFS client's
/// attribute cache does).
const TTL: Duration = Duration::from_secs(1);

/// The FUSE file system.
pub struct BfsFuse {
    pool: Arc<Pool>,
    /// Handles by node id (see [`node_of`]).
    handles: Mutex<HashMap<u64, nfs_fh3>>,
    /// Per node, what this mount knows of the times the kernel keeps itself
    /// (see `setattr`).
    kernel_times: Mutex<HashMap<u64, KernelTimes>>,
    /// The root's node id: FUSE's root is inode 1, so the two swap numbers.
    root: u64,
}

/// What the mount knows of a file's times that the kernel keeps itself (with
/// the writeback cache it does, for regular files).
#[derive(Default)]
struct KernelTimes {
    /// The attributes after the last WRITE through this mount, until the
    /// kernel pushes its times at close.
    after_write: Option<fattr3>,
    /// The mtime the kernel pushed at its last close of the file after
    /// writing: the one it pushes again later, unchanged.
    pushed_mtime: Option<SystemTime>,
}

/// The node id of a file: for a BFS handle, generation and inode number
/// together, so that a reused inode number is a new node to the kernel (which
/// may still hold the old one, unlinked but open, and would refuse a node
/// that changed type); for another server's, its file id.
fn node_of(fh: &nfs_fh3, fileid: u64) -> u64 {
    let b: &[u8] = &fh.data;
    if b.len() == 12 && &b[..4] == b"BFS1" {
        let ino = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let gen = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        u64::from(gen) << 32 | u64::from(ino)
    } else {
        fileid
    }
}

/// FUSE inode of a file id and back (the same swap both ways).
fn swap(id: u64, root: u64) -> u64 {
    if id == root {
        1
    } else if id == 1 {
        root
    } else {
        id
    }
}

type Res<T> = Result<T, Errno>;

fn errno(e: nfsstat3) -> Errno {
    Errno::from_i32(match e {
        nfsstat3::NFS3ERR_PERM => libc::EPERM,
        nfsstat3::NFS3ERR_NOENT => libc::ENOENT,
        nfsstat3::NFS3ERR_ACCES => libc::EACCES,
        nfsstat3::NFS3ERR_EXIST => libc::EEXIST,
        nfsstat3::NFS3ERR_XDEV => libc::EXDEV,
        nfsstat3::NFS3ERR_NOTDIR => libc::ENOTDIR,
        nfsstat3::NFS3ERR_ISDIR => libc::EISDIR,
        nfsstat3::NFS3ERR_INVAL => libc::EINVAL,
        nfsstat3::NFS3ERR_FBIG => libc::EFBIG,
        nfsstat3::NFS3ERR_NOSPC => libc::ENOSPC,
        nfsstat3::NFS3ERR_ROFS => libc::EROFS,
        nfsstat3::NFS3ERR_MLINK => libc::EMLINK,
        nfsstat3::NFS3ERR_NAMETOOLONG => libc::ENAMETOOLONG,
        nfsstat3::NFS3ERR_NOTEMPTY => libc::ENOTEMPTY,
        nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_BADHANDLE => libc::ESTALE,
        nfsstat3::NFS3ERR_NOTSUPP => libc::EOPNOTSUPP,
        nfsstat3::NFS3ERR_JUKEBOX => libc::EAGAIN,
        _ => libc::EIO,
    })
}

fn ok<T, E>(r: Nfs3Result<T, E>) -> Res<T> {
    match r {
        Nfs3Result::Ok(v) => Ok(v),
        Nfs3Result::Err((e, _)) => Err(errno(e)),
    }
}

fn time(t: nfstime3) -> SystemTime {
    UNIX_EPOCH + Duration::new(u64::from(t.seconds), t.nseconds.min(999_999_999))
}

fn file_type(t: ftype3) -> FileType {
    match t {
        ftype3::NF3DIR => FileType::Directory,
        ftype3::NF3BLK => FileType::BlockDevice,
        ftype3::NF3CHR => FileType::CharDevice,
        ftype3::NF3LNK => FileType::Symlink,
        ftype3::NF3SOCK => FileType::Socket,
        ftype3::NF3FIFO => FileType::NamedPipe,
        ftype3::NF3REG => FileType::RegularFile,
    }
}

fn file_attr(a: &fattr3, ino: INodeNo) -> FileAttr {
    FileAttr {
        ino,
        size: a.size,
        blocks: a.used / 512,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: file_type(a.type_),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: libc::makedev(a.rdev.specdata1, a.rdev.specdata2) as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// The caller's credential: uid and gid from FUSE, groups from /proc.
fn cred(req: &Request) -> Cred {
    let groups = std::fs::read_to_string(format!("/proc/{}/status", req.pid()))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Groups:")).map(str::to_owned))
        .map(|l| l[7..].split_whitespace().filter_map(|g| g.parse().ok()).take(request::MAX_GIDS).collect())
        .unwrap_or_default();
    Cred { uid: req.uid(), gid: req.gid(), gids: groups }
}

fn name3(n: &OsStr) -> filename3<'static> {
    filename3(Opaque::owned(n.as_bytes().to_vec()))
}

fn sattr(mode: Option<u32>, uid: Option<u32>, gid: Option<u32>, size: Option<u64>) -> sattr3 {
    let opt = |v: Option<u32>| v.map_or(Nfs3Option::None, Nfs3Option::Some);
    sattr3 {
        mode: opt(mode.map(|m| m & 0o7777)),
        uid: opt(uid),
        gid: opt(gid),
        size: size.map_or(Nfs3Option::None, Nfs3Option::Some),
        ..sattr3::default()
    }
}

impl BfsFuse {
    /// BFS's root (inode 1, generation 1).
    pub fn new(pool: Arc<Pool>) -> BfsFuse {
        BfsFuse::with_root(pool, root_handle(), 1)
    }

    /// Another server's export, whose root has handle `fh` and file id `fileid`.
    pub fn with_root(pool: Arc<Pool>, fh: nfs_fh3, fileid: u64) -> BfsFuse {
        let root = node_of(&fh, fileid);
        let mut handles = HashMap::new();
        handles.insert(root, fh);
        BfsFuse { pool, handles: Mutex::new(handles), kernel_times: Mutex::default(), root }
    }

    /// The FUSE attributes of the file `fh` with NFS attributes `a`.
    fn attr(&self, fh: &nfs_fh3, a: &fattr3) -> FileAttr {
        file_attr(a, INodeNo(swap(node_of(fh, a.fileid), self.root)))
    }

    /// One NFS call as the caller.
    fn nfs<R: Unpack>(&self, req: &Request, proc_: u32, args: &impl Pack) -> Res<R> {
        let mut a = Vec::with_capacity(args.packed_size());
        args.pack(&mut a).map_err(|_| Errno::EIO)?;
        let op = request::encode(proc_, &cred(req), &a);
        let reply = self.pool.call(op, request::is_read_only(proc_)).map_err(|_| Errno::EIO)?;
        match request::split_reply(&reply) {
            Some((request::SUCCESS, body)) => {
                R::unpack(&mut std::io::Cursor::new(body)).map(|(r, _)| r).map_err(|_| Errno::EIO)
            }
            _ => Err(Errno::EIO),
        }
    }

    fn fh(&self, ino: INodeNo) -> Res<nfs_fh3> {
        let handles = self.handles.lock().map_err(|_| Errno::EIO)?;
        handles.get(&swap(ino.0, self.root)).cloned().ok_or(Errno::ESTALE)
    }

    fn remember(&self, fh: &nfs_fh3, a: &fattr3) {
        if let Ok(mut h) = self.handles.lock() {
            h.insert(node_of(fh, a.fileid), fh.clone());
        }
    }

    fn dirop(&self, parent: INodeNo, name: &OsStr) -> Res<diropargs3<'static>> {
        Ok(diropargs3 { dir: self.fh(parent)?, name: name3(name) })
    }

    fn getattr_fh(&self, req: &Request, fh: &nfs_fh3) -> Res<fattr3> {
        ok(self.nfs::<GETATTR3res>(req, 1, &GETATTR3args { object: fh.clone() })?).map(|r| r.obj_attributes)
    }

    /// The attributes of a created object: from the reply, or asked for.
    fn made(&self, req: &Request, obj: post_op_fh3, attrs: post_op_attr) -> Res<FileAttr> {
        let Nfs3Option::Some(fh) = obj else {
            return Err(Errno::EIO);
        };
        let a = match attrs {
            Nfs3Option::Some(a) => a,
            Nfs3Option::None => self.getattr_fh(req, &fh)?,
        };
        self.remember(&fh, &a);
        Ok(self.attr(&fh, &a))
    }

    fn lookup_(&self, req: &Request, parent: INodeNo, name: &OsStr) -> Res<FileAttr> {
        let r = ok(self.nfs::<LOOKUP3res>(req, 3, &LOOKUP3args { what: self.dirop(parent, name)? })?)?;
        self.made(req, Nfs3Option::Some(r.object), r.obj_attributes)
    }

    fn create_(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, exclusive: bool) -> Res<FileAttr> {
        let s = sattr(Some(mode), None, None, None);
        let how = if exclusive { createhow3::GUARDED(s) } else { createhow3::UNCHECKED(s) };
        let r = ok(self.nfs::<CREATE3res>(req, 8, &CREATE3args { where_: self.dirop(parent, name)?, how })?)?;
        self.made(req, r.obj, r.obj_attributes)
    }

    fn mknod_(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, rdev: u32) -> Res<FileAttr> {
        let s = sattr(Some(mode), None, None, None);
        let dev = || devicedata3 {
            dev_attributes: s.clone(),
            spec: specdata3 { specdata1: libc::major(u64::from(rdev)), specdata2: libc::minor(u64::from(rdev)) },
        };
        let what = match mode & libc::S_IFMT {
            libc::S_IFREG => return self.create_(req, parent, name, mode, true),
            libc::S_IFIFO => mknoddata3::NF3FIFO(s.clone()),
            libc::S_IFSOCK => mknoddata3::NF3SOCK(s.clone()),
            libc::S_IFCHR => mknoddata3::NF3CHR(dev()),
            libc::S_IFBLK => mknoddata3::NF3BLK(dev()),
            _ => return Err(Errno::EINVAL),
        };
        let r = ok(self.nfs::<MKNOD3res>(req, 11, &MKNOD3args { where_: self.dirop(parent, name)?, what })?)?;
        self.made(req, r.obj, r.obj_attributes)
    }

    fn read_(&self, req: &Request, ino: INodeNo, offset: u64, size: u32) -> Res<Vec<u8>> {
        let file = self.fh(ino)?;
        let mut out = Vec::with_capacity(size as usize);
        while out.len() < size as usize {
            let count = (size - out.len() as u32).min(MAX_IO);
            let args = READ3args { file: file.clone(), offset: offset + out.len() as u64, count };
            let r = ok(self.nfs::<READ3res>(req, 6, &args)?)?;
            out.extend_from_slice(&r.data);
            if r.eof || r.data.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    fn write_(&self, req: &Request, ino: INodeNo, offset: u64, data: &[u8]) -> Res<u32> {
        let file = self.fh(ino)?;
        let mut done = 0usize;
        for chunk in data.chunks(MAX_IO as usize) {
            let args = WRITE3args {
                file: file.clone(),
                offset: offset + done as u64,
                count: chunk.len() as u32,
                stable: stable_how::FILE_SYNC,
                data: Opaque::borrowed(chunk),
            };
            let r = ok(self.nfs::<WRITE3res>(req, 7, &args)?)?;
            done += r.count as usize;
            if let (Nfs3Option::Some(a), Ok(mut t)) = (r.file_wcc.after, self.kernel_times.lock()) {
                t.entry(swap(ino.0, self.root)).or_default().after_write = Some(a);
            }
        }
        Ok(done as u32)
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr_(&self, req: &Request, ino: INodeNo, s: sattr3) -> Res<FileAttr> {
        let object = self.fh(ino)?;
        let r = self.nfs::<SETATTR3res>(
            req,
            2,
            &SETATTR3args { object: object.clone(), new_attributes: s, guard: Nfs3Option::None },
        )?;
        let a = match ok(r)?.obj_wcc.after {
            Nfs3Option::Some(a) => a,
            Nfs3Option::None => self.getattr_fh(req, &object)?,
        };
        Ok(self.attr(&object, &a))
    }

    /// The root of another server's export, by MOUNT, with its file id.
    pub fn remote(
        pool: Arc<Pool>,
        mount_addr: std::net::SocketAddr,
        export: &str,
    ) -> Result<BfsFuse, crate::backend::BackendError> {
        use crate::backend::BackendError;
        let fh = crate::nfs_client::NfsTcp::mount(mount_addr, export)?;
        let mut a = Vec::new();
        GETATTR3args { object: fh.clone() }.pack(&mut a).map_err(|e| BackendError::Remote(e.to_string()))?;
        let reply = pool.call(request::encode(1, &Cred::root(), &a), true)?;
        let body = request::split_reply(&reply).map(|(_, b)| b).unwrap_or(&[]);
        match GETATTR3res::unpack(&mut std::io::Cursor::new(body)) {
            Ok((Nfs3Result::Ok(r), _)) => Ok(BfsFuse::with_root(pool, fh, r.obj_attributes.fileid)),
            _ => Err(BackendError::Remote("GETATTR of the export's root failed".into())),
        }
    }

    fn readdir_(&self, req: &Request, ino: INodeNo, offset: u64, reply: &mut ReplyDirectory) -> Res<()> {
        let dir = self.fh(ino)?;
        let mut cookie = offset;
        loop {
            let args = READDIRPLUS3args {
                dir: dir.clone(),
                cookie,
                cookieverf: cookieverf3::default(),
                dircount: 8192,
                maxcount: 32768,
            };
            let r = ok(self.nfs::<READDIRPLUS3res>(req, 17, &args)?)?;
            for e in r.reply.entries.0 {
                let (node, kind) = match (&e.name_attributes, &e.name_handle) {
                    (Nfs3Option::Some(a), Nfs3Option::Some(fh)) => {
                        self.remember(fh, a);
                        (node_of(fh, e.fileid), file_type(a.type_))
                    }
                    _ => (e.fileid, FileType::RegularFile),
                };
                if reply.add(INodeNo(swap(node, self.root)), e.cookie, kind, OsStr::from_bytes(e.name.as_ref())) {
                    return Ok(());
                }
                cookie = e.cookie;
            }
            if r.reply.eof {
                return Ok(());
            }
        }
    }
}

fn answer_entry(reply: ReplyEntry, r: Res<FileAttr>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

/// The entry FUSE takes as "no such name" (node id 0).
fn negative_entry() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn answer_empty(reply: ReplyEmpty, r: Res<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn client_time(t: Option<TimeOrNow>) -> Option<Option<nfstime3>> {
    t.map(|t| match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(st) => {
            let d = st.duration_since(UNIX_EPOCH).unwrap_or_default();
            Some(nfstime3 { seconds: d.as_secs() as u32, nseconds: d.subsec_nanos() })
        }
    })
}

impl Filesystem for BfsFuse {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        // The kernel gathers small writes into pages it sends in 32 KiB WRITEs
        // (one ordered request each, instead of one per write(2)), keeps read
        // pages across opens, and drops them when GETATTR shows another
        // client changed the file: an NFS client's close-to-open behaviour.
        let _ = config.add_capabilities(
            fuser::InitFlags::FUSE_WRITEBACK_CACHE
                | fuser::InitFlags::FUSE_AUTO_INVAL_DATA
                | fuser::InitFlags::FUSE_PARALLEL_DIROPS,
        );
        Ok(())
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: fuser::ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_(req, parent, name) {
            // A name that does not exist is remembered as such for TTL, as
            // an NFS client caches a negative lookup: a compiler probing its
            // include path asks once, not once per file. Creating the name
            // through this mount replaces the negative entry at once.
            Err(e) if e == Errno::ENOENT => reply.entry(&TTL, &negative_entry(), Generation(0)),
            r => answer_entry(reply, r),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fh(ino).and_then(|fh| Ok((self.getattr_fh(req, &fh)?, fh))) {
            Ok((a, fh)) => reply.attr(&TTL, &self.attr(&fh, &a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        open_file: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // With the writeback cache the kernel keeps a regular file's times
        // itself and pushes them with a SETATTR of mtime and ctime alone:
        // when a written file is closed (carrying the open file's handle,
        // which a user's utimensat never does and ftruncate does only with a
        // size), and again whenever it changed the file's ctime itself (after
        // an unlink, a rename or a link; no handle, so it looks like a user's
        // `touch -m -d`). An entry of `kernel_times` lasts as long as the
        // node's handle in `handles`, or until the file is found gone.
        let times_only = mode.is_none() && uid.is_none() && gid.is_none() && size.is_none() && atime.is_none();
        if let (true, Some(_), Some(TimeOrNow::SpecificTime(pushed))) = (times_only, ctime, mtime) {
            let node = swap(ino.0, self.root);
            if open_file.is_some() {
                // At close: the replicas set both times when they executed
                // the WRITE, from the agreed non-deterministic time, which is
                // where an NFS client leaves them; ordering one more request
                // would only replace them with this client's clock. The
                // kernel ignores the attributes in this reply: those of the
                // last WRITE do.
                let after_write = self.kernel_times.lock().ok().and_then(|mut t| {
                    let k = t.entry(node).or_default();
                    k.pushed_mtime = Some(pushed);
                    k.after_write.take()
                });
                let current = match after_write {
                    Some(a) => self.fh(ino).map(|fh| (a, fh)),
                    None => self.fh(ino).and_then(|fh| Ok((self.getattr_fh(req, &fh)?, fh))),
                };
                return match current {
                    Ok((a, fh)) => reply.attr(&TTL, &self.attr(&fh, &a)),
                    Err(e) => reply.error(e),
                };
            }
            // Without a handle, a read-only GETATTR decides: a file unlinked
            // for good has nothing left to set (its handle is stale, as the
            // SETATTR would find one ordered request later), and an mtime the
            // replicas already have, or the one the kernel pushed at close,
            // is the kernel's own again, not a user's.
            let current = self.fh(ino).and_then(|fh| Ok((self.getattr_fh(req, &fh)?, fh)));
            let again = |a: &fattr3| {
                time(a.mtime) == pushed
                    || self.kernel_times.lock().ok().and_then(|t| t.get(&node)?.pushed_mtime) == Some(pushed)
            };
            match current {
                Err(e) => {
                    if let Ok(mut t) = self.kernel_times.lock() {
                        t.remove(&node);
                    }
                    return reply.error(e);
                }
                Ok((a, fh)) if again(&a) => return reply.attr(&TTL, &self.attr(&fh, &a)),
                Ok(_) => {}
            }
        }
        let mut s = sattr(mode, uid, gid, size);
        s.atime = match client_time(atime) {
            None => set_atime::DONT_CHANGE,
            Some(None) => set_atime::SET_TO_SERVER_TIME,
            Some(Some(t)) => set_atime::SET_TO_CLIENT_TIME(t),
        };
        s.mtime = match client_time(mtime) {
            None => set_mtime::DONT_CHANGE,
            Some(None) => set_mtime::SET_TO_SERVER_TIME,
            Some(Some(t)) => set_mtime::SET_TO_CLIENT_TIME(t),
        };
        match self.setattr_(req, ino, s) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.fh(ino).and_then(|symlink| ok(self.nfs::<READLINK3res>(req, 5, &READLINK3args { symlink })?));
        match r {
            Ok(r) => reply.data(r.data.as_ref()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        answer_entry(reply, self.mknod_(req, parent, name, mode & !umask | mode & libc::S_IFMT, rdev));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let r = self.dirop(parent, name).and_then(|where_| {
            let attributes = sattr(Some(mode & !umask), None, None, None);
            ok(self.nfs::<MKDIR3res>(req, 9, &MKDIR3args { where_, attributes })?)
        });
        answer_entry(reply, r.and_then(|r| self.made(req, r.obj, r.obj_attributes)));
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r =
            self.dirop(parent, name).and_then(|object| ok(self.nfs::<REMOVE3res>(req, 12, &REMOVE3args { object })?));
        answer_empty(reply, r.map(|_| ()));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r =
            self.dirop(parent, name).and_then(|object| ok(self.nfs::<RMDIR3res>(req, 13, &RMDIR3args { object })?));
        answer_empty(reply, r.map(|_| ()));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let r = self.dirop(parent, link_name).and_then(|where_| {
            let symlink = symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfspath3(Opaque::owned(target.as_os_str().as_bytes().to_vec())),
            };
            ok(self.nfs::<SYMLINK3res>(req, 10, &SYMLINK3args { where_, symlink })?)
        });
        answer_entry(reply, r.and_then(|r| self.made(req, r.obj, r.obj_attributes)));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            // RENAME_NOREPLACE and RENAME_EXCHANGE have no NFSv3 counterpart.
            return reply.error(Errno::EINVAL);
        }
        let r = self.dirop(parent, name).and_then(|from| {
            let to = self.dirop(newparent, newname)?;
            ok(self.nfs::<RENAME3res>(req, 14, &RENAME3args { from, to })?)
        });
        answer_empty(reply, r.map(|_| ()));
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let r = self.fh(ino).and_then(|file| {
            let link = self.dirop(newparent, newname)?;
            ok(self.nfs::<LINK3res>(req, 15, &LINK3args { file: file.clone(), link })?)?;
            Ok(self.attr(&file, &self.getattr_fh(req, &file)?))
        });
        answer_entry(reply, r);
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_(req, ino, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_(req, ino, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.readdir_(req, ino, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match ok(self
            .nfs::<FSSTAT3res>(req, 18, &FSSTAT3args { fsroot: root_handle() })
            .unwrap_or(Nfs3Result::Err((nfsstat3::NFS3ERR_IO, FSSTAT3resfail::default()))))
        {
            Ok(s) => {
                reply.statfs(s.tbytes / 4096, s.fbytes / 4096, s.abytes / 4096, s.tfiles, s.ffiles, 4096, 255, 4096)
            }
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let bits = mask.bits() as u32;
        let mut want = 0;
        if bits & 4 != 0 {
            want |= ACCESS3_READ;
        }
        if bits & 2 != 0 {
            want |= ACCESS3_MODIFY;
        }
        if bits & 1 != 0 {
            want |= ACCESS3_EXECUTE | ACCESS3_LOOKUP;
        }
        let r = self
            .fh(ino)
            .and_then(|object| ok(self.nfs::<ACCESS3res>(req, 4, &ACCESS3args { object, access: want })?));
        match r {
            Ok(r) => {
                let granted_x = r.access & (ACCESS3_EXECUTE | ACCESS3_LOOKUP) != 0;
                let need_x = bits & 1 != 0;
                let rest = want & !(ACCESS3_EXECUTE | ACCESS3_LOOKUP);
                if r.access & rest == rest && (!need_x || granted_x) {
                    reply.ok()
                } else {
                    reply.error(Errno::EACCES)
                }
            }
            Err(e) => reply.error(e),
        }
    }

    // No extended attributes in NFSv3: ENOSYS once, and the kernel stops asking
    // (it asks for security.capability before every write otherwise).
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_(req, parent, name, mode & !umask, flags & libc::O_EXCL != 0) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }
}

/// Mounts the file service `fs` at `dir` until `stop` is set.
pub fn mount(fs: BfsFuse, dir: &Path, stop: &std::sync::atomic::AtomicBool) -> std::io::Result<()> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![fuser::MountOption::FSName("bfs".into()), fuser::MountOption::Subtype("bfs".into())];
    // Other users (pjdfstest switches uids) reach it; BFS checks their rights.
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(4);
    let session = fuser::spawn_mount(fs, dir, &config)?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(session);
    Ok(())
}
