//! `recsys bench-embedder`: single-sequence latency and batched throughput of the embedder, measured
//! through the same queue and batching thread the API uses.

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use model_server::bundle::{BundleError, ModelBundle};
use model_server::embedder::{Embedder, EmbedderConfig};

#[derive(Debug, Clone)]
pub struct EmbedderBenchConfig {
    pub latency_iterations: usize,
    pub throughput_duration: Duration,
    pub batch_sizes: Vec<usize>,
    /// Items per benchmark sequence (capped at the model's max_len).
    pub sequence_len: usize,
}

impl Default for EmbedderBenchConfig {
    fn default() -> Self {
        EmbedderBenchConfig {
            latency_iterations: 2_000,
            throughput_duration: Duration::from_secs(3),
            batch_sizes: vec![1, 32, 256],
            sequence_len: 50,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    pub batch_size: usize,
    pub sequences_per_second: f64,
    /// Sequences per forward pass actually run (should equal `batch_size`).
    pub mean_batch_size: f64,
    pub batch_p50_micros: u64,
    pub batch_p99_micros: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbedderBenchReport {
    pub model_version: String,
    pub sequence_len: usize,
    pub torch_threads: i32,
    pub single_p50_micros: u64,
    pub single_p99_micros: u64,
    pub single_max_micros: u64,
    pub throughput: Vec<ThroughputResult>,
}

fn random_sequences(bundle: &ModelBundle, count: usize, len: usize, seed: u64) -> Vec<Vec<String>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let ids = bundle.id_map.raw_ids();
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| ids[rng.random_range(0..ids.len())].clone())
                .collect()
        })
        .collect()
}

pub fn run_embedder_benchmark(
    bundle_dir: &Path,
    config: &EmbedderBenchConfig,
) -> Result<EmbedderBenchReport, BundleError> {
    let bundle = ModelBundle::load(bundle_dir)?;
    let model_version = bundle.config.model_version.clone();
    let sequence_len = config.sequence_len.min(bundle.config.max_len as usize);
    let sequences = random_sequences(&bundle, 1024, sequence_len, 7);

    // Latency: one caller, one sequence at a time, as a lightly loaded API sees it.
    let embedder = Embedder::start(bundle, EmbedderConfig::default());
    let mut latency = latency_histogram();
    for iteration in 0..config.latency_iterations + 100 {
        let started = Instant::now();
        embedder
            .embed_blocking(&sequences[iteration % sequences.len()])
            .expect("benchmark sequences are known items");
        if iteration >= 100 {
            latency.saturating_record(started.elapsed().as_micros() as u64);
        }
    }
    drop(embedder);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let mut throughput = Vec::new();
    for &batch_size in &config.batch_sizes {
        let embedder = Embedder::start(
            ModelBundle::load(bundle_dir)?,
            // The wait lets the batcher collect the whole batch that `embed_many` enqueues, so
            // every forward pass runs at exactly `batch_size`.
            EmbedderConfig {
                max_batch_size: batch_size,
                max_wait: Duration::from_millis(20),
                queue_capacity: batch_size.max(1) * 2,
                ..EmbedderConfig::default()
            },
        );
        let batch: Vec<Vec<String>> = sequences.iter().cycle().take(batch_size).cloned().collect();
        let mut batch_latency = latency_histogram();
        let (embedded, elapsed) = runtime.block_on(async {
            // Warm-up pass: first calls allocate.
            let _ = embedder.embed_many(&batch).await;
            let started = Instant::now();
            let mut embedded = 0usize;
            while started.elapsed() < config.throughput_duration {
                let batch_started = Instant::now();
                for result in embedder.embed_many(&batch).await {
                    result.expect("benchmark sequences are known items");
                }
                batch_latency.saturating_record(batch_started.elapsed().as_micros() as u64);
                embedded += batch.len();
            }
            (embedded, started.elapsed().as_secs_f64())
        });
        let (forward_passes, sequences_embedded) = embedder.batch_counts();
        throughput.push(ThroughputResult {
            batch_size,
            sequences_per_second: embedded as f64 / elapsed,
            mean_batch_size: sequences_embedded as f64 / forward_passes.max(1) as f64,
            batch_p50_micros: batch_latency.value_at_quantile(0.5),
            batch_p99_micros: batch_latency.value_at_quantile(0.99),
        });
    }
    Ok(EmbedderBenchReport {
        model_version,
        sequence_len,
        torch_threads: model_server::embedder::torch_threads(),
        single_p50_micros: latency.value_at_quantile(0.5),
        single_p99_micros: latency.value_at_quantile(0.99),
        single_max_micros: latency.max(),
        throughput,
    })
}

/// Microsecond histogram up to one minute. Fixed bounds: an auto-resizing histogram clamps
/// `saturating_record` to its initial tiny range instead of growing.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}
