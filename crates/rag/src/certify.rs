//! Conformal certificates: calibrating a collection's score function on
//! questions with known gold chunks, storing the result in the journal, and
//! answering a query at level α with every chunk the certificate admits.
//!
//! **The score function** is fixed and named in every certificate, and the
//! same code scores candidates at query time: BM25 with the statistics of
//! the documents within the search's filter only ([`Bm25::search_within`]),
//! exact cosine similarity within the filter, fused per query. So a score
//! depends on nothing outside the filter — not another collection's or
//! tenant's ingest, not a segment merge. A chunk that is in neither
//! candidate list (the top [`Rag::options`]`.candidates` of BM25 and of
//! dense search) is not found: its nonconformity is `+∞`.
//!
//! **Strata.** A filter (tenant, path prefix, tags, time) changes the
//! candidates, the normalization and the questions people ask, so a
//! certificate is calibrated under one filter, its [`Stratum`] (Mondrian
//! conformal prediction), and a search claims a guarantee only with a
//! certificate of the same collection and stratum.
//!
//! **Changes.** A certificate records the collection's change counter
//! (chunks written plus chunks removed, in the whole collection: a
//! conservative count for a stratum) and the chunks within its stratum.
//! Exchangeability, and so `1 − α`, holds exactly only while nothing
//! changed; within [`RagOptions::stale_share`] of the chunks it is
//! `approximate` (no guarantee claimed); beyond, or under another embedder,
//! candidate count, vector engine or score definition, it is stale. Re-run
//! `engram calibrate` to renew it.
//!
//! **A finite calibration set.** Each certificate also states the coverage
//! it delivers with probability `1 − δ` over the draw of its questions
//! ([`Pac`]).

use std::collections::{HashMap, HashSet};

#[cfg(doc)]
use engram_index::Bm25;
use engram_index::{Fusion, fuse};
use engram_ops::{CollectionName, TenantId};
use engram_store::rusqlite::{OptionalExtension, params};
use engram_store::{Entity, Op};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::RagOptions;
use crate::conformal::{self, Calibration, HeldOut, Pac, Threshold};
use crate::{ChunkId, Filter, Hit, Mode, Rag, RagError};

/// Default share of a stratum's chunks that may change before its
/// certificates go stale (`retrieval.stale_share`).
pub const STALE_SHARE: f64 = 0.10;
/// Default `δ` of a certificate's PAC statement (`retrieval.pac_delta`).
pub const PAC_DELTA: f64 = 0.05;
/// The definition of the score functions certificates are issued under:
/// 1 = BM25 with the statistics of the filtered documents and exact vector
/// search. Certificates of another version (0: from before versions, BM25
/// with whole-index statistics) are stale.
pub const SCORE_VERSION: u32 = 1;
/// [`SplitMix::stream`] purpose: the chunks LLM-written questions are about.
pub const SAMPLE_STREAM: u64 = 1;
/// [`SplitMix::stream`] purpose: the calibration/held-out split.
pub const HOLDOUT_STREAM: u64 = 2;

/// How a chunk is scored against a question (higher is better); the
/// nonconformity is the negated score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScoreFunction {
    /// Cosine similarity of the question's and the chunk's embeddings;
    /// chunks only BM25 found score −1.
    Dense,
    /// ½·BM25/BM25₍best₎ + ½·cosine: BM25 scaled by the question's best
    /// BM25 score (0 when BM25 did not find the chunk), plus the cosine
    /// similarity (0 when dense search did not find it).
    HybridScaled,
    /// Reciprocal rank fusion (k = 60) of the two lists.
    HybridRrf,
    /// ½ each of the min-max normalized BM25 and cosine lists: the
    /// default hybrid ranking's own score, so a conformal set is a prefix
    /// of the hybrid results. Smallest sets on SciFact at α = 0.05.
    #[default]
    HybridMinMax,
}

impl ScoreFunction {
    /// Every function, for evaluation.
    pub const ALL: [ScoreFunction; 4] = [Self::Dense, Self::HybridScaled, Self::HybridRrf, Self::HybridMinMax];

    /// Its name in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::HybridScaled => "hybrid_scaled",
            Self::HybridRrf => "hybrid_rrf",
            Self::HybridMinMax => "hybrid_min_max",
        }
    }

    /// Parses a name from [`ScoreFunction::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// Scores the candidates of the BM25 and dense lists (each best first),
    /// best first.
    pub fn score(self, bm25: &[(ChunkId, f32)], dense: &[(ChunkId, f32)]) -> Vec<(ChunkId, f64)> {
        let mut out: Vec<(ChunkId, f64)> = match self {
            Self::Dense => {
                let mut scores: HashMap<ChunkId, f64> = bm25.iter().map(|(id, _)| (*id, -1.0)).collect();
                scores.extend(dense.iter().map(|(id, s)| (*id, f64::from(*s))));
                scores.into_iter().collect()
            }
            Self::HybridScaled => {
                let best = bm25.iter().map(|(_, s)| f64::from(*s)).fold(0.0_f64, f64::max);
                let mut scores: HashMap<ChunkId, f64> = HashMap::new();
                for (id, s) in bm25 {
                    let scaled = if best > 0.0 { f64::from(*s) / best } else { 0.0 };
                    *scores.entry(*id).or_default() += 0.5 * scaled;
                }
                for (id, s) in dense {
                    *scores.entry(*id).or_default() += 0.5 * f64::from(*s);
                }
                scores.into_iter().collect()
            }
            Self::HybridRrf => return fuse(&[bm25, dense], Fusion::Rrf { k: 60.0 }),
            Self::HybridMinMax => return fuse(&[bm25, dense], Fusion::Normalized { weights: [0.5, 0.5] }),
        };
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

/// A calibration question: its text and the chunks that answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Question {
    /// The question.
    pub question: String,
    /// Chunk ids whose retrieval counts as finding the evidence.
    #[serde(default)]
    pub gold: Vec<ChunkId>,
    /// Document paths: any chunk of these documents counts as evidence.
    #[serde(default)]
    pub gold_paths: Vec<String>,
}

impl Question {
    /// Reads questions from a JSONL file (one object per line; blank lines
    /// skipped), naming the line of any error.
    pub fn read_jsonl(path: &std::path::Path) -> Result<Vec<Question>, RagError> {
        use std::io::BufRead;
        let io = |source| RagError::Io { context: format!("cannot read {}", path.display()), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut questions = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let question = serde_json::from_str(&line).map_err(|err| {
                RagError::Invalid(format!("{}:{}: not a calibration question: {err}", path.display(), i + 1))
            })?;
            questions.push(question);
        }
        Ok(questions)
    }
}

/// The part of a collection a certificate is calibrated on and claims for:
/// a search's filter other than the collection (Mondrian strata).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stratum {
    /// Only this tenant's documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// Only documents whose path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Only documents carrying every one of these tags (sorted, once each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Only documents ingested in `[from, to)`, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<[i64; 2]>,
}

impl Stratum {
    /// The stratum a search's filter falls in (its collection aside).
    pub fn of(filter: &Filter) -> Self {
        Self {
            tenant: filter.tenant.clone(),
            path_prefix: filter.path_prefix.clone(),
            tags: filter.tags.clone(),
            time: filter.time.as_ref().map(|range| [range.start, range.end]),
        }
        .normalized()
    }

    /// The same stratum with its tags sorted and once each (tag order does
    /// not change which documents a filter keeps).
    pub fn normalized(mut self) -> Self {
        self.tags.sort();
        self.tags.dedup();
        self
    }

    /// The filter of this stratum in `collection`.
    pub fn filter(&self, collection: &CollectionName) -> Filter {
        Filter {
            collection: Some(collection.clone()),
            tenant: self.tenant.clone(),
            path_prefix: self.path_prefix.clone(),
            tags: self.tags.clone(),
            time: self.time.map(|[from, to]| from..to),
        }
    }

    /// Whether it is the whole collection.
    pub fn is_whole(&self) -> bool {
        *self == Self::default()
    }

    /// In words, for messages and the population a guarantee is for.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(tenant) = &self.tenant {
            parts.push(format!("tenant `{tenant}`"));
        }
        if let Some(prefix) = &self.path_prefix {
            parts.push(format!("paths starting {prefix:?}"));
        }
        if !self.tags.is_empty() {
            parts.push(format!("tags {}", self.tags.join(" + ")));
        }
        if let Some([from, to]) = self.time {
            parts.push(format!("ingested in [{from}, {to})"));
        }
        if parts.is_empty() { "the whole collection".to_owned() } else { parts.join(", ") }
    }
}

/// A calibration result kept in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Certificate {
    /// Its id (`cert-<collection>-<created ms>`).
    pub id: String,
    /// The collection it certifies.
    pub collection: String,
    /// The filter it was calibrated under, and the only one it claims for.
    #[serde(default)]
    pub stratum: Stratum,
    /// The collection's change counter when issued (its version).
    pub collection_version: u64,
    /// Chunks within the stratum when issued.
    pub chunks: u64,
    /// The embedder it was calibrated with.
    pub embedder: String,
    /// The score function.
    pub score_function: ScoreFunction,
    /// The definition the score function had ([`SCORE_VERSION`]).
    #[serde(default)]
    pub score_version: u32,
    /// The vector engine that scored (`edge` or `qdrant`, searched exactly).
    #[serde(default)]
    pub vectors: String,
    /// Candidates per list.
    pub candidates: usize,
    /// The level and threshold (on nonconformity = −score).
    pub calibration: Calibration,
    /// The threshold as a minimum score (`null` when unbounded: every
    /// candidate is in the set).
    pub min_score: Option<f64>,
    /// The coverage this calibration delivers with probability `1 − δ`
    /// over the draw of its questions (`null` when unbounded).
    #[serde(default)]
    pub pac: Option<Pac>,
    /// How the threshold did on questions held out of the calibration.
    pub held_out: Option<HeldOut>,
    /// Where the questions came from (a file, or "generated"): the
    /// guarantee is for questions drawn like these.
    pub questions_from: String,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
}

impl Certificate {
    /// The coverage it promises, `1 − α`.
    pub fn target(&self) -> f64 {
        1.0 - self.calibration.alpha
    }

    /// Whom the guarantee is for.
    pub fn population(&self) -> String {
        let place = if self.stratum.is_whole() {
            format!("collection `{}`", self.collection)
        } else {
            format!("{} in collection `{}`", self.stratum.describe(), self.collection)
        };
        format!(
            "questions drawn like the calibration questions ({}) about {place}, whose evidence is in it",
            self.questions_from
        )
    }

    /// When the calibration set is too small for a useful statement: what
    /// it does guarantee, and how many questions would be enough.
    pub fn advice(&self) -> Option<String> {
        let alpha = self.calibration.alpha;
        let n = self.calibration.n;
        let needed = conformal::questions_needed(alpha, self.pac.map_or(PAC_DELTA, |p| p.delta));
        let more = needed.map_or_else(String::new, |m| {
            format!("; about {m} questions would bring it within {} of the target", conformal::USEFUL_GAP)
        });
        match self.pac {
            None => Some(format!(
                "{n} questions cannot certify α = {alpha}: the set is every candidate ({} is the fewest that can){more}",
                (1.0 / alpha - 1.0).ceil()
            )),
            Some(pac) if pac.coverage < self.target() - conformal::USEFUL_GAP => Some(format!(
                "with {n} questions, this certificate's coverage is at least {:.3} with probability {:.2} over the \
                 questions drawn, not {:.3}{more}",
                pac.coverage,
                1.0 - pac.delta,
                self.target()
            )),
            Some(_) => None,
        }
    }
}

/// A certificate and whether it still holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CertificateStatus {
    /// The certificate.
    #[serde(flatten)]
    pub certificate: Certificate,
    /// Chunk changes in the collection since it was issued.
    pub changes_since: u64,
    /// Changes it tolerates as `approximate` before it is stale.
    pub allowed_changes: u64,
    /// The collection changed since, within the allowance: exchangeability,
    /// and so `1 − α`, holds only approximately (claimed by no search).
    pub approximate: bool,
    /// Whether it is stale (see the module documentation).
    pub stale: bool,
    /// Why it is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_because: Option<String>,
}

impl CertificateStatus {
    /// Exactly as calibrated: nothing changed, same score function.
    pub fn exact(&self) -> bool {
        !self.stale && !self.approximate
    }

    /// 0 exact, 1 approximate, 2 stale: the order certificates are preferred in.
    fn freshness(&self) -> u8 {
        if self.stale { 2 } else { u8::from(self.approximate) }
    }
}

/// How to calibrate.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Miscoverage level, in (0, 1).
    pub alpha: f64,
    /// The score function.
    pub score_function: ScoreFunction,
    /// Share of questions held out to report coverage (0 for none).
    pub holdout: f64,
    /// Seed of the calibration/held-out split.
    pub seed: u64,
    /// Where the questions came from, for the record.
    pub questions_from: String,
    /// The filter to calibrate under (besides the collection).
    pub stratum: Stratum,
}

impl CalibrateOptions {
    /// Checks α and the held-out share (before any costly work, such as
    /// having an LLM write the questions).
    pub fn validate(&self) -> Result<(), RagError> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(RagError::Invalid(format!("alpha must be strictly between 0 and 1, got {}", self.alpha)));
        }
        if !(0.0..0.9).contains(&self.holdout) {
            return Err(RagError::Invalid(format!("holdout must be in [0, 0.9), got {}", self.holdout)));
        }
        Ok(())
    }
}

/// Why a conformal answer claims no guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoGuarantee {
    /// `max_chunks` cut the set.
    MaxChunks,
    /// `max_tokens` cut the set.
    MaxTokens,
    /// The certificate's threshold is unbounded (too few calibration
    /// questions for the level, or too many misses): the set would be the
    /// whole collection, and only the candidates came back.
    Unbounded,
    /// The certificate was calibrated under another filter than the search's.
    OtherFilter,
    /// The collection changed since calibration, within the allowance.
    Approximate,
    /// The certificate is stale.
    Stale,
}

impl NoGuarantee {
    /// In words, for the CLI.
    pub fn describe(self) -> &'static str {
        match self {
            Self::MaxChunks => "cut by --max-chunks",
            Self::MaxTokens => "cut by --max-tokens",
            Self::Unbounded => "the threshold is unbounded (every candidate; calibrate with more questions)",
            Self::OtherFilter => "no certificate for this filter (engram calibrate with the same filter)",
            Self::Approximate => "the collection changed since calibration: approximate",
            Self::Stale => "the certificate is stale (engram calibrate)",
        }
    }

    /// Whether it is a cut of the set.
    pub fn cuts(self) -> bool {
        matches!(self, Self::MaxChunks | Self::MaxTokens | Self::Unbounded)
    }
}

/// A conformal answer: every admitted chunk, and what is claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConformalSet {
    /// The certificate used.
    pub certificate: String,
    /// The level it was calibrated at.
    pub alpha: f64,
    /// `1 − α`: what it promises when it holds.
    pub target: f64,
    /// The minimum score admitted (`null`: every candidate).
    pub min_score: Option<f64>,
    /// Whether a size or token cap cut the set, or the certificate's
    /// threshold is unbounded (see `no_guarantee`).
    pub truncated: bool,
    /// Whether the certificate is stale.
    pub stale: bool,
    /// Whether the collection changed since calibration, within the
    /// allowance: the level holds only approximately.
    pub approximate: bool,
    /// `1 − α` when the guarantee holds exactly, else `null`.
    pub coverage_guarantee: Option<f64>,
    /// With the guarantee: the coverage this certificate delivers with
    /// probability `1 − δ` over its calibration questions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pac: Option<Pac>,
    /// Why `coverage_guarantee` is `null` (empty when it holds).
    pub no_guarantee: Vec<NoGuarantee>,
    /// The filter the certificate was calibrated under.
    pub stratum: Stratum,
    /// Where its calibration questions came from.
    pub questions_from: String,
    /// Whom the guarantee is for: it is a probability over questions
    /// drawn like the certificate's calibration questions, about this
    /// stratum, not a promise about any one question.
    pub population: String,
    /// Chunks in the full set, before any cap.
    pub set_size: usize,
    /// The chunks returned, best first.
    pub hits: Vec<Hit>,
}

/// A small, seedable generator (splitmix64) for reproducible splits.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// An independent stream of `seed` for one `purpose` (such as
    /// [`SAMPLE_STREAM`]), so that one seed can drive several draws whose
    /// orders are unrelated.
    pub fn stream(seed: u64, purpose: u64) -> Self {
        let mut mix = SplitMix(seed ^ purpose.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        SplitMix(mix.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Shuffles `items` (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Nonconformity of the best-scoring gold candidate (`+∞` if none was found).
pub fn nonconformity(scored: &[(ChunkId, f64)], is_gold: impl Fn(ChunkId) -> bool) -> f64 {
    scored.iter().find(|(id, _)| is_gold(*id)).map_or(f64::INFINITY, |(_, s)| -s)
}

/// Candidates the threshold admits.
pub fn set_size(scored: &[(ChunkId, f64)], threshold: Threshold) -> usize {
    scored.iter().filter(|(_, s)| threshold.admits(-s)).count()
}

/// One calibration question scored: the gold's nonconformity and every
/// candidate's score, best first.
type Scored = (f64, Vec<(ChunkId, f64)>);

impl Rag {
    /// Scores `query`'s candidates within `filter` with `function`, best
    /// first: BM25 with the filtered documents' statistics and exact vector
    /// search, so the scores are a fixed function of the filtered chunks.
    pub fn scored(
        &self,
        query: &str,
        filter: &Filter,
        function: ScoreFunction,
    ) -> Result<Vec<(ChunkId, f64)>, RagError> {
        let lists = self.lists(query, filter, Mode::Hybrid, self.options().candidates, true)?;
        let (bm25, dense) = match &lists[..] {
            [bm25, dense] => (bm25.as_slice(), dense.as_slice()),
            _ => (&[][..], &[][..]),
        };
        Ok(function.score(bm25, dense))
    }

    /// Each question scored within `filter`.
    fn score_questions(
        &self,
        questions: &[Question],
        golds: &[HashSet<ChunkId>],
        filter: &Filter,
        function: ScoreFunction,
    ) -> Result<Vec<Scored>, RagError> {
        questions
            .iter()
            .zip(golds)
            .map(|(q, gold)| {
                let scored = self.scored(&q.question, filter, function)?;
                Ok((nonconformity(&scored, |id| gold.contains(&id)), scored))
            })
            .collect()
    }

    /// Calibrates `collection` (within `options.stratum`) on `questions`
    /// and stores the certificate.
    pub fn calibrate(
        &self,
        collection: &str,
        questions: &[Question],
        options: &CalibrateOptions,
    ) -> Result<Certificate, RagError> {
        options.validate()?;
        let info = self.collection(collection)?;
        let filter =
            options.stratum.filter(&CollectionName::new(collection).map_err(|e| RagError::Invalid(e.to_string()))?);
        let within = if info.chunks == 0 { Vec::new() } else { self.chunks_within(&filter)? };
        if within.is_empty() {
            let place = if options.stratum.is_whole() {
                String::new()
            } else {
                format!(" within {}", options.stratum.describe())
            };
            return Err(RagError::Invalid(format!("collection {collection:?} has no chunks{place} to calibrate on")));
        }
        if questions.is_empty() {
            return Err(RagError::Invalid("no calibration questions".to_owned()));
        }
        let golds = resolve_golds(&filter, &within, questions)?;
        let scores = self.score_questions(questions, &golds, &filter, options.score_function)?;
        let mut order: Vec<usize> = (0..scores.len()).collect();
        SplitMix::stream(options.seed, HOLDOUT_STREAM).shuffle(&mut order);
        let held = ((scores.len() as f64) * options.holdout).floor() as usize;
        let (test, cal) = order.split_at(held);
        let cal_scores: Vec<f64> = cal.iter().map(|&i| scores[i].0).collect();
        let calibration = conformal::calibrate(&cal_scores, options.alpha)
            .map_err(|err| RagError::Invalid(format!("calibration failed: {err}")))?;
        let held_out = (!test.is_empty()).then(|| {
            let rows: Vec<(f64, usize)> =
                test.iter().map(|&i| (scores[i].0, set_size(&scores[i].1, calibration.threshold))).collect();
            conformal::held_out(&calibration, &rows)
        });
        let delta = self.options().pac_delta;
        let created_at_ms = now_ms();
        let certificate = Certificate {
            id: format!("cert-{collection}-{created_at_ms}"),
            collection: collection.to_owned(),
            stratum: options.stratum.clone(),
            collection_version: info.changes,
            chunks: within.len() as u64,
            embedder: self.embedder().name.clone(),
            score_function: options.score_function,
            score_version: SCORE_VERSION,
            vectors: self.index.vectors().engine().to_owned(),
            candidates: self.options().candidates,
            min_score: match calibration.threshold {
                Threshold::Finite(t) => Some(-t),
                Threshold::Unbounded => None,
            },
            pac: conformal::pac_coverage(calibration.n, calibration.rank, delta)
                .filter(|_| calibration.threshold != Threshold::Unbounded)
                .map(|coverage| Pac { delta, coverage }),
            calibration,
            held_out,
            questions_from: options.questions_from.clone(),
            created_at_ms,
        };
        let body = serde_json::to_string(&certificate).map_err(|e| RagError::Invalid(e.to_string()))?;
        self.store().write(|tx| -> Result<(), RagError> {
            tx.sql()
                .execute(
                    "INSERT INTO certificates (id, collection, alpha, created_at_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![certificate.id, collection, options.alpha, created_at_ms, body],
                )
                .map_err(|e| RagError::sql_error(self.store(), e))?;
            tx.record(Entity::Calibration, &certificate.id, Op::Upsert)?;
            Ok(())
        })?;
        Ok(certificate)
    }

    /// The chunks within `filter` (which names a collection), with their
    /// document paths.
    pub fn chunks_within(&self, filter: &Filter) -> Result<Vec<(ChunkId, String)>, RagError> {
        let collection = filter
            .collection
            .as_ref()
            .ok_or_else(|| RagError::Invalid("a stratum is within one collection".to_owned()))?;
        let chunks = self.chunk_ids(collection.as_str())?;
        if Stratum::of(filter).is_whole() {
            return Ok(chunks);
        }
        // The filter's other conditions, as the indexes apply them.
        let (within, _) = self.index_ids(filter)?;
        Ok(chunks.into_iter().filter(|(id, _)| within.contains(id)).collect())
    }

    /// How certificate `id` does on `questions` (say, real users' questions
    /// after calibrating on generated ones): the share whose gold chunk is
    /// in the certified set, and the set sizes, with the certificate's own
    /// stratum, score function and threshold; with the certificate's status.
    pub fn check_certificate(
        &self,
        id: &str,
        questions: &[Question],
    ) -> Result<(CertificateStatus, HeldOut), RagError> {
        let status = self.certificate(id)?;
        let cert = &status.certificate;
        if questions.is_empty() {
            return Err(RagError::Invalid("no questions to check the certificate on".to_owned()));
        }
        let collection = CollectionName::new(&cert.collection).map_err(|e| RagError::Invalid(e.to_string()))?;
        let filter = cert.stratum.filter(&collection);
        let golds = resolve_golds(&filter, &self.chunks_within(&filter)?, questions)?;
        let rows: Vec<(f64, usize)> = self
            .score_questions(questions, &golds, &filter, cert.score_function)?
            .into_iter()
            .map(|(gold, scored)| (gold, set_size(&scored, cert.calibration.threshold)))
            .collect();
        let checked = conformal::held_out(&cert.calibration, &rows);
        Ok((status, checked))
    }

    /// Certificates, newest first, of one collection or all.
    pub fn certificates(&self, collection: Option<&str>) -> Result<Vec<CertificateStatus>, RagError> {
        let bodies: Vec<String> = self.store().read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT body FROM certificates WHERE ?1 IS NULL OR collection = ?1 ORDER BY created_at_ms DESC, id DESC",
            )?;
            let rows = stmt.query_map(params![collection], |row| row.get(0))?;
            rows.collect()
        })?;
        // Only the change counters: this runs on every conformal search, and
        // `collections()` counts every chunk.
        let collections: HashMap<String, u64> = self.store().read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT name, chunks_added + chunks_removed FROM collections")?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        })?;
        bodies
            .iter()
            .map(|body| {
                let certificate: Certificate = serde_json::from_str(body)
                    .map_err(|e| RagError::Invalid(format!("a stored certificate does not parse: {e}")))?;
                let now = collections.get(&certificate.collection).copied().unwrap_or(u64::MAX);
                Ok(self.status(certificate, now))
            })
            .collect()
    }

    /// Whether `certificate` still holds, with its collection's change
    /// counter now at `now`.
    fn status(&self, certificate: Certificate, now: u64) -> CertificateStatus {
        let changes_since = now.saturating_sub(certificate.collection_version);
        let allowed_changes = (certificate.chunks as f64 * self.options().stale_share).floor() as u64;
        let vectors = self.index.vectors().engine();
        // Anything else is another score function.
        let other_function = if certificate.embedder != self.embedder().name {
            Some(format!("calibrated with embedder {}, searches use {}", certificate.embedder, self.embedder().name))
        } else if certificate.candidates != self.options().candidates {
            Some(format!(
                "calibrated with {} candidates per list, searches use {}",
                certificate.candidates,
                self.options().candidates
            ))
        } else if certificate.vectors != vectors {
            Some(format!("calibrated on the {:?} vector engine, searches use {vectors:?}", certificate.vectors))
        } else if certificate.score_version != SCORE_VERSION {
            Some(format!(
                "calibrated under score definition {}, searches use {SCORE_VERSION}",
                certificate.score_version
            ))
        } else {
            None
        };
        let stale_because = other_function.or_else(|| {
            (changes_since > allowed_changes).then(|| {
                format!(
                    "{changes_since} chunk changes since calibration, more than the {allowed_changes} allowed ({} of {} chunks)",
                    self.options().stale_share,
                    certificate.chunks
                )
            })
        });
        let stale = stale_because.is_some();
        CertificateStatus {
            certificate,
            changes_since,
            allowed_changes,
            approximate: !stale && changes_since > 0,
            stale,
            stale_because,
        }
    }

    /// One certificate by id.
    pub fn certificate(&self, id: &str) -> Result<CertificateStatus, RagError> {
        let collection: Option<String> = self.store().read(|conn| {
            conn.query_row("SELECT collection FROM certificates WHERE id = ?1", params![id], |row| row.get(0))
                .optional()
        })?;
        let collection = collection.ok_or_else(|| RagError::NotFound(format!("there is no certificate {id:?}")))?;
        self.certificates(Some(&collection))?
            .into_iter()
            .find(|c| c.certificate.id == id)
            .ok_or_else(|| RagError::NotFound(format!("there is no certificate {id:?}")))
    }

    /// Every chunk within `filter` that a certificate of its collection at
    /// level `alpha` or below admits for `query`. The certificate chosen
    /// is the one that can claim most: same stratum as the filter first
    /// (then the same tenant), then exact before approximate before stale, then the closest level
    /// (a smaller α also certifies `alpha`, with larger sets), then the
    /// newest. `max_chunks` and `max_tokens` cap what is returned; a cut
    /// set claims nothing, and `no_guarantee` says why. Without one of the
    /// search's stratum, the set is cut at the threshold of one of the same
    /// tenant if there is one (a heuristic, claiming nothing).
    pub fn conformal_search(
        &self,
        query: &str,
        filter: &Filter,
        alpha: f64,
        max_chunks: usize,
        max_tokens: Option<usize>,
    ) -> Result<ConformalSet, RagError> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(RagError::Invalid(format!("alpha must be strictly between 0 and 1, got {alpha}")));
        }
        let collection = filter.collection.as_ref().map(CollectionName::as_str).ok_or_else(|| {
            RagError::Invalid("a search at a level alpha needs a collection (certificates are per collection)".into())
        })?;
        let stratum = Stratum::of(filter);
        let all = self.certificates(Some(collection))?;
        let status = all
            .iter()
            .filter(|c| c.certificate.calibration.alpha <= alpha + 1e-12)
            .min_by(|a, b| {
                let other = |c: &CertificateStatus| (c.certificate.stratum != stratum, c.certificate.stratum.tenant != stratum.tenant);
                other(a)
                    .cmp(&other(b))
                    .then(a.freshness().cmp(&b.freshness()))
                    .then(b.certificate.calibration.alpha.total_cmp(&a.certificate.calibration.alpha))
                    .then(b.certificate.created_at_ms.cmp(&a.certificate.created_at_ms))
            })
            .ok_or_else(|| {
                RagError::Invalid(format!(
                    "collection {collection:?} has no certificate at alpha {alpha} or below: run `engram calibrate --collection {collection} --alpha {alpha}`"
                ))
            })?;
        let cert = &status.certificate;
        let scored = self.scored(query, filter, cert.score_function)?;
        let admitted: Vec<(ChunkId, f64)> =
            scored.into_iter().filter(|(_, s)| cert.calibration.threshold.admits(-s)).collect();
        let set_size = admitted.len();
        let mut hits = self.hydrate(&admitted[..admitted.len().min(max_chunks)])?;
        let mut no_guarantee = Vec::new();
        if cert.stratum != stratum {
            no_guarantee.push(NoGuarantee::OtherFilter);
        }
        if status.stale {
            no_guarantee.push(NoGuarantee::Stale);
        } else if status.approximate {
            no_guarantee.push(NoGuarantee::Approximate);
        }
        if cert.calibration.threshold == Threshold::Unbounded {
            no_guarantee.push(NoGuarantee::Unbounded);
        }
        if set_size > max_chunks {
            no_guarantee.push(NoGuarantee::MaxChunks);
        }
        if let Some(budget) = max_tokens {
            let mut used = 0;
            let mut keep = 0;
            for hit in &hits {
                let tokens = self.embedder().count_tokens(&hit.text).unwrap_or(hit.text.len() / 4 + 1);
                if used + tokens > budget {
                    break;
                }
                used += tokens;
                keep += 1;
            }
            if keep < hits.len() {
                hits.truncate(keep);
                no_guarantee.push(NoGuarantee::MaxTokens);
            }
        }
        let holds = no_guarantee.is_empty();
        Ok(ConformalSet {
            certificate: cert.id.clone(),
            alpha: cert.calibration.alpha,
            target: cert.target(),
            min_score: cert.min_score,
            truncated: no_guarantee.iter().any(|r| r.cuts()),
            stale: status.stale,
            approximate: status.approximate,
            coverage_guarantee: holds.then(|| cert.target()),
            pac: if holds { cert.pac } else { None },
            no_guarantee,
            stratum: cert.stratum.clone(),
            questions_from: cert.questions_from.clone(),
            population: cert.population(),
            set_size,
            hits,
        })
    }
}

/// Each question's gold chunks (its ids and the chunks of its paths)
/// among `within`, the chunks of `filter`; an id or path outside it, or a
/// question without text or gold, is an error naming the question's line.
fn resolve_golds(
    filter: &Filter,
    within: &[(ChunkId, String)],
    questions: &[Question],
) -> Result<Vec<HashSet<ChunkId>>, RagError> {
    let ids: HashSet<ChunkId> = within.iter().map(|(id, _)| *id).collect();
    let mut by_path: HashMap<&str, Vec<ChunkId>> = HashMap::new();
    for (id, path) in within {
        by_path.entry(path.as_str()).or_default().push(*id);
    }
    let collection = filter.collection.as_ref().map_or("", CollectionName::as_str);
    let stratum = Stratum::of(filter);
    let place = if stratum.is_whole() {
        format!("collection {collection:?}")
    } else {
        format!("collection {collection:?} within {}", stratum.describe())
    };
    let mut golds: Vec<HashSet<ChunkId>> = Vec::with_capacity(questions.len());
    for (i, q) in questions.iter().enumerate() {
        let mut gold: HashSet<ChunkId> = HashSet::new();
        for id in &q.gold {
            if !ids.contains(id) {
                return Err(RagError::Invalid(format!("question {} names chunk {id}, which is not in {place}", i + 1)));
            }
            gold.insert(*id);
        }
        for path in &q.gold_paths {
            let Some(found) = by_path.get(path.as_str()) else {
                return Err(RagError::Invalid(format!(
                    "question {} names document {path:?}, which is not in {place}",
                    i + 1
                )));
            };
            gold.extend(found);
        }
        if gold.is_empty() || q.question.trim().is_empty() {
            return Err(RagError::Invalid(format!(
                "question {} needs a question and at least one gold chunk or path",
                i + 1
            )));
        }
        golds.push(gold);
    }
    Ok(golds)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BM25: [(ChunkId, f32); 2] = [(ChunkId(1), 4.0), (ChunkId(2), 2.0)];
    const DENSE: [(ChunkId, f32); 2] = [(ChunkId(2), 0.75), (ChunkId(3), 0.25)];

    fn close(got: &[(ChunkId, f64)], expected: &[(u64, f64)]) {
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for ((id, score), (want_id, want)) in got.iter().zip(expected) {
            assert_eq!(id.0, *want_id, "{got:?}");
            assert!((score - want).abs() < 1e-12, "{got:?}");
        }
    }

    #[test]
    fn each_score_function_scores_both_lists_as_documented() {
        // Dense: cosine, and −1 for what only BM25 found.
        close(&ScoreFunction::Dense.score(&BM25, &DENSE), &[(2, 0.75), (3, 0.25), (1, -1.0)]);
        // Scaled: ½·BM25/best + ½·cosine.
        close(&ScoreFunction::HybridScaled.score(&BM25, &DENSE), &[(2, 0.625), (1, 0.5), (3, 0.125)]);
        // RRF with k = 60, ranks from 1.
        close(
            &ScoreFunction::HybridRrf.score(&BM25, &DENSE),
            &[(2, 1.0 / 62.0 + 1.0 / 61.0), (1, 1.0 / 61.0), (3, 1.0 / 62.0)],
        );
        // Min-max: each list to [0, 1], ½ each; ties keep first appearance.
        close(&ScoreFunction::HybridMinMax.score(&BM25, &DENSE), &[(1, 0.5), (2, 0.5), (3, 0.0)]);
        // Nothing found scores nothing; one list alone still scores.
        assert!(ScoreFunction::HybridMinMax.score(&[], &[]).is_empty());
        close(&ScoreFunction::HybridScaled.score(&[], &DENSE), &[(2, 0.375), (3, 0.125)]);
        for function in ScoreFunction::ALL {
            assert_eq!(ScoreFunction::parse(function.as_str()), Some(function));
        }
    }

    #[test]
    fn nonconformity_is_the_best_gold_and_a_miss_is_infinite() {
        let scored = ScoreFunction::HybridScaled.score(&BM25, &DENSE);
        assert_eq!(nonconformity(&scored, |id| id == ChunkId(1) || id == ChunkId(3)), -0.5);
        assert_eq!(nonconformity(&scored, |id| id == ChunkId(9)), f64::INFINITY);
        assert_eq!(set_size(&scored, Threshold::Finite(-0.5)), 2);
        assert_eq!(set_size(&scored, Threshold::Unbounded), 3);
    }

    /// A threshold read back from the journal is the one written, bit for
    /// bit, for the discrete scores that fusion produces (exactly 1.0 and
    /// ½ sums of min-max ratios; sums of 1/(60+r)): a search admits every
    /// chunk at the threshold.
    #[test]
    fn thresholds_survive_storage_bit_for_bit() {
        let mut scores: Vec<f64> = Vec::new();
        for n in 2..60_u32 {
            let bm25: Vec<(ChunkId, f32)> =
                (0..n).map(|i| (ChunkId(u64::from(i)), 30.0 / (1.0 + i as f32).sqrt())).collect();
            let dense: Vec<(ChunkId, f32)> =
                (0..n).rev().map(|i| (ChunkId(u64::from(i)), 0.9 - 0.013 * i as f32)).collect();
            for function in ScoreFunction::ALL {
                scores.extend(function.score(&bm25, &dense).into_iter().map(|(_, s)| s));
            }
        }
        assert!(scores.len() > 5_000);
        for score in scores {
            let threshold = Threshold::Finite(-score);
            let text = serde_json::to_string(&threshold).unwrap();
            let back: Threshold = serde_json::from_str(&text).unwrap();
            let Threshold::Finite(t) = back else { panic!("{text}") };
            assert_eq!(t.to_bits(), (-score).to_bits(), "{score:e} came back as {:e}", -t);
            assert!(back.admits(-score));
        }
    }

    #[test]
    fn streams_of_one_seed_draw_unrelated_orders() {
        let shuffled = |mut rng: SplitMix| {
            let mut items: Vec<u32> = (0..100).collect();
            rng.shuffle(&mut items);
            items
        };
        let sample = shuffled(SplitMix::stream(1, SAMPLE_STREAM));
        assert_eq!(sample, shuffled(SplitMix::stream(1, SAMPLE_STREAM)), "reproducible");
        assert_ne!(sample, shuffled(SplitMix::stream(1, HOLDOUT_STREAM)));
        assert_ne!(sample, shuffled(SplitMix::stream(2, SAMPLE_STREAM)));
    }

    #[test]
    fn strata_ignore_tag_order_and_describe_themselves() {
        let filter = Filter {
            collection: None,
            tenant: Some("acme".parse().unwrap()),
            path_prefix: None,
            tags: vec!["b".into(), "a".into(), "b".into()],
            time: Some(1..5),
        };
        let stratum = Stratum::of(&filter);
        assert_eq!(stratum.tags, ["a", "b"]);
        assert_eq!(stratum.describe(), "tenant `acme`, tags a + b, ingested in [1, 5)");
        let collection: CollectionName = "docs".parse().unwrap();
        assert_eq!(Stratum::of(&stratum.filter(&collection)), stratum);
        assert!(Stratum::default().is_whole() && !stratum.is_whole());
        assert_eq!(Stratum::default().describe(), "the whole collection");
    }
}
