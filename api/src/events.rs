//! `POST /events`: one JSON event, or an NDJSON batch, validated as a whole and then handed to the
//! event log (Kafka, or the in-process bus). The answer is 200 only once every event is durable;
//! an invalid event refuses the whole request (nothing is published), naming each bad line.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use common::clock::now_ms;
use schemas::{ErrorBody, EventLimits, EventsAccepted, InteractionEvent};

use crate::writes::{json_records, refusal};
use crate::{ApiError, AppState};

/// Accepts interaction events: `application/json` (one event) or `application/x-ndjson` (one
/// event per line). Every event is checked before any is published.
#[utoipa::path(
    post,
    path = "/events",
    request_body(content = InteractionEvent, description = "One event (application/json), or one per line (application/x-ndjson)"),
    responses(
        (status = 200, body = EventsAccepted, description = "Every event is durable"),
        (status = 413, body = ErrorBody, description = "Too many events or bytes"),
        (status = 422, body = ErrorBody, description = "Invalid events, each named by line; nothing was published"),
        (status = 429, body = ErrorBody, description = "The event log is saturated; retry later"),
        (status = 503, body = ErrorBody, description = "The event log or the store is down; nothing is guaranteed stored"),
    )
)]
pub async fn post_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<EventsAccepted>, ApiError> {
    let events = decode_events(&state, &headers, &body)?;
    let accepted = events.len();
    state
        .events
        .publish(events)
        .await
        .map_err(|error| match error {
            engine::event_log::PublishError::Overloaded(detail) => ApiError::Overloaded(detail),
            engine::event_log::PublishError::Unavailable(detail) => ApiError::Unavailable(detail),
            engine::event_log::PublishError::Internal(detail) => ApiError::Internal(detail),
        })?;
    metrics::counter!("recsys_api_events_accepted_total").increment(accepted as u64);
    Ok(Json(EventsAccepted {
        accepted,
        log: state.events.backend().to_owned(),
    }))
}

fn decode_events(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<InteractionEvent>, ApiError> {
    let limits = EventLimits {
        max_event_bytes: state.events_config.max_event_bytes,
        now_ms: now_ms(),
    };
    let lines = json_records(headers, body, "event")?;
    if lines.is_empty() {
        return Err(ApiError::InvalidEvents(
            "the body holds no event".to_owned(),
        ));
    }
    let max_events = state.events_config.max_events_per_request;
    if lines.len() > max_events {
        return Err(ApiError::TooLarge(format!(
            "{} events in one request, the limit is {max_events}",
            lines.len()
        )));
    }
    let mut events = Vec::with_capacity(lines.len());
    let mut problems = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        match InteractionEvent::decode(line, limits) {
            Ok(event) => events.push(event),
            Err(rejection) => {
                metrics::counter!("recsys_api_events_rejected_total", "reason" => rejection.reason.as_str())
                    .increment(1);
                problems.push(format!("line {}: {rejection}", index + 1));
            }
        }
    }
    if problems.is_empty() {
        return Ok(events);
    }
    Err(ApiError::InvalidEvents(refusal(
        problems,
        lines.len(),
        "events",
        "none published",
    )))
}
