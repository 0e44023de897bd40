//! The on-state layout: superblock, allocation bitmaps, inode table, data pages.
//!
//! ```text
//! page 0                 superblock
//! pages 1..              block bitmap (one bit a page of the whole region)
//! then                   inode bitmap (one bit an inode number)
//! then                   inode table (16 inodes of 256 bytes a page; inode 0 unused)
//! then                   data pages (file blocks, directory blocks, map pages)
//! ```
//!
//! Every number is little-endian. Invariant: the superblock's free counts equal
//! the zero bits of the bitmaps, and every page an inode maps is marked used
//! exactly once. A free inode keeps its generation, so a handle naming an
//! earlier life of a reused inode number is STALE.

use nfs3_types::nfs3::nfsstat3;
use pbft::service::{StateRegion, StateRegionRef};

pub const PAGE: u64 = 4096;
const INODE_BYTES: u64 = 256;
const INODES_PER_PAGE: u64 = PAGE / INODE_BYTES;
const BITS_PER_PAGE: u64 = PAGE * 8;
const MAGIC: u64 = u64::from_le_bytes(*b"BFSv1\0\0\0");
/// Inode number of the root directory.
pub const ROOT: u32 = 1;
/// Direct block pointers in an inode.
const DIRECT: u64 = 8;
/// Pointers in a map page.
const FANOUT: u64 = PAGE / 4;
/// Top-level map pointers in an inode; each covers FANOUT² blocks (4 GiB).
const TOP: u64 = 2;
/// The logical block where a directory's name index starts: past every block
/// of its first top-level map, so slots and index never meet.
pub const INDEX_BASE: u64 = DIRECT + FANOUT * FANOUT;
/// Largest number of logical blocks a file can have.
pub const MAX_BLOCKS: u64 = DIRECT + TOP * FANOUT * FANOUT;

/// Result of file-system steps: an NFS status on failure.
pub type R<T> = Result<T, nfsstat3>;

/// Bytes of the state, read-only or writable.
pub trait Pages {
    fn get(&self, offset: u64, buf: &mut [u8]) -> R<()>;
}

/// Bytes of the state that may be written.
pub trait PagesMut: Pages {
    fn put(&mut self, offset: u64, data: &[u8]) -> R<()>;
}

// A state error is an offset outside the region: a bug or a corrupt state,
// never the client's fault, so it is reported as SERVERFAULT rather than a panic.
impl Pages for StateRegionRef<'_> {
    fn get(&self, offset: u64, buf: &mut [u8]) -> R<()> {
        self.read(offset, buf).map_err(|_| nfsstat3::NFS3ERR_SERVERFAULT)
    }
}
impl Pages for StateRegion<'_> {
    fn get(&self, offset: u64, buf: &mut [u8]) -> R<()> {
        self.read(offset, buf).map_err(|_| nfsstat3::NFS3ERR_SERVERFAULT)
    }
}
impl PagesMut for StateRegion<'_> {
    fn put(&mut self, offset: u64, data: &[u8]) -> R<()> {
        self.write(offset, data).map_err(|_| nfsstat3::NFS3ERR_SERVERFAULT)
    }
}

/// Where each part of the region lies, computed from its size alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub pages: u64,
    pub inodes: u64,
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    pub data_start: u64,
}

impl Layout {
    /// The layout of a region of `pages` pages, or None when it is too small
    /// (fewer than 64 data pages) or too large for 32-bit page pointers.
    pub fn new(pages: u64) -> Option<Layout> {
        if pages > u64::from(u32::MAX) {
            return None;
        }
        // One inode for every four pages: files average well above 16 KiB in
        // source trees, and inode pages that are never used cost nothing.
        let inodes = (pages / 4).clamp(64, u64::from(u32::MAX) - 1);
        let block_bitmap = 1;
        let inode_bitmap = block_bitmap + pages.div_ceil(BITS_PER_PAGE);
        let inode_table = inode_bitmap + (inodes + 1).div_ceil(BITS_PER_PAGE);
        let data_start = inode_table + (inodes + 1).div_ceil(INODES_PER_PAGE);
        (data_start + 64 <= pages).then_some(Layout {
            pages,
            inodes,
            block_bitmap,
            inode_bitmap,
            inode_table,
            data_start,
        })
    }

    fn inode_offset(&self, ino: u32) -> u64 {
        self.inode_table * PAGE + u64::from(ino) * INODE_BYTES
    }
}

/// The superblock's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Super {
    pub formatted: bool,
    pub free_blocks: u64,
    pub free_inodes: u64,
    block_hint: u64,
    inode_hint: u64,
}

impl Super {
    pub fn load(s: &impl Pages) -> R<Super> {
        let mut b = [0u8; 48];
        s.get(0, &mut b)?;
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        Ok(Super { formatted: w(0) == MAGIC, free_blocks: w(1), free_inodes: w(2), block_hint: w(3), inode_hint: w(4) })
    }

    pub fn save(&self, s: &mut impl PagesMut) -> R<()> {
        let mut b = [0u8; 48];
        for (i, v) in [MAGIC, self.free_blocks, self.free_inodes, self.block_hint, self.inode_hint].iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        s.put(0, &b)
    }
}

/// File types, with the numbers of NFSv3's `ftype3`.
pub const T_REG: u32 = 1;
pub const T_DIR: u32 = 2;
pub const T_BLK: u32 = 3;
pub const T_CHR: u32 = 4;
pub const T_LNK: u32 = 5;
pub const T_SOCK: u32 = 6;
pub const T_FIFO: u32 = 7;

/// One inode as kept in memory while an operation runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inode {
    pub ino: u32,
    /// 0 when the inode is free.
    pub kind: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub gen: u32,
    pub size: u64,
    /// (seconds, nanoseconds).
    pub atime: (u32, u32),
    pub mtime: (u32, u32),
    pub ctime: (u32, u32),
    pub rdev: (u32, u32),
    /// Directories: the parent's inode number.
    pub parent: u32,
    /// Directories: live entries, slots ever used, first slot that may be free.
    pub entries: u32,
    pub slots: u32,
    pub free_slot: u32,
    /// Directories: name index capacity (a power of two, 0 = none) and its
    /// tombstones.
    pub index_cap: u32,
    pub tombstones: u32,
    /// Pages mapped (data and map pages), for `used`.
    pub blocks: u32,
    /// The verifier of an exclusive CREATE, kept until the first SETATTR.
    pub verifier: [u8; 8],
    direct: [u32; DIRECT as usize],
    top: [u32; TOP as usize],
}

impl Inode {
    pub fn load(s: &impl Pages, l: &Layout, ino: u32) -> R<Inode> {
        if ino == 0 || u64::from(ino) > l.inodes {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        let mut b = [0u8; INODE_BYTES as usize];
        s.get(l.inode_offset(ino), &mut b)?;
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut direct = [0u32; DIRECT as usize];
        for (k, d) in direct.iter_mut().enumerate() {
            *d = u(128 + 4 * k);
        }
        Ok(Inode {
            ino,
            kind: u(0),
            mode: u(4),
            nlink: u(8),
            uid: u(12),
            gid: u(16),
            gen: u(20),
            size: u64::from(u(24)) | u64::from(u(28)) << 32,
            atime: (u(32), u(36)),
            mtime: (u(40), u(44)),
            ctime: (u(48), u(52)),
            rdev: (u(56), u(60)),
            parent: u(64),
            entries: u(68),
            slots: u(72),
            free_slot: u(76),
            index_cap: u(80),
            tombstones: u(84),
            blocks: u(88),
            verifier: b[96..104].try_into().unwrap_or_default(),
            direct,
            top: [u(160), u(164)],
        })
    }

    pub fn save(&self, s: &mut impl PagesMut, l: &Layout) -> R<()> {
        let mut b = [0u8; INODE_BYTES as usize];
        let mut put = |i: usize, v: u32| b[i..i + 4].copy_from_slice(&v.to_le_bytes());
        let words = [
            self.kind,
            self.mode,
            self.nlink,
            self.uid,
            self.gid,
            self.gen,
            self.size as u32,
            (self.size >> 32) as u32,
            self.atime.0,
            self.atime.1,
            self.mtime.0,
            self.mtime.1,
            self.ctime.0,
            self.ctime.1,
            self.rdev.0,
            self.rdev.1,
            self.parent,
            self.entries,
            self.slots,
            self.free_slot,
            self.index_cap,
            self.tombstones,
            self.blocks,
        ];
        for (k, w) in words.iter().enumerate() {
            put(4 * k, *w);
        }
        for (k, d) in self.direct.iter().enumerate() {
            put(128 + 4 * k, *d);
        }
        put(160, self.top[0]);
        put(164, self.top[1]);
        b[96..104].copy_from_slice(&self.verifier);
        s.put(l.inode_offset(self.ino), &b)
    }
}

fn get_u32(s: &impl Pages, offset: u64) -> R<u32> {
    let mut b = [0u8; 4];
    s.get(offset, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn put_u32(s: &mut impl PagesMut, offset: u64, v: u32) -> R<()> {
    s.put(offset, &v.to_le_bytes())
}

/// Finds a zero bit in `count` bits from `first_page`, starting at `hint`,
/// sets it and returns its index.
fn take_bit(s: &mut impl PagesMut, first_page: u64, count: u64, hint: u64) -> R<u64> {
    let words = count.div_ceil(64);
    let start_word = (hint.min(count.saturating_sub(1))) / 64;
    let mut page = [0u8; PAGE as usize];
    let mut loaded = u64::MAX;
    for k in 0..words {
        let w = (start_word + k) % words;
        let p = w * 8 / PAGE;
        if p != loaded {
            s.get((first_page + p) * PAGE, &mut page)?;
            loaded = p;
        }
        let at = (w * 8 % PAGE) as usize;
        let word = u64::from_le_bytes(page[at..at + 8].try_into().unwrap_or_default());
        if word != u64::MAX {
            let bit = u64::from((!word).trailing_zeros());
            let index = w * 64 + bit;
            if index >= count {
                continue;
            }
            s.put((first_page + p) * PAGE + at as u64, &(word | 1 << bit).to_le_bytes())?;
            return Ok(index);
        }
    }
    Err(nfsstat3::NFS3ERR_NOSPC)
}

fn clear_bit(s: &mut impl PagesMut, first_page: u64, index: u64) -> R<()> {
    let offset = first_page * PAGE + index / 8;
    let mut b = [0u8; 1];
    s.get(offset, &mut b)?;
    s.put(offset, &[b[0] & !(1 << (index % 8))])
}

/// The allocator and block maps of one operation: the layout, the superblock
/// as this operation changes it, and the state.
pub struct Fs<'a, S> {
    pub s: &'a mut S,
    pub l: Layout,
    pub sb: Super,
}

impl<S: Pages> Fs<'_, S> {
    /// The page that holds logical block `lb` of `ino`, or 0 for a hole.
    pub fn bmap(&self, ino: &Inode, lb: u64) -> R<u32> {
        if lb < DIRECT {
            return Ok(ino.direct[lb as usize]);
        }
        let rest = lb - DIRECT;
        let top = rest / (FANOUT * FANOUT);
        if top >= TOP {
            return Err(nfsstat3::NFS3ERR_FBIG);
        }
        let l1 = ino.top[top as usize];
        if l1 == 0 {
            return Ok(0);
        }
        let l2 = get_u32(self.s, u64::from(l1) * PAGE + (rest / FANOUT % FANOUT) * 4)?;
        if l2 == 0 {
            return Ok(0);
        }
        get_u32(self.s, u64::from(l2) * PAGE + (rest % FANOUT) * 4)
    }

    /// Reads `buf.len()` bytes of `ino`'s content at `offset`; holes read as zeros.
    pub fn read_at(&self, ino: &Inode, offset: u64, buf: &mut [u8]) -> R<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let in_page = (pos % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(buf.len() - done);
            let page = self.bmap(ino, pos / PAGE)?;
            if page == 0 {
                buf[done..done + n].fill(0);
            } else {
                self.s.get(u64::from(page) * PAGE + in_page as u64, &mut buf[done..done + n])?;
            }
            done += n;
        }
        Ok(())
    }

    pub fn inode(&self, ino: u32) -> R<Inode> {
        Inode::load(self.s, &self.l, ino)
    }
}

impl<S: PagesMut> Fs<'_, S> {
    /// Writes the superblock back (after allocations and frees).
    pub fn flush(&mut self) -> R<()> {
        self.sb.save(self.s)
    }

    /// Formats an empty file system whose root directory is owned by root,
    /// mode 0755, with every time `now`.
    pub fn format(&mut self, now: (u32, u32)) -> R<()> {
        let l = self.l;
        // Metadata pages are marked used in the block bitmap.
        for p in 0..l.data_start {
            let offset = l.block_bitmap * PAGE + p / 8;
            let mut b = [0u8; 1];
            self.s.get(offset, &mut b)?;
            self.s.put(offset, &[b[0] | 1 << (p % 8)])?;
        }
        // Inode 0 is never handed out.
        self.s.put(l.inode_bitmap * PAGE, &[0b11])?;
        self.sb = Super {
            formatted: true,
            free_blocks: l.pages - l.data_start,
            free_inodes: l.inodes - 1,
            block_hint: l.data_start,
            inode_hint: 2,
        };
        let root = Inode {
            ino: ROOT,
            kind: T_DIR,
            mode: 0o755,
            nlink: 2,
            gen: 1,
            atime: now,
            mtime: now,
            ctime: now,
            parent: ROOT,
            ..Inode::default()
        };
        root.save(self.s, &l)?;
        self.flush()
    }

    /// A fresh inode of `kind`, its generation one above its previous life's.
    pub fn alloc_inode(&mut self, kind: u32) -> R<Inode> {
        if self.sb.free_inodes == 0 {
            return Err(nfsstat3::NFS3ERR_NOSPC);
        }
        let index = take_bit(self.s, self.l.inode_bitmap, self.l.inodes + 1, self.sb.inode_hint)?;
        self.sb.free_inodes -= 1;
        self.sb.inode_hint = index + 1;
        let ino = u32::try_from(index).map_err(|_| nfsstat3::NFS3ERR_SERVERFAULT)?;
        let old = self.inode(ino)?;
        let fresh = Inode { ino, kind, nlink: 1, gen: old.gen.wrapping_add(1).max(1), ..Inode::default() };
        fresh.save(self.s, &self.l)?;
        Ok(fresh)
    }

    /// Frees an inode and every page it maps; its generation stays.
    pub fn free_inode(&mut self, ino: &mut Inode) -> R<()> {
        self.truncate_blocks(ino, 0)?;
        let gen = ino.gen;
        *ino = Inode { ino: ino.ino, gen, ..Inode::default() };
        ino.save(self.s, &self.l)?;
        clear_bit(self.s, self.l.inode_bitmap, u64::from(ino.ino))?;
        self.sb.free_inodes += 1;
        self.sb.inode_hint = self.sb.inode_hint.min(u64::from(ino.ino));
        Ok(())
    }

    /// A zeroed page.
    fn alloc_page(&mut self, ino: &mut Inode) -> R<u32> {
        if self.sb.free_blocks == 0 {
            return Err(nfsstat3::NFS3ERR_NOSPC);
        }
        let p = take_bit(self.s, self.l.block_bitmap, self.l.pages, self.sb.block_hint)?;
        self.sb.free_blocks -= 1;
        self.sb.block_hint = p + 1;
        self.s.put(p * PAGE, &[0u8; PAGE as usize])?;
        ino.blocks += 1;
        u32::try_from(p).map_err(|_| nfsstat3::NFS3ERR_SERVERFAULT)
    }

    fn free_page(&mut self, ino: &mut Inode, p: u32) -> R<()> {
        if u64::from(p) < self.l.data_start || u64::from(p) >= self.l.pages {
            return Err(nfsstat3::NFS3ERR_SERVERFAULT);
        }
        clear_bit(self.s, self.l.block_bitmap, u64::from(p))?;
        self.sb.free_blocks += 1;
        self.sb.block_hint = self.sb.block_hint.min(u64::from(p));
        ino.blocks = ino.blocks.saturating_sub(1);
        Ok(())
    }

    /// The page of logical block `lb`, allocated (with its map pages) if absent.
    pub fn bmap_alloc(&mut self, ino: &mut Inode, lb: u64) -> R<u32> {
        if lb < DIRECT {
            if ino.direct[lb as usize] == 0 {
                ino.direct[lb as usize] = self.alloc_page(ino)?;
            }
            return Ok(ino.direct[lb as usize]);
        }
        let rest = lb - DIRECT;
        let top = (rest / (FANOUT * FANOUT)) as usize;
        if top as u64 >= TOP {
            return Err(nfsstat3::NFS3ERR_FBIG);
        }
        if ino.top[top] == 0 {
            ino.top[top] = self.alloc_page(ino)?;
        }
        let slot1 = u64::from(ino.top[top]) * PAGE + (rest / FANOUT % FANOUT) * 4;
        let mut l2 = get_u32(self.s, slot1)?;
        if l2 == 0 {
            l2 = self.alloc_page(ino)?;
            put_u32(self.s, slot1, l2)?;
        }
        let slot2 = u64::from(l2) * PAGE + (rest % FANOUT) * 4;
        let mut data = get_u32(self.s, slot2)?;
        if data == 0 {
            data = self.alloc_page(ino)?;
            put_u32(self.s, slot2, data)?;
        }
        Ok(data)
    }

    /// Pages a write of `len` bytes at `offset` may need at most, so that an
    /// operation can refuse with NOSPC before it changes anything.
    pub fn pages_needed(offset: u64, len: u64) -> u64 {
        let blocks = (offset + len).div_ceil(PAGE) - offset / PAGE;
        blocks + blocks / FANOUT + 3
    }

    /// Writes `data` into `ino`'s content at `offset`, allocating pages.
    pub fn write_at(&mut self, ino: &mut Inode, offset: u64, data: &[u8]) -> R<()> {
        if Self::pages_needed(offset, data.len() as u64) > self.sb.free_blocks {
            return Err(nfsstat3::NFS3ERR_NOSPC);
        }
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let in_page = pos % PAGE;
            let n = (PAGE - in_page).min((data.len() - done) as u64) as usize;
            let page = self.bmap_alloc(ino, pos / PAGE)?;
            self.s.put(u64::from(page) * PAGE + in_page, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Frees every page of logical block `first` and beyond (directories'
    /// index region included), and zeroes the rest of the page before `first`
    /// past `size`, so that a later extension reads zeros.
    pub fn truncate_blocks(&mut self, ino: &mut Inode, size: u64) -> R<()> {
        let first = size.div_ceil(PAGE);
        if size % PAGE != 0 {
            let page = self.bmap(ino, size / PAGE)?;
            if page != 0 {
                let zeros = vec![0u8; (PAGE - size % PAGE) as usize];
                self.s.put(u64::from(page) * PAGE + size % PAGE, &zeros)?;
            }
        }
        for lb in first.min(DIRECT)..DIRECT {
            let p = std::mem::take(&mut ino.direct[lb as usize]);
            if p != 0 {
                self.free_page(ino, p)?;
            }
        }
        for top in 0..TOP {
            let base = DIRECT + top * FANOUT * FANOUT;
            let l1 = ino.top[top as usize];
            if l1 == 0 || base + FANOUT * FANOUT <= first {
                continue;
            }
            let mut map1 = [0u8; PAGE as usize];
            self.s.get(u64::from(l1) * PAGE, &mut map1)?;
            for i in 0..FANOUT {
                let l2 = u32::from_le_bytes(map1[i as usize * 4..i as usize * 4 + 4].try_into().unwrap_or_default());
                let base2 = base + i * FANOUT;
                if l2 == 0 || base2 + FANOUT <= first {
                    continue;
                }
                let mut map2 = [0u8; PAGE as usize];
                self.s.get(u64::from(l2) * PAGE, &mut map2)?;
                let from = first.saturating_sub(base2);
                for j in from..FANOUT {
                    let at = j as usize * 4;
                    let d = u32::from_le_bytes(map2[at..at + 4].try_into().unwrap_or_default());
                    if d != 0 {
                        self.free_page(ino, d)?;
                        map2[at..at + 4].fill(0);
                    }
                }
                if from == 0 {
                    self.free_page(ino, l2)?;
                    map1[i as usize * 4..i as usize * 4 + 4].fill(0);
                } else {
                    self.s.put(u64::from(l2) * PAGE, &map2)?;
                }
            }
            if first <= base {
                self.free_page(ino, l1)?;
                ino.top[top as usize] = 0;
            } else {
                self.s.put(u64::from(l1) * PAGE, &map1)?;
            }
        }
        Ok(())
    }
}
