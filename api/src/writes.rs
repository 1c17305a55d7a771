//! What every write endpoint shares: the API key, and a body of one JSON object or NDJSON lines.

use axum::http::{header, HeaderMap};

use crate::{ApiError, AppState};

/// When `events.api_key` is set, writes need `authorization: Bearer <key>` or `x-api-key: <key>`.
pub fn check_write_key(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<(), ApiError> {
    let Some(expected) = state.events_config.api_key.as_deref() else {
        return Ok(());
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let api_key = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok());
    if bearer == Some(expected) || api_key == Some(expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(format!(
            "{endpoint} needs `authorization: Bearer <key>` or `x-api-key: <key>`"
        )))
    }
}

/// The records of a body: the whole body for `application/json`, each non-blank line for
/// `application/x-ndjson`. `what` names a record in messages ("event", "item").
pub fn json_records<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    what: &str,
) -> Result<Vec<&'a [u8]>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/x-ndjson") {
        Ok(body
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.trim_ascii().is_empty())
            .collect())
    } else if content_type.starts_with("application/json") {
        Ok(vec![body])
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "content-type '{content_type}': expected application/json (one {what}) or application/x-ndjson (one per line)"
        )))
    }
}

/// How many bad records a refusal lists (the count is always given).
const MAX_PROBLEMS_LISTED: usize = 20;

/// The message refusing a whole body: "3 of 10 events invalid, none published: line 2: ...".
pub fn refusal(mut problems: Vec<String>, total: usize, what: &str, outcome: &str) -> String {
    let count = problems.len();
    problems.truncate(MAX_PROBLEMS_LISTED);
    format!(
        "{count} of {total} {what} invalid, {outcome}: {}",
        problems.join("; ")
    )
}
