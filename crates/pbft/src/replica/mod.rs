//! A PBFT replica (TOCS 2002 §4–5): a deterministic state machine.
//!
//! The host hands it datagrams ([`Replica::on_datagram`], which says what
//! became of each) and the time ([`Replica::handle_timeout`], when
//! [`Replica::poll_timeout`] asks); it returns effects in an [`Outbox`].
//!
//! The replica's state is held by parts, each a module with private fields
//! that keeps its own invariants:
//!
//! | part | owns |
//! |---|---|
//! | `log.rs` (`Log`) | the slots in (h, h + L], the low water mark h, the batch requests awaiting a body; the only place slots are removed |
//! | `checkpoints.rs` | own checkpoint digests and CHECKPOINTs, every replica's votes, each replica's latest announcement |
//! | `request_pool.rs` | the primary's queue, the timestamps it ordered, checked request bodies, read-only requests waiting |
//! | `machine.rs` (`Machine`) | the service, the paged state it lives in, the reply table; tells the service when its pages change under it |
//! | `executed.rs` | the last executed batch, the tentative one, their non-deterministic value |
//! | `proposer.rs` | the next sequence number and non-deterministic value a primary proposes |
//! | `view_change.rs` (`ViewChanges`) | the view, whether it is installed, VIEW-CHANGEs, acks, the installed NEW-VIEW |
//! | `state_transfer.rs` (`Transfer`) | the transfer under way |
//! | `peers.rs` | each peer's reported progress, the STATUS and FETCH answer budgets |
//!
//! `Replica` dispatches verified messages and timers to the protocol phases,
//! one per file, which decide and ask the parts to change:
//!
//! | file | what |
//! |---|---|
//! | `requests.rs` | client requests, the primary's batching, read-only requests |
//! | `normal_case.rs` | PRE-PREPARE, PREPARE, COMMIT |
//! | `execution.rs` | executing batches in order, tentative execution, replies |
//! | `checkpoint.rs` | CHECKPOINT messages, stable checkpoints, garbage collection |
//! | `status.rs` | STATUS messages and the retransmission they drive |
//! | `state_transfer.rs` | FETCH, META-DATA, DATA: catching up over the partition tree |
//! | `view_change.rs` | VIEW-CHANGE, VIEW-CHANGE-ACK, NEW-VIEW, the view-change timer |
//! | `new_view.rs` | installing a view: rollback, the chosen batches, the new primary |
//! | `invariants.rs` | every part's invariants and those across parts, checked after every input |
//!
//! Quorums are counted in one way, [`crate::tally::Tally`].

mod checkpoint;
mod checkpoints;
mod executed;
mod execution;
mod invariants;
pub use invariants::INVARIANTS_CHECKED;
mod log;
mod machine;
mod new_view;
mod normal_case;
mod peers;
mod proposer;
mod request_pool;
mod requests;
mod state_transfer;
mod status;
mod view_change;


use bytes::Bytes;

use crate::auth::{Audience, AuthError, KeyTable, Verified, Vouched};
use crate::config::{Config, ConfigError};
use crate::effects::{Dest, Outbox, Received, Timer};
use crate::metrics::{DropReason, Metrics};
use crate::service::Service;
use crate::state::{PagedState, StateError};
use crate::types::{Digest, Instant, NodeId, ReplicaId, SeqNo, View};

use checkpoints::Checkpoints;
use executed::Executed;
use log::Log;
use machine::Machine;
use peers::Peers;
use proposer::Proposer;
use request_pool::{PoolBounds, RequestPool};
use crate::wire::{self, Envelope, Message};

pub use machine::REPLY_HEADER_LEN;

/// Why a replica could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("replica id {0} is not in a cluster of {1}")]
    BadId(ReplicaId, usize),
    #[error("state: {0}")]
    State(#[from] StateError),
    #[error("the key table belongs to {0:?}, not to this replica")]
    WrongKeys(NodeId),
}

/// A replica's state as its host saved it at a stable checkpoint, read back at
/// restart (see [`Replica::restore`]).
#[derive(Clone, Debug)]
pub struct SavedState {
    /// The stable checkpoint the pages were saved at, and its digest.
    pub seq: SeqNo,
    pub digest: Digest,
    /// Every page that is not all zero, by index.
    pub pages: Vec<(u64, Box<crate::state::Page>)>,
}

/// What [`Replica::restore`] made of the saved state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restored {
    /// The pages hash to the saved checkpoint: the replica resumes from it.
    Intact { seq: SeqNo },
    /// They do not (a torn write, a corrupt page): the replica executes
    /// nothing until it fetches a certified checkpoint, and fetches only the
    /// pages that differ.
    Damaged,
}

/// A PBFT replica hosting service `S`.
pub struct Replica<S: Service> {
    cfg: Config,
    id: ReplicaId,
    keys: KeyTable,
    /// The service, its paged state and the reply table.
    machine: Machine<S>,
    /// The view, whether it is installed, and what was gathered to change views.
    view_changes: view_change::ViewChanges,
    /// The last batch executed, the tentative one, their non-deterministic value.
    executed: Executed,
    /// The next sequence number and non-deterministic value it would propose as primary.
    proposer: Proposer,
    /// The slots in (h, h + L], h the last stable checkpoint.
    log: Log,
    checkpoints: Checkpoints,
    /// Requests outside the log: the primary's queue, checked bodies, read-only requests waiting.
    requests: RequestPool,
    /// Each peer's reported progress, and the budgets for answering it.
    peers: Peers,
    /// The state transfer under way, if any.
    transfer: Option<state_transfer::Transfer>,
    metrics: Metrics,
    /// The time of the input being handled (an input like any other) and its
    /// timers: the host asks when to wake it ([`Replica::poll_timeout`]).
    timers: crate::timers::Timers,
    /// What the invariants compare from one input to the next.
    witness: invariants::Witness,
}

impl<S: Service> Replica<S> {
    /// A replica in view 0 with empty state. `keys` must belong to replica `id`.
    pub fn new(cfg: Config, id: ReplicaId, keys: KeyTable, service: S) -> Result<Self, ReplicaError> {
        cfg.validate()?;
        if !cfg.is_replica(id) {
            return Err(ReplicaError::BadId(id, cfg.n()));
        }
        if keys.me() != NodeId::Replica(id) {
            return Err(ReplicaError::WrongKeys(keys.me()));
        }
        // Checkpoint 0, the initial state: the base a state transfer compares with.
        let machine = Machine::new(&cfg, service)?;
        Ok(Replica {
            id,
            keys,
            machine,
            view_changes: view_change::ViewChanges::new(cfg.view_change_timeout_us),
            executed: Executed::default(),
            proposer: Proposer::after(SeqNo(0)),
            log: Log::new(SeqNo(0), cfg.log_window, cfg.journaling()),
            checkpoints: Checkpoints::new(id),
            requests: RequestPool::new(PoolBounds {
                queue: cfg.max_request_queue,
                bodies: cfg.max_known_requests,
                read_only: cfg.max_read_only_queue,
                #[cfg(feature = "deliberate-bugs")]
                unbounded_queue: cfg.bugs.unbounded_request_queue,
                #[cfg(not(feature = "deliberate-bugs"))]
                unbounded_queue: false,
            }),
            peers: Peers::default(),
            transfer: None,
            metrics: Metrics::default(),
            timers: crate::timers::Timers::default(),
            witness: invariants::Witness::default(),
            cfg,
        })
    }

    /// Pages of a replica's state: the reply table, then the service's pages.
    pub fn total_pages(cfg: &Config, service: &S) -> u64 {
        Machine::total_pages(cfg, service)
    }

    /// A replica restarted from the state its host saved at a stable
    /// checkpoint. It rejoins from there: its log and view are gone, so it
    /// catches up through retransmission, NEW-VIEW relays and state transfer
    /// (which compares the partition tree with the restored pages and fetches
    /// only what differs). Until it has caught up it counts as one of the f
    /// faulty replicas: it has forgotten what it sent before the crash.
    pub fn restore(
        cfg: Config,
        id: ReplicaId,
        keys: KeyTable,
        service: S,
        saved: SavedState,
    ) -> Result<(Self, Restored), ReplicaError> {
        let mut r = Self::new(cfg, id, keys, service)?;
        if saved.seq == SeqNo(0) {
            return Ok((r, Restored::Intact { seq: SeqNo(0) }));
        }
        // The pages become checkpoint 0, the base a state transfer compares
        // with; if they hash to the saved checkpoint they are that one too.
        let digest = r.machine.restore(&r.cfg, &saved.pages)?;
        if digest != saved.digest {
            r.executed.distrust_state();
            return Ok((r, Restored::Damaged));
        }
        r.machine.state_mut().take_checkpoint(saved.seq)?;
        r.machine.state_mut().discard_checkpoints_before(saved.seq);
        r.log = Log::new(saved.seq, r.cfg.log_window, r.cfg.journaling());
        r.executed.jump_to(saved.seq);
        r.proposer.skip_past(saved.seq);
        // Our vote for the checkpoint, for peers that still need it.
        let msg = Message::Checkpoint(wire::Checkpoint { seq: saved.seq, state_digest: digest });
        let raw = r.keys.seal(&msg, Audience::Replicas);
        r.checkpoints.record_mine(saved.seq, digest, raw);
        Ok((r, Restored::Intact { seq: saved.seq }))
    }

    /// A replica restarted from the state its host saved at a stable
    /// checkpoint and the records of its durable log since ([`crate::journal`]):
    /// it has its log, its view and what it sent back, so it rejoins as a
    /// correct replica. What it committed but had not saved executes again at
    /// [`Replica::start`]. A damaged state ([`Restored::Damaged`]) is
    /// restored as [`Replica::restore`] does, without the records.
    pub fn recover(
        cfg: Config,
        id: ReplicaId,
        keys: KeyTable,
        service: S,
        saved: SavedState,
        records: Vec<crate::journal::Record>,
    ) -> Result<(Self, Restored), ReplicaError> {
        let (mut r, restored) = Self::restore(cfg, id, keys, service, saved)?;
        if restored == Restored::Damaged {
            return Ok((r, restored));
        }
        let max = r.cfg.max_message_bytes;
        let request = |raw: &Bytes| match wire::decode(raw.clone(), max).map(|env| env.message) {
            Ok(Message::Request(req)) => Some(req),
            _ => None,
        };
        for crate::journal::Record(entry) in records {
            match entry {
                crate::journal::Entry::ViewChangeSent { raw } => r.replay_view_change(raw),
                crate::journal::Entry::ViewInstalled { view } => {
                    if view >= r.view() {
                        r.view_changes.install_view(view);
                    }
                }
                crate::journal::Entry::NewViewInstalled { raw, view_changes } => r.replay_new_view(raw, view_changes),
                entry => r.log.replay(entry, request),
            }
        }
        // A restarted primary never proposes at a number or below a value it used.
        let (seq, nondet) = r.log.highest_proposal();
        r.proposer.skip_past(seq);
        r.proposer.take_over(r.proposer.next_seq(), nondet);
        r.after_input("recover");
        Ok((r, restored))
    }

    /// Records the view again (installed, or the VIEW-CHANGE this replica
    /// sent for it) when the log advances: the host drops the durable log's
    /// older segments, and the records of the view change may be in them.
    fn record_view_state(&mut self) {
        let view = self.view();
        if self.view_active() {
            let entry = match &self.view_changes.installed {
                Some(i) if i.new_view.view == view => crate::journal::Entry::NewViewInstalled {
                    raw: i.raw.clone(),
                    view_changes: i.view_changes.clone(),
                },
                _ => crate::journal::Entry::ViewInstalled { view },
            };
            self.log.record_view(entry);
        } else if let Some(vc) = self.view_changes.msgs.get(&(view, self.id)) {
            let raw = vc.raw.clone();
            self.log.record_view(crate::journal::Entry::ViewChangeSent { raw });
        }
    }

    /// A view this replica installed before a restart, with the NEW-VIEW and
    /// VIEW-CHANGE messages that installed it: a replica that missed the
    /// NEW-VIEW (say the whole cluster restarted just after it was sent)
    /// learns it from STATUS replies ([`Replica::send_installed_view`]), and
    /// without them would wait for it for ever while the others, in the view,
    /// cannot gather a quorum without it.
    fn replay_new_view(&mut self, raw: Bytes, view_changes: Vec<Bytes>) {
        let Ok(Message::NewView(nv)) = wire::decode(raw.clone(), self.cfg.max_message_bytes).map(|e| e.message) else {
            return;
        };
        if nv.view < self.view() {
            return;
        }
        self.view_changes.install_view(nv.view);
        self.view_changes.installed = Some(view_change::Installed { new_view: nv, raw, view_changes });
    }

    /// The VIEW-CHANGE this replica sent before a restart: it is in that view
    /// change again, and retransmits it.
    fn replay_view_change(&mut self, raw: Bytes) {
        let Ok(Message::ViewChange(msg)) = wire::decode(raw.clone(), self.cfg.max_message_bytes).map(|e| e.message) else {
            return;
        };
        let v = msg.view;
        if v < self.view() || (v == self.view() && !self.view_active()) {
            return;
        }
        self.view_changes.leave_for(v);
        self.view_changes.forget_below(v);
        let digest = view_change::view_change_digest(self.id, &msg);
        self.view_changes.msgs.insert((v, self.id), view_change::StoredVc { msg, digest, raw });
    }

    /// Arms the replica's timers and announces its progress. Call before
    /// anything else, and again when the host resumes a replica it had
    /// stopped.
    pub fn start(&mut self, now: Instant, out: &mut Outbox) {
        self.handle_start(now, out);
        self.persist(out);
        self.after_input("start");
    }

    /// Hands the records of the input just handled to the host, which makes
    /// them durable before it sends anything the input produced.
    fn persist(&mut self, out: &mut Outbox) {
        let records = self.log.take_records();
        if !records.is_empty() {
            out.push(crate::effects::Effect::Persist(records));
        }
    }

    fn handle_start(&mut self, now: Instant, out: &mut Outbox) {
        self.timers.advance(now);
        // What a replica recovered from its durable log and did not execute
        // before the crash executes now.
        self.try_execute(out);
        // A STATUS at once: a replica that restarts behind hears of the
        // checkpoints it missed (and starts a transfer) without waiting a tick.
        self.send_status(out);
        self.timers.set(Timer::Status, now.plus_us(self.cfg.status_interval_us));
        self.restart_view_change_timer();
    }

    /// Handles one datagram and says what became of it. Bad input is
    /// dropped and counted, never a panic.
    pub fn on_datagram(&mut self, now: Instant, bytes: Bytes, out: &mut Outbox) -> Received {
        let received = self.handle_datagram(now, bytes, out);
        if let Received::Dropped(reason) = received {
            self.metrics.drop(reason);
        }
        self.persist(out);
        self.after_input("datagram");
        received
    }

    fn handle_datagram(&mut self, now: Instant, bytes: Bytes, out: &mut Outbox) -> Received {
        self.timers.advance(now);
        let env = match wire::decode(bytes, self.cfg.max_message_bytes) {
            Ok(env) => env,
            Err(_) => return Received::Dropped(DropReason::Malformed),
        };
        // A batch a NEW-VIEW (or 2f+1 COMMITs) chose by digest is accepted
        // from anyone, in any view's pre-prepare, MAC or not: the digest
        // vouches for its content.
        if let Message::PrePrepare(p) = &env.message {
            if self.wants_batch(p.seq) {
                return self.fill_chosen_batch(env, out);
            }
        }
        let verified = match self.verify(env) {
            Ok(v) => v,
            Err((e, env)) => {
                // A request body whose MAC for us is bad may still be one that a
                // batch names by digest; likewise a VIEW-CHANGE that a pending
                // NEW-VIEW names.
                let vouched = match (&e, env.message) {
                    (AuthError::BadMac, Message::Request(r))
                        if self.cfg.is_client(r.client) && NodeId::Client(r.client) == env.sender =>
                    {
                        let digest = r.digest();
                        Vouched::by_digest(r, env.raw, digest, |d| self.log.is_awaited(*d))
                            .map(|v| self.fill_vouched_body(v, out))
                            .is_some()
                    }
                    (AuthError::BadMac, Message::ViewChange(vc)) => match env.sender {
                        NodeId::Replica(from) => self.on_relayed_view_change(from, vc, env.raw, env.auth_digest, out),
                        NodeId::Client(_) => false,
                    },
                    // Our own VIEW-CHANGE, relayed back with the NEW-VIEW that
                    // names it: a replica restarted without its log no longer
                    // has the copy it sent (we hold no key with ourselves).
                    (AuthError::UnknownSender, Message::ViewChange(vc)) if env.sender == NodeId::Replica(self.id) => {
                        self.on_relayed_view_change(self.id, vc, env.raw, env.auth_digest, out)
                    }
                    _ => false,
                };
                return if vouched { Received::Vouched } else { Received::Dropped(DropReason::from(&e)) };
            }
        };
        let sender = verified.sender();
        let raw = verified.raw().clone();
        let timestamp = match verified.message() {
            Message::Request(r) => Some(r.timestamp),
            _ => None,
        };
        let received = Received::Authenticated { from: sender, timestamp };
        match (verified.into_message(), sender) {
            (Message::Request(r), NodeId::Client(_)) => self.on_request(now, r, raw, out),
            (Message::PrePrepare(p), NodeId::Replica(from)) => self.on_pre_prepare(now, from, p, raw, out),
            (Message::Prepare(p), NodeId::Replica(from)) => self.on_prepare(from, p, out),
            (Message::Commit(c), NodeId::Replica(from)) => self.on_commit(from, c, out),
            (Message::Checkpoint(c), NodeId::Replica(from)) => self.on_checkpoint(from, c, out),
            (Message::Status(s), NodeId::Replica(from)) => self.on_status(now, from, s, out),
            (Message::Fetch(f), NodeId::Replica(from)) => self.on_fetch(now, from, f, out),
            (Message::MetaData(m), NodeId::Replica(from)) => self.on_meta_data(from, m, out),
            (Message::Data(d), NodeId::Replica(from)) => self.on_data(from, d, out),
            (Message::ViewChange(v), NodeId::Replica(from)) => self.on_view_change(from, v, raw, out),
            (Message::ViewChangeAck(a), NodeId::Replica(from)) => self.on_view_change_ack(from, a, out),
            (Message::NewView(nv), NodeId::Replica(from)) => self.on_new_view(from, nv, raw, out),
            _ => return Received::Dropped(DropReason::WrongSenderKind),
        }
        received
    }

    /// When the host should next call [`Replica::handle_timeout`], if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Fires every timer due at `now` (none, if the host woke early).
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(timer) = self.timers.pop_due(now) {
            self.handle_timer(now, timer, out);
            self.persist(out);
            self.after_input(match timer {
                Timer::Status => "status timer",
                Timer::ViewChange => "view-change timer",
                Timer::ClientRetransmit => "client timer",
            });
        }
    }

    fn handle_timer(&mut self, now: Instant, timer: Timer, out: &mut Outbox) {
        self.timers.advance(now);
        match timer {
            Timer::Status => {
                self.send_status(out);
                self.retransmit_view_change(out);
                self.maybe_start_transfer(out);
                self.timers.set(Timer::Status, now.plus_us(self.cfg.status_interval_us));
            }
            Timer::ViewChange => self.on_view_change_timer(out),
            Timer::ClientRetransmit => self.metrics.drop(DropReason::Unexpected),
        }
    }

    fn verify(&self, env: Envelope) -> Result<Verified, (AuthError, Box<Envelope>)> {
        #[cfg(feature = "deliberate-bugs")]
        if self.cfg.bugs.skip_mac_check {
            return crate::auth::verify_without_mac(env);
        }
        self.keys.verify_or_return(env)
    }

    /// Seals and multicasts a protocol message to the other replicas.
    fn multicast(&self, message: &Message, out: &mut Outbox) -> Bytes {
        let bytes = self.keys.seal(message, Audience::Replicas);
        out.send(Dest::AllReplicas, bytes.clone());
        bytes
    }

    fn primary(&self) -> ReplicaId {
        self.view().primary(self.cfg.n())
    }

    fn is_primary(&self) -> bool {
        self.primary() == self.id
    }

    /// The high water mark H = h + L.
    fn high_water_mark(&self) -> SeqNo {
        self.log.high_water_mark()
    }

    fn in_window(&self, seq: SeqNo) -> bool {
        self.log.in_window(seq)
    }

    // ----- queries for hosts, metrics and the simulator's checkers -----

    pub fn id(&self) -> ReplicaId {
        self.id
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn keys(&self) -> &KeyTable {
        &self.keys
    }
    pub fn view(&self) -> View {
        self.view_changes.view()
    }
    /// Whether the current view is installed (false during a view change).
    pub fn view_active(&self) -> bool {
        self.view_changes.active()
    }
    pub fn low_water_mark(&self) -> SeqNo {
        self.log.low_water_mark()
    }
    pub fn last_executed(&self) -> SeqNo {
        self.executed.last()
    }
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    pub fn service(&self) -> &S {
        self.machine.service()
    }
    pub fn state(&self) -> &PagedState {
        self.machine.state()
    }
    /// Entries in the log (each within the water marks).
    pub fn log_len(&self) -> usize {
        self.log.len()
    }
    pub fn log_bounds(&self) -> Option<(SeqNo, SeqNo)> {
        self.log.bounds()
    }
    pub fn request_queue_len(&self) -> usize {
        self.requests.queue_len()
    }
    pub fn known_requests_len(&self) -> usize {
        self.requests.bodies_len()
    }
    /// Batch entries waiting for a request body.
    pub fn awaiting_bodies_len(&self) -> usize {
        self.log.bodies_awaited()
    }
    pub fn read_only_queue_len(&self) -> usize {
        self.requests.read_only_len()
    }
    pub fn checkpoint_records(&self) -> usize {
        self.checkpoints.len()
    }
    /// Whether a state transfer is under way.
    pub fn transferring(&self) -> bool {
        self.transfer.is_some()
    }
    /// Whether this replica holds a prepared certificate for `digest` at `seq`.
    pub fn is_prepared(&self, seq: SeqNo, digest: &Digest) -> bool {
        self.log.get(seq).is_some_and(|s| s.prepared() && s.batch().is_some_and(|b| b.digest() == *digest))
    }
}

impl<S: Service> Replica<S> {
    /// A one-line summary of the replica's progress and of its first open log
    /// entries, for failure reports.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} view={}{} h={} last_executed={} next_seq={} tentative={:?} queue={} known={} ro_queue={} transferring={} {}",
            self.id,
            self.view().0,
            if self.view_active() { "" } else { "(changing)" },
            self.log.low_water_mark().0,
            self.executed.last().0,
            self.proposer.next_seq().0,
            self.executed.tentative().map(|t| t.0),
            self.requests.queue_len(),
            self.requests.bodies_len(),
            self.requests.read_only_len(),
            self.transfer.is_some(),
            self.checkpoints.describe()
        );
        for (seq, slot) in self.log.range(self.executed.tentative().unwrap_or(self.executed.next())).take(3) {
            let batch = slot.batch().map(|b| {
                format!(
                    "batch(v{} {:?} complete={} validated={} nondet_ok={})",
                    b.view().0,
                    b.digest(),
                    b.complete(),
                    b.validated(),
                    b.nondet_ok()
                )
            });
            s.push_str(&format!(
                "\n      seq {}: {} prepares={} commits={} prepared={} committed={}",
                seq.0,
                batch.unwrap_or_else(|| "no batch".into()),
                slot.matching_prepares(),
                slot.matching_commits(),
                slot.prepared(),
                slot.committed()
            ));
        }
        s
    }
}
