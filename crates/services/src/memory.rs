//! Memory as a service: the engine opened once the embedder has loaded
//! (under the one retry policy), and one method per operation of
//! [`engram_memory::ops`].

use std::sync::Arc;

use engram_config::Paths;
use engram_memory::ops::{
    AppendTurn, Conversations, ConversationsResponse, ForgetMemory, ForgetTenant, Forgotten, Recall,
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
}

/// Where memory's indexes live: `<data dir>/index/memory`.
pub fn index_dir(paths: &Paths) -> std::path::PathBuf {
    crate::rag::index_dir(paths).join("memory")
}

impl MemoryService {
    /// Memory over `store`, its indexes under [`index_dir`].
    pub fn new(paths: &Paths, store: &Store, models: Arc<Models>) -> Self {
        let (store, dir) = (store.clone(), index_dir(paths));
        let engine = Lazy::with_input(move |embedder: Arc<Embedder>| {
            let memory =
                Memory::open(store.clone(), &dir, embedder, RecallOptions::default()).map_err(|e| e.to_string())?;
            Ok(Arc::new(memory))
        });
        Self { engine, models }
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
        blocking(move || Ok(Forgotten { turns: memory.forget(&request.target())? })).await
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
    Ok(engram_memory::eval::evaluate(&memory, &samples, progress)?)
}
