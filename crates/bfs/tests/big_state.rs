//! A BFS whose state is 4 GiB (2^20 pages) starts, takes a file whose data
//! lies at the end of a 4 GiB file, and its replicas use memory (and disk)
//! in proportion to what was written: pages never written cost nothing.

mod common;

use std::time::{Duration, Instant};

use common::{bytes, serial, Bfs, Rpc};
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::Opaque;

const GIB: u64 = 1 << 30;
const PAGES: u64 = 4 * GIB / 4096;
/// Written at the end of the file: 8 MiB in 32 KiB WRITEs.
const CHUNK: usize = 32 << 10;
const CHUNKS: u64 = 256;
const WRITTEN: u64 = CHUNK as u64 * CHUNKS;

/// A process's resident memory in bytes (VmRSS).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the replica's /proc status");
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
    kib.and_then(|k| k.parse::<u64>().ok()).expect("VmRSS") * 1024
}

fn rss_of_replicas(bfs: &Bfs) -> Vec<u64> {
    let pids = bfs.cluster.pids();
    assert_eq!(pids.len(), 4, "4 replicas running");
    pids.iter().map(|&(_, pid)| rss(pid)).collect()
}

#[test]
fn a_4_gib_state_costs_memory_only_for_what_was_written() {
    let _one = serial();
    let bfs = Bfs::start_sized(PAGES, None);
    let mut rpc = Rpc::connect(bfs.relay.port);
    let root = bfs::nfs::root_handle();
    let stat: FSSTAT3res = rpc.call(18, &FSSTAT3args { fsroot: root.clone() });
    let Nfs3Result::Ok(stat) = stat else { panic!("FSSTAT") };
    // The metadata (bitmaps, inode table) takes 3% of the pages.
    assert!(stat.tbytes > 4 * GIB * 96 / 100 && stat.tbytes < 4 * GIB, "a 4 GiB file system: {} bytes", stat.tbytes);
    let before = rss_of_replicas(&bfs);
    let name = filename3(Opaque::owned(b"far".to_vec()));
    let how = createhow3::UNCHECKED(sattr3::default());
    let made: CREATE3res = rpc.call(8, &CREATE3args { where_: diropargs3 { dir: root, name }, how });
    let Nfs3Result::Ok(CREATE3resok { obj: Nfs3Option::Some(fh), .. }) = made else { panic!("CREATE far") };
    // The file ends 4 KiB short of 4 GiB; its first 4 GiB - 8 MiB are a hole.
    let start = 4 * GIB - 4096 - WRITTEN;
    for i in 0..CHUNKS {
        let data = Opaque::owned(bytes(CHUNK, i + 1));
        let args = WRITE3args {
            file: fh.clone(),
            offset: start + i * CHUNK as u64,
            count: CHUNK as u32,
            stable: stable_how::FILE_SYNC,
            data,
        };
        let r: WRITE3res = rpc.call(7, &args);
        assert!(matches!(r, Nfs3Result::Ok(_)), "WRITE {i}: {r:?}");
    }
    let attr: GETATTR3res = rpc.call(1, &GETATTR3args { object: fh.clone() });
    let Nfs3Result::Ok(attr) = attr else { panic!("GETATTR far") };
    assert_eq!(attr.obj_attributes.size, 4 * GIB - 4096);
    for i in [0, CHUNKS / 2, CHUNKS - 1] {
        let r: READ3res =
            rpc.call(6, &READ3args { file: fh.clone(), offset: start + i * CHUNK as u64, count: CHUNK as u32 });
        let Nfs3Result::Ok(r) = r else { panic!("READ {i}") };
        assert!(r.data.as_ref() == &bytes(CHUNK, i + 1)[..], "chunk {i} reads back");
    }
    let hole: READ3res = rpc.call(6, &READ3args { file: fh.clone(), offset: 2 * GIB, count: 4096 });
    let Nfs3Result::Ok(hole) = hole else { panic!("READ of the hole") };
    assert!(hole.data.iter().all(|&b| b == 0) && hole.data.len() == 4096, "the hole reads as zeros");
    let after = rss_of_replicas(&bfs);
    eprintln!("replica RSS before {before:?}, after {after:?}; {WRITTEN} bytes written");
    // Each replica holds the written pages, their copies in the checkpoints
    // it keeps, and the requests in its log: a few times what was written,
    // nowhere near the 4 GiB a dense state would take.
    for (b, a) in before.iter().zip(&after) {
        assert!(*b < 64 << 20, "a replica of an empty 4 GiB state holds {b} bytes");
        assert!(a.saturating_sub(*b) < 8 * WRITTEN, "a replica grew by {} bytes for {WRITTEN} written", a - b);
    }
    // The state on disk (saved at stable checkpoints) is as sparse.
    let pages_file = bfs.cluster.cluster.default_state_dir(0).join("pages");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bfs.cluster.cluster.default_state_dir(0).join("checkpoint").exists() {
        assert!(Instant::now() < deadline, "replica 0 saved no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    let meta = std::fs::metadata(&pages_file).expect("the pages file");
    let on_disk = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    eprintln!("pages file: {} bytes long, {on_disk} on disk", meta.len());
    assert!(on_disk < 4 * WRITTEN, "{on_disk} bytes on disk for {WRITTEN} written");
}
