//! `pbft demo`: a local cluster and a workload in one command.
//!
//! Starts 4 replicas as child processes of this one on 127.0.0.1 (free ports,
//! keys in a temporary directory) and closed-loop key-value clients on
//! threads, and checks every result against a model of the service. By
//! default it then shows what the system is for: while the clients keep
//! going, a backup lies and is set right, the primary is killed and replaced,
//! and a wiped replica comes back by state transfer, all on a live display
//! (`demo_show`). `--quiet` runs only the short checked workload and prints
//! throughput and latency, for scripts. Either way a wrong result makes the
//! exit status non-zero. The children are killed when the demo ends, however
//! it ends: normally, on an error, or on Ctrl-C (see `pbft_node::launcher`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Args;
use pbft_kv::{KvModel, KvOp};
use pbft_node::keygen::{keygen, KeygenSpec};
use pbft_node::launcher::{replica_command, wait_until_up, Processes};
use pbft_node::metrics::Reading;
use pbft_node::{ClientOptions, Cluster, ClusterClient};

use crate::kv;

#[derive(Args)]
pub struct DemoArgs {
    /// How long the demo runs (default 25); with --quiet, the longest the
    /// workload may take (default 30).
    #[arg(long)]
    seconds: Option<f64>,
    /// Concurrent clients (threads).
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Only a short checked workload, without faults or live display: its
    /// throughput, latency and results, for scripts.
    #[arg(long)]
    quiet: bool,
    /// With --quiet: operations in all.
    #[arg(long, requires = "quiet")]
    ops: Option<usize>,
    /// Keep the cluster files and replica logs in DIR instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(a: DemoArgs) -> Result<ExitCode> {
    ensure!((1..=64).contains(&a.clients), "--clients must be in 1..=64");
    let seconds = a.seconds.unwrap_or(if a.quiet { 30.0 } else { 25.0 });
    ensure!(seconds > 0.0 && seconds <= 3600.0, "--seconds must be in (0, 3600]");
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = stop.clone();
    ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
    if a.quiet {
        run_quiet(&a, a.ops.unwrap_or(4000), seconds, &stop)
    } else {
        crate::demo_show::run(a.clients, seconds, a.dir.as_deref(), &stop)
    }
}

/// What a client thread tells about each operation it ran.
pub(crate) enum Report {
    /// An operation completed and its result was checked against the model.
    Checked { latency: Duration, wrong: Option<String> },
    /// The client could not go on (no answer in time, or no client at all).
    Failed(String),
}

/// When a client stops.
pub(crate) struct Limit {
    /// Operations in all.
    pub(crate) ops: usize,
    /// No operation starts after this.
    pub(crate) deadline: Option<Instant>,
    /// Longest wait for one operation; past it the client reports
    /// [`Report::Failed`] and stops.
    pub(crate) op_timeout: Duration,
}

/// One closed-loop client: operations on keys of its own, so that each
/// result is determined whatever the other clients do, each checked against
/// a model of the service and reported through `report`.
pub(crate) fn client_loop(path: &Path, id: u32, limit: &Limit, stop: &AtomicBool, report: &dyn Fn(Report)) {
    let setup = Cluster::load(path).and_then(|cluster| {
        let options = ClientOptions { timeout: limit.op_timeout, ..Default::default() };
        ClusterClient::open(&cluster, id, &cluster.default_client_key_path(id), &options)
    });
    let mut client = match setup {
        Ok(c) => c,
        Err(e) => return report(Report::Failed(format!("client {id}: {e}"))),
    };
    let mut model = KvModel::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(id);
    for i in 0..limit.ops {
        if stop.load(Ordering::Relaxed) || limit.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = format!("client{id}/key{}", rng % 64).into_bytes();
        let op = match rng % 10 {
            0..=4 => KvOp::Put { key, value: format!("value {i} of client {id}").into_bytes() },
            5..=7 => KvOp::Get { key },
            8 => KvOp::Cas { key, expected: None, new: Some(b"fresh".to_vec()) },
            _ => KvOp::Delete { key },
        };
        let t = Instant::now();
        match kv::invoke(&mut client, &op) {
            Ok(result) => {
                let latency = t.elapsed();
                let expected = model.apply(&op);
                let wrong =
                    (result != expected).then(|| format!("client {id}: {op:?} gave {result:?}, expected {expected:?}"));
                report(Report::Checked { latency, wrong });
            }
            Err(e) => {
                if !stop.load(Ordering::Relaxed) {
                    report(Report::Failed(format!("client {id}: {e:#}")));
                }
                return;
            }
        }
    }
}

/// What the clients of the quiet run saw.
#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    wrong: Vec<String>,
    error: Option<String>,
}

/// The short run: `ops` operations (or `seconds`, whichever ends first) on a
/// correct cluster, then throughput, latency and the results' check.
fn run_quiet(a: &DemoArgs, ops: usize, seconds: f64, stop: &Arc<AtomicBool>) -> Result<ExitCode> {
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = a.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let path = keygen(&KeygenSpec::local(4, a.clients), &dir)?;
    let cluster = Cluster::load(&path)?;
    let bin = std::env::current_exe().context("finding the pbft executable")?;
    let mut procs = Processes::new();
    for id in 0..4u16 {
        let log = dir.join(format!("replica-{id}.log"));
        let mut cmd = replica_command(&bin, &path, id, Some(&log))?;
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        procs.spawn(format!("replica-{id}"), cmd)?;
    }
    let metrics: Vec<_> = cluster.replicas.iter().filter_map(|r| r.metrics_addr).collect();
    wait_until_up(&mut procs, &metrics, Duration::from_secs(10))?;
    eprintln!("4 replicas (f = 1) up on 127.0.0.1 ({}); {} clients, {ops} operations", dir.display(), a.clients);

    let shared = Arc::new(Mutex::new(Outcome::default()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..a.clients)
        .map(|c| {
            let (path, stop, shared) = (path.clone(), stop.clone(), shared.clone());
            let quota = ops / a.clients as usize + usize::from((c as usize) < ops % a.clients as usize);
            let limit = Limit { ops: quota, deadline: Some(deadline), op_timeout: Duration::from_secs(5) };
            std::thread::spawn(move || {
                client_loop(&path, c, &limit, &stop, &|r| {
                    if let Ok(mut o) = shared.lock() {
                        match r {
                            Report::Checked { latency, wrong } => {
                                o.latencies.push(latency);
                                o.wrong.extend(wrong);
                            }
                            Report::Failed(e) => o.error = Some(e),
                        }
                    }
                })
            })
        })
        .collect();
    while workers.iter().any(|w| !w.is_finished()) && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    // On Ctrl-C the clients are not waited for: one may be inside a request
    // the stopped replicas will never answer. Exiting ends their threads.
    if !stop.load(Ordering::Relaxed) {
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        }
    }
    let all = std::mem::take(&mut *shared.lock().map_err(|_| anyhow::anyhow!("a client thread panicked"))?);
    let primary = metrics.first().and_then(|m| Reading::fetch(*m, Duration::from_secs(2)).ok());
    drop(procs);
    report(&all, elapsed, primary.as_ref());
    if stop.load(Ordering::Relaxed) {
        eprintln!("interrupted; replicas stopped");
        return Ok(ExitCode::from(130));
    }
    if let Some(e) = &all.error {
        anyhow::bail!("a client failed: {e} (replica logs in {})", dir.display());
    }
    Ok(if all.wrong.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(o: &Outcome, elapsed: Duration, primary: Option<&Reading>) {
    let mut lat = o.latencies.clone();
    lat.sort_unstable();
    let n = lat.len();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("operations: {n} in {:.2} s", elapsed.as_secs_f64());
    println!("throughput: {:.0} ops/s", n as f64 / elapsed.as_secs_f64().max(1e-9));
    println!(
        "latency:    p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.90)),
        ms(percentile(&lat, 0.99)),
        ms(percentile(&lat, 1.0))
    );
    if let Some(r) = primary {
        println!(
            "primary:    {} requests in {} batches ({:.1} a batch), {} stable checkpoints",
            r.batch_requests,
            r.batches_executed,
            r.batch_requests as f64 / r.batches_executed.max(1) as f64,
            r.checkpoints_stable
        );
    }
    if o.wrong.is_empty() {
        println!("results:    all {n} checked against a model of the service, none wrong");
    } else {
        println!("results:    {} of {n} WRONG; first: {}", o.wrong.len(), o.wrong[0]);
    }
}
