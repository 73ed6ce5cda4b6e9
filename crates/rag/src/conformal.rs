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
//!
//! **A finite calibration set.** That `1−α` is an average over calibration
//! draws too. For one calibration, with continuous, tie-free scores, the
//! coverage it actually delivers is random: Beta(k, n+1−k) for rank k.
//! [`pac_coverage`] states what it delivers with probability `1−δ` over the
//! draw (ties only raise coverage, so the bound still holds with them), and
//! every measured coverage carries a Clopper–Pearson interval
//! ([`clopper_pearson`]).

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

/// Confidence of the intervals around measured coverage.
pub const INTERVAL_LEVEL: f64 = 0.95;
/// How far below `1−α` the coverage guaranteed with probability `1−δ` may
/// fall for a calibration to count as a useful statement.
pub const USEFUL_GAP: f64 = 0.02;

/// What one calibration delivers with high probability over the draw of
/// its questions (a PAC statement).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Pac {
    /// The probability `δ` that the statement fails.
    pub delta: f64,
    /// With probability at least `1 − δ` over the calibration questions,
    /// this certificate's coverage is at least this.
    pub coverage: f64,
}

/// The coverage a calibration of `n` questions at rank `rank` delivers with
/// probability at least `1 − delta`: the `delta`-quantile of
/// Beta(rank, n + 1 − rank). `None` when the rank exceeds `n` (an
/// unbounded threshold certifies every candidate, not a level).
pub fn pac_coverage(n: usize, rank: usize, delta: f64) -> Option<f64> {
    (rank >= 1 && rank <= n).then(|| puruspe::invbetai(delta, rank as f64, (n + 1 - rank) as f64))
}

/// The calibration-set size at which the coverage guaranteed with
/// probability `1 − delta` at level `alpha` comes within [`USEFUL_GAP`]
/// of `1 − alpha` (searched up to a million questions).
pub fn questions_needed(alpha: f64, delta: f64) -> Option<usize> {
    let enough = |n: usize| pac_coverage(n, rank(n, alpha), delta).is_some_and(|c| c >= 1.0 - alpha - USEFUL_GAP);
    // The bound climbs in steps (the rank is a ceiling): the first size, scanned.
    (1..=1 << 20).find(|&n| enough(n))
}

/// A two-sided Clopper–Pearson interval at [`INTERVAL_LEVEL`] for a
/// proportion of `hits` in `n` (exact: it never undercovers). `[0, 1]`
/// for `n = 0`.
pub fn clopper_pearson(hits: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let tail = (1.0 - INTERVAL_LEVEL) / 2.0;
    let (x, n) = (hits.min(n) as f64, n as f64);
    let low = if x == 0.0 { 0.0 } else { puruspe::invbetai(tail, x, n - x + 1.0) };
    let high = if x == n { 1.0 } else { puruspe::invbetai(1.0 - tail, x + 1.0, n - x) };
    [low, high]
}

/// How a calibration does on held-out questions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HeldOut {
    /// Held-out questions.
    pub n: usize,
    /// Share whose gold was in the set.
    pub coverage: f64,
    /// Its Clopper–Pearson interval at [`INTERVAL_LEVEL`].
    #[serde(default = "unknown_interval")]
    pub interval: [f64; 2],
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
        interval: clopper_pearson(covered, n),
        median_set: quantile(&sizes, 0.5),
        p90_set: quantile(&sizes, 0.9),
    }
}

/// What a stored report without an interval (from before intervals) reads as.
fn unknown_interval() -> [f64; 2] {
    [0.0, 1.0]
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

    /// Exchangeable scores (i.i.d. with misses): averaged over many random
    /// calibrations, the held-out coverage is exactly `k/(n+1)` for the
    /// rank `k` (continuous scores), which lies in `[1−α, 1−α+1/(n+1))`.
    /// The tolerance is a few standard errors of that average, well under
    /// `1/(n+1)`, so a rank off by one fails.
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
        let (n_cal, n_test, splits) = (200, 1000, 3000);
        for alpha in [0.05, 0.1, 0.2] {
            let mut coverages = Vec::with_capacity(splits);
            for _ in 0..splits {
                // 1% of questions miss (+∞, tied); the rest have a continuous
                // score. Misses rarely reach rank k, which would make the
                // threshold unbounded and the coverage P(found) instead.
                let mut draw = || if uniform() < 0.01 { f64::INFINITY } else { -(uniform().ln()) };
                let cal: Vec<f64> = (0..n_cal).map(|_| draw()).collect();
                let calibration = calibrate(&cal, alpha).unwrap();
                let test: Vec<(f64, usize)> = (0..n_test).map(|_| (draw(), 1)).collect();
                coverages.push(held_out(&calibration, &test).coverage);
            }
            let mean = coverages.iter().sum::<f64>() / splits as f64;
            let sd = (coverages.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (splits - 1) as f64).sqrt();
            let standard_error = sd / (splits as f64).sqrt();
            let expected = rank(n_cal, alpha) as f64 / (n_cal as f64 + 1.0);
            assert!(expected >= 1.0 - alpha && expected < 1.0 - alpha + 1.0 / (n_cal as f64 + 1.0));
            let tolerance = 4.0 * standard_error;
            assert!(tolerance < 0.5 / (n_cal as f64 + 1.0), "alpha {alpha}: too few splits to see a rank off by one");
            assert!((mean - expected).abs() <= tolerance, "alpha {alpha}: mean coverage {mean}, expected {expected}");
            // One calibration's coverage spreads like Beta(k, n+1-k): its sd
            // is about sqrt(α(1−α)/n), plus the test set's binomial noise.
            let beta_sd = (expected * (1.0 - expected) / (n_cal as f64 + 2.0)).sqrt();
            let binomial_sd = (expected * (1.0 - expected) / n_test as f64).sqrt();
            let predicted = (beta_sd.powi(2) + binomial_sd.powi(2)).sqrt();
            assert!((sd / predicted - 1.0).abs() < 0.1, "alpha {alpha}: spread {sd}, predicted {predicted}");
        }
    }

    #[test]
    fn pac_bounds_and_intervals_match_reference_values() {
        // scipy.stats.beta.ppf(0.05, k, n + 1 - k).
        for (n, alpha, expected) in [
            (253, 0.1, 0.869_188_029_179_492_3),
            (19, 0.05, 0.854_131_496_687_756_6),
            (1000, 0.1, 0.884_075_488_583_474),
        ] {
            let got = pac_coverage(n, rank(n, alpha), 0.05).unwrap();
            assert!((got - expected).abs() < 1e-9, "n {n}: {got} vs {expected}");
        }
        assert_eq!(pac_coverage(9, rank(9, 0.05), 0.05), None, "an unbounded rank states no level");
        // Clopper–Pearson at 95% (scipy).
        for (hits, n, [low, high]) in [
            (45, 50, [0.781_864_633_565_797_7, 0.966_724_906_410_977_5]),
            (0, 10, [0.0, 0.308_497_107_818_760_7]),
            (10, 10, [0.691_502_892_181_239_2, 1.0]),
            (456, 505, [0.873_753_112_455_998_1, 0.927_352_922_098_365_5]),
        ] {
            let [l, h] = clopper_pearson(hits, n);
            assert!((l - low).abs() < 1e-9 && (h - high).abs() < 1e-9, "{hits}/{n}: [{l}, {h}]");
        }
        assert_eq!(clopper_pearson(0, 0), [0.0, 1.0]);
        // The first sizes whose 95% bound is within 2 points of the target.
        assert_eq!(questions_needed(0.1, 0.05), Some(558));
        assert_eq!(questions_needed(0.05, 0.05), Some(257));
        assert_eq!(questions_needed(0.2, 0.05), Some(1033));
    }

    #[test]
    fn held_out_reports_coverage_and_set_sizes() {
        let calibration = calibrate(&ranks(9), 0.2).unwrap();
        let questions = [(1.0, 3), (8.0, 5), (9.0, 7), (f64::INFINITY, 10)];
        let report = held_out(&calibration, &questions);
        assert_eq!(report.coverage, 0.5);
        assert_eq!(report.interval, clopper_pearson(2, 4));
        assert_eq!((report.median_set, report.p90_set), (5.0, 10.0));
        // Under an unbounded threshold a miss is still a miss.
        let unbounded = calibrate(&ranks(9), 0.05).unwrap();
        assert_eq!(unbounded.threshold, Threshold::Unbounded);
        assert_eq!(held_out(&unbounded, &questions).coverage, 0.75);
    }
}
