//! Retrieval evaluation on a BEIR-layout data set: ranking quality of BM25,
//! dense and hybrid search, and the coverage of conformal sets over random
//! calibration/test splits of the queries, scored at document level (a
//! document's score is its best chunk's; a query is covered when a relevant
//! document is in its set; a set's size counts documents).

use std::collections::{HashMap, HashSet};

use engram_index::metrics::{Judgments, ndcg_at, recall_at, reciprocal_rank};
use engram_index::{Fusion, fuse};
use serde::Serialize;

use crate::beir::Beir;
use crate::certify::{ScoreFunction, SplitMix};
use crate::chunk::Format;
use crate::conformal::{self, Threshold};
use crate::{ChunkId, Filter, IngestReport, NewDocument, Progress, Rag, RagError, Target, Unlisted};

/// Levels the conformal table reports.
pub const ALPHAS: [f64; 3] = [0.05, 0.1, 0.2];
/// Levels the coverage plot draws.
pub const PLOT_ALPHAS: [f64; 9] = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5];
/// Chunks fetched per list for ranking metrics (recall@100 is on documents).
const RANK_DEPTH: usize = 300;

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Random calibration/test splits of the queries.
    pub splits: usize,
    /// Share of queries calibrating in each split.
    pub calibration_share: f64,
    /// Seed of the first split.
    pub seed: u64,
    /// Score functions in the conformal table.
    pub score_functions: Vec<ScoreFunction>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { splits: 20, calibration_share: 0.5, seed: 1, score_functions: ScoreFunction::ALL.to_vec() }
    }
}

/// Ranking metrics of one retriever, averaged over the queries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankingRow {
    /// `bm25`, `dense`, `hybrid_rrf` or `hybrid_normalized`.
    pub retriever: String,
    /// nDCG@10.
    pub ndcg_at_10: f64,
    /// Recall@100.
    pub recall_at_100: f64,
    /// Mean reciprocal rank.
    pub mrr: f64,
}

/// Conformal coverage at one level for one score function.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConformalRow {
    /// The score function.
    pub score_function: ScoreFunction,
    /// Miscoverage level.
    pub alpha: f64,
    /// 1 − α.
    pub target: f64,
    /// Held-out coverage, averaged over the splits.
    pub coverage: f64,
    /// Its standard deviation over the splits.
    pub coverage_sd: f64,
    /// Median set size (documents) over every held-out query of every split.
    pub median_set: f64,
    /// 90th percentile of the set size.
    pub p90_set: f64,
    /// Splits whose threshold was unbounded (every candidate in the set).
    pub unbounded_splits: usize,
}

/// Everything `engram eval retrieval` measures.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalEval {
    /// Judged queries evaluated.
    pub queries: usize,
    /// Corpus documents.
    pub documents: usize,
    /// Chunks they made.
    pub chunks: u64,
    /// The ingest (its time includes embedding, unless cached).
    pub ingest: IngestReport,
    /// Seconds spent searching (every query, both lists).
    pub search_seconds: f64,
    /// Ranking quality per retriever.
    pub ranking: Vec<RankingRow>,
    /// Random splits used.
    pub splits: usize,
    /// Share of queries calibrating.
    pub calibration_share: f64,
    /// Candidates per list for the conformal score functions.
    pub candidates: usize,
    /// Coverage table (levels [`ALPHAS`], every score function).
    pub conformal: Vec<ConformalRow>,
    /// Coverage at [`PLOT_ALPHAS`] for the plot (every score function).
    pub curve: Vec<ConformalRow>,
}

/// One query's candidates, at document level where it matters.
struct QueryLists {
    judged: Judgments,
    bm25: Vec<(ChunkId, f32)>,
    dense: Vec<(ChunkId, f32)>,
}

/// Best score per document, best first.
fn by_document(scored: &[(ChunkId, f64)], paths: &HashMap<ChunkId, String>) -> Vec<(String, f64)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (id, score) in scored {
        if let Some(path) = paths.get(id)
            && seen.insert(path.clone())
        {
            out.push((path.clone(), *score));
        }
    }
    out
}

fn as_f64(list: &[(ChunkId, f32)]) -> Vec<(ChunkId, f64)> {
    list.iter().map(|(id, s)| (*id, f64::from(*s))).collect()
}

/// Ingests `beir`'s corpus into `collection` (incrementally: an unchanged
/// corpus costs one hash comparison per document) and evaluates.
pub fn evaluate(
    rag: &Rag,
    beir: &Beir,
    collection: &str,
    options: &EvalOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<RetrievalEval, RagError> {
    let documents: Vec<NewDocument> = beir
        .corpus
        .iter()
        .map(|doc| {
            let text = if doc.title.is_empty() { doc.text.clone() } else { format!("{}\n\n{}", doc.title, doc.text) };
            NewDocument::from_text(doc.id.clone(), text, Format::Text)
        })
        .collect();
    let ingest = rag.ingest_documents(&Target::collection(collection)?, documents, Unlisted::Delete, &mut |event| {
        progress(event);
        std::ops::ControlFlow::Continue(())
    })?;
    let filter = Filter::collection(collection)?;

    let started = std::time::Instant::now();
    let mut queries = Vec::with_capacity(beir.queries.len());
    for query in &beir.queries {
        let Some(judged) = beir.qrels.get(&query.id) else { continue };
        if !judged.values().any(|g| *g > 0) {
            continue;
        }
        let mut lists = rag.lists(&query.text, &filter, crate::Mode::Hybrid, RANK_DEPTH)?.into_iter();
        let bm25 = lists.next().unwrap_or_default();
        let dense = lists.next().unwrap_or_default();
        queries.push(QueryLists { judged: judged.clone(), bm25, dense });
    }
    let search_seconds = started.elapsed().as_secs_f64();
    let ids: Vec<ChunkId> = queries
        .iter()
        .flat_map(|q| q.bm25.iter().chain(&q.dense).map(|(id, _)| *id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let paths = rag.chunk_paths(&ids)?;

    // Ranking metrics per retriever.
    type Ranker = fn(&QueryLists) -> Vec<(ChunkId, f64)>;
    let rankers: [(&str, Ranker); 4] = [
        ("bm25", |q| as_f64(&q.bm25)),
        ("dense", |q| as_f64(&q.dense)),
        ("hybrid_rrf", |q| fuse(&[&q.bm25, &q.dense], Fusion::Rrf { k: 60.0 })),
        ("hybrid_normalized", |q| fuse(&[&q.bm25, &q.dense], Fusion::Normalized { weights: [0.5, 0.5] })),
    ];
    let n = queries.len().max(1) as f64;
    let ranking = rankers
        .iter()
        .map(|(name, rank)| {
            let (mut ndcg, mut recall, mut mrr) = (0.0, 0.0, 0.0);
            for q in &queries {
                let docs = by_document(&rank(q), &paths);
                let ranked: Vec<&str> = docs.iter().map(|(p, _)| p.as_str()).collect();
                ndcg += ndcg_at(&ranked, &q.judged, 10);
                recall += recall_at(&ranked, &q.judged, 100);
                mrr += reciprocal_rank(&ranked, &q.judged);
            }
            RankingRow { retriever: (*name).to_owned(), ndcg_at_10: ndcg / n, recall_at_100: recall / n, mrr: mrr / n }
        })
        .collect();

    // Conformal: per score function, each query's nonconformity and scored documents.
    let candidates = rag.options().candidates;
    let mut conformal_rows = Vec::new();
    let mut curve = Vec::new();
    for &function in &options.score_functions {
        let scored: Vec<(f64, Vec<f64>)> = queries
            .iter()
            .map(|q| {
                let depth = |list: &[(ChunkId, f32)]| list.len().min(candidates);
                let chunks = function.score(&q.bm25[..depth(&q.bm25)], &q.dense[..depth(&q.dense)]);
                let docs = by_document(&chunks, &paths);
                let gold = docs
                    .iter()
                    .find(|(p, _)| q.judged.get(p).is_some_and(|g| *g > 0))
                    .map_or(f64::INFINITY, |(_, s)| -s);
                (gold, docs.into_iter().map(|(_, s)| s).collect())
            })
            .collect();
        for (alphas, out) in [(&ALPHAS[..], &mut conformal_rows), (&PLOT_ALPHAS[..], &mut curve)] {
            for &alpha in alphas {
                out.push(split_coverage(&scored, function, alpha, options)?);
            }
        }
    }
    Ok(RetrievalEval {
        queries: queries.len(),
        documents: beir.corpus.len(),
        chunks: rag.collection(collection)?.chunks,
        ingest,
        search_seconds,
        ranking,
        splits: options.splits,
        calibration_share: options.calibration_share,
        candidates,
        conformal: conformal_rows,
        curve,
    })
}

/// Coverage of `alpha` over random splits of the queries' (gold
/// nonconformity, document scores).
fn split_coverage(
    scored: &[(f64, Vec<f64>)],
    function: ScoreFunction,
    alpha: f64,
    options: &EvalOptions,
) -> Result<ConformalRow, RagError> {
    let mut coverages = Vec::with_capacity(options.splits);
    let mut sizes = Vec::new();
    let mut unbounded_splits = 0;
    for split in 0..options.splits {
        let mut order: Vec<usize> = (0..scored.len()).collect();
        SplitMix(options.seed.wrapping_add(split as u64)).shuffle(&mut order);
        let n_cal = ((scored.len() as f64) * options.calibration_share).round() as usize;
        let (cal, test) = order.split_at(n_cal.min(scored.len()));
        let cal_scores: Vec<f64> = cal.iter().map(|&i| scored[i].0).collect();
        let calibration =
            conformal::calibrate(&cal_scores, alpha).map_err(|e| RagError::Invalid(format!("calibration: {e}")))?;
        if calibration.threshold == Threshold::Unbounded {
            unbounded_splits += 1;
        }
        let rows: Vec<(f64, usize)> = test
            .iter()
            .map(|&i| {
                let size = scored[i].1.iter().filter(|s| calibration.threshold.admits(-**s)).count();
                (scored[i].0, size)
            })
            .collect();
        sizes.extend(rows.iter().map(|(_, size)| *size as f64));
        coverages.push(conformal::held_out(&calibration, &rows).coverage);
    }
    let mean = coverages.iter().sum::<f64>() / coverages.len().max(1) as f64;
    let var = coverages.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / coverages.len().max(1) as f64;
    sizes.sort_by(f64::total_cmp);
    Ok(ConformalRow {
        score_function: function,
        alpha,
        target: 1.0 - alpha,
        coverage: mean,
        coverage_sd: var.sqrt(),
        median_set: conformal::quantile(&sizes, 0.5),
        p90_set: conformal::quantile(&sizes, 0.9),
        unbounded_splits,
    })
}
