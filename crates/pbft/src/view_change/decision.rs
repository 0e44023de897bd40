//! The new-view decision procedure (TOCS 2002 §4.5.2, Castro's thesis §3.2.4):
//! from a set S of view-change messages, pick the checkpoint the new view starts
//! from and, for every sequence number after it, the request (or null request)
//! the new view must re-propose.
//!
//! The new primary runs it to build NEW-VIEW; every backup runs it on the same
//! messages to check NEW-VIEW. It is a pure function of its inputs.
//!
//! - checkpoint: the highest (n, d) that f+1 messages list in C, such that 2f+1
//!   messages have h ≤ n;
//! - for each n' after it, choose digest d' when some message has (n', d', v')
//!   in P and
//!   - A1: 2f+1 messages have h < n' and no P entry at n' that conflicts (a
//!     higher view, or the same view with another digest), AND
//!   - A2: f+1 messages have (n', d', v'') in Q with v'' ≥ v';
//! - choose the null request when 2f+1 messages have h < n' and no P entry at n';
//! - choosing a request takes precedence over the null request; when neither
//!   holds, more messages are needed.
//!
//! Ports of PBFT have got this wrong by joining A1 and A2 with "or", and by
//! forgetting "2f+1 messages have h < n'" in the null rule; the tests below pin
//! both.

use std::collections::BTreeSet;

use crate::tally::Tally;
use crate::types::{Digest, ReplicaId, SeqNo, View};

/// A (sequence number, digest, view) entry of a P or Q set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub seq: SeqNo,
    pub digest: Digest,
    pub view: View,
}

/// What the decision procedure needs of one VIEW-CHANGE message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewChangeInfo {
    pub replica: ReplicaId,
    /// h: the sender's last stable checkpoint.
    pub stable: SeqNo,
    /// C: the checkpoints the sender holds.
    pub checkpoints: Vec<(SeqNo, Digest)>,
    /// P: per sequence number above h, the request that prepared in the latest view.
    pub prepared: Vec<Entry>,
    /// Q: (digest, view) pairs that pre-prepared above h (several per sequence number).
    pub pre_prepared: Vec<Entry>,
}

/// What the new view re-proposes at one sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Request(Digest),
    Null,
}

/// The outcome: where the new view starts and what it re-proposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewViewDecision {
    pub checkpoint: (SeqNo, Digest),
    /// One entry for every sequence number from the checkpoint + 1 to the last
    /// one any message reports as prepared (within the window), in order.
    pub choices: Vec<(SeqNo, Choice)>,
}

/// Why no decision could be made yet: wait for more VIEW-CHANGE messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undecided {
    /// No checkpoint is listed by f+1 messages with 2f+1 messages at or below it.
    NoCheckpoint,
    /// Neither rule holds at this sequence number.
    Seq(SeqNo),
}

/// Runs the decision procedure over `msgs` (each from a distinct replica; the
/// caller has checked that) for a cluster tolerating `f` faults with log window
/// `log_window`.
pub fn decide(f: usize, log_window: u64, msgs: &[ViewChangeInfo]) -> Result<NewViewDecision, Undecided> {
    decide_rules(f, log_window, msgs, true)
}

/// The procedure without rule A2 (f+1 messages must have pre-prepared the
/// request): the deliberate bug `new-view-skips-a2`, which lets one lying
/// VIEW-CHANGE put a made-up request into the new view.
#[cfg(feature = "deliberate-bugs")]
pub fn decide_without_a2(f: usize, log_window: u64, msgs: &[ViewChangeInfo]) -> Result<NewViewDecision, Undecided> {
    decide_rules(f, log_window, msgs, false)
}

fn decide_rules(f: usize, log_window: u64, msgs: &[ViewChangeInfo], rule_a2: bool) -> Result<NewViewDecision, Undecided> {
    let votes: Tally<&ViewChangeInfo> = msgs.iter().map(|m| (m.replica, m)).collect();
    debug_assert_eq!(votes.len(), msgs.len(), "one view-change message per replica");
    let checkpoint = choose_checkpoint(f, &votes).ok_or(Undecided::NoCheckpoint)?;
    let (h, _) = checkpoint;
    let last = msgs
        .iter()
        .flat_map(|m| m.prepared.iter())
        .map(|e| e.seq)
        .filter(|s| *s > h && s.0 <= h.0.saturating_add(log_window))
        .max()
        .unwrap_or(h);
    let mut choices = Vec::new();
    for n in h.0.saturating_add(1)..=last.0 {
        let seq = SeqNo(n);
        let choice = choose_request(f, &votes, seq, rule_a2)
            .map(Choice::Request)
            .or_else(|| choose_null(f, &votes, seq).then_some(Choice::Null))
            .ok_or(Undecided::Seq(seq))?;
        choices.push((seq, choice));
    }
    Ok(NewViewDecision { checkpoint, choices })
}

/// The highest (n, d) listed in C by f+1 messages with 2f+1 messages at h ≤ n.
fn choose_checkpoint(f: usize, msgs: &Tally<&ViewChangeInfo>) -> Option<(SeqNo, Digest)> {
    let candidates: BTreeSet<(SeqNo, Digest)> = msgs.iter().flat_map(|(_, m)| m.checkpoints.iter().copied()).collect();
    candidates.into_iter().rev().find(|(n, d)| {
        msgs.weak_where(f, |_, m| m.checkpoints.contains(&(*n, *d))) && msgs.quorum_where(f, |_, m| m.stable <= *n)
    })
}

/// Rule A at `seq`: a prepared digest that no message contradicts and that f+1
/// messages pre-prepared in its view or later.
fn choose_request(f: usize, msgs: &Tally<&ViewChangeInfo>, seq: SeqNo, rule_a2: bool) -> Option<Digest> {
    let mut candidates: Vec<Entry> =
        msgs.iter().flat_map(|(_, m)| m.prepared.iter()).filter(|e| e.seq == seq).copied().collect();
    // Deterministic order: the newest view first, then by digest.
    candidates.sort_by(|a, b| b.view.cmp(&a.view).then(a.digest.cmp(&b.digest)));
    candidates.dedup();
    candidates.into_iter().find(|p| {
        let a1 = msgs.quorum_where(f, |_, m| {
            m.stable < seq
                && m.prepared
                    .iter()
                    .filter(|e| e.seq == seq)
                    .all(|e| e.view < p.view || (e.view == p.view && e.digest == p.digest))
        });
        let a2 = msgs
            .weak_where(f, |_, m| m.pre_prepared.iter().any(|q| q.seq == seq && q.digest == p.digest && q.view >= p.view));
        a1 && (a2 || !rule_a2)
    })
    .map(|p| p.digest)
}

/// Rule B at `seq`: 2f+1 messages with h < seq and nothing prepared at seq.
fn choose_null(f: usize, msgs: &Tally<&ViewChangeInfo>, seq: SeqNo) -> bool {
    msgs.quorum_where(f, |_, m| m.stable < seq && m.prepared.iter().all(|e| e.seq != seq))
}

#[cfg(test)]
mod tests;
