//! `pbft bench --scenario transfer`: the state-transfer rate for a key-value
//! state of `--transfer-mib` MiB filled with 8 KiB values. Replica 3 is killed
//! and restarted without its state directory (it fetches every page), then
//! killed again, ~1% of the keys overwritten, and restarted from its state
//! directory (it fetches what differs). A light write load keeps checkpoints
//! advancing meanwhile. The rate is compared with reading as many bytes from a
//! local file.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use pbft_kv::{KvError, KvOp, KvResult, MAX_VALUE_LEN};
use pbft_node::keygen::KeygenSpec;
use pbft_node::launcher::wait_until_up;
use pbft_node::metrics::Reading;

use crate::bench::{op_bytes, WORKLOADS};
use crate::bench_faults::{sample, secs, FaultBenchArgs, Rows, MIB, POLL};
use crate::local::{open_client, start_with, Running};

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
        let samples: Vec<Option<Reading>> = run.metrics.iter().map(|m| sample(*m)).collect();
        let marks: Vec<u64> = samples.iter().map(|s| s.as_ref().map_or(0, |s| s.low_water_mark)).collect();
        let saved = samples[target as usize].as_ref().is_some_and(|s| s.saved_pages > 0);
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
    /// CPU seconds the target used from its restart to the completion seen,
    /// and the other replicas in all over the same span.
    target_cpu_s: f64,
    sources_cpu_s: f64,
}

/// CPU seconds used so far by each replica process, by id (0 for one not running).
fn replicas_cpu(run: &Running) -> Vec<f64> {
    let pids = run.procs.pids();
    (0..run.metrics.len())
        .map(|id| pids.iter().find(|(name, _)| *name == format!("replica-{id}")).map_or(0.0, |(_, pid)| pbft_node::launcher::cpu_seconds(*pid)))
        .collect()
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
    let log = run.log_path(TARGET);
    let log_from = std::fs::metadata(&log).map_or(0, |m| m.len());
    let t0 = Instant::now();
    let cpu_before = replicas_cpu(run);
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
                let cpu = replicas_cpu(run);
                c.target_cpu_s = cpu[TARGET as usize];
                c.sources_cpu_s = (0..cpu.len()).filter(|i| *i != TARGET as usize).map(|i| cpu[i] - cpu_before[i]).sum();
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
    /// From "state transfer started" to "state transferred", in seconds.
    transfer_s: Option<f64>,
    /// Of `transfer_s`, the seconds spent saving the state ("state saved"
    /// lines): a replica saves a stable checkpoint before it speaks of it,
    /// so a save can fall inside the transfer's span or just after it.
    save_s: f64,
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
    let span = |from: &str, to: &str| match (time_of(from), time_of(to)) {
        (Some(a), Some(b)) if b >= a => Some(secs(b - a)),
        _ => None,
    };
    let save_s = text
        .lines()
        .skip_while(|l| !l.contains("state transfer started"))
        .take_while(|l| !l.contains("state transferred"))
        .filter(|l| l.contains("state saved"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("ms=")?.parse::<f64>().ok()))
        .fold(0.0, |a, ms| a + ms)
        / 1e3;
    RestartLog {
        restored,
        started_to_transferred_s: span("replica started", "state transferred"),
        transfer_s: span("state transfer started", "state transferred"),
        save_s,
    }
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

pub(crate) fn transfer(a: &FaultBenchArgs) -> Result<()> {
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
    eprintln!(
        "  replicas run with GLIBC_TUNABLES={}; the local-file baseline reads in this process",
        pbft_node::launcher::replica_tunables().to_string_lossy()
    );
    let mut run = start_with(&spec, "info", |_, _| {})?;
    eprintln!("  cluster in {}", run.dir.display());
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
    let pages_file = run.dir.join("replica-0-state").join("pages");
    let data = std::fs::read(&pages_file).with_context(|| format!("reading {}", pages_file.display()))?;
    let nonzero = data.chunks(4096).filter(|p| p.iter().any(|b| *b != 0)).count();
    eprintln!("  replica 0's pages file: {} pages, {nonzero} non-zero", data.len() / 4096);
    rows.add("fill", "nonzero_pages", nonzero as f64);
    drop(data);

    println!(
        "transfer seconds three ways, from the restarted replica's log: 'xfer' from its \"state transfer started\" to \
         its \"state transferred\" line (the transfer itself); 'log' from its \"replica started\" line (also hearing \
         of the checkpoint to fetch); and 'poll' from the first to the last metrics scrape showing the transfer \
         (metrics are published every 100 ms; NaN when shorter). Ratios are to reading as many bytes from a local file. \
         'save s': of 'xfer', the time spent saving a checkpoint (a save the replica waits for before it speaks)."
    );
    println!(
        "{:5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>9} {:>9} {:>6} {:>9}",
        "case",
        "pages",
        "MiB",
        "xfer s",
        "MiB/s",
        "ratio",
        "save s",
        "log s",
        "MiB/s",
        "ratio",
        "poll s",
        "ratio",
        "local",
        "up s",
        "restart s",
        "transfers",
        "cpu s",
        "src cpu s"
    );
    let cases = std::iter::repeat_n("100%", a.repeats as usize).chain(["1%"]);
    let mut full_ratios = Vec::new();
    for case in cases {
        // The state files written so far (a GiB after the fill, 256 MiB after
        // each transfer) would otherwise be written back while the next
        // transfer runs, competing with it for the CPU.
        // SAFETY: sync takes no arguments and cannot fail.
        unsafe { libc::sync() };
        let t = Instant::now();
        ensure!(run.procs.kill(&format!("replica-{TARGET}")), "replica {TARGET} had exited");
        if case == "100%" {
            run.wipe(TARGET)?;
        } else {
            let changed: Vec<u64> = keys.iter().copied().step_by(100).collect();
            let t = Instant::now();
            let (written, _) = put_all(&run.path, &changed, 1, false)?;
            eprintln!("  overwrote {} keys in {:.1} s", written.len(), t.elapsed().as_secs_f64());
            rows.add(case, "keys_overwritten", written.len() as f64);
        }
        let c = restart_and_transfer(&mut run).with_context(|| format!("case {case}"))?;
        eprintln!("  replica {TARGET} restarted {}", c.log.restored);
        // Metrics are published every 100 ms: a shorter span says nothing.
        let poll_s = match (c.start_s, c.done_s) {
            (Some(s), Some(d)) if d - s >= 0.1 => d - s,
            _ => f64::NAN,
        };
        let log_s = c.log.started_to_transferred_s.unwrap_or(f64::NAN);
        let xfer_s = c.log.transfer_s.unwrap_or(f64::NAN);
        let mib = c.bytes as f64 / MIB;
        let (read, read_s) = local_read(&pages_file, c.bytes.max(4096))?;
        let local = read as f64 / MIB / read_s.max(1e-9);
        let (poll_rate, log_rate, xfer_rate) = (mib / poll_s, mib / log_s, mib / xfer_s);
        println!(
            "{case:5} {:>7} {:>7.1} {:>7.3} {:>7.1} {:>6.3}x {:>7.3} {:>7.3} {:>7.1} {:>6.3}x {:>7.3} {:>6.3}x {:>6.0} {:>6.2} {:>9.2} {:>9} {:>6.3} {:>9.3}",
            c.pages,
            mib,
            xfer_s,
            xfer_rate,
            xfer_rate / local,
            c.log.save_s,
            log_s,
            log_rate,
            log_rate / local,
            poll_s,
            poll_rate / local,
            local,
            c.up_s,
            c.done_s.unwrap_or(f64::NAN),
            c.transfers,
            c.target_cpu_s,
            c.sources_cpu_s
        );
        rows.add(case, "target_cpu_s", c.target_cpu_s);
        rows.add(case, "sources_cpu_s", c.sources_cpu_s);
        rows.add(case, "pages", c.pages as f64);
        rows.add(case, "bytes", c.bytes as f64);
        rows.add(case, "poll_transfer_s", poll_s);
        rows.add(case, "poll_mib_per_s", poll_rate);
        rows.add(case, "log_transfer_s", log_s);
        rows.add(case, "log_mib_per_s", log_rate);
        rows.add(case, "xfer_transfer_s", xfer_s);
        rows.add(case, "xfer_save_s", c.log.save_s);
        rows.add(case, "xfer_mib_per_s", xfer_rate);
        rows.add(case, "xfer_ratio_to_local", xfer_rate / local);
        rows.add(case, "local_read_mib_per_s", local);
        rows.add(case, "poll_ratio_to_local", poll_rate / local);
        rows.add(case, "log_ratio_to_local", log_rate / local);
        rows.add(case, "restart_to_up_s", c.up_s);
        rows.add(case, "restart_to_done_s", c.done_s.unwrap_or(f64::NAN));
        rows.add(case, "transfers_started", c.transfers as f64);
        let ratio = xfer_rate / local;
        if case == "100%" {
            full_ratios.push(ratio);
            // The 1% case restarts from the state directory: let the target
            // catch up and save a checkpoint first.
            settle(&run, spec.protocol.checkpoint_interval, TARGET)?;
        }
        phase(&mut rows, &format!("case_{}", case.trim_end_matches('%')), t);
    }
    full_ratios.sort_by(f64::total_cmp);
    if let Some(median) = full_ratios.get(full_ratios.len() / 2) {
        println!(
            "100%: median ratio {median:.3}x of {} runs (min {:.3}x, max {:.3}x); target >= 1.0x the local-file rate (xfer): {}",
            full_ratios.len(),
            full_ratios[0],
            full_ratios[full_ratios.len() - 1],
            if *median >= 1.0 { "met" } else { "missed" }
        );
        rows.add("summary", "median_xfer_ratio_100", *median);
    }
    rows.add("summary", "wall_s", started.elapsed().as_secs_f64());
    rows.append(&a.faults_csv)?;
    eprintln!("transfer took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_log_gives_the_transfer_and_the_saves_inside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("replica.log");
        let lines = [
            "2026-12-02T03:51:00.000000Z  INFO pbft_node::replica_host: replica started replica=3",
            "2026-12-02T03:51:00.250000Z  INFO pbft_node::replica_host: state transfer started seq=14560",
            "2026-12-02T03:51:01.000000Z  INFO pbft_node::replica_host: state saved seq=14576 pages=65542 ms=600",
            "2026-12-02T03:51:01.250000Z  INFO pbft_node::replica_host: state transferred seq=14576 pages=65542",
            "2026-12-02T03:51:02.000000Z  INFO pbft_node::replica_host: state saved seq=14640 pages=1 ms=150",
        ];
        std::fs::write(&log, lines.join("\n")).expect("write");
        let r = restart_log(&log, 0);
        assert_eq!(r.restored, "empty");
        assert_eq!(r.transfer_s, Some(1.0));
        assert_eq!(r.started_to_transferred_s, Some(1.25));
        assert_eq!(r.save_s, 0.6, "only the save inside the transfer's span");
        let none = restart_log(&log, lines[..2].iter().map(|l| l.len() as u64 + 1).sum());
        assert_eq!((none.transfer_s, none.save_s), (None, 0.0));
    }
}
