//! The record's binary form (the layout is in `record/mod.rs`) and the older forms it reads.

use std::collections::VecDeque;

use serde::Deserialize;

use super::{
    canonical_number, EventDigest, ItemKey, RecordError, UserRecord, FORMAT, FORMAT_WITHOUT_EVENTS,
};

impl UserRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let items_len: usize = self
            .recent_items
            .iter()
            .chain(&self.earlier_items)
            .map(|item| match item {
                ItemKey::Number(_) => 3,
                ItemKey::Text(text) => text.len() + 1,
            })
            .sum();
        let mut bytes = Vec::with_capacity(
            26 + 12 * self.applied_offsets.len() + items_len + 8 * self.recent_events.len(),
        );
        bytes.push(FORMAT);
        put_varint(&mut bytes, self.history_version);
        match self.newest_event_time_ms {
            None => bytes.push(0),
            Some(time) => {
                bytes.push(1);
                put_varint(&mut bytes, zigzag(time));
            }
        }
        put_varint(&mut bytes, self.applied_offsets.len() as u64);
        for &(partition, offset) in &self.applied_offsets {
            put_varint(&mut bytes, zigzag(i64::from(partition)));
            put_varint(&mut bytes, zigzag(offset));
        }
        put_items(&mut bytes, self.recent_items.iter());
        put_items(&mut bytes, self.earlier_items.iter());
        put_varint(&mut bytes, self.recent_events.len() as u64);
        for EventDigest(digest) in &self.recent_events {
            bytes.extend_from_slice(&digest.to_le_bytes());
        }
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<UserRecord, RecordError> {
        match bytes.first() {
            None => Ok(UserRecord::default()),
            Some(b'{') => decode_legacy_json(bytes),
            Some(&format @ (FORMAT_WITHOUT_EVENTS | FORMAT)) => {
                let mut reader = Reader { bytes, at: 1 };
                let history_version = reader.varint()?;
                let newest_event_time_ms = match reader.varint()? {
                    0 => None,
                    1 => Some(unzigzag(reader.varint()?)),
                    _ => return Err(RecordError::Overflow),
                };
                let offsets = reader.count()?;
                let mut applied_offsets = Vec::with_capacity(offsets);
                for _ in 0..offsets {
                    let partition = i32::try_from(unzigzag(reader.varint()?))
                        .map_err(|_| RecordError::Overflow)?;
                    applied_offsets.push((partition, unzigzag(reader.varint()?)));
                }
                let recent_items = reader.items()?.into();
                let earlier_items = reader.items()?;
                let recent_events = if format == FORMAT {
                    reader.event_digests()?
                } else {
                    VecDeque::new()
                };
                if reader.at != bytes.len() {
                    return Err(RecordError::TrailingBytes(bytes.len() - reader.at));
                }
                Ok(UserRecord {
                    recent_items,
                    earlier_items,
                    newest_event_time_ms,
                    applied_offsets,
                    history_version,
                    recent_events,
                })
            }
            Some(&other) => Err(RecordError::UnknownFormat(other)),
        }
    }
}

/// What the embedded store wrote before format 1: JSON with every seen item and its time.
fn decode_legacy_json(bytes: &[u8]) -> Result<UserRecord, RecordError> {
    #[derive(Deserialize)]
    struct Legacy {
        recent_items: Vec<String>,
        seen: Vec<(String, i64)>,
        newest_event_time_ms: Option<i64>,
        applied_offsets: Vec<(i32, i64)>,
        #[serde(default)]
        history_version: u64,
    }
    let mut legacy: Legacy = serde_json::from_slice(bytes)
        .map_err(|error| RecordError::LegacyJson(error.to_string()))?;
    legacy.seen.sort_by_key(|(_, time)| *time);
    let earlier_items = legacy
        .seen
        .into_iter()
        .map(|(item, _)| item)
        .filter(|item| !legacy.recent_items.contains(item))
        .map(|item| ItemKey::new(&item))
        .collect();
    Ok(UserRecord {
        recent_items: legacy
            .recent_items
            .iter()
            .map(|item| ItemKey::new(item))
            .collect(),
        earlier_items,
        newest_event_time_ms: legacy.newest_event_time_ms,
        applied_offsets: legacy.applied_offsets,
        history_version: legacy.history_version,
        recent_events: VecDeque::new(),
    })
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_varint(bytes: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        bytes.push((value as u8) | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
}

/// A count, then the items: what `Reader::items` reads back.
fn put_items<'a>(bytes: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'a ItemKey>) {
    put_varint(bytes, items.len() as u64);
    for item in items {
        put_item(bytes, item);
    }
}

fn put_item(bytes: &mut Vec<u8>, item: &ItemKey) {
    match item {
        ItemKey::Number(number) => put_varint(bytes, number << 1),
        ItemKey::Text(text) => {
            put_varint(bytes, ((text.len() as u64) << 1) | 1);
            bytes.extend_from_slice(text.as_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or(RecordError::Truncated)?;
            self.at += 1;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(RecordError::Overflow);
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordError::Overflow)
    }

    /// A count of things that each take at least one more byte: never more than what is left,
    /// so a corrupt count cannot make us allocate without bound.
    fn count(&mut self) -> Result<usize, RecordError> {
        let count = self.varint()?;
        if count > (self.bytes.len() - self.at) as u64 {
            return Err(RecordError::Truncated);
        }
        Ok(count as usize)
    }

    fn event_digests(&mut self) -> Result<VecDeque<EventDigest>, RecordError> {
        let count = self.count()?;
        let end = count
            .checked_mul(8)
            .and_then(|len| self.at.checked_add(len))
            .filter(|end| *end <= self.bytes.len())
            .ok_or(RecordError::Truncated)?;
        let digests = self.bytes[self.at..end]
            .chunks_exact(8)
            .map(|chunk| EventDigest(u64::from_le_bytes(chunk.try_into().expect("8 bytes"))))
            .collect();
        self.at = end;
        Ok(digests)
    }

    fn items(&mut self) -> Result<Vec<ItemKey>, RecordError> {
        let count = self.count()?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            let tag = self.varint()?;
            if tag & 1 == 0 {
                items.push(ItemKey::Number(tag >> 1));
                continue;
            }
            let len = usize::try_from(tag >> 1).map_err(|_| RecordError::Overflow)?;
            let end = self
                .at
                .checked_add(len)
                .filter(|end| *end <= self.bytes.len())
                .ok_or(RecordError::Truncated)?;
            let text =
                std::str::from_utf8(&self.bytes[self.at..end]).map_err(|_| RecordError::NotUtf8)?;
            // A number written as text would compare unequal to the same id as a number.
            if canonical_number(text).is_some() {
                return Err(RecordError::NonCanonicalItem);
            }
            items.push(ItemKey::Text(text.into()));
            self.at = end;
        }
        Ok(items)
    }
}
