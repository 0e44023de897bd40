//! `pbft bench --scenario view-change|slow-primary|transfer|all`: what the
//! service does under faults, on clusters of real replica processes on
//! 127.0.0.1 (n = 4, f = 1).
//!
//! - view-change: closed-loop clients run the null 0/0 read-write operation;
//!   once the load is steady the primary of view 0 (replica 0) is killed with
//!   SIGKILL. Measured: the time from the kill to the first operation completed
//!   after it (often one whose replies were in flight), and to the first
//!   completion of an operation issued after it (the service is back); the
//!   throughput in the window before the kill against the window after the
//!   latter. Repeated on fresh clusters.
//! - slow-primary: the same load for a fixed time against a cluster whose
//!   replica 0 runs `--faulty slow-primary` and against a correct cluster.
//! - transfer: the state-transfer rate, in `bench_transfer.rs`.
//!
//! Each table is printed and its figures appended to `--faults-csv` as rows
//! `unix_time,scenario,case,metric,value`. Every wait has a deadline, and the
//! replica processes die with the cluster guard ([`crate::local::Running`]).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::{Args, ValueEnum};
use pbft_node::keygen::KeygenSpec;
use pbft_node::metrics::Reading;

use crate::bench::{op_bytes, percentile, WORKLOADS};
use crate::local::{open_client, start_with};

/// Which measurement `pbft bench` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// The micro-benchmarks against the unreplicated baseline.
    Normal,
    /// Kill the primary under load: time to the first completion, throughput before and after.
    ViewChange,
    /// Throughput and latency with a primary that delays every pre-prepare, against a correct one.
    SlowPrimary,
    /// State transfer of a large service state, all of it and ~1% of it.
    Transfer,
    /// 0/0 and 4/0 read-write latency and throughput at each durability
    /// level (none, process, power), as ratios to none, in alternating rounds.
    Durability,
    /// Every scenario above, in that order.
    All,
}

/// Options of the fault scenarios.
#[derive(Args)]
pub struct FaultBenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Normal)]
    pub scenario: Scenario,
    /// view-change: runs, each on a fresh cluster; transfer: runs of the
    /// 100% case, one after the other on the same filled cluster.
    #[arg(long, default_value_t = 5)]
    pub(crate) repeats: u32,
    /// view-change and slow-primary: closed-loop clients.
    #[arg(long, default_value_t = 4)]
    fault_clients: u32,
    /// slow-primary: seconds of measured load on each cluster (after 1 s of warm-up).
    #[arg(long, default_value_t = 5.0)]
    slow_seconds: f64,
    /// transfer: size of the key-value state in MiB (256 pages a MiB).
    #[arg(long, default_value_t = 256)]
    pub(crate) transfer_mib: u64,
    /// Where to append the figures of the fault scenarios (CSV).
    #[arg(long, default_value = "bench-faults.csv")]
    pub(crate) faults_csv: PathBuf,
}

/// Load before the view-change measurement starts.
const WARMUP: Duration = Duration::from_secs(1);
/// Throughput windows before the kill and after the first completion.
const WINDOW: Duration = Duration::from_secs(2);
/// Longest wait for the first completion after the kill.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
/// Completions recorded per client thread; later ones are only counted.
const MAX_RECORDED: usize = 1 << 22;
/// Metrics polling period.
pub(crate) const POLL: Duration = Duration::from_millis(20);
pub(crate) const MIB: f64 = 1024.0 * 1024.0;

impl FaultBenchArgs {
    /// Checks the options (before anything runs).
    pub fn check(&self) -> Result<()> {
        ensure!((1..=1000).contains(&self.repeats), "--repeats must be in 1..=1000");
        ensure!((1..=256).contains(&self.fault_clients), "--fault-clients must be in 1..=256");
        ensure!(self.slow_seconds > 0.0 && self.slow_seconds <= 3600.0, "--slow-seconds must be in (0, 3600]");
        ensure!((1..=4096).contains(&self.transfer_mib), "--transfer-mib must be in 1..=4096");
        Ok(())
    }
}

/// Runs the fault scenarios `a.scenario` selects (none for `normal`).
pub fn run(a: &FaultBenchArgs) -> Result<()> {
    a.check()?;
    let all = a.scenario == Scenario::All;
    if all || a.scenario == Scenario::ViewChange {
        view_change(a)?;
    }
    if all || a.scenario == Scenario::SlowPrimary {
        slow_primary(a)?;
    }
    if all || a.scenario == Scenario::Transfer {
        crate::bench_transfer::transfer(a)?;
    }
    Ok(())
}

/// Figures of one scenario, appended to the CSV in one go.
pub(crate) struct Rows {
    scenario: &'static str,
    lines: Vec<String>,
}

impl Rows {
    pub(crate) fn new(scenario: &'static str) -> Rows {
        Rows { scenario, lines: Vec::new() }
    }

    pub(crate) fn add(&mut self, case: &str, metric: &str, value: f64) {
        self.lines.push(format!("{},{case},{metric},{value:.6}", self.scenario));
    }

    /// Appends the rows to `path`, with a header if the file is new or empty.
    pub(crate) fn append(&self, path: &Path) -> Result<()> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut text = String::new();
        if f.metadata().map(|m| m.len() == 0).unwrap_or(true) {
            text.push_str("unix_time,scenario,case,metric,value\n");
        }
        for line in &self.lines {
            text.push_str(&format!("{now},{line}\n"));
        }
        f.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("appended {} rows to {}", self.lines.len(), path.display());
        Ok(())
    }
}

/// Scrapes a replica's metrics; `None` if it does not answer with them.
pub(crate) fn sample(addr: SocketAddr) -> Option<Reading> {
    Reading::fetch(addr, Duration::from_millis(500)).ok()
}

pub(crate) fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

// ---------------------------------------------------------------------------
// Closed-loop load

/// One completed operation: when it was issued and when its result came, in
/// microseconds since the load started.
#[derive(Clone, Copy, Debug)]
struct OpTime {
    issued_us: u64,
    done_us: u64,
}

/// What the clients of a load did.
#[derive(Default)]
struct Recorded {
    /// Sorted by completion time.
    ops: Vec<OpTime>,
    /// Operations that failed (timed out).
    errors: u64,
    /// Completions past [`MAX_RECORDED`], counted but not timed.
    unrecorded: u64,
}

/// Closed-loop clients issuing the null 0/0 read-write operation until
/// stopped. The clients stop when the load is dropped (within one
/// operation's timeout).
struct Load {
    base: Instant,
    stop: Arc<AtomicBool>,
    /// Operations issued at or after this time are watched (`u64::MAX`: none yet).
    watch_from_us: Arc<AtomicU64>,
    /// The first completion of a watched operation (`u64::MAX`: none yet).
    first_watched_us: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Result<Recorded>>>,
}

impl Load {
    fn start(path: &Path, clients: u32) -> Load {
        let base = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let watch_from_us = Arc::new(AtomicU64::new(u64::MAX));
        let first_watched_us = Arc::new(AtomicU64::new(u64::MAX));
        let threads = (0..clients)
            .map(|id| {
                let (path, stop) = (path.to_path_buf(), stop.clone());
                let (watch, first) = (watch_from_us.clone(), first_watched_us.clone());
                std::thread::spawn(move || -> Result<Recorded> {
                    let op = op_bytes(&WORKLOADS[0]);
                    let mut client = open_client(&path, id)?;
                    let mut rec = Recorded::default();
                    while !stop.load(Ordering::Relaxed) {
                        let issued_us = base.elapsed().as_micros() as u64;
                        if client.invoke(op.clone(), false).is_err() {
                            rec.errors += 1;
                            continue;
                        }
                        let done_us = base.elapsed().as_micros() as u64;
                        if issued_us >= watch.load(Ordering::Relaxed) {
                            first.fetch_min(done_us, Ordering::Relaxed);
                        }
                        if rec.ops.len() < MAX_RECORDED {
                            rec.ops.push(OpTime { issued_us, done_us });
                        } else {
                            rec.unrecorded += 1;
                        }
                    }
                    Ok(rec)
                })
            })
            .collect();
        Load { base, stop, watch_from_us, first_watched_us, threads }
    }

    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    /// Watches the operations issued from now on; returns now.
    fn watch_from_now(&self) -> u64 {
        let now = self.now_us();
        self.watch_from_us.store(now, Ordering::Relaxed);
        now
    }

    fn first_watched(&self) -> Option<u64> {
        Some(self.first_watched_us.load(Ordering::Relaxed)).filter(|t| *t != u64::MAX)
    }

    /// Stops the clients and gathers what they did.
    fn finish(mut self) -> Result<Recorded> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Recorded::default();
        for t in std::mem::take(&mut self.threads) {
            let rec = t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
            all.ops.extend(rec.ops);
            all.errors += rec.errors;
            all.unrecorded += rec.unrecorded;
        }
        if all.unrecorded > 0 {
            eprintln!("  warning: {} completions past the recording bound are left out of the figures", all.unrecorded);
        }
        all.ops.sort_by_key(|o| o.done_us);
        Ok(all)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sleeps until `until` (no-op if past).
fn sleep_until(until: Instant) {
    if let Some(d) = until.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

// ---------------------------------------------------------------------------
// view-change

/// One view-change run. Times are from the kill.
struct ViewChangeRun {
    /// The first operation completed after the kill (it may have been
    /// ordered before the kill, its replies in flight).
    first_s: Option<f64>,
    /// The first completion of an operation issued after the kill: the
    /// service is back.
    recovered_s: Option<f64>,
    /// Throughput in the window before the kill, and in the window that
    /// starts at `recovered_s`.
    before_ops_s: f64,
    after_ops_s: f64,
    /// Latency (p50, p99) in milliseconds in the same windows.
    before_ms: (f64, f64),
    after_ms: (f64, f64),
    /// Replica 1's view at the end.
    view: Option<u64>,
    errors: u64,
}

/// Throughput and (p50, p99) latency in ms of the operations completed in `[from_us, to_us)`.
fn window_figures(rec: &Recorded, from_us: u64, to_us: u64) -> (f64, (f64, f64)) {
    let mut lat: Vec<f64> = rec
        .ops
        .iter()
        .filter(|o| o.done_us >= from_us && o.done_us < to_us)
        .map(|o| (o.done_us - o.issued_us) as f64 / 1e3)
        .collect();
    lat.sort_by(f64::total_cmp);
    (lat.len() as f64 / secs(to_us.saturating_sub(from_us)).max(1e-9), (percentile(&lat, 0.5), percentile(&lat, 0.99)))
}

fn view_change_once(clients: u32) -> Result<ViewChangeRun> {
    let mut run = start_with(&KeygenSpec::local(4, clients), "info", |_, _| {})?;
    let load = Load::start(&run.path, clients);
    sleep_until(load.base + WARMUP + WINDOW);
    let view_before = sample(run.metrics[1]).map(|s| s.view);
    ensure!(view_before == Some(0), "replica 1 is in view {view_before:?} before the kill, not 0");
    let kill_us = load.watch_from_now();
    ensure!(run.procs.kill("replica-0"), "replica 0 had exited before the kill");
    let deadline = load.base + Duration::from_micros(kill_us) + RECOVERY_LIMIT;
    let recovered_us = loop {
        if let Some(t) = load.first_watched() {
            break Some(t);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(t) = recovered_us {
        sleep_until(load.base + Duration::from_micros(t) + WINDOW + Duration::from_millis(50));
    }
    let view = sample(run.metrics[1]).map(|s| s.view);
    let rec = load.finish()?;
    let window_us = WINDOW.as_micros() as u64;
    let (before_ops_s, before_ms) = window_figures(&rec, kill_us.saturating_sub(window_us), kill_us);
    ensure!(before_ops_s > 0.0, "no operation completed in the {WINDOW:?} before the kill");
    let (after_ops_s, after_ms) =
        recovered_us.map_or((0.0, (f64::NAN, f64::NAN)), |t| window_figures(&rec, t, t + window_us));
    let first_us = rec.ops.iter().map(|o| o.done_us).find(|d| *d >= kill_us);
    Ok(ViewChangeRun {
        first_s: first_us.map(|t| secs(t - kill_us)),
        recovered_s: recovered_us.map(|t| secs(t - kill_us)),
        before_ops_s,
        after_ops_s,
        before_ms,
        after_ms,
        view,
        errors: rec.errors,
    })
}

/// Sorted copy.
fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn view_change(a: &FaultBenchArgs) -> Result<()> {
    let started = Instant::now();
    eprintln!(
        "view-change: {} runs, {} clients, null 0/0 rw; replica 0 (primary of view 0) killed after {:?}",
        a.repeats,
        a.fault_clients,
        WARMUP + WINDOW
    );
    let mut rows = Rows::new("view-change");
    let mut runs = Vec::new();
    println!(
        "{:>4} {:>8} {:>11} {:>11} {:>11} {:>7} {:>17} {:>17} {:>5} {:>8}",
        "run",
        "first s",
        "recovered s",
        "before op/s",
        "after op/s",
        "ratio",
        "before p50/p99 ms",
        "after p50/p99 ms",
        "view",
        "timeouts"
    );
    let show = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("{v:.3}"));
    for i in 0..a.repeats {
        let r = view_change_once(a.fault_clients).with_context(|| format!("view-change run {i}"))?;
        let ratio = r.after_ops_s / r.before_ops_s.max(1e-9);
        println!(
            "{:>4} {:>8} {:>11} {:>11.0} {:>11.0} {:>6.3}x {:>17} {:>17} {:>5} {:>8}",
            i,
            show(r.first_s),
            show(r.recovered_s),
            r.before_ops_s,
            r.after_ops_s,
            ratio,
            format!("{:.2}/{:.2}", r.before_ms.0, r.before_ms.1),
            format!("{:.2}/{:.2}", r.after_ms.0, r.after_ms.1),
            r.view.map_or("?".to_string(), |v| v.to_string()),
            r.errors
        );
        let case = format!("run{i}");
        rows.add(&case, "first_completion_s", r.first_s.unwrap_or(f64::NAN));
        rows.add(&case, "recovered_s", r.recovered_s.unwrap_or(f64::NAN));
        rows.add(&case, "before_ops_per_s", r.before_ops_s);
        rows.add(&case, "after_ops_per_s", r.after_ops_s);
        rows.add(&case, "throughput_ratio", ratio);
        rows.add(&case, "before_p50_ms", r.before_ms.0);
        rows.add(&case, "before_p99_ms", r.before_ms.1);
        rows.add(&case, "after_p50_ms", r.after_ms.0);
        rows.add(&case, "after_p99_ms", r.after_ms.1);
        rows.add(&case, "view_after", r.view.map_or(f64::NAN, |v| v as f64));
        rows.add(&case, "client_timeouts", r.errors as f64);
        runs.push(r);
    }
    let firsts = sorted(runs.iter().filter_map(|r| r.first_s).collect());
    let recovered = sorted(runs.iter().filter_map(|r| r.recovered_s).collect());
    let ratios = sorted(runs.iter().map(|r| r.after_ops_s / r.before_ops_s.max(1e-9)).collect());
    let max = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
    let met = recovered.len() == runs.len() && max(&recovered) <= 1.0;
    println!(
        "view-change over {} runs: kill -> first completion median {:.3} s, max {:.3} s; kill -> first completion of \
         an operation issued after the kill (recovery) median {:.3} s, max {:.3} s, {}/{} runs within {RECOVERY_LIMIT:?} \
         (target <= 1 s: {}); throughput after/before median {:.3}x",
        runs.len(),
        percentile(&firsts, 0.5),
        max(&firsts),
        percentile(&recovered, 0.5),
        max(&recovered),
        recovered.len(),
        runs.len(),
        if met { "met" } else { "missed" },
        percentile(&ratios, 0.5),
    );
    rows.add("summary", "first_completion_median_s", percentile(&firsts, 0.5));
    rows.add("summary", "first_completion_max_s", max(&firsts));
    rows.add("summary", "recovered_median_s", percentile(&recovered, 0.5));
    rows.add("summary", "recovered_max_s", max(&recovered));
    rows.add("summary", "throughput_ratio_median", percentile(&ratios, 0.5));
    rows.add("summary", "runs_recovered", recovered.len() as f64);
    rows.add("summary", "runs", runs.len() as f64);
    rows.add("summary", "wall_s", started.elapsed().as_secs_f64());
    rows.append(&a.faults_csv)?;
    eprintln!("view-change took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------------------
// slow-primary

struct SlowRun {
    ops_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Replica 1's view and views installed at the end.
    view: Option<(u64, u64)>,
    errors: u64,
}

fn slow_primary_once(clients: u32, seconds: f64, slow: bool) -> Result<SlowRun> {
    let run = start_with(&KeygenSpec::local(4, clients), "info", |id, cmd| {
        if slow && id == 0 {
            cmd.args(["--faulty", "slow-primary"]);
        }
    })?;
    let load = Load::start(&run.path, clients);
    let from_us = WARMUP.as_micros() as u64;
    sleep_until(load.base + WARMUP + Duration::from_secs_f64(seconds));
    let to_us = load.now_us();
    let view = sample(run.metrics[1]).map(|s| (s.view, s.views_installed));
    let rec = load.finish()?;
    let (ops_s, (p50_ms, p99_ms)) = window_figures(&rec, from_us, to_us);
    Ok(SlowRun { ops_s, p50_ms, p99_ms, view, errors: rec.errors })
}

fn slow_primary(a: &FaultBenchArgs) -> Result<()> {
    let started = Instant::now();
    eprintln!(
        "slow-primary: {} clients, null 0/0 rw, {:.1} s measured after {WARMUP:?} of warm-up, correct cluster then \
         replica 0 with --faulty slow-primary",
        a.fault_clients, a.slow_seconds
    );
    let mut rows = Rows::new("slow-primary");
    println!(
        "{:8} {:>10} {:>10} {:>10} {:>6} {:>6} {:>7}",
        "cluster", "ops/s", "p50 ms", "p99 ms", "view", "views", "errors"
    );
    let mut rates = Vec::new();
    for (case, slow) in [("correct", false), ("slow", true)] {
        let r = slow_primary_once(a.fault_clients, a.slow_seconds, slow).with_context(|| format!("{case} cluster"))?;
        let (view, installed) = r.view.map_or(("?".into(), "?".into()), |(v, i)| (v.to_string(), i.to_string()));
        println!(
            "{case:8} {:>10.0} {:>10.2} {:>10.2} {view:>6} {installed:>6} {:>7}",
            r.ops_s, r.p50_ms, r.p99_ms, r.errors
        );
        rows.add(case, "ops_per_s", r.ops_s);
        rows.add(case, "p50_ms", r.p50_ms);
        rows.add(case, "p99_ms", r.p99_ms);
        rows.add(case, "view_after", r.view.map_or(f64::NAN, |v| v.0 as f64));
        rows.add(case, "client_timeouts", r.errors as f64);
        rates.push(r.ops_s);
    }
    let ratio = rates[1] / rates[0].max(1e-9);
    println!("slow-primary: throughput slow/correct {ratio:.4}x");
    rows.add("summary", "throughput_ratio", ratio);
    rows.add("summary", "wall_s", started.elapsed().as_secs_f64());
    rows.append(&a.faults_csv)?;
    eprintln!("slow-primary took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
