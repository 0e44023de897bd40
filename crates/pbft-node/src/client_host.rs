//! A blocking client of a cluster: one request at a time, each bounded by an
//! overall timeout.
//!
//! The client core decides where requests go, when to retransmit and when a
//! reply certificate is complete; this host only moves datagrams and keeps the
//! retransmission timer. A request that times out leaves the core with a
//! request outstanding, so the host replaces the core by a fresh one whose
//! timestamps start above every timestamp used so far (replicas drop requests
//! with old timestamps).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use pbft::auth::KeyTable;
use pbft::{Client, ClientEffect, ClientId, ClientOutbox, Config, Instant};

use crate::cluster::{read_secret, Cluster};
use crate::error::NodeError;
use crate::faults::FaultConfig;
use crate::time::{unix_micros, Clock};
use crate::transport::Transport;

/// How a client is run besides what the cluster file says.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Longest wait for one request's reply certificate.
    pub timeout: Duration,
    /// Faults injected into the client's outgoing datagrams.
    pub faults: FaultConfig,
    /// How long the client polls for replies before it sleeps; `None`: the
    /// cluster file's `spin_us`, as its replicas do.
    pub spin: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { timeout: Duration::from_secs(10), faults: FaultConfig::default(), spin: None }
    }
}

/// A client of a PBFT cluster over UDP.
pub struct ClusterClient {
    client: Client,
    cfg: Config,
    keys: KeyTable,
    transport: Transport,
    replicas: Vec<SocketAddr>,
    clock: Clock,
    out: ClientOutbox,
    timeout: Duration,
    /// Highest timestamp the core has used, as far as the host knows.
    last_timestamp: u64,
    /// Whether a request has completed, so every replica has seen this
    /// client's address (see [`ClusterClient::carry_out`]).
    introduced: bool,
    /// Datagrams taken by the last receive, kept for their allocation.
    arrived: Vec<(Bytes, SocketAddr)>,
    /// How long a wait for replies polls before it sleeps.
    spin: Duration,
}

impl ClusterClient {
    /// A client with id `id` and private key `secret`, with default options.
    pub fn connect(cluster: &Cluster, id: u32, secret: &[u8; 32]) -> Result<ClusterClient, NodeError> {
        let keys = cluster.client_keys_from_secret(id, secret, Path::new("the client's private key"))?;
        ClusterClient::with_keys(cluster, id, keys, &ClientOptions::default())
    }

    /// A client whose private key is in `key_path`.
    pub fn open(
        cluster: &Cluster,
        id: u32,
        key_path: &Path,
        options: &ClientOptions,
    ) -> Result<ClusterClient, NodeError> {
        cluster.check_client(id)?;
        let secret = read_secret(key_path)?;
        let keys = cluster.client_keys_from_secret(id, &secret, key_path)?;
        ClusterClient::with_keys(cluster, id, keys, options)
    }

    /// A client with session keys already derived.
    pub fn with_keys(
        cluster: &Cluster,
        id: u32,
        keys: KeyTable,
        options: &ClientOptions,
    ) -> Result<ClusterClient, NodeError> {
        let id = cluster.check_client(id)?;
        let replicas: Vec<SocketAddr> = cluster.replicas.iter().map(|r| r.addr).collect();
        let any: SocketAddr = match replicas.first() {
            Some(SocketAddr::V6(_)) => "[::]:0",
            _ => "0.0.0.0:0",
        }
        .parse()
        .map_err(|_| NodeError::Launch("unparsable wildcard address".into()))?;
        let transport = Transport::bind(any, &options.faults)?;
        let cfg = cluster.config();
        let last_timestamp = unix_micros();
        Ok(ClusterClient {
            client: Client::new(cfg.clone(), id, keys.clone(), last_timestamp),
            cfg,
            keys,
            transport,
            replicas,
            clock: Clock::new(),
            out: ClientOutbox::new(),
            timeout: options.timeout,
            last_timestamp,
            introduced: false,
            arrived: Vec::new(),
            spin: options.spin.unwrap_or(Duration::from_micros(cluster.file.protocol.spin_us)),
        })
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.client.id()
    }

    /// Sets the longest wait for one request.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The client core's counters (retransmissions, drops).
    pub fn metrics(&self) -> &pbft::metrics::Metrics {
        self.client.metrics()
    }

    /// Runs one operation to completion and returns its result, certified by a
    /// quorum of replicas.
    pub fn invoke(&mut self, op: Bytes, read_only: bool) -> Result<Bytes, NodeError> {
        let start = self.clock.now();
        let deadline = start.plus_us(self.timeout.as_micros() as u64);
        let timestamp = self.client.submit(start, op, read_only, &mut self.out)?;
        self.last_timestamp = self.last_timestamp.max(timestamp.0);
        if let Some(result) = self.carry_out(start) {
            return Ok(result);
        }
        loop {
            let now = self.clock.now();
            if now >= deadline {
                self.abandon();
                return Err(NodeError::Timeout(self.timeout));
            }
            if self.client.poll_timeout().is_some_and(|at| at <= now) {
                self.client.handle_timeout(now, &mut self.out);
                if let Some(result) = self.carry_out(now) {
                    return Ok(result);
                }
            }
            self.transport.release_due(now);
            let wake = [self.client.poll_timeout(), self.transport.next_release(), Some(deadline)].into_iter().flatten().min();
            let wait = self.clock.until(wake.unwrap_or(deadline));
            // Every reply that has arrived, in one system call.
            let mut arrived = std::mem::take(&mut self.arrived);
            self.transport.recv_batch(wait, self.spin, &mut arrived)?;
            let mut completed = None;
            for (bytes, _from) in arrived.drain(..) {
                // The core authenticates; where the datagram came from proves nothing.
                self.client.on_datagram(now, bytes, &mut self.out);
                completed = completed.or(self.carry_out(self.clock.now()));
            }
            self.arrived = arrived;
            if let Some(result) = completed {
                return Ok(result);
            }
        }
    }

    /// Gives up the outstanding request: a fresh core, with timestamps above
    /// any the old one may have used (a read-only request retried as read-write
    /// takes one more).
    fn abandon(&mut self) {
        let base = unix_micros().max(self.last_timestamp + 16);
        self.last_timestamp = base;
        self.client = Client::new(self.cfg.clone(), self.client.id(), self.keys.clone(), base);
        self.out = ClientOutbox::new();
    }

    /// Carries out the core's effects; returns a completed request's result.
    ///
    /// Replicas learn a client's address only from requests it sends them, and
    /// the core sends a read-write request to the primary alone; the backups'
    /// replies would then have nowhere to go until the first retransmission. So
    /// until a request has completed, the host sends every request to every
    /// replica (as a retransmission does).
    fn carry_out(&mut self, now: Instant) -> Option<Bytes> {
        let mut completed = None;
        let mut out = std::mem::take(&mut self.out);
        for effect in out.drain() {
            match effect {
                ClientEffect::Send { bytes, .. } if !self.introduced => {
                    for addr in &self.replicas {
                        self.transport.queue(now, *addr, bytes.clone());
                    }
                }
                ClientEffect::Send { to, bytes } => {
                    if let Some(addr) = self.replicas.get(to.index()) {
                        self.transport.queue(now, *addr, bytes);
                    }
                }
                ClientEffect::Completed { result, .. } => {
                    self.introduced = true;
                    completed = Some(result);
                }
            }
        }
        self.out = out;
        // A request to several replicas leaves in one system call.
        self.transport.flush();
        completed
    }
}
