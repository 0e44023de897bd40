//! The one way to count a quorum: "do f+1 (weak) or 2f+1 (strong) distinct
//! replicas vouch for the same value?" (TOCS 2002 §4: a weak certificate
//! holds f+1 matching messages, a quorum certificate 2f+1).
//!
//! A [`Tally`] holds at most one vote per replica, so a replica that repeats
//! itself is never counted twice; whether a later vote replaces an earlier one
//! is the caller's choice ([`Tally::insert`] or [`Tally::insert_first`]).
//! Prepares, commits, checkpoints, view-change acks, transfer targets, STATUS
//! evidence, reply certificates and the new-view decision all count here.

use std::collections::BTreeMap;

use crate::types::ReplicaId;

/// What [`Tally::insert`] did with a vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The voter had not voted.
    New,
    /// The voter had cast this very vote.
    Same,
    /// The voter's earlier vote was another value (kept or replaced, as the
    /// method says).
    Different,
}

/// Votes of distinct replicas for values of type `V`, at most one each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally<V> {
    votes: BTreeMap<ReplicaId, V>,
}

impl<V> Default for Tally<V> {
    fn default() -> Self {
        Tally { votes: BTreeMap::new() }
    }
}

impl<V> FromIterator<(ReplicaId, V)> for Tally<V> {
    /// A later vote of the same voter replaces an earlier one.
    fn from_iter<I: IntoIterator<Item = (ReplicaId, V)>>(iter: I) -> Self {
        Tally { votes: iter.into_iter().collect() }
    }
}

impl<V> Tally<V> {
    pub fn new() -> Tally<V> {
        Tally::default()
    }

    /// Number of voters.
    pub fn len(&self) -> usize {
        self.votes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.votes.is_empty()
    }

    /// `voter`'s vote.
    pub fn get(&self, voter: ReplicaId) -> Option<&V> {
        self.votes.get(&voter)
    }

    pub fn contains(&self, voter: ReplicaId) -> bool {
        self.votes.contains_key(&voter)
    }

    /// The votes, by voter.
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaId, &V)> {
        self.votes.iter().map(|(r, v)| (*r, v))
    }

    pub fn voters(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.votes.keys().copied()
    }

    /// Voters whose vote satisfies `pred`.
    pub fn count_where(&self, mut pred: impl FnMut(ReplicaId, &V) -> bool) -> usize {
        self.votes.iter().filter(|(r, v)| pred(**r, v)).count()
    }

    /// f+1 voters' votes satisfy `pred`: at least one correct replica's does.
    pub fn weak_where(&self, f: usize, pred: impl FnMut(ReplicaId, &V) -> bool) -> bool {
        self.count_where(pred) > f
    }

    /// 2f+1 voters' votes satisfy `pred`: a quorum's.
    pub fn quorum_where(&self, f: usize, pred: impl FnMut(ReplicaId, &V) -> bool) -> bool {
        self.count_where(pred) > 2 * f
    }

    /// Forgets every vote.
    pub fn clear(&mut self) {
        self.votes.clear();
    }

    /// Keeps the votes for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(ReplicaId, &V) -> bool) {
        self.votes.retain(|r, v| keep(*r, v));
    }
}

impl<V: PartialEq> Tally<V> {
    /// Records `voter`'s vote, replacing an earlier one.
    pub fn insert(&mut self, voter: ReplicaId, value: V) -> Inserted {
        match self.votes.insert(voter, value) {
            None => Inserted::New,
            Some(old) if Some(&old) == self.votes.get(&voter) => Inserted::Same,
            Some(_) => Inserted::Different,
        }
    }

    /// Records `voter`'s vote unless it has voted: the first vote stands.
    pub fn insert_first(&mut self, voter: ReplicaId, value: V) -> Inserted {
        match self.votes.get(&voter) {
            None => {
                self.votes.insert(voter, value);
                Inserted::New
            }
            Some(old) if *old == value => Inserted::Same,
            Some(_) => Inserted::Different,
        }
    }

    /// Voters for `value`.
    pub fn count(&self, value: &V) -> usize {
        self.count_where(|_, v| v == value)
    }

    /// Voters for `value` other than those in `excluded`.
    pub fn count_excluding(&self, value: &V, excluded: &[ReplicaId]) -> usize {
        self.count_where(|r, v| v == value && !excluded.contains(&r))
    }

    /// f+1 voters vouch for `value`: at least one of them is correct.
    pub fn weakly_certifies(&self, value: &V, f: usize) -> bool {
        self.count(value) > f
    }

    /// 2f+1 voters vouch for `value`: a quorum, f+1 of them correct.
    pub fn certifies(&self, value: &V, f: usize) -> bool {
        self.count(value) > 2 * f
    }
}

impl<V: Ord + Clone> Tally<V> {
    /// The greatest value that at least `need` voters agree on.
    pub fn highest_agreed(&self, need: usize) -> Option<V> {
        let mut counts: BTreeMap<&V, usize> = BTreeMap::new();
        for v in self.votes.values() {
            *counts.entry(v).or_default() += 1;
        }
        counts.into_iter().rev().find(|(_, n)| *n >= need).map(|(v, _)| v.clone())
    }

    /// The value f+1 voters agree on (the greatest, if several).
    pub fn weak_certificate(&self, f: usize) -> Option<V> {
        self.highest_agreed(f + 1)
    }

    /// The value 2f+1 voters agree on (there is at most one when at most f
    /// voters lie and each votes once).
    pub fn quorum_certificate(&self, f: usize) -> Option<V> {
        self.highest_agreed(2 * f + 1)
    }

    /// The greatest `x` such that at least `need` voters voted `x` or more:
    /// for example the highest view that f+1 replicas ask for at least.
    pub fn highest_reached_by(&self, need: usize) -> Option<V> {
        if need == 0 {
            return None;
        }
        let mut values: Vec<&V> = self.votes.values().collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(need - 1).map(|v| (*v).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(i: u16) -> ReplicaId {
        ReplicaId(i)
    }

    #[test]
    fn one_vote_per_voter() {
        let mut t = Tally::new();
        assert_eq!(t.insert_first(r(1), 7), Inserted::New);
        assert_eq!(t.insert_first(r(1), 7), Inserted::Same);
        assert_eq!(t.insert_first(r(1), 8), Inserted::Different);
        assert_eq!(t.count(&7), 1, "the first vote stands");
        assert_eq!(t.insert(r(1), 8), Inserted::Different);
        assert_eq!((t.count(&7), t.count(&8)), (0, 1), "insert replaces");
        assert_eq!(t.insert(r(1), 8), Inserted::Same);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn weak_and_strong_certificates_at_the_boundaries() {
        let f = 1;
        let mut t = Tally::new();
        t.insert(r(0), 'a');
        assert!(!t.weakly_certifies(&'a', f));
        assert_eq!(t.weak_certificate(f), None);
        t.insert(r(1), 'a');
        assert!(t.weakly_certifies(&'a', f) && !t.certifies(&'a', f));
        assert_eq!(t.weak_certificate(f), Some('a'));
        assert_eq!(t.quorum_certificate(f), None);
        t.insert(r(2), 'b');
        assert_eq!(t.quorum_certificate(f), None);
        t.insert(r(2), 'a');
        assert!(t.certifies(&'a', f));
        assert_eq!(t.quorum_certificate(f), Some('a'));
        assert_eq!(t.count_excluding(&'a', &[r(0), r(5)]), 2);
    }

    #[test]
    fn highest_reached_by_k_voters() {
        let t: Tally<u64> = [(r(0), 5), (r(1), 9), (r(2), 7), (r(3), 2)].into_iter().collect();
        assert_eq!(t.highest_reached_by(1), Some(9));
        assert_eq!(t.highest_reached_by(2), Some(7));
        assert_eq!(t.highest_reached_by(4), Some(2));
        assert_eq!(t.highest_reached_by(5), None);
        assert_eq!(t.highest_reached_by(0), None);
        assert_eq!(t.count_where(|_, v| *v > 4), 3);
    }
}
