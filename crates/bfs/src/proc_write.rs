//! The procedures that change the file system (RFC 1813 §3.3): SETATTR,
//! WRITE, CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK, COMMIT.
//!
//! Each checks everything it can (handles, types, permissions, names, free
//! space) before it changes anything, so a failed call leaves the state as it
//! was. Every time it sets is the batch's agreed time.

use nfs3_types::nfs3::*;

use crate::nfs::*;
use crate::proc_read::{child, searchable};
use crate::store::{Fs, Inode, PagesMut, R, T_BLK, T_CHR, T_DIR, T_FIFO, T_LNK, T_REG, T_SOCK};

/// Runs read-write procedure `proc_`; None for garbage arguments or a
/// procedure that is not one of these.
pub fn run<S: PagesMut>(fs: &mut Fs<'_, S>, call: &Call, proc_: u32, args: &[u8]) -> Option<Vec<u8>> {
    Some(match proc_ {
        2 => {
            let a: SETATTR3args = unpack(args)?;
            let r = setattr(fs, call, &a);
            result(
                r.map(|(b, i)| SETATTR3resok { obj_wcc: wcc(&b, &i) })
                    .map_err(|e| (e, SETATTR3resfail { obj_wcc: wcc_of(fs, &a.object) })),
            )
        }
        7 => {
            let a: WRITE3args<'static> = unpack(args)?;
            let r = write(fs, call, &a);
            result(r.map_err(|e| (e, WRITE3resfail { file_wcc: wcc_of(fs, &a.file) })))
        }
        8 => {
            let a: CREATE3args<'static> = unpack(args)?;
            let dh = &a.where_.dir;
            let r = create(fs, call, dh, a.where_.name.as_ref(), &a.how);
            result(
                made(fs, dh, r)
                    .map(|(obj, obj_attributes, dir_wcc)| CREATE3resok { obj, obj_attributes, dir_wcc })
                    .map_err(|(e, dir_wcc)| (e, CREATE3resfail { dir_wcc })),
            )
        }
        9 => {
            let a: MKDIR3args<'static> = unpack(args)?;
            let dh = &a.where_.dir;
            let r = make(fs, call, dh, a.where_.name.as_ref(), T_DIR, &a.attributes, (0, 0), &[]);
            result(
                made(fs, dh, r)
                    .map(|(obj, obj_attributes, dir_wcc)| MKDIR3resok { obj, obj_attributes, dir_wcc })
                    .map_err(|(e, dir_wcc)| (e, MKDIR3resfail { dir_wcc })),
            )
        }
        10 => {
            let a: SYMLINK3args<'static> = unpack(args)?;
            let dh = &a.where_.dir;
            let target = a.symlink.symlink_data.as_ref();
            let mut attrs = a.symlink.symlink_attributes.clone();
            attrs.mode = Nfs3Option::Some(0o777);
            let r = if target.is_empty() || target.len() > 4096 {
                Err(nfsstat3::NFS3ERR_INVAL)
            } else {
                make(fs, call, dh, a.where_.name.as_ref(), T_LNK, &attrs, (0, 0), target)
            };
            result(
                made(fs, dh, r)
                    .map(|(obj, obj_attributes, dir_wcc)| SYMLINK3resok { obj, obj_attributes, dir_wcc })
                    .map_err(|(e, dir_wcc)| (e, SYMLINK3resfail { dir_wcc })),
            )
        }
        11 => {
            let a: MKNOD3args<'static> = unpack(args)?;
            let dh = &a.where_.dir;
            let r = match &a.what {
                mknoddata3::NF3CHR(d) | mknoddata3::NF3BLK(d) if call.cred.uid != 0 => {
                    let _ = d;
                    Err(nfsstat3::NFS3ERR_PERM)
                }
                mknoddata3::NF3CHR(d) => make(
                    fs,
                    call,
                    dh,
                    a.where_.name.as_ref(),
                    T_CHR,
                    &d.dev_attributes,
                    (d.spec.specdata1, d.spec.specdata2),
                    &[],
                ),
                mknoddata3::NF3BLK(d) => make(
                    fs,
                    call,
                    dh,
                    a.where_.name.as_ref(),
                    T_BLK,
                    &d.dev_attributes,
                    (d.spec.specdata1, d.spec.specdata2),
                    &[],
                ),
                mknoddata3::NF3SOCK(s) => make(fs, call, dh, a.where_.name.as_ref(), T_SOCK, s, (0, 0), &[]),
                mknoddata3::NF3FIFO(s) => make(fs, call, dh, a.where_.name.as_ref(), T_FIFO, s, (0, 0), &[]),
                mknoddata3::default => Err(nfsstat3::NFS3ERR_BADTYPE),
            };
            result(
                made(fs, dh, r)
                    .map(|(obj, obj_attributes, dir_wcc)| MKNOD3resok { obj, obj_attributes, dir_wcc })
                    .map_err(|(e, dir_wcc)| (e, MKNOD3resfail { dir_wcc })),
            )
        }
        12 | 13 => {
            let a: REMOVE3args<'static> = unpack(args)?;
            let r = unlink(fs, call, &a.object.dir, a.object.name.as_ref(), proc_ == 13);
            let r = r.map(|(b, d)| wcc(&b, &d)).map_err(|e| (e, wcc_of(fs, &a.object.dir)));
            if proc_ == 12 {
                result(
                    r.map(|dir_wcc| REMOVE3resok { dir_wcc }).map_err(|(e, dir_wcc)| (e, REMOVE3resfail { dir_wcc })),
                )
            } else {
                result(r.map(|dir_wcc| RMDIR3resok { dir_wcc }).map_err(|(e, dir_wcc)| (e, RMDIR3resfail { dir_wcc })))
            }
        }
        14 => {
            let a: RENAME3args<'static, 'static> = unpack(args)?;
            let r = crate::rename::rename(fs, call, &a.from.dir, a.from.name.as_ref(), &a.to.dir, a.to.name.as_ref());
            result(r.map(|(f, t)| RENAME3resok { fromdir_wcc: f, todir_wcc: t }).map_err(|e| {
                (e, RENAME3resfail { fromdir_wcc: wcc_of(fs, &a.from.dir), todir_wcc: wcc_of(fs, &a.to.dir) })
            }))
        }
        15 => {
            let a: LINK3args<'static> = unpack(args)?;
            let r = link(fs, call, &a.file, &a.link.dir, a.link.name.as_ref());
            result(r.map(|(i, b, d)| LINK3resok { file_attributes: post(&i), linkdir_wcc: wcc(&b, &d) }).map_err(|e| {
                (e, LINK3resfail { file_attributes: post_of(fs, &a.file), linkdir_wcc: wcc_of(fs, &a.link.dir) })
            }))
        }
        21 => {
            let a: COMMIT3args = unpack(args)?;
            let r =
                resolve(fs, &a.file).and_then(|i| if i.kind == T_REG { Ok(i) } else { Err(nfsstat3::NFS3ERR_INVAL) });
            result(
                r.map(|i| COMMIT3resok { file_wcc: wcc(&i, &i), verf: writeverf3(WRITE_VERF) })
                    .map_err(|e| (e, COMMIT3resfail { file_wcc: wcc_of(fs, &a.file) })),
            )
        }
        _ => return None,
    })
}

/// wcc_data of a failed call: the attributes after, none before.
pub fn wcc_of<S: PagesMut>(fs: &Fs<'_, S>, fh: &nfs_fh3) -> wcc_data {
    wcc_data { before: Nfs3Option::None, after: post_of(fs, fh) }
}

type Made = R<(Inode, Inode, Inode)>;

/// The (handle, attributes, dir wcc) of a created object, or the error with dir wcc.
fn made<S: PagesMut>(
    fs: &Fs<'_, S>,
    dh: &nfs_fh3,
    r: Made,
) -> Result<(post_op_fh3, post_op_attr, wcc_data), (nfsstat3, wcc_data)> {
    match r {
        Ok((obj, before, after)) => Ok((Nfs3Option::Some(handle(&obj)), post(&obj), wcc(&before, &after))),
        Err(e) => Err((e, wcc_of(fs, dh))),
    }
}

/// A directory the caller may add entries to or remove them from.
fn writable_dir<S: PagesMut>(fs: &Fs<'_, S>, call: &Call, dh: &nfs_fh3) -> R<Inode> {
    let dir = searchable(fs, call, dh)?;
    if !may(&call.cred, &dir, W_OK | X_OK) {
        return Err(nfsstat3::NFS3ERR_ACCES);
    }
    Ok(dir)
}

fn touch(i: &mut Inode, now: (u32, u32)) {
    i.mtime = now;
    i.ctime = now;
}

/// Creates `name` in `dh` as a new object of `kind` with `content` (a
/// symlink's target). Returns (object, dir before, dir after).
#[allow(clippy::too_many_arguments)]
fn make<S: PagesMut>(
    fs: &mut Fs<'_, S>,
    call: &Call,
    dh: &nfs_fh3,
    name: &[u8],
    kind: u32,
    s: &sattr3,
    rdev: (u32, u32),
    content: &[u8],
) -> Made {
    let mut dir = writable_dir(fs, call, dh)?;
    check_new_name(name)?;
    if fs.lookup(&dir, name)?.is_some() {
        return Err(nfsstat3::NFS3ERR_EXIST);
    }
    let need = Fs::<S>::insert_pages_needed(&dir) + Fs::<S>::pages_needed(0, content.len() as u64);
    if fs.sb.free_inodes == 0 || need > fs.sb.free_blocks {
        return Err(nfsstat3::NFS3ERR_NOSPC);
    }
    if kind == T_DIR && dir.nlink == u32::MAX {
        return Err(nfsstat3::NFS3ERR_MLINK);
    }
    let before = dir;
    let mut obj = fs.alloc_inode(kind)?;
    obj.uid = call.cred.uid;
    // A directory with the set-group-id bit passes its group on (BSD rule).
    obj.gid = if dir.mode & 0o2000 != 0 { dir.gid } else { call.cred.gid };
    obj.mode = match (s.mode, kind) {
        (Nfs3Option::Some(m), _) => m & 0o7777,
        (Nfs3Option::None, T_DIR) => 0o755,
        (Nfs3Option::None, _) => 0o644,
    };
    if kind == T_DIR {
        obj.nlink = 2;
        obj.parent = dir.ino;
        obj.mode |= dir.mode & 0o2000;
        dir.nlink += 1;
    }
    obj.rdev = rdev;
    obj.atime = call.now;
    touch(&mut obj, call.now);
    if call.cred.uid == 0 {
        if let Nfs3Option::Some(u) = s.uid {
            obj.uid = u;
        }
        if let Nfs3Option::Some(g) = s.gid {
            obj.gid = g;
        }
    }
    set_times(&mut obj, s, call.now);
    if !content.is_empty() {
        fs.write_at(&mut obj, 0, content)?;
        obj.size = content.len() as u64;
    }
    obj.save(fs.s, &fs.l)?;
    fs.insert(&mut dir, name, obj.ino)?;
    touch(&mut dir, call.now);
    dir.save(fs.s, &fs.l)?;
    fs.flush()?;
    Ok((obj, before, dir))
}

fn set_times(i: &mut Inode, s: &sattr3, now: (u32, u32)) {
    match s.atime {
        set_atime::SET_TO_CLIENT_TIME(t) => i.atime = (t.seconds, t.nseconds),
        set_atime::SET_TO_SERVER_TIME => i.atime = now,
        set_atime::DONT_CHANGE => {}
    }
    match s.mtime {
        set_mtime::SET_TO_CLIENT_TIME(t) => i.mtime = (t.seconds, t.nseconds),
        set_mtime::SET_TO_SERVER_TIME => i.mtime = now,
        set_mtime::DONT_CHANGE => {}
    }
}

fn create<S: PagesMut>(fs: &mut Fs<'_, S>, call: &Call, dh: &nfs_fh3, name: &[u8], how: &createhow3) -> Made {
    let dir = searchable(fs, call, dh)?;
    let existing = match name {
        b"." | b".." => return Err(nfsstat3::NFS3ERR_EXIST),
        _ => fs.lookup(&dir, name)?,
    };
    match (how, existing) {
        (createhow3::UNCHECKED(s), Some(e)) => {
            // An existing regular file is reused, truncated if asked.
            let mut obj = fs.inode(e.ino)?;
            if obj.kind != T_REG {
                return Err(nfsstat3::NFS3ERR_EXIST);
            }
            if let Nfs3Option::Some(size) = s.size {
                let only_size = sattr3 { size: Nfs3Option::Some(size), ..sattr3::default() };
                let (_, after) = apply(fs, call, &mut obj, &only_size)?;
                obj = after;
            }
            Ok((obj, dir, dir))
        }
        (createhow3::EXCLUSIVE(v), Some(e)) => {
            // The retransmission of an exclusive create that succeeded.
            let obj = fs.inode(e.ino)?;
            if obj.kind == T_REG && obj.verifier == v.0 {
                Ok((obj, dir, dir))
            } else {
                Err(nfsstat3::NFS3ERR_EXIST)
            }
        }
        (_, Some(_)) => Err(nfsstat3::NFS3ERR_EXIST),
        (createhow3::UNCHECKED(s) | createhow3::GUARDED(s), None) => make(fs, call, dh, name, T_REG, s, (0, 0), &[]),
        (createhow3::EXCLUSIVE(v), None) => {
            let (mut obj, before, after) = make(fs, call, dh, name, T_REG, &sattr3::default(), (0, 0), &[])?;
            obj.verifier = v.0;
            obj.save(fs.s, &fs.l)?;
            Ok((obj, before, after))
        }
    }
}

fn setattr<S: PagesMut>(fs: &mut Fs<'_, S>, call: &Call, a: &SETATTR3args) -> R<(Inode, Inode)> {
    let mut i = resolve(fs, &a.object)?;
    if let Nfs3Option::Some(t) = a.guard {
        if (t.seconds, t.nseconds) != i.ctime {
            return Err(nfsstat3::NFS3ERR_NOT_SYNC);
        }
    }
    apply(fs, call, &mut i, &a.new_attributes)
}

/// Checks and applies a sattr3 to an existing object; returns (before, after).
fn apply<S: PagesMut>(fs: &mut Fs<'_, S>, call: &Call, i: &mut Inode, s: &sattr3) -> R<(Inode, Inode)> {
    let cred = &call.cred;
    let before = *i;
    let root = cred.uid == 0;
    let owner = root || cred.uid == i.uid;
    if s.mode.is_some() && !owner {
        return Err(nfsstat3::NFS3ERR_PERM);
    }
    if let Nfs3Option::Some(u) = s.uid {
        if u != i.uid && !root {
            return Err(nfsstat3::NFS3ERR_PERM);
        }
    }
    if let Nfs3Option::Some(g) = s.gid {
        if g != i.gid && !(root || (owner && cred.in_group(g))) {
            return Err(nfsstat3::NFS3ERR_PERM);
        }
    }
    if let Nfs3Option::Some(size) = s.size {
        match i.kind {
            T_REG => {}
            T_DIR => return Err(nfsstat3::NFS3ERR_ISDIR),
            _ => return Err(nfsstat3::NFS3ERR_INVAL),
        }
        if !may_io(cred, i, W_OK) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        if size > crate::store::MAX_BLOCKS * crate::store::PAGE {
            return Err(nfsstat3::NFS3ERR_FBIG);
        }
    }
    let client_time =
        matches!(s.atime, set_atime::SET_TO_CLIENT_TIME(_)) || matches!(s.mtime, set_mtime::SET_TO_CLIENT_TIME(_));
    let server_time =
        matches!(s.atime, set_atime::SET_TO_SERVER_TIME) || matches!(s.mtime, set_mtime::SET_TO_SERVER_TIME);
    if client_time && !owner {
        return Err(nfsstat3::NFS3ERR_PERM);
    }
    if server_time && !owner && !may(cred, i, W_OK) {
        return Err(nfsstat3::NFS3ERR_ACCES);
    }
    if let Nfs3Option::Some(m) = s.mode {
        i.mode = m & 0o7777;
        // Only a member of the file's group may make it set-group-id.
        if !root && i.kind != T_DIR && !cred.in_group(i.gid) {
            i.mode &= !0o2000;
        }
    }
    let mut owner_changed = false;
    if let Nfs3Option::Some(u) = s.uid {
        owner_changed |= u != i.uid;
        i.uid = u;
    }
    if let Nfs3Option::Some(g) = s.gid {
        owner_changed |= g != i.gid;
        i.gid = g;
    }
    if owner_changed && !root && i.kind == T_REG {
        i.mode &= !0o6000;
    }
    if let Nfs3Option::Some(size) = s.size {
        if size < i.size {
            fs.truncate_blocks(i, size)?;
        }
        if size != i.size {
            i.mtime = call.now;
        }
        i.size = size;
    }
    set_times(i, s, call.now);
    i.ctime = call.now;
    i.verifier = [0; 8];
    i.save(fs.s, &fs.l)?;
    fs.flush()?;
    Ok((before, *i))
}

fn write<S: PagesMut>(fs: &mut Fs<'_, S>, call: &Call, a: &WRITE3args<'static>) -> R<WRITE3resok> {
    let mut i = resolve(fs, &a.file)?;
    match i.kind {
        T_REG => {}
        T_DIR => return Err(nfsstat3::NFS3ERR_ISDIR),
        _ => return Err(nfsstat3::NFS3ERR_INVAL),
    }
    if !may_io(&call.cred, &i, W_OK) {
        return Err(nfsstat3::NFS3ERR_ACCES);
    }
    let data = &a.data[..(a.count as usize).min(a.data.len())];
    let end = a.offset.checked_add(data.len() as u64).ok_or(nfsstat3::NFS3ERR_FBIG)?;
    if end > crate::store::MAX_BLOCKS * crate::store::PAGE {
        return Err(nfsstat3::NFS3ERR_FBIG);
    }
    let before = i;
    fs.write_at(&mut i, a.offset, data)?;
    i.size = i.size.max(end);
    touch(&mut i, call.now);
    // A write by anyone but root drops set-user-id and set-group-id.
    if call.cred.uid != 0 {
        i.mode &= !0o6000;
    }
    i.save(fs.s, &fs.l)?;
    fs.flush()?;
    Ok(WRITE3resok {
        file_wcc: wcc(&before, &i),
        count: data.len() as u32,
        // Written into the replicated state: as stable as the cluster's log.
        committed: stable_how::FILE_SYNC,
        verf: writeverf3(WRITE_VERF),
    })
}

/// REMOVE (`rmdir` false) and RMDIR: returns the directory (before, after).
fn unlink<S: PagesMut>(fs: &mut Fs<'_, S>, call: &Call, dh: &nfs_fh3, name: &[u8], rmdir: bool) -> R<(Inode, Inode)> {
    let mut dir = writable_dir(fs, call, dh)?;
    match name {
        b"." => return Err(nfsstat3::NFS3ERR_INVAL),
        b".." => return Err(if rmdir { nfsstat3::NFS3ERR_NOTEMPTY } else { nfsstat3::NFS3ERR_INVAL }),
        _ => {}
    }
    let mut victim = child(fs, &dir, name)?;
    match (rmdir, victim.kind == T_DIR) {
        (false, true) => return Err(nfsstat3::NFS3ERR_ISDIR),
        (true, false) => return Err(nfsstat3::NFS3ERR_NOTDIR),
        (true, true) if !fs.is_empty_dir(&victim) => return Err(nfsstat3::NFS3ERR_NOTEMPTY),
        _ => {}
    }
    if !sticky_allows(&call.cred, &dir, &victim) {
        return Err(nfsstat3::NFS3ERR_ACCES);
    }
    let before = dir;
    fs.remove(&mut dir, name)?;
    if rmdir {
        dir.nlink -= 1;
        fs.free_inode(&mut victim)?;
    } else {
        drop_link(fs, &mut victim, call.now)?;
    }
    touch(&mut dir, call.now);
    dir.save(fs.s, &fs.l)?;
    fs.flush()?;
    Ok((before, dir))
}

/// One name of a non-directory is gone: the inode goes with its last name.
pub fn drop_link<S: PagesMut>(fs: &mut Fs<'_, S>, i: &mut Inode, now: (u32, u32)) -> R<()> {
    i.nlink = i.nlink.saturating_sub(1);
    if i.nlink == 0 {
        fs.free_inode(i)
    } else {
        i.ctime = now;
        i.save(fs.s, &fs.l)
    }
}

fn link<S: PagesMut>(
    fs: &mut Fs<'_, S>,
    call: &Call,
    fh: &nfs_fh3,
    dh: &nfs_fh3,
    name: &[u8],
) -> R<(Inode, Inode, Inode)> {
    let mut i = resolve(fs, fh)?;
    let mut dir = writable_dir(fs, call, dh)?;
    if i.kind == T_DIR {
        return Err(nfsstat3::NFS3ERR_ISDIR);
    }
    check_new_name(name)?;
    if fs.lookup(&dir, name)?.is_some() {
        return Err(nfsstat3::NFS3ERR_EXIST);
    }
    if i.nlink == u32::MAX {
        return Err(nfsstat3::NFS3ERR_MLINK);
    }
    if Fs::<S>::insert_pages_needed(&dir) > fs.sb.free_blocks {
        return Err(nfsstat3::NFS3ERR_NOSPC);
    }
    let before = dir;
    fs.insert(&mut dir, name, i.ino)?;
    touch(&mut dir, call.now);
    dir.save(fs.s, &fs.l)?;
    // The same inode may be the directory itself only for directories, which
    // cannot be linked; so saving both is safe.
    i.nlink += 1;
    i.ctime = call.now;
    i.save(fs.s, &fs.l)?;
    fs.flush()?;
    Ok((i, before, dir))
}
