//! The live catalogue over HTTP: upserts, removals reaching every kind of answer, similar items,
//! and bad input refused by field with nothing stored.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};

use crate::{send, send_request, test_api, test_api_with, Answer};

async fn post_items(app: &axum::Router, content_type: &str, body: &str) -> Answer {
    let request = Request::builder()
        .method("POST")
        .uri("/items")
        .header("content-type", content_type)
        .body(Body::from(body.to_owned()))
        .unwrap();
    send_request(app, request).await
}

fn ids(answer: &Answer) -> Vec<String> {
    answer.body["recommendations"]
        .as_array()
        .unwrap_or_else(|| panic!("no recommendations: {}", answer.text))
        .iter()
        .map(|item| item["item_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_changed_items_are_served_at_once() {
    let api = test_api().await;
    let new_item =
        json!({"item_id": "sku-new", "title": "A new mug", "attributes": {"price": 9.5}});
    let stored = post_items(&api.app, "application/json", &new_item.to_string()).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text);
    assert_eq!(stored.body, json!({"upserted": 1}));
    let item = send(&api.app, "GET", "/items/sku-new", "", None).await;
    assert_eq!(item.status, StatusCode::OK, "{}", item.text);
    assert_eq!(item.body["title"], "A new mug");
    assert_eq!(item.body["attributes"]["price"], 9.5);
    assert_eq!(item.body["available"], true);
    assert_eq!(item.body["in_index"], false);

    // A title changed by the shop replaces the index's copy in every answer.
    let renamed = json!({"item_id": "i0", "title": "Renamed", "attributes": {"colour": "red"}});
    let stored = post_items(&api.app, "application/json", &renamed.to_string()).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text);
    let popular = send(&api.app, "GET", "/recs/popular?count=3", "", None).await;
    let first = &popular.body["recommendations"][0];
    assert_eq!(first["item_id"], "i0", "{}", popular.text);
    assert_eq!(first["title"], "Renamed");
    assert_eq!(first["colour"], "red");
    let indexed = send(&api.app, "GET", "/items/i1", "", None).await;
    assert_eq!(indexed.body["in_index"], true, "{}", indexed.text);
    assert!(indexed.body["title"].is_string(), "{}", indexed.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_item_leaves_every_answer_and_can_come_back() {
    let api = test_api().await;
    let retrieve = |session: &'static str| {
        let body = json!({"item_seq_raw": [[session]]}).to_string();
        let app = api.app.clone();
        async move { send(&app, "POST", "/recs/retrieve?count=39", &body, None).await }
    };
    let before = retrieve("i5").await;
    assert!(ids(&before).contains(&"i0".to_owned()), "{}", before.text);

    let removed = send(&api.app, "DELETE", "/items/i0", "", None).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text);
    assert_eq!(removed.body["available"], false);

    // 40 items, one in the session, one removed: the other 38 and never i0.
    let after = retrieve("i5").await;
    assert_eq!(after.body["metadata"]["source"], "personalized");
    assert_eq!(ids(&after).len(), 38, "{}", after.text);
    assert!(!ids(&after).contains(&"i0".to_owned()));
    let popular = send(&api.app, "GET", "/recs/popular?count=5", "", None).await;
    assert!(
        !ids(&popular).contains(&"i0".to_owned()),
        "{}",
        popular.text
    );
    let similar = send(&api.app, "GET", "/items/i1/similar?count=39", "", None).await;
    assert!(
        !ids(&similar).contains(&"i0".to_owned()),
        "{}",
        similar.text
    );
    let candidates = json!({"item_seq_raw": [["i5"]], "candidate_items_raw": ["i0", "i2"]});
    let ranked = send(
        &api.app,
        "POST",
        "/recs/retrieve?count=5",
        &candidates.to_string(),
        None,
    )
    .await;
    assert_eq!(ids(&ranked), ["i2"], "{}", ranked.text);

    let back = json!({"item_id": "i0", "available": true});
    post_items(&api.app, "application/json", &back.to_string()).await;
    let popular = send(&api.app, "GET", "/recs/popular?count=5", "", None).await;
    assert_eq!(ids(&popular)[0], "i0", "{}", popular.text);

    let unknown = send(&api.app, "DELETE", "/items/never-heard-of", "", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_items_exclude_the_item_and_what_the_user_has_seen() {
    let api = test_api().await;
    engine::fixtures::remember(api.retriever.store().as_ref(), "u-similar", &["i2", "i3"]).await;
    let answer = send(&api.app, "GET", "/items/i1/similar?count=5", "", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["metadata"]["source"], "similar");
    let plain = ids(&answer);
    assert_eq!(plain.len(), 5);
    assert!(!plain.contains(&"i1".to_owned()));
    let for_user = send(
        &api.app,
        "GET",
        "/items/i1/similar?count=38&user_id=u-similar",
        "",
        None,
    )
    .await;
    let for_user = ids(&for_user);
    assert_eq!(for_user.len(), 37, "40 items less i1, i2, i3");
    assert!(!for_user
        .iter()
        .any(|id| ["i1", "i2", "i3"].contains(&id.as_str())));

    let unknown = send(&api.app, "GET", "/items/nope/similar", "", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let bad_count = send(&api.app, "GET", "/items/i1/similar?count=0", "", None).await;
    assert_eq!(bad_count.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_count.text.contains("count"), "{}", bad_count.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_items_are_refused_by_field_and_nothing_is_stored() {
    let api = test_api_with(|config| {
        config.catalogue.max_items_per_request = 3;
        config.catalogue.max_item_bytes = 200;
    })
    .await;
    let refused = |answer: &Answer, status: StatusCode, needle: &str| {
        assert_eq!(answer.status, status, "{}", answer.text);
        assert!(answer.text.contains(needle), "{needle}: {}", answer.text);
    };
    let batch = [
        json!({"item_id": "good-1", "title": "Fine"}).to_string(),
        json!({"item_id": "bad", "colour": "red"}).to_string(),
        json!({"item_id": "", "title": "No id"}).to_string(),
    ]
    .join("\n");
    let answer = post_items(&api.app, "application/x-ndjson", &batch).await;
    refused(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "line 2: unknown field `colour`",
    );
    refused(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "line 3: item_id is empty",
    );
    let missing = send(&api.app, "GET", "/items/good-1", "", None).await;
    assert_eq!(
        missing.status,
        StatusCode::NOT_FOUND,
        "nothing of a refused batch is stored"
    );

    let long = json!({"item_id": "long", "title": "x".repeat(300)}).to_string();
    let answer = post_items(&api.app, "application/json", &long).await;
    refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "line 1: 3");
    let four = vec![json!({"item_id": "a"}).to_string(); 4].join("\n");
    let answer = post_items(&api.app, "application/x-ndjson", &four).await;
    refused(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "4 items in one request",
    );
    let answer = post_items(&api.app, "text/plain", "{}").await;
    refused(&answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type");
    let answer = post_items(&api.app, "application/json", "").await;
    refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "");
    let answer = post_items(&api.app, "application/json", "[1, 2]").await;
    refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_api_key_protects_catalogue_writes() {
    let api = test_api_with(|config| config.events.api_key = Some("s3cret".into())).await;
    let item = json!({"item_id": "k"}).to_string();
    let refused = post_items(&api.app, "application/json", &item).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let refused = send(&api.app, "DELETE", "/items/i1", "", None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let request = Request::builder()
        .method("POST")
        .uri("/items")
        .header("content-type", "application/json")
        .header("x-api-key", "s3cret")
        .body(Body::from(item))
        .unwrap();
    assert_eq!(send_request(&api.app, request).await.status, StatusCode::OK);
    // Reads need no key.
    let read: Value = send(&api.app, "GET", "/items/k", "", None).await.body;
    assert_eq!(read["item_id"], "k");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_recommendations_leave_out_an_item_removed_after_the_push() {
    let api = test_api_with(|config| config.consumer.push_recommendations = true).await;
    let events = [
        crate::events::event_line("pushed", "i1", 0),
        crate::events::event_line("pushed", "i2", 1),
    ]
    .join("\n");
    let posted = crate::events::post_events(&api.app, "application/x-ndjson", &events, None).await;
    assert_eq!(posted.status, StatusCode::OK, "{}", posted.text);
    let body = json!({"user_ids_raw": ["pushed"]}).to_string();
    let cached = send(&api.app, "POST", "/recs/retrieve?count=5", &body, None).await;
    assert_eq!(
        cached.body["metadata"]["source"], "cache",
        "{}",
        cached.text
    );
    let first = ids(&cached)[0].clone();

    let removed = send(&api.app, "DELETE", &format!("/items/{first}"), "", None).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text);
    let after = send(&api.app, "POST", "/recs/retrieve?count=5", &body, None).await;
    assert_eq!(after.body["metadata"]["source"], "cache", "{}", after.text);
    assert!(!ids(&after).contains(&first), "{}", after.text);
    assert_eq!(
        ids(&after)[..4],
        ids(&cached)[1..],
        "the rest of the pushed list, in order"
    );
}

/// The cold-start rule: an item added after training reaches popular lists once it collects
/// interactions, and the last place of personalized lists for users who have not seen it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_newer_than_the_model_is_blended_in_once_it_is_popular() {
    let api = test_api().await;
    let new_item = json!({"item_id": "sku-fresh", "title": "Just in"});
    post_items(&api.app, "application/json", &new_item.to_string()).await;
    let body = json!({"item_seq_raw": [["i5", "i6"]]}).to_string();
    let before = send(&api.app, "POST", "/recs/retrieve?count=5", &body, None).await;
    assert!(
        !ids(&before).contains(&"sku-fresh".to_owned()),
        "no interactions yet"
    );

    let events = [
        crate::events::event_line("fan-1", "sku-fresh", 0),
        crate::events::event_line("fan-2", "sku-fresh", 1),
    ]
    .join("\n");
    let posted = crate::events::post_events(&api.app, "application/x-ndjson", &events, None).await;
    assert_eq!(posted.status, StatusCode::OK, "{}", posted.text);
    // What the popular list's background refresher does every `popularity.refresh_interval_ms`.
    let retriever = &api.retriever;
    retriever
        .popular()
        .refresh(retriever.store().as_ref(), 1000)
        .await
        .unwrap();

    let popular = send(&api.app, "GET", "/recs/popular?count=3", "", None).await;
    assert!(
        ids(&popular).contains(&"sku-fresh".to_owned()),
        "{}",
        popular.text
    );
    let after = send(&api.app, "POST", "/recs/retrieve?count=5", &body, None).await;
    assert_eq!(
        after.body["metadata"]["source"], "personalized",
        "{}",
        after.text
    );
    assert_eq!(ids(&after).len(), 5);
    assert_eq!(ids(&after)[4], "sku-fresh", "{}", after.text);
    let blended = &after.body["recommendations"][4];
    assert_eq!(blended["fresh"], true);
    assert_eq!(blended["title"], "Just in");
    assert_eq!(
        ids(&after)[..4],
        ids(&before)[..4],
        "the model's own ranking is kept"
    );

    // Not for a user who has it already.
    let seen = json!({"item_seq_raw": [["i5", "sku-fresh"]]}).to_string();
    let answer = send(&api.app, "POST", "/recs/retrieve?count=5", &seen, None).await;
    assert!(
        !ids(&answer).contains(&"sku-fresh".to_owned()),
        "{}",
        answer.text
    );
}
