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
//! - transfer: a key-value state of `--transfer-mib` MiB filled with 8 KiB
//!   values. Replica 3 is killed and restarted without its state directory
//!   (it fetches every page), then killed again, ~1% of the keys overwritten,
//!   and restarted from its state directory (it fetches what differs). A light
//!   write load keeps checkpoints advancing meanwhile. The rate is compared
//!   with reading as many bytes from a local file.
//!
//! Each table is printed and its figures appended to `--faults-csv` as rows
//! `unix_time,scenario,case,metric,value`. Every wait has a deadline, and the
//! replica processes die with the cluster guard ([`Running`]).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use pbft_kv::{KvError, KvOp, KvResult, MAX_VALUE_LEN};
use pbft_node::keygen::KeygenSpec;
use pbft_node::launcher::wait_until_up;
use pbft_node::metrics::{sample_value, scrape};

use crate::bench::{op_bytes, open_client, percentile, start_with, Running, WORKLOADS};

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
    /// Every scenario above, in that order.
    All,
}

/// Options of the fault scenarios.
#[derive(Args)]
pub struct FaultBenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Normal)]
    pub scenario: Scenario,
    /// view-change: runs, each on a fresh cluster.
    #[arg(long, default_value_t = 5)]
    repeats: u32,
    /// view-change and slow-primary: closed-loop clients.
    #[arg(long, default_value_t = 4)]
    fault_clients: u32,
    /// slow-primary: seconds of measured load on each cluster (after 1 s of warm-up).
    #[arg(long, default_value_t = 5.0)]
    slow_seconds: f64,
    /// transfer: size of the key-value state in MiB (256 pages a MiB).
    #[arg(long, default_value_t = 256)]
    transfer_mib: u64,
    /// Where to append the figures of the fault scenarios (CSV).
    #[arg(long, default_value = "bench-faults.csv")]
    faults_csv: PathBuf,
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
const POLL: Duration = Duration::from_millis(20);
/// Clients that fill and overwrite the state in the transfer scenario.
const FILL_CLIENTS: u32 = 4;
/// The client id that keeps checkpoints advancing during a transfer.
const WRITER: u32 = FILL_CLIENTS;
/// Pause between the null operations that keep checkpoints advancing while a
/// restarted replica catches up (about 50 a second: a checkpoint every ~0.3 s
/// with a checkpoint interval of 16).
const LIGHT_WRITE_GAP: Duration = Duration::from_millis(20);
/// Longest the fill may take.
const FILL_LIMIT: Duration = Duration::from_secs(1800);
/// Longest wait for a restarted replica to answer (it may load its state from disk).
const RESTART_LIMIT: Duration = Duration::from_secs(120);
/// Longest wait for a restarted replica to complete a transfer.
const TRANSFER_LIMIT: Duration = Duration::from_secs(600);
/// Longest wait for the replicas to agree on a stable checkpoint.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// The replica that is restarted in the transfer scenario.
const TARGET: u16 = 3;
const MIB: f64 = 1024.0 * 1024.0;

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
        transfer(a)?;
    }
    Ok(())
}

/// Figures of one scenario, appended to the CSV in one go.
struct Rows {
    scenario: &'static str,
    lines: Vec<String>,
}

impl Rows {
    fn new(scenario: &'static str) -> Rows {
        Rows { scenario, lines: Vec::new() }
    }

    fn add(&mut self, case: &str, metric: &str, value: f64) {
        self.lines.push(format!("{},{case},{metric},{value:.6}", self.scenario));
    }

    /// Appends the rows to `path`, with a header if the file is new or empty.
    fn append(&self, path: &Path) -> Result<()> {
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

/// The figures of one replica's metrics this module reads.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    view: u64,
    views_installed: u64,
    transfers: u64,
    transfer_pages: u64,
    transfer_bytes: u64,
    transferring: bool,
    low_water_mark: u64,
    saved_pages: u64,
}

/// Scrapes a replica's metrics; `None` if it does not answer.
fn sample(addr: SocketAddr) -> Option<Sample> {
    let text = scrape(addr, Duration::from_millis(500)).ok()?;
    let v = |name: &str| sample_value(&text, name).map_or(0, |v| v as u64);
    Some(Sample {
        view: v("pbft_view"),
        views_installed: v("pbft_views_installed_total"),
        transfers: v("pbft_state_transfers_total"),
        transfer_pages: v("pbft_transfer_pages_total"),
        transfer_bytes: v("pbft_transfer_bytes_total"),
        transferring: v("pbft_transferring") == 1,
        low_water_mark: v("pbft_low_water_mark"),
        saved_pages: v("pbft_saved_pages_total"),
    })
}

fn secs(us: u64) -> f64 {
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

// ---------------------------------------------------------------------------
// transfer

fn key(i: u64) -> Vec<u8> {
    format!("k{i:08}").into_bytes()
}

/// A put of key `i` with a full-size value whose bytes depend on `round`
/// (never zero, different from one round to the next).
fn put(i: u64, round: u64) -> KvOp {
    KvOp::Put { key: key(i), value: vec![1 + ((i + 7 * round) % 250) as u8; MAX_VALUE_LEN] }
}

/// Puts keys `keys` (a thread per client, keys dealt round robin) with
/// values of round `round`. Stops at the first "full" answer if `until_full`,
/// else fails on it. Returns the keys written, sorted, and whether the
/// service said it was full.
fn put_all(path: &Path, keys: &[u64], round: u64, until_full: bool) -> Result<(Vec<u64>, bool)> {
    let deadline = Instant::now() + FILL_LIMIT;
    let full = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<JoinHandle<Result<Vec<u64>>>> = (0..FILL_CLIENTS)
        .map(|c| {
            let mine: Vec<u64> = keys.iter().copied().skip(c as usize).step_by(FILL_CLIENTS as usize).collect();
            let (path, full, done) = (path.to_path_buf(), full.clone(), done.clone());
            std::thread::spawn(move || {
                let mut client = open_client(&path, c)?;
                let mut written = Vec::with_capacity(mine.len());
                for i in mine {
                    if full.load(Ordering::Relaxed) || Instant::now() >= deadline {
                        break;
                    }
                    match crate::kv::invoke(&mut client, &put(i, round))? {
                        KvResult::Ok => {
                            written.push(i);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        KvResult::Error(KvError::Full) if until_full => full.store(true, Ordering::Relaxed),
                        other => bail!("put k{i:08}: {other:?}"),
                    }
                }
                Ok(written)
            })
        })
        .collect();
    let started = Instant::now();
    let mut next_report = started + Duration::from_secs(10);
    while !threads.iter().all(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() >= next_report {
            let n = done.load(Ordering::Relaxed);
            eprintln!(
                "  {n} puts ({:.0} MiB of values) in {:.0} s",
                n as f64 * MAX_VALUE_LEN as f64 / MIB,
                started.elapsed().as_secs_f64()
            );
            next_report += Duration::from_secs(10);
        }
    }
    let mut written = Vec::new();
    for t in threads {
        written.extend(t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??);
    }
    written.sort_unstable();
    Ok((written, full.load(Ordering::Relaxed)))
}

/// Runs `ops` null read-write operations with client `id` (each makes a
/// batch when the cluster is otherwise idle, so checkpoints advance).
fn null_ops(path: &Path, id: u32, ops: u64) -> Result<()> {
    let mut client = open_client(path, id)?;
    let op = op_bytes(&WORKLOADS[0]);
    for _ in 0..ops {
        client.invoke(op.clone(), false)?;
    }
    Ok(())
}

/// Null operations until every replica's low water mark is the same
/// non-zero checkpoint and `target` has saved pages, so that its state
/// directory is current.
fn settle(run: &Running, checkpoint_interval: u64, target: u16) -> Result<()> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        null_ops(&run.path, WRITER, checkpoint_interval)?;
        let samples: Vec<Option<Sample>> = run.metrics.iter().map(|m| sample(*m)).collect();
        let marks: Vec<u64> = samples.iter().map(|s| s.map_or(0, |s| s.low_water_mark)).collect();
        let saved = samples[target as usize].is_some_and(|s| s.saved_pages > 0);
        if saved && marks[0] > 0 && marks.iter().all(|m| *m == marks[0]) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the replicas did not settle on one checkpoint within {SETTLE_LIMIT:?} (low water marks {marks:?})");
        }
    }
}

/// Timings of one restart of the target.
#[derive(Debug, Default)]
struct Catchup {
    /// Restart to metrics answering.
    up_s: f64,
    /// Restart to the first transfer seen in its metrics.
    start_s: Option<f64>,
    /// Restart to the transfer completed.
    done_s: Option<f64>,
    pages: u64,
    bytes: u64,
    /// Transfers started (more than one: the target moved on to a newer checkpoint).
    transfers: u64,
    log: RestartLog,
}

/// Restarts the target and keeps a light write load going (a null operation
/// from [`WRITER`] every [`LIGHT_WRITE_GAP`]) until it has completed a state
/// transfer. The load is what makes the others take checkpoints after the
/// restart, and their CHECKPOINT messages are how the target learns that it
/// is behind; a checkpoint certified during the transfer retargets it (each
/// retarget counts as one more transfer started, keeping the pages already
/// fetched). The metrics are published every 100 ms, so the times polled are
/// within about 0.12 s.
fn restart_and_transfer(run: &mut Running) -> Result<Catchup> {
    let log = run.dir.path().join(format!("replica-{TARGET}.log"));
    let log_from = std::fs::metadata(&log).map_or(0, |m| m.len());
    let t0 = Instant::now();
    run.spawn_replica(TARGET, "info", |_, _| {})?;
    let addr = run.metrics[TARGET as usize];
    wait_until_up(&mut run.procs, &[addr], RESTART_LIMIT)?;
    let mut c = Catchup { up_s: t0.elapsed().as_secs_f64(), ..Default::default() };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, stop) = (run.path.clone(), stop.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut client = open_client(&path, WRITER)?;
            let op = op_bytes(&WORKLOADS[0]);
            while !stop.load(Ordering::Relaxed) {
                // A timeout is retried; the deadline below bounds the whole.
                let _ = client.invoke(op.clone(), false);
                std::thread::sleep(LIGHT_WRITE_GAP);
            }
            Ok(())
        })
    };
    let deadline = t0 + TRANSFER_LIMIT;
    let result = loop {
        if let Some((name, status)) = run.procs.exited().into_iter().next() {
            break Err(anyhow::anyhow!("{name} exited ({status})"));
        }
        if let Some(s) = sample(addr) {
            if s.transfers >= 1 || s.transferring {
                c.start_s.get_or_insert(t0.elapsed().as_secs_f64());
            }
            (c.pages, c.bytes, c.transfers) = (s.transfer_pages, s.transfer_bytes, s.transfers);
            if s.transfers >= 1 && !s.transferring {
                c.done_s = Some(t0.elapsed().as_secs_f64());
                break Ok(());
            }
        }
        if Instant::now() >= deadline {
            eprintln!("  no completed transfer within {TRANSFER_LIMIT:?}");
            break Ok(());
        }
        std::thread::sleep(POLL);
    };
    stop.store(true, Ordering::Relaxed);
    writer.join().map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
    c.log = restart_log(&log, log_from);
    result.map(|()| c)
}

/// What the target logged after a restart.
#[derive(Debug, Default)]
struct RestartLog {
    restored: &'static str,
    /// From "replica started" to "state transferred", in seconds.
    started_to_transferred_s: Option<f64>,
}

/// Reads what the replica whose log is `log` wrote past byte `from`.
fn restart_log(log: &Path, from: u64) -> RestartLog {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    let restored = if text.contains("restarted from the state on disk") {
        "from its state directory (intact)"
    } else if text.contains("does not match its checkpoint") {
        "from its state directory (damaged: fetching what differs)"
    } else {
        "empty"
    };
    let time_of = |what: &str| text.lines().find(|l| l.contains(what)).and_then(log_time_us);
    let started_to_transferred_s = match (time_of("replica started"), time_of("state transferred")) {
        (Some(a), Some(b)) if b >= a => Some(secs(b - a)),
        _ => None,
    };
    RestartLog { restored, started_to_transferred_s }
}

/// The time at the start of a log line, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (the
/// tracing subscriber's format), in microseconds since the UNIX epoch.
fn log_time_us(line: &str) -> Option<u64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    // Days from 1970-01-01 to the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + micros).ok()
}

/// Reads the first `bytes` bytes of `path` (at most the whole file) three
/// times, as `std::fs::read` does (into a fresh buffer); returns the bytes
/// read and the fastest time in seconds (the file is in the page cache: a
/// best case for the local baseline).
fn local_read(path: &Path, bytes: u64) -> Result<(u64, f64)> {
    let mut best = (0, f64::INFINITY);
    for _ in 0..3 {
        let t = Instant::now();
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut buf = Vec::with_capacity(bytes as usize);
        f.take(bytes).read_to_end(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        let s = t.elapsed().as_secs_f64();
        if s < best.1 {
            best = (buf.len() as u64, s);
        }
    }
    Ok(best)
}

/// Reports and records how long phase `name`, started at `t`, took.
fn phase(rows: &mut Rows, name: &str, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    eprintln!("  phase {name}: {s:.1} s");
    rows.add("phase", &format!("{name}_s"), s);
}

fn transfer(a: &FaultBenchArgs) -> Result<()> {
    let started = Instant::now();
    let pages = a.transfer_mib * 256;
    let mut spec = KeygenSpec::local(4, FILL_CLIENTS + 1);
    spec.protocol.checkpoint_interval = 16;
    spec.protocol.log_window = 32;
    spec.service.kv_pages = pages;
    eprintln!(
        "transfer: {} MiB of key-value state ({pages} pages), checkpoint_interval {}, log_window {}",
        a.transfer_mib, spec.protocol.checkpoint_interval, spec.protocol.log_window
    );
    let mut run = start_with(&spec, "info", |_, _| {})?;
    eprintln!("  cluster in {}", run.dir.path().display());
    let mut rows = Rows::new("transfer");

    // Fill: new keys until the service is full.
    let t = Instant::now();
    let candidates: Vec<u64> = (0..pages).collect();
    let (keys, full) = put_all(&run.path, &candidates, 0, true)?;
    ensure!(!keys.is_empty(), "no key could be written");
    eprintln!(
        "  filled: {} keys of {} B{}",
        keys.len(),
        MAX_VALUE_LEN,
        if full { " (the service is full)" } else { " (stopped before the service was full)" }
    );
    settle(&run, spec.protocol.checkpoint_interval, TARGET)?;
    phase(&mut rows, "fill", t);
    rows.add("fill", "keys", keys.len() as f64);

    // The local baseline's file, and how much of it the fill made non-zero.
    let pages_file = run.dir.path().join("replica-0-state").join("pages");
    let data = std::fs::read(&pages_file).with_context(|| format!("reading {}", pages_file.display()))?;
    let nonzero = data.chunks(4096).filter(|p| p.iter().any(|b| *b != 0)).count();
    eprintln!("  replica 0's pages file: {} pages, {nonzero} non-zero", data.len() / 4096);
    rows.add("fill", "nonzero_pages", nonzero as f64);
    drop(data);

    println!(
        "transfer seconds two ways: 'poll' from the first to the last metrics scrape showing the transfer (resolution \
         ~0.1 s: metrics are published every 100 ms); 'log' from the restarted replica's \"replica started\" to its \
         \"state transferred\" log line (an upper bound: it includes waiting for f+1 checkpoint votes and the next \
         status tick)"
    );
    println!(
        "{:5} {:>7} {:>8} {:>7} {:>9} {:>7} {:>8} {:>11} {:>8} {:>8} {:>6} {:>9} {:>9}",
        "case",
        "pages",
        "MiB",
        "poll s",
        "MiB/s",
        "log s",
        "MiB/s",
        "local MiB/s",
        "ratio",
        "ratio",
        "up s",
        "restart s",
        "transfers"
    );
    let state_dir = run.dir.path().join(format!("replica-{TARGET}-state"));
    for case in ["100%", "1%"] {
        let t = Instant::now();
        ensure!(run.procs.kill(&format!("replica-{TARGET}")), "replica {TARGET} had exited");
        if case == "100%" {
            std::fs::remove_dir_all(&state_dir).with_context(|| format!("removing {}", state_dir.display()))?;
        } else {
            let changed: Vec<u64> = keys.iter().copied().step_by(100).collect();
            let t = Instant::now();
            let (written, _) = put_all(&run.path, &changed, 1, false)?;
            eprintln!("  overwrote {} keys in {:.1} s", written.len(), t.elapsed().as_secs_f64());
            rows.add(case, "keys_overwritten", written.len() as f64);
        }
        let c = restart_and_transfer(&mut run).with_context(|| format!("case {case}"))?;
        eprintln!("  replica {TARGET} restarted {}", c.log.restored);
        let poll_s = match (c.start_s, c.done_s) {
            (Some(s), Some(d)) => d - s,
            _ => f64::NAN,
        };
        let log_s = c.log.started_to_transferred_s.unwrap_or(f64::NAN);
        let mib = c.bytes as f64 / MIB;
        let (read, read_s) = local_read(&pages_file, c.bytes.max(4096))?;
        let local = read as f64 / MIB / read_s.max(1e-9);
        let (poll_rate, log_rate) = (mib / poll_s, mib / log_s);
        println!(
            "{case:5} {:>7} {:>8.1} {:>7.3} {:>9.1} {:>7.3} {:>8.1} {:>11.0} {:>7.4}x {:>7.4}x {:>6.2} {:>9.2} {:>9}",
            c.pages,
            mib,
            poll_s,
            poll_rate,
            log_s,
            log_rate,
            local,
            poll_rate / local,
            log_rate / local,
            c.up_s,
            c.done_s.unwrap_or(f64::NAN),
            c.transfers
        );
        rows.add(case, "pages", c.pages as f64);
        rows.add(case, "bytes", c.bytes as f64);
        rows.add(case, "poll_transfer_s", poll_s);
        rows.add(case, "poll_mib_per_s", poll_rate);
        rows.add(case, "log_transfer_s", log_s);
        rows.add(case, "log_mib_per_s", log_rate);
        rows.add(case, "local_read_mib_per_s", local);
        rows.add(case, "poll_ratio_to_local", poll_rate / local);
        rows.add(case, "log_ratio_to_local", log_rate / local);
        rows.add(case, "restart_to_up_s", c.up_s);
        rows.add(case, "restart_to_done_s", c.done_s.unwrap_or(f64::NAN));
        rows.add(case, "transfers_started", c.transfers as f64);
        let ratio = poll_rate.max(log_rate) / local;
        if case == "100%" {
            eprintln!("  target >= 0.5x the local-file rate: {}", if ratio >= 0.5 { "met" } else { "missed" });
            // The 1% case restarts from the state directory: let the target
            // catch up and save a checkpoint first.
            settle(&run, spec.protocol.checkpoint_interval, TARGET)?;
        }
        phase(&mut rows, &format!("case_{}", case.trim_end_matches('%')), t);
    }
    rows.add("summary", "wall_s", started.elapsed().as_secs_f64());
    rows.append(&a.faults_csv)?;
    eprintln!("transfer took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
