//! What the tests with real `pbft` processes share: a cluster directory,
//! replicas under a [`Processes`] guard, clients, a workload whose every result
//! is checked against [`KvModel`], metrics, and network namespaces.
//!
//! Each client works on keys of its own, so its results are deterministic
//! however the clients interleave.

// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pbft_kv::{KvModel, KvOp, KvResult};
use pbft_node::cluster::Protocol;
use pbft_node::launcher::{replica_command, wait_until_up, Processes};
use pbft_node::metrics::{sample_value, scrape};
use pbft_node::{ClientOptions, Cluster, ClusterClient};

pub const BIN: &str = env!("CARGO_BIN_EXE_pbft");

/// Runs the `pbft` binary to completion.
pub fn pbft(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("the pbft binary runs")
}

/// A 4-replica cluster on 127.0.0.1 with free ports and `clients` clients,
/// written into `dir`; returns the cluster file's path.
pub fn keygen(dir: &Path, clients: u32) -> PathBuf {
    keygen_on(dir, "127.0.0.1", 0, clients)
}

/// A 4-replica cluster on `hosts` (comma-separated, round robin) from
/// `base_port` (0: free ports on this machine). Metrics are served on the
/// hosts' addresses, so that a test can read them from another network
/// namespace.
pub fn keygen_on(dir: &Path, hosts: &str, base_port: u16, clients: u32) -> PathBuf {
    let out = dir.to_str().expect("utf-8 temp path");
    let (base_port, clients) = (base_port.to_string(), clients.to_string());
    let args = [
        "keygen",
        "--replicas",
        "4",
        "--hosts",
        hosts,
        "--base-port",
        &base_port,
        "--clients",
        &clients,
        "--public-metrics",
        "--out",
        out,
    ];
    let o = pbft(&args);
    assert!(o.status.success(), "keygen: {}", String::from_utf8_lossy(&o.stderr));
    dir.join("cluster.toml")
}

/// Rewrites the protocol section of the cluster file at `path`.
pub fn set_protocol(path: &Path, change: impl FnOnce(&mut Protocol)) {
    let mut file = Cluster::load(path).expect("cluster").file;
    change(&mut file.protocol);
    // What the replicas will load must pass the same checks.
    Cluster::from_file(file.clone(), path).expect("the changed cluster file is valid");
    std::fs::write(path, file.to_toml()).expect("write the cluster file");
}

/// Where replica `id` of a test in `dir` logs.
pub fn log_path(dir: &Path, id: u16) -> PathBuf {
    dir.join(format!("replica-{id}.log"))
}

/// Everything replica `id` logged so far (empty if it logged nothing).
pub fn log_text(dir: &Path, id: u16) -> String {
    std::fs::read_to_string(log_path(dir, id)).unwrap_or_default()
}

/// The last `lines` lines of replica `id`'s log, for failure messages.
pub fn log_tail(dir: &Path, id: u16, lines: usize) -> String {
    let text = log_text(dir, id);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The tails of the 4 replicas' logs, for a failure message.
pub fn logs(dir: &Path) -> String {
    (0..4u16).map(|id| format!("--- replica {id}:\n{}\n", log_tail(dir, id, 40))).collect()
}

/// Starts replica `id` as `replica-{id}` with the extra arguments `extra`,
/// logging at info level (appending: a restarted replica keeps one log).
pub fn spawn_replica(procs: &mut Processes, path: &Path, dir: &Path, id: u16, extra: &[String]) {
    let mut cmd = replica_command(Path::new(BIN), path, id, Some(&log_path(dir, id))).expect("command");
    cmd.args(extra).env("RUST_LOG", "info");
    procs.spawn(format!("replica-{id}"), cmd).expect("spawn");
}

/// Starts replica `id` as `replica-{id}` inside network namespace `namespace`,
/// logging at info level.
pub fn spawn_replica_in(procs: &mut Processes, namespace: &str, path: &Path, dir: &Path, id: u16) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path(dir, id)).expect("log file");
    let mut cmd = Command::new("ip");
    // `ip netns exec` execs the replica: the child's pid is the replica's.
    cmd.args(["netns", "exec", namespace, BIN, "replica", "--config"])
        .arg(path)
        .args(["--id", &id.to_string()])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    procs.spawn(format!("replica-{id}"), cmd).expect("spawn");
}

pub fn start_replicas(path: &Path, dir: &Path) -> Processes {
    start_replicas_with(path, dir, |_| Vec::new())
}

/// Starts the 4 replicas, replica `id` with the extra arguments `extra(id)`,
/// and waits until they serve metrics.
pub fn start_replicas_with(path: &Path, dir: &Path, extra: impl Fn(u16) -> Vec<String>) -> Processes {
    let mut procs = Processes::new();
    for id in 0..4u16 {
        spawn_replica(&mut procs, path, dir, id, &extra(id));
    }
    let cluster = Cluster::load(path).expect("cluster");
    let metrics: Vec<_> = cluster.replicas.iter().filter_map(|r| r.metrics_addr).collect();
    wait_until_up(&mut procs, &metrics, Duration::from_secs(20)).expect("replicas come up");
    procs
}

/// Client `id` of the cluster in `path`, with a 10 s request timeout.
pub fn open_client(path: &Path, id: u32) -> ClusterClient {
    let cluster = Cluster::load(path).expect("cluster");
    let options = ClientOptions { timeout: Duration::from_secs(10), ..Default::default() };
    ClusterClient::open(&cluster, id, &cluster.default_client_key_path(id), &options).expect("client")
}

/// Operation `i` of client `id`: puts, gets, compare-and-swaps, deletes and
/// scans over eight keys of its own.
pub fn operation(id: u32, i: usize) -> KvOp {
    let key = |k: usize| format!("c{id}/k{k}").into_bytes();
    match i % 6 {
        0 | 3 => KvOp::Put { key: key(i % 8), value: format!("v{i}").into_bytes() },
        1 => KvOp::Get { key: key((i + 5) % 8) },
        2 => KvOp::Cas {
            key: key(i % 8),
            expected: Some(format!("v{}", i - 2).into_bytes()),
            new: Some(b"swapped".to_vec()),
        },
        4 => KvOp::Delete { key: key((i * 3) % 8) },
        _ => KvOp::Scan { start: format!("c{id}/").into_bytes(), end: format!("c{id}0").into_bytes(), limit: 16 },
    }
}

/// Runs operations `range` of client `id`, checking each result.
pub fn run_ops(
    client: &mut ClusterClient,
    model: &mut KvModel,
    id: u32,
    range: std::ops::Range<usize>,
    deadline: Instant,
) {
    for i in range {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "client {id}: out of time at operation {i}");
        client.set_timeout(left.min(Duration::from_secs(10)));
        let op = operation(id, i);
        let bytes = client
            .invoke(Bytes::from(op.encode()), op.is_read_only())
            .unwrap_or_else(|e| panic!("client {id} op {i} {op:?}: {e}"));
        let got = KvResult::decode(&bytes).expect("result decodes");
        assert_eq!(got, model.apply(&op), "client {id} op {i}: {op:?}");
    }
}

/// The text of a panic caught from a thread.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Replica `id`'s metrics endpoint.
pub fn metrics_addr(cluster: &Cluster, id: u16) -> SocketAddr {
    cluster.replicas[id as usize].metrics_addr.expect("keygen gives every replica a metrics address")
}

/// The value of metric `name` (e.g. `pbft_view`) of replica `id`, or None if
/// the replica does not answer.
pub fn metric(cluster: &Cluster, id: u16, name: &str) -> Option<f64> {
    let text = scrape(metrics_addr(cluster, id), Duration::from_millis(500)).ok()?;
    sample_value(&text, name)
}

/// Polls every 20 ms until `done` holds, for at most `timeout`; returns whether it held.
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs iproute2's `ip` and fails the test if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2's ip runs");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Network namespaces created by a test, deleted on drop (and with them every
/// link and every socket in them).
pub struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// A switch namespace `{tag}-sw` with a bridge, and namespaces `{tag}-h{i}`
/// for i in 0..hosts with address `{subnet}.(10 + i)` on link `eth{i}`, linked
/// to the bridge by a veth pair.
pub fn build_network(tag: &str, subnet: &str, hosts: usize) -> Namespaces {
    let sw = format!("{tag}-sw");
    let mut ns = Namespaces { names: vec![sw.clone()] };
    ip(&["netns", "add", &sw]);
    ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &sw, "link", "set", "br0", "up"]);
    for h in 0..hosts {
        let name = format!("{tag}-h{h}");
        ip(&["netns", "add", &name]);
        ns.names.push(name.clone());
        let (inner, outer) = (format!("eth{h}"), format!("p{h}"));
        ip(&["-n", &name, "link", "add", &inner, "type", "veth", "peer", "name", &outer, "netns", &sw]);
        ip(&["-n", &sw, "link", "set", &outer, "master", "br0"]);
        ip(&["-n", &sw, "link", "set", &outer, "up"]);
        ip(&["-n", &name, "addr", "add", &format!("{subnet}.{}/24", 10 + h), "dev", &inner]);
        ip(&["-n", &name, "link", "set", &inner, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
    }
    ns
}

/// Moves the calling thread into namespace `name` (sockets it opens later live there).
pub fn enter(name: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).expect("namespace file");
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid namespace fd affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// Sets host `h`'s link in the network `tag` up or down.
pub fn set_link(tag: &str, h: usize, up: bool) {
    ip(&["-n", &format!("{tag}-h{h}"), "link", "set", &format!("eth{h}"), if up { "up" } else { "down" }]);
}
