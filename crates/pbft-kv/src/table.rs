//! The key-value table inside the replicated paged state.
//!
//! The region is an open-addressing hash table of fixed-size slots, each
//! [`SLOT_PAGES`] pages long, so that the largest entry (a 256-byte key and an
//! 8 KiB value) fits in one slot and a write touches at most three pages:
//!
//! ```text
//! slot: state u8 (0 empty, 1 used, 2 deleted) | key_len u16 | value_len u32 | key | value
//! ```
//!
//! A key's probe sequence starts at `blake3(key) mod slots` and walks forward.
//! Deleted slots are tombstones: lookups walk past them, inserts reuse them.
//! Everything is a pure function of the state's bytes, so every correct replica
//! computes the same pages; nothing is cached in memory, so a state replaced by
//! state transfer needs no rebuilding.

use pbft::service::{StateRegion, StateRegionRef};
use pbft::state::PAGE_SIZE;

use crate::ops::{KvError, MAX_KEY_LEN, MAX_VALUE_LEN};

/// Pages per slot.
pub const SLOT_PAGES: u64 = 3;
const SLOT_BYTES: u64 = SLOT_PAGES * PAGE_SIZE as u64;
const HEADER: usize = 1 + 2 + 4;
const EMPTY: u8 = 0;
const USED: u8 = 1;
const DELETED: u8 = 2;

const _: () = assert!(HEADER + MAX_KEY_LEN + MAX_VALUE_LEN <= SLOT_BYTES as usize);

/// Anything the table can read: a writable or a read-only region.
pub trait Region {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), KvError>;
    fn len_bytes(&self) -> u64;
}

impl Region for StateRegion<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), KvError> {
        self.read(offset, buf).map_err(|_| KvError::Corrupt)
    }
    fn len_bytes(&self) -> u64 {
        self.len()
    }
}

impl Region for StateRegionRef<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), KvError> {
        self.read(offset, buf).map_err(|_| KvError::Corrupt)
    }
    fn len_bytes(&self) -> u64 {
        self.len()
    }
}

/// Number of slots in a region.
pub fn slots(r: &impl Region) -> u64 {
    r.len_bytes() / SLOT_BYTES
}

struct Header {
    state: u8,
    key_len: usize,
    value_len: usize,
}

fn header(r: &impl Region, slot: u64) -> Result<Header, KvError> {
    let mut h = [0u8; HEADER];
    r.read_at(slot * SLOT_BYTES, &mut h)?;
    let key_len = u16::from_le_bytes([h[1], h[2]]) as usize;
    let value_len = u32::from_le_bytes([h[3], h[4], h[5], h[6]]) as usize;
    if h[0] > DELETED || key_len > MAX_KEY_LEN || value_len > MAX_VALUE_LEN {
        return Err(KvError::Corrupt);
    }
    Ok(Header { state: h[0], key_len, value_len })
}

fn read_key(r: &impl Region, slot: u64, h: &Header) -> Result<Vec<u8>, KvError> {
    let mut k = vec![0u8; h.key_len];
    r.read_at(slot * SLOT_BYTES + HEADER as u64, &mut k)?;
    Ok(k)
}

fn read_value(r: &impl Region, slot: u64, h: &Header) -> Result<Vec<u8>, KvError> {
    let mut v = vec![0u8; h.value_len];
    r.read_at(slot * SLOT_BYTES + (HEADER + h.key_len) as u64, &mut v)?;
    Ok(v)
}

fn home(key: &[u8], slots: u64) -> u64 {
    let d = blake3::hash(key);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_bytes()[..8]);
    u64::from_le_bytes(b) % slots
}

/// Where a key is, or where it would go.
enum Probe {
    Found(u64, Header),
    /// Absent; the first reusable slot on its probe sequence, if any.
    Absent(Option<u64>),
}

fn probe(r: &impl Region, key: &[u8]) -> Result<Probe, KvError> {
    let n = slots(r);
    if n == 0 {
        return Ok(Probe::Absent(None));
    }
    let start = home(key, n);
    let mut reusable = None;
    for i in 0..n {
        let slot = (start + i) % n;
        let h = header(r, slot)?;
        match h.state {
            EMPTY => return Ok(Probe::Absent(reusable.or(Some(slot)))),
            DELETED => {
                reusable.get_or_insert(slot);
            }
            _ => {
                if h.key_len == key.len() && read_key(r, slot, &h)? == key {
                    return Ok(Probe::Found(slot, h));
                }
            }
        }
    }
    Ok(Probe::Absent(reusable))
}

pub fn get(r: &impl Region, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
    match probe(r, key)? {
        Probe::Found(slot, h) => Ok(Some(read_value(r, slot, &h)?)),
        Probe::Absent(_) => Ok(None),
    }
}

fn write_slot(r: &mut StateRegion<'_>, slot: u64, state: u8, key: &[u8], value: &[u8]) -> Result<(), KvError> {
    let mut buf = Vec::with_capacity(HEADER + key.len() + value.len());
    buf.push(state);
    buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    r.write(slot * SLOT_BYTES, &buf).map_err(|_| KvError::Corrupt)
}

/// Inserts or replaces. `Full` when the key is new and no slot is free.
pub fn put(r: &mut StateRegion<'_>, key: &[u8], value: &[u8]) -> Result<(), KvError> {
    let slot = match probe(r, key)? {
        Probe::Found(slot, _) => slot,
        Probe::Absent(Some(slot)) => slot,
        Probe::Absent(None) => return Err(KvError::Full),
    };
    write_slot(r, slot, USED, key, value)
}

/// Removes a key; returns whether it existed. The slot becomes a tombstone and
/// its bytes are cleared, so deleted data does not linger in checkpoints.
pub fn delete(r: &mut StateRegion<'_>, key: &[u8]) -> Result<bool, KvError> {
    match probe(r, key)? {
        Probe::Found(slot, h) => {
            let zeros = vec![0u8; h.key_len + h.value_len];
            write_slot(r, slot, DELETED, &[], &[])?;
            r.write(slot * SLOT_BYTES + HEADER as u64, &zeros).map_err(|_| KvError::Corrupt)?;
            Ok(true)
        }
        Probe::Absent(_) => Ok(false),
    }
}

/// Every live entry with `start <= key < end`, in key order.
pub fn range(r: &impl Region, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
    let mut out = Vec::new();
    for slot in 0..slots(r) {
        let h = header(r, slot)?;
        if h.state != USED {
            continue;
        }
        let key = read_key(r, slot, &h)?;
        if key.as_slice() >= start && key.as_slice() < end {
            let value = read_value(r, slot, &h)?;
            out.push((key, value));
        }
    }
    out.sort();
    Ok(out)
}
