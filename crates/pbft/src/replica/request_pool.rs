//! The requests a replica holds outside the log (TOCS 2002 §4.1, §5.1): the
//! primary's queue of requests waiting to be batched, the highest timestamp
//! it ordered per client, the request bodies it received and checked (large
//! requests named by digest, requests clients retransmitted), and read-only
//! requests waiting for a tentative batch to commit.
//!
//! Invariants ([`RequestPool::check_invariants`]): every table is within its
//! configured bound; at most one queued request and one body per client, and
//! the per-client index names a body of that client. Requests are removed
//! only here, by [`RequestPool::forget`] once executed (by this replica, or
//! by a state transfer), and by a newer request of the same client.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::metrics::DropReason;
use crate::types::{ClientId, Digest, Timestamp};
use crate::wire::Request;

/// A request and its client envelope (the datagram, MAC included).
pub(super) type Body = (Request, Bytes);

/// The bounds of a pool, from the configuration.
#[derive(Clone, Copy, Debug)]
pub(super) struct PoolBounds {
    pub(super) queue: usize,
    pub(super) bodies: usize,
    pub(super) read_only: usize,
    /// The deliberate bug `unbounded_request_queue`: the queue ignores its bound.
    pub(super) unbounded_queue: bool,
}

/// Requests outside the log.
#[derive(Debug)]
pub(super) struct RequestPool {
    bounds: PoolBounds,
    /// The primary's requests waiting to be batched.
    queue: VecDeque<Body>,
    /// The primary's highest timestamp queued or batched, per client.
    ordered_up_to: BTreeMap<ClientId, Timestamp>,
    /// Request bodies whose client MAC checked, by digest.
    bodies: BTreeMap<Digest, Body>,
    /// The body held for each client (at most one).
    body_of_client: BTreeMap<ClientId, Digest>,
    /// Read-only requests waiting for the tentative batch to commit.
    read_only: VecDeque<Request>,
}

impl RequestPool {
    pub(super) fn new(bounds: PoolBounds) -> RequestPool {
        RequestPool {
            bounds,
            queue: VecDeque::new(),
            ordered_up_to: BTreeMap::new(),
            bodies: BTreeMap::new(),
            body_of_client: BTreeMap::new(),
            read_only: VecDeque::new(),
        }
    }

    // ----- bodies -----

    pub(super) fn body(&self, digest: &Digest) -> Option<&Body> {
        self.bodies.get(digest)
    }
    pub(super) fn has_body(&self, digest: &Digest) -> bool {
        self.bodies.contains_key(digest)
    }
    pub(super) fn has_bodies(&self) -> bool {
        !self.bodies.is_empty()
    }
    pub(super) fn bodies_len(&self) -> usize {
        self.bodies.len()
    }
    pub(super) fn bodies(&self) -> impl Iterator<Item = (&Digest, &Body)> {
        self.bodies.iter()
    }

    /// Keeps a request body (checked against its client's MAC) that a later
    /// pre-prepare may name by digest: one per client, a newer request
    /// replacing an older one. `digest` is the request's.
    pub(super) fn remember(&mut self, req: &Request, digest: Digest, raw: &Bytes) -> Result<(), DropReason> {
        if self.bodies.contains_key(&digest) {
            return Ok(());
        }
        if let Some(old) = self.body_of_client.get(&req.client).copied() {
            if self.bodies.get(&old).is_some_and(|(r, _)| r.timestamp > req.timestamp) {
                return Err(DropReason::StaleRequest);
            }
            self.bodies.remove(&old);
        }
        if self.bodies.len() >= self.bounds.bodies {
            return Err(DropReason::QueueFull);
        }
        self.bodies.insert(digest, (req.clone(), raw.clone()));
        self.body_of_client.insert(req.client, digest);
        Ok(())
    }

    /// Forgets the body of `req` (digest `digest`) once it executed.
    pub(super) fn forget(&mut self, req: &Request, digest: &Digest) {
        if self.bodies.remove(digest).is_some() && self.body_of_client.get(&req.client) == Some(digest) {
            self.body_of_client.remove(&req.client);
        }
    }


    // ----- the primary's queue -----

    pub(super) fn queue_len(&self) -> usize {
        self.queue.len()
    }
    pub(super) fn queue_is_empty(&self) -> bool {
        self.queue.is_empty()
    }
    /// The request at the head of the queue.
    pub(super) fn front(&self) -> Option<&Body> {
        self.queue.front()
    }
    pub(super) fn pop_front(&mut self) -> Option<Body> {
        self.queue.pop_front()
    }

    /// Whether the primary already queued or batched `client`'s request at
    /// `timestamp` or a later one.
    pub(super) fn ordered(&self, client: ClientId, timestamp: Timestamp) -> bool {
        self.ordered_up_to.get(&client).is_some_and(|t| *t >= timestamp)
    }

    /// Notes that the primary holds (in a batch) `client`'s request at `timestamp`.
    pub(super) fn note_ordered(&mut self, client: ClientId, timestamp: Timestamp) {
        let t = self.ordered_up_to.entry(client).or_insert(timestamp);
        *t = (*t).max(timestamp);
    }

    /// Queues a request for the primary's next batch. A newer request of a
    /// client replaces its queued one (a correct client has one outstanding).
    pub(super) fn enqueue(&mut self, req: Request, raw: Bytes) -> Result<(), DropReason> {
        if !self.bounds.unbounded_queue {
            if let Some(slot) = self.queue.iter_mut().find(|(r, _)| r.client == req.client) {
                self.ordered_up_to.insert(req.client, req.timestamp);
                *slot = (req, raw);
                return Err(DropReason::Duplicate);
            }
            if self.queue.len() >= self.bounds.queue {
                return Err(DropReason::QueueFull);
            }
        }
        self.ordered_up_to.insert(req.client, req.timestamp);
        self.queue.push_back((req, raw));
        Ok(())
    }

    /// Leaving a view: the queue empties (its requests stay known as bodies,
    /// for whoever proposes them) and nothing counts as ordered any more.
    pub(super) fn leave_view(&mut self) -> Vec<Body> {
        self.ordered_up_to.clear();
        self.queue.drain(..).collect()
    }

    // ----- read-only requests -----

    pub(super) fn read_only_len(&self) -> usize {
        self.read_only.len()
    }
    /// Queues a read-only request until the tentative batch commits.
    pub(super) fn defer_read_only(&mut self, req: Request) -> Result<(), DropReason> {
        if self.read_only.len() >= self.bounds.read_only {
            return Err(DropReason::QueueFull);
        }
        self.read_only.push_back(req);
        Ok(())
    }
    pub(super) fn take_read_only(&mut self) -> Vec<Request> {
        self.read_only.drain(..).collect()
    }

    /// Checks the pool's invariants (module doc).
    pub(super) fn check_invariants(&self) -> Result<(), String> {
        if !self.bounds.unbounded_queue {
            if self.queue.len() > self.bounds.queue {
                return Err(format!("{} queued requests, above the bound {}", self.queue.len(), self.bounds.queue));
            }
            let mut clients = std::collections::BTreeSet::new();
            if let Some((r, _)) = self.queue.iter().find(|(r, _)| !clients.insert(r.client)) {
                return Err(format!("client {} has two queued requests", r.client.0));
            }
        }
        if self.bodies.len() > self.bounds.bodies {
            return Err(format!("{} request bodies, above the bound {}", self.bodies.len(), self.bounds.bodies));
        }
        for (client, digest) in &self.body_of_client {
            if self.bodies.get(digest).is_none_or(|(r, _)| r.client != *client) {
                return Err(format!("client {}'s body {digest:?} is missing or another client's", client.0));
            }
        }
        if self.read_only.len() > self.bounds.read_only {
            return Err(format!("{} queued read-only requests, above the bound {}", self.read_only.len(), self.bounds.read_only));
        }
        Ok(())
    }
}
