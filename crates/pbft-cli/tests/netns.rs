//! The same cluster file on several hosts: each replica runs in a network
//! namespace of its own and the client in another, all joined by veth links to
//! a bridge in a "switch" namespace, with addresses of the test's own. 1,000
//! operations must be correct; then one backup's link goes down and the
//! service goes on. Everything the test creates is removed when it ends
//! (`Namespaces` deletes the namespaces, and with them every link and process
//! socket; `Processes` kills the replicas). Needs root and iproute2 (`.ci/run`
//! installs it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pbft_kv::{KvModel, KvOp, KvResult};
use pbft_node::launcher::Processes;
use pbft_node::{ClientOptions, Cluster, ClusterClient};

const BIN: &str = env!("CARGO_BIN_EXE_pbft");
const SUBNET: &str = "10.213.77";
const BUDGET: Duration = Duration::from_secs(90);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2's ip runs");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Network namespaces created by this test, deleted on drop.
struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// A switch namespace with a bridge, and one namespace per host with address
/// SUBNET.(10 + i), linked to the bridge by a veth pair.
fn build_network(tag: &str, hosts: usize) -> Namespaces {
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
        ip(&["-n", &name, "addr", "add", &format!("{SUBNET}.{}/24", 10 + h), "dev", &inner]);
        ip(&["-n", &name, "link", "set", &inner, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
    }
    ns
}

/// Moves the calling thread into namespace `name` (sockets it opens later live there).
fn enter(name: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).expect("namespace file");
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid namespace fd affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

fn op(i: usize) -> KvOp {
    let key = format!("k{}", i % 16).into_bytes();
    match i % 4 {
        0 | 2 => KvOp::Put { key, value: format!("v{i}").into_bytes() },
        1 => KvOp::Get { key },
        _ => KvOp::Delete { key },
    }
}

fn run(client: &mut ClusterClient, model: &mut KvModel, range: std::ops::Range<usize>, deadline: Instant) {
    for i in range {
        assert!(Instant::now() < deadline, "out of time at operation {i}");
        let o = op(i);
        let got = client.invoke(Bytes::from(o.encode()), o.is_read_only()).unwrap_or_else(|e| panic!("op {i}: {e}"));
        assert_eq!(KvResult::decode(&got).expect("decodes"), model.apply(&o), "op {i} {o:?}");
    }
}

#[test]
fn one_cluster_file_across_namespaces_survives_a_cut_link() {
    let deadline = Instant::now() + BUDGET;
    let tag = format!("pbft{}", std::process::id());
    let _net = build_network(&tag, 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = (0..4).map(|h| format!("{SUBNET}.{}", 10 + h)).collect::<Vec<_>>().join(",");
    let out = Command::new(BIN)
        .args(["keygen", "--replicas", "4", "--hosts", &hosts, "--base-port", "7000", "--clients", "1", "--out"])
        .arg(dir.path())
        .output()
        .expect("keygen runs");
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    let path = dir.path().join("cluster.toml");

    let mut procs = Processes::new();
    for id in 0..4u16 {
        let log = std::fs::File::create(dir.path().join(format!("replica-{id}.log"))).expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &format!("{tag}-h{id}"), BIN, "replica", "--config"])
            .arg(&path)
            .args(["--id", &id.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(log);
        procs.spawn(format!("replica-{id}"), cmd).expect("spawn");
    }

    // The client runs in the fifth namespace, on a thread of its own.
    let (path2, tag2) = (path.clone(), tag.clone());
    let client = std::thread::spawn(move || {
        enter(&format!("{tag2}-h4"));
        let cluster = Cluster::load(Path::new(&path2)).expect("cluster");
        let options = ClientOptions { timeout: Duration::from_secs(10), ..Default::default() };
        let mut client = ClusterClient::open(&cluster, 0, &cluster.default_client_key_path(0), &options).expect("client");
        let mut model = KvModel::new();
        // The replicas may still be starting: the first operation retries.
        let first_deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = op(0);
            match client.invoke(Bytes::from(o.encode()), false) {
                Ok(got) => {
                    assert_eq!(KvResult::decode(&got).expect("decodes"), model.apply(&o));
                    break;
                }
                Err(e) => assert!(Instant::now() < first_deadline, "cluster never answered: {e}"),
            }
        }
        run(&mut client, &mut model, 1..1000, deadline);
        (client, model)
    });
    let (client, model) = client.join().expect("first 1,000 operations");

    // Cut replica 3's link: the other three go on.
    ip(&["-n", &format!("{tag}-h3"), "link", "set", "eth3", "down"]);
    let tag3 = tag.clone();
    let after = std::thread::spawn(move || {
        enter(&format!("{tag3}-h4"));
        let (mut client, mut model) = (client, model);
        run(&mut client, &mut model, 1000..1200, deadline);
    });
    after.join().expect("operations after the link went down");
    let exited = procs.exited();
    assert!(exited.is_empty(), "replicas exited: {exited:?}");
}
