//! `pbft bench` as a user runs it, shortened: both configurations alternate,
//! and the counters that say where the time goes are really measured.

mod common;

use common::pbft;

#[test]
fn bench_alternates_configurations_and_counts_where_the_time_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("bench.csv");
    let out = pbft(&[
        "bench",
        "--rounds",
        "2",
        "--latency-ops",
        "50",
        "--seconds",
        "0.3",
        "--clients",
        "4",
        // Sleeping replicas: polling ones count every poll as a system call.
        "--spin-us",
        "0",
        "--csv",
        csv.to_str().expect("utf-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    // A build that checks invariants after every input says its figures are
    // not the library's (this one, a test build, does).
    assert_eq!(stderr.matches("checks every invariant after every input").count(), 2 * ::pbft::INVARIANTS_CHECKED as usize);
    // A B A B: the replicated cluster and the baseline alternate.
    let order: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("round ").and_then(|l| l.split(": ").next()))
        .collect();
    assert_eq!(order, ["0, replicated (n = 4)", "0, unreplicated", "1, replicated (n = 4)", "1, unreplicated"]);
    let text = std::fs::read_to_string(&csv).expect("csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let rows: Vec<Vec<f64>> =
        lines.map(|l| l.split(',').skip(1).map(|v| v.parse().expect("a number")).collect()).collect();
    assert_eq!(rows.len(), 5, "{text}");
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}")) - 1;
    for row in &rows {
        assert_eq!(row[col("rounds")], 2.0);
        assert!(row[col("p50_min")] <= row[col("p50_us")] && row[col("p50_us")] <= row[col("p50_max")], "{text}");
        assert!(row[col("ops_min")] <= row[col("ops_per_s")] && row[col("ops_per_s")] <= row[col("ops_max")], "{text}");
        assert!(row[col("cpu_us_per_op")] > 0.0 && row[col("client_cpu_us_per_op")] > 0.0, "{text}");
        assert!(row[col("switches_per_op")] > 0.0 && row[col("base_switches_per_op")] > 0.0, "{text}");
        // An operation on four replicas is many more datagrams than on one
        // (request, pre-prepare, prepares, commits, replies)...
        assert!(row[col("datagrams_per_op")] > 2.0 * row[col("base_datagrams_per_op")], "{text}");
        // A request and its reply at most: the bench's clients share one
        // socket, so requests to one replica, and replies, share datagrams.
        let base = row[col("base_datagrams_per_op")];
        assert!(base > 0.0 && base <= 2.1, "{text}");
        // ...but not as many system calls: a multicast is one sendmmsg, and a
        // turn receives what has arrived in one recvmmsg.
        assert!(row[col("syscalls_per_op")] > 0.0, "{text}");
    }
    // Read-write operations multicast (a prepare or commit is three
    // datagrams in one call); read-only ones do not, and a replica that
    // keeps up takes each request in a call of its own and sends its reply
    // in another: one call a datagram, at most, but for the rare wait that
    // times out.
    for (row, line) in rows.iter().zip(text.lines().skip(1)) {
        let (calls, datagrams) = (row[col("syscalls_per_op")], row[col("datagrams_per_op")]);
        if line.contains(" rw,") {
            assert!(calls < datagrams, "{text}");
        } else {
            assert!(calls <= 1.05 * datagrams, "{text}");
        }
    }
}
