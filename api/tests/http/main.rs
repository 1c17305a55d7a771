//! The API over HTTP semantics (tower `oneshot` on the real router, real embedded backends): the
//! shared harness here, the cases by subject in the modules.

mod access;
mod client_surface;
mod events;
mod items;
mod openapi;
mod recommendations;
mod users;

use std::sync::Arc;

use api::{router, AppState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use engine::config::{ApiConfig, Config};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub(crate) struct TestApi {
    app: axum::Router,
    retriever: Arc<engine::retrieve::Retriever>,
    _data_dir: tempfile::TempDir,
}

pub(crate) async fn test_api() -> TestApi {
    test_api_with(|_| {}).await
}

/// The test API with its configuration adjusted by `configure`.
pub(crate) async fn test_api_with(configure: impl FnOnce(&mut Config)) -> TestApi {
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
    // The event archive goes under the test's directory, not the working directory.
    config.data_dir = data_dir.path().to_owned();
    configure(&mut config);
    let app = router(AppState::new(&config, Arc::clone(&retriever)).unwrap());
    TestApi {
        app,
        retriever,
        _data_dir: data_dir,
    }
}

pub(crate) struct Answer {
    status: StatusCode,
    request_id: Option<String>,
    /// Every header, by lowercase name (the last value of a repeated one).
    headers: std::collections::HashMap<String, String>,
    body: Value,
    text: String,
}

pub(crate) async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
    request_id: Option<&str>,
) -> Answer {
    send_with_optional_header(app, method, uri, body, "x-request-id", request_id).await
}

/// A JSON request with the header `name` when there is a value for it.
pub(crate) async fn send_with_optional_header(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
    name: &str,
    value: Option<&str>,
) -> Answer {
    let headers: Vec<(&str, &str)> = value.map(|value| (name, value)).into_iter().collect();
    send_with_headers(app, method, uri, body, &headers).await
}

/// A JSON request with extra headers.
pub(crate) async fn send_with_headers(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send_request(app, builder.body(Body::from(body.to_owned())).unwrap()).await
}

/// Sends a built request through the router and reads the whole answer.
pub(crate) async fn send_request(app: &axum::Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let request_id = response
        .headers()
        .get("x-request-id")
        .map(|value| value.to_str().unwrap().to_owned());
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        request_id,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}
