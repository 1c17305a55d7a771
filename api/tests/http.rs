//! The API over HTTP semantics (tower `oneshot` on the real router, real embedded backends).

use std::sync::Arc;

use api::{router, AppState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use engine::config::{ApiConfig, Config};
use engine::store::{AppliedInteraction, ItemKey, UserUpdate};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

struct TestApi {
    app: axum::Router,
    retriever: Arc<engine::retrieve::Retriever>,
    _data_dir: tempfile::TempDir,
}

async fn test_api() -> TestApi {
    test_api_with(|_| {}).await
}

/// The test API with its configuration adjusted by `configure`.
async fn test_api_with(configure: impl FnOnce(&mut Config)) -> TestApi {
    let data_dir = tempfile::tempdir().unwrap();
    let (retriever, _embedder) = engine::fixtures::tiny_retriever(data_dir.path()).await;
    let retriever = Arc::new(retriever);
    let mut config = Config {
        api: ApiConfig {
            max_body_bytes: 4096,
            max_session_items: 20,
            ..ApiConfig::default()
        },
        ..Config::default()
    };
    configure(&mut config);
    let app = router(AppState::new(&config, Arc::clone(&retriever)).unwrap());
    TestApi {
        app,
        retriever,
        _data_dir: data_dir,
    }
}

struct Answer {
    status: StatusCode,
    request_id: Option<String>,
    body: Value,
    text: String,
}

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
    request_id: Option<&str>,
) -> Answer {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(request_id) = request_id {
        builder = builder.header("x-request-id", request_id);
    }
    send_request(app, builder.body(Body::from(body.to_owned())).unwrap()).await
}

/// Sends a built request through the router and reads the whole answer.
async fn send_request(app: &axum::Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let request_id = response
        .headers()
        .get("x-request-id")
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        request_id,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

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

/// Every `$ref` in `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => found.push(reference.clone()),
                    _ => references(inner, found),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|inner| references(inner, found)),
        _ => {}
    }
}

/// Checks `instance` against the document's schema for `component`.
fn assert_matches_schema(document: &Value, component: &str, instance: &Value) {
    let schema = json!({
        "$ref": format!("#/components/schemas/{component}"),
        "components": document["components"],
    });
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|error| panic!("{component} is not a valid JSON Schema: {error}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{component} does not describe {instance}: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_complete_and_describes_real_answers() {
    let api = test_api().await;
    let answer = send(&api.app, "GET", "/openapi.json", "", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let document = answer.body;
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(document["info"]["title"].is_string() && document["info"]["version"].is_string());

    // Every route a client calls is documented, with its methods.
    for (path, method) in [
        ("/recs/retrieve", "post"),
        ("/recs/popular", "get"),
        ("/vendor/seq_retriever", "post"),
        ("/users/{user_id}/history", "get"),
        ("/items", "get"),
        ("/readyz", "get"),
        ("/healthz", "get"),
    ] {
        let operation = &document["paths"][path][method];
        assert!(
            operation["responses"]["200"].is_object(),
            "{method} {path} is not documented"
        );
    }
    let mut found = Vec::new();
    references(&document, &mut found);
    assert!(!found.is_empty());
    for reference in &found {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external reference {reference}"));
        assert!(
            document.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }

    // The schemas describe what the API really sends.
    engine::fixtures::remember(api.retriever.store().as_ref(), "u1", &["i1", "i2"]).await;
    let personalized = send(
        &api.app,
        "POST",
        "/recs/retrieve?debug=true",
        r#"{"user_ids_raw": ["u1"], "item_seq_raw": [["i3", "ghost"]]}"#,
        None,
    )
    .await;
    assert_matches_schema(&document, "RecommendationsResponse", &personalized.body);
    let popular = send(&api.app, "GET", "/recs/popular?count=3", "", None).await;
    assert_matches_schema(&document, "RecommendationsResponse", &popular.body);
    for endpoint in ["get_query_embeddings", "predict"] {
        let body = json!({"ctx": {"item_seq_raw": [["i1"]], "candidate_items_raw": ["i2"]}, "endpoint": endpoint});
        let answer = send(
            &api.app,
            "POST",
            "/vendor/seq_retriever",
            &body.to_string(),
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_matches_schema(&document, "SeqRetrieverResponse", &answer.body);
    }
    let history = send(&api.app, "GET", "/users/u1/history", "", None).await;
    assert_matches_schema(&document, "UserHistoryResponse", &history.body);
    let items = send(&api.app, "GET", "/items?ids=i1,nope", "", None).await;
    assert_matches_schema(&document, "ItemsResponse", &items.body);
    let readiness = send(&api.app, "GET", "/readyz", "", None).await;
    assert_matches_schema(&document, "ReadinessResponse", &readiness.body);
    let bad = send(&api.app, "POST", "/recs/retrieve?count=0", "{}", None).await;
    assert_matches_schema(&document, "ErrorBody", &bad.body);
    // A schema that cannot fail is no check: a wrong answer is rejected.
    let schema =
        json!({"$ref": "#/components/schemas/ErrorBody", "components": document["components"]});
    assert!(!jsonschema::is_valid(
        &schema,
        &json!({"error": {"code": 1}})
    ));

    let docs = send(&api.app, "GET", "/docs", "", None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.contains("openapi.json") && docs.text.contains("<script>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vendor_endpoint_rejects_what_it_cannot_forward() {
    let api = test_api().await;
    for (body, status, mentions) in [
        (
            r#"{"ctx": {}, "endpoint": "train"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown variant `train`",
        ),
        (
            r#"{"ctx": {"item_seq_raw": [["i1"]]}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `endpoint`",
        ),
        (
            r#"{"ctx": {"item_seq_raw": []}, "endpoint": "predict"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "ctx.item_seq_raw: send at least one sequence",
        ),
        (
            r#"{"ctx": {"item_seq_raw": [["ghost"]]}, "endpoint": "predict"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "ctx.item_seq_raw[0]: no item known to the model",
        ),
    ] {
        let answer = send(&api.app, "POST", "/vendor/seq_retriever", body, None).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.text);
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(mentions),
            "{body}: {}",
            answer.text
        );
    }
}

async fn post_events(
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

fn event_line(user: &str, item: &str, offset_ms: i64) -> String {
    json!({
        "event_id": format!("{user}-{item}"),
        "user_id": user,
        "item_id": item,
        "event_type": "click",
        "event_time_ms": engine::popularity::now_ms() + offset_ms,
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
