//! The procedures that only read (RFC 1813 §3.3): GETATTR, LOOKUP, ACCESS,
//! READLINK, READ, READDIR, READDIRPLUS, FSSTAT, FSINFO, PATHCONF. They run as
//! read-only requests, and also in the read-write path when a read-only
//! request fell back to it; they never write, so atimes do not move.

use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::{List, Opaque, Pack};

use crate::dir::NAME_MAX;
use crate::nfs::*;
use crate::request::Cred;
use crate::store::{Fs, Inode, Pages, MAX_BLOCKS, PAGE, R, T_DIR, T_LNK, T_REG};

type Out = Option<Vec<u8>>;

/// Runs read-only procedure `proc_`; None for garbage arguments, or when the
/// procedure is not a read-only one.
pub fn run<S: Pages>(fs: &Fs<'_, S>, call: &Call, proc_: u32, args: &[u8]) -> Out {
    Some(match proc_ {
        1 => {
            let a: GETATTR3args = unpack(args)?;
            match resolve(fs, &a.object) {
                Ok(i) => pack(&GETATTR3res::Ok(GETATTR3resok { obj_attributes: attr(&i) })),
                Err(e) => pack(&GETATTR3res::Err((e, nfs3_types::xdr_codec::Void))),
            }
        }
        3 => {
            let a: LOOKUP3args<'static> = unpack(args)?;
            result(
                lookup(fs, call, &a.what.dir, a.what.name.as_ref())
                    .map_err(|e| (e, LOOKUP3resfail { dir_attributes: post_of(fs, &a.what.dir) })),
            )
        }
        4 => {
            let a: ACCESS3args = unpack(args)?;
            result(
                resolve(fs, &a.object)
                    .map(|i| ACCESS3resok { obj_attributes: post(&i), access: access(&call.cred, &i, a.access) })
                    .map_err(|e| (e, ACCESS3resfail::default())),
            )
        }
        5 => {
            let a: READLINK3args = unpack(args)?;
            result(
                readlink(fs, &a.symlink)
                    .map_err(|e| (e, READLINK3resfail { symlink_attributes: post_of(fs, &a.symlink) })),
            )
        }
        6 => {
            let a: READ3args = unpack(args)?;
            result(read(fs, call, &a).map_err(|e| (e, READ3resfail { file_attributes: post_of(fs, &a.file) })))
        }
        16 => {
            let a: READDIR3args = unpack(args)?;
            result(readdir(fs, call, &a).map_err(|e| (e, READDIR3resfail { dir_attributes: post_of(fs, &a.dir) })))
        }
        17 => {
            let a: READDIRPLUS3args = unpack(args)?;
            result(
                readdirplus(fs, call, &a).map_err(|e| (e, READDIRPLUS3resfail { dir_attributes: post_of(fs, &a.dir) })),
            )
        }
        18 => {
            let a: FSSTAT3args = unpack(args)?;
            result(resolve(fs, &a.fsroot).map(|i| fsstat(fs, &i)).map_err(|e| (e, FSSTAT3resfail::default())))
        }
        19 => {
            let a: FSINFO3args = unpack(args)?;
            result(resolve(fs, &a.fsroot).map(|i| fsinfo(&i)).map_err(|e| (e, FSINFO3resfail::default())))
        }
        20 => {
            let a: PATHCONF3args = unpack(args)?;
            result(
                resolve(fs, &a.object)
                    .map(|i| PATHCONF3resok {
                        obj_attributes: post(&i),
                        linkmax: u32::MAX,
                        name_max: NAME_MAX as u32,
                        no_trunc: true,
                        chown_restricted: true,
                        case_insensitive: false,
                        case_preserving: true,
                    })
                    .map_err(|e| (e, PATHCONF3resfail::default())),
            )
        }
        _ => return None,
    })
}

/// A directory the caller may search.
pub fn searchable<S: Pages>(fs: &Fs<'_, S>, call: &Call, fh: &nfs_fh3) -> R<Inode> {
    let dir = resolve(fs, fh)?;
    if dir.kind != T_DIR {
        return Err(nfsstat3::NFS3ERR_NOTDIR);
    }
    if !may(&call.cred, &dir, X_OK) {
        return Err(nfsstat3::NFS3ERR_ACCES);
    }
    Ok(dir)
}

/// The inode `name` names in `dir`, "." and ".." included.
pub fn child<S: Pages>(fs: &Fs<'_, S>, dir: &Inode, name: &[u8]) -> R<Inode> {
    if name.len() > NAME_MAX {
        return Err(nfsstat3::NFS3ERR_NAMETOOLONG);
    }
    match name {
        b"." => Ok(*dir),
        b".." => fs.inode(dir.parent),
        _ => fs.inode(fs.lookup(dir, name)?.ok_or(nfsstat3::NFS3ERR_NOENT)?.ino),
    }
}

fn lookup<S: Pages>(fs: &Fs<'_, S>, call: &Call, dh: &nfs_fh3, name: &[u8]) -> R<LOOKUP3resok> {
    let dir = searchable(fs, call, dh)?;
    let obj = child(fs, &dir, name)?;
    Ok(LOOKUP3resok { object: handle(&obj), obj_attributes: post(&obj), dir_attributes: post(&dir) })
}

/// The ACCESS bits of `asked` that the caller has on `i`.
pub fn access(cred: &Cred, i: &Inode, asked: u32) -> u32 {
    let mut ok = 0;
    if may(cred, i, R_OK) {
        ok |= ACCESS3_READ;
    }
    if may(cred, i, W_OK) {
        ok |= ACCESS3_MODIFY | ACCESS3_EXTEND;
        if i.kind == T_DIR {
            ok |= ACCESS3_DELETE;
        }
    }
    if may(cred, i, X_OK) {
        ok |= if i.kind == T_DIR { ACCESS3_LOOKUP } else { ACCESS3_EXECUTE };
    }
    ok & asked
}

fn readlink<S: Pages>(fs: &Fs<'_, S>, fh: &nfs_fh3) -> R<READLINK3resok<'static>> {
    let i = resolve(fs, fh)?;
    if i.kind != T_LNK {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    let mut data = vec![0u8; i.size.min(4096) as usize];
    fs.read_at(&i, 0, &mut data)?;
    Ok(READLINK3resok { symlink_attributes: post(&i), data: nfspath3(Opaque::owned(data)) })
}

fn read<S: Pages>(fs: &Fs<'_, S>, call: &Call, a: &READ3args) -> R<READ3resok<'static>> {
    let i = resolve(fs, &a.file)?;
    match i.kind {
        T_REG => {}
        T_DIR => return Err(nfsstat3::NFS3ERR_ISDIR),
        _ => return Err(nfsstat3::NFS3ERR_INVAL),
    }
    if !may_io(&call.cred, &i, R_OK) {
        return Err(nfsstat3::NFS3ERR_ACCES);
    }
    let start = a.offset.min(i.size);
    let n = (i.size - start).min(u64::from(a.count.min(MAX_IO)));
    let mut data = vec![0u8; n as usize];
    fs.read_at(&i, start, &mut data)?;
    Ok(READ3resok { file_attributes: post(&i), count: n as u32, eof: start + n >= i.size, data: Opaque::owned(data) })
}

/// One listed entry before it is encoded.
struct Listed {
    ino: Inode,
    name: Vec<u8>,
    cookie: u64,
}

/// Walks `dir` from `cookie` on: "." is cookie 1, ".." 2, slot s is s + 3.
/// `fits` is asked before each entry is taken. Returns the entries and eof.
fn walk<S: Pages>(
    fs: &Fs<'_, S>,
    dir: &Inode,
    cookie: u64,
    mut fits: impl FnMut(&Inode, &[u8]) -> bool,
) -> R<(Vec<Listed>, bool)> {
    let mut out = Vec::new();
    for (c, name) in [(1u64, &b"."[..]), (2, &b".."[..])] {
        if cookie < c {
            let ino = if c == 1 { *dir } else { fs.inode(dir.parent)? };
            if !fits(&ino, name) {
                return Ok((out, false));
            }
            out.push(Listed { ino, name: name.to_vec(), cookie: c });
        }
    }
    let from = cookie.saturating_sub(2).min(u64::from(u32::MAX)) as u32;
    let mut full = false;
    let mut error = None;
    fs.scan(dir, from, |e| match fs.inode(e.ino) {
        Ok(ino) => {
            if !fits(&ino, &e.name) {
                full = true;
                return false;
            }
            out.push(Listed { ino, name: e.name, cookie: u64::from(e.slot) + 3 });
            true
        }
        Err(err) => {
            error = Some(err);
            false
        }
    })?;
    if let Some(e) = error {
        return Err(e);
    }
    Ok((out, !full))
}

fn listable<S: Pages>(fs: &Fs<'_, S>, call: &Call, fh: &nfs_fh3, verf: &cookieverf3, cookie: u64) -> R<Inode> {
    let dir = resolve(fs, fh)?;
    if dir.kind != T_DIR {
        return Err(nfsstat3::NFS3ERR_NOTDIR);
    }
    if !may(&call.cred, &dir, R_OK) {
        return Err(nfsstat3::NFS3ERR_ACCES);
    }
    // Cookies never go bad (slots do not move), so the verifier is constant;
    // one that is neither it nor zero was made up.
    if cookie != 0 && *verf != cookieverf3::default() {
        return Err(nfsstat3::NFS3ERR_BAD_COOKIE);
    }
    Ok(dir)
}

/// XDR bytes of one entry3 in a list: the "more" flag, fileid, name, cookie.
fn entry_bytes(name: &[u8]) -> u32 {
    4 + 8 + 4 + (name.len() as u32).div_ceil(4) * 4 + 8
}

fn readdir<S: Pages>(fs: &Fs<'_, S>, call: &Call, a: &READDIR3args) -> R<READDIR3resok<'static>> {
    let dir = listable(fs, call, &a.dir, &a.cookieverf, a.cookie)?;
    // status, post_op_attr, verifier, list end, eof.
    let fixed = 4 + post(&dir).packed_size() as u32 + 8 + 4 + 4;
    let mut used = fixed;
    let limit = a.count.min(MAX_DIR_REPLY);
    let (list, eof) = walk(fs, &dir, a.cookie, |_, name| {
        used += entry_bytes(name);
        used <= limit
    })?;
    if list.is_empty() && !eof {
        return Err(nfsstat3::NFS3ERR_TOOSMALL);
    }
    let entries = list
        .into_iter()
        .map(|l| entry3 { fileid: u64::from(l.ino.ino), name: filename3(Opaque::owned(l.name)), cookie: l.cookie })
        .collect();
    Ok(READDIR3resok {
        dir_attributes: post(&dir),
        cookieverf: cookieverf3::default(),
        reply: dirlist3 { entries: List(entries), eof },
    })
}

fn readdirplus<S: Pages>(fs: &Fs<'_, S>, call: &Call, a: &READDIRPLUS3args) -> R<READDIRPLUS3resok<'static>> {
    let dir = listable(fs, call, &a.dir, &a.cookieverf, a.cookie)?;
    let fixed = 4 + post(&dir).packed_size() as u32 + 8 + 4 + 4;
    let (mut used, mut names) = (fixed, 0u32);
    let limit = a.maxcount.min(MAX_DIR_REPLY);
    // Each entry adds its attributes (4 + 84) and its handle (4 + 4 + 12).
    let (list, eof) = walk(fs, &dir, a.cookie, |_, name| {
        names += entry_bytes(name) - 4;
        used += entry_bytes(name) + 88 + 20;
        used <= limit && names <= a.dircount.max(512)
    })?;
    if list.is_empty() && !eof {
        return Err(nfsstat3::NFS3ERR_TOOSMALL);
    }
    let entries = list
        .into_iter()
        .map(|l| entryplus3 {
            fileid: u64::from(l.ino.ino),
            name: filename3(Opaque::owned(l.name)),
            cookie: l.cookie,
            name_attributes: post(&l.ino),
            name_handle: Nfs3Option::Some(handle(&l.ino)),
        })
        .collect();
    Ok(READDIRPLUS3resok {
        dir_attributes: post(&dir),
        cookieverf: cookieverf3::default(),
        reply: dirlistplus3 { entries: List(entries), eof },
    })
}

fn fsstat<S: Pages>(fs: &Fs<'_, S>, i: &Inode) -> FSSTAT3resok {
    let data = fs.l.pages - fs.l.data_start;
    FSSTAT3resok {
        obj_attributes: post(i),
        tbytes: data * PAGE,
        fbytes: fs.sb.free_blocks * PAGE,
        abytes: fs.sb.free_blocks * PAGE,
        tfiles: fs.l.inodes,
        ffiles: fs.sb.free_inodes,
        afiles: fs.sb.free_inodes,
        invarsec: 0,
    }
}

fn fsinfo(i: &Inode) -> FSINFO3resok {
    FSINFO3resok {
        obj_attributes: post(i),
        rtmax: MAX_IO,
        rtpref: MAX_IO,
        rtmult: PAGE as u32,
        wtmax: MAX_IO,
        wtpref: MAX_IO,
        wtmult: PAGE as u32,
        dtpref: MAX_DIR_REPLY,
        maxfilesize: MAX_BLOCKS * PAGE - 1,
        // Times come from the agreed clock in microseconds.
        time_delta: nfstime3 { seconds: 0, nseconds: 1000 },
        properties: FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME,
    }
}
