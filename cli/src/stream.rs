//! The stream-path commands: `consume`, `replay` and `schema`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use consumer::replay::{dataset_events, replay, ReplayOptions, ReplayTarget, ReplayTimestamps};
use engine::config::Config;

/// `recsys consume`: the consumer group until SIGINT/SIGTERM, then the batch in flight is
/// finished and committed and the process exits 0.
pub async fn consume_command(config: Config, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    // Installed first, so a SIGTERM during start-up is a clean stop too (not the default death).
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let brokers = config.events.kafka_brokers().with_context(|| {
        format!(
            "events.url is '{}': `recsys consume` reads a Kafka topic (set events.url = \"kafka://host:port\" or RECSYS__EVENTS__URL)",
            config.events.url
        )
    })?;
    let store = engine::store::open_store(
        &config.state.url,
        &config.state.key_prefix,
        config.state.limits(),
        &config.data_dir,
    )
    .await
    .context("opening the state store")?;
    let retriever = if config.consumer.push_recommendations {
        let (retriever, _refresher) = engine::startup::build_retriever(&config)
            .await
            .context("pushing recommendations needs the model and the index")?;
        Some(retriever)
    } else {
        None
    };
    let applier = Arc::new(consumer::event_applier(&config, store, retriever));
    let handle = consumer::start_consumer(
        &config,
        brokers,
        applier,
        listen.unwrap_or(config.consumer.listen),
    )
    .await?;
    println!(
        "consuming '{}' as group '{}' from {brokers}; health and metrics on http://{}",
        config.events.topic, config.consumer.group_id, handle.listener_addr
    );
    let shutdown = handle.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping: finishing the batch in flight");
        shutdown.cancel();
    });
    let totals = handle.task.await?;
    println!(
        "stopped after {} batches: {} applied, {} duplicates skipped, {} dead letters, {} pushes",
        totals.batches, totals.applied, totals.duplicates, totals.dead_letters, totals.pushed
    );
    Ok(())
}

pub struct ReplayArgs {
    pub dataset: String,
    /// `kafka` (the configured `events.url`) or an API base URL.
    pub to: String,
    pub rate: Option<f64>,
    pub limit: Option<usize>,
    pub original_timestamps: bool,
}

pub async fn replay_command(config: Config, args: ReplayArgs) -> anyhow::Result<()> {
    let dataset = model_server::data::Dataset::load(&config.data_dir, &args.dataset)?;
    let mut events = dataset_events(&dataset.name, &dataset.interactions);
    if let Some(limit) = args.limit {
        events.truncate(limit);
    }
    let target = if args.to == "kafka" {
        let brokers = config.events.kafka_brokers().with_context(|| {
            format!(
                "--to kafka needs events.url = \"kafka://host:port\" (it is '{}')",
                config.events.url
            )
        })?;
        ReplayTarget::Kafka {
            brokers: brokers.to_owned(),
            topic: config.events.topic.clone(),
        }
    } else if args.to.starts_with("http://") || args.to.starts_with("https://") {
        ReplayTarget::Api {
            base_url: args.to.clone(),
            api_key: config.events.api_key.clone(),
        }
    } else {
        anyhow::bail!(
            "--to '{}': expected `kafka` or an API URL such as http://127.0.0.1:8000",
            args.to
        );
    };
    let options = ReplayOptions {
        rate: args.rate,
        timestamps: if args.original_timestamps {
            ReplayTimestamps::Original
        } else {
            ReplayTimestamps::Now
        },
        api_batch: 1_000,
    };
    let total = events.len();
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos}/{len} events [{elapsed_precise}] {per_sec} eta {eta}",
        )
        .expect("a valid template"),
    );
    let started = std::time::Instant::now();
    let sent = replay(events, &target, &options, |done| {
        bar.set_position(done as u64)
    })
    .await?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "replayed {sent} events of {} in {seconds:.1} s ({:.0} events/s) to {}",
        dataset.name,
        sent as f64 / seconds.max(1e-9),
        args.to
    );
    Ok(())
}
