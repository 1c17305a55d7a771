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
