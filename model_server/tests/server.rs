//! The HTTP model server: tutorial-compatible endpoints and the errors of bad input.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use model_server::model::EncoderKind;
use model_server::{Embedder, EmbedderConfig, ModelBundle};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, Value, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

fn app() -> (tempfile::TempDir, axum::Router, Embedder) {
    let (data_dir, outcome) = common::trained_data_dir(EncoderKind::Sasrec);
    let embedder = Embedder::start(
        ModelBundle::load(&outcome.bundle_dir).unwrap(),
        EmbedderConfig::default(),
    );
    let router = model_server::server::router(
        model_server::served::ServedModels::new(embedder.clone()),
        ::common::telemetry::prometheus_handle(),
    );
    (data_dir, router, embedder)
}

#[tokio::test]
async fn get_query_embeddings_answers_like_the_tutorial_service() {
    let (_data_dir, app, embedder) = app();
    let body = json!({"ctx": {"user_ids_raw": ["u1"], "item_seq_raw": [["i1", "i2"], ["i3", "ghost"]], "candidate_items_raw": []}});
    let (status, response, text) =
        call(&app, "POST", "/get_query_embeddings", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let vectors = response["query_embedding"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    assert_eq!(vectors[0].as_array().unwrap().len(), 16);
    assert_eq!(response["metadata"]["model_name"], "sasrec");
    assert_eq!(
        response["metadata"]["model_version"],
        embedder.model_version()
    );
    assert_eq!(response["ctx"], body["ctx"]);
    assert_eq!(response["unknown_items"], json!(["ghost"]));
    let direct = embedder
        .embed(&["i1".to_owned(), "i2".to_owned()])
        .await
        .unwrap()
        .vector;
    let served: Vec<f32> = serde_json::from_value(vectors[0].clone()).unwrap();
    // Served in a batch padded for the longer row: equal up to float rounding.
    for (served, direct) in served.iter().zip(&direct) {
        assert!((served - direct).abs() < 1e-5, "{served} vs {direct}");
    }
}

#[tokio::test]
async fn predict_scores_candidates_in_request_order() {
    let (_data_dir, app, embedder) = app();
    let body = json!({"ctx": {"item_seq_raw": [["i1", "i2"]], "candidate_items_raw": ["i5", "nope", "i7"]}});
    let (status, response, text) = call(&app, "POST", "/predict", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let scores = response["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 3);
    assert!(scores[0].is_f64() && scores[1].is_null() && scores[2].is_f64());
    assert_eq!(response["unknown_items"], json!(["nope"]));
    let query = embedder
        .embed(&["i1".to_owned(), "i2".to_owned()])
        .await
        .unwrap()
        .vector;
    let expected = embedder.score_candidates(&query, &["i5".to_owned()])[0].unwrap();
    assert!((scores[0].as_f64().unwrap() as f32 - expected).abs() < 1e-5);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_that_says_what_is_wrong() {
    let (_data_dir, app, _embedder) = app();
    let cases = [
        ("{\"ctx\": ", StatusCode::BAD_REQUEST, "EOF"),
        (
            "{\"ctx\": {\"item_seq_raw\": \"i1\"}}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "item_seq_raw",
        ),
        (
            "{\"ctx\": {\"item_seq_raw\": [[\"i1\"]], \"colour\": 1}}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `colour`",
        ),
        (
            "{\"context\": {}}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `context`",
        ),
        (
            "{\"ctx\": {\"item_seq_raw\": [[\"ghost\"]]}}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "item_seq_raw[0]: no item known to the model",
        ),
        (
            "{\"ctx\": {\"item_seq_raw\": []}}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "item_seq_raw is empty",
        ),
    ];
    for (body, expected_status, expected_message) in cases {
        let (status, response, text) = call(&app, "POST", "/get_query_embeddings", body).await;
        assert_eq!(status, expected_status, "{body} -> {text}");
        let message = response["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected_message), "{body} -> {text}");
        assert!(response["error"]["code"].is_string(), "{text}");
    }
    let (status, _, _) = call(&app, "POST", "/predict", "[]").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn health_and_metrics() {
    let (_data_dir, app, _embedder) = app();
    let (status, _, text) = call(&app, "GET", "/healthz", "").await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "ok"));
    let (status, metadata, _) = call(&app, "GET", "/metadata", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(metadata["model_name"], "sasrec");
    let body = json!({"ctx": {"item_seq_raw": [["i1"]]}});
    call(&app, "POST", "/get_query_embeddings", &body.to_string()).await;
    let (status, _, text) = call(&app, "GET", "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    for metric in [
        "recsys_embedder_batch_size_bucket",
        "recsys_embedder_batch_duration_seconds_bucket",
        "recsys_embedder_sequences_total",
    ] {
        assert!(text.contains(metric), "missing {metric} in:\n{text}");
    }
}

#[tokio::test]
async fn a_swapped_server_answers_the_version_a_request_names() {
    let (_first_dir, first) = common::trained_data_dir(EncoderKind::Sasrec);
    let (_second_dir, second) = common::trained_data_dir(EncoderKind::Gru);
    let start = |bundle_dir: &std::path::Path| {
        Embedder::start(
            ModelBundle::load(bundle_dir).unwrap(),
            EmbedderConfig::default(),
        )
    };
    let (first, second) = (start(&first.bundle_dir), start(&second.bundle_dir));
    let models = model_server::served::ServedModels::new(first.clone());
    let app = model_server::server::router(
        std::sync::Arc::clone(&models),
        ::common::telemetry::prometheus_handle(),
    );
    models.swap(second.clone());

    let asking = |version: Option<&str>| {
        json!({"ctx": {"item_seq_raw": [["i1", "i2"]], "candidate_items_raw": ["i5"]}, "model_version": version})
            .to_string()
    };
    for endpoint in ["/get_query_embeddings", "/predict"] {
        let (status, response, text) = call(&app, "POST", endpoint, &asking(None)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(
            response["metadata"]["model_version"],
            second.model_version(),
            "the current bundle answers a request that names none"
        );
        let (status, response, text) =
            call(&app, "POST", endpoint, &asking(Some(first.model_version()))).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(
            response["metadata"]["model_version"],
            first.model_version(),
            "the replaced bundle still answers a request that names it"
        );
        let (status, response, text) = call(&app, "POST", endpoint, &asking(Some("gone-1"))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{text}");
        assert_eq!(response["error"]["code"], "model_version_not_served");
    }
    let (_, metadata, _) = call(&app, "GET", "/metadata", "").await;
    assert_eq!(metadata["model_version"], second.model_version());
}
