//! Four replica hosts on threads of this process, over real UDP sockets on
//! loopback, serving key-value clients; with and without injected faults.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pbft_kv::{KvConfig, KvModel, KvOp, KvResult, KvService};
use pbft_node::keygen::{keygen, KeygenSpec};
use pbft_node::metrics::{sample_value, scrape, serve};
use pbft_node::{ClientOptions, Cluster, ClusterClient, FaultConfig, HostOptions, ReplicaHost};

struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn start(clients: u32, faults: FaultConfig) -> Running {
    start_polling(clients, faults, 0)
}

/// A cluster whose file sets `spin_us` (replicas and clients poll that long).
fn start_polling(clients: u32, faults: FaultConfig, spin_us: u64) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = KeygenSpec::local(4, clients);
    spec.protocol.spin_us = spin_us;
    spec.protocol.status_interval_ms = 20;
    spec.protocol.client_retransmit_ms = 50;
    spec.service.kv_pages = 256;
    let path = keygen(&spec, dir.path()).expect("keygen");
    let cluster = Cluster::load(&path).expect("load");
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for id in 0..4u16 {
        let keys = cluster.replica_keys(id, &cluster.default_replica_key_path(id)).expect("keys");
        let service = KvService::new(KvConfig { pages: cluster.file.service.kv_pages });
        let options = HostOptions { faults: FaultConfig { seed: id as u64, ..faults.clone() }, ..Default::default() };
        let mut host = ReplicaHost::new(&cluster, id, keys, service, &options).expect("host");
        if let Some(addr) = cluster.replicas[id as usize].metrics_addr {
            threads.push(serve(addr, host.snapshot(), stop.clone()).expect("metrics"));
        }
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || host.run(&stop).expect("replica runs")));
    }
    Running { stop, threads, _dir: dir, path }
}

/// Runs `ops` operations from client `id` on keys of its own, checking each
/// result against a model.
fn workload(path: PathBuf, id: u32, ops: usize, deadline: Instant) {
    let cluster = Cluster::load(&path).expect("load");
    let options = ClientOptions { timeout: Duration::from_secs(20), ..Default::default() };
    let mut client = ClusterClient::open(&cluster, id, &cluster.default_client_key_path(id), &options).expect("client");
    let mut model = KvModel::new();
    for i in 0..ops {
        assert!(Instant::now() < deadline, "client {id} out of time after {i} operations");
        let key = format!("c{id}-k{}", i % 7).into_bytes();
        let op = match i % 4 {
            0 => KvOp::Put { key, value: format!("v{i}").into_bytes() },
            1 => KvOp::Get { key },
            2 => KvOp::Cas { key, expected: Some(format!("v{}", i - 2).into_bytes()), new: Some(b"cas".to_vec()) },
            _ => KvOp::Delete { key },
        };
        let result = client.invoke(Bytes::from(op.encode()), op.is_read_only()).expect("operation completes");
        let got = KvResult::decode(&result).expect("result decodes");
        assert_eq!(got, model.apply(&op), "client {id} op {i}: {op:?}");
    }
}

fn run_clients(r: &Running, clients: u32, ops: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let path = r.path.clone();
            std::thread::spawn(move || workload(path, c, ops, deadline))
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
}

#[test]
fn serves_concurrent_clients_and_exports_metrics() {
    let r = start(3, FaultConfig::default());
    run_clients(&r, 3, 100);
    let cluster = Cluster::load(&r.path).expect("load");
    let metrics_addr = cluster.replicas[0].metrics_addr.expect("metrics address");
    // Metrics are published every 100 ms.
    std::thread::sleep(Duration::from_millis(250));
    let text = scrape(metrics_addr, Duration::from_secs(5)).expect("scrape");
    let executed = sample_value(&text, "pbft_requests_executed_total").expect("sample");
    assert!(executed >= 150.0, "{executed} requests executed:\n{text}");
    assert_eq!(sample_value(&text, "pbft_client_addresses"), Some(3.0));
    assert!(sample_value(&text, "pbft_request_latency_seconds_count").expect("histogram") > 0.0);
}

#[test]
fn polling_replicas_and_clients_give_the_same_results_and_do_poll() {
    let r = start_polling(2, FaultConfig::default(), 300);
    run_clients(&r, 2, 60);
    let cluster = Cluster::load(&r.path).expect("load");
    let metrics_addr = cluster.replicas[1].metrics_addr.expect("metrics address");
    std::thread::sleep(Duration::from_millis(250));
    let text = scrape(metrics_addr, Duration::from_secs(5)).expect("scrape");
    let value = |name: &str| sample_value(&text, name).expect(name);
    let (calls, datagrams) = (value("pbft_receive_calls_total"), value("pbft_datagrams_received_total"));
    // A sleeping replica makes about one call per turn, fewer than datagrams
    // (a turn takes all that have arrived); a polling one many more.
    assert!(calls > 2.0 * datagrams, "{calls} receive calls for {datagrams} datagrams: it did not poll");
}

#[test]
fn survives_dropped_and_duplicated_datagrams() {
    let faults = FaultConfig { drop: 0.05, duplicate: 0.05, ..Default::default() };
    let r = start(2, faults);
    run_clients(&r, 2, 100);
}

#[test]
fn a_group_of_clients_on_one_socket_each_gets_its_own_results() {
    use pbft::metrics::DropReason;
    use pbft_node::ClientGroup;
    // Faults on the replicas' replies too: duplicated and lost replies.
    let r = start(4, FaultConfig { drop: 0.03, duplicate: 0.1, ..Default::default() });
    let cluster = Cluster::load(&r.path).expect("load");
    let keys: Vec<PathBuf> = (0..4).map(|id| cluster.default_client_key_path(id)).collect();
    let members: Vec<(u32, &std::path::Path)> = (0..4u32).zip(keys.iter().map(|k| k.as_path())).collect();
    let options = ClientOptions { timeout: Duration::from_secs(20), ..Default::default() };
    let mut group = ClientGroup::open(&cluster, &members, &options).expect("group");
    assert_eq!(group.len(), 4);
    // Each member works on keys of its own, checked against its own model,
    // with the requests of all four outstanding at once.
    let op = |m: usize, i: usize| {
        let key = format!("m{m}-k{}", i % 5).into_bytes();
        match i % 3 {
            0 => KvOp::Put { key, value: format!("m{m}-v{i}").into_bytes() },
            1 => KvOp::Get { key },
            _ => KvOp::Delete { key },
        }
    };
    const OPS: usize = 60;
    let mut models: Vec<KvModel> = (0..4).map(|_| KvModel::new()).collect();
    let mut issued = [0usize; 4];
    let mut sent: Vec<Option<KvOp>> = vec![None; 4];
    let mut submit = |group: &mut ClientGroup, m: usize, sent: &mut Vec<Option<KvOp>>| {
        let o = op(m, issued[m]);
        group.submit(m, Bytes::from(o.encode()), o.is_read_only()).expect("submit");
        sent[m] = Some(o);
        issued[m] += 1;
        issued[m] < OPS
    };
    for m in 0..4 {
        submit(&mut group, m, &mut sent);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut done, mut completed) = (Vec::new(), 0);
    let mut more = [true; 4];
    while group.is_busy() {
        assert!(Instant::now() < deadline, "out of time after {completed} operations");
        group.wait(&mut done).expect("wait");
        for (m, outcome) in done.drain(..) {
            let o = sent[m].take().expect("a member completes only what it sent");
            let got = KvResult::decode(&outcome.expect("operation completes")).expect("result decodes");
            assert_eq!(got, models[m].apply(&o), "member {m}: {o:?}");
            completed += 1;
            if more[m] {
                more[m] = submit(&mut group, m, &mut sent);
            }
        }
    }
    assert_eq!(completed, 4 * OPS);
    // A reply for a request already certified never reaches a core: the
    // group drops it (and counts it) before its MAC is checked.
    for m in 0..4 {
        let metrics = group.metrics(m).expect("member");
        assert_eq!(metrics.dropped(DropReason::Unexpected), 0, "member {m}'s core saw a stale reply");
    }
    assert_eq!(group.stats().unroutable, 0);
    // The members' first requests, to every replica at once, shared
    // datagrams: four messages to each replica in one flush.
    let t = group.transport_stats();
    assert!(t.bundles_out >= 4 && t.bundled_messages_out >= 16, "{t:?}");
}
