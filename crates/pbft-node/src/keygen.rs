//! Writing a fresh cluster directory: `cluster.toml` and one private key file
//! per replica and client (mode 0600).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use pbft::auth::public_key;

use crate::cluster::{
    client_key_file_name, generate_secret, replica_key_file_name, write_secret, ClientEntry, Cluster, ClusterFile,
    Protocol, ReplicaEntry, ServiceParams,
};
use crate::error::NodeError;

/// What cluster to generate.
#[derive(Clone, Debug)]
pub struct KeygenSpec {
    /// n: must be 3f + 1 for some f ≥ 1, or 1 for the unreplicated baseline.
    pub replicas: usize,
    /// Hosts (IP addresses or names) the replicas are spread over, round robin.
    pub hosts: Vec<String>,
    /// Replica i listens on `base_port + i` and serves metrics on
    /// `base_port + n + i`. Zero picks free ports on this machine (for local
    /// clusters and tests; the hosts must then be local addresses).
    pub base_port: u16,
    pub clients: u32,
    /// Serve each replica's metrics on its host's address, where anyone who
    /// can reach that address reads them, instead of on the host's loopback
    /// address (the default), where only processes on that host can.
    pub public_metrics: bool,
    pub protocol: Protocol,
    pub service: ServiceParams,
}

impl KeygenSpec {
    /// A local cluster of `replicas` replicas on 127.0.0.1 with free ports.
    pub fn local(replicas: usize, clients: u32) -> KeygenSpec {
        KeygenSpec {
            replicas,
            hosts: vec!["127.0.0.1".into()],
            base_port: 0,
            clients,
            public_metrics: false,
            protocol: Protocol::default(),
            service: ServiceParams::default(),
        }
    }
}

/// Writes `dir/cluster.toml` and the key files, creating `dir` if needed.
/// Refuses to overwrite an existing cluster file or key. Returns the cluster
/// file's path.
pub fn keygen(spec: &KeygenSpec, dir: &Path) -> Result<PathBuf, NodeError> {
    let path = dir.join("cluster.toml");
    let invalid = |message: String| NodeError::Invalid { path: path.clone(), message };
    let n = spec.replicas;
    // n = 1 (f = 0) is the unreplicated baseline for benchmarks.
    if n == 0 || !(n - 1).is_multiple_of(3) {
        return Err(invalid(format!("{n} replicas: n must be 3f + 1 (4, 7, 10, ...; 1 for an unreplicated baseline)")));
    }
    if spec.hosts.is_empty() || spec.hosts.iter().any(|h| h.trim().is_empty()) {
        return Err(invalid("empty host name".into()));
    }
    if spec.clients == 0 {
        return Err(invalid("at least one client is needed".into()));
    }
    let ports = ports(spec)?;
    let host_port = |host: &str, port: u16| {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    };
    let replica_secrets: Vec<[u8; 32]> = (0..n).map(|_| generate_secret()).collect();
    let client_secrets: Vec<[u8; 32]> = (0..spec.clients).map(|_| generate_secret()).collect();
    let file = ClusterFile {
        f: (n - 1) / 3,
        protocol: spec.protocol.clone(),
        service: spec.service.clone(),
        replicas: (0..n)
            .map(|i| {
                let host = spec.hosts[i % spec.hosts.len()].trim();
                ReplicaEntry {
                    id: i as u16,
                    addr: host_port(host, ports[i].0),
                    metrics_addr: Some(host_port(&metrics_host(spec, host), ports[i].1)),
                    public_key: hex::encode(public_key(&replica_secrets[i])),
                }
            })
            .collect(),
        clients: (0..spec.clients)
            .map(|c| ClientEntry { id: c, public_key: hex::encode(public_key(&client_secrets[c as usize])) })
            .collect(),
    };
    // Check before writing anything: what keygen writes must load.
    Cluster::from_file(file.clone(), &path)?;
    std::fs::create_dir_all(dir).map_err(|source| NodeError::File { path: dir.into(), source })?;
    if path.exists() {
        return Err(invalid("already exists; keygen never overwrites a cluster".into()));
    }
    for (i, s) in replica_secrets.iter().enumerate() {
        write_secret(&dir.join(replica_key_file_name(i as u16)), s)?;
    }
    for (c, s) in client_secrets.iter().enumerate() {
        write_secret(&dir.join(client_key_file_name(c as u32)), s)?;
    }
    std::fs::write(&path, file.to_toml()).map_err(|source| NodeError::File { path: path.clone(), source })?;
    Ok(path)
}

/// Where a replica on `host` serves its metrics: `host` itself with
/// [`KeygenSpec::public_metrics`] or when it is a loopback address already,
/// else the loopback address (of the same family, for an IPv6 address).
fn metrics_host(spec: &KeygenSpec, host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        _ if spec.public_metrics => host.to_string(),
        Ok(ip) if ip.is_loopback() => host.to_string(),
        Ok(std::net::IpAddr::V6(_)) => "::1".to_string(),
        _ => "127.0.0.1".to_string(),
    }
}

/// (UDP port, metrics port) for each replica.
fn ports(spec: &KeygenSpec) -> Result<Vec<(u16, u16)>, NodeError> {
    let n = spec.replicas;
    if spec.base_port != 0 {
        let last = spec.base_port as usize + 2 * n - 1;
        if last > u16::MAX as usize {
            return Err(NodeError::Invalid {
                path: "keygen".into(),
                message: format!("ports {}..={last} do not fit", spec.base_port),
            });
        }
        return Ok((0..n).map(|i| (spec.base_port + i as u16, spec.base_port + (n + i) as u16)).collect());
    }
    // Ask the kernel for free ports, holding every socket until all are chosen
    // so that no two replicas get the same one.
    let mut held = Vec::new();
    let mut out = Vec::new();
    for i in 0..n {
        let host = spec.hosts[i % spec.hosts.len()].trim();
        let ip: std::net::IpAddr = host.parse().map_err(|_| NodeError::Invalid {
            path: "keygen".into(),
            message: format!("--base-port 0 needs IP addresses of this machine, not {host:?}"),
        })?;
        // The metrics host is an IP address too when the replica's host is.
        let metrics_ip: std::net::IpAddr = metrics_host(spec, host).parse().unwrap_or(ip);
        let (any, metrics_any) = (SocketAddr::new(ip, 0), SocketAddr::new(metrics_ip, 0));
        let (udp, tcp) = match (below_ephemeral(ip), below_ephemeral(metrics_ip)) {
            (Some(udp), Some(tcp)) => (udp.0, tcp.1),
            _ => (
                UdpSocket::bind(any).map_err(|source| NodeError::Bind { addr: any, source })?,
                TcpListener::bind(metrics_any).map_err(|source| NodeError::Bind { addr: metrics_any, source })?,
            ),
        };
        let port = |a: std::io::Result<SocketAddr>| a.map(|a| a.port()).map_err(|e| NodeError::io("local address", e));
        out.push((port(udp.local_addr())?, port(tcp.local_addr())?));
        held.push((udp, tcp));
    }
    Ok(out)
}

/// A UDP socket and a TCP listener on one free port below the kernel's
/// ephemeral range, if one is found. A port the kernel hands out to outgoing
/// connections could be taken by one while a replica restarts, and the
/// replica could then not bind it again.
fn below_ephemeral(ip: std::net::IpAddr) -> Option<(UdpSocket, TcpListener)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = range.split_whitespace().next()?.parse().ok()?;
    let (from, to) = (10_000u16, low.checked_sub(1)?);
    if to <= from {
        return None;
    }
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.subsec_nanos() as u64
        ^ u64::from(std::process::id()) << 20;
    let mut x = seed | 1;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = from + (x % u64::from(to - from)) as u16;
        let addr = SocketAddr::new(ip, port);
        if let (Ok(udp), Ok(tcp)) = (UdpSocket::bind(addr), TcpListener::bind(addr)) {
            return Some((udp, tcp));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_loadable_cluster_with_private_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = keygen(&KeygenSpec::local(4, 2), dir.path()).expect("keygen");
        let c = Cluster::load(&path).expect("loads");
        assert_eq!((c.n(), c.client_publics.len()), (4, 2));
        for i in 0..4 {
            c.replica_keys(i, &c.default_replica_key_path(i)).expect("replica key matches");
        }
        c.client_keys(1, &c.default_client_key_path(1)).expect("client key matches");
        let again = keygen(&KeygenSpec::local(4, 2), dir.path()).expect_err("no overwrite").to_string();
        assert!(again.contains("exists"), "{again}");
    }

    #[test]
    fn fixed_ports_and_bad_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = KeygenSpec {
            base_port: 9000,
            hosts: vec!["127.0.1.1".into(), "127.0.1.2".into()],
            ..KeygenSpec::local(4, 1)
        };
        let c = Cluster::load(&keygen(&spec, dir.path()).expect("keygen")).expect("loads");
        assert_eq!(c.replicas[3].addr, "127.0.1.2:9003".parse().expect("addr"));
        // A loopback host keeps its own address for metrics.
        assert_eq!(c.replicas[0].metrics_addr, Some("127.0.1.1:9004".parse().expect("addr")));
        let e = keygen(&KeygenSpec::local(5, 1), dir.path()).expect_err("5 replicas").to_string();
        assert!(e.contains("3f + 1"), "{e}");
    }

    #[test]
    fn metrics_stay_on_loopback_unless_asked() {
        let hosts = vec!["10.1.2.3".to_string(), "fd00::7".to_string()];
        let spec = KeygenSpec { base_port: 9000, hosts, ..KeygenSpec::local(4, 1) };
        let metrics = |spec: &KeygenSpec| -> Vec<SocketAddr> {
            let dir = tempfile::tempdir().expect("tempdir");
            let c = Cluster::load(&keygen(spec, dir.path()).expect("keygen")).expect("loads");
            c.replicas.iter().filter_map(|r| r.metrics_addr).collect()
        };
        let addrs = |list: &[&str]| -> Vec<SocketAddr> { list.iter().map(|a| a.parse().expect("addr")).collect() };
        assert_eq!(metrics(&spec), addrs(&["127.0.0.1:9004", "[::1]:9005", "127.0.0.1:9006", "[::1]:9007"]));
        let public = KeygenSpec { public_metrics: true, ..spec };
        assert_eq!(metrics(&public), addrs(&["10.1.2.3:9004", "[fd00::7]:9005", "10.1.2.3:9006", "[fd00::7]:9007"]));
        assert_eq!(metrics_host(&public, "db.example"), "db.example");
        assert_eq!(metrics_host(&KeygenSpec::local(4, 1), "db.example"), "127.0.0.1");
    }
}
