//! What the tests with real clients share: a relay in this process in front of
//! a cluster of `bfs` replica processes (or of the unreplicated service), the
//! libnfs command-line tools, and a small synchronous ONC RPC client that
//! sends NFSv3 calls built with nfs3_types.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bfs::backend::Pool;
use bfs::local::LocalCluster;
use bfs::relay::Relay;
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
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name} did not run ({e}): install libnfs-utils (.ci/run does, with apt-get)")
    });
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

/// A synchronous NFSv3 client over one TCP connection, AUTH_UNIX uid/gid 0.
pub struct Rpc {
    stream: TcpStream,
    xid: u32,
}

impl Rpc {
    pub fn connect(port: u16) -> Rpc {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Rpc { stream, xid: 1 }
    }

    /// Sends a call and returns the reply's accept status and result bytes.
    pub fn raw(&mut self, prog: u32, proc_: u32, args: &[u8]) -> (u32, Vec<u8>) {
        self.xid += 1;
        let mut call = Vec::new();
        let cred: Vec<u8> = [0u32, 0, 0, 0, 0].iter().flat_map(|w| w.to_be_bytes()).collect();
        for w in [self.xid, 0, 2, prog, 3, proc_, 1, cred.len() as u32] {
            call.extend_from_slice(&w.to_be_bytes());
        }
        call.extend_from_slice(&cred);
        call.extend_from_slice(&[0; 8]);
        call.extend_from_slice(args);
        let mut framed = (0x8000_0000u32 | call.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&call);
        self.stream.write_all(&framed).expect("send");
        let mut h = [0u8; 4];
        self.stream.read_exact(&mut h).expect("reply header");
        let len = (u32::from_be_bytes(h) & 0x7FFF_FFFF) as usize;
        let mut reply = vec![0u8; len];
        self.stream.read_exact(&mut reply).expect("reply");
        let word = |i: usize| u32::from_be_bytes(reply[i * 4..i * 4 + 4].try_into().expect("word"));
        assert_eq!(word(0), self.xid, "the reply carries the call's xid");
        assert_eq!((word(1), word(2)), (1, 0), "an accepted reply");
        let verf_len = word(4) as usize;
        let at = 20 + verf_len.div_ceil(4) * 4;
        let stat = u32::from_be_bytes(reply[at..at + 4].try_into().expect("stat"));
        (stat, reply[at + 4..].to_vec())
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
