//! The full `pbft demo`: faults while clients keep going, on a live display.
//!
//! Four replicas (f = 1) and closed-loop clients whose every result is
//! checked against a model of the key-value store. Phase by phase, never more
//! than one fault at a time (f = 1):
//!
//! 1. all replicas correct;
//! 2. a backup turns Byzantine, restarted with `--faulty wrong-reply`: it
//!    sends clients made-up results (clients accept 2f+1 matching replies);
//! 3. the same backup restarted with `--faulty forge`: corrupt MACs, and its
//!    messages sent again in the other replicas' names;
//! 4. that backup restarted correct, from its state directory; it catches up;
//! 5. another backup killed, its state directory deleted, restarted empty:
//!    it fetches its state from the others (state transfer) and catches up;
//! 6. the primary killed with SIGKILL: the others change view;
//! 7. the old primary restarted from its state directory; it catches up;
//! 8. all replicas correct again.
//!
//! A replica restarted under load may fall behind for a moment and ask for a
//! view change alone (docs/decisions.md §8): it goes on executing what the
//! others commit and joins their view at the next view change. The display
//! shows it as changing view; the demo counts it caught up once it executes
//! what the others had executed when it restarted. The wipe comes before the
//! view change: a replica wiped after one comes back in view 0 and, alone in
//! a view change of its own, stays out of the others' view until the next.
//!
//! Each phase lasts its share of `--seconds` and, for those that wait for
//! something (a view change, catching up, a transfer), until it happened,
//! within [`EVENT_LIMIT`]: the demo shows each event or fails saying which
//! did not come. Replica states come from their metrics endpoints, judged as
//! `pbft status` judges them. The display draws only on a terminal; events
//! and the summary go to stdout either way.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pbft_node::keygen::KeygenSpec;
use pbft_node::metrics::Reading;
use pbft_node::{Cluster, FaultyMode};

use crate::demo::{client_loop, Limit};
use crate::demo_tally::{thousands, Tally};
use crate::local::{start_in, Running};
use crate::status::{verdict, Role, Row};

/// Replicas of the demo cluster (f = 1).
const N: u16 = 4;
/// The longest wait for an event the demo shows (a view change, a replica
/// catching up, a state transfer) before it gives up and fails.
const EVENT_LIMIT: Duration = Duration::from_secs(40);
/// How often the replicas' metrics are read and the display drawn.
const POLL: Duration = Duration::from_millis(200);
/// Longest wait for one client operation: far longer than a view change or
/// restart, so that only a stuck service makes a client give up.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The replicas as the demo knows them

/// What the demo did to a replica (its metrics cannot say it lies).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Correct,
    Lying(FaultyMode),
    Killed,
}

struct Track {
    mode: Mode,
    /// The replica's metrics at the last poll, if it answered.
    last: Option<Reading>,
    /// Pages fetched by state transfer by the replica's earlier processes.
    pages_before: u64,
    /// Of the current process's pages fetched, those an event has told of.
    pages_reported: u64,
    /// Since a restart: the others' highest executed sequence number then,
    /// which it must reach to have caught up, and when it restarted.
    catching_up: Option<(u64, Instant)>,
}

/// The demo in progress: the cluster, what the clients saw, the display.
struct Show {
    run: Running,
    cluster: Cluster,
    tally: Arc<Mutex<Tally>>,
    display: Display,
    tracks: Vec<Track>,
    /// The view most replicas are active in, at the last poll.
    view: Option<u64>,
    first_view: u64,
    begun: Instant,
    seconds: f64,
    phase_started: Instant,
    phase_number: usize,
    /// What `pbft status` would say of the cluster, at the last poll.
    verdict: String,
    /// When the primary was killed, until the view change is seen.
    primary_killed: Option<Instant>,
    stop: Arc<AtomicBool>,
}

/// The script stops early on Ctrl-C with this error.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

impl Show {
    fn secs(&self) -> f64 {
        self.begun.elapsed().as_secs_f64()
    }

    /// Prints an event line, stamped with the demo's time.
    fn event(&self, text: &str) {
        let line = format!("{:>5.1} s  {text}", self.secs());
        self.display.println(&line);
    }

    fn phase(&mut self, title: &str, cause: &str) {
        self.phase_number += 1;
        self.phase_started = Instant::now();
        if let Ok(mut t) = self.tally.lock() {
            t.begin_phase(title.into(), cause.into(), self.phase_started);
        }
        self.display.phase(self.phase_number, title);
    }

    /// The others' highest executed sequence number (not counting `id`).
    fn others_executed(&self, id: u16) -> u64 {
        let others = self.tracks.iter().enumerate().filter(|(i, _)| *i != id as usize);
        others.filter_map(|(_, t)| t.last.as_ref()).map(|r| r.last_executed).max().unwrap_or(0)
    }

    fn kill(&mut self, id: u16) -> Result<()> {
        self.run.kill(id)?;
        let t = &mut self.tracks[id as usize];
        t.pages_before += t.last.take().map_or(0, |r| r.transfer_pages);
        t.pages_reported = 0;
        t.mode = Mode::Killed;
        t.catching_up = None;
        Ok(())
    }

    /// Restarts `id` (after killing it if it runs) in `mode`; it has caught
    /// up once it executed what the others had when it restarted.
    fn restart_as(&mut self, id: u16, mode: Mode) -> Result<()> {
        if self.tracks[id as usize].mode != Mode::Killed {
            self.kill(id)?;
        }
        let target = self.others_executed(id);
        let faulty = match mode {
            Mode::Lying(m) => Some(m.name()),
            _ => None,
        };
        self.run.restart(id, "info", |_, cmd| {
            if let Some(name) = faulty {
                cmd.arg("--faulty").arg(name);
            }
        })?;
        let t = &mut self.tracks[id as usize];
        t.mode = mode;
        // A lying replica is not waited for.
        t.catching_up = (mode == Mode::Correct).then(|| (target, Instant::now()));
        Ok(())
    }

    /// Reads every replica's metrics, notes what changed as events, and
    /// draws the display.
    fn poll(&mut self) {
        let cluster_rows: Vec<Row> = (0..N)
            .map(|id| {
                let reading = match self.tracks[id as usize].mode {
                    Mode::Killed => Err("killed".to_string()),
                    _ => self.run.read(id).ok_or_else(|| "no answer".to_string()),
                };
                Row { id, addr: self.cluster.replicas[id as usize].addr, reading }
            })
            .collect();
        let v = verdict(1, u64::MAX, &cluster_rows);
        if let (Some(new), Some(old)) = (v.view, self.view) {
            if new > old {
                let primary = new % u64::from(N);
                let after = match self.primary_killed.take() {
                    Some(t) => format!(" ({:.2} s after the kill)", t.elapsed().as_secs_f64()),
                    None => String::new(),
                };
                self.event(&format!("view {new} installed: replica {primary} is the primary{after}"));
            }
        }
        if v.view.is_some() {
            self.view = v.view;
        }
        for row in cluster_rows {
            let id = row.id;
            let now = row.reading.ok();
            let before = self.tracks[id as usize].last.take();
            if let Some(r) = &now {
                let was_fetching = before.as_ref().is_some_and(|b| b.transferring);
                if r.transferring && !was_fetching {
                    self.event(&format!("replica {id} fetching its state from the others (state transfer)"));
                }
                // A small transfer can start and end between two polls.
                let reported = self.tracks[id as usize].pages_reported;
                if !r.transferring && r.transfer_pages > reported {
                    self.tracks[id as usize].pages_reported = r.transfer_pages;
                    self.event(&format!(
                        "replica {id} has its state: {} pages fetched, each checked by digest",
                        thousands(r.transfer_pages - reported)
                    ));
                }
                // Caught up: executing at the others' pace. A replica that
                // lagged may have asked for a view change alone meanwhile
                // (docs/decisions.md §8); it still executes what the others
                // commit, and joins their view at the next view change.
                if let Some((target, since)) = self.tracks[id as usize].catching_up {
                    if !r.transferring && r.last_executed >= target {
                        self.tracks[id as usize].catching_up = None;
                        self.event(&format!(
                            "replica {id} caught up: executed {} ({:.2} s after its restart)",
                            thousands(r.last_executed),
                            since.elapsed().as_secs_f64()
                        ));
                    }
                }
            }
            self.tracks[id as usize].last = now;
        }
        self.draw(&v.roles);
        self.verdict = v.text;
    }

    fn draw(&self, roles: &[Role]) {
        let (rate, p50, p99, checked, wrong) = match self.tally.lock() {
            Ok(mut t) => {
                let (rate, p50, p99) = t.window(Instant::now());
                (rate, p50, p99, t.checked, t.wrong)
            }
            Err(_) => (0.0, 0.0, 0.0, 0, 0),
        };
        let load = format!(
            "clients  {:>6} ops/s  p50 {p50:>4.1} ms  p99 {p99:>5.1} ms  checked {}  wrong {wrong}",
            thousands(rate as u64),
            thousands(checked)
        );
        let view = self.view.map_or("-".to_string(), |v| v.to_string());
        let lines: Vec<String> = (0..N as usize)
            .map(|id| {
                let t = &self.tracks[id];
                let state = replica_state(t, roles[id]);
                let executed = t.last.as_ref().map_or("-".to_string(), |r| thousands(r.last_executed));
                let label = if id == 0 { format!("view {view:<4}") } else { " ".repeat(9) };
                format!("{label}replica {id}  {state:<31} executed {executed}")
            })
            .collect();
        self.display.draw(self.secs(), self.seconds, &load, &lines);
    }

    /// Polls until the phase has lasted `hold` and `done` holds; fails after
    /// [`EVENT_LIMIT`] without `done`, naming `what` did not happen.
    fn wait(&mut self, hold: Duration, what: &str, mut done: impl FnMut(&Show) -> bool) -> Result<()> {
        let waiting = Instant::now();
        loop {
            self.poll();
            if self.stop.load(Ordering::Relaxed) {
                return Err(Interrupted.into());
            }
            if let Some(e) = self.tally.lock().ok().and_then(|t| t.failure.clone()) {
                return Err(anyhow!("{e}"));
            }
            if let Some((name, status)) = self.run.procs.exited().into_iter().next() {
                let id: u16 = name.trim_start_matches("replica-").parse().unwrap_or(0);
                self.display.eprint(&format!("{name}'s log ends:\n{}", self.run.log_tail(id, 8)));
                return Err(anyhow!("{name} exited ({status})"));
            }
            let held = self.phase_started.elapsed() >= hold;
            if held && done(self) {
                return Ok(());
            }
            if held && waiting.elapsed() > EVENT_LIMIT {
                let (table, _) = crate::status::report(&self.cluster, Duration::from_secs(1));
                self.display.eprint(&format!("the cluster when the demo gave up waiting:\n{table}"));
                return Err(anyhow!("{what} did not happen within {} s", EVENT_LIMIT.as_secs()));
            }
            std::thread::sleep(POLL);
        }
    }

    fn caught_up(&self, id: u16) -> bool {
        let t = &self.tracks[id as usize];
        t.mode != Mode::Killed && t.catching_up.is_none() && t.last.is_some()
    }

    /// The fault schedule (see the module doc). `unit` is one 25th of the run.
    fn script(&mut self, unit: f64) -> Result<()> {
        let hold = |units: f64| Duration::from_secs_f64(units * unit);
        // A timer on a busy machine can change the view at any time: each
        // phase picks its replicas by the view it starts in.
        let primary_now = |s: &Show| (s.view.unwrap_or(0) % u64::from(N)) as u16;

        self.phase("all replicas correct", "all replicas were correct");
        self.wait(hold(3.0), "", |_| true)?;

        let liar = (primary_now(self) + 3) % N;

        self.phase(&format!("replica {liar} sends wrong results"), &format!("replica {liar} turned Byzantine"));
        self.restart_as(liar, Mode::Lying(FaultyMode::WrongReplies))?;
        self.event(&format!("replica {liar} lies to clients: made-up results (--faulty wrong-reply)"));
        self.wait(hold(3.5), "", |_| true)?;

        self.phase(&format!("replica {liar} forges messages"), &format!("replica {liar} started forging"));
        self.restart_as(liar, Mode::Lying(FaultyMode::ForgeMacs))?;
        self.event(&format!("replica {liar} forges: bad MACs, messages in others' names (--faulty forge)"));
        self.wait(hold(3.5), "", |_| true)?;

        self.phase(&format!("replica {liar} correct again"), &format!("replica {liar} restarted correct"));
        self.restart_as(liar, Mode::Correct)?;
        self.event(&format!("replica {liar} restarted correct, from its state directory"));
        // A wiped replica fetches its state only once the others have
        // collected the log before a stable checkpoint.
        let checkpointed = |s: &Show| s.tracks.iter().filter_map(|t| t.last.as_ref()).all(|r| r.low_water_mark > 0);
        let what = format!("replica {liar} catching up (and a stable checkpoint)");
        self.wait(hold(1.5), &what, |s| s.caught_up(liar) && checkpointed(s))?;

        // A wiped replica comes back in view 0: wiped before the view
        // change, it rejoins the view the others are in.
        let wiped = [2, 1, 3, 0].into_iter().map(|k| (primary_now(self) + k) % N).find(|r| *r != liar).unwrap_or(2);
        self.phase(&format!("replica {wiped} wiped, fetches state"), &format!("replica {wiped} was wiped"));
        self.kill(wiped)?;
        self.run.wipe(wiped)?;
        self.restart_as(wiped, Mode::Correct)?;
        self.event(&format!("replica {wiped} killed, state directory deleted, restarted empty"));
        let transferred = move |s: &Show| {
            let fetched =
                s.tracks[wiped as usize].last.as_ref().is_some_and(|r| r.transfers >= 1 && r.transfer_pages > 0);
            fetched && s.caught_up(wiped)
        };
        self.wait(hold(3.0), &format!("replica {wiped}'s state transfer"), transferred)?;

        let view = self.view.unwrap_or(0);
        let primary = primary_now(self);
        self.phase("primary killed, view change", "the primary was killed (view change)");
        self.kill(primary)?;
        self.primary_killed = Some(Instant::now());
        self.event(&format!("replica {primary}, the primary of view {view}, killed with SIGKILL"));
        let others_moved = |s: &Show| {
            let moved = s.tracks.iter().filter_map(|t| t.last.as_ref()).filter(|r| r.view_active && r.view > view);
            moved.count() >= 3
        };
        self.wait(hold(3.0), "a view change", others_moved)?;

        self.phase(&format!("replica {primary} back"), &format!("replica {primary} restarted"));
        self.restart_as(primary, Mode::Correct)?;
        self.event(&format!("replica {primary} restarted from its state directory (durable log, pages)"));
        self.wait(hold(2.5), &format!("replica {primary} catching up"), |s| s.caught_up(primary))?;

        self.phase("all replicas correct", "all replicas were correct");
        let left = Duration::from_secs_f64((self.seconds - self.secs()).max(2.0 * unit));
        self.wait(left, "", |_| true)?;
        Ok(())
    }
}

/// A replica's state as the display words it: what the demo did to it, then
/// what its metrics say.
fn replica_state(t: &Track, role: Role) -> String {
    let fetching = t.last.as_ref().filter(|r| r.transferring).map(|r| r.transfer_pages);
    match (t.mode, role) {
        (Mode::Killed, _) => "down: killed with SIGKILL".into(),
        (_, Role::Unreachable) => "starting".into(),
        (_, Role::FetchingState) => format!("fetching state: {} pages", thousands(fetching.unwrap_or(0))),
        (_, Role::ChangingView) => {
            format!("changing view to {}", t.last.as_ref().map_or(0, |r| r.view))
        }
        (Mode::Lying(FaultyMode::WrongReplies), _) => "BYZANTINE: sends wrong results".into(),
        (Mode::Lying(FaultyMode::ForgeMacs), _) => "BYZANTINE: forges messages".into(),
        (Mode::Lying(m), _) => format!("BYZANTINE: {}", m.name()),
        _ if t.catching_up.is_some() => "catching up".into(),
        (_, Role::Serving { primary: true }) => "up, primary".into(),
        (_, Role::Serving { primary: false }) => "up".into(),
        (_, Role::OtherView) => "in another view".into(),
        (_, Role::Behind) => "behind".into(),
    }
}

// ---------------------------------------------------------------------------
// The display

/// The live display: a progress line, the clients' line, one line per
/// replica, with event lines printed above. Hidden (events only) when stderr
/// is not a terminal.
struct Display {
    multi: MultiProgress,
    header: ProgressBar,
    lines: Vec<ProgressBar>,
    phase: Mutex<String>,
}

impl Display {
    fn new(replicas: usize) -> Display {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let text = ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let header = multi.add(ProgressBar::new(1000).with_style(bar).with_prefix("pbft demo"));
        // The phase, the clients, then one line per replica.
        let lines = (0..replicas + 2).map(|_| multi.add(ProgressBar::new(1).with_style(text.clone()))).collect();
        Display { multi, header, lines, phase: Mutex::new(String::new()) }
    }

    /// An event line above the display (stdout, also when the display is hidden).
    fn println(&self, line: &str) {
        self.multi.suspend(|| println!("{line}"));
    }

    /// Text for stderr, above the display.
    fn eprint(&self, text: &str) {
        self.multi.suspend(|| eprintln!("{text}"));
    }

    fn phase(&self, number: usize, title: &str) {
        if let Ok(mut p) = self.phase.lock() {
            *p = format!("phase {number} of 8: {title}");
        }
    }

    fn draw(&self, secs: f64, total: f64, load: &str, replicas: &[String]) {
        let phase = self.phase.lock().map(|p| p.clone()).unwrap_or_default();
        self.header.set_position(((secs / total.max(1e-9)) * 1000.0).min(1000.0) as u64);
        self.header.set_message(format!("{secs:>5.1} s of {total:.0} s"));
        let texts = [phase, load.to_string()].into_iter().chain(replicas.iter().cloned());
        for (bar, text) in self.lines.iter().zip(texts) {
            bar.set_message(text);
        }
    }

    /// Leaves the last frame on the screen, the cursor below it.
    fn finish(&self) {
        self.header.finish();
        for bar in &self.lines {
            bar.finish();
        }
        if !self.multi.is_hidden() {
            eprintln!();
        }
    }
}

// ---------------------------------------------------------------------------
// The run

pub(crate) fn run(clients: u32, seconds: f64, dir: Option<&Path>, stop: &Arc<AtomicBool>) -> Result<ExitCode> {
    let run = start_in(dir, &KeygenSpec::local(N as usize, clients), "info", |_, _| {})?;
    let display = Display::new(N as usize);
    let cluster = Cluster::load(&run.path)?;
    let tally = Arc::new(Mutex::new(Tally::new()));
    let clients_stop = Arc::new(AtomicBool::new(false));
    let begun = Instant::now();
    let mut show = Show {
        run,
        cluster: cluster.clone(),
        tally: tally.clone(),
        display,
        tracks: (0..N)
            .map(|_| Track { mode: Mode::Correct, last: None, pages_before: 0, pages_reported: 0, catching_up: None })
            .collect(),
        view: None,
        first_view: 0,
        begun,
        seconds,
        phase_started: begun,
        phase_number: 0,
        primary_killed: None,
        verdict: String::new(),
        stop: stop.clone(),
    };
    show.poll();
    show.first_view = show.view.unwrap_or(0);
    let files = dir.map_or(String::new(), |d| format!(" (files in {})", d.display()));
    show.event(&format!("{N} replicas (f = {}) up on 127.0.0.1{files}, {clients} clients", cluster.file.f));
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (path, stop, tally) = (show.run.path.clone(), clients_stop.clone(), tally.clone());
            let limit = Limit { ops: usize::MAX, deadline: None, op_timeout: OP_TIMEOUT };
            std::thread::spawn(move || {
                client_loop(&path, c, &limit, &stop, &|r| {
                    if let Ok(mut t) = tally.lock() {
                        t.record(r);
                    }
                })
            })
        })
        .collect();

    let outcome = show.script(seconds / 25.0);
    let interrupted = outcome.as_ref().err().is_some_and(|e| e.is::<Interrupted>());
    let elapsed = show.begun.elapsed();
    clients_stop.store(true, Ordering::Relaxed);
    if let Ok(mut t) = tally.lock() {
        if let Some(p) = t.phases.last_mut() {
            p.ended = Some(Instant::now());
        }
    }
    // On Ctrl-C or a failure the clients are not waited for: one may be
    // inside a request the cluster will not answer. Exiting ends them.
    if outcome.is_ok() {
        for w in workers {
            w.join().map_err(|_| anyhow!("a client thread panicked"))?;
        }
    }
    if outcome.is_ok() {
        show.event("clients stopped");
    }
    show.poll();
    show.display.finish();
    let t = tally.lock().map_err(|_| anyhow!("a client thread panicked"))?;
    summary(&show, &t, elapsed);
    if interrupted {
        eprintln!("interrupted; replicas stopped");
        return Ok(ExitCode::from(130));
    }
    if let Err(e) = outcome {
        match dir {
            Some(d) => anyhow::bail!("{e:#} (replica logs in {})", d.display()),
            None => anyhow::bail!("{e:#} (run again with --dir DIR to keep the replicas' logs)"),
        }
    }
    Ok(if t.wrong == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The summary: operations, wrong results, view changes, the longest pause
/// and what was going on, pages transferred, and each phase's figures.
fn summary(show: &Show, t: &Tally, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!();
    println!(
        "operations:        {} in {secs:.1} s ({} ops/s)",
        thousands(t.checked),
        thousands((t.checked as f64 / secs.max(1e-9)) as u64)
    );
    match &t.first_wrong {
        None => println!("wrong results:     0 (each result checked against a model of the store)"),
        Some(w) => println!("wrong results:     {} (the first: {w})", thousands(t.wrong)),
    }
    let last_view = show.view.unwrap_or(show.first_view);
    println!(
        "view changes:      {} (view {} to view {last_view})",
        last_view.saturating_sub(show.first_view),
        show.first_view
    );
    let pause = t.phases.iter().max_by_key(|p| p.longest_pause);
    match pause {
        Some(p) if p.longest_pause > Duration::ZERO => {
            println!("longest pause:     {:.2} s, when {}", p.longest_pause.as_secs_f64(), p.cause)
        }
        _ => println!("longest pause:     none measured"),
    }
    let by: Vec<(usize, u64)> = show
        .tracks
        .iter()
        .enumerate()
        .map(|(id, tr)| (id, tr.pages_before + tr.last.as_ref().map_or(0, |r| r.transfer_pages)))
        .filter(|(_, p)| *p > 0)
        .collect();
    let pages: u64 = by.iter().map(|(_, p)| p).sum();
    let whom: Vec<String> = by.iter().map(|(id, p)| format!("replica {id}: {}", thousands(*p))).collect();
    let detail = if whom.is_empty() { String::new() } else { format!(" ({})", whom.join(", ")) };
    println!("pages transferred: {}{detail}", thousands(pages));
    println!("final state:       {}", show.verdict);
    if let Some(f) = &t.failure {
        println!("client failure:    {f}");
    }
    println!();
    println!("{:<34} {:>10} {:>7} {:>7} {:>7} {:>8}", "phase", "time s", "ops/s", "p50 ms", "p99 ms", "pause s");
    for (i, p) in t.phases.iter().enumerate() {
        let from = p.started.saturating_duration_since(show.begun).as_secs_f64();
        let to = p.ended.unwrap_or_else(Instant::now).saturating_duration_since(show.begun).as_secs_f64();
        let rate = p.ops as f64 / (to - from).max(1e-9);
        println!(
            "{:<34} {:>10} {:>7} {:>7.2} {:>7.2} {:>8.2}",
            format!("{}. {}", i + 1, p.title),
            format!("{from:.1}-{to:.1}"),
            thousands(rate as u64),
            p.latency.quantile_ms(0.5),
            p.latency.quantile_ms(0.99),
            p.longest_pause.as_secs_f64()
        );
    }
}
