//! What the tests with real clients share: a relay in this process in front of
//! a cluster of `bfs` replica processes (or of the unreplicated service), the
//! libnfs command-line tools, and a small synchronous ONC RPC client that
//! sends NFSv3 calls built with nfs3_types.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bfs::backend::Pool;
use bfs::local::LocalCluster;
use bfs::nfs_client::NfsTcp;
use bfs::relay::Relay;
use bfs::request::Cred;
use nfs3_types::xdr_codec::{Pack, Unpack};

/// Clusters of 4 replicas each on 2 cores: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

pub const PAGES: u64 = 1 << 16;

/// A relay serving on a free port until dropped.
pub struct RelayHandle {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RelayHandle {
    pub fn start(pool: Pool, max_op: usize) -> RelayHandle {
        let relay = Relay::bind("127.0.0.1:0".parse().expect("addr"), Arc::new(pool), max_op).expect("relay binds");
        let port = relay.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let _ = relay.run(&s);
        });
        RelayHandle { port, stop, thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("nfs://127.0.0.1/{path}?nfsport={p}&mountport={p}", p = self.port)
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A replicated BFS: 4 replica processes and a relay with 8 BFT clients.
pub struct Bfs {
    pub cluster: LocalCluster,
    pub relay: RelayHandle,
    pub dir: tempfile::TempDir,
}

impl Bfs {
    pub fn start(faulty: Option<(u16, &str)>) -> Bfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = Path::new(env!("CARGO_BIN_EXE_bfs"));
        let faulty = faulty.map(|(id, m)| (id, m.to_string()));
        let cluster = LocalCluster::start(bin, dir.path(), PAGES, 12, faulty).expect("cluster starts");
        let pool = Pool::of_cluster(&cluster.cluster, (0, 8)).expect("clients");
        let relay = RelayHandle::start(pool, cluster.cluster.config().max_op_bytes);
        Bfs { cluster, relay, dir }
    }
}

/// The unreplicated baseline behind the same relay.
pub fn unreplicated() -> RelayHandle {
    RelayHandle::start(Pool::local(PAGES).expect("local"), usize::MAX)
}

/// Runs a libnfs tool; panics with its stderr when it fails.
pub fn tool(name: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} did not run ({e}): install libnfs-utils (.ci/run does, with apt-get)"));
    assert!(out.status.success(), "{name} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A synchronous NFSv3 client over one TCP connection, AUTH_UNIX uid/gid 0
/// (the library's client of other NFS servers).
pub struct Rpc(NfsTcp);

impl Rpc {
    pub fn connect(port: u16) -> Rpc {
        Rpc(NfsTcp::connect(([127, 0, 0, 1], port).into()).expect("connect"))
    }

    /// Sends a call and returns the reply's accept status and result bytes.
    pub fn raw(&mut self, prog: u32, proc_: u32, args: &[u8]) -> (u32, Vec<u8>) {
        self.0.call(prog, 3, proc_, &Cred::root(), args).expect("an accepted reply")
    }

    /// One NFSv3 call, its result decoded.
    pub fn call<R: Unpack>(&mut self, proc_: u32, args: &impl Pack) -> R {
        let mut a = Vec::new();
        args.pack(&mut a).expect("pack");
        let (stat, body) = self.raw(100_003, proc_, &a);
        assert_eq!(stat, 0, "procedure {proc_} accepted");
        R::unpack(&mut std::io::Cursor::new(&body[..])).expect("reply decodes").0
    }
}
