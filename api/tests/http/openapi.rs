//! The OpenAPI document and the vendor endpoint.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::{send, test_api};

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
        ("/items/search", "get"),
        ("/items/get_by_ids", "post"),
        ("/items/search_by_title", "post"),
        ("/readyz", "get"),
        ("/healthz", "get"),
    ] {
        let operation = &document["paths"][path][method];
        assert!(
            operation["responses"]["200"].is_object(),
            "{method} {path} is not documented"
        );
    }
    // Refusals before the handler runs are documented too: a body in another content type
    // (415) and a query string or body that does not parse (400).
    for (path, methods) in document["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let responses = &operation["responses"];
            if operation["requestBody"].is_object() {
                assert!(responses["415"].is_object(), "{method} {path}: no 415");
                assert!(responses["400"].is_object(), "{method} {path}: no 400");
            }
            let has_query = operation["parameters"]
                .as_array()
                .is_some_and(|parameters| parameters.iter().any(|p| p["in"] == "query"));
            if has_query {
                assert!(responses["400"].is_object(), "{method} {path}: no 400");
            }
        }
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
    let found = send(&api.app, "GET", "/items/search?q=synthetic", "", None).await;
    assert_matches_schema(&document, "ItemSearchResponse", &found.body);
    let found = send(
        &api.app,
        "POST",
        "/items/search_by_title",
        r#"{"query": "synthetic"}"#,
        None,
    )
    .await;
    assert_matches_schema(&document, "TitleSearchResponse", &found.body);
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
