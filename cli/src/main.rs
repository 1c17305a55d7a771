//! The `recsys` command: parses the arguments and hands each subcommand to its module under
//! `commands/`.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

mod args;
mod commands;

use commands::{bench_cold_start, bench_stream, data, serve, stream};

// The stream path allocates a few small strings per event and frees whole batches at once;
// glibc's allocator returns pages to the kernel only to fault them in again for the next batch.
// mimalloc keeps per-thread free lists and reuses pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "recsys", version, about = "Streaming session recommender")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve recommendations over HTTP on the configured backends until SIGTERM or SIGINT, then
    /// answer the requests in flight and exit.
    Serve(serve::ServeArgs),
    /// Build the item index from the current bundle and switch the served alias to it.
    Index(serve::IndexArgs),
    /// Serve another bundle: its index first (one already built, or a new build), then
    /// `bundles/CURRENT`; running servers swap to the pair without a restart.
    Promote(commands::promotion::PromoteArgs),
    /// Serve the bundle that was current before the last promotion again.
    Rollback(commands::promotion::RollbackArgs),
    /// Rank the current bundle and a challenger on the events archived after the challenger's
    /// training data; exit non-zero if the challenger is worse by more than the tolerance.
    #[cfg(feature = "in-process-model")]
    Gate(commands::promotion::GateArgs),
    /// Archive → data set → challenger → gate → index → promote, once or `--every 1h`.
    #[cfg(feature = "in-process-model")]
    Retrain(commands::retrain::RetrainArgs),
    /// Train a sequence model and write a bundle (made current unless --no-make-current).
    #[cfg(feature = "in-process-model")]
    Train(commands::model::TrainArgs),
    /// Train one configuration over several seeds and report validation (and with --test, test)
    /// NDCG@10 and Recall@10 as mean ± sd.
    #[cfg(feature = "in-process-model")]
    Experiment(commands::experiment::ExperimentArgs),
    /// Evaluate a bundle on the test split (leave-one-out, full ranking) against popularity.
    #[cfg(feature = "in-process-model")]
    Eval(commands::model::EvalArgs),
    /// Serve the embedder over HTTP with the tutorial's BentoML endpoints.
    #[cfg(feature = "in-process-model")]
    ModelServer(commands::model::ModelServerArgs),
    /// Measure embedder latency (one sequence) and throughput (batches of 1, 32, 256).
    #[cfg(feature = "in-process-model")]
    BenchEmbedder(commands::model::BenchEmbedderArgs),
    /// Prepare the API load benchmark: store every user's history of the current bundle's data
    /// set (minus the last 5 items) and write request bodies (a stored user + 1-5 of those items).
    BenchPrepare(serve::BenchPrepareArgs),
    /// Apply interaction events from the Kafka topic (`events.url`) to user state, with dead
    /// letters, live popularity and (when `consumer.push_recommendations`) pushed recommendations.
    Consume(stream::ConsumeArgs),
    /// Send a data set's interactions, in time order, as events to Kafka or to an API.
    Replay(stream::ReplayArgs),
    /// Create the events and items topics and their dead-letter topics on the configured broker
    /// (existing topics are kept).
    CreateTopics(stream::CreateTopicsArgs),
    /// Send catalogue items (NDJSON, one `POST /items` line each) to the items topic; every line
    /// is checked before any is sent.
    PublishItems(stream::PublishItemsArgs),
    /// Stream benchmarks against `events.url` (Kafka) and `state.url` (Redis):
    /// `scripts/bench-stream.sh` starts both and runs this.
    BenchStream(bench_stream::BenchStreamArgs),
    /// How soon and how often items added after training reach personalized answers of a
    /// running API.
    BenchColdStart(bench_cold_start::BenchColdStartArgs),
    /// Write the event archive (or its last days) as a data set to train on.
    ExportEvents(data::ExportEventsArgs),
    /// Print a wire type's JSON Schema (`event`: the interaction event).
    Schema(data::SchemaArgs),
    /// Generate a synthetic data set into `<data-dir>/datasets/<name>/`.
    Synth(data::SynthArgs),
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
    let runtime = || tokio::runtime::Runtime::new();
    match Cli::parse().command {
        Command::Serve(args) => runtime()?.block_on(serve::serve(args)),
        Command::Index(args) => runtime()?.block_on(serve::index(args)),
        Command::Promote(args) => runtime()?.block_on(commands::promotion::promote(args)),
        Command::Rollback(args) => runtime()?.block_on(commands::promotion::rollback(args)),
        #[cfg(feature = "in-process-model")]
        Command::Gate(args) => commands::promotion::gate(args),
        #[cfg(feature = "in-process-model")]
        Command::Retrain(args) => runtime()?.block_on(commands::retrain::retrain(args)),
        Command::BenchPrepare(args) => runtime()?.block_on(serve::bench_prepare(args)),
        #[cfg(feature = "in-process-model")]
        Command::Train(args) => commands::model::train(&args),
        #[cfg(feature = "in-process-model")]
        Command::Experiment(args) => commands::experiment::experiment(args),
        #[cfg(feature = "in-process-model")]
        Command::Eval(args) => commands::model::eval(args),
        #[cfg(feature = "in-process-model")]
        Command::ModelServer(args) => commands::model::model_server(args),
        #[cfg(feature = "in-process-model")]
        Command::BenchEmbedder(args) => commands::model::bench_embedder(args),
        Command::Consume(args) => runtime()?.block_on(stream::consume(args)),
        Command::Replay(args) => runtime()?.block_on(stream::replay_events(args)),
        Command::CreateTopics(args) => runtime()?.block_on(stream::create_topics(args)),
        Command::PublishItems(args) => runtime()?.block_on(stream::publish_items(args)),
        Command::BenchStream(args) => runtime()?.block_on(bench_stream::bench_stream(args)),
        Command::BenchColdStart(args) => {
            runtime()?.block_on(bench_cold_start::bench_cold_start(args))
        }
        Command::ExportEvents(args) => data::export_events(args),
        Command::Schema(args) => data::schema(args),
        Command::Synth(args) => data::synth(args),
    }
}
