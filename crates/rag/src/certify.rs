//! Conformal certificates: calibrating a collection's score function on
//! questions with known gold chunks, storing the result in the journal, and
//! answering a query at level α with every chunk the certificate admits.
//!
//! **The score function** is fixed and named in every certificate, and the
//! same code scores candidates at query time. A chunk that is in neither
//! candidate list (the top [`Rag::options`]`.candidates` of BM25 and of
//! dense search) is not found: its nonconformity is `+∞`.
//!
//! **Staleness.** A certificate records the collection's change counter
//! (chunks written plus chunks removed) and chunk count when it was issued.
//! It is stale once the chunks changed since then exceed
//! [`STALE_SHARE`] of the chunks it was calibrated on, or the embedder or
//! the number of candidates per list is not the one it was calibrated with
//! (the scores are then another function): the calibration questions no longer
//! describe the collection, so the guarantee is not claimed (the set is
//! still returned, flagged). Re-run `engram calibrate` to renew it.

use std::collections::{HashMap, HashSet};

use engram_index::{Fusion, fuse};
use engram_ops::CollectionName;
use engram_store::rusqlite::{OptionalExtension, params};
use engram_store::{Entity, Op};
use serde::{Deserialize, Serialize};

use crate::conformal::{self, Calibration, HeldOut, Threshold};
use crate::{ChunkId, Filter, Hit, Mode, Rag, RagError};

/// Share of a collection that may change before its certificates go stale.
pub const STALE_SHARE: f64 = 0.10;

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

/// A calibration result kept in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Certificate {
    /// Its id (`cert-<collection>-<created ms>`).
    pub id: String,
    /// The collection it certifies.
    pub collection: String,
    /// The collection's change counter when issued (its version).
    pub collection_version: u64,
    /// Chunks in the collection when issued.
    pub chunks: u64,
    /// The embedder it was calibrated with.
    pub embedder: String,
    /// The score function.
    pub score_function: ScoreFunction,
    /// Candidates per list.
    pub candidates: usize,
    /// The level and threshold (on nonconformity = −score).
    pub calibration: Calibration,
    /// The threshold as a minimum score (`null` when unbounded: every
    /// candidate is in the set).
    pub min_score: Option<f64>,
    /// How the threshold did on questions held out of the calibration.
    pub held_out: Option<HeldOut>,
    /// Where the questions came from (a file, or "generated").
    pub questions_from: String,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
}

/// A certificate and whether it still holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CertificateStatus {
    /// The certificate.
    #[serde(flatten)]
    pub certificate: Certificate,
    /// Chunk changes since it was issued.
    pub changes_since: u64,
    /// Whether it is stale (see the module documentation).
    pub stale: bool,
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

/// A conformal answer: every admitted chunk, and what is claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConformalSet {
    /// The certificate used.
    pub certificate: String,
    /// The level asked for.
    pub alpha: f64,
    /// The minimum score admitted (`null`: every candidate).
    pub min_score: Option<f64>,
    /// Whether a size or token cap cut the set, or the certificate's
    /// threshold is unbounded (the set would be the whole collection, and
    /// only the candidates are returned): then no guarantee.
    pub truncated: bool,
    /// Whether the certificate is stale (then no guarantee).
    pub stale: bool,
    /// `1 − α` when the guarantee holds, else `null`.
    pub coverage_guarantee: Option<f64>,
    /// Whom the guarantee is for: it is a probability over questions
    /// drawn like the certificate's calibration questions, about this
    /// collection, not a promise about any one question.
    pub population: String,
    /// Chunks in the full set, before any cap.
    pub set_size: usize,
    /// The chunks returned, best first.
    pub hits: Vec<Hit>,
}

/// A small, seedable generator (splitmix64) for reproducible splits.
pub struct SplitMix(pub u64);

impl SplitMix {
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

impl Rag {
    /// Scores `query`'s candidates in `collection` with `function`, best first.
    pub fn scored(
        &self,
        query: &str,
        filter: &Filter,
        function: ScoreFunction,
    ) -> Result<Vec<(ChunkId, f64)>, RagError> {
        let lists = self.lists(query, filter, Mode::Hybrid, self.options().candidates)?;
        let (bm25, dense) = match &lists[..] {
            [bm25, dense] => (bm25.as_slice(), dense.as_slice()),
            _ => (&[][..], &[][..]),
        };
        Ok(function.score(bm25, dense))
    }

    /// Calibrates `collection` on `questions` and stores the certificate.
    pub fn calibrate(
        &self,
        collection: &str,
        questions: &[Question],
        options: &CalibrateOptions,
    ) -> Result<Certificate, RagError> {
        options.validate()?;
        let info = self.collection(collection)?;
        if info.chunks == 0 {
            return Err(RagError::Invalid(format!("collection {collection:?} has no chunks to calibrate on")));
        }
        if questions.is_empty() {
            return Err(RagError::Invalid("no calibration questions".to_owned()));
        }
        let golds = self.resolve_golds(collection, questions)?;
        let filter = Filter::collection(collection)?;
        let mut scores = Vec::with_capacity(questions.len());
        for (q, gold) in questions.iter().zip(&golds) {
            let scored = self.scored(&q.question, &filter, options.score_function)?;
            scores.push((nonconformity(&scored, |id| gold.contains(&id)), scored));
        }
        let mut order: Vec<usize> = (0..scores.len()).collect();
        SplitMix(options.seed).shuffle(&mut order);
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
        let created_at_ms = now_ms();
        let certificate = Certificate {
            id: format!("cert-{collection}-{created_at_ms}"),
            collection: collection.to_owned(),
            collection_version: info.changes,
            chunks: info.chunks,
            embedder: self.embedder().name.clone(),
            score_function: options.score_function,
            candidates: self.options().candidates,
            min_score: match calibration.threshold {
                Threshold::Finite(t) => Some(-t),
                Threshold::Unbounded => None,
            },
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

    /// Each question's gold chunks (its ids and the chunks of its paths);
    /// an unknown id or path, or a question without text or gold, is an
    /// error naming the question's line.
    fn resolve_golds(&self, collection: &str, questions: &[Question]) -> Result<Vec<HashSet<ChunkId>>, RagError> {
        let chunks = self.chunk_ids(collection)?;
        let ids: HashSet<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
        let mut by_path: HashMap<&str, Vec<ChunkId>> = HashMap::new();
        for (id, path) in &chunks {
            by_path.entry(path.as_str()).or_default().push(*id);
        }
        let mut golds: Vec<HashSet<ChunkId>> = Vec::with_capacity(questions.len());
        for (i, q) in questions.iter().enumerate() {
            let mut gold: HashSet<ChunkId> = HashSet::new();
            for id in &q.gold {
                if !ids.contains(id) {
                    return Err(RagError::Invalid(format!(
                        "question {} names chunk {id}, which is not in collection {collection:?}",
                        i + 1
                    )));
                }
                gold.insert(*id);
            }
            for path in &q.gold_paths {
                let Some(found) = by_path.get(path.as_str()) else {
                    return Err(RagError::Invalid(format!(
                        "question {} names document {path:?}, which is not in collection {collection:?}",
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

    /// How certificate `id` does on `questions` (say, real users' questions
    /// after calibrating on generated ones): the share whose gold chunk is
    /// in the certified set, and the set sizes, with the certificate's own
    /// score function and threshold; with the certificate's status.
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
        let golds = self.resolve_golds(&cert.collection, questions)?;
        let filter = Filter::collection(&cert.collection)?;
        let mut rows = Vec::with_capacity(questions.len());
        for (q, gold) in questions.iter().zip(&golds) {
            let scored = self.scored(&q.question, &filter, cert.score_function)?;
            rows.push((nonconformity(&scored, |id| gold.contains(&id)), set_size(&scored, cert.calibration.threshold)));
        }
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
                let changes_since = now.saturating_sub(certificate.collection_version);
                let allowed = (certificate.chunks as f64 * STALE_SHARE).floor() as u64;
                // Another embedder or candidate count is another score function.
                let stale = changes_since > allowed
                    || certificate.embedder != self.embedder().name
                    || certificate.candidates != self.options().candidates;
                Ok(CertificateStatus { certificate, changes_since, stale })
            })
            .collect()
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

    /// Every chunk of `collection` the newest certificate at level `alpha`
    /// admits for `query` (a certificate at a smaller α also certifies
    /// `alpha`, with larger sets). `max_chunks` and `max_tokens` cap what is
    /// returned; a cut set is flagged `truncated` and claims nothing.
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
        let all = self.certificates(Some(collection))?;
        let mut usable: Vec<&CertificateStatus> =
            all.iter().filter(|c| c.certificate.calibration.alpha <= alpha + 1e-12).collect();
        // Closest level first, then fresh before stale, then newest.
        usable.sort_by(|a, b| {
            b.certificate
                .calibration
                .alpha
                .total_cmp(&a.certificate.calibration.alpha)
                .then(a.stale.cmp(&b.stale))
                .then(b.certificate.created_at_ms.cmp(&a.certificate.created_at_ms))
        });
        let Some(status) = usable.first() else {
            return Err(RagError::Invalid(format!(
                "collection {collection:?} has no certificate at alpha {alpha} or below: run `engram calibrate --collection {collection} --alpha {alpha}`"
            )));
        };
        let cert = &status.certificate;
        let scored = self.scored(query, filter, cert.score_function)?;
        let admitted: Vec<(ChunkId, f64)> =
            scored.into_iter().filter(|(_, s)| cert.calibration.threshold.admits(-s)).collect();
        let set_size = admitted.len();
        let mut hits = self.hydrate(&admitted[..admitted.len().min(max_chunks)])?;
        let mut truncated = set_size > max_chunks || cert.calibration.threshold == Threshold::Unbounded;
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
                truncated = true;
            }
        }
        let holds = !truncated && !status.stale;
        Ok(ConformalSet {
            certificate: cert.id.clone(),
            alpha: cert.calibration.alpha,
            min_score: cert.min_score,
            truncated,
            stale: status.stale,
            coverage_guarantee: holds.then_some(1.0 - cert.calibration.alpha),
            population: format!(
                "questions drawn like the calibration questions ({}) about collection `{}`",
                cert.questions_from, cert.collection
            ),
            set_size,
            hits,
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
