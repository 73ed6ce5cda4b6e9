//! Fusing ranked lists (BM25 and dense) into one: reciprocal rank fusion,
//! and a convex combination of per-query min-max normalized scores.

use std::collections::HashMap;
use std::hash::Hash;

/// How hybrid search combines its lists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Σ 1 / (k + rank) over the lists (ranks from 1); `k` damps the head.
    Rrf {
        /// The damping constant (60 in the original paper).
        k: f64,
    },
    /// Σ wᵢ · (sᵢ − minᵢ) / (maxᵢ − minᵢ), each list normalized over its own
    /// results for this query; a list that lacks a candidate adds 0.
    Normalized {
        /// Weight of each list, in the order given.
        weights: [f64; 2],
    },
}

impl Default for Fusion {
    fn default() -> Self {
        // Measured on SciFact (`engram eval retrieval`): nDCG@10 0.869 against
        // 0.850 for reciprocal rank fusion.
        Self::Normalized { weights: [0.5, 0.5] }
    }
}

/// Fuses `lists` (each best first, with its own scores) into one list,
/// best first; ties keep the order of first appearance.
pub fn fuse<T: Copy + Eq + Hash>(lists: &[&[(T, f32)]], fusion: Fusion) -> Vec<(T, f64)> {
    let mut fused: HashMap<T, (f64, usize)> = HashMap::new();
    let mut order = 0;
    for (list_index, list) in lists.iter().enumerate() {
        let (min, max) = list.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, s)| {
            (lo.min(f64::from(*s)), hi.max(f64::from(*s)))
        });
        for (rank, (id, score)) in list.iter().enumerate() {
            let contribution = match fusion {
                Fusion::Rrf { k } => 1.0 / (k + (rank + 1) as f64),
                Fusion::Normalized { weights } => {
                    let weight = weights.get(list_index).copied().unwrap_or(0.0);
                    let spread = max - min;
                    let normalized = if spread > 0.0 { (f64::from(*score) - min) / spread } else { 1.0 };
                    weight * normalized
                }
            };
            let entry = fused.entry(*id).or_insert_with(|| {
                order += 1;
                (0.0, order)
            });
            entry.0 += contribution;
        }
    }
    let mut out: Vec<(T, f64, usize)> = fused.into_iter().map(|(id, (score, first))| (id, score, first)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    out.into_iter().map(|(id, score, _)| (id, score)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_rewards_agreement_between_lists() {
        let bm25 = [(1u64, 12.0f32), (2, 9.0), (3, 1.0)];
        let dense = [(3u64, 0.9f32), (2, 0.8), (4, 0.1)];
        let fused = fuse(&[&bm25, &dense], Fusion::Rrf { k: 60.0 });
        let ids: Vec<u64> = fused.iter().map(|(id, _)| *id).collect();
        // 3 (ranks 3 and 1) edges out 2 (ranks 2 and 2); 1 is in one list only.
        assert_eq!(ids, [3, 2, 1, 4]);
        assert!((fused[0].1 - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
        assert!((fused[1].1 - 2.0 / 62.0).abs() < 1e-12);
    }

    #[test]
    fn normalized_fusion_weighs_scores_not_ranks() {
        let bm25 = [(1u64, 10.0f32), (2, 9.9), (3, 0.0)];
        let dense = [(3u64, 0.9f32), (1, 0.2), (2, 0.1)];
        let fused = fuse(&[&bm25, &dense], Fusion::Normalized { weights: [0.5, 0.5] });
        let ids: Vec<u64> = fused.iter().map(|(id, _)| *id).collect();
        // 1: 0.5·1 + 0.5·0.125; 3: 0.5·0 + 0.5·1; 2: 0.5·0.99 + 0.5·0.
        assert_eq!(ids, [1, 3, 2]);
        assert!((fused[0].1 - (0.5 + 0.5 * 0.125)).abs() < 1e-6, "{fused:?}");
        // One-element lists normalize to 1.
        let fused = fuse(&[&[(7u64, 3.0f32)][..], &[][..]], Fusion::Normalized { weights: [0.3, 0.7] });
        assert_eq!(fused, [(7, 0.3)]);
        assert!(fuse::<u64>(&[&[], &[]], Fusion::default()).is_empty());
    }
}
