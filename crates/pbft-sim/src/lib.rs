//! A deterministic simulator for the `pbft` core.
//!
//! A run is (seed, scenario family): the seed picks the cluster size (f = 1, 2
//! or 3), the workload, the faults and every network decision, so the same seed
//! replays the same run bit for bit. Checkers (agreement, exactly-once,
//! linearizability, liveness, bounds) watch every run; a failure prints its seed.

pub mod byzantine;
pub mod checkers;
pub mod rng;
pub mod scenario;
pub mod workload;
pub mod world;

use pbft::bugs::Bugs;

pub use scenario::{Family, Scenario};
use world::{sim_config, World};

/// The outcome of one run.
#[derive(Debug)]
pub struct RunReport {
    pub seed: u64,
    pub scenario: String,
    pub violations: Vec<String>,
    pub stats: world::RunStats,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// One line for the run (and one per violation), the same on every replay.
    pub fn render(&self) -> String {
        let mut s = format!(
            "seed {} {} | {} ops, max seq {}, {} events, {} datagrams, {} dropped by replicas, {} state transfers, {} views installed, {} rollbacks, t={}us",
            self.seed,
            if self.ok() { "ok" } else { "FAILED" },
            self.stats.ops_completed,
            self.stats.max_seq,
            self.stats.events,
            self.stats.datagrams,
            self.stats.drops,
            self.stats.state_transfers,
            self.stats.views_installed,
            self.stats.rollbacks,
            self.stats.end_us
        );
        s.push_str(&format!("\n  scenario: {}", self.scenario));
        for v in &self.violations {
            s.push_str(&format!("\n  violation: {v}"));
        }
        for d in &self.stats.diagnostics {
            s.push_str(&format!("\n    {d}"));
        }
        s
    }
}

/// The family a seed runs when none is named: sweeps cycle through all of them.
pub fn family_for_seed(seed: u64) -> Family {
    Family::ALL[(seed % Family::ALL.len() as u64) as usize]
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Replaces the panic hook once with one that records the message and location
/// of a panic for the run's report instead of printing a backtrace per seed.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_run = LAST_PANIC.with(|p| p.borrow().is_some());
            if !in_run {
                return default(info);
            }
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
        }));
    });
}

/// Runs one seed. Panics inside the protocol are caught and reported as violations.
pub fn run(seed: u64, family: Option<Family>, bugs: Bugs) -> RunReport {
    quiet_panics();
    LAST_PANIC.with(|p| *p.borrow_mut() = Some(String::new()));
    let family = family.unwrap_or_else(|| family_for_seed(seed));
    let scenario = Scenario::generate(seed, family);
    let description = scenario.describe();
    let result = std::panic::catch_unwind(|| {
        let mut cfg = sim_config(&scenario);
        cfg.bugs = bugs;
        let mut world = World::new(seed, scenario, cfg);
        world.run();
        (world.checkers.violations, world.stats)
    });
    let panic = LAST_PANIC.with(|p| p.borrow_mut().take());
    match result {
        Ok((violations, stats)) => RunReport { seed, scenario: description, violations, stats },
        Err(_) => {
            // A replica's invariant check panics naming the invariant: that is
            // the run's finding, at the step that broke it.
            let panic = panic.unwrap_or_default();
            let violation = if panic.starts_with("invariant") { panic } else { format!("panic: {panic}") };
            RunReport { seed, scenario: description, violations: vec![violation], stats: Default::default() }
        }
    }
}

/// Runs seeds `range` on `threads` threads; returns the reports in seed order.
pub fn sweep(range: std::ops::Range<u64>, family: Option<Family>, bugs: Bugs, threads: usize) -> Vec<RunReport> {
    let next = std::sync::atomic::AtomicU64::new(range.start);
    let reports = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= range.end {
                    break;
                }
                let r = run(seed, family, bugs);
                reports.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            });
        }
    });
    let mut v = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    v.sort_by_key(|r| r.seed);
    v
}

/// Every name [`bug_by_name`] knows, "none" first.
pub const BUG_NAMES: [&str; 14] = [
    "none",
    "skip-mac-check",
    "execute-twice",
    "weak-reply-certificate",
    "unbounded-request-queue",
    "no-status",
    "commit-quorum-2f",
    "execute-before-prepared",
    "new-view-drops-prepared",
    "new-view-skips-a2",
    "view-change-without-acks",
    "low-water-mark-moves-back",
    "forgetful-restart",
    "send-before-durable",
];

/// The deliberate bugs by name, for the command line and the tests.
pub fn bug_by_name(name: &str) -> Option<Bugs> {
    let mut b = Bugs::default();
    match name {
        "none" => {}
        "skip-mac-check" => b.skip_mac_check = true,
        "execute-twice" => b.execute_twice = true,
        "weak-reply-certificate" => b.weak_reply_certificate = true,
        "unbounded-request-queue" => b.unbounded_request_queue = true,
        "no-status" => b.no_status = true,
        "commit-quorum-2f" => b.commit_quorum_2f = true,
        "execute-before-prepared" => b.execute_before_prepared = true,
        "new-view-drops-prepared" => b.new_view_drops_prepared = true,
        "new-view-skips-a2" => b.new_view_skips_a2 = true,
        "view-change-without-acks" => b.view_change_without_acks = true,
        "low-water-mark-moves-back" => b.low_water_mark_moves_back = true,
        "forgetful-restart" => b.forgetful_restart = true,
        "send-before-durable" => b.send_before_durable = true,
        _ => return None,
    }
    Some(b)
}
