//! Memory's operations ([`engram_memory::ops`]), each answered by one call
//! to the memory service; the MCP tools (`mcp::tools`) run the same
//! handlers.

use axum::Router;
use engram_memory::Turn;
use engram_memory::assemble::Assembled;
use engram_memory::ops::{
    AppendTurn, ArchiveMemory, Archived, Assemble, ConversationExport, Conversations, ConversationsResponse,
    ExportMemory, ForgetMemory, ForgetTenant, Forgotten, MemorySummary, Recall, RestoreMemory, SummaryResponse,
};
use engram_ops::Error;

use crate::app::AppState;
use crate::op::route;

/// `POST /v1/memory/turns`, `POST /v1/memory/recall`,
/// `GET /v1/memory/conversations`, `POST /v1/memory/forget`,
/// `POST /v1/memory/forget-tenant`, `POST /v1/memory/summary`,
/// `POST /v1/memory/assemble`, `POST /v1/memory/export`,
/// `POST /v1/memory/archive`, `POST /v1/memory/restore`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .merge(route(append))
        .merge(route(recall))
        .merge(route(conversations))
        .merge(route(forget))
        .merge(route(forget_tenant))
        .merge(route(summary))
        .merge(route(assemble))
        .merge(route(export))
        .merge(route(archive))
        .merge(route(restore))
}

pub(crate) async fn append(state: AppState, request: AppendTurn) -> Result<Turn, Error> {
    state.services().memory().append(request).await
}

pub(crate) async fn recall(state: AppState, request: Recall) -> Result<engram_memory::Recollection, Error> {
    state.services().memory().recall(request).await
}

pub(crate) async fn conversations(state: AppState, request: Conversations) -> Result<ConversationsResponse, Error> {
    state.services().memory().conversations(request).await
}

pub(crate) async fn forget(state: AppState, request: ForgetMemory) -> Result<Forgotten, Error> {
    state.services().memory().forget(request).await
}

pub(crate) async fn forget_tenant(state: AppState, request: ForgetTenant) -> Result<Forgotten, Error> {
    state.services().memory().forget_tenant(request).await
}

pub(crate) async fn summary(state: AppState, request: MemorySummary) -> Result<SummaryResponse, Error> {
    state.services().memory().summary(request).await
}

pub(crate) async fn assemble(state: AppState, request: Assemble) -> Result<Assembled, Error> {
    state.services().memory().assemble(request).await
}

pub(crate) async fn export(state: AppState, request: ExportMemory) -> Result<ConversationExport, Error> {
    state.services().memory().export(request).await
}

pub(crate) async fn archive(state: AppState, request: ArchiveMemory) -> Result<Archived, Error> {
    state.services().memory().archive(request).await
}

pub(crate) async fn restore(state: AppState, request: RestoreMemory) -> Result<Archived, Error> {
    state.services().memory().restore(request).await
}
