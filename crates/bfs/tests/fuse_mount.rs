//! `bfs mount` (FUSE) with the tools people use: a real source tree (the
//! workspace's crates) copied in and out with tar and compared with diff -r
//! while one replica lies to clients and another is killed with SIGKILL and
//! restarted, then a small C program compiled and run on the mount; the same
//! copy while a replica is killed after it saved a checkpoint and restarts
//! from its state directory; and while a replica lies to the other replicas
//! in each of the protocol-level faulty modes.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bytes, mounted, serial, sh, Bfs, Mount};
use pbft_node::FaultyMode;

/// The source trees copied: about 1.5 MiB in 150 files.
const TREES: &str = "pbft/src pbft/tests pbft-node/src pbft-sim/src pbft-kv/src pbft-cli/src bfs/src bfs/tests";

/// The workspace's `crates` directory: the source trees' root.
fn crates_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").display().to_string()
}

/// Copies the source trees into `m/copy-R` for each of `rounds` rounds, one
/// `tar | tar` after another, on a thread of its own.
fn copy_in(m: &Path, rounds: usize) -> std::thread::JoinHandle<()> {
    let (src, m) = (crates_dir(), m.display().to_string());
    std::thread::spawn(move || {
        for r in 0..rounds {
            sh(&format!("mkdir {m}/copy-{r} && tar -C {src} -cf - {TREES} | tar -C {m}/copy-{r} -xf -"));
        }
    })
}

/// `diff -r` finds every round's copy identical to the source trees.
fn diff_copies(m: &Path, rounds: usize) {
    let (src, m) = (crates_dir(), m.display());
    for r in 0..rounds {
        for tree in TREES.split(' ') {
            sh(&format!("diff -r {src}/{tree} {m}/copy-{r}/{tree}"));
        }
    }
}

#[test]
fn tar_diff_and_cc_on_the_mount_with_a_lying_and_a_killed_replica() {
    let _one = serial();
    let mut bfs = Bfs::start(Some((3, "wrong-reply")));
    let mnt = bfs.dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let mount = Mount::start(&bfs.cluster.path, &mnt);
    // The copy in runs while replica 1 is killed and restarted.
    let copy = copy_in(&mnt, 1);
    std::thread::sleep(Duration::from_millis(150));
    assert!(!copy.is_finished(), "the copy is still going when the replica dies");
    assert!(bfs.cluster.kill(1), "replica 1 was running");
    std::thread::sleep(Duration::from_millis(700));
    bfs.cluster.restart(1).expect("restart replica 1");
    copy.join().expect("tar in");
    // A fresh mount has no page cache: what diff reads comes from the replicas.
    drop(mount);
    let mount = Mount::start(&bfs.cluster.path, &mnt);
    diff_copies(&mnt, 1);
    let (src, m) = (crates_dir(), mnt.display().to_string());
    let out = bfs.dir.path().join("out");
    std::fs::create_dir(&out).expect("out");
    sh(&format!("tar -C {m}/copy-0 -cf - pbft | tar -C {} -xf -", out.display()));
    sh(&format!("diff -r {src}/pbft/src {}/pbft/src", out.display()));
    // A small C project that lives on the mount.
    std::fs::create_dir(mnt.join("c")).expect("mkdir c");
    std::fs::write(mnt.join("c/util.h"), "int add(int a, int b);\n").expect("util.h");
    std::fs::write(mnt.join("c/util.c"), "#include \"util.h\"\nint add(int a, int b) { return a + b; }\n")
        .expect("util.c");
    std::fs::write(
        mnt.join("c/main.c"),
        "#include <stdio.h>\n#include \"util.h\"\nint main(void) { printf(\"%d\\n\", add(40, 2)); return 0; }\n",
    )
    .expect("main.c");
    sh(&format!("cd {m}/c && cc -c util.c && cc -c main.c && cc -o prog main.o util.o"));
    let run = Command::new(mnt.join("c/prog")).output().expect("prog runs");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "42\n");
    // A file unlinked while open keeps its node in the kernel; the inode number
    // BFS reuses for a directory must be a new node, or the kernel refuses it.
    let held = std::fs::File::create(mnt.join("held")).expect("create held");
    std::fs::remove_file(mnt.join("held")).expect("unlink held");
    std::fs::create_dir(mnt.join("reused")).expect("a directory on the reused inode number");
    std::fs::write(mnt.join("reused/inside"), b"x").expect("a file inside it");
    drop(held);
    drop(mount);
    assert!(!mounted(&mnt), "unmounted");
}

/// Waits until `ready` holds, or fails after `secs` seconds saying `what`.
fn wait_for(secs: u64, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_replica_killed_mid_copy_restarts_from_its_state_directory_and_catches_up() {
    let _one = serial();
    let mut bfs = Bfs::start(None);
    let mnt = bfs.dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let mount = Mount::start(&bfs.cluster.path, &mnt);
    const ROUNDS: usize = 6;
    let copy = copy_in(&mnt, ROUNDS);
    // Replica 1 dies once it has saved a stable checkpoint, so that it has a
    // state on disk to restart from, and is restarted while the copy goes on.
    let saved = bfs.cluster.cluster.default_state_dir(1).join("checkpoint");
    wait_for(60, "replica 1 saves a checkpoint", || saved.exists());
    assert!(!copy.is_finished(), "the copy is still going when the replica dies");
    assert!(bfs.cluster.kill(1), "replica 1 was running (SIGKILL)");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!copy.is_finished(), "the copy is still going when the replica restarts");
    bfs.cluster.restart(1).expect("restart replica 1");
    copy.join().expect("tar in");
    let log = std::fs::read_to_string(bfs.cluster.log_path(1)).expect("replica 1's log");
    assert!(
        log.contains("restarted from the state on disk") || log.contains("does not match its checkpoint"),
        "replica 1 restarted from its state directory: {log}"
    );
    // Without replica 2, every request needs replica 1: it must have caught up.
    assert!(bfs.cluster.kill(2), "replica 2 was running");
    drop(mount);
    let mount = Mount::start(&bfs.cluster.path, &mnt);
    diff_copies(&mnt, ROUNDS);
    std::fs::write(mnt.join("after"), b"written by replicas 0, 1 and 3").expect("write after the restart");
    drop(mount);
    let mount = Mount::start(&bfs.cluster.path, &mnt);
    assert_eq!(std::fs::read(mnt.join("after")).expect("read back"), b"written by replicas 0, 1 and 3");
    drop(mount);
}

/// The sum over the replicas other than `faulty` of the metric samples
/// whose line `is` picks.
fn honest_sum(bfs: &Bfs, faulty: u16, is: impl Fn(&str) -> bool) -> f64 {
    let replicas = bfs.cluster.cluster.replicas.iter().filter(|r| r.id.0 != faulty);
    replicas
        .filter_map(|r| r.metrics_addr)
        .map(|a| {
            let text = pbft_node::metrics::scrape(a, Duration::from_secs(2)).expect("metrics");
            let samples = text.lines().filter(|l| is(l));
            samples.filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()).sum::<f64>()
        })
        .sum()
}

#[test]
fn tar_and_diff_with_a_replica_lying_to_the_others() {
    let _one = serial();
    // Each mode lies in the protocol itself (wrong digests in PREPARE and
    // COMMIT, wrong state digests in CHECKPOINT, corrupt MACs and messages in
    // others' names); the forging replica is the primary, which the others
    // must replace by a view change in the middle of the copy.
    for (id, mode) in [(1u16, "bad-digest"), (2, "lying-checkpoint"), (0, "forge")] {
        let bfs = Bfs::start(Some((id, mode)));
        let mnt = bfs.dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        let mount = Mount::start(&bfs.cluster.path, &mnt);
        copy_in(&mnt, 2).join().unwrap_or_else(|_| panic!("{mode}: tar in"));
        drop(mount);
        let mount = Mount::start(&bfs.cluster.path, &mnt);
        diff_copies(&mnt, 2);
        drop(mount);
        // The replica's start-up line names its mode (by name, or as the
        // FaultyMode value, depending on the host's version).
        let parsed: FaultyMode = mode.parse().expect("a faulty mode");
        let log = std::fs::read_to_string(bfs.cluster.log_path(id)).expect("the faulty replica's log");
        let started = log.lines().find(|l| l.contains("replica started")).unwrap_or_default();
        assert!(
            started.contains(mode) || started.contains(&format!("{parsed:?}")),
            "replica {id} ran as {mode}: {log}"
        );
        if mode == "forge" {
            assert!(
                honest_sum(&bfs, id, |l| l.starts_with("pbft_dropped_total{") && l.contains("\"bad_mac\"")) > 100.0,
                "forged messages were dropped"
            );
            assert!(
                honest_sum(&bfs, id, |l| l.starts_with("pbft_view{")) >= 3.0,
                "the three others left the forger's view 0"
            );
        }
    }
}

/// Ordered (read-write) and read-only requests replica `id` has executed.
fn executed(bfs: &Bfs, id: u16) -> (f64, f64) {
    let addr = bfs.cluster.cluster.replicas[id as usize].metrics_addr.expect("metrics address");
    let text = pbft_node::metrics::scrape(addr, Duration::from_secs(2)).expect("metrics");
    let value = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {text}"));
        line.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).expect("a number")
    };
    (value("pbft_requests_executed_total{"), value("pbft_read_only_executed_total{"))
}

/// `executed` once replica 0 has gone 300 ms without executing anything
/// (its metrics are published every 100 ms, and requests of the mount's
/// start may still be on their way).
fn quiet(bfs: &Bfs) -> (f64, f64) {
    let mut last = executed(bfs, 0);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(300));
        let now = executed(bfs, 0);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// What the mount orders: a new file written and closed is one CREATE and
/// one WRITE (the kernel's push of its own times at close is answered by the
/// mount), a removed file one REMOVE (the push that follows an unlink finds
/// the file gone with a read-only GETATTR), a name that does not exist is
/// looked up once while the kernel remembers it. A user's `touch -m -d`
/// still sets the time, and a rename still moves the file.
#[test]
fn the_mount_orders_one_request_per_create_write_and_remove() {
    let _one = serial();
    let bfs = Bfs::start(None);
    let mnt = bfs.dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let mount = Mount::start(&bfs.cluster.path, &mnt);
    std::fs::create_dir(mnt.join("d")).expect("mkdir");
    // A missing name, asked for again and again (as a compiler probes its
    // include path), reaches the replicas about once. First, while no inode
    // is dirty: the kernel's later pushes of times cost a read-only request.
    let before = quiet(&bfs);
    let started = Instant::now();
    for _ in 0..20 {
        assert!(std::fs::metadata(mnt.join("d/missing.h")).is_err(), "no such file");
    }
    let took = started.elapsed();
    let after = quiet(&bfs);
    let asked = after.1 - before.1;
    assert!(
        asked <= 5.0,
        "{asked} read-only requests for 20 lookups of one missing name in {took:?} (executed {before:?} then {after:?})"
    );
    const FILES: usize = 20;
    // Replica 0 may lag the replies by a little: wait until it has executed
    // at least `floor` ordered requests more than at `from`.
    let settled = |from: f64, floor: usize| {
        wait_for(10, "replica 0 executes the requests", || executed(&bfs, 0).0 >= from + floor as f64);
        executed(&bfs, 0)
    };
    let before = executed(&bfs, 0);
    for i in 0..FILES {
        std::fs::write(mnt.join(format!("d/f{i}")), bytes(3000, i as u64)).expect("write a file");
    }
    let written = settled(before.0, 2 * FILES);
    let ordered = written.0 - before.0;
    assert!(ordered <= (2 * FILES + 2) as f64, "{ordered} ordered requests for {FILES} files written");
    for i in 0..FILES {
        assert_eq!(std::fs::read(mnt.join(format!("d/f{i}"))).expect("read back"), bytes(3000, i as u64));
    }
    // A rename makes the kernel push the file's times again (its ctime
    // moved): the mtime it pushed at close, which the replicas need not
    // order. One ordered RENAME each.
    let before = quiet(&bfs);
    for i in 0..FILES {
        std::fs::rename(mnt.join(format!("d/f{i}")), mnt.join(format!("d/g{i}"))).expect("rename");
    }
    let renamed = settled(before.0, FILES);
    let ordered = renamed.0 - before.0;
    assert!(ordered <= (FILES + 2) as f64, "{ordered} ordered requests for {FILES} files renamed");
    // Remove them all: one ordered REMOVE each.
    let before = executed(&bfs, 0);
    for i in 0..FILES {
        std::fs::remove_file(mnt.join(format!("d/g{i}"))).expect("unlink");
    }
    let removed = settled(before.0, FILES);
    let ordered = removed.0 - before.0;
    assert!(ordered <= (FILES + 2) as f64, "{ordered} ordered requests for {FILES} files removed");
    // A time the user sets, and a rename, still reach the replicas: a fresh
    // mount (no kernel cache) sees them.
    std::fs::write(mnt.join("d/t"), b"times").expect("write t");
    sh(&format!("touch -m -d @1000000000 {0}/d/t && mv {0}/d/t {0}/d/u", mnt.display()));
    drop(mount);
    let mount = Mount::start(&bfs.cluster.path, &mnt);
    let meta = std::fs::metadata(mnt.join("d/u")).expect("renamed file");
    let mtime = meta.modified().expect("mtime").duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    assert_eq!(mtime.as_secs(), 1_000_000_000, "the mtime touch set");
    assert!(std::fs::metadata(mnt.join("d/t")).is_err(), "the old name is gone");
    drop(mount);
}
