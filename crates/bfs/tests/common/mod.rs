//! What the tests with real clients share: a relay in this process in front of
//! a cluster of `bfs` replica processes (or of the unreplicated service), the
//! libnfs command-line tools, `bfs mount` processes, the tools installed with
//! `cargo install` (pjdfstest, fsx), and a small synchronous ONC RPC client
//! that sends NFSv3 calls built with nfs3_types.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
        Bfs::start_sized(PAGES, faulty)
    }

    /// A replicated BFS whose state is `pages` pages of 4 KiB.
    pub fn start_sized(pages: u64, faulty: Option<(u16, &str)>) -> Bfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = Path::new(env!("CARGO_BIN_EXE_bfs"));
        let faulty = faulty.map(|(id, m)| (id, m.to_string()));
        let cluster = LocalCluster::start(bin, dir.path(), pages, 12, faulty).expect("cluster starts");
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

/// A `bfs mount` process; unmounted when dropped.
pub struct Mount {
    child: Child,
    dir: std::path::PathBuf,
}

pub fn mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts.lines().any(|l| l.split_whitespace().nth(1) == dir.to_str())
}

impl Mount {
    pub fn start(config: &Path, dir: &Path) -> Mount {
        let child = Command::new(env!("CARGO_BIN_EXE_bfs"))
            .arg("mount")
            .arg("--config")
            .arg(config)
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("bfs mount starts");
        let m = Mount { child, dir: dir.into() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !mounted(dir) {
            assert!(Instant::now() < deadline, "not mounted within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // SIGINT: bfs mount unmounts and exits.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Runs a shell script; panics with its output when it fails.
pub fn sh(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).output().expect("sh runs");
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Set (to anything) where a missing tool must fail the test instead of
/// skipping it: `.ci/run` exports it after installing the tools.
pub const REQUIRE_TOOLS: &str = "BFS_REQUIRE_TOOLS";

/// The path of the command `name` on PATH or in Cargo's bin directory, or
/// `None` (with a note on stderr) when it is not installed and
/// [`REQUIRE_TOOLS`] is not set; panics when it is missing and required.
pub fn installed_tool(name: &str, install: &str) -> Option<std::path::PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|c| c.join("bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).chain(cargo_bin).map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os(REQUIRE_TOOLS).is_none(),
            "{name} is not installed ({REQUIRE_TOOLS} is set): {install}"
        );
        eprintln!("SKIPPED: {name} is not installed ({install}; set {REQUIRE_TOOLS} to make this a failure)");
    }
    found
}
