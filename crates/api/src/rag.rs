//! Retrieval routes: `POST /v1/ingest`, `POST /v1/search`,
//! `GET /v1/collections`, `POST /v1/calibrate`,
//! `GET /v1/certificates[/{id}]`, `POST /v1/certificates/{id}/check`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use engram_models::Embedder;
use engram_rag::certify::{CalibrateOptions, Question, ScoreFunction};
use engram_rag::chunk::Format;
use engram_rag::{Filter, Mode, NewDocument, Progress, Rag, RagError, Target};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::error::ApiError;
use crate::openai::body;
use crate::routes::AppState;

type Opener = Arc<dyn Fn(Arc<Embedder>) -> Result<Rag, String> + Send + Sync>;

/// The daemon's retrieval engine, opened once the embedder has loaded.
/// A failed open is kept only for [`RETRY_AFTER`]: requests in that window
/// (and those that queued behind the failed attempt) get its error at once,
/// and the first one after it tries again (a Qdrant server that was down, a
/// disk that filled up).
pub struct RagService {
    cell: OnceCell<Arc<Rag>>,
    open: Opener,
    failed: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// How long a failed open answers for the next attempts.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

impl RagService {
    /// A service that opens the engine with `open` (blocking) on first use.
    pub fn new(open: impl Fn(Arc<Embedder>) -> Result<Rag, String> + Send + Sync + 'static) -> Self {
        Self { cell: OnceCell::new(), open: Arc::new(open), failed: std::sync::Mutex::new(None) }
    }

    fn recent_failure(&self) -> Option<String> {
        let failed = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failed.as_ref().filter(|(at, _)| at.elapsed() < RETRY_AFTER).map(|(_, reason)| reason.clone())
    }

    /// The engine, opening it (and loading the embedder) until that works.
    pub async fn get(&self, state: &AppState) -> Result<Arc<Rag>, ApiError> {
        let unavailable = |reason: String| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "retrieval_unavailable",
                format!("retrieval is unavailable: {reason}"),
            )
        };
        if let Some(rag) = self.cell.get() {
            return Ok(rag.clone());
        }
        if let Some(reason) = self.recent_failure() {
            return Err(unavailable(reason));
        }
        let result = self
            .cell
            .get_or_try_init(|| async {
                // Queued behind an attempt that just failed: share its answer.
                if let Some(reason) = self.recent_failure() {
                    return Err(reason);
                }
                let models = state.models().ok_or("this daemon serves no embedder")?;
                let embedder = models.embedder.get().await?.clone();
                let open = self.open.clone();
                let opened = tokio::task::spawn_blocking(move || open(embedder).map(Arc::new))
                    .await
                    .unwrap_or_else(|err| Err(format!("opening the indexes panicked: {err}")));
                if let Err(reason) = &opened {
                    let mut failed = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    *failed = Some((std::time::Instant::now(), reason.clone()));
                }
                opened
            })
            .await;
        result.cloned().map_err(unavailable)
    }
}

/// A 422 for a request that parsed but asks for something wrong.
fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message.into())
}

async fn engine(state: &AppState) -> Result<Arc<Rag>, ApiError> {
    match state.rag() {
        Some(service) => service.get(state).await,
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "retrieval_unavailable",
            "this daemon serves no retrieval",
        )),
    }
}

impl From<RagError> for ApiError {
    fn from(err: RagError) -> Self {
        match err {
            RagError::Invalid(message) => invalid(message),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "retrieval_failed", other.to_string()),
        }
    }
}

/// Runs blocking engine work off the async executor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RagError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("retrieval panicked: {err}"))
        })?
        .map_err(ApiError::from)
}

/// A document given inline to `POST /v1/ingest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InlineDocument {
    /// Its identity in the collection.
    path: String,
    /// Its text.
    text: String,
    /// `markdown`, `text` (default) or `code`.
    #[serde(default)]
    format: Option<String>,
}

/// `POST /v1/ingest` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IngestRequest {
    collection: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    tags: Vec<String>,
    /// Files and folders on the daemon's machine.
    #[serde(default)]
    paths: Vec<PathBuf>,
    /// Documents given inline.
    #[serde(default)]
    documents: Vec<InlineDocument>,
    /// Answer with NDJSON progress events, then `{"event":"done","report":…}`.
    #[serde(default)]
    stream: bool,
}

/// `POST /v1/ingest`: files and folders (read by the daemon) and inline
/// documents into a collection.
pub(crate) async fn ingest(
    State(state): State<AppState>,
    payload: Result<Json<IngestRequest>, JsonRejection>,
) -> Response {
    match ingest_inner(state, payload).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn ingest_inner(
    state: AppState,
    payload: Result<Json<IngestRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(payload)?;
    engram_rag::engine::check_name("collection", &request.collection, false).map_err(ApiError::from)?;
    if request.paths.is_empty() && request.documents.is_empty() {
        return Err(invalid("give `paths` (files and folders) or `documents` ({path, text}) to ingest"));
    }
    if let Some(relative) = request.paths.iter().find(|p| !p.is_absolute()) {
        return Err(invalid(format!(
            "paths must be absolute (the daemon has its own working directory): {}",
            relative.display()
        )));
    }
    let mut documents = Vec::with_capacity(request.documents.len());
    for doc in request.documents {
        let format = match doc.format.as_deref() {
            None => Format::Text,
            Some(name) => Format::from_name(name)
                .ok_or_else(|| invalid(format!("unknown format {name:?}: use markdown, text or code")))?,
        };
        let mut document = NewDocument::from_text(doc.path, doc.text, format);
        document.tags = request.tags.clone();
        documents.push(document);
    }
    let rag = engine(&state).await?;
    let target = Target { collection: request.collection, tenant: request.tenant };
    let (paths, tags) = (request.paths, request.tags);
    let run = move |progress: &mut dyn FnMut(&Progress)| -> Result<Value, RagError> {
        let mut reports = Vec::new();
        if !paths.is_empty() {
            reports.push(rag.ingest_paths(&target, &paths, &tags, progress)?);
        }
        if !documents.is_empty() {
            reports.push(rag.ingest_documents(&target, documents, false, progress)?);
        }
        Ok(json!(merge(reports)))
    };
    if !request.stream {
        let report = blocking(move || run(&mut |_| {})).await?;
        return Ok(Json(report).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::task::spawn_blocking(move || {
        let events = tx.clone();
        let mut progress = move |event: &Progress| {
            let _ = events.send(format!("{}\n", json!(event)));
        };
        let last = match run(&mut progress) {
            Ok(report) => json!({"event": "done", "report": report}),
            Err(err) => json!({"event": "error", "error": ApiError::from(err).message}),
        };
        let _ = tx.send(format!("{last}\n"));
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

fn merge(reports: Vec<engram_rag::IngestReport>) -> engram_rag::IngestReport {
    let mut total = engram_rag::IngestReport::default();
    for r in reports {
        total.collection = r.collection;
        total.added += r.added;
        total.updated += r.updated;
        total.unchanged += r.unchanged;
        total.deleted += r.deleted;
        total.chunks_written += r.chunks_written;
        total.chunks_removed += r.chunks_removed;
        total.embedded += r.embedded;
        total.skipped.extend(r.skipped);
        total.seconds += r.seconds;
    }
    total
}

/// `POST /v1/search` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchRequest {
    query: String,
    #[serde(default)]
    collection: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    /// Ingested in [from, to) Unix seconds.
    #[serde(default)]
    time: Option<[i64; 2]>,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default)]
    mode: Mode,
    /// A miscoverage level: return the certified set instead of the top k.
    #[serde(default)]
    alpha: Option<f64>,
    #[serde(default = "default_max_chunks")]
    max_chunks: usize,
    #[serde(default)]
    max_tokens: Option<usize>,
}

fn default_k() -> usize {
    5
}

fn default_max_chunks() -> usize {
    50
}

/// Largest `k` a search may ask for.
const MAX_K: usize = 1000;

/// `POST /v1/search`: hybrid (or BM25/dense) top-k with citations, or with
/// `alpha` the conformal set and its certificate.
pub(crate) async fn search(
    State(state): State<AppState>,
    payload: Result<Json<SearchRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let request = body(payload)?;
    if request.query.trim().is_empty() {
        return Err(invalid("`query` is empty"));
    }
    if request.k == 0 || request.k > MAX_K || request.max_chunks == 0 || request.max_chunks > MAX_K {
        return Err(invalid(format!("`k` and `max_chunks` must be between 1 and {MAX_K}")));
    }
    if let Some([from, to]) = request.time
        && from >= to
    {
        return Err(invalid(format!("`time` must be [from, to) with from < to, got [{from}, {to}]")));
    }
    let rag = engine(&state).await?;
    let filter = Filter {
        collection: request.collection,
        tenant: request.tenant,
        path_prefix: request.path_prefix,
        tags: request.tags,
        time: request.time.map(|[from, to]| from..to),
    };
    let (query, k, mode) = (request.query, request.k, request.mode);
    match request.alpha {
        Some(alpha) => {
            let (max_chunks, max_tokens) = (request.max_chunks, request.max_tokens);
            let set = blocking(move || rag.conformal_search(&query, &filter, alpha, max_chunks, max_tokens)).await?;
            Ok(Json(json!(set)))
        }
        None => {
            let hits = blocking(move || rag.search(&query, &filter, mode, k)).await?;
            Ok(Json(json!({ "mode": mode, "hits": hits })))
        }
    }
}

/// `GET /v1/collections`.
pub(crate) async fn collections(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rag = engine(&state).await?;
    let all = blocking(move || rag.collections()).await?;
    Ok(Json(json!({ "collections": all })))
}

/// `GET /v1/certificates` query.
#[derive(Debug, Deserialize)]
pub(crate) struct CertificatesQuery {
    collection: Option<String>,
}

/// `GET /v1/certificates[?collection=C]`: newest first, with staleness.
pub(crate) async fn certificates(
    State(state): State<AppState>,
    Query(query): Query<CertificatesQuery>,
) -> Result<Json<Value>, ApiError> {
    let rag = engine(&state).await?;
    let all = blocking(move || rag.certificates(query.collection.as_deref())).await?;
    Ok(Json(json!({ "certificates": all })))
}

/// `GET /v1/certificates/{id}`.
pub(crate) async fn certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rag = engine(&state).await?;
    let found = blocking(move || rag.certificate(&id)).await.map_err(not_found_certificate)?;
    Ok(Json(json!(found)))
}

/// Most questions `POST /v1/calibrate` writes with the LLM.
const MAX_GENERATE: usize = 100_000;

fn default_alpha() -> f64 {
    0.1
}

fn default_holdout() -> f64 {
    0.2
}

fn default_seed() -> u64 {
    1
}

/// `POST /v1/calibrate` body: `questions`, or `generate` for questions the
/// daemon's LLM writes about that many chunks drawn from the collection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CalibrateRequest {
    collection: String,
    #[serde(default = "default_alpha")]
    alpha: f64,
    #[serde(default)]
    score: ScoreFunction,
    #[serde(default = "default_holdout")]
    holdout: f64,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(default)]
    questions: Option<Vec<Question>>,
    #[serde(default)]
    generate: Option<usize>,
    /// Where supplied questions came from, recorded in the certificate.
    #[serde(default)]
    source: Option<String>,
}

/// `POST /v1/calibrate`: calibrates a collection and stores the
/// certificate; answers `{"certificate": …, "generated": {questions,
/// sampled, model} | null}`.
pub(crate) async fn calibrate(
    State(state): State<AppState>,
    payload: Result<Json<CalibrateRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let request = body(payload)?;
    let mut options = CalibrateOptions {
        alpha: request.alpha,
        score_function: request.score,
        holdout: request.holdout,
        seed: request.seed,
        questions_from: String::new(),
    };
    // Refuse a bad level before the LLM spends minutes writing questions.
    options.validate()?;
    let rag = engine(&state).await?;
    let (questions, source, generated) = match (request.questions, request.generate) {
        (Some(questions), None) => {
            let source = request.source.unwrap_or_else(|| format!("{} questions in the request", questions.len()));
            (questions, source, None)
        }
        (None, Some(n)) if (2..=MAX_GENERATE).contains(&n) => {
            let llm = match state.models() {
                Some(models) => {
                    models.llm.get().await.map_err(|reason| crate::openai::unavailable("language model", reason))?
                }
                None => return Err(invalid("this daemon serves no language model to write questions")),
            };
            let (sampler, collection, seed) = (rag.clone(), request.collection.clone(), request.seed);
            let chunks = blocking(move || sampler.sample_chunks(&collection, n, seed)).await?;
            let generated = engram_rag::questions::write_questions(llm, &chunks, || {}).await?;
            let source = generated.source(request.seed);
            (generated.questions.clone(), source, Some(generated))
        }
        (None, Some(n)) => return Err(invalid(format!("`generate` must be between 2 and {MAX_GENERATE}, got {n}"))),
        _ => return Err(invalid("give either `questions` or `generate`")),
    };
    options.questions_from = source;
    let collection = request.collection;
    let certificate = blocking(move || rag.calibrate(&collection, &questions, &options)).await?;
    Ok(Json(json!({ "certificate": certificate, "generated": generated })))
}

/// `POST /v1/certificates/{id}/check` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckRequest {
    questions: Vec<Question>,
}

/// `POST /v1/certificates/{id}/check`: how a certificate does on other
/// questions with known evidence.
pub(crate) async fn check_certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    payload: Result<Json<CheckRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let request = body(payload)?;
    let rag = engine(&state).await?;
    let value = blocking(move || {
        let (status, checked) = rag.check_certificate(&id, &request.questions)?;
        Ok(check_report(&id, &status, &checked))
    })
    .await
    .map_err(not_found_certificate)?;
    Ok(Json(value))
}

/// A certificate check as JSON (the CLI prints the same object).
pub fn check_report(
    id: &str,
    status: &engram_rag::certify::CertificateStatus,
    checked: &engram_rag::conformal::HeldOut,
) -> Value {
    json!({
        "certificate": id,
        "target": 1.0 - status.certificate.calibration.alpha,
        "n": checked.n,
        "coverage": checked.coverage,
        "median_set": checked.median_set,
        "p90_set": checked.p90_set,
        "stale": status.stale,
    })
}

fn not_found_certificate(mut err: ApiError) -> ApiError {
    if err.message.starts_with("there is no certificate") {
        err.status = StatusCode::NOT_FOUND;
        err.code = "not_found";
    }
    err
}
