//! The CPU cost of a state transfer in the protocol core alone: 3f+1 replicas
//! in one thread with a perfect in-memory network. The replicas' state is
//! filled through the protocol, then the last replica is replaced by an empty
//! one, which fetches every page. The time of each replica's calls is summed
//! apart, so the fetcher's cost and the sources' cost are seen without the
//! kernel, the other processes or the noise of a shared machine.
//!
//! ```text
//! cargo run --release -p pbft --example transfer_cost -- [MiB] [operations per 2,000 datagrams]
//! ```

mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant as WallClock};

use bytes::Bytes;
use pbft::service::{ExecContext, ReadContext, Service};
use pbft::state::PAGE_SIZE;
use pbft::{Client, ClientEffect, ClientId, ClientOutbox, Config, Dest, Effect, Instant, NodeId, Outbox, Replica, ReplicaId};

/// Pages written by one operation.
const PAGES_PER_OP: u64 = 16;
const CLIENTS: usize = 4;

/// A service whose operation `(first page u64, fill u8)` overwrites
/// `PAGES_PER_OP` pages with bytes that depend on the page and the fill.
struct Pages(u64);

impl Service for Pages {
    fn state_pages(&self) -> u64 {
        self.0
    }
    fn execute(&mut self, op: &[u8], ctx: &mut ExecContext<'_>) -> Vec<u8> {
        let Some((first, fill)) = op.get(..8).map(|b| (u64::from_le_bytes(b.try_into().expect("8 bytes")), op[8])) else {
            return b"bad op".to_vec();
        };
        for page in first..(first + PAGES_PER_OP).min(self.0) {
            let bytes: Vec<u8> = (0..PAGE_SIZE).map(|i| (page as u8).wrapping_mul(31).wrapping_add(fill ^ i as u8)).collect();
            if ctx.state.write(page * PAGE_SIZE as u64, &bytes).is_err() {
                return b"out of range".to_vec();
            }
        }
        Vec::new()
    }
    fn execute_read_only(&self, _op: &[u8], _ctx: &ReadContext<'_>) -> Option<Vec<u8>> {
        None
    }
}

/// Replicas, clients and an in-memory network (the replicas keep their own timers).
struct World {
    n: usize,
    replicas: Vec<Replica<Pages>>,
    clients: Vec<Client>,
    /// (destination, datagram); destinations >= n are clients.
    net: VecDeque<(usize, Bytes)>,
    now: u64,
    idle: Vec<usize>,
    /// Time spent in each replica's calls, and in its longest call.
    busy: Vec<Duration>,
    longest: Vec<Duration>,
    transferred: Option<u64>,
}

impl World {
    fn route(&mut self, from: Option<usize>, out: &mut Outbox) {
        for e in out.drain() {
            match e {
                Effect::Send { to: Dest::Replica(r), bytes } => self.net.push_back((r.index(), bytes)),
                Effect::Send { to: Dest::AllReplicas, bytes } => {
                    for j in (0..self.n).filter(|j| Some(*j) != from) {
                        self.net.push_back((j, bytes.clone()));
                    }
                }
                Effect::Send { to: Dest::Client(c), bytes } => self.net.push_back((self.n + c.0 as usize, bytes)),
                Effect::StateTransferred { pages, .. } => self.transferred = Some(pages),
                _ => {}
            }
        }
    }

    fn route_client(&mut self, client: usize, out: &mut ClientOutbox) {
        for e in out.drain() {
            match e {
                ClientEffect::Send { to, bytes } => self.net.push_back((to.index(), bytes)),
                ClientEffect::Completed { .. } => self.idle.push(client),
            }
        }
    }

    /// Delivers one datagram, or fires the earliest timer if none is in flight.
    fn step(&mut self) {
        let mut out = Outbox::new();
        match self.net.pop_front() {
            Some((to, bytes)) if to < self.n => {
                self.now += 1;
                let t = WallClock::now();
                self.replicas[to].on_datagram(Instant(self.now), bytes, &mut out);
                self.busy[to] += t.elapsed();
                self.longest[to] = self.longest[to].max(t.elapsed());
                self.route(Some(to), &mut out);
            }
            Some((to, bytes)) => {
                self.now += 1;
                let mut out = ClientOutbox::new();
                self.clients[to - self.n].on_datagram(Instant(self.now), bytes, &mut out);
                self.route_client(to - self.n, &mut out);
            }
            None => {
                let Some((r, at)) = self
                    .replicas
                    .iter()
                    .enumerate()
                    .filter_map(|(r, replica)| replica.poll_timeout().map(|at| (r, at.as_us())))
                    .min_by_key(|(_, at)| *at)
                else {
                    return;
                };
                self.now = self.now.max(at);
                let t = WallClock::now();
                self.replicas[r].handle_timeout(Instant(self.now), &mut out);
                self.busy[r] += t.elapsed();
                self.longest[r] = self.longest[r].max(t.elapsed());
                self.route(Some(r), &mut out);
            }
        }
    }

    /// Runs operations `op(0..count)` from the clients, each client one at a
    /// time, until all completed.
    fn run_ops(&mut self, count: u64, op: impl Fn(u64) -> Vec<u8>) {
        let mut next = 0;
        loop {
            for c in std::mem::take(&mut self.idle) {
                let mut out = ClientOutbox::new();
                if next < count && self.clients[c].submit(Instant(self.now), Bytes::from(op(next)), false, &mut out).is_ok() {
                    next += 1;
                    self.route_client(c, &mut out);
                } else {
                    self.idle.push(c);
                }
            }
            if next >= count && self.idle.len() == self.clients.len() {
                return;
            }
            self.step();
        }
    }
}

fn main() {
    let mib: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    // Operations run during the transfer every 2,000 datagrams: more make
    // checkpoints come faster, and the transfer retarget more often.
    let trickle: u64 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let pages = mib * 256;
    let mut cfg = Config::new(1);
    cfg.max_clients = CLIENTS as u32;
    cfg.checkpoint_interval = 16;
    cfg.log_window = 32;
    let n = cfg.n();
    let replica = |i: usize| {
        let me = NodeId::Replica(ReplicaId(i as u16));
        Replica::new(cfg.clone(), ReplicaId(i as u16), common::key_table(me, n, CLIENTS), Pages(pages))
            .expect("valid configuration")
    };
    let mut w = World {
        n,
        replicas: (0..n).map(replica).collect(),
        clients: (0..CLIENTS)
            .map(|c| {
                let me = NodeId::Client(ClientId(c as u32));
                Client::new(cfg.clone(), ClientId(c as u32), common::key_table(me, n, CLIENTS), 0)
            })
            .collect(),
        net: VecDeque::new(),
        now: 1,
        idle: (0..CLIENTS).collect(),
        busy: vec![Duration::ZERO; n],
        longest: vec![Duration::ZERO; n],
        transferred: None,
    };
    for r in 0..n {
        let mut out = Outbox::new();
        w.replicas[r].start(Instant(w.now), &mut out);
        w.route(Some(r), &mut out);
    }
    let t = WallClock::now();
    let ops = pages.div_ceil(PAGES_PER_OP);
    let op = |k: u64| {
        let mut b = (k * PAGES_PER_OP).to_le_bytes().to_vec();
        b.push(7);
        b
    };
    w.run_ops(ops + 64, |k| op(k % ops));
    eprintln!("filled {mib} MiB ({pages} pages) through the protocol in {:.1} s", t.elapsed().as_secs_f64());

    // The last replica loses everything and restarts.
    let last = n - 1;
    w.replicas[last] = replica(last);
    w.net.retain(|(to, _)| *to != last);
    w.busy = vec![Duration::ZERO; n];
    w.longest = vec![Duration::ZERO; n];
    let mut out = Outbox::new();
    w.replicas[last].start(Instant(w.now), &mut out);
    w.route(Some(last), &mut out);
    let t = WallClock::now();
    // A trickle of operations keeps checkpoints coming, as under a light load.
    let mut k = 0;
    while w.transferred.is_none() && t.elapsed() < Duration::from_secs(120) {
        w.run_ops(trickle, |_| op(k));
        k += 1;
        for _ in 0..2000 {
            if w.transferred.is_some() {
                break;
            }
            w.step();
        }
    }
    let wall = t.elapsed().as_secs_f64();
    let Some(fetched) = w.transferred else {
        eprintln!("no transfer completed");
        std::process::exit(1);
    };
    let fetcher = w.busy[last].as_secs_f64();
    let sources: f64 = w.busy[..last].iter().map(|d| d.as_secs_f64()).sum();
    let fetched_mib = fetched as f64 * PAGE_SIZE as f64 / (1 << 20) as f64;
    println!(
        "{fetched} pages ({fetched_mib:.1} MiB) fetched: fetcher {fetcher:.3} s of CPU ({:.2} us a page, {:.0} MiB/s), \
         sources {sources:.3} s in all ({:.2} us a page); {wall:.2} s wall in all; the fetcher's longest call \
         (installing the pages) {:.3} s; {} transfers started (retargets + 1)",
        fetcher * 1e6 / fetched as f64,
        fetched_mib / fetcher,
        sources * 1e6 / fetched as f64,
        w.longest[last].as_secs_f64(),
        w.replicas[last].metrics().state_transfers
    );
    // Not dropping a GiB of pages one by one keeps the end out of a profile.
    std::process::exit(0);
}
