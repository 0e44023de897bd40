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
use std::sync::Arc;
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

/// A 4-replica cluster in a temporary directory, its replicas up.
fn cluster_up() -> (tempfile::TempDir, std::path::PathBuf, Cluster, Processes) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = keygen(dir.path(), CLIENTS);
    let cluster = Cluster::load(&path).expect("cluster");
    let mut procs = Processes::new();
    start_all(&mut procs, &path, dir.path(), &cluster);
    (dir, path, cluster, procs)
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

/// Clients running checked operations until `stop`, counting them in
/// `completed`; each returns its model and how many operations it ran.
struct Load {
    completed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<(KvModel, usize)>>,
}

fn load(path: &Path, clients: u32, deadline: Instant) -> Load {
    let completed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = (0..clients)
        .map(|id| {
            let (path, completed, stop) = (path.to_path_buf(), completed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut client = open_client(&path, id);
                let mut model = KvModel::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    run_ops(&mut client, &mut model, id, i..i + 1, deadline);
                    completed.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                (model, i)
            })
        })
        .collect();
    Load { completed, stop, workers }
}

#[test]
fn every_acknowledged_write_survives_every_replica_killed_at_once() {
    let deadline = Instant::now() + BUDGET;
    let (dir, path, cluster, mut procs) = cluster_up();

    // The clients run until told to stop; each returns its model, whose
    // state the final check reads.
    let Load { completed, stop, workers } = load(&path, CLIENTS, deadline);

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
    let mut models = Vec::new();
    for (id, w) in workers.into_iter().enumerate() {
        match w.join() {
            Ok(m) => models.push((id as u32, m.0, m.1)),
            Err(panic) => failures.push(format!("client {id}: {}", panic_text(&*panic))),
        }
    }
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), logs(dir.path()));
    assert!(went_on, "the clients did not go on after the last restart\n{}", logs(dir.path()));

    // A fresh client reads every key each client used: each holds the value
    // of the last write acknowledged to it.
    let reader = CLIENTS - 1;
    let mut client = open_client(&path, reader);
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

/// The view of replica `id` if it is installed there, from its metrics.
fn active_view(cluster: &Cluster, id: u16) -> Option<f64> {
    let view = common::metric(cluster, id, "pbft_view")?;
    (common::metric(cluster, id, "pbft_view_active")? == 1.0).then_some(view)
}

/// Views installed by replicas 0..4, summed (a missing endpoint counts 0).
fn views_installed(cluster: &Cluster) -> f64 {
    (0..4).filter_map(|id| common::metric(cluster, id, "pbft_views_installed_total")).sum()
}

/// Under load: the primary is killed and the others move to view 1; a backup
/// is then killed and restarted at once from its state directory, and so is
/// the killed primary. Each is back in view 1, installed, within a second,
/// with no further view change; the cluster then survives the loss of
/// another replica (only the two restarted ones and one other are left).
#[test]
fn a_restarted_replica_is_back_in_the_current_view_without_a_view_change() {
    let deadline = Instant::now() + BUDGET;
    let (dir, path, cluster, mut procs) = cluster_up();
    let Load { completed, stop, workers } = load(&path, 2, deadline);
    let progress = |more: usize, what: &str| {
        let target = completed.load(Ordering::Relaxed) + more;
        let ok = poll_until(Duration::from_secs(20), || completed.load(Ordering::Relaxed) >= target);
        assert!(ok, "{what}: the clients stopped at {}\n{}", completed.load(Ordering::Relaxed), logs(dir.path()));
    };
    progress(100, "before any fault");
    assert!(procs.kill("replica-0"));
    progress(100, "after the primary was killed");
    let in_view_1 = |ids: &[u16]| ids.iter().all(|id| active_view(&cluster, *id) == Some(1.0));
    assert!(poll_until(Duration::from_secs(5), || in_view_1(&[1, 2, 3])), "replicas 1..3 are not in view 1\n{}", logs(dir.path()));
    let installed = views_installed(&cluster);

    // Backup 2, killed and restarted at once from its state directory.
    assert!(procs.kill("replica-2"));
    spawn_replica(&mut procs, &path, dir.path(), 2, &[]);
    let back = Instant::now();
    assert!(poll_until(Duration::from_secs(5), || in_view_1(&[2])), "replica 2 did not come back in view 1\n{}", logs(dir.path()));
    let took = back.elapsed();
    // The old primary, restarted from its state directory: it missed the view
    // change and learns view 1 from the others.
    spawn_replica(&mut procs, &path, dir.path(), 0, &[]);
    let back0 = Instant::now();
    assert!(poll_until(Duration::from_secs(5), || in_view_1(&[0])), "replica 0 did not join view 1\n{}", logs(dir.path()));
    let took0 = back0.elapsed();
    progress(50, "after the restarts");
    println!("restarted backup in view 1 after {took:?} (process start included); restarted old primary after {took0:?}");
    assert!(took < Duration::from_secs(2) && took0 < Duration::from_secs(2), "{took:?}, {took0:?}\n{}", logs(dir.path()));
    // Replica 2 (journal) and replica 0 (the NEW-VIEW relayed) each installed
    // view 1 once; nobody asked for view 2.
    let views = (0..4).map(|id| common::metric(&cluster, id, "pbft_view")).collect::<Vec<_>>();
    assert!(views.iter().all(|v| *v == Some(1.0)), "views: {views:?}\n{}", logs(dir.path()));
    assert!(views_installed(&cluster) <= installed + 2.0, "extra view changes\n{}", logs(dir.path()));

    // Another replica lost: 0, 1 and 2 carry on (1 is the primary).
    assert!(procs.kill("replica-3"));
    progress(100, "after replica 3 was killed too");
    stop.store(true, Ordering::Relaxed);
    for (id, w) in workers.into_iter().enumerate() {
        if let Err(panic) = w.join() {
            panic!("client {id}: {}\n{}", panic_text(&*panic), logs(dir.path()));
        }
    }
    assert!(Instant::now() < deadline, "took longer than {BUDGET:?}");
}

/// The newest journal segment of replica `id` in the test directory `dir`.
fn newest_segment(dir: &Path, id: u16) -> std::path::PathBuf {
    let journal = dir.join(format!("replica-{id}-state")).join("journal");
    let mut files: Vec<_> = std::fs::read_dir(&journal)
        .expect("journal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 64))
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    files.pop().expect("a journal segment with records")
}

/// A replica's durable log cut short, then with a flipped byte: each time it
/// starts, says what it found, and catches up with the others; no panic.
#[test]
fn a_damaged_durable_log_is_said_and_the_replica_catches_up() {
    let deadline = Instant::now() + BUDGET;
    let (dir, path, cluster, mut procs) = cluster_up();
    let mut client = open_client(&path, 0);
    let mut model = KvModel::new();
    let mut next = 0;
    let executed = |id| common::metric(&cluster, id, "pbft_last_executed").unwrap_or(-1.0);
    for (damage, said) in [("cut", "cut short by the crash"), ("flip", "durable log is damaged")] {
        run_ops(&mut client, &mut model, 0, next..next + 60, deadline);
        next += 60;
        assert!(procs.kill("replica-3"));
        let segment = newest_segment(dir.path(), 3);
        let mut bytes = std::fs::read(&segment).expect("read segment");
        match damage {
            "cut" => bytes.truncate(bytes.len() - 5),
            _ => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x20;
            }
        }
        std::fs::write(&segment, &bytes).expect("damage segment");
        spawn_replica(&mut procs, &path, dir.path(), 3, &[]);
        let metrics: Vec<_> = cluster.replicas.iter().filter_map(|r| r.metrics_addr).collect();
        wait_until_up(&mut procs, &metrics, Duration::from_secs(20)).expect("replica 3 up");
        run_ops(&mut client, &mut model, 0, next..next + 60, deadline);
        next += 60;
        let caught_up = poll_until(Duration::from_secs(10), || executed(3) >= executed(0) && executed(0) > 0.0);
        let log = std::fs::read_to_string(common::log_path(dir.path(), 3)).unwrap_or_default();
        assert!(log.contains(said), "{damage}: replica 3 did not say {said:?}\n{}", logs(dir.path()));
        assert!(!log.contains("panicked"), "{damage}: replica 3 panicked\n{}", logs(dir.path()));
        assert!(caught_up, "{damage}: replica 3 at {} of {}\n{}", executed(3), executed(0), logs(dir.path()));
    }
    assert!(procs.exited().is_empty(), "a replica exited\n{}", logs(dir.path()));
}

/// The chaos command in its short form: replicas killed and restarted one at
/// a time, the primary often, under load from clients sharing three keys;
/// the history is linearizable and the replicas converge.
#[test]
fn chaos_short_form_is_linearizable_and_converges() {
    let out = std::process::Command::new(common::BIN)
        .args(["chaos", "--seconds", "8", "--seed", "3"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pbft chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "pbft chaos failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("linearizable: every acknowledged write"), "{stdout}");
    assert!(stdout.contains("converged"), "{stdout}");
    let kills: u32 = stdout
        .split_whitespace()
        .skip_while(|w| *w != "s,")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    assert!(kills >= 2, "only {kills} replicas killed:\n{stdout}");
}
