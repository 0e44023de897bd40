//! The core is deterministic by construction: no clock, socket, thread or
//! ambient randomness, and no hash map whose iteration order comes from a
//! randomly seeded hasher (STYLE.md rule 1). The simulator replays a seed bit
//! for bit only as long as this holds, so it is checked on the source itself.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            out.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn the_core_uses_no_clock_socket_thread_random_source_or_hash_map() {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let forbidden = [
        "HashMap",
        "HashSet",
        "RandomState",
        "Instant::now",
        "SystemTime",
        "UdpSocket",
        "std::thread",
        "thread_rng",
        "tokio",
    ];
    let mut found = Vec::new();
    for (path, text) in &files {
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden.iter().filter(|w| code.contains(**w)) {
                found.push(format!("{path}:{}: {word}", i + 1));
            }
        }
    }
    assert!(found.is_empty(), "the core must stay deterministic:\n{}", found.join("\n"));
}
