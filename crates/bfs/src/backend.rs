//! Where a relay's requests go: the replicated cluster (a pool of BFT client
//! identities, each with one request outstanding, as the library allows), or
//! the same service in this process without replication (the baseline).
//!
//! A [`Pool`] runs one worker thread per backend; calls queue in a bounded
//! channel, so a flood of calls waits instead of growing without limit.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use pbft::service::{ExecContext, ReadContext, Service, StateRegion, StateRegionRef};
use pbft::state::{PagedState, TreeShape};
use pbft::ClientId;
use pbft_node::ClusterClient;

use crate::{BfsConfig, BfsConfigError, BfsService};

/// Why a call got no result.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cluster: {0}")]
    Cluster(#[from] pbft_node::NodeError),
    #[error("the state of the in-process service is unusable")]
    State,
    #[error("the backend pool has stopped")]
    Stopped,
    #[error("NFS server: {0}")]
    Remote(String),
}

/// Something that executes one request at a time.
pub trait Backend: Send {
    fn invoke(&mut self, op: &[u8], read_only: bool) -> Result<Vec<u8>, BackendError>;
}

impl Backend for ClusterClient {
    fn invoke(&mut self, op: &[u8], read_only: bool) -> Result<Vec<u8>, BackendError> {
        Ok(ClusterClient::invoke(self, Bytes::copy_from_slice(op), read_only)?.to_vec())
    }
}

/// The service and its state in this process: what `--no-replication` runs.
pub struct Local {
    inner: Arc<Mutex<LocalState>>,
}

struct LocalState {
    state: PagedState,
    service: BfsService,
    last_us: u64,
}

impl Local {
    /// A fresh, empty file system.
    pub fn new(config: BfsConfig) -> Result<Local, BfsConfigError> {
        let service = BfsService::new(config)?;
        let state =
            PagedState::new(config.pages, TreeShape::default()).map_err(|_| BfsConfigError::BadSize(config.pages))?;
        Ok(Local { inner: Arc::new(Mutex::new(LocalState { state, service, last_us: 0 })) })
    }

    /// Another handle on the same file system (for another worker).
    pub fn share(&self) -> Local {
        Local { inner: self.inner.clone() }
    }
}

impl Backend for Local {
    fn invoke(&mut self, op: &[u8], read_only: bool) -> Result<Vec<u8>, BackendError> {
        let mut guard = self.inner.lock().map_err(|_| BackendError::State)?;
        let st = &mut *guard;
        let pages = st.service.state_pages();
        if read_only {
            let region = StateRegionRef::new(&st.state, 0, pages).map_err(|_| BackendError::State)?;
            let ctx = ReadContext { client: ClientId(0), state: region };
            if let Some(r) = st.service.execute_read_only(op, &ctx) {
                return Ok(r);
            }
        }
        // The baseline's agreed time is this machine's clock, kept increasing.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        st.last_us = now.max(st.last_us + 1);
        let region = StateRegion::new(&mut st.state, 0, pages).map_err(|_| BackendError::State)?;
        let mut ctx = ExecContext { client: ClientId(0), nondet_time_us: st.last_us, state: region };
        Ok(st.service.execute(op, &mut ctx))
    }
}

type Done = Box<dyn FnOnce(Result<Vec<u8>, BackendError>) + Send>;

struct Job {
    op: Vec<u8>,
    read_only: bool,
    done: Done,
}

/// Worker threads, one per backend, taking calls from one bounded queue.
pub struct Pool {
    tx: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    pub fn new(backends: Vec<Box<dyn Backend>>) -> Pool {
        let (tx, rx) = sync_channel::<Job>(backends.len() * 4 + 16);
        let rx = Arc::new(Mutex::new(rx));
        let workers = backends.into_iter().map(|b| {
            let rx = rx.clone();
            std::thread::spawn(move || work(b, &rx))
        });
        Pool { tx: Some(tx), workers: workers.collect() }
    }

    /// A pool of the cluster's BFT clients `first..end`, their keys beside
    /// the cluster file.
    pub fn of_cluster(cluster: &pbft_node::Cluster, (first, end): (u32, u32)) -> Result<Pool, BackendError> {
        let options = pbft_node::ClientOptions { timeout: std::time::Duration::from_secs(20), ..Default::default() };
        let mut backends: Vec<Box<dyn Backend>> = Vec::new();
        for id in first..end {
            let client = ClusterClient::open(cluster, id, &cluster.default_client_key_path(id), &options)?;
            backends.push(Box::new(client));
        }
        Ok(Pool::new(backends))
    }

    /// The file service in this process, without replication.
    pub fn local(pages: u64) -> Result<Pool, BfsConfigError> {
        let local = Local::new(BfsConfig { pages, root_squash: false })?;
        // Calls run one at a time (one lock); a few workers keep the queue moving.
        Ok(Pool::new((0..4).map(|_| Box::new(local.share()) as Box<dyn Backend>).collect()))
    }

    /// `n` connections to the NFSv3 server at `addr`.
    pub fn of_nfs_server(addr: std::net::SocketAddr, n: usize) -> Result<Pool, BackendError> {
        let mut backends: Vec<Box<dyn Backend>> = Vec::new();
        for _ in 0..n {
            backends.push(Box::new(crate::nfs_client::NfsTcp::connect(addr)?));
        }
        Ok(Pool::new(backends))
    }

    /// Queues a call; `done` runs on a worker thread with its result.
    pub fn submit(&self, op: Vec<u8>, read_only: bool, done: Done) {
        let job = Job { op, read_only, done };
        if let Some(tx) = &self.tx {
            if let Err(e) = tx.send(job) {
                (e.0.done)(Err(BackendError::Stopped));
            }
        }
    }

    /// Runs a call and waits for its result.
    pub fn call(&self, op: Vec<u8>, read_only: bool) -> Result<Vec<u8>, BackendError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(
            op,
            read_only,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().map_err(|_| BackendError::Stopped)?
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn work(mut backend: Box<dyn Backend>, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let r = backend.invoke(&job.op, job.read_only);
        (job.done)(r);
    }
}
