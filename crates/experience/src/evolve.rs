//! Library Evolution (AlphaOPT): from the recorded lookups and outcomes,
//! find insights retrieved where they did not help and missed where they
//! would have, have the LLM propose rewrites of their conditions, and keep
//! the rewrite that best reproduces the desired retrievals on the recorded
//! tasks; quarantine insights whose harm the record shows; merge
//! near-duplicates. Every change is an event (by [`EVOLVER`]), so each can
//! be read in an insight's history and reverted ([`Experience::revert`]).
//!
//! What "desired" means, per insight: it should be retrieved for the tasks
//! it helped (chosen, and the task passed), the task it was learned from,
//! and tasks whose failure taught a candidate merged into it (it applied
//! there and was missed); it should not be retrieved for tasks it was
//! chosen for that failed. A condition reproduces a desired retrieval when
//! the task's similarity to it (as the index compares them) is at least the
//! lookup's `min_similarity` for the first kind, and below it for the second.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::learn::shared_numbers;
use crate::record::Retrieval;
use crate::retrieve::{Retriever, document_text};
use crate::task::{Ask, Generator, Task, blocking};
use crate::{Change, Event, Experience, ExperienceError, Insight, Library, Status, Text};

/// Who writes evolution's events.
pub const EVOLVER: &str = "engram-evolve";

/// Most tasks of each kind shown to the LLM in a rewrite prompt.
const SHOWN_TASKS: usize = 4;
/// Longest task text shown there, in characters.
const SHOWN_CHARS: usize = 600;

/// How evolution works (from `[experience]` and the request).
#[derive(Debug, Clone, PartialEq)]
pub struct EvolveOptions {
    /// Rewrites the LLM proposes per insight.
    pub rewrites: usize,
    /// The lookup's similarity threshold (what "retrieved" means here).
    pub min_similarity: f32,
    /// Quarantine an insight hurt at least this many times, and more often
    /// than it helped.
    pub quarantine_hurt: u64,
    /// Active insights at least this alike are merged.
    pub duplicate_similarity: f32,
    /// The rewrite prompt (`{insight}`, `{applies}`, `{not_applies}`, `{k}`).
    pub prompt: String,
    /// Report what would change, record nothing.
    pub dry_run: bool,
}

/// A condition rewritten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rewritten {
    /// The insight.
    pub id: String,
    /// Its condition before.
    pub from: String,
    /// Its condition now.
    pub to: String,
    /// Desired retrievals the old condition reproduced, of `tasks`.
    pub before: usize,
    /// … and the new one.
    pub after: usize,
    /// Mean similarity of the tasks it applies to less that of the tasks
    /// it does not, with the old condition …
    pub margin_before: f32,
    /// … and the new one.
    pub margin_after: f32,
    /// Recorded tasks it was judged on.
    pub tasks: usize,
}

/// An insight taken out of use or merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Removed {
    /// The insight.
    pub id: String,
    /// Why (kept in its history).
    pub reason: String,
}

/// How well a condition reproduces an insight's desired retrievals.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score {
    hits: usize,
    margin: f32,
}

/// A margin gain smaller than this does not replace a condition a person
/// may have written.
const MARGIN_GAIN: f32 = 0.05;

impl Score {
    /// More desired retrievals reproduced, or as many with a clearly wider margin.
    fn beats(&self, other: &Self) -> bool {
        self.hits > other.hits || (self.hits == other.hits && self.margin > other.margin + MARGIN_GAIN)
    }
}

/// What one evolution did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Evolution {
    /// Active insights with a record to judge them by.
    pub considered: usize,
    /// Conditions rewritten.
    pub rewritten: Vec<Rewritten>,
    /// Insights whose rewrites did no better than their condition.
    pub kept: Vec<String>,
    /// Quarantined on the evidence of harm.
    pub quarantined: Vec<Removed>,
    /// Retired as near-duplicates of another.
    pub merged: Vec<Removed>,
    /// Rewrites the LLM could not give (the insight and why).
    pub failures: Vec<Removed>,
    /// Nothing was recorded.
    pub dry_run: bool,
}

/// The recorded tasks an insight should and should not be retrieved for.
#[derive(Debug, Default)]
struct Desired {
    /// Task ids (or texts) → text, where it applies.
    applies: BTreeMap<String, String>,
    /// … where it was chosen and did not help.
    not_applies: BTreeMap<String, String>,
    /// Applies, but the latest lookup of the task did not choose it.
    missed: usize,
}

/// Runs one evolution of the library.
pub async fn evolve(
    experience: &Experience,
    retriever: &Arc<Retriever>,
    generator: &dyn Generator,
    options: &EvolveOptions,
) -> Result<Evolution, ExperienceError> {
    let (library, events, retrievals) = {
        let experience = experience.clone();
        blocking(move || Ok((experience.library()?, experience.events(None)?, experience.retrievals()?))).await?
    };
    let mut evolution = Evolution { dry_run: options.dry_run, ..Evolution::default() };
    let mut changes: Vec<(Option<String>, Change)> = Vec::new();

    // Quarantine first: a harmful insight is not worth rewriting.
    let mut out: BTreeSet<String> = BTreeSet::new();
    for insight in library.values().filter(|i| i.status == Status::Active) {
        let c = insight.counters;
        if c.hurt >= options.quarantine_hurt && c.hurt > c.helped {
            let failed: Vec<String> = retrievals
                .iter()
                .filter(|r| r.chosen.contains(&insight.id) && r.outcomes.last().is_some_and(|o| !o.passed))
                .map(|r| if r.task_id.is_empty() { format!("lookup {}", r.id) } else { r.task_id.clone() })
                .take(5)
                .collect();
            let reason = format!(
                "hurt {} times and helped {} of {} retrievals (failed: {})",
                c.hurt,
                c.helped,
                c.retrieved,
                failed.join(", ")
            );
            changes.push((
                Some(insight.id.clone()),
                Change::Status { status: Status::Quarantined, reason: reason.clone() },
            ));
            evolution.quarantined.push(Removed { id: insight.id.clone(), reason });
            out.insert(insight.id.clone());
        }
    }

    // Merge near-duplicates: the younger of a pair goes into the elder.
    let active: Vec<&Insight> =
        library.values().filter(|i| i.status == Status::Active && !out.contains(&i.id)).collect();
    let vectors = embed_all(retriever, active.iter().map(|i| document_text(&i.text)).collect()).await?;
    let mut order: Vec<usize> = (0..active.len()).collect();
    order.sort_by_key(|&i| crate::number(&active[i].id).unwrap_or(u64::MAX));
    for (n, &younger) in order.iter().enumerate() {
        for &elder in &order[..n] {
            if out.contains(&active[elder].id) || out.contains(&active[younger].id) {
                continue;
            }
            let similarity = cosine(&vectors[younger], &vectors[elder]);
            if similarity >= options.duplicate_similarity {
                let reason = format!("merged into {} (conditions {similarity:.2} alike)", active[elder].id);
                changes.push((
                    Some(active[younger].id.clone()),
                    Change::Status { status: Status::Retired, reason: reason.clone() },
                ));
                evolution.merged.push(Removed { id: active[younger].id.clone(), reason });
                out.insert(active[younger].id.clone());
            }
        }
    }

    // Rewrite the conditions of misaligned insights.
    let desired = desired(&library, &events, &retrievals);
    let mut task_vectors: HashMap<String, Vec<f32>> = HashMap::new();
    for insight in active.iter().filter(|i| !out.contains(&i.id)) {
        let Some(want) = desired.get(&insight.id) else { continue };
        if want.applies.is_empty() && want.not_applies.is_empty() {
            continue;
        }
        evolution.considered += 1;
        if want.not_applies.is_empty() && want.missed == 0 {
            continue;
        }
        let texts: Vec<(String, String)> =
            want.applies.iter().chain(&want.not_applies).map(|(k, v)| (k.clone(), v.clone())).collect();
        let missing: Vec<(String, String)> =
            texts.iter().filter(|(k, _)| !task_vectors.contains_key(k)).cloned().collect();
        let embedded = embed_all(retriever, missing.iter().map(|(_, text)| text.clone()).collect()).await?;
        task_vectors.extend(missing.into_iter().map(|(k, _)| k).zip(embedded));
        // Desired retrievals reproduced, then the margin between the mean
        // similarity of the tasks it applies to and of the others.
        let score = |vector: &[f32]| {
            let similarities = |tasks: &BTreeMap<String, String>| -> Vec<f32> {
                tasks.keys().map(|k| cosine(&task_vectors[k], vector)).collect()
            };
            let (applies, not) = (similarities(&want.applies), similarities(&want.not_applies));
            let hits = applies.iter().filter(|s| **s >= options.min_similarity).count()
                + not.iter().filter(|s| **s < options.min_similarity).count();
            let mean = |v: &[f32]| if v.is_empty() { 0.0 } else { v.iter().sum::<f32>() / v.len() as f32 };
            Score { hits, margin: mean(&applies) - mean(&not) }
        };
        let current = embed_all(retriever, vec![document_text(&insight.text)]).await?;
        let before = score(&current[0]);
        let proposals = match rewrites(generator, insight, want, options).await {
            Ok(proposals) => proposals,
            Err(problem) => {
                evolution.failures.push(Removed { id: insight.id.clone(), reason: problem });
                continue;
            }
        };
        // No rewrite may carry the numbers of the tasks it was shown.
        let tasks: Vec<Task> =
            texts.iter().map(|(id, text)| Task { id: id.clone(), text: text.clone(), answer: f64::NAN }).collect();
        let proposals: Vec<String> = proposals
            .into_iter()
            .filter(|condition| {
                let text = Text { condition: condition.clone(), ..insight.text.clone() };
                text.problem().is_none() && tasks.iter().all(|task| shared_numbers(&text, task).is_empty())
            })
            .collect();
        let documents =
            proposals.iter().map(|c| document_text(&Text { condition: c.clone(), ..insight.text.clone() })).collect();
        let vectors = embed_all(retriever, documents).await?;
        let best = proposals
            .iter()
            .zip(&vectors)
            .map(|(c, v)| (score(v), c))
            .max_by(|(a, _), (b, _)| a.hits.cmp(&b.hits).then(a.margin.total_cmp(&b.margin)));
        match best {
            Some((after, condition)) if after.beats(&before) => {
                changes.push((
                    Some(insight.id.clone()),
                    Change::Edited {
                        taxonomy: None,
                        condition: Some(condition.clone()),
                        explanation: None,
                        example: None,
                    },
                ));
                evolution.rewritten.push(Rewritten {
                    id: insight.id.clone(),
                    from: insight.text.condition.clone(),
                    to: condition.clone(),
                    before: before.hits,
                    after: after.hits,
                    margin_before: before.margin,
                    margin_after: after.margin,
                    tasks: texts.len(),
                });
            }
            _ => evolution.kept.push(insight.id.clone()),
        }
    }
    if !options.dry_run && !changes.is_empty() {
        let experience = experience.clone();
        blocking(move || experience.record(EVOLVER, changes)).await?;
    }
    Ok(evolution)
}

/// What the record says each insight should and should not be retrieved for.
fn desired(library: &Library, events: &[Event], retrievals: &[Retrieval]) -> HashMap<String, Desired> {
    let mut desired: HashMap<String, Desired> = HashMap::new();
    // The latest text of each task, and whether its latest lookup chose each insight.
    let key = |r: &Retrieval| if r.task_id.is_empty() { r.task.clone() } else { r.task_id.clone() };
    let mut texts: HashMap<String, String> = HashMap::new();
    let mut by_task: HashMap<String, Vec<&Retrieval>> = HashMap::new();
    for retrieval in retrievals {
        texts.insert(key(retrieval), retrieval.task.clone());
        by_task.entry(key(retrieval)).or_default().push(retrieval);
        let Some(outcome) = retrieval.outcomes.last() else { continue };
        for id in &retrieval.chosen {
            let want = desired.entry(id.clone()).or_default();
            let side = if outcome.passed { &mut want.applies } else { &mut want.not_applies };
            side.insert(key(retrieval), retrieval.task.clone());
        }
    }
    // The task an insight was learned from, and those of candidates merged into it.
    let mut applies_to: Vec<(String, String)> = Vec::new();
    for insight in library.values() {
        if let Some(task) = &insight.provenance.task {
            applies_to.push((insight.id.clone(), task.clone()));
        }
    }
    for event in events {
        if let Change::Status { status: Status::Retired, reason } = &event.change
            && let Some(into) = reason.strip_prefix("merged into ").and_then(|rest| rest.split_whitespace().next())
            && let Some(task) = library.get(&event.insight).and_then(|i| i.provenance.task.clone())
        {
            applies_to.push((into.to_owned(), task));
        }
    }
    let created: HashMap<&str, i64> = events
        .iter()
        .filter(|e| matches!(e.change, Change::Created { .. }))
        .map(|e| (e.insight.as_str(), e.at_ms))
        .collect();
    for (id, task) in applies_to {
        let Some(text) = texts.get(&task) else { continue };
        // A miss is a lookup of the task, made once the insight existed,
        // that did not choose it.
        let born = created.get(id.as_str()).copied().unwrap_or(i64::MAX);
        let last = by_task.get(&task).and_then(|lookups| lookups.iter().rev().find(|r| r.at_ms > born));
        let want = desired.entry(id.clone()).or_default();
        want.not_applies.remove(&task);
        want.applies.insert(task, text.clone());
        want.missed += usize::from(last.is_some_and(|r| !r.chosen.contains(&id)));
    }
    desired
}

/// The LLM's rewrites of `insight`'s condition.
async fn rewrites(
    generator: &dyn Generator,
    insight: &Insight,
    want: &Desired,
    options: &EvolveOptions,
) -> Result<Vec<String>, String> {
    let shown = |tasks: &BTreeMap<String, String>| {
        if tasks.is_empty() {
            return "(none)".to_owned();
        }
        tasks
            .values()
            .take(SHOWN_TASKS)
            .map(|text| {
                format!(
                    "- {}",
                    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(SHOWN_CHARS).collect::<String>()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let text = &insight.text;
    let described = format!(
        "Taxonomy: {}\nCondition: {}\nExplanation: {}\nExample: {}",
        text.taxonomy, text.condition, text.explanation, text.example
    );
    let prompt = options
        .prompt
        .replace("{insight}", &described)
        .replace("{applies}", &shown(&want.applies))
        .replace("{not_applies}", &shown(&want.not_applies))
        .replace("{k}", &options.rewrites.to_string());
    let schema = json!({
        "type": "object",
        "properties": {"conditions": {
            "type": "array",
            "minItems": 1,
            "maxItems": options.rewrites,
            "items": {"type": "string", "minLength": 8, "maxLength": 400},
        }},
        "required": ["conditions"],
    });
    let answer =
        generator.complete(Ask { prompt, schema: Some(schema), max_tokens: 120 * options.rewrites.max(1) }).await?;
    let answer: Value = serde_json::from_str(&answer).map_err(|err| format!("the rewrites: {err}"))?;
    Ok(answer["conditions"]
        .as_array()
        .map(|all| all.iter().filter_map(|c| c.as_str().map(|c| c.trim().to_owned())).collect())
        .unwrap_or_default())
}

async fn embed_all(retriever: &Arc<Retriever>, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ExperienceError> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let retriever = retriever.clone();
    blocking(move || texts.iter().map(|text| retriever.embed(text)).collect()).await
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::EPSILON)
}

impl Experience {
    /// Restores `id`'s text and status as they were at `version`, as new
    /// events by `editor` (its history keeps everything in between).
    /// Returns the insight now.
    pub fn revert(&self, editor: &str, id: &str, version: u64) -> Result<Insight, ExperienceError> {
        let events = self.events(Some(id))?;
        let now = crate::fold(&events)?.remove(id).ok_or_else(|| ExperienceError::UnknownInsight(id.to_owned()))?;
        if version == 0 || version > now.version {
            return Err(ExperienceError::Invalid(format!("`{id}` has versions 1 to {}", now.version)));
        }
        let mut then = crate::Library::new();
        for event in &events {
            crate::apply(&mut then, event)?;
            if then.get(id).is_some_and(|insight| insight.version == version) {
                break;
            }
        }
        let then = then.remove(id).ok_or_else(|| ExperienceError::UnknownInsight(id.to_owned()))?;
        let differs = |a: &String, b: &String| (a != b).then(|| a.clone());
        let mut changes = Vec::new();
        let edit = Change::Edited {
            taxonomy: differs(&then.text.taxonomy, &now.text.taxonomy),
            condition: differs(&then.text.condition, &now.text.condition),
            explanation: differs(&then.text.explanation, &now.text.explanation),
            example: differs(&then.text.example, &now.text.example),
        };
        if crate::check(&edit).is_ok() {
            changes.push((Some(id.to_owned()), edit));
        }
        if then.status != now.status {
            let reason = format!("reverted to version {version}");
            changes.push((Some(id.to_owned()), Change::Status { status: then.status, reason }));
        }
        if changes.is_empty() {
            return Err(ExperienceError::Invalid(format!("`{id}` already reads as it did at version {version}")));
        }
        self.record(editor, changes)?;
        self.get(id)
    }
}
