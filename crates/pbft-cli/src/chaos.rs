//! `pbft chaos`: replicas killed with SIGKILL and restarted from their state
//! directories, one at a time and the primary often, under load from clients
//! that share a few keys; then the checks a user would make.
//!
//! - Every client operation is recorded (invoked, completed, result), and the
//!   history, with a final read of every key by a fresh client, must be
//!   linearizable against the key-value model (`pbft_kv::linearizability`):
//!   no acknowledged write is lost, no read sees a forked history.
//! - After the last restart the replicas converge: one view, installed
//!   everywhere, and one last executed sequence number, within seconds.
//!
//! Never more than one replica is down at a time. Exit status non-zero when a
//! check fails.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use bytes::Bytes;
use clap::Args;
use pbft_kv::linearizability::{check, OpRecord};
use pbft_kv::{KvOp, KvResult};
use pbft_node::journal::Durability;
use pbft_node::keygen::KeygenSpec;

use crate::local::{open_client, start_with};

#[derive(Args)]
pub struct ChaosArgs {
    /// Seconds of faults under load (then the checks).
    #[arg(long, default_value_t = 600.0)]
    seconds: f64,
    /// Seed of the fault schedule and of the clients' operations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Clients, all on the same keys.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Keys the clients share.
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// What the replicas make durable before they speak (none, process, power).
    #[arg(long, default_value = "process", value_parser = |s: &str| s.parse::<Durability>())]
    durability: Durability,
}

/// xorshift64: the schedule depends on the seed only.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// How long a client waits for one operation: far longer than any restart,
/// so that an operation is abandoned only if the service is really stuck.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the replicas get to agree once the faults stop.
const CONVERGE: Duration = Duration::from_secs(20);

pub fn run(a: ChaosArgs) -> Result<ExitCode> {
    ensure!(a.seconds > 0.0 && a.seconds <= 86_400.0, "--seconds must be in (0, 86400]");
    ensure!((1..=64).contains(&a.clients) && (1..=64).contains(&a.keys), "--clients and --keys must be in 1..=64");
    let mut spec = KeygenSpec::local(4, a.clients + 1);
    spec.protocol.durability = a.durability;
    let mut run = start_with(&spec, "info", |_, _| {})?;
    eprintln!("chaos: 4 replicas in {}, {} clients on {} keys, {} s", run.dir.display(), a.clients, a.keys, a.seconds);
    let epoch = Instant::now();
    let now_us = move || epoch.elapsed().as_micros() as u64;
    let history: Arc<Mutex<Vec<OpRecord>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let key = |k: u64| format!("k{k}").into_bytes();
    let workers: Vec<_> = (0..a.clients)
        .map(|id| {
            let (path, history, stop, keys, seed) = (run.path.clone(), history.clone(), stop.clone(), a.keys as u64, a.seed);
            std::thread::spawn(move || -> Result<()> {
                let mut client = open_client(&path, id)?;
                client.set_timeout(OP_TIMEOUT);
                let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (u64::from(id) + 1) | 1);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = key(rng.below(keys));
                    let value = format!("c{id}-{i}").into_bytes();
                    let op = match rng.below(4) {
                        0 => KvOp::Get { key: k },
                        1 => KvOp::Put { key: k, value },
                        2 => KvOp::Cas { key: k.clone(), expected: Some(format!("c{id}-{}", i.saturating_sub(1)).into_bytes()), new: Some(value) },
                        _ => KvOp::Delete { key: k },
                    };
                    let slot = {
                        let mut h = history.lock().expect("history");
                        h.push(OpRecord { client: id as usize, op: op.clone(), invoke_us: now_us(), complete: None });
                        h.len() - 1
                    };
                    match client.invoke(Bytes::from(op.encode()), op.is_read_only()) {
                        Ok(bytes) => {
                            let result = KvResult::decode(&bytes).map_err(|e| anyhow::anyhow!("client {id}: undecodable result: {e:?}"))?;
                            history.lock().expect("history")[slot].complete = Some((now_us(), result));
                        }
                        // Left outstanding in the history (it may or may not
                        // have taken effect); this client stops, as one
                        // operation at a time is what the checker assumes.
                        Err(e) => anyhow::bail!("client {id}: operation {i} not answered within {OP_TIMEOUT:?}: {e}"),
                    }
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();

    let mut rng = Rng(a.seed | 1);
    let mut kills = 0u32;
    let mut primary_kills = 0u32;
    while epoch.elapsed().as_secs_f64() < a.seconds && !workers.iter().any(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(500 + rng.below(2000)));
        // The primary half the time, as the replicas see it.
        let view = (0..4).filter_map(|id| run.read(id)).map(|r| r.view).max().unwrap_or(0);
        let victim = if rng.below(2) == 0 { (view % 4) as u16 } else { rng.below(4) as u16 };
        primary_kills += u32::from(u64::from(victim) == view % 4);
        run.kill(victim)?;
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng.below(1000)));
        run.restart(victim, "info", |_, _| {})?;
    }
    stop.store(true, Ordering::Relaxed);
    let mut client_errors = Vec::new();
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => client_errors.push(e.to_string()),
            Err(_) => client_errors.push("a client thread panicked".into()),
        }
    }

    // The replicas converge once the faults stop.
    let converged_at = Instant::now();
    let state = |id| -> Option<(u64, u64)> {
        let r = run.read(id)?;
        r.view_active.then_some((r.view, r.last_executed))
    };
    let mut converged = None;
    while converged_at.elapsed() < CONVERGE {
        let states: Vec<Option<(u64, u64)>> = (0..4).map(state).collect();
        if states.iter().all(|s| s.is_some() && *s == states[0]) {
            converged = states[0];
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let converge_time = converged_at.elapsed();

    // A fresh client reads every key: what the history's last writes left.
    let reader = a.clients;
    let mut client = open_client(&run.path, reader)?;
    client.set_timeout(OP_TIMEOUT);
    for k in 0..a.keys as u64 {
        let op = KvOp::Get { key: key(k) };
        let invoke_us = now_us();
        let bytes = client.invoke(Bytes::from(op.encode()), true)?;
        let result = KvResult::decode(&bytes).map_err(|e| anyhow::anyhow!("reader: undecodable result: {e:?}"))?;
        history.lock().expect("history").push(OpRecord { client: reader as usize, op, invoke_us, complete: Some((now_us(), result)) });
    }
    let history: Vec<OpRecord> = history.lock().expect("history").clone();
    let completed = history.iter().filter(|o| o.complete.is_some()).count();
    // Every operation touches one key, and linearizability is local
    // (Herlihy and Wing): the history is linearizable if each key's is, and
    // each key's is a third of the search. The search recurses once per
    // operation: a long run needs a deep stack.
    let verdict = std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || -> Result<(), String> {
            let mut keys: Vec<Vec<u8>> = history.iter().filter_map(|o| single_key(&o.op)).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let one: Vec<OpRecord> = history.iter().filter(|o| single_key(&o.op).as_ref() == Some(&k)).cloned().collect();
                check(&one).map_err(|e| format!("key {}: {e}", String::from_utf8_lossy(&k)))?;
            }
            Ok(())
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the linearizability check panicked"))?;
    println!(
        "chaos: {:.0} s, {kills} replicas killed with SIGKILL and restarted ({primary_kills} of them the primary), {completed} operations completed",
        epoch.elapsed().as_secs_f64()
    );
    // How long each restart took to read its state and replay its durable
    // log, from the replicas' own log lines.
    let mut restarts: Vec<(u64, u64)> = Vec::new();
    for id in 0..4 {
        let text = std::fs::read_to_string(run.log_path(id)).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("its durable log")) {
            let field = |name: &str| -> Option<u64> {
                line.split_whitespace().find_map(|w| w.strip_prefix(name)?.parse().ok())
            };
            if let (Some(records), Some(ms)) = (field("records="), field("ms=")) {
                restarts.push((ms, records));
            }
        }
    }
    restarts.sort();
    if let (Some(median), Some(max)) = (restarts.get(restarts.len() / 2), restarts.last()) {
        let most = restarts.iter().map(|(_, r)| *r).max().unwrap_or(0);
        println!(
            "restarts: {} from disk, median {} ms, slowest {} ms ({} records); at most {most} records replayed",
            restarts.len(),
            median.0,
            max.0,
            max.1
        );
    }
    match converged {
        Some((view, seq)) => println!("converged {converge_time:.1?} after the faults stopped: view {view}, last executed {seq}"),
        None => println!("did not converge within {CONVERGE:?}"),
    }
    match &verdict {
        Ok(()) => println!("linearizable: every acknowledged write is in the final reads, no history forked"),
        Err(e) => println!("NOT linearizable: {e}"),
    }
    for e in &client_errors {
        println!("client error: {e}");
    }
    let ok = verdict.is_ok() && converged.is_some() && client_errors.is_empty();
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The key an operation reads or writes (all of the chaos clients' do one).
fn single_key(op: &KvOp) -> Option<Vec<u8>> {
    match op {
        KvOp::Get { key } | KvOp::Put { key, .. } | KvOp::Cas { key, .. } | KvOp::Delete { key } => Some(key.clone()),
        _ => None,
    }
}
