//! The file system alone, through the same request bytes a relay sends, on
//! the in-process backend: semantics and error codes of RFC 1813, handles,
//! cookies, permissions; a model-based property test; garbage never panics.

mod harness;
mod model;

use nfs3_types::nfs3::*;

use harness::{ALICE, BOB, T};

#[test]
fn create_write_read_getattr_and_remove() {
    let mut t = T::new();
    let root = t.root();
    let f = t.create(&ALICE, &root, b"a.txt").expect("create");
    let attrs = t.getattr(&f).expect("getattr");
    assert_eq!((attrs.type_, attrs.size, attrs.uid, attrs.nlink), (ftype3::NF3REG, 0, ALICE.uid, 1));
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    for (k, chunk) in data.chunks(32 * 1024).enumerate() {
        t.write(&ALICE, &f, (k * 32 * 1024) as u64, chunk).expect("write");
    }
    assert_eq!(t.read_all(&ALICE, &f), data);
    let (got, eof) = t.read(&ALICE, &f, 99_990, 100).expect("read at the end");
    assert_eq!((got.len(), eof), (10, true));
    assert_eq!(t.lookup(&ALICE, &root, b"a.txt").expect("lookup"), f);
    assert_eq!(t.lookup(&ALICE, &root, b"b.txt"), Err(nfsstat3::NFS3ERR_NOENT));
    t.remove(&ALICE, &root, b"a.txt").expect("remove");
    assert_eq!(t.getattr(&f).map(|_| ()), Err(nfsstat3::NFS3ERR_STALE));
    // The inode number is reused, with a new generation: the old handle stays STALE.
    let g = t.create(&ALICE, &root, b"c.txt").expect("create again");
    assert_ne!(g, f);
    assert_eq!(t.getattr(&f).map(|_| ()), Err(nfsstat3::NFS3ERR_STALE));
    let mut u = T::new();
    let uroot = u.root();
    u.create(&ALICE, &uroot, b"c.txt").expect("create");
    assert_eq!(t.fsstat_free_blocks(), u.fsstat_free_blocks(), "every page of the removed file is free again");
}

#[test]
fn handles_are_deterministic_and_forged_ones_are_refused() {
    let (mut a, mut b) = (T::new(), T::new());
    for t in [&mut a, &mut b] {
        let root = t.root();
        let d = t.mkdir(&ALICE, &root, b"d").expect("mkdir");
        t.create(&ALICE, &d, b"f").expect("create");
    }
    let (ra, rb) = (a.root(), b.root());
    let da = a.lookup(&ALICE, &ra, b"d").expect("d");
    assert_eq!(da, b.lookup(&ALICE, &rb, b"d").expect("d"));
    assert_eq!(a.lookup(&ALICE, &da, b"f"), b.lookup(&ALICE, &da, b"f"));
    let forged = nfs_fh3 { data: nfs3_types::xdr_codec::Opaque::owned(vec![1, 2, 3]) };
    assert_eq!(a.getattr(&forged).map(|_| ()), Err(nfsstat3::NFS3ERR_BADHANDLE));
    let mut far = da.clone();
    far.data.0.to_mut()[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(a.getattr(&far).map(|_| ()), Err(nfsstat3::NFS3ERR_STALE));
}

#[test]
fn error_codes_follow_rfc_1813() {
    let mut t = T::new();
    let root = t.root();
    let d = t.mkdir(&ALICE, &root, b"dir").expect("mkdir");
    let f = t.create(&ALICE, &d, b"file").expect("create");
    assert_eq!(t.mkdir(&ALICE, &root, b"dir"), Err(nfsstat3::NFS3ERR_EXIST));
    assert_eq!(t.lookup(&ALICE, &f, b"x"), Err(nfsstat3::NFS3ERR_NOTDIR));
    assert_eq!(t.read(&ALICE, &d, 0, 10).map(|_| ()), Err(nfsstat3::NFS3ERR_ISDIR));
    assert_eq!(t.rmdir(&ALICE, &root, b"dir"), Err(nfsstat3::NFS3ERR_NOTEMPTY));
    assert_eq!(t.rmdir(&ALICE, &d, b"file"), Err(nfsstat3::NFS3ERR_NOTDIR));
    assert_eq!(t.remove(&ALICE, &root, b"dir"), Err(nfsstat3::NFS3ERR_ISDIR));
    assert_eq!(t.create(&ALICE, &root, &[b'n'; 256]), Err(nfsstat3::NFS3ERR_NAMETOOLONG));
    assert_eq!(t.lookup(&ALICE, &root, &[b'n'; 256]), Err(nfsstat3::NFS3ERR_NAMETOOLONG));
    assert_eq!(t.create(&ALICE, &root, b"a/b"), Err(nfsstat3::NFS3ERR_INVAL));
    // Bob may read Alice's 0644 file but not write it, nor create in her 0755 directory.
    t.write(&ALICE, &f, 0, b"alice").expect("write");
    assert_eq!(t.read(&BOB, &f, 0, 5).map(|r| r.0), Ok(b"alice".to_vec()));
    assert_eq!(t.write(&BOB, &f, 0, b"bob").map(|_| ()), Err(nfsstat3::NFS3ERR_ACCES));
    assert_eq!(t.create(&BOB, &d, b"bobs"), Err(nfsstat3::NFS3ERR_ACCES));
    assert_eq!(t.chmod(&BOB, &f, 0o777), Err(nfsstat3::NFS3ERR_PERM));
    assert_eq!(t.chown(&ALICE, &f, BOB.uid), Err(nfsstat3::NFS3ERR_PERM));
    t.chown(&harness::ROOT, &f, BOB.uid).expect("root may chown");
    t.chmod(&ALICE, &d, 0o700).expect("chmod");
    assert_eq!(t.lookup(&BOB, &d, b"file"), Err(nfsstat3::NFS3ERR_ACCES));
    assert_eq!(t.rmdir(&ALICE, &root, b"nothing"), Err(nfsstat3::NFS3ERR_NOENT));
}

#[test]
fn root_squash_maps_uid_0_to_nobody() {
    let mut t = T::fresh(true);
    let root = t.root();
    // The root directory belongs to uid 0, mode 0755: a squashed root is nobody there.
    assert_eq!(t.chmod(&harness::ROOT, &root, 0o777), Err(nfsstat3::NFS3ERR_PERM));
    assert_eq!(t.create(&harness::ROOT, &root, b"x"), Err(nfsstat3::NFS3ERR_ACCES));
    let mut u = T::fresh(false);
    let uroot = u.root();
    let x = u.create(&harness::ROOT, &uroot, b"x").expect("unsquashed root creates");
    assert_eq!(u.getattr(&x).expect("attrs").uid, 0);
}

#[test]
fn rename_link_symlink_and_mknod() {
    let mut t = T::new();
    let root = t.root();
    let a = t.mkdir(&ALICE, &root, b"a").expect("a");
    let b = t.mkdir(&ALICE, &root, b"b").expect("b");
    let f = t.create(&ALICE, &a, b"f").expect("f");
    t.write(&ALICE, &f, 0, b"content").expect("write");
    let g = t.create(&ALICE, &b, b"g").expect("g");
    // Across directories, over an existing target, which goes away.
    t.rename(&ALICE, &a, b"f", &b, b"g").expect("rename over g");
    assert_eq!(t.lookup(&ALICE, &b, b"g").expect("g"), f);
    assert_eq!(t.getattr(&g).map(|_| ()), Err(nfsstat3::NFS3ERR_STALE));
    assert_eq!(t.lookup(&ALICE, &a, b"f"), Err(nfsstat3::NFS3ERR_NOENT));
    // A directory moves with its link counts and "..".
    t.rename(&ALICE, &root, b"a", &b, b"a2").expect("move a under b");
    assert_eq!(t.getattr(&root).expect("root").nlink, 3);
    assert_eq!(t.getattr(&b).expect("b").nlink, 3);
    assert_eq!(t.lookup(&ALICE, &a, b"..").expect(".."), b);
    assert_eq!(t.rename(&ALICE, &root, b"b", &a, b"loop"), Err(nfsstat3::NFS3ERR_INVAL));
    // Hard links share the inode; the last name frees it.
    t.link(&ALICE, &f, &root, b"hard").expect("link");
    assert_eq!(t.getattr(&f).expect("f").nlink, 2);
    t.remove(&ALICE, &b, b"g").expect("remove");
    assert_eq!(t.read(&ALICE, &f, 0, 100).map(|r| r.0), Ok(b"content".to_vec()));
    assert_eq!(t.link(&ALICE, &a, &root, b"dirlink"), Err(nfsstat3::NFS3ERR_ISDIR));
    let s = t.symlink(&ALICE, &root, b"sym", b"../target/path").expect("symlink");
    assert_eq!(t.readlink(&s), Ok(b"../target/path".to_vec()));
    assert_eq!(t.readlink(&f), Err(nfsstat3::NFS3ERR_INVAL));
    let fifo = t.mknod_fifo(&ALICE, &root, b"fifo").expect("fifo");
    assert_eq!(t.getattr(&fifo).expect("fifo").type_, ftype3::NF3FIFO);
    assert_eq!(t.mknod_chr(&ALICE, &root, b"tty", (4, 1)), Err(nfsstat3::NFS3ERR_PERM));
    let tty = t.mknod_chr(&harness::ROOT, &root, b"tty", (4, 1)).expect("root makes devices");
    assert_eq!(t.getattr(&tty).expect("tty").rdev, specdata3 { specdata1: 4, specdata2: 1 });
}

#[test]
fn exclusive_create_guard_and_truncate() {
    let mut t = T::new();
    let root = t.root();
    let f = t.create_exclusive(&ALICE, &root, b"x", [7; 8]).expect("exclusive");
    assert_eq!(t.create_exclusive(&ALICE, &root, b"x", [7; 8]), Ok(f.clone()), "a retransmission succeeds");
    assert_eq!(t.create_exclusive(&ALICE, &root, b"x", [8; 8]), Err(nfsstat3::NFS3ERR_EXIST));
    t.write(&ALICE, &f, 0, &[0xAB; 10_000]).expect("write");
    let ctime = t.getattr(&f).expect("attrs").ctime;
    let stale_guard = nfstime3 { seconds: ctime.seconds.wrapping_sub(1), nseconds: 0 };
    assert_eq!(t.truncate(&ALICE, &f, 100, Some(stale_guard)), Err(nfsstat3::NFS3ERR_NOT_SYNC));
    t.truncate(&ALICE, &f, 100, Some(ctime)).expect("guarded truncate");
    t.truncate(&ALICE, &f, 9000, None).expect("extend");
    let (data, _) = t.read(&ALICE, &f, 0, 9000).expect("read");
    assert!(data[..100].iter().all(|b| *b == 0xAB) && data[100..].iter().all(|b| *b == 0), "extension reads zeros");
}

#[test]
fn times_come_from_the_agreed_clock() {
    let mut t = T::new();
    let root = t.root();
    t.set_time_us(1_700_000_000_123_456);
    let f = t.create(&ALICE, &root, b"f").expect("create");
    let a = t.getattr(&f).expect("attrs");
    assert_eq!((a.mtime.seconds, a.mtime.nseconds), (1_700_000_000, 123_456_000));
    t.set_time_us(1_700_000_100_000_000);
    t.write(&ALICE, &f, 0, b"x").expect("write");
    assert_eq!(t.getattr(&f).expect("attrs").mtime.seconds, 1_700_000_100);
}

#[test]
fn readdir_cookies_survive_concurrent_adds_and_removes() {
    let mut t = T::new();
    let root = t.root();
    let d = t.mkdir(&ALICE, &root, b"big").expect("mkdir");
    for i in 0..3000 {
        t.create(&ALICE, &d, format!("file-{i:05}").as_bytes()).expect("create");
    }
    // List in small pages; between pages remove and add other entries.
    let mut seen = std::collections::BTreeSet::new();
    let mut cookie = 0;
    let mut round = 0;
    loop {
        let (names, next, eof) = t.readdir(&ALICE, &d, cookie, 2048).expect("readdir");
        for n in names {
            assert!(seen.insert(n.clone()), "{n:?} listed twice");
        }
        if eof {
            break;
        }
        cookie = next;
        round += 1;
        // Entries with odd numbers above 2000 come and go; the rest stay.
        let victim = 2001 + 2 * (round % 400);
        let _ = t.remove(&ALICE, &d, format!("file-{victim:05}").as_bytes());
        t.create(&ALICE, &d, format!("new-{round}").as_bytes()).expect("create during listing");
    }
    for i in (0..3000).filter(|i| *i < 2000 || i % 2 == 0) {
        assert!(seen.contains(&format!("file-{i:05}")), "file-{i:05} existed throughout but was skipped");
    }
    let plus = t.readdirplus_all(&ALICE, &d);
    let unique: std::collections::BTreeSet<_> = plus.iter().collect();
    assert_eq!(unique.len(), plus.len(), "READDIRPLUS repeats nothing");
    let mut expected = t.readdir_all(&ALICE, &d);
    expected.sort();
    let mut plus = plus;
    plus.sort();
    assert_eq!(plus, expected, "READDIR and READDIRPLUS list the same names");
}

#[test]
fn a_directory_of_100_000_entries_lists_whole_while_it_changes() {
    let mut t = T::new();
    let root = t.root();
    let d = t.mkdir(&ALICE, &root, b"huge").expect("mkdir");
    // Hard links: 100,000 names without 100,000 inodes.
    let f = t.create(&ALICE, &d, b"target").expect("create");
    for i in 0..100_000 {
        t.link(&ALICE, &f, &d, format!("n{i:06}").as_bytes()).expect("link");
    }
    assert_eq!(t.lookup(&ALICE, &d, b"n099999"), Ok(f.clone()), "the index finds the last name");
    let (mut seen, mut cookie, mut round) = (std::collections::BTreeSet::new(), 0, 0);
    loop {
        let (names, next, eof) = t.readdir(&ALICE, &d, cookie, 32 * 1024).expect("readdir");
        for n in names {
            assert!(seen.insert(n.clone()), "{n:?} listed twice");
        }
        if eof {
            break;
        }
        cookie = next;
        round += 1;
        // Names from 50,000 on with odd numbers go; new names come.
        t.remove(&ALICE, &d, format!("n{:06}", 50_001 + 2 * round).as_bytes()).expect("remove during listing");
        t.link(&ALICE, &f, &d, format!("late{round}").as_bytes()).expect("link during listing");
    }
    for i in (0..100_000).filter(|i| *i < 50_000 || i % 2 == 0) {
        assert!(seen.contains(&format!("n{i:06}")), "n{i:06} existed throughout but was skipped");
    }
}

#[test]
fn garbage_never_panics() {
    let mut t = T::new();
    let root = t.root();
    t.create(&ALICE, &root, b"f").expect("create");
    let mut x = 0x1234_5678_9abc_def0u64;
    for len in 0..2000usize {
        let mut op = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            op.push(x as u8);
        }
        if len >= 16 {
            // Mostly valid procedure numbers and credentials, garbage arguments.
            op[..4].copy_from_slice(&((x % 24) as u32).to_be_bytes());
            op[12..16].copy_from_slice(&((x >> 8) % 4).to_be_bytes()[4..]);
        }
        let _ = t.raw(&op, x % 2 == 0);
    }
    // A WRITE whose data claims nearly 4 GiB is refused before anything is
    // decoded (nfs3_types would allocate the claimed length first).
    let f = t.lookup(&ALICE, &root, b"f").expect("f");
    let mut args = Vec::new();
    nfs3_types::xdr_codec::Pack::pack(&f, &mut args).expect("pack");
    for w in [0u32, 0, 10, 2, 0xFFFF_FFF0] {
        args.extend_from_slice(&w.to_be_bytes());
    }
    let reply = t.raw(&crate::request::encode(7, &ALICE, &args), false);
    assert_eq!(reply, crate::request::GARBAGE_ARGS.to_be_bytes());
    assert!(t.getattr(&root).is_ok(), "the file system still works");
}
