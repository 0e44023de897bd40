//! `pbft bench`: the papers' micro-benchmarks against an unreplicated baseline
//! measured in the same run.
//!
//! Workloads: the null operation with 0/0, 4/0 and 0/4 KiB of argument/result,
//! read-write and read-only. For each, latency with one client and throughput
//! with a sweep of closed-loop clients, on a 4-replica cluster (f = 1) and on
//! the unreplicated baseline: the same service, client and transport path with
//! one replica (f = 0, quorums of one). The two alternate (A B A B ...) for
//! `--rounds` rounds, with the machine let settle between runs (processes
//! gone, dirty pages written back); the figures are medians over the rounds
//! with their spread, and the ratios the median of each round's ratio, so that
//! a noisy machine shows as spread instead of as a wrong ratio. Each replica is
//! its own process on 127.0.0.1.
//!
//! Where the time goes, per operation, at the best throughput point: CPU time
//! summed over the replica processes (from /proc), their system calls that
//! sent or received datagrams and the datagrams (from their metrics), their
//! context switches (from /proc), and the CPU time of this process's client
//! threads (so that a client-bound run shows as one). Prints a table, writes
//! CSV and plots it as SVG (see `plot`).
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

use crate::local::{open_client, open_group, start_with, Running};

#[derive(Args)]
pub struct BenchArgs {
    /// Operations for each latency measurement (one client).
    #[arg(long, default_value_t = 1000)]
    latency_ops: usize,
    /// Seconds for each throughput point.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Client counts of the throughput sweep [default: 1,4,16; for the
    /// durability scenario 16,64,128, enough to saturate every level].
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<u32>>,
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
    /// How long each replica, and each of the bench's clients, polls its
    /// socket before it sleeps, in microseconds (the cluster file's
    /// `spin_us`; 0 sleeps at once).
    #[arg(long, default_value_t = pbft_node::cluster::Protocol::default().spin_us)]
    spin_us: u64,
    /// Threads that drive the throughput runs' clients, each thread a group
    /// of clients on one socket (`ClientGroup`); at least one client a
    /// thread. A client is still one PBFT client with one request
    /// outstanding; fewer threads leave the replicas more of the CPU.
    #[arg(long, default_value_t = 1)]
    client_threads: u32,
    /// How long the bench's clients poll before they sleep, in microseconds
    /// [default: `--spin-us`].
    #[arg(long)]
    client_spin_us: Option<u64>,
    /// Rounds: normal, each runs the replicated cluster then the unreplicated
    /// baseline; durability, each runs every level once, in turn.
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
    /// At the best point, per operation: the replicas' system calls that sent
    /// or received, datagrams they sent and received, their context switches,
    /// and the clients' CPU time.
    pub syscalls_per_op: f64,
    pub datagrams_per_op: f64,
    pub switches_per_op: f64,
    pub client_cpu_us_per_op: f64,
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

fn start(replicas: usize, clients: u32, durability: Durability, spin_us: u64) -> Result<Running> {
    let mut spec = KeygenSpec::local(replicas, clients);
    spec.protocol.durability = durability;
    spec.protocol.spin_us = spin_us;
    start_with(&spec, "warn", |_, _| {})
}

pub(crate) fn op_bytes(w: &Workload) -> Bytes {
    Bytes::from(KvOp::Null { arg: vec![7u8; w.arg], result_len: w.result }.encode())
}

/// Where a throughput window's time went, summed over the replica processes
/// (and, for `client_cpu_us`, this process).
#[derive(Clone, Copy, Default)]
struct Counters {
    cpu_us: f64,
    syscalls: f64,
    datagrams: f64,
    switches: f64,
    client_cpu_us: f64,
}

impl Counters {
    fn now(run: &Running, pids: &[u32]) -> Counters {
        let mut c = Counters { cpu_us: cpu_us(pids), switches: context_switches(pids), client_cpu_us: own_cpu_us(), ..Default::default() };
        for addr in &run.metrics {
            let Ok(text) = pbft_node::metrics::scrape(*addr, Duration::from_secs(2)) else { continue };
            let value = |name: &str| pbft_node::metrics::sample_value(&text, name).unwrap_or(0.0);
            c.syscalls += value("pbft_receive_calls_total") + value("pbft_send_calls_total");
            c.datagrams += value("pbft_datagrams_received_total") + value("pbft_datagrams_sent_total");
        }
        c
    }

    fn minus(&self, o: &Counters) -> Counters {
        Counters {
            cpu_us: self.cpu_us - o.cpu_us,
            syscalls: self.syscalls - o.syscalls,
            datagrams: self.datagrams - o.datagrams,
            switches: self.switches - o.switches,
            client_cpu_us: self.client_cpu_us - o.client_cpu_us,
        }
    }
}

/// Context switches (voluntary and not) of every thread of the given processes.
fn context_switches(pids: &[u32]) -> f64 {
    let mut total = 0.0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
            total += status
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum::<f64>();
        }
    }
    total
}

/// CPU time (user + system) of this process so far, in microseconds.
fn own_cpu_us() -> f64 {
    // SAFETY: an all-zero rusage is valid, and getrusage writes only into it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a live, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(u.ru_utime) + us(u.ru_stime)
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

/// Lets the machine settle between two runs: the replica processes are gone
/// (the caller dropped them), dirty pages are written back, and a moment
/// passes for the scheduler.
fn settle() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(500));
}

/// A median over rounds, with the smallest and largest value.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        if v.is_empty() {
            return Spread { median: 0.0, min: 0.0, max: 0.0 };
        }
        v.sort_by(f64::total_cmp);
        Spread { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] }
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

impl BenchArgs {
    /// The client counts to sweep: `--clients`, or the scenario's default.
    fn client_counts(&self, default: &[u32]) -> Result<Vec<u32>> {
        let counts = self.clients.clone().unwrap_or_else(|| default.to_vec());
        anyhow::ensure!(!counts.is_empty() && counts.iter().all(|c| *c >= 1), "--clients needs counts >= 1");
        Ok(counts)
    }
}

/// Latency with one client, then closed-loop throughput with each of
/// `client_counts` clients; the best point is the saturated throughput.
fn measure(run: &Running, w: &Workload, a: &BenchArgs, client_counts: &[u32]) -> Result<Figures> {
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
    for &clients in client_counts {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The replicas publish their metrics every 100 ms: let them catch up
        // with the idle cluster before and after the window.
        std::thread::sleep(Duration::from_millis(150));
        let before = Counters::now(run, &pids);
        let started = Instant::now();
        let threads = a.client_threads.clamp(1, clients.max(1));
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (path, stop, op, ro) = (run.path.clone(), stop.clone(), op.clone(), w.read_only);
                let ids: Vec<u32> = (0..clients).filter(|c| c % threads == t).collect();
                let spin = a.client_spin_us.map(Duration::from_micros);
                std::thread::spawn(move || -> Result<u64> {
                    let mut group = open_group(&path, &ids, spin)?;
                    for i in 0..group.len() {
                        group.submit(i, op.clone(), ro)?;
                    }
                    let mut done = 0u64;
                    let mut outcomes = Vec::new();
                    // Each client sends its next request as soon as its last
                    // completes, until told to stop.
                    while group.is_busy() {
                        group.wait(&mut outcomes)?;
                        let stopping = stop.load(std::sync::atomic::Ordering::Relaxed);
                        for (i, outcome) in outcomes.drain(..) {
                            outcome?;
                            done += 1;
                            if !stopping {
                                group.submit(i, op.clone(), ro)?;
                            }
                        }
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
        std::thread::sleep(Duration::from_millis(150));
        let spent = Counters::now(run, &pids).minus(&before);
        let rate = done as f64 / secs;
        fig.sweep.push((clients, rate));
        if rate > fig.ops_per_s {
            let per_op = |x: f64| x / done.max(1) as f64;
            fig.ops_per_s = rate;
            fig.best_clients = clients;
            fig.cpu_us_per_op = per_op(spent.cpu_us);
            fig.syscalls_per_op = per_op(spent.syscalls);
            fig.datagrams_per_op = per_op(spent.datagrams);
            fig.switches_per_op = per_op(spent.switches);
            fig.client_cpu_us_per_op = per_op(spent.client_cpu_us);
        }
    }
    Ok(fig)
}

/// A debug build, or one that `cargo build --workspace` or `cargo test` made
/// (the simulator's features on), checks every invariant after every input.
const CHECKED_BUILD: &str = "warning: this pbft checks every invariant after every input (a debug build, or one \
     built with the simulator's features by `cargo build --workspace` or `cargo test`): its figures are not the \
     library's; build it with `cargo build --release` or run `cargo run --release -p pbft-cli -- bench`";

pub fn run(a: BenchArgs) -> Result<()> {
    use crate::bench_faults::Scenario;
    a.faults.check()?;
    if pbft::INVARIANTS_CHECKED {
        eprintln!("{CHECKED_BUILD}");
    }
    if matches!(a.faults.scenario, Scenario::Normal | Scenario::All) {
        run_normal(&a)?;
    }
    if matches!(a.faults.scenario, Scenario::Durability | Scenario::All) {
        run_durability(&a)?;
    }
    crate::bench_faults::run(&a.faults)?;
    if pbft::INVARIANTS_CHECKED {
        eprintln!("{CHECKED_BUILD}"); // again, below the figures it concerns
    }
    Ok(())
}

/// `--scenario durability`: each durability level on a fresh 4-replica
/// cluster, in turn, for `--rounds` rounds; medians with their spread, and the
/// median of each round's ratio to "none".
fn run_durability(a: &BenchArgs) -> Result<()> {
    anyhow::ensure!((1..=100).contains(&a.rounds), "--rounds must be in 1..=100");
    // Group commit pays off only once batches fill: saturate every level.
    let counts = a.client_counts(&[16, 64, 128])?;
    let max_clients = *counts.iter().max().unwrap_or(&1);
    let levels = [Durability::None, Durability::Process, Durability::Power];
    let workloads = [&WORKLOADS[0], &WORKLOADS[2]];
    // figures[round][level][workload]
    let mut figures: Vec<Vec<Vec<Figures>>> = Vec::new();
    for round in 0..a.rounds {
        let mut per_level = Vec::new();
        for level in levels {
            let running = start(4, max_clients, level, a.spin_us)?;
            let mut per_workload = Vec::new();
            for w in workloads {
                let fig = measure(&running, w, a, &counts).with_context(|| format!("{}, {}", level.name(), w.name))?;
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
            drop(running);
            settle();
            per_level.push(per_workload);
        }
        figures.push(per_level);
    }
    let median = |v: Vec<f64>| -> (f64, f64, f64) {
        let s = Spread::of(v);
        (s.median, s.min, s.max)
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

/// The micro-benchmarks (`--scenario normal`): the replicated cluster and
/// the unreplicated baseline alternated for `--rounds` rounds.
fn run_normal(a: &BenchArgs) -> Result<()> {
    anyhow::ensure!((1..=100).contains(&a.rounds), "--rounds must be in 1..=100");
    let counts = a.client_counts(&[1, 4, 16])?;
    let max_clients = *counts.iter().max().unwrap_or(&1);
    eprintln!(
        "throughput: closed-loop clients, each one PBFT client with one request outstanding, driven by {} thread(s) of \
         this process (one socket a thread)",
        a.client_threads.clamp(1, max_clients)
    );
    // figures[round][configuration: 0 replicated, 1 unreplicated][workload]
    let mut figures: Vec<[Vec<Figures>; 2]> = Vec::new();
    for round in 0..a.rounds {
        let mut per_config: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
        for (k, replicas) in [4usize, 1].into_iter().enumerate() {
            let label = configuration(replicas);
            let running = start(replicas, max_clients, a.durability, a.spin_us)?;
            eprintln!("round {round}, {label}: {replicas} replica process(es) up ({})", running.dir.display());
            for w in &WORKLOADS {
                let fig = measure(&running, w, a, &counts).with_context(|| format!("{label}, {}", w.name))?;
                eprintln!(
                    "  {:7} p50 {:7.1} us  p99 {:7.1} us  {:8.0} ops/s ({} clients)  {:6.1} us CPU/op  {:5.1} syscalls/op  {:5.1} switches/op",
                    w.name, fig.p50_us, fig.p99_us, fig.ops_per_s, fig.best_clients, fig.cpu_us_per_op, fig.syscalls_per_op, fig.switches_per_op
                );
                per_config[k].push(fig);
            }
            drop(running);
            settle();
        }
        figures.push(per_config);
    }
    // Medians over the rounds (with min and max), and each round's ratio.
    let spread = |f: &dyn Fn(&[Vec<Figures>; 2]) -> f64| -> Spread { Spread::of(figures.iter().map(f).collect()) };
    let mut rows = Vec::new();
    println!(
        "{:8} {:>22} {:>9} {:>8} {:>24} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "workload", "p50 us (min-max)", "base p50", "ratio", "ops/s (min-max)", "base ops/s", "ratio", "CPU us/op", "base CPU", "syscalls", "switches"
    );
    let mut csv = String::from(
        "workload,p50_us,p99_us,base_p50_us,base_p99_us,latency_ratio,ops_per_s,base_ops_per_s,throughput_ratio,cpu_us_per_op,base_cpu_us_per_op,\
         rounds,p50_min,p50_max,ops_min,ops_max,cpu_ratio,syscalls_per_op,base_syscalls_per_op,datagrams_per_op,base_datagrams_per_op,\
         switches_per_op,base_switches_per_op,client_cpu_us_per_op\n",
    );
    for (i, w) in WORKLOADS.iter().enumerate() {
        let r = |f: fn(&Figures) -> f64| spread(&|round| f(&round[0][i]));
        let b = |f: fn(&Figures) -> f64| spread(&|round| f(&round[1][i]));
        let ratio = |f: fn(&Figures) -> f64| spread(&|round| f(&round[0][i]) / f(&round[1][i]).max(1e-9));
        let (p50, base_p50, lat_ratio) = (r(|f| f.p50_us), b(|f| f.p50_us), ratio(|f| f.p50_us));
        let (ops, base_ops, thr_ratio) = (r(|f| f.ops_per_s), b(|f| f.ops_per_s), ratio(|f| f.ops_per_s));
        let (cpu, base_cpu, cpu_ratio) = (r(|f| f.cpu_us_per_op), b(|f| f.cpu_us_per_op), ratio(|f| f.cpu_us_per_op));
        let (sys, base_sys) = (r(|f| f.syscalls_per_op), b(|f| f.syscalls_per_op));
        let (dgrams, base_dgrams) = (r(|f| f.datagrams_per_op), b(|f| f.datagrams_per_op));
        let (switches, base_switches) = (r(|f| f.switches_per_op), b(|f| f.switches_per_op));
        let client_cpu = r(|f| f.client_cpu_us_per_op);
        println!(
            "{:8} {:>8.1} ({:>5.0}-{:>5.0}) {:>9.1} {:>7.2}x {:>8.0} ({:>6.0}-{:>6.0}) {:>10.0} {:>7.2}x {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            w.name, p50.median, p50.min, p50.max, base_p50.median, lat_ratio.median, ops.median, ops.min, ops.max,
            base_ops.median, thr_ratio.median, cpu.median, base_cpu.median, sys.median, switches.median
        );
        csv.push_str(&format!(
            "{},{:.1},{:.1},{:.1},{:.1},{:.3},{:.0},{:.0},{:.3},{:.1},{:.1},{},{:.1},{:.1},{:.0},{:.0},{:.3},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.1}\n",
            w.name,
            p50.median,
            r(|f| f.p99_us).median,
            base_p50.median,
            b(|f| f.p99_us).median,
            lat_ratio.median,
            ops.median,
            base_ops.median,
            thr_ratio.median,
            cpu.median,
            base_cpu.median,
            a.rounds,
            p50.min,
            p50.max,
            ops.min,
            ops.max,
            cpu_ratio.median,
            sys.median,
            base_sys.median,
            dgrams.median,
            base_dgrams.median,
            switches.median,
            base_switches.median,
            client_cpu.median,
        ));
        // The plot: the round whose throughput is the median, per configuration.
        for (k, replicas) in [4usize, 1].into_iter().enumerate() {
            let mut by_ops: Vec<&Figures> = figures.iter().map(|round| &round[k][i]).collect();
            by_ops.sort_by(|x, y| x.ops_per_s.total_cmp(&y.ops_per_s));
            let mut fig = by_ops[by_ops.len() / 2].clone();
            fig.p50_us = if k == 0 { p50.median } else { base_p50.median };
            rows.push(Row { replicas, workload: w.name, fig });
        }
    }
    std::fs::write(&a.csv, csv).with_context(|| format!("writing {}", a.csv.display()))?;
    eprintln!("wrote {}", a.csv.display());
    let plot_path = a.plot.clone().unwrap_or_else(|| a.csv.with_extension("svg"));
    crate::plot::write_svg(&rows, &plot_path).with_context(|| format!("writing {}", plot_path.display()))?;
    eprintln!("wrote {}", plot_path.display());
    Ok(())
}
