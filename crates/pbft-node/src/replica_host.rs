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
use pbft::adversary::{HeldPrePrepares, Liar, Lie};
use pbft::auth::KeyTable;
use pbft::service::Service;
use pbft::{Dest, Effect, Instant, NodeId, Outbox, Received, Replica, ReplicaId, Restored, Timestamp};

use crate::cluster::Cluster;
use crate::error::NodeError;
use crate::faults::FaultConfig;
use crate::launcher::HUGE_PAGE_HEAP;
use crate::metrics::{ReplicaSnapshot, SharedSnapshot};
use crate::store::{Store, Writer};
use crate::time::Clock;
use crate::transport::Transport;

/// How often the loop wakes up with nothing to do (to notice a stop request)
/// and publishes its metrics.
const HOUSEKEEPING_US: u64 = 100_000;

/// A replica that misbehaves on purpose, for tests with real processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultyMode {
    /// Receives everything and sends nothing (a crashed or partitioned replica
    /// that still holds its port).
    Silent,
    /// Sends clients a made-up result, with valid MACs.
    WrongReply,
    /// Sends PREPARE and COMMIT with wrong digests, with valid MACs.
    BadDigest,
    /// Corrupts its MACs and sends every message again in another replica's name.
    Forge,
    /// Sends CHECKPOINT with wrong state digests, with valid MACs.
    LyingCheckpoint,
    /// As primary, holds every pre-prepare for 90% of the view-change timeout
    /// before sending it: the slowest primary the backups put up with.
    SlowPrimary,
}

impl FaultyMode {
    /// Every mode, as the command lines name them.
    pub const ALL: [FaultyMode; 6] = [
        FaultyMode::Silent,
        FaultyMode::WrongReply,
        FaultyMode::BadDigest,
        FaultyMode::Forge,
        FaultyMode::LyingCheckpoint,
        FaultyMode::SlowPrimary,
    ];

    /// The mode's name on a command line (`--faulty NAME`).
    pub fn name(self) -> &'static str {
        match self {
            FaultyMode::Silent => "silent",
            FaultyMode::WrongReply => "wrong-reply",
            FaultyMode::BadDigest => "bad-digest",
            FaultyMode::Forge => "forge",
            FaultyMode::LyingCheckpoint => "lying-checkpoint",
            FaultyMode::SlowPrimary => "slow-primary",
        }
    }

    /// The lie the shared adversary tells for this mode, if it rewrites messages.
    fn lie(self) -> Option<Lie> {
        match self {
            FaultyMode::Silent => None,
            FaultyMode::WrongReply => Some(Lie::WrongReplies),
            FaultyMode::BadDigest => Some(Lie::WrongDigests),
            FaultyMode::Forge => Some(Lie::ForgeMacs),
            FaultyMode::LyingCheckpoint => Some(Lie::LyingCheckpoints),
            FaultyMode::SlowPrimary => None,
        }
    }
}

impl std::str::FromStr for FaultyMode {
    type Err = String;

    /// A mode by its name (`FaultyMode::name`), for `pbft replica --faulty`
    /// and `bfs replica --faulty` alike.
    fn from_str(s: &str) -> Result<FaultyMode, String> {
        FaultyMode::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<&str> = FaultyMode::ALL.iter().map(|m| m.name()).collect();
            format!("unknown faulty mode {s:?}; one of: {}", names.join(", "))
        })
    }
}

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
    faulty: Option<FaultyMode>,
    /// Rewrites what this replica sends when it runs a lying faulty mode.
    liar: Option<Liar>,
    /// Host-side metrics (histograms, address table); the core's are copied in
    /// when published.
    local: ReplicaSnapshot,
    shared: SharedSnapshot,
    writer: Option<Writer>,
    /// A slow primary's held pre-prepares.
    held: HeldPrePrepares<Dest>,
    /// Where the cluster file says this replica serves its metrics.
    metrics_addr: Option<SocketAddr>,
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
        let liar = options
            .faulty
            .and_then(FaultyMode::lie)
            .map(|lie| Liar::new(lie, keys.clone(), cluster.replicas.len(), u64::from(id) + 1));
        let mut store = options.state_dir.as_deref().map(Store::open).transpose()?;
        let num_pages = Replica::<S>::total_pages(&cluster.config(), &service);
        let replica = match store.as_mut().map(|s| s.load(num_pages)).transpose()?.flatten() {
            Some(saved) => {
                let (replica, restored) = Replica::restore(cluster.config(), ReplicaId(id), keys, service, saved)?;
                match restored {
                    Restored::Intact { seq } => tracing::info!(seq = seq.0, "restarted from the state on disk"),
                    Restored::Damaged => {
                        tracing::warn!("the state on disk does not match its checkpoint: fetching what differs")
                    }
                }
                replica
            }
            None => Replica::new(cluster.config(), ReplicaId(id), keys, service)?,
        };
        let transport = Transport::bind(options.bind.unwrap_or(info.addr), &options.faults)?;
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
            faulty: options.faulty,
            liar,
            local: ReplicaSnapshot::new(id),
            shared: Arc::new(Mutex::new(ReplicaSnapshot::new(id))),
            writer: store.map(|s| {
                let saved = s.saved();
                Writer::start(s, saved)
            }),
            held: HeldPrePrepares::default(),
            metrics_addr: info.metrics_addr,
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
        tracing::info!(replica = self.replica.id().0, addr = %self.transport.local_addr()?, faulty = ?self.faulty, "replica started");
        if self.faulty.is_none() {
            self.replica.start(now, &mut self.out);
            self.carry_out(now);
        }
        let mut next_publish = now;
        while !stop.load(Ordering::Relaxed) {
            let now = self.clock.now();
            if self.replica.poll_timeout().is_some_and(|at| at <= now) {
                self.replica.handle_timeout(now, &mut self.out);
                self.carry_out(now);
            }
            self.transport.release_due(now);
            for (to, bytes) in self.held.release_due(now.as_us()) {
                self.send(now, to, bytes);
            }
            if now >= next_publish {
                self.publish();
                next_publish = now.plus_us(HOUSEKEEPING_US);
            }
            let held = self.held.next_release_us().map(Instant);
            let wake = [self.replica.poll_timeout(), self.transport.next_release(), held, Some(next_publish)]
                .into_iter()
                .flatten()
                .min();
            let wait = self.clock.until(wake.unwrap_or(next_publish));
            if let Some((bytes, from)) = self.transport.recv(wait)? {
                self.on_datagram(bytes, from);
            }
        }
        self.publish();
        tracing::info!(replica = self.replica.id().0, "replica stopped");
        Ok(())
    }

    fn on_datagram(&mut self, bytes: Bytes, from: SocketAddr) {
        if self.faulty == Some(FaultyMode::Silent) {
            return;
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
        self.carry_out(now);
    }

    /// Carries out the core's effects, in order.
    fn carry_out(&mut self, now: Instant) {
        let mut out = std::mem::take(&mut self.out);
        let max_message_bytes = self.replica.config().max_message_bytes;
        for effect in out.drain() {
            // A lying replica sends its rewrites instead (to the same destination).
            let effects = match (effect, self.liar.as_mut()) {
                (Effect::Send { to, bytes }, Some(liar)) => liar
                    .rewrite(bytes, max_message_bytes)
                    .into_iter()
                    .map(|bytes| Effect::Send { to, bytes })
                    .collect::<Vec<_>>(),
                (effect, _) => vec![effect],
            };
            for effect in effects {
                self.carry_out_one(now, effect);
            }
        }
        self.out = out;
    }

    fn send(&mut self, now: Instant, to: Dest, bytes: Bytes) {
        match to {
            Dest::Replica(r) => {
                if let Some(addr) = self.peers.get(r.index()) {
                    self.transport.send(now, *addr, bytes);
                }
            }
            Dest::AllReplicas => {
                self.transport.send_many(now, &self.others, &bytes);
            }
            Dest::Client(c) => match self.clients.get(c.0 as usize).copied().flatten() {
                Some(addr) => self.transport.send(now, addr, bytes),
                None => self.local.replies_without_address += 1,
            },
        }
    }

    fn carry_out_one(&mut self, now: Instant, effect: Effect) {
        {
            match effect {
                Effect::Send { to, bytes } if self.faulty == Some(FaultyMode::SlowPrimary) => {
                    if let Some((to, bytes)) = self.held.hold(now.as_us(), self.replica.config(), to, bytes) {
                        self.send(now, to, bytes);
                    }
                }
                Effect::Send { to, bytes } => self.send(now, to, bytes),
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

#[cfg(test)]
mod tests {
    use super::FaultyMode;

    #[test]
    fn every_faulty_mode_parses_from_its_name_and_nothing_else_does() {
        for mode in FaultyMode::ALL {
            assert_eq!(mode.name().parse::<FaultyMode>(), Ok(mode));
        }
        let err = "bogus".parse::<FaultyMode>().expect_err("no such mode");
        assert!(err.contains("slow-primary") && err.contains("wrong-reply"), "{err}");
    }
}
