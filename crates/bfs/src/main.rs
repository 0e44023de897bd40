//! `bfs`: the Byzantine-fault-tolerant NFSv3 file service.
//!
//! - `bfs up`: 4 replicas and a relay on 127.0.0.1, until Ctrl-C;
//! - `bfs keygen`, `bfs replica`, `bfs relay`: the same pieces one at a time,
//!   with the same kind of cluster file as `pbft`, for several hosts;
//! - `--no-replication`: the same service in the relay's process (the baseline).
//!
//! Every failure is one line on stderr and a non-zero exit.

mod bench;
mod ganesha;
mod plot;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use bfs::backend::Pool;
use bfs::fuse::BfsFuse;
use bfs::local::LocalCluster;
use bfs::relay::Relay;
use bfs::{BfsConfig, BfsService};
use clap::{Args, Parser, Subcommand};
use pbft_node::cluster::ServiceParams;
use pbft_node::keygen::{keygen, KeygenSpec};
use pbft_node::{Cluster, FaultyMode, HostOptions, ReplicaHost};

#[derive(Parser)]
#[command(name = "bfs", version, about = "BFS: an NFSv3 file service replicated with PBFT")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start 4 replicas and a relay on 127.0.0.1 and print how to mount it.
    Up(UpArgs),
    /// Write DIR/cluster.toml (sized for 32 KiB READ and WRITE) and the keys.
    Keygen(KeygenArgs),
    /// Run one replica of the file service.
    Replica(ReplicaArgs),
    /// Run the NFS relay in front of a cluster (or of an unreplicated service).
    Relay(RelayArgs),
    /// Mount the file service at DIR through FUSE (same requests as the relay).
    Mount(MountArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The Andrew benchmark through FUSE: BFS against BFS without replication.
    Andrew(bench::AndrewArgs),
}

#[derive(Args)]
struct MountArgs {
    /// Where to mount.
    dir: PathBuf,
    /// The cluster file (not needed with --no-replication or --nfs).
    #[arg(long, required_unless_present_any = ["no_replication", "nfs"])]
    config: Option<PathBuf>,
    /// Mount another NFSv3 server instead (e.g. nfs-ganesha), at HOST:PORT over TCP.
    #[arg(long)]
    nfs: Option<SocketAddr>,
    /// That server's MOUNT port (default: the NFS port).
    #[arg(long)]
    mount_port: Option<u16>,
    /// The export to mount from that server.
    #[arg(long, default_value = "/")]
    export: String,
    /// The BFT client ids this mount uses, FIRST..END; other than any relay's.
    #[arg(long, default_value = "8..12", value_parser = parse_range)]
    clients: (u32, u32),
    /// A private, unreplicated file system (for comparisons).
    #[arg(long)]
    no_replication: bool,
    #[arg(long, default_value_t = 1 << 18)]
    pages: u64,
}

#[derive(Args)]
struct UpArgs {
    /// TCP port of the relay (NFS, MOUNT and PORTMAP); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Pages (4 KiB) of file-system state; never-written pages cost nothing.
    #[arg(long, default_value_t = 1 << 18)]
    pages: u64,
    /// Run the file service in this process, without replication (the baseline).
    #[arg(long)]
    no_replication: bool,
    /// Make replica ID misbehave, as ID:MODE (tests).
    #[arg(long, value_parser = parse_faulty)]
    faulty: Option<(u16, FaultyMode)>,
    /// Keep the cluster files and replica logs here instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args)]
struct KeygenArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    hosts: Vec<String>,
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// BFT client identities: the relay uses a pool of them.
    #[arg(long, default_value_t = 16)]
    clients: u32,
    #[arg(long, default_value_t = 1 << 18)]
    pages: u64,
    /// Serve each replica's metrics on its host's address, readable by anyone
    /// who can reach it, instead of on that host's loopback address.
    #[arg(long)]
    public_metrics: bool,
}

fn parse_faulty(s: &str) -> Result<(u16, FaultyMode), String> {
    let (id, mode) = s.split_once(':').ok_or("expected ID:MODE, e.g. 3:wrong-reply")?;
    let id = id.parse().map_err(|_| format!("{id:?} is no replica id"))?;
    Ok((id, mode.parse()?))
}

#[derive(Args)]
struct ReplicaArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    id: u16,
    #[arg(long)]
    key: Option<PathBuf>,
    /// Misbehave on purpose (tests only).
    #[arg(long, value_parser = |s: &str| s.parse::<FaultyMode>())]
    faulty: Option<FaultyMode>,
    /// Where the replica keeps its state (default: replica-ID-state beside the cluster file).
    #[arg(long, conflicts_with = "in_memory")]
    state_dir: Option<PathBuf>,
    #[arg(long)]
    in_memory: bool,
}

#[derive(Args)]
struct RelayArgs {
    /// The cluster file (not needed with --no-replication).
    #[arg(long, required_unless_present = "no_replication")]
    config: Option<PathBuf>,
    /// Where NFS, MOUNT and PORTMAP listen.
    #[arg(long, default_value = "127.0.0.1:2049")]
    listen: SocketAddr,
    /// The BFT client ids this relay uses, FIRST..END (a pool, one call outstanding each).
    #[arg(long, default_value = "0..8", value_parser = parse_range)]
    clients: (u32, u32),
    #[arg(long)]
    no_replication: bool,
    /// Pages of state with --no-replication.
    #[arg(long, default_value_t = 1 << 18)]
    pages: u64,
}

fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once("..").ok_or("expected FIRST..END")?;
    let (a, b) = (a.parse().map_err(|_| "bad FIRST")?, b.parse().map_err(|_| "bad END")?);
    if a >= b {
        return Err("empty range".into());
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = if matches!(cli.command, Command::Replica(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log));
    // No colour codes when stderr is a file (a replica's log).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let result = match cli.command {
        Command::Up(a) => run_up(a),
        Command::Keygen(a) => run_keygen(a),
        Command::Replica(a) => run_replica(a),
        Command::Relay(a) => run_relay(a),
        Command::Mount(a) => run_mount(a),
        Command::Bench(BenchCommand::Andrew(a)) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bfs: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run_keygen(a: KeygenArgs) -> Result<()> {
    let spec = KeygenSpec {
        replicas: a.replicas,
        hosts: a.hosts,
        base_port: a.base_port,
        clients: a.clients,
        public_metrics: a.public_metrics,
        protocol: bfs::local::bfs_protocol(),
        service: ServiceParams { bfs_pages: a.pages, ..ServiceParams::default() },
    };
    let path = keygen(&spec, &a.out)?;
    println!("wrote {} and the private keys beside it", path.display());
    Ok(())
}

fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::Relaxed)).context("installing the signal handler")?;
    Ok(stop)
}

fn service_of(cluster: &Cluster) -> Result<BfsService> {
    let s = &cluster.file.service;
    Ok(BfsService::new(BfsConfig { pages: s.bfs_pages, root_squash: s.bfs_root_squash })?)
}

fn run_replica(a: ReplicaArgs) -> Result<()> {
    let cluster = Cluster::load(&a.config)?;
    let key = a.key.unwrap_or_else(|| cluster.default_replica_key_path(a.id));
    let keys = cluster.replica_keys(a.id, &key)?;
    let service = service_of(&cluster)?;
    let state_dir = (!a.in_memory).then(|| a.state_dir.clone().unwrap_or_else(|| cluster.default_state_dir(a.id)));
    let options = HostOptions { faulty: a.faulty, state_dir, ..HostOptions::default() };
    let mut host = ReplicaHost::new(&cluster, a.id, keys, service, &options)?;
    Ok(host.run_serving_metrics(&stop_flag()?)?)
}

fn run_relay(a: RelayArgs) -> Result<()> {
    let (pool, max_op) = match &a.config {
        Some(path) if !a.no_replication => {
            let cluster = Cluster::load(path)?;
            (Pool::of_cluster(&cluster, a.clients)?, cluster.config().max_op_bytes)
        }
        _ => (Pool::local(a.pages)?, usize::MAX),
    };
    let relay = Relay::bind(a.listen, Arc::new(pool), max_op)?;
    let stop = stop_flag()?;
    print_mount_help(relay.local_addr()?.port(), None);
    Ok(relay.run(&stop)?)
}

fn run_mount(a: MountArgs) -> Result<()> {
    let fs = if let Some(addr) = a.nfs {
        let pool = Arc::new(Pool::of_nfs_server(addr, 4)?);
        let mount_addr = SocketAddr::new(addr.ip(), a.mount_port.unwrap_or(addr.port()));
        BfsFuse::remote(pool, mount_addr, &a.export)?
    } else {
        let pool = match &a.config {
            Some(path) if !a.no_replication => Pool::of_cluster(&Cluster::load(path)?, a.clients)?,
            _ => Pool::local(a.pages)?,
        };
        let pool = Arc::new(pool);
        // Formats a new file system, as the relay does.
        pool.call(bfs::request::encode(bfs::PROC_NULL, &bfs::request::Cred::root(), &[]), false)?;
        BfsFuse::new(pool)
    };
    let stop = stop_flag()?;
    eprintln!("mounted at {}; Ctrl-C unmounts", a.dir.display());
    bfs::fuse::mount(fs, &a.dir, &stop).with_context(|| format!("mounting {}", a.dir.display()))
}

fn print_mount_help(port: u16, config: Option<&Path>) {
    println!("NFSv3 relay on 127.0.0.1:{port} (NFS, MOUNT and PORTMAP on one port)");
    println!("libnfs URL:  nfs://127.0.0.1/?nfsport={port}&mountport={port}");
    println!("Linux:       mount -t nfs -o vers=3,tcp,port={port},mountport={port},nolock 127.0.0.1:/ DIR");
    if let Some(c) = config {
        println!("cluster:     {}", c.display());
        println!("FUSE:        bfs mount --config {} DIR", c.display());
    }
    println!("Ctrl-C stops everything.");
}

fn run_up(a: UpArgs) -> Result<()> {
    let stop = stop_flag()?;
    let listen: SocketAddr = ([127, 0, 0, 1], a.port).into();
    if a.no_replication {
        let relay = Relay::bind(listen, Arc::new(Pool::local(a.pages)?), usize::MAX)?;
        print_mount_help(relay.local_addr()?.port(), None);
        return Ok(relay.run(&stop)?);
    }
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = a.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let bin = std::env::current_exe().context("finding the bfs executable")?;
    let faulty = a.faulty.map(|(id, mode)| (id, mode.name().to_string()));
    let local = LocalCluster::start(&bin, &dir, a.pages, 16, faulty)?;
    let (cluster, path) = (&local.cluster, &local.path);
    let relay = Relay::bind(listen, Arc::new(Pool::of_cluster(cluster, (0, 8))?), cluster.config().max_op_bytes)?;
    print_mount_help(relay.local_addr()?.port(), Some(path));
    relay.run(&stop)?;
    drop(local);
    Ok(())
}
