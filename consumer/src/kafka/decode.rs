//! Decoding: each received record becomes a positioned event, grouped by user, or a dead letter
//! with its reason; the batch remembers the offsets to commit once all of them are handled.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use engine::events::{EventApplier, EventBatch};
use engine::store::{SourcePosition, UnreadableUser};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use schemas::{EventLimits, EventRef};

use crate::record_copies::{RecordCopies, RecordRef};

/// A refused record's bytes, copied out of librdkafka's buffers (only dead letters need them).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The record's timestamp (producer create time), ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl RawRecord {
    pub fn from_record(record: RecordRef<'_>) -> RawRecord {
        RawRecord {
            partition: record.partition,
            offset: record.offset,
            key: record.key.map(<[u8]>::to_vec),
            payload: record.payload.map(<[u8]>::to_vec),
            timestamp_ms: record.timestamp_ms,
        }
    }
}

/// The offset to commit for each partition of a batch: one past its last record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextOffsets(BTreeMap<i32, i64>);

impl NextOffsets {
    pub fn observe(&mut self, partition: i32, offset: i64) {
        let next = self.0.entry(partition).or_insert(0);
        *next = (*next).max(offset + 1);
    }

    /// Each partition with the offset to commit for it.
    pub fn iter(&self) -> impl Iterator<Item = (&i32, &i64)> {
        self.0.iter()
    }

    pub fn to_list(&self, topic: &str) -> TopicPartitionList {
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in &self.0 {
            if let Err(error) =
                offsets.add_partition_offset(topic, partition, Offset::Offset(offset))
            {
                tracing::warn!(%error, partition, "cannot record an offset");
            }
        }
        offsets
    }
}

/// A record refused, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub record: RawRecord,
    /// A stable label: a `RejectionReason` or `key_mismatch`.
    pub reason: &'static str,
    pub message: String,
}

/// A received batch, decoded as it arrived: valid events grouped by user with their log
/// positions, dead letters, and the offsets to commit once all of them are handled.
#[derive(Debug)]
pub struct ReceivedBatch {
    pub records: usize,
    pub events: EventBatch,
    pub dead_letters: Vec<DeadLetter>,
    pub next_offsets: NextOffsets,
    /// When its first record arrived (ms since the epoch).
    pub received_ms: i64,
    /// The records as received, kept until the batch is committed: the events of a user whose
    /// state turns out unreadable are dead-lettered as they came.
    pub copies: RecordCopies,
}

impl ReceivedBatch {
    pub fn new(events: EventBatch) -> ReceivedBatch {
        ReceivedBatch {
            records: 0,
            events,
            dead_letters: Vec::new(),
            next_offsets: NextOffsets::default(),
            received_ms: 0,
            copies: RecordCopies::default(),
        }
    }

    /// Dead letters for every event of the batch's users whose stored state cannot be read.
    pub fn unreadable_state_dead_letters(&self, unreadable: &[UnreadableUser]) -> Vec<DeadLetter> {
        let mut why: HashMap<SourcePosition, &UnreadableUser> = HashMap::new();
        for update in self.events.updates() {
            let Some(user) = unreadable
                .iter()
                .find(|user| user.user_id == update.user_id)
            else {
                continue;
            };
            for position in update
                .interactions
                .iter()
                .filter_map(|interaction| interaction.position)
            {
                why.insert(position, user);
            }
        }
        self.copies
            .iter()
            .filter_map(|record| {
                let position = SourcePosition {
                    partition: record.partition,
                    offset: record.offset,
                };
                let user = why.get(&position)?;
                Some(DeadLetter {
                    record: RawRecord::from_record(record),
                    reason: "unreadable_state",
                    message: user.to_string(),
                })
            })
            .collect()
    }

    /// Decodes `record` into an event or a dead letter. A valid event must also be keyed by its
    /// own user id: that key is what keeps a user's events in one partition, in order.
    pub fn push(&mut self, record: RecordRef<'_>, max_event_bytes: usize) {
        self.records += 1;
        self.next_offsets.observe(record.partition, record.offset);
        let limits = EventLimits {
            max_event_bytes,
            now_ms: self.received_ms,
        };
        let event = match EventRef::decode(record.payload.unwrap_or_default(), limits) {
            Ok(event) => event,
            Err(rejection) => {
                self.dead_letters.push(DeadLetter {
                    record: RawRecord::from_record(record),
                    reason: rejection.reason.as_str(),
                    message: rejection.message,
                });
                return;
            }
        };
        if record.key != Some(event.user_id.as_bytes()) {
            self.dead_letters.push(DeadLetter {
                record: RawRecord::from_record(record),
                reason: "key_mismatch",
                message: format!(
                    "the record key must be the user id '{}' (it decides the partition, hence the order of the user's events)",
                    event.user_id
                ),
            });
            return;
        }
        self.events.push(
            &event,
            Some(SourcePosition {
                partition: record.partition,
                offset: record.offset,
            }),
            record.timestamp_ms.unwrap_or(self.received_ms),
        );
    }
}

/// Decodes each batch of copied records into events grouped by user and dead letters, and hands
/// it with its copies to `batches` (the writer, which hands the emptied copies back to the
/// receiver).
pub(super) async fn decode_batches(
    applier: Arc<EventApplier>,
    max_event_bytes: usize,
    mut copied: tokio::sync::mpsc::Receiver<RecordCopies>,
    batches: tokio::sync::mpsc::Sender<ReceivedBatch>,
) {
    // Sized like the last batch: under a backlog batches are alike, and growing vectors and maps
    // of 100,000 entries by doubling copies them about twice over.
    let (mut expected_users, mut expected_events) = (0, 0);
    while let Some(copies) = copied.recv().await {
        let mut batch = ReceivedBatch::new(applier.batch(expected_users, expected_events));
        batch.received_ms = copies.received_ms;
        for record in copies.iter() {
            batch.push(record, max_event_bytes);
        }
        batch.copies = copies;
        expected_users = batch.events.users();
        expected_events = batch.events.len();
        if batches.send(batch).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{OwnedMessage, Timestamp};

    use super::*;

    fn record(offset: i64, key: &str, payload: Option<&str>) -> OwnedMessage {
        OwnedMessage::new(
            payload.map(|payload| payload.as_bytes().to_vec()),
            Some(key.as_bytes().to_vec()),
            "events".into(),
            Timestamp::CreateTime(1_780_000_000_000),
            3,
            offset,
            None,
        )
    }

    #[test]
    fn records_split_into_positioned_events_and_reasoned_dead_letters() {
        let good = r#"{"event_id":"e1","user_id":"7","item_id":"42","event_type":"view","event_time_ms":1780000000000}"#;
        let mut batch = ReceivedBatch::new(EventBatch::with_capacity(
            engine::events::EventWeights::default(),
            engine::popularity::DecayClock::new(24.0),
            0,
            0,
        ));
        batch.received_ms = 1_780_000_000_500;
        for message in [
            record(10, "7", Some(good)),
            record(11, "7", Some("{not json")),
            record(12, "8", Some(good)),
            record(13, "7", None),
        ] {
            batch.push(RecordRef::of(&message), 4096);
        }
        assert_eq!(batch.records, 4);
        assert_eq!(batch.events.len(), 1);
        let updates = batch.events.updates();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].user_id, "7");
        assert_eq!(updates[0].interactions[0].item.to_id(), "42");
        assert_eq!(
            updates[0].interactions[0].position,
            Some(SourcePosition {
                partition: 3,
                offset: 10
            })
        );
        assert_eq!(batch.events.logged_at_ms(), [1_780_000_000_000]);
        let reasons: Vec<(i64, &str)> = batch
            .dead_letters
            .iter()
            .map(|dead_letter| (dead_letter.record.offset, dead_letter.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (11, "invalid_json"),
                (12, "key_mismatch"),
                (13, "invalid_json")
            ]
        );
        // A dead letter keeps the record's bytes for the dead-letter topic.
        assert_eq!(
            batch.dead_letters[0].record.payload.as_deref(),
            Some("{not json".as_bytes())
        );
        // Every record, dead or not, is committed past.
        let offsets = batch.next_offsets.to_list("events");
        assert_eq!(
            offsets
                .find_partition("events", 3)
                .map(|element| element.offset()),
            Some(Offset::Offset(14))
        );
    }
}
