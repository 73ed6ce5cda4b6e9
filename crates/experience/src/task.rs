//! What the library works with, as traits: a [`Generator`] (the LLM: the
//! daemon's model, or a scripted one in tests) and a [`Verifier`] (a
//! plugin that judges an attempt at a [`Task`]); and the lookup itself —
//! candidates, the one applicability check, the record — which the
//! daemon's `experience_lookup` and the learning loop share.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ops::{Chosen, InsightLookup, LookupInsights};
use crate::record::{NewRetrieval, Weighed};
use crate::retrieve::{Candidate, Retriever, prompt_block};
use crate::{Experience, ExperienceError, Insight};

/// A boxed future of the traits below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One request to the generator: a user message, optionally constrained
/// to JSON valid against a schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// The message.
    pub prompt: String,
    /// When set, the answer is JSON valid against this schema.
    pub schema: Option<Value>,
    /// Most tokens to write.
    pub max_tokens: usize,
}

/// The LLM, as the library uses it.
pub trait Generator: Send + Sync {
    /// Its name (kept as the author of what it writes).
    fn name(&self) -> String;
    /// Its answer to `ask`, or why there is none.
    fn complete(&self, ask: Ask) -> BoxFuture<'_, Result<String, String>>;
}

/// A task with a known way to judge an attempt at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its name (`task_id` in the data sets).
    #[serde(alias = "task_id")]
    pub id: String,
    /// What to do, in words.
    #[serde(alias = "description")]
    pub text: String,
    /// The known answer (an objective value, for optimization tasks).
    #[serde(alias = "ground_truth")]
    pub answer: f64,
}

/// What a verifier says of an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the attempt is right.
    pub passed: bool,
    /// What the verifier found, in words (fed to reflection).
    pub detail: String,
}

/// Judges attempts at tasks (a plugin call, e.g. `lp.solve`).
pub trait Verifier: Send + Sync {
    /// Its name (the judge of the outcomes it records).
    fn name(&self) -> String;
    /// The schema an attempt is written to (the generator is constrained
    /// to it), if any.
    fn answer_schema(&self) -> Option<Value>;
    /// Its verdict on `attempt` at `task`.
    fn verify<'a>(&'a self, task: &'a Task, attempt: &'a str) -> BoxFuture<'a, Verdict>;
}

/// How lookups choose (from `[experience]`).
#[derive(Debug, Clone, PartialEq)]
pub struct LookupOptions {
    /// Most insights to choose.
    pub insights: usize,
    /// Candidates to weigh.
    pub candidates: usize,
    /// Whether the LLM checks which candidates apply.
    pub check: bool,
    /// Without the check, the least similarity of task and condition.
    pub min_similarity: f32,
    /// The check's prompt (`{task}`, `{candidates}`).
    pub check_prompt: String,
}

/// Runs a lookup: candidates from the indexes, at most one applicability
/// check by `generator` (when asked for and one is given; a failed check
/// falls back to similarity), then the lookup recorded with what it
/// weighed and chose, as `tenant`'s.
pub async fn lookup(
    experience: &Experience,
    retriever: &Arc<Retriever>,
    generator: Option<&dyn Generator>,
    request: &LookupInsights,
    options: &LookupOptions,
) -> Result<InsightLookup, ExperienceError> {
    let k = request.k.unwrap_or(options.insights);
    let wanted = options.candidates.max(k);
    let (task, taxonomy) = (request.task.clone(), request.taxonomy.clone());
    let found = {
        let retriever = retriever.clone();
        blocking(move || retriever.candidates(&task, taxonomy.as_deref(), wanted)).await?
    };
    let check = request.check.unwrap_or(options.check);
    let checked = match generator.filter(|_| check && !found.is_empty()) {
        Some(generator) => applicable(generator, &request.task, &found, k, &options.check_prompt).await.ok(),
        None => None,
    };
    let chosen: Vec<&Candidate> = match &checked {
        Some(ids) => found.iter().filter(|c| ids.contains(&c.insight.id)).take(k).collect(),
        None => found.iter().filter(|c| c.similarity >= options.min_similarity).take(k).collect(),
    };
    let weighed: Vec<Weighed> = found.iter().map(|c| Weighed { id: c.insight.id.clone(), score: c.score }).collect();
    let chosen_ids: Vec<String> = chosen.iter().map(|c| c.insight.id.clone()).collect();
    let tenant = request.tenant.as_ref().map(|t| t.as_str().to_owned()).unwrap_or_default();
    let task_id = request.task_id.clone().unwrap_or_default();
    let retrieval = {
        let (experience, task) = (experience.clone(), request.task.clone());
        let (ids, checked) = (chosen_ids.clone(), checked.is_some());
        blocking(move || {
            experience.record_retrieval(&NewRetrieval {
                tenant: &tenant,
                task_id: &task_id,
                task: &task,
                candidates: &weighed,
                chosen: &ids,
                checked,
            })
        })
        .await?
    };
    let insights: Vec<Insight> = chosen.iter().map(|c| c.insight.clone()).collect();
    Ok(InsightLookup {
        retrieval,
        prompt: prompt_block(&insights),
        insights: chosen
            .iter()
            .map(|c| Chosen {
                id: c.insight.id.clone(),
                taxonomy: c.insight.text.taxonomy.clone(),
                condition: c.insight.text.condition.clone(),
                explanation: c.insight.text.explanation.clone(),
                example: c.insight.text.example.clone(),
                score: c.score,
                similarity: c.similarity,
            })
            .collect(),
        candidates: found.len(),
        checked: checked.is_some(),
    })
}

/// The ids among `candidates` the generator says apply to `task` (at most
/// `k`), in one constrained call.
async fn applicable(
    generator: &dyn Generator,
    task: &str,
    candidates: &[Candidate],
    k: usize,
    prompt: &str,
) -> Result<Vec<String>, String> {
    let listed: String = candidates
        .iter()
        .map(|c| {
            format!(
                "- {}: {}\n",
                c.insight.id,
                c.insight.text.condition.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    let ids: Vec<&str> = candidates.iter().map(|c| c.insight.id.as_str()).collect();
    let schema = json!({
        "type": "object",
        "properties": {"applicable": {"type": "array", "items": {"enum": ids}, "maxItems": k}},
        "required": ["applicable"],
    });
    let prompt = prompt.replace("{task}", task).replace("{candidates}", listed.trim_end());
    let answer = generator.complete(Ask { prompt, schema: Some(schema), max_tokens: 16 + 8 * k }).await?;
    let answer: Value = serde_json::from_str(&answer).map_err(|err| format!("the check's answer: {err}"))?;
    let mut ids: Vec<String> = answer["applicable"]
        .as_array()
        .map(|ids| ids.iter().filter_map(|id| id.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    ids.dedup();
    Ok(ids)
}

/// Runs blocking library work (the journal, the indexes, the embedder) off
/// the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ExperienceError> + Send + 'static,
) -> Result<T, ExperienceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ExperienceError::Panicked(format!("the insight library panicked: {err}")))?
}
