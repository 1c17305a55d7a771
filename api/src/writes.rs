//! What every write endpoint shares: a body of one JSON object or NDJSON lines.

use axum::http::{header, HeaderMap};

use crate::ApiError;

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
