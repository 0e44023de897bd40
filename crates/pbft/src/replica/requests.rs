//! Client requests at a replica (TOCS 2002 §4.1, §5.1): exactly-once filtering
//! by timestamp, the primary's batching, large requests named by digest, and
//! read-only requests.
//!
//! Bounds: the primary's queue holds at most `max_request_queue` requests and at
//! most one per client (a newer request from the same client replaces none: a
//! correct client has one outstanding); `known` holds at most
//! `max_known_requests` bodies and one per client.

use bytes::Bytes;

use super::log::BatchRequest;
use super::Replica;
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
        // A batch may wait for this body even if the request is otherwise old news.
        self.fill_missing_body(&req, &raw, true, out);
        let last = self.last_timestamp(req.client);
        if req.timestamp < last {
            return self.metrics.drop(DropReason::StaleRequest);
        }
        if req.timestamp == last && !self.bug_execute_twice() {
            return self.resend_reply(&req, out);
        }
        let new = !self.known.contains_key(&req.digest());
        self.remember_request(&req, &raw);
        if !self.view_active {
            return;
        }
        if self.is_primary() {
            self.enqueue(req, raw);
            self.try_send_batches(now, out);
        } else if self.known.contains_key(&req.digest()) {
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
    /// pre-prepare may name by digest.
    pub(super) fn remember_request(&mut self, req: &Request, raw: &Bytes) {
        let digest = req.digest();
        if self.known.contains_key(&digest) {
            return;
        }
        // One body per client: a newer request replaces the older one.
        if let Some(old) = self.known_by_client.get(&req.client).copied() {
            if self.known.get(&old).is_some_and(|(r, _)| r.timestamp > req.timestamp) {
                return self.metrics.drop(DropReason::StaleRequest);
            }
            self.known.remove(&old);
        }
        if self.known.len() >= self.cfg.max_known_requests {
            return self.metrics.drop(DropReason::QueueFull);
        }
        self.known.insert(digest, (req.clone(), raw.clone()));
        self.known_by_client.insert(req.client, digest);
    }

    /// Forgets a body once its request executed.
    pub(super) fn forget_request(&mut self, req: &Request, digest: &Digest) {
        if self.known.remove(digest).is_some() && self.known_by_client.get(&req.client) == Some(digest) {
            self.known_by_client.remove(&req.client);
        }
    }

    /// Fills `req` into every batch entry that names it and lacks a body (or
    /// holds one this replica could not authenticate). `authenticated` says
    /// whether this replica checked the client's MAC on it; a batch with an
    /// unauthenticated body proceeds only once f+1 replicas vouch for it (see
    /// `normal_case.rs`).
    pub(super) fn fill_missing_body(&mut self, req: &Request, raw: &Bytes, authenticated: bool, out: &mut Outbox) {
        let digest = req.digest();
        let waiting = self.log.awaiting_body(digest);
        for seq in waiting.iter().copied() {
            // Fill what is missing, and replace a body that failed our MAC check
            // (a forged copy may arrive first) with one that passes.
            if let Some(slot) = self.log.get_mut(seq) {
                slot.fill_request(digest, req, raw, authenticated);
            }
            if authenticated {
                self.log.body_arrived(digest, seq);
            }
        }
        for seq in waiting {
            self.advance_slot(seq, out);
        }
    }

    pub(super) fn enqueue(&mut self, req: Request, raw: Bytes) {
        if self.assigned.get(&req.client).is_some_and(|t| *t >= req.timestamp) && !self.bug_execute_twice() {
            // Already queued or in a batch: a retransmission.
            return self.metrics.drop(DropReason::Duplicate);
        }
        if !self.bug_unbounded_queue() {
            // At most one queued request per client: a newer one replaces it (a
            // correct client never has two outstanding).
            if let Some(slot) = self.request_queue.iter_mut().find(|(r, _)| r.client == req.client) {
                self.assigned.insert(req.client, req.timestamp);
                *slot = (req, raw);
                return self.metrics.drop(DropReason::Duplicate);
            }
            if self.request_queue.len() >= self.cfg.max_request_queue {
                return self.metrics.drop(DropReason::QueueFull);
            }
        }
        self.assigned.insert(req.client, req.timestamp);
        self.request_queue.push_back((req, raw));
    }

    pub(super) fn bug_unbounded_queue(&self) -> bool {
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.unbounded_request_queue {
            return true;
        }
        false
    }

    /// The primary packs queued requests into batches while its window of
    /// outstanding batches has room and the high water mark allows.
    pub(super) fn try_send_batches(&mut self, now: Instant, out: &mut Outbox) {
        if !self.is_primary() || !self.view_active {
            return;
        }
        while !self.request_queue.is_empty()
            && self.next_seq.0 - 1 - self.last_executed.0 < self.cfg.max_outstanding_batches
            && self.next_seq <= self.high_water_mark()
        {
            let mut entries = Vec::new();
            let mut inline = Vec::new();
            let mut bytes = 0usize;
            while let Some((req, raw)) = self.request_queue.front() {
                if entries.len() >= self.cfg.max_batch_requests {
                    break;
                }
                let large = req.op.len() > self.cfg.large_request_threshold;
                let size = if large { 33 } else { raw.len() + 5 };
                if !entries.is_empty() && bytes + size > self.cfg.max_batch_bytes {
                    break;
                }
                let (req, raw) = self.request_queue.pop_front().expect("front exists");
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
        if self.is_primary() && !self.request_queue.is_empty() {
            self.try_send_batches(self.now, out);
        }
    }
}
