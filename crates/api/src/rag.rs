//! Retrieval's routes: each an operation of [`engram_rag::ops`] answered by
//! one call to the retrieval service.

use axum::Router;
use engram_rag::ops::{Calibrate, Certificate, Certificates, CheckCertificate, Collections, Ingest, Search};

use crate::app::AppState;
use crate::op::{route, streaming};

/// `POST /v1/ingest`, `POST /v1/search`, `GET /v1/collections`,
/// `GET /v1/certificates[/{id}]`, `POST /v1/calibrate`,
/// `POST /v1/certificates/{id}/check`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .merge(streaming(|state: AppState, request: Ingest, progress| async move {
            state.services().rag().ingest(request, progress).await
        }))
        .merge(route(|state: AppState, request: Search| async move { state.services().rag().search(request).await }))
        .merge(route(|state: AppState, request: Collections| async move {
            state.services().rag().collections(request).await
        }))
        .merge(route(|state: AppState, request: Certificates| async move {
            state.services().rag().certificates(request).await
        }))
        .merge(route(|state: AppState, request: Certificate| async move {
            state.services().rag().certificate(request).await
        }))
        .merge(streaming(|state: AppState, request: Calibrate, progress| async move {
            state.services().rag().calibrate(request, progress).await
        }))
        .merge(route(|state: AppState, request: CheckCertificate| async move {
            state.services().rag().check_certificate(request).await
        }))
}
