//! `recsys consume`: the Kafka consumer group of the stream path. Interaction events from the
//! topic are applied to user state through the engine's `EventApplier` (the same one the API's
//! in-process bus uses), what cannot be applied goes to the dead-letter topic, and offsets are
//! committed only after both. Live popularity and pushed recommendations ride along. The items
//! topic, when configured, is applied to the live catalogue by a consumer of its own
//! (`kafka::CatalogueConsumer`).

pub mod health;
pub mod kafka;
pub mod record_copies;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use engine::catalogue::CatalogueStore;
use engine::config::Config;
use engine::events::EventApplier;
use tokio_util::sync::CancellationToken;

pub use health::Health;
pub use kafka::{
    ArchiverSettings, ArchiverTotals, CatalogueConsumer, CatalogueTotals, ConsumerProgress,
    ConsumerSettings, EventArchiver, EventConsumer, RunTotals,
};

/// The events group's settings. `instance_id` is this process's static member id
/// ([`instance_id`]).
pub fn consumer_settings(config: &Config, brokers: &str, instance_id: &str) -> ConsumerSettings {
    ConsumerSettings {
        brokers: brokers.to_owned(),
        topic: config.events.topic.clone(),
        dead_letter_topic: config.events.dead_letter_topic.clone(),
        group_id: config.consumer.group_id.clone(),
        max_batch_events: config.consumer.max_batch_events,
        max_batch_wait: Duration::from_millis(config.consumer.max_batch_wait_ms),
        max_event_bytes: config.events.max_event_bytes,
        retry: config.consumer.retry_policy(),
        session_timeout: Duration::from_millis(config.consumer.session_timeout_ms),
        instance_id: Some(instance_id.to_owned()),
        max_poll_interval: Duration::from_millis(config.consumer.max_poll_interval_ms),
        fetch_wait_max: Duration::from_millis(config.consumer.fetch_wait_max_ms),
    }
}

/// The items topic's consumer settings: its own group (`<consumer.group_id>.catalogue`), so
/// each item record is applied by one member however many processes consume.
pub fn catalogue_consumer_settings(
    config: &Config,
    brokers: &str,
    instance_id: &str,
) -> ConsumerSettings {
    ConsumerSettings {
        topic: config.catalogue.topic.clone(),
        dead_letter_topic: config.catalogue.dead_letter_topic.clone(),
        group_id: format!("{}.catalogue", config.consumer.group_id),
        max_event_bytes: config.catalogue.max_item_bytes,
        ..consumer_settings(config, brokers, instance_id)
    }
}

/// The archiver's settings: a group of its own (`<consumer.group_id>.archive`), reading the
/// events topic at its own pace.
pub fn archiver_settings(config: &Config, brokers: &str, instance_id: &str) -> ConsumerSettings {
    ConsumerSettings {
        group_id: format!("{}.archive", config.consumer.group_id),
        ..consumer_settings(config, brokers, instance_id)
    }
}

/// The archive `recsys consume` writes: `archive.dir`, files named after this host and group.
pub fn event_archive(config: &Config) -> archive::EventArchive {
    archive::EventArchive::new(
        config.archive_dir(),
        &format!("{}-{}", host_name(), config.consumer.group_id),
    )
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

/// File under the data dir that keeps this deployment's static member id.
const INSTANCE_ID_FILE: &str = "consumer-instance-id";

/// This process's static member id: `consumer.instance_id`, or else the one kept in the data
/// dir, made on first start from the host name and the time (so it survives restarts, which is
/// what lets a restarted member take its partitions straight back).
pub fn instance_id(config: &Config) -> std::io::Result<String> {
    if !config.consumer.instance_id.is_empty() {
        return Ok(config.consumer.instance_id.clone());
    }
    let path = config.data_dir.join(INSTANCE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(kept) if !kept.trim().is_empty() => return Ok(kept.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let made = format!("{}-{:x}", host_name(), common::clock::now_ms());
    std::fs::create_dir_all(&config.data_dir)?;
    common::fs::write_atomically(&path, made.as_bytes())?;
    Ok(made)
}

/// A running consumer: its listener's address and the tasks that end after `shutdown` fired and
/// the batch in flight was committed.
pub struct ConsumerHandle {
    pub listener_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub progress: Arc<ConsumerProgress>,
    pub task: tokio::task::JoinHandle<RunTotals>,
    /// The items topic's consumer, when `catalogue.topic` is set.
    pub catalogue_task: Option<tokio::task::JoinHandle<CatalogueTotals>>,
    /// The archiver, when `archive.enabled`.
    pub archiver_task: Option<tokio::task::JoinHandle<ArchiverTotals>>,
}

/// Starts the consumer group of the events topic, the one of the items topic (when
/// `catalogue.topic` is set), the archiver (when `archive.enabled`) and their HTTP listener (`/healthz`, `/readyz`, `/metrics`).
pub async fn start_consumer(
    config: &Config,
    brokers: &str,
    applier: Arc<EventApplier>,
    listen: SocketAddr,
) -> anyhow::Result<ConsumerHandle> {
    let health = Health::starting();
    let shutdown = CancellationToken::new();
    let instance_id = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || instance_id(&config)).await??
    };
    let catalogue_consumer = if config.catalogue.topic.is_empty() {
        None
    } else {
        let store: Arc<dyn CatalogueStore> = applier.store().clone();
        Some(CatalogueConsumer::new(
            catalogue_consumer_settings(config, brokers, &instance_id),
            config.catalogue.max_item_bytes,
            store,
            Health::starting(),
            shutdown.clone(),
        )?)
    };
    let archiver = if config.archive.enabled {
        Some(EventArchiver::new(
            archiver_settings(config, brokers, &instance_id),
            ArchiverSettings {
                flush_interval: Duration::from_millis(config.archive.flush_interval_ms),
                max_buffered_events: config.archive.max_buffered_events,
                retention_days: config.archive.retention_days,
            },
            Arc::new(event_archive(config)),
            Health::starting(),
            shutdown.clone(),
        )?)
    } else {
        None
    };
    let mut healths = vec![Arc::clone(&health)];
    healths.extend(catalogue_consumer.as_ref().map(CatalogueConsumer::health));
    healths.extend(archiver.as_ref().map(EventArchiver::health));
    let (listener_addr, listener) =
        health::spawn_listener(listen, healths, common::telemetry::prometheus_handle()).await?;
    let consumer = EventConsumer::new(
        consumer_settings(config, brokers, &instance_id),
        applier,
        health,
        shutdown.clone(),
    )?;
    let progress = consumer.progress();
    let task = tokio::spawn(async move {
        let totals = consumer.run().await;
        listener.abort();
        totals
    });
    let catalogue_task =
        catalogue_consumer.map(|consumer| tokio::spawn(async move { consumer.run().await }));
    let archiver_task = archiver.map(|archiver| tokio::spawn(async move { archiver.run().await }));
    Ok(ConsumerHandle {
        listener_addr,
        shutdown,
        progress,
        task,
        catalogue_task,
        archiver_task,
    })
}
