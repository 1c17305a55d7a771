use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The session context a client sends: who it is, what it just interacted with, and optionally
/// which candidates it wants scored. Every field is optional, with the tutorial's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrieveContext {
    /// At most one user id is used: the first.
    #[serde(default)]
    pub user_ids_raw: Vec<String>,
    /// One item sequence per row, oldest first, most recent last.
    #[serde(default = "one_empty_sequence")]
    #[schema(schema_with = crate::openapi::sessions)]
    pub item_seq_raw: Vec<Vec<String>>,
    /// When non-empty, exactly these items are scored and returned ranked.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub candidate_items_raw: Vec<String>,
}

fn one_empty_sequence() -> Vec<Vec<String>> {
    vec![Vec::new()]
}

impl Default for RetrieveContext {
    fn default() -> Self {
        RetrieveContext {
            user_ids_raw: Vec::new(),
            item_seq_raw: one_empty_sequence(),
            candidate_items_raw: Vec::new(),
        }
    }
}

impl RetrieveContext {
    /// The first user id, if one was sent and it is not blank.
    pub fn user_id(&self) -> Option<&str> {
        self.user_ids_raw
            .first()
            .map(String::as_str)
            .filter(|user_id| !user_id.trim().is_empty())
    }

    /// The session sequence of the first row (the only one the retrieve path uses).
    pub fn session_items(&self) -> &[String] {
        self.item_seq_raw.first().map(Vec::as_slice).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_the_tutorial_defaults() {
        let context: RetrieveContext = serde_json::from_str("{}").unwrap();
        assert_eq!(context, RetrieveContext::default());
        assert_eq!(context.item_seq_raw, vec![Vec::<String>::new()]);
        assert_eq!(context.user_id(), None);
        assert!(context.session_items().is_empty());
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let error = serde_json::from_str::<RetrieveContext>(r#"{"item_seq": [["1"]]}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `item_seq`"), "{error}");
    }

    #[test]
    fn blank_user_id_counts_as_absent() {
        let context = RetrieveContext {
            user_ids_raw: vec!["  ".into()],
            ..RetrieveContext::default()
        };
        assert_eq!(context.user_id(), None);
    }
}
