//! Clients of a cluster: [`ClientGroup`], several PBFT clients on one socket
//! driven by one thread, and [`ClusterClient`], a blocking client (a group of
//! one). Each request is bounded by an overall timeout.
//!
//! The client core decides where requests go, when to retransmit and when a
//! reply certificate is complete; this host only moves datagrams and keeps the
//! retransmission timer. A request that times out leaves the core with a
//! request outstanding, so the host replaces the core by a fresh one whose
//! timestamps start above every timestamp used so far (replicas drop requests
//! with old timestamps).
//!
//! Each client of a group keeps its own id, keys and single outstanding
//! request, as PBFT requires; what they share is the socket and its system
//! calls. Replicas learn a client's address from its authenticated requests,
//! so the replies for every member come back to the one socket, and one
//! `recvmmsg` takes them all; requests submitted together leave in one
//! `sendmmsg`. A reply is routed by the client and timestamp it claims
//! ([`pbft::wire::claimed_reply`]), which only chooses the core that
//! authenticates it: a reply for no outstanding request is dropped and counted
//! before its MAC is checked, as the core would drop it after.

use std::collections::HashMap;
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

/// Replies a [`ClientGroup`] dropped without offering them to a client core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// For a member with no outstanding request, or for an earlier one.
    pub stale_replies: u64,
    /// Not a reply, or naming a client outside the group.
    pub unroutable: u64,
}

/// One request's outcome in a [`ClientGroup`]: the member that sent it, and
/// its certified result or why there is none.
pub type Completion = (usize, Result<Bytes, NodeError>);

/// Several PBFT clients of one cluster on one socket, driven by one thread.
pub struct ClientGroup {
    members: Vec<Member>,
    /// Member index by client id.
    index: HashMap<ClientId, usize>,
    cfg: Config,
    transport: Transport,
    replicas: Vec<SocketAddr>,
    clock: Clock,
    timeout: Duration,
    /// How long a wait for replies polls before it sleeps.
    spin: Duration,
    /// Datagrams taken by the last receive, kept for their allocation.
    arrived: Vec<(Bytes, SocketAddr)>,
    /// Members whose request completed or failed, not yet handed out.
    completed: Vec<Completion>,
    stats: GroupStats,
}

/// One client of a group.
struct Member {
    client: Client,
    keys: KeyTable,
    out: ClientOutbox,
    /// When the outstanding request is given up.
    deadline: Option<Instant>,
    /// Highest timestamp the core has used, as far as the host knows.
    last_timestamp: u64,
    /// Whether a request has completed, so every replica has seen this
    /// client's address (see [`ClientGroup::carry_out`]).
    introduced: bool,
}

impl ClientGroup {
    /// A group of the clients `members` (id and private key file each).
    pub fn open(cluster: &Cluster, members: &[(u32, &Path)], options: &ClientOptions) -> Result<ClientGroup, NodeError> {
        let mut keyed = Vec::with_capacity(members.len());
        for &(id, key_path) in members {
            cluster.check_client(id)?;
            let secret = read_secret(key_path)?;
            keyed.push((id, cluster.client_keys_from_secret(id, &secret, key_path)?));
        }
        ClientGroup::with_keys(cluster, keyed, options)
    }

    /// A group of clients whose session keys are already derived.
    pub fn with_keys(cluster: &Cluster, members: Vec<(u32, KeyTable)>, options: &ClientOptions) -> Result<ClientGroup, NodeError> {
        let replicas: Vec<SocketAddr> = cluster.replicas.iter().map(|r| r.addr).collect();
        let any: SocketAddr = match replicas.first() {
            Some(SocketAddr::V6(_)) => "[::]:0",
            _ => "0.0.0.0:0",
        }
        .parse()
        .map_err(|_| NodeError::Launch("unparsable wildcard address".into()))?;
        let transport = Transport::bind(any, &options.faults)?;
        let cfg = cluster.config();
        let base = unix_micros();
        let mut index = HashMap::new();
        let mut group = Vec::with_capacity(members.len());
        for (id, keys) in members {
            let id = cluster.check_client(id)?;
            if index.insert(id, group.len()).is_some() {
                return Err(NodeError::Launch(format!("client {} is in the group twice", id.0)));
            }
            group.push(Member {
                client: Client::new(cfg.clone(), id, keys.clone(), base),
                keys,
                out: ClientOutbox::new(),
                deadline: None,
                last_timestamp: base,
                introduced: false,
            });
        }
        Ok(ClientGroup {
            members: group,
            index,
            cfg,
            transport,
            replicas,
            clock: Clock::new(),
            timeout: options.timeout,
            spin: options.spin.unwrap_or(Duration::from_micros(cluster.file.protocol.spin_us)),
            arrived: Vec::new(),
            completed: Vec::new(),
            stats: GroupStats::default(),
        })
    }

    /// How many clients the group has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has no clients.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `member`'s client id.
    pub fn id(&self, member: usize) -> Option<ClientId> {
        self.members.get(member).map(|m| m.client.id())
    }

    /// Sets the longest wait for one request.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Member `member`'s core counters (retransmissions, drops).
    pub fn metrics(&self, member: usize) -> Option<&pbft::metrics::Metrics> {
        self.members.get(member).map(|m| m.client.metrics())
    }

    /// Replies dropped before any core saw them.
    pub fn stats(&self) -> GroupStats {
        self.stats
    }

    /// The socket's traffic: datagrams, bundles, system calls.
    pub fn transport_stats(&self) -> crate::transport::TransportStats {
        self.transport.stats()
    }

    /// Whether any member has a request outstanding.
    pub fn is_busy(&self) -> bool {
        self.members.iter().any(|m| m.client.is_busy())
    }

    /// Starts an operation for member `member`; its outcome comes from
    /// [`ClientGroup::wait`]. The request leaves at the next `wait`, with
    /// those of every member submitted before it, in one system call.
    pub fn submit(&mut self, member: usize, op: Bytes, read_only: bool) -> Result<(), NodeError> {
        let count = self.members.len();
        let m = self.members.get_mut(member).ok_or(NodeError::UnknownId { what: "group member", id: member as u64, count })?;
        let now = self.clock.now();
        let timestamp = m.client.submit(now, op, read_only, &mut m.out)?;
        m.last_timestamp = m.last_timestamp.max(timestamp.0);
        m.deadline = Some(now.plus_us(self.timeout.as_micros() as u64));
        self.carry_out(member, now);
        Ok(())
    }

    /// Waits until at least one outstanding request has completed or timed
    /// out, and appends every such outcome to `done`. Returns at once when
    /// no request is outstanding. An error is the socket's; the requests
    /// outstanding stay so.
    pub fn wait(&mut self, done: &mut Vec<Completion>) -> Result<(), NodeError> {
        loop {
            self.transport.flush();
            let now = self.clock.now();
            let mut wake: Option<Instant> = None;
            for i in 0..self.members.len() {
                let m = &mut self.members[i];
                let Some(deadline) = m.deadline else { continue };
                if now >= deadline {
                    self.abandon(i);
                    self.completed.push((i, Err(NodeError::Timeout(self.timeout))));
                    continue;
                }
                if m.client.poll_timeout().is_some_and(|at| at <= now) {
                    m.client.handle_timeout(now, &mut m.out);
                    self.carry_out(i, now);
                }
                let m = &self.members[i];
                if m.deadline.is_some() {
                    wake = [wake, m.client.poll_timeout(), m.deadline].into_iter().flatten().min();
                }
            }
            if !self.completed.is_empty() {
                self.transport.flush();
                done.append(&mut self.completed);
                return Ok(());
            }
            let Some(mut wake) = wake else { return Ok(()) };
            self.transport.release_due(now);
            if let Some(release) = self.transport.next_release() {
                wake = wake.min(release);
            }
            let wait = self.clock.until(wake);
            // Every reply that has arrived, for any member, in one system call.
            let mut arrived = std::mem::take(&mut self.arrived);
            self.transport.recv_batch(wait, self.spin, &mut arrived)?;
            let now = self.clock.now();
            for (bytes, _from) in arrived.drain(..) {
                self.route(now, bytes);
            }
            self.arrived = arrived;
        }
    }

    /// Offers a datagram to the core of the member it claims to be for; the
    /// core authenticates it (where it came from proves nothing).
    fn route(&mut self, now: Instant, bytes: Bytes) {
        let Some((client, timestamp)) = pbft::wire::claimed_reply(&bytes) else {
            self.stats.unroutable += 1;
            return;
        };
        let Some(&i) = self.index.get(&client) else {
            self.stats.unroutable += 1;
            return;
        };
        let m = &mut self.members[i];
        if m.client.pending_timestamp() != Some(timestamp) {
            self.stats.stale_replies += 1;
            return;
        }
        m.client.on_datagram(now, bytes, &mut m.out);
        self.carry_out(i, now);
    }

    /// Gives up member `i`'s outstanding request: a fresh core, with
    /// timestamps above any the old one may have used (a read-only request
    /// retried as read-write takes one more).
    fn abandon(&mut self, i: usize) {
        let m = &mut self.members[i];
        let base = unix_micros().max(m.last_timestamp + 16);
        m.last_timestamp = base;
        m.client = Client::new(self.cfg.clone(), m.client.id(), m.keys.clone(), base);
        m.out = ClientOutbox::new();
        m.deadline = None;
    }

    /// Queues member `i`'s outgoing datagrams and records a completed
    /// request.
    ///
    /// Replicas learn a client's address only from requests it sends them, and
    /// the core sends a read-write request to the primary alone; the backups'
    /// replies would then have nowhere to go until the first retransmission. So
    /// until a request has completed, the host sends every request to every
    /// replica (as a retransmission does).
    fn carry_out(&mut self, i: usize, now: Instant) {
        let m = &mut self.members[i];
        for effect in m.out.drain() {
            match effect {
                ClientEffect::Send { bytes, .. } if !m.introduced => {
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
                    m.introduced = true;
                    m.deadline = None;
                    self.completed.push((i, Ok(result)));
                }
            }
        }
    }
}

/// A blocking client of a PBFT cluster over UDP: a group of one.
pub struct ClusterClient {
    group: ClientGroup,
    /// The outcomes [`ClientGroup::wait`] hands out, kept for their allocation.
    done: Vec<Completion>,
}

impl ClusterClient {
    /// A client with id `id` and private key `secret`, with default options.
    pub fn connect(cluster: &Cluster, id: u32, secret: &[u8; 32]) -> Result<ClusterClient, NodeError> {
        let keys = cluster.client_keys_from_secret(id, secret, Path::new("the client's private key"))?;
        ClusterClient::with_keys(cluster, id, keys, &ClientOptions::default())
    }

    /// A client whose private key is in `key_path`.
    pub fn open(cluster: &Cluster, id: u32, key_path: &Path, options: &ClientOptions) -> Result<ClusterClient, NodeError> {
        Ok(ClusterClient { group: ClientGroup::open(cluster, &[(id, key_path)], options)?, done: Vec::new() })
    }

    /// A client with session keys already derived.
    pub fn with_keys(cluster: &Cluster, id: u32, keys: KeyTable, options: &ClientOptions) -> Result<ClusterClient, NodeError> {
        Ok(ClusterClient { group: ClientGroup::with_keys(cluster, vec![(id, keys)], options)?, done: Vec::new() })
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.group.members[0].client.id()
    }

    /// Sets the longest wait for one request.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.group.set_timeout(timeout);
    }

    /// The client core's counters (retransmissions, drops).
    pub fn metrics(&self) -> &pbft::metrics::Metrics {
        self.group.members[0].client.metrics()
    }

    /// Runs one operation to completion and returns its result, certified by a
    /// quorum of replicas.
    pub fn invoke(&mut self, op: Bytes, read_only: bool) -> Result<Bytes, NodeError> {
        self.group.submit(0, op, read_only)?;
        loop {
            if let Err(e) = self.group.wait(&mut self.done) {
                // Free the client for the next request.
                self.group.abandon(0);
                return Err(e);
            }
            if let Some((_, outcome)) = self.done.pop() {
                self.done.clear();
                return outcome;
            }
        }
    }
}
