//! `bfs bench andrew`: the Andrew benchmark's five phases through the FUSE
//! mount, against BFS (4 replica processes) and against the same service
//! without replication, in one run.
//!
//! The source tree is generated (its size is a parameter, the content fixed
//! by a seed): directories of C files with a header each. The phases: (1)
//! make the directories, (2) copy the files in, (3) stat every file, (4) read
//! every byte, (5) compile every file with `cc` on the mount and link them.
//! It prints the median of each phase and the ratios, and writes them as CSV
//! and as an SVG plot (`crate::plot`).
//!
//! With `--postmark`, Debian's `postmark` (small-file metadata load: files
//! created, read, appended to and deleted in a random mix) runs on the same
//! mount after the five phases, timed on its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bfs::backend::Pool;
use bfs::fuse::BfsFuse;
use bfs::local::LocalCluster;
use bfs::relay::Relay;
use clap::Args;

#[derive(Args)]
pub struct AndrewArgs {
    /// Directories in the generated tree.
    #[arg(long, default_value_t = 10)]
    dirs: usize,
    /// C files in each directory.
    #[arg(long, default_value_t = 10)]
    files: usize,
    /// Runs of each configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Write the figures as CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Draw them as SVG here (default: the CSV's path with .svg).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also run nfs-ganesha (Debian's nfs-ganesha and nfs-ganesha-vfs, and
    /// rpcbind) exporting a tmpfs folder, through the same client.
    #[arg(long)]
    ganesha: bool,
    /// Also run `postmark` (Debian's) on each mount after the five phases:
    /// --postmark-files files of 500 B to 10 KB, --postmark-transactions
    /// transactions.
    #[arg(long)]
    postmark: bool,
    #[arg(long, default_value_t = 1000)]
    postmark_files: usize,
    #[arg(long, default_value_t = 2000)]
    postmark_transactions: usize,
}

/// The postmark settings, if it runs.
#[derive(Clone, Copy)]
struct Postmark {
    files: usize,
    transactions: usize,
}

const PHASES: [&str; 5] = ["mkdir", "copy", "stat", "read", "compile"];

/// One run on one server: the five phases, and postmark's time (zero when
/// it does not run).
type Times = [Duration; 6];

/// Runs postmark in `dir` (a fresh folder of the mount): its elapsed time.
/// A failure, or a summary without its last line, is an error.
fn postmark(dir: &Path, p: Postmark) -> Result<Duration> {
    std::fs::create_dir(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let script = format!(
        "set location {}\nset number {}\nset transactions {}\nset size 500 10000\nset seed 42\nrun\nquit\n",
        dir.display(),
        p.files,
        p.transactions
    );
    let config = dir.with_extension("pmrc");
    std::fs::write(&config, script).with_context(|| format!("writing {}", config.display()))?;
    let started = Instant::now();
    let out = Command::new("postmark")
        .arg(&config)
        .output()
        .context("running postmark (Debian's `postmark` package; install it or leave out --postmark)")?;
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !(text.contains("Data:") && text.contains("bytes written")) {
        bail!("postmark failed ({}): {}{}", out.status, text, String::from_utf8_lossy(&out.stderr));
    }
    Ok(elapsed)
}

/// The generated tree: (relative path, content); directories first.
fn tree(a: &AndrewArgs) -> (Vec<String>, Vec<(String, String)>) {
    let mut dirs = vec!["src".to_string()];
    let mut files = Vec::new();
    for d in 0..a.dirs {
        let dir = format!("src/m{d:02}");
        files.push((format!("{dir}/m{d:02}.h"), format!("int m{d:02}_sum(int n);\n")));
        for f in 0..a.files {
            let mut body = format!("#include <stdio.h>\n#include \"m{d:02}.h\"\n\n");
            for k in 0..40 {
                body.push_str(&format!(
                    "static int f{f}_{k}(int x) {{ int s = 0; for (int i = 0; i < x; i++) s += i * {k} ^ {f}; return s; }}\n"
                ));
            }
            body.push_str(&format!("int m{d:02}_f{f}(int n) {{ return f{f}_0(n) + f{f}_39(n); }}\n"));
            files.push((format!("{dir}/f{f:02}.c"), body));
        }
        dirs.push(dir);
    }
    let mut main = String::from("#include <stdio.h>\n");
    for d in 0..a.dirs {
        for f in 0..a.files {
            main.push_str(&format!("int m{d:02}_f{f}(int n);\n"));
        }
    }
    main.push_str("int main(void) { int s = 0;\n");
    for d in 0..a.dirs {
        for f in 0..a.files {
            main.push_str(&format!("  s += m{d:02}_f{f}(10);\n"));
        }
    }
    main.push_str("  printf(\"%d\\n\", s); return 0; }\n");
    files.push(("src/main.c".into(), main));
    (dirs, files)
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

/// The five phases on `root`; the elapsed time of each.
fn andrew(root: &Path, dirs: &[String], files: &[(String, String)]) -> Result<[Duration; 5]> {
    let mkdir = timed(|| {
        for d in dirs {
            std::fs::create_dir(root.join(d)).with_context(|| format!("mkdir {d}"))?;
        }
        Ok(())
    })?;
    let copy = timed(|| {
        for (p, c) in files {
            std::fs::write(root.join(p), c).with_context(|| format!("write {p}"))?;
        }
        Ok(())
    })?;
    let stat = timed(|| {
        for (p, c) in files {
            let m = std::fs::metadata(root.join(p)).with_context(|| format!("stat {p}"))?;
            if m.len() != c.len() as u64 {
                bail!("{p}: size {} instead of {}", m.len(), c.len());
            }
        }
        Ok(())
    })?;
    let read = timed(|| {
        for (p, c) in files {
            if std::fs::read(root.join(p)).with_context(|| format!("read {p}"))? != c.as_bytes() {
                bail!("{p} reads back different");
            }
        }
        Ok(())
    })?;
    let compile = timed(|| {
        let mut objects = Vec::new();
        for (p, _) in files.iter().filter(|(p, _)| p.ends_with(".c")) {
            let o = format!("{}.o", p.trim_end_matches(".c"));
            let s =
                Command::new("cc").current_dir(root).args(["-O1", "-c", p, "-o", &o]).status().context("running cc")?;
            if !s.success() {
                bail!("cc {p} failed");
            }
            objects.push(o);
        }
        let s =
            Command::new("cc").current_dir(root).args(["-o", "src/prog"]).args(&objects).status().context("linking")?;
        if !s.success() {
            bail!("linking failed");
        }
        Ok(())
    })?;
    Ok([mkdir, copy, stat, read, compile])
}

fn mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts.lines().any(|l| l.split_whitespace().nth(1) == dir.to_str())
}

/// Runs the benchmark on a fresh FUSE mount of `pool`'s file service.
fn on_mount(
    fs: BfsFuse,
    base: &Path,
    name: &str,
    dirs: &[String],
    files: &[(String, String)],
    pm: Option<Postmark>,
) -> Result<Times> {
    let dir = base.join(format!("mnt-{name}"));
    std::fs::create_dir_all(&dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (s, d) = (stop.clone(), dir.clone());
    let thread = std::thread::spawn(move || bfs::fuse::mount(fs, &d, &s));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mounted(&dir) {
        if Instant::now() > deadline || thread.is_finished() {
            bail!("{} was not mounted", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = andrew(&dir, dirs, files).and_then(|[a, b, c, d, e]| {
        let p = match pm {
            Some(pm) => postmark(&dir.join("postmark"), pm)?,
            None => Duration::ZERO,
        };
        Ok([a, b, c, d, e, p])
    });
    stop.store(true, Ordering::Relaxed);
    let _ = thread.join();
    r
}

/// The export `export` of the NFSv3 server at `nfs` (MOUNT at `mount`), as
/// `bfs mount --nfs` mounts it.
fn nfs_fs(nfs: SocketAddr, mount: SocketAddr, export: &str) -> Result<BfsFuse> {
    let pool = Arc::new(Pool::of_nfs_server(nfs, 4)?);
    Ok(BfsFuse::remote(pool, mount, export)?)
}

/// A relay serving on a free port of 127.0.0.1 until dropped.
struct RelayThread {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RelayThread {
    fn start(pool: Pool, max_op: usize) -> Result<RelayThread> {
        let relay = Relay::bind(([127, 0, 0, 1], 0).into(), Arc::new(pool), max_op)?;
        let addr = relay.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = Some(std::thread::spawn(move || {
            let _ = relay.run(&s);
        }));
        Ok(RelayThread { addr, stop, thread })
    }
}

impl Drop for RelayThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Requests (ordered and read-only) replica 0 of `cluster` has executed.
fn requests_executed(cluster: &LocalCluster) -> f64 {
    let Some(addr) = cluster.cluster.replicas.first().and_then(|r| r.metrics_addr) else { return 0.0 };
    let text = pbft_node::metrics::scrape(addr, Duration::from_secs(2)).unwrap_or_default();
    ["pbft_requests_executed_total", "pbft_read_only_executed_total"]
        .iter()
        .filter_map(|name| pbft_node::metrics::sample_value(&text, name))
        .sum()
}

/// CPU seconds the replica processes of `cluster` have used so far.
fn replicas_cpu(cluster: &LocalCluster) -> f64 {
    cluster.pids().iter().map(|(_, pid)| pbft_node::launcher::cpu_seconds(*pid)).sum()
}

/// The median, smallest and largest of `v` (not empty).
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn run(a: AndrewArgs) -> Result<()> {
    anyhow::ensure!(a.runs >= 1 && a.dirs >= 1 && a.files >= 1, "--runs, --dirs and --files must be positive");
    let (dirs, files) = tree(&a);
    let bytes: usize = files.iter().map(|(_, c)| c.len()).sum();
    eprintln!("tree: {} directories, {} files, {} KiB; {} runs each", dirs.len(), files.len(), bytes / 1024, a.runs);
    let temp = tempfile::tempdir()?;
    let bin = std::env::current_exe()?;
    let pm = a.postmark.then_some(Postmark { files: a.postmark_files, transactions: a.postmark_transactions });
    anyhow::ensure!(
        !a.postmark || (a.postmark_files >= 1 && a.postmark_transactions >= 1),
        "postmark needs files and transactions"
    );
    let mut results: Vec<(&str, Vec<Times>)> = vec![("bfs", Vec::new()), ("no-replication", Vec::new())];
    // Per BFS run: the replicas' CPU seconds and the requests they executed.
    let mut cluster_cpu: Vec<(f64, f64)> = Vec::new();
    if a.ganesha {
        results.push(("nfs-ganesha", Vec::new()));
    }
    for run in 0..a.runs {
        let base = temp.path().join(format!("run-{run}"));
        std::fs::create_dir_all(&base)?;
        // Every server is reached the same way: FUSE, then NFSv3 over TCP.
        let cluster = LocalCluster::start(&bin, &base, 1 << 18, 8, None)?;
        let relay =
            RelayThread::start(Pool::of_cluster(&cluster.cluster, (0, 8))?, cluster.cluster.config().max_op_bytes)?;
        let (cpu, requests) = (replicas_cpu(&cluster), requests_executed(&cluster));
        results[0].1.push(on_mount(nfs_fs(relay.addr, relay.addr, "/")?, &base, "bfs", &dirs, &files, pm)?);
        cluster_cpu.push((replicas_cpu(&cluster) - cpu, requests_executed(&cluster) - requests));
        drop(relay);
        drop(cluster);
        let relay = RelayThread::start(Pool::local(1 << 18)?, usize::MAX)?;
        results[1].1.push(on_mount(nfs_fs(relay.addr, relay.addr, "/")?, &base, "local", &dirs, &files, pm)?);
        drop(relay);
        if a.ganesha {
            let g = crate::ganesha::Ganesha::start(&base)?;
            let r = on_mount(nfs_fs(g.nfs, g.mount, &g.export)?, &base, "ganesha", &dirs, &files, pm);
            drop(g);
            results[2].1.push(r?);
        }
    }
    // Per server: the five phases' medians, the median total, and postmark's
    // median when it ran.
    let columns = if pm.is_some() { 7 } else { 6 };
    let table: Vec<(&str, Vec<Duration>)> = results
        .iter()
        .map(|(name, runs)| {
            (
                *name,
                (0..5)
                    .map(|p| median(runs.iter().map(|r| r[p]).collect()))
                    .chain([median(runs.iter().map(|r| r[..5].iter().sum()).collect())])
                    .chain([median(runs.iter().map(|r| r[5]).collect())])
                    .take(columns)
                    .collect(),
            )
        })
        .collect();
    let labels: Vec<&str> = PHASES.iter().copied().chain(["total", "postmark"]).take(columns).collect();
    print!("{:<16}", "server");
    let mut csv = String::from("server");
    for l in &labels {
        print!("{l:>10}");
        csv.push_str(&format!(",{l}_s"));
    }
    println!();
    csv.push('\n');
    for (name, t) in &table {
        print!("{name:<16}");
        csv.push_str(name);
        for d in t {
            print!("{:>10.3}", d.as_secs_f64());
            csv.push_str(&format!(",{:.4}", d.as_secs_f64()));
        }
        println!();
        csv.push('\n');
    }
    for (k, label) in [(1, "bfs / no-repl"), (2, "bfs / ganesha")] {
        if let Some((_, base)) = table.get(k) {
            let ratio: Vec<String> = (0..columns)
                .map(|i| format!("{:>10.2}", table[0].1[i].as_secs_f64() / base[i].as_secs_f64().max(1e-9)))
                .collect();
            println!("{label:<16}{}", ratio.join(""));
        }
    }
    // Each run's own ratio (its servers ran one after the other, minutes
    // apart at most): their median and spread, less moved by the machine's
    // load than a ratio of medians.
    for (k, label) in [(1, "bfs / no-repl"), (2, "bfs / ganesha")] {
        let Some((_, base)) = results.get(k) else { continue };
        let andrew = |t: &Times| t[..5].iter().sum::<Duration>().as_secs_f64();
        let postmark = |t: &Times| t[5].as_secs_f64();
        let ratios = |secs: &dyn Fn(&Times) -> f64| {
            spread(results[0].1.iter().zip(base).map(|(b, o)| secs(b) / secs(o).max(1e-9)).collect())
        };
        let (m, lo, hi) = ratios(&andrew);
        let mut line = format!("{label}, each run's own ratio: Andrew {m:.2} ({lo:.2}-{hi:.2})");
        if pm.is_some() {
            let (m, lo, hi) = ratios(&postmark);
            line.push_str(&format!(", postmark {m:.2} ({lo:.2}-{hi:.2})"));
        }
        println!("{line}");
    }
    // On one machine the replicas' CPU is taken from the client's programs
    // (cc in the compile phase): how much, per request, says how much of
    // BFS's extra time that is.
    cluster_cpu.sort_by(|x, y| x.0.total_cmp(&y.0));
    if let Some(&(cpu, requests)) = cluster_cpu.get(cluster_cpu.len() / 2) {
        println!(
            "bfs replicas' CPU: {cpu:.2} s for {requests:.0} requests ({:.0} us each, all four replicas), median run",
            cpu * 1e6 / requests.max(1.0)
        );
    }
    if let Some(path) = &a.csv {
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = a.plot.clone().or_else(|| a.csv.as_ref().map(|c| c.with_extension("svg"))) {
        let series: Vec<crate::plot::Series> =
            table.iter().map(|(server, times)| crate::plot::Series { server, times }).collect();
        crate::plot::write_svg(&labels, &series, &path).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
