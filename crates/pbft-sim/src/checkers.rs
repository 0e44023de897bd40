//! The checkers. Each watches every run and records a violation with enough
//! detail to debug it from the seed:
//!
//! - agreement: correct replicas commit the same batch at each sequence number
//!   (a tentative execution may differ only if a view change undoes it);
//!   every batch a correct replica commits is prepared at f+1 correct replicas
//!   (the committed-local invariant the safety proof rests on), and every batch
//!   it executes tentatively is prepared at that replica;
//! - exactly-once: no correct replica executes a request twice;
//! - bounds: no replica's log, queues or tables grow past the configuration;
//! - linearizability: the correct clients' histories (`pbft_kv::linearizability`);
//! - liveness: every correct client's operations complete after the network heals
//!   (checked by the world when the run ends).

use std::collections::BTreeMap;

use pbft::{ClientId, Digest, Execution, Replica, SeqNo, Timestamp};
use pbft_kv::KvService;

use crate::scenario::Scenario;
use crate::world::ReplicaNode;

pub use pbft_kv::linearizability::OpRecord;

/// A tentative execution: its sequence number and the requests it executed.
type TentativeRecord = (SeqNo, Vec<(ClientId, Timestamp)>);

pub struct Checkers {
    f: usize,
    /// The batch digest committed at each sequence number, by the first correct
    /// replica that committed it.
    decided: BTreeMap<SeqNo, (usize, Digest)>,
    /// Per replica: its tentative execution not yet committed, with its requests.
    tentative: Vec<Option<TentativeRecord>>,
    /// Per replica: what it executed at each sequence number (for the commit invariant).
    executed: Vec<BTreeMap<SeqNo, Digest>>,
    /// Per replica: the requests it executed, each with where.
    requests: Vec<BTreeMap<(ClientId, Timestamp), SeqNo>>,
    pub history: Vec<OpRecord>,
    pub violations: Vec<String>,
}

impl Checkers {
    pub fn new(s: &Scenario) -> Checkers {
        Checkers {
            f: s.f,
            decided: BTreeMap::new(),
            tentative: vec![None; s.n()],
            executed: vec![BTreeMap::new(); s.n()],
            requests: vec![BTreeMap::new(); s.n()],
            history: Vec::new(),
            violations: Vec::new(),
        }
    }

    pub fn violate(&mut self, v: String) {
        if self.violations.len() < 20 {
            self.violations.push(v);
        }
    }

    fn decide(&mut self, r: usize, seq: SeqNo, batch: Digest) {
        match self.decided.get(&seq) {
            Some((other, d)) if *d != batch => self.violate(format!(
                "agreement: replica {r} committed batch {batch:?} at seq {} but replica {other} committed {d:?}",
                seq.0
            )),
            Some(_) => {}
            None => {
                self.decided.insert(seq, (r, batch));
            }
        }
    }

    /// Replica `r` restarted with its state wiped: a new incarnation, which
    /// catches up by state transfer and may execute again what it had.
    pub fn on_wiped(&mut self, r: usize) {
        self.executed[r].clear();
        self.requests[r].clear();
        self.tentative[r] = None;
    }

    /// Replica `r` restarted from its disk at checkpoint `h`: its state is
    /// that of `h`, and it executes again what it had executed after it.
    pub fn on_restored(&mut self, r: usize, h: SeqNo) {
        self.executed[r].retain(|seq, _| *seq <= h);
        self.requests[r].retain(|_, seq| *seq <= h);
        self.tentative[r] = None;
    }

    /// A view change undid replica `r`'s tentative execution at `seq`.
    pub fn on_rolled_back(&mut self, r: usize, seq: SeqNo) {
        match self.tentative[r].take() {
            Some((t, requests)) if t == seq => {
                self.executed[r].remove(&seq);
                for req in requests {
                    self.requests[r].remove(&req);
                }
            }
            other => {
                self.violate(format!("rollback: replica {r} undid seq {} but its tentative execution was {other:?}", seq.0))
            }
        }
    }

    pub fn on_executed(&mut self, r: usize, e: &Execution, replicas: &[ReplicaNode]) {
        if e.tentative {
            self.tentative[r] = Some((e.seq, e.requests.clone()));
        } else {
            self.decide(r, e.seq, e.batch);
        }
        self.executed[r].insert(e.seq, e.batch);
        for req in &e.requests {
            if self.requests[r].insert(*req, e.seq).is_some() {
                self.violate(format!("exactly-once: replica {r} executed request {:?} of client {} twice", req.1, req.0 .0));
            }
        }
        if e.tentative {
            // Tentative execution needs a prepared certificate at the replica (or
            // the batch committed and was garbage-collected in the same step).
            let replica = &replicas[r].replica;
            if !replica.is_prepared(e.seq, &e.batch) && replica.low_water_mark() < e.seq {
                self.violate(format!(
                    "agreement: replica {r} executed seq {} ({:?}) tentatively before it was prepared",
                    e.seq.0, e.batch
                ));
            }
        } else {
            self.check_committed(r, e.seq, e.batch, replicas);
        }
    }

    pub fn on_committed_tentative(&mut self, r: usize, seq: SeqNo, replicas: &[ReplicaNode]) {
        self.tentative[r] = None;
        if let Some(d) = self.executed[r].get(&seq).copied() {
            self.decide(r, seq, d);
            self.check_committed(r, seq, d, replicas);
        }
    }

    /// committed-local at a correct replica implies prepared at f+1 correct ones.
    fn check_committed(&mut self, r: usize, seq: SeqNo, digest: Digest, replicas: &[ReplicaNode]) {
        let prepared = replicas
            .iter()
            .enumerate()
            .filter(|(i, node)| {
                node.byz.is_none()
                    && (node.replica.is_prepared(seq, &digest) || self.executed[*i].get(&seq) == Some(&digest))
            })
            .count();
        if prepared < self.f + 1 {
            self.violate(format!(
                "agreement: replica {r} committed seq {} ({digest:?}) while only {prepared} correct replicas had prepared it (need f+1 = {})",
                seq.0,
                self.f + 1
            ));
        }
    }

    /// Every bound of the configuration holds at replica `r`.
    pub fn check_bounds(&mut self, r: usize, replica: &Replica<KvService>) {
        let cfg = replica.config();
        let mut check = |what: &str, value: usize, bound: usize| {
            if value > bound {
                self.violate(format!("bounds: replica {r} {what} = {value} exceeds its bound {bound}"));
            }
        };
        check("log entries", replica.log_len(), cfg.log_window as usize);
        check("request queue", replica.request_queue_len(), cfg.max_request_queue);
        check("known requests", replica.known_requests_len(), cfg.max_known_requests);
        check("read-only queue", replica.read_only_queue_len(), cfg.max_read_only_queue);
        check("batch entries awaiting bodies", replica.awaiting_bodies_len(), cfg.log_window as usize * cfg.max_batch_requests);
        check("checkpoint records", replica.checkpoint_records(), (cfg.log_window / cfg.checkpoint_interval) as usize + 1);
        if let Some((lo, hi)) = replica.log_bounds() {
            let h = replica.low_water_mark().0;
            if lo.0 <= h || hi.0 > h + cfg.log_window {
                self.violate(format!("bounds: replica {r} log spans {}..={} outside the water marks ({h}, {}]", lo.0, hi.0, h + cfg.log_window));
            }
        }
    }

    pub fn check_linearizability(&mut self) {
        if let Err(e) = pbft_kv::linearizability::check(&self.history) {
            self.violate(format!("linearizability: {e}"));
        }
    }
}
