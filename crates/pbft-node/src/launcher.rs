//! Child processes of a local cluster (the demo, tests with real processes).
//!
//! Invariant: no process outlives its owner. [`Processes`] kills and reaps
//! every child when dropped (on an error, a panic or a normal exit), and each
//! child asks the kernel to kill it when the thread that started it dies
//! (`PR_SET_PDEATHSIG`), which covers the owner being killed with SIGKILL.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::NodeError;
use crate::metrics::scrape;

/// Named child processes, killed when dropped.
#[derive(Debug, Default)]
pub struct Processes {
    children: Vec<(String, Child)>,
}

impl Processes {
    /// No processes yet.
    pub fn new() -> Processes {
        Processes::default()
    }

    /// Starts `cmd` under `name`. The child dies with the thread that starts it.
    pub fn spawn(&mut self, name: impl Into<String>, mut cmd: Command) -> Result<(), NodeError> {
        let name = name.into();
        // SAFETY: the closure runs in the child between fork and exec and only
        // calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| NodeError::io(format!("start {name}"), e))?;
        tracing::debug!(%name, pid = child.id(), "started");
        self.children.push((name, child));
        Ok(())
    }

    /// Kills `name` with SIGKILL and reaps it. Returns whether it was running.
    pub fn kill(&mut self, name: &str) -> bool {
        let Some(i) = self.children.iter().position(|(n, _)| n == name) else { return false };
        let (_, mut child) = self.children.swap_remove(i);
        let was_running = matches!(child.try_wait(), Ok(None));
        let _ = child.kill();
        let _ = child.wait();
        was_running
    }

    /// The children that have exited, with their status (they stay listed).
    pub fn exited(&mut self) -> Vec<(String, ExitStatus)> {
        self.children
            .iter_mut()
            .filter_map(|(name, child)| match child.try_wait() {
                Ok(Some(status)) => Some((name.clone(), status)),
                _ => None,
            })
            .collect()
    }

    /// Process ids by name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children.iter().map(|(n, c)| (n.clone(), c.id())).collect()
    }

    /// Kills and reaps every child.
    pub fn kill_all(&mut self) {
        for (name, mut child) in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
            tracing::debug!(%name, "stopped");
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The glibc tunable that puts malloc's heap on transparent huge pages
/// (glibc 2.35 and later; others ignore it). A replica's state is its heap:
/// a replica that fetches a 256 MiB state takes one page fault per 4 KiB of
/// it otherwise, a quarter of the fetching replica's time in a profile, and
/// the transfer ran about 1.3x faster with it (docs/decisions.md §12).
pub const HUGE_PAGE_HEAP: &str = "glibc.malloc.hugetlb=1";

/// The `GLIBC_TUNABLES` a launched replica runs with: this process's, if it
/// has any, else [`HUGE_PAGE_HEAP`].
pub fn replica_tunables() -> std::ffi::OsString {
    std::env::var_os("GLIBC_TUNABLES").unwrap_or_else(|| HUGE_PAGE_HEAP.into())
}

/// The command that runs replica `id` of the cluster in `config` with the
/// `pbft` binary at `bin`; its log goes to `log` (appended) if given. The
/// replica's heap is on transparent huge pages ([`HUGE_PAGE_HEAP`]) unless
/// `GLIBC_TUNABLES` is set already (`glibc.malloc.hugetlb=0` turns it off).
pub fn replica_command(bin: &Path, config: &Path, id: u16, log: Option<&Path>) -> Result<Command, NodeError> {
    let mut cmd = Command::new(bin);
    cmd.arg("replica").arg("--config").arg(config).arg("--id").arg(id.to_string());
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    cmd.env("GLIBC_TUNABLES", replica_tunables());
    match log {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| NodeError::File { path: path.into(), source })?;
            cmd.stderr(f);
        }
        None => {
            cmd.stderr(Stdio::inherit());
        }
    }
    Ok(cmd)
}

/// Waits until every metrics endpoint answers (the replica behind it has bound
/// its socket), or fails after `timeout`, or as soon as a child has exited.
pub fn wait_until_up(procs: &mut Processes, metrics: &[SocketAddr], timeout: Duration) -> Result<(), NodeError> {
    let deadline = Instant::now() + timeout;
    for addr in metrics {
        loop {
            if let Some((name, status)) = procs.exited().into_iter().next() {
                return Err(NodeError::Launch(format!("{name} exited at start ({status})")));
            }
            if scrape(*addr, Duration::from_millis(500)).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(NodeError::Launch(format!("no answer from {addr} within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// CPU seconds process `pid` has used so far, all its threads (from
/// /proc/PID/task/*/schedstat, in nanoseconds); 0 if it is gone. What the
/// benchmarks report as the replicas' CPU.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()))
        .sum::<u64>() as f64
        / 1e9
}
