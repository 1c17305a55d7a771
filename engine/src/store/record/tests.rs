//! The record's transition and its binary form.

use proptest::prelude::*;

use super::*;

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
    }
}

fn see(record: &mut UserRecord, item: &str) {
    record.apply(
        &AppliedInteraction {
            item: ItemKey::new(item),
            event_time_ms: 1,
            position: None,
            popularity_increment: 0.0,
        },
        limits(),
    );
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
    ) {
        let recent: Vec<&str> = recent.iter().map(String::as_str).collect();
        let earlier: Vec<&str> = earlier.iter().map(String::as_str).collect();
        let original = UserRecord {
            recent_items: keys(&recent).into(),
            earlier_items: keys(&earlier),
            newest_event_time_ms: newest,
            applied_offsets: offsets,
            history_version,
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
