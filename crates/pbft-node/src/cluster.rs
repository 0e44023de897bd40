//! The cluster file and private key files.
//!
//! A cluster file (TOML) is public: it lists f, the protocol parameters, and
//! every replica's id, address and public key, and every client's id and public
//! key. The same file serves every replica and client, on one host or on many.
//! Each principal's private key lives in a file of its own, 32 bytes in hex,
//! readable by its owner only (a key file that others can read is refused).
//!
//! ```toml
//! f = 1
//!
//! [protocol]
//! checkpoint_interval = 128
//! status_interval_ms = 100
//!
//! [service]
//! kv_pages = 1024
//!
//! [[replica]]
//! id = 0
//! addr = "127.0.0.1:7000"
//! metrics_addr = "127.0.0.1:7100"
//! public_key = "<64 hex digits>"
//!
//! [[client]]
//! id = 0
//! public_key = "<64 hex digits>"
//! ```
//!
//! Invariant: a [`Cluster`] is only made from a file that passed every check
//! (ids `0..n` and `0..clients` each exactly once, n = 3f + 1, addresses that
//! resolve, keys of the right size, parameters the core accepts), so the rest of
//! the runtime never meets a malformed cluster.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pbft::auth::{public_key, KeyTable};
use pbft::{ClientId, Config, NodeId, ReplicaId};
use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// The cluster file as written on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Faults tolerated; the file must list n = 3f + 1 replicas.
    pub f: usize,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub service: ServiceParams,
    #[serde(rename = "replica", default)]
    pub replicas: Vec<ReplicaEntry>,
    #[serde(rename = "client", default)]
    pub clients: Vec<ClientEntry>,
}

/// Most a replica may poll before it sleeps ([`Protocol::spin_us`]).
pub const MAX_SPIN_US: u64 = 10_000;

/// Protocol parameters; any left out take the core's defaults
/// ([`pbft::Config::new`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protocol {
    /// K: a checkpoint every K sequence numbers.
    pub checkpoint_interval: u64,
    /// L: the log window, a multiple of K.
    pub log_window: u64,
    pub max_batch_requests: usize,
    pub max_batch_bytes: usize,
    pub max_outstanding_batches: u64,
    /// Operations larger than this go to every replica and are ordered by digest.
    pub large_request_threshold: usize,
    /// Results larger than this come in full from one replica and as a
    /// digest from the others; smaller ones in full from all (0: always
    /// digest replies, as in the papers).
    pub digest_reply_threshold: usize,
    pub max_request_queue: usize,
    pub status_interval_ms: u64,
    /// How long a backup waits for a request to execute before it asks for
    /// the next view (doubled at each view change that does not complete).
    /// Raise it on hosts so loaded that correct primaries look slow.
    pub view_change_timeout_ms: u64,
    pub client_retransmit_ms: u64,
    /// Largest clock skew accepted in the primary's non-deterministic time.
    pub nondet_skew_ms: u64,
    pub tentative_execution: bool,
    pub read_only_optimization: bool,
    /// Largest operation a client may send (BFS needs 32 KiB WRITEs to fit).
    pub max_op_bytes: usize,
    /// Largest result a replica may return (BFS needs 32 KiB READs to fit).
    pub max_reply_bytes: usize,
    /// What a replica makes durable before it speaks: "process" (survives
    /// every replica process killed at once), "power" (fdatasync: survives
    /// every replica losing power at once) or "none" (the papers' behaviour).
    pub durability: crate::journal::Durability,
    /// Microseconds a replica keeps polling its socket, yielding the CPU
    /// between polls, before it sleeps for the next datagram (default 200; 0:
    /// it sleeps at once); clients that load this file poll as long for their
    /// replies. Waking a sleeping process is most of an operation's cost on
    /// one host; polling trades CPU for latency (README, "Benchmarks").
    /// At most 10,000.
    pub spin_us: u64,
}

impl Default for Protocol {
    fn default() -> Self {
        let c = Config::new(1);
        Protocol {
            checkpoint_interval: c.checkpoint_interval,
            log_window: c.log_window,
            max_batch_requests: c.max_batch_requests,
            max_batch_bytes: c.max_batch_bytes,
            max_outstanding_batches: c.max_outstanding_batches,
            large_request_threshold: c.large_request_threshold,
            digest_reply_threshold: c.digest_reply_threshold,
            max_request_queue: c.max_request_queue,
            status_interval_ms: c.status_interval_us / 1000,
            view_change_timeout_ms: c.view_change_timeout_us / 1000,
            client_retransmit_ms: c.client_retransmit_us / 1000,
            nondet_skew_ms: c.nondet_skew_us / 1000,
            tentative_execution: c.tentative_execution,
            read_only_optimization: c.read_only_optimization,
            max_op_bytes: c.max_op_bytes,
            max_reply_bytes: c.max_reply_bytes,
            durability: crate::journal::Durability::default(),
            spin_us: 200,
        }
    }
}

/// Parameters of the replicated service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceParams {
    /// Pages (4 KiB) of key-value state.
    pub kv_pages: u64,
    /// Pages (4 KiB) of BFS state; pages never written cost no memory.
    pub bfs_pages: u64,
    /// Whether BFS maps AUTH_UNIX uid 0 to the anonymous user.
    pub bfs_root_squash: bool,
}

impl Default for ServiceParams {
    fn default() -> Self {
        ServiceParams { kv_pages: 1024, bfs_pages: 1 << 18, bfs_root_squash: false }
    }
}

/// One `[[replica]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEntry {
    pub id: u16,
    /// "ip:port" (or "host:port") of the replica's UDP socket.
    pub addr: String,
    /// Where the replica serves Prometheus metrics over HTTP, if anywhere.
    /// `keygen` puts it on the loopback address of the replica's host, so
    /// that only that host can read it; an address others can reach here
    /// exposes the metrics to them (see the README for what they show).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// X25519 public key, 64 hex digits.
    pub public_key: String,
}

/// One `[[client]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    pub id: u32,
    /// X25519 public key, 64 hex digits.
    pub public_key: String,
}

/// A replica as the runtime uses it: addresses resolved, key decoded.
#[derive(Clone, Debug)]
pub struct ReplicaInfo {
    pub id: ReplicaId,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub public_key: [u8; 32],
}

/// A checked cluster file.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Where it was read from (key files default to its directory).
    pub path: PathBuf,
    pub file: ClusterFile,
    /// Indexed by replica id.
    pub replicas: Vec<ReplicaInfo>,
    /// Indexed by client id.
    pub client_publics: Vec<[u8; 32]>,
    config: Config,
}

impl Cluster {
    /// Reads and checks a cluster file.
    pub fn load(path: &Path) -> Result<Cluster, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::File { path: path.into(), source })?;
        let file: ClusterFile = toml::from_str(&text)
            .map_err(|e| NodeError::Malformed { path: path.into(), message: one_line_toml_error(&text, &e) })?;
        Cluster::from_file(file, path)
    }

    /// Checks a cluster file already parsed; `path` is used in messages and for
    /// the default key file locations.
    pub fn from_file(file: ClusterFile, path: &Path) -> Result<Cluster, NodeError> {
        let invalid = |message: String| NodeError::Invalid { path: path.into(), message };
        let mut config = Config::new(file.f);
        let p = &file.protocol;
        config.max_clients = u32::try_from(file.clients.len()).map_err(|_| invalid("too many clients".into()))?;
        config.checkpoint_interval = p.checkpoint_interval;
        config.log_window = p.log_window;
        config.max_batch_requests = p.max_batch_requests;
        config.max_batch_bytes = p.max_batch_bytes;
        config.max_outstanding_batches = p.max_outstanding_batches;
        config.large_request_threshold = p.large_request_threshold;
        config.digest_reply_threshold = p.digest_reply_threshold;
        config.max_request_queue = p.max_request_queue;
        config.status_interval_us = p.status_interval_ms.saturating_mul(1000);
        config.view_change_timeout_us = p.view_change_timeout_ms.saturating_mul(1000);
        config.client_retransmit_us = p.client_retransmit_ms.saturating_mul(1000);
        config.nondet_skew_us = p.nondet_skew_ms.saturating_mul(1000);
        config.tentative_execution = p.tentative_execution;
        config.read_only_optimization = p.read_only_optimization;
        config.max_op_bytes = p.max_op_bytes;
        config.max_reply_bytes = p.max_reply_bytes;
        config.journal = p.durability != crate::journal::Durability::None;
        config.validate().map_err(|e| invalid(e.to_string()))?;
        if p.status_interval_ms == 0 || p.client_retransmit_ms == 0 || p.view_change_timeout_ms == 0 {
            return Err(invalid(
                "status_interval_ms, view_change_timeout_ms and client_retransmit_ms must be positive".into(),
            ));
        }
        if p.spin_us > MAX_SPIN_US {
            return Err(invalid(format!("spin_us = {} is above the most allowed, {MAX_SPIN_US}", p.spin_us)));
        }
        if file.replicas.len() != config.n() {
            return Err(invalid(format!(
                "f = {} needs {} [[replica]] entries, found {}",
                file.f,
                config.n(),
                file.replicas.len()
            )));
        }
        if file.clients.is_empty() {
            return Err(invalid("no [[client]] entries".into()));
        }
        let mut replicas: Vec<Option<ReplicaInfo>> = vec![None; config.n()];
        for r in &file.replicas {
            let slot = replicas
                .get_mut(r.id as usize)
                .ok_or_else(|| invalid(format!("replica id {} is not in 0..{}", r.id, config.n())))?;
            if slot.is_some() {
                return Err(invalid(format!("replica id {} appears twice", r.id)));
            }
            let what = format!("replica {}", r.id);
            let addr = resolve(&r.addr).map_err(|m| invalid(format!("{what}: addr: {m}")))?;
            let metrics_addr = match &r.metrics_addr {
                Some(a) => Some(resolve(a).map_err(|m| invalid(format!("{what}: metrics_addr: {m}")))?),
                None => None,
            };
            let public_key = parse_key_hex(&r.public_key).map_err(|m| invalid(format!("{what}: public_key: {m}")))?;
            *slot = Some(ReplicaInfo { id: ReplicaId(r.id), addr, metrics_addr, public_key });
        }
        let replicas: Vec<ReplicaInfo> = replicas.into_iter().flatten().collect();
        for (i, a) in replicas.iter().enumerate() {
            if let Some(j) = replicas[..i].iter().position(|b| b.addr == a.addr) {
                return Err(invalid(format!("replicas {j} and {i} share the address {}", a.addr)));
            }
        }
        let mut client_publics: Vec<Option<[u8; 32]>> = vec![None; file.clients.len()];
        for c in &file.clients {
            let slot = client_publics
                .get_mut(c.id as usize)
                .ok_or_else(|| invalid(format!("client id {} is not in 0..{}", c.id, file.clients.len())))?;
            if slot.is_some() {
                return Err(invalid(format!("client id {} appears twice", c.id)));
            }
            *slot =
                Some(parse_key_hex(&c.public_key).map_err(|m| invalid(format!("client {}: public_key: {m}", c.id)))?);
        }
        let client_publics = client_publics.into_iter().flatten().collect();
        Ok(Cluster { path: path.into(), file, replicas, client_publics, config })
    }

    /// The core's configuration.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// n = 3f + 1.
    pub fn n(&self) -> usize {
        self.replicas.len()
    }

    /// The replica with this id, or an error naming it.
    pub fn replica(&self, id: u16) -> Result<&ReplicaInfo, NodeError> {
        self.replicas.get(id as usize).ok_or(NodeError::UnknownId { what: "replica", id: id.into(), count: self.n() })
    }

    /// Checks that a client id is listed.
    pub fn check_client(&self, id: u32) -> Result<ClientId, NodeError> {
        if (id as usize) < self.client_publics.len() {
            Ok(ClientId(id))
        } else {
            Err(NodeError::UnknownId { what: "client", id: id.into(), count: self.client_publics.len() })
        }
    }

    /// Every replica's public key, by id.
    pub fn replica_publics(&self) -> Vec<[u8; 32]> {
        self.replicas.iter().map(|r| r.public_key).collect()
    }

    /// Where `keygen` puts replica `id`'s private key: beside the cluster file.
    pub fn default_replica_key_path(&self, id: u16) -> PathBuf {
        self.dir().join(replica_key_file_name(id))
    }

    /// Where replica `id` keeps its state unless told otherwise: beside the cluster file.
    pub fn default_state_dir(&self, id: u16) -> PathBuf {
        self.dir().join(format!("replica-{id}-state"))
    }

    /// Where `keygen` puts client `id`'s private key: beside the cluster file.
    pub fn default_client_key_path(&self, id: u32) -> PathBuf {
        self.dir().join(client_key_file_name(id))
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Replica `id`'s session keys, from its private key file, which must match
    /// the public key the cluster file lists.
    pub fn replica_keys(&self, id: u16, key_path: &Path) -> Result<KeyTable, NodeError> {
        let info = self.replica(id)?;
        let secret = read_secret(key_path)?;
        check_matches(key_path, &secret, &info.public_key, &format!("replica {id}"))?;
        let me = NodeId::Replica(info.id);
        Ok(KeyTable::from_static_dh(me, &secret, &self.replica_publics(), &self.client_publics))
    }

    /// Client `id`'s session keys, from its private key file.
    pub fn client_keys(&self, id: u32, key_path: &Path) -> Result<KeyTable, NodeError> {
        let secret = read_secret(key_path)?;
        self.client_keys_from_secret(id, &secret, key_path)
    }

    /// Client `id`'s session keys from a secret already in memory; `origin`
    /// names where it came from in errors.
    pub fn client_keys_from_secret(&self, id: u32, secret: &[u8; 32], origin: &Path) -> Result<KeyTable, NodeError> {
        let client = self.check_client(id)?;
        check_matches(origin, secret, &self.client_publics[id as usize], &format!("client {id}"))?;
        Ok(KeyTable::from_static_dh(NodeId::Client(client), secret, &self.replica_publics(), &[]))
    }
}

/// `replica-I.key`.
pub fn replica_key_file_name(id: u16) -> String {
    format!("replica-{id}.key")
}

/// `client-C.key`.
pub fn client_key_file_name(id: u32) -> String {
    format!("client-{id}.key")
}

fn check_matches(path: &Path, secret: &[u8; 32], expected: &[u8; 32], who: &str) -> Result<(), NodeError> {
    if public_key(secret) != *expected {
        return Err(NodeError::BadKey {
            path: path.into(),
            message: format!("this key does not match {who}'s public key in the cluster file"),
        });
    }
    Ok(())
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let mut addrs = addr.to_socket_addrs().map_err(|e| format!("{addr:?}: {e}"))?;
    addrs.next().ok_or_else(|| format!("{addr:?} resolves to no address"))
}

fn parse_key_hex(s: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex ({e})"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| format!("{} bytes, expected 32", bytes.len()))
}

/// toml's errors quote the offending line over several lines; a one-line error
/// gives the line number instead.
fn one_line_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// A fresh private key from the operating system's random source.
pub fn generate_secret() -> [u8; 32] {
    use rand_core::RngCore;
    let mut secret = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut secret);
    secret
}

/// Reads a private key file: 32 bytes in hex, which no one but its owner may
/// read or write. As ssh does, a key that others can read is refused rather
/// than used: it may already be known to someone else, and a replica whose key
/// leaked can be impersonated without a trace.
pub fn read_secret(path: &Path) -> Result<[u8; 32], NodeError> {
    use std::io::Read;
    let err = |source| NodeError::File { path: path.into(), source };
    let mut file = std::fs::File::open(path).map_err(err)?;
    // The mode of the file we read, not of whatever the path names later.
    let mode = file.metadata().map_err(err)?.permissions().mode();
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(err)?;
    let secret = parse_key_hex(&text)
        .map_err(|m| NodeError::BadKey { path: path.into(), message: format!("not a private key: {m}") })?;
    check_private_mode(path, mode)?;
    Ok(secret)
}

/// Refuses a key file whose mode gives its group or others any access.
fn check_private_mode(path: &Path, mode: u32) -> Result<(), NodeError> {
    if mode & 0o077 == 0 {
        return Ok(());
    }
    Err(NodeError::BadKey {
        path: path.into(),
        message: format!(
            "permissions {:04o} are too open: a private key must be readable by its owner only \
             (fix: chmod 600 {})",
            mode & 0o7777,
            path.display()
        ),
    })
}

/// Writes a private key file readable and writable by its owner only. Refuses
/// to overwrite an existing file.
pub fn write_secret(path: &Path, secret: &[u8; 32]) -> Result<(), NodeError> {
    let err = |source| NodeError::File { path: path.into(), source };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(err)?;
    // The umask can only remove permission bits, but say it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    writeln!(f, "{}", hex::encode(secret)).map_err(err)?;
    f.sync_all().map_err(err)
}

impl ClusterFile {
    /// The file as TOML text.
    pub fn to_toml(&self) -> String {
        // Serializing plain structs of numbers and strings cannot fail.
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(f: usize, clients: u32) -> ClusterFile {
        let n = 3 * f + 1;
        ClusterFile {
            f,
            protocol: Protocol::default(),
            service: ServiceParams::default(),
            replicas: (0..n as u16)
                .map(|i| ReplicaEntry {
                    id: i,
                    addr: format!("127.0.0.1:{}", 7000 + i),
                    metrics_addr: Some(format!("127.0.0.1:{}", 7100 + i)),
                    public_key: hex::encode(public_key(&[i as u8 + 1; 32])),
                })
                .collect(),
            clients: (0..clients)
                .map(|c| ClientEntry { id: c, public_key: hex::encode(public_key(&[c as u8 + 100; 32])) })
                .collect(),
        }
    }

    fn load_text(text: &str) -> Result<Cluster, NodeError> {
        let dir = tempfile::tempdir().map_err(|e| NodeError::io("tempdir", e))?;
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, text).map_err(|e| NodeError::io("write", e))?;
        Cluster::load(&path)
    }

    #[test]
    fn round_trips_through_toml() {
        let file = sample(1, 3);
        let c = load_text(&file.to_toml()).expect("valid");
        assert_eq!(c.file, file);
        assert_eq!(c.n(), 4);
        assert_eq!(c.config().max_clients, 3);
        assert_eq!(c.replicas[2].addr, "127.0.0.1:7002".parse().expect("addr"));
    }

    #[test]
    fn defaults_fill_missing_parameters() {
        let mut text = sample(1, 1).to_toml();
        text = text
            .replace("[protocol]", "[protocol]\nstatus_interval_ms = 7\nview_change_timeout_ms = 2000\n# rest default")
            .replace("status_interval_ms = 100\n", "")
            .replace("view_change_timeout_ms = 300\n", "");
        let c = load_text(&text).expect("valid");
        assert_eq!(c.config().status_interval_us, 7_000);
        assert_eq!(c.config().view_change_timeout_us, 2_000_000);
        assert_eq!(c.config().checkpoint_interval, Config::new(1).checkpoint_interval);
        assert_eq!(c.file.protocol.spin_us, 200, "replicas poll 200 us unless told otherwise");
        let sleeping = load_text(&sample(1, 1).to_toml().replace("spin_us = 200", "spin_us = 0")).expect("valid");
        assert_eq!(sleeping.file.protocol.spin_us, 0);
    }

    #[test]
    fn errors_are_one_line_and_name_the_problem() {
        let cases: Vec<(String, &str)> = vec![
            ("f = \n".into(), "line 1"),
            (sample(1, 1).to_toml().replace("f = 1", "f = 2"), "needs 7 [[replica]] entries"),
            (sample(1, 1).to_toml().replace("id = 3", "id = 9"), "replica id 9 is not in 0..4"),
            (sample(1, 1).to_toml().replace("127.0.0.1:7001", "nowhere"), "replica 1: addr"),
            (sample(1, 1).to_toml().replacen("public_key = \"", "public_key = \"zz", 1), "not hex"),
            (sample(1, 1).to_toml() + "\nbogus = 1\n", "unknown field"),
            (sample(1, 1).to_toml().replace("checkpoint_interval = 128", "checkpoint_interval = 100"), "multiple"),
            (sample(1, 1).to_toml().replace("spin_us = 200", "spin_us = 10001"), "spin_us = 10001 is above"),
        ];
        for (text, expected) in cases {
            let e = load_text(&text).expect_err(expected).to_string();
            assert!(e.contains(expected), "{e:?} should mention {expected:?}");
            assert!(!e.contains('\n'), "{e:?} spans lines");
        }
        let missing = Cluster::load(Path::new("/nonexistent/cluster.toml")).expect_err("missing").to_string();
        assert!(missing.contains("/nonexistent/cluster.toml"), "{missing}");
    }

    #[test]
    fn key_files_are_private_and_must_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Cluster::from_file(sample(1, 2), &dir.path().join("cluster.toml")).expect("valid");
        let path = c.default_replica_key_path(1);
        write_secret(&path, &[2; 32]).expect("write");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert!(write_secret(&path, &[2; 32]).is_err(), "never overwrites a key");
        assert_eq!(read_secret(&path).expect("read"), [2; 32]);
        assert!(c.replica_keys(1, &path).is_ok());
        let e = c.replica_keys(2, &path).expect_err("wrong owner").to_string();
        assert!(e.contains("does not match replica 2"), "{e}");
        assert!(matches!(c.replica_keys(4, &path), Err(NodeError::UnknownId { .. })));
        std::fs::write(&path, "abc").expect("write");
        assert!(read_secret(&path).expect_err("short").to_string().contains("not a private key"));
        assert!(matches!(c.check_client(2), Err(NodeError::UnknownId { .. })));
    }

    #[test]
    fn a_key_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Cluster::from_file(sample(1, 2), &dir.path().join("cluster.toml")).expect("valid");
        let path = c.default_client_key_path(1);
        write_secret(&path, &[101; 32]).expect("write");
        for mode in [0o640, 0o604, 0o644, 0o660, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let e = c.client_keys(1, &path).expect_err("too open").to_string();
            assert!(e.contains(&format!("permissions {mode:04o} are too open")), "{e}");
            assert!(e.contains(&format!("chmod 600 {}", path.display())), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            c.client_keys(1, &path).expect("owner-only key accepted");
        }
    }
}
