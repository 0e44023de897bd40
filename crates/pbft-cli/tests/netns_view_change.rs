//! A view change across network namespaces: each replica in a namespace of
//! its own and the client in a fifth, joined by veth links to a bridge (see
//! `common::build_network`). The primary's link goes down and the others move
//! to a new view; the link comes back and the old primary joins that view;
//! then a backup's link goes down, so that no quorum forms without the old
//! primary. Everything the test creates is removed when it ends, whatever
//! happens (`Namespaces`, `Processes`). Needs root and iproute2.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    build_network, enter, keygen_on, log_text, logs, metric, open_client, panic_text, poll_until, run_ops, set_link,
    spawn_replica_in,
};
use pbft_kv::KvModel;
use pbft_node::launcher::Processes;
use pbft_node::{Cluster, ClusterClient};

/// Not the subnet of `netns.rs`: only the namespaces' names must differ for
/// the two to run at once, but distinct addresses make logs unambiguous.
const SUBNET: &str = "10.213.78";
const BUDGET: Duration = Duration::from_secs(120);
/// Longest wait for the reconnected old primary to install the others' view.
const REJOIN_BOUND: Duration = Duration::from_secs(30);

/// Runs operations `range` of client 0 and reports how long they took.
fn phase(
    client: &mut ClusterClient,
    model: &mut KvModel,
    range: std::ops::Range<usize>,
    deadline: Instant,
    what: &str,
) {
    let (start, resent) = (Instant::now(), client.metrics().retransmitted);
    run_ops(client, model, 0, range.clone(), deadline);
    let resent = client.metrics().retransmitted - resent;
    println!("{what}: operations {range:?} in {:?}, {resent} retransmissions", start.elapsed());
}

/// The client's side of the test, on a thread inside the client's namespace:
/// the workload, the link changes (`ip -n` works from any namespace) and the
/// metrics, scraped across the bridge.
fn drive(tag: &str, dir: PathBuf, path: PathBuf, deadline: Instant) {
    enter(&format!("{tag}-h4"));
    let cluster = Cluster::load(&path).expect("cluster");
    let mut client = open_client(&path, 0);
    let mut model = KvModel::new();
    // The replicas may still be starting: wait until they all serve metrics.
    let up = Instant::now() + Duration::from_secs(20);
    while (0..4).any(|id| metric(&cluster, id, "pbft_view").is_none()) {
        assert!(Instant::now() < up, "the replicas' metrics never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    phase(&mut client, &mut model, 0..300, deadline, "4 replicas, view 0");

    set_link(tag, 0, false);
    let cut = Instant::now();
    run_ops(&mut client, &mut model, 0, 300..301, deadline);
    println!("view change: first operation after the primary's link went down completed after {:?}", cut.elapsed());
    phase(&mut client, &mut model, 301..600, deadline, "replica 0 cut off");
    let view = |id| metric(&cluster, id, "pbft_view");
    // The metrics are published every 100 ms, and 300 operations can take
    // less than that: allow the published view a moment to catch up.
    let changed = poll_until(Duration::from_secs(2), || view(1).is_some_and(|v| v >= 1.0));
    assert!(changed, "replica 1 is in view {:?}", view(1));

    // Reconnected, the old primary learns of the new view; operations go on
    // meanwhile (bounded by REJOIN_BOUND, 10 at a time).
    set_link(tag, 0, true);
    let back = Instant::now();
    let mut i = 600;
    let installed = |v: f64| {
        let log = log_text(&dir, 0);
        log.contains(&format!("view installed view={v}"))
    };
    let view_now = loop {
        let (v0, v1) = (view(0), view(1));
        if let Some(v) = v1.filter(|v| v0 == Some(*v) && installed(*v)) {
            break v as u64;
        }
        assert!(back.elapsed() < REJOIN_BOUND, "replica 0 is in view {v0:?}, replica 1 in {v1:?}");
        run_ops(&mut client, &mut model, 0, i..i + 10, deadline);
        i += 10;
    };
    println!(
        "replica 0 installed view {view_now} {:?} after its link came back ({} operations meanwhile)",
        back.elapsed(),
        i - 600
    );

    // Cut a backup of the current view other than replica 0: the remaining
    // three, the old primary among them, are a bare quorum.
    let primary = (view_now % 4) as usize;
    let victim = [3, 2, 1].into_iter().find(|r| *r != primary).expect("a backup");
    assert_ne!(primary, 0, "replica 0 is primary again (view {view_now}): the last phase would prove nothing");
    set_link(tag, victim, false);
    phase(&mut client, &mut model, i..i + 200, deadline, &format!("replica {victim} cut off, view {view_now}"));
}

#[test]
fn cutting_the_primarys_link_changes_view_and_it_rejoins() {
    let deadline = Instant::now() + BUDGET;
    let tag = format!("pbvc{}", std::process::id());
    // Declared before the replicas, so dropped after them.
    let _net = build_network(&tag, SUBNET, 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = (0..4).map(|h| format!("{SUBNET}.{}", 10 + h)).collect::<Vec<_>>().join(",");
    // Each replica has its namespace's ports to itself: fixed ports are free.
    let path = keygen_on(dir.path(), &hosts, 7000, 1);
    let mut procs = Processes::new();
    for id in 0..4u16 {
        spawn_replica_in(&mut procs, &format!("{tag}-h{id}"), &path, dir.path(), id);
    }

    let client = {
        let (tag, dir, path) = (tag.clone(), dir.path().to_path_buf(), path.clone());
        std::thread::spawn(move || drive(&tag, dir, path, deadline))
    };
    if let Err(panic) = client.join() {
        panic!("{}\n{}", panic_text(&*panic), logs(dir.path()));
    }
    let exited = procs.exited();
    assert!(exited.is_empty(), "replicas exited: {exited:?}\n{}", logs(dir.path()));
    assert!(Instant::now() < deadline, "took longer than {BUDGET:?}");
}
