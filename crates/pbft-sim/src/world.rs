//! The simulated world: virtual time, a seeded network, the nodes, and the loop
//! that delivers events to them. Replicas and clients are the real `pbft` code;
//! only the network, the clocks and the faults are simulated.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use pbft::adversary::Adversary;
use pbft::auth::{public_key, KeyTable};
use pbft::host::{Host, To};
use pbft::journal::Record;
use pbft::{Client, ClientEffect, ClientId, ClientOutbox, Config, Effect, Instant, NodeId, Outbox, Replica, ReplicaId, SeqNo};
use pbft_kv::{KvConfig, KvResult, KvService};

use crate::byzantine::FaultyClient;
use crate::checkers::{Checkers, OpRecord};
use crate::rng::SimRng;
use crate::scenario::Scenario;

/// A node's address in the simulated network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    Replica(usize),
    Client(usize),
}

#[derive(Debug)]
enum EventKind {
    /// A datagram arrives. One from a replica left at `departs` from the
    /// replica's incarnation `incarnation`: if that incarnation crashed
    /// before then (it was waiting for its disk), it never left.
    Deliver { to: Addr, from: Addr, bytes: Bytes, departs: u64, incarnation: u64 },
    /// A node asked to be woken now (its earliest timer is due).
    Wake(Addr),
    ClientNext(usize),
    Crash(usize),
    Restart(usize),
    FaultyClientTick(usize),
    ByzTick(usize),
}

struct Event {
    at: u64,
    order: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(o.at, o.order))
    }
}

pub struct ReplicaNode {
    pub replica: Replica<KvService>,
    pub crashed: bool,
    /// What it does wrong, if it is Byzantine.
    pub byz: Option<Adversary<Addr>>,
    /// Its durable log on disk, in segments by the checkpoint each starts
    /// at, as a host keeps it (see `pbft::journal`).
    pub journal: Vec<(SeqNo, Vec<(u64, Record)>)>,
    /// When each of its incarnations crashed.
    pub crashes: Vec<u64>,
}

struct ClientNode {
    client: Client,
    ops_done: usize,
    /// Index into the history of the outstanding operation.
    current: Option<usize>,
}

/// Limits that keep every run finite.
const MAX_EVENTS: u64 = 4_000_000;
/// Virtual time allowed after the network heals for every request to complete.
const LIVENESS_GRACE_US: u64 = 30_000_000;
/// After the clients finish (and the network has healed), how long the
/// replicas get to converge: every correct replica that is up must then have
/// executed everything any correct replica executed.
const CATCH_UP_US: u64 = 3_000_000;

/// What one run did.
#[derive(Debug, Default)]
pub struct RunStats {
    pub events: u64,
    pub datagrams: u64,
    pub ops_completed: usize,
    pub end_us: u64,
    pub max_seq: u64,
    pub drops: u64,
    pub state_transfers: u64,
    /// Views installed, summed over replicas.
    pub views_installed: u64,
    /// Tentative executions undone by view changes, summed over replicas.
    pub rollbacks: u64,
    /// Replica summaries, filled in when a run fails.
    pub diagnostics: Vec<String>,
}

pub struct World {
    pub(crate) scenario: Scenario,
    pub(crate) cfg: Config,
    pub(crate) rng: SimRng,
    now: u64,
    order: u64,
    queue: BinaryHeap<Reverse<Event>>,
    pub(crate) replicas: Vec<ReplicaNode>,
    clients: Vec<ClientNode>,
    pub(crate) faulty_clients: Vec<FaultyClient>,
    /// The earliest wake-up scheduled for each node, in virtual time: the
    /// nodes keep their own timers; the world only wakes them.
    wake_at: BTreeMap<Addr, u64>,
    /// The earliest tick scheduled for each Byzantine replica's adversary.
    byz_tick_at: BTreeMap<usize, u64>,
    /// Each replica's address book: every other replica.
    others: Vec<Vec<Addr>>,
    pub(crate) checkers: Checkers,
    /// Recent client requests seen on the network, for replaying faulty clients.
    pub(crate) recent_requests: Vec<Bytes>,
    pub stats: RunStats,
}

/// The simulator's protocol configuration: the papers' algorithm with small
/// windows and bounds, so that checkpoints, garbage collection and every bound
/// are exercised in short runs.
pub fn sim_config(s: &Scenario) -> Config {
    let mut cfg = Config::new(s.f);
    cfg.max_clients = (s.clients + s.faulty_clients.len()) as u32;
    cfg.checkpoint_interval = s.checkpoint_interval;
    cfg.log_window = 2 * s.checkpoint_interval;
    cfg.max_batch_requests = 8;
    cfg.max_outstanding_batches = 2;
    cfg.max_request_queue = 64;
    cfg.max_known_requests = 64;
    cfg.max_read_only_queue = 32;
    cfg.status_interval_us = 50_000;
    cfg.client_retransmit_us = 150_000;
    cfg.view_change_timeout_us = 200_000;
    cfg.nondet_skew_us = 250_000;
    cfg.tree = pbft::state::TreeShape { fanout: 16, depth: 4 };
    cfg
}

fn secret(node: NodeId) -> [u8; 32] {
    let mut s = [0u8; 32];
    match node {
        NodeId::Replica(r) => s[..4].copy_from_slice(&(r.0 as u32).to_le_bytes()),
        NodeId::Client(c) => {
            s[4] = 1;
            s[..4].copy_from_slice(&c.0.to_le_bytes());
        }
    }
    *blake3::hash(&s).as_bytes()
}

/// Key tables for every principal, from static key pairs derived from their names.
pub fn key_tables(n: usize, clients: usize) -> (Vec<KeyTable>, Vec<KeyTable>) {
    let rp: Vec<_> = (0..n).map(|i| public_key(&secret(NodeId::Replica(ReplicaId(i as u16))))).collect();
    let cp: Vec<_> = (0..clients).map(|c| public_key(&secret(NodeId::Client(ClientId(c as u32))))).collect();
    let replicas = (0..n)
        .map(|i| {
            let me = NodeId::Replica(ReplicaId(i as u16));
            KeyTable::from_static_dh(me, &secret(me), &rp, &cp)
        })
        .collect();
    let cls = (0..clients)
        .map(|c| {
            let me = NodeId::Client(ClientId(c as u32));
            KeyTable::from_static_dh(me, &secret(me), &rp, &[])
        })
        .collect();
    (replicas, cls)
}

pub const KV_PAGES: u64 = 256;

impl World {
    pub fn new(seed: u64, scenario: Scenario, cfg: Config) -> World {
        let n = scenario.n();
        let total_clients = scenario.clients + scenario.faulty_clients.len();
        let (rkeys, ckeys) = key_tables(n, total_clients);
        let mut replicas = Vec::with_capacity(n);
        for (i, keys) in rkeys.into_iter().enumerate() {
            let service = KvService::new(KvConfig { pages: KV_PAGES });
            let byz = scenario
                .byzantine
                .iter()
                .find(|(r, _)| *r == i)
                .map(|(_, m)| Adversary::new(*m, keys.clone(), cfg.clone(), seed ^ (i as u64 + 1)));
            let replica = Replica::new(cfg.clone(), ReplicaId(i as u16), keys, service).expect("simulator config is valid");
            replicas.push(ReplicaNode { replica, crashed: false, byz, journal: vec![(SeqNo(0), Vec::new())], crashes: Vec::new() });
        }
        let mut clients = Vec::new();
        let mut faulty_clients = Vec::new();
        for (c, keys) in ckeys.into_iter().enumerate() {
            if c < scenario.clients {
                clients.push(ClientNode { client: Client::new(cfg.clone(), ClientId(c as u32), keys, 0), ops_done: 0, current: None });
            } else {
                let fault = scenario.faulty_clients[c - scenario.clients];
                faulty_clients.push(FaultyClient::new(fault, ClientId(c as u32), keys));
            }
        }
        let checkers = Checkers::new(&scenario);
        World {
            rng: SimRng::new(seed),
            scenario,
            cfg,
            now: 0,
            order: 0,
            queue: BinaryHeap::new(),
            replicas,
            clients,
            faulty_clients,
            wake_at: BTreeMap::new(),
            byz_tick_at: BTreeMap::new(),
            others: (0..n).map(|i| (0..n).filter(|j| *j != i).map(Addr::Replica).collect()).collect(),
            checkers,
            recent_requests: Vec::new(),
            stats: RunStats::default(),
        }
    }

    fn schedule(&mut self, at: u64, kind: EventKind) {
        self.order += 1;
        self.queue.push(Reverse(Event { at, order: self.order, kind }));
    }

    /// Runs to completion: every correct client finished, or the time limit.
    pub fn run(&mut self) {
        for i in 0..self.replicas.len() {
            let mut out = Outbox::new();
            let now = self.local_time(i);
            self.replicas[i].replica.start(now, &mut out);
            self.apply(i, out);
        }
        for c in 0..self.clients.len() {
            let at = self.rng.below(2_000);
            self.schedule(at, EventKind::ClientNext(c));
        }
        for c in 0..self.faulty_clients.len() {
            let at = self.rng.below(20_000);
            self.schedule(at, EventKind::FaultyClientTick(c));
        }
        for &(r, start, end) in &self.scenario.crashes.clone() {
            self.schedule(start, EventKind::Crash(r));
            self.schedule(end, EventKind::Restart(r));
        }
        let limit = self.scenario.heal_at_us + LIVENESS_GRACE_US;
        let mut settle_until = None;
        let mut target = None;
        while let Some(Reverse(ev)) = self.queue.pop() {
            if ev.at > limit || self.stats.events >= MAX_EVENTS || !self.checkers.violations.is_empty() {
                break;
            }
            if settle_until.is_some_and(|t| ev.at > t) {
                break;
            }
            self.now = ev.at;
            self.stats.events += 1;
            self.handle(ev.kind);
            if settle_until.is_none() && self.clients.iter().all(|c| c.ops_done >= self.scenario.ops_per_client) {
                settle_until = Some(self.now.max(self.scenario.heal_at_us) + CATCH_UP_US);
                target = self.furthest_correct();
            }
        }
        self.stats.end_us = self.now;
        if let (Some(_), Some(target)) = (settle_until, target) {
            self.check_replicas_caught_up(target);
        }
        self.finish();
    }

    fn finish(&mut self) {
        for (c, node) in self.clients.iter().enumerate() {
            if node.ops_done < self.scenario.ops_per_client {
                self.checkers.violate(format!(
                    "liveness: client {c} completed {} of {} operations by t={}us (network healed at {}us)",
                    node.ops_done, self.scenario.ops_per_client, self.now, self.scenario.heal_at_us
                ));
            }
        }
        if self.stats.events >= MAX_EVENTS {
            self.checkers.violate(format!("event budget of {MAX_EVENTS} exhausted at t={}us", self.now));
        }
        self.stats.ops_completed = self.checkers.history.iter().filter(|o| o.complete.is_some()).count();
        self.stats.max_seq = self.replicas.iter().map(|r| r.replica.last_executed().0).max().unwrap_or(0);
        self.stats.drops = self.replicas.iter().map(|r| r.replica.metrics().dropped_total()).sum();
        self.stats.rollbacks = self.replicas.iter().map(|r| r.replica.metrics().rollbacks).sum();
        self.checkers.check_linearizability();
        if !self.checkers.violations.is_empty() {
            for node in &self.replicas {
                let role = match (&node.byz, node.crashed) {
                    (Some(b), _) => format!("byzantine {:?}", b.mode()),
                    (None, true) => "crashed".into(),
                    (None, false) => "correct".into(),
                };
                self.stats.diagnostics.push(format!("{role} {}", node.replica.describe()));
            }
        }
    }

    /// Replica liveness: a correct replica that is up has caught up with the
    /// others (by retransmission, state transfer or view changes) once the
    /// network healed and the load stopped.
    /// The furthest any correct replica that is up has executed.
    fn furthest_correct(&self) -> Option<SeqNo> {
        self.replicas.iter().filter(|n| n.byz.is_none() && !n.crashed).map(|n| n.replica.last_executed()).max()
    }

    /// Every correct replica that is up has executed at least up to
    /// `furthest`, what the furthest had executed when the clients finished
    /// (faulty clients may still be sending).
    fn check_replicas_caught_up(&mut self, furthest: SeqNo) {
        let correct = |n: &ReplicaNode| n.byz.is_none() && !n.crashed;
        let behind: Vec<String> = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(_, n)| correct(n) && n.replica.last_executed() < furthest)
            .map(|(i, n)| format!("{i} at {}", n.replica.last_executed().0))
            .collect();
        if !behind.is_empty() {
            self.checkers.violate(format!(
                "liveness: replicas [{}] did not reach seq {} within {} us after the clients finished",
                behind.join(", "),
                furthest.0,
                CATCH_UP_US
            ));
        }
    }

    /// Replica `i`'s clock: virtual time plus its skew.
    fn local_time(&self, i: usize) -> Instant {
        Instant(self.now.saturating_add_signed(self.scenario.clock_skew_us[i]))
    }

    fn handle(&mut self, kind: EventKind) {
        match kind {
            EventKind::Deliver { to, from, bytes, departs, incarnation } => {
                if let Addr::Replica(r) = from {
                    let crashed = self.replicas[r].crashes.get(incarnation as usize);
                    if crashed.is_some_and(|at| departs > *at) {
                        return;
                    }
                }
                self.deliver(to, from, bytes)
            }
            EventKind::Wake(node) => {
                if self.wake_at.get(&node) == Some(&self.now) {
                    self.wake_at.remove(&node);
                }
                match node {
                    Addr::Replica(i) => {
                        if self.replicas[i].crashed {
                            return;
                        }
                        let mut out = Outbox::new();
                        let now = self.local_time(i);
                        self.replicas[i].replica.handle_timeout(now, &mut out);
                        self.apply(i, out);
                    }
                    Addr::Client(c) => {
                        let mut out = ClientOutbox::new();
                        self.clients[c].client.handle_timeout(Instant(self.now), &mut out);
                        self.apply_client(c, out);
                    }
                }
            }
            EventKind::ClientNext(c) => self.client_next(c),
            EventKind::Crash(r) => {
                let now = self.now;
                let node = &mut self.replicas[r];
                node.crashed = true;
                node.crashes.push(now);
                // What the disk had not made durable is gone.
                for (_, segment) in node.journal.iter_mut() {
                    segment.retain(|(durable_at, _)| *durable_at <= now);
                }
            }
            EventKind::Restart(r) => {
                self.replicas[r].crashed = false;
                if self.scenario.wiped.contains(&r) {
                    // Its disk is gone too: a fresh replica with the same keys.
                    let keys = self.replicas[r].replica.keys().clone();
                    let service = KvService::new(KvConfig { pages: KV_PAGES });
                    self.replicas[r].replica =
                        Replica::new(self.cfg.clone(), ReplicaId(r as u16), keys, service).expect("simulator config is valid");
                    self.replicas[r].journal = vec![(SeqNo(0), Vec::new())];
                    self.checkers.on_wiped(r);
                }
                if let Some(&(_, corrupt)) = self.scenario.from_disk.iter().find(|(d, _)| *d == r) {
                    self.restore_from_disk(r, corrupt);
                }
                let mut out = Outbox::new();
                let now = self.local_time(r);
                self.replicas[r].replica.start(now, &mut out);
                self.apply(r, out);
            }
            EventKind::FaultyClientTick(c) => {
                let sends = crate::byzantine::faulty_client_tick(self, c);
                for (to, bytes) in sends {
                    self.transmit(Addr::Client(self.scenario.clients + c), Addr::Replica(to), bytes);
                }
                let next = self.now + 2_000 + self.rng.below(20_000);
                if next < self.scenario.heal_at_us + LIVENESS_GRACE_US {
                    self.schedule(next, EventKind::FaultyClientTick(c));
                }
            }
            EventKind::ByzTick(r) => {
                if self.byz_tick_at.get(&r) == Some(&self.now) {
                    self.byz_tick_at.remove(&r);
                }
                let peers: Vec<Addr> = (0..self.replicas.len()).map(Addr::Replica).collect();
                let node = &mut self.replicas[r];
                let sends = match node.byz.as_mut() {
                    Some(b) if !node.crashed => b.tick(self.now, &node.replica, &peers),
                    _ => Vec::new(),
                };
                for (to, bytes) in sends {
                    self.transmit(Addr::Replica(r), to, bytes);
                }
                self.schedule_byz_tick(r);
            }
        }
    }

    /// Restarts replica `r` from the pages of its last stable checkpoint, as a
    /// host would read them from disk; `corrupt` flips bytes in some of them.
    fn restore_from_disk(&mut self, r: usize, corrupt: bool) {
        let old = &self.replicas[r].replica;
        let seq = old.low_water_mark();
        let state = old.state();
        let digest = state.checkpoint_digest(seq).unwrap_or_default();
        // Every page that is not zero (a replica restored before has its
        // restored pages as checkpoint 0, so "modified since 0" is not all).
        let mut pages: Vec<(u64, Box<pbft::state::Page>)> = (0..state.num_pages())
            .filter_map(|i| state.page_at(seq, i).ok().filter(|p| **p != pbft::state::ZERO_PAGE).map(|p| (i, Box::new(*p))))
            .collect();
        if corrupt && !pages.is_empty() {
            for _ in 0..1 + self.rng.below(3) {
                let k = self.rng.below(pages.len() as u64) as usize;
                let at = self.rng.below(pbft::state::PAGE_SIZE as u64) as usize;
                pages[k].1[at] ^= 0x5a;
            }
        }
        let keys = old.keys().clone();
        let service = KvService::new(KvConfig { pages: KV_PAGES });
        let saved = pbft::SavedState { seq, digest, pages };
        let records: Vec<Record> =
            self.replicas[r].journal.iter().flat_map(|(_, s)| s.iter().map(|(_, record)| record.clone())).collect();
        let (replica, restored) = Replica::recover(self.cfg.clone(), ReplicaId(r as u16), keys, service, saved, records)
            .expect("simulator config is valid");
        let (before, after) = (self.replicas[r].replica.view(), replica.view());
        self.replicas[r].replica = replica;
        match restored {
            pbft::Restored::Intact { seq } => {
                self.checkers.on_restored(r, seq);
                // Unless its journal is off (a deliberate bug), a replica
                // comes back in the view it was in.
                if after < before && self.cfg.journaling() {
                    self.checkers.violate(format!(
                        "durable log: replica {r} restarted in view {} below the view {} it was in",
                        after.0, before.0
                    ));
                }
            }
            // The state is untrusted and the log ignored: a new incarnation.
            pbft::Restored::Damaged => {
                self.replicas[r].journal = vec![(SeqNo(0), Vec::new())];
                self.checkers.on_wiped(r);
            }
        }
    }

    fn deliver(&mut self, to: Addr, from: Addr, bytes: Bytes) {
        match to {
            Addr::Replica(i) => {
                if self.replicas[i].crashed {
                    return;
                }
                if let Some(b) = self.replicas[i].byz.as_mut() {
                    b.observe(&bytes);
                }
                if matches!(from, Addr::Client(_)) && self.recent_requests.len() < 256 {
                    self.recent_requests.push(bytes.clone());
                }
                let mut out = Outbox::new();
                let now = self.local_time(i);
                self.replicas[i].replica.on_datagram(now, bytes, &mut out);
                self.checkers.check_bounds(i, &self.replicas[i].replica);
                self.apply(i, out);
            }
            Addr::Client(c) => {
                if c >= self.clients.len() {
                    return; // faulty clients ignore replies
                }
                let mut out = ClientOutbox::new();
                self.clients[c].client.on_datagram(Instant(self.now), bytes, &mut out);
                self.apply_client(c, out);
            }
        }
    }

    /// Schedules a wake-up for `node` at its earliest timer, unless an
    /// earlier one is pending (it will look again when it fires). A wake-up
    /// that finds nothing due costs the node nothing.
    fn schedule_wake(&mut self, node: Addr) {
        // Replica deadlines are in local time; convert back to virtual time.
        let at = match node {
            Addr::Replica(i) => {
                self.replicas[i].replica.poll_timeout().map(|t| t.as_us().saturating_add_signed(-self.scenario.clock_skew_us[i]))
            }
            Addr::Client(c) => self.clients.get(c).and_then(|n| n.client.poll_timeout()).map(|t| t.as_us()),
        };
        let Some(at) = at.map(|t| t.max(self.now)) else { return };
        if self.wake_at.get(&node).is_none_or(|pending| at < *pending) {
            self.wake_at.insert(node, at);
            self.schedule(at, EventKind::Wake(node));
        }
    }

    /// Schedules replica `r`'s adversary for when it next has something to
    /// send, unless an earlier tick is pending.
    fn schedule_byz_tick(&mut self, r: usize) {
        let Some(at) = self.replicas[r].byz.as_ref().and_then(|b| b.next_tick_us()) else { return };
        let at = at.max(self.now);
        if self.byz_tick_at.get(&r).is_none_or(|pending| at < *pending) {
            self.byz_tick_at.insert(r, at);
            self.schedule(at, EventKind::ByzTick(r));
        }
    }

    /// Carries out the effects replica `i` produced, through the host path
    /// the real runtime uses too.
    fn apply(&mut self, i: usize, mut out: Outbox) {
        self.schedule_wake(Addr::Replica(i));
        let mut byz = self.replicas[i].byz.take();
        let correct = byz.is_none();
        let now = Instant(self.now);
        pbft::host::carry_out(&mut SimHost { world: self, i, correct, hold: 0 }, now, &mut out, byz.as_mut());
        self.replicas[i].byz = byz;
        self.schedule_byz_tick(i);
    }

    /// Carries out the effects client `c` produced.
    fn apply_client(&mut self, c: usize, mut out: ClientOutbox) {
        self.schedule_wake(Addr::Client(c));
        for effect in out.drain() {
            match effect {
                ClientEffect::Send { to, bytes } => self.transmit(Addr::Client(c), Addr::Replica(to.index()), bytes),
                ClientEffect::Completed { result, .. } => self.client_completed(c, result),
            }
        }
    }

    /// Puts one datagram on the network: lost, duplicated, delayed, or cut by a
    /// partition, as the scenario says (until the network heals).
    pub(crate) fn transmit(&mut self, from: Addr, to: Addr, bytes: Bytes) {
        self.transmit_after(from, to, bytes, 0);
    }

    /// Puts a datagram on the network `hold` microseconds from now (a
    /// replica's messages wait for its disk).
    fn transmit_after(&mut self, from: Addr, to: Addr, bytes: Bytes, hold: u64) {
        self.stats.datagrams += 1;
        let healed = self.now >= self.scenario.heal_at_us;
        if !healed {
            let cut = |a: Addr| match a {
                Addr::Replica(r) => {
                    self.scenario.partitions.iter().any(|(p, s, e)| *p == r && self.now >= *s && self.now < *e)
                }
                Addr::Client(_) => false,
            };
            if cut(from) || cut(to) || self.rng.chance(self.scenario.loss) {
                return;
            }
        }
        let copies = if !healed && self.rng.chance(self.scenario.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let spread = self.scenario.max_delay_us - self.scenario.min_delay_us;
            let delay = self.scenario.min_delay_us + self.rng.below(spread.max(1));
            let incarnation = match from {
                Addr::Replica(r) => self.replicas[r].crashes.len() as u64,
                Addr::Client(_) => 0,
            };
            let departs = self.now + hold;
            self.schedule(departs + delay, EventKind::Deliver { to, from, bytes: bytes.clone(), departs, incarnation });
        }
    }

    fn client_next(&mut self, c: usize) {
        if self.clients[c].ops_done >= self.scenario.ops_per_client || self.clients[c].current.is_some() {
            return;
        }
        let op = crate::workload::next_op(&mut self.rng, c, self.clients[c].ops_done, self.scenario.keys);
        let read_only = op.is_read_only() && self.rng.chance(0.8);
        let mut out = ClientOutbox::new();
        let encoded = Bytes::from(op.encode());
        match self.clients[c].client.submit(Instant(self.now), encoded, read_only, &mut out) {
            Ok(_) => {
                self.checkers.history.push(OpRecord { client: c, op, invoke_us: self.now, complete: None });
                self.clients[c].current = Some(self.checkers.history.len() - 1);
            }
            Err(e) => self.checkers.violate(format!("client {c} could not submit: {e}")),
        }
        self.apply_client(c, out);
    }

    fn client_completed(&mut self, c: usize, result: Bytes) {
        let Some(i) = self.clients[c].current.take() else {
            return self.checkers.violate(format!("client {c} completed a request it did not send"));
        };
        let result = KvResult::decode(&result).unwrap_or(KvResult::Error(pbft_kv::KvError::Malformed));
        self.checkers.history[i].complete = Some((self.now, result));
        self.clients[c].ops_done += 1;
        let think = self.rng.below(3_000);
        self.schedule(self.now + think, EventKind::ClientNext(c));
    }
}

/// When a journal record written but not yet synced becomes durable: never,
/// unless a later sync covers it.
const UNSYNCED: u64 = u64::MAX;

/// The simulated network as replica `i`'s host.
struct SimHost<'a> {
    world: &'a mut World,
    i: usize,
    /// Whether the replica is correct: only correct replicas' executions are checked.
    correct: bool,
    /// How long this turn's datagrams wait for the disk.
    hold: u64,
}

impl Host for SimHost<'_> {
    type Addr = Addr;

    fn replica(&self, r: ReplicaId) -> Option<Addr> {
        (r.index() < self.world.replicas.len()).then_some(Addr::Replica(r.index()))
    }

    fn others(&self) -> &[Addr] {
        &self.world.others[self.i]
    }

    fn client(&mut self, c: ClientId) -> Option<Addr> {
        Some(Addr::Client(c.0 as usize))
    }

    fn sync(&mut self, _now: Instant, gating: bool) {
        let w = &mut *self.world;
        if !gating || w.scenario.fsync_us == 0 {
            return;
        }
        // One fdatasync covers everything written before it, the records
        // that did not need one included.
        let durable_at = w.now + w.scenario.fsync_us;
        for (_, segment) in w.replicas[self.i].journal.iter_mut() {
            for (at, _) in segment.iter_mut().rev().take_while(|(at, _)| *at == UNSYNCED) {
                *at = durable_at;
            }
        }
        // The turn's datagrams wait for the sync, unless the deliberate bug
        // sends them first.
        if !w.cfg.bugs.send_before_durable {
            self.hold = w.scenario.fsync_us;
        }
    }

    fn transmit(&mut self, _now: Instant, to: To<Addr>, bytes: Bytes) {
        let from = Addr::Replica(self.i);
        match to {
            To::One(a) => self.world.transmit_after(from, a, bytes, self.hold),
            To::Others => {
                for k in 0..self.world.others[self.i].len() {
                    let a = self.world.others[self.i][k];
                    self.world.transmit_after(from, a, bytes.clone(), self.hold);
                }
            }
        }
    }

    fn observe(&mut self, _now: Instant, effect: Effect) {
        let (w, i) = (&mut *self.world, self.i);
        match effect {
            Effect::Persist(records) => {
                // Durable at once under "process" (the page cache outlives
                // the process); under "power", once a sync covers it (see
                // `sync`).
                let durable_at = if w.scenario.fsync_us == 0 { w.now } else { UNSYNCED };
                if let Some((_, segment)) = w.replicas[i].journal.last_mut() {
                    segment.extend(records.into_iter().map(|r| (durable_at, r)));
                }
            }
            // The state of a stable checkpoint is on disk (the simulator
            // restores it from the replica): a new segment starts, and the
            // segments that can hold nothing above it within the log window go.
            Effect::StableCheckpoint { seq, .. } => {
                let window = w.cfg.log_window;
                let journal = &mut w.replicas[i].journal;
                journal.push((seq, Vec::new()));
                journal.retain(|(start, _)| start.0 + window > seq.0 || *start == seq);
            }
            Effect::Send { .. } => unreachable!("carry_out sends datagrams itself"),
            Effect::Executed(e) if self.correct => w.checkers.on_executed(i, &e, &w.replicas),
            Effect::CommittedTentative { seq } if self.correct => w.checkers.on_committed_tentative(i, seq, &w.replicas),
            Effect::RolledBack { seq } if self.correct => w.checkers.on_rolled_back(i, seq),
            Effect::ViewInstalled { .. } => w.stats.views_installed += 1,
            Effect::StateTransferred { .. } => w.stats.state_transfers += 1,
            _ => {}
        }
    }
}
