//! What the demo's clients saw: every result checked, throughput and latency
//! over the last second, and per phase the operations, a latency histogram
//! and the longest stretch with no operation completing.
//!
//! Memory does not grow with the run: latencies go into logarithmic buckets,
//! and only the last second's completions are kept one by one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::demo::Report;

/// Throughput and latency on the display are over this last stretch.
const WINDOW: Duration = Duration::from_secs(1);

/// Latencies in logarithmic buckets, 8 per doubling (within 6.25% of the
/// true value), so that a long run costs no more memory than a short one.
#[derive(Clone)]
pub(crate) struct LogHistogram {
    counts: Vec<u64>,
    total: u64,
}

impl LogHistogram {
    fn new() -> LogHistogram {
        LogHistogram { counts: vec![0; 16 + 60 * 8 + 8], total: 0 }
    }

    fn bucket(us: u64) -> usize {
        if us < 16 {
            return us as usize;
        }
        let e = 63 - us.leading_zeros() as usize; // 4..=63
        16 + (e - 4) * 8 + ((us >> (e - 3)) & 7) as usize
    }

    /// The middle of bucket `i`, in microseconds.
    fn middle(i: usize) -> f64 {
        if i < 16 {
            return i as f64;
        }
        let (e, sub) = ((i - 16) / 8 + 4, (i - 16) % 8);
        let low = (8 + sub as u64) << (e - 3);
        low as f64 + (1u64 << (e - 3)) as f64 / 2.0
    }

    fn observe(&mut self, d: Duration) {
        let i = Self::bucket(d.as_micros().min(u128::from(u64::MAX)) as u64).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
    }

    /// The `p` quantile in milliseconds (0 if empty).
    pub(crate) fn quantile_ms(&self, p: f64) -> f64 {
        let rank = ((self.total as f64 * p).ceil() as u64).clamp(1, self.total.max(1));
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank && *c > 0 {
                return Self::middle(i) / 1e3;
            }
        }
        0.0
    }
}

/// One phase of the demo as the clients saw it.
pub(crate) struct PhaseFigures {
    pub(crate) title: String,
    /// Says what was going on, for "the longest pause came while ...".
    pub(crate) cause: String,
    pub(crate) started: Instant,
    pub(crate) ended: Option<Instant>,
    pub(crate) ops: u64,
    pub(crate) latency: LogHistogram,
    /// The longest stretch with no operation completing, ending in this phase.
    pub(crate) longest_pause: Duration,
}

/// Everything the clients reported, shared between them and the display.
pub(crate) struct Tally {
    pub(crate) checked: u64,
    pub(crate) wrong: u64,
    pub(crate) first_wrong: Option<String>,
    /// The first client that could not go on.
    pub(crate) failure: Option<String>,
    pub(crate) last_done: Option<Instant>,
    /// Completions within [`WINDOW`]: when, and their latency.
    pub(crate) recent: VecDeque<(Instant, Duration)>,
    pub(crate) phases: Vec<PhaseFigures>,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            checked: 0,
            wrong: 0,
            first_wrong: None,
            failure: None,
            last_done: None,
            recent: VecDeque::new(),
            phases: Vec::new(),
        }
    }

    pub(crate) fn record(&mut self, r: Report) {
        let now = Instant::now();
        match r {
            Report::Checked { latency, wrong } => {
                self.checked += 1;
                if let Some(w) = wrong {
                    self.wrong += 1;
                    self.first_wrong.get_or_insert(w);
                }
                let pause = self.last_done.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                self.last_done = Some(now);
                if let Some(p) = self.phases.last_mut() {
                    p.ops += 1;
                    p.latency.observe(latency);
                    p.longest_pause = p.longest_pause.max(pause);
                }
                self.recent.push_back((now, latency));
                self.trim(now);
            }
            Report::Failed(e) => {
                self.failure.get_or_insert(e);
            }
        }
    }

    fn trim(&mut self, now: Instant) {
        while self.recent.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW) {
            self.recent.pop_front();
        }
    }

    pub(crate) fn begin_phase(&mut self, title: String, cause: String, now: Instant) {
        if let Some(p) = self.phases.last_mut() {
            p.ended = Some(now);
        }
        self.phases.push(PhaseFigures {
            title,
            cause,
            started: now,
            ended: None,
            ops: 0,
            latency: LogHistogram::new(),
            longest_pause: Duration::ZERO,
        });
    }

    /// Throughput, p50 and p99 (ms) over the last [`WINDOW`].
    pub(crate) fn window(&mut self, now: Instant) -> (f64, f64, f64) {
        self.trim(now);
        let mut lat: Vec<Duration> = self.recent.iter().map(|(_, l)| *l).collect();
        lat.sort_unstable();
        let q = |p: f64| {
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
            lat.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        (lat.len() as f64 / WINDOW.as_secs_f64(), q(0.5), q(0.99))
    }
}

/// A count with thousands separators: 1,234,567.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_histogram_quantiles_are_within_a_bucket() {
        let mut h = LogHistogram::new();
        for us in 1..=10_000u64 {
            h.observe(Duration::from_micros(us));
        }
        for (p, exact_ms) in [(0.5, 5.0), (0.9, 9.0), (0.99, 9.9)] {
            let got = h.quantile_ms(p);
            assert!((got - exact_ms).abs() / exact_ms < 0.07, "p{p}: {got} against {exact_ms}");
        }
        for us in [0u64, 1, 15, 16, 17, 1000, 1 << 40, u64::MAX] {
            let i = LogHistogram::bucket(us);
            assert!(i < h.counts.len(), "{us}");
            if (16..1 << 40).contains(&us) {
                let mid = LogHistogram::middle(i);
                assert!((mid - us as f64).abs() / (us as f64) <= 0.0625, "{us}: {mid}");
            }
        }
        assert_eq!(LogHistogram::new().quantile_ms(0.5), 0.0);
    }

    #[test]
    fn pauses_end_in_the_phase_that_caused_them() {
        let mut t = Tally::new();
        let start = Instant::now();
        t.begin_phase("calm".into(), "all was well".into(), start);
        t.record(Report::Checked { latency: Duration::from_millis(1), wrong: None });
        t.begin_phase("storm".into(), "the primary was killed".into(), Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        t.record(Report::Checked { latency: Duration::from_millis(30), wrong: Some("client 0: wrong".into()) });
        assert_eq!((t.checked, t.wrong), (2, 1));
        assert!(t.phases[1].longest_pause >= Duration::from_millis(30));
        assert!(t.phases[0].longest_pause < Duration::from_millis(30));
        assert_eq!(t.first_wrong.as_deref(), Some("client 0: wrong"));
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
