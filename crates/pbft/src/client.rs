//! The client side of the protocol (TOCS 2002 §4.1, §5.1).
//!
//! A client has one request outstanding at a time. It sends a read-write request
//! to the primary it believes in (a large one, or a read-only one, to every
//! replica), names a designated replier for the full result, and waits for a
//! *reply certificate*: replies with the same result from a quorum of distinct
//! replicas. On a timeout it retransmits to every replica and asks all of them for
//! the full result; a read-only request whose replies do not agree, or do not
//! come, is retried as read-write.
//!
//! The certificate is 2f+1 matching replies. The papers accept f+1 matching
//! replies from replicas that executed a *committed* batch; with the read-only
//! optimisation that is not enough for linearizability: f+1 committed replies may
//! come from one correct replica and f faulty ones, and a later read can then
//! gather 2f+1 stale answers from the correct replicas that have not executed the
//! write yet plus the faulty ones. With 2f+1 matching replies for writes, any
//! 2f+1 replicas answering a later read include a correct one that executed the
//! write. When `read_only_optimization` is off, f+1 committed replies suffice.

use std::collections::{BTreeMap, BTreeSet};

use crate::tally::Tally;
use crate::timers::Timers;

use bytes::Bytes;

use crate::auth::{Audience, KeyTable};
use crate::config::Config;
use crate::effects::{ClientEffect, ClientOutbox, Timer};
use crate::metrics::{DropReason, Metrics};
use crate::types::{ClientId, Digest, Instant, NodeId, ReplicaId, Timestamp, View};
use crate::wire::{Message, Reply, ReplyBody, Request};

/// Why a request could not be submitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("a request is already outstanding")]
    Busy,
    #[error("operation of {0} bytes exceeds the limit of {1}")]
    TooLarge(usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct ReplyVote {
    view: View,
    digest: Digest,
    tentative: bool,
}

#[derive(Debug)]
struct Pending {
    timestamp: Timestamp,
    op: Bytes,
    /// Still being tried as read-only.
    read_only: bool,
    /// Was submitted as read-only (reported in the completion).
    submitted_read_only: bool,
    replies: Tally<ReplyVote>,
    results: BTreeMap<Digest, Bytes>,
    /// Retransmissions so far (the timeout doubles, up to a cap).
    retries: u32,
    /// Every replica was asked for the full result (the designated replier
    /// did not send it).
    asked_all: bool,
}

/// A PBFT client: a deterministic state machine like the replica.
pub struct Client {
    cfg: Config,
    id: ClientId,
    keys: KeyTable,
    view: View,
    next_timestamp: u64,
    pending: Option<Pending>,
    metrics: Metrics,
    /// Its retransmission timer: the host asks when to wake it ([`Client::poll_timeout`]).
    timers: Timers,
}

impl Client {
    /// A client whose timestamps start above `timestamp_base`. A client that
    /// restarts must pass a base above every timestamp it used before (the real
    /// runtime uses its clock in microseconds), or replicas drop its requests as
    /// stale.
    pub fn new(cfg: Config, id: ClientId, keys: KeyTable, timestamp_base: u64) -> Client {
        Client { cfg, id, keys, view: View(0), next_timestamp: timestamp_base + 1, pending: None, metrics: Metrics::default(), timers: Timers::default() }
    }

    pub fn id(&self) -> ClientId {
        self.id
    }
    /// The view this client believes current (learned from replies).
    pub fn view(&self) -> View {
        self.view
    }
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    pub fn is_busy(&self) -> bool {
        self.pending.is_some()
    }
    /// The outstanding request's timestamp: the only one a reply can match.
    pub fn pending_timestamp(&self) -> Option<Timestamp> {
        self.pending.as_ref().map(|p| p.timestamp)
    }

    /// Submits an operation. Completion arrives as [`ClientEffect::Completed`].
    pub fn submit(&mut self, now: Instant, op: Bytes, read_only: bool, out: &mut ClientOutbox) -> Result<Timestamp, ClientError> {
        if self.pending.is_some() {
            return Err(ClientError::Busy);
        }
        if op.len() > self.cfg.max_op_bytes {
            return Err(ClientError::TooLarge(op.len(), self.cfg.max_op_bytes));
        }
        let timestamp = Timestamp(self.next_timestamp);
        self.next_timestamp += 1;
        let read_only = read_only && self.cfg.read_only_optimization;
        self.pending = Some(Pending {
            timestamp,
            op,
            read_only,
            submitted_read_only: read_only,
            replies: Tally::new(),
            results: BTreeMap::new(),
            retries: 0,
            asked_all: false,
        });
        self.transmit(now, false, out);
        Ok(timestamp)
    }

    /// Sends (or resends) the outstanding request and arms the retransmission timer.
    fn transmit(&mut self, now: Instant, retransmission: bool, out: &mut ClientOutbox) {
        let Some(p) = &self.pending else { return };
        let n = self.cfg.n();
        let large = p.op.len() > self.cfg.large_request_threshold;
        let replier = if retransmission { None } else { Some(ReplicaId((p.timestamp.0 % n as u64) as u16)) };
        let req = Request { client: self.id, timestamp: p.timestamp, read_only: p.read_only, replier, op: p.op.clone() };
        let bytes = self.keys.seal(&Message::Request(req), Audience::Replicas);
        if retransmission || large || p.read_only {
            for i in 0..n {
                out.push(ClientEffect::Send { to: ReplicaId(i as u16), bytes: bytes.clone() });
            }
        } else {
            out.push(ClientEffect::Send { to: self.view.primary(n), bytes });
        }
        let backoff = 1u64 << p.retries.min(4);
        self.timers.set(Timer::ClientRetransmit, now.plus_us(self.cfg.client_retransmit_us * backoff));
    }

    /// When the host should next call [`Client::handle_timeout`], if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Fires the retransmission timer if it is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut ClientOutbox) {
        while let Some(timer) = self.timers.pop_due(now) {
            if timer == Timer::ClientRetransmit {
                self.retransmit(now, out);
            }
        }
    }

    fn retransmit(&mut self, now: Instant, out: &mut ClientOutbox) {
        let Some(p) = self.pending.as_mut() else { return };
        p.retries += 1;
        self.metrics.retransmitted += 1;
        if p.read_only {
            self.fall_back_to_read_write(now, out);
        } else {
            self.transmit(now, true, out);
        }
    }

    /// Retries a read-only request as an ordinary read-write one, under a fresh
    /// timestamp so that late read-only replies cannot mix with the new ones.
    fn fall_back_to_read_write(&mut self, now: Instant, out: &mut ClientOutbox) {
        let Some(p) = self.pending.as_mut() else { return };
        p.read_only = false;
        p.timestamp = Timestamp(self.next_timestamp);
        self.next_timestamp += 1;
        p.replies.clear();
        p.results.clear();
        self.transmit(now, false, out);
    }

    /// Handles a datagram from a replica.
    pub fn on_datagram(&mut self, now: Instant, bytes: Bytes, out: &mut ClientOutbox) {
        let verified = match self.keys.open(bytes, self.cfg.max_message_bytes) {
            Ok(v) => v,
            Err(e) => return self.metrics.drop(DropReason::from(&e)),
        };
        let NodeId::Replica(from) = verified.sender() else { return self.metrics.drop(DropReason::WrongSenderKind) };
        let Message::Reply(reply) = verified.into_message() else { return self.metrics.drop(DropReason::Unexpected) };
        self.on_reply(now, from, reply, out);
    }

    fn on_reply(&mut self, now: Instant, from: ReplicaId, reply: Reply, out: &mut ClientOutbox) {
        let Some(p) = self.pending.as_mut() else { return self.metrics.drop(DropReason::Unexpected) };
        if reply.client != self.id || reply.timestamp != p.timestamp || from.index() >= self.cfg.n() {
            return self.metrics.drop(DropReason::Unexpected);
        }
        let digest = match reply.body {
            ReplyBody::Full(result) => {
                let d = Digest::of(&result);
                p.results.insert(d, result);
                d
            }
            ReplyBody::Digest(d) => d,
        };
        // A later reply from the same replica replaces its earlier one (a
        // committed reply after a tentative one).
        p.replies.insert(from, ReplyVote { view: reply.view, digest, tentative: reply.tentative });
        self.check_certificate(now, out);
    }

    fn quorum_for_committed(&self) -> usize {
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.weak_reply_certificate {
            return self.cfg.f;
        }
        if self.cfg.read_only_optimization {
            self.cfg.quorum()
        } else {
            self.cfg.f + 1
        }
    }

    fn quorum_for_any(&self) -> usize {
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.weak_reply_certificate {
            return self.cfg.f;
        }
        self.cfg.quorum()
    }

    fn check_certificate(&mut self, now: Instant, out: &mut ClientOutbox) {
        let (any_quorum, committed_quorum) = (self.quorum_for_any(), self.quorum_for_committed());
        let Some(p) = self.pending.as_ref() else { return };
        // Per result: replies that match it, and those of them from a
        // committed (not tentative) execution of a read-write request.
        let results: BTreeSet<Digest> = p.replies.iter().map(|(_, v)| v.digest).collect();
        let matching = |d: &Digest| p.replies.count_where(|_, v| v.digest == *d);
        let committed = |d: &Digest| p.replies.count_where(|_, v| v.digest == *d && !v.tentative && !p.read_only);
        let certified = results.iter().find(|d| matching(d) >= any_quorum || committed(d) >= committed_quorum);
        if let Some(digest) = certified {
            let Some(result) = p.results.get(digest).cloned() else {
                // Certified, but the designated replier's full result is
                // missing (it may be down): ask everyone for it now rather
                // than wait for the retransmission timer.
                if !p.asked_all {
                    self.pending.as_mut().expect("pending checked above").asked_all = true;
                    self.metrics.retransmitted += 1;
                    self.transmit(now, true, out);
                }
                return;
            };
            self.learn_view();
            let p = self.pending.take().expect("pending checked above");
            self.timers.cancel(Timer::ClientRetransmit);
            out.push(ClientEffect::Completed { timestamp: p.timestamp, result, read_only: p.read_only && p.submitted_read_only });
            return;
        }
        // A read-only request that can no longer gather 2f+1 matching replies is
        // retried as read-write at once.
        if p.read_only {
            let best = results.iter().map(matching).max().unwrap_or(0);
            let silent = self.cfg.n() - p.replies.len();
            if best + silent < any_quorum {
                self.fall_back_to_read_write(now, out);
            }
        }
    }

    /// Adopts the highest view that f+1 replies agree is at least current, so that
    /// the next request goes to the right primary.
    fn learn_view(&mut self) {
        let Some(p) = &self.pending else { return };
        let views: Tally<View> = p.replies.iter().map(|(r, v)| (r, v.view)).collect();
        if let Some(v) = views.highest_reached_by(self.cfg.f + 1) {
            if v > self.view {
                self.view = v;
            }
        }
    }
}
