//! The replicated service state: a region of fixed-size pages with
//! copy-on-write checkpoints and a partition tree of digests (Castro's thesis,
//! §6.2 "State Transfer" data structures; DESIGN.md §3 "state").
//!
//! Invariants the module maintains:
//! - Pages are materialised lazily: an untouched page is the zero page and
//!   costs no memory, so creating a state of any size is O(depth × fanout).
//! - Page digest = BLAKE3(page bytes); internal node digest = BLAKE3(level as
//!   u32 LE ‖ child digests in order). Children beyond `num_pages` count as
//!   zero pages (so appending zero pages to a state leaves its root as is),
//!   and every all-zero subtree of a level shares one precomputed digest.
//!   The root digest is the checkpoint digest.
//! - The tree always describes the state as of the last checkpoint taken;
//!   `take_checkpoint` rehashes only the ancestors of pages dirtied since.
//! - Checkpoint sequence numbers strictly increase over the state's life, even
//!   across `discard_checkpoints_before`.
//! - The record of a retained checkpoint `c` holds the version as of `c` of
//!   every page written, and every tree node changed, after `c` and before the
//!   next checkpoint (or now, for the last one). So the version of an object
//!   at `c` is the one saved in the first record at or after `c` that has it,
//!   else the current one. Discarding records never loses a version that a
//!   retained checkpoint needs, and frees the rest.

mod pages;
mod tree;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::types::{Digest, SeqNo};

use pages::{PageStore, SavedPages};
pub use pages::ZERO_PAGE;
use tree::{page_digest, NodeVersion, PartitionTree, SavedNodes};

/// Adds `entries`, in ascending key order, to `map` (a new value replaces an
/// old one). A merge costs the size of the map, an insertion a search: a
/// state transfer adds as many entries as there are pages at once, a
/// checkpoint a few to a map that may hold the whole state.
fn add_sorted<K: Ord, V>(map: &mut BTreeMap<K, V>, entries: Vec<(K, V)>) {
    if entries.len() * 16 < map.len() {
        map.extend(entries);
    } else {
        map.append(&mut entries.into_iter().collect());
    }
}

/// Size of a page of the service state, in bytes.
pub const PAGE_SIZE: usize = 4096;

/// One page of the service state.
pub type Page = [u8; PAGE_SIZE];

/// Largest accepted fanout: a node's digest hashes `fanout` child digests.
pub const MAX_FANOUT: u32 = 1 << 16;

/// Largest accepted depth (with `fanout >= 2`, 64 levels already cover every
/// u64 page index).
pub const MAX_DEPTH: u32 = 64;

/// Largest number of pages, so that every byte offset of the state fits a u64.
pub const MAX_PAGES: u64 = u64::MAX / PAGE_SIZE as u64;

/// Shape of the partition tree: the root is at level 0 and the pages (leaves)
/// at level `depth`; every internal node has `fanout` children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeShape {
    /// Children per internal node.
    pub fanout: u32,
    /// Level of the leaves (pages); the root is level 0.
    pub depth: u32,
}

impl Default for TreeShape {
    /// Fanout 256, depth 4: covers 2^32 pages (16 TiB).
    fn default() -> Self {
        TreeShape {
            fanout: 256,
            depth: 4,
        }
    }
}

impl TreeShape {
    /// `fanout^depth`, or `None` if it exceeds u64 (then any page count fits).
    fn capacity(self) -> Option<u64> {
        u64::from(self.fanout).checked_pow(self.depth)
    }
}

/// Why a state operation was refused.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    /// A byte span, page or tree node outside the state.
    #[error("offset, page or node out of range")]
    OutOfRange,
    /// More pages than the tree covers (`fanout^depth`) or than `MAX_PAGES`.
    #[error("more pages than the partition tree or byte offsets can address")]
    TooManyPages,
    /// `fanout` outside `2..=MAX_FANOUT` or `depth` outside `1..=MAX_DEPTH`.
    #[error("invalid partition tree shape")]
    BadShape,
    /// The checkpoint asked for is not retained.
    #[error("no such checkpoint")]
    NoSuchCheckpoint,
    /// A checkpoint's sequence number is not above the last checkpoint's.
    #[error("checkpoint sequence number not above the last checkpoint's")]
    CheckpointOrder,
}

/// What a retained checkpoint keeps: its digest and the versions, as of it,
/// of what changed after it (see the module invariants).
#[derive(Debug, Default)]
struct CheckpointRecord {
    digest: Digest,
    saved_pages: SavedPages,
    saved_nodes: SavedNodes,
}

/// The paged service state with its checkpoints and partition tree.
#[derive(Debug)]
pub struct PagedState {
    shape: TreeShape,
    pages: PageStore,
    tree: PartitionTree,
    /// Retained checkpoints, by sequence number.
    records: BTreeMap<SeqNo, CheckpointRecord>,
    /// Sequence number of the last checkpoint ever taken, retained or not.
    last_taken: Option<SeqNo>,
    /// While an undo mark is set: what each change since it overwrote,
    /// oldest first.
    undo: Option<Vec<Overwritten>>,
}

/// What one change made since the undo mark overwrote. A write keeps only
/// the bytes it covered, so a small write (a reply slot's header) does not
/// copy its page; a page replaced wholesale keeps the old version, shared.
#[derive(Debug)]
enum Overwritten {
    Bytes { offset: u64, old: Box<[u8]> },
    /// `None`: the zero page.
    Page { index: u64, version: Option<Arc<Page>> },
}

impl PagedState {
    /// A state of `num_pages` zero pages with a partition tree of `shape`.
    /// Costs O(depth × fanout) time and no page memory, whatever its size.
    pub fn new(num_pages: u64, shape: TreeShape) -> Result<Self, StateError> {
        if !(2..=MAX_FANOUT).contains(&shape.fanout) || !(1..=MAX_DEPTH).contains(&shape.depth) {
            return Err(StateError::BadShape);
        }
        if num_pages > MAX_PAGES || shape.capacity().is_some_and(|cap| num_pages > cap) {
            return Err(StateError::TooManyPages);
        }
        Ok(PagedState {
            shape,
            pages: PageStore::new(num_pages),
            tree: PartitionTree::new(shape, num_pages),
            records: BTreeMap::new(),
            last_taken: None,
            undo: None,
        })
    }

    /// Number of pages in the state.
    pub fn num_pages(&self) -> u64 {
        self.pages.num_pages()
    }

    /// Shape of the partition tree.
    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    /// Reads `buf.len()` bytes of the current state from byte `offset`; the
    /// span may cross pages. `OutOfRange` if it does not lie within the state.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StateError> {
        self.pages.read(offset, buf)
    }

    /// Writes `data` at byte `offset`; the span may cross pages. Every page
    /// touched becomes dirty, and its content as of the last checkpoint is
    /// kept (copy-on-write). `OutOfRange`, with nothing written, if the span
    /// does not lie within the state.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StateError> {
        if let Some(undo) = self.undo.as_mut() {
            if !data.is_empty() {
                let mut old = vec![0u8; data.len()].into_boxed_slice();
                // Out of range: nothing is written below, so nothing to keep.
                if self.pages.read(offset, &mut old).is_ok() {
                    undo.push(Overwritten::Bytes { offset, old });
                }
            }
        }
        let saved = self
            .records
            .values_mut()
            .next_back()
            .map(|r| &mut r.saved_pages);
        self.pages.write(offset, data, saved)
    }

    /// Current content of page `index`.
    pub fn page(&self, index: u64) -> Result<&Page, StateError> {
        self.pages.page(index)
    }

    /// Overwrites page `index` wholesale (state transfer); marks it dirty like
    /// `write`.
    pub fn replace_page(&mut self, index: u64, content: &Page) -> Result<(), StateError> {
        self.replace_shared(index, Arc::new(*content))
    }

    fn replace_shared(&mut self, index: u64, content: Arc<Page>) -> Result<(), StateError> {
        self.remember_for_undo(index);
        let saved = self
            .records
            .values_mut()
            .next_back()
            .map(|r| &mut r.saved_pages);
        self.pages.replace(index, content, saved)
    }

    /// Installs pages fetched by a state transfer, each with the digest it was
    /// checked against, and takes a checkpoint at `seq` without hashing them
    /// again; returns the root digest. Other pages dirtied since the last
    /// checkpoint (normally none) are hashed as `take_checkpoint` does.
    pub fn install_pages(
        &mut self,
        seq: SeqNo,
        pages: impl IntoIterator<Item = (u64, Arc<Page>, Digest)>,
    ) -> Result<Digest, StateError> {
        if self.last_taken.is_some_and(|last| seq <= last) {
            return Err(StateError::CheckpointOrder);
        }
        let mut pages: Vec<(u64, Arc<Page>, Digest)> = pages.into_iter().collect();
        pages.sort_unstable_by_key(|(index, _, _)| *index);
        let known: BTreeMap<u64, Digest> = pages.iter().map(|(index, _, digest)| (*index, *digest)).collect();
        for (index, _, _) in &pages {
            self.remember_for_undo(*index);
        }
        let saved = self.records.values_mut().next_back().map(|r| &mut r.saved_pages);
        self.pages.replace_sorted(pages.into_iter().map(|(index, page, _)| (index, page)).collect(), saved)?;
        self.checkpoint_with(seq, &known)
    }

    /// While an undo mark is set, keeps page `index` as it is now (unless it
    /// is not a page of the state).
    fn remember_for_undo(&mut self, index: u64) {
        if let Some(undo) = self.undo.as_mut() {
            if index < self.pages.num_pages() {
                undo.push(Overwritten::Page { index, version: self.pages.version(index) });
            }
        }
    }

    /// Takes a checkpoint of the current state at `seq` (must be > the last
    /// checkpoint's seq), updating the partition tree incrementally from the
    /// pages dirtied since the previous checkpoint; returns the root digest.
    /// Costs O(dirty pages × depth × fanout), independent of the state size.
    pub fn take_checkpoint(&mut self, seq: SeqNo) -> Result<Digest, StateError> {
        self.checkpoint_with(seq, &BTreeMap::new())
    }

    /// `take_checkpoint`, with the digests of some dirty pages already known.
    fn checkpoint_with(&mut self, seq: SeqNo, known: &BTreeMap<u64, Digest>) -> Result<Digest, StateError> {
        if self.last_taken.is_some_and(|last| seq <= last) {
            return Err(StateError::CheckpointOrder);
        }
        let mut leaves = Vec::with_capacity(self.pages.dirty_count());
        let mut zero_pages = Vec::new();
        let zero_digest = page_digest(&ZERO_PAGE);
        for index in self.pages.dirty() {
            let digest = match known.get(&index) {
                Some(d) => *d,
                None => page_digest(self.pages.page(index)?),
            };
            if digest == zero_digest {
                zero_pages.push(index);
            }
            leaves.push((index, digest));
        }
        let saved = self
            .records
            .values_mut()
            .next_back()
            .map(|r| &mut r.saved_nodes);
        let digest = self.tree.update(leaves, seq, saved);
        self.pages.clear_dirty(&zero_pages);
        self.records.insert(
            seq,
            CheckpointRecord {
                digest,
                ..CheckpointRecord::default()
            },
        );
        self.last_taken = Some(seq);
        Ok(digest)
    }

    /// The oldest retained checkpoint at or after `seq`, if any.
    pub fn retained_from(&self, seq: SeqNo) -> Option<SeqNo> {
        self.records.range(seq..).next().map(|(s, _)| *s)
    }

    /// Digest of the retained checkpoint at `seq`, if any.
    pub fn checkpoint_digest(&self, seq: SeqNo) -> Option<Digest> {
        self.records.get(&seq).map(|r| r.digest)
    }

    /// The last retained checkpoint.
    pub fn last_checkpoint(&self) -> Option<(SeqNo, Digest)> {
        self.records.last_key_value().map(|(&s, r)| (s, r.digest))
    }

    /// Every retained checkpoint, ascending by sequence number.
    pub fn checkpoints(&self) -> Vec<(SeqNo, Digest)> {
        self.records.iter().map(|(&s, r)| (s, r.digest)).collect()
    }

    /// Drops every checkpoint below `seq` and the page/tree versions only they
    /// needed (called when `seq` becomes stable).
    pub fn discard_checkpoints_before(&mut self, seq: SeqNo) {
        // Lookups at a checkpoint only consult records at or after it, so the
        // records kept are self-sufficient.
        self.records = self.records.split_off(&seq);
    }

    /// Restores the current state to the last checkpoint (undoes every write
    /// since) and forgets the undo mark, which named a state that is gone.
    /// `NoSuchCheckpoint`, with nothing changed, if no checkpoint is retained.
    pub fn rollback_to_last_checkpoint(&mut self) -> Result<(), StateError> {
        let (_, record) = self
            .records
            .iter_mut()
            .next_back()
            .ok_or(StateError::NoSuchCheckpoint)?;
        self.undo = None;
        // The tree already describes the last checkpoint; only pages moved on.
        self.pages.rollback(&mut record.saved_pages);
        Ok(())
    }

    /// Sets an undo mark: [`PagedState::undo`] will restore the pages to what
    /// they are now. Tentative execution sets one before each batch, since a
    /// view change may undo that batch. A mark already set is replaced.
    pub fn set_undo_mark(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Whether an undo mark is set.
    pub fn has_undo_mark(&self) -> bool {
        self.undo.is_some()
    }

    /// Forgets the undo mark (the batch it guarded committed).
    pub fn clear_undo_mark(&mut self) {
        self.undo = None;
    }

    /// Restores everything changed since the undo mark, newest change first,
    /// and clears the mark. Costs the bytes changed since the mark. Returns
    /// whether a mark was set.
    pub fn undo(&mut self) -> bool {
        let Some(overwritten) = self.undo.take() else { return false };
        for change in overwritten.into_iter().rev() {
            let saved = self.records.values_mut().next_back().map(|r| &mut r.saved_pages);
            // In range: each was checked when the change was made.
            let restored = match change {
                Overwritten::Bytes { offset, old } => self.pages.write(offset, &old, saved),
                Overwritten::Page { index, version } => {
                    let content = version.unwrap_or_else(|| Arc::new(ZERO_PAGE));
                    self.pages.replace(index, content, saved)
                }
            };
            debug_assert!(restored.is_ok());
        }
        true
    }

    /// Content of page `index` as of the retained checkpoint `seq`.
    pub fn page_at(&self, seq: SeqNo, index: u64) -> Result<&Page, StateError> {
        Ok(self.version_at(seq, index)?.map_or(&ZERO_PAGE, |p| &**p))
    }

    /// As [`PagedState::page_at`], sharing the page instead of borrowing it
    /// (`None` is the zero page): a copy that costs nothing and stays valid
    /// while the state moves on, for a writer on another thread.
    pub fn shared_page_at(&self, seq: SeqNo, index: u64) -> Result<Option<Arc<Page>>, StateError> {
        Ok(self.version_at(seq, index)?.cloned())
    }

    /// The version of page `index` as of the retained checkpoint `seq`
    /// (`None` for the zero page).
    fn version_at(&self, seq: SeqNo, index: u64) -> Result<Option<&Arc<Page>>, StateError> {
        self.pages.check_index(index)?;
        self.check_retained(seq)?;
        for record in self.records.range(seq..).map(|(_, r)| r) {
            if let Some(saved) = record.saved_pages.get(&index) {
                return Ok(saved.as_ref());
            }
        }
        Ok(self.pages.shared(index))
    }

    /// Digest of a partition-tree node (level 0 = root, level `depth` = pages)
    /// as of the retained checkpoint `seq`; `index` must be below
    /// `fanout^level` and within the used part of the tree (nodes covering at
    /// least one page; the root always).
    pub fn node_digest_at(&self, seq: SeqNo, level: u32, index: u64) -> Result<Digest, StateError> {
        Ok(self.node_at(seq, level, index)?.digest)
    }

    /// The sequence number of the last checkpoint at which that node/page
    /// changed ("lm" in Castro's thesis), as of checkpoint `seq`. `SeqNo(0)`
    /// for a node that never changed since the state was created (all zero).
    pub fn node_last_modified_at(
        &self,
        seq: SeqNo,
        level: u32,
        index: u64,
    ) -> Result<SeqNo, StateError> {
        Ok(self.node_at(seq, level, index)?.lm)
    }

    /// Number of pages modified since the last checkpoint.
    pub fn dirty_pages(&self) -> usize {
        self.pages.dirty_count()
    }

    /// Number of distinct pages materialised in memory: current pages plus
    /// versions saved for checkpoints (a version shared by several owners
    /// counts once). Meant for memory tests and metrics.
    pub fn resident_pages(&self) -> usize {
        let saved = self
            .records
            .values()
            .flat_map(|r| r.saved_pages.values().flatten());
        let distinct: BTreeSet<*const Page> = self
            .pages
            .materialised()
            .chain(saved)
            .map(std::sync::Arc::as_ptr)
            .collect();
        distinct.len()
    }

    fn check_retained(&self, seq: SeqNo) -> Result<(), StateError> {
        if self.records.contains_key(&seq) {
            Ok(())
        } else {
            Err(StateError::NoSuchCheckpoint)
        }
    }

    /// A node's version as of the retained checkpoint `seq`.
    /// The digests of an internal node's children as of the retained checkpoint
    /// `seq`, in order and exactly as hashed into the node's digest: `fanout` of
    /// them, children outside the used part of the tree being all-zero subtrees.
    /// State transfer sends these in META-DATA.
    pub fn children_at(&self, seq: SeqNo, level: u32, index: u64) -> Result<Vec<Digest>, StateError> {
        if level >= self.shape.depth {
            return Err(StateError::OutOfRange);
        }
        self.node_at(seq, level, index)?;
        let fanout = self.shape.fanout as u64;
        let first = index.checked_mul(fanout).ok_or(StateError::OutOfRange)?;
        Ok((first..first + fanout)
            .map(|child| match self.node_at(seq, level + 1, child) {
                Ok(v) => v.digest,
                Err(_) => self.tree.get(level + 1, child).digest,
            })
            .collect())
    }

    /// The digest of a node at `level` whose children have these digests; a
    /// receiver of META-DATA checks it against the digest it expects.
    pub fn hash_children(level: u32, children: &[Digest]) -> Digest {
        tree::hash_children(level, children.iter().copied())
    }

    /// The digest of a page's content, as the partition tree's leaves hold it.
    pub fn page_digest(page: &Page) -> Digest {
        tree::page_digest(page)
    }

    /// The pages that changed after checkpoint `after`, as of the retained
    /// checkpoint `at`, ascending: what a host writes to disk to bring a copy
    /// of checkpoint `after` up to `at`. Walks only the subtrees whose
    /// last-modified checkpoint is above `after`.
    pub fn pages_modified_after(&self, at: SeqNo, after: SeqNo) -> Result<Vec<u64>, StateError> {
        let depth = self.shape.depth;
        let fanout = self.shape.fanout as u64;
        let mut pages = Vec::new();
        let mut stack = vec![(0u32, 0u64)];
        while let Some((level, index)) = stack.pop() {
            if self.node_at(at, level, index)?.lm <= after {
                continue;
            }
            if level == depth {
                pages.push(index);
                continue;
            }
            for child in (index * fanout..(index + 1) * fanout).rev() {
                if self.tree.contains(level + 1, child) {
                    stack.push((level + 1, child));
                }
            }
        }
        Ok(pages)
    }

    /// Whether `(level, index)` names a node covering at least one page.
    pub fn contains_node(&self, level: u32, index: u64) -> bool {
        self.tree.contains(level, index)
    }

    fn node_at(&self, seq: SeqNo, level: u32, index: u64) -> Result<NodeVersion, StateError> {
        if !self.tree.contains(level, index) {
            return Err(StateError::OutOfRange);
        }
        self.check_retained(seq)?;
        for record in self.records.range(seq..).map(|(_, r)| r) {
            if let Some(saved) = record.saved_nodes.get(&(level, index)) {
                return Ok(*saved);
            }
        }
        Ok(self.tree.get(level, index))
    }
}
