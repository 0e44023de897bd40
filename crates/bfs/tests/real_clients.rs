//! BFS through clients nobody here wrote: libnfs's nfs-cp, nfs-cat and nfs-ls
//! talk NFSv3 to the relay in front of 4 replica processes, one of them lying
//! or killed with SIGKILL along the way.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{bytes, serial, tool, Bfs, Rpc};
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::Opaque;

fn put(bfs: &Bfs, name: &str, data: &[u8]) {
    let src = bfs.dir.path().join(format!("in-{name}"));
    std::fs::write(&src, data).expect("write source");
    tool("nfs-cp", &[src.to_str().expect("utf-8 path"), &bfs.relay.url(&format!("/{name}"))]);
}

fn get(bfs: &Bfs, name: &str) -> Vec<u8> {
    tool("nfs-cat", &[&bfs.relay.url(&format!("/{name}"))])
}

#[test]
fn files_round_trip_and_a_big_directory_lists_whole_despite_a_lying_replica() {
    let _one = serial();
    // Replica 3 sends clients made-up results (with valid MACs).
    let bfs = Bfs::start(Some((3, "wrong-reply")));
    for (i, len) in [0usize, 1, 4095, 4096, 4097, 100_000, 64 << 20].into_iter().enumerate() {
        let data = bytes(len, i as u64 + 1);
        put(&bfs, &format!("file-{len}"), &data);
        let back = get(&bfs, &format!("file-{len}"));
        assert!(back == data, "{len} bytes came back different ({} bytes)", back.len());
    }
    // 5,000 entries made through the relay, listed by nfs-ls.
    let mut rpc = Rpc::connect(bfs.relay.port);
    let root = bfs::nfs::root_handle();
    let dir = diropargs3 { dir: root, name: filename3(Opaque::owned(b"many".to_vec())) };
    let made: MKDIR3res = rpc.call(9, &MKDIR3args { where_: dir, attributes: sattr3::default() });
    let Nfs3Result::Ok(MKDIR3resok { obj: Nfs3Option::Some(dh), .. }) = made else { panic!("mkdir many") };
    for i in 0..5000 {
        let name = filename3(Opaque::owned(format!("entry-{i:04}").into_bytes()));
        let how = createhow3::UNCHECKED(sattr3::default());
        let r: CREATE3res = rpc.call(8, &CREATE3args { where_: diropargs3 { dir: dh.clone(), name }, how });
        assert!(matches!(r, Nfs3Result::Ok(_)), "create entry-{i:04}");
    }
    let listing = String::from_utf8(tool("nfs-ls", &[&bfs.relay.url("/many")])).expect("utf-8");
    let names: Vec<&str> =
        listing.lines().filter_map(|l| l.split_whitespace().last()).filter(|n| n.starts_with("entry-")).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), 5000, "every entry listed once");
    assert_eq!(unique.len(), 5000, "no entry listed twice");
}

#[test]
fn a_replica_killed_mid_copy_changes_nothing() {
    let _one = serial();
    let mut bfs = Bfs::start(None);
    let data = bytes(24 << 20, 99);
    let src = bfs.dir.path().join("big");
    std::fs::write(&src, &data).expect("write source");
    let url = bfs.relay.url("/big");
    let (src2, url2) = (src, url);
    let copy = std::thread::spawn(move || tool("nfs-cp", &[src2.to_str().expect("path"), &url2]));
    std::thread::sleep(Duration::from_millis(400));
    assert!(!copy.is_finished(), "the copy is still going when the replica dies");
    assert!(bfs.cluster.kill(2), "replica 2 was running");
    std::thread::sleep(Duration::from_millis(800));
    bfs.cluster.restart(2).expect("restart replica 2");
    copy.join().expect("the copy finished");
    assert!(get(&bfs, "big") == data, "the file is whole");
    // The restarted replica catches up and serves: kill another, so that it is needed.
    put(&bfs, "after", b"written after the restart");
    assert!(bfs.cluster.kill(1), "replica 1 was running");
    put(&bfs, "needs-replica-2", &bytes(1 << 20, 5));
    assert_eq!(get(&bfs, "needs-replica-2"), bytes(1 << 20, 5));
    assert_eq!(get(&bfs, "after"), b"written after the restart");
}
