//! Directories: an array of fixed-size entry slots, and a hash index of names.
//!
//! A slot never moves: an entry stays in the slot it was created in until it
//! is removed, and the READDIR cookie of an entry is its slot number plus 3
//! (1 and 2 are "." and ".."). So a listing that goes on while other entries
//! come and go never repeats or skips an entry that exists throughout, and the
//! cookie verifier can stay constant. The index (open addressing, linear
//! probing, in the directory's logical blocks from [`INDEX_BASE`]) maps a
//! name's hash to its slot so that LOOKUP and CREATE in a directory of 100,000
//! entries read a few pages, not all of them. Rebuilding the index (when it
//! fills up) moves no slot.

use nfs3_types::nfs3::nfsstat3;

use crate::store::{Fs, Inode, Pages, PagesMut, INDEX_BASE, PAGE, R};

/// Bytes of one slot: inode u32, name length u16, 2 spare, name.
const SLOT: u64 = 272;
const SLOTS_PER_PAGE: u64 = PAGE / SLOT;
/// Longest name (NAME_MAX).
pub const NAME_MAX: usize = 255;
const EMPTY: u32 = 0;
const TOMBSTONE: u32 = u32::MAX;
const MIN_INDEX: u32 = 1024;

/// One live entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub slot: u32,
    pub ino: u32,
    pub name: Vec<u8>,
}

fn hash(name: &[u8]) -> u64 {
    // FNV-1a: deterministic on every replica, unlike std's RandomState.
    name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

fn slot_place(slot: u32) -> (u64, u64) {
    (u64::from(slot) / SLOTS_PER_PAGE, u64::from(slot) % SLOTS_PER_PAGE * SLOT)
}

impl<S: Pages> Fs<'_, S> {
    /// The entry in slot `slot`, None when the slot is free.
    pub fn slot(&self, dir: &Inode, slot: u32) -> R<Option<Entry>> {
        let (lb, at) = slot_place(slot);
        let mut b = [0u8; SLOT as usize];
        self.read_at(dir, lb * PAGE + at, &mut b)?;
        Ok(parse_slot(slot, &b))
    }

    /// The live entries in slots `from..`, page by page, until `f` says stop.
    pub fn scan(&self, dir: &Inode, from: u32, mut f: impl FnMut(Entry) -> bool) -> R<()> {
        let mut slot = from;
        let mut page = [0u8; PAGE as usize];
        let mut loaded = u64::MAX;
        while slot < dir.slots {
            let (lb, at) = slot_place(slot);
            if lb != loaded {
                self.read_at(dir, lb * PAGE, &mut page)?;
                loaded = lb;
            }
            if let Some(e) = parse_slot(slot, &page[at as usize..(at + SLOT) as usize]) {
                if !f(e) {
                    return Ok(());
                }
            }
            slot += 1;
        }
        Ok(())
    }

    fn index_get(&self, dir: &Inode, i: u32) -> R<u32> {
        let mut b = [0u8; 4];
        self.read_at(dir, INDEX_BASE * PAGE + u64::from(i) * 4, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Where `name` is in the index: Ok((index position, entry)) or, when
    /// absent, Err(first position that may take it).
    fn find(&self, dir: &Inode, name: &[u8]) -> R<Result<(u32, Entry), u32>> {
        if dir.index_cap == 0 {
            return Ok(Err(0));
        }
        let mask = dir.index_cap - 1;
        let mut i = (hash(name) as u32) & mask;
        let mut free = None;
        for _ in 0..dir.index_cap {
            match self.index_get(dir, i)? {
                EMPTY => return Ok(Err(free.unwrap_or(i))),
                TOMBSTONE => {
                    free.get_or_insert(i);
                }
                v => {
                    if let Some(e) = self.slot(dir, v - 1)? {
                        if e.name == name {
                            return Ok(Ok((i, e)));
                        }
                    }
                }
            }
            i = (i + 1) & mask;
        }
        Ok(Err(free.unwrap_or(0)))
    }

    /// The entry named `name`, if any.
    pub fn lookup(&self, dir: &Inode, name: &[u8]) -> R<Option<Entry>> {
        Ok(self.find(dir, name)?.ok().map(|(_, e)| e))
    }

    /// Whether the directory has no entry but "." and "..".
    pub fn is_empty_dir(&self, dir: &Inode) -> bool {
        dir.entries == 0
    }
}

fn parse_slot(slot: u32, b: &[u8]) -> Option<Entry> {
    let ino = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let len = usize::from(u16::from_le_bytes([b[4], b[5]]));
    (ino != 0 && len > 0 && len <= NAME_MAX).then(|| Entry { slot, ino, name: b[8..8 + len].to_vec() })
}

impl<S: PagesMut> Fs<'_, S> {
    fn index_put(&mut self, dir: &mut Inode, i: u32, v: u32) -> R<()> {
        self.write_at(dir, INDEX_BASE * PAGE + u64::from(i) * 4, &v.to_le_bytes())
    }

    /// Pages an insertion may need at most (slot page, index growth, maps).
    pub fn insert_pages_needed(dir: &Inode) -> u64 {
        let grow = if Self::index_full(dir) { u64::from(dir.index_cap.max(MIN_INDEX)) * 2 * 4 / PAGE } else { 0 };
        8 + grow
    }

    fn index_full(dir: &Inode) -> bool {
        u64::from(dir.entries + dir.tombstones + 1) * 4 > u64::from(dir.index_cap) * 3
    }

    /// Adds `name` → `ino`; the caller has checked that `name` is absent and
    /// that [`Fs::insert_pages_needed`] pages are free.
    pub fn insert(&mut self, dir: &mut Inode, name: &[u8], ino: u32) -> R<()> {
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(nfsstat3::NFS3ERR_NAMETOOLONG);
        }
        if Self::insert_pages_needed(dir) > self.sb.free_blocks {
            return Err(nfsstat3::NFS3ERR_NOSPC);
        }
        if Self::index_full(dir) {
            self.rebuild_index(dir)?;
        }
        // The lowest free slot: removed entries' slots are reused first.
        let mut slot = dir.free_slot;
        while slot < dir.slots && self.slot(dir, slot)?.is_some() {
            slot += 1;
        }
        let (lb, at) = slot_place(slot);
        let mut b = [0u8; SLOT as usize];
        b[0..4].copy_from_slice(&ino.to_le_bytes());
        b[4..6].copy_from_slice(&(name.len() as u16).to_le_bytes());
        b[8..8 + name.len()].copy_from_slice(name);
        self.write_at(dir, lb * PAGE + at, &b)?;
        dir.slots = dir.slots.max(slot + 1);
        dir.free_slot = slot + 1;
        dir.entries += 1;
        let at = match self.find(dir, name)? {
            Err(at) => at,
            Ok(_) => return Err(nfsstat3::NFS3ERR_SERVERFAULT),
        };
        if self.index_get(dir, at)? == TOMBSTONE {
            dir.tombstones -= 1;
        }
        self.index_put(dir, at, slot + 1)?;
        dir.size = u64::from(dir.slots) * SLOT;
        Ok(())
    }

    /// Removes the entry `name`; returns it, or NOENT.
    pub fn remove(&mut self, dir: &mut Inode, name: &[u8]) -> R<Entry> {
        let (at, e) = self.find(dir, name)?.map_err(|_| nfsstat3::NFS3ERR_NOENT)?;
        let (lb, off) = slot_place(e.slot);
        self.write_at(dir, lb * PAGE + off, &[0u8; 8])?;
        self.index_put(dir, at, TOMBSTONE)?;
        dir.tombstones += 1;
        dir.entries -= 1;
        dir.free_slot = dir.free_slot.min(e.slot);
        Ok(e)
    }

    /// Points the existing entry `name` at `ino` (RENAME over a target keeps
    /// the target's slot, so its cookie stays valid).
    pub fn retarget(&mut self, dir: &mut Inode, e: &Entry, ino: u32) -> R<()> {
        let (lb, off) = slot_place(e.slot);
        self.write_at(dir, lb * PAGE + off, &ino.to_le_bytes())
    }

    /// Makes a fresh index twice as large as needed for the live entries.
    fn rebuild_index(&mut self, dir: &mut Inode) -> R<()> {
        let cap = (dir.entries + 1).saturating_mul(4).next_power_of_two().max(MIN_INDEX);
        // Dropping the old index: every page from INDEX_BASE on.
        self.truncate_index(dir)?;
        dir.index_cap = cap;
        dir.tombstones = 0;
        let mut live = Vec::with_capacity(dir.entries as usize);
        self.scan(dir, 0, |e| {
            live.push(e);
            true
        })?;
        for e in live {
            let mut i = (hash(&e.name) as u32) & (cap - 1);
            while self.index_get(dir, i)? != EMPTY {
                i = (i + 1) & (cap - 1);
            }
            self.index_put(dir, i, e.slot + 1)?;
        }
        Ok(())
    }

    fn truncate_index(&mut self, dir: &mut Inode) -> R<()> {
        // truncate_blocks frees from a block on; the slots lie below
        // INDEX_BASE, so only the index goes.
        let size = dir.size;
        self.truncate_blocks(dir, INDEX_BASE * PAGE)?;
        dir.size = size;
        Ok(())
    }
}
