//! The PBFT runtime: the same sans-IO core that the simulator drives, run as
//! one OS process per replica over UDP (DESIGN.md §4).
//!
//! - [`cluster`]: the cluster file (TOML) and private key files;
//! - [`keygen`]: writing a fresh cluster directory;
//! - [`transport`]: the UDP socket, with the [`faults`] layer on its way out;
//! - [`replica_host`]: one replica's event loop;
//! - [`client_host`]: clients, [`ClientGroup`] (many on one socket) and the blocking [`ClusterClient`];
//! - [`metrics`]: Prometheus text over HTTP;
//! - [`launcher`]: child processes of a local cluster, killed when dropped;
//! - [`store`]: the state saved at each stable checkpoint, for restarts;
//! - [`time`]: the clock (UNIX-epoch microseconds, monotonic) and timers.

pub mod client_host;
pub mod cluster;
pub mod error;
pub mod faults;
pub mod journal;
pub mod keygen;
pub mod launcher;
pub mod metrics;
pub mod replica_host;
pub mod store;
pub mod time;
pub mod transport;

pub use client_host::{ClientGroup, ClientOptions, ClusterClient, Completion, GroupStats};
pub use cluster::{Cluster, ClusterFile};
pub use error::NodeError;
pub use faults::FaultConfig;
pub use pbft::adversary::FaultyMode;
pub use replica_host::{HostOptions, ReplicaHost};
