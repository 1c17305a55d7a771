use schemas::{EventType, InteractionEvent};

use super::*;

const DAY: i64 = MS_PER_DAY;
/// 2026-12-01T00:00:00Z.
const DEC_1: i64 = 1_796_083_200_000;

fn event(id: &str, user: &str, item: &str, time_ms: i64) -> ArchivedEvent {
    ArchivedEvent {
        event: InteractionEvent {
            event_id: id.to_owned(),
            user_id: user.to_owned(),
            item_id: item.to_owned(),
            event_type: EventType::Rating,
            value: Some(4.0),
            event_time_ms: time_ms,
        },
        position: Some((0, time_ms - DEC_1)),
    }
}

fn ids(events: &[InteractionEvent]) -> Vec<&str> {
    events.iter().map(|event| event.event_id.as_str()).collect()
}

#[test]
fn events_come_back_as_written_in_time_order_by_day() {
    let dir = tempfile::tempdir().unwrap();
    let archive = EventArchive::new(dir.path(), "host-1");
    let mut unrated = event("c", "u2", "i3", DEC_1 + DAY + 5);
    unrated.event.event_type = EventType::Click;
    unrated.event.value = None;
    unrated.position = None;
    let written = archive
        .append(&[
            event("b", "u1", "i2", DEC_1 + 20),
            unrated.clone(),
            event("a", "u1", "i1", DEC_1 + 10),
        ])
        .unwrap();
    assert_eq!(written.len(), 2, "one file per day");
    assert!(
        written[0].to_str().unwrap().contains("date=2026-12-01"),
        "{written:?}"
    );
    assert!(
        written[1].to_str().unwrap().contains("date=2026-12-02"),
        "{written:?}"
    );
    let read = archive.read(None, None).unwrap();
    assert_eq!(ids(&read), ["a", "b", "c"]);
    assert_eq!(
        read[2], unrated.event,
        "every field survives, absent ones too"
    );
    assert_eq!(read[0], event("a", "u1", "i1", DEC_1 + 10).event);
}

#[test]
fn a_window_reads_only_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let archive = EventArchive::new(dir.path(), "w");
    archive
        .append(&[
            event("old", "u", "i1", DEC_1 - DAY),
            event("in", "u", "i2", DEC_1 + 100),
            event("edge", "u", "i3", DEC_1 + DAY),
        ])
        .unwrap();
    let read = archive.read(Some(DEC_1), Some(DEC_1 + DAY)).unwrap();
    assert_eq!(ids(&read), ["in"], "since is inclusive, until exclusive");
}

#[test]
fn an_event_archived_twice_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    // Two writers (a batch redelivered to another consumer) and one writer twice.
    let first = EventArchive::new(dir.path(), "consumer-a");
    let second = EventArchive::new(dir.path(), "consumer-b");
    let batch = [
        event("x", "u", "i1", DEC_1),
        event("y", "u", "i2", DEC_1 + 1),
    ];
    first.append(&batch).unwrap();
    first.append(&batch).unwrap();
    second.append(&batch[1..]).unwrap();
    assert_eq!(ids(&first.read(None, None).unwrap()), ["x", "y"]);
}

#[test]
fn erasing_a_user_removes_their_events_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let archive = EventArchive::new(dir.path(), "w");
    archive
        .append(&[
            event("1", "leaver", "i1", DEC_1),
            event("2", "stayer", "i1", DEC_1 + 1),
            event("3", "leaver", "i2", DEC_1 + DAY),
        ])
        .unwrap();
    assert_eq!(archive.erase_user("leaver", DEC_1 + DAY).unwrap(), 2);
    let read = archive.read(None, None).unwrap();
    assert_eq!(ids(&read), ["2"]);
    assert_eq!(archive.erase_user("leaver", DEC_1 + DAY).unwrap(), 0);

    // Their old events coming back (a consumer re-reading the topic) stay out; what they do
    // after the erasure is kept.
    archive
        .append(&[
            event("1", "leaver", "i1", DEC_1),
            event("4", "leaver", "i3", DEC_1 + 2 * DAY),
        ])
        .unwrap();
    assert_eq!(ids(&archive.read(None, None).unwrap()), ["2", "4"]);
    let erased = EventArchive::new(dir.path(), "other-writer");
    assert_eq!(
        ids(&erased.read(None, None).unwrap()),
        ["2", "4"],
        "the erasure is on disk"
    );
}

#[test]
fn days_past_retention_are_deleted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let archive = EventArchive::new(dir.path(), "w");
    archive
        .append(&[
            event("ancient", "u", "i1", DEC_1 - 10 * DAY),
            event("recent", "u", "i2", DEC_1 - DAY),
        ])
        .unwrap();
    assert_eq!(archive.expire(7, DEC_1 + 5).unwrap(), 1);
    assert_eq!(ids(&archive.read(None, None).unwrap()), ["recent"]);
}

#[test]
fn an_empty_or_missing_archive_reads_as_no_events() {
    let dir = tempfile::tempdir().unwrap();
    let archive = EventArchive::new(dir.path().join("not-yet"), "w");
    assert!(archive.read(None, None).unwrap().is_empty());
    assert_eq!(archive.expire(1, DEC_1).unwrap(), 0);
}

#[test]
fn a_file_that_is_not_an_archive_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let archive = EventArchive::new(dir.path(), "w");
    let day = dir.path().join("date=2026-12-01");
    std::fs::create_dir_all(&day).unwrap();
    std::fs::write(day.join("broken.parquet"), b"not parquet").unwrap();
    let error = archive.read(None, None).unwrap_err().to_string();
    assert!(error.contains("broken.parquet"), "{error}");
}
