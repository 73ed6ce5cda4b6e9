//! Ranking metrics as BEIR reports them: nDCG@k with graded relevance,
//! recall@k and MRR (reciprocal rank of the first relevant result).

use std::collections::HashMap;

/// Relevance grades of one query's judged documents (`> 0` is relevant).
pub type Judgments = HashMap<String, u32>;

/// nDCG@k of `ranked` document ids: DCG with gain `grade` and discount
/// `log2(rank + 1)`, over the ideal ordering of the judgments. 0 when
/// nothing is relevant.
pub fn ndcg_at(ranked: &[&str], judged: &Judgments, k: usize) -> f64 {
    let discount = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, id)| f64::from(judged.get(*id).copied().unwrap_or(0)) * discount(i))
        .sum();
    let mut ideal: Vec<u32> = judged.values().copied().filter(|g| *g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal.iter().take(k).enumerate().map(|(i, g)| f64::from(*g) * discount(i)).sum();
    if idcg == 0.0 { 0.0 } else { dcg / idcg }
}

/// Share of the relevant documents found in the first `k`.
pub fn recall_at(ranked: &[&str], judged: &Judgments, k: usize) -> f64 {
    let relevant = judged.values().filter(|g| **g > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranked.iter().take(k).filter(|id| judged.get(**id).is_some_and(|g| *g > 0)).count();
    found as f64 / relevant as f64
}

/// 1 / rank of the first relevant document (0 if none is ranked).
pub fn reciprocal_rank(ranked: &[&str], judged: &Judgments) -> f64 {
    ranked.iter().position(|id| judged.get(*id).is_some_and(|g| *g > 0)).map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, u32)]) -> Judgments {
        pairs.iter().map(|(id, g)| ((*id).to_owned(), *g)).collect()
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let j = judged(&[("a", 1), ("b", 1), ("z", 0)]);
        assert_eq!(ndcg_at(&["a", "b", "c"], &j, 10), 1.0);
        // b at rank 2 only: (1/log2 3) / (1 + 1/log2 3).
        let expected = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at(&["c", "b", "z"], &j, 10) - expected).abs() < 1e-12);
        assert_eq!(ndcg_at(&["c", "d"], &j, 10), 0.0);
        assert_eq!(ndcg_at(&["a"], &judged(&[("x", 0)]), 10), 0.0);
        assert_eq!(recall_at(&["c", "b", "a"], &j, 2), 0.5);
        assert_eq!(recall_at(&["c", "b", "a"], &j, 100), 1.0);
        assert_eq!(reciprocal_rank(&["c", "z", "b"], &j), 1.0 / 3.0);
        assert_eq!(reciprocal_rank(&["c"], &j), 0.0);
        // Graded: a 2 below a 1 loses to the ideal order.
        let g = judged(&[("a", 2), ("b", 1)]);
        assert!(ndcg_at(&["b", "a"], &g, 10) < 1.0);
    }
}
