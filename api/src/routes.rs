//! Route handlers: parse and check the input, call the pipeline, shape the answer.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use engine::retrieve::{RetrieveOutcome, RetrieveRequest, Source};
use schemas::{
    RecommendationMetadata, RecommendationSource, RecommendationsResponse, RecommendedItem,
    RetrieveContext,
};
use serde::Deserialize;
use tower_http::request_id::RequestId;

use crate::{ApiError, AppState};

pub const MAX_COUNT: usize = 1000;
const DEFAULT_COUNT: usize = 10;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/recs/retrieve", post(retrieve))
        .route("/recs/popular", get(popular))
        .route("/users/{user_id}/history", get(user_history))
        .route("/items", get(items))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { state.metrics.render() }),
        )
}

/// Query parameters arrive as text so that a bad value gets a message naming the parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecsParams {
    count: Option<String>,
    debug: Option<String>,
}

fn parse_count(raw: Option<&str>) -> Result<usize, ApiError> {
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

fn rec_id(request_id: &RequestId) -> String {
    request_id
        .header_value()
        .to_str()
        .unwrap_or_default()
        .to_owned()
}

fn check_context(context: &RetrieveContext, max_session_items: usize) -> Result<(), ApiError> {
    for (row, sequence) in context.item_seq_raw.iter().enumerate() {
        if sequence.len() > max_session_items {
            return Err(ApiError::field(
                &format!("item_seq_raw[{row}]"),
                format!(
                    "{} items, at most {max_session_items} are accepted",
                    sequence.len()
                ),
            ));
        }
        if let Some(position) = sequence.iter().position(|item| item.trim().is_empty()) {
            return Err(ApiError::field(
                &format!("item_seq_raw[{row}][{position}]"),
                "empty item id",
            ));
        }
    }
    if context.candidate_items_raw.len() > MAX_COUNT {
        return Err(ApiError::field(
            "candidate_items_raw",
            format!(
                "{} items, at most {MAX_COUNT} are accepted",
                context.candidate_items_raw.len()
            ),
        ));
    }
    Ok(())
}

fn response(
    outcome: RetrieveOutcome,
    ctx: RetrieveContext,
    rec_id: String,
    debug: bool,
) -> RecommendationsResponse {
    let source = match outcome.source {
        Source::Personalized => RecommendationSource::Personalized,
        Source::Popular => RecommendationSource::Popular,
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
            source,
            fallback_reason: outcome
                .fallback_reason
                .map(|reason| reason.as_str().to_owned()),
            unknown_items: outcome.unknown_items,
            timings: debug
                .then(|| serde_json::to_value(&outcome.timings).expect("timings serialise")),
        },
    }
}

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
    check_context(&context, state.limits.max_session_items)?;
    let request = RetrieveRequest {
        user_id: context.user_id().map(str::to_owned),
        session_items: context.session_items().to_vec(),
        candidates: context.candidate_items_raw.clone(),
        count,
    };
    let outcome = state.retriever.retrieve(&request).await;
    Ok(Json(response(outcome, context, rec_id(&request_id), debug)))
}

async fn popular(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    params: Result<Query<RecsParams>, QueryRejection>,
) -> Result<Json<RecommendationsResponse>, ApiError> {
    let Query(params) = params?;
    let count = parse_count(params.count.as_deref())?;
    let recommendations = state.retriever.popular_items(count, &HashSet::new()).await;
    let outcome = RetrieveOutcome {
        recommendations,
        source: Source::Popular,
        fallback_reason: None,
        unknown_items: Vec::new(),
        model_version: None,
        timings: Default::default(),
    };
    Ok(Json(response(
        outcome,
        RetrieveContext::default(),
        rec_id(&request_id),
        false,
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
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let retriever = &state.retriever;
    let (store, index, model) = tokio::join!(
        dependency_state(retriever.store().ping()),
        dependency_state(retriever.index().ping()),
        dependency_state(async { retriever.model().model_version().await.map(drop) }),
    );
    let ready = [&store, &index, &model]
        .iter()
        .all(|state| state.as_str() == "ok");
    let dependencies: HashMap<&str, String> =
        [("store", store), ("index", index), ("model", model)]
            .into_iter()
            .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "ready": ready, "dependencies": dependencies })),
    )
}

/// The user's stored state: recent sequence (oldest first) and how many items count as seen.
async fn user_history(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user_state = state
        .retriever
        .store()
        .user_state(&user_id)
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    Ok(Json(serde_json::json!({
        "user_id": user_id,
        "recent_items": user_state.recent_items,
        "seen_items": user_state.seen_items.len(),
        "newest_event_time_ms": user_state.newest_event_time_ms,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemsParams {
    ids: Option<String>,
}

/// Item metadata by ids (`?ids=a,b`), in request order; unknown ids are listed apart.
async fn items(
    State(state): State<AppState>,
    params: Result<Query<ItemsParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) = params?;
    let ids: Vec<String> = params
        .ids
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return Err(ApiError::field(
            "ids",
            "give at least one item id, e.g. ?ids=50,181",
        ));
    }
    if ids.len() > MAX_COUNT {
        return Err(ApiError::field(
            "ids",
            format!("{} ids, at most {MAX_COUNT}", ids.len()),
        ));
    }
    let found = state
        .retriever
        .index()
        .items(&ids)
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    let known: HashSet<&str> = found.iter().map(|item| item.item_id.as_str()).collect();
    let unknown: Vec<&String> = ids
        .iter()
        .filter(|id| !known.contains(id.as_str()))
        .collect();
    let items: Vec<serde_json::Value> = found
        .iter()
        .map(|item| {
            let mut payload = item.payload.clone();
            payload.insert("item_id".into(), item.item_id.clone().into());
            serde_json::Value::Object(payload)
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "items": items, "unknown_items": unknown }),
    ))
}
