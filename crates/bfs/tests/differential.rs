//! Differential test: one randomized sequence of NFSv3 calls, sent to BFS (4
//! replica processes) and to the same service without replication, gets the
//! same replies field by field, apart from times (each side has its own
//! clock: the primary's agreed time, or the relay's).

mod common;

use std::fmt::Debug;

use common::{serial, unreplicated, Bfs, Rpc};
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::{Opaque, Pack, Unpack};

/// The Debug text of a reply with every nfstime3's value left out.
fn without_times(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("nfstime3 {") {
        out.push_str(&rest[..at]);
        out.push_str("nfstime3");
        rest = &rest[at..];
        rest = rest.find('}').map_or("", |end| &rest[end + 1..]);
    }
    out.push_str(rest);
    out
}

fn show<R: Unpack + Debug>(body: &[u8]) -> String {
    match R::unpack(&mut std::io::Cursor::new(body)) {
        Ok((r, _)) => without_times(&format!("{r:?}")),
        Err(e) => format!("undecodable: {e:?}"),
    }
}

fn describe(proc_: u32, body: &[u8]) -> String {
    match proc_ {
        1 => show::<GETATTR3res>(body),
        2 => show::<SETATTR3res>(body),
        3 => show::<LOOKUP3res>(body),
        4 => show::<ACCESS3res>(body),
        5 => show::<READLINK3res>(body),
        6 => show::<READ3res>(body),
        7 => show::<WRITE3res>(body),
        8 => show::<CREATE3res>(body),
        9 => show::<MKDIR3res>(body),
        10 => show::<SYMLINK3res>(body),
        11 => show::<MKNOD3res>(body),
        12 => show::<REMOVE3res>(body),
        13 => show::<RMDIR3res>(body),
        14 => show::<RENAME3res>(body),
        15 => show::<LINK3res>(body),
        16 => show::<READDIR3res>(body),
        17 => show::<READDIRPLUS3res>(body),
        18 => show::<FSSTAT3res>(body),
        19 => show::<FSINFO3res>(body),
        20 => show::<PATHCONF3res>(body),
        _ => show::<COMMIT3res>(body),
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn name(rng: &mut Rng) -> filename3<'static> {
    filename3(Opaque::owned(format!("n{}", rng.below(10)).into_bytes()))
}

fn xdr(v: &impl Pack) -> Vec<u8> {
    let mut out = Vec::new();
    v.pack(&mut out).expect("pack");
    out
}

#[test]
fn replicated_and_unreplicated_give_the_same_replies() {
    let _one = serial();
    let bfs = Bfs::start(None);
    let base = unreplicated();
    let (mut a, mut b) = (Rpc::connect(bfs.relay.port), Rpc::connect(base.port));
    let mut rng = Rng(0x5EED_1234_ABCD);
    let root = bfs::nfs::root_handle();
    // Handles seen in replies, identical on both sides by construction.
    let mut handles = vec![root.clone()];
    let mut procs_seen = std::collections::BTreeSet::new();
    for step in 0..600 {
        let pick = |rng: &mut Rng, hs: &Vec<nfs_fh3>| hs[rng.below(hs.len() as u64) as usize].clone();
        let fh = pick(&mut rng, &handles);
        // Half the calls name the root directory, so that names there come and go.
        let dir = if rng.below(2) == 0 { root.clone() } else { pick(&mut rng, &handles) };
        let where_ = diropargs3 { dir: dir.clone(), name: name(&mut rng) };
        let mode = [0o644, 0o755, 0o600, 0o777][rng.below(4) as usize];
        let sattr = sattr3 { mode: Nfs3Option::Some(mode), ..sattr3::default() };
        let proc_ = 1 + rng.below(21) as u32;
        let args = match proc_ {
            1 => xdr(&GETATTR3args { object: fh }),
            2 => {
                let size = if rng.below(2) == 0 { Nfs3Option::Some(rng.below(70_000)) } else { Nfs3Option::None };
                xdr(&SETATTR3args { object: fh, new_attributes: sattr3 { size, ..sattr }, guard: Nfs3Option::None })
            }
            3 => xdr(&LOOKUP3args { what: where_ }),
            4 => xdr(&ACCESS3args { object: fh, access: 0x3f }),
            5 => xdr(&READLINK3args { symlink: fh }),
            6 => xdr(&READ3args { file: fh, offset: rng.below(60_000), count: 1 + rng.below(40_000) as u32 }),
            7 => {
                let len = rng.below(33_000) as usize;
                let data = common::bytes(len, rng.next());
                let stable = stable_how::UNSTABLE;
                xdr(&WRITE3args {
                    file: fh,
                    offset: rng.below(50_000),
                    count: len as u32,
                    stable,
                    data: Opaque::owned(data),
                })
            }
            8 => {
                let how = match rng.below(3) {
                    0 => createhow3::UNCHECKED(sattr),
                    1 => createhow3::GUARDED(sattr),
                    _ => createhow3::EXCLUSIVE(createverf3([rng.below(2) as u8; 8])),
                };
                xdr(&CREATE3args { where_, how })
            }
            9 => xdr(&MKDIR3args { where_, attributes: sattr }),
            10 => {
                let symlink =
                    symlinkdata3 { symlink_attributes: sattr, symlink_data: nfspath3(Opaque::owned(b"../x".to_vec())) };
                xdr(&SYMLINK3args { where_, symlink })
            }
            11 => xdr(&MKNOD3args { where_, what: mknoddata3::NF3FIFO(sattr) }),
            12 => xdr(&REMOVE3args { object: where_ }),
            13 => xdr(&RMDIR3args { object: where_ }),
            14 => {
                let to = diropargs3 { dir: pick(&mut rng, &handles), name: name(&mut rng) };
                xdr(&RENAME3args { from: where_, to })
            }
            15 => xdr(&LINK3args { file: fh, link: where_ }),
            16 => xdr(&READDIR3args { dir, cookie: 0, cookieverf: cookieverf3::default(), count: 4096 }),
            17 => xdr(&READDIRPLUS3args {
                dir,
                cookie: 0,
                cookieverf: cookieverf3::default(),
                dircount: 2048,
                maxcount: 8192,
            }),
            18 => xdr(&FSSTAT3args { fsroot: fh }),
            19 => xdr(&FSINFO3args { fsroot: fh }),
            20 => xdr(&PATHCONF3args { object: fh }),
            _ => xdr(&COMMIT3args { file: fh, offset: 0, count: 0 }),
        };
        let (sa, ra) = a.raw(100_003, proc_, &args);
        let (sb, rb) = b.raw(100_003, proc_, &args);
        assert_eq!(sa, sb, "step {step}: procedure {proc_}: accept status");
        let (da, db) = (describe(proc_, &ra), describe(proc_, &rb));
        assert_eq!(da, db, "step {step}: procedure {proc_}: the replies differ");
        procs_seen.insert((proc_, da.starts_with("Ok")));
        // New handles (from LOOKUP, CREATE, MKDIR, ...) join the pool.
        for part in da.split("nfs_fh3 { data: Opaque(").skip(1) {
            let bytes: Vec<u8> = part
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect();
            let fh = nfs_fh3 { data: Opaque::owned(bytes) };
            if fh.data.len() == 12 && !handles.contains(&fh) {
                handles.push(fh);
            }
        }
    }
    let succeeded: std::collections::BTreeSet<u32> = procs_seen.iter().filter(|(_, ok)| *ok).map(|(p, _)| *p).collect();
    assert!(succeeded.len() >= 18, "every procedure succeeded at least once: {succeeded:?}");
}
