//! Operations and results of the key-value service and their binary encoding.
//!
//! Every encoding starts with [`FORMAT_VERSION`], then a tag byte naming the
//! variant, then the variant's fields in declaration order:
//!
//! - a byte string is its length as `u32` little-endian, then the bytes;
//! - an `Option` is `0` (None) or `1` (Some) followed by the value;
//! - integers are little-endian, a `bool` is one byte `0` or `1`.
//!
//! Decoding is strict: an unknown version or tag, a length that runs past the
//! end, a bad `bool`/`Option` byte, or trailing bytes all give
//! [`KvError::Malformed`]. The codec checks only structure; the size limits
//! ([`MAX_KEY_LEN`], [`MAX_VALUE_LEN`], ...) are checked by [`KvOp::validate`],
//! which the service and the model both call, so that an oversized key gives
//! the same error result in both.

/// First byte of every encoded operation and result.
pub const FORMAT_VERSION: u8 = 1;
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 256;
/// Longest value accepted (also the bound for a `Null` argument).
pub const MAX_VALUE_LEN: usize = 8192;
/// Longest scan bound: one byte more than a key, so that `[0xff; 257]` is an
/// end bound above every key (see [`KvOp::scan_from`]).
pub const MAX_SCAN_BOUND_LEN: usize = MAX_KEY_LEN + 1;
/// Largest `limit` of a scan.
pub const MAX_SCAN_LIMIT: u32 = 256;
/// Largest encoded [`KvResult::Entries`] a scan returns; a scan stops before
/// the first entry that would exceed it.
pub const MAX_REPLY_LEN: usize = 16 * 1024;
/// Largest `result_len` of a `Null` operation.
pub const MAX_NULL_RESULT_LEN: u32 = 8192;

/// Bytes of an encoded `Entries` result besides its entries: version, tag,
/// count and the `truncated` flag.
const ENTRIES_OVERHEAD: usize = 1 + 1 + 4 + 1;
/// Bytes of one encoded scan entry besides its key and value: two lengths.
const ENTRY_OVERHEAD: usize = 4 + 4;

/// An operation on the key-value service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Sets `key` to `value`. Result: [`KvResult::Ok`].
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Reads `key` (read-only). Result: [`KvResult::Value`].
    Get { key: Vec<u8> },
    /// Removes `key`. Result: [`KvResult::Deleted`].
    Delete { key: Vec<u8> },
    /// If the current value equals `expected` (`None`: the key is absent), sets
    /// it to `new` (`None`: deletes it) and returns [`KvResult::Ok`]; otherwise
    /// changes nothing and returns [`KvResult::CasFailed`] with the current value.
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// Keys in `[start, end)` in byte order with their values, at most `limit`
    /// of them and at most [`MAX_REPLY_LEN`] encoded (read-only). Result:
    /// [`KvResult::Entries`].
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    },
    /// Does nothing; returns `result_len` zero bytes as [`KvResult::Null`]
    /// (read-only). For the 0/0, 4/0 and 0/4 micro-benchmarks.
    Null { arg: Vec<u8>, result_len: u32 },
}

/// The result of a [`KvOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// A `Put` or a successful `Cas`.
    Ok,
    /// A `Get`: the value, or `None` when the key is absent.
    Value(Option<Vec<u8>>),
    /// A `Delete`: whether the key was present.
    Deleted { existed: bool },
    /// A `Cas` whose expectation did not hold: the value found instead.
    CasFailed { current: Option<Vec<u8>> },
    /// A `Scan`: entries in key order. `truncated` is true when some key in the
    /// range was left out (by `limit` or by [`MAX_REPLY_LEN`]); the client
    /// continues from the last key returned plus a zero byte.
    Entries {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        truncated: bool,
    },
    /// A `Null`: `result_len` zero bytes.
    Null(Vec<u8>),
    /// The operation failed and changed nothing.
    Error(KvError),
}

/// Why an operation failed. An operation that fails changes no state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("malformed encoding")]
    Malformed,
    #[error("key or scan bound too long")]
    KeyTooLarge,
    #[error("value or null argument too long")]
    ValueTooLarge,
    #[error("scan limit above the maximum")]
    LimitTooLarge,
    #[error("null result length above the maximum")]
    ResultTooLarge,
    /// No free page for the operation. Not produced by [`crate::KvModel`].
    #[error("state capacity exhausted")]
    Full,
    /// The replicated state does not have the service's layout (a bug, or a
    /// state from another configuration). Not produced by [`crate::KvModel`].
    #[error("state is inconsistent")]
    Corrupt,
}

impl KvError {
    fn code(self) -> u8 {
        match self {
            KvError::Malformed => 1,
            KvError::KeyTooLarge => 2,
            KvError::ValueTooLarge => 3,
            KvError::LimitTooLarge => 4,
            KvError::ResultTooLarge => 5,
            KvError::Full => 6,
            KvError::Corrupt => 7,
        }
    }

    fn from_code(code: u8) -> Result<Self, KvError> {
        Ok(match code {
            1 => KvError::Malformed,
            2 => KvError::KeyTooLarge,
            3 => KvError::ValueTooLarge,
            4 => KvError::LimitTooLarge,
            5 => KvError::ResultTooLarge,
            6 => KvError::Full,
            7 => KvError::Corrupt,
            _ => return Err(KvError::Malformed),
        })
    }
}

mod op_tag {
    pub const PUT: u8 = 1;
    pub const GET: u8 = 2;
    pub const DELETE: u8 = 3;
    pub const CAS: u8 = 4;
    pub const SCAN: u8 = 5;
    pub const NULL: u8 = 6;
}

mod result_tag {
    pub const OK: u8 = 1;
    pub const VALUE: u8 = 2;
    pub const DELETED: u8 = 3;
    pub const CAS_FAILED: u8 = 4;
    pub const ENTRIES: u8 = 5;
    pub const NULL: u8 = 6;
    pub const ERROR: u8 = 7;
}

impl KvOp {
    /// A scan of every key `>= start`.
    pub fn scan_from(start: Vec<u8>, limit: u32) -> KvOp {
        KvOp::Scan {
            start,
            end: vec![0xff; MAX_SCAN_BOUND_LEN],
            limit,
        }
    }

    /// Whether the operation never changes state (and may be sent read-only).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            KvOp::Get { .. } | KvOp::Scan { .. } | KvOp::Null { .. }
        )
    }

    /// Checks the size limits. The service and the model both call it first, so
    /// an invalid operation gives the same error in both and changes nothing.
    pub fn validate(&self) -> Result<(), KvError> {
        fn key(k: &[u8]) -> Result<(), KvError> {
            if k.len() > MAX_KEY_LEN {
                return Err(KvError::KeyTooLarge);
            }
            Ok(())
        }
        fn value(v: &[u8]) -> Result<(), KvError> {
            if v.len() > MAX_VALUE_LEN {
                return Err(KvError::ValueTooLarge);
            }
            Ok(())
        }
        match self {
            KvOp::Put { key: k, value: v } => {
                key(k)?;
                value(v)
            }
            KvOp::Get { key: k } | KvOp::Delete { key: k } => key(k),
            KvOp::Cas {
                key: k,
                expected,
                new,
            } => {
                key(k)?;
                expected.as_deref().map_or(Ok(()), value)?;
                new.as_deref().map_or(Ok(()), value)
            }
            KvOp::Scan { start, end, limit } => {
                if start.len() > MAX_SCAN_BOUND_LEN || end.len() > MAX_SCAN_BOUND_LEN {
                    return Err(KvError::KeyTooLarge);
                }
                if *limit > MAX_SCAN_LIMIT {
                    return Err(KvError::LimitTooLarge);
                }
                Ok(())
            }
            KvOp::Null { arg, result_len } => {
                value(arg)?;
                if *result_len > MAX_NULL_RESULT_LEN {
                    return Err(KvError::ResultTooLarge);
                }
                Ok(())
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            KvOp::Put { key, value } => {
                w.u8(op_tag::PUT);
                w.bytes(key);
                w.bytes(value);
            }
            KvOp::Get { key } => {
                w.u8(op_tag::GET);
                w.bytes(key);
            }
            KvOp::Delete { key } => {
                w.u8(op_tag::DELETE);
                w.bytes(key);
            }
            KvOp::Cas { key, expected, new } => {
                w.u8(op_tag::CAS);
                w.bytes(key);
                w.opt_bytes(expected.as_deref());
                w.opt_bytes(new.as_deref());
            }
            KvOp::Scan { start, end, limit } => {
                w.u8(op_tag::SCAN);
                w.bytes(start);
                w.bytes(end);
                w.u32(*limit);
            }
            KvOp::Null { arg, result_len } => {
                w.u8(op_tag::NULL);
                w.bytes(arg);
                w.u32(*result_len);
            }
        }
        w.0
    }

    /// Parses an encoded operation; any malformation is [`KvError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<KvOp, KvError> {
        let mut r = Reader::new(bytes)?;
        let op = match r.u8()? {
            op_tag::PUT => KvOp::Put {
                key: r.bytes()?,
                value: r.bytes()?,
            },
            op_tag::GET => KvOp::Get { key: r.bytes()? },
            op_tag::DELETE => KvOp::Delete { key: r.bytes()? },
            op_tag::CAS => KvOp::Cas {
                key: r.bytes()?,
                expected: r.opt_bytes()?,
                new: r.opt_bytes()?,
            },
            op_tag::SCAN => KvOp::Scan {
                start: r.bytes()?,
                end: r.bytes()?,
                limit: r.u32()?,
            },
            op_tag::NULL => KvOp::Null {
                arg: r.bytes()?,
                result_len: r.u32()?,
            },
            _ => return Err(KvError::Malformed),
        };
        r.finish()?;
        Ok(op)
    }
}

impl KvResult {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            KvResult::Ok => w.u8(result_tag::OK),
            KvResult::Value(v) => {
                w.u8(result_tag::VALUE);
                w.opt_bytes(v.as_deref());
            }
            KvResult::Deleted { existed } => {
                w.u8(result_tag::DELETED);
                w.bool(*existed);
            }
            KvResult::CasFailed { current } => {
                w.u8(result_tag::CAS_FAILED);
                w.opt_bytes(current.as_deref());
            }
            KvResult::Entries { entries, truncated } => {
                w.u8(result_tag::ENTRIES);
                w.len(entries.len());
                for (k, v) in entries {
                    w.bytes(k);
                    w.bytes(v);
                }
                w.bool(*truncated);
            }
            KvResult::Null(bytes) => {
                w.u8(result_tag::NULL);
                w.bytes(bytes);
            }
            KvResult::Error(e) => {
                w.u8(result_tag::ERROR);
                w.u8(e.code());
            }
        }
        w.0
    }

    /// Parses an encoded result; any malformation is [`KvError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<KvResult, KvError> {
        let mut r = Reader::new(bytes)?;
        let result = match r.u8()? {
            result_tag::OK => KvResult::Ok,
            result_tag::VALUE => KvResult::Value(r.opt_bytes()?),
            result_tag::DELETED => KvResult::Deleted { existed: r.bool()? },
            result_tag::CAS_FAILED => KvResult::CasFailed {
                current: r.opt_bytes()?,
            },
            result_tag::ENTRIES => {
                let count = r.u32()?;
                // Allocation follows the bytes actually present, not the claimed count.
                let mut entries = Vec::new();
                for _ in 0..count {
                    entries.push((r.bytes()?, r.bytes()?));
                }
                KvResult::Entries {
                    entries,
                    truncated: r.bool()?,
                }
            }
            result_tag::NULL => KvResult::Null(r.bytes()?),
            result_tag::ERROR => KvResult::Error(KvError::from_code(r.u8()?)?),
            _ => return Err(KvError::Malformed),
        };
        r.finish()?;
        Ok(result)
    }
}

/// How many of a scan's candidates go into the reply, and whether it is
/// truncated. `candidates` are `(key length, value length)` of the smallest keys
/// in the range, in order: all of them, or at least `limit + 1`. The reply is
/// the longest prefix of at most `limit` entries whose encoding fits in
/// [`MAX_REPLY_LEN`]. Shared by the service and the model so that both cut at
/// the same place.
pub(crate) fn scan_cut(candidates: &[(usize, usize)], limit: u32) -> (usize, bool) {
    let mut size = ENTRIES_OVERHEAD;
    let mut taken = 0;
    for &(key_len, value_len) in candidates.iter().take(limit as usize) {
        let entry = ENTRY_OVERHEAD + key_len + value_len;
        if size + entry > MAX_REPLY_LEN {
            break;
        }
        size += entry;
        taken += 1;
    }
    (taken, taken < candidates.len())
}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Self {
        Writer(vec![FORMAT_VERSION])
    }
    fn u8(&mut self, b: u8) {
        self.0.push(b);
    }
    fn bool(&mut self, b: bool) {
        self.0.push(u8::from(b));
    }
    fn u32(&mut self, n: u32) {
        self.0.extend_from_slice(&n.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        // Every length the service produces is bounded far below 4 GiB; a caller
        // building a larger value by hand has a bug, not a client error.
        self.u32(u32::try_from(n).expect("encoded length fits in u32"));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    fn opt_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            None => self.u8(0),
            Some(b) => {
                self.u8(1);
                self.bytes(b);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, KvError> {
        match bytes.split_first() {
            Some((&FORMAT_VERSION, rest)) => Ok(Reader(rest)),
            _ => Err(KvError::Malformed),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], KvError> {
        if n > self.0.len() {
            return Err(KvError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, KvError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, KvError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(KvError::Malformed),
        }
    }
    fn u32(&mut self) -> Result<u32, KvError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, KvError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn opt_bytes(&mut self) -> Result<Option<Vec<u8>>, KvError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes()?)),
            _ => Err(KvError::Malformed),
        }
    }
    fn finish(self) -> Result<(), KvError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(KvError::Malformed)
        }
    }
}
