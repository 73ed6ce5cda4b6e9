//! Retrieval as a service: the engine opened once the embedder has loaded
//! (under the one retry policy), `[retrieval]` mapped to its options, and
//! one method per operation of [`engram_rag::ops`].

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use engram_config::{Config, Paths, VectorStoreKind};
use engram_index::QdrantOptions;
use engram_models::Embedder;
use engram_ops::{Error, Operation};
use engram_rag::certify::CertificateStatus;
use engram_rag::ops::{
    Calibrate, CalibrateProgress, CalibrateResponse, Certificate, CertificateCheck, Certificates, CertificatesResponse,
    CheckCertificate, Collections, CollectionsResponse, Ingest, Search, SearchResponse,
};
use engram_rag::{IngestReport, Progress, Rag, RagError, RagOptions, Unlisted, VectorBackend};
use engram_store::Store;

use crate::lazy::Lazy;
use crate::models::Models;

/// Retrieval options from `[retrieval]`, reading the Qdrant API key file
/// when the server backend is chosen.
pub fn options(config: &Config, paths: &Paths) -> Result<RagOptions, crate::Error> {
    let r = &config.retrieval;
    let vectors = match r.vector_store {
        VectorStoreKind::Edge => VectorBackend::Edge,
        VectorStoreKind::Qdrant => {
            let api_key = match &paths.qdrant_api_key_file {
                Some(file) => Some(
                    std::fs::read_to_string(file)
                        .map_err(|source| crate::Error::Io {
                            context: format!("cannot read retrieval.qdrant.api_key_file {}", file.display()),
                            source,
                        })?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            VectorBackend::Qdrant(QdrantOptions {
                url: r.qdrant.url.clone(),
                api_key,
                collection_prefix: r.qdrant.collection_prefix.clone(),
                timeout: std::time::Duration::from_millis(r.qdrant.timeout_ms),
            })
        }
    };
    Ok(RagOptions { vectors, ..embedded_options(config) })
}

/// Retrieval options from `[retrieval]` with the embedded vector store
/// (nothing read from disk): evaluations never touch a configured server.
pub fn embedded_options(config: &Config) -> RagOptions {
    let r = &config.retrieval;
    RagOptions {
        chunk: engram_rag::chunk::ChunkOptions { target_tokens: r.chunk_tokens, overlap_tokens: r.chunk_overlap },
        max_file_bytes: r.max_file_bytes,
        fusion: match r.fusion {
            engram_config::FusionKind::Normalized => engram_index::Fusion::Normalized { weights: [0.5, 0.5] },
            engram_config::FusionKind::Rrf => engram_index::Fusion::Rrf { k: 60.0 },
        },
        candidates: r.candidates,
        defer_indexing: false,
        vectors: VectorBackend::Edge,
        stale_share: r.stale_share,
        pac_delta: r.pac_delta,
    }
}

/// The derived indexes' directory.
pub fn index_dir(paths: &Paths) -> PathBuf {
    paths.data_dir.join("index")
}

/// What `engram reindex` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reindexed {
    /// The engine's counts after the rebuild.
    pub stats: engram_rag::RagStats,
    /// Memory's indexes after the rebuild (turns in BM25 and vectors).
    pub memory: engram_index::Progress,
    /// Wall time.
    pub elapsed: std::time::Duration,
}

/// Drops both indexes and rebuilds them from the journal (no re-embedding).
/// Takes the data directory's lock: no daemon may be running.
pub fn reindex(config: &Config, paths: &Paths) -> Result<Reindexed, crate::Error> {
    crate::create_private_dir(&paths.data_dir)?;
    let _lock = crate::DataDirLock::acquire(&paths.lock_file, &paths.data_dir)?;
    let embedder = Arc::new(crate::models::load_embedder(config, paths)?);
    let started = std::time::Instant::now();
    let options = options(config, paths)?;
    Rag::wipe_indexes(&index_dir(paths), &embedder.name, &options)?;
    if let VectorBackend::Qdrant(server) = &options.vectors {
        let collection = server.collection(engram_memory::INDEX_NAME, &embedder.name);
        engram_index::QdrantIndex::drop_collection(server, &collection)
            .map_err(|err| RagError::from(engram_index::IndexError::from(err)))?;
    }
    let memory_dir = crate::memory::index_dir(paths);
    match std::fs::remove_dir_all(&memory_dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(crate::Error::Io { context: format!("cannot remove {}", memory_dir.display()), source });
        }
    }
    let store = Store::open(&paths.journal, &crate::store_options(config))?;
    let rag = Rag::open(store.clone(), &index_dir(paths), embedder.clone(), options.clone())?;
    let memory = engram_memory::Memory::open(
        store,
        &memory_dir,
        embedder,
        &options.vectors,
        engram_memory::RecallOptions::default(),
    )?;
    Ok(Reindexed { stats: rag.stats()?, memory: memory.progress()?, elapsed: started.elapsed() })
}

/// How `engram eval retrieval` runs.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// A BEIR-layout folder.
    pub beir: PathBuf,
    /// The qrels split (default: test if present, else the only one).
    pub split: Option<String>,
    /// Random calibration/test splits of the queries.
    pub splits: usize,
    /// The evaluation's own journal and indexes (default: under the cache dir).
    pub work_dir: Option<PathBuf>,
    /// Also certify the corpus split into this many tenants (fewer than 2: not).
    pub tenants: usize,
    /// Calibrate on one question file and measure on another.
    pub shift: Option<(PathBuf, PathBuf)>,
}

/// Evaluates ranking and conformal coverage on a BEIR data set, in a work
/// directory of its own (reused: an unchanged corpus is not embedded again).
pub fn eval_retrieval(
    config: &Config,
    paths: &Paths,
    request: &EvalRequest,
    progress: &mut dyn FnMut(&Progress),
) -> Result<engram_rag::eval::RetrievalEval, crate::Error> {
    if request.splits == 0 {
        return Err(crate::Error::Config("--splits must be at least 1".to_owned()));
    }
    let beir = engram_rag::beir::Beir::load(&request.beir, request.split.as_deref())
        .map_err(|err| crate::Error::Config(err.to_string()))?;
    let name = request
        .beir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "beir".to_owned());
    let work = request.work_dir.clone().unwrap_or_else(|| paths.cache_dir.join("eval").join(&name));
    let store = Store::open(&work.join("journal.sqlite3"), &engram_store::StoreOptions::default())?;
    let embedder = crate::models::load_embedder(config, paths)?;
    let rag = Rag::open(store, &work.join("index"), Arc::new(embedder), embedded_options(config))?;
    let collection: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let shift = match &request.shift {
        Some((calibrate_on, test_on)) => {
            let read = |file: &PathBuf| {
                engram_rag::certify::Question::read_jsonl(file).map_err(|err| crate::Error::Config(err.to_string()))
            };
            Some(engram_rag::eval::Shift {
                calibrate_on: read(calibrate_on)?,
                calibrate_from: calibrate_on.display().to_string(),
                test_on: read(test_on)?,
                test_from: test_on.display().to_string(),
            })
        }
        None => None,
    };
    let options =
        engram_rag::eval::EvalOptions { splits: request.splits, tenants: request.tenants, shift, ..Default::default() };
    Ok(engram_rag::eval::evaluate(&rag, &beir, &collection, &options, progress)?)
}

/// The retrieval engine over the daemon's journal, opened once the
/// embedder has loaded, with one method per operation.
pub struct RagService {
    engine: Lazy<Arc<Rag>, Arc<Embedder>>,
    models: Arc<Models>,
    /// Held by each ingest for as long as it writes: a cancelled ingest's
    /// last batch finishes after its caller got the cancellation, and one
    /// started right then must not read rows that batch is about to write.
    ingesting: Arc<std::sync::Mutex<()>>,
}

impl RagService {
    /// Retrieval over `store` with the configured options and indexes.
    pub fn new(config: &Config, paths: &Paths, store: &Store, models: Arc<Models>) -> Self {
        let (store, dir) = (store.clone(), index_dir(paths));
        let (config, paths) = (config.clone(), paths.clone());
        let engine = Lazy::with_input(move |embedder: Arc<Embedder>| {
            // Read here, so an unreadable key file costs retrieval, not the daemon.
            let options = options(&config, &paths).map_err(|e| e.to_string())?;
            let started = std::time::Instant::now();
            let rag = Rag::open(store.clone(), &dir, embedder, options).map_err(|e| e.to_string())?;
            tracing::info!(ms = started.elapsed().as_millis() as u64, "retrieval indexes ready");
            Ok(Arc::new(rag))
        });
        Self { engine, models, ingesting: Arc::default() }
    }

    /// Where opening stands.
    pub fn state(&self) -> crate::LoadState {
        self.engine.state()
    }

    /// The engine, loading the embedder and opening the indexes until that works.
    pub async fn engine(&self) -> Result<Arc<Rag>, Error> {
        let unavailable = |reason: String| Error::unavailable(format!("retrieval is unavailable: {reason}"));
        if let Some(rag) = self.engine.loaded() {
            return Ok(rag.clone());
        }
        let embedder = self.models.embedder.get().await.map_err(unavailable)?.clone();
        self.engine.get_with(embedder).await.cloned().map_err(unavailable)
    }

    /// [`Ingest`]: reports progress through `progress` as it goes, and
    /// stops after the batch in hand when it answers `Break`.
    pub async fn ingest(
        &self,
        request: Ingest,
        mut progress: impl FnMut(&Progress) -> ControlFlow<()> + Send + 'static,
    ) -> Result<IngestReport, Error> {
        request.validate()?;
        let documents = request.inline_documents();
        let rag = self.engine().await?;
        let ingesting = self.ingesting.clone();
        blocking(move || {
            let _one_at_a_time = ingesting.lock().unwrap_or_else(|e| e.into_inner());
            let target = request.target();
            let mut report = IngestReport::default();
            if !request.paths.is_empty() {
                report.merge(rag.ingest_paths(&target, &request.paths, &request.tags, &mut progress)?);
            }
            if !documents.is_empty() && !report.cancelled {
                report.merge(rag.ingest_documents(&target, documents, Unlisted::Keep, &mut progress)?);
            }
            Ok(report)
        })
        .await
    }

    /// [`Search`].
    pub async fn search(&self, request: Search) -> Result<SearchResponse, Error> {
        request.validate()?;
        let rag = self.engine().await?;
        blocking(move || {
            let filter = request.filter();
            Ok(match request.alpha {
                Some(alpha) => SearchResponse::Certified(Box::new(rag.conformal_search(
                    &request.query,
                    &filter,
                    alpha,
                    request.max_chunks,
                    request.max_tokens,
                )?)),
                None => SearchResponse::Ranked {
                    mode: request.mode,
                    hits: rag.search(&request.query, &filter, request.mode, request.k)?,
                },
            })
        })
        .await
    }

    /// [`Collections`].
    pub async fn collections(&self, request: Collections) -> Result<CollectionsResponse, Error> {
        let rag = self.engine().await?;
        blocking(move || Ok(CollectionsResponse { collections: rag.collections_of(request.tenant.as_ref())? })).await
    }

    /// [`Certificates`].
    pub async fn certificates(&self, request: Certificates) -> Result<CertificatesResponse, Error> {
        let rag = self.engine().await?;
        let collection = request.collection.map(String::from);
        blocking(move || Ok(CertificatesResponse { certificates: rag.certificates(collection.as_deref())? })).await
    }

    /// [`Certificate`].
    pub async fn certificate(&self, request: Certificate) -> Result<CertificateStatus, Error> {
        let rag = self.engine().await?;
        blocking(move || rag.certificate(&request.id)).await
    }

    /// [`Calibrate`]: with `generate`, the LLM writes the questions first,
    /// reporting each chunk done through `progress`.
    pub async fn calibrate(
        &self,
        request: Calibrate,
        progress: impl FnMut(&CalibrateProgress) + Send,
    ) -> Result<CalibrateResponse, Error> {
        request.validate()?;
        let mut options = request.options();
        let rag = self.engine().await?;
        let (questions, source, generated) = match (request.questions, request.generate) {
            (Some(questions), _) => {
                let source = request.source.unwrap_or_else(|| format!("{} questions in the request", questions.len()));
                (questions, source, None)
            }
            (None, Some(n)) => {
                let stratum = options.stratum.clone();
                let generated =
                    self.write_questions(&rag, &request.collection, &stratum, n, request.seed, progress).await?;
                (generated.questions.clone(), generated.source(request.seed), Some(generated))
            }
            (None, None) => return Err(Error::internal("a validated calibration has questions or `generate`")),
        };
        options.questions_from = source;
        let collection = request.collection.to_string();
        let certificate = blocking(move || rag.calibrate(&collection, &questions, &options)).await?;
        Ok(CalibrateResponse { advice: certificate.advice(), certificate, generated })
    }

    /// Questions the LLM writes about `n` chunks drawn from `collection`.
    async fn write_questions(
        &self,
        rag: &Arc<Rag>,
        collection: &engram_ops::CollectionName,
        stratum: &engram_rag::certify::Stratum,
        n: usize,
        seed: u64,
        mut progress: impl FnMut(&CalibrateProgress) + Send,
    ) -> Result<engram_rag::questions::Generated, Error> {
        let llm = self.models.llm.get().await.map_err(|reason| {
            Error::unavailable(format!("the language model that writes questions is unavailable: {reason}"))
        })?;
        let (sampler, collection, stratum) = (rag.clone(), collection.to_string(), stratum.clone());
        let chunks = blocking(move || sampler.sample_chunks(&collection, &stratum, n, seed)).await?;
        let total = chunks.len();
        let mut done = 0;
        progress(&CalibrateProgress::Questions { done, total });
        let generated = engram_rag::questions::write_questions(llm, &chunks, || {
            done += 1;
            progress(&CalibrateProgress::Questions { done, total });
        })
        .await
        .map_err(|err| Error::unavailable(format!("the language model failed to write a question: {err}")))?;
        Ok(generated)
    }

    /// [`CheckCertificate`].
    pub async fn check_certificate(&self, request: CheckCertificate) -> Result<CertificateCheck, Error> {
        request.validate()?;
        let rag = self.engine().await?;
        blocking(move || {
            let (status, checked) = rag.check_certificate(&request.id, &request.questions)?;
            Ok(CertificateCheck::new(&request.id, &status, &checked))
        })
        .await
    }
}

/// Runs blocking engine work off the async executor.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, RagError> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::internal(format!("retrieval panicked: {err}")))?
        .map_err(Error::from)
}
