//! A local cluster of replica processes on 127.0.0.1, as the demo, `pbft
//! chaos` and the benchmarks run it: started, killed with SIGKILL, restarted
//! from its state directory or wiped, and read through its metrics.
//!
//! Invariant: the replicas die with the [`Running`] that started them (its
//! [`Processes`] guard), and a temporary cluster directory is removed only
//! after them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use pbft_node::keygen::{keygen, KeygenSpec};
use pbft_node::launcher::{replica_command, wait_until_up, Processes};
use pbft_node::metrics::Reading;
use pbft_node::{ClientGroup, ClientOptions, Cluster, ClusterClient};

/// How long a replica may take to start answering, at start and after a restart.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long one metrics read may take (the endpoints are local).
const READ_LIMIT: Duration = Duration::from_millis(500);

/// A running cluster of replica processes.
pub(crate) struct Running {
    /// The cluster directory: the cluster file, keys, state directories and
    /// the replicas' logs (`replica-ID.log`).
    pub(crate) dir: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) procs: Processes,
    /// Metrics address of each replica, by id.
    pub(crate) metrics: Vec<SocketAddr>,
    /// Removes `dir` when it is a temporary one; declared after `procs`, so
    /// dropped after the replicas are dead.
    _temp: Option<tempfile::TempDir>,
}

/// Generates the cluster `spec` in a temporary directory and starts its
/// replicas with `RUST_LOG=rust_log`, each command first passed to `adjust`
/// (to add arguments), and waits until every replica answers.
pub(crate) fn start_with(spec: &KeygenSpec, rust_log: &str, adjust: impl Fn(u16, &mut Command)) -> Result<Running> {
    start_in(None, spec, rust_log, adjust)
}

/// As [`start_with`], in `dir` if given (kept afterwards), else in a
/// temporary directory.
pub(crate) fn start_in(
    dir: Option<&Path>,
    spec: &KeygenSpec,
    rust_log: &str,
    adjust: impl Fn(u16, &mut Command),
) -> Result<Running> {
    let temp = match dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temporary directory")?),
    };
    let dir = dir.map(Path::to_path_buf).or_else(|| temp.as_ref().map(|t| t.path().to_path_buf())).unwrap_or_default();
    let path = keygen(spec, &dir)?;
    let cluster = Cluster::load(&path)?;
    let metrics: Vec<_> = cluster.replicas.iter().filter_map(|r| r.metrics_addr).collect();
    ensure!(metrics.len() == cluster.n(), "keygen gave a replica no metrics address");
    let mut run = Running { dir, path, procs: Processes::new(), metrics, _temp: temp };
    for id in 0..spec.replicas as u16 {
        run.spawn_replica(id, rust_log, &adjust)?;
    }
    wait_until_up(&mut run.procs, &run.metrics, START_LIMIT)?;
    Ok(run)
}

impl Running {
    /// Starts replica `id` as process `replica-ID`, its log appended to
    /// `replica-ID.log` in the cluster directory. Must be called from the
    /// thread that owns the cluster: the child dies with the thread that
    /// starts it.
    pub(crate) fn spawn_replica(&mut self, id: u16, rust_log: &str, adjust: impl Fn(u16, &mut Command)) -> Result<()> {
        let bin = std::env::current_exe().context("finding the pbft executable")?;
        let mut cmd = replica_command(&bin, &self.path, id, Some(&self.log_path(id)))?;
        cmd.env("RUST_LOG", rust_log);
        adjust(id, &mut cmd);
        self.procs.spawn(format!("replica-{id}"), cmd)?;
        Ok(())
    }

    /// Kills replica `id` with SIGKILL; fails if it had exited already.
    pub(crate) fn kill(&mut self, id: u16) -> Result<()> {
        ensure!(self.procs.kill(&format!("replica-{id}")), "replica {id} had exited before it was killed");
        Ok(())
    }

    /// Starts replica `id` again (from its state directory, if it has one)
    /// and waits until it answers; on failure the error ends with its log.
    pub(crate) fn restart(&mut self, id: u16, rust_log: &str, adjust: impl Fn(u16, &mut Command)) -> Result<()> {
        self.spawn_replica(id, rust_log, adjust)?;
        if let Err(e) = wait_until_up(&mut self.procs, &self.metrics[id as usize..=id as usize], START_LIMIT) {
            anyhow::bail!("{e}; replica {id}'s log ends:\n{}", self.log_tail(id, 5));
        }
        Ok(())
    }

    /// Removes replica `id`'s state directory (its durable log and pages);
    /// the replica must not be running.
    pub(crate) fn wipe(&self, id: u16) -> Result<()> {
        let state = self.dir.join(format!("replica-{id}-state"));
        match std::fs::remove_dir_all(&state) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", state.display()))
            }
            _ => Ok(()),
        }
    }

    /// Where replica `id` logs.
    pub(crate) fn log_path(&self, id: u16) -> PathBuf {
        self.dir.join(format!("replica-{id}.log"))
    }

    /// The last `lines` lines of replica `id`'s log.
    pub(crate) fn log_tail(&self, id: u16, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Replica `id`'s metrics, or `None` if it does not answer with them.
    pub(crate) fn read(&self, id: u16) -> Option<Reading> {
        Reading::fetch(*self.metrics.get(id as usize)?, READ_LIMIT).ok()
    }
}

/// Client `id` of the cluster in `path`, with a 10 s request timeout.
pub(crate) fn open_client(path: &Path, id: u32) -> Result<ClusterClient> {
    let cluster = Cluster::load(path)?;
    let options = ClientOptions { timeout: Duration::from_secs(10), ..Default::default() };
    Ok(ClusterClient::open(&cluster, id, &cluster.default_client_key_path(id), &options)?)
}

/// The clients `ids` of the cluster whose file is `path`, as one group on one
/// socket (their default key files), polling for `spin` before they sleep
/// (`None`: the cluster file's `spin_us`).
pub(crate) fn open_group(path: &Path, ids: &[u32], spin: Option<Duration>) -> Result<ClientGroup> {
    let cluster = Cluster::load(path)?;
    let options = ClientOptions { timeout: Duration::from_secs(10), spin, ..Default::default() };
    let keys: Vec<_> = ids.iter().map(|&id| cluster.default_client_key_path(id)).collect();
    let members: Vec<(u32, &Path)> = ids.iter().copied().zip(keys.iter().map(|k| k.as_path())).collect();
    Ok(ClientGroup::open(&cluster, &members, &options)?)
}
