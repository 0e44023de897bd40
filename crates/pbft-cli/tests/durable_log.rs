//! The durable log with real `pbft replica` processes on 127.0.0.1: under load
//! from 4 clients, every replica is killed with SIGKILL at the same moment and
//! restarted from its state directory, ten times at random points of the load.
//! Every result any client saw is checked against a model of the key-value
//! service (so an acknowledged write that was lost shows up as a wrong read),
//! the clients go on across each crash, and at the end a fresh client reads
//! back every key.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{keygen, logs, open_client, operation, panic_text, poll_until, run_ops, spawn_replica};
use pbft_kv::{KvModel, KvOp, KvResult};
use pbft_node::launcher::{wait_until_up, Processes};
use pbft_node::Cluster;

const CLIENTS: u32 = 4;
const CRASHES: usize = 10;
const BUDGET: Duration = Duration::from_secs(150);

fn start_all(procs: &mut Processes, path: &Path, dir: &Path, cluster: &Cluster) {
    for id in 0..4u16 {
        spawn_replica(procs, path, dir, id, &[]);
    }
    let metrics: Vec<_> = cluster.replicas.iter().filter_map(|r| r.metrics_addr).collect();
    wait_until_up(procs, &metrics, Duration::from_secs(20)).expect("replicas come up");
}

/// SIGKILL to every replica first, then reap them: they die together.
fn kill_all_at_once(procs: &mut Processes) {
    let pids = procs.pids();
    for (_, pid) in &pids {
        // SAFETY: kill(2) on our own children's pids; no memory is involved.
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
    }
    for (name, _) in pids {
        procs.kill(&name);
    }
}

#[test]
fn every_acknowledged_write_survives_every_replica_killed_at_once() {
    let deadline = Instant::now() + BUDGET;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = keygen(dir.path(), CLIENTS);
    let cluster = Cluster::load(&path).expect("cluster");
    let mut procs = Processes::new();
    start_all(&mut procs, &path, dir.path(), &cluster);

    // The clients run until told to stop; each keeps its model, whose state
    // the final check reads.
    let completed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let models: Arc<Mutex<Vec<(u32, KvModel, usize)>>> = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (path, completed, stop, models) = (path.clone(), completed.clone(), stop.clone(), models.clone());
            std::thread::spawn(move || {
                let mut client = open_client(&path, id);
                let mut model = KvModel::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    run_ops(&mut client, &mut model, id, i..i + 1, deadline);
                    completed.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                models.lock().expect("models").push((id, model, i));
            })
        })
        .collect();

    let mut seed = 0x5eed_u64;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for crash in 0..CRASHES {
        // A random amount of load between crashes, some of it in flight.
        let target = completed.load(Ordering::Relaxed) + 20 + random(120) as usize;
        let loaded = poll_until(deadline.saturating_duration_since(Instant::now()), || {
            completed.load(Ordering::Relaxed) >= target || workers.iter().any(|w| w.is_finished())
        });
        assert!(loaded, "crash {crash}: the clients stopped at {} operations\n{}", completed.load(Ordering::Relaxed), logs(dir.path()));
        kill_all_at_once(&mut procs);
        std::thread::sleep(Duration::from_millis(random(300)));
        start_all(&mut procs, &path, dir.path(), &cluster);
    }
    // The clients go on after the last restart.
    let after = completed.load(Ordering::Relaxed) + 100;
    let went_on = poll_until(deadline.saturating_duration_since(Instant::now()), || {
        completed.load(Ordering::Relaxed) >= after || workers.iter().any(|w| w.is_finished())
    });
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for (id, w) in workers.into_iter().enumerate() {
        if let Err(panic) = w.join() {
            failures.push(format!("client {id}: {}", panic_text(&*panic)));
        }
    }
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), logs(dir.path()));
    assert!(went_on, "the clients did not go on after the last restart\n{}", logs(dir.path()));

    // A fresh client reads every key each client used: each holds the value
    // of the last write acknowledged to it.
    let reader = CLIENTS - 1;
    let mut client = open_client(&path, reader);
    let models = models.lock().expect("models");
    let total: usize = models.iter().map(|(_, _, done)| done).sum();
    for (id, model, done) in models.iter() {
        let mut keys: Vec<Vec<u8>> = (0..(*done).min(64)).filter_map(|i| match operation(*id, i) {
            KvOp::Put { key, .. } | KvOp::Cas { key, .. } | KvOp::Delete { key } => Some(key),
            _ => None,
        }).collect();
        keys.sort();
        keys.dedup();
        let mut probe = model.clone();
        for key in keys {
            let get = KvOp::Get { key: key.clone() };
            client.set_timeout(Duration::from_secs(10));
            let bytes = client.invoke(Bytes::from(get.encode()), true).expect("final read");
            let got = KvResult::decode(&bytes).expect("result decodes");
            assert_eq!(got, probe.apply(&get), "client {id}'s key {:?} after {done} operations", String::from_utf8_lossy(&key));
        }
    }
    println!("{CRASHES} whole-cluster crashes under load: {total} operations, every result checked, every key read back");
    assert!(procs.exited().is_empty(), "a replica exited\n{}", logs(dir.path()));
}
