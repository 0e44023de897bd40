//! The runtime's errors. Each names the file, address or id at fault in one
//! line, so that a command-line tool can print it as is.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the runtime could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A cluster file that is not valid TOML or does not have the expected fields.
    #[error("{path}: malformed cluster file: {message}")]
    Malformed { path: PathBuf, message: String },
    /// A cluster file that parses but describes an unusable cluster.
    #[error("{path}: invalid cluster file: {message}")]
    Invalid { path: PathBuf, message: String },
    /// An id that the cluster file does not list.
    #[error("{what} {id} is not in the cluster file (it lists {what}s 0..{count})")]
    UnknownId { what: &'static str, id: u64, count: usize },
    /// A private key file that is not 32 bytes in hex, or that does not match
    /// the public key the cluster file lists for its owner.
    #[error("{path}: {message}")]
    BadKey { path: PathBuf, message: String },
    /// A socket could not be bound (for example, the port is in use).
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Another socket or process error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The core refused the configuration.
    #[error("cannot start the replica: {0}")]
    Replica(#[from] pbft::ReplicaError),
    /// A client request was refused by the client core.
    #[error("{0}")]
    Client(#[from] pbft::ClientError),
    /// A client request did not complete in time.
    #[error("no reply certificate within {0:?} (are the replicas running?)")]
    Timeout(std::time::Duration),
    /// A fault-injection setting out of range.
    #[error("fault injection: {0}")]
    Faults(String),
    /// A process of a local cluster could not be started or did not come up.
    #[error("local cluster: {0}")]
    Launch(String),
}

impl NodeError {
    /// An [`NodeError::Io`] with a description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> NodeError {
        NodeError::Io { context: context.into(), source }
    }
}
