//! `bfs bench andrew` as a user runs it, shortened: the five phases and
//! postmark (Debian's, a tool nobody here wrote) through the FUSE mount, on
//! BFS and on the unreplicated service, with the figures in the CSV.

mod common;

use std::process::Command;

use common::{installed_tool, serial};

#[test]
fn andrew_and_postmark_run_on_both_servers_and_land_in_the_csv() {
    let _serial = serial();
    if installed_tool("postmark", "apt-get install postmark").is_none() || installed_tool("cc", "apt-get install gcc").is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("andrew.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_bfs"))
        .args(["bench", "andrew", "--dirs", "2", "--files", "2", "--runs", "1", "--postmark"])
        .args(["--postmark-files", "30", "--postmark-transactions", "60", "--csv"])
        .arg(&csv)
        .output()
        .expect("bfs runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&csv).expect("csv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("server,mkdir_s,copy_s,stat_s,read_s,compile_s,total_s,postmark_s"));
    let rows: Vec<(String, Vec<f64>)> = lines
        .map(|l| {
            let mut f = l.split(',');
            let name = f.next().expect("server").to_string();
            (name, f.map(|v| v.parse().expect("seconds")).collect())
        })
        .collect();
    assert_eq!(rows.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["bfs", "no-replication"]);
    for (name, t) in &rows {
        assert_eq!(t.len(), 7, "{name}: {text}");
        // Every phase and postmark took time; the total is the phases' sum.
        assert!(t.iter().all(|s| *s > 0.0), "{name}: {text}");
        assert!((t[..5].iter().sum::<f64>() - t[5]).abs() < 0.01, "{name}: {text}");
    }
    assert!(dir.path().join("andrew.svg").is_file(), "the plot is drawn beside the CSV");
}
