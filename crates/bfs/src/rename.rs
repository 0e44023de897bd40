//! RENAME (RFC 1813 §3.3.14): within a directory or across two, over an
//! existing target or not. Every check comes before the first change; a
//! directory may not move into its own subtree.

use nfs3_types::nfs3::{nfs_fh3, nfsstat3, wcc_data};

use crate::dir::Entry;
use crate::nfs::*;
use crate::proc_read::{child, searchable};
use crate::proc_write::drop_link;
use crate::store::{Fs, Inode, PagesMut, R, ROOT, T_DIR};

/// Renames `from` in `fdh` to `to` in `tdh`; returns both directories' wcc.
pub fn rename<S: PagesMut>(
    fs: &mut Fs<'_, S>,
    call: &Call,
    fdh: &nfs_fh3,
    from: &[u8],
    tdh: &nfs_fh3,
    to: &[u8],
) -> R<(wcc_data, wcc_data)> {
    let fd = writable(fs, call, fdh)?;
    let td = writable(fs, call, tdh)?;
    if matches!(from, b"." | b"..") || matches!(to, b"." | b"..") {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    check_new_name(to)?;
    let mut src = child(fs, &fd, from)?;
    if !sticky_allows(&call.cred, &fd, &src) {
        return Err(nfsstat3::NFS3ERR_ACCES);
    }
    let target = match fs.lookup(&td, to)? {
        Some(e) => Some((e.clone(), fs.inode(e.ino)?)),
        None => None,
    };
    if let Some((_, t)) = &target {
        if t.ino == src.ino {
            // Two names of one file: POSIX says do nothing.
            return Ok((wcc(&fd, &fd), wcc(&td, &td)));
        }
        match (src.kind == T_DIR, t.kind == T_DIR) {
            (true, false) => return Err(nfsstat3::NFS3ERR_NOTDIR),
            (false, true) => return Err(nfsstat3::NFS3ERR_ISDIR),
            (true, true) if !fs.is_empty_dir(t) => return Err(nfsstat3::NFS3ERR_NOTEMPTY),
            _ => {}
        }
        if !sticky_allows(&call.cred, &td, t) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
    } else if Fs::<S>::insert_pages_needed(&td) > fs.sb.free_blocks {
        return Err(nfsstat3::NFS3ERR_NOSPC);
    }
    if src.kind == T_DIR && fd.ino != td.ino && inside(fs, &td, src.ino)? {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    let (fd_before, td_before) = (fd, td);
    let now = call.now;
    if fd.ino == td.ino {
        let mut d = fd;
        fs.remove(&mut d, from)?;
        place(fs, &mut d, to, &src, target, now)?;
        d.mtime = now;
        d.ctime = now;
        d.save(fs.s, &fs.l)?;
        src.ctime = now;
        src.save(fs.s, &fs.l)?;
        fs.flush()?;
        return Ok((wcc(&fd_before, &d), wcc(&td_before, &d)));
    }
    let (mut fd, mut td) = (fd, td);
    fs.remove(&mut fd, from)?;
    place(fs, &mut td, to, &src, target, now)?;
    if src.kind == T_DIR {
        fd.nlink -= 1;
        td.nlink += 1;
        src.parent = td.ino;
    }
    for d in [&mut fd, &mut td] {
        d.mtime = now;
        d.ctime = now;
        d.save(fs.s, &fs.l)?;
    }
    src.ctime = now;
    src.save(fs.s, &fs.l)?;
    fs.flush()?;
    Ok((wcc(&fd_before, &fd), wcc(&td_before, &td)))
}

fn writable<S: PagesMut>(fs: &Fs<'_, S>, call: &Call, dh: &nfs_fh3) -> R<Inode> {
    let dir = searchable(fs, call, dh)?;
    if !may(&call.cred, &dir, W_OK | X_OK) {
        return Err(nfsstat3::NFS3ERR_ACCES);
    }
    Ok(dir)
}

/// Whether `dir` is `ancestor` or lies below it.
fn inside<S: PagesMut>(fs: &Fs<'_, S>, dir: &Inode, ancestor: u32) -> R<bool> {
    let mut at = *dir;
    // A depth bound keeps a corrupt parent chain from looping forever.
    for _ in 0..=fs.l.inodes {
        if at.ino == ancestor {
            return Ok(true);
        }
        if at.ino == ROOT {
            return Ok(false);
        }
        at = fs.inode(at.parent)?;
    }
    Err(nfsstat3::NFS3ERR_SERVERFAULT)
}

/// Puts `src` under `name` in `d`: over the target's slot if there is one
/// (which loses its name, and its inode with its last name), else a new slot.
fn place<S: PagesMut>(
    fs: &mut Fs<'_, S>,
    d: &mut Inode,
    name: &[u8],
    src: &Inode,
    target: Option<(Entry, Inode)>,
    now: (u32, u32),
) -> R<()> {
    match target {
        Some((e, mut t)) => {
            fs.retarget(d, &e, src.ino)?;
            if t.kind == T_DIR {
                d.nlink -= 1;
                fs.free_inode(&mut t)
            } else {
                drop_link(fs, &mut t, now)
            }
        }
        None => fs.insert(d, name, src.ino),
    }
}
