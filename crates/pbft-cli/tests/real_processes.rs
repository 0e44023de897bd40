//! A 4-replica cluster of real `pbft replica` processes on 127.0.0.1 (free
//! ports), driven by concurrent clients; one backup is then killed with
//! SIGKILL and the service goes on. Every result is checked against a model of
//! the key-value service: each client has keys of its own, so its results are
//! deterministic. Bounded in time; the children die with the test, whatever
//! happens (`Processes` kills them when dropped).

mod common;

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{keygen, metric, open_client, panic_text, pbft, run_ops, start_replicas, start_replicas_with, BIN};
use pbft_kv::KvModel;
use pbft_node::launcher::{replica_command, wait_until_up, Processes};
use pbft_node::{Cluster, FaultyMode};

const CLIENTS: u32 = 4;
const FIRST_PHASE_OPS: usize = 1000;
const SECOND_PHASE_OPS: usize = 200;
const TEST_BUDGET: Duration = Duration::from_secs(60);

#[test]
fn four_processes_serve_clients_and_survive_a_killed_backup() {
    let deadline = Instant::now() + TEST_BUDGET;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = keygen(dir.path(), CLIENTS);
    let mut procs = start_replicas(&path, dir.path());

    // Two phases, with the kill between them: all clients and the test thread
    // meet at `killed` twice.
    let between = Arc::new(Barrier::new(CLIENTS as usize + 1));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (path, between) = (path.clone(), between.clone());
            std::thread::spawn(move || {
                let mut client = open_client(&path, id);
                let mut model = KvModel::new();
                let per_client = FIRST_PHASE_OPS / CLIENTS as usize;
                let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_ops(&mut client, &mut model, id, 0..per_client, deadline)
                }));
                between.wait();
                between.wait();
                if let Err(panic) = first {
                    std::panic::resume_unwind(panic);
                }
                let more = SECOND_PHASE_OPS / CLIENTS as usize;
                run_ops(&mut client, &mut model, id, per_client..per_client + more, deadline);
            })
        })
        .collect();
    between.wait();
    // Not replica 0: it is the primary, and view changes are not built yet.
    assert!(procs.kill("replica-2"), "replica 2 was running until now");
    between.wait();
    let mut failures = Vec::new();
    for (id, w) in workers.into_iter().enumerate() {
        if let Err(panic) = w.join() {
            failures.push(format!("client {id}: {}", panic_text(&*panic)));
        }
    }
    assert!(procs.exited().is_empty(), "a replica exited: {:?}", procs.exited());
    if !failures.is_empty() {
        let log = std::fs::read_to_string(dir.path().join("replica-0.log")).unwrap_or_default();
        panic!("{}\nreplica 0's log:\n{log}", failures.join("\n"));
    }

    // The command-line client against the same cluster (3 replicas left).
    let config = path.to_str().expect("utf-8 path");
    let o = pbft(&["client", "--config", config, "--id", "1", "put", "cli-key", "cli value"]);
    assert_eq!((o.status.success(), String::from_utf8_lossy(&o.stdout).trim()), (true, "OK"), "{o:?}");
    let o = pbft(&["client", "--config", config, "--id", "2", "get", "cli-key"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "cli value", "{o:?}");
    assert!(Instant::now() < deadline, "took longer than {TEST_BUDGET:?}");
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = keygen(dir.path(), CLIENTS);
    let config = path.to_str().expect("utf-8 path");
    std::fs::write(dir.path().join("bad.toml"), "f = [\n").expect("write");
    let bad = dir.path().join("bad.toml");
    let key2 = dir.path().join("replica-2.key");
    let other = dir.path().join("other");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["replica", "--config", "/nonexistent/cluster.toml", "--id", "0"], "/nonexistent/cluster.toml"),
        (vec!["replica", "--config", bad.to_str().expect("path"), "--id", "0"], "malformed cluster file: line 1"),
        (vec!["replica", "--config", config, "--id", "9"], "replica 9 is not in the cluster file"),
        (
            vec!["replica", "--config", config, "--id", "1", "--key", key2.to_str().expect("path")],
            "does not match replica 1",
        ),
        (vec!["replica", "--config", config, "--id", "1", "--key", config], "not a private key"),
        (vec!["replica", "--config", config, "--id", "0", "--drop", "1.5"], "drop must be a fraction"),
        (vec!["client", "--config", config, "--id", "7", "get", "k"], "client 7 is not in the cluster file"),
        (vec!["client", "--config", config, "frobnicate"], "unrecognized subcommand"),
        (vec!["keygen", "--replicas", "5", "--out", other.to_str().expect("path")], "3f + 1"),
        (vec!["keygen", "--out", dir.path().to_str().expect("path")], "already exists"),
    ];
    for (args, expected) in cases {
        let o = pbft(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err:?} should mention {expected:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }

    // A port in use: the second replica 0 cannot bind.
    let mut procs = Processes::new();
    procs
        .spawn("replica-0", replica_command(Path::new(BIN), &path, 0, Some(&dir.path().join("r0.log"))).expect("cmd"))
        .expect("spawn");
    let cluster = Cluster::load(&path).expect("cluster");
    let metrics: Vec<_> = cluster.replicas[..1].iter().filter_map(|r| r.metrics_addr).collect();
    wait_until_up(&mut procs, &metrics, Duration::from_secs(20)).expect("replica 0 up");
    let o = pbft(&["replica", "--config", config, "--id", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("cannot bind") && err.contains("in use"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
}

/// Sends junk to every replica's port until `stop`: random bytes, bytes with a
/// valid header, and well-formed messages with forged MACs.
fn garbage_sender(cluster: &Cluster, stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<u64> {
    let addrs: Vec<_> = cluster.replicas.iter().map(|r| r.addr).collect();
    std::thread::spawn(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut sent = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 200_000 {
            for addr in &addrs {
                let len = (next() % 600) as usize;
                let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if next() % 2 == 0 && junk.len() > 8 {
                    junk[..4].copy_from_slice(&[b'P', b'B', 1, 1 + (next() % 7) as u8]);
                }
                let _ = socket.send_to(&junk, addr);
                let forged = pbft::adversary::forge(
                    pbft::NodeId::Replica(pbft::ReplicaId((next() % 4) as u16)),
                    &pbft::wire::Message::Commit(pbft::wire::Commit {
                        view: pbft::View(0),
                        seq: pbft::SeqNo(1 + next() % 64),
                        digest: pbft::Digest([next() as u8; 32]),
                    }),
                    4,
                    &mut next,
                );
                let _ = socket.send_to(&forged, addr);
                sent += 2;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        sent
    })
}

/// Every faulty mode of `pbft::adversary` that a backup can run, in replica 3.
#[test]
fn correct_results_with_a_lying_backup_and_junk_on_every_port() {
    let modes: Vec<(u16, FaultyMode)> = FaultyMode::ANY_REPLICA.iter().map(|m| (3, *m)).collect();
    correct_results_with_a_faulty_replica(&modes);
}

/// The faulty modes that only a primary can run, in replica 0: the others
/// change view and go on. (The slow primary has its own benchmark, `pbft
/// bench-faults`: at 90% of the timeout per batch it would take minutes here.)
#[test]
fn correct_results_with_a_lying_primary_and_junk_on_every_port() {
    let modes: Vec<(u16, FaultyMode)> = FaultyMode::PRIMARY
        .iter()
        .filter(|m| !FaultyMode::ANY_REPLICA.contains(m) && **m != FaultyMode::SlowPrimary)
        .map(|m| (0, *m))
        .collect();
    assert_eq!(modes.len(), 5, "{modes:?}");
    correct_results_with_a_faulty_replica(&modes);
}

/// For each (replica, mode): 2 clients do 60 operations each, with every
/// result checked against a model, while that replica runs the mode and junk
/// arrives on every port; no replica may exit. A faulty primary must be
/// replaced, except an equivocating one: with n = 4 its two versions go to
/// backups 1 and 3 (one) and 2 (the other), so 1 and 3 with the primary form
/// a quorum for one of them and nothing forces a view change.
fn correct_results_with_a_faulty_replica(modes: &[(u16, FaultyMode)]) {
    let deadline = Instant::now() + TEST_BUDGET * 2;
    for &(faulty_id, mode) in modes {
        let must_change_view = faulty_id == 0 && mode != FaultyMode::Equivocate;
        let mode = mode.name();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = keygen(dir.path(), CLIENTS);
        let cluster = Cluster::load(&path).expect("cluster");
        let faulty =
            |id| if id == faulty_id { vec!["--faulty".to_string(), mode.to_string()] } else { Vec::new() };
        let mut procs = start_replicas_with(&path, dir.path(), faulty);

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let junk = garbage_sender(&cluster, stop.clone());
        let workers: Vec<_> = (0..2u32)
            .map(|id| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut client = open_client(&path, id);
                    let mut model = KvModel::new();
                    run_ops(&mut client, &mut model, id, 0..60, deadline);
                })
            })
            .collect();
        for w in workers {
            if let Err(panic) = w.join() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("faulty mode {mode}: {:?}", panic.downcast_ref::<String>());
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = junk.join().expect("junk sender");
        if must_change_view {
            // A lying primary was replaced: the others are past view 0 (a
            // metrics scrape is once per 100 ms, so allow it a moment).
            let moved = |id| metric(&cluster, id, "pbft_view").is_some_and(|v| v >= 1.0);
            let until = Instant::now() + Duration::from_secs(5);
            while !(1..4).all(moved) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!((1..4).all(moved), "faulty primary in mode {mode}: the others never left view 0");
        }
        assert!(sent > 100, "faulty mode {mode}: only {sent} junk datagrams sent");
        // No replica exited: junk and lies are dropped, never a crash.
        let exited = procs.exited();
        assert!(exited.is_empty(), "faulty mode {mode}: replicas exited: {exited:?}");
        drop(procs);
    }
}

#[test]
fn correct_results_with_five_percent_of_datagrams_dropped_and_duplicated() {
    let deadline = Instant::now() + TEST_BUDGET;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = keygen(dir.path(), CLIENTS);
    let lossy = |id: u16| {
        ["--drop", "0.05", "--duplicate", "0.05", "--fault-seed", &(u64::from(id) + 7).to_string()].map(String::from).to_vec()
    };
    let mut procs = start_replicas_with(&path, dir.path(), lossy);
    // The replicas' transports drop and duplicate what they send (replies
    // included); 1,000 operations from 4 clients must all be correct.
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut client = open_client(&path, id);
                let mut model = KvModel::new();
                run_ops(&mut client, &mut model, id, 0..FIRST_PHASE_OPS / CLIENTS as usize, deadline);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
    let exited = procs.exited();
    assert!(exited.is_empty(), "replicas exited: {exited:?}");
}
