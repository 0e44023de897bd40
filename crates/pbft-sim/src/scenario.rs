//! Scenarios: what a run exercises. A run is (seed, scenario); the seed picks
//! everything the scenario leaves open (cluster size, which replicas are faulty,
//! loss rates, the workload), so one seed always gives the same run.

use pbft::adversary::FaultyMode;

use crate::rng::SimRng;


/// How a faulty client misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    /// Random bytes.
    Garbage,
    /// Requests with random MACs, and requests in other clients' names.
    ForgedAuth,
    /// Replays requests it saw (its own and other clients') and sends
    /// timestamps out of order.
    Replay,
    /// Operations and datagrams over the size limits.
    Oversized,
    /// A valid MAC for the primary and bad ones for one backup.
    PartialMacs,
    /// Large requests sent to the primary only, so backups must fetch them.
    LargeToPrimaryOnly,
    /// As many requests as it can, as fast as it can (new timestamps each time).
    Flood,
}

impl ClientFault {
    pub const ALL: [ClientFault; 7] = [
        ClientFault::Garbage,
        ClientFault::ForgedAuth,
        ClientFault::Replay,
        ClientFault::Oversized,
        ClientFault::PartialMacs,
        ClientFault::LargeToPrimaryOnly,
        ClientFault::Flood,
    ];
}

/// The scenario families that sweeps cycle through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Clean,
    Lossy,
    Partitions,
    Crashes,
    Byzantine,
    FaultyClients,
    Mixed,
    /// The primaries of the first views crash, are cut off, restart with their
    /// state wiped, or lie (up to f of them, so several view changes in a row).
    Primaries,
    /// One replica at a time (the primary often) crashes and restarts from
    /// its disk (saved state and durable log) at random points, every replica
    /// several times; never more than f down at once.
    Rotating,
    /// Every replica crashes at the same moment, once or more, and restarts
    /// from its disk.
    ClusterCrash,
}

impl Family {
    pub const ALL: [Family; 10] = [
        Family::Clean,
        Family::Lossy,
        Family::Partitions,
        Family::Crashes,
        Family::Byzantine,
        Family::FaultyClients,
        Family::Mixed,
        Family::Primaries,
        Family::Rotating,
        Family::ClusterCrash,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Clean => "clean",
            Family::Lossy => "lossy",
            Family::Partitions => "partitions",
            Family::Crashes => "crashes",
            Family::Byzantine => "byzantine",
            Family::FaultyClients => "faulty-clients",
            Family::Mixed => "mixed",
            Family::Primaries => "primaries",
            Family::Rotating => "rotating",
            Family::ClusterCrash => "cluster-crash",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Everything one run does, derived from (seed, family).
#[derive(Clone, Debug)]
pub struct Scenario {
    pub family: Family,
    pub f: usize,
    pub clients: usize,
    pub ops_per_client: usize,
    /// Keys the correct clients use.
    pub keys: usize,
    pub checkpoint_interval: u64,
    pub loss: f64,
    pub duplicate: f64,
    /// Network delay bounds in microseconds (uniform; the spread reorders).
    pub min_delay_us: u64,
    pub max_delay_us: u64,
    /// Replicas that may be faulty in this run (never the primary, at most f).
    pub byzantine: Vec<(usize, FaultyMode)>,
    /// Replicas crashed at some time and restarted later.
    pub crashes: Vec<(usize, u64, u64)>,
    /// Of the crashed replicas, those that restart with their state wiped.
    pub wiped: Vec<usize>,
    /// Of the crashed replicas, those that restart from the pages saved at
    /// their last stable checkpoint (as from disk), with `true` when some
    /// saved pages are corrupt (a torn write).
    pub from_disk: Vec<(usize, bool)>,
    /// Backups cut off from everyone between two times.
    pub partitions: Vec<(usize, u64, u64)>,
    pub faulty_clients: Vec<ClientFault>,
    /// Time after which the network is clean and every crashed replica is back.
    pub heal_at_us: u64,
    /// Per-replica clock skew, within half the non-determinism bound.
    pub clock_skew_us: Vec<i64>,
    /// How long a replica's disk takes to make its durable log's records
    /// durable (`durability = "power"`: a crash before then loses them, and
    /// the replica's messages wait for them); 0 models "process", where a
    /// written record survives the crash of the process at once.
    pub fsync_us: u64,
}

impl Scenario {
    pub fn generate(seed: u64, family: Family) -> Scenario {
        let mut rng = SimRng::new(seed ^ 0x5eed_5eed_0000_0000);
        // f = 1 most often: it is the common deployment and the fastest to simulate.
        let f = match rng.below(10) {
            0..=5 => 1,
            6..=8 => 2,
            _ => 3,
        };
        let n = 3 * f + 1;
        let clients = 2 + rng.below(3) as usize;
        let mut s = Scenario {
            family,
            f,
            clients,
            ops_per_client: 25 + rng.below(25) as usize,
            keys: 3 + rng.below(5) as usize,
            checkpoint_interval: [4, 8, 16][rng.below(3) as usize],
            loss: 0.0,
            duplicate: 0.0,
            min_delay_us: 100,
            max_delay_us: 300 + rng.below(3000),
            byzantine: Vec::new(),
            crashes: Vec::new(),
            wiped: Vec::new(),
            from_disk: Vec::new(),
            partitions: Vec::new(),
            faulty_clients: Vec::new(),
            heal_at_us: 0,
            clock_skew_us: (0..n).map(|_| rng.below(200_000) as i64 - 100_000).collect(),
            fsync_us: 0,
        };
        // The backups that may misbehave: at most f of them, never replica 0 (the
        // primary of view 0; a faulty primary needs view changes).
        let mut backups: Vec<usize> = (1..n).collect();
        rng.shuffle(&mut backups);
        let faulty: Vec<usize> = backups[..1 + rng.below(f as u64) as usize].to_vec();
        let window = 2_000_000 + rng.below(4_000_000);
        match family {
            Family::Clean => {}
            Family::Lossy => s.lossy(&mut rng),
            Family::Partitions => {
                s.lossy_mild(&mut rng);
                for &r in &faulty {
                    let start = rng.below(window);
                    s.partitions.push((r, start, start + 200_000 + rng.below(1_500_000)));
                }
            }
            Family::Crashes => {
                s.lossy_mild(&mut rng);
                for &r in &faulty {
                    let start = rng.below(window);
                    s.crashes.push((r, start, start + 100_000 + rng.below(2_000_000)));
                    match rng.below(10) {
                        0..=2 => s.wiped.push(r),
                        3..=5 => s.from_disk.push((r, rng.chance(0.5))),
                        _ => {}
                    }
                }
            }
            Family::Primaries => {
                s.lossy_mild(&mut rng);
                // Replica v is the primary of view v: faulty primaries in a row.
                let k = 1 + rng.below(f as u64) as usize;
                for r in 0..k {
                    // Early: a run's workload often ends within a second.
                    let start = rng.below(300_000);
                    match rng.below(5) {
                        0 => {
                            s.crashes.push((r, start, start + 100_000 + rng.below(2_000_000)));
                            match rng.below(3) {
                                0 => s.wiped.push(r),
                                1 => s.from_disk.push((r, rng.chance(0.5))),
                                _ => {}
                            }
                        }
                        1 => s.partitions.push((r, start, start + 200_000 + rng.below(1_500_000))),
                        _ => s.byzantine.push((r, FaultyMode::PRIMARY[rng.below(FaultyMode::PRIMARY.len() as u64) as usize])),
                    }
                }
            }
            Family::Rotating => {
                s.lossy_mild(&mut rng);
                // Many operations, so that the crashes land all through the run.
                s.ops_per_client = 60 + rng.below(60) as usize;
                let mut at = rng.below(100_000);
                for round in 0..2 + rng.below(2) {
                    let mut order: Vec<usize> = (0..n).collect();
                    rng.shuffle(&mut order);
                    // The primary of view 0 first, half the time.
                    if round == 0 && rng.chance(0.5) {
                        order.retain(|r| *r != 0);
                        order.insert(0, 0);
                    }
                    for r in order {
                        let down = 50_000 + rng.below(600_000);
                        s.crashes.push((r, at, at + down));
                        at += down + rng.below(300_000);
                    }
                }
                s.from_disk = (0..n).map(|r| (r, false)).collect();
            }
            Family::ClusterCrash => {
                s.lossy_mild(&mut rng);
                s.ops_per_client = 60 + rng.below(60) as usize;
                if rng.chance(0.5) {
                    s.fsync_us = 200 + rng.below(2_000);
                }
                let mut at = 20_000 + rng.below(300_000);
                for _ in 0..1 + rng.below(3) {
                    let down = 10_000 + rng.below(300_000);
                    for r in 0..n {
                        s.crashes.push((r, at, at + down));
                    }
                    at += down + 50_000 + rng.below(800_000);
                }
                s.from_disk = (0..n).map(|r| (r, false)).collect();
            }
            Family::Byzantine => {
                s.lossy_mild(&mut rng);
                let mode = FaultyMode::ANY_REPLICA[rng.below(FaultyMode::ANY_REPLICA.len() as u64) as usize];
                for &r in &faulty {
                    // Usually one mode for all, sometimes a mix.
                    let m = if rng.chance(0.3) { FaultyMode::ANY_REPLICA[rng.below(FaultyMode::ANY_REPLICA.len() as u64) as usize] } else { mode };
                    s.byzantine.push((r, m));
                }
            }
            Family::FaultyClients => {
                s.lossy_mild(&mut rng);
                let k = 1 + rng.below(3) as usize;
                for _ in 0..k {
                    s.faulty_clients.push(ClientFault::ALL[rng.below(ClientFault::ALL.len() as u64) as usize]);
                }
            }
            Family::Mixed => {
                s.lossy(&mut rng);
                for &r in &faulty {
                    let start = rng.below(window);
                    match rng.below(3) {
                        0 => s.byzantine.push((r, FaultyMode::ANY_REPLICA[rng.below(FaultyMode::ANY_REPLICA.len() as u64) as usize])),
                        1 => s.crashes.push((r, start, start + 100_000 + rng.below(2_000_000))),
                        _ => s.partitions.push((r, start, start + 200_000 + rng.below(1_500_000))),
                    }
                }
                if rng.chance(0.5) {
                    s.faulty_clients.push(ClientFault::ALL[rng.below(ClientFault::ALL.len() as u64) as usize]);
                }
            }
        }
        // A client that forges MACs for a backup needs f+1 correct backups that can
        // check its requests; with faulty replicas there may be too few.
        if !s.byzantine.is_empty() || !s.crashes.is_empty() || !s.partitions.is_empty() {
            s.faulty_clients.retain(|c| *c != ClientFault::PartialMacs);
        }
        let last_fault = s.crashes.iter().chain(&s.partitions).map(|(_, _, end)| *end).max().unwrap_or(0);
        s.heal_at_us = last_fault.max(window);
        s
    }

    fn lossy(&mut self, rng: &mut SimRng) {
        self.loss = 0.02 + rng.unit() * 0.13;
        self.duplicate = rng.unit() * 0.1;
    }

    fn lossy_mild(&mut self, rng: &mut SimRng) {
        if rng.chance(0.5) {
            self.loss = rng.unit() * 0.05;
            self.duplicate = rng.unit() * 0.05;
        }
    }

    pub fn n(&self) -> usize {
        3 * self.f + 1
    }

    /// One line describing the run, printed with its result.
    pub fn describe(&self) -> String {
        format!(
            "{} n={} clients={}x{} K={} loss={:.3} dup={:.3} delay={}..{}us byz={:?} crashes={:?} wiped={:?} from_disk={:?} fsync={}us partitions={:?} faulty_clients={:?}",
            self.family.name(),
            self.n(),
            self.clients,
            self.ops_per_client,
            self.checkpoint_interval,
            self.loss,
            self.duplicate,
            self.min_delay_us,
            self.max_delay_us,
            self.byzantine,
            self.crashes,
            self.wiped,
            self.from_disk,
            self.fsync_us,
            self.partitions,
            self.faulty_clients
        )
    }
}
