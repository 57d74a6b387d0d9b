//! Probe durations per mechanism (upstream's `prober_probe_duration_seconds`), as lock-free
//! log-scale histograms: 8 buckets per doubling from 1 µs, so a quantile is within ~9 %.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Doublings covered above 1 µs (2^27 µs ≈ 134 s).
const OCTAVES: usize = 27;
const PER_OCTAVE: usize = 8;
const BUCKETS: usize = OCTAVES * PER_OCTAVE + 1;

/// A probe mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `exec`.
    Exec,
    /// `httpGet`.
    Http,
    /// `tcpSocket`.
    Tcp,
    /// `grpc`.
    Grpc,
}

/// A histogram of durations.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= 1.0 {
        return 0;
    }
    let idx = (us.log2() * PER_OCTAVE as f64).ceil() as usize;
    idx.min(BUCKETS - 1)
}

/// The upper bound of bucket `i`.
fn upper(i: usize) -> Duration {
    Duration::from_secs_f64(2f64.powf(i as f64 / PER_OCTAVE as f64) / 1e6)
}

impl Histogram {
    /// Counts one duration.
    pub fn record(&self, d: Duration) {
        self.buckets[bucket_of(d)].fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) as the upper bound of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(i));
            }
        }
        Some(upper(BUCKETS - 1))
    }

    /// Forgets everything counted so far.
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// One histogram per mechanism.
#[derive(Debug, Default)]
pub struct Durations {
    exec: Histogram,
    http: Histogram,
    tcp: Histogram,
    grpc: Histogram,
}

impl Durations {
    /// The histogram of `m`.
    pub fn of(&self, m: Mechanism) -> &Histogram {
        match m {
            Mechanism::Exec => &self.exec,
            Mechanism::Http => &self.http,
            Mechanism::Tcp => &self.tcp,
            Mechanism::Grpc => &self.grpc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_a_bucket() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).unwrap().as_secs_f64();
        assert!((0.050..0.056).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).unwrap().as_secs_f64();
        assert!((0.099..0.11).contains(&p99), "{p99}");
        h.reset();
        assert_eq!(h.count(), 0);
    }
}
