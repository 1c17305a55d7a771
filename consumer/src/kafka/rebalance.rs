//! Group membership: what happens when partitions are assigned (start rewound) or revoked (commit
//! what was applied first), the synchronous commit after each batch, and lag from the client's
//! statistics.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::decode::NextOffsets;

/// How far before its committed offset a newly assigned partition is read again: at least one
/// record batch (librdkafka's `batch.num.messages` is at most 10,000 by default).
pub const REWIND_RECORDS: i64 = 10_000;

/// librdkafka callbacks: commit applied offsets when partitions are revoked, rewind newly
/// assigned partitions, and export lag.
pub struct ConsumerCallbacks {
    pub(super) topic: String,
}

/// `assignment` with each partition's start moved [`REWIND_RECORDS`] before its committed offset
/// (partitions without a commit keep `auto.offset.reset`).
fn rewound(
    consumer: &BaseConsumer<ConsumerCallbacks>,
    assignment: &TopicPartitionList,
) -> KafkaResult<TopicPartitionList> {
    let committed = consumer.committed_offsets(assignment.clone(), Duration::from_secs(10))?;
    let mut start = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(committed) => Offset::Offset((committed - REWIND_RECORDS).max(0)),
            other => other,
        };
        start.add_partition_offset(element.topic(), element.partition(), offset)?;
    }
    Ok(start)
}

impl ClientContext for ConsumerCallbacks {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (partition, stats) in &topic.partitions {
            // -1 is librdkafka's internal "unassigned" partition; lag -1 means unknown.
            if *partition < 0 || stats.consumer_lag < 0 {
                continue;
            }
            metrics::gauge!(
                "recsys_consumer_lag_messages",
                "topic" => self.topic.clone(),
                "partition" => partition.to_string()
            )
            .set(stats.consumer_lag as f64);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for ConsumerCallbacks {
    /// Eager rebalancing (the default `range,roundrobin` assignors) with two additions: applied
    /// offsets are committed before partitions go, and new partitions start rewound.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        error: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let start = rewound(consumer, partitions).unwrap_or_else(|error| {
                    // Without the committed offsets, start where librdkafka would.
                    tracing::warn!(%error, "cannot read committed offsets; not rewinding");
                    partitions.clone()
                });
                if let Err(error) = consumer.assign(&start) {
                    tracing::error!(%error, "partition assignment failed");
                }
                tracing::info!(partitions = start.count(), "partitions assigned");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Offsets are stored only after their batch was applied, so this commits nothing
                // that is not in the store.
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) => {}
                    Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(error) => tracing::warn!(%error, "commit on revoke failed"),
                }
                if let Err(error) = consumer.unassign() {
                    tracing::error!(%error, "partition revocation failed");
                }
                tracing::info!(partitions = partitions.count(), "partitions revoked");
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::error!(error = %code, "rebalance failed");
                let _ = consumer.unassign();
            }
        }
    }
}

/// Stores the next offset of every partition of the batch and commits synchronously. A failed
/// commit is not fatal: the offsets stay stored and go with the next commit (or the one on
/// revocation), and anything redelivered meanwhile is skipped by the store.
pub(super) async fn commit(
    consumer: &Arc<StreamConsumer<ConsumerCallbacks>>,
    topic: &str,
    next_offsets: &NextOffsets,
) {
    let offsets = next_offsets.to_list(topic);
    if let Err(error) = consumer.store_offsets(&offsets) {
        // Partitions revoked while the batch was in flight: their new owner redelivers.
        tracing::info!(%error, "offsets not stored (partitions revoked?)");
    }
    let consumer = Arc::clone(consumer);
    let started = std::time::Instant::now();
    let committed =
        tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
            .await
            .unwrap_or(Err(KafkaError::Canceled));
    metrics::histogram!("recsys_consumer_commit_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    match committed {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => {
            metrics::counter!("recsys_consumer_commit_failures_total").increment(1);
            tracing::warn!(%error, "offset commit failed; it goes with the next one");
        }
    }
}
