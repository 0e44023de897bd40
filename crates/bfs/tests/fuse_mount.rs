//! `bfs mount` (FUSE) with the tools people use: a real source tree (the
//! workspace's crates) copied in and out with tar and compared with diff -r
//! while one replica lies and another is killed with SIGKILL and restarted,
//! then a small C program compiled and run on the mount.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{serial, Bfs};

/// A `bfs mount` process; unmounted when dropped.
struct Mount {
    child: Child,
    dir: std::path::PathBuf,
}

fn mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts.lines().any(|l| l.split_whitespace().nth(1) == dir.to_str())
}

impl Mount {
    fn start(config: &Path, dir: &Path) -> Mount {
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

fn sh(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).output().expect("sh runs");
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The source trees copied: about 1.5 MiB in 150 files.
const TREES: &str = "pbft/src pbft/tests pbft-node/src pbft-sim/src pbft-kv/src pbft-cli/src bfs/src bfs/tests";

#[test]
fn tar_diff_and_cc_on_the_mount_with_a_lying_and_a_killed_replica() {
    let _one = serial();
    let mut bfs = Bfs::start(Some((3, "wrong-reply")));
    let mnt = bfs.dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let mount = Mount::start(&bfs.cluster.path, &mnt);
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (src, m) = (crates.display().to_string(), mnt.display().to_string());
    // The copy in runs while replica 1 is killed and restarted.
    let copy_in = {
        let (src, m) = (src.clone(), m.clone());
        std::thread::spawn(move || sh(&format!("tar -C {src} -cf - {TREES} | tar -C {m} -xf -")))
    };
    std::thread::sleep(Duration::from_millis(150));
    assert!(!copy_in.is_finished(), "the copy is still going when the replica dies");
    assert!(bfs.cluster.kill(1), "replica 1 was running");
    std::thread::sleep(Duration::from_millis(700));
    bfs.cluster.restart(1).expect("restart replica 1");
    copy_in.join().expect("tar in");
    // A fresh mount has no page cache: what diff reads comes from the replicas.
    drop(mount);
    let mount = Mount::start(&bfs.cluster.path, &mnt);
    for tree in TREES.split(' ') {
        sh(&format!("diff -r {src}/{tree} {m}/{tree}"));
    }
    let out = bfs.dir.path().join("out");
    std::fs::create_dir(&out).expect("out");
    sh(&format!("tar -C {m} -cf - pbft | tar -C {} -xf -", out.display()));
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
