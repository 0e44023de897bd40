//! What a replica knows of, and owes to, each peer (Castro's thesis §5.2,
//! §5.3): the view and progress each last reported in STATUS (evidence that
//! the primary works and this replica merely lags), when it last answered
//! each peer's STATUS, and how many FETCH answers each may still get this
//! interval. Both answer budgets bound what a Byzantine peer can make this
//! replica send (STYLE.md rule 6).

use std::collections::BTreeMap;

use crate::tally::Tally;
use crate::types::{Instant, ReplicaId, SeqNo, View};

/// Per-peer budget for answering FETCH.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FetchBudget {
    window_start: Instant,
    answered: u32,
}

impl FetchBudget {
    /// Answers still allowed this interval, out of `per_interval`.
    pub(super) fn left(&self, per_interval: u32) -> u32 {
        per_interval.saturating_sub(self.answered)
    }
    pub(super) fn spend(&mut self, answers: u32) {
        self.answered = self.answered.saturating_add(answers);
    }
}

/// Per-peer knowledge and budgets.
#[derive(Debug, Default)]
pub(super) struct Peers {
    /// Each peer's (view, last executed) from its latest STATUS in an active view.
    progress: Tally<(View, SeqNo)>,
    status_answered: BTreeMap<ReplicaId, Instant>,
    fetch_budget: BTreeMap<ReplicaId, FetchBudget>,
}

impl Peers {
    /// `from` reported, in an active view `view`, having executed up to `executed`.
    pub(super) fn note_progress(&mut self, from: ReplicaId, view: View, executed: SeqNo) {
        self.progress.insert(from, (view, executed));
    }

    /// The peers' latest reported progress.
    pub(super) fn progress(&self) -> &Tally<(View, SeqNo)> {
        &self.progress
    }

    /// Whether `from`'s STATUS at `now` may be answered: at most once per
    /// `min_gap_us`. Answering starts the next gap.
    pub(super) fn may_answer_status(&mut self, from: ReplicaId, now: Instant, min_gap_us: u64) -> bool {
        if self.status_answered.get(&from).is_some_and(|at| now.as_us() < at.as_us() + min_gap_us) {
            return false;
        }
        self.status_answered.insert(from, now);
        true
    }

    /// `from`'s FETCH budget at `now`, renewed every `interval_us`.
    pub(super) fn fetch_budget(&mut self, from: ReplicaId, now: Instant, interval_us: u64) -> &mut FetchBudget {
        let budget = self.fetch_budget.entry(from).or_default();
        if now.as_us() >= budget.window_start.as_us() + interval_us {
            *budget = FetchBudget { window_start: now, answered: 0 };
        }
        budget
    }
}
