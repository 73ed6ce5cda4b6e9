//! The experience library's operations ([`engram_experience::ops`]), each
//! answered by one call to the experience service.

use axum::Router;
use engram_experience::Insight;
use engram_experience::evolve::Evolution;
use engram_experience::files::ImportReport;
use engram_experience::ops::{
    EditInsight, EvolveInsights, ImportInsights, InsightFeedback, InsightHistory, InsightList, InsightLookup,
    ListInsights, LookupInsights, RevertInsight, SetInsightStatus, ShowInsight,
};
use engram_experience::record::Outcome;
use engram_ops::Error;

use crate::app::AppState;
use crate::op::route;

/// `GET /v1/insights`, `GET /v1/insights/show`, `POST /v1/insights/edit`,
/// `POST /v1/insights/status`, `POST /v1/insights/import`,
/// `POST /v1/insights/lookup`, `POST /v1/insights/feedback`,
/// `POST /v1/insights/evolve`, `POST /v1/insights/revert`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .merge(route(list))
        .merge(route(show))
        .merge(route(edit))
        .merge(route(set_status))
        .merge(route(import))
        .merge(route(lookup))
        .merge(route(feedback))
        .merge(route(evolve))
        .merge(route(revert))
}

async fn evolve(state: AppState, request: EvolveInsights) -> Result<Evolution, Error> {
    state.services().experience().evolve(request).await
}

async fn revert(state: AppState, request: RevertInsight) -> Result<Insight, Error> {
    state.services().experience().revert(request).await
}

pub(crate) async fn lookup(state: AppState, request: LookupInsights) -> Result<InsightLookup, Error> {
    state.services().experience().lookup(request).await
}

pub(crate) async fn feedback(state: AppState, request: InsightFeedback) -> Result<Outcome, Error> {
    state.services().experience().feedback(request).await
}

async fn edit(state: AppState, request: EditInsight) -> Result<Insight, Error> {
    state.services().experience().edit(request).await
}

pub(crate) async fn list(state: AppState, request: ListInsights) -> Result<InsightList, Error> {
    state.services().experience().list(request).await
}

pub(crate) async fn show(state: AppState, request: ShowInsight) -> Result<InsightHistory, Error> {
    state.services().experience().show(request).await
}

async fn set_status(state: AppState, request: SetInsightStatus) -> Result<Insight, Error> {
    state.services().experience().set_status(request).await
}

async fn import(state: AppState, request: ImportInsights) -> Result<ImportReport, Error> {
    state.services().experience().import(request).await
}
