//! The recommendation API over the engine's retrieve pipeline.

mod access;
pub mod error;
mod events;
mod items;
mod openapi;
mod routes;
mod search;
mod users;
mod web;
mod writes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use engine::config::{ApiConfig, CatalogueConfig, Config, EventsConfig};
use engine::event_log::{event_applier, open_event_sink, EventSink};
use engine::retrieve::Retriever;
use engine::serving::ServedRetriever;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    /// The model and index answering now; a promotion swaps them (`engine::serving`).
    pub retriever: Arc<ServedRetriever>,
    pub metrics: PrometheusHandle,
    pub limits: ApiConfig,
    /// Where `POST /events` sends what it accepts.
    pub events: Arc<dyn EventSink>,
    pub events_config: EventsConfig,
    pub catalogue_config: CatalogueConfig,
    /// The event archive this API erases users from (`DELETE /users/{id}`), when archiving.
    pub archive: Option<Arc<archive::EventArchive>>,
    /// Title search over the served catalogue (`GET /items/search`).
    pub title_search: Arc<engine::catalogue::CatalogueSearch>,
    /// The API keys and their rate limits.
    pub access: Arc<access::AccessControl>,
}

impl AppState {
    /// The state `recsys serve` runs with: `config`'s limits, and `POST /events` going to Kafka
    /// when `events.url` names a broker, otherwise to the in-process bus applying to the
    /// retriever's store (pushing recommendations when `consumer.push_recommendations`).
    pub fn new(
        config: &Config,
        retriever: Arc<Retriever>,
    ) -> Result<AppState, rdkafka::error::KafkaError> {
        let served = ServedRetriever::new(retriever);
        let retriever = served.get();
        let applier = event_applier(
            config,
            Arc::clone(retriever.store()),
            Some(Arc::clone(&served)),
        );
        let events = open_event_sink(config, Arc::new(applier))?;
        Ok(AppState {
            retriever: served,
            metrics: common::telemetry::prometheus_handle(),
            limits: config.api.clone(),
            events,
            events_config: config.events.clone(),
            catalogue_config: config.catalogue.clone(),
            archive: config
                .archive
                .enabled
                .then(|| Arc::new(archive::EventArchive::new(config.archive_dir(), "api"))),
            title_search: Arc::default(),
            access: Arc::new(access::AccessControl::new(&config.api, &config.events)),
        })
    }
}

/// Largest `POST /events` body: a full batch of the largest events, within reason.
fn events_body_limit(config: &EventsConfig) -> usize {
    config
        .max_events_per_request
        .saturating_mul(config.max_event_bytes)
        .min(64 * 1024 * 1024)
}

/// Largest `POST /items` body: a full batch of the largest items, within reason.
fn items_body_limit(config: &CatalogueConfig) -> usize {
    config
        .max_items_per_request
        .saturating_mul(config.max_item_bytes)
        .min(64 * 1024 * 1024)
}

pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.limits.max_body_bytes;
    let events_route = Router::new().route(
        "/events",
        axum::routing::post(events::post_events).layer(axum::extract::DefaultBodyLimit::max(
            events_body_limit(&state.events_config),
        )),
    );
    let items_route = Router::new().route(
        "/items",
        axum::routing::post(items::upsert_items).layer(axum::extract::DefaultBodyLimit::max(
            items_body_limit(&state.catalogue_config),
        )),
    );
    let cors = cors_layer(&state.limits.cors_allowed_origins);
    routes::routes()
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .merge(events_route)
        .merge(items_route)
        .merge(web::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::guard,
        ))
        .layer(cors)
        .layer(axum::middleware::from_fn(record_request_metrics))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id = request
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or("-")
                .to_owned();
            tracing::info_span!("request", request_id = %request_id, method = %request.method(), uri = %request.uri())
        }))
        // Outermost: an incoming `x-request-id` is kept, otherwise a UUID is made.
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Cross-origin access for pages served elsewhere: none when `origins` is empty (the default),
/// any origin for `["*"]` (what the tutorial allowed), otherwise exactly the origins listed.
fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let allowed = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| origin.parse::<axum::http::HeaderValue>().ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([axum::http::HeaderName::from_static("x-request-id")])
}

/// `recsys_api_request_duration_seconds{route, status}` for every request.
async fn record_request_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        "recsys_api_request_duration_seconds",
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// A running API; the task ends once its shutdown future resolved and the requests in flight
/// were answered.
pub struct ApiHandle {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Serves on an already bound listener (tests bind port 0 and read the address back) until
/// `shutdown` resolves; then no new connection is accepted and the task ends when every request
/// in flight has its answer.
pub fn spawn(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<ApiHandle> {
    let local_addr = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok(ApiHandle { local_addr, task })
}
