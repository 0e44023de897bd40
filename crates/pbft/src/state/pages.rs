//! The current content of the pages, materialised lazily, with copy-on-write
//! saving of the versions that checkpoints still need.
//!
//! Invariants:
//! - A page absent from `current` is the zero page; only pages ever written
//!   (and not found all-zero at a later checkpoint) cost memory.
//! - `dirty` holds exactly the pages written since the last checkpoint. When a
//!   page first enters `dirty` while a checkpoint is retained, its content as
//!   of that checkpoint is saved in the checkpoint's record (`SavedPages`):
//!   the `Arc` is shared, and `Arc::make_mut` copies it on the write itself.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Page, StateError, PAGE_SIZE};

/// Page versions saved for one checkpoint: `None` is the zero page.
pub(super) type SavedPages = BTreeMap<u64, Option<Arc<Page>>>;

/// The zero page every unmaterialised page reads as.
pub static ZERO_PAGE: Page = [0u8; PAGE_SIZE];

/// The current pages of the state.
#[derive(Debug)]
pub(super) struct PageStore {
    num_pages: u64,
    current: BTreeMap<u64, Arc<Page>>,
    dirty: BTreeSet<u64>,
}

impl PageStore {
    /// A store of `num_pages` zero pages; `num_pages * PAGE_SIZE` must fit in
    /// a u64 (checked by the caller).
    pub(super) fn new(num_pages: u64) -> Self {
        PageStore {
            num_pages,
            current: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    pub(super) fn num_pages(&self) -> u64 {
        self.num_pages
    }

    /// The current content of a page.
    pub(super) fn page(&self, index: u64) -> Result<&Page, StateError> {
        self.check_index(index)?;
        Ok(self.current.get(&index).map_or(&ZERO_PAGE, |p| &**p))
    }

    /// Fails with `OutOfRange` unless `index` names a page of the state.
    pub(super) fn check_index(&self, index: u64) -> Result<(), StateError> {
        if index < self.num_pages {
            Ok(())
        } else {
            Err(StateError::OutOfRange)
        }
    }

    /// Fails with `OutOfRange` unless `[offset, offset + len)` lies within the
    /// state.
    fn check_span(&self, offset: u64, len: usize) -> Result<(), StateError> {
        let len = u64::try_from(len).map_err(|_| StateError::OutOfRange)?;
        let end = offset.checked_add(len).ok_or(StateError::OutOfRange)?;
        // Cannot overflow: the caller bounded num_pages by MAX_PAGES.
        if end <= self.num_pages * PAGE_SIZE as u64 {
            Ok(())
        } else {
            Err(StateError::OutOfRange)
        }
    }

    /// Splits `[offset, offset + len)` into `(page, offset in page, len)`
    /// pieces; the span has been checked.
    fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
        let mut pos = offset;
        let mut left = len;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let index = pos / PAGE_SIZE as u64;
            let in_page = (pos % PAGE_SIZE as u64) as usize;
            let n = left.min(PAGE_SIZE - in_page);
            pos += n as u64;
            left -= n;
            Some((index, in_page, n))
        })
    }

    /// Reads `buf.len()` bytes starting at byte `offset` of the state.
    pub(super) fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StateError> {
        self.check_span(offset, buf.len())?;
        let mut done = 0;
        for (index, in_page, n) in Self::pieces(offset, buf.len()) {
            let page = self.page(index)?;
            buf[done..done + n].copy_from_slice(&page[in_page..in_page + n]);
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at byte `offset`, saving first-touched pages in `saved`.
    pub(super) fn write(
        &mut self,
        offset: u64,
        data: &[u8],
        mut saved: Option<&mut SavedPages>,
    ) -> Result<(), StateError> {
        self.check_span(offset, data.len())?;
        let mut done = 0;
        for (index, in_page, n) in Self::pieces(offset, data.len()) {
            self.mark_dirty(index, saved.as_deref_mut());
            let page = self
                .current
                .entry(index)
                .or_insert_with(|| Arc::new(ZERO_PAGE));
            Arc::make_mut(page)[in_page..in_page + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Overwrites a whole page, saving its old version in `saved`.
    pub(super) fn replace(
        &mut self,
        index: u64,
        content: Arc<Page>,
        saved: Option<&mut SavedPages>,
    ) -> Result<(), StateError> {
        self.check_index(index)?;
        self.mark_dirty(index, saved);
        self.current.insert(index, content);
        Ok(())
    }

    /// Overwrites whole pages, given in ascending order of index, saving
    /// their old versions in `saved` as `replace` does, but in bulk (a state
    /// transfer installs up to the whole state at once): the dirty set and
    /// the saved versions, as small as the pages written since the last
    /// checkpoint, take the new ones in one merge; the current pages as
    /// [`super::add_sorted`] finds cheaper. Nothing changes on an error.
    pub(super) fn replace_sorted(&mut self, pages: Vec<(u64, Arc<Page>)>, saved: Option<&mut SavedPages>) -> Result<(), StateError> {
        if pages.iter().any(|(index, _)| *index >= self.num_pages) || !pages.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(StateError::OutOfRange);
        }
        let newly_dirty: Vec<u64> = pages.iter().map(|(index, _)| *index).filter(|index| !self.dirty.contains(index)).collect();
        if let Some(saved) = saved {
            // Saved versions are exactly those of the dirty pages, so the
            // keys added here are new to it.
            let mut old: SavedPages = newly_dirty.iter().map(|index| (*index, self.current.get(index).cloned())).collect();
            saved.append(&mut old);
        }
        self.dirty.append(&mut newly_dirty.into_iter().collect());
        super::add_sorted(&mut self.current, pages);
        Ok(())
    }

    /// The current version of a page (`None` for the zero page), shared, so
    /// that a later write copies it instead of changing it.
    pub(super) fn version(&self, index: u64) -> Option<Arc<Page>> {
        self.shared(index).cloned()
    }

    /// The current version of a page, borrowed (`None` for the zero page).
    pub(super) fn shared(&self, index: u64) -> Option<&Arc<Page>> {
        self.current.get(&index)
    }

    /// Marks a page dirty; on its first write since the last checkpoint, saves
    /// its content as of that checkpoint.
    fn mark_dirty(&mut self, index: u64, saved: Option<&mut SavedPages>) {
        if self.dirty.insert(index) {
            if let Some(saved) = saved {
                saved.insert(index, self.current.get(&index).cloned());
            }
        }
    }

    /// Pages written since the last checkpoint, ascending.
    pub(super) fn dirty(&self) -> impl Iterator<Item = u64> + '_ {
        self.dirty.iter().copied()
    }

    pub(super) fn dirty_count(&self) -> usize {
        self.dirty.len()
    }

    /// Ends the checkpoint interval: forgets which pages are dirty and drops
    /// the materialised copies of the listed pages, which the checkpoint found
    /// to be all zero.
    pub(super) fn clear_dirty(&mut self, zero_pages: &[u64]) {
        self.dirty.clear();
        for index in zero_pages {
            self.current.remove(index);
        }
    }

    /// Undoes every write since the last checkpoint, whose saved versions are
    /// in `saved` (emptied).
    pub(super) fn rollback(&mut self, saved: &mut SavedPages) {
        for index in std::mem::take(&mut self.dirty) {
            match saved.remove(&index) {
                Some(Some(page)) => {
                    self.current.insert(index, page);
                }
                Some(None) => {
                    self.current.remove(&index);
                }
                None => debug_assert!(false, "dirty page {index} has no saved version"),
            }
        }
        debug_assert!(saved.is_empty());
    }

    /// The materialised current pages.
    pub(super) fn materialised(&self) -> impl Iterator<Item = &Arc<Page>> + '_ {
        self.current.values()
    }
}
