//! `recsys bench-stream`: the consumer's throughput next to the bare client's, the store's and
//! the decoder's shares alone, Redis memory per user, and freshness with pushing on.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use consumer::kafka::ReceivedBatch;
use engine::config::Config;
use engine::event_log::event_applier;
use engine::event_log::replay::{replay, ReplayOptions, ReplayTarget, ReplayTimestamps};

use super::stream_load::{
    consume_and_commit_only, histogram_quantile, produce_all, synthetic_events,
};
use crate::args::ServingArgs;

#[derive(Args)]
pub struct BenchStreamArgs {
    #[command(flatten)]
    serving: ServingArgs,
    /// Events per round: a few seconds of the consumer's steady state (a round much shorter
    /// is dominated by its first and last batches, which overlap nothing).
    #[arg(long, default_value_t = 2_000_000)]
    events: usize,
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Pairs of consume-only and consumer runs over the same events; medians are reported, as
    /// one round on a shared machine varies a lot.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value_t = 1_000.0)]
    freshness_rate: f64,
    #[arg(long, default_value_t = 30.0)]
    freshness_seconds: f64,
}

/// The store's share alone: the same events, decoded, batched and applied as the consumer does
/// (same applier, same batch size, fresh keys), with no broker in the loop.
async fn store_only_events_per_second(
    config: &Config,
    events: &[schemas::InteractionEvent],
) -> anyhow::Result<f64> {
    let mut store_config = config.clone();
    store_config.state.key_prefix = format!("{}-store-only", config.state.key_prefix);
    let store = engine::startup::open_state_store(&store_config).await?;
    let applier = event_applier(&store_config, store, None);
    let logged_at_ms = common::clock::now_ms();
    let batch_events = config.consumer.max_batch_events.max(1);
    let started = std::time::Instant::now();
    for (chunk, chunk_events) in events.chunks(batch_events).enumerate() {
        // Grouped as the consumer's receiving side does, timed with the store's work.
        let mut batch = applier.batch(0, chunk_events.len());
        for (index, event) in chunk_events.iter().enumerate() {
            let position = engine::store::SourcePosition {
                partition: 0,
                offset: (chunk * batch_events + index) as i64,
            };
            batch.push(&event.as_ref(), Some(position), logged_at_ms);
        }
        applier.apply(&mut batch).await?;
    }
    Ok(events.len() as f64 / started.elapsed().as_secs_f64())
}

/// The decoder task's share alone: the same records decoded and grouped into batches as the
/// consumer's decoder does (one thread, no broker, no store), best of three passes.
fn decode_only_events_per_second(
    config: &Config,
    applier: &engine::events::EventApplier,
    events: &[schemas::InteractionEvent],
) -> f64 {
    let payloads: Vec<(Vec<u8>, Vec<u8>)> = events
        .iter()
        .map(|event| {
            let payload = serde_json::to_vec(event).expect("events serialise");
            (event.user_id.as_bytes().to_vec(), payload)
        })
        .collect();
    let batch_events = config.consumer.max_batch_events.max(1);
    let received_ms = common::clock::now_ms();
    let mut best = f64::MAX;
    for _pass in 0..3 {
        let started = std::time::Instant::now();
        for (chunk, records) in payloads.chunks(batch_events).enumerate() {
            let mut batch = ReceivedBatch::new(applier.batch(records.len() / 8, records.len()));
            batch.received_ms = received_ms;
            for (index, (key, payload)) in records.iter().enumerate() {
                batch.push(
                    consumer::record_copies::RecordRef {
                        partition: 0,
                        offset: (chunk * batch_events + index) as i64,
                        timestamp_ms: Some(received_ms),
                        key: Some(key),
                        payload: Some(payload),
                    },
                    config.events.max_event_bytes,
                );
            }
            std::hint::black_box(&batch);
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    events.len() as f64 / best
}

/// User plus system CPU seconds of a process (`self` or a pid) on Linux, from `/proc/<pid>/stat`
/// (whose clock ticks are always 1/100 s); `None` where that cannot be read.
fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start with field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// One run of the real consumer over the benchmark topic, from its first record to its last
/// commit.
struct PipelineRound {
    events_per_second: f64,
    totals: consumer::RunTotals,
    /// Cores this process and redis-server kept busy meanwhile ("n/a" where unreadable).
    consumer_cores: String,
    redis_cores: String,
}

async fn pipeline_round(
    config: &Config,
    brokers: &str,
    events: usize,
    redis_pid: Option<u32>,
) -> anyhow::Result<PipelineRound> {
    use std::sync::atomic::Ordering;

    let store = engine::startup::open_state_store(config).await?;
    let applier = Arc::new(event_applier(config, store, None));
    let handle = consumer::start_consumer(config, brokers, applier, "127.0.0.1:0".parse()?).await?;
    let cpu_seconds = || {
        (
            process_cpu_seconds("self"),
            redis_pid.and_then(|pid| process_cpu_seconds(&pid.to_string())),
        )
    };
    // CPU time is sampled from the first record on, as the rate is.
    while handle.progress.first_record_at.get().is_none() {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let cpu_before = cpu_seconds();
    while handle.progress.committed_records.load(Ordering::Relaxed) < events as u64 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let seconds = handle
        .progress
        .first_record_at
        .get()
        .map(|started| started.elapsed().as_secs_f64())
        .unwrap_or(f64::INFINITY);
    let cpu_after = cpu_seconds();
    handle.shutdown.cancel();
    let totals = handle.task.await?;
    // This process is the consumer then (its producer is done); the broker, not counted here,
    // serves the fetches.
    let cores = |before: Option<f64>, after: Option<f64>| {
        before
            .zip(after)
            .map_or("n/a".to_owned(), |(before, after)| {
                format!("{:.2}", (after - before) / seconds)
            })
    };
    Ok(PipelineRound {
        events_per_second: events as f64 / seconds,
        totals,
        consumer_cores: cores(cpu_before.0, cpu_after.0),
        redis_cores: cores(cpu_before.1, cpu_after.1),
    })
}

/// The middle value (the mean of the two middle ones for an even count); `values` is sorted.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}

/// `recsys bench-stream`: against the configured broker (`events.url`) and Redis (`state.url`),
/// on fresh topics `<events.topic>` and `<events.topic>-freshness` that must exist.
pub async fn bench_stream(args: BenchStreamArgs) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;

    let config = args.serving.load()?;
    let brokers = config
        .events
        .kafka_brokers()
        .context("bench-stream needs events.url = kafka://host:port")?
        .to_owned();
    anyhow::ensure!(
        config.state.url.starts_with("redis"),
        "bench-stream measures the Redis store: set state.url"
    );
    let store = engine::startup::open_state_store(&config).await?;

    // 1. Throughput: the same records, consumed by fresh groups in every round.
    let events = synthetic_events(args.events, args.users, 1_682, 7);
    let produce_seconds = produce_all(&brokers, &config.events.topic, &events).await?;
    println!(
        "produced {} events in {produce_seconds:.1} s ({:.0}/s)",
        events.len(),
        events.len() as f64 / produce_seconds
    );
    let stamp = common::clock::now_ms();
    let redis = engine::store::RedisStore::connect(
        &config.state.url,
        &config.state.key_prefix,
        config.state.limits(),
    )
    .await?;
    let redis_pid = redis.server_process_id().await?;
    // Rounds alternate the two clients, each on a fresh group (and the consumer on a fresh key
    // prefix, so every event is new to the store): one pair on a shared 2-core machine varies
    // by tens of percent, the medians much less.
    let mut ceilings = Vec::new();
    let mut pipelines = Vec::new();
    let mut ratios = Vec::new();
    for round in 1..=args.rounds.max(1) {
        let mut bare_client = consumer::consumer_settings(&config, &brokers, "bench-consume-only");
        bare_client.group_id = format!("bench-raw-{stamp}-{round}");
        let ceiling = consume_and_commit_only(&bare_client, events.len()).await?;
        let mut round_config = config.clone();
        round_config.consumer.group_id = format!("bench-pipeline-{stamp}-{round}");
        round_config.state.key_prefix = format!("{}-{stamp}-{round}", config.state.key_prefix);
        let pipeline = pipeline_round(&round_config, &brokers, events.len(), redis_pid).await?;
        let ratio = pipeline.events_per_second / ceiling;
        println!(
            "round {round}: consume + commit only {ceiling:.0} events/s, consumer into redis {:.0} events/s ({} applied, {} duplicates, {} dead letters), ratio {:.2}, cores busy: consumer {}, redis-server {} (of {})",
            pipeline.events_per_second,
            pipeline.totals.applied,
            pipeline.totals.duplicates,
            pipeline.totals.dead_letters,
            ratio,
            pipeline.consumer_cores,
            pipeline.redis_cores,
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        ceilings.push(ceiling);
        pipelines.push(pipeline.events_per_second);
        ratios.push(ratio);
    }
    let store_only = store_only_events_per_second(&config, &events).await?;
    let rounds = ratios.len();
    println!(
        "consume + commit only:            {:>9.0} events/s (median of {rounds})",
        median(&mut ceilings)
    );
    println!("store only (no broker):           {store_only:>9.0} events/s");
    // Seconds of CPU work: off the runtime's worker while it runs.
    let decode_only = tokio::task::block_in_place(|| {
        decode_only_events_per_second(
            &config,
            &event_applier(&config, Arc::clone(&store), None),
            &events,
        )
    });
    println!("decode + group only (one thread): {decode_only:>9.0} events/s");
    println!(
        "{:<34}{:>9.0} events/s (median of {rounds})",
        format!("consumer into {}:", store.backend()),
        median(&mut pipelines)
    );
    println!(
        "ratio pipeline / consume-only:    {:>9.2} (median of the rounds' ratios)",
        median(&mut ratios)
    );

    // 2. Memory per user with a full 50-item sequence.
    let memory_user = format!("bench-memory-{stamp}");
    let interactions: Vec<engine::store::AppliedInteraction> = (0..config.state.max_history)
        .map(|step| engine::store::AppliedInteraction {
            item: engine::store::ItemKey::new(&format!("{}", 1 + (step * 37) % 1_682)),
            event_time_ms: stamp + step as i64,
            position: Some(engine::store::SourcePosition {
                partition: 0,
                offset: step as i64,
            }),
            event: Some(engine::store::EventDigest::of(&format!(
                "{memory_user}-{step}"
            ))),
            popularity_increment: 0.0,
        })
        .collect();
    store
        .apply(vec![engine::store::UserUpdate {
            user_id: memory_user.clone(),
            interactions,
        }])
        .await?;
    let state_bytes = redis.memory_usage_bytes(&memory_user).await?;
    println!(
        "redis memory for a user with a {}-item sequence: {state_bytes} bytes",
        config.state.max_history,
    );
    // Pushed recommendations live in their own key; reported apart, as they exist only with
    // `consumer.push_recommendations`.
    let pushed = engine::store::CachedRecommendations {
        model_version: "bench".to_owned(),
        reflects_event_time_ms: stamp,
        reflects_history_version: config.state.max_history as u64,
        computed_at_ms: stamp,
        items: (0..config.consumer.push_count)
            .map(|rank| engine::store::CachedItem {
                item_id: format!("{}", 1 + (rank * 53) % 1_682),
                score: 0.5 / (1.0 + rank as f32),
            })
            .collect(),
    };
    store
        .put_cached_recommendations(&[(memory_user.clone(), pushed)])
        .await?;
    println!(
        "  plus {} pushed recommendations: {} bytes more",
        config.consumer.push_count,
        redis.memory_usage_bytes(&memory_user).await? - state_bytes
    );

    // 3. Freshness with pushing on, at a fixed rate of ml-100k-like events.
    let mut freshness_config = config.clone();
    freshness_config.events.topic = format!("{}-freshness", config.events.topic);
    freshness_config.consumer.group_id = format!("bench-freshness-{stamp}");
    freshness_config.consumer.push_recommendations = true;
    let (retriever, _refreshers) = engine::startup::build_retriever(&freshness_config)
        .await
        .context("freshness needs a bundle and an index in the data dir")?;
    let applier = Arc::new(event_applier(
        &freshness_config,
        Arc::clone(&store),
        Some(engine::serving::ServedRetriever::new(retriever)),
    ));
    let handle =
        consumer::start_consumer(&freshness_config, &brokers, applier, "127.0.0.1:0".parse()?)
            .await?;
    // Let the group settle before the clock starts.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let count = (args.freshness_rate * args.freshness_seconds) as usize;
    let live = synthetic_events(count, 943, 1_682, 11);
    // The producer gets its own thread and runtime, as it would be its own process in production:
    // sharing the consumer's runtime, its pacing timers would wait for the consumer's batches and
    // send in bursts, which measures the benchmark rather than the stream path.
    let target = ReplayTarget::Kafka {
        brokers: brokers.clone(),
        topic: freshness_config.events.topic.clone(),
    };
    let rate = args.freshness_rate;
    let producer = std::thread::spawn(move || -> anyhow::Result<usize> {
        let options = ReplayOptions {
            rate: Some(rate),
            timestamps: ReplayTimestamps::Now,
            api_batch: 1,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(replay(live, &target, &options, |_| {}))?)
    });
    tokio::task::spawn_blocking(move || producer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    while handle.progress.committed_records.load(Ordering::Relaxed) < count as u64 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    handle.shutdown.cancel();
    let totals = handle.task.await?;
    let rendered = common::telemetry::prometheus_handle().render();
    let quantile = |q| {
        histogram_quantile(&rendered, "recsys_consumer_freshness_seconds", q)
            .map_or("n/a".to_owned(), |seconds| {
                format!("{:.1} ms", seconds * 1000.0)
            })
    };
    println!(
        "freshness at {:.0} events/s for {:.0} s ({} users pushed): p50 {}, p99 {}",
        args.freshness_rate,
        args.freshness_seconds,
        totals.pushed,
        quantile(0.5),
        quantile(0.99)
    );
    Ok(())
}
