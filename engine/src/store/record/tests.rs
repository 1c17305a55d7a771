//! The record's transition and its binary form.

use proptest::prelude::*;

use super::*;
use crate::store::SourcePosition;

fn keys(items: &[&str]) -> Vec<ItemKey> {
    items.iter().map(|item| ItemKey::new(item)).collect()
}

fn ids<'a>(record_items: impl IntoIterator<Item = &'a ItemKey>) -> Vec<String> {
    record_items.into_iter().map(ItemKey::to_id).collect()
}

fn record(recent: &[&str], earlier: &[&str]) -> UserRecord {
    UserRecord {
        recent_items: keys(recent).into(),
        earlier_items: keys(earlier),
        newest_event_time_ms: Some(1_764_000_000_000),
        applied_offsets: vec![(0, 17), (3, 1_000_000)],
        history_version: 412,
        recent_events: ["e-1", "e-2"].map(EventDigest::of).into(),
    }
}

#[test]
fn ids_that_only_look_numeric_keep_their_text() {
    let tricky = [
        "0",
        "007",
        "42",
        "-1",
        "+5",
        "1e3",
        " 7",
        "٣",
        "4611686018427387904",
        "",
    ];
    let original = record(&tricky, &["18446744073709551615", "99999999999999999999"]);
    assert_eq!(UserRecord::decode(&original.encode()).unwrap(), original);
}

#[test]
fn numeric_ids_take_two_bytes_each() {
    let items: Vec<ItemKey> = (0..50)
        .map(|n| ItemKey::Number(1 + n * 37 % 1682))
        .collect();
    let full = UserRecord {
        recent_items: items.into(),
        recent_events: VecDeque::new(),
        ..record(&[], &[])
    };
    let encoded = full.encode();
    assert!(encoded.len() <= 125, "{} bytes", encoded.len());
}

#[test]
fn damaged_bytes_are_errors_not_panics() {
    let encoded = record(&["a", "12"], &["b"]).encode();
    for end in 1..encoded.len() {
        assert!(UserRecord::decode(&encoded[..end]).is_err(), "cut at {end}");
    }
    let mut longer = encoded.clone();
    longer.push(0);
    assert_eq!(
        UserRecord::decode(&longer),
        Err(RecordError::TrailingBytes(1))
    );
    assert_eq!(
        UserRecord::decode(&[9, 0]),
        Err(RecordError::UnknownFormat(9))
    );
}

#[test]
fn legacy_json_records_keep_their_seen_items_in_time_order() {
    let legacy = br#"{"recent_items":["c","d"],"seen":[["d",40],["a",10],["c",30],["b",20]],
        "newest_event_time_ms":40,"applied_offsets":[[0,9]],"history_version":4,
        "cached":null}"#;
    let decoded = UserRecord::decode(legacy).unwrap();
    assert_eq!(ids(&decoded.recent_items), ["c", "d"]);
    assert_eq!(ids(&decoded.earlier_items), ["a", "b"]);
    assert_eq!(decoded.applied_offsets, [(0, 9)]);
    assert_eq!(decoded.history_version, 4);
}

fn limits() -> StoreLimits {
    StoreLimits {
        max_history: 4,
        max_seen: 6,
        max_event_ids: 3,
    }
}

fn see(record: &mut UserRecord, item: &str) {
    record.apply(
        &AppliedInteraction {
            item: ItemKey::new(item),
            event_time_ms: 1,
            position: None,
            event: None,
            popularity_increment: 0.0,
        },
        limits(),
    );
}

/// Applies event `event_id` of item `item` at `offset` of partition 0; whether it was new.
fn apply_event(record: &mut UserRecord, event_id: &str, item: &str, offset: i64) -> bool {
    record.apply(
        &AppliedInteraction {
            item: ItemKey::new(item),
            event_time_ms: offset,
            position: Some(SourcePosition {
                partition: 0,
                offset,
            }),
            event: Some(EventDigest::of(event_id)),
            popularity_increment: 0.0,
        },
        limits(),
    )
}

#[test]
fn an_event_id_seen_recently_is_applied_once_even_at_a_later_offset() {
    let mut record = UserRecord::default();
    assert!(apply_event(&mut record, "e1", "a", 1));
    assert!(apply_event(&mut record, "e2", "b", 2));
    // Produced again: a new offset, the same event.
    assert!(!apply_event(&mut record, "e1", "a", 3));
    assert_eq!(ids(&record.recent_items), ["a", "b"]);
    assert_eq!(record.history_version, 2);
    // The repeat's offset was read all the same: redelivering it is skipped by offset.
    assert_eq!(record.applied_offsets, [(0, 3)]);
    assert!(apply_event(&mut record, "e3", "a", 4));
    assert_eq!(ids(&record.recent_items), ["a", "b", "a"]);
}

#[test]
fn only_the_last_max_event_ids_ids_are_remembered() {
    let mut record = UserRecord::default();
    for (offset, event_id) in ["e1", "e2", "e3", "e4"].into_iter().enumerate() {
        assert!(apply_event(&mut record, event_id, "x", offset as i64));
    }
    assert_eq!(
        record.recent_events,
        ["e2", "e3", "e4"].map(EventDigest::of)
    );
    // e1 fell out of the window of 3: it would be applied again; e2 is still known.
    assert!(!apply_event(&mut record, "e2", "x", 10));
    assert!(apply_event(&mut record, "e1", "x", 11));
}

#[test]
fn format_1_records_are_read_as_remembering_no_event_ids() {
    // 0x01, version 5, no newest time, no offsets, recent [7], earlier [].
    let format_1 = [1, 5, 0, 0, 1, 14, 0];
    let decoded = UserRecord::decode(&format_1).unwrap();
    assert_eq!(ids(&decoded.recent_items), ["7"]);
    assert_eq!(decoded.history_version, 5);
    assert!(decoded.recent_events.is_empty());
    // Written back in the current format, with what the next event adds.
    let mut migrated = decoded.clone();
    assert!(apply_event(&mut migrated, "e9", "8", 0));
    assert_eq!(migrated.encode()[0], FORMAT);
    assert_eq!(UserRecord::decode(&migrated.encode()).unwrap(), migrated);
}

#[test]
fn items_leaving_the_window_are_remembered_and_the_least_recent_forgotten() {
    let mut record = UserRecord::default();
    for item in ["a", "b", "c", "d", "e", "f", "a", "g", "h"] {
        see(&mut record, item);
    }
    assert_eq!(ids(&record.recent_items), ["f", "a", "g", "h"]);
    // a, b, c, d, e left the window in that order, a came back (so it is recent, not
    // earlier), and only two fit next to four recent ones.
    assert_eq!(ids(&record.earlier_items), ["d", "e"]);
    assert_eq!(record.history_version, 9);
}

proptest! {
    #[test]
    fn any_record_round_trips(
        recent in proptest::collection::vec("[0-9]{0,4}|[a-z0-9_-]{1,12}|\\PC{0,6}", 0..60),
        earlier in proptest::collection::vec("[0-9]{1,20}|\\PC{1,8}", 0..30),
        newest in proptest::option::of(any::<i64>()),
        offsets in proptest::collection::vec((any::<i32>(), any::<i64>()), 0..5),
        history_version in any::<u64>(),
        recent_events in proptest::collection::vec(any::<u64>(), 0..70),
    ) {
        let recent: Vec<&str> = recent.iter().map(String::as_str).collect();
        let earlier: Vec<&str> = earlier.iter().map(String::as_str).collect();
        let original = UserRecord {
            recent_items: keys(&recent).into(),
            earlier_items: keys(&earlier),
            newest_event_time_ms: newest,
            applied_offsets: offsets,
            history_version,
            recent_events: recent_events.into_iter().map(EventDigest).collect(),
        };
        prop_assert_eq!(UserRecord::decode(&original.encode()).unwrap(), original);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = UserRecord::decode(&bytes);
    }

    #[test]
    fn the_seen_items_never_exceed_the_limit_and_include_the_window(
        items in proptest::collection::vec("[a-j]", 1..80),
    ) {
        let mut record = UserRecord::default();
        for item in &items {
            see(&mut record, item);
        }
        let seen = record.seen_items();
        prop_assert!(seen.len() <= limits().max_seen.max(limits().max_history));
        for item in ids(&record.recent_items) {
            prop_assert!(seen.contains(&item));
        }
        prop_assert!(record.earlier_items.iter().all(|item| !record.recent_items.contains(item)));
        prop_assert!(seen.contains(items.last().unwrap()));
    }
}
