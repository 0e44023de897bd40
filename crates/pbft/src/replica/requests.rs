//! Client requests at a replica (TOCS 2002 §4.1, §5.1): exactly-once filtering
//! by timestamp, the primary's batching, large requests named by digest, and
//! read-only requests.
//!
//! The requests themselves are kept by the request pool (`request_pool.rs`),
//! which bounds them.

use bytes::Bytes;

use super::log::BatchRequest;
use super::Replica;
use crate::auth::Vouched;
use crate::effects::Outbox;
use crate::metrics::DropReason;
use crate::service::Service;
use crate::types::{Digest, Instant};
use crate::wire::{BatchEntry, Request};

impl<S: Service> Replica<S> {
    pub(super) fn on_request(&mut self, now: Instant, req: Request, raw: Bytes, out: &mut Outbox) {
        if req.op.len() > self.cfg.max_op_bytes || !self.cfg.is_client(req.client) {
            return self.metrics.drop(DropReason::Invalid);
        }
        if req.read_only {
            return self.on_read_only(req, out);
        }
        // Hashed once here, for every use below.
        let digest = req.digest();
        // A batch may wait for this body even if the request is otherwise old news.
        self.fill_missing_body(&req, digest, &raw, true, out);
        let last = self.last_timestamp(req.client);
        if req.timestamp < last {
            return self.metrics.drop(DropReason::StaleRequest);
        }
        if req.timestamp == last && !self.bug_execute_twice() {
            return self.resend_reply(&req, out);
        }
        let new = !self.requests.has_body(&digest);
        self.remember_request(&req, digest, &raw);
        if !self.view_active() {
            return;
        }
        if self.is_primary() {
            self.enqueue(req, raw);
            self.try_send_batches(now, out);
        } else if self.requests.has_body(&digest) {
            // A backup that gets a request (a client retransmitting to all)
            // passes it to the primary, whose MAC is in the authenticator, and
            // watches the primary: if it does not execute in time, the view
            // changes. Large requests already went to every replica.
            if new && req.op.len() <= self.cfg.large_request_threshold {
                out.send(crate::effects::Dest::Replica(self.primary()), raw);
            }
            self.start_view_change_timer();
        }
    }

    /// Keeps a request body (checked against its client's MAC) that a later
    /// pre-prepare may name by digest (`digest`, the request's).
    pub(super) fn remember_request(&mut self, req: &Request, digest: Digest, raw: &Bytes) {
        if let Err(reason) = self.requests.remember(req, digest, raw) {
            self.metrics.drop(reason);
        }
    }

    /// Fills `req` into every batch entry that names it and lacks a body (or
    /// holds one this replica could not authenticate). `authenticated` says
    /// whether this replica checked the client's MAC on it; a batch with an
    /// unauthenticated body proceeds only once f+1 replicas vouch for it (see
    /// `normal_case.rs`).
    fn fill_missing_body(&mut self, req: &Request, digest: Digest, raw: &Bytes, authenticated: bool, out: &mut Outbox) {
        let waiting = self.log.awaiting_body(digest);
        for seq in waiting.iter().copied() {
            // Fill what is missing, and replace a body that failed our MAC check
            // (a forged copy may arrive first) with one that passes.
            if self.log.get(seq).is_some() {
                self.log.fill_request(seq, digest, req, raw, authenticated);
            }
            if authenticated {
                self.log.body_arrived(digest, seq);
            }
        }
        for seq in waiting {
            self.advance_slot(seq, out);
        }
    }

    /// A request body this replica could not authenticate, which a batch
    /// names by digest: it fills the batch, which then proceeds only once
    /// f+1 replicas vouch for it.
    pub(super) fn fill_vouched_body(&mut self, body: Vouched<Request>, out: &mut Outbox) {
        let (req, raw, digest) = body.into_parts();
        self.fill_missing_body(&req, digest, &raw, false, out);
    }

    pub(super) fn enqueue(&mut self, req: Request, raw: Bytes) {
        if self.requests.ordered(req.client, req.timestamp) && !self.bug_execute_twice() {
            // Already queued or in a batch: a retransmission.
            return self.metrics.drop(DropReason::Duplicate);
        }
        if let Err(reason) = self.requests.enqueue(req, raw) {
            self.metrics.drop(reason);
        }
    }

    /// The primary packs queued requests into batches while its window of
    /// outstanding batches has room and the high water mark allows.
    pub(super) fn try_send_batches(&mut self, now: Instant, out: &mut Outbox) {
        if !self.is_primary() || !self.view_active() {
            return;
        }
        while !self.requests.queue_is_empty()
            && self.proposer.next_seq().0 - 1 - self.executed.last().0 < self.cfg.max_outstanding_batches
            && self.proposer.next_seq() <= self.high_water_mark()
        {
            let mut entries = Vec::new();
            let mut inline = Vec::new();
            let mut bytes = 0usize;
            while let Some((req, raw)) = self.requests.front() {
                if entries.len() >= self.cfg.max_batch_requests {
                    break;
                }
                let large = req.op.len() > self.cfg.large_request_threshold;
                let size = if large { 33 } else { raw.len() + 5 };
                if !entries.is_empty() && bytes + size > self.cfg.max_batch_bytes {
                    break;
                }
                let Some((req, raw)) = self.requests.pop_front() else { break };
                if req.timestamp <= self.last_timestamp(req.client) && !self.bug_execute_twice() {
                    continue;
                }
                bytes += size;
                let digest = req.digest();
                inline.push(if large { BatchEntry::ByDigest(digest) } else { BatchEntry::Inline(raw.clone()) });
                entries.push(BatchRequest { digest, body: Some((req, raw)), authenticated: true });
            }
            if entries.is_empty() {
                continue;
            }
            self.send_pre_prepare(now, entries, inline, out);
        }
    }

    /// After execution or a stable checkpoint the window may have room again.
    pub(super) fn try_send_batches_after_execution(&mut self, out: &mut Outbox) {
        if self.is_primary() && !self.requests.queue_is_empty() {
            self.try_send_batches(self.timers.now(), out);
        }
    }
}
