//! A 4-replica cluster driven by hand with a perfect network: the normal case,
//! checkpoints and garbage collection, read-only requests, large requests,
//! retransmitted requests, and a tentative execution that a view change
//! undoes, checked message by message.

use std::collections::VecDeque;

use bytes::Bytes;
use pbft::auth::{public_key, KeyTable};
use pbft::service::{ExecContext, ReadContext, Service};
use pbft::{Client, ClientEffect, ClientId, ClientOutbox, Config, Dest, Effect, Instant, NodeId, Outbox, Replica, ReplicaId, SeqNo};

/// A counter: a read-write op adds its first byte; a read-only op returns the
/// value; the result is padded to the op's length so results can be large.
struct Counter;

impl Service for Counter {
    fn state_pages(&self) -> u64 {
        1
    }
    fn execute(&mut self, op: &[u8], ctx: &mut ExecContext<'_>) -> Vec<u8> {
        let mut b = [0u8; 8];
        ctx.state.read(0, &mut b).expect("in range");
        let v = u64::from_le_bytes(b) + op.first().copied().unwrap_or(1) as u64;
        ctx.state.write(0, &v.to_le_bytes()).expect("in range");
        v.to_le_bytes().to_vec()
    }
    fn execute_read_only(&self, _op: &[u8], ctx: &ReadContext<'_>) -> Option<Vec<u8>> {
        let mut b = [0u8; 8];
        ctx.state.read(0, &mut b).ok()?;
        Some(b.to_vec())
    }
}

struct Cluster {
    replicas: Vec<Replica<Counter>>,
    clients: Vec<Client>,
    /// (to, datagram); `to` is a replica index or, for clients, 1000 + id.
    net: VecDeque<(usize, Bytes)>,
    completed: Vec<(Bytes, bool)>,
    now: u64,
    /// Replicas that receive nothing (crashed).
    down: Vec<usize>,
}

fn secret(node: NodeId) -> [u8; 32] {
    match node {
        NodeId::Replica(r) => [r.0 as u8 + 1; 32],
        NodeId::Client(c) => [c.0 as u8 + 101; 32],
    }
}

impl Cluster {
    fn new(cfg: Config, clients: usize) -> Cluster {
        let n = cfg.n();
        let rp: Vec<_> = (0..n).map(|i| public_key(&secret(NodeId::Replica(ReplicaId(i as u16))))).collect();
        let cp: Vec<_> = (0..clients).map(|c| public_key(&secret(NodeId::Client(ClientId(c as u32))))).collect();
        let mut c = Cluster { replicas: Vec::new(), clients: Vec::new(), net: VecDeque::new(), completed: Vec::new(), now: 1_000, down: Vec::new() };
        for i in 0..n {
            let me = NodeId::Replica(ReplicaId(i as u16));
            let keys = KeyTable::from_static_dh(me, &secret(me), &rp, &cp);
            c.replicas.push(Replica::new(cfg.clone(), ReplicaId(i as u16), keys, Counter).expect("valid"));
        }
        for id in 0..clients {
            let me = NodeId::Client(ClientId(id as u32));
            let keys = KeyTable::from_static_dh(me, &secret(me), &rp, &[]);
            c.clients.push(Client::new(cfg.clone(), ClientId(id as u32), keys, 0));
        }
        // Arm the replicas' own timers (and their first STATUS).
        for i in 0..n {
            let mut out = Outbox::new();
            c.replicas[i].start(Instant(c.now), &mut out);
            c.route(Some(i), &mut out);
        }
        c.run();
        c
    }

    fn route(&mut self, from_replica: Option<usize>, out: &mut Outbox) {
        for e in out.drain() {
            match e {
                Effect::Send { to: Dest::Replica(r), bytes } => self.net.push_back((r.index(), bytes)),
                Effect::Send { to: Dest::AllReplicas, bytes } => {
                    for j in 0..self.replicas.len() {
                        if Some(j) != from_replica {
                            self.net.push_back((j, bytes.clone()));
                        }
                    }
                }
                Effect::Send { to: Dest::Client(c), bytes } => self.net.push_back((1000 + c.0 as usize, bytes)),
                _ => {}
            }
        }
    }

    fn route_client(&mut self, out: &mut ClientOutbox) {
        for e in out.drain() {
            match e {
                ClientEffect::Send { to, bytes } => self.net.push_back((to.index(), bytes)),
                ClientEffect::Completed { result, read_only, .. } => self.completed.push((result, read_only)),
            }
        }
    }

    fn submit(&mut self, c: usize, op: &[u8], read_only: bool) {
        let mut out = ClientOutbox::new();
        self.clients[c].submit(Instant(self.now), Bytes::copy_from_slice(op), read_only, &mut out).expect("idle client");
        self.route_client(&mut out);
    }

    /// Delivers everything until the network is quiet.
    fn run(&mut self) {
        while let Some((to, bytes)) = self.net.pop_front() {
            self.deliver(to, bytes);
        }
    }

    /// Delivers one datagram (nothing to a replica that is down) and queues
    /// what its receiver sends.
    fn deliver(&mut self, to: usize, bytes: Bytes) {
        self.now += 10;
        if to >= 1000 {
            let mut out = ClientOutbox::new();
            self.clients[to - 1000].on_datagram(Instant(self.now), bytes, &mut out);
            self.route_client(&mut out);
        } else if !self.down.contains(&to) {
            let mut out = Outbox::new();
            self.replicas[to].on_datagram(Instant(self.now), bytes, &mut out);
            self.route(Some(to), &mut out);
        }
    }

    /// Lets time pass to each replica's next STATUS (its own timer) and delivers what follows.
    fn fire_status(&mut self) {
        for i in 0..self.replicas.len() {
            if self.down.contains(&i) {
                continue;
            }
            let mut out = Outbox::new();
            self.now += 200_000;
            assert!(self.replicas[i].poll_timeout().is_some_and(|at| at.as_us() <= self.now), "the status timer is due");
            self.replicas[i].handle_timeout(Instant(self.now), &mut out);
            self.route(Some(i), &mut out);
        }
        self.run();
    }
}

fn value(b: &Bytes) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

#[test]
fn normal_case_executes_in_order_and_checkpoints_collect_garbage() {
    let mut cfg = Config::new(1);
    cfg.max_clients = 2;
    cfg.checkpoint_interval = 4;
    cfg.log_window = 8;
    let mut c = Cluster::new(cfg, 1);
    for i in 1..=20u64 {
        c.submit(0, &[1], false);
        c.run();
        assert_eq!(c.completed.len() as u64, i, "request {i} completed");
        assert_eq!(value(&c.completed.last().expect("completed").0), i);
    }
    for r in &c.replicas {
        assert_eq!(r.last_executed(), SeqNo(20));
        // The checkpoint at 20 is stable everywhere once the last CHECKPOINT arrived.
        assert_eq!(r.low_water_mark(), SeqNo(20));
        assert_eq!(r.log_len(), 0, "log truncated at the stable checkpoint");
        assert_eq!(r.state().checkpoints().len(), 1, "older checkpoints discarded");
    }
    let digests: Vec<_> = c.replicas.iter().map(|r| r.state().checkpoint_digest(SeqNo(20))).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1] && w[0].is_some()));
}

#[test]
fn read_only_requests_take_one_round_trip() {
    let mut cfg = Config::new(1);
    cfg.max_clients = 1;
    let mut c = Cluster::new(cfg, 1);
    c.submit(0, &[5], false);
    c.run();
    let executed_before: u64 = c.replicas.iter().map(|r| r.metrics().requests_executed).sum();
    c.submit(0, &[0], true);
    c.run();
    let (result, read_only) = c.completed.last().expect("completed").clone();
    assert!(read_only, "answered by the read-only path");
    assert_eq!(value(&result), 5);
    let executed_after: u64 = c.replicas.iter().map(|r| r.metrics().requests_executed).sum();
    assert_eq!(executed_before, executed_after, "nothing was ordered");
    assert_eq!(c.replicas.iter().map(|r| r.metrics().read_only_executed).sum::<u64>(), 4);
}

#[test]
fn large_requests_are_named_by_digest_and_fetched_when_missing() {
    let mut cfg = Config::new(1);
    cfg.max_clients = 1;
    let mut c = Cluster::new(cfg, 1);
    let op = vec![3u8; 2_000];
    c.submit(0, &op, false);
    // Lose the client's copy to replica 2: it must fetch the body via STATUS.
    c.net.retain(|(to, _)| *to != 2);
    c.run();
    assert_eq!(c.completed.len(), 1, "2f+1 replicas suffice");
    c.fire_status();
    c.fire_status();
    assert_eq!(c.replicas[2].last_executed(), SeqNo(1), "replica 2 fetched the body and executed");
}

#[test]
fn small_results_come_in_full_from_every_replica() {
    let mut cfg = Config::new(1);
    cfg.max_clients = 1;
    let mut c = Cluster::new(cfg, 1);
    // Replica 3 is the designated replier of timestamp 3, and down: the
    // others' replies carry the (small) result itself, so the client needs
    // nothing more from anyone.
    c.down = vec![3];
    for _ in 1..=3 {
        c.submit(0, &[1], false);
        c.run();
    }
    assert_eq!(c.completed.len(), 3);
    assert_eq!(c.clients[0].metrics().retransmitted, 0, "no request had to be sent again");
}

#[test]
fn a_crashed_backup_catches_up_from_status_and_duplicates_get_the_cached_reply() {
    let mut cfg = Config::new(1);
    cfg.max_clients = 1;
    // Digest replies for every result, however small.
    cfg.digest_reply_threshold = 0;
    let mut c = Cluster::new(cfg, 1);
    c.down = vec![3];
    for i in 1..=3 {
        c.submit(0, &[1], false);
        c.run();
        if i == 3 {
            // Timestamp 3 names replica 3, which is down, as the replier: the
            // others sent digests, a certificate without the full result, so
            // the client asked everyone for it at once, without waiting for
            // its retransmission timer.
            assert_eq!(c.completed.len(), 3);
            assert_eq!(c.clients[0].metrics().retransmitted, 1);
        }
    }
    assert_eq!(c.completed.len(), 3);
    assert_eq!(c.replicas[3].last_executed(), SeqNo(0));
    c.down.clear();
    c.fire_status();
    c.fire_status();
    assert_eq!(c.replicas[3].last_executed(), SeqNo(3), "caught up from retransmissions");
    // A replay of an executed request is answered from the reply table, not executed again.
    let executed: u64 = c.replicas.iter().map(|r| r.metrics().requests_executed).sum();
    let mut out = ClientOutbox::new();
    c.clients[0].submit(Instant(c.now), Bytes::from_static(&[1]), false, &mut out).expect("idle");
    let req = out.effects.iter().find_map(|e| match e {
        ClientEffect::Send { bytes, .. } => Some(bytes.clone()),
        _ => None,
    });
    c.route_client(&mut out);
    c.run();
    let req = req.expect("request sent");
    for r in 0..4 {
        c.net.push_back((r, req.clone()));
    }
    c.run();
    let executed_after: u64 = c.replicas.iter().map(|r| r.metrics().requests_executed).sum();
    assert_eq!(executed_after, executed + 4, "the new request once per replica, the replay never");
    assert!(c.replicas.iter().map(|r| r.metrics().replies_resent).sum::<u64>() >= 4);
}

impl Cluster {
    /// Delivers until the network is quiet, dropping what `keep` refuses
    /// (given the destination and the message's kind).
    fn run_filtered(&mut self, keep: impl Fn(usize, Option<pbft::wire::Kind>) -> bool) {
        self.run_holding(&|to, bytes: &Bytes| !keep(to, pbft::wire::claimed_kind(bytes)));
    }

    /// Lets `us` of time pass, firing every timer that falls due (replicas
    /// that are up, and clients), and delivers what follows, dropping what
    /// `keep` refuses (as `run_filtered`).
    fn advance(&mut self, us: u64, keep: impl Fn(usize, Option<pbft::wire::Kind>) -> bool) {
        let end = self.now + us;
        while self.now < end {
            self.now += 10_000;
            for i in 0..self.replicas.len() {
                if self.down.contains(&i) || self.replicas[i].poll_timeout().is_none_or(|at| at.as_us() > self.now) {
                    continue;
                }
                let mut out = Outbox::new();
                self.replicas[i].handle_timeout(Instant(self.now), &mut out);
                self.route(Some(i), &mut out);
            }
            for c in 0..self.clients.len() {
                if self.clients[c].poll_timeout().is_some_and(|at| at.as_us() <= self.now) {
                    let mut out = ClientOutbox::new();
                    self.clients[c].handle_timeout(Instant(self.now), &mut out);
                    self.route_client(&mut out);
                }
            }
            self.run_filtered(&keep);
        }
    }
}

/// A backup that executed a batch tentatively (it prepared; nobody else
/// did) undoes it when the new view puts nothing at that sequence number:
/// its state goes back to before the batch, and the request, executed again
/// in the new view, counts once at every replica.
#[test]
fn a_tentative_batch_the_new_view_drops_is_undone() {
    use pbft::wire::Kind;
    let mut cfg = Config::new(1);
    cfg.max_clients = 1;
    let mut c = Cluster::new(cfg, 1);
    c.submit(0, &[5], false);
    // Only replica 3 gets the prepares, and no commit reaches anyone.
    c.run_filtered(|to: usize, kind: Option<Kind>| match kind {
        Some(Kind::Prepare) => to == 3,
        Some(Kind::Commit) => false,
        _ => true,
    });
    assert_eq!(c.replicas[3].last_executed(), SeqNo(1), "replica 3 executed the batch tentatively");
    for r in 0..3 {
        assert_eq!(c.replicas[r].last_executed(), SeqNo(0), "replica {r} did not prepare");
    }
    assert!(c.completed.is_empty(), "one tentative reply is not a certificate");
    // Replica 3 is cut off, and the others cannot prepare the batch (their
    // prepares and commits are lost) until they change view: their
    // VIEW-CHANGEs report the batch pre-prepared, never prepared, so the new
    // view puts a null batch at sequence number 1.
    c.down = vec![3];
    let mut waited = 0;
    while !(0..3).all(|r| c.replicas[r].view().0 >= 1 && c.replicas[r].view_active()) {
        assert!(waited < 20, "no new view after {waited} s");
        c.advance(1_000_000, |_, kind| !matches!(kind, Some(Kind::Prepare | Kind::Commit)));
        waited += 1;
    }
    // Back, replica 3 learns of the new view and undoes its tentative batch;
    // still nobody prepares anything, so every state is as before the batch.
    c.down.clear();
    let mut waited = 0;
    while !(c.replicas[3].view() == c.replicas[0].view() && c.replicas[3].view_active()) {
        assert!(waited < 20, "replica 3 not in the new view after {waited} s");
        c.advance(1_000_000, |_, kind| !matches!(kind, Some(Kind::Prepare | Kind::Commit)));
        waited += 1;
    }
    assert_eq!(c.replicas[3].metrics().rollbacks, 1, "replica 3 undid the tentative batch");
    assert_eq!(c.replicas[3].last_executed(), SeqNo(0));
    same_state(&c, "after the undo");
    // Then the request runs in the new view.
    c.advance(3_000_000, |_, _| true);
    assert_eq!(c.completed.len(), 1, "the client's request completed in the new view");
    assert_eq!(value(&c.completed[0].0), 5, "executed once: the undone execution left no trace");
    let last = c.replicas[0].last_executed();
    for r in 0..4 {
        assert_eq!(c.replicas[r].last_executed(), last, "replica {r}");
        assert_eq!(c.replicas[r].view(), c.replicas[0].view(), "replica {r}");
    }
    same_state(&c, "at the end");
}

/// Every replica's pages are the same (service state and reply table).
fn same_state(c: &Cluster, when: &str) {
    let pages = c.replicas[0].state().num_pages();
    for p in 0..pages {
        let first = c.replicas[0].state().page(p).expect("page");
        for r in 1..c.replicas.len() {
            assert!(c.replicas[r].state().page(p).expect("page") == first, "{when}: page {p} of replica {r} differs from replica 0's");
        }
    }
}

impl Cluster {
    /// Delivers until the network is quiet, holding back what `hold` picks
    /// (given the destination and the datagram), which it returns.
    fn run_holding(&mut self, hold: &impl Fn(usize, &Bytes) -> bool) -> Vec<(usize, Bytes)> {
        let mut held = Vec::new();
        while let Some((to, bytes)) = self.net.pop_front() {
            if hold(to, &bytes) {
                held.push((to, bytes));
            } else {
                self.deliver(to, bytes);
            }
        }
        held
    }

    /// One client operation, run to completion, holding back what `hold` picks.
    fn op_holding(&mut self, hold: &impl Fn(usize, &Bytes) -> bool) -> Vec<(usize, Bytes)> {
        let before = self.completed.len();
        self.submit(0, &[1], false);
        let held = self.run_holding(hold);
        assert_eq!(self.completed.len(), before + 1, "the operation completed");
        held
    }
}

/// Holds back the FETCHes replica 3 sends that `held` picks.
fn holding_fetches(held: impl Fn(&pbft::wire::Fetch) -> bool) -> impl Fn(usize, &Bytes) -> bool {
    use pbft::wire::{decode, Kind, Message};
    move |to: usize, bytes: &Bytes| {
        to != 3
            && pbft::wire::claimed_kind(bytes) == Some(Kind::Fetch)
            && matches!(decode(bytes.clone(), usize::MAX).map(|e| e.message), Ok(Message::Fetch(f)) if held(&f))
    }
}

/// Replica 3 falls three checkpoints behind and starts fetching checkpoint
/// 16; the FETCHes `hold` picks are held back while the others go on to
/// checkpoint 20 and discard 16. Returns the cluster and those FETCHes.
fn fetching_a_discarded_target(hold: &impl Fn(usize, &Bytes) -> bool) -> (Cluster, Vec<(usize, Bytes)>) {
    let mut cfg = Config::new(1);
    cfg.max_clients = 1;
    cfg.checkpoint_interval = 4;
    cfg.log_window = 8;
    let mut c = Cluster::new(cfg, 1);
    c.down = vec![3];
    for _ in 0..12 {
        c.op_holding(&|_, _| false);
    }
    c.down.clear();
    // Back, replica 3 hears of the next checkpoint, far beyond its window,
    // and starts fetching it.
    let mut fetches = Vec::new();
    for _ in 0..4 {
        fetches.extend(c.op_holding(hold));
    }
    assert_eq!(c.replicas[0].last_executed(), SeqNo(16));
    assert_eq!(c.replicas[3].metrics().state_transfers, 1, "replica 3 is fetching checkpoint 16");
    assert!(!fetches.is_empty(), "FETCHes held back");
    for _ in 0..4 {
        fetches.extend(c.op_holding(hold));
    }
    assert_eq!(c.replicas[0].last_executed(), SeqNo(20));
    assert_eq!(c.replicas[0].state().checkpoints().first().map(|(s, _)| *s), Some(SeqNo(20)), "checkpoint 16 is gone");
    assert!(c.replicas[3].last_executed() < SeqNo(20));
    (c, fetches)
}

/// When the held FETCHes arrive, the answers come from checkpoint 20:
/// replica 3 learns from them that its target is gone and fetches 20
/// instead at once, with no timer firing (before, it waited for a status
/// tick to find them overdue).
fn transfer_whose_target_is_discarded(held: impl Fn(&pbft::wire::Fetch) -> bool) {
    let (mut c, fetches) = fetching_a_discarded_target(&holding_fetches(held));
    c.net.extend(fetches);
    c.run();
    assert_eq!(c.replicas[3].last_executed(), SeqNo(20), "replica 3 transferred checkpoint 20");
    assert_eq!(c.replicas[3].metrics().state_transfers, 2, "one retarget");
    same_state(&c, "after the transfer");
}

/// The tree's root, asked of a source that has discarded the target.
#[test]
fn a_transfer_whose_target_is_discarded_moves_on_from_a_node_answer() {
    transfer_whose_target_is_discarded(|_| true);
}

/// The pages, asked for after the tree was walked, of sources that have
/// discarded the target since.
#[test]
fn a_transfer_whose_target_is_discarded_moves_on_from_a_page_answer() {
    let depth = pbft::state::TreeShape::default().depth;
    transfer_whose_target_is_discarded(|f| f.level == depth);
}

/// A transfer moves on between status ticks once an interval at most: when
/// the new target is discarded too before the next tick, the tick moves it
/// on, so that fast checkpoints (or a source that lies about having moved
/// on) cannot make it walk the tree again for every checkpoint.
#[test]
fn a_transfer_moves_on_between_ticks_once_an_interval() {
    let hold = holding_fetches(|_| true);
    let (mut c, fetches) = fetching_a_discarded_target(&hold);
    for (to, bytes) in fetches {
        c.deliver(to, bytes);
    }
    let mut fetches = c.run_holding(&hold);
    assert_eq!(c.replicas[3].metrics().state_transfers, 2, "moved on to checkpoint 20 at once");
    assert!(!fetches.is_empty(), "FETCHes for checkpoint 20 held back");
    for _ in 0..4 {
        fetches.extend(c.op_holding(&hold));
    }
    assert_eq!(c.replicas[0].state().checkpoints().first().map(|(s, _)| *s), Some(SeqNo(24)), "checkpoint 20 is gone");
    c.net.extend(fetches);
    c.run();
    assert_eq!(c.replicas[3].metrics().state_transfers, 2, "no second move in the same interval");
    assert!(c.replicas[3].last_executed() < SeqNo(24));
    // The next status tick moves it on to 24.
    let mut waited = 0;
    while c.replicas[3].last_executed() < SeqNo(24) {
        assert!(waited < 5, "replica 3 has not transferred checkpoint 24 after {waited} status intervals");
        c.advance(100_000, |_, _| true);
        waited += 1;
    }
    assert_eq!(c.replicas[3].metrics().state_transfers, 3);
    same_state(&c, "after the transfer");
}
