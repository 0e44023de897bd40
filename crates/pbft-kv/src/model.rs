//! A pure sequential model of the key-value service, for checkers.
//!
//! [`KvModel::apply`] gives exactly the result [`crate::KvService`] gives for the
//! same operation sequence, errors included, with one exception: the model has
//! no capacity, so it never returns [`crate::ops::KvError::Full`] (nor
//! [`crate::ops::KvError::Corrupt`]). Tests and simulations that compare the two must size
//! the service's state so that it never fills up: the service needs at most
//! `1 + directory pages + buckets + total entry bytes / 4088` pages, where an
//! entry takes `4 + key length + value length` bytes.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::ops::{scan_cut, KvOp, KvResult};

/// The service as a `BTreeMap`, without a capacity limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvModel {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KvModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current contents, in key order.
    pub fn entries(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.map
    }

    /// Applies an operation and returns its result.
    pub fn apply(&mut self, op: &KvOp) -> KvResult {
        if let Err(e) = op.validate() {
            return KvResult::Error(e);
        }
        match op {
            KvOp::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                KvResult::Ok
            }
            KvOp::Delete { key } => KvResult::Deleted {
                existed: self.map.remove(key).is_some(),
            },
            KvOp::Cas { key, expected, new } => {
                let current = self.map.get(key);
                if current != expected.as_ref() {
                    return KvResult::CasFailed {
                        current: current.cloned(),
                    };
                }
                match new {
                    Some(v) => self.map.insert(key.clone(), v.clone()),
                    None => self.map.remove(key),
                };
                KvResult::Ok
            }
            KvOp::Get { .. } | KvOp::Scan { .. } | KvOp::Null { .. } => self.read(op),
        }
    }

    /// Applies an encoded operation, as the service's `execute` does: malformed
    /// bytes give [`crate::ops::KvError::Malformed`].
    pub fn apply_encoded(&mut self, op: &[u8]) -> Vec<u8> {
        match KvOp::decode(op) {
            Ok(op) => self.apply(&op),
            Err(e) => KvResult::Error(e),
        }
        .encode()
    }

    /// The result of a read-only operation, or `None` for one that is not.
    pub fn apply_read_only(&self, op: &KvOp) -> Option<KvResult> {
        if !op.is_read_only() {
            return None;
        }
        if let Err(e) = op.validate() {
            return Some(KvResult::Error(e));
        }
        Some(self.read(op))
    }

    fn read(&self, op: &KvOp) -> KvResult {
        match op {
            KvOp::Get { key } => KvResult::Value(self.map.get(key).cloned()),
            KvOp::Scan { start, end, limit } => {
                if start >= end {
                    return KvResult::Entries {
                        entries: Vec::new(),
                        truncated: false,
                    };
                }
                let range = (
                    Bound::Included(start.as_slice()),
                    Bound::Excluded(end.as_slice()),
                );
                let candidates: Vec<(&Vec<u8>, &Vec<u8>)> = self
                    .map
                    .range::<[u8], _>(range)
                    .take(*limit as usize + 1)
                    .collect();
                let sizes: Vec<(usize, usize)> =
                    candidates.iter().map(|(k, v)| (k.len(), v.len())).collect();
                let (taken, truncated) = scan_cut(&sizes, *limit);
                let entries = candidates[..taken]
                    .iter()
                    .map(|(k, v)| ((*k).clone(), (*v).clone()))
                    .collect();
                KvResult::Entries { entries, truncated }
            }
            KvOp::Null { result_len, .. } => KvResult::Null(vec![0; *result_len as usize]),
            KvOp::Put { .. } | KvOp::Delete { .. } | KvOp::Cas { .. } => {
                unreachable!("read() is only called for read-only operations")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics() {
        let mut m = KvModel::new();
        let k = b"k".to_vec();
        let cas = |expected: Option<&[u8]>, new: Option<&[u8]>| KvOp::Cas {
            key: k.clone(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
        };
        assert_eq!(m.apply(&cas(None, None)), KvResult::Ok);
        assert_eq!(
            m.apply(&cas(Some(b"x"), Some(b"y"))),
            KvResult::CasFailed { current: None }
        );
        assert_eq!(m.apply(&cas(None, Some(b"a"))), KvResult::Ok);
        assert_eq!(
            m.apply(&cas(None, Some(b"b"))),
            KvResult::CasFailed {
                current: Some(b"a".to_vec())
            }
        );
        assert_eq!(m.apply(&cas(Some(b"a"), None)), KvResult::Ok);
        assert_eq!(
            m.apply(&KvOp::Get { key: k.clone() }),
            KvResult::Value(None)
        );
    }

    #[test]
    fn read_only_rejects_writes() {
        let m = KvModel::new();
        assert_eq!(m.apply_read_only(&KvOp::Delete { key: vec![] }), None);
        assert_eq!(
            m.apply_read_only(&KvOp::Null {
                arg: vec![1; 4],
                result_len: 4
            }),
            Some(KvResult::Null(vec![0; 4]))
        );
    }
}
