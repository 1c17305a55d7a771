//! API keys: scopes per endpoint, several keys at once, reads keyed on request, per-key rate
//! limits answered with 429 and `retry-after`.

use axum::http::StatusCode;
use engine::config::{ApiKeyConfig, Scope};

use crate::events::event_line;
use crate::{send_with_optional_header, test_api_with, Answer};

const EVENTS_KEY: &str = "events-secret-0001";
const EVENTS_KEY_NEXT: &str = "events-secret-0002";
const CATALOGUE_KEY: &str = "catalogue-secret-01";
const ADMIN_KEY: &str = "admin-secret-000001";
const READ_KEY: &str = "read-secret-0000001";

fn key(name: &str, secret: &str, scopes: &[Scope]) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.into(),
        secret: secret.into(),
        scopes: scopes.to_vec(),
        requests_per_second: None,
        burst: None,
    }
}

fn keys() -> Vec<ApiKeyConfig> {
    vec![
        key("shop-events", EVENTS_KEY, &[Scope::WriteEvents]),
        // The same scope under a second secret: the rotation's new key.
        key("shop-events-next", EVENTS_KEY_NEXT, &[Scope::WriteEvents]),
        key("catalogue", CATALOGUE_KEY, &[Scope::WriteItems]),
        key("operator", ADMIN_KEY, &[Scope::Admin]),
        key("frontend", READ_KEY, &[Scope::Read]),
    ]
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
    secret: Option<&str>,
) -> Answer {
    send_with_optional_header(app, method, uri, body, "x-api-key", secret).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_needs_a_key_with_its_scope() {
    let api = test_api_with(|config| config.api.keys = keys()).await;
    let event = event_line("u1", "i1", 0);
    let item = r#"{"item_id": "new-1", "title": "New"}"#;
    let cases: [(&str, &str, &str, Option<&str>, StatusCode); 10] = [
        ("POST", "/events", &event, None, StatusCode::UNAUTHORIZED),
        (
            "POST",
            "/events",
            &event,
            Some("not-a-key-at-all"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "POST",
            "/events",
            &event,
            Some(CATALOGUE_KEY),
            StatusCode::FORBIDDEN,
        ),
        ("POST", "/events", &event, Some(EVENTS_KEY), StatusCode::OK),
        (
            "POST",
            "/events",
            &event,
            Some(EVENTS_KEY_NEXT),
            StatusCode::OK,
        ),
        (
            "POST",
            "/items",
            item,
            Some(EVENTS_KEY),
            StatusCode::FORBIDDEN,
        ),
        ("POST", "/items", item, Some(CATALOGUE_KEY), StatusCode::OK),
        (
            "DELETE",
            "/items/new-1",
            "",
            Some(CATALOGUE_KEY),
            StatusCode::OK,
        ),
        (
            "DELETE",
            "/users/u1",
            "",
            Some(CATALOGUE_KEY),
            StatusCode::FORBIDDEN,
        ),
        ("DELETE", "/users/u1", "", Some(ADMIN_KEY), StatusCode::OK),
    ];
    for (method, uri, body, secret, status) in cases {
        let answer = call(&api.app, method, uri, body, secret).await;
        assert_eq!(
            answer.status, status,
            "{method} {uri} with {secret:?}: {}",
            answer.text
        );
        if let Some(secret) = secret {
            assert!(!answer.text.contains(secret), "{}", answer.text);
        }
    }
    let forbidden = call(&api.app, "POST", "/items", item, Some(EVENTS_KEY)).await;
    assert!(
        forbidden
            .text
            .contains("key 'shop-events' does not have the write_items scope"),
        "{}",
        forbidden.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_open_unless_configured_and_health_stays_open() {
    let open = test_api_with(|config| config.api.keys = keys()).await;
    let read = call(&open.app, "GET", "/recs/popular", "", None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    let wrong = call(
        &open.app,
        "GET",
        "/recs/popular",
        "",
        Some("not-a-key-at-all"),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.text);

    let keyed = test_api_with(|config| {
        config.api.keys = keys();
        config.api.reads_need_key = true;
    })
    .await;
    for (secret, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(EVENTS_KEY), StatusCode::FORBIDDEN),
        (Some(READ_KEY), StatusCode::OK),
    ] {
        let answer = call(&keyed.app, "GET", "/recs/popular", "", secret).await;
        assert_eq!(answer.status, status, "{secret:?}: {}", answer.text);
    }
    for open_path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/"] {
        let answer = call(&keyed.app, "GET", open_path, "", None).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{open_path}: {}",
            answer.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_is_told_when_to_retry_and_other_keys_are_not_slowed() {
    let api = test_api_with(|config| {
        let mut limited = key("batch-job", READ_KEY, &[Scope::Read]);
        limited.requests_per_second = Some(1);
        limited.burst = Some(3);
        config.api.keys = vec![
            limited,
            key("shop-events", EVENTS_KEY, &[Scope::WriteEvents]),
        ];
    })
    .await;
    let statuses: Vec<StatusCode> = statuses_of(&api.app, READ_KEY, 5).await;
    assert_eq!(&statuses[..3], [StatusCode::OK; 3], "the burst passes");
    assert_eq!(
        &statuses[3..],
        [StatusCode::TOO_MANY_REQUESTS; 2],
        "{statuses:?}"
    );
    let limited = call(&api.app, "GET", "/recs/popular", "", Some(READ_KEY)).await;
    let retry_after: u64 = limited.headers["retry-after"].parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(
        limited
            .text
            .contains("key 'batch-job' is over its rate limit"),
        "{}",
        limited.text
    );
    // Another key, and requests without one, keep their own budgets.
    let other = call(
        &api.app,
        "POST",
        "/events",
        &event_line("u2", "i1", 0),
        Some(EVENTS_KEY),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text);
    let anonymous = call(&api.app, "GET", "/recs/popular", "", None).await;
    assert_eq!(anonymous.status, StatusCode::OK, "{}", anonymous.text);
}

async fn statuses_of(app: &axum::Router, secret: &str, count: usize) -> Vec<StatusCode> {
    let mut statuses = Vec::with_capacity(count);
    for _ in 0..count {
        statuses.push(
            call(app, "GET", "/recs/popular", "", Some(secret))
                .await
                .status,
        );
    }
    statuses
}
