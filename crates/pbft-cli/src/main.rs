//! `pbft`: generate a cluster, run a replica, talk to the cluster as a client,
//! or run a local demo cluster in one command.
//!
//! Every failure is one line on stderr naming the problem, and a non-zero exit.

mod bench;
mod bench_faults;
mod bench_transfer;
mod chaos;
mod demo;
mod demo_show;
mod demo_tally;
mod kv;
mod local;
mod plot;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use pbft_kv::{KvConfig, KvService};
use pbft_node::keygen::{keygen, KeygenSpec};
use pbft_node::{ClientOptions, Cluster, ClusterClient, FaultConfig, FaultyMode, HostOptions, ReplicaHost};

#[derive(Parser)]
#[command(name = "pbft", version, about = "Practical Byzantine Fault Tolerance: replicas, clients and a local demo")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write DIR/cluster.toml and a private key file per replica and client.
    Keygen(KeygenArgs),
    /// Run one replica of the key-value service.
    Replica(ReplicaArgs),
    /// Run one key-value operation against the cluster and print its result.
    Client(ClientArgs),
    /// Start 4 replicas on 127.0.0.1 and clients; while the clients keep
    /// going, make a backup lie, kill the primary, wipe a replica; show it live.
    Demo(demo::DemoArgs),
    /// One table of the cluster from each replica's metrics, and a verdict;
    /// the exit status is non-zero when the cluster cannot serve.
    Status(status::StatusArgs),
    /// Micro-benchmarks (0/0, 4/0, 0/4 KiB, read-write and read-only) against an
    /// unreplicated baseline measured in the same run.
    Bench(bench::BenchArgs),
    /// Kill replicas with SIGKILL and restart them from their state
    /// directories, one at a time, under load; then check that the history is
    /// linearizable and the replicas converge.
    Chaos(chaos::ChaosArgs),
}

#[derive(Args)]
struct KeygenArgs {
    /// Number of replicas, 3f + 1.
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Hosts the replicas run on, comma-separated, assigned round robin.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    hosts: Vec<String>,
    /// Replica i listens on UDP port P+i and serves metrics on TCP port P+n+i;
    /// 0 picks free ports on this machine.
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// Number of clients.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Serve each replica's metrics on its host's address, readable by anyone
    /// who can reach it, instead of on that host's loopback address.
    #[arg(long)]
    public_metrics: bool,
    /// Directory to write (created if missing; an existing cluster is never overwritten).
    #[arg(long)]
    out: PathBuf,
}

/// Faults the transport injects into outgoing datagrams (all off by default).
#[derive(Args, Clone, Debug)]
struct FaultArgs {
    /// Fraction of outgoing datagrams dropped.
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Fraction sent twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Fraction delayed by up to --max-delay-ms.
    #[arg(long, default_value_t = 0.0)]
    delay: f64,
    /// Fraction held back until the next datagram has gone.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    #[arg(long, default_value_t = 10)]
    max_delay_ms: u64,
    /// Seed of the fault injector's random stream.
    #[arg(long, default_value_t = 1)]
    fault_seed: u64,
}

impl FaultArgs {
    fn config(&self) -> FaultConfig {
        FaultConfig {
            drop: self.drop,
            duplicate: self.duplicate,
            delay: self.delay,
            reorder: self.reorder,
            max_delay_us: self.max_delay_ms.saturating_mul(1000),
            seed: self.fault_seed,
        }
    }
}

#[derive(Args)]
struct ReplicaArgs {
    /// The cluster file.
    #[arg(long)]
    config: PathBuf,
    /// This replica's id.
    #[arg(long)]
    id: u16,
    /// Private key file (default: replica-ID.key beside the cluster file).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Misbehave on purpose (tests only): silent, wrong-reply, bad-digest,
    /// forge, lying-checkpoint or slow-primary (as primary, hold every
    /// pre-prepare for 90% of the view-change timeout).
    #[arg(long, value_parser = |s: &str| s.parse::<FaultyMode>())]
    faulty: Option<FaultyMode>,
    /// Bind this UDP address instead of the one in the cluster file.
    #[arg(long)]
    bind: Option<std::net::SocketAddr>,
    /// Where the replica keeps its state and restarts from (default:
    /// replica-ID-state beside the cluster file).
    #[arg(long, conflicts_with = "in_memory")]
    state_dir: Option<PathBuf>,
    /// Keep the state in memory only: a restart starts empty and fetches
    /// everything from the other replicas.
    #[arg(long)]
    in_memory: bool,
    #[command(flatten)]
    faults: FaultArgs,
}

#[derive(Args)]
struct ClientArgs {
    /// The cluster file.
    #[arg(long)]
    config: PathBuf,
    /// This client's id.
    #[arg(long, default_value_t = 0)]
    id: u32,
    /// Private key file (default: client-ID.key beside the cluster file).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout_secs: f64,
    #[command(subcommand)]
    op: kv::OpCommand,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message runs to its first blank line; usage and tips follow.
            let text = e.to_string();
            let message: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            eprintln!("pbft: {} (see pbft --help)", message.join(" ").trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let default_log = if matches!(cli.command, Command::Replica(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let result = match cli.command {
        Command::Keygen(a) => run_keygen(a),
        Command::Replica(a) => run_replica(a),
        Command::Client(a) => run_client(a),
        Command::Demo(a) => demo::run(a),
        Command::Status(a) => status::run(a),
        Command::Bench(a) => bench::run(a).map(|()| ExitCode::SUCCESS),
        Command::Chaos(a) => chaos::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pbft: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run_keygen(a: KeygenArgs) -> Result<ExitCode> {
    let spec = KeygenSpec {
        replicas: a.replicas,
        hosts: a.hosts,
        base_port: a.base_port,
        clients: a.clients,
        public_metrics: a.public_metrics,
        ..KeygenSpec::local(4, 1)
    };
    let path = keygen(&spec, &a.out)?;
    println!(
        "wrote {} with {} replicas and {} clients, and their private keys beside it",
        path.display(),
        a.replicas,
        a.clients
    );
    Ok(ExitCode::SUCCESS)
}

fn run_replica(a: ReplicaArgs) -> Result<ExitCode> {
    let cluster = Cluster::load(&a.config)?;
    let key = a.key.unwrap_or_else(|| cluster.default_replica_key_path(a.id));
    let keys = cluster.replica_keys(a.id, &key)?;
    let pages = cluster.file.service.kv_pages;
    let service = KvService::try_new(KvConfig { pages })
        .with_context(|| format!("{}: [service] kv_pages = {pages}", a.config.display()))?;
    let options = HostOptions {
        faults: a.faults.config(),
        faulty: a.faulty,
        bind: a.bind,
        state_dir: (!a.in_memory).then(|| a.state_dir.clone().unwrap_or_else(|| cluster.default_state_dir(a.id))),
    };
    options.faults.validate()?;
    let mut host = ReplicaHost::new(&cluster, a.id, keys, service, &options)?;
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = stop.clone();
    ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed)).context("installing the signal handler")?;
    let result = host.run_serving_metrics(&stop);
    result?;
    Ok(ExitCode::SUCCESS)
}

fn run_client(a: ClientArgs) -> Result<ExitCode> {
    let op = a.op.to_op()?;
    let cluster = Cluster::load(&a.config)?;
    let key = a.key.unwrap_or_else(|| cluster.default_client_key_path(a.id));
    if !(a.timeout_secs > 0.0 && a.timeout_secs < 1e6) {
        anyhow::bail!("--timeout-secs must be positive");
    }
    let options = ClientOptions { timeout: Duration::from_secs_f64(a.timeout_secs), ..Default::default() };
    let mut client = ClusterClient::open(&cluster, a.id, &key, &options)?;
    let result = kv::invoke(&mut client, &op)?;
    let (text, ok) = kv::describe(&result);
    println!("{text}");
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// An error and its causes on one line, leaving out causes whose text the
/// message already contains (the runtime's errors quote their source).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}
