//! `engram eval memory`: replay LoCoMo conversations turn by turn into
//! fresh tenants, then ask every question and score whether recall brought
//! back the turns that hold its evidence.

use std::collections::HashMap;
use std::time::Instant;

use engram_ops::{ConversationId, TenantId};
use serde::Serialize;

use crate::assemble::{AssembleOptions, CountTokens, PromptMessage};
use crate::locomo::{CATEGORIES, Sample, category_name};
use crate::{Memory, MemoryError, Retention, Scope, SummaryPrompts};

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
    /// The same questions again after forgetting by capacity (when asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forgetting: Option<ForgettingEval>,
    /// How the compact memory did (when kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summaries: Option<SummaryQuality>,
    /// Token F1 of the answers written from the assembled prompts (when
    /// asked), per category, then `overall`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<AnswerRow>,
}

/// The level-1 summary, read after each session of each conversation.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryQuality {
    /// Sessions scored.
    pub sessions: usize,
    /// Summaries written (both levels).
    pub written: usize,
    /// Seconds spent writing them.
    pub seconds: f64,
    /// Share of sessions after which the summary names both participants.
    pub names_both: f64,
    /// Share after which it names at least one.
    pub names_one: f64,
    /// Mean share of the session's topic words (words of six letters or
    /// more in LoCoMo's own session summary) the summary contains.
    pub topic_recall: f64,
    /// The last summary of each conversation, to read.
    pub last: Vec<String>,
}

/// Answers' token F1 in one category.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerRow {
    /// The category (or `overall`).
    pub category: String,
    /// Questions answered (those with a gold answer).
    pub questions: usize,
    /// Mean token F1 (SQuAD normalisation: lower case, no punctuation or articles).
    pub f1: f64,
}

/// Recall after each conversation was archived down to a capacity.
#[derive(Debug, Clone, Serialize)]
pub struct ForgettingEval {
    /// The capacity asked for.
    pub capacity: Capacity,
    /// Turns archived, over every conversation.
    pub archived: usize,
    /// Turns left in recall.
    pub kept: usize,
    /// One row per category, then `overall`.
    pub rows: Vec<EvalRow>,
    /// Recall latency over every question, ms.
    pub recall_ms: Latency,
}

/// How many turns each conversation keeps in recall.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capacity {
    /// This many.
    Turns(usize),
    /// This share of its turns (0 to 1).
    Share(f64),
}

impl Capacity {
    /// The capacity of a conversation of `turns` turns.
    pub fn of(self, turns: usize) -> usize {
        match self {
            Self::Turns(n) => n,
            Self::Share(share) => ((turns as f64 * share).round() as usize).max(1),
        }
    }
}

impl std::str::FromStr for Capacity {
    type Err = String;

    /// `300` (turns) or `50%` (of each conversation's turns).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a capacity: give a number of turns (300) or a share of them (50%)");
        match text.trim().strip_suffix('%') {
            Some(percent) => {
                let share: f64 = percent.trim().parse().map_err(|_| bad())?;
                if !(share > 0.0 && share <= 100.0) {
                    return Err(bad());
                }
                Ok(Self::Share(share / 100.0))
            }
            None => text.trim().parse().ok().filter(|&n| n > 0).map(Self::Turns).ok_or_else(bad),
        }
    }
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
    /// Then archive each conversation down to this capacity (weighed as
    /// `retention` weighs, its own capacity unused) and score again.
    pub forgetting: Option<(Capacity, Retention)>,
    /// Keep each conversation's compact memory while replaying, and score
    /// the level-1 summary after each session.
    pub summaries: Option<Summarizer<'a>>,
    /// Answer up to this many questions (0: all) from their assembled
    /// prompts (needs `assemble`) and score token F1 against the gold
    /// answers.
    pub answer: Option<(&'a Answerer<'a>, usize)>,
}

/// A model answering from a prompt's messages.
pub type Answerer<'a> = dyn Fn(&[PromptMessage]) -> Result<String, String> + 'a;

/// How an evaluation writes summaries: the prompts, the model's name, and
/// the model (prompt in, text out).
pub struct Summarizer<'a> {
    /// The configured prompts.
    pub prompts: SummaryPrompts,
    /// The model's name, stored with each summary.
    pub model: String,
    /// Writes one summary.
    pub write: &'a dyn Fn(&str) -> Result<String, String>,
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
    let started = Instant::now();
    let mut scopes = Vec::with_capacity(samples.len());
    let mut summaries = SummaryTally::default();
    let mut done = 0;
    for (n, sample) in samples.iter().enumerate() {
        let scope = Scope {
            tenant: Some(TenantId::new(format!("locomo-{n}")).map_err(invalid)?),
            conversation: ConversationId::new(sanitize(&sample.id)).map_err(invalid)?,
        };
        let mut ordinals = HashMap::new();
        for (i, (dia_id, turn)) in sample.turns.iter().enumerate() {
            let stored = memory.append(&scope, turn.clone())?;
            ordinals.insert(dia_id.as_str(), stored.ordinal);
            done += 1;
            if done % 64 == 0 || done == total_turns {
                progress(EvalProgress::Appended { done, total: total_turns });
            }
            if let Some(summarizer) = &options.summaries
                && let Some(session) = sample.sessions.iter().find(|s| s.end == i + 1)
            {
                let started = Instant::now();
                summaries.written += summarize(memory, &scope, summarizer)?;
                summaries.seconds += started.elapsed().as_secs_f64();
                let level1 = memory.compact(&scope)?.level1.map(|s| s.text).unwrap_or_default();
                summaries.score(&level1, &sample.speakers, session.summary.as_deref());
                if i + 1 == sample.turns.len() {
                    summaries.last.push(level1);
                }
            }
        }
        scopes.push((scope, ordinals));
    }
    let append_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    memory.catch_up()?;
    let index_seconds = started.elapsed().as_secs_f64();

    let scored = score(memory, samples, &scopes, options.assemble.as_ref(), options.answer, progress)?;
    let forgetting = match options.forgetting {
        None => None,
        Some((capacity, retention)) => {
            let mut archived = 0;
            for (sample, (scope, _)) in samples.iter().zip(&scopes) {
                let retention = Retention { capacity: capacity.of(sample.turns.len()), ..retention };
                archived += memory.archive_over_capacity(scope, &retention)?.len();
            }
            let again = score(memory, samples, &scopes, None, None, progress)?;
            Some(ForgettingEval {
                capacity,
                archived,
                kept: total_turns - archived,
                rows: again.rows,
                recall_ms: Latency::of(again.latencies),
            })
        }
    };
    Ok(MemoryEval {
        conversations: samples.len(),
        turns: total_turns,
        questions: scored.questions,
        skipped: scored.skipped,
        append_seconds,
        index_seconds,
        rows: scored.rows,
        recall_ms: Latency::of(scored.latencies),
        prompt_tokens: options.assemble.as_ref().map(|(assemble, counter)| PromptTokens {
            budget: assemble.budget,
            over_budget: scored.prompt_sizes.iter().filter(|&&t| t > assemble.budget).count(),
            tokens: Latency::of(scored.prompt_sizes.iter().map(|&t| t as f64).collect()),
            counted_with: counter.method(),
        }),
        forgetting,
        summaries: options.summaries.as_ref().map(|_| summaries.quality()),
        answers: scored.answers,
    })
}

/// Writes `scope`'s pending summaries; answers how many.
fn summarize(memory: &Memory, scope: &Scope, summarizer: &Summarizer<'_>) -> Result<usize, MemoryError> {
    let mut written = 0;
    while let Some(job) = memory.next_summary(scope, &summarizer.prompts)? {
        let text = (summarizer.write)(&job.prompt).map_err(MemoryError::Invalid)?;
        if memory.store_summary(&job, &text, &summarizer.model)? {
            written += 1;
        }
    }
    Ok(written)
}

#[derive(Default)]
struct SummaryTally {
    sessions: usize,
    written: usize,
    seconds: f64,
    both: usize,
    one: usize,
    topic_recall: f64,
    topics_scored: usize,
    last: Vec<String>,
}

impl SummaryTally {
    fn score(&mut self, summary: &str, speakers: &[String], session: Option<&str>) {
        let said = summary.to_lowercase();
        let named = speakers.iter().filter(|s| said.contains(&s.to_lowercase())).count();
        self.sessions += 1;
        self.both += usize::from(!speakers.is_empty() && named == speakers.len());
        self.one += usize::from(named > 0);
        if let Some(session) = session {
            let mut topics: Vec<String> = words(session).into_iter().filter(|w| w.chars().count() >= 6).collect();
            topics.sort_unstable();
            topics.dedup();
            if !topics.is_empty() {
                let present = words(summary);
                let found = topics.iter().filter(|t| present.contains(t)).count();
                self.topic_recall += found as f64 / topics.len() as f64;
                self.topics_scored += 1;
            }
        }
    }

    fn quality(&mut self) -> SummaryQuality {
        let share = |n: usize| if self.sessions == 0 { 0.0 } else { n as f64 / self.sessions as f64 };
        SummaryQuality {
            sessions: self.sessions,
            written: self.written,
            seconds: self.seconds,
            names_both: share(self.both),
            names_one: share(self.one),
            topic_recall: if self.topics_scored == 0 { 0.0 } else { self.topic_recall / self.topics_scored as f64 },
            last: std::mem::take(&mut self.last),
        }
    }
}

/// `text`'s words, lower case, without punctuation or articles (SQuAD's
/// answer normalisation).
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !matches!(*w, "a" | "an" | "the"))
        .map(str::to_owned)
        .collect()
}

/// Token F1 of `answer` against `gold` (bags of normalised words).
pub fn token_f1(answer: &str, gold: &str) -> f64 {
    let (answer, gold) = (words(answer), words(gold));
    if answer.is_empty() || gold.is_empty() {
        return f64::from(u8::from(answer == gold));
    }
    let mut left: HashMap<&str, usize> = HashMap::new();
    for w in &gold {
        *left.entry(w).or_default() += 1;
    }
    let mut common = 0;
    for w in &answer {
        if let Some(n) = left.get_mut(w.as_str())
            && *n > 0
        {
            *n -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let (precision, recall) = (common as f64 / answer.len() as f64, common as f64 / gold.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// One pass over the questions.
struct Scored {
    questions: usize,
    skipped: usize,
    rows: Vec<EvalRow>,
    latencies: Vec<f64>,
    prompt_sizes: Vec<usize>,
    answers: Vec<AnswerRow>,
}

/// Asks every question of `samples` (replayed into `scopes`, with each
/// turn's ordinal by dialogue id) and scores what recall brought back.
fn score(
    memory: &Memory,
    samples: &[Sample],
    scopes: &[(Scope, HashMap<&str, u64>)],
    assemble: Option<&(AssembleOptions, &dyn CountTokens)>,
    answer: Option<(&Answerer<'_>, usize)>,
    progress: &mut dyn FnMut(EvalProgress),
) -> Result<Scored, MemoryError> {
    let mut f1: HashMap<u8, (usize, f64)> = HashMap::new();
    let mut answered = 0;
    let total_questions: usize = samples.iter().map(|s| s.questions.len()).sum();
    let deepest = DEPTHS[DEPTHS.len() - 1];
    let mut tallies: HashMap<u8, Tally> = HashMap::new();
    let mut overall = Tally::default();
    let mut latencies = Vec::with_capacity(total_questions);
    let mut prompt_sizes = Vec::new();
    let (mut asked, mut skipped) = (0, 0);
    for (sample, (scope, ordinals)) in samples.iter().zip(scopes) {
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
            if let Some((assemble, counter)) = assemble {
                let prompt = memory.assemble(scope, &question.question, assemble, *counter, now)?;
                prompt_sizes.push(prompt.tokens);
                if let (Some((write, limit)), Some(gold)) = (answer, &question.answer)
                    && (limit == 0 || answered < limit)
                {
                    let said = write(&prompt.messages).map_err(MemoryError::Invalid)?;
                    let entry = f1.entry(question.category).or_default();
                    entry.0 += 1;
                    entry.1 += token_f1(&said, gold);
                    answered += 1;
                }
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
    let mut answers: Vec<AnswerRow> = CATEGORIES
        .iter()
        .filter_map(|(n, name)| {
            let (questions, total) = f1.get(n)?;
            Some(AnswerRow { category: (*name).to_owned(), questions: *questions, f1: total / *questions as f64 })
        })
        .collect();
    let (questions, total) = f1.values().fold((0, 0.0), |(n, t), (qn, qt)| (n + qn, t + qt));
    if questions > 0 {
        answers.push(AnswerRow { category: "overall".into(), questions, f1: total / questions as f64 });
    }
    Ok(Scored { questions: overall.questions, skipped, rows, latencies, prompt_sizes, answers })
}

/// A conversation name from a sample id (ids are letters, digits and `-`).
fn sanitize(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_f1_normalises_like_squad() {
        assert_eq!(token_f1("The 7 May 2023.", "7 May 2023"), 1.0);
        assert_eq!(token_f1("Paris", "London"), 0.0);
        assert!((token_f1("in Paris, France", "Paris") - 0.5).abs() < 1e-9);
        assert_eq!(token_f1("", ""), 1.0);
    }

    #[test]
    fn capacities_read_as_turns_or_shares() {
        assert_eq!("300".parse::<Capacity>(), Ok(Capacity::Turns(300)));
        assert_eq!("50%".parse::<Capacity>(), Ok(Capacity::Share(0.5)));
        assert_eq!(Capacity::Share(0.5).of(7), 4);
        for bad in ["0", "0%", "150%", "half", "-3"] {
            assert!(bad.parse::<Capacity>().is_err(), "{bad}");
        }
    }
}
