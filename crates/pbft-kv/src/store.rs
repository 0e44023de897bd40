//! The key-value store's layout in the replicated paged state.
//!
//! ```text
//! page 0                 superblock: free_head u64 | free_count u64 | bump u64
//! pages 1..=dir_pages    bucket directory: 16 bytes a bucket, head u64 | len u32 | 0u32
//! pages data_start..     data pages: next u64 | 4088 payload bytes
//! ```
//!
//! A key lives in bucket `blake3(key) mod buckets`. A bucket is a byte stream
//! of `len` bytes laid over a chain of `ceil(len / 4088)` data pages starting at
//! `head` and linked by `next`; the stream is a sequence of entries
//! `key_len u16 | value_len u16 | key | value`, each key at most once, in
//! insertion order, so an entry may span pages. Page number 0 (the superblock)
//! means "none" in `head`, `next` and `free_head`.
//!
//! Data pages `data_start..data_start + bump` have been handed out; each is in
//! exactly one bucket chain or in the free list (`free_count` pages linked by
//! `next`); pages past them have never been used. The all-zero state is
//! therefore the empty store, and nothing needs formatting.
//!
//! Bytes outside every stream are zero: a free page holds only its link, and
//! the tail of a chain's last page past the stream is zero.
//!
//! A mutation reads the key's bucket stream, edits it in memory and writes back
//! only the pages whose bytes changed, taking pages from the free list (then
//! the never-used ones) or returning surplus pages to it. It computes every
//! page it needs before writing anything, so an operation that fails with
//! [`KvError::Full`] or [`KvError::Corrupt`] changes nothing.
//!
//! A scan visits every bucket: its cost is proportional to the number of keys
//! in the store, not to the range (only the keys are read, then the values of
//! the entries returned).

use std::collections::BTreeMap;

use pbft::service::{StateRegion, StateRegionRef};
use pbft::state::PAGE_SIZE;

use crate::ops::{scan_cut, KvError, KvResult};

const PAGE: u64 = PAGE_SIZE as u64;
/// Bytes of a data page's header: the `next` link.
const LINK_LEN: u64 = 8;
/// Stream bytes a data page holds.
pub(crate) const PAYLOAD: u64 = PAGE - LINK_LEN;
/// Bytes of a directory entry.
const DIR_ENTRY_LEN: u64 = 16;
/// Bytes of an entry header: key length and value length, u16 each.
pub(crate) const ENTRY_HEADER_LEN: usize = 4;

/// Where things are, derived from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub pages: u64,
    pub buckets: u64,
    pub dir_pages: u64,
}

impl Layout {
    /// `None` when `pages` leaves no data page.
    pub fn new(pages: u64, buckets: u64) -> Option<Layout> {
        if buckets == 0 {
            return None;
        }
        let dir_pages = buckets.checked_mul(DIR_ENTRY_LEN)?.div_ceil(PAGE);
        let layout = Layout {
            pages,
            buckets,
            dir_pages,
        };
        (pages > layout.data_start()).then_some(layout)
    }

    pub fn data_start(&self) -> u64 {
        1 + self.dir_pages
    }

    fn data_pages(&self) -> u64 {
        self.pages - self.data_start()
    }

    pub fn bucket_of(&self, key: &[u8]) -> u64 {
        let hash = blake3::hash(key);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first) % self.buckets
    }

    fn dir_offset(&self, bucket: u64) -> u64 {
        PAGE + bucket * DIR_ENTRY_LEN
    }

    /// Checks that a page number read from the state names a data page.
    fn data_page(&self, page: u64) -> Result<u64, KvError> {
        if page >= self.data_start() && page < self.pages {
            Ok(page)
        } else {
            Err(KvError::Corrupt)
        }
    }
}

fn read_u64(r: &StateRegionRef<'_>, offset: u64) -> Result<u64, KvError> {
    let mut b = [0u8; 8];
    r.read(offset, &mut b).map_err(|_| KvError::Corrupt)?;
    Ok(u64::from_le_bytes(b))
}

fn write(w: &mut StateRegion<'_>, offset: u64, data: &[u8]) -> Result<(), KvError> {
    w.write(offset, data).map_err(|_| KvError::Corrupt)
}

/// The page allocator's state, page 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Superblock {
    pub free_head: u64,
    pub free_count: u64,
    pub bump: u64,
}

impl Superblock {
    fn read(r: &StateRegionRef<'_>, layout: &Layout) -> Result<Superblock, KvError> {
        let sb = Superblock {
            free_head: read_u64(r, 0)?,
            free_count: read_u64(r, 8)?,
            bump: read_u64(r, 16)?,
        };
        if sb.bump > layout.data_pages()
            || sb.free_count > sb.bump
            || (sb.free_count == 0) != (sb.free_head == 0)
        {
            return Err(KvError::Corrupt);
        }
        Ok(sb)
    }

    fn write(&self, w: &mut StateRegion<'_>) -> Result<(), KvError> {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.free_head.to_le_bytes());
        b[8..16].copy_from_slice(&self.free_count.to_le_bytes());
        b[16..].copy_from_slice(&self.bump.to_le_bytes());
        write(w, 0, &b)
    }

    fn available(&self, layout: &Layout) -> u64 {
        self.free_count + (layout.data_pages() - self.bump)
    }

    /// Takes a page: the free list's head, else the next never-used page.
    fn alloc(&mut self, r: &StateRegionRef<'_>, layout: &Layout) -> Result<u64, KvError> {
        if self.free_count > 0 {
            let page = layout.data_page(self.free_head)?;
            self.free_head = read_u64(r, page * PAGE)?;
            self.free_count -= 1;
            if (self.free_count == 0) != (self.free_head == 0) {
                return Err(KvError::Corrupt);
            }
            Ok(page)
        } else if self.bump < layout.data_pages() {
            self.bump += 1;
            Ok(layout.data_start() + self.bump - 1)
        } else {
            Err(KvError::Full)
        }
    }
}

/// A bucket: its stream length and the pages holding it, in order.
#[derive(Clone, Debug)]
pub(crate) struct Chain {
    pub len: u64,
    pub pages: Vec<u64>,
}

fn pages_for(len: u64) -> u64 {
    len.div_ceil(PAYLOAD)
}

impl Chain {
    pub fn open(r: &StateRegionRef<'_>, layout: &Layout, bucket: u64) -> Result<Chain, KvError> {
        let at = layout.dir_offset(bucket);
        let head = read_u64(r, at)?;
        let len = read_u64(r, at + 8)? & u64::from(u32::MAX);
        let count = pages_for(len);
        if count > layout.data_pages() || (count == 0) != (head == 0) {
            return Err(KvError::Corrupt);
        }
        let mut pages = Vec::with_capacity(count as usize);
        let mut next = head;
        for _ in 0..count {
            let page = layout.data_page(next)?;
            pages.push(page);
            next = read_u64(r, page * PAGE)?;
        }
        if next != 0 {
            return Err(KvError::Corrupt);
        }
        Ok(Chain { len, pages })
    }

    /// The state offset of stream byte `pos` and how many stream bytes follow
    /// it on the same page.
    fn locate(&self, pos: u64) -> (u64, u64) {
        let page = self.pages[(pos / PAYLOAD) as usize];
        let within = pos % PAYLOAD;
        (page * PAGE + LINK_LEN + within, PAYLOAD - within)
    }
}

/// A byte stream that entries are parsed from: a bucket in the state, or its
/// copy in memory.
pub(crate) trait Stream {
    fn len(&self) -> u64;
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> Result<(), KvError>;
}

impl Stream for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> Result<(), KvError> {
        let start = usize::try_from(pos).map_err(|_| KvError::Corrupt)?;
        let src = self.get(start..start + buf.len()).ok_or(KvError::Corrupt)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

pub(crate) struct ChainStream<'r, 'a> {
    pub region: &'r StateRegionRef<'a>,
    pub chain: &'r Chain,
}

impl Stream for ChainStream<'_, '_> {
    fn len(&self) -> u64 {
        self.chain.len
    }
    fn read_at(&self, mut pos: u64, mut buf: &mut [u8]) -> Result<(), KvError> {
        if pos + buf.len() as u64 > self.chain.len {
            return Err(KvError::Corrupt);
        }
        while !buf.is_empty() {
            let (at, room) = self.chain.locate(pos);
            let n = room.min(buf.len() as u64) as usize;
            let (now, rest) = buf.split_at_mut(n);
            self.region.read(at, now).map_err(|_| KvError::Corrupt)?;
            buf = rest;
            pos += n as u64;
        }
        Ok(())
    }
}

/// An entry of a bucket stream, with its key; the value is left in place.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub start: u64,
    pub key: Vec<u8>,
    pub value_len: u64,
}

impl Entry {
    pub fn value_start(&self) -> u64 {
        self.start + ENTRY_HEADER_LEN as u64 + self.key.len() as u64
    }
    pub fn end(&self) -> u64 {
        self.value_start() + self.value_len
    }
}

/// Every entry of a stream, in stream order.
pub(crate) fn entries<S: Stream + ?Sized>(s: &S) -> Result<Vec<Entry>, KvError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < s.len() {
        let mut header = [0u8; ENTRY_HEADER_LEN];
        s.read_at(pos, &mut header)?;
        let key_len = u16::from_le_bytes([header[0], header[1]]) as usize;
        let value_len = u64::from(u16::from_le_bytes([header[2], header[3]]));
        if key_len > crate::MAX_KEY_LEN || value_len > crate::MAX_VALUE_LEN as u64 {
            return Err(KvError::Corrupt);
        }
        let mut key = vec![0u8; key_len];
        s.read_at(pos + ENTRY_HEADER_LEN as u64, &mut key)?;
        let entry = Entry {
            start: pos,
            key,
            value_len,
        };
        if entry.end() > s.len() {
            return Err(KvError::Corrupt);
        }
        pos = entry.end();
        out.push(entry);
    }
    Ok(out)
}

fn encode_entry(key: &[u8], value: &[u8]) -> Vec<u8> {
    // Both lengths were checked against the limits, which fit in u16.
    let key_len = u16::try_from(key.len()).expect("key length checked by validate");
    let value_len = u16::try_from(value.len()).expect("value length checked by validate");
    let mut e = Vec::with_capacity(ENTRY_HEADER_LEN + key.len() + value.len());
    e.extend_from_slice(&key_len.to_le_bytes());
    e.extend_from_slice(&value_len.to_le_bytes());
    e.extend_from_slice(key);
    e.extend_from_slice(value);
    e
}

fn read_value<S: Stream + ?Sized>(s: &S, entry: &Entry) -> Result<Vec<u8>, KvError> {
    let mut value = vec![0u8; entry.value_len as usize];
    s.read_at(entry.value_start(), &mut value)?;
    Ok(value)
}

/// The value of `key`, if present.
pub(crate) fn get(
    r: &StateRegionRef<'_>,
    layout: &Layout,
    key: &[u8],
) -> Result<Option<Vec<u8>>, KvError> {
    let chain = Chain::open(r, layout, layout.bucket_of(key))?;
    let stream = ChainStream {
        region: r,
        chain: &chain,
    };
    match entries(&stream)?.into_iter().find(|e| e.key == key) {
        Some(entry) => Ok(Some(read_value(&stream, &entry)?)),
        None => Ok(None),
    }
}

/// What a mutation does to its key, decided from the current value.
pub(crate) enum Change<'v> {
    Keep,
    Set(&'v [u8]),
    Remove,
}

/// Reads the current value of `key`, lets `decide` choose a change and an
/// output, and applies the change. On error nothing has been written.
pub(crate) fn modify<'v, T>(
    w: &mut StateRegion<'_>,
    layout: &Layout,
    key: &[u8],
    decide: impl FnOnce(Option<Vec<u8>>) -> (Change<'v>, T),
) -> Result<T, KvError> {
    let bucket = layout.bucket_of(key);
    let chain = Chain::open(&w.as_ref(), layout, bucket)?;
    let mut old = vec![0u8; chain.len as usize];
    ChainStream {
        region: &w.as_ref(),
        chain: &chain,
    }
    .read_at(0, &mut old)?;
    let found = entries(&old[..])?.into_iter().find(|e| e.key == key);
    let current = found
        .as_ref()
        .map(|e| read_value(&old[..], e))
        .transpose()?;
    let (change, out) = decide(current);
    let span = |e: &Entry| e.start as usize..e.end() as usize;
    let mut new = old.clone();
    match (change, &found) {
        (Change::Keep, _) | (Change::Remove, None) => return Ok(out),
        (Change::Set(value), Some(e)) => {
            new.splice(span(e), encode_entry(key, value));
        }
        (Change::Set(value), None) => new.extend_from_slice(&encode_entry(key, value)),
        (Change::Remove, Some(e)) => {
            new.drain(span(e));
        }
    }
    write_bucket(w, layout, bucket, &chain, &old, &new)?;
    Ok(out)
}

/// The bytes of stream `s` that page `i` of its chain holds.
fn old_chunk(s: &[u8], i: usize) -> &[u8] {
    let payload = PAYLOAD as usize;
    s.get(i * payload..s.len().min((i + 1) * payload))
        .unwrap_or(&[])
}

/// Replaces bucket `bucket`'s stream `old` (held by `chain`) with `new`.
fn write_bucket(
    w: &mut StateRegion<'_>,
    layout: &Layout,
    bucket: u64,
    chain: &Chain,
    old: &[u8],
    new: &[u8],
) -> Result<(), KvError> {
    let new_len = new.len() as u64;
    if new_len > u64::from(u32::MAX) {
        return Err(KvError::Full);
    }
    let sb_before = Superblock::read(&w.as_ref(), layout)?;
    let mut sb = sb_before;
    let need = pages_for(new_len) as usize;
    let mut pages = chain.pages.clone();
    // Plan every page before the first write, so a failure changes nothing.
    if need > pages.len() {
        if (need - pages.len()) as u64 > sb.available(layout) {
            return Err(KvError::Full);
        }
        while pages.len() < need {
            pages.push(sb.alloc(&w.as_ref(), layout)?);
        }
    }
    let freed = pages.split_off(need);

    let payload = PAYLOAD as usize;
    for (i, &page) in pages.iter().enumerate() {
        let next = pages.get(i + 1).copied().unwrap_or(0);
        let chunk = &new[i * payload..new.len().min((i + 1) * payload)];
        let was_ours = i < chain.pages.len();
        let old_next = chain.pages.get(i + 1).copied().unwrap_or(0);
        if !was_ours || old_next != next {
            write(w, page * PAGE, &next.to_le_bytes())?;
        }
        let before = if was_ours { old_chunk(old, i) } else { &[] };
        if before != chunk {
            // Zeros over what the old stream left past the new bytes, so that
            // deleted data does not linger in the state (or in state transfer).
            let mut image = chunk.to_vec();
            image.resize(chunk.len().max(before.len()), 0);
            write(w, page * PAGE + LINK_LEN, &image)?;
        }
    }
    for (i, page) in freed.into_iter().enumerate() {
        // Free pages hold only their link; the rest is zero, as for never-used
        // pages, so an allocated page needs no clearing.
        let mut image = sb.free_head.to_le_bytes().to_vec();
        image.resize(LINK_LEN as usize + old_chunk(old, need + i).len(), 0);
        write(w, page * PAGE, &image)?;
        sb.free_head = page;
        sb.free_count += 1;
    }
    if new_len != chain.len || pages.first() != chain.pages.first() {
        let mut entry = [0u8; 12];
        entry[..8].copy_from_slice(&pages.first().copied().unwrap_or(0).to_le_bytes());
        entry[8..].copy_from_slice(&(new_len as u32).to_le_bytes());
        write(w, layout.dir_offset(bucket), &entry)?;
    }
    if sb != sb_before {
        sb.write(w)?;
    }
    Ok(())
}

/// Keys in `[start, end)` with their values, as [`KvResult::Entries`].
pub(crate) fn scan(
    r: &StateRegionRef<'_>,
    layout: &Layout,
    start: &[u8],
    end: &[u8],
    limit: u32,
) -> Result<KvResult, KvError> {
    // The smallest `limit + 1` keys in range: one more than can be returned
    // tells whether the reply is truncated.
    let keep = limit as usize + 1;
    let mut best: BTreeMap<Vec<u8>, (u64, Entry)> = BTreeMap::new();
    if start < end {
        for bucket in 0..layout.buckets {
            let chain = Chain::open(r, layout, bucket)?;
            for entry in entries(&ChainStream {
                region: r,
                chain: &chain,
            })? {
                let key = entry.key.as_slice();
                if key < start || key >= end {
                    continue;
                }
                if best.len() == keep
                    && best
                        .last_key_value()
                        .is_some_and(|(last, _)| key > last.as_slice())
                {
                    continue;
                }
                best.insert(entry.key.clone(), (bucket, entry));
                if best.len() > keep {
                    best.pop_last();
                }
            }
        }
    }
    let sizes: Vec<(usize, usize)> = best
        .values()
        .map(|(_, e)| (e.key.len(), e.value_len as usize))
        .collect();
    let (taken, truncated) = scan_cut(&sizes, limit);
    let mut out = Vec::with_capacity(taken);
    for (key, (bucket, entry)) in best.into_iter().take(taken) {
        let chain = Chain::open(r, layout, bucket)?;
        let value = read_value(
            &ChainStream {
                region: r,
                chain: &chain,
            },
            &entry,
        )?;
        out.push((key, value));
    }
    Ok(KvResult::Entries {
        entries: out,
        truncated,
    })
}

/// What the allocator accounts for, checked against the chains.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Usage {
    pub superblock: Superblock,
    pub chain_pages: u64,
    pub entries: u64,
}

/// Checks the layout invariants: every handed-out page is in exactly one chain
/// or in the free list, and every stream parses.
#[cfg(test)]
pub(crate) fn audit(r: &StateRegionRef<'_>, layout: &Layout) -> Result<Usage, KvError> {
    let sb = Superblock::read(r, layout)?;
    let mut seen = std::collections::BTreeSet::new();
    let mut chain_pages = 0;
    let mut count = 0;
    for bucket in 0..layout.buckets {
        let chain = Chain::open(r, layout, bucket)?;
        for e in entries(&ChainStream {
            region: r,
            chain: &chain,
        })? {
            if layout.bucket_of(&e.key) != bucket {
                return Err(KvError::Corrupt);
            }
            count += 1;
        }
        chain_pages += chain.pages.len() as u64;
        for page in chain.pages {
            if !seen.insert(page) {
                return Err(KvError::Corrupt);
            }
        }
    }
    let mut next = sb.free_head;
    for _ in 0..sb.free_count {
        let page = layout.data_page(next)?;
        if !seen.insert(page) {
            return Err(KvError::Corrupt);
        }
        next = read_u64(r, page * PAGE)?;
    }
    let handed_out = layout.data_start()..layout.data_start() + sb.bump;
    if next != 0 || seen.len() as u64 != sb.bump || !seen.iter().all(|p| handed_out.contains(p)) {
        return Err(KvError::Corrupt);
    }
    Ok(Usage {
        superblock: sb,
        chain_pages,
        entries: count,
    })
}
