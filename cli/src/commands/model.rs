//! The model commands (they need libtorch): `train`, `eval`, `model-server`, `bench-embedder`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use model_server::item_features::ItemFeatureSet;
use model_server::model::EncoderKind;
use model_server::offline::{evaluate_bundle, train_bundle};
use model_server::served::{spawn_bundle_watcher, ServedModels};
use model_server::train::{LossKind, TrainConfig};
use model_server::{Embedder, EmbedderConfig, ModelBundle};

use super::bench_embedder::{run_embedder_benchmark, EmbedderBenchConfig};
use crate::args::DataDirArg;

#[derive(Args, Clone)]
pub struct BundleArg {
    /// A bundle directory; defaults to the one `<data-dir>/bundles/CURRENT` names.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
}

impl BundleArg {
    pub fn resolve(&self, data: &DataDirArg) -> anyhow::Result<PathBuf> {
        match &self.bundle {
            Some(path) => Ok(path.clone()),
            None => Ok(dataset::bundle::current_bundle_dir(&data.data_dir)?),
        }
    }
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    bundle: BundleArg,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ModelServerArgs {
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    bundle: BundleArg,
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    #[command(flatten)]
    batching: BatchingArgs,
    /// How often to look at `bundles/CURRENT` and serve a promoted bundle (0: never; also
    /// never with `--bundle`).
    #[arg(long, default_value_t = 2000)]
    reload_interval_ms: u64,
    /// Keep the model's pages resident once touched, as `lock_memory` does for `serve`; a
    /// no-op with a warning where the process may not lock memory.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    lock_memory: bool,
    /// Read one byte of each resident page this often, as `memory_warm_interval_secs` does for
    /// `serve` (0: never).
    #[arg(long, default_value_t = 30)]
    memory_warm_interval_secs: u64,
}

#[derive(Args)]
pub struct BenchEmbedderArgs {
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    bundle: BundleArg,
    /// Seconds of load per batch size.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct BatchingArgs {
    #[arg(long, default_value_t = 64)]
    max_batch_size: usize,
    /// Microseconds the batcher waits for more sequences once it has one.
    #[arg(long, default_value_t = 0)]
    max_wait_micros: u64,
    /// Torch intra-op threads (0: one per core).
    #[arg(long, default_value_t = 1)]
    torch_threads: usize,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    options: TrainOptions,
    /// Keep bundles/CURRENT where it is.
    #[arg(long)]
    no_make_current: bool,
    /// Print the training report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Train on the event archive: it is written as data set `events` first (what
    /// `recsys export-events` does), and `--dataset` is ignored.
    #[arg(long)]
    from_events: bool,
    /// With `--from-events`, only events from this moment on: a UTC date (2026-11-01) or an
    /// RFC 3339 time.
    #[arg(long, requires = "from_events", value_parser = parse_since)]
    since: Option<i64>,
    /// With `--from-events`, the titles, years and genres of items this data set describes.
    #[arg(long, requires = "from_events")]
    items_from: Option<String>,
}

/// `--since` as Unix milliseconds.
fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .map_err(|_| format!("'{text}' is neither a date (2026-11-01) nor an RFC 3339 time"))
}

#[derive(Args)]
/// What to train on and how: the data set, the architecture and the training settings.
pub struct TrainOptions {
    #[command(flatten)]
    pub data: DataDirArg,
    #[arg(long, default_value = "ml-100k")]
    pub dataset: String,
    /// Model architecture; each has its own tuned defaults for the options below.
    #[arg(long, default_value = "gru")]
    encoder: EncoderKind,
    #[arg(long)]
    embedding_dim: Option<i64>,
    #[arg(long)]
    max_len: Option<i64>,
    #[arg(long)]
    layers: Option<i64>,
    #[arg(long)]
    heads: Option<i64>,
    #[arg(long)]
    dropout: Option<f64>,
    #[arg(long)]
    learning_rate: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long)]
    batch_size: Option<i64>,
    #[arg(long)]
    max_epochs: Option<usize>,
    #[arg(long)]
    patience: Option<usize>,
    /// Sampled softmax with this many shared negatives instead of the full softmax.
    #[arg(long)]
    sampled_negatives: Option<i64>,
    /// Spread this share of each target's probability over all items (0 = plain cross-entropy).
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Catalogue attributes added to each item's representation while training: none, genres,
    /// genres-year. Bundles store the sum, so serving is unchanged.
    #[arg(long)]
    item_features: Option<ItemFeatureSet>,
    #[arg(long)]
    seed: Option<u64>,
    /// Training threads (default: one per core); fewer leave cores to serving processes on the
    /// same machine.
    #[arg(long)]
    threads: Option<i32>,
}

impl TrainOptions {
    pub fn config(&self) -> TrainConfig {
        let defaults = TrainConfig::for_encoder(self.encoder);
        TrainConfig {
            embedding_dim: self.embedding_dim.unwrap_or(defaults.embedding_dim),
            max_len: self.max_len.unwrap_or(defaults.max_len),
            num_layers: self.layers.unwrap_or(defaults.num_layers),
            num_heads: self.heads.unwrap_or(defaults.num_heads),
            dropout: self.dropout.unwrap_or(defaults.dropout),
            learning_rate: self.learning_rate.unwrap_or(defaults.learning_rate),
            weight_decay: self.weight_decay.unwrap_or(defaults.weight_decay),
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            max_epochs: self.max_epochs.unwrap_or(defaults.max_epochs),
            patience: self.patience.unwrap_or(defaults.patience),
            loss: self
                .sampled_negatives
                .map(|negatives| LossKind::SampledSoftmax { negatives })
                .or(defaults.loss),
            label_smoothing: self.label_smoothing.unwrap_or(defaults.label_smoothing),
            item_features: self.item_features.unwrap_or(defaults.item_features),
            seed: self.seed.unwrap_or(defaults.seed),
            threads: self.threads.unwrap_or(defaults.threads),
            ..defaults
        }
    }
}

/// Trains and reports the validation numbers that chose the epoch; test numbers are read with
/// `recsys eval`, once, for the configuration chosen.
pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let options = &args.options;
    let config = options.config();
    let dataset = if args.from_events {
        const EVENTS_DATASET: &str = "events";
        let mut serving = engine::config::load_config(None)?;
        serving.data_dir = options.data.data_dir.clone();
        let window = super::data::write_events_dataset(
            &serving,
            EVENTS_DATASET,
            args.since,
            None,
            args.items_from.as_deref(),
        )?;
        println!(
            "data set {EVENTS_DATASET}: {}",
            super::data::describe_window(&window)
        );
        EVENTS_DATASET
    } else {
        options.dataset.as_str()
    };
    let outcome = train_bundle(
        &options.data.data_dir,
        dataset,
        &config,
        !args.no_make_current,
    )
    .with_context(|| format!("training on {dataset}"))?;
    let report = &outcome.report;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"bundle": outcome.bundle_dir, "training": report})
        );
        return Ok(());
    }
    println!("bundle: {}", outcome.bundle_dir.display());
    println!(
        "best epoch {} of {} ({:.2} s/epoch, {:.1} s to the best epoch, {:.1} s total)",
        report.best_epoch,
        report.epochs_run,
        report.seconds_per_epoch,
        report.seconds_to_best_epoch,
        report.total_seconds
    );
    println!(
        "validation ndcg@10 {:.4} recall@10 {:.4} (test numbers: `recsys eval`)",
        report.best_valid.ndcg_at_10, report.best_valid.recall_at_10
    );
    Ok(())
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let EvalArgs { data, bundle, json } = args;
    let bundle_dir = bundle.resolve(&data)?;
    let report = evaluate_bundle(&data.data_dir, &bundle_dir)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} on {} ({} users)",
            report.model_version, report.dataset, report.users
        );
        println!(
            "{:<19} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10"
        );
        for (name, metrics) in [
            ("model", &report.model),
            ("model, seen masked", &report.model_seen_masked),
            ("popularity", &report.popularity),
        ] {
            println!(
                "{name:<19} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
                metrics.recall_at_10,
                metrics.recall_at_20,
                metrics.ndcg_at_10,
                metrics.ndcg_at_20,
                metrics.mrr_at_10
            );
        }
    }
    Ok(())
}

pub fn model_server(args: ModelServerArgs) -> anyhow::Result<()> {
    let ModelServerArgs {
        data,
        bundle,
        listen,
        batching,
        reload_interval_ms,
        lock_memory,
        memory_warm_interval_secs,
    } = args;
    let _warm = super::keep_memory_resident_and_warm(lock_memory, memory_warm_interval_secs);
    let bundle_dir = bundle.resolve(&data)?;
    let loaded = ModelBundle::load(&bundle_dir)?;
    tracing::info!(bundle = %bundle_dir.display(), version = %loaded.config.model_version, "bundle loaded");
    let embedder_config = EmbedderConfig {
        max_batch_size: batching.max_batch_size,
        max_wait: Duration::from_micros(batching.max_wait_micros),
        torch_threads: batching.torch_threads,
        ..EmbedderConfig::default()
    };
    let models = ServedModels::new(Embedder::start(loaded, embedder_config.clone()));
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // An explicit bundle is fixed; otherwise a promotion is served without a restart.
        if reload_interval_ms > 0 && bundle.bundle.is_none() {
            spawn_bundle_watcher(
                data.data_dir.clone(),
                std::sync::Arc::clone(&models),
                embedder_config,
                Duration::from_millis(reload_interval_ms),
            );
        }
        model_server::server::run(listen, models).await
    })?;
    Ok(())
}

pub fn bench_embedder(args: BenchEmbedderArgs) -> anyhow::Result<()> {
    let BenchEmbedderArgs {
        data,
        bundle,
        seconds,
        json,
    } = args;
    let bundle_dir = bundle.resolve(&data)?;
    let report = run_embedder_benchmark(
        &bundle_dir,
        &EmbedderBenchConfig {
            throughput_duration: Duration::from_secs_f64(seconds),
            ..EmbedderBenchConfig::default()
        },
    )?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "embedder {} (sequences of {} items, {} torch threads)",
            report.model_version, report.sequence_len, report.torch_threads
        );
        println!(
            "single sequence latency: p50 {} us, p99 {} us, max {} us",
            report.single_p50_micros, report.single_p99_micros, report.single_max_micros
        );
        for result in &report.throughput {
            println!(
                "batch {:>4}: {:>8.0} sequences/s (mean batch {:.1}, batch p50 {} us, p99 {} us)",
                result.batch_size,
                result.sequences_per_second,
                result.mean_batch_size,
                result.batch_p50_micros,
                result.batch_p99_micros
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_utc_date_or_an_rfc_3339_time() {
        assert_eq!(parse_since("2026-11-01"), Ok(1_793_491_200_000));
        assert_eq!(
            parse_since("2026-11-01T01:00:00+01:00"),
            Ok(1_793_491_200_000)
        );
        let refused = parse_since("last tuesday").unwrap_err();
        assert!(refused.contains("'last tuesday'"), "{refused}");
    }
}
