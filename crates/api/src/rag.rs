//! Retrieval's operations ([`engram_rag::ops`]), each answered by one call
//! to the retrieval service. The handlers are named so that the HTTP routes
//! here and the MCP tools (`mcp::tools`) run the same code.

use std::ops::ControlFlow;

use axum::Router;
use engram_ops::Error;
use engram_rag::IngestReport;
use engram_rag::certify::CertificateStatus;
use engram_rag::ops::{
    Calibrate, CalibrateResponse, Certificate, CertificateCheck, Certificates, CertificatesResponse, CheckCertificate,
    Collections, CollectionsResponse, Ingest, Search, SearchResponse,
};

use crate::app::AppState;
use crate::op::{Progress, route, streaming};

/// `POST /v1/ingest`, `POST /v1/search`, `GET /v1/collections`,
/// `GET /v1/certificates[/{id}]`, `POST /v1/calibrate`,
/// `POST /v1/certificates/{id}/check`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .merge(streaming(ingest))
        .merge(route(search))
        .merge(route(collections))
        .merge(route(certificates))
        .merge(route(certificate))
        .merge(streaming(calibrate))
        .merge(route(check_certificate))
}

pub(crate) async fn ingest(
    state: AppState,
    request: Ingest,
    progress: Progress<Ingest>,
) -> Result<IngestReport, Error> {
    state.services().rag().ingest(request, progress).await
}

pub(crate) async fn search(state: AppState, request: Search) -> Result<SearchResponse, Error> {
    state.services().rag().search(request).await
}

pub(crate) async fn collections(state: AppState, request: Collections) -> Result<CollectionsResponse, Error> {
    state.services().rag().collections(request).await
}

pub(crate) async fn certificates(state: AppState, request: Certificates) -> Result<CertificatesResponse, Error> {
    state.services().rag().certificates(request).await
}

pub(crate) async fn certificate(state: AppState, request: Certificate) -> Result<CertificateStatus, Error> {
    state.services().rag().certificate(request).await
}

/// Calibration stops when the caller goes away (its future is dropped),
/// so its progress is only reported.
pub(crate) async fn calibrate(
    state: AppState,
    request: Calibrate,
    mut progress: Progress<Calibrate>,
) -> Result<CalibrateResponse, Error> {
    let report = move |event: &_| {
        let _: ControlFlow<()> = progress(event);
    };
    state.services().rag().calibrate(request, report).await
}

pub(crate) async fn check_certificate(state: AppState, request: CheckCertificate) -> Result<CertificateCheck, Error> {
    state.services().rag().check_certificate(request).await
}
