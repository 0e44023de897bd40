//! Prometheus metrics of a replica, served over HTTP.
//!
//! The replica's thread publishes a [`ReplicaSnapshot`] every so often into a
//! shared slot; a small HTTP/1.0 responder on a thread of its own renders the
//! latest snapshot in the Prometheus text format for any `GET` request. The
//! replica's thread never waits for a scrape.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pbft::metrics::{DropReason, Metrics};

use crate::error::NodeError;
use crate::faults::FaultStats;
use crate::transport::TransportStats;

/// A histogram with fixed bucket bounds (upper bounds, inclusive).
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, plus one for +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Bounds of request latency, in seconds.
pub const LATENCY_BOUNDS_S: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Bounds of batch sizes, in requests.
pub const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

impl Histogram {
    /// An empty histogram with these bucket bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    /// Records one value.
    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c;
            let le = self.bounds.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {}", self.sum, self.count);
    }
}

/// Everything a replica exports, as of one moment.
#[derive(Clone, Debug)]
pub struct ReplicaSnapshot {
    pub replica: u16,
    pub core: Metrics,
    pub view: u64,
    pub last_executed: u64,
    pub low_water_mark: u64,
    pub log_entries: usize,
    pub request_queue: usize,
    pub known_requests: usize,
    pub read_only_queue: usize,
    pub transferring: bool,
    pub transport: TransportStats,
    pub faults: Option<FaultStats>,
    /// Replies not sent because the client's address was not yet known.
    pub replies_without_address: u64,
    /// Clients whose address is known.
    pub client_addresses: usize,
    /// Whether the view is installed (0 during a view change).
    pub view_active: bool,
    /// Clients with a cached reply in the replicated reply table.
    pub reply_cache_entries: usize,
    /// Pages written to the state directory at stable checkpoints.
    pub saved_pages: u64,
    /// Requests per executed batch.
    pub batch_size: Histogram,
    /// From a request's arrival at this replica to its execution here.
    pub request_latency: Histogram,
}

impl ReplicaSnapshot {
    /// An empty snapshot for replica `replica`.
    pub fn new(replica: u16) -> ReplicaSnapshot {
        ReplicaSnapshot {
            replica,
            core: Metrics::default(),
            view: 0,
            last_executed: 0,
            low_water_mark: 0,
            log_entries: 0,
            request_queue: 0,
            known_requests: 0,
            read_only_queue: 0,
            transferring: false,
            transport: TransportStats::default(),
            faults: None,
            replies_without_address: 0,
            client_addresses: 0,
            view_active: true,
            reply_cache_entries: 0,
            saved_pages: 0,
            batch_size: Histogram::new(BATCH_BOUNDS),
            request_latency: Histogram::new(LATENCY_BOUNDS_S),
        }
    }

    /// The snapshot in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let labels = format!("replica=\"{}\"", self.replica);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ =
                writeln!(out, "# HELP pbft_{name} {help}\n# TYPE pbft_{name} {kind}\npbft_{name}{{{labels}}} {value}");
        };
        let c = &self.core;
        metric(
            "requests_executed_total",
            "counter",
            "Ordered (read-write) requests executed; read-only ones are counted apart.",
            c.requests_executed,
        );
        metric(
            "read_only_executed_total",
            "counter",
            "Read-only requests executed without ordering.",
            c.read_only_executed,
        );
        metric("batches_executed_total", "counter", "Batches executed.", c.batches_executed);
        metric("batch_requests_total", "counter", "Requests in executed batches.", c.batch_requests_total);
        metric("checkpoints_stable_total", "counter", "Checkpoints that became stable.", c.checkpoints_stable);
        metric("replies_resent_total", "counter", "Cached replies resent to clients.", c.replies_resent);
        metric("state_transfers_total", "counter", "State transfers completed.", c.state_transfers);
        metric("view", "gauge", "Current view.", self.view);
        metric("view_active", "gauge", "1 once the current view is installed, 0 during a view change.", self.view_active as u64);
        metric("view_changes_total", "counter", "View changes this replica started.", c.view_changes);
        metric("views_installed_total", "counter", "Views installed.", c.views_installed);
        metric("rollbacks_total", "counter", "Tentative executions undone by view changes.", c.rollbacks);
        metric("transfer_pages_total", "counter", "Pages fetched and checked by state transfer.", c.transfer_pages);
        metric("transfer_bytes_total", "counter", "Bytes fetched and checked by state transfer.", c.transfer_bytes);
        metric("saved_pages_total", "counter", "Pages written to disk at stable checkpoints.", self.saved_pages);
        metric("reply_cache_entries", "gauge", "Clients with a cached reply in the reply table.", self.reply_cache_entries as u64);
        metric("last_executed", "gauge", "Sequence number of the last executed batch.", self.last_executed);
        metric("low_water_mark", "gauge", "Last stable checkpoint.", self.low_water_mark);
        metric("log_entries", "gauge", "Entries in the message log.", self.log_entries as u64);
        metric("request_queue", "gauge", "Requests waiting to be batched.", self.request_queue as u64);
        metric("known_requests", "gauge", "Request bodies held for batches.", self.known_requests as u64);
        metric("read_only_queue", "gauge", "Read-only requests waiting for a commit.", self.read_only_queue as u64);
        metric("transferring", "gauge", "1 while a state transfer is under way.", self.transferring as u64);
        let t = &self.transport;
        metric("datagrams_received_total", "counter", "UDP datagrams received.", t.datagrams_in);
        metric("datagram_bytes_received_total", "counter", "Bytes of UDP datagrams received.", t.bytes_in);
        metric("datagrams_sent_total", "counter", "UDP datagrams sent.", t.datagrams_out);
        metric("datagram_bytes_sent_total", "counter", "Bytes of UDP datagrams sent.", t.bytes_out);
        metric("send_errors_total", "counter", "UDP sends that failed.", t.send_errors);
        metric("receive_calls_total", "counter", "System calls that received datagrams (or found none).", t.receive_calls);
        metric("send_calls_total", "counter", "System calls that sent datagrams.", t.send_calls);
        metric("bundles_sent_total", "counter", "Datagrams sent that carried several messages.", t.bundles_out);
        metric("bundled_messages_sent_total", "counter", "Messages sent inside bundles.", t.bundled_messages_out);
        metric("bundles_received_total", "counter", "Datagrams received that carried several messages.", t.bundles_in);
        metric("malformed_bundles_total", "counter", "Bundles dropped whole as malformed.", t.malformed_bundles);
        metric(
            "replies_without_address_total",
            "counter",
            "Replies not sent: client address unknown.",
            self.replies_without_address,
        );
        metric("client_addresses", "gauge", "Clients whose address is known.", self.client_addresses as u64);
        let _ =
            writeln!(out, "# HELP pbft_dropped_total Inputs dropped, by reason.\n# TYPE pbft_dropped_total counter");
        for r in DropReason::ALL {
            let _ = writeln!(out, "pbft_dropped_total{{{labels},reason=\"{}\"}} {}", r.name(), c.dropped(r));
        }
        if let Some(f) = &self.faults {
            let _ = writeln!(out, "# HELP pbft_injected_faults_total Faults injected by the transport.\n# TYPE pbft_injected_faults_total counter");
            for (kind, v) in [
                ("drop", f.dropped),
                ("duplicate", f.duplicated),
                ("delay", f.delayed),
                ("reorder", f.reordered),
                ("overflow", f.overflowed),
            ] {
                let _ = writeln!(out, "pbft_injected_faults_total{{{labels},kind=\"{kind}\"}} {v}");
            }
        }
        self.batch_size.render(&mut out, "pbft_batch_size", "Requests per executed batch.", &labels);
        self.request_latency.render(
            &mut out,
            "pbft_request_latency_seconds",
            "From a request's arrival at this replica to its execution here (requests this replica received).",
            &labels,
        );
        out
    }
}

/// The slot the replica publishes into and the HTTP thread reads.
pub type SharedSnapshot = Arc<Mutex<ReplicaSnapshot>>;

/// Serves `snapshot` at `addr` until `stop` is set. Binding happens before this
/// returns, so a port in use is reported to the caller.
pub fn serve(addr: SocketAddr, snapshot: SharedSnapshot, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>, NodeError> {
    let listener = TcpListener::bind(addr).map_err(|source| NodeError::Bind { addr, source })?;
    // Non-blocking accept, polled, so that the thread notices `stop`.
    listener.set_nonblocking(true).map_err(|e| NodeError::io("metrics listener", e))?;
    let handle = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = answer(stream, &snapshot) {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener failed");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })
        .map_err(|e| NodeError::io("spawn the metrics thread", e))?;
    Ok(handle)
}

fn answer(mut stream: TcpStream, snapshot: &SharedSnapshot) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    // Read the request head (bounded); only its first line matters.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = if head.starts_with(b"GET ") {
        // A poisoned lock still holds a usable snapshot of plain counters.
        let s = snapshot.lock().unwrap_or_else(|p| p.into_inner());
        ("200 OK", s.render())
    } else {
        ("405 Method Not Allowed", "only GET\n".to_string())
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

/// The most a metrics answer may take, head and body: a replica's is a few KiB.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// Fetches `http://addr/metrics` and returns the body. Each step (connect, a
/// read, the whole answer) is bounded by `timeout` and the answer by
/// [`MAX_ANSWER_BYTES`], so a stuck or hostile endpoint costs at most that.
/// An answer that is not an HTTP 200 with a UTF-8 body is an error of kind
/// [`std::io::ErrorKind::InvalidData`]; anything else wrong is the socket's
/// own error (refused, timed out, ...).
pub fn scrape(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let deadline = std::time::Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut answer = Vec::new();
    let mut limited = (&mut s).take(MAX_ANSWER_BYTES + 1);
    let mut buf = [0u8; 8192];
    loop {
        let n = limited.read(&mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if std::time::Instant::now() > deadline {
            let late = format!("answer not complete within {timeout:?}");
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, late));
        }
    }
    if answer.len() as u64 > MAX_ANSWER_BYTES {
        return Err(invalid(format!("answer longer than {MAX_ANSWER_BYTES} bytes")));
    }
    let text = String::from_utf8(answer).map_err(|_| invalid("answer is not UTF-8 text".into()))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| invalid("not an HTTP answer".into()))?;
    let status = head.lines().next().unwrap_or_default();
    match status.split_whitespace().collect::<Vec<_>>()[..] {
        [version, "200", ..] if version.starts_with("HTTP/") => Ok(body.to_string()),
        [version, code, ..] if version.starts_with("HTTP/") => Err(invalid(format!("HTTP status {code}"))),
        _ => Err(invalid(format!("not an HTTP answer: {:?}", status.chars().take(40).collect::<String>()))),
    }
}

/// What a replica's metrics endpoint reported, read back from its text: the
/// figures `pbft status`, the demo, `pbft chaos` and the benchmarks use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// The `replica` label of its samples.
    pub replica: u16,
    pub view: u64,
    /// Whether the view is installed (false during a view change).
    pub view_active: bool,
    pub views_installed: u64,
    pub last_executed: u64,
    /// The last stable checkpoint.
    pub low_water_mark: u64,
    /// Whether a state transfer is under way.
    pub transferring: bool,
    /// State transfers completed.
    pub transfers: u64,
    pub transfer_pages: u64,
    pub transfer_bytes: u64,
    pub saved_pages: u64,
    pub requests_executed: u64,
    pub batches_executed: u64,
    pub batch_requests: u64,
    pub checkpoints_stable: u64,
    /// Inputs dropped, by reason, in the order the replica lists them.
    pub dropped: Vec<(String, u64)>,
}

/// Why a metrics endpoint gave no [`Reading`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Nothing answered (refused, timed out, reset).
    #[error("unreachable: {0}")]
    Unreachable(std::io::Error),
    /// Something answered, but not with a replica's metrics.
    #[error("not a replica's metrics: {0}")]
    Garbage(String),
}

impl Reading {
    /// Scrapes `addr` and reads the answer; see [`scrape`] for the bounds.
    pub fn fetch(addr: SocketAddr, timeout: Duration) -> Result<Reading, ReadError> {
        match scrape(addr, timeout) {
            Ok(text) => Reading::parse(&text).map_err(ReadError::Garbage),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(ReadError::Garbage(e.to_string())),
            Err(e) => Err(ReadError::Unreachable(e)),
        }
    }

    /// Reads a Prometheus text as [`ReplicaSnapshot::render`] writes it. The
    /// gauges a reader cannot do without (view, whether it is active, last
    /// executed, last stable checkpoint, transfer under way) must be there;
    /// counters left out read as zero. Every value must be a whole number.
    pub fn parse(text: &str) -> Result<Reading, String> {
        let value = |name: &str| -> Result<Option<u64>, String> {
            match sample_text(text, name) {
                None => Ok(None),
                Some(v) => whole(v).map(Some).map_err(|m| format!("{name}: {m}")),
            }
        };
        let required = |name: &str| value(name)?.ok_or_else(|| format!("no {name} sample"));
        let optional = |name: &str| value(name).map(|v| v.unwrap_or(0));
        let flag = |name: &str| match required(name)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("{name} is {v}, not 0 or 1")),
        };
        let view_line = text.lines().find(|l| l.starts_with("pbft_view{") || l.starts_with("pbft_view "));
        let replica = view_line
            .and_then(|l| l.split_once("replica=\"")?.1.split_once('"')?.0.parse().ok())
            .ok_or("no replica label on pbft_view")?;
        let mut dropped = Vec::new();
        for line in text.lines().filter(|l| l.starts_with("pbft_dropped_total{")) {
            let reason = line.split_once("reason=\"").and_then(|(_, r)| r.split_once('"')).map(|(r, _)| r);
            let count = line.rsplit_once(' ').map(|(_, v)| v);
            match (reason, count) {
                (Some(reason), Some(count)) => {
                    let count = whole(count).map_err(|m| format!("pbft_dropped_total{{reason={reason:?}}}: {m}"))?;
                    dropped.push((reason.to_string(), count));
                }
                _ => return Err(format!("malformed line {:?}", line.chars().take(60).collect::<String>())),
            }
        }
        Ok(Reading {
            replica,
            view: required("pbft_view")?,
            view_active: flag("pbft_view_active")?,
            views_installed: optional("pbft_views_installed_total")?,
            last_executed: required("pbft_last_executed")?,
            low_water_mark: required("pbft_low_water_mark")?,
            transferring: flag("pbft_transferring")?,
            transfers: optional("pbft_state_transfers_total")?,
            transfer_pages: optional("pbft_transfer_pages_total")?,
            transfer_bytes: optional("pbft_transfer_bytes_total")?,
            saved_pages: optional("pbft_saved_pages_total")?,
            requests_executed: optional("pbft_requests_executed_total")?,
            batches_executed: optional("pbft_batches_executed_total")?,
            batch_requests: optional("pbft_batch_requests_total")?,
            checkpoints_stable: optional("pbft_checkpoints_stable_total")?,
            dropped,
        })
    }

    /// Drops with a non-zero count, e.g. "bad_mac 12, duplicate 3" ("none" if none).
    pub fn drops_text(&self) -> String {
        let some: Vec<String> =
            self.dropped.iter().filter(|(_, n)| *n > 0).map(|(reason, n)| format!("{reason} {n}")).collect();
        if some.is_empty() {
            "none".into()
        } else {
            some.join(", ")
        }
    }
}

/// A sample's value as a whole number: Prometheus writes counters and gauges
/// as floats, and a replica's are all whole.
fn whole(text: &str) -> Result<u64, String> {
    let v: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 18_446_744_073_709_551_616.0 {
        Ok(v as u64)
    } else {
        Err(format!("{text:?} is not a whole number of at most 64 bits"))
    }
}

/// The value of the sample `name{labels...}` in a Prometheus text, if present.
/// `name` is matched up to its label set, e.g. `pbft_view` or
/// `pbft_dropped_total{replica="0",reason="bad_mac"}`.
pub fn sample_value(text: &str, name: &str) -> Option<f64> {
    sample_text(text, name)?.parse().ok()
}

/// The text of the value of the sample `name{labels...}`, as [`sample_value`] finds it.
fn sample_text<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        let matches = key == name || (key.starts_with(name) && key[name.len()..].starts_with('{'));
        matches.then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_serves_prometheus_text() {
        let mut s = ReplicaSnapshot::new(2);
        s.view = 3;
        s.core.requests_executed = 42;
        s.core.drop(DropReason::BadMac);
        s.request_latency.observe(0.003);
        s.batch_size.observe(5.0);
        let shared = Arc::new(Mutex::new(s));
        let stop = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let handle = serve(addr, shared, stop.clone()).expect("serve");
        let text = scrape(addr, Duration::from_secs(5)).expect("scrape");
        stop.store(true, Ordering::Relaxed);
        handle.join().expect("join");
        assert_eq!(sample_value(&text, "pbft_view"), Some(3.0));
        assert_eq!(sample_value(&text, "pbft_requests_executed_total"), Some(42.0));
        assert_eq!(sample_value(&text, "pbft_dropped_total{replica=\"2\",reason=\"bad_mac\"}"), Some(1.0));
        assert_eq!(sample_value(&text, "pbft_request_latency_seconds_bucket{replica=\"2\",le=\"0.005\"}"), Some(1.0));
        assert_eq!(sample_value(&text, "pbft_batch_size_count"), Some(1.0));
        let r = Reading::parse(&text).expect("a replica's own text reads back");
        assert_eq!((r.replica, r.view, r.view_active, r.requests_executed), (2, 3, true, 42));
        assert_eq!(r.drops_text(), "bad_mac 1");
        assert_eq!(r.dropped.len(), DropReason::ALL.len());
    }

    #[test]
    fn garbage_from_an_endpoint_is_an_error_not_a_panic() {
        let good = ReplicaSnapshot::new(1).render();
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "no replica label"),
            ("<html>hello</html>".into(), "no replica label"),
            (good.replace("pbft_view{replica=\"1\"} 0", "pbft_view{replica=\"1\"} -3"), "not a whole number"),
            (good.replace("pbft_view{replica=\"1\"} 0", "pbft_view{replica=\"1\"} NaN"), "not a whole number"),
            (good.replace("pbft_view{replica=\"1\"} 0", "pbft_view{replica=\"1\"} 1e300"), "not a whole number"),
            (good.replace("pbft_view_active{replica=\"1\"} 1", "pbft_view_active{replica=\"1\"} 7"), "not 0 or 1"),
            (good.replace("pbft_last_executed{", "pbft_last_exec{"), "no pbft_last_executed"),
            (good.replace("reason=\"bad_mac\"} 0", "reason=\"bad_mac\"} x"), "not a number"),
            (good.replace("replica=\"1\"", "replica=\"many\""), "no replica label"),
        ];
        for (text, expected) in cases {
            let e = Reading::parse(&text).expect_err(expected);
            assert!(e.contains(expected), "{e:?} should mention {expected:?}");
        }
        assert_eq!(whole("12"), Ok(12));
        assert_eq!(whole("1.8446744073709552e19").map_err(|_| ()), Err(()));
    }

    /// Serves `answer` once on a fresh port; returns the port's address.
    fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer);
            }
        });
        addr
    }

    #[test]
    fn fetch_tells_unreachable_from_garbage() {
        let t = Duration::from_secs(5);
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        assert!(matches!(Reading::fetch(closed, t), Err(ReadError::Unreachable(_))));
        for (answer, expected) in [
            (&b"SSH-2.0-OpenSSH_9.2\r\n"[..], "not an HTTP answer"),
            (&b"HTTP/1.0 404 Not Found\r\n\r\nno"[..], "HTTP status 404"),
            (&b"HTTP/1.0 200 OK\r\n\r\n\xff\xfe"[..], "not UTF-8"),
            (&b"HTTP/1.0 200 OK\r\n\r\nhello"[..], "no replica label"),
        ] {
            match Reading::fetch(serve_once(answer), t) {
                Err(ReadError::Garbage(m)) => assert!(m.contains(expected), "{m:?} should mention {expected:?}"),
                other => panic!("{answer:?}: {other:?}"),
            }
        }
    }
}
