//! Key-value operations on the command line: parsing them, running them
//! through a [`ClusterClient`], and printing their results.

use anyhow::{anyhow, Result};
use bytes::Bytes;
use clap::Subcommand;
use pbft_kv::{KvOp, KvResult, MAX_SCAN_LIMIT};
use pbft_node::ClusterClient;

/// In `cas`, this word stands for "no value" (the key is absent).
pub const NONE_WORD: &str = "@none";

/// One operation.
#[derive(Subcommand, Debug)]
pub enum OpCommand {
    /// Set KEY to VALUE.
    Put { key: String, value: String },
    /// Print KEY's value.
    Get { key: String },
    /// Remove KEY.
    Delete { key: String },
    /// Set KEY to NEW if its value is OLD (either may be @none: absent).
    Cas { key: String, old: String, new: String },
    /// Print the keys in [START, END) with their values.
    Scan {
        start: String,
        end: String,
        #[arg(long, default_value_t = MAX_SCAN_LIMIT)]
        limit: u32,
    },
}

impl OpCommand {
    /// The operation, checked against the service's limits.
    pub fn to_op(&self) -> Result<KvOp> {
        let b = |s: &str| s.as_bytes().to_vec();
        let maybe = |s: &str| if s == NONE_WORD { None } else { Some(b(s)) };
        let op = match self {
            OpCommand::Put { key, value } => KvOp::Put { key: b(key), value: b(value) },
            OpCommand::Get { key } => KvOp::Get { key: b(key) },
            OpCommand::Delete { key } => KvOp::Delete { key: b(key) },
            OpCommand::Cas { key, old, new } => KvOp::Cas { key: b(key), expected: maybe(old), new: maybe(new) },
            OpCommand::Scan { start, end, limit } => KvOp::Scan { start: b(start), end: b(end), limit: *limit },
        };
        op.validate().map_err(|e| anyhow!("invalid operation: {e}"))?;
        Ok(op)
    }
}

/// Runs `op` and decodes its result.
pub fn invoke(client: &mut ClusterClient, op: &KvOp) -> Result<KvResult> {
    let bytes = client.invoke(Bytes::from(op.encode()), op.is_read_only())?;
    KvResult::decode(&bytes).map_err(|e| anyhow!("the replicas' result does not decode: {e}"))
}

/// A result as text, and whether the operation succeeded.
pub fn describe(r: &KvResult) -> (String, bool) {
    let show = |v: &Option<Vec<u8>>| match v {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => "(none)".into(),
    };
    match r {
        KvResult::Ok => ("OK".into(), true),
        KvResult::Value(v) => (show(v), true),
        KvResult::Deleted { existed: true } => ("deleted".into(), true),
        KvResult::Deleted { existed: false } => ("not found".into(), true),
        KvResult::CasFailed { current } => (format!("cas failed: the value is {}", show(current)), false),
        KvResult::Entries { entries, truncated } => {
            let mut lines: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}\t{}", String::from_utf8_lossy(k), String::from_utf8_lossy(v)))
                .collect();
            if entries.is_empty() {
                lines.push("(no keys)".into());
            }
            if *truncated {
                lines.push("... (truncated: scan again from the last key)".into());
            }
            (lines.join("\n"), true)
        }
        KvResult::Null(v) => (format!("({} bytes)", v.len()), true),
        KvResult::Error(e) => (format!("error: {e}"), false),
    }
}
