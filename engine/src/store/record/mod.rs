//! One user's state, the transition every backend applies to it, and its compact binary form.
//!
//! Both backends store exactly these bytes (Redis as one string value per user, the embedded
//! store as one redb value) and run exactly this `apply`, so they cannot drift apart.
//!
//! Layout (format 1; integers are LEB128 varints, signed ones zigzag-encoded first):
//!
//! ```text
//! 0x01                         format
//! history_version              u
//! has_newest (0 or 1), then newest_event_time_ms (zigzag) when 1
//! offsets: count, then (partition: zigzag, offset: zigzag) per partition
//! recent_items: count, then items          (most recent last)
//! earlier_items: count, then items         (least recently seen first)
//! item: (n << 1) for a canonical decimal n < 2^62, else (len << 1 | 1) then the UTF-8 bytes
//! ```
//!
//! Item ids of most catalogues are numbers, which then take 1-9 bytes instead of their digits
//! plus a length: a 50-item sequence of MovieLens ids is about 100 bytes.

use std::collections::VecDeque;

use serde::Deserialize;

use super::{AppliedInteraction, StoreLimits, UserState};

const FORMAT: u8 = 1;
/// Numeric item ids at or above this are stored as text (the shifted tag must fit a `u64`).
const NUMERIC_LIMIT: u64 = 1 << 62;

/// An item id as the stream path and the record hold it: canonical decimal ids as their number
/// (no allocation, an integer compare to match, a cheap hash), anything else as text. Displays
/// as the id it was made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ItemKey {
    Number(u64),
    Text(Box<str>),
}

impl ItemKey {
    pub fn new(item_id: &str) -> ItemKey {
        match canonical_number(item_id) {
            Some(number) => ItemKey::Number(number),
            None => ItemKey::Text(item_id.into()),
        }
    }

    pub fn to_id(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for ItemKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemKey::Number(number) => write!(formatter, "{number}"),
            ItemKey::Text(text) => formatter.write_str(text),
        }
    }
}

impl From<&str> for ItemKey {
    fn from(item_id: &str) -> ItemKey {
        ItemKey::new(item_id)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct UserRecord {
    /// At most `max_history` items, most recent last, no consecutive repeat. A deque: on a full
    /// window every applied event drops the oldest item.
    pub recent_items: VecDeque<ItemKey>,
    /// Items seen before that are no longer in `recent_items`, least recently seen first; with
    /// the distinct recent items at most `max_seen` in all. Keeping the recent ones out of this
    /// list halves what a user with a full sequence costs.
    pub earlier_items: Vec<ItemKey>,
    pub newest_event_time_ms: Option<i64>,
    /// `(partition, last applied offset)`.
    pub applied_offsets: Vec<(i32, i64)>,
    /// Applied interactions so far.
    pub history_version: u64,
}

/// Why stored bytes could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    #[error("record ends early")]
    Truncated,
    #[error("record has {0} bytes after its end")]
    TrailingBytes(usize),
    #[error("an item id is not UTF-8")]
    NotUtf8,
    #[error("a number does not fit its field")]
    Overflow,
    #[error("a numeric item id is stored as text")]
    NonCanonicalItem,
    #[error("legacy JSON record: {0}")]
    LegacyJson(String),
}

impl UserRecord {
    /// Applies one interaction; returns whether it was new (not at or before the last applied
    /// offset of its partition).
    pub(crate) fn apply(&mut self, interaction: &AppliedInteraction, limits: StoreLimits) -> bool {
        if let Some(position) = interaction.position {
            match self
                .applied_offsets
                .iter_mut()
                .find(|(partition, _)| *partition == position.partition)
            {
                Some((_, last)) if *last >= position.offset => return false,
                Some((_, last)) => *last = position.offset,
                None => self
                    .applied_offsets
                    .push((position.partition, position.offset)),
            }
        }
        let item = interaction.item.clone();
        if let Some(index) = position_of(&item, &self.earlier_items) {
            self.earlier_items.remove(index);
        }
        if self.recent_items.back() != Some(&item) {
            self.recent_items.push_back(item);
        }
        let excess = self.recent_items.len().saturating_sub(limits.max_history);
        // Items leaving the window were seen more recently than anything already in
        // `earlier_items` (which never holds an item of the window), so they go to its recent
        // end, unless they are still in the window.
        for _ in 0..excess {
            let Some(left) = self.recent_items.pop_front() else {
                break;
            };
            let (front, back) = self.recent_items.as_slices();
            if position_of(&left, front).is_none() && position_of(&left, back).is_none() {
                self.earlier_items.push(left);
            }
        }
        // Counting the distinct recent items is quadratic: only when the plain lengths could
        // be over the limit.
        if self.recent_items.len() + self.earlier_items.len() > limits.max_seen {
            let distinct_recent = distinct_count(self.recent_items.make_contiguous());
            let forget = (distinct_recent + self.earlier_items.len())
                .saturating_sub(limits.max_seen)
                .min(self.earlier_items.len());
            self.earlier_items.drain(..forget);
        }

        self.history_version += 1;
        self.newest_event_time_ms = Some(
            self.newest_event_time_ms
                .map_or(interaction.event_time_ms, |newest| {
                    newest.max(interaction.event_time_ms)
                }),
        );
        true
    }

    /// Every item the user is remembered to have seen, each once.
    pub(crate) fn seen_items(&self) -> Vec<String> {
        let mut seen: Vec<&ItemKey> = self.earlier_items.iter().collect();
        for item in &self.recent_items {
            if !seen.contains(&item) {
                seen.push(item);
            }
        }
        seen.into_iter().map(ItemKey::to_id).collect()
    }

    /// Drops what the user did and keeps where the log was read up to; returns whether there
    /// was anything to drop. The version moves on, so a list pushed before is stale.
    pub(crate) fn forget(&mut self) -> bool {
        let had_items = !self.recent_items.is_empty() || !self.earlier_items.is_empty();
        self.recent_items.clear();
        self.earlier_items.clear();
        self.newest_event_time_ms = None;
        self.history_version += 1;
        had_items
    }

    pub(crate) fn into_state(self) -> UserState {
        UserState {
            seen_items: self.seen_items(),
            recent_items: self.recent_items.iter().map(ItemKey::to_id).collect(),
            newest_event_time_ms: self.newest_event_time_ms,
            history_version: self.history_version,
            cached: None,
        }
    }

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
        let mut bytes = Vec::with_capacity(24 + 12 * self.applied_offsets.len() + items_len);
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
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<UserRecord, RecordError> {
        match bytes.first() {
            None => Ok(UserRecord::default()),
            Some(b'{') => decode_legacy_json(bytes),
            Some(&FORMAT) => {
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
                if reader.at != bytes.len() {
                    return Err(RecordError::TrailingBytes(bytes.len() - reader.at));
                }
                Ok(UserRecord {
                    recent_items,
                    earlier_items,
                    newest_event_time_ms,
                    applied_offsets,
                    history_version,
                })
            }
            Some(&other) => Err(RecordError::UnknownFormat(other)),
        }
    }
}

/// Where `item` is in `items`. Every event of the stream path searches the window and the earlier
/// items like this, so numeric ids (nearly all of them) get a loop of plain integer compares:
/// the derived `==` checks the variant and may call into the text compare at every element.
fn position_of(item: &ItemKey, items: &[ItemKey]) -> Option<usize> {
    match item {
        ItemKey::Number(number) => items
            .iter()
            .position(|seen| matches!(seen, ItemKey::Number(other) if other == number)),
        ItemKey::Text(_) => items.iter().position(|seen| seen == item),
    }
}

fn distinct_count(items: &[ItemKey]) -> usize {
    items
        .iter()
        .enumerate()
        .filter(|(index, item)| !items[..*index].contains(item))
        .count()
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

/// The number a canonical decimal id stands for: digits only, no leading zero (except "0"
/// itself), below `NUMERIC_LIMIT`, so that it prints back to the same text.
fn canonical_number(item: &str) -> Option<u64> {
    let digits = item.as_bytes();
    // 19 digits always fit a u64; a leading zero would not print back.
    if digits.is_empty() || digits.len() > 19 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    // One pass (this runs for every applied event): check and accumulate together.
    let mut number = 0u64;
    for &digit in digits {
        let value = digit.wrapping_sub(b'0');
        if value > 9 {
            return None;
        }
        number = number * 10 + u64::from(value);
    }
    (number < NUMERIC_LIMIT).then_some(number)
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

#[cfg(test)]
mod tests;
