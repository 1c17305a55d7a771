//! Every way an API request can fail, and the one place that picks the HTTP status for it.
//! 4xx bodies say exactly what was wrong with the input; 5xx bodies say little (the log says all).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemas::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not the JSON we expect (syntax, types, unknown fields, size, content type).
    #[error("{0}")]
    InvalidBody(#[from] JsonRejection),
    #[error("{0}")]
    InvalidQuery(#[from] QueryRejection),
    /// A value parsed but is outside what we accept; the message names the field.
    #[error("{message}")]
    InvalidField { message: String },
    #[error("{0} not found")]
    NotFound(String),
    /// Events that failed validation, each named by line; none was published.
    #[error("{0}")]
    InvalidEvents(String),
    /// No key, or one the API does not know (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A known key without the scope the endpoint needs (403).
    #[error("{0}")]
    Forbidden(String),
    /// The key is over its rate limit (429 with `retry-after`).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too much in flight: retry later (429 with `retry-after`).
    #[error("{0}")]
    Overloaded(String),
    /// A dependency this endpoint cannot answer without is down (recommendations never get this:
    /// they fall back to popular items).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, problem: impl std::fmt::Display) -> ApiError {
        ApiError::InvalidField {
            message: format!("{field}: {problem}"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            ApiError::InvalidBody(rejection) => {
                (rejection.status(), "invalid_body", rejection.body_text())
            }
            ApiError::InvalidQuery(rejection) => (
                StatusCode::BAD_REQUEST,
                "invalid_query",
                rejection.body_text(),
            ),
            ApiError::InvalidField { message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                message.clone(),
            ),
            ApiError::InvalidEvents(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_event",
                message.clone(),
            ),
            ApiError::Unauthorized(message) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", message.clone())
            }
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, "forbidden", message.clone()),
            ApiError::RateLimited {
                message,
                retry_after,
            } => {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(ErrorBody::new("rate_limited", message.clone())),
                )
                    .into_response();
                // Whole seconds, rounded up: a client that waits that long gets through.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(seconds),
                );
                return response;
            }
            ApiError::TooLarge(message) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large", message.clone())
            }
            ApiError::UnsupportedMediaType(message) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message.clone(),
            ),
            ApiError::Overloaded(message) => {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(ErrorBody::new("overloaded", message.clone())),
                )
                    .into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                return response;
            }
            ApiError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            ),
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "dependency unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    detail.clone(),
                )
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".to_owned(),
                )
            }
        };
        (status, Json(ErrorBody::new(code, message))).into_response()
    }
}
