//! One user's state, the transition every backend applies to it, and its compact binary form.
//!
//! Both backends store exactly these bytes (Redis as one string value per user, the embedded
//! store as one redb value) and run exactly this `apply`, so they cannot drift apart.
//!
//! Layout (format 2; integers are LEB128 varints, signed ones zigzag-encoded first):
//!
//! ```text
//! 0x02                         format
//! history_version              u
//! has_newest (0 or 1), then newest_event_time_ms (zigzag) when 1
//! offsets: count, then (partition: zigzag, offset: zigzag) per partition
//! recent_items: count, then items          (most recent last)
//! earlier_items: count, then items         (least recently seen first)
//! recent_events: count, then 8 bytes (little-endian digest) each   (most recent last)
//! item: (n << 1) for a canonical decimal n < 2^62, else (len << 1 | 1) then the UTF-8 bytes
//! ```
//!
//! Item ids of most catalogues are numbers, which then take 1-9 bytes instead of their digits
//! plus a length: a 50-item sequence of MovieLens ids is about 100 bytes. Event digests are
//! random, so they are stored whole rather than as varints (which would take 9-10 bytes).
//!
//! Format 1 is format 2 without `recent_events`; it is read (as a record that remembers no
//! event ids) and written back as format 2 on the user's next event, so stores migrate as they
//! are used. The embedded store's JSON records from before format 1 are read the same way.

use std::collections::VecDeque;

use super::{AppliedInteraction, StoreLimits, UserState};

/// Format 1 had no `recent_events`.
const FORMAT_WITHOUT_EVENTS: u8 = 1;
const FORMAT: u8 = 2;
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

/// A 64-bit digest (XXH3) of an event id: what a user record keeps of each recent event, 8 bytes
/// whatever the id's length. Two different ids among a user's last `max_event_ids` events share
/// a digest with a probability of about `max_event_ids / 2^64` per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventDigest(u64);

impl EventDigest {
    pub fn of(event_id: &str) -> EventDigest {
        EventDigest(xxhash_rust::xxh3::xxh3_64(event_id.as_bytes()))
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
    /// Digests of the ids of the last `max_event_ids` applied events, most recent last.
    pub recent_events: VecDeque<EventDigest>,
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
    /// Applies one interaction; returns whether it was new: not at or before the last applied
    /// offset of its partition, and not of an event id among the recent ones. A repeat found by
    /// its id still moves the partition's offset on: that offset is read.
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
        if let Some(event) = interaction.event {
            if self.recent_events.contains(&event) {
                return false;
            }
            self.recent_events.push_back(event);
            while self.recent_events.len() > limits.max_event_ids {
                self.recent_events.pop_front();
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

mod codec;
#[cfg(test)]
mod tests;
