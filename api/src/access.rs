//! API keys and their rate limits, checked before any handler runs: which scope a route needs,
//! whether the request's key grants it, and whether the key is within its rate.
//!
//! A presented secret is compared with every key's, each in constant time (`subtle`, over
//! SHA-256 digests so that lengths match), and without stopping at a match: how long the check
//! takes says nothing about which key, or how much of one, was guessed. Secrets are never logged;
//! refusals and metrics name the key.
//!
//! Each key has a `governor` rate limiter of its own: `tower_governor`, the tower layer over the
//! same crate, gives every caller one quota, and keys here have their own rates.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use engine::config::{ApiConfig, ApiKeyConfig, EventsConfig, Scope};
use governor::{DefaultDirectRateLimiter, Quota};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{ApiError, AppState};

struct Key {
    name: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
    limiter: Option<DefaultDirectRateLimiter>,
}

/// The keys the API knows, built once from the configuration.
pub struct AccessControl {
    keys: Vec<Key>,
    reads_need_key: bool,
}

impl AccessControl {
    /// `api.keys`, plus `events.api_key` when set (one more key with every write and admin
    /// scope, as it guarded every write before `api.keys`).
    pub fn new(api: &ApiConfig, events: &EventsConfig) -> AccessControl {
        let legacy = events.api_key.as_ref().map(|secret| ApiKeyConfig {
            name: "events.api_key".into(),
            secret: secret.clone(),
            scopes: vec![Scope::WriteEvents, Scope::WriteItems, Scope::Admin],
            requests_per_second: None,
            burst: None,
        });
        let keys = api
            .keys
            .iter()
            .chain(legacy.as_ref())
            .map(|key| Key {
                name: key.name.clone(),
                digest: Sha256::digest(key.secret.as_bytes()).into(),
                scopes: key.scopes.clone(),
                limiter: key
                    .requests_per_second
                    .and_then(NonZeroU32::new)
                    .map(|rate| {
                        let burst = key.burst.and_then(NonZeroU32::new).unwrap_or(rate);
                        DefaultDirectRateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
                    }),
            })
            .collect();
        AccessControl {
            keys,
            reads_need_key: api.reads_need_key,
        }
    }

    /// The key whose secret was sent, if any.
    fn key(&self, secret: &str) -> Option<&Key> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }

    /// Checks a request for `scope` (`None`: open to all, such as health and metrics).
    fn check(&self, scope: Option<Scope>, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let Some(scope) = scope else {
            return Ok(());
        };
        let needs_key = scope != Scope::Read || self.reads_need_key;
        // A wrong key is refused even where none is needed: its client should hear of it.
        let key = match presented_secret(headers) {
            Some(secret) => self.key(secret).ok_or_else(|| {
                refused(
                    "unauthorized",
                    "-",
                    ApiError::Unauthorized("the key sent is not one of the API's keys".into()),
                )
            })?,
            None if needs_key => {
                return Err(refused(
                    "unauthorized",
                    "-",
                    ApiError::Unauthorized(format!(
                        "the {} scope needs a key: `authorization: Bearer <key>` or \
                         `x-api-key: <key>`",
                        scope.as_str()
                    )),
                ))
            }
            None => return Ok(()),
        };
        if needs_key && !key.scopes.contains(&scope) {
            return Err(refused(
                "forbidden",
                &key.name,
                ApiError::Forbidden(format!(
                    "key '{}' does not have the {} scope",
                    key.name,
                    scope.as_str()
                )),
            ));
        }
        if let Some(limiter) = &key.limiter {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                return Err(refused(
                    "rate_limited",
                    &key.name,
                    ApiError::RateLimited {
                        message: format!("key '{}' is over its rate limit", key.name),
                        retry_after: wait.max(Duration::from_secs(1)),
                    },
                ));
            }
        }
        Ok(())
    }
}

fn presented_secret(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    bearer.or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
    })
}

fn refused(reason: &'static str, key: &str, error: ApiError) -> ApiError {
    metrics::counter!("recsys_api_access_refused_total", "reason" => reason, "key" => key.to_owned())
        .increment(1);
    error
}

/// Whether a route stays open whatever the keys: health, metrics, the document, the pages.
pub(crate) fn is_open(route: &str) -> bool {
    matches!(
        route,
        "/healthz"
            | "/readyz"
            | "/metrics"
            | "/openapi.json"
            | "/docs"
            | "/"
            | "/app.js"
            | "/app.css"
    )
}

/// The scope a route needs; `None` for what stays open.
fn scope_of(method: &Method, route: &str) -> Option<Scope> {
    if is_open(route) {
        return None;
    }
    match (method.as_str(), route) {
        ("POST", "/events") => Some(Scope::WriteEvents),
        ("POST", "/items") | ("DELETE", "/items/{item_id}") => Some(Scope::WriteItems),
        ("DELETE", "/users/{user_id}") => Some(Scope::Admin),
        _ => Some(Scope::Read),
    }
}

/// The middleware: runs after routing, so the route's template decides the scope.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_default();
    let scope = scope_of(request.method(), &route);
    match state.access.check(scope, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}
