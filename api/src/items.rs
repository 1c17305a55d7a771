//! The live catalogue over HTTP: `POST /items` (upsert, JSON or NDJSON), `DELETE /items/{id}`,
//! `GET /items/{id}` and `GET /items/{id}/similar`.
//!
//! Writes go to the state store, which every replica follows (`engine::catalogue`); this replica
//! refreshes its view before answering, so its own answers reflect a write at once and the
//! others' within `catalogue.refresh_interval_ms`.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use common::clock::now_ms;
use engine::catalogue::CatalogueItem;
use engine::index::IndexedItem;
use engine::retrieve::{RetrieveOutcome, SimilarError, Source};
use schemas::{
    CatalogueItemResponse, ErrorBody, ItemUpsert, ItemsUpserted, RecommendationsResponse,
    RetrieveContext,
};
use serde::Deserialize;
use tower_http::request_id::RequestId;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::IntoParams;

use crate::openapi::{count_parameter, query_parameter};
use crate::routes::{parse_count, rec_id, response};
use crate::writes::{json_records, refusal};
use crate::{ApiError, AppState};

/// Adds or changes items: `application/json` (one item) or `application/x-ndjson` (one per
/// line). Every item is checked before any is stored.
#[utoipa::path(
    post,
    path = "/items",
    request_body(content = ItemUpsert, description = "One item (application/json), or one per line (application/x-ndjson)"),
    responses(
        (status = 200, body = ItemsUpserted, description = "Every item is stored; this replica's answers reflect them"),
        (status = 413, body = ErrorBody, description = "Too many items or bytes"),
        (status = 415, body = ErrorBody, description = "Neither application/json nor application/x-ndjson"),
        (status = 422, body = ErrorBody, description = "Invalid items, each named by line and field; nothing was stored"),
        (status = 503, body = ErrorBody, description = "The store is unavailable; nothing is guaranteed stored"),
    )
)]
pub async fn upsert_items(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ItemsUpserted>, ApiError> {
    let upserts = decode_items(&state, &headers, &body)?;
    let now = now_ms();
    let items: Vec<CatalogueItem> = upserts
        .into_iter()
        .map(|upsert| CatalogueItem {
            item_id: upsert.item_id,
            title: upsert.title,
            attributes: upsert.attributes,
            available: upsert.available,
            updated_at_ms: now,
        })
        .collect();
    store_and_refresh(&state, &items).await?;
    metrics::counter!("recsys_api_items_upserted_total").increment(items.len() as u64);
    Ok(Json(ItemsUpserted {
        upserted: items.len(),
    }))
}

fn decode_items(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<ItemUpsert>, ApiError> {
    let limits = &state.catalogue_config;
    let lines = json_records(headers, body, "item")?;
    if lines.is_empty() {
        return Err(ApiError::field("body", "holds no item"));
    }
    if lines.len() > limits.max_items_per_request {
        return Err(ApiError::TooLarge(format!(
            "{} items in one request, the limit is {}",
            lines.len(),
            limits.max_items_per_request
        )));
    }
    let mut items = Vec::with_capacity(lines.len());
    let mut problems = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let decoded = if line.len() > limits.max_item_bytes {
            Err(format!(
                "{} bytes, the limit is {}",
                line.len(),
                limits.max_item_bytes
            ))
        } else {
            ItemUpsert::decode(line)
        };
        match decoded {
            Ok(item) => items.push(item),
            Err(problem) => problems.push(format!("line {}: {problem}", index + 1)),
        }
    }
    if problems.is_empty() {
        return Ok(items);
    }
    Err(ApiError::InvalidField {
        message: refusal(problems, lines.len(), "items", "none stored"),
    })
}

async fn store_and_refresh(state: &AppState, items: &[CatalogueItem]) -> Result<(), ApiError> {
    let retriever = state.retriever.get();
    retriever
        .store()
        .upsert_items(items)
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    // Stored is what the caller asked for; a failed refresh only delays this replica's view
    // until the background refresher's next tick.
    if let Err(error) = retriever.catalogue().refresh().await {
        tracing::warn!(%error, "catalogue refresh after a write failed");
    }
    Ok(())
}

/// Removes an item from every answer at once (searches, popular lists, pushed
/// recommendations); `POST /items` with `available: true` brings it back.
#[utoipa::path(
    delete,
    path = "/items/{item_id}",
    params(("item_id" = String, Path, description = "The shop's item id")),
    responses(
        (status = 200, body = CatalogueItemResponse, description = "The item, now unavailable"),
        (status = 404, body = ErrorBody, description = "Neither the catalogue nor the index knows the item"),
        (status = 503, body = ErrorBody, description = "The store is unavailable"),
    )
)]
pub async fn remove_item(
    State(state): State<AppState>,
    Path(item_id): Path<String>,
) -> Result<Json<CatalogueItemResponse>, ApiError> {
    let (described, indexed) = look_up(&state, &item_id).await?;
    if described.is_none() && indexed.is_none() {
        return Err(ApiError::NotFound(format!("item '{item_id}'")));
    }
    let removed = CatalogueItem {
        available: false,
        updated_at_ms: now_ms(),
        ..described.unwrap_or_else(|| CatalogueItem {
            item_id: item_id.clone(),
            title: None,
            attributes: Default::default(),
            available: false,
            updated_at_ms: 0,
        })
    };
    store_and_refresh(&state, std::slice::from_ref(&removed)).await?;
    metrics::counter!("recsys_api_items_removed_total").increment(1);
    Ok(Json(item_response(&item_id, Some(removed), indexed)))
}

/// What the shop said about an item, and whether the index holds a vector for it.
#[utoipa::path(
    get,
    path = "/items/{item_id}",
    params(("item_id" = String, Path, description = "The shop's item id")),
    responses(
        (status = 200, body = CatalogueItemResponse),
        (status = 404, body = ErrorBody, description = "Neither the catalogue nor the index knows the item"),
        (status = 503, body = ErrorBody, description = "The store or the index is unavailable"),
    )
)]
pub async fn get_item(
    State(state): State<AppState>,
    Path(item_id): Path<String>,
) -> Result<Json<CatalogueItemResponse>, ApiError> {
    match look_up(&state, &item_id).await? {
        (None, None) => Err(ApiError::NotFound(format!("item '{item_id}'"))),
        (described, indexed) => Ok(Json(item_response(&item_id, described, indexed))),
    }
}

/// The item's catalogue record (from the store, not this replica's view, so a read follows a
/// write anywhere) and the index's entry for it, read together.
async fn look_up(
    state: &AppState,
    item_id: &str,
) -> Result<(Option<CatalogueItem>, Option<IndexedItem>), ApiError> {
    let retriever = state.retriever.get();
    let ids = [item_id.to_owned()];
    let (described, indexed) = tokio::join!(
        retriever.store().catalogue_items(&ids),
        retriever.index().items(&ids)
    );
    let unavailable = |error: &dyn std::fmt::Display| ApiError::Unavailable(error.to_string());
    let described = described.map_err(|error| unavailable(&error))?;
    let indexed = indexed.map_err(|error| unavailable(&error))?;
    Ok((described.into_iter().next(), indexed.into_iter().next()))
}

/// What answers say about the item: the catalogue's record over the index's payload (the data
/// set's title and attributes), as recommendations describe it.
fn item_response(
    item_id: &str,
    described: Option<CatalogueItem>,
    indexed: Option<IndexedItem>,
) -> CatalogueItemResponse {
    let in_index = indexed.is_some();
    let mut attributes = indexed.map(|indexed| indexed.payload).unwrap_or_default();
    attributes.remove("item_id");
    let indexed_title = attributes
        .remove("title")
        .and_then(|title| title.as_str().map(str::to_owned));
    match described {
        Some(item) => {
            attributes.extend(item.attributes);
            CatalogueItemResponse {
                item_id: item.item_id,
                title: item.title.or(indexed_title),
                attributes,
                available: item.available,
                updated_at_ms: Some(item.updated_at_ms),
                in_index,
            }
        }
        None => CatalogueItemResponse {
            item_id: item_id.to_owned(),
            title: indexed_title,
            attributes,
            available: true,
            updated_at_ms: None,
            in_index,
        },
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilarParams {
    count: Option<String>,
    user_id: Option<String>,
}

impl IntoParams for SimilarParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            count_parameter("count", "How many items to return, 1 to 1000 (default 10)."),
            query_parameter(
                "user_id",
                false,
                "Leave out what this user has already seen.",
                schemas::openapi::id(),
            )
            .build(),
        ]
    }
}

/// Items most like this one (nearest item vectors), never the item itself, removed items or,
/// with `user_id`, what the user has seen.
#[utoipa::path(
    get,
    path = "/items/{item_id}/similar",
    params(("item_id" = String, Path, description = "The shop's item id"), SimilarParams),
    responses(
        (status = 200, body = RecommendationsResponse),
        (status = 404, body = ErrorBody, description = "The index holds no vector for the item"),
        (status = 422, body = ErrorBody, description = "A parameter is invalid; the message names it"),
        (status = 503, body = ErrorBody, description = "The index is unavailable"),
    )
)]
pub async fn similar_items(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(item_id): Path<String>,
    params: Result<Query<SimilarParams>, QueryRejection>,
) -> Result<Json<RecommendationsResponse>, ApiError> {
    let Query(params) = params?;
    let count = parse_count(params.count.as_deref())?;
    if let Some(user_id) = &params.user_id {
        if let Some(problem) = schemas::id_problem(user_id) {
            return Err(ApiError::field("user_id", problem));
        }
    }
    let started = std::time::Instant::now();
    let retriever = state.retriever.get();
    let recommendations = retriever
        .similar_items(&item_id, count, params.user_id.as_deref())
        .await
        .map_err(|error| match error {
            SimilarError::UnknownItem(_) => ApiError::NotFound(error.to_string()),
            SimilarError::Index(error) => ApiError::Unavailable(error.to_string()),
        })?;
    let outcome = RetrieveOutcome {
        recommendations,
        source: Source::Similar,
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
        false,
        retriever.index_bundle(),
    )))
}
