//! A file system driven as a replica drives it: request bytes in, XDR reply
//! bytes out, with a time the test sets.

use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::{Opaque, Pack, Unpack};
use pbft::service::{ExecContext, ReadContext, Service, StateRegion, StateRegionRef};
use pbft::state::{PagedState, TreeShape};
use pbft::ClientId;

use crate::request::{self, Cred};
use crate::{BfsConfig, BfsService};

pub const ROOT: Cred = Cred { uid: 0, gid: 0, gids: Vec::new() };
pub const ALICE: Cred = Cred { uid: 1000, gid: 1000, gids: Vec::new() };
pub const BOB: Cred = Cred { uid: 1001, gid: 1001, gids: Vec::new() };

pub const PAGES: u64 = 1 << 16;

pub struct T {
    state: PagedState,
    service: BfsService,
    now_us: u64,
}

type Res<T> = Result<T, nfsstat3>;

fn fname(n: &[u8]) -> filename3<'static> {
    filename3(Opaque::owned(n.to_vec()))
}

fn dirop(d: &nfs_fh3, n: &[u8]) -> diropargs3<'static> {
    diropargs3 { dir: d.clone(), name: fname(n) }
}

fn xdr(v: &impl Pack) -> Vec<u8> {
    let mut out = Vec::new();
    v.pack(&mut out).expect("packs");
    out
}

impl T {
    /// A fresh file system whose root directory everyone may write.
    pub fn new() -> T {
        let mut t = T::fresh(false);
        // A fresh file system's root is root's, 0755; the tests' users share it.
        let root = t.root();
        t.chmod(&ROOT, &root, 0o777).expect("chmod /");
        t
    }

    /// A fresh file system as formatted, with root squashing on or off.
    pub fn fresh(root_squash: bool) -> T {
        let service = BfsService::new(BfsConfig { pages: PAGES, root_squash }).expect("config");
        let state = PagedState::new(PAGES, TreeShape::default()).expect("state");
        let mut t = T { state, service, now_us: 1_600_000_000_000_000 };
        t.raw(&request::encode(crate::PROC_NULL, &ROOT, &[]), false);
        t
    }

    pub fn set_time_us(&mut self, us: u64) {
        self.now_us = us;
    }

    /// Runs a request as read-only if asked (falling back as a client does).
    pub fn raw(&mut self, op: &[u8], read_only: bool) -> Vec<u8> {
        if read_only {
            let region = StateRegionRef::new(&self.state, 0, PAGES).expect("region");
            if let Some(r) = self.service.execute_read_only(op, &ReadContext { client: ClientId(0), state: region }) {
                return r;
            }
        }
        let region = StateRegion::new(&mut self.state, 0, PAGES).expect("region");
        let mut ctx = ExecContext { client: ClientId(0), nondet_time_us: self.now_us, state: region };
        self.now_us += 1;
        self.service.execute(op, &mut ctx)
    }

    /// One NFS call; its result decoded.
    pub fn call<R: Unpack>(&mut self, cred: &Cred, proc_: u32, args: &impl Pack) -> R {
        let op = request::encode(proc_, cred, &xdr(args));
        let reply = self.raw(&op, request::is_read_only(proc_));
        let (stat, body) = request::split_reply(&reply).expect("status");
        assert_eq!(stat, request::SUCCESS, "procedure {proc_} accepted");
        let mut cur = std::io::Cursor::new(body);
        let (r, n) = R::unpack(&mut cur).expect("reply decodes");
        assert_eq!(n, body.len(), "procedure {proc_}: the reply has no trailing bytes");
        r
    }

    pub fn root(&self) -> nfs_fh3 {
        crate::nfs::root_handle()
    }

    pub fn getattr(&mut self, fh: &nfs_fh3) -> Res<fattr3> {
        match self.call::<GETATTR3res>(&ROOT, 1, &GETATTR3args { object: fh.clone() }) {
            Nfs3Result::Ok(ok) => Ok(ok.obj_attributes),
            Nfs3Result::Err((e, _)) => Err(e),
        }
    }

    pub fn lookup(&mut self, c: &Cred, d: &nfs_fh3, n: &[u8]) -> Res<nfs_fh3> {
        match self.call::<LOOKUP3res>(c, 3, &LOOKUP3args { what: dirop(d, n) }) {
            Nfs3Result::Ok(ok) => Ok(ok.object),
            Nfs3Result::Err((e, _)) => Err(e),
        }
    }

    fn created(r: Res<post_op_fh3>) -> Res<nfs_fh3> {
        match r? {
            Nfs3Option::Some(h) => Ok(h),
            Nfs3Option::None => panic!("no handle for a created object"),
        }
    }

    fn create_how(&mut self, c: &Cred, d: &nfs_fh3, n: &[u8], how: createhow3) -> Res<nfs_fh3> {
        Self::created(match self.call::<CREATE3res>(c, 8, &CREATE3args { where_: dirop(d, n), how }) {
            Nfs3Result::Ok(ok) => Ok(ok.obj),
            Nfs3Result::Err((e, _)) => Err(e),
        })
    }

    pub fn create(&mut self, c: &Cred, d: &nfs_fh3, n: &[u8]) -> Res<nfs_fh3> {
        let s = sattr3 { mode: Nfs3Option::Some(0o644), ..sattr3::default() };
        self.create_how(c, d, n, createhow3::GUARDED(s))
    }

    pub fn create_exclusive(&mut self, c: &Cred, d: &nfs_fh3, n: &[u8], v: [u8; 8]) -> Res<nfs_fh3> {
        self.create_how(c, d, n, createhow3::EXCLUSIVE(createverf3(v)))
    }

    pub fn mkdir(&mut self, c: &Cred, d: &nfs_fh3, n: &[u8]) -> Res<nfs_fh3> {
        let attributes = sattr3 { mode: Nfs3Option::Some(0o755), ..sattr3::default() };
        Self::created(match self.call::<MKDIR3res>(c, 9, &MKDIR3args { where_: dirop(d, n), attributes }) {
            Nfs3Result::Ok(ok) => Ok(ok.obj),
            Nfs3Result::Err((e, _)) => Err(e),
        })
    }

    pub fn symlink(&mut self, c: &Cred, d: &nfs_fh3, n: &[u8], target: &[u8]) -> Res<nfs_fh3> {
        let symlink = symlinkdata3 {
            symlink_attributes: sattr3::default(),
            symlink_data: nfspath3(Opaque::owned(target.to_vec())),
        };
        Self::created(match self.call::<SYMLINK3res>(c, 10, &SYMLINK3args { where_: dirop(d, n), symlink }) {
            Nfs3Result::Ok(ok) => Ok(ok.obj),
            Nfs3Result::Err((e, _)) => Err(e),
        })
    }

    fn mknod(&mut self, c: &Cred, d: &nfs_fh3, n: &[u8], what: mknoddata3) -> Res<nfs_fh3> {
        Self::created(match self.call::<MKNOD3res>(c, 11, &MKNOD3args { where_: dirop(d, n), what }) {
            Nfs3Result::Ok(ok) => Ok(ok.obj),
            Nfs3Result::Err((e, _)) => Err(e),
        })
    }

    pub fn mknod_fifo(&mut self, c: &Cred, d: &nfs_fh3, n: &[u8]) -> Res<nfs_fh3> {
        self.mknod(c, d, n, mknoddata3::NF3FIFO(sattr3::default()))
    }

    pub fn mknod_chr(&mut self, c: &Cred, d: &nfs_fh3, n: &[u8], dev: (u32, u32)) -> Res<nfs_fh3> {
        let spec = specdata3 { specdata1: dev.0, specdata2: dev.1 };
        self.mknod(c, d, n, mknoddata3::NF3CHR(devicedata3 { dev_attributes: sattr3::default(), spec }))
    }

    pub fn readlink(&mut self, fh: &nfs_fh3) -> Res<Vec<u8>> {
        match self.call::<READLINK3res>(&ROOT, 5, &READLINK3args { symlink: fh.clone() }) {
            Nfs3Result::Ok(ok) => Ok(ok.data.0.to_vec()),
            Nfs3Result::Err((e, _)) => Err(e),
        }
    }

    pub fn write(&mut self, c: &Cred, fh: &nfs_fh3, offset: u64, data: &[u8]) -> Res<u32> {
        let args = WRITE3args {
            file: fh.clone(),
            offset,
            count: data.len() as u32,
            stable: stable_how::UNSTABLE,
            data: Opaque::owned(data.to_vec()),
        };
        match self.call::<WRITE3res>(c, 7, &args) {
            Nfs3Result::Ok(ok) => {
                assert_eq!(ok.verf, writeverf3(crate::nfs::WRITE_VERF));
                Ok(ok.count)
            }
            Nfs3Result::Err((e, _)) => Err(e),
        }
    }

    pub fn read(&mut self, c: &Cred, fh: &nfs_fh3, offset: u64, count: u32) -> Res<(Vec<u8>, bool)> {
        match self.call::<READ3res>(c, 6, &READ3args { file: fh.clone(), offset, count }) {
            Nfs3Result::Ok(ok) => Ok((ok.data.to_vec(), ok.eof)),
            Nfs3Result::Err((e, _)) => Err(e),
        }
    }

    pub fn read_all(&mut self, c: &Cred, fh: &nfs_fh3) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let (data, eof) = self.read(c, fh, out.len() as u64, 32 * 1024).expect("read");
            out.extend_from_slice(&data);
            if eof {
                return out;
            }
        }
    }

    fn setattr(&mut self, c: &Cred, fh: &nfs_fh3, s: sattr3, guard: Option<nfstime3>) -> Res<()> {
        let guard = guard.map_or(Nfs3Option::None, Nfs3Option::Some);
        match self.call::<SETATTR3res>(c, 2, &SETATTR3args { object: fh.clone(), new_attributes: s, guard }) {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((e, _)) => Err(e),
        }
    }

    pub fn chmod(&mut self, c: &Cred, fh: &nfs_fh3, mode: u32) -> Res<()> {
        self.setattr(c, fh, sattr3 { mode: Nfs3Option::Some(mode), ..sattr3::default() }, None)
    }

    pub fn chown(&mut self, c: &Cred, fh: &nfs_fh3, uid: u32) -> Res<()> {
        self.setattr(c, fh, sattr3 { uid: Nfs3Option::Some(uid), ..sattr3::default() }, None)
    }

    pub fn truncate(&mut self, c: &Cred, fh: &nfs_fh3, size: u64, guard: Option<nfstime3>) -> Res<()> {
        self.setattr(c, fh, sattr3 { size: Nfs3Option::Some(size), ..sattr3::default() }, guard)
    }

    pub fn remove(&mut self, c: &Cred, d: &nfs_fh3, n: &[u8]) -> Res<()> {
        match self.call::<REMOVE3res>(c, 12, &REMOVE3args { object: dirop(d, n) }) {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((e, _)) => Err(e),
        }
    }

    pub fn rmdir(&mut self, c: &Cred, d: &nfs_fh3, n: &[u8]) -> Res<()> {
        match self.call::<RMDIR3res>(c, 13, &RMDIR3args { object: dirop(d, n) }) {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((e, _)) => Err(e),
        }
    }

    pub fn rename(&mut self, c: &Cred, fd: &nfs_fh3, f: &[u8], td: &nfs_fh3, to: &[u8]) -> Res<()> {
        match self.call::<RENAME3res>(c, 14, &RENAME3args { from: dirop(fd, f), to: dirop(td, to) }) {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((e, _)) => Err(e),
        }
    }

    pub fn link(&mut self, c: &Cred, fh: &nfs_fh3, d: &nfs_fh3, n: &[u8]) -> Res<()> {
        match self.call::<LINK3res>(c, 15, &LINK3args { file: fh.clone(), link: dirop(d, n) }) {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((e, _)) => Err(e),
        }
    }

    /// One READDIR page: (names, last cookie, eof).
    pub fn readdir(&mut self, c: &Cred, d: &nfs_fh3, cookie: u64, count: u32) -> Res<(Vec<String>, u64, bool)> {
        let args = READDIR3args { dir: d.clone(), cookie, cookieverf: cookieverf3::default(), count };
        match self.call::<READDIR3res>(c, 16, &args) {
            Nfs3Result::Ok(ok) => {
                let entries = ok.reply.entries.0;
                let last = entries.last().map_or(cookie, |e| e.cookie);
                let names = entries.iter().map(|e| String::from_utf8_lossy(e.name.as_ref()).into_owned()).collect();
                Ok((names, last, ok.reply.eof))
            }
            Nfs3Result::Err((e, _)) => Err(e),
        }
    }

    /// Every name but "." and "..".
    pub fn readdir_all(&mut self, c: &Cred, d: &nfs_fh3) -> Vec<String> {
        let (mut out, mut cookie) = (Vec::new(), 0);
        loop {
            let (names, next, eof) = self.readdir(c, d, cookie, 4096).expect("readdir");
            out.extend(names.into_iter().filter(|n| n != "." && n != ".."));
            if eof {
                return out;
            }
            cookie = next;
        }
    }

    pub fn readdirplus_all(&mut self, c: &Cred, d: &nfs_fh3) -> Vec<String> {
        let (mut out, mut cookie) = (Vec::new(), 0);
        loop {
            let args = READDIRPLUS3args {
                dir: d.clone(),
                cookie,
                cookieverf: cookieverf3::default(),
                dircount: 4096,
                maxcount: 16384,
            };
            let Nfs3Result::Ok(ok) = self.call::<READDIRPLUS3res>(c, 17, &args) else { panic!("readdirplus") };
            for e in &ok.reply.entries.0 {
                assert!(
                    e.name_handle.is_some() && e.name_attributes.is_some(),
                    "READDIRPLUS carries handles and attributes"
                );
                cookie = e.cookie;
                let n = String::from_utf8_lossy(e.name.as_ref()).into_owned();
                if n != "." && n != ".." {
                    out.push(n);
                }
            }
            if ok.reply.eof {
                return out;
            }
        }
    }

    pub fn fsstat_free_blocks(&mut self) -> u64 {
        let root = self.root();
        match self.call::<FSSTAT3res>(&ROOT, 18, &FSSTAT3args { fsroot: root }) {
            Nfs3Result::Ok(ok) => ok.fbytes / 4096,
            Nfs3Result::Err((e, _)) => panic!("fsstat: {e}"),
        }
    }
}
