//! `DELETE /users/{id}`: an erasure request empties the user's state, pushed list and archived
//! events, and leaves other users alone.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;

use crate::{send, test_api_with};

fn events(user: &str, items: &[&str]) -> String {
    let now = common::clock::now_ms();
    items
        .iter()
        .enumerate()
        .map(|(step, item)| {
            json!({
                "event_id": format!("{user}-{item}"),
                "user_id": user,
                "item_id": item,
                "event_type": "click",
                "event_time_ms": now - 1_000 + step as i64,
            })
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_user_leaves_the_store_and_the_archive() {
    let archive_dir = tempfile::tempdir().unwrap();
    let dir = archive_dir.path().to_owned();
    let api = test_api_with(|config| {
        config.archive.dir = Some(dir);
        config.archive.flush_interval_ms = 20;
        config.events.api_key = Some("s3cret".into());
    })
    .await;
    let post = |body: String| {
        let request = axum::http::Request::builder()
            .method("POST")
            .uri("/events")
            .header("content-type", "application/x-ndjson")
            .header("x-api-key", "s3cret")
            .body(axum::body::Body::from(body))
            .unwrap();
        crate::send_request(&api.app, request)
    };
    assert_eq!(
        post(events("leaver", &["i1", "i2"])).await.status,
        StatusCode::OK
    );
    assert_eq!(post(events("stayer", &["i3"])).await.status, StatusCode::OK);
    let archive = archive::EventArchive::new(archive_dir.path(), "test");
    let deadline = Instant::now() + Duration::from_secs(10);
    while archive.read(None, None).unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the events were never archived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let refused = send(&api.app, "DELETE", "/users/leaver", "", None).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "an erasure is a write"
    );
    let forget = || {
        let request = axum::http::Request::builder()
            .method("DELETE")
            .uri("/users/leaver")
            .header("authorization", "Bearer s3cret")
            .body(axum::body::Body::empty())
            .unwrap();
        crate::send_request(&api.app, request)
    };
    let forgotten = forget().await;
    assert_eq!(forgotten.status, StatusCode::OK, "{}", forgotten.text);
    assert_eq!(
        forgotten.body,
        json!({"user_id": "leaver", "state_removed": true, "archived_events_removed": 2})
    );
    let history = send(&api.app, "GET", "/users/leaver/history", "", None).await;
    assert_eq!(history.body["recent_items"], json!([]), "{}", history.text);
    let kept = send(&api.app, "GET", "/users/stayer/history", "", None).await;
    assert_eq!(kept.body["recent_items"], json!(["i3"]));
    let archived: Vec<String> = archive
        .read(None, None)
        .unwrap()
        .into_iter()
        .map(|event| event.user_id)
        .collect();
    assert_eq!(archived, ["stayer"]);

    let again = forget().await;
    assert_eq!(
        again.body,
        json!({"user_id": "leaver", "state_removed": false, "archived_events_removed": 0})
    );
}
