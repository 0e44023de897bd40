//! A cluster of replica processes on 127.0.0.1: what `bfs up` and the tests
//! with real clients run. Replicas are children of this process and die with
//! it ([`pbft_node::launcher`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use pbft_node::cluster::{Protocol, ServiceParams};
use pbft_node::keygen::{keygen, KeygenSpec};
use pbft_node::launcher::{replica_command, wait_until_up, Processes};
use pbft_node::{Cluster, NodeError};

/// The protocol parameters BFS needs: a 32 KiB WRITE is one operation and a
/// 32 KiB READ one result.
pub fn bfs_protocol() -> Protocol {
    Protocol { max_op_bytes: 40 * 1024, max_reply_bytes: 40 * 1024, ..Protocol::default() }
}

/// A cluster file for BFS with `replicas` replicas and `clients` client keys.
pub fn bfs_keygen(dir: &Path, replicas: usize, clients: u32, pages: u64) -> Result<PathBuf, NodeError> {
    let spec = KeygenSpec {
        protocol: bfs_protocol(),
        service: ServiceParams { bfs_pages: pages, ..ServiceParams::default() },
        ..KeygenSpec::local(replicas, clients)
    };
    keygen(&spec, dir)
}

/// Four replica processes of the `bfs` binary at `bin`.
pub struct LocalCluster {
    procs: Processes,
    pub path: PathBuf,
    pub cluster: Cluster,
    bin: PathBuf,
    /// A replica started with `--faulty MODE` (MODE as on the command line).
    faulty: Option<(u16, String)>,
}

impl LocalCluster {
    /// Writes the cluster into `dir` and starts its replicas (logs beside it).
    pub fn start(
        bin: &Path,
        dir: &Path,
        pages: u64,
        clients: u32,
        faulty: Option<(u16, String)>,
    ) -> Result<Self, NodeError> {
        let path = bfs_keygen(dir, 4, clients, pages)?;
        let cluster = Cluster::load(&path)?;
        let mut c = LocalCluster { procs: Processes::new(), path, cluster, bin: bin.into(), faulty };
        for id in 0..4 {
            c.spawn(id)?;
        }
        let metrics: Vec<_> = c.cluster.replicas.iter().filter_map(|r| r.metrics_addr).collect();
        wait_until_up(&mut c.procs, &metrics, Duration::from_secs(20))?;
        Ok(c)
    }

    /// Where replica `id` writes its log (appended to across restarts).
    pub fn log_path(&self, id: u16) -> PathBuf {
        self.path.with_file_name(format!("replica-{id}.log"))
    }

    /// The process id of each running replica, by replica id.
    pub fn pids(&self) -> Vec<(u16, u32)> {
        self.procs
            .pids()
            .into_iter()
            .filter_map(|(name, pid)| Some((name.strip_prefix("replica-")?.parse().ok()?, pid)))
            .collect()
    }

    fn spawn(&mut self, id: u16) -> Result<(), NodeError> {
        let log = self.log_path(id);
        let mut cmd = replica_command(&self.bin, &self.path, id, Some(&log))?;
        if let Some((_, mode)) = self.faulty.as_ref().filter(|(f, _)| *f == id) {
            cmd.arg("--faulty").arg(mode);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            // Warnings, and the host's few lines on restarts, state transfers
            // and view changes.
            cmd.env("RUST_LOG", "warn,pbft_node=info");
        }
        self.procs.spawn(format!("replica-{id}"), cmd)
    }

    /// Kills replica `id` with SIGKILL.
    pub fn kill(&mut self, id: u16) -> bool {
        self.procs.kill(&format!("replica-{id}"))
    }

    /// Starts replica `id` again, from its state directory.
    pub fn restart(&mut self, id: u16) -> Result<(), NodeError> {
        self.spawn(id)
    }
}
