//! The text rules the server checks, written as OpenAPI schemas, so that the document states
//! every constraint a request must meet: a client generated from it (or a fuzzer) never sends
//! a request the document allows and the server refuses, nor the other way round.
//!
//! Patterns are read alike by ECMA-262 and Python's `re` (the two schema tools that matter), and
//! whitespace and control characters are spelled out as Rust sees them (`char::is_whitespace`,
//! the Unicode White_Space property; `char::is_control`, category Cc), not left to `\s`, which
//! differs between them.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{Array, Object};

/// Longest user, item or event id, in characters (as JSON Schema's `maxLength` counts).
pub const MAX_ID_CHARS: usize = 256;
/// Most ids (or results) one request may name (or ask for).
pub const MAX_ITEMS_PER_REQUEST: usize = 1_000;
/// Longest title search, in characters: titles are short, and each word costs a pass over the
/// vocabulary.
pub const MAX_QUERY_CHARS: usize = 200;

const WHITESPACE: &str =
    r"\t\n\u000b\u000c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

fn text(min_length: usize, max_length: Option<usize>, pattern: String) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min_length))
        .max_length(max_length)
        .pattern(Some(pattern))
        .build()
}

/// An id: 1 to [`MAX_ID_CHARS`] characters, no control characters, not only whitespace
/// ([`crate::id_problem`] checks the same).
pub fn id() -> Object {
    text(
        1,
        Some(MAX_ID_CHARS),
        format!("^[^{CONTROL}]*[^{WHITESPACE}{CONTROL}][^{CONTROL}]*$"),
    )
}

/// 1 to [`MAX_ITEMS_PER_REQUEST`] [`id`]s.
pub fn ids() -> Array {
    ArrayBuilder::new()
        .items(id())
        .min_items(Some(1))
        .max_items(Some(MAX_ITEMS_PER_REQUEST))
        .build()
}

/// `?ids=a,b` (a form-style array, not exploded): [`ids`] whose members hold no comma.
pub fn id_list() -> Array {
    let listed_id = text(
        1,
        Some(MAX_ID_CHARS),
        format!("^[^,{CONTROL}]*[^,{WHITESPACE}{CONTROL}][^,{CONTROL}]*$"),
    );
    ArrayBuilder::new()
        .items(listed_id)
        .min_items(Some(1))
        .max_items(Some(MAX_ITEMS_PER_REQUEST))
        .build()
}

/// Text with a character other than whitespace, of at most `max_chars`.
fn not_blank(max_chars: Option<usize>) -> Object {
    text(1, max_chars, format!("[^{WHITESPACE}]"))
}

/// A title search: not blank, at most [`MAX_QUERY_CHARS`].
pub fn query() -> Object {
    not_blank(Some(MAX_QUERY_CHARS))
}

/// An item's title, which may be left out or null: not blank, at most
/// [`crate::MAX_TITLE_CHARS`].
pub fn title() -> Object {
    let mut title = not_blank(Some(crate::MAX_TITLE_CHARS));
    title.schema_type = SchemaType::from_iter([Type::String, Type::Null]);
    title
}

/// `item_seq_raw`: sequences of item ids that are not blank. Ids the model does not know are
/// passed on, not judged, so nothing more is asked of them.
pub fn sessions() -> Array {
    ArrayBuilder::new()
        .items(ArrayBuilder::new().items(not_blank(None)))
        .build()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn accepts(schema: impl serde::Serialize, instance: serde_json::Value) -> bool {
        let schema = serde_json::to_value(schema).unwrap();
        jsonschema::is_valid(&schema, &instance)
    }

    /// Whitespace of every kind Rust knows, control characters on both sides of ASCII, commas,
    /// letters: the characters the rules turn on.
    fn id_like() -> impl Strategy<Value = String> {
        proptest::string::string_regex(
            "[a é,\t\u{85}\u{a0}\u{2028}\u{3000}\u{1c}\u{1f}\u{7f}\u{9f}\u{0}]{0,6}",
        )
        .unwrap()
    }

    proptest! {
        #[test]
        fn the_id_schema_accepts_exactly_what_id_problem_accepts(text in id_like()) {
            let server_accepts = crate::id_problem(&text).is_none();
            prop_assert_eq!(accepts(id(), text.clone().into()), server_accepts, "{:?}", text);
        }

        #[test]
        fn the_title_schema_accepts_exactly_the_titles_that_are_not_blank(text in id_like()) {
            let server_accepts = !text.trim().is_empty();
            prop_assert_eq!(accepts(title(), text.clone().into()), server_accepts, "{:?}", text);
        }
    }

    #[test]
    fn ids_are_measured_in_characters_on_both_sides() {
        let longest = "é".repeat(MAX_ID_CHARS);
        let too_long = "é".repeat(MAX_ID_CHARS + 1);
        assert!(accepts(id(), longest.clone().into()) && crate::id_problem(&longest).is_none());
        assert!(!accepts(id(), too_long.clone().into()) && crate::id_problem(&too_long).is_some());
    }

    #[test]
    fn listed_ids_hold_no_comma_and_number_one_to_the_limit() {
        assert!(accepts(id_list(), serde_json::json!(["50", "181"])));
        assert!(!accepts(id_list(), serde_json::json!(["50,181"])));
        assert!(!accepts(id_list(), serde_json::json!([])));
        assert!(!accepts(id_list(), serde_json::json!([" "])));
        let too_many: Vec<String> = (0..=MAX_ITEMS_PER_REQUEST).map(|n| n.to_string()).collect();
        assert!(!accepts(id_list(), serde_json::json!(too_many)));
    }
}
