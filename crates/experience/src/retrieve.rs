//! Finding the insights that fit a task: the active insights' conditions
//! in a BM25 and a vector index (through `engram-index`, following the
//! journal like every other index), searched with the task's text and
//! narrowed by taxonomy; and the compact block a prompt carries them in.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use engram_index::{Bm25, Document, Embed, Field, Filter, Follower, Fusion, IndexError, Schema, VectorBackend, fuse};
use engram_store::{Entity, Store};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ExperienceError, ID_PREFIX, Insight, Status, Text, decode, fold, rows};

/// The insights' index name.
pub const INDEX_NAME: &str = "insights";

/// The field a lookup filters on: every taxonomy path an insight is at or
/// under (`formulation`, `formulation/constraints`, …).
pub const SCHEMA: Schema = Schema { fields: &[Field::keyword("taxonomy").multi()] };

/// Candidates drawn from each engine before fusing.
const POOL: usize = 50;

/// What the engines index of an insight: its taxonomy as words, then its
/// condition (a task is matched against when an insight applies).
pub fn document_text(text: &Text) -> String {
    format!("{}: {}", text.taxonomy.replace(['/', '_', '-'], " "), text.condition)
}

/// Every taxonomy path `taxonomy` is at or under, shortest first.
fn ancestors(taxonomy: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut path = String::new();
    for segment in taxonomy.split('/') {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(segment);
        paths.push(path.clone());
    }
    paths
}

/// Insights, by number, as index documents: only active ones load (the
/// follower drops the others from the indexes).
struct InsightSource;

impl engram_index::Source for InsightSource {
    fn entity(&self) -> Entity {
        Entity::Insight
    }

    fn load(&self, store: &Store, ids: &[u64]) -> Result<Vec<Document>, IndexError> {
        let mut documents = Vec::with_capacity(ids.len());
        for &id in ids {
            let name = format!("{ID_PREFIX}{id}");
            let events = decode(store.read(|conn| rows(conn, Some(&name)))?)
                .map_err(|err| IndexError::Schema(err.to_string()))?;
            let library = fold(&events).map_err(|err| IndexError::Schema(err.to_string()))?;
            if let Some(insight) = library.get(&name).filter(|insight| insight.status == Status::Active) {
                documents.push(
                    Document::new(id, document_text(&insight.text))
                        .keywords("taxonomy", ancestors(&insight.text.taxonomy)),
                );
            }
        }
        Ok(documents)
    }
}

/// An active insight a task's text found, and how well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Candidate {
    /// The insight.
    pub insight: Insight,
    /// Its fused relevance (½ BM25 + ½ cosine, each min-max normalized
    /// over this lookup's candidates): ranks candidates of one lookup.
    pub score: f64,
    /// The cosine similarity of the task and its condition (0 when only
    /// BM25 found it): comparable across lookups.
    pub similarity: f32,
}

/// The insights' indexes over one journal.
pub struct Retriever {
    store: Store,
    index: Follower,
    embed: Arc<dyn Embed>,
}

impl Retriever {
    /// Opens the insights' indexes under `index_dir` (vectors there, or on
    /// the Qdrant server `vectors` names) and catches them up with the
    /// journal.
    pub fn open(
        store: Store,
        index_dir: &Path,
        embed: Arc<dyn Embed>,
        vectors: &VectorBackend,
    ) -> Result<Self, ExperienceError> {
        let index = (|| {
            let vectors = vectors.open(index_dir, INDEX_NAME, SCHEMA, embed.model(), embed.dimension())?;
            let bm25 = Bm25::open(&index_dir.join("bm25"), SCHEMA)?;
            Follower::new(store.clone(), Box::new(InsightSource), embed.clone(), bm25, vectors)
        })()
        .map_err(ExperienceError::Index)?;
        let retriever = Self { store, index, embed };
        retriever.catch_up()?;
        Ok(retriever)
    }

    /// Applies the library's changes to the indexes; returns the journal
    /// sequence reached.
    pub fn catch_up(&self) -> Result<u64, ExperienceError> {
        self.index.catch_up().map_err(ExperienceError::Index)
    }

    /// The embedding of `text` (what the conditions are compared with).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, ExperienceError> {
        let mut vectors =
            self.embed.embed(&[text]).map_err(|err| ExperienceError::Index(IndexError::Embed(err.to_string())))?;
        vectors.pop().ok_or_else(|| ExperienceError::Index(IndexError::Embed("no vector".to_owned())))
    }

    /// Up to `n` active insights for `task`, best first: at or under
    /// `taxonomy` when given, found by BM25 and by the similarity of the
    /// task to each condition, fused. The indexes catch up first, so a
    /// change the library acknowledged is seen.
    pub fn candidates(&self, task: &str, taxonomy: Option<&str>, n: usize) -> Result<Vec<Candidate>, ExperienceError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.catch_up()?;
        let filter = taxonomy.map_or_else(Filter::all, |path| Filter::all().is("taxonomy", path));
        let vector = self.embed(task)?;
        let pool = n.max(POOL);
        let index = |err: IndexError| ExperienceError::Index(err);
        let bm25 = self.index.bm25().search(task, &filter, pool).map_err(index)?;
        let dense = self.index.vectors().search(&vector, &filter, pool).map_err(|e| index(e.into()))?;
        let similarity: HashMap<u64, f32> = dense.iter().copied().collect();
        let mut fused = fuse(&[&bm25, &dense], Fusion::Normalized { weights: [0.5, 0.5] });
        fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut candidates = Vec::with_capacity(n);
        for (id, score) in fused {
            if candidates.len() == n {
                break;
            }
            let name = format!("{ID_PREFIX}{id}");
            let events = decode(self.store.read(|conn| rows(conn, Some(&name)))?)?;
            // The journal has the last word: an insight retired since the
            // indexes last caught up is not offered.
            if let Some(insight) = fold(&events)?.remove(&name).filter(|insight| insight.status == Status::Active) {
                candidates.push(Candidate { insight, score, similarity: similarity.get(&id).copied().unwrap_or(0.0) });
            }
        }
        Ok(candidates)
    }

    /// The active insight most like `text` (taxonomy and condition, as
    /// the index holds them), and the cosine similarity of the two
    /// (near-duplicates are merged, not added).
    pub fn nearest(&self, text: &Text) -> Result<Option<(String, f32)>, ExperienceError> {
        self.catch_up()?;
        let vector = self.embed(&document_text(text))?;
        let hits =
            self.index.vectors().search(&vector, &Filter::all(), 1).map_err(|e| ExperienceError::Index(e.into()))?;
        Ok(hits.first().map(|&(id, similarity)| (format!("{ID_PREFIX}{id}"), similarity)))
    }
}

/// The block a prompt carries `insights` in: one stable, compact entry per
/// insight, in the order given (empty without insights).
pub fn prompt_block(insights: &[Insight]) -> String {
    if insights.is_empty() {
        return String::new();
    }
    let mut block = String::from("Insights from earlier tasks (apply the ones that fit):\n");
    for insight in insights {
        let text = &insight.text;
        block.push_str(&format!(
            "- [{}] {}\n  When: {}\n  Why: {}\n",
            insight.id,
            text.taxonomy,
            one_line(&text.condition),
            one_line(&text.explanation)
        ));
        if !text.example.trim().is_empty() {
            block.push_str(&format!("  Example: {}\n", one_line(&text.example)));
        }
    }
    block
}

/// `text` with its whitespace runs (newlines included) as single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insight_is_filed_under_every_ancestor_of_its_taxonomy() {
        assert_eq!(
            ancestors("formulation/constraints/capacity"),
            ["formulation", "formulation/constraints", "formulation/constraints/capacity"]
        );
        assert_eq!(ancestors("objective"), ["objective"]);
    }
}
