//! Retrieval evaluation on a BEIR-layout data set: ranking quality of BM25,
//! dense and hybrid search, and the coverage of conformal sets over random
//! calibration/test splits of the queries, scored at document level (a
//! document's score is its best chunk's; a query is covered when a relevant
//! document is in its set; a set's size counts documents).
//!
//! Everything is measured on what ships: the configured `candidates` per
//! list, the certified score path (filtered BM25 statistics, exact vectors).
//! Random splits of one pool give coverage near `k/(n+1)` by construction;
//! the informative figures are the set sizes, the spread across splits, and
//! coverage under a shift: [`Shift`] calibrates on one question set and
//! measures on another, and `tenants` certifies each tenant of a split
//! corpus on its own, both through the product's own
//! [`Rag::calibrate`]/[`Rag::check_certificate`], with Clopper–Pearson
//! intervals.

use std::collections::{HashMap, HashSet};

use engram_index::metrics::{Judgments, ndcg_at, recall_at, reciprocal_rank};
use engram_index::{Fusion, fuse};
use serde::Serialize;

use engram_ops::TenantId;

use crate::beir::Beir;
use crate::certify::{CalibrateOptions, Question, ScoreFunction, SplitMix, Stratum};
use crate::chunk::Format;
use crate::conformal::{self, Pac, Threshold};
use crate::{ChunkId, Filter, IngestReport, NewDocument, Progress, Rag, RagError, Target, Unlisted};

/// Levels the conformal table reports.
pub const ALPHAS: [f64; 3] = [0.05, 0.1, 0.2];
/// Levels the coverage plot draws.
pub const PLOT_ALPHAS: [f64; 9] = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5];

/// Calibrate on one question set, measure on another.
#[derive(Debug, Clone)]
pub struct Shift {
    /// The calibration questions.
    pub calibrate_on: Vec<Question>,
    /// Where they came from (recorded in the certificates).
    pub calibrate_from: String,
    /// The questions measured.
    pub test_on: Vec<Question>,
    /// Where those came from.
    pub test_from: String,
}

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
    /// Also ingest the corpus split into this many tenants (by a hash of
    /// each document's id; fewer than 2: not) and certify each on its own.
    pub tenants: usize,
    /// Calibrate on one question set and measure on another.
    pub shift: Option<Shift>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            splits: 20,
            calibration_share: 0.5,
            seed: 1,
            score_functions: ScoreFunction::ALL.to_vec(),
            tenants: 0,
            shift: None,
        }
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
    /// The lowest and highest coverage of a split.
    pub spread: [f64; 2],
    /// The first split's coverage and its 95% Clopper–Pearson interval
    /// (one calibration measured on its own test questions; the splits
    /// share questions, so no interval pools them).
    pub first_split: (f64, [f64; 2]),
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
    /// With tenants: each tenant's own certificate on its held-out questions.
    pub tenants: Vec<CheckRow>,
    /// With a shift: certificates from the first question set on the second.
    pub shift: Vec<CheckRow>,
}

/// A certificate issued by the product's own calibration, measured on
/// questions it was not calibrated on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRow {
    /// What was measured (a tenant, or the test questions' source).
    pub label: String,
    /// Miscoverage level.
    pub alpha: f64,
    /// 1 − α.
    pub target: f64,
    /// Calibration questions.
    pub calibrated_on: usize,
    /// What the certificate delivers with probability 1 − δ.
    pub pac: Option<Pac>,
    /// Questions measured.
    pub n: usize,
    /// Share whose evidence was in the certified set.
    pub coverage: f64,
    /// Its 95% Clopper–Pearson interval.
    pub interval: [f64; 2],
    /// Median set size, in chunks.
    pub median_set: f64,
    /// 90th percentile of the set size, in chunks.
    pub p90_set: f64,
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
    let documents: Vec<NewDocument> = beir.corpus.iter().map(corpus_document).collect();
    let ingest = rag.ingest_documents(&Target::collection(collection)?, documents, Unlisted::Delete, &mut |event| {
        progress(event);
        std::ops::ControlFlow::Continue(())
    })?;
    let filter = Filter::collection(collection)?;

    // The lists a certified search uses: `candidates` each, exact.
    let candidates = rag.options().candidates;
    let started = std::time::Instant::now();
    let mut queries = Vec::with_capacity(beir.queries.len());
    for query in &beir.queries {
        let Some(judged) = beir.qrels.get(&query.id) else { continue };
        if !judged.values().any(|g| *g > 0) {
            continue;
        }
        let mut lists = rag.lists(&query.text, &filter, crate::Mode::Hybrid, candidates, true)?.into_iter();
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
    let mut conformal_rows = Vec::new();
    let mut curve = Vec::new();
    for &function in &options.score_functions {
        let scored: Vec<(f64, Vec<f64>)> = queries
            .iter()
            .map(|q| {
                let chunks = function.score(&q.bm25, &q.dense);
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
    let tenants =
        if options.tenants >= 2 { tenant_rows(rag, beir, collection, options, progress)? } else { Vec::new() };
    let shift = match &options.shift {
        Some(shift) => shift_rows(rag, collection, shift, options.seed)?,
        None => Vec::new(),
    };
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
        tenants,
        shift,
    })
}

/// The tenant (of `tenants`) a document belongs to: FNV-1a of its id.
fn tenant_of(id: &str, tenants: usize) -> usize {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % tenants as u64) as usize
}

/// Ingests the corpus into `<collection>-tenants` split into tenants
/// `t0`, `t1`, …, and certifies each tenant on the questions whose evidence
/// it holds (their gold narrowed to its documents): half calibrate, half
/// are held out.
fn tenant_rows(
    rag: &Rag,
    beir: &Beir,
    collection: &str,
    options: &EvalOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<CheckRow>, RagError> {
    let name = format!("{collection}-tenants");
    let invalid = |e: engram_ops::InvalidId| RagError::Invalid(e.to_string());
    let tenants: Vec<TenantId> =
        (0..options.tenants).map(|i| TenantId::new(format!("t{i}"))).collect::<Result<_, _>>().map_err(invalid)?;
    for (i, tenant) in tenants.iter().enumerate() {
        let documents: Vec<NewDocument> =
            beir.corpus.iter().filter(|doc| tenant_of(&doc.id, tenants.len()) == i).map(corpus_document).collect();
        let target = Target { tenant: Some(tenant.clone()), ..Target::collection(&name)? };
        rag.ingest_documents(&target, documents, Unlisted::Delete, &mut |event| {
            progress(event);
            std::ops::ControlFlow::Continue(())
        })?;
    }
    let questions = beir.questions();
    let mut rows = Vec::new();
    for (i, tenant) in tenants.iter().enumerate() {
        let own: Vec<Question> = questions
            .iter()
            .filter_map(|q| {
                let gold_paths: Vec<String> =
                    q.gold_paths.iter().filter(|p| tenant_of(p, tenants.len()) == i).cloned().collect();
                (!gold_paths.is_empty()).then(|| Question { gold_paths, ..q.clone() })
            })
            .collect();
        let stratum = Stratum { tenant: Some(tenant.clone()), ..Stratum::default() };
        for alpha in ALPHAS {
            let options = CalibrateOptions {
                alpha,
                score_function: ScoreFunction::default(),
                holdout: 0.5,
                seed: options.seed,
                questions_from: format!("judged queries whose evidence tenant {tenant} holds"),
                stratum: stratum.clone(),
            };
            let certificate = rag.calibrate(&name, &own, &options)?;
            let Some(held) = certificate.held_out else { continue };
            rows.push(CheckRow {
                label: format!("tenant {tenant}"),
                alpha,
                target: certificate.target(),
                calibrated_on: certificate.calibration.n,
                pac: certificate.pac,
                n: held.n,
                coverage: held.coverage,
                interval: held.interval,
                median_set: held.median_set,
                p90_set: held.p90_set,
            });
        }
    }
    Ok(rows)
}

/// Certificates calibrated on `shift.calibrate_on` (all of it), measured on
/// `shift.test_on`.
fn shift_rows(rag: &Rag, collection: &str, shift: &Shift, seed: u64) -> Result<Vec<CheckRow>, RagError> {
    let mut rows = Vec::new();
    for alpha in ALPHAS {
        let options = CalibrateOptions {
            alpha,
            score_function: ScoreFunction::default(),
            holdout: 0.0,
            seed,
            questions_from: shift.calibrate_from.clone(),
            stratum: Stratum::default(),
        };
        let certificate = rag.calibrate(collection, &shift.calibrate_on, &options)?;
        let (_, checked) = rag.check_certificate(&certificate.id, &shift.test_on)?;
        rows.push(CheckRow {
            label: shift.test_from.clone(),
            alpha,
            target: certificate.target(),
            calibrated_on: certificate.calibration.n,
            pac: certificate.pac,
            n: checked.n,
            coverage: checked.coverage,
            interval: checked.interval,
            median_set: checked.median_set,
            p90_set: checked.p90_set,
        });
    }
    Ok(rows)
}

/// A corpus document as ingested: its id is its path, its title heads its text.
fn corpus_document(doc: &crate::beir::Document) -> NewDocument {
    let text = if doc.title.is_empty() { doc.text.clone() } else { format!("{}\n\n{}", doc.title, doc.text) };
    NewDocument::from_text(doc.id.clone(), text, Format::Text)
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
    let mut first_split = (f64::NAN, [0.0, 1.0]);
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
        let held = conformal::held_out(&calibration, &rows);
        if split == 0 {
            first_split = (held.coverage, held.interval);
        }
        coverages.push(held.coverage);
    }
    let mean = coverages.iter().sum::<f64>() / coverages.len().max(1) as f64;
    let var = coverages.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / coverages.len().max(1) as f64;
    sizes.sort_by(f64::total_cmp);
    let spread = coverages.iter().fold([f64::INFINITY, f64::NEG_INFINITY], |[low, high], &c| [low.min(c), high.max(c)]);
    Ok(ConformalRow {
        score_function: function,
        alpha,
        target: 1.0 - alpha,
        coverage: mean,
        coverage_sd: var.sqrt(),
        spread,
        first_split,
        median_set: conformal::quantile(&sizes, 0.5),
        p90_set: conformal::quantile(&sizes, 0.9),
        unbounded_splits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_score_as_their_best_chunk() {
        let paths: HashMap<ChunkId, String> =
            [(ChunkId(1), "a"), (ChunkId(2), "b"), (ChunkId(3), "a")].map(|(id, p)| (id, p.to_owned())).into();
        let scored = [(ChunkId(3), 0.9), (ChunkId(2), 0.5), (ChunkId(1), 0.4), (ChunkId(7), 0.3)];
        assert_eq!(by_document(&scored, &paths), [("a".to_owned(), 0.9), ("b".to_owned(), 0.5)]);
    }

    /// Random splits of exchangeable questions: the averaged coverage is
    /// near the target, the spread brackets it, set sizes are counted at
    /// the threshold, and splits too small for the level are unbounded.
    #[test]
    fn split_coverage_averages_spreads_and_counts_unbounded_splits() {
        // Question i's gold scores i/100; every question has the same ten
        // documents, scored 0.0 to 0.9.
        let scored: Vec<(f64, Vec<f64>)> =
            (0..100).map(|i| (-(f64::from(i) / 100.0), (0..10).map(|d| f64::from(d) / 10.0).collect())).collect();
        let options = EvalOptions { splits: 50, ..EvalOptions::default() };
        let row = split_coverage(&scored, ScoreFunction::HybridMinMax, 0.2, &options).unwrap();
        assert_eq!((row.target, row.unbounded_splits), (0.8, 0));
        assert!((row.coverage - 0.8).abs() < 0.05, "{row:?}");
        assert!(row.spread[0] <= row.coverage && row.coverage <= row.spread[1] && row.spread[0] < row.spread[1]);
        assert!(row.coverage_sd > 0.0 && row.coverage_sd < 0.1, "{row:?}");
        let (first, [low, high]) = row.first_split;
        assert!(low < first && first < high && high - low < 0.3, "{row:?}");
        assert!(row.median_set >= 1.0 && row.median_set <= 10.0, "{row:?}");
        // Fifty calibration questions cannot certify α = 0.01 (⌈51·0.99⌉ > 50).
        let strict = split_coverage(&scored, ScoreFunction::HybridMinMax, 0.01, &options).unwrap();
        assert_eq!(strict.unbounded_splits, 50);
        assert_eq!((strict.coverage, strict.median_set), (1.0, 10.0));
    }

    #[test]
    fn tenants_split_the_corpus_stably_and_roughly_evenly() {
        let ids: Vec<String> = (0..1000).map(|i| format!("doc{i}")).collect();
        let first: Vec<usize> = ids.iter().map(|id| tenant_of(id, 2)).collect();
        assert_eq!(first, ids.iter().map(|id| tenant_of(id, 2)).collect::<Vec<_>>());
        let ones = first.iter().filter(|t| **t == 1).count();
        assert!((400..600).contains(&ones), "{ones}");
    }
}
