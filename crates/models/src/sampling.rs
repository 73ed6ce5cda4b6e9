//! Choosing the next token: repetition penalty, temperature, top-k, top-p,
//! a seeded RNG, and an optional filter (constrained decoding).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How to choose tokens. `temperature = 0` is greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; 0 picks the most likely token.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens with this much mass.
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Divides (or multiplies, if negative) the logits of recent tokens; 1 disables.
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repetition_window: usize,
    /// RNG seed: the same seed, prompt and parameters give the same text.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.7, top_p: 0.95, top_k: 40, repetition_penalty: 1.1, repetition_window: 64, seed: 0 }
    }
}

impl SamplingParams {
    /// Greedy decoding, no penalty: deterministic for a given model.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, top_p: 1.0, top_k: 0, repetition_penalty: 1.0, ..Self::default() }
    }

    /// Rejects values that make no sense, naming the parameter.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.temperature) || self.temperature.is_nan() {
            return Err(format!("temperature {} is outside 0..=100", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p {} is outside (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(format!("repetition_penalty {} must be positive", self.repetition_penalty));
        }
        Ok(())
    }
}

/// How many of the most likely tokens sampling considers when `top_k` is 0:
/// beyond these the tail's mass is negligible, and sorting the whole
/// vocabulary every step is not.
const CANDIDATES: usize = 1024;

/// A stateful sampler for one generation.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    order: Vec<u32>,
}

impl Sampler {
    /// A sampler seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng, order: Vec::new() }
    }

    /// Applies the repetition penalty to `logits` in place.
    fn penalize(&self, logits: &mut [f32], history: &[u32]) {
        let penalty = self.params.repetition_penalty;
        if penalty == 1.0 {
            return;
        }
        let start = history.len().saturating_sub(self.params.repetition_window);
        let mut seen = std::collections::HashSet::new();
        for &token in &history[start..] {
            if seen.insert(token)
                && let Some(logit) = logits.get_mut(token as usize)
            {
                *logit = if *logit >= 0.0 { *logit / penalty } else { *logit * penalty };
            }
        }
    }

    /// The next token. `allowed(token)` filters candidates (constrained
    /// decoding); `None` when it allows nothing.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32], mut allowed: impl FnMut(u32) -> bool) -> Option<u32> {
        self.penalize(logits, history);
        if self.params.temperature == 0.0 {
            return self.greedy(logits, &mut allowed);
        }
        let keep = match self.params.top_k {
            0 => CANDIDATES,
            k => k,
        }
        .min(logits.len());
        self.top(logits, keep);
        let inv_t = 1.0 / self.params.temperature;
        let max = logits[self.order[0] as usize];
        let mut weights: Vec<(u32, f32)> =
            self.order.iter().map(|&t| (t, ((logits[t as usize] - max) * inv_t).exp())).collect();
        let total: f32 = weights.iter().map(|(_, w)| w).sum();
        let mut mass = 0.0;
        let mut cut = weights.len();
        for (i, (_, w)) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= self.params.top_p {
                cut = i + 1;
                break;
            }
        }
        weights.truncate(cut);
        weights.retain(|(token, _)| allowed(*token));
        if weights.is_empty() {
            // Nothing allowed among the likely tokens: take the most likely
            // allowed token anywhere in the vocabulary.
            return self.greedy(logits, &mut allowed);
        }
        let total: f32 = weights.iter().map(|(_, w)| w).sum();
        let mut target = self.rng.random::<f32>() * total;
        for (token, w) in &weights {
            target -= w;
            if target <= 0.0 {
                return Some(*token);
            }
        }
        weights.last().map(|(token, _)| *token)
    }

    fn greedy(&mut self, logits: &[f32], allowed: &mut impl FnMut(u32) -> bool) -> Option<u32> {
        // Fast path: the arg-max is usually allowed.
        let best = argmax(logits)?;
        if allowed(best) {
            return Some(best);
        }
        self.top(logits, logits.len());
        self.order.iter().copied().find(|&t| allowed(t))
    }

    /// Fills `self.order` with the `k` highest-logit tokens, best first.
    fn top(&mut self, logits: &[f32], k: usize) {
        self.order.clear();
        self.order.extend(0..logits.len() as u32);
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        if k < self.order.len() {
            self.order.select_nth_unstable_by(k, by_logit);
            self.order.truncate(k);
        }
        self.order.sort_unstable_by(by_logit);
    }
}

fn argmax(logits: &[f32]) -> Option<u32> {
    logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_best_allowed_token() {
        let mut sampler = Sampler::new(SamplingParams::greedy());
        let mut logits = vec![0.1, 3.0, 2.0, -1.0];
        assert_eq!(sampler.sample(&mut logits.clone(), &[], |_| true), Some(1));
        assert_eq!(sampler.sample(&mut logits, &[], |t| t != 1), Some(2));
        assert_eq!(sampler.sample(&mut [1.0, 2.0], &[], |_| false), None);
    }

    #[test]
    fn same_seed_same_choices() {
        let params = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 7, ..SamplingParams::default() };
        let draw = || {
            let mut sampler = Sampler::new(params.clone());
            (0..50).map(|_| sampler.sample(&mut vec![1.0; 100], &[], |_| true).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
        assert!(draw().iter().collect::<std::collections::HashSet<_>>().len() > 10, "not random at all");
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let params = SamplingParams { temperature: 1.0, top_k: 2, top_p: 1.0, seed: 1, ..SamplingParams::default() };
        let mut sampler = Sampler::new(params);
        for _ in 0..100 {
            let t = sampler.sample(&mut [5.0, 4.9, 4.8, 0.0], &[], |_| true).unwrap();
            assert!(t < 2);
        }
        let params = SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.5, seed: 1, ..SamplingParams::default() };
        let mut sampler = Sampler::new(params);
        for _ in 0..100 {
            assert_eq!(sampler.sample(&mut [10.0, 1.0, 1.0], &[], |_| true), Some(0));
        }
    }

    #[test]
    fn repetition_penalty_demotes_recent_tokens() {
        let params = SamplingParams { repetition_penalty: 2.0, ..SamplingParams::greedy() };
        let mut sampler = Sampler::new(params);
        assert_eq!(sampler.sample(&mut [3.0, 2.0], &[0], |_| true), Some(1));
    }
}
