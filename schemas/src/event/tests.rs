//! Decoding untrusted event bytes: what is accepted, what is refused and why.

use super::*;

const NOW_MS: i64 = 1_780_000_000_000;
const LIMITS: EventLimits = EventLimits {
    max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
    now_ms: NOW_MS,
};

fn valid_json() -> serde_json::Value {
    serde_json::json!({
        "event_id": "e-1",
        "user_id": "196",
        "item_id": "242",
        "event_type": "rating",
        "value": 3.0,
        "event_time_ms": 881_250_949_000_i64,
    })
}

/// The valid event with `field` set to `value`.
fn valid_with(field: &str, value: serde_json::Value) -> serde_json::Value {
    let mut document = valid_json();
    document[field] = value;
    document
}

/// The valid event without `field`.
fn valid_without(field: &str) -> serde_json::Value {
    let mut document = valid_json();
    document.as_object_mut().unwrap().remove(field);
    document
}

fn rejection(document: &serde_json::Value) -> EventRejection {
    InteractionEvent::decode(document.to_string().as_bytes(), LIMITS).unwrap_err()
}

#[test]
fn a_valid_event_round_trips() {
    let bytes = valid_json().to_string();
    let event = InteractionEvent::decode(bytes.as_bytes(), LIMITS).unwrap();
    assert_eq!(event.event_type, EventType::Rating);
    assert_eq!(event.value, Some(3.0));
    let again = serde_json::to_vec(&event).unwrap();
    assert_eq!(InteractionEvent::decode(&again, LIMITS).unwrap(), event);
}

#[test]
fn ids_beyond_printable_ascii_are_valid_when_they_are_within_the_rules() {
    // Past the ASCII fast path of the id check: spaces inside, non-ASCII text, the limit.
    let mut event = valid_with("user_id", serde_json::json!("Zoë Ångström"));
    event["item_id"] = serde_json::json!("a b");
    event["event_id"] = serde_json::json!("é".repeat(MAX_ID_CHARS));
    let decoded = InteractionEvent::decode(event.to_string().as_bytes(), LIMITS).unwrap();
    assert_eq!(decoded.user_id, "Zoë Ångström");
    assert_eq!(decoded.item_id, "a b");
}

#[test]
fn each_problem_gets_its_reason_and_names_the_field() {
    let missing = valid_without("user_id");
    let wrong_type = valid_with("item_id", serde_json::json!(242));
    let unknown_type = valid_with("event_type", serde_json::json!("like"));
    let unknown_field = valid_with("colour", serde_json::json!("red"));
    let empty_id = valid_with("user_id", serde_json::json!(" "));
    let control_id = valid_with("item_id", serde_json::json!("a\u{1f}b"));
    let long_id = valid_with("event_id", serde_json::json!("e".repeat(MAX_ID_CHARS + 1)));
    let seconds = valid_with("event_time_ms", serde_json::json!(881_250_949_i64));
    let future = valid_with(
        "event_time_ms",
        serde_json::json!(NOW_MS + 2 * MAX_CLOCK_SKEW_MS),
    );
    let rating_without_value = valid_without("value");
    let time_as_text = valid_with("event_time_ms", serde_json::json!("yesterday"));

    let cases = [
        (missing, RejectionReason::MissingField, "user_id"),
        (wrong_type, RejectionReason::WrongType, "item_id"),
        (unknown_type, RejectionReason::UnknownEventType, "like"),
        (unknown_field, RejectionReason::UnknownField, "colour"),
        (empty_id, RejectionReason::InvalidId, "user_id is empty"),
        (
            control_id,
            RejectionReason::InvalidId,
            "item_id holds control",
        ),
        (
            long_id,
            RejectionReason::InvalidId,
            "event_id is 257 characters, the limit is 256",
        ),
        (
            seconds,
            RejectionReason::AbsurdTimestamp,
            "looks like seconds",
        ),
        (future, RejectionReason::AbsurdTimestamp, "in the future"),
        (rating_without_value, RejectionReason::InvalidValue, "value"),
        (time_as_text, RejectionReason::WrongType, "event_time_ms"),
    ];
    for (document, reason, needle) in cases {
        let rejection = rejection(&document);
        assert_eq!(rejection.reason, reason, "{document}: {rejection}");
        assert!(
            rejection.message.contains(needle),
            "{document}: {rejection}"
        );
    }
}

#[test]
fn garbage_and_oversized_input_are_rejected_before_parsing_fields() {
    let garbage: &[u8] = &[0xff, 0x00, 0x13, 0x37, b'{'];
    assert_eq!(
        InteractionEvent::decode(garbage, LIMITS)
            .unwrap_err()
            .reason,
        RejectionReason::InvalidJson
    );
    for text in ["", "{", "[1, 2]", "\"event\"", "null", "{} {}"] {
        let rejection = InteractionEvent::decode(text.as_bytes(), LIMITS).unwrap_err();
        assert!(
            matches!(
                rejection.reason,
                RejectionReason::InvalidJson | RejectionReason::MissingField
            ),
            "{text:?}: {rejection}"
        );
    }
    let huge = valid_with(
        "item_id",
        serde_json::json!("x".repeat(DEFAULT_MAX_EVENT_BYTES)),
    );
    let rejection = rejection(&huge);
    assert_eq!(rejection.reason, RejectionReason::TooLarge);
    assert!(rejection.message.contains("limit is 4096"), "{rejection}");
}

#[test]
fn the_committed_json_schema_is_the_one_generated_from_the_type() {
    let generated = crate::event_json_schema();
    let committed: serde_json::Value =
        serde_json::from_str(include_str!("../../json/interaction_event.schema.json")).unwrap();
    assert_eq!(
        committed, generated,
        "schemas/json/interaction_event.schema.json is stale: run `recsys schema event > schemas/json/interaction_event.schema.json`"
    );
}

use proptest::strategy::Strategy;

#[test]
fn the_json_schema_accepts_valid_events_and_refuses_broken_ones() {
    let validator = jsonschema::validator_for(&crate::event_json_schema()).unwrap();
    assert!(validator.is_valid(&valid_json()));
    let missing = valid_without("item_id");
    let unknown_type = valid_with("event_type", serde_json::json!("like"));
    let empty_id = valid_with("user_id", serde_json::json!(""));
    let extra = valid_with("colour", serde_json::json!("red"));
    let seconds = valid_with("event_time_ms", serde_json::json!(881_250_949));
    for broken in [missing, unknown_type, empty_id, extra, seconds] {
        assert!(!validator.is_valid(&broken), "{broken}");
    }
}

proptest::proptest! {
    /// Whatever the bytes, decoding answers (never panics), and an accepted event is valid.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        if let Ok(event) = InteractionEvent::decode(&bytes, LIMITS) {
            proptest::prop_assert!(event.validate(NOW_MS).is_ok());
        }
    }

    /// Valid events survive encoding and decoding unchanged.
    #[test]
    fn valid_events_round_trip(
        user in "[a-z0-9]{1,12}",
        item in "[A-Za-z0-9_-]{1,20}",
        kind in 0usize..5,
        time in EARLIEST_EVENT_TIME_MS..NOW_MS,
        // Quarters: exact in binary and in short decimals, as ratings and prices are.
        value in proptest::option::of((-4_000_000i32..4_000_000).prop_map(|quarters| f64::from(quarters) / 4.0)),
    ) {
        let event_type = EventType::ALL[kind];
        let value = if event_type == EventType::Rating { Some(value.unwrap_or(4.0)) } else { value };
        let event = InteractionEvent {
            event_id: format!("{user}-{time}"),
            user_id: user,
            item_id: item,
            event_type,
            value,
            event_time_ms: time,
        };
        let bytes = serde_json::to_vec(&event).unwrap();
        proptest::prop_assert_eq!(InteractionEvent::decode(&bytes, LIMITS).unwrap(), event);
    }
}
