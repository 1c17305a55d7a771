//! `POST /events`: the in-process bus, refusals, the API key, pushed recommendations.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};

use crate::{send, send_request, test_api, test_api_with, Answer};

pub(crate) async fn post_events(
    app: &axum::Router,
    content_type: &str,
    body: &str,
    api_key: Option<&str>,
) -> Answer {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/events")
        .header("content-type", content_type);
    if let Some(api_key) = api_key {
        builder = builder.header("authorization", format!("Bearer {api_key}"));
    }
    send_request(app, builder.body(Body::from(body.to_owned())).unwrap()).await
}

pub(crate) fn event_line(user: &str, item: &str, offset_ms: i64) -> String {
    json!({
        "event_id": format!("{user}-{item}"),
        "user_id": user,
        "item_id": item,
        "event_type": "click",
        "event_time_ms": common::clock::now_ms() + offset_ms,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_are_applied_through_the_in_process_bus() {
    let api = test_api().await;
    let single = post_events(
        &api.app,
        "application/json",
        &event_line("e1", "i1", 0),
        None,
    )
    .await;
    assert_eq!(single.status, StatusCode::OK, "{}", single.text);
    assert_eq!(single.body, json!({"accepted": 1, "log": "embedded"}));
    let batch = [
        event_line("e1", "i2", 1),
        String::new(),
        event_line("e1", "i3", 2),
    ]
    .join("\n");
    let answer = post_events(&api.app, "application/x-ndjson", &batch, None).await;
    assert_eq!(answer.body["accepted"], 2, "{}", answer.text);
    // A 200 means stored: the history already holds the events.
    let state = api.retriever.store().user_state("e1").await.unwrap();
    assert_eq!(state.recent_items, ["i1", "i2", "i3"]);
    // And live popularity counted them.
    let popular = api.retriever.store().top_popular(10).await.unwrap();
    assert!(
        popular
            .iter()
            .any(|(item, score)| item == "i1" && *score > 0.0),
        "{popular:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_again_by_a_retrying_client_are_applied_once() {
    let api = test_api().await;
    let batch = [
        event_line("retry", "i1", 0),
        event_line("retry", "i2", 1),
        event_line("retry", "i1", 2).replace("retry-i1", "retry-i1-again"),
    ]
    .join("\n");
    for _ in 0..2 {
        let answer = post_events(&api.app, "application/x-ndjson", &batch, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    // The retry's first event alone, too, as a client resending one line would.
    let answer = post_events(
        &api.app,
        "application/json",
        &batch[..batch.find('\n').unwrap()],
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let state = api.retriever.store().user_state("retry").await.unwrap();
    assert_eq!(state.recent_items, ["i1", "i2", "i1"]);
    assert_eq!(state.history_version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_refuse_the_whole_request_naming_each_line() {
    let api = test_api_with(|config| config.events.max_events_per_request = 3).await;
    let mut missing_user: Value = serde_json::from_str(&event_line("e2", "i1", 0)).unwrap();
    missing_user.as_object_mut().unwrap().remove("user_id");
    let batch = [
        event_line("e2", "i1", 0),
        missing_user.to_string(),
        "{not json".to_owned(),
    ]
    .join("\n");
    let answer = post_events(&api.app, "application/x-ndjson", &batch, None).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2 of 3 events invalid, none published"),
        "{message}"
    );
    assert!(message.contains("line 2: missing_field"), "{message}");
    assert!(message.contains("line 3: invalid_json"), "{message}");
    let state = api.retriever.store().user_state("e2").await.unwrap();
    assert!(state.recent_items.is_empty(), "nothing may be applied");

    let too_many = vec![event_line("e2", "i1", 0); 4].join("\n");
    let answer = post_events(&api.app, "application/x-ndjson", &too_many, None).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text
    );
    let answer = post_events(&api.app, "text/plain", &event_line("e2", "i1", 0), None).await;
    assert_eq!(
        answer.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        answer.text
    );
    let answer = post_events(&api.app, "application/x-ndjson", "\n\n", None).await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_api_key_protects_event_ingestion() {
    let api = test_api_with(|config| config.events.api_key = Some("s3cret".into())).await;
    let line = event_line("e3", "i1", 0);
    let refused = post_events(&api.app, "application/json", &line, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let wrong = post_events(&api.app, "application/json", &line, Some("guess")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let accepted = post_events(&api.app, "application/json", &line, Some("s3cret")).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text);
    // Reading recommendations needs no key.
    let answer = send(&api.app, "GET", "/recs/popular?count=2", "", None).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_recommendations_are_served_from_the_cache_until_the_user_acts_again() {
    let api = test_api_with(|config| config.consumer.push_recommendations = true).await;
    let batch = [event_line("e4", "i1", 0), event_line("e4", "i2", 1)].join("\n");
    let answer = post_events(&api.app, "application/x-ndjson", &batch, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    let body = json!({"user_ids_raw": ["e4"]}).to_string();
    let cached = send(&api.app, "POST", "/recs/retrieve?count=5", &body, None).await;
    assert_eq!(
        cached.body["metadata"]["source"], "cache",
        "{}",
        cached.text
    );
    assert!(
        cached.body["recommendations"][0]["title"].is_string(),
        "{}",
        cached.text
    );
    // The same list as computing it now.
    let with_session = json!({"user_ids_raw": ["e4"], "item_seq_raw": [["i2"]]}).to_string();
    let computed = send(
        &api.app,
        "POST",
        "/recs/retrieve?count=5",
        &with_session,
        None,
    )
    .await;
    assert_eq!(computed.body["metadata"]["source"], "personalized");
    let ids = |answer: &Answer| -> Vec<String> {
        answer.body["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["item_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&cached), ids(&computed));
    // More than the cache holds: computed.
    let many = send(&api.app, "POST", "/recs/retrieve?count=50", &body, None).await;
    assert_eq!(
        many.body["metadata"]["source"], "personalized",
        "{}",
        many.text
    );
}
