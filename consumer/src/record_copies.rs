//! Received records copied out of librdkafka's buffers into one reusable buffer per batch.
//!
//! The receiving task does only this per record (about what the benchmark's consume-only client
//! does, plus a copy of the record's bytes); decoding, validation and grouping by user run in the
//! next task, on another core. One task can poll librdkafka's queue only so fast, so decoding
//! there would make receiving the pipeline's bottleneck.

use std::ops::Range;

use rdkafka::message::Message;

/// A record's fields, borrowed from librdkafka's buffer or from a [`RecordCopies`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordRef<'a> {
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (producer create time), ms since the epoch.
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

impl<'a> RecordRef<'a> {
    pub fn of(message: &'a impl Message) -> RecordRef<'a> {
        RecordRef {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key(),
            payload: message.payload(),
        }
    }
}

/// The records of one batch, their keys and payloads in one buffer. Cleared and reused batch
/// after batch, so a steady stream copies into memory that is already mapped.
#[derive(Debug, Default)]
pub struct RecordCopies {
    bytes: Vec<u8>,
    records: Vec<CopiedRecord>,
    /// When the batch's first record arrived (ms since the epoch).
    pub received_ms: i64,
}

#[derive(Debug, Clone)]
struct CopiedRecord {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
}

impl RecordCopies {
    pub fn push(&mut self, record: RecordRef<'_>) {
        let key = record.key.map(|key| self.copy(key));
        let payload = record.payload.map(|payload| self.copy(payload));
        self.records.push(CopiedRecord {
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key,
            payload,
        });
    }

    fn copy(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
        self.received_ms = 0;
    }

    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> {
        self.records.iter().map(|record| RecordRef {
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key.clone().map(|range| &self.bytes[range]),
            payload: record.payload.clone().map(|range| &self.bytes[range]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_they_went_in_and_a_cleared_batch_is_empty() {
        let records = [
            RecordRef {
                partition: 2,
                offset: 40,
                timestamp_ms: Some(1_780_000_000_000),
                key: Some(b"u1"),
                payload: Some(br#"{"a":1}"#),
            },
            RecordRef {
                partition: 0,
                offset: 7,
                timestamp_ms: None,
                key: None,
                payload: Some(b""),
            },
            RecordRef {
                partition: 1,
                offset: 0,
                timestamp_ms: Some(5),
                key: Some(b"u2"),
                payload: None,
            },
        ];
        let mut copies = RecordCopies::default();
        for record in records {
            copies.push(record);
        }
        assert_eq!(copies.iter().collect::<Vec<_>>(), records);
        copies.clear();
        assert!(copies.is_empty());
        assert_eq!(copies.iter().count(), 0);
    }
}
