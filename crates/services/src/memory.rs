//! Memory as a service: the engine opened once the embedder has loaded
//! (under the one retry policy), and one method per operation of
//! [`engram_memory::ops`].

use std::sync::Arc;

use engram_config::Paths;
use engram_memory::SummaryPrompts;
use engram_memory::assemble::{AssembleOptions, Assembled, CountTokens, Estimate};
use engram_memory::ops::{
    AppendTurn, Assemble, ConversationExport, Conversations, ConversationsResponse, ExportMemory, ForgetMemory,
    ForgetTenant, Forgotten, MemorySummary, Recall, SummaryResponse,
};
use engram_memory::{Forget, Memory, MemoryError, RecallOptions, Scope, Turn};
use engram_models::Embedder;
use engram_ops::{Error, Operation};
use engram_store::Store;

use crate::lazy::Lazy;
use crate::models::Models;

/// The memory engine and the operations on it.
pub struct MemoryService {
    engine: Lazy<Arc<Memory>, Arc<Embedder>>,
    models: Arc<Models>,
    config: engram_config::Memory,
    /// Wakes the summarizer: a turn was appended or forgotten.
    wake: Arc<tokio::sync::Notify>,
    summarizer: std::sync::Once,
}

/// Where memory's indexes live: `<data dir>/index/memory`.
pub fn index_dir(paths: &Paths) -> std::path::PathBuf {
    crate::rag::index_dir(paths).join("memory")
}

impl MemoryService {
    /// Memory over `store`, its indexes under [`index_dir`].
    pub fn new(config: &engram_config::Config, paths: &Paths, store: &Store, models: Arc<Models>) -> Self {
        let (store, dir) = (store.clone(), index_dir(paths));
        let engine = Lazy::with_input(move |embedder: Arc<Embedder>| {
            let memory =
                Memory::open(store.clone(), &dir, embedder, RecallOptions::default()).map_err(|e| e.to_string())?;
            Ok(Arc::new(memory))
        });
        Self {
            engine,
            models,
            config: config.memory.clone(),
            wake: Arc::new(tokio::sync::Notify::new()),
            summarizer: std::sync::Once::new(),
        }
    }

    /// Starts the compact-memory summarizer (once; with `memory.summarize`):
    /// a background task that brings every conversation's summaries up to
    /// its turns — those left behind by a restart first — and then waits
    /// for the next append or forget. A write never waits for it.
    pub fn start_summarizer(&self, memory: Arc<Memory>) {
        if !self.config.summarize {
            return;
        }
        self.summarizer.call_once(|| {
            let prompts = SummaryPrompts {
                summary: self.config.summary_prompt.clone(),
                rollup: self.config.rollup_prompt.clone(),
                rollup_every: self.config.rollup_every,
            };
            tokio::spawn(summarize(memory, self.models.clone(), prompts, self.wake.clone()));
        });
    }

    /// Where opening stands.
    pub fn state(&self) -> crate::LoadState {
        self.engine.state()
    }

    /// The engine, loading the embedder and opening the indexes until that works.
    pub async fn engine(&self) -> Result<Arc<Memory>, Error> {
        let unavailable = |reason: String| Error::unavailable(format!("memory is unavailable: {reason}"));
        if let Some(memory) = self.engine.loaded() {
            return Ok(memory.clone());
        }
        let embedder = self.models.embedder.get().await.map_err(unavailable)?.clone();
        self.engine.get_with(embedder).await.cloned().map_err(unavailable)
    }

    /// [`AppendTurn`]: answered once the journal has the turn; indexing
    /// follows in the background.
    pub async fn append(&self, request: AppendTurn) -> Result<Turn, Error> {
        request.validate()?;
        let memory = self.engine().await?;
        let scope = Scope { tenant: request.tenant.clone(), conversation: request.conversation.clone() };
        let stored = blocking({
            let memory = memory.clone();
            move || memory.append(&scope, request.turn())
        })
        .await?;
        self.start_summarizer(memory.clone());
        self.wake.notify_one();
        tokio::task::spawn_blocking(move || {
            if let Err(err) = memory.catch_up() {
                tracing::warn!(error = %err, "memory indexing fell behind; the next recall catches up");
            }
        });
        Ok(stored)
    }

    /// [`Recall`]: over every acknowledged turn (the indexes catch up first).
    pub async fn recall(&self, request: Recall) -> Result<engram_memory::Recollection, Error> {
        request.validate()?;
        let memory = self.engine().await?;
        blocking(move || {
            memory.catch_up()?;
            let scope = Scope { tenant: request.tenant.clone(), conversation: request.conversation.clone() };
            memory.recall(&scope, &request.query, request.k, request.now_ms)
        })
        .await
    }

    /// [`ForgetMemory`]: answered once the journal and the indexes are rid of it.
    pub async fn forget(&self, request: ForgetMemory) -> Result<Forgotten, Error> {
        request.validate()?;
        let memory = self.engine().await?;
        let forgotten = blocking(move || Ok(Forgotten { turns: memory.forget(&request.target())? })).await?;
        self.wake.notify_one();
        Ok(forgotten)
    }

    /// [`MemorySummary`].
    pub async fn summary(&self, request: MemorySummary) -> Result<SummaryResponse, Error> {
        let memory = self.engine().await?;
        blocking(move || {
            let scope = Scope { tenant: request.tenant.clone(), conversation: request.conversation.clone() };
            let compact = memory.compact(&scope)?;
            let history = if request.history { memory.summary_history(&scope)? } else { Vec::new() };
            Ok(SummaryResponse { compact, history })
        })
        .await
    }

    /// [`ExportMemory`].
    pub async fn export(&self, request: ExportMemory) -> Result<ConversationExport, Error> {
        let memory = self.engine().await?;
        blocking(move || {
            let scope = Scope { tenant: request.tenant.clone(), conversation: request.conversation.clone() };
            let compact = memory.compact(&scope)?;
            let turns = memory.turns(&scope, 0, u32::MAX as usize)?;
            let summaries = memory.summary_history(&scope)?;
            Ok(ConversationExport {
                conversation: request.conversation,
                tenant: request.tenant,
                compact,
                turns,
                summaries,
            })
        })
        .await
    }

    /// [`Assemble`]: counted with the local generator's tokenizer and
    /// template (estimated for a remote one).
    pub async fn assemble(&self, request: Assemble) -> Result<Assembled, Error> {
        request.validate()?;
        let memory = self.engine().await?;
        let llm = self.models.llm.get().await.map_err(|e| Error::unavailable(format!("the generator: {e}")))?;
        let counter: Box<dyn CountTokens> = match llm {
            engram_models::Llm::Local(scheduler) => Box::new(scheduler.info().counter.clone()),
            engram_models::Llm::Remote(_) => Box::new(Estimate),
        };
        let options = assemble_options(&self.config, request.budget);
        blocking(move || {
            memory.catch_up()?;
            let scope = Scope { tenant: request.tenant.clone(), conversation: request.conversation.clone() };
            memory.assemble(&scope, &request.message, &options, counter.as_ref(), request.now_ms)
        })
        .await
    }

    /// [`ForgetTenant`].
    pub async fn forget_tenant(&self, request: ForgetTenant) -> Result<Forgotten, Error> {
        let memory = self.engine().await?;
        blocking(move || Ok(Forgotten { turns: memory.forget(&Forget::Tenant(request.tenant))? })).await
    }

    /// [`Conversations`].
    pub async fn conversations(&self, request: Conversations) -> Result<ConversationsResponse, Error> {
        let memory = self.engine().await?;
        blocking(move || Ok(ConversationsResponse { conversations: memory.conversations(request.tenant.as_ref())? }))
            .await
    }
}

/// How prompts are assembled, from `[memory]` (and a request's budget).
fn assemble_options(config: &engram_config::Memory, budget: Option<usize>) -> AssembleOptions {
    AssembleOptions {
        budget: budget.unwrap_or(config.budget_tokens),
        recent_turns: config.recent_turns,
        recall_k: config.recall_k,
        system_prompt: config.system_prompt.clone(),
    }
}

/// The summarizer's loop (see [`MemoryService::start_summarizer`]).
async fn summarize(memory: Arc<Memory>, models: Arc<Models>, prompts: SummaryPrompts, wake: Arc<tokio::sync::Notify>) {
    // After a failure (the model not loaded, say), try again this often
    // even if nothing new arrives.
    const RETRY: std::time::Duration = std::time::Duration::from_secs(30);
    loop {
        if let Err(err) = summarize_pending(&memory, &models, &prompts).await {
            tracing::warn!(error = %err, "compact memory fell behind; it catches up later");
            let _ = tokio::time::timeout(RETRY, wake.notified()).await;
            continue;
        }
        wake.notified().await;
    }
}

/// Runs summary jobs until no conversation is behind.
async fn summarize_pending(memory: &Arc<Memory>, models: &Models, prompts: &SummaryPrompts) -> Result<(), Error> {
    loop {
        let behind = blocking({
            let memory = memory.clone();
            move || memory.behind()
        })
        .await?;
        if behind.is_empty() {
            return Ok(());
        }
        for scope in behind {
            let job = blocking({
                let (memory, prompts) = (memory.clone(), prompts.clone());
                move || memory.next_summary(&scope, &prompts)
            })
            .await?;
            let Some(job) = job else { continue };
            let llm = models.llm.get().await.map_err(|e| Error::unavailable(format!("the generator: {e}")))?;
            let request = engram_models::GenerateRequest {
                prompt: engram_models::Prompt::Chat(vec![engram_models::Message::new(
                    engram_models::Role::User,
                    job.prompt.clone(),
                )]),
                sampling: engram_models::SamplingParams { temperature: 0.0, ..Default::default() },
                max_tokens: 96,
                stop: Vec::new(),
                json_schema: None,
            };
            let (text, _) = llm.complete(request).await.map_err(|e| Error::unavailable(e.to_string()))?;
            let model = llm.name();
            let (level, to_turn, conversation) = (job.level, job.last_ordinal, job.scope.conversation.to_string());
            let stored = blocking({
                let memory = memory.clone();
                move || memory.store_summary(&job, &text, &model)
            })
            .await?;
            if stored {
                tracing::info!(%conversation, level, to_turn, "compact memory updated");
            } else {
                tracing::debug!(%conversation, "a summary was read before a forget; writing it again");
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MemoryError> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::internal(format!("memory panicked: {err}")))?
        .map_err(Error::from)
}

/// How `engram eval memory` runs.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// A LoCoMo JSON file.
    pub locomo: std::path::PathBuf,
    /// The evaluation's own journal and indexes, emptied first (default:
    /// `<cache dir>/eval/memory`).
    pub work_dir: Option<std::path::PathBuf>,
}

/// Replays LoCoMo into a fresh journal and scores memory's recall on it.
pub fn eval(
    config: &engram_config::Config,
    paths: &Paths,
    request: &EvalRequest,
    progress: &mut dyn FnMut(engram_memory::eval::EvalProgress),
) -> Result<engram_memory::eval::MemoryEval, crate::Error> {
    let samples = engram_memory::locomo::load(&request.locomo).map_err(crate::Error::Config)?;
    let work = request.work_dir.clone().unwrap_or_else(|| paths.cache_dir.join("eval").join("memory"));
    match std::fs::remove_dir_all(&work) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(crate::Error::Io { context: format!("cannot empty {}", work.display()), source }),
    }
    let store = Store::open(&work.join("journal.sqlite3"), &engram_store::StoreOptions::default())?;
    let embedder = Arc::new(crate::models::load_embedder(config, paths)?);
    let memory = Memory::open(store, &work.join("index"), embedder, RecallOptions::default())?;
    // Prompts are counted with the local generator's tokenizer (estimated
    // for a remote one), as the daemon counts them.
    let counter: Box<dyn CountTokens> = match config.models.llm.backend {
        engram_config::LlmBackend::Local => Box::new(crate::models::load_local(config, paths)?.counter()),
        engram_config::LlmBackend::Openai => Box::new(Estimate),
    };
    let options =
        engram_memory::eval::EvalOptions { assemble: Some((assemble_options(&config.memory, None), counter.as_ref())) };
    Ok(engram_memory::eval::evaluate(&memory, &samples, &options, progress)?)
}
