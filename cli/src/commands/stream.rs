//! The stream-path commands: `consume`, `replay`, `create-topics` and `publish-items`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use engine::config::Config;
use engine::event_log::replay::{
    dataset_events, replay, ReplayOptions, ReplayTarget, ReplayTimestamps,
};
use engine::event_log::{event_applier, topics};

use crate::args::ServingArgs;

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    serving: ServingArgs,
    /// Overrides `consumer.listen` (the consumer's /healthz, /readyz and /metrics).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
pub struct ReplayArgs {
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
    /// Leave out the first N events (in time order): `--limit 80000` then `--skip 80000` replay
    /// a data set in two parts.
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// Only N events (after the skipped ones).
    #[arg(long)]
    limit: Option<usize>,
    /// Keep the data set's event times (by default each event is stamped when sent, so
    /// live popularity moves).
    #[arg(long)]
    original_timestamps: bool,
}

#[derive(Args)]
pub struct PublishItemsArgs {
    #[command(flatten)]
    serving: ServingArgs,
    /// NDJSON file of items (default: standard input).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct CreateTopicsArgs {
    #[command(flatten)]
    serving: ServingArgs,
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    #[arg(long, default_value_t = 1)]
    replication: i32,
}

/// `recsys consume`: the consumer group until SIGINT/SIGTERM, then the batch in flight is
/// finished and committed and the process exits 0.
pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    // Installed first, so a SIGTERM during start-up is a clean stop too (not the default death).
    let stop_requested = common::shutdown::signal();
    let config = args.serving.load()?;
    let _warm =
        super::keep_memory_resident_and_warm(config.lock_memory, config.memory_warm_interval_secs);
    let brokers = config.events.kafka_brokers().with_context(|| {
        format!(
            "events.url is '{}': `recsys consume` reads a Kafka topic (set events.url = \"kafka://host:port\" or RECSYS__EVENTS__URL)",
            config.events.url
        )
    })?;
    let store = engine::startup::open_state_store(&config)
        .await
        .context("opening the state store")?;
    let retriever = if config.consumer.push_recommendations {
        let (retriever, _refreshers) = engine::startup::build_retriever(&config)
            .await
            .context("pushing recommendations needs the model and the index")?;
        // Pushing lists scored against another model's item vectors would fill every user's
        // cache slot with noise; refuse, as the API answers only popular items then.
        if let Some(problem) = retriever.pairing_problem() {
            anyhow::bail!(
                "pushing recommendations needs an index built for the model: {problem} \
                 (or set consumer.push_recommendations = false)"
            );
        }
        let served = engine::serving::ServedRetriever::new(retriever);
        if config.model.reload_interval_ms > 0 && config.model.bundle.is_none() {
            engine::serving::spawn_bundle_watcher(
                config.clone(),
                Arc::clone(&served),
                std::time::Duration::from_millis(config.model.reload_interval_ms),
            );
        }
        Some(served)
    } else {
        None
    };
    let applier = Arc::new(event_applier(&config, store, retriever));
    let handle = consumer::start_consumer(
        &config,
        brokers,
        applier,
        args.listen.unwrap_or(config.consumer.listen),
    )
    .await?;
    println!(
        "consuming '{}' as group '{}' from {}; health and metrics on http://{}",
        config.events.topic,
        config.consumer.group_id,
        engine::event_log::broker_hosts(brokers),
        handle.listener_addr
    );
    if handle.archiver_task.is_some() {
        println!(
            "and archiving the events into {}",
            config.archive_dir().display()
        );
    }
    if handle.catalogue_task.is_some() {
        println!(
            "and the items topic '{}' into the catalogue",
            config.catalogue.topic
        );
    }
    let shutdown = handle.shutdown.clone();
    tokio::spawn(async move {
        stop_requested.await;
        tracing::info!("stopping: finishing the batch in flight");
        shutdown.cancel();
    });
    let totals = handle.task.await?;
    // One consumer failing stops the other too: the process exits and is restarted whole.
    handle.shutdown.cancel();
    println!(
        "stopped after {} batches: {} applied, {} duplicates skipped, {} dead letters, {} pushes",
        totals.batches, totals.applied, totals.duplicates, totals.dead_letters, totals.pushed
    );
    let catalogue_failure = match handle.catalogue_task {
        Some(task) => {
            let items = task.await?;
            println!(
                "items topic: {} items stored, {} older records skipped, {} dead letters",
                items.upserted, items.stale, items.dead_letters
            );
            items.failure
        }
        None => None,
    };
    if let Some(task) = handle.archiver_task {
        let archived = task.await?;
        println!(
            "event archive: {} events in {} files",
            archived.archived, archived.files
        );
    }
    match (totals.failure, catalogue_failure) {
        (Some(reason), _) => anyhow::bail!("the consumer stopped: {reason}"),
        (None, Some(reason)) => anyhow::bail!("the items consumer stopped: {reason}"),
        (None, None) => Ok(()),
    }
}

pub async fn replay_events(args: ReplayArgs) -> anyhow::Result<()> {
    let config = args.serving.load()?;
    let dataset = dataset::Dataset::load(&config.data_dir, &args.dataset)?;
    let mut events = dataset_events(&dataset.name, &dataset.interactions);
    events.drain(..args.skip.min(events.len()));
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

pub async fn create_topics(args: CreateTopicsArgs) -> anyhow::Result<()> {
    let config: Config = args.serving.load()?;
    let brokers = config.events.kafka_brokers().with_context(|| {
        format!(
            "events.url is '{}': topics live on a Kafka broker (kafka://host:port)",
            config.events.url
        )
    })?;
    let mut topics = vec![
        config.events.topic.as_str(),
        config.events.dead_letter_topic.as_str(),
    ];
    if !config.catalogue.topic.is_empty() {
        topics.extend([
            config.catalogue.topic.as_str(),
            config.catalogue.dead_letter_topic.as_str(),
        ]);
    }
    for (topic, outcome) in
        topics::create_topics(brokers, &topics, args.partitions, args.replication).await?
    {
        println!("{topic}: {outcome:?}");
    }
    Ok(())
}

pub async fn publish_items(args: PublishItemsArgs) -> anyhow::Result<()> {
    let config: Config = args.serving.load()?;
    let brokers = config.events.kafka_brokers().with_context(|| {
        format!(
            "events.url is '{}': the items topic lives on a Kafka broker (kafka://host:port); without one, POST /items",
            config.events.url
        )
    })?;
    anyhow::ensure!(
        !config.catalogue.topic.is_empty(),
        "catalogue.topic is empty: no items topic is configured"
    );
    let text = match &args.file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => std::io::read_to_string(std::io::stdin()).context("reading standard input")?,
    };
    let mut items = Vec::new();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > config.catalogue.max_item_bytes {
            problems.push(format!(
                "line {}: {} bytes, the limit is {} (catalogue.max_item_bytes)",
                index + 1,
                line.len(),
                config.catalogue.max_item_bytes
            ));
            continue;
        }
        match schemas::ItemUpsert::decode(line.as_bytes()) {
            Ok(item) => items.push(item),
            Err(problem) => problems.push(format!("line {}: {problem}", index + 1)),
        }
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "{} of {} items are invalid, none sent:\n{}",
            problems.len(),
            items.len() + problems.len(),
            problems.join("\n")
        );
    }
    let sent =
        engine::event_log::items::publish_items(brokers, &config.catalogue.topic, &items).await?;
    println!("{sent} items sent to '{}'", config.catalogue.topic);
    Ok(())
}
