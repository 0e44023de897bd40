//! The partition tree: a Merkle tree of digests over the pages (Castro's thesis,
//! §6.2.1 "partition tree"), kept as of the last checkpoint.
//!
//! Invariants:
//! - A node absent from `nodes` has never changed since the state was created:
//!   its digest is the precomputed all-zero digest of its level and its `lm` is
//!   `SeqNo(0)`. So an untouched state of any size costs no memory here.
//! - Children beyond `num_pages` are treated as zero pages; they never change
//!   (pages beyond the state cannot be written), so they are never stored.
//! - `nodes[l]` only holds indices below `used[l]`.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Digest, SeqNo};

use super::{TreeShape, PAGE_SIZE};

/// A node's value as of some checkpoint: its digest and the sequence number of
/// the last checkpoint at which that digest changed ("lm" in the thesis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct NodeVersion {
    pub(super) digest: Digest,
    pub(super) lm: SeqNo,
}

/// Old node versions displaced by a checkpoint, keyed by `(level, index)`.
pub(super) type SavedNodes = BTreeMap<(u32, u64), NodeVersion>;

/// Digest of one page: BLAKE3 of its bytes, with no index in it, so every zero
/// page has the same digest.
pub(super) fn page_digest(page: &[u8; PAGE_SIZE]) -> Digest {
    Digest::of(page)
}

/// The partition tree's current digests (as of the last checkpoint).
#[derive(Debug)]
pub(super) struct PartitionTree {
    shape: TreeShape,
    /// `used[l]`: number of nodes of level `l` that cover at least one page
    /// (the root always counts, even for an empty state).
    used: Vec<u64>,
    /// `zero[l]`: digest of a level-`l` node whose subtree is all zero pages.
    zero: Vec<Digest>,
    /// `nodes[l]`: nodes of level `l` that changed at least once.
    nodes: Vec<BTreeMap<u64, NodeVersion>>,
    /// Node hashes computed so far, so tests can check a checkpoint's cost.
    #[cfg(test)]
    pub(super) hashes_computed: u64,
}

impl PartitionTree {
    /// A tree over `num_pages` zero pages. The caller has validated the shape
    /// (`fanout >= 2`, `1 <= depth <= MAX_DEPTH`) and `num_pages`.
    pub(super) fn new(shape: TreeShape, num_pages: u64) -> Self {
        let depth = shape.depth as usize;
        let fanout = u64::from(shape.fanout);
        let mut used = vec![0u64; depth + 1];
        used[depth] = num_pages;
        for l in (0..depth).rev() {
            used[l] = used[l + 1].div_ceil(fanout);
        }
        used[0] = used[0].max(1);

        let mut zero = vec![Digest::default(); depth + 1];
        zero[depth] = page_digest(&[0u8; PAGE_SIZE]);
        for l in (0..depth).rev() {
            let child = zero[l + 1];
            zero[l] = hash_children(l as u32, (0..shape.fanout).map(|_| child));
        }
        PartitionTree {
            shape,
            used,
            zero,
            nodes: vec![BTreeMap::new(); depth + 1],
            #[cfg(test)]
            hashes_computed: 0,
        }
    }

    /// Whether `(level, index)` names a node in the used part of the tree.
    pub(super) fn contains(&self, level: u32, index: u64) -> bool {
        self.used.get(level as usize).is_some_and(|&n| index < n)
    }

    /// The current version of a node. Callers check `contains` first; an
    /// unknown node reads as an untouched one.
    pub(super) fn get(&self, level: u32, index: u64) -> NodeVersion {
        let l = level as usize;
        match self.nodes.get(l).and_then(|m| m.get(&index)) {
            Some(v) => *v,
            None => NodeVersion {
                digest: self.zero.get(l).copied().unwrap_or_default(),
                lm: SeqNo(0),
            },
        }
    }

    /// The root digest as of the last checkpoint.
    pub(super) fn root(&self) -> Digest {
        self.get(0, 0).digest
    }

    /// Brings the tree up to date for a checkpoint at `seq`, given the new
    /// digests of every page dirtied since the previous checkpoint. Only the
    /// ancestors of pages whose digest changed are rehashed, so the cost is
    /// `O(changed pages × depth × fanout)`. Every displaced node version is
    /// put in `saved` (the previous checkpoint's record) when there is one.
    /// Returns the new root digest.
    pub(super) fn update(
        &mut self,
        leaves: impl IntoIterator<Item = (u64, Digest)>,
        seq: SeqNo,
        mut saved: Option<&mut SavedNodes>,
    ) -> Digest {
        let depth = self.shape.depth;
        let fanout = u64::from(self.shape.fanout);
        // The leaves are set in bulk (there may be as many as pages): the
        // changed ones are collected, then added to the maps at once.
        let leaves = leaves.into_iter();
        let mut fresh: Vec<(u64, NodeVersion)> = Vec::with_capacity(leaves.size_hint().0);
        let mut old: Vec<((u32, u64), NodeVersion)> = Vec::with_capacity(leaves.size_hint().0);
        for (index, digest) in leaves {
            debug_assert!(self.contains(depth, index));
            let was = self.get(depth, index);
            if was.digest != digest {
                fresh.push((index, NodeVersion { digest, lm: seq }));
                old.push(((depth, index), was));
            }
        }
        let mut changed: Vec<u64> = fresh.iter().map(|(index, _)| index / fanout).collect();
        changed.sort_unstable();
        changed.dedup();
        if let Some(saved) = saved.as_deref_mut() {
            // As in `set`: a value saved earlier for this checkpoint stays.
            // (The map is empty until this checkpoint's update.)
            let mut merged: SavedNodes = old.into_iter().collect();
            merged.append(saved);
            *saved = merged;
        }
        if let Some(map) = self.nodes.get_mut(depth as usize) {
            super::add_sorted(map, fresh);
        }
        let mut changed: BTreeSet<u64> = changed.into_iter().collect();
        for level in (0..depth).rev() {
            let mut parents = BTreeSet::new();
            for index in std::mem::take(&mut changed) {
                let digest = self.hash_node(level, index);
                if self.set(level, index, digest, seq, saved.as_deref_mut()) {
                    parents.insert(index / fanout);
                }
            }
            changed = parents;
        }
        self.root()
    }

    /// Stores a new digest for a node if it differs from the current one;
    /// returns whether it did.
    fn set(
        &mut self,
        level: u32,
        index: u64,
        digest: Digest,
        seq: SeqNo,
        saved: Option<&mut SavedNodes>,
    ) -> bool {
        let old = self.get(level, index);
        if old.digest == digest {
            return false;
        }
        if let Some(saved) = saved {
            // A node changes at most once per checkpoint, so the first saved
            // value is the one as of the previous checkpoint.
            saved.entry((level, index)).or_insert(old);
        }
        if let Some(map) = self.nodes.get_mut(level as usize) {
            map.insert(index, NodeVersion { digest, lm: seq });
        }
        true
    }

    /// Recomputes an internal node's digest from its children's current ones.
    fn hash_node(&mut self, level: u32, index: u64) -> Digest {
        #[cfg(test)]
        {
            self.hashes_computed += 1;
        }
        let fanout = u64::from(self.shape.fanout);
        let child_level = level + 1;
        let zero = self
            .zero
            .get(child_level as usize)
            .copied()
            .unwrap_or_default();
        let children = self.nodes.get(child_level as usize);
        // `used[l] * fanout <= num_pages + fanout`, far below u64::MAX because
        // `num_pages <= MAX_PAGES`, so the child indices cannot overflow.
        let first = index * fanout;
        let mut stored = children
            .into_iter()
            .flat_map(|m| m.range(first..first + fanout))
            .peekable();
        let digests = (first..first + fanout).map(|child| match stored.peek() {
            Some(&(&i, v)) if i == child => {
                stored.next();
                v.digest
            }
            _ => zero,
        });
        hash_children(level, digests)
    }
}

/// Digest of an internal node of `level`: BLAKE3 over the level as a
/// little-endian u32, then its children's digests in order.
pub(super) fn hash_children(level: u32, children: impl Iterator<Item = Digest>) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&level.to_le_bytes());
    for child in children {
        hasher.update(child.as_bytes());
    }
    Digest(*hasher.finalize().as_bytes())
}
