//! UDP transport: one socket, blocking reads with a timeout, and the optional
//! fault layer on the way out.
//!
//! A replica's loop takes everything that has arrived in one `recvmmsg`
//! ([`Transport::recv_batch`]) and sends everything one turn produced in one
//! `sendmmsg` ([`Transport::queue`], [`Transport::flush`]): system calls per
//! operation, not per datagram.
//!
//! Why plain blocking sockets and no tokio: a node is one thread that waits for
//! either a datagram or its next deadline, which `recv_from` with a read timeout
//! does in one system call. Measured on this machine (loopback, 200-byte
//! ping-pong): 22 µs a round trip with blocking sockets against 26–31 µs with a
//! tokio current-thread runtime.
//!
//! Every protocol message fits in one datagram; anything larger than
//! [`MAX_DATAGRAM`] is cut by the receive buffer and then refused by the codec.
//!
//! Small messages that one flush sends to the same address share a datagram,
//! a bundle of up to [`BUNDLE_BYTES`]: the replies a replica's turn sends to
//! a `ClientGroup`'s socket, the requests a group sends to the primary. Each
//! message in a bundle keeps its own authenticator; the receiving transport
//! splits the bundle and hands on the messages as if each had come alone, so
//! the core never sees one. A datagram costs the sender a trip through the
//! kernel's network stack (on one host, the receiver's side of it too); a
//! bundle pays it once for all its messages.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::Bytes;
use pbft::Instant;

use crate::error::NodeError;
use crate::faults::{Datagram, FaultConfig, FaultInjector, FaultStats};

mod bundle;

use bundle::{bundle, unbundle};
pub use bundle::{BUNDLE_BYTES, BUNDLE_MAGIC};

/// Largest datagram a node sends or accepts.
pub const MAX_DATAGRAM: usize = 65_000;

/// Socket buffer size asked of the kernel (it caps it at `net.core.rmem_max`):
/// bursts of pre-prepares and replies must not overflow the default 208 KiB.
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;

/// Traffic counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    pub send_errors: u64,
    /// System calls that received (`recvfrom`, `recvmmsg`), including those
    /// that found nothing.
    pub receive_calls: u64,
    /// System calls that sent (`sendto`, `sendmmsg`).
    pub send_calls: u64,
    /// Datagrams sent that were bundles, and the messages in them.
    pub bundles_out: u64,
    pub bundled_messages_out: u64,
    /// Bundles received, and those dropped whole as malformed.
    pub bundles_in: u64,
    pub malformed_bundles: u64,
}

/// Most datagrams one [`Transport::recv_batch`] takes.
pub const RECV_BATCH: usize = 32;

/// A UDP socket with an optional fault layer.
#[derive(Debug)]
pub struct Transport {
    socket: UdpSocket,
    faults: Option<FaultInjector>,
    /// `recvmmsg`'s buffers and headers, allocated on first use.
    recv: Option<RecvSlots>,
    scratch: Vec<Datagram>,
    /// Datagrams waiting for [`Transport::flush`]: first the `urgent` ones
    /// ([`Transport::queue_first`]), then the rest, each in queueing order.
    queued: Vec<(SocketAddr, Bytes)>,
    urgent: usize,
    stats: TransportStats,
    /// The read timeout last set on the socket: setting it costs a system
    /// call, so it changes only when the wanted one differs.
    read_timeout: Option<Duration>,
}

impl Transport {
    /// Binds `addr`. The fault layer is on only if `faults` names a fault.
    pub fn bind(addr: SocketAddr, faults: &FaultConfig) -> Result<Transport, NodeError> {
        let socket = UdpSocket::bind(addr).map_err(|source| NodeError::Bind { addr, source })?;
        for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            set_buffer_size(&socket, option);
        }
        let faults = if faults.is_active() { Some(FaultInjector::new(faults.clone())?) } else { None };
        Ok(Transport {
            socket,
            faults,
            recv: None,
            scratch: Vec::new(),
            queued: Vec::new(),
            urgent: 0,
            stats: TransportStats::default(),
            read_timeout: None,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, NodeError> {
        self.socket.local_addr().map_err(|e| NodeError::io("socket address", e))
    }

    /// Traffic so far.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// Faults injected so far, if the fault layer is on.
    pub fn fault_stats(&self) -> Option<FaultStats> {
        self.faults.as_ref().map(|f| f.stats())
    }

    /// Sends a datagram (through the fault layer, if on). A failed send is
    /// logged and counted: UDP promises nothing, and the protocol retransmits.
    pub fn send(&mut self, now: Instant, to: SocketAddr, bytes: Bytes) {
        match self.faults.as_mut() {
            None => self.send_now(to, &bytes),
            Some(f) => {
                let mut out = std::mem::take(&mut self.scratch);
                f.on_send(now, (to, bytes), &mut out);
                for (to, bytes) in out.drain(..) {
                    self.send_now(to, &bytes);
                }
                self.scratch = out;
            }
        }
    }

    /// Sends one datagram to several addresses (a multicast to the other
    /// replicas) with one `sendmmsg` system call instead of one call each.
    pub fn send_many(&mut self, now: Instant, to: &[SocketAddr], bytes: &Bytes) {
        for addr in to {
            self.queue(now, *addr, bytes.clone());
        }
        self.flush();
    }

    /// Queues a datagram for the next [`Transport::flush`] (the fault layer,
    /// when on, takes it at once instead: it decides when it leaves).
    pub fn queue(&mut self, now: Instant, to: SocketAddr, bytes: Bytes) {
        if self.faults.is_some() {
            self.send(now, to, bytes);
        } else {
            self.queued.push((to, bytes));
        }
    }

    /// Queues a datagram to leave before those queued by [`Transport::queue`]
    /// (after earlier urgent ones): each datagram a send delivers on the same
    /// host wakes its receiver inside the sending call, so one that someone
    /// waits for (a reply to a client) should not queue behind others.
    pub fn queue_first(&mut self, now: Instant, to: SocketAddr, bytes: Bytes) {
        if self.faults.is_some() {
            self.send(now, to, bytes);
        } else {
            self.queued.insert(self.urgent, (to, bytes));
            self.urgent += 1;
        }
    }

    /// Sends every queued datagram, in order, with as few `sendmmsg` calls as
    /// the kernel allows (one, below 1,024 datagrams).
    pub fn flush(&mut self) {
        let mut queued = std::mem::take(&mut self.queued);
        if queued.len() > 1 {
            let (bundles, messages) = bundle(&mut queued);
            self.stats.bundles_out += bundles;
            self.stats.bundled_messages_out += messages;
        }
        if queued.len() == 1 {
            self.send_now(queued[0].0, &queued[0].1);
        } else if !queued.is_empty() {
            self.send_queued(&queued);
        }
        self.queued = queued;
        self.queued.clear();
        self.urgent = 0;
    }

    fn send_queued(&mut self, queued: &[(SocketAddr, Bytes)]) {
        let mut names: Vec<SockAddr> = queued.iter().map(|(a, _)| SockAddr::from(*a)).collect();
        let mut iovs: Vec<libc::iovec> = queued
            .iter()
            .map(|(_, b)| libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = names
            .iter_mut()
            .zip(iovs.iter_mut())
            .map(|(name, iov)| message_header(&mut name.storage, name.len, iov))
            .collect();
        let mut sent = 0usize;
        while sent < msgs.len() {
            self.stats.send_calls += 1;
            // SAFETY: every header points at a live sockaddr in `names` and at
            // one iovec in `iovs`, which points at bytes `queued` holds; all
            // outlive the call, and the kernel only reads them (and writes
            // msg_len).
            let rc = unsafe {
                libc::sendmmsg(self.socket.as_raw_fd(), msgs[sent..].as_mut_ptr(), (msgs.len() - sent) as libc::c_uint, 0)
            };
            if rc <= 0 {
                // Fall back for the rest: each gets its own error accounting.
                for (addr, bytes) in &queued[sent..] {
                    self.send_now(*addr, bytes);
                }
                return;
            }
            let n = rc as usize;
            self.stats.datagrams_out += n as u64;
            self.stats.bytes_out += queued[sent..sent + n].iter().map(|(_, b)| b.len() as u64).sum::<u64>();
            sent += n;
        }
    }

    fn send_now(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.stats.send_calls += 1;
        match self.socket.send_to(bytes, to) {
            Ok(_) => {
                self.stats.datagrams_out += 1;
                self.stats.bytes_out += bytes.len() as u64;
            }
            Err(e) => {
                self.stats.send_errors += 1;
                tracing::debug!(%to, error = %e, "send failed");
            }
        }
    }

    /// When the fault layer next releases a held datagram.
    pub fn next_release(&self) -> Option<Instant> {
        self.faults.as_ref().and_then(|f| f.next_release())
    }

    /// Sends the held datagrams that are due.
    pub fn release_due(&mut self, now: Instant) {
        let Some(f) = self.faults.as_mut() else { return };
        let mut out = std::mem::take(&mut self.scratch);
        f.release_due(now, &mut out);
        for (to, bytes) in out.drain(..) {
            self.send_now(to, &bytes);
        }
        self.scratch = out;
    }

    /// Sets the socket's read timeout for a wait of `timeout`: rounded down to
    /// a power of two milliseconds (a wait under 1 ms waits 1 ms), so that
    /// consecutive waits mostly reuse the last one and cost no system call.
    /// Rounding whole milliseconds up instead changed it on a fifth of all
    /// waits under load. Waking early costs one more turn of an idle loop;
    /// protocol timers are tens of milliseconds, so waking up to 1 ms late
    /// costs nothing.
    fn set_timeout(&mut self, timeout: Duration) -> Result<(), NodeError> {
        // A zero timeout means "block forever" to the socket API.
        let ms = (timeout.as_micros() / 1000).max(1) as u64;
        let timeout = Duration::from_millis(1 << ms.ilog2());
        if self.read_timeout != Some(timeout) {
            self.socket.set_read_timeout(Some(timeout)).map_err(|e| NodeError::io("set socket timeout", e))?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }

    /// Waits up to `timeout` for a datagram, then takes it and every other
    /// one that has arrived, up to [`RECV_BATCH`], in one `recvmmsg`, and
    /// appends them to `out`. Nothing appended means the wait timed out.
    /// For the first `spin` of the wait it polls instead of sleeping: a
    /// datagram that reaches a polling process wakes nobody.
    pub fn recv_batch(&mut self, timeout: Duration, spin: Duration, out: &mut Vec<(Bytes, SocketAddr)>) -> Result<(), NodeError> {
        self.set_timeout(timeout)?;
        let slots = self.recv.get_or_insert_with(RecvSlots::new);
        slots.reset();
        // Polls (without blocking) until `spin` has passed, yielding the CPU
        // between polls to whoever else wants it; then blocks.
        let spin = spin.min(timeout);
        let polling_since = (!spin.is_zero()).then(std::time::Instant::now);
        let rc = loop {
            let polling = polling_since.is_some_and(|t| t.elapsed() < spin);
            self.stats.receive_calls += 1;
            // SAFETY: every header points at a live, writable sockaddr_storage
            // and at one iovec over its own SLOT bytes, all owned by `slots`
            // (see RecvSlots), which outlives the call. MSG_WAITFORONE: block
            // (up to the read timeout) for the first datagram only;
            // MSG_DONTWAIT: do not block.
            let rc = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    slots.msgs.as_mut_ptr(),
                    RECV_BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE | if polling { libc::MSG_DONTWAIT } else { 0 },
                    std::ptr::null_mut(),
                )
            };
            if rc > 0 || !polling {
                break rc;
            }
            // SAFETY: no arguments; it only gives up the CPU.
            unsafe { libc::sched_yield() };
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted => Ok(()),
                // An ICMP error for an earlier send (a peer that is down): not ours to handle.
                ErrorKind::ConnectionRefused => Ok(()),
                _ => Err(NodeError::io("receive", e)),
            };
        }
        for k in 0..rc as usize {
            let n = (slots.msgs[k].msg_len as usize).min(RecvSlots::SLOT);
            let Some(from) = socket_addr(&slots.names[k]) else { continue };
            self.stats.datagrams_in += 1;
            self.stats.bytes_in += n as u64;
            let datagram = slots.take(k, n);
            if datagram.starts_with(&BUNDLE_MAGIC) {
                self.stats.bundles_in += 1;
                if !unbundle(datagram, from, out) {
                    self.stats.malformed_bundles += 1;
                }
            } else {
                out.push((datagram, from));
            }
        }
        Ok(())
    }
}

/// [`RECV_BATCH`] receive buffers, source addresses, and the `recvmmsg`
/// headers that point at them, built once: a poll that finds nothing then
/// costs its system call alone (building them on every call was two
/// allocations and 4 KiB of zeroing, and a polling replica makes several
/// empty calls an operation).
struct RecvSlots {
    /// One buffer of `SLOT` bytes' capacity a slot; its length is 0 (what
    /// the kernel writes is read through `take`).
    bufs: Vec<Vec<u8>>,
    names: Vec<libc::sockaddr_storage>,
    /// Read by the kernel through `msgs`; `take` points one at a new buffer.
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovs` and `msgs` point only into the heap
// buffers of `bufs`, `names` and `iovs`, which this struct owns (the outer
// vectors are never resized after `new`; `take` repoints an iovec when it
// replaces its buffer); moving it to another thread moves what they point
// at with it, and nothing else refers to them.
unsafe impl Send for RecvSlots {}

impl std::fmt::Debug for RecvSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvSlots").field("slots", &self.msgs.len()).finish()
    }
}

impl RecvSlots {
    /// One byte more than the largest datagram, so that a longer one shows
    /// as too long to the codec instead of being cut to a valid length.
    const SLOT: usize = MAX_DATAGRAM + 1;

    /// A datagram at least this long (a state transfer's DATA) is handed on
    /// in the buffer the kernel wrote it to, and the slot gets a new one;
    /// a shorter one is copied out, so that a small message kept for long
    /// (a request body in the log) does not hold a whole slot's memory.
    const HAND_ON: usize = Self::SLOT / 2;

    fn new() -> RecvSlots {
        let mut bufs: Vec<Vec<u8>> = (0..RECV_BATCH).map(|_| Vec::with_capacity(Self::SLOT)).collect();
        // SAFETY: sockaddr_storage is plain data; all zeros is a valid value.
        let mut names: Vec<libc::sockaddr_storage> = (0..RECV_BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: Self::SLOT })
            .collect();
        let msgs = names
            .iter_mut()
            .zip(iovs.iter_mut())
            .map(|(name, iov)| message_header(name, std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t, iov))
            .collect();
        RecvSlots { bufs, names, iovs, msgs }
    }

    /// The `n` bytes the kernel wrote into slot `k`'s buffer (`n` at most
    /// `SLOT`, the length `recvmmsg` reported for it).
    fn take(&mut self, k: usize, n: usize) -> Bytes {
        debug_assert!(n <= Self::SLOT);
        if n < Self::HAND_ON {
            // SAFETY: the kernel wrote the first n bytes of this buffer (its
            // capacity is SLOT >= n) in the call that just returned.
            return Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(self.bufs[k].as_ptr(), n) });
        }
        let mut full = std::mem::replace(&mut self.bufs[k], Vec::with_capacity(Self::SLOT));
        // SAFETY: as above, the first n bytes are written, and n <= capacity.
        unsafe { full.set_len(n) };
        self.iovs[k].iov_base = self.bufs[k].as_mut_ptr().cast();
        Bytes::from(full)
    }

    /// Readies the headers for a call: the kernel overwrote each address
    /// length and message length it filled.
    fn reset(&mut self) {
        for m in &mut self.msgs {
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
    }
}

/// One message of a `sendmmsg` or `recvmmsg`: the address `name` (of
/// `namelen` bytes) and the one buffer `iov`, which must outlive the call.
fn message_header(name: &mut libc::sockaddr_storage, namelen: libc::socklen_t, iov: &mut libc::iovec) -> libc::mmsghdr {
    // SAFETY: an all-zero msghdr is valid (no name, no data, no control).
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
    hdr.msg_namelen = namelen;
    hdr.msg_iov = iov;
    hdr.msg_iovlen = 1;
    libc::mmsghdr { msg_hdr: hdr, msg_len: 0 }
}

/// The address a system call filled in, if it is IPv4 or IPv6.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// A socket address in the form the system calls take.
struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> SockAddr {
        // SAFETY: sockaddr_storage is plain data; all zeros is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match a {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr { storage, len: len as libc::socklen_t }
    }
}

fn set_buffer_size(socket: &UdpSocket, option: libc::c_int) {
    let size = SOCKET_BUFFER_BYTES;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int on a
    // socket this process owns; failure is harmless (the default size stays).
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(option, "could not enlarge a socket buffer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits up to `timeout` for one datagram.
    fn recv_one(t: &mut Transport, timeout: Duration) -> Option<(Bytes, SocketAddr)> {
        let mut got = Vec::new();
        t.recv_batch(timeout, Duration::ZERO, &mut got).expect("recv");
        assert!(got.len() <= 1, "one datagram expected, got {}", got.len());
        got.pop()
    }

    #[test]
    fn sends_and_receives_with_and_without_faults() {
        let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut a = Transport::bind(local, &FaultConfig::default()).expect("bind");
        let dup = FaultConfig { duplicate: 1.0, ..Default::default() };
        let mut b = Transport::bind(local, &dup).expect("bind");
        let (a_addr, b_addr) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
        a.send(Instant(0), b_addr, Bytes::from_static(b"hello"));
        let (got, from) = recv_one(&mut b, Duration::from_secs(2)).expect("a datagram");
        assert_eq!((&got[..], from), (&b"hello"[..], a_addr));
        b.send(Instant(0), a_addr, Bytes::from_static(b"twice"));
        let mut twice = Vec::new();
        while twice.len() < 2 {
            a.recv_batch(Duration::from_secs(2), Duration::ZERO, &mut twice).expect("recv");
        }
        assert_eq!(twice.len(), 2);
        assert_eq!(recv_one(&mut a, Duration::from_millis(20)), None);
        assert_eq!(b.fault_stats().map(|s| s.duplicated), Some(1));
    }

    #[test]
    fn one_datagram_reaches_several_addresses_in_one_call() {
        let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut a = Transport::bind(local, &FaultConfig::default()).expect("bind");
        let mut receivers: Vec<Transport> =
            (0..3).map(|_| Transport::bind(local, &FaultConfig::default()).expect("bind")).collect();
        let addrs: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().expect("addr")).collect();
        a.send_many(Instant(0), &addrs, &Bytes::from_static(b"to all"));
        for r in &mut receivers {
            let (got, from) = recv_one(r, Duration::from_secs(2)).expect("a datagram");
            assert_eq!((&got[..], from), (&b"to all"[..], a.local_addr().expect("addr")));
        }
        assert_eq!(a.stats().datagrams_out, 3);
    }

    #[test]
    fn a_turn_leaves_in_one_call_and_arrives_in_one_call() {
        let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut a = Transport::bind(local, &FaultConfig::default()).expect("bind");
        let mut b = Transport::bind(local, &FaultConfig::default()).expect("bind");
        let mut c = Transport::bind(local, &FaultConfig::default()).expect("bind");
        let (b_addr, c_addr) = (b.local_addr().expect("addr"), c.local_addr().expect("addr"));
        for k in 0..5u8 {
            a.queue(Instant(0), b_addr, Bytes::from(vec![k; 100 + usize::from(k)]));
        }
        a.queue(Instant(0), c_addr, Bytes::from_static(b"to c"));
        a.queue_first(Instant(0), c_addr, Bytes::from_static(b"first"));
        a.flush();
        // Two datagrams: the five messages to b share one bundle, the two
        // to c another (each message behind a two-byte length).
        let s = a.stats();
        assert_eq!((s.send_calls, s.datagrams_out, s.bytes_out), (1, 2, (2 + 5 * 2 + 510) + (2 + 2 * 2 + 4 + 5)));
        assert_eq!((s.bundles_out, s.bundled_messages_out), (2, 7));
        // Nothing queued: nothing sent, no call.
        a.flush();
        assert_eq!(a.stats().send_calls, 1);
        let mut got = Vec::new();
        while got.len() < 5 {
            b.recv_batch(Duration::from_secs(2), Duration::ZERO, &mut got).expect("recv");
        }
        let lens: Vec<usize> = got.iter().map(|(d, _)| d.len()).collect();
        assert_eq!(lens, [100, 101, 102, 103, 104], "in order, each whole");
        assert!(got.iter().all(|(d, from)| *from == a.local_addr().expect("addr") && d.iter().all(|x| *x == d[0])));
        assert!(b.stats().receive_calls <= 5);
        assert_eq!((b.stats().datagrams_in, b.stats().bundles_in, b.stats().malformed_bundles), (1, 1, 0));
        let mut two = Vec::new();
        while two.len() < 2 {
            c.recv_batch(Duration::from_secs(2), Duration::ZERO, &mut two).expect("recv");
        }
        assert_eq!((&two[0].0[..], &two[1].0[..]), (&b"first"[..], &b"to c"[..]), "the urgent one first");
        // A wait with nothing to take times out empty.
        let mut none = Vec::new();
        c.recv_batch(Duration::from_millis(10), Duration::ZERO, &mut none).expect("recv");
        assert!(none.is_empty());
    }

    /// Two fault-free transports on loopback, and the second's address.
    fn pair() -> (Transport, Transport, SocketAddr) {
        let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let a = Transport::bind(local, &FaultConfig::default()).expect("bind");
        let b = Transport::bind(local, &FaultConfig::default()).expect("bind");
        let b_addr = b.local_addr().expect("addr");
        (a, b, b_addr)
    }

    /// Takes datagrams from `t` until `count` messages have arrived.
    fn recv_n(t: &mut Transport, count: usize) -> Vec<Bytes> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < count && std::time::Instant::now() < deadline {
            t.recv_batch(Duration::from_millis(50), Duration::ZERO, &mut got).expect("recv");
        }
        got.into_iter().map(|(b, _)| b).collect()
    }

    #[test]
    fn bundles_keep_each_address_in_order_and_stay_under_their_limit() {
        let (mut a, mut b, b_addr) = pair();
        // A small message, one too large to share, then 30 small ones:
        // the first goes alone (nothing to share with before the large
        // one), the large one alone, and the 30 in bundles of 13 (2 + 13 *
        // 102 bytes), 13 and 4.
        let mut sent = vec![Bytes::from_static(b"alone")];
        sent.push(Bytes::from(vec![9u8; BUNDLE_BYTES - 3]));
        sent.extend((0..30u8).map(|k| Bytes::from(vec![k; 100])));
        for m in &sent {
            a.queue(Instant(0), b_addr, m.clone());
        }
        a.flush();
        let s = a.stats();
        assert_eq!((s.send_calls, s.datagrams_out, s.bundles_out, s.bundled_messages_out), (1, 5, 3, 30));
        let got = recv_n(&mut b, sent.len());
        assert_eq!(got, sent, "every message, whole and in order");
        assert_eq!((b.stats().datagrams_in, b.stats().bundles_in), (5, 3));
        assert!(b.stats().bytes_in <= 5 * BUNDLE_BYTES as u64);
    }

    #[test]
    fn malformed_bundles_are_dropped_whole_and_counted() {
        let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut b = Transport::bind(local, &FaultConfig::default()).expect("bind");
        let raw = UdpSocket::bind(local).expect("bind");
        let entry = |m: &[u8]| [&(m.len() as u16).to_le_bytes()[..], m].concat();
        let bundle = |parts: &[Vec<u8>]| [&BUNDLE_MAGIC[..], &parts.concat()].concat();
        let good = bundle(&[entry(b"one"), entry(b"two")]);
        let bad: Vec<Vec<u8>> = vec![
            // A length past the end.
            [&good[..], &[9, 0, 1][..]].concat(),
            // An empty message.
            bundle(&[entry(b"one"), entry(b"")]),
            // A lone message: never sent as a bundle.
            bundle(&[entry(b"one")]),
            // Larger than a bundle may be.
            bundle(&[entry(&[1u8; 700]), entry(&[2u8; 700])]),
            // Only the magic, and a length cut in two.
            BUNDLE_MAGIC.to_vec(),
            [&BUNDLE_MAGIC[..], &[3][..]].concat(),
        ];
        for d in &bad {
            raw.send_to(d, b.local_addr().expect("addr")).expect("send");
        }
        raw.send_to(&good, b.local_addr().expect("addr")).expect("send");
        let got = recv_n(&mut b, 2);
        assert_eq!(got, [&b"one"[..], &b"two"[..]]);
        assert_eq!((b.stats().bundles_in, b.stats().malformed_bundles), (7, 6));
        // Every cut of a good bundle is either dropped or the messages whole
        // up to the cut; none panics.
        let from = b.local_addr().expect("addr");
        for cut in 0..good.len() {
            let mut out = Vec::new();
            let ok = unbundle(Bytes::copy_from_slice(&good[..cut]), from, &mut out);
            assert!(!ok && out.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn a_polling_wait_takes_what_arrives_and_still_ends_at_its_timeout() {
        let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut b = Transport::bind(local, &FaultConfig::default()).expect("bind");
        let b_addr = b.local_addr().expect("addr");
        let sender = std::thread::spawn(move || {
            let mut a = Transport::bind(local, &FaultConfig::default()).expect("bind");
            std::thread::sleep(Duration::from_millis(20));
            a.send(Instant(0), b_addr, Bytes::from_static(b"while polling"));
        });
        // Polls for up to a second: the datagram sent 20 ms in arrives
        // while it polls, found by one of many calls that do not block.
        let mut got = Vec::new();
        let started = std::time::Instant::now();
        b.recv_batch(Duration::from_secs(2), Duration::from_secs(1), &mut got).expect("recv");
        sender.join().expect("sender");
        assert_eq!(got.iter().map(|(d, _)| &d[..]).collect::<Vec<_>>(), [&b"while polling"[..]]);
        assert!(started.elapsed() < Duration::from_millis(900), "it returned when the datagram came");
        assert!(b.stats().receive_calls > 2, "it polled: {} calls", b.stats().receive_calls);
        // Polling longer than the wait: the wait's timeout still ends it.
        let (calls, started) = (b.stats().receive_calls, std::time::Instant::now());
        let mut none = Vec::new();
        b.recv_batch(Duration::from_millis(30), Duration::from_secs(5), &mut none).expect("recv");
        assert!(none.is_empty());
        assert!(started.elapsed() < Duration::from_secs(1), "ended after {:?}", started.elapsed());
        assert!(b.stats().receive_calls > calls + 1, "it polled before it slept");
    }

    /// Large datagrams are handed on in the buffer they arrived in and the
    /// slot gets a new one: what was handed on stays intact while later
    /// datagrams arrive in the same slots, and small ones are copied out.
    #[test]
    fn large_datagrams_are_handed_on_and_later_ones_do_not_overwrite_them() {
        let (mut a, mut b, b_addr) = pair();
        let sizes = [40_000, 100, RecvSlots::HAND_ON, RecvSlots::HAND_ON - 1, MAX_DATAGRAM];
        let round = |r: u8| -> Vec<Bytes> {
            sizes.iter().enumerate().map(|(i, &n)| Bytes::from((0..n).map(|j| (j as u8) ^ (i as u8 * 31) ^ r).collect::<Vec<u8>>())).collect()
        };
        let mut kept = Vec::new();
        for r in 0..3u8 {
            for m in round(r) {
                a.queue(Instant(0), b_addr, m);
            }
            a.flush();
            let got = recv_n(&mut b, sizes.len());
            // Compared whole, reported by length: the contents are large.
            let lengths = |v: &[Bytes]| v.iter().map(Bytes::len).collect::<Vec<_>>();
            assert!(got == round(r), "round {r}: got lengths {:?}", lengths(&got));
            kept.push(got);
        }
        for (r, got) in kept.iter().enumerate() {
            assert!(*got == round(r as u8), "round {r} changed after later rounds arrived");
        }
    }

    #[test]
    fn a_datagram_above_the_limit_arrives_cut_and_the_next_is_intact() {
        let (mut a, mut b, b_addr) = pair();
        a.queue(Instant(0), b_addr, Bytes::from(vec![7u8; MAX_DATAGRAM + 500]));
        a.queue(Instant(0), b_addr, Bytes::from_static(b"next"));
        a.flush();
        let mut got = Vec::new();
        while got.len() < 2 {
            b.recv_batch(Duration::from_secs(2), Duration::ZERO, &mut got).expect("recv");
        }
        // One byte over the limit is kept, so the codec sees it is too long.
        assert_eq!(got[0].0.len(), MAX_DATAGRAM + 1);
        assert_eq!(&got[1].0[..], b"next");
    }

    #[test]
    fn a_port_in_use_is_a_clear_error() {
        let a = Transport::bind("127.0.0.1:0".parse().expect("addr"), &FaultConfig::default()).expect("bind");
        let taken = a.local_addr().expect("addr");
        let e = Transport::bind(taken, &FaultConfig::default()).expect_err("in use").to_string();
        assert!(e.contains(&taken.to_string()) && e.contains("in use"), "{e}");
    }
}
