//! PBFT, Castro and Liskov's Practical Byzantine Fault Tolerance, as a
//! deterministic, sans-IO state machine.
//!
//! The core never reads a clock, opens a socket, spawns a thread or draws random
//! numbers: time and bytes come in as arguments ([`Replica::on_datagram`],
//! [`Replica::handle_timeout`] when [`Replica::poll_timeout`] says) and what
//! to do comes out as [`effects::Effect`]s (a client's as
//! [`effects::ClientEffect`]s). The simulator (`pbft-sim`) and the real
//! runtime drive the same code.
//!
//! Map of the crate, following TOCS 2002:
//! - [`wire`]: messages and their canonical encoding;
//! - [`auth`]: session keys and MAC authenticators;
//! - [`replica`]: the replica: parts that own its state, one protocol phase per file;
//! - [`tally`]: the one way to count f+1 / 2f+1 distinct replicas;
//! - [`timers`]: the deadlines a node keeps for itself;
//! - [`client`]: request submission, retransmission and reply certificates;
//! - [`state`]: the paged service state, copy-on-write checkpoints, the partition tree;
//! - [`service`]: the trait an application implements.

pub mod adversary;
pub mod auth;
#[cfg(feature = "deliberate-bugs")]
pub mod bugs;
pub mod client;
pub mod config;
pub mod effects;
pub mod host;
pub mod journal;
pub mod metrics;
pub mod replica;
pub mod service;
pub mod state;
pub mod tally;
pub mod timers;
pub mod types;
pub mod view_change;
pub mod wire;

pub use client::{Client, ClientError};
pub use config::Config;
pub use effects::{ClientEffect, ClientOutbox, Dest, Effect, Execution, Outbox, Received, Timer};
pub use replica::{Replica, ReplicaError, Restored, SavedState, INVARIANTS_CHECKED};
pub use service::Service;
pub use types::{ClientId, Digest, Instant, NodeId, ReplicaId, SeqNo, Timestamp, View};
