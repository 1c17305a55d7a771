//! Finding items: `GET /items/search?q=` (title search over the served catalogue), `GET /items?ids=`
//! (items by id), and the same two in the shapes the tutorial's web app calls,
//! `POST /items/search_by_title` and `POST /items/get_by_ids`, so a front end written against the
//! tutorial's API works against this one.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::Json;
use engine::catalogue::search::TitleMatch;
use schemas::{
    ErrorBody, ItemSearchResponse, ItemsByIdsRequest, ItemsResponse, TitleSearchRequest,
    TitleSearchResponse,
};
use serde::Deserialize;
use utoipa::openapi::path::{Parameter, ParameterIn, ParameterStyle};
use utoipa::IntoParams;

use schemas::MAX_QUERY_CHARS;

use crate::openapi::{count_parameter, query_parameter};
use crate::routes::MAX_COUNT;
use crate::{ApiError, AppState};

type ItemObject = serde_json::Map<String, serde_json::Value>;

const DEFAULT_SEARCH_LIMIT: usize = 10;

/// The items of `ids` in request order, each the index's payload with the live catalogue over it
/// (the shop's title and attributes, `available`); ids neither knows are listed apart.
pub(crate) async fn described_items(
    state: &AppState,
    ids: &[String],
) -> Result<ItemsResponse, ApiError> {
    let retriever = state.retriever.get();
    let indexed = retriever
        .index()
        .items(ids)
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    let view = retriever.catalogue().view();
    let mut by_id: std::collections::HashMap<String, ItemObject> = indexed
        .into_iter()
        .map(|item| (item.item_id, item.payload))
        .collect();
    let mut items = Vec::with_capacity(ids.len());
    let mut unknown_items = Vec::new();
    for item_id in ids {
        let described = view.item(item_id);
        let mut object = match (by_id.remove(item_id), described) {
            (None, None) => {
                unknown_items.push(item_id.clone());
                continue;
            }
            (payload, _) => payload.unwrap_or_default(),
        };
        object.insert("item_id".into(), item_id.clone().into());
        if let Some(described) = described {
            object.extend(described.attributes.clone());
            if let Some(title) = &described.title {
                object.insert("title".into(), title.clone().into());
            }
        }
        let available = described.is_none_or(|described| described.available);
        object.insert("available".into(), available.into());
        items.push(object);
    }
    Ok(ItemsResponse {
        items,
        unknown_items,
    })
}

fn checked_ids(ids: Vec<String>, field: &str) -> Result<Vec<String>, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::field(field, "give at least one item id"));
    }
    if ids.len() > MAX_COUNT {
        return Err(ApiError::field(
            field,
            format!("{} ids, at most {MAX_COUNT}", ids.len()),
        ));
    }
    if let Some((position, problem)) = ids
        .iter()
        .enumerate()
        .find_map(|(position, id)| Some((position, schemas::id_problem(id)?)))
    {
        return Err(ApiError::field(&format!("{field}[{position}]"), problem));
    }
    Ok(ids)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemsParams {
    ids: Option<String>,
}

impl IntoParams for ItemsParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![query_parameter(
            "ids",
            true,
            "Comma-separated item ids, at most 1000, e.g. `50,181`.",
            schemas::openapi::id_list(),
        )
        .style(Some(ParameterStyle::Form))
        .explode(Some(false))
        .build()]
    }
}

/// Item metadata by ids (`?ids=a,b`), in request order; unknown ids are listed apart.
#[utoipa::path(
    get,
    path = "/items",
    params(ItemsParams),
    responses(
        (status = 200, body = ItemsResponse),
        (status = 422, body = ErrorBody, description = "No ids, more than 1000, or an invalid id"),
        (status = 503, body = ErrorBody, description = "The index is unavailable"),
    )
)]
pub async fn items_by_id(
    State(state): State<AppState>,
    params: Result<Query<ItemsParams>, QueryRejection>,
) -> Result<Json<ItemsResponse>, ApiError> {
    let Query(params) = params?;
    // `a,,b` names an empty id, which is refused like any other bad id.
    let ids = match params.ids.as_deref().map(str::trim) {
        None | Some("") => Vec::new(),
        Some(ids) => ids.split(',').map(|id| id.trim().to_owned()).collect(),
    };
    let ids = checked_ids(ids, "ids")?;
    Ok(Json(described_items(&state, &ids).await?))
}

/// The tutorial web app's form of `GET /items`: `{"item_ids": [...]}`.
#[utoipa::path(
    post,
    path = "/items/get_by_ids",
    request_body = ItemsByIdsRequest,
    responses(
        (status = 200, body = ItemsResponse, description = "The known items in request order"),
        (status = 422, body = ErrorBody, description = "No ids, more than 1000, or an invalid id"),
        (status = 503, body = ErrorBody, description = "The index is unavailable"),
    )
)]
pub async fn items_by_ids_body(
    State(state): State<AppState>,
    request: Result<Json<ItemsByIdsRequest>, JsonRejection>,
) -> Result<Json<ItemsResponse>, ApiError> {
    let Json(request) = request?;
    let ids = checked_ids(request.item_ids, "item_ids")?;
    Ok(Json(described_items(&state, &ids).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    q: Option<String>,
    limit: Option<String>,
}

impl IntoParams for SearchParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            query_parameter(
                "q",
                true,
                "Words of the title, in any order; one typo per word of four letters or more is \
                 forgiven.",
                schemas::openapi::query(),
            )
            .build(),
            count_parameter("limit", "At most this many items (1-1000, default 10)."),
        ]
    }
}

fn checked_query(query: &str, field: &str) -> Result<(), ApiError> {
    // Blank is refused; text without a word (`?!`) is a search that finds nothing.
    if query.trim().is_empty() {
        return Err(ApiError::field(field, "give at least one word of a title"));
    }
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::field(
            field,
            format!("at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    Ok(())
}

fn checked_limit(limit: Option<usize>, field: &str) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_SEARCH_LIMIT),
        Some(limit) if (1..=MAX_COUNT).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::field(
            field,
            format!("{limit} is not between 1 and {MAX_COUNT}"),
        )),
    }
}

/// The matches of `query` with their items, best first.
async fn search(
    state: &AppState,
    query: &str,
    limit: usize,
) -> Result<(Vec<TitleMatch>, Vec<ItemObject>), ApiError> {
    let retriever = state.retriever.get();
    let matches = state
        .title_search
        .search(&retriever, query, limit)
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    let ids: Vec<String> = matches.iter().map(|hit| hit.item_id.clone()).collect();
    let items = if ids.is_empty() {
        Vec::new()
    } else {
        described_items(state, &ids).await?.items
    };
    metrics::counter!("recsys_api_title_searches_total").increment(1);
    Ok((matches, items))
}

/// Items whose titles match the query, best first: every word must match a title word exactly,
/// as its beginning, or (four letters or more) within one typo.
#[utoipa::path(
    get,
    path = "/items/search",
    params(SearchParams),
    responses(
        (status = 200, body = ItemSearchResponse),
        (status = 422, body = ErrorBody, description = "No query words, a query too long, or a bad limit"),
        (status = 503, body = ErrorBody, description = "The index is unavailable"),
    )
)]
pub async fn search_items(
    State(state): State<AppState>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<ItemSearchResponse>, ApiError> {
    let Query(params) = params?;
    let query = params.q.unwrap_or_default();
    checked_query(&query, "q")?;
    let limit = match params.limit.as_deref() {
        None => None,
        Some(text) => Some(
            text.trim()
                .parse::<usize>()
                .map_err(|_| ApiError::field("limit", format!("'{text}' is not a count")))?,
        ),
    };
    let limit = checked_limit(limit, "limit")?;
    let (matches, mut items) = search(&state, &query, limit).await?;
    for (item, hit) in items.iter_mut().zip(&matches) {
        item.insert("score".into(), hit.score.into());
    }
    Ok(Json(ItemSearchResponse { query, items }))
}

/// The tutorial web app's title search: `{"query": ..., "limit": ...}` answered by the items and,
/// in `debug_info`, each match's score.
#[utoipa::path(
    post,
    path = "/items/search_by_title",
    request_body = TitleSearchRequest,
    responses(
        (status = 200, body = TitleSearchResponse),
        (status = 422, body = ErrorBody, description = "No query words, a query too long, or a bad limit"),
        (status = 503, body = ErrorBody, description = "The index is unavailable"),
    )
)]
pub async fn search_by_title(
    State(state): State<AppState>,
    request: Result<Json<TitleSearchRequest>, JsonRejection>,
) -> Result<Json<TitleSearchResponse>, ApiError> {
    let Json(request) = request?;
    checked_query(&request.query, "query")?;
    let limit = checked_limit(request.limit, "limit")?;
    let (matches, items) = search(&state, &request.query, limit).await?;
    let debug_info = matches
        .into_iter()
        .map(|hit| schemas::TitleMatchInfo {
            item_id: hit.item_id,
            title: hit.title,
            score: hit.score,
        })
        .collect();
    Ok(Json(TitleSearchResponse { items, debug_info }))
}
