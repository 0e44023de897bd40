//! The same cluster file on several hosts: each replica runs in a network
//! namespace of its own and the client in another, all joined by veth links to
//! a bridge in a "switch" namespace, with addresses of the test's own. 1,000
//! operations must be correct; then one backup's link goes down and the
//! service goes on. Everything the test creates is removed when it ends
//! (`Namespaces` deletes the namespaces, and with them every link and process
//! socket; `Processes` kills the replicas). Needs root and iproute2 (`.ci/run`
//! installs it).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{build_network, enter, ip, BIN};
use pbft_kv::{KvModel, KvOp, KvResult};
use pbft_node::launcher::Processes;
use pbft_node::{ClientOptions, Cluster, ClusterClient};

const SUBNET: &str = "10.213.77";
const BUDGET: Duration = Duration::from_secs(90);

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
    let _net = build_network(&tag, SUBNET, 5);
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
