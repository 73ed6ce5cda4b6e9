//! Retrieval's operations: one request type per operation, owning its
//! defaults and checks, with its response type and route. The daemon's
//! routes, the CLI (through the client) and MCP tools all speak these.

use std::path::PathBuf;

use engram_ops::{
    Advance, Audience, Caller, CollectionName, Error, Hints, Method, Operation, Streaming, TenantId, Tool,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::CollectionInfo;
use crate::certify::{CalibrateOptions, CertificateStatus, ConformalSet, Question, ScoreFunction, Stratum};
use crate::chunk::{Format, html_to_text};
use crate::questions::Generated;
use crate::{Filter, Hit, IngestReport, Mode, NewDocument, Progress, Target};

/// Largest `k` (and `max_chunks`) a search may ask for.
pub const MAX_K: usize = 1000;
/// Most questions a calibration may have the LLM write.
pub const MAX_GENERATE: usize = 100_000;

/// A document given inline to [`Ingest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineDocument {
    /// Its identity in the collection (a path or any id).
    pub path: String,
    /// Its text.
    pub text: String,
    /// How the text is structured (text by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<InlineFormat>,
}

/// The structure of an inline document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InlineFormat {
    /// Markdown: `#` headings, blank-line paragraphs, fenced code.
    Markdown,
    /// Plain text: blank-line paragraphs.
    Text,
    /// Source code: top-level items separated by blank lines.
    Code,
    /// HTML, converted to Markdown-like text first (as `.html` files are).
    Html,
}

/// `POST /v1/ingest`: files and folders (read by the daemon) and inline
/// documents into a collection. Unchanged documents are skipped; files gone
/// from a folder given before are deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ingest {
    /// The collection (created on first use).
    pub collection: CollectionName,
    /// The tenant the documents belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// Tags searches can filter on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Absolute paths of files and folders on the daemon's machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathBuf>,
    /// Documents given inline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<InlineDocument>,
    /// Answer with NDJSON progress events, then `{"event":"done","report":…}`.
    #[serde(default)]
    pub stream: bool,
}

impl Ingest {
    /// Where the documents go.
    pub fn target(&self) -> Target {
        Target { collection: self.collection.clone(), tenant: self.tenant.clone() }
    }

    /// The inline documents, tagged, HTML converted to text.
    pub fn inline_documents(&self) -> Vec<NewDocument> {
        self.documents
            .iter()
            .map(|doc| {
                let mut document = match doc.format.unwrap_or(InlineFormat::Text) {
                    InlineFormat::Markdown => NewDocument::from_text(&doc.path, &doc.text, Format::Markdown),
                    InlineFormat::Text => NewDocument::from_text(&doc.path, &doc.text, Format::Text),
                    InlineFormat::Code => NewDocument::from_text(&doc.path, &doc.text, Format::Code),
                    InlineFormat::Html => NewDocument {
                        // The size of the original, as for files.
                        bytes: doc.text.len() as u64,
                        ..NewDocument::from_text(&doc.path, html_to_text(&doc.text), Format::Markdown)
                    },
                };
                document.tags = self.tags.clone();
                document
            })
            .collect()
    }
}

impl Operation for Ingest {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/ingest";
    type Response = IngestReport;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);

    /// A tenant sends `documents`: `paths` read the daemon's own files
    /// (its tokens among them), which only the operator may ingest.
    fn authorize(&mut self, caller: &Caller) -> Result<(), Error> {
        if let Caller::Tenant(tenant) = caller
            && !self.paths.is_empty()
        {
            return Err(Error::forbidden(format!(
                "`paths` read the daemon's own files, which only the operator may ingest; tenant `{tenant}` sends \
                 `documents` ({{path, text}}) instead"
            )));
        }
        engram_ops::apply_audience(self, caller)
    }

    fn validate(&self) -> Result<(), Error> {
        if self.paths.is_empty() && self.documents.is_empty() {
            return Err(Error::invalid("give `paths` (files and folders) or `documents` ({path, text}) to ingest"));
        }
        if let Some(relative) = self.paths.iter().find(|p| !p.is_absolute()) {
            return Err(Error::invalid(format!(
                "paths must be absolute (the daemon has its own working directory): {}",
                relative.display()
            )));
        }
        Ok(())
    }
}

impl Streaming for Ingest {
    type Event = Progress;

    fn streams(&self) -> bool {
        self.stream
    }

    fn advance(event: &Progress) -> Advance {
        let (done, total) = match *event {
            Progress::Started { total } => (0, total),
            Progress::Documents { done, total } => (done, total),
        };
        Advance { done: done as u64, total: Some(total as u64), message: format!("{done} of {total} documents") }
    }
}

impl Tool for Ingest {
    const NAME: &'static str = "rag_ingest";
    const TITLE: &'static str = "Ingest documents";
    // Re-ingesting unchanged documents is a no-op; a folder given again
    // deletes the files gone from it, and paths reach the filesystem.
    const HINTS: Hints = Hints { read_only: false, destructive: true, idempotent: true, open_world: true };
    const HIDDEN: &'static [&'static str] = &["tenant", "stream"];
}

fn default_k() -> usize {
    5
}

fn default_max_chunks() -> usize {
    50
}

/// `POST /v1/search`: hybrid (or BM25/dense) top-k with citations, or with
/// `alpha` the conformal set of a calibrated collection and its certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// What to look for.
    pub query: String,
    /// Only this collection (required with `alpha`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<CollectionName>,
    /// Only this tenant's documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// Only documents whose path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Only documents carrying every one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Only documents ingested in `[from, to)`, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<[i64; 2]>,
    /// Results to return (1-1000).
    #[serde(default = "default_k")]
    pub k: usize,
    /// `hybrid` (default), `bm25` or `dense`.
    #[serde(default)]
    pub mode: Mode,
    /// A miscoverage level in (0, 1): return every chunk the collection's
    /// certificate admits instead of the top k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// With `alpha`: at most this many chunks (1-1000; a cut set claims nothing).
    #[serde(default = "default_max_chunks")]
    pub max_chunks: usize,
    /// With `alpha`: at most this many chunk tokens (a cut set claims nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
}

impl Search {
    /// A top-5 hybrid search for `query` everywhere.
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            collection: None,
            tenant: None,
            path_prefix: None,
            tags: Vec::new(),
            time: None,
            k: default_k(),
            mode: Mode::default(),
            alpha: None,
            max_chunks: default_max_chunks(),
            max_tokens: None,
        }
    }

    /// What the search is restricted to.
    pub fn filter(&self) -> Filter {
        Filter {
            collection: self.collection.clone(),
            tenant: self.tenant.clone(),
            path_prefix: self.path_prefix.clone(),
            tags: self.tags.clone(),
            time: self.time.map(|[from, to]| from..to),
        }
    }
}

impl Operation for Search {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/search";
    type Response = SearchResponse;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);

    fn validate(&self) -> Result<(), Error> {
        if self.query.trim().is_empty() {
            return Err(Error::invalid("`query` is empty"));
        }
        if !(1..=MAX_K).contains(&self.k) || !(1..=MAX_K).contains(&self.max_chunks) {
            return Err(Error::invalid(format!("`k` and `max_chunks` must be between 1 and {MAX_K}")));
        }
        check_time(self.time)
    }
}

/// A `time` filter is `[from, to)` with `from < to`.
fn check_time(time: Option<[i64; 2]>) -> Result<(), Error> {
    match time {
        Some([from, to]) if from >= to => {
            Err(Error::invalid(format!("`time` must be [from, to) with from < to, got [{from}, {to}]")))
        }
        _ => Ok(()),
    }
}

impl Tool for Search {
    const NAME: &'static str = "rag_search";
    const TITLE: &'static str = "Search the collections (certified with alpha)";
    const HINTS: Hints = Hints::READ;
    const HIDDEN: &'static [&'static str] = &["tenant"];
}

/// What [`Search`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SearchResponse {
    /// With `alpha`: the certified set.
    Certified(Box<ConformalSet>),
    /// The top k.
    Ranked {
        /// The mode used.
        mode: Mode,
        /// Best first.
        hits: Vec<Hit>,
    },
}

impl SearchResponse {
    /// The chunks, best first.
    pub fn hits(&self) -> &[Hit] {
        match self {
            Self::Certified(set) => &set.hits,
            Self::Ranked { hits, .. } => hits,
        }
    }
}

/// `GET /v1/collections`: every collection with its size (for a tenant's
/// token: the collections it has documents in, with its own counts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Collections {
    /// Count only this tenant's documents (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
}

/// What [`Collections`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CollectionsResponse {
    /// By name.
    pub collections: Vec<CollectionInfo>,
}

impl Operation for Collections {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/v1/collections";
    type Response = CollectionsResponse;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);
}

impl Tool for Collections {
    const NAME: &'static str = "rag_collections";
    const TITLE: &'static str = "List collections";
    const HINTS: Hints = Hints::READ;
    const HIDDEN: &'static [&'static str] = &["tenant"];
}

/// `GET /v1/certificates`: certificates, newest first, with whether each
/// still holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificates {
    /// Only this collection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<CollectionName>,
}

/// What [`Certificates`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CertificatesResponse {
    /// Newest first.
    pub certificates: Vec<CertificateStatus>,
}

impl Operation for Certificates {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/v1/certificates";
    type Response = CertificatesResponse;
    // Certificates describe whole collections (every tenant's documents)
    // and the questions they were calibrated with: the operator's.
    const AUDIENCE: Audience<Self> = Audience::Operator;
}

/// `GET /v1/certificates/{id}`: one certificate and whether it still holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Its id.
    pub id: String,
}

impl Operation for Certificate {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/v1/certificates/{id}";
    type Response = CertificateStatus;
    const AUDIENCE: Audience<Self> = Audience::Operator;
}

fn default_alpha() -> f64 {
    0.1
}

fn default_holdout() -> f64 {
    0.2
}

fn default_seed() -> u64 {
    1
}

/// `POST /v1/calibrate`: calibrates a collection (or the part of it a
/// filter keeps: the certificate then claims only for searches with that
/// filter) at level `alpha` from `questions` with known evidence, or from
/// questions the daemon's LLM writes about `generate` chunks drawn at
/// random, and stores the certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Calibrate {
    /// The collection to certify.
    pub collection: CollectionName,
    /// The part of the collection to certify (tenant, path prefix, tags,
    /// time): the certificate claims only for searches with exactly this
    /// filter. The whole collection when absent.
    #[serde(default, skip_serializing_if = "Stratum::is_whole")]
    pub stratum: Stratum,
    /// Miscoverage level in (0, 1): the evidence is in the set with
    /// probability at least 1 − α.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// The score function (the same one scores queries at this level).
    #[serde(default)]
    pub score: ScoreFunction,
    /// Share of the questions held out to measure coverage, in [0, 0.9).
    #[serde(default = "default_holdout")]
    pub holdout: f64,
    /// Seed of the held-out split and of the chunks drawn for `generate`.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Questions with their gold chunks or paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub questions: Option<Vec<Question>>,
    /// Instead of `questions`: have the LLM write this many (2-100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<usize>,
    /// Where supplied questions came from, recorded in the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Answer with NDJSON progress events (questions written), then
    /// `{"event":"done","report":…}`.
    #[serde(default)]
    pub stream: bool,
}

impl Calibrate {
    /// A calibration of `collection` with the defaults; set `questions`
    /// or `generate` before sending it.
    pub fn new(collection: CollectionName) -> Self {
        Self {
            collection,
            stratum: Stratum::default(),
            alpha: default_alpha(),
            score: ScoreFunction::default(),
            holdout: default_holdout(),
            seed: default_seed(),
            questions: None,
            generate: None,
            source: None,
            stream: false,
        }
    }

    /// The engine's options; `questions_from` is filled in once the
    /// questions are known.
    pub fn options(&self) -> CalibrateOptions {
        CalibrateOptions {
            alpha: self.alpha,
            score_function: self.score,
            holdout: self.holdout,
            seed: self.seed,
            questions_from: String::new(),
            stratum: self.stratum.clone().normalized(),
        }
    }
}

impl Operation for Calibrate {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/calibrate";
    type Response = CalibrateResponse;

    fn validate(&self) -> Result<(), Error> {
        // A bad level is refused before the LLM spends minutes writing questions.
        self.options().validate()?;
        check_time(self.stratum.time)?;
        match (&self.questions, self.generate) {
            (Some(_), None) => Ok(()),
            (None, Some(n)) if (2..=MAX_GENERATE).contains(&n) => Ok(()),
            (None, Some(n)) => Err(Error::invalid(format!("`generate` must be between 2 and {MAX_GENERATE}, got {n}"))),
            _ => Err(Error::invalid("give either `questions` or `generate`")),
        }
    }
}

impl Streaming for Calibrate {
    type Event = CalibrateProgress;

    fn streams(&self) -> bool {
        self.stream
    }

    fn advance(event: &CalibrateProgress) -> Advance {
        let CalibrateProgress::Questions { done, total } = *event;
        Advance {
            done: done as u64,
            total: Some(total as u64),
            message: format!("{done} of {total} questions written"),
        }
    }
}

impl Tool for Calibrate {
    const NAME: &'static str = "rag_calibrate";
    const TITLE: &'static str = "Calibrate a collection's coverage certificate";
    // Adds a certificate; searches at that level then use the newest one.
    const HINTS: Hints = Hints { read_only: false, destructive: false, idempotent: false, open_world: false };
    const HIDDEN: &'static [&'static str] = &["stream"];
}

/// What [`Calibrate`] reports while the LLM writes questions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CalibrateProgress {
    /// Chunks the LLM has written a question about so far.
    Questions {
        /// Chunks done.
        done: usize,
        /// Chunks drawn.
        total: usize,
    },
}

/// What [`Calibrate`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CalibrateResponse {
    /// The stored certificate.
    pub certificate: crate::certify::Certificate,
    /// When the questions were too few for a useful statement: what the
    /// certificate does guarantee, and how many would be enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    /// With `generate`: the questions the LLM wrote.
    pub generated: Option<Generated>,
}

/// `POST /v1/certificates/{id}/check`: how a certificate does on other
/// questions with known evidence (say, real users' questions after
/// calibrating on generated ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckCertificate {
    /// The certificate's id.
    pub id: String,
    /// Questions in the calibration format.
    pub questions: Vec<Question>,
}

impl Operation for CheckCertificate {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/certificates/{id}/check";
    type Response = CertificateCheck;

    fn validate(&self) -> Result<(), Error> {
        if self.questions.is_empty() {
            return Err(Error::invalid("`questions` is empty: give questions with known evidence"));
        }
        Ok(())
    }
}

/// What [`CheckCertificate`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateCheck {
    /// The certificate's id.
    pub certificate: String,
    /// The coverage it promises, `1 − α`.
    pub target: f64,
    /// Questions checked.
    pub n: usize,
    /// Share whose evidence was in the certified set.
    pub coverage: f64,
    /// Its 95% Clopper–Pearson interval.
    pub interval: [f64; 2],
    /// Median set size.
    pub median_set: f64,
    /// 90th percentile of the set size.
    pub p90_set: f64,
    /// Whether the certificate is stale (then it promises nothing).
    pub stale: bool,
    /// Whether the collection changed since calibration, within the allowance.
    pub approximate: bool,
    /// Whom the certificate's guarantee is for.
    pub population: String,
}

impl CertificateCheck {
    /// The check of certificate `id` on other questions.
    pub fn new(id: &str, status: &CertificateStatus, checked: &crate::conformal::HeldOut) -> Self {
        Self {
            certificate: id.to_owned(),
            target: status.certificate.target(),
            n: checked.n,
            coverage: checked.coverage,
            interval: checked.interval,
            median_set: checked.median_set,
            p90_set: checked.p90_set,
            stale: status.stale,
            approximate: status.approximate,
            population: status.certificate.population(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(json: serde_json::Value) -> Result<Search, String> {
        let search: Search = serde_json::from_value(json).map_err(|e| e.to_string())?;
        search.validate().map_err(|e| e.message)?;
        Ok(search)
    }

    #[test]
    fn search_owns_its_defaults_and_checks() {
        let plain = search(serde_json::json!({"query": "bread"})).unwrap();
        assert_eq!(plain, Search::new("bread"));
        assert_eq!((plain.k, plain.max_chunks, plain.mode), (5, 50, Mode::Hybrid));
        for (body, needle) in [
            (serde_json::json!({"query": " "}), "`query` is empty"),
            (serde_json::json!({"query": "x", "k": 0}), "between 1 and"),
            (serde_json::json!({"query": "x", "k": 1001}), "between 1 and"),
            (serde_json::json!({"query": "x", "max_chunks": 0}), "between 1 and"),
            (serde_json::json!({"query": "x", "time": [5, 1]}), "from < to"),
            (serde_json::json!({"query": "x", "colection": "a"}), "unknown field"),
            (serde_json::json!({"query": "x", "collection": "a b"}), "not a valid name"),
            (serde_json::json!({"query": "x", "tenant": ""}), "not a valid name"),
        ] {
            let err = search(body.clone()).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let timed = search(serde_json::json!({"query": "x", "time": [1, 5]})).unwrap();
        assert_eq!(timed.filter().time, Some(1..5));
    }

    #[test]
    fn ingest_and_calibrate_check_their_requests() {
        let ingest = |json: serde_json::Value| -> Result<Ingest, String> {
            let ingest: Ingest = serde_json::from_value(json).map_err(|e| e.to_string())?;
            ingest.validate().map_err(|e| e.message)?;
            Ok(ingest)
        };
        assert!(ingest(serde_json::json!({"collection": "c"})).unwrap_err().contains("give `paths`"));
        assert!(ingest(serde_json::json!({"collection": "c", "paths": ["rel"]})).unwrap_err().contains("absolute"));
        let bad_format =
            serde_json::json!({"collection": "c", "documents": [{"path": "a", "text": "b", "format": "pdf"}]});
        // serde names the accepted formats.
        let err = ingest(bad_format).unwrap_err();
        assert!(err.contains("unknown variant `pdf`") && err.contains("html"), "{err}");
        let html = serde_json::json!({"collection": "c", "documents": [
            {"path": "p.html", "text": "<h1>Tea</h1><p>Green &amp; black</p>", "format": "html"}
        ]});
        let documents = ingest(html).unwrap().inline_documents();
        assert_eq!(documents[0].format, Format::Markdown);
        assert!(documents[0].text.contains("Tea") && documents[0].text.contains("Green & black"), "{documents:?}");
        assert!(!documents[0].text.contains('<'), "{documents:?}");
        let ok =
            ingest(serde_json::json!({"collection": "c", "tenant": "t", "documents": [{"path": "a", "text": "b"}]}))
                .unwrap();
        assert_eq!(ok.target(), Target { collection: "c".parse().unwrap(), tenant: Some("t".parse().unwrap()) });

        let calibrate = |json: serde_json::Value| -> Result<Calibrate, String> {
            let calibrate: Calibrate = serde_json::from_value(json).map_err(|e| e.to_string())?;
            calibrate.validate().map_err(|e| e.message)?;
            Ok(calibrate)
        };
        for (body, needle) in [
            (serde_json::json!({"collection": "c"}), "either `questions` or `generate`"),
            (serde_json::json!({"collection": "c", "generate": 1}), "between 2 and"),
            (serde_json::json!({"collection": "c", "generate": 3, "questions": []}), "either"),
            (serde_json::json!({"collection": "c", "alpha": 0, "questions": []}), "alpha must be strictly between"),
            (serde_json::json!({"collection": "c", "holdout": 0.95, "questions": []}), "holdout must be in"),
        ] {
            let err = calibrate(body.clone()).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let ok = calibrate(serde_json::json!({"collection": "c", "questions": []})).unwrap();
        assert_eq!((ok.alpha, ok.holdout, ok.seed), (0.1, 0.2, 1));
        assert!(ok.options().stratum.is_whole());
        // A stratum: tags in any order name the same one; its checks are the search's.
        let tenant = calibrate(serde_json::json!({"collection": "c", "questions": [],
            "stratum": {"tenant": "acme", "tags": ["b", "a", "b"], "time": [1, 5]}}))
        .unwrap();
        let stratum = tenant.options().stratum;
        assert_eq!(
            (stratum.tenant.unwrap().as_str(), stratum.tags, stratum.time),
            ("acme", vec!["a".to_owned(), "b".to_owned()], Some([1, 5]))
        );
        for (stratum, needle) in [
            (serde_json::json!({"time": [5, 1]}), "from < to"),
            (serde_json::json!({"tenant": ""}), "not a valid name"),
            (serde_json::json!({"colection": "c"}), "unknown field"),
        ] {
            let body = serde_json::json!({"collection": "c", "questions": [], "stratum": stratum});
            let err = calibrate(body.clone()).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn routes_fill_ids() {
        let check = CheckCertificate { id: "cert-a-1".into(), questions: Vec::new() };
        assert_eq!(check.path().unwrap(), "/v1/certificates/cert-a-1/check");
        assert_eq!(Certificate { id: "x y".into() }.path().unwrap(), "/v1/certificates/x%20y");
    }
}
