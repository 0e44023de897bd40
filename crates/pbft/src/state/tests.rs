//! Tests of the paged state against a naive model: a flat byte vector, full
//! snapshots at every checkpoint and a partition tree recomputed from scratch.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const SMALL: TreeShape = TreeShape {
    fanout: 4,
    depth: 3,
};

/// Every node digest of the tree over `content` (`num_pages` pages), computed
/// from scratch over the whole capacity `fanout^depth`, pages beyond
/// `num_pages` being zero. `result[level][index]`.
fn naive_tree(shape: TreeShape, num_pages: u64, content: &[u8]) -> Vec<Vec<Digest>> {
    assert_eq!(content.len() as u64, num_pages * PAGE_SIZE as u64);
    let fanout = shape.fanout as usize;
    let capacity = fanout.pow(shape.depth);
    let zero = Digest::of(&[0u8; PAGE_SIZE]);
    let mut level: Vec<Digest> = (0..capacity)
        .map(|i| match content.get(i * PAGE_SIZE..(i + 1) * PAGE_SIZE) {
            Some(page) => Digest::of(page),
            None => zero,
        })
        .collect();
    let mut levels = vec![level.clone()];
    for l in (0..shape.depth).rev() {
        level = level
            .chunks(fanout)
            .map(|children| naive_node(l, children))
            .collect();
        levels.push(level.clone());
    }
    levels.reverse();
    levels
}

fn naive_node(level: u32, children: &[Digest]) -> Digest {
    let mut bytes = level.to_le_bytes().to_vec();
    for child in children {
        bytes.extend_from_slice(&child.0);
    }
    Digest::of(&bytes)
}

/// Number of nodes of each level that cover at least one page (root always).
fn used_nodes(shape: TreeShape, num_pages: u64, level: u32) -> u64 {
    let span = u64::from(shape.fanout).pow(shape.depth - level);
    num_pages.div_ceil(span).max(u64::from(level == 0))
}

fn content(state: &PagedState) -> Vec<u8> {
    let mut buf = vec![0u8; (state.num_pages() * PAGE_SIZE as u64) as usize];
    state.read(0, &mut buf).expect("whole state is in range");
    buf
}

fn filled(byte: u8) -> Page {
    [byte; PAGE_SIZE]
}

#[test]
fn installed_pages_give_the_same_checkpoint_as_written_ones() {
    // Two states with the same start; one has pages replaced and hashed at the
    // checkpoint, the other installs them with their digests (state transfer).
    let mut written = PagedState::new(20, SMALL).unwrap();
    let mut installed = PagedState::new(20, SMALL).unwrap();
    for st in [&mut written, &mut installed] {
        st.write(3 * PAGE_SIZE as u64, &[7; 100]).unwrap();
        st.take_checkpoint(SeqNo(10)).unwrap();
    }
    // Page 4 is dirty already when the pages are installed (given out of
    // order): its version as of checkpoint 10 must survive.
    for st in [&mut written, &mut installed] {
        st.write(4 * PAGE_SIZE as u64 + 9, &[5; 10]).unwrap();
    }
    let pages: Vec<(u64, Page)> = vec![(19, filled(2)), (0, filled(1)), (3, filled(0)), (4, filled(9))];
    for (i, p) in &pages {
        written.replace_page(*i, p).unwrap();
    }
    let expected = written.take_checkpoint(SeqNo(20)).unwrap();
    let with_digests = pages.iter().map(|(i, p)| (*i, Arc::new(*p), PagedState::page_digest(p)));
    assert_eq!(installed.install_pages(SeqNo(20), with_digests).unwrap(), expected);
    assert_eq!(content(&installed), content(&written));
    // The older checkpoint is intact, and shared pages read as borrowed ones.
    for seq in [SeqNo(10), SeqNo(20)] {
        assert_eq!(installed.checkpoint_digest(seq), written.checkpoint_digest(seq));
        for i in 0..20 {
            let shared = installed.shared_page_at(seq, i).unwrap();
            assert_eq!(shared.as_deref().unwrap_or(&[0u8; PAGE_SIZE]), installed.page_at(seq, i).unwrap());
            assert_eq!(installed.page_at(seq, i).unwrap(), written.page_at(seq, i).unwrap(), "page {i} at {seq:?}");
        }
        for level in 0..=SMALL.depth {
            for index in (0..20).filter(|x| installed.contains_node(level, *x)) {
                assert_eq!(installed.node_digest_at(seq, level, index), written.node_digest_at(seq, level, index));
                assert_eq!(installed.node_last_modified_at(seq, level, index), written.node_last_modified_at(seq, level, index));
            }
        }
    }
    // Installing a page beyond the state is refused.
    let beyond = vec![(20, Arc::new(filled(1)), PagedState::page_digest(&filled(1)))];
    assert_eq!(installed.install_pages(SeqNo(30), beyond), Err(StateError::OutOfRange));
    // The page made zero is not kept in memory.
    assert!(installed.shared_page_at(SeqNo(20), 3).unwrap().is_none());
    // Installing at or below the last checkpoint is refused and changes nothing.
    let again = vec![(5, Arc::new(filled(5)), PagedState::page_digest(&filled(5)))];
    assert_eq!(installed.install_pages(SeqNo(20), again), Err(StateError::CheckpointOrder));
    assert_eq!(installed.page(5).unwrap(), &filled(0));
    // The oldest retained checkpoint at or after a sequence number.
    assert_eq!(installed.retained_from(SeqNo(0)), Some(SeqNo(10)));
    assert_eq!(installed.retained_from(SeqNo(11)), Some(SeqNo(20)));
    assert_eq!(installed.retained_from(SeqNo(21)), None);
    installed.discard_checkpoints_before(SeqNo(20));
    assert_eq!(installed.retained_from(SeqNo(10)), Some(SeqNo(20)));
}

#[test]
fn read_write_across_page_boundaries() {
    let mut st = PagedState::new(4, SMALL).unwrap();
    let data: Vec<u8> = (1..=10).collect();
    st.write(PAGE_SIZE as u64 - 5, &data).unwrap();
    assert_eq!(&st.page(0).unwrap()[PAGE_SIZE - 5..], &data[..5]);
    assert_eq!(&st.page(1).unwrap()[..5], &data[5..]);
    let mut back = [0u8; 10];
    st.read(PAGE_SIZE as u64 - 5, &mut back).unwrap();
    assert_eq!(&back[..], &data[..]);
    assert_eq!(st.dirty_pages(), 2);

    // A span covering one page entirely and parts of its neighbours.
    let long: Vec<u8> = (0..PAGE_SIZE + 10).map(|i| (i % 251) as u8 + 1).collect();
    st.write(2 * PAGE_SIZE as u64 - 5, &long).unwrap();
    let mut back = vec![0u8; long.len() + 2];
    st.read(2 * PAGE_SIZE as u64 - 6, &mut back).unwrap();
    assert_eq!(back[0], 0);
    assert_eq!(&back[1..=long.len()], &long[..]);
    assert_eq!(back[long.len() + 1], 0);
    assert_eq!(st.dirty_pages(), 4);
    // Untouched bytes of a written page stay zero.
    assert!(st.page(0).unwrap()[..PAGE_SIZE - 5].iter().all(|&b| b == 0));
}

#[test]
fn out_of_range_is_refused_without_effect() {
    let mut st = PagedState::new(4, SMALL).unwrap();
    let size = 4 * PAGE_SIZE as u64;
    let mut buf = [0u8; 2];
    assert_eq!(st.read(size - 1, &mut buf), Err(StateError::OutOfRange));
    assert_eq!(st.read(u64::MAX, &mut buf), Err(StateError::OutOfRange));
    assert_eq!(st.read(size, &mut []), Ok(()));
    assert_eq!(st.write(size - 1, &[1, 2]), Err(StateError::OutOfRange));
    assert_eq!(st.write(u64::MAX, &[1]), Err(StateError::OutOfRange));
    assert_eq!(
        st.write(u64::MAX - 1, &[1, 2, 3]),
        Err(StateError::OutOfRange)
    );
    assert_eq!(st.write(u64::MAX, &[]), Err(StateError::OutOfRange));
    assert_eq!(st.page(4), Err(StateError::OutOfRange));
    assert_eq!(st.page(u64::MAX), Err(StateError::OutOfRange));
    assert_eq!(st.replace_page(4, &filled(1)), Err(StateError::OutOfRange));
    assert_eq!(st.dirty_pages(), 0);
    assert_eq!(st.resident_pages(), 0);
    assert!(content(&st).iter().all(|&b| b == 0));

    let seq = SeqNo(1);
    assert_eq!(st.page_at(seq, 0), Err(StateError::NoSuchCheckpoint));
    assert_eq!(
        st.node_digest_at(seq, 0, 0),
        Err(StateError::NoSuchCheckpoint)
    );
    st.take_checkpoint(seq).unwrap();
    assert_eq!(st.page_at(seq, 4), Err(StateError::OutOfRange));
    assert_eq!(st.node_digest_at(seq, 4, 0), Err(StateError::OutOfRange));
    assert_eq!(
        st.node_digest_at(seq, u32::MAX, 0),
        Err(StateError::OutOfRange)
    );
    assert_eq!(st.node_digest_at(seq, 3, 4), Err(StateError::OutOfRange));
    assert_eq!(st.node_digest_at(seq, 2, 1), Err(StateError::OutOfRange));
    assert_eq!(st.node_digest_at(seq, 0, 1), Err(StateError::OutOfRange));
    assert!(st.node_digest_at(seq, 2, 0).is_ok());
    assert_eq!(
        st.node_last_modified_at(seq, 1, 1),
        Err(StateError::OutOfRange)
    );
    assert_eq!(
        st.node_digest_at(SeqNo(2), 0, 0),
        Err(StateError::NoSuchCheckpoint)
    );
}

#[test]
fn shape_and_size_errors() {
    let bad = |fanout, depth| PagedState::new(1, TreeShape { fanout, depth }).map(|_| ());
    assert_eq!(bad(1, 4), Err(StateError::BadShape));
    assert_eq!(bad(0, 4), Err(StateError::BadShape));
    assert_eq!(bad(4, 0), Err(StateError::BadShape));
    assert_eq!(bad(MAX_FANOUT + 1, 1), Err(StateError::BadShape));
    assert_eq!(bad(2, MAX_DEPTH + 1), Err(StateError::BadShape));
    assert_eq!(bad(2, 1), Ok(()));

    assert_eq!(
        PagedState::new(65, SMALL).map(|_| ()),
        Err(StateError::TooManyPages)
    );
    assert_eq!(PagedState::new(64, SMALL).unwrap().num_pages(), 64);
    let deep = TreeShape {
        fanout: 2,
        depth: MAX_DEPTH,
    };
    assert_eq!(
        PagedState::new(MAX_PAGES + 1, deep).map(|_| ()),
        Err(StateError::TooManyPages)
    );
    let huge = PagedState::new(MAX_PAGES, deep).unwrap();
    assert_eq!(huge.shape(), deep);
    let mut last = [0u8; 1];
    huge.read(MAX_PAGES * PAGE_SIZE as u64 - 1, &mut last)
        .unwrap();
    assert_eq!(
        TreeShape::default(),
        TreeShape {
            fanout: 256,
            depth: 4
        }
    );
    assert!(PagedState::new(1 << 32, TreeShape::default()).is_ok());
    assert_eq!(
        PagedState::new((1 << 32) + 1, TreeShape::default()).map(|_| ()),
        Err(StateError::TooManyPages)
    );
}

#[test]
fn digest_changes_iff_content_changes() {
    let mut st = PagedState::new(10, SMALL).unwrap();
    let empty = st.take_checkpoint(SeqNo(1)).unwrap();
    assert_eq!(empty, naive_tree(SMALL, 10, &content(&st))[0][0]);

    st.write(100, b"hello").unwrap();
    let d2 = st.take_checkpoint(SeqNo(2)).unwrap();
    assert_ne!(d2, empty);
    // Rewriting the same bytes dirties the page but leaves the digest.
    st.write(100, b"hello").unwrap();
    assert_eq!(st.dirty_pages(), 1);
    assert_eq!(st.take_checkpoint(SeqNo(3)).unwrap(), d2);
    // A checkpoint with nothing dirty has the same digest.
    assert_eq!(st.take_checkpoint(SeqNo(4)).unwrap(), d2);
    // One bit elsewhere changes it; undoing the change restores it.
    st.write(9 * PAGE_SIZE as u64, &[1]).unwrap();
    let d5 = st.take_checkpoint(SeqNo(5)).unwrap();
    assert_ne!(d5, d2);
    st.write(9 * PAGE_SIZE as u64, &[0]).unwrap();
    assert_eq!(st.take_checkpoint(SeqNo(6)).unwrap(), d2);
    st.write(100, &[0; 5]).unwrap();
    assert_eq!(st.take_checkpoint(SeqNo(7)).unwrap(), empty);
    // The same content at another page gives another digest.
    st.write(PAGE_SIZE as u64 + 100, b"hello").unwrap();
    let d8 = st.take_checkpoint(SeqNo(8)).unwrap();
    assert_ne!(d8, d2);
    assert_eq!(d8, naive_tree(SMALL, 10, &content(&st))[0][0]);
    assert_eq!(st.checkpoint_digest(SeqNo(8)), Some(d8));
    assert_eq!(st.checkpoint_digest(SeqNo(9)), None);
}

#[test]
fn checkpoints_must_increase() {
    let mut st = PagedState::new(2, SMALL).unwrap();
    st.take_checkpoint(SeqNo(5)).unwrap();
    assert_eq!(
        st.take_checkpoint(SeqNo(5)),
        Err(StateError::CheckpointOrder)
    );
    assert_eq!(
        st.take_checkpoint(SeqNo(4)),
        Err(StateError::CheckpointOrder)
    );
    // Still refused once every checkpoint is discarded.
    st.discard_checkpoints_before(SeqNo(6));
    assert_eq!(st.last_checkpoint(), None);
    assert_eq!(
        st.take_checkpoint(SeqNo(3)),
        Err(StateError::CheckpointOrder)
    );
    let d = st.take_checkpoint(SeqNo(6)).unwrap();
    assert_eq!(st.last_checkpoint(), Some((SeqNo(6), d)));
}

#[test]
fn versions_at_retained_checkpoints() {
    let mut st = PagedState::new(20, SMALL).unwrap();
    let mut snaps = BTreeMap::new();
    let rounds: [&[u64]; 4] = [&[0, 5], &[5, 19], &[1], &[0, 1, 2, 3, 19]];
    for (round, pages) in rounds.iter().enumerate() {
        for &p in *pages {
            st.write(p * PAGE_SIZE as u64 + round as u64, &[round as u8 + 1; 7])
                .unwrap();
        }
        let seq = SeqNo(10 * (round as u64 + 1));
        st.take_checkpoint(seq).unwrap();
        snaps.insert(seq, content(&st));
    }
    // More writes after the last checkpoint must not show through.
    st.replace_page(0, &filled(0xee)).unwrap();
    st.write(7 * PAGE_SIZE as u64, &[9; 3]).unwrap();
    for (&seq, snap) in &snaps {
        let tree = naive_tree(SMALL, 20, snap);
        assert_eq!(st.checkpoint_digest(seq), Some(tree[0][0]));
        for p in 0..20u64 {
            let at = st.page_at(seq, p).unwrap();
            assert_eq!(
                &at[..],
                &snap[p as usize * PAGE_SIZE..(p as usize + 1) * PAGE_SIZE]
            );
        }
        for level in 0..=SMALL.depth {
            for i in 0..used_nodes(SMALL, 20, level) {
                assert_eq!(
                    st.node_digest_at(seq, level, i).unwrap(),
                    tree[level as usize][i as usize]
                );
            }
        }
    }
    assert_eq!(st.page(0).unwrap(), &filled(0xee));
    assert_eq!(st.checkpoints().len(), 4);
}

#[test]
fn last_modified_tracks_changing_checkpoint() {
    let mut st = PagedState::new(64, SMALL).unwrap();
    st.write(3 * PAGE_SIZE as u64, &[1]).unwrap();
    st.take_checkpoint(SeqNo(10)).unwrap();
    st.write(40 * PAGE_SIZE as u64, &[1]).unwrap();
    st.write(3 * PAGE_SIZE as u64, &[1]).unwrap(); // same content: not a change
    st.take_checkpoint(SeqNo(20)).unwrap();
    let lm = |seq, level, i| st.node_last_modified_at(SeqNo(seq), level, i).unwrap();
    assert_eq!(lm(20, 3, 3), SeqNo(10));
    assert_eq!(lm(20, 3, 40), SeqNo(20));
    assert_eq!(lm(20, 3, 41), SeqNo(0));
    assert_eq!(lm(20, 2, 0), SeqNo(10)); // pages 0..4
    assert_eq!(lm(20, 2, 10), SeqNo(20)); // pages 40..44
    assert_eq!(lm(20, 1, 0), SeqNo(10)); // pages 0..16
    assert_eq!(lm(20, 1, 2), SeqNo(20)); // pages 32..48
    assert_eq!(lm(20, 1, 3), SeqNo(0));
    assert_eq!(lm(20, 0, 0), SeqNo(20));
    assert_eq!(lm(10, 0, 0), SeqNo(10));
    assert_eq!(lm(10, 3, 40), SeqNo(0));
    assert_eq!(lm(10, 1, 2), SeqNo(0));
}

#[test]
fn discard_frees_saved_versions() {
    let mut st = PagedState::new(64, SMALL).unwrap();
    let write_all = |st: &mut PagedState, byte: u8| {
        for p in 0..10u64 {
            st.write(p * PAGE_SIZE as u64, &[byte]).unwrap();
        }
    };
    write_all(&mut st, 1);
    assert_eq!(st.resident_pages(), 10);
    st.take_checkpoint(SeqNo(1)).unwrap();
    write_all(&mut st, 2);
    assert_eq!(st.resident_pages(), 20);
    st.take_checkpoint(SeqNo(2)).unwrap();
    write_all(&mut st, 3);
    assert_eq!(st.resident_pages(), 30);
    st.take_checkpoint(SeqNo(3)).unwrap();
    assert_eq!(st.resident_pages(), 30);

    st.discard_checkpoints_before(SeqNo(2));
    assert_eq!(st.resident_pages(), 20);
    assert_eq!(st.page_at(SeqNo(2), 4).unwrap()[0], 2);
    assert_eq!(st.page_at(SeqNo(1), 4), Err(StateError::NoSuchCheckpoint));
    st.discard_checkpoints_before(SeqNo(3));
    assert_eq!(st.resident_pages(), 10);
    assert_eq!(
        st.checkpoints().iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![SeqNo(3)]
    );
    // Pages found all zero at a checkpoint are dematerialised.
    write_all(&mut st, 0);
    st.take_checkpoint(SeqNo(4)).unwrap();
    st.discard_checkpoints_before(SeqNo(4));
    assert_eq!(st.resident_pages(), 0);
    assert_eq!(st.page(4).unwrap(), &filled(0));
}

#[test]
fn rollback_restores_content_and_digest() {
    let mut st = PagedState::new(16, SMALL).unwrap();
    assert_eq!(
        st.rollback_to_last_checkpoint(),
        Err(StateError::NoSuchCheckpoint)
    );
    st.write(0, &[7; 100]).unwrap();
    let d1 = st.take_checkpoint(SeqNo(1)).unwrap();
    let before = content(&st);
    st.write(50, &[8; PAGE_SIZE]).unwrap();
    st.replace_page(15, &filled(3)).unwrap();
    assert_eq!(st.resident_pages(), 4);
    st.rollback_to_last_checkpoint().unwrap();
    assert_eq!(content(&st), before);
    assert_eq!(st.dirty_pages(), 0);
    assert_eq!(st.resident_pages(), 1);
    assert_eq!(st.take_checkpoint(SeqNo(2)).unwrap(), d1);
    // Rolling back twice, or with nothing dirty, is harmless.
    st.rollback_to_last_checkpoint().unwrap();
    assert_eq!(content(&st), before);
    // Once every checkpoint is discarded there is nothing to roll back to.
    st.discard_checkpoints_before(SeqNo(3));
    assert_eq!(
        st.rollback_to_last_checkpoint(),
        Err(StateError::NoSuchCheckpoint)
    );
}

#[test]
fn one_gib_state_is_lazy_and_checkpoints_cheaply() {
    let shape = TreeShape::default();
    let num_pages = 1u64 << 18;
    let mut st = PagedState::new(num_pages, shape).unwrap();
    assert_eq!(st.resident_pages(), 0);

    // The all-zero root, from the digest formula alone.
    let mut zero = Digest::of(&[0u8; PAGE_SIZE]);
    for level in (0..shape.depth).rev() {
        zero = naive_node(level, &vec![zero; shape.fanout as usize]);
    }
    assert_eq!(st.take_checkpoint(SeqNo(1)).unwrap(), zero);
    assert_eq!(st.tree.hashes_computed, 0);

    let last_byte = num_pages * PAGE_SIZE as u64 - 1;
    st.write(last_byte, &[1]).unwrap();
    st.write(0, &[1]).unwrap();
    let d2 = st.take_checkpoint(SeqNo(2)).unwrap();
    assert_ne!(d2, zero);
    // Two dirty pages in different level-1 subtrees: at most depth hashes each.
    assert!(st.tree.hashes_computed <= 2 * u64::from(shape.depth));
    assert_eq!(st.resident_pages(), 2);
    assert_eq!(
        st.page_at(SeqNo(2), num_pages - 1).unwrap()[PAGE_SIZE - 1],
        1
    );
    assert_eq!(
        st.page_at(SeqNo(1), num_pages - 1).unwrap()[PAGE_SIZE - 1],
        0
    );
    st.write(last_byte, &[0]).unwrap();
    st.write(0, &[0]).unwrap();
    assert_eq!(st.take_checkpoint(SeqNo(3)).unwrap(), zero);
}

#[test]
fn checkpoint_cost_is_proportional_to_dirty_pages() {
    let shape = TreeShape {
        fanout: 4,
        depth: 5,
    };
    let mut st = PagedState::new(1024, shape).unwrap();
    for p in 0..1024u64 {
        st.write(p * PAGE_SIZE as u64, &[1]).unwrap();
    }
    st.take_checkpoint(SeqNo(1)).unwrap();
    let full = st.tree.hashes_computed;
    assert_eq!(full, 256 + 64 + 16 + 4 + 1);
    st.write(5 * PAGE_SIZE as u64, &[2]).unwrap();
    st.take_checkpoint(SeqNo(2)).unwrap();
    assert_eq!(st.tree.hashes_computed - full, u64::from(shape.depth));
}

/// One step of the model-based test.
#[derive(Clone, Debug)]
enum Op {
    /// Writes `len` bytes of a pattern of `seed` (zeros if 0) at `offset`.
    Write {
        offset: u64,
        len: usize,
        seed: u8,
    },
    Replace {
        index: u64,
        fill: u8,
    },
    Checkpoint {
        gap: u64,
    },
    /// Discards before a retained checkpoint (or past the last one), chosen by `pick`.
    Discard {
        pick: usize,
    },
    Rollback,
    /// Sets an undo mark (tentative execution of a batch).
    Mark,
    /// Undoes back to the mark (a view change dropped the batch).
    Undo,
    /// Forgets the mark (the batch committed).
    ClearMark,
}

fn op(size: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..size + 16, 0..2 * PAGE_SIZE + 16, 0..4u8)
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        1 => (0..size / PAGE_SIZE as u64 + 2, any::<u8>())
            .prop_map(|(index, fill)| Op::Replace { index, fill }),
        3 => (1..4u64).prop_map(|gap| Op::Checkpoint { gap }),
        1 => any::<usize>().prop_map(|pick| Op::Discard { pick }),
        1 => Just(Op::Rollback),
        1 => Just(Op::Mark),
        1 => Just(Op::Undo),
        1 => Just(Op::ClearMark),
    ]
}

/// A shape, a page count within it, and operations.
fn scenario() -> impl Strategy<Value = (TreeShape, u64, Vec<Op>)> {
    let shapes = prop_oneof![
        Just(TreeShape {
            fanout: 2,
            depth: 6
        }),
        Just(TreeShape {
            fanout: 4,
            depth: 3
        }),
        Just(TreeShape {
            fanout: 3,
            depth: 3
        }),
    ];
    shapes.prop_flat_map(|shape| {
        let capacity = u64::from(shape.fanout).pow(shape.depth);
        (Just(shape), 0..=capacity).prop_flat_map(|(shape, n)| {
            (
                Just(shape),
                Just(n),
                prop::collection::vec(op(n * PAGE_SIZE as u64), 1..40),
            )
        })
    })
}

/// What the model keeps of a checkpoint.
struct Snapshot {
    content: Vec<u8>,
    tree: Vec<Vec<Digest>>,
    lm: Vec<Vec<SeqNo>>,
}

fn check_against(st: &PagedState, shape: TreeShape, n: u64, snaps: &BTreeMap<SeqNo, Snapshot>) {
    let listed: Vec<(SeqNo, Digest)> = snaps
        .iter()
        .map(|(&s, snap)| (s, snap.tree[0][0]))
        .collect();
    assert_eq!(st.checkpoints(), listed);
    for (&seq, snap) in snaps {
        for p in 0..n {
            let range = p as usize * PAGE_SIZE..(p as usize + 1) * PAGE_SIZE;
            assert_eq!(
                &st.page_at(seq, p).unwrap()[..],
                &snap.content[range],
                "page {p} at {seq:?}"
            );
        }
        for level in 0..=shape.depth {
            let used = used_nodes(shape, n, level);
            for i in 0..used {
                let (l, i_) = (level as usize, i as usize);
                assert_eq!(st.node_digest_at(seq, level, i).unwrap(), snap.tree[l][i_]);
                assert_eq!(
                    st.node_last_modified_at(seq, level, i).unwrap(),
                    snap.lm[l][i_]
                );
            }
            assert_eq!(
                st.node_digest_at(seq, level, used),
                Err(StateError::OutOfRange)
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The incremental tree, the copy-on-write versions, discard, rollback and
    /// the undo mark agree with a from-scratch model after any sequence of
    /// operations.
    #[test]
    fn matches_naive_model((shape, n, ops) in scenario()) {
        let mut st = PagedState::new(n, shape).unwrap();
        let size = n * PAGE_SIZE as u64;
        let mut cur = vec![0u8; size as usize];
        let mut dirty = BTreeSet::new();
        let mut snaps: BTreeMap<SeqNo, Snapshot> = BTreeMap::new();
        let mut last: Option<SeqNo> = None;
        let mut last_tree = naive_tree(shape, n, &cur);
        let mut lm: Vec<Vec<SeqNo>> = last_tree.iter().map(|l| vec![SeqNo(0); l.len()]).collect();
        // The content at the undo mark, and the pages changed since it.
        let mut mark: Option<(Vec<u8>, BTreeSet<u64>)> = None;
        for op in ops {
            match op {
                Op::Write { offset, len, seed } => {
                    let data: Vec<u8> = (0..len).map(|i| seed.wrapping_mul(1 + (i % 7) as u8)).collect();
                    let result = st.write(offset, &data);
                    if offset + len as u64 <= size {
                        prop_assert_eq!(result, Ok(()));
                        cur[offset as usize..offset as usize + len].copy_from_slice(&data);
                        // An empty write touches no page.
                        if len > 0 {
                            let pages = offset / PAGE_SIZE as u64..(offset + len as u64).div_ceil(PAGE_SIZE as u64);
                            dirty.extend(pages.clone());
                            if let Some((_, changed)) = mark.as_mut() {
                                changed.extend(pages);
                            }
                        }
                    } else {
                        prop_assert_eq!(result, Err(StateError::OutOfRange));
                    }
                }
                Op::Replace { index, fill } => {
                    let result = st.replace_page(index, &filled(fill));
                    if index < n {
                        prop_assert_eq!(result, Ok(()));
                        cur[index as usize * PAGE_SIZE..(index as usize + 1) * PAGE_SIZE].fill(fill);
                        dirty.insert(index);
                        if let Some((_, changed)) = mark.as_mut() {
                            changed.insert(index);
                        }
                    } else {
                        prop_assert_eq!(result, Err(StateError::OutOfRange));
                    }
                }
                Op::Checkpoint { gap } => {
                    let seq = SeqNo(last.map_or(gap - 1, |s| s.0 + gap));
                    let tree = naive_tree(shape, n, &cur);
                    for (l, level) in tree.iter().enumerate() {
                        for (i, d) in level.iter().enumerate() {
                            if *d != last_tree[l][i] {
                                lm[l][i] = seq;
                            }
                        }
                    }
                    prop_assert_eq!(st.take_checkpoint(seq), Ok(tree[0][0]));
                    last_tree = tree.clone();
                    snaps.insert(seq, Snapshot { content: cur.clone(), tree, lm: lm.clone() });
                    last = Some(seq);
                    dirty.clear();
                }
                Op::Discard { pick } => {
                    let mut candidates: Vec<SeqNo> = snaps.keys().copied().collect();
                    candidates.push(SeqNo(last.map_or(0, |s| s.0 + 1)));
                    let seq = candidates[pick % candidates.len()];
                    st.discard_checkpoints_before(seq);
                    snaps.retain(|&s, _| s >= seq);
                }
                Op::Rollback => match snaps.values().next_back() {
                    Some(snap) => {
                        prop_assert_eq!(st.rollback_to_last_checkpoint(), Ok(()));
                        cur.clone_from(&snap.content);
                        dirty.clear();
                        mark = None;
                    }
                    None => prop_assert_eq!(st.rollback_to_last_checkpoint(), Err(StateError::NoSuchCheckpoint)),
                },
                Op::Mark => {
                    st.set_undo_mark();
                    mark = Some((cur.clone(), BTreeSet::new()));
                }
                Op::Undo => {
                    prop_assert_eq!(st.undo(), mark.is_some());
                    if let Some((content, changed)) = mark.take() {
                        // What changed since the mark is written back: dirty.
                        cur = content;
                        dirty.extend(changed);
                    }
                }
                Op::ClearMark => {
                    st.clear_undo_mark();
                    mark = None;
                }
            }
            prop_assert_eq!(st.dirty_pages(), dirty.len());
        }
        prop_assert_eq!(content(&st), cur);
        check_against(&st, shape, n, &snaps);
    }
}

/// The undo mark restores exactly the bytes written since it, across page
/// boundaries and zero pages, and checkpoints taken afterwards see the
/// restored content.
#[test]
fn undo_restores_the_state_at_the_mark() {
    let mut s = PagedState::new(6, SMALL).expect("state");
    s.write(100, &[7; 5000]).expect("write");
    s.take_checkpoint(SeqNo(1)).expect("checkpoint");
    s.write(3 * PAGE_SIZE as u64, &[9; 10]).expect("write");
    let before = content(&s);
    s.set_undo_mark();
    s.write(PAGE_SIZE as u64 - 3, &[1; 20]).expect("write");
    s.write(5 * PAGE_SIZE as u64, &[2; 8]).expect("write");
    s.replace_page(3, &filled(4)).expect("replace");
    assert_ne!(content(&s), before);
    assert!(s.undo());
    assert_eq!(content(&s), before);
    assert!(!s.undo(), "the mark is gone");
    // A committed batch keeps its writes.
    s.set_undo_mark();
    s.write(0, &[5; 3]).expect("write");
    s.clear_undo_mark();
    assert!(!s.undo());
    let kept = content(&s);
    assert_eq!(&kept[..3], &[5; 3]);
    let d = s.take_checkpoint(SeqNo(2)).expect("checkpoint");
    let mut fresh = PagedState::new(6, SMALL).expect("state");
    fresh.write(0, &kept).expect("write");
    assert_eq!(fresh.take_checkpoint(SeqNo(1)).expect("checkpoint"), d);
}

/// The pages modified after a checkpoint are exactly those whose content
/// differs from it, found without scanning the whole state.
#[test]
fn pages_modified_after_lists_exactly_the_changed_pages() {
    let mut s = PagedState::new(40, SMALL).expect("state");
    s.write(5 * PAGE_SIZE as u64, &[1; 3]).expect("write");
    s.take_checkpoint(SeqNo(4)).expect("checkpoint");
    s.write(7 * PAGE_SIZE as u64 + 10, &[2; PAGE_SIZE]).expect("write"); // pages 7 and 8
    s.write(39 * PAGE_SIZE as u64, &[3; 1]).expect("write");
    s.take_checkpoint(SeqNo(8)).expect("checkpoint");
    s.write(0, &[4; 1]).expect("write");
    s.take_checkpoint(SeqNo(12)).expect("checkpoint");
    assert_eq!(s.pages_modified_after(SeqNo(12), SeqNo(0)).expect("walk"), vec![0, 5, 7, 8, 39]);
    assert_eq!(s.pages_modified_after(SeqNo(12), SeqNo(4)).expect("walk"), vec![0, 7, 8, 39]);
    assert_eq!(s.pages_modified_after(SeqNo(8), SeqNo(4)).expect("walk"), vec![7, 8, 39]);
    assert_eq!(s.pages_modified_after(SeqNo(12), SeqNo(12)).expect("walk"), Vec::<u64>::new());
}
