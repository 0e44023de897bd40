//! `pbft status`: one table of the cluster, from each replica's metrics
//! endpoint, and a verdict on whether it can serve.
//!
//! A replica *serves* when its metrics answer, it is active in the view most
//! replicas are active in, it is not fetching state, and it is within one log
//! window of the furthest replica. The service needs 2f+1 replicas that serve
//! (a quorum); the verdict says how many more failures it can take, and the
//! exit status is non-zero when it cannot serve, so that scripts and
//! monitoring can use it. Replicas report on themselves: a Byzantine one can
//! lie here too, and this is a monitoring view, not a safety check.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use clap::Args;
use pbft_node::metrics::{ReadError, Reading};
use pbft_node::Cluster;

#[derive(Args)]
pub struct StatusArgs {
    /// The cluster file.
    #[arg(long)]
    config: PathBuf,
    /// Refresh the table every SECONDS (1 if not given) until Ctrl-C.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1")]
    watch: Option<f64>,
    /// How long to wait for each replica's metrics.
    #[arg(long, default_value_t = 1.0)]
    timeout_secs: f64,
}

/// One replica as its metrics endpoint showed it.
pub(crate) struct Row {
    pub(crate) id: u16,
    pub(crate) addr: SocketAddr,
    /// Its reading, or why there is none.
    pub(crate) reading: Result<Reading, String>,
}

/// What a replica is doing, as the table's "state" column says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Serving (the primary of the view, or a backup).
    Serving { primary: bool },
    /// No metrics (unreachable, garbage, or none configured).
    Unreachable,
    /// A view change is under way at this replica.
    ChangingView,
    /// In another view than the one most replicas are active in.
    OtherView,
    /// Fetching state from the others.
    FetchingState,
    /// More than a log window behind the furthest replica.
    Behind,
}

impl Role {
    fn text(self) -> &'static str {
        match self {
            Role::Serving { primary: true } => "up, primary",
            Role::Serving { primary: false } => "up",
            Role::Unreachable => "unreachable",
            Role::ChangingView => "changing view",
            Role::OtherView => "in another view",
            Role::FetchingState => "fetching state",
            Role::Behind => "behind",
        }
    }
}

/// The cluster's state as the rows show it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The view most replicas are active in, if any is.
    pub(crate) view: Option<u64>,
    /// Each row's role, in row order.
    pub(crate) roles: Vec<Role>,
    /// Whether 2f+1 replicas serve.
    pub(crate) can_serve: bool,
    /// One line: "healthy: ...", "degraded: ...", or "cannot serve: ...".
    pub(crate) text: String,
}

/// Judges the cluster from its rows: `f` faults tolerated, `log_window` (L)
/// how far a replica may trail the furthest one and still count as serving.
pub(crate) fn verdict(f: usize, log_window: u64, rows: &[Row]) -> Verdict {
    let n = rows.len();
    let quorum = 2 * f + 1;
    // The view most replicas are active in (ties: the later view).
    let mut views: Vec<u64> =
        rows.iter().filter_map(|r| r.reading.as_ref().ok()).filter(|r| r.view_active).map(|r| r.view).collect();
    views.sort_unstable();
    let view = views.iter().copied().max_by_key(|v| (views.iter().filter(|w| *w == v).count(), *v));
    let furthest = rows.iter().filter_map(|r| r.reading.as_ref().ok()).map(|r| r.last_executed).max().unwrap_or(0);
    let roles: Vec<Role> = rows
        .iter()
        .map(|row| match &row.reading {
            Err(_) => Role::Unreachable,
            Ok(r) if r.transferring => Role::FetchingState,
            Ok(r) if !r.view_active => Role::ChangingView,
            Ok(r) if Some(r.view) != view => Role::OtherView,
            Ok(r) if r.last_executed.saturating_add(log_window) < furthest => Role::Behind,
            Ok(r) => Role::Serving { primary: n > 0 && r.view % n as u64 == u64::from(row.id) },
        })
        .collect();
    let serving = roles.iter().filter(|r| matches!(r, Role::Serving { .. })).count();
    let out: Vec<String> = rows
        .iter()
        .zip(&roles)
        .filter(|(_, role)| !matches!(role, Role::Serving { .. }))
        .map(|(row, role)| format!("replica {} {}", row.id, role.text()))
        .collect();
    let in_view = view.map_or(String::new(), |v| format!(" in view {v}"));
    let plural = |k: usize| if k == 1 { "failure" } else { "failures" };
    let text = if serving == n {
        format!("healthy: all {n} replicas serve{in_view}; tolerates {f} {}", plural(f))
    } else if serving >= quorum {
        let spare = f.saturating_sub(n - serving);
        let margin = if spare == 0 {
            "one more failure stops the service".to_string()
        } else {
            format!("tolerates {spare} more {}", plural(spare))
        };
        format!("degraded: {}; {serving} of {n} serve{in_view}; {margin}", out.join(", "))
    } else {
        format!("cannot serve: {serving} of {n} replicas serve, {quorum} (2f+1) needed; {}", out.join(", "))
    };
    Verdict { view, roles, can_serve: serving >= quorum, text }
}

/// Reads every replica's metrics at once (an unreachable one costs `timeout`
/// once, not once per replica).
fn read_all(cluster: &Cluster, timeout: Duration) -> Vec<Row> {
    std::thread::scope(|s| {
        let reads: Vec<_> = cluster
            .replicas
            .iter()
            .map(|r| {
                let (id, addr, metrics) = (r.id.0, r.addr, r.metrics_addr);
                s.spawn(move || {
                    let reading = match metrics {
                        None => Err("no metrics_addr in the cluster file".to_string()),
                        Some(m) => Reading::fetch(m, timeout).map_err(|e| explain(e, addr, m)),
                    };
                    Row { id, addr, reading }
                })
            })
            .collect();
        reads
            .into_iter()
            .zip(&cluster.replicas)
            .map(|(h, r)| {
                h.join().unwrap_or_else(|_| Row {
                    id: r.id.0,
                    addr: r.addr,
                    reading: Err("reading its metrics failed".into()),
                })
            })
            .collect()
    })
}

/// Why a replica has no reading, with a hint when its metrics are on its
/// host's loopback address and it runs on another host.
fn explain(e: ReadError, addr: SocketAddr, metrics: SocketAddr) -> String {
    let hint = if metrics.ip().is_loopback() && !addr.ip().is_loopback() {
        " (its metrics listen on its own host's loopback address: run pbft status there, or see \"Metrics\" in the README)"
    } else {
        ""
    };
    format!("metrics at {metrics}: {e}{hint}")
}

/// The table and the verdict as text.
fn render(cluster: &Cluster, rows: &[Row], v: &Verdict) -> String {
    let dash = || "-".to_string();
    let mut table: Vec<[String; 8]> =
        vec![["id", "address", "state", "view", "executed", "checkpoint", "transfer", "dropped (by reason)"]
            .map(String::from)];
    for (row, role) in rows.iter().zip(&v.roles) {
        let cells = match &row.reading {
            Ok(r) => [
                row.id.to_string(),
                row.addr.to_string(),
                role.text().to_string(),
                if r.view_active { r.view.to_string() } else { format!("{} (changing)", r.view) },
                r.last_executed.to_string(),
                r.low_water_mark.to_string(),
                if r.transferring { format!("yes, {} pages", r.transfer_pages) } else { "no".into() },
                r.drops_text(),
            ],
            Err(_) => [
                row.id.to_string(),
                row.addr.to_string(),
                role.text().to_string(),
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
            ],
        };
        table.push(cells);
    }
    let widths: Vec<usize> = (0..8).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = format!("{}: {} replicas, f = {}\n", cluster.path.display(), cluster.n(), cluster.file.f);
    for cells in &table {
        let line: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for row in rows {
        if let Err(e) = &row.reading {
            out.push_str(&format!("replica {}: {e}\n", row.id));
        }
    }
    out.push_str(&format!("verdict: {}\n", v.text));
    out
}

/// The table and verdict of `cluster` as `pbft status` prints them, and
/// whether it can serve (the demo shows it too, when it gives up waiting).
pub(crate) fn report(cluster: &Cluster, timeout: Duration) -> (String, bool) {
    let rows = read_all(cluster, timeout);
    let v = verdict(cluster.file.f, cluster.file.protocol.log_window, &rows);
    (render(cluster, &rows, &v), v.can_serve)
}

pub fn run(a: StatusArgs) -> Result<ExitCode> {
    ensure!(a.timeout_secs > 0.0 && a.timeout_secs <= 60.0, "--timeout-secs must be in (0, 60]");
    if let Some(every) = a.watch {
        ensure!((0.1..=3600.0).contains(&every), "--watch takes 0.1 to 3600 seconds");
    }
    let cluster = Cluster::load(&a.config)?;
    let timeout = Duration::from_secs_f64(a.timeout_secs);
    let stop = Arc::new(AtomicBool::new(false));
    if a.watch.is_some() {
        let s = stop.clone();
        ctrlc::set_handler(move || s.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
    }
    let clear = a.watch.is_some() && std::io::stdout().is_terminal();
    loop {
        let (text, can_serve) = report(&cluster, timeout);
        let mut stdout = std::io::stdout().lock();
        if clear {
            // Clear the screen and go home, then the table.
            let _ = write!(stdout, "\x1b[2J\x1b[H");
        }
        // A closed pipe (`pbft status | head`) ends the command quietly.
        if write!(stdout, "{text}").and_then(|()| stdout.flush()).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
        drop(stdout);
        let code = if can_serve { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        let Some(every) = a.watch else { return Ok(code) };
        if !clear {
            println!();
        }
        let until = std::time::Instant::now() + Duration::from_secs_f64(every);
        while std::time::Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return Ok(code);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(id: u16, view: u64, executed: u64) -> Row {
        let reading = Reading { replica: id, view, view_active: true, last_executed: executed, ..Reading::default() };
        Row { id, addr: SocketAddr::from(([127, 0, 0, 1], 7000 + id)), reading: Ok(reading) }
    }

    fn down(id: u16) -> Row {
        Row { reading: Err("refused".into()), ..up(id, 0, 0) }
    }

    fn with(mut row: Row, change: impl FnOnce(&mut Reading)) -> Row {
        if let Ok(r) = &mut row.reading {
            change(r);
        }
        row
    }

    #[test]
    fn the_verdict_counts_what_is_left() {
        let v = verdict(1, 256, &[up(0, 0, 10), up(1, 0, 10), up(2, 0, 9), up(3, 0, 10)]);
        assert!(v.can_serve && v.text.starts_with("healthy: all 4 replicas serve in view 0"), "{}", v.text);
        assert_eq!(v.roles[0], Role::Serving { primary: true });

        let v = verdict(1, 256, &[down(0), up(1, 1, 10), up(2, 1, 10), up(3, 1, 10)]);
        assert!(v.can_serve, "{}", v.text);
        assert_eq!(
            v.text,
            "degraded: replica 0 unreachable; 3 of 4 serve in view 1; one more failure stops the service"
        );
        assert_eq!(v.roles[1], Role::Serving { primary: true });

        let v = verdict(1, 256, &[down(0), up(1, 1, 10), with(up(2, 1, 10), |r| r.transferring = true), up(3, 1, 10)]);
        assert!(!v.can_serve);
        assert!(v.text.starts_with("cannot serve: 2 of 4 replicas serve, 3 (2f+1) needed"), "{}", v.text);
        assert!(v.text.contains("replica 2 fetching state"), "{}", v.text);

        let changing = |id| with(up(id, 2, 10), |r| r.view_active = false);
        let v = verdict(1, 256, &[changing(0), changing(1), changing(2), up(3, 1, 10)]);
        assert!(!v.can_serve && v.text.contains("replica 0 changing view"), "{}", v.text);

        // f = 2: one down leaves one more failure to spare.
        let rows: Vec<Row> = (0..7).map(|id| if id == 4 { down(id) } else { up(id, 0, 50) }).collect();
        let v = verdict(2, 256, &rows);
        assert!(v.can_serve && v.text.ends_with("; tolerates 1 more failure"), "{}", v.text);

        let v = verdict(1, 256, &[up(0, 0, 1000), up(1, 0, 1000), up(2, 0, 100), up(3, 3, 1000)]);
        assert_eq!(v.roles[2..], [Role::Behind, Role::OtherView]);
        assert!(!v.can_serve, "{}", v.text);
    }

    #[test]
    fn the_table_shows_every_replica() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = pbft_node::keygen::KeygenSpec { base_port: 9100, ..pbft_node::keygen::KeygenSpec::local(4, 1) };
        let cluster = Cluster::load(&pbft_node::keygen::keygen(&spec, dir.path()).expect("keygen")).expect("cluster");
        let rows = vec![
            down(0),
            up(1, 1, 300),
            with(up(2, 1, 300), |r| r.dropped = vec![("bad_mac".into(), 4)]),
            up(3, 1, 299),
        ];
        let v = verdict(1, 256, &rows);
        let text = render(&cluster, &rows, &v);
        assert!(text.contains("replica 0: refused"), "{text}");
        assert!(text.contains("bad_mac 4"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("1   127.0.0.1:7001  up, primary  1")), "{text}");
        assert!(text.ends_with("one more failure stops the service\n"), "{text}");
    }
}
