//! What a web front end calls: title search (ours and the tutorial's shape), items by ids in the
//! tutorial's shape, `debug_info`, `/vendor/seq_retriever` as the tutorial answered it, CORS, and
//! the demo page's files with their content-security policy.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};

use crate::{send, send_request, test_api, test_api_with};

fn ids(items: &Value) -> Vec<&str> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["item_id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titles_are_found_by_words_prefixes_and_one_typo_including_the_shops_own() {
    let api = test_api().await;
    let shop =
        json!({"item_id": "mug-1", "title": "Godfather Coffee Mug", "attributes": {"price": 9}});
    let stored = send(&api.app, "POST", "/items", &shop.to_string(), None).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text);

    let found = send(
        &api.app,
        "GET",
        "/items/search?q=synthetic+item+12",
        "",
        None,
    )
    .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    assert_eq!(found.body["query"], "synthetic item 12");
    assert_eq!(ids(&found.body["items"])[0], "i12", "{}", found.text);
    assert_eq!(found.body["items"][0]["score"], 1.0);
    assert_eq!(found.body["items"][0]["title"], "Synthetic item 12");

    let typo = send(
        &api.app,
        "GET",
        "/items/search?q=godfater&limit=3",
        "",
        None,
    )
    .await;
    assert_eq!(ids(&typo.body["items"]), ["mug-1"], "{}", typo.text);
    assert_eq!(typo.body["items"][0]["price"], 9, "the shop's attributes");

    let tutorial = send(
        &api.app,
        "POST",
        "/items/search_by_title",
        r#"{"query": "coffee mu", "limit": 5}"#,
        None,
    )
    .await;
    assert_eq!(tutorial.status, StatusCode::OK, "{}", tutorial.text);
    assert_eq!(ids(&tutorial.body["items"]), ["mug-1"]);
    assert_eq!(tutorial.body["debug_info"][0]["item_id"], "mug-1");
    assert!(tutorial.body["debug_info"][0]["score"].as_f64().unwrap() < 1.0);

    for (method, uri, body, field) in [
        ("GET", "/items/search", "", "q"),
        ("GET", "/items/search?q=+++", "", "q"),
        ("GET", "/items/search?q=item&limit=0", "", "limit"),
        ("GET", "/items/search?q=item&limit=x", "", "limit"),
        (
            "POST",
            "/items/search_by_title",
            r#"{"query": ""}"#,
            "query",
        ),
        (
            "POST",
            "/items/search_by_title",
            r#"{"query": "a", "limit": 5000}"#,
            "limit",
        ),
        (
            "POST",
            "/items/search_by_title",
            r#"{"query": "a", "limit": 2.5}"#,
            "limit",
        ),
    ] {
        let refused = send(&api.app, method, uri, body, None).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{uri}: {}",
            refused.text
        );
        assert!(refused.text.contains(field), "{uri}: {}", refused.text);
    }

    // Text without a word is a search that finds nothing, not a mistake; a whole number sent
    // as a float is the number.
    let wordless = send(&api.app, "GET", "/items/search?q=%21%3F", "", None).await;
    assert_eq!(wordless.status, StatusCode::OK, "{}", wordless.text);
    assert_eq!(wordless.body["items"], json!([]));
    let float_limit = send(
        &api.app,
        "POST",
        "/items/search_by_title",
        r#"{"query": "coffee mug", "limit": 1.0}"#,
        None,
    )
    .await;
    assert_eq!(float_limit.status, StatusCode::OK, "{}", float_limit.text);
    assert_eq!(ids(&float_limit.body["items"]), ["mug-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_by_ids_answer_in_request_order_in_both_shapes() {
    let api = test_api().await;
    let by_body = send(
        &api.app,
        "POST",
        "/items/get_by_ids",
        r#"{"item_ids": ["i7", "nope", "i2"]}"#,
        None,
    )
    .await;
    assert_eq!(by_body.status, StatusCode::OK, "{}", by_body.text);
    assert_eq!(ids(&by_body.body["items"]), ["i7", "i2"]);
    assert_eq!(by_body.body["items"][0]["title"], "Synthetic item 7");
    assert_eq!(by_body.body["unknown_items"], json!(["nope"]));
    let by_query = send(&api.app, "GET", "/items?ids=i7,nope,i2", "", None).await;
    assert_eq!(by_query.body, by_body.body);
    let empty = send(
        &api.app,
        "POST",
        "/items/get_by_ids",
        r#"{"item_ids": []}"#,
        None,
    )
    .await;
    assert_eq!(
        empty.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        empty.text
    );
    assert!(empty.text.contains("item_ids"), "{}", empty.text);
    let gap = send(&api.app, "GET", "/items?ids=i7,,i2", "", None).await;
    assert_eq!(gap.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", gap.text);
    assert!(gap.text.contains("ids[1]: is empty"), "{}", gap.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_answers_carry_the_merged_sequence_and_the_vendor_route_answers_under_result() {
    let api = test_api().await;
    let body = r#"{"item_seq_raw": [["i1", "i2", "i3"]]}"#;
    let debugged = send(
        &api.app,
        "POST",
        "/recs/retrieve?count=3&debug=true",
        body,
        None,
    )
    .await;
    assert_eq!(debugged.status, StatusCode::OK, "{}", debugged.text);
    assert_eq!(
        debugged.body["debug_info"]["merged_sequence"],
        json!(["i1", "i2", "i3"])
    );
    assert!(debugged.body["debug_info"]["timings"]["embed_micros"].is_number());
    assert!(debugged.body["metadata"]["timings"]["total_micros"].is_number());
    let plain = send(&api.app, "POST", "/recs/retrieve?count=3", body, None).await;
    assert!(plain.body.get("debug_info").is_none(), "{}", plain.text);
    let refused = send(&api.app, "GET", "/recs/popular?debug=AAA", "", None).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );

    let vendor = send(
        &api.app,
        "POST",
        "/vendor/seq_retriever",
        r#"{"ctx": {"item_seq_raw": [["i1", "i2"]]}, "endpoint": "get_query_embeddings", "debug": true}"#,
        Some("vendor-1"),
    )
    .await;
    assert_eq!(vendor.status, StatusCode::OK, "{}", vendor.text);
    assert_eq!(vendor.body["rec_id"], "vendor-1");
    assert_eq!(
        vendor.body["result"]["query_embedding"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(vendor.body["debug_info"]["model_backend"], "embedded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default_and_allows_exactly_the_configured_origins() {
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/recs/retrieve")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(Body::empty())
            .unwrap()
    };
    let allowed_origin =
        |answer: &crate::Answer| answer.headers.get("access-control-allow-origin").cloned();

    let closed = test_api().await;
    let answer = send_request(&closed.app, preflight("https://shop.example")).await;
    assert_eq!(allowed_origin(&answer), None);

    let listed = test_api_with(|config| {
        config.api.cors_allowed_origins = vec!["https://shop.example".into()];
    })
    .await;
    let answer = send_request(&listed.app, preflight("https://shop.example")).await;
    assert_eq!(
        allowed_origin(&answer).as_deref(),
        Some("https://shop.example")
    );
    let answer = send_request(&listed.app, preflight("https://other.example")).await;
    assert_eq!(allowed_origin(&answer), None);

    let open = test_api_with(|config| config.api.cors_allowed_origins = vec!["*".into()]).await;
    let answer = send_request(&open.app, preflight("https://any.example")).await;
    assert_eq!(allowed_origin(&answer).as_deref(), Some("*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_is_served_with_a_content_security_policy() {
    let api = test_api().await;
    for (path, content_type) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let answer = send(&api.app, "GET", path, "", None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        let header = |name: &str| answer.headers.get(name).cloned().unwrap_or_default();
        assert!(header("content-type").starts_with(content_type), "{path}");
        let policy = header("content-security-policy");
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
    }
    let page = send(&api.app, "GET", "/", "", None).await;
    assert!(page
        .text
        .contains(r#"<script src="/app.js" defer></script>"#));
    assert!(!page.text.contains("<script>"), "no inline script");
}
