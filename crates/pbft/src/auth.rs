//! Session keys and MAC authenticators (TOCS 2002 §3.2 and §4.1).
//!
//! Every ordered pair of principals (sender, receiver) shares a session key. A
//! message to the replicas carries an *authenticator*: one 128-bit MAC per replica,
//! each over the digest of the message's authenticated part with the key that
//! sender shares with that replica. A message to one client carries one MAC.
//!
//! Initial keys come from static X25519 key pairs in the configuration: the key for
//! `a → b` is derived from the Diffie-Hellman secret of a and b and both names, so
//! no secret is ever shared with a third party. [`KeyTable::install_inbound`] and
//! [`KeyTable::install_outbound`] are the only places where keys change, for the
//! key refresh of proactive recovery to come.
//!
//! Parse, authenticate, then act: [`KeyTable::verify`] is the only way to turn an
//! [`Envelope`] into a [`Verified`] value, and protocol handlers only take those.

use bytes::Bytes;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::types::{ClientId, Digest, NodeId, ReplicaId};
use crate::wire::{self, Envelope, Message, Tag, WireError, TAG_LEN};

/// A 256-bit session key.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey(pub [u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// Why a message was not accepted as authentic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("malformed: {0}")]
    Malformed(#[from] WireError),
    #[error("no session key for the sender")]
    UnknownSender,
    #[error("wrong number of MACs in the authenticator")]
    WrongTagCount,
    #[error("MAC does not verify")]
    BadMac,
    #[error("message kind not allowed from this sender")]
    WrongSenderKind,
}

/// A message whose MAC for this node verified. Only [`KeyTable::verify`] makes one.
#[derive(Clone, Debug)]
pub struct Verified {
    sender: NodeId,
    message: Message,
    raw: Bytes,
}

impl Verified {
    pub fn sender(&self) -> NodeId {
        self.sender
    }
    pub fn message(&self) -> &Message {
        &self.message
    }
    pub fn into_message(self) -> Message {
        self.message
    }
    /// The datagram as received, for forwarding unchanged: its authenticator still
    /// holds a MAC for every replica.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
}

/// A message this replica could not authenticate (it holds no valid MAC for
/// it, or another replica relayed it) but may use all the same, because a
/// digest it already trusts names its content: the batch a NEW-VIEW or 2f+1
/// COMMITs chose, a request body that a batch names, a VIEW-CHANGE that a
/// NEW-VIEW names. Only [`Vouched::by_digest`] makes one, and only when the
/// message's digest is one the replica trusts: the type shows what was checked.
#[derive(Clone, Debug)]
pub struct Vouched<M> {
    message: M,
    raw: Bytes,
    digest: Digest,
}

impl<M> Vouched<M> {
    /// `message` (received as `raw`), whose digest is `digest`, if `trusted`
    /// says a digest this replica already holds names it.
    pub fn by_digest(message: M, raw: Bytes, digest: Digest, trusted: impl FnOnce(&Digest) -> bool) -> Option<Vouched<M>> {
        trusted(&digest).then_some(Vouched { message, raw, digest })
    }
    pub fn message(&self) -> &M {
        &self.message
    }
    pub fn digest(&self) -> Digest {
        self.digest
    }
    /// The datagram as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
    pub fn into_parts(self) -> (M, Bytes, Digest) {
        (self.message, self.raw, self.digest)
    }
}

/// Derives the public key of a static secret.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

fn encode_node(n: NodeId) -> [u8; 5] {
    let mut b = [0u8; 5];
    match n {
        NodeId::Replica(r) => b[1..].copy_from_slice(&(r.0 as u32).to_le_bytes()),
        NodeId::Client(c) => {
            b[0] = 1;
            b[1..].copy_from_slice(&c.0.to_le_bytes());
        }
    }
    b
}

/// The key for messages from `from` to `to`, given their shared DH secret.
fn derive_session_key(dh: &[u8; 32], from: NodeId, to: NodeId) -> SessionKey {
    let mut material = Vec::with_capacity(42);
    material.extend_from_slice(dh);
    material.extend_from_slice(&encode_node(from));
    material.extend_from_slice(&encode_node(to));
    SessionKey(blake3::derive_key("pbft session key v1 from static x25519", &material))
}

/// One MAC: keyed BLAKE3 over a message digest, truncated to 128 bits.
pub fn mac(key: &SessionKey, digest: &Digest) -> Tag {
    let full = blake3::keyed_hash(&key.0, &digest.0);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full.as_bytes()[..TAG_LEN]);
    tag
}

fn tags_equal(a: &Tag, b: &Tag) -> bool {
    // Constant time: a forger must not learn how many bytes matched.
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who a message is authenticated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Every replica (a vector of n MACs; the sender's own slot is zero).
    Replicas,
    /// One client (one MAC): replies. A replica takes only authenticators,
    /// one MAC for each replica, and finds its own at its index; a single MAC
    /// for a replica would never verify, so there is no way to ask for one.
    Client(ClientId),
}

/// The session keys of one principal.
#[derive(Clone, Debug)]
pub struct KeyTable {
    me: NodeId,
    n: usize,
    /// Keys for messages from me to replica i / client c.
    out_replicas: Vec<Option<SessionKey>>,
    out_clients: Vec<Option<SessionKey>>,
    /// Keys for messages from replica i / client c to me.
    in_replicas: Vec<Option<SessionKey>>,
    in_clients: Vec<Option<SessionKey>>,
}

impl KeyTable {
    /// An empty table for `me` in a cluster of `n` replicas.
    pub fn new(me: NodeId, n: usize) -> KeyTable {
        KeyTable {
            me,
            n,
            out_replicas: vec![None; n],
            out_clients: Vec::new(),
            in_replicas: vec![None; n],
            in_clients: Vec::new(),
        }
    }

    /// Keys derived from static X25519 key pairs: `my_secret` and the public keys
    /// of every replica and (for a replica) of every client.
    pub fn from_static_dh(
        me: NodeId,
        my_secret: &[u8; 32],
        replica_publics: &[[u8; 32]],
        client_publics: &[[u8; 32]],
    ) -> KeyTable {
        let secret = StaticSecret::from(*my_secret);
        let mut t = KeyTable::new(me, replica_publics.len());
        let mut peers: Vec<(NodeId, [u8; 32])> = replica_publics
            .iter()
            .enumerate()
            .map(|(i, p)| (NodeId::Replica(ReplicaId(i as u16)), *p))
            .collect();
        if matches!(me, NodeId::Replica(_)) {
            peers.extend(client_publics.iter().enumerate().map(|(c, p)| (NodeId::Client(ClientId(c as u32)), *p)));
        }
        for (peer, public) in peers {
            if peer == me {
                continue;
            }
            let dh = secret.diffie_hellman(&PublicKey::from(public)).to_bytes();
            t.install_outbound(peer, derive_session_key(&dh, me, peer));
            t.install_inbound(peer, derive_session_key(&dh, peer, me));
        }
        t
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    fn slot(v: &mut Vec<Option<SessionKey>>, i: usize) -> &mut Option<SessionKey> {
        if v.len() <= i {
            v.resize(i + 1, None);
        }
        &mut v[i]
    }

    /// Installs the key that `from` uses to authenticate messages to me.
    pub fn install_inbound(&mut self, from: NodeId, key: SessionKey) {
        match from {
            NodeId::Replica(r) if r.index() < self.n => self.in_replicas[r.index()] = Some(key),
            NodeId::Replica(_) => {}
            NodeId::Client(c) => *Self::slot(&mut self.in_clients, c.0 as usize) = Some(key),
        }
    }

    /// Installs the key I use to authenticate messages to `to`.
    pub fn install_outbound(&mut self, to: NodeId, key: SessionKey) {
        match to {
            NodeId::Replica(r) if r.index() < self.n => self.out_replicas[r.index()] = Some(key),
            NodeId::Replica(_) => {}
            NodeId::Client(c) => *Self::slot(&mut self.out_clients, c.0 as usize) = Some(key),
        }
    }

    fn outbound(&self, to: NodeId) -> Option<&SessionKey> {
        match to {
            NodeId::Replica(r) => self.out_replicas.get(r.index())?.as_ref(),
            NodeId::Client(c) => self.out_clients.get(c.0 as usize)?.as_ref(),
        }
    }

    fn inbound(&self, from: NodeId) -> Option<&SessionKey> {
        match from {
            NodeId::Replica(r) => self.in_replicas.get(r.index())?.as_ref(),
            NodeId::Client(c) => self.in_clients.get(c.0 as usize)?.as_ref(),
        }
    }

    /// Encodes `message` as sent by me and authenticates it for `audience`.
    pub fn seal(&self, message: &Message, audience: Audience) -> Bytes {
        let tag_count = match audience {
            Audience::Replicas => self.n,
            Audience::Client(_) => 1,
        };
        let (mut buf, authenticated_len) = wire::encode_unauthenticated(self.me, message, tag_count);
        let digest = wire::auth_digest(message, &buf[..authenticated_len]);
        let tags_at = authenticated_len + 1;
        match audience {
            Audience::Replicas => {
                for i in 0..self.n {
                    if let Some(k) = self.out_replicas[i].as_ref() {
                        let at = tags_at + i * TAG_LEN;
                        buf[at..at + TAG_LEN].copy_from_slice(&mac(k, &digest));
                    }
                }
            }
            Audience::Client(to) => {
                if let Some(k) = self.outbound(NodeId::Client(to)) {
                    buf[tags_at..tags_at + TAG_LEN].copy_from_slice(&mac(k, &digest));
                }
            }
        }
        buf.freeze()
    }

    /// Checks the MAC meant for me. The message kind must suit the sender: only
    /// clients send requests, only replicas send everything else, and a request's
    /// client field must name its sender.
    pub fn verify(&self, env: Envelope) -> Result<Verified, AuthError> {
        self.verify_or_return(env).map_err(|(e, _)| e)
    }

    /// As [`KeyTable::verify`], but hands the envelope back on failure, for a
    /// caller that still has a use for an unauthenticated message (a request
    /// body that a digest in a batch vouches for).
    pub fn verify_or_return(&self, env: Envelope) -> Result<Verified, (AuthError, Box<Envelope>)> {
        match self.check(&env) {
            Ok(()) => Ok(Verified { sender: env.sender, message: env.message, raw: env.raw }),
            Err(e) => Err((e, Box::new(env))),
        }
    }

    fn check(&self, env: &Envelope) -> Result<(), AuthError> {
        let key = self.inbound(env.sender).ok_or(AuthError::UnknownSender)?;
        let (expected_count, index) = match self.me {
            NodeId::Replica(r) => (self.n, r.index()),
            NodeId::Client(_) => (1, 0),
        };
        if env.tags.len() != expected_count {
            return Err(AuthError::WrongTagCount);
        }
        if !tags_equal(&env.tags[index], &mac(key, &env.auth_digest)) {
            return Err(AuthError::BadMac);
        }
        let kind_ok = match (&env.message, env.sender) {
            (Message::Request(r), NodeId::Client(c)) => r.client == c,
            (Message::Request(_), NodeId::Replica(_)) => false,
            (_, NodeId::Client(_)) => false,
            (Message::Reply(_), NodeId::Replica(_)) => matches!(self.me, NodeId::Client(_)),
            (_, NodeId::Replica(_)) => matches!(self.me, NodeId::Replica(_)),
        };
        if !kind_ok {
            return Err(AuthError::WrongSenderKind);
        }
        Ok(())
    }

    /// Decodes and verifies a datagram in one step.
    pub fn open(&self, raw: Bytes, max_len: usize) -> Result<Verified, AuthError> {
        self.verify(wire::decode(raw, max_len)?)
    }
}

/// The deliberate bug `skip_mac_check`: accepts any message whose kind suits its
/// claimed sender, without looking at the authenticator.
#[cfg(feature = "deliberate-bugs")]
pub fn verify_without_mac(env: Envelope) -> Result<Verified, (AuthError, Box<Envelope>)> {
    match (&env.message, env.sender) {
        (Message::Request(r), NodeId::Client(c)) if r.client == c => {}
        (Message::Request(_), _) | (_, NodeId::Client(_)) => return Err((AuthError::WrongSenderKind, Box::new(env))),
        _ => {}
    }
    Ok(Verified { sender: env.sender, message: env.message, raw: env.raw })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{SeqNo, Timestamp, View};
    use crate::wire::{Prepare, Request};

    fn secret(i: u8) -> [u8; 32] {
        [i.wrapping_mul(31).wrapping_add(7); 32]
    }

    fn cluster(n: usize, clients: usize) -> (Vec<KeyTable>, Vec<KeyTable>) {
        let rp: Vec<_> = (0..n).map(|i| public_key(&secret(i as u8))).collect();
        let cp: Vec<_> = (0..clients).map(|c| public_key(&secret(100 + c as u8))).collect();
        let replicas = (0..n)
            .map(|i| KeyTable::from_static_dh(NodeId::Replica(ReplicaId(i as u16)), &secret(i as u8), &rp, &cp))
            .collect();
        let cls = (0..clients)
            .map(|c| KeyTable::from_static_dh(NodeId::Client(ClientId(c as u32)), &secret(100 + c as u8), &rp, &[]))
            .collect();
        (replicas, cls)
    }

    fn prepare() -> Message {
        Message::Prepare(Prepare { view: View(3), seq: SeqNo(9), digest: Digest::of(b"x") })
    }

    #[test]
    fn every_replica_verifies_a_multicast() {
        let (r, _) = cluster(4, 0);
        let bytes = r[1].seal(&prepare(), Audience::Replicas);
        for (i, t) in r.iter().enumerate() {
            if i == 1 {
                continue;
            }
            let v = t.open(bytes.clone(), 65_000).expect("verifies");
            assert_eq!(v.sender(), NodeId::Replica(ReplicaId(1)));
            assert_eq!(v.message(), &prepare());
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_rejected() {
        let (r, _) = cluster(4, 0);
        let bytes = r[1].seal(&prepare(), Audience::Replicas);
        for pos in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[pos] ^= 0x10;
            // Flipping a bit in another replica's MAC leaves ours valid; nothing else may verify.
            let other_tag = {
                let start = bytes.len() - 4 * TAG_LEN;
                pos >= start && (pos - start) / TAG_LEN != 2
            };
            let res = r[2].open(Bytes::from(b), 65_000);
            assert_eq!(res.is_ok(), other_tag, "bit flip at {pos}");
        }
    }

    #[test]
    fn data_macs_cover_the_pages_through_their_digests() {
        let (r, _) = cluster(4, 0);
        let pages: Vec<u8> = (0..2 * crate::state::PAGE_SIZE).map(|i| (i % 251) as u8).collect();
        let data = wire::Data::from_bytes(SeqNo(32), 7, &pages).expect("whole pages");
        let bytes = r[1].seal(&Message::Data(data.clone()), Audience::Replicas);
        assert_eq!(r[2].open(bytes.clone(), 65_000).expect("verifies").message(), &Message::Data(data.clone()));
        // A bit flipped in the header, in either page or in the tag is caught.
        // Our tag is the third of four.
        let ours = bytes.len() - 2 * TAG_LEN;
        for pos in [4, 20, 40, 40 + crate::state::PAGE_SIZE, bytes.len() - 4 * TAG_LEN - 2, ours + 3] {
            let mut b = bytes.to_vec();
            b[pos] ^= 0x10;
            assert!(r[2].open(Bytes::from(b), 65_000).is_err(), "bit flip at {pos}");
        }
        // A sender whose digests do not match its pages fails the MAC check.
        let mut lying = data;
        lying.digests.reverse();
        let bytes = r[1].seal(&Message::Data(lying), Audience::Replicas);
        assert_eq!(r[2].open(bytes, 65_000).unwrap_err(), AuthError::BadMac);
    }

    #[test]
    fn keys_are_per_ordered_pair() {
        let (r, _) = cluster(4, 0);
        // A message from 1 relabelled as from 3 fails: 3's key with 2 differs.
        let bytes = r[1].seal(&prepare(), Audience::Replicas);
        let mut env = wire::decode(bytes, 65_000).expect("decodes");
        env.sender = NodeId::Replica(ReplicaId(3));
        assert_eq!(r[2].verify(env).unwrap_err(), AuthError::BadMac);
    }

    #[test]
    fn client_requests_and_sender_kinds() {
        let (r, c) = cluster(4, 2);
        let req = Message::Request(Request {
            client: ClientId(1),
            timestamp: Timestamp(5),
            read_only: false,
            replier: None,
            op: Bytes::from_static(b"op"),
        });
        let bytes = c[1].seal(&req, Audience::Replicas);
        assert!(r[0].open(bytes.clone(), 65_000).is_ok());
        // Client 0 cannot send a request in client 1's name.
        let forged = c[0].seal(&req, Audience::Replicas);
        assert_eq!(r[0].open(forged, 65_000).unwrap_err(), AuthError::WrongSenderKind);
        // A replica cannot send a request at all.
        let from_replica = r[1].seal(&req, Audience::Replicas);
        assert_eq!(r[0].open(from_replica, 65_000).unwrap_err(), AuthError::WrongSenderKind);
        // A client cannot send a prepare.
        let p = c[0].seal(&prepare(), Audience::Replicas);
        assert_eq!(r[0].open(p, 65_000).unwrap_err(), AuthError::WrongSenderKind);
    }

    #[test]
    fn unknown_sender_and_wrong_tag_count() {
        let (r, _) = cluster(4, 1);
        let stranger = KeyTable::from_static_dh(
            NodeId::Client(ClientId(9)),
            &secret(200),
            &(0..4).map(|i| public_key(&secret(i))).collect::<Vec<_>>(),
            &[],
        );
        let req = Message::Request(Request {
            client: ClientId(9),
            timestamp: Timestamp(1),
            read_only: false,
            replier: None,
            op: Bytes::new(),
        });
        assert_eq!(r[0].open(stranger.seal(&req, Audience::Replicas), 65_000).unwrap_err(), AuthError::UnknownSender);
        // A replica's message with one MAC (as for a client) is refused.
        let one = r[1].seal(&prepare(), Audience::Client(ClientId(0)));
        assert_eq!(r[0].open(one, 65_000).unwrap_err(), AuthError::WrongTagCount);
    }
}
