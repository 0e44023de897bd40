//! The host of one replica: a UDP socket, the replica's timers and the core,
//! on one thread.
//!
//! The loop waits for a datagram or the next deadline (a timer, or a datagram
//! the fault layer holds), hands inputs to the core with the current time, and
//! carries out the effects the core returns, in order.
//!
//! Clients' addresses are not in the cluster file: a replica learns a client's
//! address from the source of its requests, and only from a request whose MAC
//! the core accepted (no authentication drop was counted while handling it), so
//! a forger cannot divert a client's replies. Addresses are kept in a table
//! indexed by client id, bounded by the number of clients in the cluster.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pbft::adversary::{Adversary, FaultyMode};
use pbft::auth::KeyTable;
use pbft::service::Service;
use pbft::host::{Host, To};
use pbft::{ClientId, Effect, Instant, NodeId, Outbox, Received, Replica, ReplicaId, Restored, Timestamp};

use crate::cluster::Cluster;
use crate::error::NodeError;
use crate::faults::FaultConfig;
use crate::launcher::HUGE_PAGE_HEAP;
use crate::metrics::{ReplicaSnapshot, SharedSnapshot};
use crate::journal::{Durability, Journal};
use crate::store::{Store, Writer};
use crate::time::Clock;
use crate::transport::Transport;

/// How often the loop wakes up with nothing to do (to notice a stop request)
/// and publishes its metrics.
const HOUSEKEEPING_US: u64 = 100_000;

/// How to run a replica besides what the cluster file says.
#[derive(Clone, Debug, Default)]
pub struct HostOptions {
    /// Faults the transport injects into outgoing datagrams.
    pub faults: FaultConfig,
    /// Misbehaviour, for tests.
    pub faulty: Option<FaultyMode>,
    /// Bind this address instead of the one in the cluster file (for example
    /// 0.0.0.0:port behind a NAT).
    pub bind: Option<SocketAddr>,
    /// Keep the state here (see [`crate::store`]) and restart from it; `None`
    /// keeps it in memory only.
    pub state_dir: Option<std::path::PathBuf>,
}

/// One replica on one UDP socket.
pub struct ReplicaHost<S: Service> {
    replica: Replica<S>,
    transport: Transport,
    /// Every replica's address, by id.
    peers: Vec<SocketAddr>,
    /// The other replicas' addresses: where a multicast goes.
    others: Vec<SocketAddr>,
    /// Each client's last authenticated source address, by id.
    clients: Vec<Option<SocketAddr>>,
    /// Each client's newest request seen here and when it arrived, for the
    /// latency histogram.
    arrivals: Vec<Option<(Timestamp, Instant)>>,
    clock: Clock,
    out: Outbox,
    /// The datagrams of one turn (kept to reuse its allocation).
    arrived: Vec<(Bytes, SocketAddr)>,
    /// What this replica does wrong on purpose, when it runs a faulty mode.
    adversary: Option<Adversary<SocketAddr>>,
    /// Host-side metrics (histograms, address table); the core's are copied in
    /// when published.
    local: ReplicaSnapshot,
    shared: SharedSnapshot,
    /// Saves stable checkpoints in the background (durability "none").
    writer: Option<Writer>,
    /// The durable log, and the store its checkpoints are saved to before the
    /// replica speaks again (durability "process" or "power").
    durable: Option<(Journal, Store)>,
    /// A failure to make something durable: the replica sends nothing more
    /// and its loop stops with this error.
    fatal: Option<NodeError>,
    /// Where the cluster file says this replica serves its metrics.
    metrics_addr: Option<SocketAddr>,
    /// How long the loop polls before it sleeps (the cluster file's `spin_us`).
    spin: std::time::Duration,
}

impl<S: Service> ReplicaHost<S> {
    /// Binds replica `id`'s socket and creates the replica. `keys` must be the
    /// replica's (see [`Cluster::replica_keys`]).
    pub fn new(
        cluster: &Cluster,
        id: u16,
        keys: KeyTable,
        service: S,
        options: &HostOptions,
    ) -> Result<Self, NodeError> {
        let info = cluster.replica(id)?;
        let adversary = options.faulty.map(|mode| Adversary::new(mode, keys.clone(), cluster.config(), u64::from(id) + 1));
        // The port first: a second replica with the same id fails here,
        // before it touches the state directory.
        let transport = Transport::bind(options.bind.unwrap_or(info.addr), &options.faults)?;
        let cfg = cluster.config();
        let durability = cluster.file.protocol.durability;
        let recovery_started = std::time::Instant::now();
        let mut store = options.state_dir.as_deref().map(Store::open).transpose()?;
        let (journal, records) = match (&options.state_dir, durability) {
            (Some(dir), Durability::Process | Durability::Power) => {
                let (journal, records, found) = Journal::open(dir, durability, cfg.log_window)?;
                if let Some(why) = &found.damaged {
                    tracing::warn!(%why, "the durable log is damaged: set aside, rejoining without it (counted as faulty until caught up)");
                } else if found.torn_tail {
                    tracing::info!("the durable log ends in a record cut short by the crash: dropped (nothing it held was sent)");
                }
                (Some(journal), records)
            }
            _ => (None, Vec::new()),
        };
        let num_pages = Replica::<S>::total_pages(&cfg, &service);
        let saved = store.as_mut().map(|s| s.load(num_pages)).transpose()?.flatten();
        let replica = match (saved, journal.as_ref()) {
            (None, None) => Replica::new(cfg, ReplicaId(id), keys, service)?,
            (saved, _) => {
                let count = records.len();
                let anything = saved.is_some() || count > 0;
                let saved = saved.unwrap_or_else(|| pbft::SavedState { seq: pbft::SeqNo(0), digest: pbft::Digest::default(), pages: Vec::new() });
                let (replica, restored) = Replica::recover(cfg, ReplicaId(id), keys, service, saved, records)?;
                match restored {
                    Restored::Intact { .. } if !anything => {}
                    Restored::Intact { seq } => tracing::info!(
                        seq = seq.0,
                        records = count,
                        view = replica.view().0,
                        ms = recovery_started.elapsed().as_millis() as u64,
                        "restarted from the state on disk and its durable log"
                    ),
                    Restored::Damaged => {
                        tracing::warn!("the state on disk does not match its checkpoint: fetching what differs")
                    }
                }
                replica
            }
        };
        let max_clients = cluster.client_publics.len();
        Ok(ReplicaHost {
            replica,
            transport,
            peers: cluster.replicas.iter().map(|r| r.addr).collect(),
            others: cluster.replicas.iter().filter(|r| r.id != ReplicaId(id)).map(|r| r.addr).collect(),
            clients: vec![None; max_clients],
            arrivals: vec![None; max_clients],
            clock: Clock::new(),
            out: Outbox::new(),
            arrived: Vec::with_capacity(crate::transport::RECV_BATCH),
            adversary,
            local: ReplicaSnapshot::new(id),
            shared: Arc::new(Mutex::new(ReplicaSnapshot::new(id))),
            durable: match journal {
                // "process" survives the process being killed: the kernel
                // keeps what was written, so the saves need not wait for the disk.
                Some(journal) if durability == Durability::Process => store.take().map(|s| (journal, s.without_sync())),
                Some(journal) => store.take().map(|s| (journal, s)),
                None => None,
            },
            // With "none" nothing is promised across a crash: the saves
            // only spare a restarted replica a full state transfer, and they
            // need not wait for the disk either (the fsyncs of 40 saves a
            // second cost 6% of the cluster's CPU in the one-client benchmark).
            writer: store.map(|s| {
                let saved = s.saved();
                Writer::start(s.without_sync(), saved)
            }),
            fatal: None,
            metrics_addr: info.metrics_addr,
            spin: std::time::Duration::from_micros(cluster.file.protocol.spin_us),
        })
    }

    /// The slot this host publishes its metrics into (for [`crate::metrics::serve`]).
    pub fn snapshot(&self) -> SharedSnapshot {
        self.shared.clone()
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> Result<SocketAddr, NodeError> {
        self.transport.local_addr()
    }

    /// The replica (for inspection in tests).
    pub fn replica(&self) -> &Replica<S> {
        &self.replica
    }

    /// What a replica process does (`pbft replica`, `bfs replica`): runs
    /// until `stop` is set, serving the metrics endpoint the cluster file
    /// gives this replica meanwhile, and says in its log if its heap is not
    /// on huge pages. Sets `stop` when it returns, so the endpoint stops too.
    pub fn run_serving_metrics(&mut self, stop: &Arc<AtomicBool>) -> Result<(), NodeError> {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if !tunables.contains(HUGE_PAGE_HEAP) {
            tracing::info!(
                GLIBC_TUNABLES = %tunables,
                "heap not on transparent huge pages: state transfers run slower (GLIBC_TUNABLES={HUGE_PAGE_HEAP} turns them on)"
            );
        }
        let metrics = match self.metrics_addr {
            Some(addr) => {
                let thread = crate::metrics::serve(addr, self.snapshot(), stop.clone())?;
                tracing::info!(%addr, "serving metrics");
                Some(thread)
            }
            None => None,
        };
        let result = self.run(stop);
        stop.store(true, Ordering::Relaxed);
        if let Some(t) = metrics {
            let _ = t.join();
        }
        result
    }

    /// Runs until `stop` is set. Returns an error only if the socket fails.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), NodeError> {
        let now = self.clock.now();
        let faulty = self.adversary.as_ref().map(|a| a.mode().name());
        tracing::info!(replica = self.replica.id().0, addr = %self.transport.local_addr()?, faulty, "replica started");
        self.replica.start(now, &mut self.out);
        self.carry_out(now);
        let mut next_publish = now;
        while !stop.load(Ordering::Relaxed) {
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            let now = self.clock.now();
            if self.replica.poll_timeout().is_some_and(|at| at <= now) {
                self.replica.handle_timeout(now, &mut self.out);
                self.carry_out(now);
            }
            self.transport.release_due(now);
            if let Some(adversary) = self.adversary.as_mut() {
                for (to, bytes) in adversary.tick(now.as_us(), &self.replica, &self.peers) {
                    self.transport.send(now, to, bytes);
                }
            }
            if now >= next_publish {
                self.publish();
                next_publish = now.plus_us(HOUSEKEEPING_US);
            }
            let adversary = self.adversary.as_ref().and_then(|a| a.next_tick_us()).map(Instant);
            let wake = [self.replica.poll_timeout(), self.transport.next_release(), adversary, Some(next_publish)]
                .into_iter()
                .flatten()
                .min();
            let wait = self.clock.until(wake.unwrap_or(next_publish));
            // Everything that has arrived is handled in one turn: its records
            // are made durable together (one sync for all) and its datagrams
            // leave together (one sendmmsg).
            let mut arrived = std::mem::take(&mut self.arrived);
            self.transport.recv_batch(wait, self.spin, &mut arrived)?;
            if !arrived.is_empty() {
                for (bytes, from) in arrived.drain(..) {
                    self.on_datagram(bytes, from);
                }
                self.carry_out(self.clock.now());
            }
            self.arrived = arrived;
        }
        self.publish();
        tracing::info!(replica = self.replica.id().0, "replica stopped");
        Ok(())
    }

    fn on_datagram(&mut self, bytes: Bytes, from: SocketAddr) {
        if let Some(adversary) = self.adversary.as_mut() {
            adversary.observe(&bytes);
        }
        let now = self.clock.now();
        let received = self.replica.on_datagram(now, bytes, &mut self.out);
        if let Received::Authenticated { from: NodeId::Client(client), timestamp: Some(timestamp) } = received {
            // A request a backup forwarded comes from that backup's address.
            let forwarded = self.peers.contains(&from);
            if let (false, Some(slot)) = (forwarded, self.clients.get_mut(client.0 as usize)) {
                if *slot != Some(from) {
                    tracing::debug!(client = client.0, %from, "client address learned");
                }
                *slot = Some(from);
                let arrival = &mut self.arrivals[client.0 as usize];
                if arrival.is_none_or(|(t, _)| t < timestamp) {
                    *arrival = Some((timestamp, now));
                }
            }
        }
    }

    /// Carries out the core's effects, in order; the datagrams leave
    /// together at the end.
    fn carry_out(&mut self, now: Instant) {
        let mut out = std::mem::take(&mut self.out);
        let mut adversary = self.adversary.take();
        pbft::host::carry_out(self, now, &mut out, adversary.as_mut());
        self.adversary = adversary;
        self.out = out;
        self.transport.flush();
    }

    /// Copies the current metrics into the shared slot.
    fn publish(&mut self) {
        let r = &self.replica;
        // Progress of a state transfer, in the log too (the metrics have it).
        let pages = r.metrics().transfer_pages;
        if r.transferring() && pages != self.local.core.transfer_pages {
            tracing::info!(pages, bytes = r.metrics().transfer_bytes, "state transfer in progress");
        }
        self.local.core = r.metrics().clone();
        self.local.view = r.view().0;
        self.local.view_active = r.view_active();
        self.local.reply_cache_entries = r.reply_cache_entries();
        self.local.last_executed = r.last_executed().0;
        self.local.low_water_mark = r.low_water_mark().0;
        self.local.log_entries = r.log_len();
        self.local.request_queue = r.request_queue_len();
        self.local.known_requests = r.known_requests_len();
        self.local.read_only_queue = r.read_only_queue_len();
        self.local.transferring = r.transferring();
        self.local.transport = self.transport.stats();
        self.local.faults = self.transport.fault_stats();
        self.local.client_addresses = self.clients.iter().flatten().count();
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        *shared = self.local.clone();
    }
}

impl<S: Service> ReplicaHost<S> {
    /// Something could not be made durable: the replica must not speak again.
    fn fail(&mut self, e: NodeError) {
        tracing::error!(error = %e, "could not make the durable log or state durable: stopping");
        self.fatal.get_or_insert(e);
    }
}

impl<S: Service> Host for ReplicaHost<S> {
    type Addr = SocketAddr;

    fn replica(&self, r: ReplicaId) -> Option<SocketAddr> {
        self.peers.get(r.index()).copied()
    }

    fn others(&self) -> &[SocketAddr] {
        &self.others
    }

    fn client(&mut self, c: ClientId) -> Option<SocketAddr> {
        let addr = self.clients.get(c.0 as usize).copied().flatten();
        if addr.is_none() {
            self.local.replies_without_address += 1;
        }
        addr
    }

    fn sync(&mut self, _now: Instant, gating: bool) {
        if let Some((journal, _)) = self.durable.as_mut() {
            let done = if gating { journal.sync() } else { journal.write() };
            if let Err(e) = done {
                self.fail(e);
            }
        }
    }

    fn transmit(&mut self, now: Instant, to: To<SocketAddr>, bytes: Bytes) {
        if self.fatal.is_some() {
            return;
        }
        match to {
            To::Others => {
                for &addr in &self.others {
                    self.transport.queue(now, addr, bytes.clone());
                }
            }
            // A reply (or anything else to a client) is what someone waits
            // for: it leaves before the turn's messages to replicas.
            To::One(addr) if !self.peers.contains(&addr) => self.transport.queue_first(now, addr, bytes),
            To::One(addr) => self.transport.queue(now, addr, bytes),
        }
    }

    fn observe(&mut self, now: Instant, effect: Effect) {
        match effect {
            Effect::Send { .. } => unreachable!("carry_out sends datagrams itself"),
            Effect::Persist(records) => {
                if let Some((journal, _)) = self.durable.as_mut() {
                    journal.append(&records);
                }
            }
            Effect::Executed(e) => {
                self.local.batch_size.observe(e.requests.len() as f64);
                for (client, timestamp) in e.requests {
                    let Some(arrival) = self.arrivals.get_mut(client.0 as usize) else { continue };
                    if let Some((t, at)) = *arrival {
                        if t == timestamp {
                            self.local.request_latency.observe(now.as_us().saturating_sub(at.as_us()) as f64 / 1e6);
                            *arrival = None;
                        }
                    }
                }
                tracing::trace!(seq = e.seq.0, tentative = e.tentative, "executed");
            }
            Effect::StableCheckpoint { seq, digest } => {
                tracing::debug!(seq = seq.0, "stable checkpoint");
                // A later checkpoint that became stable in the same turn (a
                // replica catching up) has discarded this one; its own
                // effect follows and saves it. Saving this one would fail
                // and stop the replica.
                if self.replica.state().checkpoint_digest(seq).is_none() {
                    return;
                }
                if let Some((journal, store)) = self.durable.as_mut() {
                    // The state first, then the journal moves past it: the
                    // records since the checkpoint on disk are always kept.
                    let started = std::time::Instant::now();
                    let saved = journal
                        .sync()
                        .and_then(|()| store.save(self.replica.state(), seq, digest))
                        .and_then(|stats| journal.checkpoint_saved(seq).map(|()| stats));
                    match saved {
                        Ok(stats) => {
                            self.local.saved_pages += stats.pages;
                            // The replica waits for a save before it speaks:
                            // a long one (after a state transfer) is logged.
                            let ms = started.elapsed().as_secs_f64() * 1e3;
                            if ms >= 100.0 {
                                tracing::info!(seq = seq.0, pages = stats.pages, ms = ms.round(), "state saved");
                            }
                        }
                        Err(e) => self.fail(e),
                    }
                }
                if let Some(writer) = self.writer.as_mut() {
                    match writer.save(self.replica.state(), seq, digest) {
                        Ok(pages) => self.local.saved_pages += pages,
                        Err(e) => tracing::warn!(seq = seq.0, error = %e, "could not save the state"),
                    }
                }
            }
            Effect::StateTransferStarted { seq } => tracing::info!(seq = seq.0, "state transfer started"),
            Effect::StateTransferred { seq, pages, .. } => tracing::info!(seq = seq.0, pages, "state transferred"),
            Effect::ViewInstalled { view } => tracing::info!(view = view.0, "view installed"),
            Effect::RolledBack { seq } => tracing::info!(seq = seq.0, "tentative execution undone by a view change"),
            Effect::CommittedTentative { .. } => {}
        }
    }
}
