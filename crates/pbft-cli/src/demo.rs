//! `pbft demo`: a local cluster and a workload in one command.
//!
//! Starts 4 replicas as child processes of this one on 127.0.0.1 (free ports,
//! keys in a temporary directory), runs closed-loop key-value clients on
//! threads, checks every result against a model of the service, and prints
//! throughput and latency percentiles. The children are killed when the demo
//! ends, however it ends: normally, on an error, or on Ctrl-C (see
//! `pbft_node::launcher`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use pbft_kv::{KvModel, KvOp};
use pbft_node::keygen::{keygen, KeygenSpec};
use pbft_node::launcher::{replica_command, wait_until_up, Processes};
use pbft_node::metrics::{sample_value, scrape};
use pbft_node::{ClientOptions, Cluster, ClusterClient};

use crate::kv;

#[derive(Args)]
pub struct DemoArgs {
    /// Operations in all (the demo also stops after --seconds).
    #[arg(long, default_value_t = 4000)]
    ops: usize,
    /// Longest duration of the workload.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Concurrent clients (threads).
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Keep the cluster files and replica logs in DIR instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// What one client thread saw.
#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    wrong: Vec<String>,
    error: Option<String>,
}

pub fn run(a: DemoArgs) -> Result<ExitCode> {
    anyhow::ensure!(a.clients >= 1, "--clients must be at least 1");
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = stop.clone();
    ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")?;

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
    eprintln!("4 replicas (f = 1) up on 127.0.0.1 ({}); {} clients, {} operations", dir.display(), a.clients, a.ops);

    let shared = Arc::new(Mutex::new(Outcome::default()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.seconds);
    let workers: Vec<_> = (0..a.clients)
        .map(|c| {
            let (path, stop, shared) = (path.clone(), stop.clone(), shared.clone());
            let quota = a.ops / a.clients as usize + usize::from((c as usize) < a.ops % a.clients as usize);
            std::thread::spawn(move || client_loop(&path, c, quota, deadline, &stop, &shared))
        })
        .collect();
    let progress = std::io::stderr().is_terminal();
    let completed = || shared.lock().map(|o| o.latencies.len()).unwrap_or(0);
    while workers.iter().any(|w| !w.is_finished()) && !stop.load(Ordering::Relaxed) {
        if progress {
            draw_progress(completed(), a.ops, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    if progress {
        draw_progress(completed(), a.ops, elapsed);
        eprintln!();
    }
    // On Ctrl-C the clients are not waited for: one may be inside a request
    // the stopped replicas will never answer. Exiting ends their threads.
    if !stop.load(Ordering::Relaxed) {
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        }
    }
    let all = std::mem::take(&mut *shared.lock().map_err(|_| anyhow::anyhow!("a client thread panicked"))?);
    let primary = metrics.first().and_then(|m| scrape(*m, Duration::from_secs(2)).ok());
    drop(procs);
    report(&all, elapsed, primary.as_deref());
    if stop.load(Ordering::Relaxed) {
        eprintln!("interrupted; replicas stopped");
        return Ok(ExitCode::from(130));
    }
    if let Some(e) = &all.error {
        anyhow::bail!("a client failed: {e} (replica logs in {})", dir.display());
    }
    Ok(if all.wrong.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One closed-loop client: `quota` operations on keys of its own, each checked
/// against a model.
fn client_loop(path: &Path, id: u32, quota: usize, deadline: Instant, stop: &AtomicBool, shared: &Mutex<Outcome>) {
    let record = |f: &mut dyn FnMut(&mut Outcome)| {
        if let Ok(mut o) = shared.lock() {
            f(&mut o)
        }
    };
    let setup = Cluster::load(path).and_then(|cluster| {
        let options = ClientOptions { timeout: Duration::from_secs(5), ..Default::default() };
        ClusterClient::open(&cluster, id, &cluster.default_client_key_path(id), &options)
    });
    let mut client = match setup {
        Ok(c) => c,
        Err(e) => {
            record(&mut |o| o.error = Some(format!("client {id}: {e}")));
            return;
        }
    };
    let mut model = KvModel::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(id);
    for i in 0..quota {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
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
                record(&mut |o| {
                    o.latencies.push(latency);
                    if result != expected {
                        o.wrong.push(format!("client {id}: {op:?} gave {result:?}, expected {expected:?}"));
                    }
                });
            }
            Err(e) => {
                if !stop.load(Ordering::Relaxed) {
                    record(&mut |o| o.error = Some(format!("client {id}: {e:#}")));
                }
                break;
            }
        }
    }
}

fn draw_progress(done: usize, total: usize, elapsed: Duration) {
    const WIDTH: usize = 40;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH).min(WIDTH);
    eprint!(
        "\r[{}{}] {done}/{total} ops  {:.1} s",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled),
        elapsed.as_secs_f64()
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(o: &Outcome, elapsed: Duration, primary_metrics: Option<&str>) {
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
    if let Some(text) = primary_metrics {
        let get = |name| sample_value(text, name).unwrap_or(0.0);
        let (batches, requests) = (get("pbft_batches_executed_total"), get("pbft_batch_requests_total"));
        println!(
            "primary:    {requests:.0} requests in {batches:.0} batches ({:.1} a batch), {:.0} stable checkpoints",
            requests / batches.max(1.0),
            get("pbft_checkpoints_stable_total")
        );
    }
    if o.wrong.is_empty() {
        println!("results:    all {n} checked against a model of the service, none wrong");
    } else {
        println!("results:    {} of {n} WRONG; first: {}", o.wrong.len(), o.wrong[0]);
    }
}
