//! What a new user meets first: `pbft demo` showing faults tolerated live,
//! `pbft status`, and the refusal of a private key that others can read.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{keygen, pbft, start_replicas, BIN};

/// The number after `label` on the line that starts with it (commas allowed).
fn figure(text: &str, label: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(label))?;
    let rest = line[label.len()..].trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == ',').filter(|c| *c != ',').collect();
    digits.parse().ok()
}

/// The demo's phases in a short run: a lying backup, a forging backup, a
/// wiped replica that fetches its state, the primary killed and replaced and
/// restarted; every result checked, none wrong.
#[test]
fn the_demo_shows_each_fault_and_no_result_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["demo", "--seconds", "6", "--dir"])
        .arg(dir.path().join("demo"))
        .stdin(Stdio::null())
        .output()
        .expect("the pbft binary runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let logs = common::logs(&dir.path().join("demo"));
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}\n{logs}");
    println!("{stdout}\ndemo took {:?}", started.elapsed());

    // Each phase happened, in order, and said so as it did. (Which replica
    // plays which part depends on the view each phase starts in.)
    let events = [
        "lies to clients",
        "forges",
        "restarted correct",
        "caught up",
        "killed, state directory deleted, restarted empty",
        "has its state",
        "caught up",
        "killed with SIGKILL",
        "installed: replica",
        "restarted from its state directory",
        "clients stopped",
    ];
    let mut at = 0;
    for e in events {
        let found = stdout[at..].find(e).unwrap_or_else(|| panic!("no {e:?} after byte {at}:\n{stdout}"));
        at += found;
    }
    for phase in 1..=8 {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("{phase}. "))), "phase {phase} missing:\n{stdout}");
    }

    // The summary.
    assert!(figure(&stdout, "operations:").is_some_and(|n| n > 100), "{stdout}");
    assert_eq!(figure(&stdout, "wrong results:"), Some(0), "{stdout}");
    assert!(figure(&stdout, "view changes:").is_some_and(|n| n >= 1), "{stdout}");
    assert!(figure(&stdout, "pages transferred:").is_some_and(|n| n > 0), "{stdout}");
    let pause = stdout.lines().find(|l| l.starts_with("longest pause:")).unwrap_or_default();
    assert!(pause.contains(" s, when "), "{stdout}");
}

/// `--quiet` is the short run scripts use: a checked workload, no faults.
#[test]
fn the_quiet_demo_is_a_short_checked_run() {
    let o = pbft(&["demo", "--quiet", "--ops", "200", "--clients", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("operations: 200 in "), "{stdout}");
    assert!(stdout.contains("results:    all 200 checked against a model of the service, none wrong"), "{stdout}");
    assert!(!stdout.contains("SIGKILL"), "{stdout}");
    let o = pbft(&["demo", "--ops", "10"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--quiet"), "{o:?}");
}

/// `pbft status` against a running cluster: healthy, then one replica down
/// (still serving, no failure to spare), then two (cannot serve, non-zero).
#[test]
fn status_judges_the_cluster_and_its_exit_code_says_if_it_can_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = keygen(dir.path(), 1);
    let config = path.to_str().expect("utf-8 path");
    let mut procs = start_replicas(&path, dir.path());
    let status = || {
        let o = pbft(&["status", "--config", config]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };

    let (code, out, err) = status();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("verdict: healthy: all 4 replicas serve in view 0"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("0 ") && l.contains("up, primary")), "{out}");
    for header in ["id", "address", "state", "view", "executed", "checkpoint", "transfer", "dropped (by reason)"] {
        assert!(out.lines().nth(1).is_some_and(|l| l.contains(header)), "no column {header:?}:\n{out}");
    }

    assert!(procs.kill("replica-3"));
    let (code, out, err) = status();
    assert_eq!(code, Some(0), "one replica down still serves: {out}{err}");
    assert!(out.lines().any(|l| l.starts_with("3 ") && l.contains("unreachable")), "{out}");
    assert!(out.contains("replica 3: metrics at 127.0.0.1:"), "{out}");
    assert!(
        out.contains(
            "verdict: degraded: replica 3 unreachable; 3 of 4 serve in view 0; one more failure stops the service"
        ),
        "{out}"
    );

    // Something else answers on replica 3's metrics port: garbage is shown
    // as what it is, without a panic.
    let cluster = pbft_node::Cluster::load(&path).expect("cluster");
    let junk = std::net::TcpListener::bind(common::metrics_addr(&cluster, 3)).expect("bind replica 3's metrics port");
    std::thread::spawn(move || {
        for mut stream in junk.incoming().flatten() {
            use std::io::{Read, Write};
            let _ = stream.read(&mut [0u8; 512]);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\n<html>not metrics</html>");
        }
    });
    let (code, out, err) = status();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("replica 3: metrics at 127.0.0.1:") && out.contains("not a replica's metrics"), "{out}");

    assert!(procs.kill("replica-2"));
    let (code, out, _) = status();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("verdict: cannot serve: 2 of 4 replicas serve, 3 (2f+1) needed"), "{out}");

    // Bad input: one line, non-zero, no panic.
    let o = pbft(&["status", "--config", "/nonexistent/cluster.toml"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.trim_end().lines().count() == 1 && err.contains("/nonexistent"), "{err}");
}

/// `--watch` redraws until interrupted.
#[test]
fn status_watch_refreshes_until_interrupted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = keygen(dir.path(), 1);
    let _procs = start_replicas(&path, dir.path());
    let child = Command::new(BIN)
        .args(["status", "--watch", "0.2", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill sends a signal to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().expect("wait");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.matches("verdict: healthy").count() >= 3, "{out}");
}

/// A private key file that its group or others can read is refused, by a
/// replica and by a client, with a one-line error that says how to fix it.
#[test]
fn a_key_others_can_read_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = keygen(dir.path(), 1);
    let config = path.to_str().expect("utf-8 path");
    for (key, args) in [
        ("replica-1.key", vec!["replica", "--config", config, "--id", "1"]),
        ("client-0.key", vec!["client", "--config", config, "--id", "0", "get", "k"]),
    ] {
        let key = dir.path().join(key);
        assert_eq!(std::fs::metadata(&key).expect("key").permissions().mode() & 0o777, 0o600, "keygen writes 0600");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let o = pbft(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} accepted a key others can read");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("permissions 0644 are too open"), "{err}");
        assert!(err.contains(&format!("chmod 600 {}", key.display())), "{err}");
    }
}
