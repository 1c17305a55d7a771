//! `recsys`: one command for every job. Parses arguments, sets up logging, calls the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use model_server::bench::{run_embedder_benchmark, EmbedderBenchConfig};
use model_server::bundle::current_bundle_dir;
use model_server::data::synthetic::{generate, SyntheticConfig};
use model_server::data::{dataset_dir, write_atomic_files};
use model_server::model::EncoderKind;
use model_server::offline::{evaluate_bundle, train_bundle};
use model_server::train::{LossKind, TrainConfig};
use model_server::{Embedder, EmbedderConfig, ModelBundle};

mod stream;

// The stream path allocates a few small strings per event and frees whole batches at once;
// glibc's allocator spent a fifth of the consumer's CPU on that (and on returning pages to the
// kernel only to fault them in again for the next batch). mimalloc keeps per-thread free lists
// and reuses pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "recsys", version, about = "Streaming session recommender")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct DataDirArg {
    /// Where data sets, bundles and embedded stores live.
    #[arg(long, env = "RECSYS_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
}

#[derive(Args, Clone)]
struct BundleArg {
    /// A bundle directory; defaults to the one `<data-dir>/bundles/CURRENT` names.
    #[arg(long)]
    bundle: Option<PathBuf>,
}

impl BundleArg {
    fn resolve(&self, data: &DataDirArg) -> anyhow::Result<PathBuf> {
        match &self.bundle {
            Some(path) => Ok(path.clone()),
            None => Ok(current_bundle_dir(&data.data_dir)?),
        }
    }
}

#[derive(Args, Clone)]
struct ServingArgs {
    /// Configuration file (default: ./recsys.toml when it exists); RECSYS__SECTION__KEY overrides.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `data_dir` of the configuration.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ServingArgs {
    fn load(&self) -> anyhow::Result<engine::config::Config> {
        let mut config = engine::config::load_config(self.config.as_deref())?;
        if let Some(data_dir) = &self.data_dir {
            config.data_dir = data_dir.clone();
        }
        Ok(config)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve recommendations over HTTP on the configured backends.
    Serve {
        #[command(flatten)]
        serving: ServingArgs,
        /// Overrides `api.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Build the item index from the current bundle and switch the served alias to it.
    Index {
        #[command(flatten)]
        serving: ServingArgs,
        /// Do nothing when an index is already served under the alias.
        #[arg(long)]
        if_missing: bool,
    },
    /// Train a sequence model and write a bundle (made current unless --no-make-current).
    Train(TrainArgs),
    /// Evaluate a bundle on the test split (leave-one-out, full ranking) against popularity.
    Eval {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        bundle: BundleArg,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve the embedder over HTTP with the tutorial's BentoML endpoints.
    ModelServer {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        bundle: BundleArg,
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        #[command(flatten)]
        batching: BatchingArgs,
    },
    /// Measure embedder latency (one sequence) and throughput (batches of 1, 32, 256).
    BenchEmbedder {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        bundle: BundleArg,
        /// Seconds of load per batch size.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long)]
        json: bool,
    },
    /// Prepare the API load benchmark: store every user's history of the current bundle's data
    /// set (minus the last 5 items) and write request bodies (a stored user + 1-5 of those items).
    BenchPrepare {
        #[command(flatten)]
        serving: ServingArgs,
        #[arg(long, default_value_t = 100_000)]
        requests: usize,
        /// Where the bodies go, one JSON object per line (`oha -Z`).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Apply interaction events from the Kafka topic (`events.url`) to user state, with dead
    /// letters, live popularity and (when `consumer.push_recommendations`) pushed recommendations.
    Consume {
        #[command(flatten)]
        serving: ServingArgs,
        /// Overrides `consumer.listen` (the consumer's /healthz, /readyz and /metrics).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Send a data set's interactions, in time order, as events to Kafka or to an API.
    Replay {
        #[command(flatten)]
        serving: ServingArgs,
        #[arg(long, default_value = "ml-100k")]
        dataset: String,
        /// `kafka` (the configured `events.url`) or an API base URL such as http://127.0.0.1:8000.
        #[arg(long, default_value = "kafka")]
        to: String,
        /// Events per second (default: as fast as the target takes them).
        #[arg(long)]
        rate: Option<f64>,
        /// Only the first N events.
        #[arg(long)]
        limit: Option<usize>,
        /// Keep the data set's event times (by default each event is stamped when sent, so
        /// live popularity moves).
        #[arg(long)]
        original_timestamps: bool,
    },
    /// Create the events topic and its dead-letter topic on the configured broker (existing
    /// topics are kept).
    CreateTopics {
        #[command(flatten)]
        serving: ServingArgs,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
    /// Stream benchmarks against `events.url` (Kafka) and `state.url` (Redis):
    /// `scripts/bench-stream.sh` starts both and runs this.
    BenchStream {
        #[command(flatten)]
        serving: ServingArgs,
        /// Events per round: a few seconds of the consumer's steady state (at
        /// 500,000 a round lasts under a second, and its first and last batches, which overlap
        /// nothing, take a sixth of it).
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
        #[arg(long, default_value_t = 20_000)]
        users: usize,
        /// Pairs of consume-only and consumer runs; medians are reported. On a shared 2-core
        /// machine one round's ratio varies by ±0.08, so five rounds (not three) for a median
        /// that repeats.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 1_000.0)]
        freshness_rate: f64,
        #[arg(long, default_value_t = 30.0)]
        freshness_seconds: f64,
    },
    /// Print a wire type's JSON Schema (`event`: the interaction event).
    Schema {
        #[arg(value_parser = ["event"])]
        kind: String,
    },
    /// Generate a synthetic data set into `<data-dir>/datasets/<name>/`.
    Synth {
        #[command(flatten)]
        data: DataDirArg,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        #[arg(long, default_value_t = 100_000)]
        items: usize,
        #[arg(long, default_value_t = 30)]
        events_per_user: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[derive(Args)]
struct BatchingArgs {
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
struct TrainArgs {
    #[command(flatten)]
    data: DataDirArg,
    #[arg(long, default_value = "ml-100k")]
    dataset: String,
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
    #[arg(long)]
    seed: Option<u64>,
    /// Keep bundles/CURRENT where it is.
    #[arg(long)]
    no_make_current: bool,
    /// Print the training report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
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
            seed: self.seed.unwrap_or(defaults.seed),
            ..defaults
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // Qdrant Edge logs internal start-up notices at warn level that mean nothing to users.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,qdrant_edge=error".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().command {
        Command::Serve { serving, listen } => {
            let mut config = serving.load()?;
            if let Some(listen) = listen {
                config.api.listen = listen;
            }
            tokio::runtime::Runtime::new()?.block_on(serve_command(config))
        }
        Command::Index {
            serving,
            if_missing,
        } => {
            let config = serving.load()?;
            tokio::runtime::Runtime::new()?.block_on(index_command(config, if_missing))
        }
        Command::BenchPrepare {
            serving,
            requests,
            out,
            seed,
        } => {
            let config = serving.load()?;
            tokio::runtime::Runtime::new()?
                .block_on(bench_prepare_command(config, requests, &out, seed))
        }
        Command::Train(args) => train_command(&args),
        Command::Eval { data, bundle, json } => {
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
                    "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    "", "recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10"
                );
                for (name, metrics) in
                    [("model", &report.model), ("popularity", &report.popularity)]
                {
                    println!(
                        "{name:<12} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
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
        Command::ModelServer {
            data,
            bundle,
            listen,
            batching,
        } => {
            let bundle_dir = bundle.resolve(&data)?;
            let loaded = ModelBundle::load(&bundle_dir)?;
            tracing::info!(bundle = %bundle_dir.display(), version = %loaded.config.model_version, "bundle loaded");
            let embedder = Embedder::start(
                loaded,
                EmbedderConfig {
                    max_batch_size: batching.max_batch_size,
                    max_wait: Duration::from_micros(batching.max_wait_micros),
                    torch_threads: batching.torch_threads,
                    ..EmbedderConfig::default()
                },
            );
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(model_server::server::run(listen, embedder))?;
            Ok(())
        }
        Command::BenchEmbedder {
            data,
            bundle,
            seconds,
            json,
        } => {
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
        Command::Consume { serving, listen } => {
            let config = serving.load()?;
            tokio::runtime::Runtime::new()?.block_on(stream::consume_command(config, listen))
        }
        Command::Replay {
            serving,
            dataset,
            to,
            rate,
            limit,
            original_timestamps,
        } => {
            let config = serving.load()?;
            tokio::runtime::Runtime::new()?.block_on(stream::replay_command(
                config,
                stream::ReplayArgs {
                    dataset,
                    to,
                    rate,
                    limit,
                    original_timestamps,
                },
            ))
        }
        Command::CreateTopics {
            serving,
            partitions,
            replication,
        } => {
            let config = serving.load()?;
            tokio::runtime::Runtime::new()?.block_on(stream::create_topics_command(
                config,
                partitions,
                replication,
            ))
        }
        Command::BenchStream {
            serving,
            events,
            users,
            rounds,
            freshness_rate,
            freshness_seconds,
        } => {
            let config = serving.load()?;
            tokio::runtime::Runtime::new()?.block_on(stream::bench_stream_command(
                config,
                stream::BenchStreamArgs {
                    events,
                    users,
                    rounds,
                    freshness_rate,
                    freshness_seconds,
                },
            ))
        }
        Command::Schema { kind: _ } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&schemas::event_json_schema())?
            );
            Ok(())
        }
        Command::Synth {
            data,
            name,
            users,
            items,
            events_per_user,
            seed,
        } => {
            let config = SyntheticConfig {
                num_users: users,
                num_items: items,
                mean_events_per_user: events_per_user,
                seed,
                ..SyntheticConfig::default()
            };
            let dataset = generate(&name, &config);
            let dir = dataset_dir(&data.data_dir, &name);
            write_atomic_files(&dir, &dataset)?;
            println!(
                "wrote {} interactions of {users} users over {items} items to {}",
                dataset.interactions.len(),
                dir.display()
            );
            Ok(())
        }
    }
}

fn train_command(args: &TrainArgs) -> anyhow::Result<()> {
    let config = args.config();
    let outcome = train_bundle(
        &args.data.data_dir,
        &args.dataset,
        &config,
        !args.no_make_current,
    )
    .with_context(|| format!("training on {}", args.dataset))?;
    let report = &outcome.report;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"bundle": outcome.bundle_dir, "training": report, "test": outcome.test})
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
        "valid ndcg@10 {:.4}; test ndcg@10 {:.4} recall@10 {:.4} (popularity ndcg@10 {:.4})",
        report.best_valid.ndcg_at_10,
        outcome.test.model.ndcg_at_10,
        outcome.test.model.recall_at_10,
        outcome.test.popularity.ndcg_at_10
    );
    Ok(())
}

async fn index_command(config: engine::config::Config, if_missing: bool) -> anyhow::Result<()> {
    if if_missing {
        let existing = engine::index::open_index(
            &config.index.url,
            &config.index.collection,
            &config.data_dir,
        )
        .await;
        if let Ok(index) = existing {
            println!(
                "index '{}' already serves {}",
                config.index.collection,
                index.version()
            );
            return Ok(());
        }
    }
    let outcome = engine::startup::build_index_from_bundle(&config)
        .await
        .context("building the index (is there a bundle? `recsys train` makes one)")?;
    println!(
        "index '{}' now serves {} ({} items{})",
        config.index.collection,
        outcome.version,
        outcome.items,
        if outcome.seeded_popularity > 0 {
            format!(
                "; live popularity seeded from {} training counts",
                outcome.seeded_popularity
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

async fn bench_prepare_command(
    config: engine::config::Config,
    requests: usize,
    out: &std::path::Path,
    seed: u64,
) -> anyhow::Result<()> {
    let bundle = ModelBundle::load(&engine::startup::bundle_dir(&config)?)?;
    let dataset = model_server::data::Dataset::load(&config.data_dir, &bundle.config.dataset)?;
    let store = engine::startup::open_state_store(&config).await?;
    let load =
        engine::loadgen::prepare_retrieve_load(store.as_ref(), &dataset, requests, seed).await?;
    let mut text = load.bodies.join("\n");
    text.push('\n');
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "stored {} interactions of {} users of {}; {} request bodies in {}",
        load.stored_interactions,
        load.users,
        dataset.name,
        load.bodies.len(),
        out.display()
    );
    Ok(())
}

async fn serve_command(config: engine::config::Config) -> anyhow::Result<()> {
    let (retriever, _refresher) = engine::startup::build_retriever(&config).await.context(
        "starting the serving pipeline (`recsys train` makes a bundle, `recsys index` the index)",
    )?;
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding {}", config.api.listen))?;
    let state = api::AppState::new(&config, retriever).context("connecting the event log")?;
    // Not fatal: events posted meanwhile are only held back, not refused.
    if !state.events.wait_until_ready(Duration::from_secs(10)).await {
        tracing::warn!(
            backend = state.events.backend(),
            "the event log is not ready after 10 s; starting anyway"
        );
    }
    let handle = api::spawn(listener, state)?;
    let address = handle.local_addr;
    tracing::info!(%address, "recommendation API listening");
    println!("recsys API listening on http://{address}");
    println!("try:");
    println!(
        "  curl -s -X POST 'http://{address}/recs/retrieve?count=5' -H 'content-type: application/json' \\\n    -d '{{\"user_ids_raw\": [\"196\"], \"item_seq_raw\": [[\"242\", \"302\", \"377\"]], \"candidate_items_raw\": []}}'"
    );
    tokio::select! {
        result = handle.task => result??,
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    Ok(())
}
