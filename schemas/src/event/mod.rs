//! The interaction event: what a shop or media site tells us a user did. JSON on the wire; on Kafka
//! the record key is the user id, so one user's events stay ordered within a partition.
//!
//! [`EventRef::decode`] (and [`InteractionEvent::decode`], its owned form) is the one entry point
//! for untrusted bytes (the consumer, `POST /events`): it either returns a valid event or a
//! [`EventRejection`] whose [`RejectionReason`] is a stable label (dead-letter header, metric
//! label) and whose message names the field and the problem.

mod plain;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::constraints::MAX_ID_CHARS;

/// Longest event accepted, in bytes of JSON.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024;

/// 1990-01-01T00:00:00Z: nothing we serve happened earlier (MovieLens-100k starts in 1997).
pub const EARLIEST_EVENT_TIME_MS: i64 = 631_152_000_000;

/// How far ahead of our clock an event time may be (clock skew between hosts).
pub const MAX_CLOCK_SKEW_MS: i64 = 24 * 3_600_000;

/// One interaction of a user with an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "InteractionEvent")]
pub struct InteractionEvent {
    /// Unique per event and chosen by the producer; a redelivered event carries the same id.
    #[schemars(length(min = 1, max = 256))]
    #[schema(schema_with = crate::openapi::id)]
    pub event_id: String,
    /// Also the Kafka record key: it decides the partition, hence the order of a user's events.
    #[schemars(length(min = 1, max = 256))]
    #[schema(schema_with = crate::openapi::id)]
    pub user_id: String,
    #[schemars(length(min = 1, max = 256))]
    #[schema(schema_with = crate::openapi::id)]
    pub item_id: String,
    pub event_type: EventType,
    /// The rating of a `rating` event (required there); optional elsewhere, e.g. a price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// When the interaction happened, in milliseconds since the Unix epoch (not before
    /// 1990-01-01, not more than a day ahead of the receiver's clock).
    #[schemars(range(min = 631_152_000_000_i64))]
    #[schema(minimum = 631_152_000_000_i64)]
    pub event_time_ms: i64,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    View,
    Click,
    AddToCart,
    Purchase,
    Rating,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::View,
        EventType::Click,
        EventType::AddToCart,
        EventType::Purchase,
        EventType::Rating,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Click => "click",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
            EventType::Rating => "rating",
        }
    }
}

/// Why an event was refused. The label is stable: it is the dead-letter `reason` header and the
/// `reason` label of the dead-letter metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionReason {
    TooLarge,
    /// Not JSON at all: syntax errors, binary garbage, truncated input, no object.
    InvalidJson,
    MissingField,
    UnknownField,
    WrongType,
    UnknownEventType,
    /// An id that is empty, too long or holds control characters.
    InvalidId,
    AbsurdTimestamp,
    InvalidValue,
}

impl RejectionReason {
    pub const ALL: [RejectionReason; 9] = [
        RejectionReason::TooLarge,
        RejectionReason::InvalidJson,
        RejectionReason::MissingField,
        RejectionReason::UnknownField,
        RejectionReason::WrongType,
        RejectionReason::UnknownEventType,
        RejectionReason::InvalidId,
        RejectionReason::AbsurdTimestamp,
        RejectionReason::InvalidValue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectionReason::TooLarge => "too_large",
            RejectionReason::InvalidJson => "invalid_json",
            RejectionReason::MissingField => "missing_field",
            RejectionReason::UnknownField => "unknown_field",
            RejectionReason::WrongType => "wrong_type",
            RejectionReason::UnknownEventType => "unknown_event_type",
            RejectionReason::InvalidId => "invalid_id",
            RejectionReason::AbsurdTimestamp => "absurd_timestamp",
            RejectionReason::InvalidValue => "invalid_value",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", reason.as_str())]
pub struct EventRejection {
    pub reason: RejectionReason,
    /// Names the field and the problem.
    pub message: String,
}

impl EventRejection {
    fn new(reason: RejectionReason, message: impl Into<String>) -> EventRejection {
        EventRejection {
            reason,
            message: message.into(),
        }
    }
}

/// What [`InteractionEvent::decode`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    pub max_event_bytes: usize,
    /// Our clock, for the "event from the future" check.
    pub now_ms: i64,
}

/// An event whose ids point into the bytes it was decoded from (an id written with JSON escapes
/// is the one that gets copied): what the consumer decodes each record into, so a valid event
/// costs no allocation. Same fields, same JSON and same rules as [`InteractionEvent`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRef<'a> {
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    #[serde(borrow)]
    pub item_id: Cow<'a, str>,
    pub event_type: EventType,
    #[serde(default)]
    pub value: Option<f64>,
    pub event_time_ms: i64,
}

impl<'a> EventRef<'a> {
    /// Parses and validates one event from untrusted bytes.
    pub fn decode(bytes: &'a [u8], limits: EventLimits) -> Result<EventRef<'a>, EventRejection> {
        if bytes.len() > limits.max_event_bytes {
            return Err(EventRejection::new(
                RejectionReason::TooLarge,
                format!(
                    "event is {} bytes, the limit is {}",
                    bytes.len(),
                    limits.max_event_bytes
                ),
            ));
        }
        // The shape nearly every producer writes is read by a plain scanner; anything else
        // (escapes, floats, odd keys, errors) goes to serde, which decides exactly as it would
        // have for the whole input.
        let event = match plain::scan(bytes) {
            Some(event) => event,
            None => Self::parse(bytes)?,
        };
        event.validate(limits.now_ms)?;
        Ok(event)
    }

    fn parse(bytes: &'a [u8]) -> Result<EventRef<'a>, EventRejection> {
        // serde would also take a struct written as an array; an event is an object, and saying
        // so is clearer than a type error about its first element.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(EventRejection::new(
                RejectionReason::InvalidJson,
                "an event is a JSON object ({...})",
            ));
        }
        // Plain serde first: tracking the path costs about as much as the parse, and only a
        // rejection needs it (to name the field), so a failure is parsed again with it.
        serde_json::from_slice::<EventRef<'a>>(bytes).map_err(|_| explain_rejection(bytes))
    }

    pub fn into_owned(self) -> InteractionEvent {
        InteractionEvent {
            event_id: self.event_id.into_owned(),
            user_id: self.user_id.into_owned(),
            item_id: self.item_id.into_owned(),
            event_type: self.event_type,
            value: self.value,
            event_time_ms: self.event_time_ms,
        }
    }

    /// The checks beyond the JSON shape.
    pub fn validate(&self, now_ms: i64) -> Result<(), EventRejection> {
        check_id("event_id", &self.event_id)?;
        check_id("user_id", &self.user_id)?;
        check_id("item_id", &self.item_id)?;
        if self.event_time_ms < EARLIEST_EVENT_TIME_MS {
            let hint = if self.event_time_ms > 0
                && self.event_time_ms < EARLIEST_EVENT_TIME_MS / 1000 * 10
            {
                " (it looks like seconds; the field is milliseconds)"
            } else {
                ""
            };
            return Err(EventRejection::new(
                RejectionReason::AbsurdTimestamp,
                format!(
                    "event_time_ms: {} is before 1990-01-01{hint}",
                    self.event_time_ms
                ),
            ));
        }
        if self.event_time_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(EventRejection::new(
                RejectionReason::AbsurdTimestamp,
                format!(
                    "event_time_ms: {} is more than a day in the future",
                    self.event_time_ms
                ),
            ));
        }
        match (self.event_type, self.value) {
            (EventType::Rating, None) => Err(EventRejection::new(
                RejectionReason::InvalidValue,
                "value: a rating event needs its rating",
            )),
            (_, Some(value)) if !value.is_finite() || value.abs() > 1e12 => {
                Err(EventRejection::new(
                    RejectionReason::InvalidValue,
                    format!("value: {value} is not a usable number"),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl InteractionEvent {
    /// Parses and validates one event from untrusted bytes.
    pub fn decode(bytes: &[u8], limits: EventLimits) -> Result<InteractionEvent, EventRejection> {
        EventRef::decode(bytes, limits).map(EventRef::into_owned)
    }

    /// The event as an [`EventRef`] borrowing its ids.
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            event_id: Cow::Borrowed(&self.event_id),
            user_id: Cow::Borrowed(&self.user_id),
            item_id: Cow::Borrowed(&self.item_id),
            event_type: self.event_type,
            value: self.value,
            event_time_ms: self.event_time_ms,
        }
    }

    /// The checks beyond the JSON shape.
    pub fn validate(&self, now_ms: i64) -> Result<(), EventRejection> {
        self.as_ref().validate(now_ms)
    }
}

/// Why `bytes` (an object that plain serde refused) is not an event, naming the field.
fn explain_rejection(bytes: &[u8]) -> EventRejection {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<InteractionEvent, _> = serde_path_to_error::deserialize(&mut deserializer);
    match parsed {
        Err(error) => classify_json_error(&error),
        Ok(_) => match deserializer.end() {
            Err(error) => EventRejection::new(
                RejectionReason::InvalidJson,
                format!("trailing characters after the event: {error}"),
            ),
            // Both parsers agree on JSON; reaching here would be a serde bug.
            Ok(()) => EventRejection::new(RejectionReason::InvalidJson, "not a valid event"),
        },
    }
}

fn check_id(field: &str, id: &str) -> Result<(), EventRejection> {
    match id_problem(id) {
        None => Ok(()),
        Some(problem) => Err(EventRejection::new(
            RejectionReason::InvalidId,
            format!("{field} {problem}"),
        )),
    }
}

/// What is wrong with a user or item id, if anything: empty, longer than [`MAX_ID_CHARS`]
/// characters, or holding control characters (the OpenAPI schema `openapi::id` says the same).
pub fn id_problem(id: &str) -> Option<String> {
    // Nearly every id is short printable ASCII: one byte loop settles it.
    if id.len() <= MAX_ID_CHARS && id.bytes().all(|byte| byte.is_ascii_graphic()) && !id.is_empty()
    {
        return None;
    }
    if id.trim().is_empty() {
        Some("is empty".to_owned())
    } else if id.chars().count() > MAX_ID_CHARS {
        Some(format!(
            "is {} characters, the limit is {MAX_ID_CHARS}",
            id.chars().count()
        ))
    } else if id.chars().any(char::is_control) {
        Some("holds control characters".to_owned())
    } else {
        None
    }
}

/// Turns serde's message into a reason. serde's messages for these cases are fixed strings of its
/// `de::Error` defaults ("missing field", "unknown field", "invalid type", "unknown variant"); the
/// path in front of them comes from `serde_path_to_error`.
fn classify_json_error(error: &serde_path_to_error::Error<serde_json::Error>) -> EventRejection {
    let inner = error.inner();
    let path = error.path().to_string();
    let text = inner.to_string();
    let reason = match inner.classify() {
        serde_json::error::Category::Io
        | serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof => RejectionReason::InvalidJson,
        serde_json::error::Category::Data => {
            if text.starts_with("missing field") {
                RejectionReason::MissingField
            } else if text.starts_with("unknown field") {
                RejectionReason::UnknownField
            } else if text.starts_with("unknown variant") && path == "event_type" {
                RejectionReason::UnknownEventType
            } else if path == "." {
                // The document is JSON but not an object (`[1]`, `"x"`, `42`).
                RejectionReason::InvalidJson
            } else {
                RejectionReason::WrongType
            }
        }
    };
    let message = if path == "." {
        text
    } else {
        format!("{path}: {text}")
    };
    EventRejection::new(reason, message)
}

#[cfg(test)]
mod tests;
