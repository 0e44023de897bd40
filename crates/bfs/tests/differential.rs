//! Differential test: one randomized sequence of NFSv3 calls, sent through
//! the `nfs3_client` crate (an NFSv3 client nobody here wrote) to BFS (4
//! replica processes behind the relay) and to the same service without
//! replication, gets the same replies field by field, apart from times (each
//! side has its own clock: the primary's agreed time, or the relay's).
//!
//! Each side is reached as nfs3_client reaches any server: PORTMAP GETPORT
//! for the MOUNT and NFS ports, MNT of "/", then NFSv3 calls, from two
//! AUTH_UNIX users (root, and an ordinary user) so that permission checks
//! are compared too.

mod common;

use std::fmt::Debug;

use common::{serial, unreplicated, Bfs};
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Connection, Nfs3ConnectionBuilder, RpcError};

type Connection = Nfs3Connection<TokioIo<tokio::net::TcpStream>>;

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

/// A reply as compared: its Debug text without times. An RPC-level failure
/// (a call the server did not accept) is named by its kind only, since its
/// text may carry an xid.
fn show<R: Debug>(reply: Result<R, RpcError>) -> String {
    match reply {
        Ok(r) => without_times(&format!("{r:?}")),
        Err(e) => format!("rpc error: {}", format!("{e:?}").split(['(', ' ', '{']).next().unwrap_or("")),
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

/// The two users every side is called by: root, and uid/gid 1000.
const USERS: [(u32, u32); 2] = [(0, 0), (1000, 1000)];

/// A connection to the server whose portmapper, MOUNT and NFS are all on
/// `port` (the relay's), as `uid`/`gid`.
async fn connect(port: u16, (uid, gid): (u32, u32)) -> Connection {
    let cred = auth_unix { stamp: 1, machinename: Opaque::borrowed(b"differential"), uid, gid, gids: vec![gid] };
    Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", "/")
        .portmapper_port(port)
        .connect_from_privileged_port(false)
        .credential(opaque_auth::auth_unix(&cred))
        .mount()
        .await
        .expect("nfs3_client mounts / through the portmapper")
}

/// Sends the same call to both sides; their replies as compared.
macro_rules! both {
    ($a:expr, $b:expr, $method:ident, $args:expr) => {{
        let args = $args;
        (show($a.$method(&args).await), show($b.$method(&args).await))
    }};
}

#[test]
fn replicated_and_unreplicated_give_the_same_replies() {
    let _one = serial();
    let bfs = Bfs::start(None);
    let base = unreplicated();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    runtime.block_on(async {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for user in USERS {
            a.push(connect(bfs.relay.port, user).await);
            b.push(connect(base.port, user).await);
        }
        let root = a[0].root_nfs_fh3();
        assert_eq!(root, b[0].root_nfs_fh3(), "the same root handle from MNT");
        assert_eq!(root, a[1].root_nfs_fh3(), "the same root handle for every user");
        let mut rng = Rng(0x5EED_1234_ABCD);
        // Handles seen in replies, identical on both sides by construction.
        let mut handles = vec![root.clone()];
        let mut seen = std::collections::BTreeSet::new();
        let mut refused = 0;
        for step in 0..600 {
            // One call in four comes from the ordinary user.
            let u = usize::from(rng.below(4) == 0);
            let (a, b) = (&mut a[u], &mut b[u]);
            let pick = |rng: &mut Rng, hs: &Vec<nfs_fh3>| hs[rng.below(hs.len() as u64) as usize].clone();
            let fh = pick(&mut rng, &handles);
            // Half the calls name the root directory, so that names there come and go.
            let dir = if rng.below(2) == 0 { root.clone() } else { pick(&mut rng, &handles) };
            let where_ = diropargs3 { dir: dir.clone(), name: name(&mut rng) };
            let mode = [0o644, 0o755, 0o600, 0o777][rng.below(4) as usize];
            let sattr = sattr3 { mode: Nfs3Option::Some(mode), ..sattr3::default() };
            let proc_ = 1 + rng.below(21) as u32;
            let (ra, rb) = match proc_ {
                1 => both!(a, b, getattr, GETATTR3args { object: fh }),
                2 => {
                    let size = if rng.below(2) == 0 { Nfs3Option::Some(rng.below(70_000)) } else { Nfs3Option::None };
                    let new_attributes = sattr3 { size, ..sattr };
                    both!(a, b, setattr, SETATTR3args { object: fh, new_attributes, guard: Nfs3Option::None })
                }
                3 => both!(a, b, lookup, LOOKUP3args { what: where_ }),
                4 => both!(a, b, access, ACCESS3args { object: fh, access: 0x3f }),
                5 => both!(a, b, readlink, READLINK3args { symlink: fh }),
                6 => {
                    let (offset, count) = (rng.below(60_000), 1 + rng.below(32_768) as u32);
                    both!(a, b, read, READ3args { file: fh, offset, count })
                }
                7 => {
                    let len = rng.below(32_769) as usize;
                    let data = Opaque::owned(common::bytes(len, rng.next()));
                    let (offset, stable) = (rng.below(50_000), stable_how::UNSTABLE);
                    both!(a, b, write, WRITE3args { file: fh, offset, count: len as u32, stable, data })
                }
                8 => {
                    let how = match rng.below(3) {
                        0 => createhow3::UNCHECKED(sattr),
                        1 => createhow3::GUARDED(sattr),
                        _ => createhow3::EXCLUSIVE(createverf3([rng.below(2) as u8; 8])),
                    };
                    both!(a, b, create, CREATE3args { where_, how })
                }
                9 => both!(a, b, mkdir, MKDIR3args { where_, attributes: sattr }),
                10 => {
                    let symlink_data = nfspath3(Opaque::owned(b"../x".to_vec()));
                    let symlink = symlinkdata3 { symlink_attributes: sattr, symlink_data };
                    both!(a, b, symlink, SYMLINK3args { where_, symlink })
                }
                11 => both!(a, b, mknod, MKNOD3args { where_, what: mknoddata3::NF3FIFO(sattr) }),
                12 => both!(a, b, remove, REMOVE3args { object: where_ }),
                13 => both!(a, b, rmdir, RMDIR3args { object: where_ }),
                14 => {
                    let to = diropargs3 { dir: pick(&mut rng, &handles), name: name(&mut rng) };
                    both!(a, b, rename, RENAME3args { from: where_, to })
                }
                15 => both!(a, b, link, LINK3args { file: fh, link: where_ }),
                16 => {
                    let cookieverf = cookieverf3::default();
                    both!(a, b, readdir, READDIR3args { dir, cookie: 0, cookieverf, count: 4096 })
                }
                17 => {
                    let cookieverf = cookieverf3::default();
                    let args = READDIRPLUS3args { dir, cookie: 0, cookieverf, dircount: 2048, maxcount: 8192 };
                    both!(a, b, readdirplus, args)
                }
                18 => both!(a, b, fsstat, FSSTAT3args { fsroot: fh }),
                19 => both!(a, b, fsinfo, FSINFO3args { fsroot: fh }),
                20 => both!(a, b, pathconf, PATHCONF3args { object: fh }),
                _ => both!(a, b, commit, COMMIT3args { file: fh, offset: 0, count: 0 }),
            };
            assert_eq!(ra, rb, "step {step}: procedure {proc_} as uid {}: the replies differ", USERS[u].0);
            seen.insert((proc_, ra.starts_with("Ok")));
            refused += usize::from(u == 1 && (ra.contains("NFS3ERR_ACCES") || ra.contains("NFS3ERR_PERM")));
            // New handles (from LOOKUP, CREATE, MKDIR, ...) join the pool.
            for part in ra.split("nfs_fh3 { data: Opaque(").skip(1) {
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
        let succeeded: std::collections::BTreeSet<u32> = seen.iter().filter(|(_, ok)| *ok).map(|(p, _)| *p).collect();
        assert!(succeeded.len() >= 18, "nearly every procedure succeeded at least once: {succeeded:?}");
        assert!(refused > 0, "the ordinary user was refused something");
        for c in a.into_iter().chain(b) {
            c.unmount().await.expect("UMNT");
        }
    });
}
