//! Torch-free plumbing every recsys crate shares: the process-wide Prometheus recorder and the
//! catalogue of its metrics, the clock, retries of transient failures, durable file writes,
//! keeping memory resident and warm, and the shutdown signal.

pub mod clock;
pub mod fs;
pub mod memory;
pub mod metric_catalog;
pub mod redact;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
