//! Memory as a service: the engine opened once the embedder has loaded
//! (under the one retry policy), and one method per operation of
//! [`engram_memory::ops`].

use std::sync::Arc;

use engram_config::Paths;
use engram_index::VectorBackend;
use engram_memory::SummaryPrompts;
use engram_memory::assemble::{AssembleOptions, Assembled, CountTokens, Estimate};
use engram_memory::ops::{
    AppendTurn, ArchiveMemory, Archived, Assemble, ConversationExport, Conversations, ConversationsResponse,
    ExportMemory, ForgetMemory, ForgetTenant, Forgotten, MemorySummary, Recall, RestoreMemory, SummaryResponse,
};
use engram_memory::{Forget, Memory, MemoryError, RecallOptions, Retention, Scope, Turn};
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
    /// Conversations whose compact memory changed (a summary written, or
    /// summaries dropped by a forget), for subscribers.
    changes: tokio::sync::broadcast::Sender<Scope>,
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
        let (config_, paths_) = (config.clone(), paths.clone());
        let engine = Lazy::with_input(move |embedder: Arc<Embedder>| {
            // Turns' vectors live where retrieval's do (`retrieval.vector_store`).
            let vectors = crate::rag::options(&config_, &paths_).map_err(|e| e.to_string())?.vectors;
            let memory = Memory::open(store.clone(), &dir, embedder, &vectors, RecallOptions::default())
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(memory))
        });
        Self {
            engine,
            models,
            config: config.memory.clone(),
            wake: Arc::new(tokio::sync::Notify::new()),
            changes: tokio::sync::broadcast::channel(256).0,
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
            let prompts = summary_prompts(&self.config);
            let changes = self.changes.clone();
            tokio::spawn(summarize(memory, self.models.clone(), prompts, self.wake.clone(), changes));
        });
    }

    /// The conversations whose compact memory changes from now on (a
    /// subscriber that falls far behind skips some).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Scope> {
        self.changes.subscribe()
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
            let (memory, scope) = (memory.clone(), scope.clone());
            move || memory.append(&scope, request.turn())
        })
        .await?;
        self.start_summarizer(memory.clone());
        self.wake.notify_one();
        let retention = self.retention(None);
        tokio::task::spawn_blocking(move || {
            match memory.archive_over_capacity(&scope, &retention) {
                Ok(archived) if !archived.is_empty() => {
                    tracing::debug!(conversation = %scope.conversation, turns = archived.len(), "archived past capacity");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "archiving past capacity failed; the next append tries again"),
            }
            if let Err(err) = memory.catch_up() {
                tracing::warn!(error = %err, "memory indexing fell behind; the next recall catches up");
            }
        });
        Ok(stored)
    }

    /// Forgetting by capacity, from `[memory]` (`capacity` overriding it).
    fn retention(&self, capacity: Option<usize>) -> Retention {
        retention(&self.config, capacity)
    }

    /// [`ArchiveMemory`].
    pub async fn archive(&self, request: ArchiveMemory) -> Result<Archived, Error> {
        request.validate()?;
        let memory = self.engine().await?;
        let retention = self.retention(request.capacity);
        blocking(move || {
            let scope = Scope { tenant: request.tenant.clone(), conversation: request.conversation.clone() };
            let turns = match request.capacity {
                Some(_) => memory.archive_over_capacity(&scope, &retention)?,
                None => memory.archive(&scope, &request.turns)?,
            };
            Ok(Archived { turns })
        })
        .await
    }

    /// [`RestoreMemory`].
    pub async fn restore(&self, request: RestoreMemory) -> Result<Archived, Error> {
        request.validate()?;
        let memory = self.engine().await?;
        blocking(move || {
            let scope = Scope { tenant: request.tenant.clone(), conversation: request.conversation.clone() };
            Ok(Archived { turns: memory.restore(&scope, &request.select(), request.pin)? })
        })
        .await
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
        let scope = Scope { tenant: request.tenant.clone(), conversation: request.conversation.clone() };
        let forgotten = blocking(move || Ok(Forgotten { turns: memory.forget(&request.target())? })).await?;
        if forgotten.turns > 0 {
            // No receiver is not an error.
            let _ = self.changes.send(scope);
        }
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

/// Recall for plugins granted `memory`: the turns of the caller's own
/// conversation (tenant and conversation from the call, never from the
/// plugin), as `speaker (date): text`.
pub struct PluginRecall(pub Arc<Memory>);

impl engram_plugin_host::Recall for PluginRecall {
    fn recall(
        &self,
        scope: &engram_plugin_host::Scope,
        query: &str,
        limit: u32,
    ) -> Result<Vec<engram_plugin_host::Hit>, String> {
        let Some(conversation) = &scope.conversation else {
            return Err("memory recall needs a conversation, and this call belongs to none".into());
        };
        let invalid = |err: engram_ops::InvalidId| format!("the caller's scope: {err}");
        let scope = Scope {
            tenant: scope.tenant.clone().map(engram_ops::TenantId::new).transpose().map_err(invalid)?,
            conversation: engram_ops::ConversationId::new(conversation.clone()).map_err(invalid)?,
        };
        if query.trim().is_empty() {
            return Err("the query is empty".into());
        }
        self.0.catch_up().map_err(|e| e.to_string())?;
        let recalled = match self.0.recall(&scope, query, limit.clamp(1, 100) as usize, None) {
            Ok(recollection) => recollection.turns,
            // A conversation with no turns yet remembers nothing.
            Err(MemoryError::NotFound(_)) => Vec::new(),
            Err(err) => return Err(err.to_string()),
        };
        Ok(recalled
            .into_iter()
            .map(|r| engram_plugin_host::Hit {
                text: format!("{} ({}): {}", r.turn.speaker, engram_memory::when::date(r.turn.time_ms), r.turn.text),
                score: r.score.clamp(0.0, 1.0) as f32,
            })
            .collect())
    }
}

/// The summarizer's prompts, from `[memory]`.
fn summary_prompts(config: &engram_config::Memory) -> SummaryPrompts {
    SummaryPrompts {
        summary: config.summary_prompt.clone(),
        rollup: config.rollup_prompt.clone(),
        rollup_every: config.rollup_every,
    }
}

/// Forgetting by capacity, from `[memory]` (and a request's capacity).
fn retention(config: &engram_config::Memory, capacity: Option<usize>) -> Retention {
    Retention {
        capacity: capacity.unwrap_or(config.capacity),
        half_life_turns: config.half_life_turns as f64,
        keep_recent: config.recent_turns,
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
async fn summarize(
    memory: Arc<Memory>,
    models: Arc<Models>,
    prompts: SummaryPrompts,
    wake: Arc<tokio::sync::Notify>,
    changes: tokio::sync::broadcast::Sender<Scope>,
) {
    // After a failure (the model not loaded, say), try again this often
    // even if nothing new arrives.
    const RETRY: std::time::Duration = std::time::Duration::from_secs(30);
    loop {
        if let Err(err) = summarize_pending(&memory, &models, &prompts, &changes).await {
            tracing::warn!(error = %err, "compact memory fell behind; it catches up later");
            let _ = tokio::time::timeout(RETRY, wake.notified()).await;
            continue;
        }
        wake.notified().await;
    }
}

/// Runs summary jobs until no conversation is behind.
async fn summarize_pending(
    memory: &Arc<Memory>,
    models: &Models,
    prompts: &SummaryPrompts,
    changes: &tokio::sync::broadcast::Sender<Scope>,
) -> Result<(), Error> {
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
            let request = summary_request(&job.prompt);
            let (text, _) = llm.complete(request).await.map_err(|e| Error::unavailable(e.to_string()))?;
            let model = llm.name();
            let (level, to_turn, scope) = (job.level, job.last_ordinal, job.scope.clone());
            let stored = blocking({
                let memory = memory.clone();
                move || memory.store_summary(&job, &text, &model)
            })
            .await?;
            let conversation = scope.conversation.to_string();
            if stored {
                tracing::info!(%conversation, level, to_turn, "compact memory updated");
                let _ = changes.send(scope);
            } else {
                tracing::debug!(%conversation, "a summary was read before a forget; writing it again");
            }
        }
    }
}

/// The generation that writes one summary: greedy, one or two sentences.
fn summary_request(prompt: &str) -> engram_models::GenerateRequest {
    chat_request(vec![engram_models::Message::new(engram_models::Role::User, prompt.to_owned())], 96)
}

/// A greedy generation of at most `max_tokens` from `messages`.
pub(crate) fn chat_request(messages: Vec<engram_models::Message>, max_tokens: usize) -> engram_models::GenerateRequest {
    engram_models::GenerateRequest {
        prompt: engram_models::Prompt::Chat(messages),
        sampling: engram_models::SamplingParams { temperature: 0.0, ..Default::default() },
        max_tokens,
        stop: Vec::new(),
        json_schema: None,
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
    /// Then forget down to this capacity (weighed as `[memory]` says) and
    /// score again.
    pub capacity: Option<engram_memory::eval::Capacity>,
    /// Keep each conversation's compact memory with the configured model
    /// while replaying, and score the summaries.
    pub summaries: bool,
    /// Answer up to this many questions (0: all) with the configured model
    /// and score token F1.
    pub answer: Option<usize>,
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
    let memory = Memory::open(store, &work.join("index"), embedder, &VectorBackend::Edge, RecallOptions::default())?;
    // Prompts are counted with the local generator's tokenizer (estimated
    // for a remote one), as the daemon counts them.
    let counter: Box<dyn CountTokens> = match config.models.llm.backend {
        engram_config::LlmBackend::Local => Box::new(crate::models::load_local(config, paths)?.counter()),
        engram_config::LlmBackend::Openai => Box::new(Estimate),
    };
    // The model, when summaries or answers are asked for: driven from this
    // thread through a runtime of its own.
    let llm = if request.summaries || request.answer.is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| crate::Error::Io { context: "cannot start a runtime".into(), source })?;
        let llm = crate::models::load_llm(config, paths)?;
        Some((runtime, llm))
    } else {
        None
    };
    let complete = |request: engram_models::GenerateRequest| -> Result<String, String> {
        let (runtime, llm) = llm.as_ref().ok_or("no model loaded")?;
        runtime.block_on(llm.complete(request)).map(|(text, _)| text).map_err(|e| e.to_string())
    };
    let write = |prompt: &str| complete(summary_request(prompt));
    let answer = |messages: &[engram_memory::assemble::PromptMessage]| {
        let messages = messages
            .iter()
            .map(|m| {
                let role = match m.role.as_str() {
                    "system" => engram_models::Role::System,
                    "assistant" => engram_models::Role::Assistant,
                    _ => engram_models::Role::User,
                };
                engram_models::Message::new(role, m.content.clone())
            })
            .collect();
        complete(chat_request(messages, 48))
    };
    let options = engram_memory::eval::EvalOptions {
        assemble: Some((assemble_options(&config.memory, None), counter.as_ref())),
        forgetting: request.capacity.map(|capacity| (capacity, retention(&config.memory, None))),
        summaries: request.summaries.then(|| engram_memory::eval::Summarizer {
            prompts: summary_prompts(&config.memory),
            model: llm.as_ref().map(|(_, llm)| llm.name()).unwrap_or_default(),
            write: &write,
        }),
        answer: request.answer.map(|limit| (&answer as &engram_memory::eval::Answerer<'_>, limit)),
    };
    Ok(engram_memory::eval::evaluate(&memory, &samples, &options, progress)?)
}
