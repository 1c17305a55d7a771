//! Route handlers: parse and check the input, call the pipeline, shape the answer.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use dataset::id_map::add_unknown_items;
use engine::model::ModelError;
use engine::retrieve::{RetrieveOutcome, RetrieveRequest, Source};
use schemas::{
    ErrorBody, PredictResponse, QueryEmbeddingsResponse, ReadinessResponse, RecommendationMetadata,
    RecommendationSource, RecommendationsResponse, RecommendedItem, RetrieveContext,
    RetrieveDebugInfo, SeqRetrieverDebugInfo, SeqRetrieverEndpoint, SeqRetrieverRequest,
    SeqRetrieverResponse, SeqRetrieverResult, UserHistoryResponse,
};
use serde::Deserialize;
use tower_http::request_id::RequestId;
use utoipa::{IntoParams, OpenApi};

use crate::openapi::{ApiDoc, DOCS_PAGE};

use crate::{ApiError, AppState};

pub const MAX_COUNT: usize = schemas::MAX_ITEMS_PER_REQUEST;
const DEFAULT_COUNT: usize = 10;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/recs/retrieve", post(retrieve))
        .route("/recs/popular", get(popular))
        .route("/vendor/seq_retriever", post(seq_retriever))
        .route("/users/{user_id}/history", get(user_history))
        .route(
            "/users/{user_id}",
            axum::routing::delete(crate::users::forget_user),
        )
        .route("/items", get(crate::search::items_by_id))
        .route("/items/search", get(crate::search::search_items))
        .route("/items/get_by_ids", post(crate::search::items_by_ids_body))
        .route(
            "/items/search_by_title",
            post(crate::search::search_by_title),
        )
        .route(
            "/items/{item_id}",
            get(crate::items::get_item).delete(crate::items::remove_item),
        )
        .route("/items/{item_id}/similar", get(crate::items::similar_items))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/docs", get(|| async { Html(DOCS_PAGE) }))
}

/// Process liveness: answers as long as the process serves HTTP.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = String, example = "ok")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Query parameters arrive as text so that a bad value gets a message naming the parameter.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RecsParams {
    /// How many items to return, 1 to 1000 (default 10).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    count: Option<String>,
    /// Adds per-stage timings to `metadata.timings`.
    #[param(value_type = Option<bool>)]
    debug: Option<String>,
}

pub(crate) fn parse_count(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_COUNT);
    };
    match raw.trim().parse::<usize>() {
        Ok(count) if (1..=MAX_COUNT).contains(&count) => Ok(count),
        _ => Err(ApiError::field(
            "count",
            format!("must be an integer from 1 to {MAX_COUNT}, got '{raw}'"),
        )),
    }
}

fn parse_debug(raw: Option<&str>) -> Result<bool, ApiError> {
    match raw {
        None => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(ApiError::field(
            "debug",
            format!("must be true or false, got '{other}'"),
        )),
    }
}

pub(crate) fn rec_id(request_id: &RequestId) -> String {
    request_id
        .header_value()
        .to_str()
        .unwrap_or_default()
        .to_owned()
}

/// Checks the limits serde cannot express; `prefix` is where the context sits in the body.
fn check_context(
    context: &RetrieveContext,
    max_session_items: usize,
    prefix: &str,
) -> Result<(), ApiError> {
    for (row, sequence) in context.item_seq_raw.iter().enumerate() {
        if sequence.len() > max_session_items {
            return Err(ApiError::field(
                &format!("{prefix}item_seq_raw[{row}]"),
                format!(
                    "{} items, at most {max_session_items} are accepted",
                    sequence.len()
                ),
            ));
        }
        if let Some(position) = sequence.iter().position(|item| item.trim().is_empty()) {
            return Err(ApiError::field(
                &format!("{prefix}item_seq_raw[{row}][{position}]"),
                "empty item id",
            ));
        }
    }
    if context.candidate_items_raw.len() > MAX_COUNT {
        return Err(ApiError::field(
            &format!("{prefix}candidate_items_raw"),
            format!(
                "{} items, at most {MAX_COUNT} are accepted",
                context.candidate_items_raw.len()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn response(
    outcome: RetrieveOutcome,
    ctx: RetrieveContext,
    rec_id: String,
    debug: bool,
    index_bundle: Option<&str>,
) -> RecommendationsResponse {
    let timings = serde_json::to_value(&outcome.timings).expect("timings serialise");
    let source = match outcome.source {
        Source::Personalized => RecommendationSource::Personalized,
        Source::Popular => RecommendationSource::Popular,
        Source::Similar => RecommendationSource::Similar,
        Source::Cache => RecommendationSource::Cache,
    };
    RecommendationsResponse {
        recommendations: outcome
            .recommendations
            .into_iter()
            .map(|recommendation| {
                // `item_id` is a field of its own; the payload's copy would repeat the JSON key.
                let mut payload = recommendation.payload;
                payload.remove("item_id");
                RecommendedItem {
                    item_id: recommendation.item_id,
                    score: recommendation.score,
                    payload,
                }
            })
            .collect(),
        ctx,
        metadata: RecommendationMetadata {
            rec_id,
            model_version: outcome.model_version,
            index_bundle: index_bundle.map(str::to_owned),
            source,
            fallback_reason: outcome
                .fallback_reason
                .map(|reason| reason.as_str().to_owned()),
            unknown_items: outcome.unknown_items,
            timings: debug.then(|| timings.clone()),
        },
        debug_info: debug.then(|| RetrieveDebugInfo {
            timings: timings.clone(),
            merged_sequence: outcome.embedded_sequence,
        }),
    }
}

/// Personalized recommendations for a session, merged with the user's stored history; popular
/// items with `metadata.fallback_reason` when there is no usable signal or a dependency is down.
#[utoipa::path(
    post,
    path = "/recs/retrieve",
    params(RecsParams),
    request_body = RetrieveContext,
    responses(
        (status = 200, body = RecommendationsResponse, headers(("x-request-id" = String, description = "Equal to metadata.rec_id"))),
        (status = 400, body = ErrorBody, description = "Malformed JSON or query string"),
        (status = 413, body = ErrorBody, description = "Body over the size limit"),
        (status = 415, body = ErrorBody, description = "Body is not application/json"),
        (status = 422, body = ErrorBody, description = "A field has the wrong type, is unknown, or is out of range"),
    )
)]
async fn retrieve(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    params: Result<Query<RecsParams>, QueryRejection>,
    body: Result<Json<RetrieveContext>, JsonRejection>,
) -> Result<Json<RecommendationsResponse>, ApiError> {
    let Query(params) = params?;
    let count = parse_count(params.count.as_deref())?;
    let debug = parse_debug(params.debug.as_deref())?;
    let Json(context) = body?;
    check_context(&context, state.limits.max_session_items, "")?;
    let request = RetrieveRequest {
        user_id: context.user_id().map(str::to_owned),
        session_items: context.session_items().to_vec(),
        candidates: context.candidate_items_raw.clone(),
        count,
    };
    // One pair for the whole answer, even if a promotion swaps it meanwhile.
    let retriever = state.retriever.get();
    let outcome = retriever.retrieve(&request).await;
    Ok(Json(response(
        outcome,
        context,
        rec_id(&request_id),
        debug,
        retriever.index_bundle(),
    )))
}

/// The live popular items (decayed interaction counts), from the in-memory snapshot.
#[utoipa::path(
    get,
    path = "/recs/popular",
    params(RecsParams),
    responses(
        (status = 200, body = RecommendationsResponse),
        (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
async fn popular(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    params: Result<Query<RecsParams>, QueryRejection>,
) -> Result<Json<RecommendationsResponse>, ApiError> {
    let Query(params) = params?;
    let count = parse_count(params.count.as_deref())?;
    let debug = parse_debug(params.debug.as_deref())?;
    let started = std::time::Instant::now();
    let retriever = state.retriever.get();
    let recommendations = retriever.popular_items(count, &HashSet::new()).await;
    let outcome = RetrieveOutcome {
        recommendations,
        source: Source::Popular,
        fallback_reason: None,
        unknown_items: Vec::new(),
        model_version: None,
        timings: engine::retrieve::StageTimings {
            total_micros: started.elapsed().as_micros() as u64,
            ..Default::default()
        },
        embedded_sequence: Vec::new(),
    };
    Ok(Json(response(
        outcome,
        RetrieveContext::default(),
        rec_id(&request_id),
        debug,
        retriever.index_bundle(),
    )))
}

/// "ok", or why the check failed or that it did not finish within a second.
async fn dependency_state<E: std::fmt::Display>(
    check: impl std::future::Future<Output = Result<(), E>>,
) -> String {
    match tokio::time::timeout(Duration::from_secs(1), check).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "timed out".to_owned(),
    }
}

/// Each dependency's state, checked concurrently; 503 when any of them is not ok.
#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, body = ReadinessResponse),
        (status = 503, body = ReadinessResponse, description = "A dependency is not ok"),
    )
)]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let readiness = readiness(&state).await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}

/// Prometheus' text, with `recsys_api_ready` checked at the scrape: alerts see readiness
/// without a prober of their own.
async fn metrics_text(State(state): State<AppState>) -> String {
    let ready = readiness(&state).await.ready;
    metrics::gauge!("recsys_api_ready").set(if ready { 1.0 } else { 0.0 });
    state.metrics.render()
}

async fn readiness(state: &AppState) -> ReadinessResponse {
    let retriever = state.retriever.get();
    let (store, index, model) = tokio::join!(
        dependency_state(retriever.store().ping()),
        dependency_state(retriever.index().ping()),
        dependency_state(async { retriever.model().metadata().await.map(drop) }),
    );
    // The pair, not a dependency: a model and an index that do not belong together give
    // meaningless scores, so the server is not ready until the index is rebuilt.
    let pairing = retriever.pairing_problem().unwrap_or("ok").to_owned();
    let ready = [&store, &index, &model, &pairing]
        .iter()
        .all(|state| state.as_str() == "ok");
    let dependencies = [
        ("store", store),
        ("index", index),
        ("model", model),
        ("model_index_pairing", pairing),
    ]
    .into_iter()
    .map(|(name, state)| (name.to_owned(), state))
    .collect();
    ReadinessResponse {
        ready,
        dependencies,
    }
}

/// The user's stored state: recent sequence (oldest first) and how many items count as seen.
#[utoipa::path(
    get,
    path = "/users/{user_id}/history",
    params(("user_id" = String, Path, description = "The user id as events and requests name it")),
    responses(
        (status = 200, body = UserHistoryResponse, description = "An unknown user has an empty history"),
        (status = 503, body = ErrorBody, description = "The store is unavailable"),
    )
)]
async fn user_history(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<UserHistoryResponse>, ApiError> {
    let user_state = state
        .retriever
        .get()
        .store()
        .user_state(&user_id)
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    Ok(Json(UserHistoryResponse {
        user_id,
        recent_items: user_state.recent_items,
        seen_items: user_state.seen_items.len(),
        newest_event_time_ms: user_state.newest_event_time_ms,
    }))
}

/// Direct access to the model, as the tutorial's API offers it for debugging: the context goes
/// to the model as sent (no stored history merged) and the model's answer comes back unchanged.
#[utoipa::path(
    post,
    path = "/vendor/seq_retriever",
    request_body = SeqRetrieverRequest,
    responses(
        (status = 200, body = SeqRetrieverResponse),
        (status = 400, body = ErrorBody, description = "Malformed JSON"),
        (status = 422, body = ErrorBody, description = "Unknown endpoint, wrong field, or no item known to the model"),
        (status = 503, body = ErrorBody, description = "The model is unavailable"),
    )
)]
async fn seq_retriever(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    body: Result<Json<SeqRetrieverRequest>, JsonRejection>,
) -> Result<Json<SeqRetrieverResponse>, ApiError> {
    let Json(SeqRetrieverRequest {
        ctx,
        endpoint,
        debug,
    }) = body?;
    check_context(&ctx, state.limits.max_session_items, "ctx.")?;
    if ctx.item_seq_raw.is_empty() {
        return Err(ApiError::field(
            "ctx.item_seq_raw",
            "send at least one sequence",
        ));
    }
    let retriever = state.retriever.get();
    let model = retriever.model();
    let started = std::time::Instant::now();
    let metadata = model.metadata().await.map_err(model_error(0))?;
    let result = match endpoint {
        SeqRetrieverEndpoint::GetQueryEmbeddings => {
            let mut query_embedding = Vec::with_capacity(ctx.item_seq_raw.len());
            let mut unknown_items: Vec<String> = Vec::new();
            for (row, sequence) in ctx.item_seq_raw.iter().enumerate() {
                let query = model.query(sequence).await.map_err(model_error(row))?;
                add_unknown_items(query.unknown_items, &mut unknown_items);
                query_embedding.push(query.vector);
            }
            SeqRetrieverResult::QueryEmbeddings(QueryEmbeddingsResponse {
                query_embedding,
                metadata,
                ctx,
                unknown_items,
            })
        }
        SeqRetrieverEndpoint::Predict => {
            let (scores, unknown_items) = model
                .score_candidates(ctx.session_items(), &ctx.candidate_items_raw)
                .await
                .map_err(model_error(0))?;
            SeqRetrieverResult::Predict(PredictResponse {
                scores,
                metadata,
                ctx,
                unknown_items,
            })
        }
    };
    Ok(Json(SeqRetrieverResponse {
        result,
        rec_id: rec_id(&request_id),
        debug_info: debug.then(|| SeqRetrieverDebugInfo {
            model_backend: model.backend().to_owned(),
            model_micros: started.elapsed().as_micros() as u64,
        }),
    }))
}

/// An empty sequence is the client's problem (422 naming the row); anything else is the model's.
fn model_error(row: usize) -> impl FnOnce(ModelError) -> ApiError {
    move |error| match error {
        ModelError::EmptySequence { unknown_items } => ApiError::field(
            &format!("ctx.item_seq_raw[{row}]"),
            format!("no item known to the model (unknown: {unknown_items:?})"),
        ),
        ModelError::Unavailable(detail) => ApiError::Unavailable(detail),
    }
}
