//! `DELETE /users/{id}`: an erasure request. The user's state and pushed list leave the store and
//! their events leave the event archive, so neither answers nor the next model know them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use schemas::{ErrorBody, UserForgotten};

use crate::{ApiError, AppState};

/// Forgets a user: history, seen items and cached recommendations, and their events in the event
/// archive (up to now). Events of theirs read again from the log are skipped; what they do later
/// is a new history.
#[utoipa::path(
    delete,
    path = "/users/{user_id}",
    params(("user_id" = String, Path, description = "The user id as events and requests name it")),
    responses(
        (status = 200, body = UserForgotten, description = "Nothing of the user is kept"),
        (status = 503, body = ErrorBody, description = "The store or the archive is unavailable; retry, it is safe"),
    )
)]
pub async fn forget_user(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<UserForgotten>, ApiError> {
    let state_removed = state
        .retriever
        .get()
        .store()
        .forget_user(&user_id)
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    let archived_events_removed = match &state.archive {
        Some(archive) => {
            let archive = Arc::clone(archive);
            let erased_user = user_id.clone();
            let now = common::clock::now_ms();
            tokio::task::spawn_blocking(move || archive.erase_user(&erased_user, now))
                .await
                .map_err(|error| ApiError::Unavailable(error.to_string()))?
                .map_err(|error| ApiError::Unavailable(format!("event archive: {error}")))?
        }
        None => 0,
    };
    metrics::counter!("recsys_api_users_forgotten_total").increment(1);
    Ok(Json(UserForgotten {
        user_id,
        state_removed,
        archived_events_removed,
    }))
}
