//! The consumer's readiness and its small HTTP listener: `/healthz` (the process is up),
//! `/readyz` (200 when consuming, 503 with the reason while the store or the broker is failing),
//! `/metrics` (Prometheus).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::net::TcpListener;

/// Why the consumer is not ready, or `None` when it is.
#[derive(Debug, Default)]
pub struct Health {
    not_ready_because: RwLock<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Health {
    /// Not ready until the consumer says it is.
    pub fn starting() -> Arc<Health> {
        Arc::new(Health {
            not_ready_because: RwLock::new(Some("starting".to_owned())),
        })
    }

    pub fn set_ready(&self) {
        *self.not_ready_because.write().expect("health lock") = None;
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.not_ready_because.write().expect("health lock") = Some(reason.into());
    }

    pub fn report(&self) -> ReadinessReport {
        let reason = self.not_ready_because.read().expect("health lock").clone();
        ReadinessReport {
            ready: reason.is_none(),
            reason,
        }
    }
}

#[derive(Clone)]
struct ListenerState {
    /// One per consumer of the process; ready when all are.
    health: Vec<Arc<Health>>,
    metrics: PrometheusHandle,
}

/// Serves the listener until the task is aborted; returns the bound address. `/readyz` is ready
/// when every one of `health` is, and gives every reason it is not.
pub async fn spawn_listener(
    address: SocketAddr,
    health: Vec<Arc<Health>>,
    metrics: PrometheusHandle,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(address).await?;
    let local_addr = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ListenerState { health, metrics });
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "consumer listener stopped");
        }
    });
    Ok((local_addr, task))
}

/// Prometheus' text, with `recsys_consumer_ready` as `/readyz` would answer now.
async fn metrics_text(State(state): State<ListenerState>) -> String {
    let ready = state.health.iter().all(|health| health.report().ready);
    metrics::gauge!("recsys_consumer_ready").set(if ready { 1.0 } else { 0.0 });
    state.metrics.render()
}

async fn readyz(State(state): State<ListenerState>) -> (StatusCode, Json<ReadinessReport>) {
    let reasons: Vec<String> = state
        .health
        .iter()
        .filter_map(|health| health.report().reason)
        .collect();
    let report = ReadinessReport {
        ready: reasons.is_empty(),
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    };
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_metrics_say_whether_every_consumer_is_ready() {
        let (events, items) = (Health::starting(), Health::starting());
        events.set_ready();
        let state = ListenerState {
            health: vec![Arc::clone(&events), Arc::clone(&items)],
            metrics: common::telemetry::prometheus_handle(),
        };
        let text = metrics_text(State(state.clone())).await;
        assert!(text.contains("recsys_consumer_ready 0"), "{text}");
        items.set_ready();
        let text = metrics_text(State(state)).await;
        assert!(text.contains("recsys_consumer_ready 1"), "{text}");
    }
}
