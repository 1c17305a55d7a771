//! The archive as a training data set: the events in time order become interactions, and every
//! item they name joins the catalogue (described where an earlier data set describes it), so
//! `recsys train` applies the same protocol as to MovieLens.

use std::collections::{HashMap, HashSet};

use dataset::{Dataset, Interaction, ItemMetadata};
use schemas::{EventType, InteractionEvent};

/// The span of events a data set was made from, recorded with the bundle trained on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataWindow {
    pub first_event_ms: i64,
    pub last_event_ms: i64,
    pub events: usize,
    pub users: usize,
    pub items: usize,
}

/// `events` (oldest first, as [`crate::EventArchive::read`] returns them) of the kinds in
/// `event_types` as the data set `name`; items are listed in order of first appearance, with the
/// title, year and genres of `known_items` where it has them.
pub fn training_dataset(
    name: &str,
    events: &[InteractionEvent],
    event_types: &[EventType],
    known_items: &[ItemMetadata],
) -> (Dataset, Option<DataWindow>) {
    let interactions: Vec<Interaction> = events
        .iter()
        .filter(|event| event_types.contains(&event.event_type))
        .map(|event| Interaction {
            user_id: event.user_id.clone(),
            item_id: event.item_id.clone(),
            rating: event.value.map(|value| value as f32),
            // Seconds, as data set files keep them; events of one second keep their order,
            // because sequences sort stably.
            timestamp: event.event_time_ms.div_euclid(1_000),
        })
        .collect();
    let known: HashMap<&str, &ItemMetadata> = known_items
        .iter()
        .map(|item| (item.item_id.as_str(), item))
        .collect();
    let mut listed = HashSet::new();
    let items: Vec<ItemMetadata> = interactions
        .iter()
        .filter(|interaction| listed.insert(interaction.item_id.as_str()))
        .map(
            |interaction| match known.get(interaction.item_id.as_str()) {
                Some(item) => (*item).clone(),
                None => ItemMetadata {
                    item_id: interaction.item_id.clone(),
                    title: interaction.item_id.clone(),
                    year: None,
                    genres: Vec::new(),
                },
            },
        )
        .collect();
    let kept: Vec<&InteractionEvent> = events
        .iter()
        .filter(|event| event_types.contains(&event.event_type))
        .collect();
    let window = match (kept.first(), kept.last()) {
        (Some(first), Some(last)) => Some(DataWindow {
            first_event_ms: first.event_time_ms,
            last_event_ms: last.event_time_ms,
            events: kept.len(),
            users: kept
                .iter()
                .map(|event| event.user_id.as_str())
                .collect::<HashSet<_>>()
                .len(),
            items: items.len(),
        }),
        _ => None,
    };
    (
        Dataset {
            name: name.to_owned(),
            interactions,
            items,
        },
        window,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user: &str, item: &str, kind: EventType, time_ms: i64) -> InteractionEvent {
        InteractionEvent {
            event_id: format!("{user}-{item}-{time_ms}"),
            user_id: user.to_owned(),
            item_id: item.to_owned(),
            event_type: kind,
            value: (kind == EventType::Rating).then_some(4.0),
            event_time_ms: time_ms,
        }
    }

    #[test]
    fn events_become_interactions_and_their_items_the_catalogue() {
        let events = [
            event("u1", "50", EventType::Rating, 1_000_500),
            event("u1", "sku-1", EventType::Click, 1_000_900),
            event("u2", "50", EventType::View, 2_000_000),
            event("u2", "7", EventType::Purchase, 3_000_000),
        ];
        let known = [ItemMetadata {
            item_id: "50".into(),
            title: "Star Wars".into(),
            year: Some(1977),
            genres: vec!["Sci-Fi".into()],
        }];
        let kinds = [EventType::Rating, EventType::Click, EventType::Purchase];
        let (data, window) = training_dataset("events", &events, &kinds, &known);
        let pairs: Vec<(&str, &str)> = data
            .interactions
            .iter()
            .map(|interaction| (interaction.user_id.as_str(), interaction.item_id.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("u1", "50"), ("u1", "sku-1"), ("u2", "7")],
            "views filtered out"
        );
        assert_eq!(data.interactions[0].rating, Some(4.0));
        assert_eq!(data.interactions[0].timestamp, 1_000);
        let items: Vec<&str> = data.items.iter().map(|item| item.title.as_str()).collect();
        assert_eq!(items, ["Star Wars", "sku-1", "7"]);
        assert_eq!(
            window,
            Some(DataWindow {
                first_event_ms: 1_000_500,
                last_event_ms: 3_000_000,
                events: 3,
                users: 2,
                items: 3,
            })
        );
        let users = data.user_sequences();
        assert_eq!(users[0].item_ids, ["50", "sku-1"]);
    }

    #[test]
    fn no_events_make_an_empty_data_set_without_a_window() {
        let (data, window) = training_dataset("events", &[], &EventType::ALL, &[]);
        assert!(data.interactions.is_empty() && data.items.is_empty());
        assert_eq!(window, None);
    }
}
