//! The one percentile definition and the one random stream of every
//! `engram bench` command, so that their figures compare.
//!
//! Percentiles are **nearest-rank**: the `q`-quantile of `n` sorted samples
//! is the sample of rank `⌈q·n⌉` (1-based, at least 1). It is always a
//! latency that was observed (never an interpolation between two), p0 is
//! the minimum, p100 the maximum, and p50 of an even count is the lower of
//! the two middle samples.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

/// The seeded generator every bench draws its synthetic data from: the
/// same seed gives the same corpus, queries and sentences on every run
/// (for one version of the `rand` crate, which Cargo.lock pins).
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Samples sorted once, for any number of percentiles.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Sorts `samples`.
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    /// The nearest-rank `q`-quantile (see the module documentation); `None`
    /// with no samples, or when `q` is not within `0.0..=1.0`.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        if self.0.is_empty() || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let n = self.0.len();
        // q·n carries rounding error (0.07 · 100 = 7.000000000000001): a
        // rank within 1e-9 of an integer is that integer.
        let rank = ((q * n as f64) - 1e-9).ceil().max(1.0) as usize;
        self.0.get(rank.min(n) - 1).copied()
    }

    /// The summary; `None` with no samples.
    pub fn summary(&self) -> Option<Summary> {
        let (min, max) = (*self.0.first()?, *self.0.last()?);
        let n = self.0.len();
        let total: Duration = self.0.iter().sum();
        Some(Summary {
            n,
            mean: total / u32::try_from(n).ok()?,
            min,
            p50: self.percentile(0.5)?,
            p90: self.percentile(0.9)?,
            p95: self.percentile(0.95)?,
            p99: self.percentile(0.99)?,
            max,
        })
    }
}

/// The usual figures of one latency series (percentiles nearest-rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: Duration,
    /// Smallest (p0).
    pub min: Duration,
    /// Median (the lower middle sample of an even count).
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest (p100).
    pub max: Duration,
}

impl Summary {
    /// The summary of `samples`; `None` when there are none.
    pub fn of(samples: Vec<Duration>) -> Option<Self> {
        Samples::new(samples).summary()
    }
}

/// The median (nearest-rank p50) of `samples`; `None` when there are none.
pub fn median(samples: Vec<Duration>) -> Option<Duration> {
    Samples::new(samples).percentile(0.5)
}

/// Seconds as a [`Duration`], for figures a peer reports as numbers; an
/// error for negative, infinite or NaN values.
pub fn seconds(value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|err| anyhow::anyhow!("{value} is not a number of seconds: {err}"))
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    fn ms(values: &[u64]) -> Samples {
        Samples::new(values.iter().map(|v| Duration::from_millis(*v)).collect())
    }

    fn at(samples: &Samples, q: f64) -> Option<u128> {
        samples.percentile(q).map(|d| d.as_millis())
    }

    #[test]
    fn empty_has_no_percentile_or_summary() {
        let empty = Samples::default();
        assert_eq!(empty.percentile(0.5), None);
        assert_eq!(empty.percentile(0.0), None);
        assert_eq!(empty.summary(), None);
        assert_eq!(Summary::of(Vec::new()), None);
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let one = ms(&[42]);
        for q in [0.0, 0.01, 0.5, 0.99, 1.0] {
            assert_eq!(at(&one, q), Some(42));
        }
        let summary = one.summary().unwrap();
        assert_eq!((summary.n, summary.mean, summary.max), (1, Duration::from_millis(42), Duration::from_millis(42)));
    }

    #[test]
    fn nearest_rank_on_known_inputs() {
        // The textbook example: 15, 20, 35, 40, 50 (given unsorted).
        let five = ms(&[50, 15, 40, 20, 35]);
        assert_eq!(at(&five, 0.0), Some(15));
        assert_eq!(at(&five, 0.05), Some(15));
        assert_eq!(at(&five, 0.3), Some(20));
        assert_eq!(at(&five, 0.4), Some(20));
        assert_eq!(at(&five, 0.5), Some(35));
        assert_eq!(at(&five, 1.0), Some(50));
        // An even count: p50 is the lower middle sample.
        assert_eq!(at(&ms(&[1, 2, 3, 4]), 0.5), Some(2));
        assert_eq!(
            median(vec![Duration::from_secs(3), Duration::from_secs(1), Duration::from_secs(2)]),
            Some(Duration::from_secs(2))
        );
        // 1..=100: pK is K exactly, including where q·n rounds above K.
        let hundred = Samples::new((1..=100).map(Duration::from_millis).collect());
        for k in 1..=100u32 {
            assert_eq!(at(&hundred, f64::from(k) / 100.0), Some(u128::from(k)), "p{k}");
        }
        assert_eq!(at(&hundred, 0.0), Some(1));
        assert_eq!(at(&hundred, 0.995), Some(100));
    }

    #[test]
    fn percentiles_outside_zero_to_one_are_refused() {
        let samples = ms(&[1, 2, 3]);
        for q in [-0.01, 1.01, f64::NAN, f64::INFINITY] {
            assert_eq!(samples.percentile(q), None, "{q}");
        }
    }

    #[test]
    fn summary_is_consistent() {
        let mut rng = rng(3);
        let samples: Vec<Duration> = (0..1000).map(|_| Duration::from_micros(rng.random_range(1..10_000))).collect();
        let summary = Summary::of(samples.clone()).unwrap();
        assert_eq!(summary.n, 1000);
        assert!(summary.min <= summary.p50 && summary.p50 <= summary.p90 && summary.p90 <= summary.p95);
        assert!(summary.p95 <= summary.p99 && summary.p99 <= summary.max);
        assert_eq!(summary.min, *samples.iter().min().unwrap());
        assert_eq!(summary.max, *samples.iter().max().unwrap());
        let mean = samples.iter().sum::<Duration>() / 1000;
        assert_eq!(summary.mean, mean);
        // Nearest rank: p99 of 1000 is the 990th smallest.
        let mut sorted = samples;
        sorted.sort_unstable();
        assert_eq!(summary.p99, sorted[989]);
        assert_eq!(summary.p50, sorted[499]);
    }

    #[test]
    fn the_generator_is_reproducible() {
        let a: Vec<u64> = rng(9).random_iter().take(5).collect();
        let b: Vec<u64> = rng(9).random_iter().take(5).collect();
        let c: Vec<u64> = rng(10).random_iter().take(5).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn seconds_refuse_what_is_not_a_duration() {
        assert_eq!(seconds(1.5).unwrap(), Duration::from_millis(1500));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }
}
