//! The load side of `recsys bench-stream`: synthetic events, producing them as fast as the broker
//! takes them, the bare client that only consumes and commits (the ceiling the consumer is
//! compared with), and reading a quantile back from the exported metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clock::now_ms;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use schemas::{EventType, InteractionEvent};
use tokio_util::sync::CancellationToken;

use consumer::kafka::{receive_batch, ConsumerSettings, NextOffsets};
use engine::event_log::replay::{replay, ReplayOptions, ReplayTarget, ReplayTimestamps};

/// Events of `users` users over `items` items, stamped now (so they are valid and decay little).
pub fn synthetic_events(
    count: usize,
    users: usize,
    items: usize,
    seed: u64,
) -> Vec<InteractionEvent> {
    let mut random = rand::rngs::StdRng::seed_from_u64(seed);
    let now = now_ms();
    (0..count)
        .map(|index| InteractionEvent {
            event_id: format!("bench-{seed}-{index}"),
            user_id: format!("bench-user-{}", random.random_range(0..users)),
            item_id: format!("{}", random.random_range(1..=items)),
            event_type: EventType::ALL[random.random_range(0..4)],
            value: None,
            event_time_ms: now,
        })
        .collect()
}

/// Produces `events` to `topic` as fast as the broker takes them (a replay without pacing, their
/// own timestamps kept); returns the seconds it took.
pub async fn produce_all(
    brokers: &str,
    topic: &str,
    events: &[InteractionEvent],
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let target = ReplayTarget::Kafka {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
    };
    let options = ReplayOptions {
        rate: None,
        timestamps: ReplayTimestamps::Original,
        api_batch: 1,
    };
    replay(events.to_vec(), &target, &options, |_| {}).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// The same client as the consumer (librdkafka, the same batching code, offsets stored and
/// committed after every batch) doing nothing with the records: the ceiling for the pipeline.
/// Returns events per second from the first record to the last commit.
pub async fn consume_and_commit_only(
    settings: &ConsumerSettings,
    expected: usize,
) -> anyhow::Result<f64> {
    let consumer: Arc<StreamConsumer> = Arc::new(settings.client_config().create()?);
    consumer.subscribe(&[&settings.topic])?;
    let never_cancelled = CancellationToken::new();
    let mut consumed = 0;
    let mut first_record_at = None;
    while consumed < expected {
        let mut next_offsets = NextOffsets::default();
        let received = tokio::time::timeout(
            Duration::from_secs(60),
            receive_batch(
                &consumer,
                settings.max_batch_events,
                settings.max_batch_wait,
                // Committing is all this client does with a batch: it is always ready for the
                // next.
                std::future::ready(()),
                &never_cancelled,
                |message| {
                    first_record_at.get_or_insert_with(Instant::now);
                    next_offsets.observe(message.partition(), message.offset());
                },
            ),
        )
        .await??;
        consumer.store_offsets(&next_offsets.to_list(&settings.topic))?;
        let committer = Arc::clone(&consumer);
        tokio::task::spawn_blocking(move || committer.commit_consumer_state(CommitMode::Sync))
            .await??;
        consumed += received;
    }
    let seconds = first_record_at
        .map(|started| started.elapsed().as_secs_f64())
        .unwrap_or(f64::INFINITY);
    Ok(consumed as f64 / seconds)
}

/// `q`-quantile of a Prometheus histogram in `rendered` exposition text, interpolated linearly
/// inside its bucket as Prometheus's `histogram_quantile` does.
pub fn histogram_quantile(rendered: &str, metric: &str, q: f64) -> Option<f64> {
    let prefix = format!("{metric}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = rendered
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| {
            let bound = line.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
            Some((bound, count))
        })
        .collect();
    buckets.sort_by(|left, right| left.0.total_cmp(&right.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for (bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(previous.0);
            }
            let inside = (rank - previous.1) / (count - previous.1).max(f64::MIN_POSITIVE);
            return Some(previous.0 + (bound - previous.0) * inside);
        }
        previous = (bound, count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::histogram_quantile;

    #[test]
    fn quantiles_interpolate_inside_buckets_like_prometheus() {
        let rendered = "\
x_bucket{le=\"0.01\"} 50
x_bucket{le=\"0.02\"} 90
x_bucket{le=\"0.05\"} 100
x_bucket{le=\"+Inf\"} 100
x_sum 1.5
x_count 100
";
        assert_eq!(histogram_quantile(rendered, "x", 0.5), Some(0.01));
        let p70 = histogram_quantile(rendered, "x", 0.7).unwrap();
        assert!((p70 - 0.015).abs() < 1e-12, "{p70}");
        let p99 = histogram_quantile(rendered, "x", 0.99).unwrap();
        assert!((p99 - 0.047).abs() < 1e-12, "{p99}");
        assert_eq!(histogram_quantile("", "x", 0.5), None);
    }
}
