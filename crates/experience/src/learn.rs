//! Library Learning (AlphaOPT): attempt a task with the insights a lookup
//! chooses; when the verifier fails it, the LLM reflects on the attempt and
//! the verifier's words and proposes candidate insights, and a candidate
//! is admitted only if it does not copy the task's numbers or answer, is
//! not a near-duplicate of an active insight (then it is merged into that
//! one), and re-running the task with it passes the verifier. Every step is
//! an event: the candidate is created as such, then activated or retired
//! with the reason.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ops::LookupInsights;
use crate::retrieve::{Retriever, prompt_block};
use crate::task::{Ask, Generator, LookupOptions, Task, Verdict, Verifier, blocking, lookup};
use crate::{Change, Counters, Experience, ExperienceError, Insight, Provenance, Status, Text};

/// Who writes the learning loop's events (besides the model that wrote a
/// candidate, kept in its provenance).
pub const LEARNER: &str = "engram-learner";

/// Most candidates one reflection may propose.
pub const MAX_CANDIDATES: usize = 2;

/// How the learner works (from `[experience]`).
#[derive(Debug, Clone, PartialEq)]
pub struct LearnOptions {
    /// How lookups choose.
    pub lookup: LookupOptions,
    /// The task runner's prompt (`{insights}`, `{task}`).
    pub solve_prompt: String,
    /// Reflection's prompt (`{task}`, `{insights}`, `{attempt}`, `{verdict}`).
    pub reflect_prompt: String,
    /// A candidate at least this alike to an active insight is merged.
    pub duplicate_similarity: f32,
    /// Most tokens of an attempt.
    pub attempt_tokens: usize,
}

/// One attempt at a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The insights its prompt carried.
    pub insights: Vec<String>,
    /// What the generator wrote.
    pub output: String,
    /// The verifier's verdict.
    pub verdict: Verdict,
}

/// What became of a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
pub enum Fate {
    /// Re-running the task with it passed: it is active.
    Admitted {
        /// The insight.
        id: String,
    },
    /// It repeats the task's numbers or answer.
    CopiesTask {
        /// The insight (retired).
        id: String,
        /// The numbers it shares with the task.
        numbers: Vec<String>,
    },
    /// An active insight already says it: merged into that one.
    Merged {
        /// The candidate (retired).
        id: String,
        /// The insight it merged into.
        into: String,
        /// How alike their conditions are (cosine).
        similarity: f32,
    },
    /// Re-running the task with it still failed.
    DidNotFix {
        /// The insight (retired).
        id: String,
        /// The verifier's words on the re-run.
        detail: String,
    },
    /// The proposal is not an insight (a field missing or malformed).
    Malformed {
        /// Why.
        problem: String,
    },
}

/// What one pass of learning over a task did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    /// The task.
    pub task: String,
    /// The first attempt (with the library as it was).
    pub attempt: Attempt,
    /// The candidates reflection proposed and their fates (none when the
    /// attempt passed, or reflection failed: see `reflection_error`).
    pub candidates: Vec<Fate>,
    /// Why reflection gave nothing, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reflection_error: Option<String>,
}

/// Runs tasks with insights, and learns from their failures.
pub struct Learner {
    /// The library.
    pub experience: Experience,
    /// Its indexes.
    pub retriever: Arc<Retriever>,
    /// The LLM.
    pub generator: Arc<dyn Generator>,
    /// The judge.
    pub verifier: Arc<dyn Verifier>,
    /// How.
    pub options: LearnOptions,
}

impl Learner {
    /// One attempt at `task` with `insights` in its prompt.
    pub async fn attempt(&self, task: &Task, insights: &[Insight]) -> Attempt {
        let prompt =
            self.options.solve_prompt.replace("{insights}", &prompt_block(insights)).replace("{task}", &task.text);
        let ask = Ask { prompt, schema: self.verifier.answer_schema(), max_tokens: self.options.attempt_tokens };
        let (output, verdict) = match self.generator.complete(ask).await {
            Ok(output) => {
                let verdict = self.verifier.verify(task, &output).await;
                (output, verdict)
            }
            Err(err) => (String::new(), Verdict { passed: false, detail: format!("the generator failed: {err}") }),
        };
        Attempt { insights: insights.iter().map(|i| i.id.clone()).collect(), output, verdict }
    }

    /// Looks up the insights for `task` (recorded), attempts it, records
    /// the verifier's outcome, and returns the attempt and its lookup.
    pub async fn run(&self, task: &Task) -> Result<(Attempt, u64), ExperienceError> {
        let mut request = LookupInsights::new(task.text.clone());
        request.task_id = Some(task.id.clone());
        let found =
            lookup(&self.experience, &self.retriever, Some(self.generator.as_ref()), &request, &self.options.lookup)
                .await?;
        let insights = self.insights(found.insights.iter().map(|c| c.id.clone()).collect()).await?;
        let attempt = self.attempt(task, &insights).await;
        let (experience, judge, verdict) = (self.experience.clone(), self.verifier.name(), attempt.verdict.clone());
        let retrieval = found.retrieval;
        blocking(move || experience.record_outcome("", retrieval, verdict.passed, &judge, &verdict.detail)).await?;
        Ok((attempt, found.retrieval))
    }

    /// Runs `task`; when it fails, reflects and admits what fixes it.
    pub async fn learn(&self, task: &Task) -> Result<Learned, ExperienceError> {
        let (attempt, _) = self.run(task).await?;
        let mut learned = Learned { task: task.id.clone(), attempt, candidates: Vec::new(), reflection_error: None };
        if learned.attempt.verdict.passed {
            return Ok(learned);
        }
        let given = self.insights(learned.attempt.insights.clone()).await?;
        let proposals = match self.reflect(task, &given, &learned.attempt).await {
            Ok(proposals) => proposals,
            Err(err) => {
                learned.reflection_error = Some(err);
                return Ok(learned);
            }
        };
        for proposal in proposals {
            let fate = self.admit(task, &given, &learned.attempt, proposal).await?;
            learned.candidates.push(fate);
        }
        Ok(learned)
    }

    /// The LLM's candidate insights for a failed attempt.
    async fn reflect(&self, task: &Task, given: &[Insight], attempt: &Attempt) -> Result<Vec<Value>, String> {
        let insights = if given.is_empty() { "(none)".to_owned() } else { prompt_block(given) };
        let prompt = self
            .options
            .reflect_prompt
            .replace("{task}", &task.text)
            .replace("{insights}", insights.trim_end())
            .replace("{attempt}", &attempt.output)
            .replace("{verdict}", &attempt.verdict.detail);
        let field = |max: usize| json!({"type": "string", "minLength": 1, "maxLength": max});
        let schema = json!({
            "type": "object",
            "properties": {"insights": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_CANDIDATES,
                "items": {
                    "type": "object",
                    "properties": {
                        "taxonomy": field(80),
                        "condition": field(400),
                        "explanation": field(400),
                        "example": field(400),
                    },
                    "required": ["taxonomy", "condition", "explanation", "example"],
                }
            }},
            "required": ["insights"],
        });
        let answer = self.generator.complete(Ask { prompt, schema: Some(schema), max_tokens: 768 }).await?;
        let answer: Value = serde_json::from_str(&answer).map_err(|err| format!("reflection's answer: {err}"))?;
        Ok(answer["insights"].as_array().cloned().unwrap_or_default())
    }

    /// Takes one proposal through the gates, recording each step.
    async fn admit(
        &self,
        task: &Task,
        given: &[Insight],
        attempt: &Attempt,
        proposal: Value,
    ) -> Result<Fate, ExperienceError> {
        let mut text: Text = match serde_json::from_value(proposal) {
            Ok(text) => text,
            Err(err) => return Ok(Fate::Malformed { problem: err.to_string() }),
        };
        text.taxonomy = taxonomy_path(&text.taxonomy);
        if let Some(problem) = text.problem() {
            return Ok(Fate::Malformed { problem });
        }
        let provenance = Provenance {
            task: Some(task.id.clone()),
            failure: Some(clip(&attempt.verdict.detail, 500)),
            model: Some(self.generator.name()),
        };
        let candidate = {
            let (experience, text) = (self.experience.clone(), text.clone());
            blocking(move || experience.create(LEARNER, text, Status::Candidate, provenance)).await?
        };
        let id = candidate.id.clone();
        let numbers = shared_numbers(&text, task);
        if !numbers.is_empty() {
            let reason = format!("repeats numbers of task {}: {}", task.id, numbers.join(", "));
            self.set_status(&id, Status::Retired, reason).await?;
            return Ok(Fate::CopiesTask { id, numbers });
        }
        let nearest = {
            let (retriever, text) = (self.retriever.clone(), text.clone());
            blocking(move || retriever.nearest(&text)).await?
        };
        if let Some((into, similarity)) = nearest.filter(|(_, s)| *s >= self.options.duplicate_similarity) {
            let reason = format!("merged into {into} (conditions {similarity:.2} alike)");
            let mut changes = vec![(Some(id.clone()), Change::Status { status: Status::Retired, reason })];
            // The active one applied and was not chosen: a miss.
            if !attempt.insights.contains(&into) {
                changes.push((Some(into.clone()), Change::Counted(Counters { missed: 1, ..Counters::default() })));
            }
            let experience = self.experience.clone();
            blocking(move || experience.record(LEARNER, changes)).await?;
            return Ok(Fate::Merged { id, into, similarity });
        }
        let mut with = given.to_vec();
        with.push(candidate);
        let rerun = self.attempt(task, &with).await;
        if rerun.verdict.passed {
            let reason = format!("fixed task {} on re-run ({})", task.id, self.verifier.name());
            self.set_status(&id, Status::Active, reason).await?;
            Ok(Fate::Admitted { id })
        } else {
            let reason = format!("did not fix task {} on re-run: {}", task.id, clip(&rerun.verdict.detail, 300));
            self.set_status(&id, Status::Retired, reason).await?;
            Ok(Fate::DidNotFix { id, detail: rerun.verdict.detail })
        }
    }

    async fn set_status(&self, id: &str, status: Status, reason: String) -> Result<Insight, ExperienceError> {
        let (experience, id) = (self.experience.clone(), id.to_owned());
        blocking(move || experience.set_status(LEARNER, &id, status, &reason)).await
    }

    async fn insights(&self, ids: Vec<String>) -> Result<Vec<Insight>, ExperienceError> {
        let experience = self.experience.clone();
        blocking(move || ids.iter().map(|id| experience.get(id)).collect()).await
    }
}

/// A model's taxonomy made a path: lowercase, spaces and other separators
/// as `_`, empty segments dropped (`Formulation / Capacity limits` →
/// `formulation/capacity_limits`).
fn taxonomy_path(raw: &str) -> String {
    raw.split(['/', '>', '.'])
        .map(|segment| {
            let words: Vec<String> = segment
                .split(|c: char| !c.is_alphanumeric() && c != '-' && c != '_')
                .filter(|w| !w.is_empty())
                .map(|w| w.chars().filter(char::is_ascii).collect::<String>().to_ascii_lowercase())
                .filter(|w| !w.is_empty())
                .collect();
            words.join("_")
        })
        .filter(|segment| !segment.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// The numbers of `task` (its text's, 10 and above or with a fraction, and
/// its answer) that the insight's text repeats.
pub fn shared_numbers(text: &Text, task: &Task) -> Vec<String> {
    let significant = |n: f64| n.fract() != 0.0 || n.abs() >= 10.0;
    let mut task_numbers: Vec<f64> = numbers(&task.text).into_iter().filter(|n| significant(*n)).collect();
    task_numbers.push(task.answer);
    let mut shared: Vec<String> = [&text.condition, &text.explanation, &text.example]
        .iter()
        .flat_map(|field| numbers(field))
        .filter(|n| {
            task_numbers.iter().any(|t| (t - n).abs() <= 1e-9 * t.abs().max(1.0))
                && (significant(*n) || *n == task.answer)
        })
        .map(|n| format!("{n}"))
        .collect();
    shared.sort();
    shared.dedup();
    shared
}

/// The numbers written in `text` (`1,200` and `3.5` included).
fn numbers(text: &str) -> Vec<f64> {
    let mut found = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        let cleaned: String = current.trim_end_matches(['.', ',']).replace(',', "");
        if let Ok(n) = cleaned.parse::<f64>() {
            found.push(n);
        }
        current.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || (!current.is_empty() && (c == '.' || c == ',')) {
            current.push(c);
        } else {
            flush(&mut current);
        }
    }
    flush(&mut current);
    found
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_as_people_write_them() {
        assert_eq!(numbers("up to 1,200 units at 3.5 yuan, 2 shifts."), [1200.0, 3.5, 2.0]);
        assert_eq!(numbers("no numbers"), Vec::<f64>::new());
    }

    #[test]
    fn an_insight_may_not_repeat_the_tasks_numbers_or_answer() {
        let task =
            Task { id: "t".into(), text: "Storage holds 500 units; 2 products; price 8.5.".into(), answer: 4100.0 };
        let text = |example: &str| Text {
            taxonomy: "formulation".into(),
            condition: "Products share storage.".into(),
            explanation: "One constraint over the sum.".into(),
            example: example.into(),
        };
        assert!(
            shared_numbers(&text("x1 + x2 <= capacity, for 2 products"), &task).is_empty(),
            "small counts are generic"
        );
        assert_eq!(shared_numbers(&text("x1 + x2 <= 500"), &task), ["500"]);
        assert_eq!(shared_numbers(&text("the profit is 4,100"), &task), ["4100"]);
        assert_eq!(shared_numbers(&text("at 8.5 each"), &task), ["8.5"]);
    }

    #[test]
    fn a_models_taxonomy_becomes_a_path() {
        assert_eq!(taxonomy_path("Formulation / Capacity limits"), "formulation/capacity_limits");
        assert_eq!(taxonomy_path("modeling.integer-vars"), "modeling/integer-vars");
        assert_eq!(taxonomy_path("///"), "");
    }
}
