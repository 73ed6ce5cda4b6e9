//! `engram eval memory`: replay LoCoMo conversations turn by turn into
//! fresh tenants, then ask every question and score whether recall brought
//! back the turns that hold its evidence.

use std::collections::HashMap;
use std::time::Instant;

use engram_ops::{ConversationId, TenantId};
use serde::Serialize;

use crate::assemble::{AssembleOptions, CountTokens};
use crate::locomo::{CATEGORIES, Sample, category_name};
use crate::{Memory, MemoryError, Scope};

/// The recall depths scored.
pub const DEPTHS: [usize; 3] = [5, 10, 20];

/// What the evaluation reports.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryEval {
    /// Conversations replayed.
    pub conversations: usize,
    /// Turns appended.
    pub turns: usize,
    /// Questions scored (those whose evidence names turns of the conversation).
    pub questions: usize,
    /// Questions skipped: their evidence names no turn of the conversation.
    pub skipped: usize,
    /// Seconds to append every turn (journal only).
    pub append_seconds: f64,
    /// Seconds for the indexes to catch up (embedding included).
    pub index_seconds: f64,
    /// One row per category, then `overall`.
    pub rows: Vec<EvalRow>,
    /// Recall latency over every question, ms.
    pub recall_ms: Latency,
    /// Tokens of the prompt assembled for each question (with a counter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<PromptTokens>,
}

/// The assembled prompts' sizes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PromptTokens {
    /// The budget they were assembled for.
    pub budget: usize,
    /// Their distribution.
    pub tokens: Latency,
    /// How many went over the budget (the assembler's bar: none).
    pub over_budget: usize,
    /// How tokens were counted.
    pub counted_with: &'static str,
}

/// Scores of one category.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    /// The category (or `overall`).
    pub category: String,
    /// Questions in it.
    pub questions: usize,
    /// Share of questions with at least one evidence turn among the first
    /// 5, 10 and 20 recalled.
    pub recall_any: [f64; 3],
    /// Share with every evidence turn among the first 5, 10 and 20.
    pub recall_all: [f64; 3],
}

/// A latency distribution.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

/// What else an evaluation measures.
#[derive(Default)]
pub struct EvalOptions<'a> {
    /// Also assemble the prompt for each question, counted this way.
    pub assemble: Option<(AssembleOptions, &'a dyn CountTokens)>,
}

impl Latency {
    /// The distribution of `samples` (any order).
    pub fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self { p50: at(0.5), p95: at(0.95), max: at(1.0) }
    }
}

/// Progress of an evaluation.
#[derive(Debug, Clone)]
pub enum EvalProgress {
    /// Turns appended.
    Appended {
        /// So far.
        done: usize,
        /// In all.
        total: usize,
    },
    /// Questions asked.
    Asked {
        /// So far.
        done: usize,
        /// In all.
        total: usize,
    },
}

#[derive(Default)]
struct Tally {
    questions: usize,
    any: [usize; 3],
    all: [usize; 3],
}

impl Tally {
    fn row(&self, category: &str) -> EvalRow {
        let share = |n: usize| if self.questions == 0 { 0.0 } else { n as f64 / self.questions as f64 };
        EvalRow {
            category: category.to_owned(),
            questions: self.questions,
            recall_any: self.any.map(share),
            recall_all: self.all.map(share),
        }
    }
}

/// Replays every sample into a tenant of its own (`locomo-<n>`) of
/// `memory`, then scores recall on every question.
pub fn evaluate(
    memory: &Memory,
    samples: &[Sample],
    options: &EvalOptions<'_>,
    progress: &mut dyn FnMut(EvalProgress),
) -> Result<MemoryEval, MemoryError> {
    let invalid = |err: engram_ops::InvalidId| MemoryError::Invalid(err.to_string());
    let total_turns: usize = samples.iter().map(|s| s.turns.len()).sum();
    let total_questions: usize = samples.iter().map(|s| s.questions.len()).sum();
    let started = Instant::now();
    let mut scopes = Vec::with_capacity(samples.len());
    let mut done = 0;
    for (n, sample) in samples.iter().enumerate() {
        let scope = Scope {
            tenant: Some(TenantId::new(format!("locomo-{n}")).map_err(invalid)?),
            conversation: ConversationId::new(sanitize(&sample.id)).map_err(invalid)?,
        };
        let mut ordinals = HashMap::new();
        for (dia_id, turn) in &sample.turns {
            let stored = memory.append(&scope, turn.clone())?;
            ordinals.insert(dia_id.as_str(), stored.ordinal);
            done += 1;
            if done % 64 == 0 || done == total_turns {
                progress(EvalProgress::Appended { done, total: total_turns });
            }
        }
        scopes.push((scope, ordinals));
    }
    let append_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    memory.catch_up()?;
    let index_seconds = started.elapsed().as_secs_f64();

    let deepest = DEPTHS[DEPTHS.len() - 1];
    let mut tallies: HashMap<u8, Tally> = HashMap::new();
    let mut overall = Tally::default();
    let mut latencies = Vec::with_capacity(total_questions);
    let mut prompt_sizes = Vec::new();
    let (mut asked, mut skipped) = (0, 0);
    for (sample, (scope, ordinals)) in samples.iter().zip(&scopes) {
        for question in &sample.questions {
            asked += 1;
            let evidence: Vec<u64> =
                question.evidence.iter().filter_map(|e| ordinals.get(e.as_str()).copied()).collect();
            if evidence.is_empty() {
                skipped += 1;
                continue;
            }
            let started = Instant::now();
            // Questions are asked just after the conversation's last turn.
            let now = sample.turns.last().and_then(|(_, t)| t.time_ms).map(|t| t + 60_000);
            let recalled = memory.recall(scope, &question.question, deepest, now)?.turns;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            if let Some((assemble, counter)) = &options.assemble {
                prompt_sizes.push(memory.assemble(scope, &question.question, assemble, *counter, now)?.tokens);
            }
            let rank_of = |ordinal: u64| recalled.iter().position(|r| r.turn.ordinal == ordinal);
            let ranks: Vec<Option<usize>> = evidence.iter().map(|&o| rank_of(o)).collect();
            let tally = tallies.entry(question.category).or_default();
            for t in [&mut *tally, &mut overall] {
                t.questions += 1;
                for (i, depth) in DEPTHS.iter().enumerate() {
                    let within = |r: &Option<usize>| r.is_some_and(|r| r < *depth);
                    t.any[i] += usize::from(ranks.iter().any(within));
                    t.all[i] += usize::from(ranks.iter().all(within));
                }
            }
            if asked % 32 == 0 {
                progress(EvalProgress::Asked { done: asked, total: total_questions });
            }
        }
    }
    progress(EvalProgress::Asked { done: asked, total: total_questions });
    let mut rows: Vec<EvalRow> =
        CATEGORIES.iter().filter_map(|(n, _)| tallies.get(n).map(|t| t.row(category_name(*n)))).collect();
    let mut others: Vec<_> = tallies.iter().filter(|(n, _)| !CATEGORIES.iter().any(|(c, _)| c == *n)).collect();
    others.sort_by_key(|(n, _)| **n);
    rows.extend(others.into_iter().map(|(n, t)| t.row(&format!("category {n}"))));
    rows.push(overall.row("overall"));
    Ok(MemoryEval {
        conversations: samples.len(),
        turns: total_turns,
        questions: overall.questions,
        skipped,
        append_seconds,
        index_seconds,
        rows,
        recall_ms: Latency::of(latencies),
        prompt_tokens: options.assemble.as_ref().map(|(assemble, counter)| PromptTokens {
            budget: assemble.budget,
            over_budget: prompt_sizes.iter().filter(|&&t| t > assemble.budget).count(),
            tokens: Latency::of(prompt_sizes.iter().map(|&t| t as f64).collect()),
            counted_with: counter.method(),
        }),
    })
}

/// A conversation name from a sample id (ids are letters, digits and `-`).
fn sanitize(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect()
}
