//! Random sequences of operations on a few names, against a model of what
//! each should do (contents, error codes), checked after every step.

use std::collections::BTreeMap;

use nfs3_types::nfs3::nfsstat3;
use proptest::prelude::*;

use super::harness::{ALICE, T};

#[derive(Clone, Debug, PartialEq)]
enum Node {
    File(Vec<u8>),
    Dir,
}

#[derive(Clone, Debug)]
enum Op {
    Create(u8),
    Mkdir(u8),
    Write(u8, u16, u16, u8),
    Truncate(u8, u16),
    Remove(u8),
    Rmdir(u8),
    Rename(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0u8..6;
    prop_oneof![
        n.clone().prop_map(Op::Create),
        n.clone().prop_map(Op::Mkdir),
        (n.clone(), 0u16..20_000, 0u16..9_000, any::<u8>()).prop_map(|(a, o, l, b)| Op::Write(a, o, l, b)),
        (n.clone(), 0u16..30_000).prop_map(|(a, s)| Op::Truncate(a, s)),
        n.clone().prop_map(Op::Remove),
        n.clone().prop_map(Op::Rmdir),
        (n.clone(), n).prop_map(|(a, b)| Op::Rename(a, b)),
    ]
}

fn name(n: u8) -> Vec<u8> {
    format!("name{n}").into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn the_file_system_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut t = T::new();
        let root = t.root();
        let mut model: BTreeMap<u8, Node> = BTreeMap::new();
        for op in ops {
            let (got, want): (Result<(), nfsstat3>, Result<(), nfsstat3>) = match op {
                Op::Create(a) => {
                    let want = if model.contains_key(&a) { Err(nfsstat3::NFS3ERR_EXIST) } else { Ok(()) };
                    if want.is_ok() { model.insert(a, Node::File(Vec::new())); }
                    (t.create(&ALICE, &root, &name(a)).map(|_| ()), want)
                }
                Op::Mkdir(a) => {
                    let want = if model.contains_key(&a) { Err(nfsstat3::NFS3ERR_EXIST) } else { Ok(()) };
                    if want.is_ok() { model.insert(a, Node::Dir); }
                    (t.mkdir(&ALICE, &root, &name(a)).map(|_| ()), want)
                }
                Op::Write(a, off, len, b) => {
                    let data = vec![b; usize::from(len)];
                    let got = t.lookup(&ALICE, &root, &name(a)).and_then(|fh| t.write(&ALICE, &fh, u64::from(off), &data).map(|_| ()));
                    let want = match model.get_mut(&a) {
                        None => Err(nfsstat3::NFS3ERR_NOENT),
                        Some(Node::Dir) => Err(nfsstat3::NFS3ERR_ISDIR),
                        Some(Node::File(c)) => {
                            let end = usize::from(off) + data.len();
                            if c.len() < end { c.resize(end, 0); }
                            c[usize::from(off)..end].copy_from_slice(&data);
                            Ok(())
                        }
                    };
                    (got, want)
                }
                Op::Truncate(a, size) => {
                    let got = t.lookup(&ALICE, &root, &name(a)).and_then(|fh| t.truncate(&ALICE, &fh, u64::from(size), None));
                    let want = match model.get_mut(&a) {
                        None => Err(nfsstat3::NFS3ERR_NOENT),
                        Some(Node::Dir) => Err(nfsstat3::NFS3ERR_ISDIR),
                        Some(Node::File(c)) => { c.resize(usize::from(size), 0); Ok(()) }
                    };
                    (got, want)
                }
                Op::Remove(a) => {
                    let want = match model.get(&a) {
                        None => Err(nfsstat3::NFS3ERR_NOENT),
                        Some(Node::Dir) => Err(nfsstat3::NFS3ERR_ISDIR),
                        Some(Node::File(_)) => { model.remove(&a); Ok(()) }
                    };
                    (t.remove(&ALICE, &root, &name(a)), want)
                }
                Op::Rmdir(a) => {
                    let want = match model.get(&a) {
                        None => Err(nfsstat3::NFS3ERR_NOENT),
                        Some(Node::File(_)) => Err(nfsstat3::NFS3ERR_NOTDIR),
                        Some(Node::Dir) => { model.remove(&a); Ok(()) }
                    };
                    (t.rmdir(&ALICE, &root, &name(a)), want)
                }
                Op::Rename(a, b) => {
                    let want = match (model.get(&a).cloned(), model.get(&b).cloned()) {
                        (None, _) => Err(nfsstat3::NFS3ERR_NOENT),
                        _ if a == b => Ok(()),
                        (Some(Node::Dir), Some(Node::File(_))) => Err(nfsstat3::NFS3ERR_NOTDIR),
                        (Some(Node::File(_)), Some(Node::Dir)) => Err(nfsstat3::NFS3ERR_ISDIR),
                        (Some(n), _) => { model.remove(&a); model.insert(b, n); Ok(()) }
                    };
                    (t.rename(&ALICE, &root, &name(a), &root, &name(b)), want)
                }
            };
            prop_assert_eq!(got, want);
            let mut listed = t.readdir_all(&ALICE, &root);
            listed.sort();
            let expected: Vec<String> = model.keys().map(|a| String::from_utf8_lossy(&name(*a)).into_owned()).collect();
            prop_assert_eq!(listed, expected);
            for (a, node) in &model {
                let fh = t.lookup(&ALICE, &root, &name(*a)).expect("listed names exist");
                match node {
                    Node::File(c) => {
                        prop_assert_eq!(t.getattr(&fh).expect("attrs").size, c.len() as u64);
                        prop_assert_eq!(&t.read_all(&ALICE, &fh), c);
                    }
                    Node::Dir => prop_assert_eq!(t.getattr(&fh).expect("attrs").nlink, 2),
                }
            }
        }
        let subdirs = model.values().filter(|n| **n == Node::Dir).count() as u32;
        prop_assert_eq!(t.getattr(&root).expect("root").nlink, 2 + subdirs);
    }
}
