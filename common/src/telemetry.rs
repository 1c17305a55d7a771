//! The process-wide Prometheus recorder. Every `recsys_*_seconds` metric is a real histogram with
//! buckets suited to a millisecond-scale service; `recsys_*_size` histograms count items.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Freshness spans a push's few milliseconds up to a backlog's seconds; its p99 target is 100 ms,
/// so the buckets are dense around it.
const FRESHNESS_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// Installs the recorder on first use (tests start several servers in one process) and returns the
/// handle that renders `/metrics`.
pub fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS)
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full("recsys_consumer_freshness_seconds".into()),
                        FRESHNESS_BUCKETS_SECONDS,
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            crate::metric_catalog::describe_all();
            metrics::gauge!("recsys_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // CPU, memory, open files and threads of this process (`process_*`, as every
            // Prometheus client library exports them).
            let process = metrics_process::Collector::default();
            process.describe();
            process.collect();
            let upkeep_handle = handle.clone();
            std::thread::Builder::new()
                .name("recsys-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    process.collect();
                    upkeep_handle.run_upkeep();
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}
