//! `recsys model-server`: the embedder over HTTP, wire-compatible with the tutorial's BentoML
//! service (`POST /get_query_embeddings`, `POST /predict`), plus `GET /metadata`, `/healthz` and
//! `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use schemas::{
    ErrorBody, ModelMetadata, ModelServerRequest, PredictResponse, QueryEmbeddingsResponse,
};
use tokio::net::TcpListener;

use dataset::id_map::{add_unknown_candidates, add_unknown_items};

use crate::embedder::{EmbedError, Embedder};
use crate::served::ServedModels;

/// Requests carry at most this many bytes; a session is a few hundred ids at most.
const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
struct ServerState {
    models: Arc<ServedModels>,
    metrics: PrometheusHandle,
}

impl ServerState {
    /// The embedder a request names, or the current one.
    fn embedder(&self, request: &ModelServerRequest) -> Result<Arc<Embedder>, ModelServerError> {
        match &request.model_version {
            None => Ok(self.models.current()),
            Some(version) => {
                self.models
                    .of_version(version)
                    .ok_or_else(|| ModelServerError::VersionNotServed {
                        requested: version.clone(),
                        serving: self.models.current().model_version().to_owned(),
                    })
            }
        }
    }
}

pub fn router(models: Arc<ServedModels>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/get_query_embeddings", post(get_query_embeddings))
        .route("/predict", post(predict))
        .route("/metadata", get(model_metadata))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(render_metrics))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(ServerState { models, metrics })
}

/// A running server; dropping the handle does not stop it, its shutdown future does.
pub struct ModelServerHandle {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Serves on an already bound listener (tests bind port 0 and read the address back) until
/// `shutdown` resolves, then finishes the requests in flight.
pub fn spawn(
    listener: TcpListener,
    models: Arc<ServedModels>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<ModelServerHandle> {
    let local_addr = listener.local_addr()?;
    let app = router(models, common::telemetry::prometheus_handle());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok(ModelServerHandle { local_addr, task })
}

/// Every way a model-server request can fail; `IntoResponse` is the one place that picks status.
#[derive(Debug, thiserror::Error)]
enum ModelServerError {
    #[error("{0}")]
    BadJson(#[from] JsonRejection),
    #[error("item_seq_raw[{row}]: no item known to the model (unknown: {unknown_items:?})")]
    EmptySequence {
        row: usize,
        unknown_items: Vec<String>,
    },
    #[error("item_seq_raw is empty: send at least one sequence")]
    NoSequence,
    #[error("{0}")]
    Embedder(EmbedError),
    #[error("model version {requested} is not served here (this server serves {serving})")]
    VersionNotServed { requested: String, serving: String },
}

impl IntoResponse for ModelServerError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ModelServerError::BadJson(rejection) => (rejection.status(), "invalid_request"),
            ModelServerError::EmptySequence { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "empty_sequence")
            }
            ModelServerError::NoSequence => (StatusCode::UNPROCESSABLE_ENTITY, "no_sequence"),
            ModelServerError::VersionNotServed { .. } => {
                (StatusCode::CONFLICT, "model_version_not_served")
            }
            ModelServerError::Embedder(error) => {
                tracing::error!(%error, "embedder failure");
                (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable")
            }
        };
        let message = match &self {
            ModelServerError::BadJson(rejection) => rejection.body_text(),
            other => other.to_string(),
        };
        (status, Json(ErrorBody::new(code, message))).into_response()
    }
}

fn metadata(embedder: &Embedder) -> ModelMetadata {
    ModelMetadata {
        model_name: embedder.model_name().to_owned(),
        model_version: embedder.model_version().to_owned(),
    }
}

/// Embeds every row; the first failing row decides the error.
async fn embed_rows(
    embedder: &Embedder,
    rows: &[Vec<String>],
) -> Result<(Vec<Vec<f32>>, Vec<String>), ModelServerError> {
    if rows.is_empty() {
        return Err(ModelServerError::NoSequence);
    }
    let mut vectors = Vec::with_capacity(rows.len());
    let mut unknown_items: Vec<String> = Vec::new();
    for (row, result) in embedder.embed_many(rows).await.into_iter().enumerate() {
        match result {
            Ok(embedding) => {
                add_unknown_items(embedding.unknown_items, &mut unknown_items);
                vectors.push(embedding.vector);
            }
            Err(EmbedError::EmptySequence { unknown_items }) => {
                return Err(ModelServerError::EmptySequence { row, unknown_items })
            }
            Err(other) => return Err(ModelServerError::Embedder(other)),
        }
    }
    Ok((vectors, unknown_items))
}

async fn get_query_embeddings(
    State(state): State<ServerState>,
    request: Result<Json<ModelServerRequest>, JsonRejection>,
) -> Result<Json<QueryEmbeddingsResponse>, ModelServerError> {
    let Json(request) = request?;
    let embedder = state.embedder(&request)?;
    let (query_embedding, unknown_items) = embed_rows(&embedder, &request.ctx.item_seq_raw).await?;
    Ok(Json(QueryEmbeddingsResponse {
        query_embedding,
        metadata: metadata(&embedder),
        ctx: request.ctx,
        unknown_items,
    }))
}

/// Scores `candidate_items_raw` against the query of the first sequence, in request order.
async fn predict(
    State(state): State<ServerState>,
    request: Result<Json<ModelServerRequest>, JsonRejection>,
) -> Result<Json<PredictResponse>, ModelServerError> {
    let Json(request) = request?;
    let embedder = state.embedder(&request)?;
    let first_row = request
        .ctx
        .item_seq_raw
        .first()
        .cloned()
        .into_iter()
        .collect::<Vec<_>>();
    let (vectors, mut unknown_items) = embed_rows(&embedder, &first_row).await?;
    let scores = embedder.score_candidates(&vectors[0], &request.ctx.candidate_items_raw);
    add_unknown_candidates(
        &request.ctx.candidate_items_raw,
        &scores,
        &mut unknown_items,
    );
    Ok(Json(PredictResponse {
        scores,
        metadata: metadata(&embedder),
        ctx: request.ctx,
        unknown_items,
    }))
}

/// Which model this server runs (not part of the BentoML API; lets clients report the version).
async fn model_metadata(State(state): State<ServerState>) -> Json<ModelMetadata> {
    Json(metadata(&state.models.current()))
}

async fn render_metrics(State(state): State<ServerState>) -> String {
    state.metrics.render()
}

/// Binds `address` and serves until SIGINT/SIGTERM, then drains.
pub async fn run(address: SocketAddr, models: Arc<ServedModels>) -> std::io::Result<()> {
    let shutdown = common::shutdown::signal();
    let listener = TcpListener::bind(address).await?;
    let handle = spawn(listener, models, shutdown)?;
    tracing::info!(address = %handle.local_addr, "model server listening");
    handle.task.await.map_err(std::io::Error::other)?
}
