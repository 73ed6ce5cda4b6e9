//! Split conformal calibration of a retrieval score (CONFLARE, done right).
//!
//! Each calibration question has gold evidence. Its *nonconformity* is how
//! unlike evidence the gold looks to the retriever: the negated score of
//! its best-scoring gold chunk, or `+∞` when no gold chunk was retrieved at
//! all (a miss counts; it is never dropped). With `n` such scores and a
//! level `α`, the threshold is the `⌈(n+1)(1−α)⌉`-th smallest; a new,
//! exchangeable question then has its gold among the chunks whose
//! nonconformity is at most the threshold with probability at least `1−α`.
//! When `⌈(n+1)(1−α)⌉ > n` no finite threshold certifies that level: the
//! set must be everything ([`Threshold::Unbounded`]).

use serde::{Deserialize, Serialize};

/// Why a calibration cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConformalError {
    /// `α` must lie strictly between 0 and 1.
    #[error("alpha must be strictly between 0 and 1, got {0}")]
    Alpha(f64),
    /// No calibration questions.
    #[error("no calibration questions: at least one is needed")]
    Empty,
    /// A nonconformity score is NaN (a bug in the score function).
    #[error("calibration question {0} has a NaN nonconformity score")]
    NaN(usize),
}

/// The certified cutoff on nonconformity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Threshold {
    /// Keep every candidate whose nonconformity is at most this.
    Finite(f64),
    /// Too few calibration questions for this level (or too many misses):
    /// only the whole candidate list is certified.
    Unbounded,
}

impl Threshold {
    /// Whether a candidate with nonconformity `score` belongs in the set.
    pub fn admits(self, score: f64) -> bool {
        match self {
            Self::Finite(t) => score <= t,
            Self::Unbounded => true,
        }
    }
}

/// A calibration: the level, the sample size and the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Calibration {
    /// Miscoverage level.
    pub alpha: f64,
    /// Calibration questions.
    pub n: usize,
    /// The rank used: `⌈(n+1)(1−α)⌉` (may exceed `n`).
    pub rank: usize,
    /// The cutoff.
    pub threshold: Threshold,
}

/// The rank `⌈(n+1)(1−α)⌉`, computed so that products that are whole
/// numbers in exact arithmetic (e.g. `(19+1)·0.95`) are not pushed up by
/// floating-point noise.
pub fn rank(n: usize, alpha: f64) -> usize {
    let exact = (n as f64 + 1.0) * (1.0 - alpha);
    (exact - 1e-9 * exact.max(1.0)).ceil().max(1.0) as usize
}

/// Calibrates at level `alpha` from the calibration questions'
/// nonconformity scores (`f64::INFINITY` for a miss).
pub fn calibrate(nonconformity: &[f64], alpha: f64) -> Result<Calibration, ConformalError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(ConformalError::Alpha(alpha));
    }
    if nonconformity.is_empty() {
        return Err(ConformalError::Empty);
    }
    if let Some(i) = nonconformity.iter().position(|s| s.is_nan()) {
        return Err(ConformalError::NaN(i));
    }
    let n = nonconformity.len();
    let k = rank(n, alpha);
    let threshold = if k > n {
        Threshold::Unbounded
    } else {
        let mut sorted = nonconformity.to_vec();
        sorted.sort_by(f64::total_cmp);
        match sorted[k - 1] {
            t if t.is_finite() => Threshold::Finite(t),
            _ => Threshold::Unbounded,
        }
    };
    Ok(Calibration { alpha, n, rank: k, threshold })
}

/// How a calibration does on held-out questions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HeldOut {
    /// Held-out questions.
    pub n: usize,
    /// Share whose gold was in the set.
    pub coverage: f64,
    /// Median set size.
    pub median_set: f64,
    /// 90th percentile of the set size.
    pub p90_set: f64,
}

/// Scores a calibration on held-out questions: for each, the gold's
/// nonconformity and the set size the threshold gives. A gold that was
/// not retrieved at all (`+∞`) is never covered: even an unbounded
/// threshold only returns the candidates.
pub fn held_out(calibration: &Calibration, questions: &[(f64, usize)]) -> HeldOut {
    let n = questions.len();
    let covered = questions.iter().filter(|(gold, _)| gold.is_finite() && calibration.threshold.admits(*gold)).count();
    let mut sizes: Vec<f64> = questions.iter().map(|(_, size)| *size as f64).collect();
    sizes.sort_by(f64::total_cmp);
    HeldOut {
        n,
        coverage: if n == 0 { f64::NAN } else { covered as f64 / n as f64 },
        median_set: quantile(&sizes, 0.5),
        p90_set: quantile(&sizes, 0.9),
    }
}

/// The `q`-quantile of sorted values (nearest rank); NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[at - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranks(n: usize) -> Vec<f64> {
        (1..=n).map(|i| i as f64).collect()
    }

    #[test]
    fn the_rank_is_the_finite_sample_quantile() {
        // n = 1: ⌈2(1−α)⌉ is 1 only for α ≥ 0.5.
        assert_eq!(calibrate(&[3.0], 0.5).unwrap().threshold, Threshold::Finite(3.0));
        assert_eq!(calibrate(&[3.0], 0.49).unwrap().threshold, Threshold::Unbounded);
        // n = 9: α = 0.1 needs the largest (⌈9⌉ = 9); α = 0.2 the 8th.
        assert_eq!(calibrate(&ranks(9), 0.1).unwrap().threshold, Threshold::Finite(9.0));
        assert_eq!(calibrate(&ranks(9), 0.2).unwrap().rank, 8);
        assert_eq!(calibrate(&ranks(9), 0.05).unwrap().threshold, Threshold::Unbounded);
        // n = 19: (19+1)·0.95 is exactly 19 in exact arithmetic.
        assert_eq!(calibrate(&ranks(19), 0.05).unwrap().threshold, Threshold::Finite(19.0));
        assert_eq!(calibrate(&ranks(19), 0.1).unwrap().threshold, Threshold::Finite(18.0));
        // n = 99.
        for (alpha, expected) in [(0.05, 95.0), (0.1, 90.0), (0.2, 80.0), (0.5, 50.0)] {
            assert_eq!(calibrate(&ranks(99), alpha).unwrap().threshold, Threshold::Finite(expected), "{alpha}");
        }
        // Unsorted input; the rank is on sorted order.
        let shuffled: Vec<f64> = (1..=9).rev().map(f64::from).collect();
        assert_eq!(calibrate(&shuffled, 0.2).unwrap().threshold, Threshold::Finite(8.0));
    }

    #[test]
    fn misses_count_and_can_make_the_set_unbounded() {
        let mut scores = ranks(9);
        scores[0] = f64::INFINITY;
        // Nine questions, one miss: the 8th smallest is still finite.
        assert_eq!(calibrate(&scores, 0.2).unwrap().threshold, Threshold::Finite(9.0));
        // ... but the 9th is the miss.
        assert_eq!(calibrate(&scores, 0.1).unwrap().threshold, Threshold::Unbounded);
        assert!(Threshold::Unbounded.admits(f64::INFINITY));
        assert!(!Threshold::Finite(1.0).admits(f64::INFINITY));
    }

    #[test]
    fn bad_inputs_are_refused() {
        for alpha in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            assert!(matches!(calibrate(&[1.0], alpha), Err(ConformalError::Alpha(_))), "{alpha}");
        }
        assert_eq!(calibrate(&[], 0.1), Err(ConformalError::Empty));
        assert_eq!(calibrate(&[1.0, f64::NAN], 0.1), Err(ConformalError::NaN(1)));
        // Edge levels that are valid.
        assert_eq!(calibrate(&[1.0], 0.999).unwrap().rank, 1);
        assert_eq!(calibrate(&ranks(99), 0.001).unwrap().threshold, Threshold::Unbounded);
    }

    /// Exchangeable scores (i.i.d. with misses): over many random splits the
    /// held-out coverage averages to at least 1−α and at most 1−α+1/(n+1)
    /// (the theory's bounds), within sampling error.
    #[test]
    fn coverage_holds_on_a_synthetic_exchangeable_setup() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut uniform = move || {
            // xorshift64*: a fixed, reproducible stream.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        };
        let (n_cal, n_test, splits) = (200, 300, 200);
        for alpha in [0.05, 0.1, 0.2] {
            let mut total = 0.0;
            for _ in 0..splits {
                // 3% of questions miss; the rest have a continuous score.
                let mut draw = || if uniform() < 0.03 { f64::INFINITY } else { -(uniform().ln()) };
                let cal: Vec<f64> = (0..n_cal).map(|_| draw()).collect();
                let calibration = calibrate(&cal, alpha).unwrap();
                let test: Vec<(f64, usize)> = (0..n_test).map(|_| (draw(), 1)).collect();
                total += held_out(&calibration, &test).coverage;
            }
            let mean = total / f64::from(splits);
            let upper = 1.0 - alpha + 1.0 / (n_cal as f64 + 1.0);
            // Standard error of the mean over 60,000 draws is below 0.002.
            assert!(mean >= 1.0 - alpha - 0.006 && mean <= upper + 0.006, "alpha {alpha}: mean coverage {mean}");
        }
    }

    #[test]
    fn held_out_reports_coverage_and_set_sizes() {
        let calibration = calibrate(&ranks(9), 0.2).unwrap();
        let questions = [(1.0, 3), (8.0, 5), (9.0, 7), (f64::INFINITY, 10)];
        let report = held_out(&calibration, &questions);
        assert_eq!(report.coverage, 0.5);
        assert_eq!((report.median_set, report.p90_set), (5.0, 10.0));
        // Under an unbounded threshold a miss is still a miss.
        let unbounded = calibrate(&ranks(9), 0.05).unwrap();
        assert_eq!(unbounded.threshold, Threshold::Unbounded);
        assert_eq!(held_out(&unbounded, &questions).coverage, 0.75);
    }
}
