//! Executing batches (TOCS 2002 §4.2, §5.1): in sequence order, tentatively once
//! prepared and all earlier batches committed, or for good once committed; and
//! replies, from the replicated reply table (`machine.rs`) that gives
//! exactly-once semantics.

use bytes::Bytes;

use super::Replica;
use crate::effects::{Dest, Effect, Execution, Outbox};
use crate::metrics::DropReason;
use crate::service::Service;
use crate::types::{ClientId, Digest, SeqNo, Timestamp};
use crate::wire::{Message, Reply, ReplyBody, Request};
use crate::auth::Audience;

impl<S: Service> Replica<S> {
    /// The last timestamp executed for `client` (0 if none). `client` must
    /// be one of the configuration's (callers check `is_client`).
    pub(super) fn last_timestamp(&self, client: ClientId) -> Timestamp {
        self.machine.last_timestamp(client)
    }

    /// Clients with a cached reply (a request executed for them). Reads one
    /// slot header per configured client: for metrics, not the hot path.
    pub fn reply_cache_entries(&self) -> usize {
        self.machine.reply_cache_entries()
    }

    /// Executes every batch that can be: the next one in sequence order, once it is
    /// committed, or prepared while nothing executed is still tentative.
    pub(super) fn try_execute(&mut self, out: &mut Outbox) {
        // Nothing executes while the state is being replaced.
        if self.transfer.is_some() || self.executed.awaits_trusted_state() {
            return;
        }
        let executed_before = self.metrics.requests_executed;
        loop {
            if let Some(t) = self.executed.tentative() {
                if self.checkpoint_proves_commit(t) {
                    self.log.mark_committed(t);
                }
                if !self.log.get(t).is_some_and(|s| s.committed()) {
                    break;
                }
                self.executed.commit_tentative();
                self.machine.state_mut().clear_undo_mark();
                out.push(Effect::CommittedTentative { seq: t });
                self.after_commit(t, out);
                continue;
            }
            let n = self.executed.next();
            let Some(slot) = self.log.get(n) else { break };
            let Some(batch) = slot.batch() else { break };
            if !batch.complete() {
                break;
            }
            if slot.committed() {
                self.execute_batch(n, false, out);
                self.after_commit(n, out);
            } else if (slot.prepared() || self.bug_execute_before_prepared())
                && self.cfg.tentative_execution
                && self.view_active()
            {
                // A view change may undo this batch: keep what it overwrites.
                self.machine.state_mut().set_undo_mark();
                self.execute_batch(n, true, out);
            } else {
                break;
            }
        }
        if self.metrics.requests_executed != executed_before {
            self.view_change_timer_after_progress();
        }
        self.try_send_batches_after_execution(out);
    }

    /// What follows a batch's commit: a checkpoint every K, and the read-only
    /// requests that waited for the tentative state to commit.
    fn after_commit(&mut self, n: SeqNo, out: &mut Outbox) {
        if n.0.is_multiple_of(self.cfg.checkpoint_interval) {
            self.take_checkpoint(n, out);
        }
        for req in self.requests.take_read_only() {
            self.execute_read_only(&req, out);
        }
    }

    fn execute_batch(&mut self, n: SeqNo, tentative: bool, out: &mut Outbox) {
        let batch = self.log.batch(n).expect("caller checked the batch");
        let nondet = batch.nondet_time_us();
        let digest = batch.digest();
        // Each entry's digest is its request's (checked when the body was filled).
        let requests: Vec<(Request, Digest)> = batch.requests().iter().filter_map(|e| e.body.as_ref().map(|b| (b.0.clone(), e.digest))).collect();
        let requests_empty = batch.requests().is_empty();
        let mut executed = Vec::with_capacity(requests.len());
        for (req, req_digest) in requests {
            // A read-only request has no place in a batch: all correct replicas skip it.
            if req.read_only || !self.cfg.is_client(req.client) {
                continue;
            }
            if req.timestamp <= self.last_timestamp(req.client) && !self.bug_execute_twice() {
                continue;
            }
            let mut result = self.machine.execute(req.client, nondet, &req.op);
            if result.len() > self.cfg.max_reply_bytes {
                // Deterministic at every replica: an oversized result becomes empty.
                self.metrics.drop(DropReason::Invalid);
                result.clear();
            }
            self.machine.store_reply(req.client, req.timestamp, &result);
            self.requests.forget(&req, &req_digest);
            self.send_reply(&req, Bytes::from(result), tentative, out);
            executed.push((req.client, req.timestamp));
        }
        self.metrics.requests_executed += executed.len() as u64;
        self.metrics.batches_executed += 1;
        self.metrics.batch_requests_total += executed.len() as u64;
        // A null batch (chosen by a view change) carries no value of its own.
        self.executed.executed(n, (!requests_empty).then_some(nondet), tentative);
        out.push(Effect::Executed(Execution { seq: n, batch: digest, tentative, requests: executed }));
    }

    fn bug_execute_before_prepared(&self) -> bool {
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.execute_before_prepared {
            return true;
        }
        false
    }

    pub(super) fn bug_execute_twice(&self) -> bool {
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.execute_twice {
            return true;
        }
        false
    }

    /// Sends the reply to `req`: the full result from the designated replier (or
    /// from everyone when the client asked for that, or when the result is no
    /// larger than [`crate::Config::digest_reply_threshold`]), its digest from
    /// the others.
    fn send_reply(&self, req: &Request, result: Bytes, tentative: bool, out: &mut Outbox) {
        let full = result.len() <= self.cfg.digest_reply_threshold || req.replier.is_none_or(|r| r == self.id);
        let body = if full { ReplyBody::Full(result) } else { ReplyBody::Digest(Digest::of(&result)) };
        let msg = Message::Reply(Reply { view: self.view(), timestamp: req.timestamp, client: req.client, tentative, body });
        let bytes = self.keys.seal(&msg, Audience::Client(req.client));
        out.send(Dest::Client(req.client), bytes);
    }

    /// Resends the cached reply to a retransmitted request that already executed.
    pub(super) fn resend_reply(&mut self, req: &Request, out: &mut Outbox) {
        let Some(result) = self.machine.cached_result(req.client) else { return };
        // Still tentative if the batch that executed it has not committed.
        let tentative = self.executed.tentative().is_some();
        self.metrics.replies_resent += 1;
        self.send_reply(req, result, tentative, out);
    }

    /// Executes a read-only request now, or queues it until the tentatively
    /// executed batch commits (a read must not see uncommitted state).
    pub(super) fn on_read_only(&mut self, req: Request, out: &mut Outbox) {
        if self.executed.tentative().is_some() || self.transfer.is_some() {
            if let Err(reason) = self.requests.defer_read_only(req) {
                self.metrics.drop(reason);
            }
            return;
        }
        self.execute_read_only(&req, out);
    }

    fn execute_read_only(&mut self, req: &Request, out: &mut Outbox) {
        match self.machine.execute_read_only(req.client, &req.op) {
            Some(result) if result.len() <= self.cfg.max_reply_bytes => {
                self.metrics.read_only_executed += 1;
                // Read-only replies need 2f+1 matching: they travel as tentative.
                self.send_reply(req, Bytes::from(result), true, out);
            }
            _ => self.metrics.drop(DropReason::Invalid),
        }
    }
}
