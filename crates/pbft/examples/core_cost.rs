//! The CPU cost of the protocol core alone: n replicas and closed-loop clients in
//! one thread with a perfect in-memory network, so every microsecond measured is
//! spent in the core (codec, MACs, protocol, execution of a null service).
//!
//! ```text
//! cargo run --release -p pbft --example core_cost -- [f] [clients] [ops]
//! ```

mod common;

use std::collections::VecDeque;
use std::time::Instant as WallClock;

use bytes::Bytes;
use pbft::service::{ExecContext, ReadContext, Service};
use pbft::{Client, ClientEffect, ClientId, ClientOutbox, Config, Dest, Effect, Instant, NodeId, Outbox, Replica, ReplicaId};

/// A service that does nothing, as in the papers' 0/0 micro-benchmark.
struct Null;

impl Service for Null {
    fn state_pages(&self) -> u64 {
        1
    }
    fn execute(&mut self, _op: &[u8], _ctx: &mut ExecContext<'_>) -> Vec<u8> {
        Vec::new()
    }
    fn execute_read_only(&self, _op: &[u8], _ctx: &ReadContext<'_>) -> Option<Vec<u8>> {
        Some(Vec::new())
    }
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let f = *args.first().unwrap_or(&1) as usize;
    let clients = *args.get(1).unwrap_or(&16) as usize;
    let total_ops = *args.get(2).unwrap_or(&200_000);
    let mut cfg = Config::new(f);
    cfg.max_clients = clients as u32;
    let n = cfg.n();
    let mut replicas: Vec<Replica<Null>> = (0..n)
        .map(|i| {
            let me = NodeId::Replica(ReplicaId(i as u16));
            Replica::new(cfg.clone(), ReplicaId(i as u16), common::key_table(me, n, clients), Null)
                .expect("valid configuration")
        })
        .collect();
    let mut cls: Vec<Client> = (0..clients)
        .map(|c| {
            let me = NodeId::Client(ClientId(c as u32));
            Client::new(cfg.clone(), ClientId(c as u32), common::key_table(me, n, clients), 0)
        })
        .collect();

    // (destination, datagram); destinations >= n are clients.
    let mut net: VecDeque<(usize, Bytes)> = VecDeque::new();
    let mut now = 1u64;
    let mut done = 0u64;
    let mut datagrams = 0u64;
    let route = |from: Option<usize>, out: &mut Outbox, net: &mut VecDeque<(usize, Bytes)>| {
        for e in out.drain() {
            match e {
                Effect::Send { to: Dest::Replica(r), bytes } => net.push_back((r.index(), bytes)),
                Effect::Send { to: Dest::AllReplicas, bytes } => {
                    for j in (0..n).filter(|j| Some(*j) != from) {
                        net.push_back((j, bytes.clone()));
                    }
                }
                Effect::Send { to: Dest::Client(c), bytes } => net.push_back((n + c.0 as usize, bytes)),
                _ => {}
            }
        }
    };
    let route_client = |out: &mut ClientOutbox, net: &mut VecDeque<(usize, Bytes)>, done: &mut u64, idle: &mut Vec<usize>, me: usize| {
        for e in out.drain() {
            match e {
                ClientEffect::Send { to, bytes } => net.push_back((to.index(), bytes)),
                ClientEffect::Completed { .. } => {
                    *done += 1;
                    idle.push(me);
                }
            }
        }
    };
    let started = WallClock::now();
    let mut idle: Vec<usize> = (0..clients).collect();
    while done < total_ops {
        for c in std::mem::take(&mut idle) {
            let mut out = ClientOutbox::new();
            if cls[c].submit(Instant(now), Bytes::new(), false, &mut out).is_ok() {
                route_client(&mut out, &mut net, &mut done, &mut idle, c);
            }
        }
        let Some((to, bytes)) = net.pop_front() else { break };
        datagrams += 1;
        now += 1;
        if to < n {
            let mut out = Outbox::new();
            replicas[to].on_datagram(Instant(now), bytes, &mut out);
            route(Some(to), &mut out, &mut net);
        } else {
            let mut out = ClientOutbox::new();
            cls[to - n].on_datagram(Instant(now), bytes, &mut out);
            route_client(&mut out, &mut net, &mut done, &mut idle, to - n);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let batches: u64 = replicas[0].metrics().batches_executed;
    println!(
        "n={n} clients={clients}: {done} ops in {secs:.2}s of one core = {:.1} us of CPU per op for the whole cluster \
         ({:.1} us per replica), {:.0} datagrams per op, {:.1} requests per batch",
        secs * 1e6 / done as f64,
        secs * 1e6 / done as f64 / n as f64,
        datagrams as f64 / done as f64,
        done as f64 / batches.max(1) as f64
    );
}
