//! What every NFSv3 procedure shares: file handles, attributes, weak cache
//! consistency data, permission checks, names, XDR in and out.

use nfs3_types::nfs3::{
    fattr3, ftype3, nfs_fh3, nfsstat3, nfstime3, post_op_attr, pre_op_attr, specdata3, wcc_attr, wcc_data, Nfs3Option,
};
use nfs3_types::xdr_codec::{Opaque, Pack, Unpack};

use crate::dir::NAME_MAX;
use crate::request::Cred;
use crate::store::{Fs, Inode, Pages, PAGE, R, T_BLK, T_CHR, T_DIR, T_FIFO, T_LNK, T_SOCK};

/// The file handle: magic, inode number, generation. The same on every
/// replica for the same file; STALE once the inode is freed or reused.
const FH_MAGIC: [u8; 4] = *b"BFS1";
pub const FSID: u64 = 0xBF5;
/// Largest READ and WRITE (FSINFO's rtmax and wtmax).
pub const MAX_IO: u32 = 32 * 1024;
/// Largest READDIR/READDIRPLUS reply the service builds, whatever the client asks.
pub const MAX_DIR_REPLY: u32 = 32 * 1024;
/// WRITE's and COMMIT's verifier. Every write is in the replicated state when
/// its reply leaves, so it never changes: nothing unstable can be lost.
pub const WRITE_VERF: [u8; 8] = *b"BFSwrite";

/// Permission bits asked of [`may`].
pub const R_OK: u32 = 4;
pub const W_OK: u32 = 2;
pub const X_OK: u32 = 1;

/// Who is calling and when (the agreed time of the batch).
pub struct Call {
    pub cred: Cred,
    pub now: (u32, u32),
}

pub fn handle(ino: &Inode) -> nfs_fh3 {
    handle_of(ino.ino, ino.gen)
}

fn handle_of(ino: u32, gen: u32) -> nfs_fh3 {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&FH_MAGIC);
    b.extend_from_slice(&ino.to_be_bytes());
    b.extend_from_slice(&gen.to_be_bytes());
    nfs_fh3 { data: Opaque::owned(b) }
}

/// The handle of the root directory, generation 1 (what MOUNT returns).
pub fn root_handle() -> nfs_fh3 {
    handle_of(crate::store::ROOT, 1)
}

/// The live inode a handle names: BADHANDLE for bytes that are no handle of
/// ours, STALE for a freed or reused inode.
pub fn resolve<S: Pages>(fs: &Fs<'_, S>, fh: &nfs_fh3) -> R<Inode> {
    let b: &[u8] = &fh.data;
    if b.len() != 12 || b[..4] != FH_MAGIC {
        return Err(nfsstat3::NFS3ERR_BADHANDLE);
    }
    let ino = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let gen = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    let inode = fs.inode(ino)?;
    if inode.kind == 0 || inode.gen != gen {
        return Err(nfsstat3::NFS3ERR_STALE);
    }
    Ok(inode)
}

fn time(t: (u32, u32)) -> nfstime3 {
    nfstime3 { seconds: t.0, nseconds: t.1 }
}

/// NFS time of the agreed microseconds.
pub fn now_of(us: u64) -> (u32, u32) {
    ((us / 1_000_000) as u32, (us % 1_000_000 * 1000) as u32)
}

pub fn ftype(kind: u32) -> ftype3 {
    match kind {
        T_DIR => ftype3::NF3DIR,
        T_BLK => ftype3::NF3BLK,
        T_CHR => ftype3::NF3CHR,
        T_LNK => ftype3::NF3LNK,
        T_SOCK => ftype3::NF3SOCK,
        T_FIFO => ftype3::NF3FIFO,
        _ => ftype3::NF3REG,
    }
}

pub fn attr(i: &Inode) -> fattr3 {
    fattr3 {
        type_: ftype(i.kind),
        mode: i.mode & 0o7777,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        size: i.size,
        used: u64::from(i.blocks) * PAGE,
        rdev: specdata3 { specdata1: i.rdev.0, specdata2: i.rdev.1 },
        fsid: FSID,
        fileid: u64::from(i.ino),
        atime: time(i.atime),
        mtime: time(i.mtime),
        ctime: time(i.ctime),
    }
}

pub fn post(i: &Inode) -> post_op_attr {
    Nfs3Option::Some(attr(i))
}

pub fn pre(i: &Inode) -> pre_op_attr {
    Nfs3Option::Some(wcc_attr { size: i.size, mtime: time(i.mtime), ctime: time(i.ctime) })
}

pub fn wcc(before: &Inode, after: &Inode) -> wcc_data {
    wcc_data { before: pre(before), after: post(after) }
}

/// Post-op attributes of the file a handle names, if it still exists.
pub fn post_of<S: Pages>(fs: &Fs<'_, S>, fh: &nfs_fh3) -> post_op_attr {
    resolve(fs, fh).map(|i| post(&i)).unwrap_or(Nfs3Option::None)
}

/// Whether `cred` has every permission bit in `want` on `i` (root has all,
/// except execute on a file nobody may execute).
pub fn may(cred: &Cred, i: &Inode, want: u32) -> bool {
    if cred.uid == 0 {
        return want & X_OK == 0 || i.kind == T_DIR || i.mode & 0o111 != 0;
    }
    let bits = if cred.uid == i.uid {
        i.mode >> 6
    } else if cred.in_group(i.gid) {
        i.mode >> 3
    } else {
        i.mode
    } & 7;
    bits & want == want
}

/// Reads and writes of data: the owner may always (as Linux's NFS server
/// lets it), so that a file created read-only can still be written by the
/// open that created it.
pub fn may_io(cred: &Cred, i: &Inode, want: u32) -> bool {
    cred.uid == i.uid || may(cred, i, want)
}

/// The sticky bit: in such a directory only the owner of an entry, of the
/// directory, or root may remove or rename it.
pub fn sticky_allows(cred: &Cred, dir: &Inode, victim: &Inode) -> bool {
    dir.mode & 0o1000 == 0 || cred.uid == 0 || cred.uid == dir.uid || cred.uid == victim.uid
}

/// A name a new entry may take: NAMETOOLONG, EXIST for "." and "..", INVAL
/// for an empty name or one with '/' or NUL.
pub fn check_new_name(name: &[u8]) -> R<()> {
    if name.len() > NAME_MAX {
        return Err(nfsstat3::NFS3ERR_NAMETOOLONG);
    }
    if name == b"." || name == b".." {
        return Err(nfsstat3::NFS3ERR_EXIST);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    Ok(())
}

/// Decodes XDR arguments; None for garbage.
pub fn unpack<T: Unpack>(args: &[u8]) -> Option<T> {
    let mut cur = std::io::Cursor::new(args);
    T::unpack(&mut cur).ok().map(|(v, _)| v)
}

/// Encodes an XDR result after the SUCCESS accept status.
pub fn pack<T: Pack>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + v.packed_size());
    out.extend_from_slice(&crate::request::SUCCESS.to_be_bytes());
    // Writing into a Vec fails only for an opaque over 4 GiB, which no reply has.
    let _ = v.pack(&mut out);
    out
}

/// `Ok` and `Err` of a procedure result in one step.
pub fn result<T: Pack, E: Pack>(r: Result<T, (nfsstat3, E)>) -> Vec<u8> {
    match r {
        Ok(v) => pack(&nfs3_types::nfs3::Nfs3Result::<T, E>::Ok(v)),
        Err(e) => pack(&nfs3_types::nfs3::Nfs3Result::<T, E>::Err(e)),
    }
}
