//! `pbft-sim`: replay one seed, or sweep a range of seeds on all cores.
//!
//! ```text
//! cargo run --release -p pbft-sim -- --seed 42
//! cargo run --release -p pbft-sim -- --seeds 0..10000
//! cargo run --release -p pbft-sim -- --seeds 0..500 --family byzantine --bug weak-reply-certificate
//! ```

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use pbft_sim::{bug_by_name, run, sweep, Family};

#[derive(Parser)]
#[command(about = "Deterministic simulator for the PBFT core")]
struct Args {
    /// Run one seed and print its report.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Sweep a range of seeds, A..B (B excluded).
    #[arg(long)]
    seeds: Option<String>,
    /// Scenario family; by default each seed picks one.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Family::ALL.map(Family::name)))]
    family: Option<String>,
    /// Switch on a deliberate protocol bug.
    #[arg(long, default_value = "none", value_parser = clap::builder::PossibleValuesParser::new(pbft_sim::BUG_NAMES))]
    bug: String,
    /// Threads for a sweep (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print every run of a sweep, not only failures.
    #[arg(long)]
    verbose: bool,
}

fn parse_range(s: &str) -> Option<std::ops::Range<u64>> {
    let (a, b) = s.split_once("..")?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a < b).then_some(a..b)
}

/// Prints a line; a closed pipe (`| head`) ends the output quietly.
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(bugs) = bug_by_name(&args.bug) else {
        eprintln!("error: unknown bug '{}'", args.bug);
        return ExitCode::from(2);
    };
    let family = match args.family.as_deref().map(|f| (f, Family::parse(f))) {
        None => None,
        Some((_, Some(f))) => Some(f),
        Some((name, None)) => {
            eprintln!("error: unknown family '{name}'");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        let r = run(seed, family, bugs);
        out!("{}", r.render());
        return if r.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let Some(range) = args.seeds.as_deref().map(parse_range) else {
        eprintln!("error: give --seed S or --seeds A..B");
        return ExitCode::from(2);
    };
    let Some(range) = range else {
        eprintln!("error: --seeds wants A..B with A < B");
        return ExitCode::from(2);
    };
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = std::time::Instant::now();
    let reports = sweep(range.clone(), family, bugs, threads);
    let failed: Vec<_> = reports.iter().filter(|r| !r.ok()).collect();
    for r in &reports {
        if args.verbose || !r.ok() {
            out!("{}", r.render());
        }
    }
    let ops: usize = reports.iter().map(|r| r.stats.ops_completed).sum();
    out!(
        "{} seeds ({}..{}), {} failed, {} client operations checked, {:.1}s",
        reports.len(),
        range.start,
        range.end,
        failed.len(),
        ops,
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        out!("failing seeds: {}", failed.iter().map(|r| r.seed.to_string()).collect::<Vec<_>>().join(" "));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
