//! How a host carries out a replica's effects: one path for the simulator and
//! the real runtime.
//!
//! A host says where nodes are ([`Host::replica`], [`Host::others`],
//! [`Host::client`]), how a datagram leaves ([`Host::transmit`]) and what it
//! does with everything else the replica reports ([`Host::observe`]);
//! [`carry_out`] turns each [`Effect::Send`] into datagrams, through the
//! replica's [`Adversary`] when it runs a faulty mode.

use bytes::Bytes;

use crate::adversary::Adversary;
use crate::effects::{Dest, Effect, Outbox};
use crate::types::{ClientId, Instant, ReplicaId};

/// Where one datagram goes, as [`Host::transmit`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To<A> {
    /// Every other replica.
    Others,
    One(A),
}

/// A replica's host, as [`carry_out`] sees it.
pub trait Host {
    /// A node's address.
    type Addr: Copy;
    /// Where replica `r` is, if it exists.
    fn replica(&self, r: ReplicaId) -> Option<Self::Addr>;
    /// Every other replica: where a multicast goes.
    fn others(&self) -> &[Self::Addr];
    /// Where client `c` is, if known (a host that does not know counts it).
    fn client(&mut self, c: ClientId) -> Option<Self::Addr>;
    /// Sends `bytes`.
    fn transmit(&mut self, now: Instant, to: To<Self::Addr>, bytes: Bytes);
    /// Whatever the replica reported that is not a datagram to send. Records
    /// for the durable log ([`Effect::Persist`]) and stable checkpoints come
    /// first, before [`Host::sync`].
    fn observe(&mut self, now: Instant, effect: Effect);
    /// Writes what [`Host::observe`] just took to disk. When `gating` is set,
    /// the outbox's datagrams may depend on it: it must be as durable as the
    /// host's durability setting says before this returns, and they leave
    /// after. When it is not (every record only [`Record::gates_sends`]
    /// false), the host may leave it unsynced until a later sync.
    ///
    /// [`Record::gates_sends`]: crate::journal::Record::gates_sends
    fn sync(&mut self, now: Instant, gating: bool);
}

/// Carries out `out`'s effects at `now`: first what must be on disk before
/// the replica speaks (records for the durable log, stable checkpoints), then
/// [`Host::sync`] (told whether the datagrams must wait for it), then the rest
/// in order. A faulty replica's datagrams go
/// through its `adversary`, which decides what really leaves.
pub fn carry_out<H: Host>(
    host: &mut H,
    now: Instant,
    out: &mut Outbox,
    mut adversary: Option<&mut Adversary<H::Addr>>,
) {
    let durable = |e: &Effect| matches!(e, Effect::Persist(_) | Effect::StableCheckpoint { .. });
    // One pass: is anything to be made durable, and must the datagrams wait for it?
    let (mut any, mut gating) = (false, false);
    for e in &out.effects {
        match e {
            Effect::Persist(records) => {
                any = true;
                gating = gating || records.iter().any(|r| r.gates_sends());
            }
            Effect::StableCheckpoint { .. } => (any, gating) = (true, true),
            _ => {}
        }
    }
    if any {
        // Taken out in place, the rest left in order: no copy of the outbox.
        for effect in out.effects.extract_if(.., |e| durable(e)) {
            host.observe(now, effect);
        }
        host.sync(now, gating);
    }
    for effect in out.drain() {
        let Effect::Send { to, bytes } = effect else {
            host.observe(now, effect);
            continue;
        };
        let to = match to {
            Dest::AllReplicas => To::Others,
            Dest::Replica(r) => match host.replica(r) {
                Some(a) => To::One(a),
                None => continue,
            },
            Dest::Client(c) => match host.client(c) {
                Some(a) => To::One(a),
                None => continue,
            },
        };
        match adversary.as_deref_mut() {
            None => host.transmit(now, to, bytes),
            Some(adversary) => {
                let targets = match to {
                    To::Others => host.others().to_vec(),
                    To::One(a) => vec![a],
                };
                for (t, b) in adversary.outbound(now.as_us(), &targets, bytes) {
                    host.transmit(now, To::One(t), b);
                }
            }
        }
    }
}
