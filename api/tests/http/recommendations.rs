//! Recommendations, fallbacks, bad input, health, history and item lookups.

use axum::http::StatusCode;
use engine::store::{AppliedInteraction, ItemKey, UserUpdate};
use serde_json::json;

use crate::{send, test_api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieve_merges_history_excludes_seen_and_tags_the_request() {
    let api = test_api().await;
    engine::fixtures::remember(api.retriever.store().as_ref(), "u1", &["i1", "i2", "i3"]).await;

    let body = json!({"user_ids_raw": ["u1"], "item_seq_raw": [["i4"]], "candidate_items_raw": []});
    let answer = send(
        &api.app,
        "POST",
        "/recs/retrieve?count=5",
        &body.to_string(),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let recommendations = answer.body["recommendations"].as_array().unwrap();
    assert_eq!(recommendations.len(), 5);
    for recommendation in recommendations {
        let item = recommendation["item_id"].as_str().unwrap();
        assert!(!["i1", "i2", "i3", "i4"].contains(&item), "{item} was seen");
        assert!(recommendation["title"].is_string() && recommendation["score"].is_number());
    }
    // One `item_id` key per recommendation in the raw text (a duplicate key would vanish on parsing).
    assert_eq!(
        answer.text.matches("\"item_id\"").count(),
        5,
        "{}",
        answer.text
    );
    assert_eq!(answer.body["metadata"]["source"], "personalized");
    assert_eq!(answer.body["ctx"], body);
    let rec_id = answer.body["metadata"]["rec_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!rec_id.is_empty());
    assert_eq!(answer.request_id.as_deref(), Some(rec_id.as_str()));
    assert!(answer.body["metadata"].get("timings").is_none());

    // An incoming request id is kept; debug adds timings.
    let answer = send(
        &api.app,
        "POST",
        "/recs/retrieve?count=2&debug=true",
        &body.to_string(),
        Some("trace-me-42"),
    )
    .await;
    assert_eq!(answer.request_id.as_deref(), Some("trace-me-42"));
    assert_eq!(answer.body["metadata"]["rec_id"], "trace-me-42");
    assert!(
        answer.body["metadata"]["timings"]["total_micros"].is_number(),
        "{}",
        answer.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_requests_get_popular_items_with_the_reason() {
    let api = test_api().await;
    let answer = send(&api.app, "POST", "/recs/retrieve?count=3", "{}", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["metadata"]["source"], "popular");
    assert_eq!(answer.body["metadata"]["fallback_reason"], "no_history");
    let ids: Vec<&str> = answer.body["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["item_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i0", "i1", "i2"]);

    let answer = send(&api.app, "GET", "/recs/popular?count=2", "", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["recommendations"].as_array().unwrap().len(), 2);
    assert!(answer.body["recommendations"][0]["title"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_naming_the_field() {
    let api = test_api().await;
    let long_session: Vec<String> = (0..21).map(|n| format!("i{}", n % 40)).collect();
    let cases: Vec<(String, String, StatusCode, &str)> = vec![
        (
            "/recs/retrieve".into(),
            "{\"item_seq_raw\": [[\"i1\"]".into(),
            StatusCode::BAD_REQUEST,
            "EOF",
        ),
        (
            "/recs/retrieve".into(),
            "{\"item_seq_raw\": \"i1\"}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "item_seq_raw",
        ),
        (
            "/recs/retrieve".into(),
            "{\"user_ids_raw\": [1]}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "user_ids_raw",
        ),
        (
            "/recs/retrieve".into(),
            "{\"item_seq\": []}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `item_seq`",
        ),
        (
            "/recs/retrieve?count=0".into(),
            "{}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "count: must be an integer from 1 to 1000, got '0'",
        ),
        (
            "/recs/retrieve?count=1001".into(),
            "{}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "count: must be an integer from 1 to 1000",
        ),
        (
            "/recs/retrieve?count=ten".into(),
            "{}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "got 'ten'",
        ),
        (
            "/recs/retrieve?debug=maybe".into(),
            "{}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "debug: must be true or false",
        ),
        (
            "/recs/retrieve?colour=red".into(),
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            "/recs/retrieve".into(),
            json!({"item_seq_raw": [long_session]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "item_seq_raw[0]: 21 items, at most 20",
        ),
        (
            "/recs/retrieve".into(),
            json!({"item_seq_raw": [["i1", " "]]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "item_seq_raw[0][1]: empty item id",
        ),
        (
            "/recs/retrieve".into(),
            json!({"item_seq_raw": [["x".repeat(5000)]]}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "length limit",
        ),
    ];
    for (uri, body, expected_status, expected_message) in cases {
        let answer = send(&api.app, "POST", &uri, &body, None).await;
        assert_eq!(
            answer.status, expected_status,
            "{uri} {body:.60} -> {}",
            answer.text
        );
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected_message),
            "{uri} -> {}",
            answer.text
        );
        assert!(answer.request_id.is_some(), "errors carry a request id too");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let api = test_api().await;
    let answer = send(&api.app, "GET", "/healthz", "", None).await;
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "ok")
    );
    let answer = send(&api.app, "GET", "/readyz", "", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["dependencies"]["store"], "ok");
    assert_eq!(answer.body["dependencies"]["index"], "ok");
    assert_eq!(answer.body["dependencies"]["model"], "ok");
    send(&api.app, "POST", "/recs/retrieve", "{}", None).await;
    let answer = send(&api.app, "GET", "/metrics", "", None).await;
    assert!(
        answer
            .text
            .contains("recsys_api_request_duration_seconds_bucket"),
        "{}",
        answer.text
    );
    assert!(
        answer.text.contains("route=\"/recs/retrieve\""),
        "{}",
        answer.text
    );
    assert!(
        answer.text.contains("recsys_retrieve_fallbacks_total"),
        "{}",
        answer.text
    );
    // Checked at the scrape, as /readyz answered above.
    assert!(
        answer.text.contains("recsys_api_ready 1"),
        "{}",
        answer.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_item_lookups() {
    let api = test_api().await;
    let interactions = ["i5", "i6", "i5"]
        .iter()
        .enumerate()
        .map(|(time, item)| AppliedInteraction {
            item: ItemKey::new(item),
            event_time_ms: 1000 + time as i64,
            position: None,
            event: None,
            popularity_increment: 0.0,
        })
        .collect();
    api.retriever
        .store()
        .apply(vec![UserUpdate {
            user_id: "u9".into(),
            interactions,
        }])
        .await
        .unwrap();
    let answer = send(&api.app, "GET", "/users/u9/history", "", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["recent_items"], json!(["i5", "i6", "i5"]));
    assert_eq!(answer.body["seen_items"], 2);
    assert_eq!(answer.body["newest_event_time_ms"], 1002);
    let answer = send(&api.app, "GET", "/users/nobody/history", "", None).await;
    assert_eq!(answer.body["recent_items"], json!([]));

    let answer = send(&api.app, "GET", "/items?ids=i3,nope,i1", "", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let ids: Vec<&str> = answer.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["item_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i3", "i1"]);
    assert!(answer.body["items"][0]["title"].is_string());
    assert_eq!(answer.body["unknown_items"], json!(["nope"]));
    let answer = send(&api.app, "GET", "/items", "", None).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer.text.contains("ids: give at least one item id"),
        "{}",
        answer.text
    );
}
