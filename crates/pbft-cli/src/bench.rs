//! `pbft bench`: the papers' micro-benchmarks against an unreplicated baseline
//! measured in the same run.
//!
//! Workloads: the null operation with 0/0, 4/0 and 0/4 KiB of argument/result,
//! read-write and read-only. For each, latency with one client and throughput
//! with a sweep of closed-loop clients, first on a 4-replica cluster (f = 1),
//! then on the unreplicated baseline: the same service, client and transport
//! path with one replica (f = 0, quorums of one). Each replica is its own
//! process on 127.0.0.1. The CPU time per operation is summed over the replica
//! processes (from /proc) during the best throughput point. Prints a table,
//! writes CSV and plots it as SVG (see `plot`).
//!
//! `--scenario` selects measurements under faults instead (or as well): a view
//! change after the primary is killed, a slow primary, state transfer (see
//! `bench_faults`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use pbft_kv::KvOp;
use pbft_node::journal::Durability;
use pbft_node::keygen::KeygenSpec;

use crate::local::{open_client, start_with, Running};

#[derive(Args)]
pub struct BenchArgs {
    /// Operations for each latency measurement (one client).
    #[arg(long, default_value_t = 1000)]
    latency_ops: usize,
    /// Seconds for each throughput point.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Client counts of the throughput sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<u32>,
    /// Where to write the CSV.
    #[arg(long, default_value = "bench-results.csv")]
    csv: PathBuf,
    /// Where to write the SVG plot (default: the CSV's path with .svg).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// normal: what the replicas make durable before they speak (none,
    /// process, power); "none" is what the papers and Castro's library measured.
    #[arg(long, default_value = "none", value_parser = |s: &str| s.parse::<Durability>())]
    durability: Durability,
    /// durability: rounds, each running every level once, in turn.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[command(flatten)]
    faults: crate::bench_faults::FaultBenchArgs,
}

pub(crate) struct Workload {
    name: &'static str,
    arg: usize,
    result: u32,
    read_only: bool,
}

pub(crate) const WORKLOADS: [Workload; 5] = [
    Workload { name: "0/0 rw", arg: 0, result: 0, read_only: false },
    Workload { name: "0/0 ro", arg: 0, result: 0, read_only: true },
    Workload { name: "4/0 rw", arg: 4096, result: 0, read_only: false },
    Workload { name: "0/4 rw", arg: 0, result: 4096, read_only: false },
    Workload { name: "0/4 ro", arg: 0, result: 4096, read_only: true },
];

/// One workload's figures on one configuration.
#[derive(Clone, Default)]
pub struct Figures {
    pub p50_us: f64,
    pub p99_us: f64,
    pub ops_per_s: f64,
    pub best_clients: u32,
    pub cpu_us_per_op: f64,
    /// Every point of the throughput sweep, (clients, ops/s), in the order run.
    pub sweep: Vec<(u32, f64)>,
}

/// One workload measured on one configuration.
pub struct Row {
    pub replicas: usize,
    pub workload: &'static str,
    pub fig: Figures,
}

/// How the progress log and the plot name a configuration.
pub fn configuration(replicas: usize) -> String {
    if replicas == 1 {
        "unreplicated".to_string()
    } else {
        format!("replicated (n = {replicas})")
    }
}

fn start(replicas: usize, clients: u32, durability: Durability) -> Result<Running> {
    let mut spec = KeygenSpec::local(replicas, clients);
    spec.protocol.durability = durability;
    start_with(&spec, "warn", |_, _| {})
}

pub(crate) fn op_bytes(w: &Workload) -> Bytes {
    Bytes::from(KvOp::Null { arg: vec![7u8; w.arg], result_len: w.result }.encode())
}

/// CPU time (user + system) of the given processes, in microseconds.
fn cpu_us(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the parenthesised command name: state is field 3; utime 14, stime 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        * 1e6
        / ticks
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn measure(run: &Running, w: &Workload, a: &BenchArgs) -> Result<Figures> {
    let op = op_bytes(w);
    // Latency: one client.
    let mut client = open_client(&run.path, 0)?;
    for _ in 0..20 {
        client.invoke(op.clone(), w.read_only)?; // warm-up
    }
    let mut lat = Vec::with_capacity(a.latency_ops);
    for _ in 0..a.latency_ops {
        let t = Instant::now();
        client.invoke(op.clone(), w.read_only)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let mut fig = Figures { p50_us: percentile(&lat, 0.5), p99_us: percentile(&lat, 0.99), ..Default::default() };
    drop(client);
    // Throughput: closed-loop clients.
    let pids: Vec<u32> = run.procs.pids().into_iter().map(|(_, p)| p).collect();
    for &clients in &a.clients {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cpu_before = cpu_us(&pids);
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|id| {
                let (path, stop, op, ro) = (run.path.clone(), stop.clone(), op.clone(), w.read_only);
                std::thread::spawn(move || -> Result<u64> {
                    let mut c = open_client(&path, id)?;
                    let mut done = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        c.invoke(op.clone(), ro)?;
                        done += 1;
                    }
                    Ok(done)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(a.seconds));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut done = 0u64;
        for t in workers {
            done += t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_us(&pids) - cpu_before;
        let rate = done as f64 / secs;
        fig.sweep.push((clients, rate));
        if rate > fig.ops_per_s {
            fig.ops_per_s = rate;
            fig.best_clients = clients;
            fig.cpu_us_per_op = cpu / done.max(1) as f64;
        }
    }
    Ok(fig)
}

pub fn run(a: BenchArgs) -> Result<()> {
    use crate::bench_faults::Scenario;
    a.faults.check()?;
    if matches!(a.faults.scenario, Scenario::Normal | Scenario::All) {
        run_normal(&a)?;
    }
    if matches!(a.faults.scenario, Scenario::Durability | Scenario::All) {
        run_durability(&a)?;
    }
    crate::bench_faults::run(&a.faults)
}

/// `--scenario durability`: each durability level on a fresh 4-replica
/// cluster, in turn, for `--rounds` rounds; medians with their spread, and the
/// median of each round's ratio to "none".
fn run_durability(a: &BenchArgs) -> Result<()> {
    anyhow::ensure!((1..=100).contains(&a.rounds), "--rounds must be in 1..=100");
    let max_clients = *a.clients.iter().max().unwrap_or(&1);
    let levels = [Durability::None, Durability::Process, Durability::Power];
    let workloads = [&WORKLOADS[0], &WORKLOADS[2]];
    // figures[round][level][workload]
    let mut figures: Vec<Vec<Vec<Figures>>> = Vec::new();
    for round in 0..a.rounds {
        let mut per_level = Vec::new();
        for level in levels {
            let running = start(4, max_clients, level)?;
            let mut per_workload = Vec::new();
            for w in workloads {
                let fig = measure(&running, w, a).with_context(|| format!("{}, {}", level.name(), w.name))?;
                eprintln!(
                    "  round {round} {:8} {:7} p50 {:7.1} us  {:8.0} ops/s ({} clients)",
                    level.name(),
                    w.name,
                    fig.p50_us,
                    fig.ops_per_s,
                    fig.best_clients
                );
                per_workload.push(fig);
            }
            per_level.push(per_workload);
        }
        figures.push(per_level);
    }
    let median = |mut v: Vec<f64>| -> (f64, f64, f64) {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    println!(
        "{:8} {:8} {:>22} {:>10} {:>26} {:>10}",
        "workload", "level", "p50 us (min-max)", "p50 ratio", "ops/s (min-max)", "ops ratio"
    );
    let mut csv = String::from("workload,durability,p50_us,p50_min,p50_max,p50_ratio,ops_per_s,ops_min,ops_max,ops_ratio\n");
    for (k, w) in workloads.iter().enumerate() {
        for (l, level) in levels.iter().enumerate() {
            let p50 = median(figures.iter().map(|r| r[l][k].p50_us).collect());
            let ops = median(figures.iter().map(|r| r[l][k].ops_per_s).collect());
            let p50_ratio = median(figures.iter().map(|r| r[l][k].p50_us / r[0][k].p50_us.max(1e-9)).collect()).0;
            let ops_ratio = median(figures.iter().map(|r| r[l][k].ops_per_s / r[0][k].ops_per_s.max(1e-9)).collect()).0;
            println!(
                "{:8} {:8} {:>8.1} ({:>5.0}-{:>5.0}) {:>9.2}x {:>8.0} ({:>6.0}-{:>6.0}) {:>9.2}x",
                w.name, level.name(), p50.0, p50.1, p50.2, p50_ratio, ops.0, ops.1, ops.2, ops_ratio
            );
            csv.push_str(&format!(
                "{},{},{:.1},{:.1},{:.1},{:.3},{:.0},{:.0},{:.0},{:.3}\n",
                w.name, level.name(), p50.0, p50.1, p50.2, p50_ratio, ops.0, ops.1, ops.2, ops_ratio
            ));
        }
    }
    let path = a.csv.with_file_name("bench-durability.csv");
    std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The micro-benchmarks (`--scenario normal`).
fn run_normal(a: &BenchArgs) -> Result<()> {
    anyhow::ensure!(!a.clients.is_empty() && a.clients.iter().all(|c| *c >= 1), "--clients needs counts >= 1");
    let max_clients = *a.clients.iter().max().unwrap_or(&1);
    let mut rows = Vec::new();
    for replicas in [4usize, 1] {
        let label = configuration(replicas);
        let running = start(replicas, max_clients, a.durability)?;
        eprintln!("{label}: {replicas} replica process(es) up ({})", running.dir.display());
        for w in &WORKLOADS {
            let fig = measure(&running, w, a).with_context(|| format!("{label}, {}", w.name))?;
            eprintln!(
                "  {:7} p50 {:7.1} us  p99 {:7.1} us  {:8.0} ops/s ({} clients)  {:6.1} us CPU/op",
                w.name, fig.p50_us, fig.p99_us, fig.ops_per_s, fig.best_clients, fig.cpu_us_per_op
            );
            rows.push(Row { replicas, workload: w.name, fig });
        }
    }
    let find = |replicas: usize, name: &str| {
        rows.iter().find(|r| r.replicas == replicas && r.workload == name).map(|r| &r.fig)
    };
    println!(
        "{:8} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8} {:>12}",
        "workload", "p50 us", "base p50", "ratio", "ops/s", "base ops/s", "ratio", "CPU us/op"
    );
    let mut csv = String::from(
        "workload,p50_us,p99_us,base_p50_us,base_p99_us,latency_ratio,ops_per_s,base_ops_per_s,throughput_ratio,cpu_us_per_op,base_cpu_us_per_op\n",
    );
    for w in &WORKLOADS {
        let (Some(r), Some(b)) = (find(4, w.name), find(1, w.name)) else { continue };
        let lat_ratio = r.p50_us / b.p50_us.max(1e-9);
        let thr_ratio = r.ops_per_s / b.ops_per_s.max(1e-9);
        println!(
            "{:8} {:>10.1} {:>10.1} {:>7.2}x {:>10.0} {:>10.0} {:>7.2}x {:>12.1}",
            w.name, r.p50_us, b.p50_us, lat_ratio, r.ops_per_s, b.ops_per_s, thr_ratio, r.cpu_us_per_op
        );
        csv.push_str(&format!(
            "{},{:.1},{:.1},{:.1},{:.1},{:.3},{:.0},{:.0},{:.3},{:.1},{:.1}\n",
            w.name, r.p50_us, r.p99_us, b.p50_us, b.p99_us, lat_ratio, r.ops_per_s, b.ops_per_s, thr_ratio, r.cpu_us_per_op, b.cpu_us_per_op
        ));
    }
    std::fs::write(&a.csv, csv).with_context(|| format!("writing {}", a.csv.display()))?;
    eprintln!("wrote {}", a.csv.display());
    let plot_path = a.plot.clone().unwrap_or_else(|| a.csv.with_extension("svg"));
    crate::plot::write_svg(&rows, &plot_path).with_context(|| format!("writing {}", plot_path.display()))?;
    eprintln!("wrote {}", plot_path.display());
    Ok(())
}
