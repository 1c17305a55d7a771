//! Shaping answers: item payloads from the index with the catalogue's word over them, and the
//! sequence handed to the model.

use std::collections::{HashMap, HashSet};

use super::{Recommendation, Retriever};
use crate::catalogue::CatalogueView;
use crate::index::{IndexedItem, Payload, ScoredItem};

/// The payload of an item the index did not describe: just its id.
pub(super) fn bare_payload(item_id: &str) -> Payload {
    let mut payload = Payload::new();
    payload.insert("item_id".into(), item_id.into());
    payload
}

impl Retriever {
    /// Popular items not in `exclude`, with payloads when the index can give them.
    pub async fn popular_items(
        &self,
        count: usize,
        exclude: &HashSet<String>,
    ) -> Vec<Recommendation> {
        let snapshot = self.popular.get();
        let catalogue = self.catalogue.view();
        let chosen: Vec<(String, f64)> = snapshot
            .iter()
            .filter(|item| {
                !exclude.contains(&item.item_id) && catalogue.is_available(&item.item_id)
            })
            .take(count)
            .map(|item| (item.item_id.clone(), item.score))
            .collect();
        let ids: Vec<String> = chosen.iter().map(|(item_id, _)| item_id.clone()).collect();
        // Payloads are a nicety here: an index outage must not fail the fallback itself.
        let payloads = tokio::time::timeout(self.budget, self.index.items(&ids))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        self.with_payloads(chosen, payloads)
    }

    /// Ranked `(item, score)` pairs joined with the payloads the index returned for them and
    /// what the catalogue says about them now.
    pub(super) fn with_payloads(
        &self,
        ranked: Vec<(String, f64)>,
        found: Vec<IndexedItem>,
    ) -> Vec<Recommendation> {
        let catalogue = self.catalogue.view();
        let mut payload_of: HashMap<String, Payload> = found
            .into_iter()
            .map(|item| (item.item_id, item.payload))
            .collect();
        ranked
            .into_iter()
            .map(|(item_id, score)| {
                let mut recommendation = Recommendation {
                    payload: payload_of
                        .remove(&item_id)
                        .unwrap_or_else(|| bare_payload(&item_id)),
                    item_id,
                    score,
                };
                describe(&catalogue, &mut recommendation);
                recommendation
            })
            .collect()
    }
}

/// Search hits as recommendations, described by the catalogue.
pub(super) fn described_hits(
    hits: Vec<ScoredItem>,
    catalogue: &CatalogueView,
) -> Vec<Recommendation> {
    hits.into_iter()
        .map(|hit| {
            let mut recommendation = Recommendation {
                item_id: hit.item_id,
                score: f64::from(hit.score),
                payload: hit.payload,
            };
            describe(catalogue, &mut recommendation);
            recommendation
        })
        .collect()
}

/// The catalogue's title and attributes over the index's copy (taken when the index was built).
pub(super) fn describe(catalogue: &CatalogueView, recommendation: &mut Recommendation) {
    let Some(item) = catalogue.item(&recommendation.item_id) else {
        return;
    };
    if let Some(title) = &item.title {
        recommendation
            .payload
            .insert("title".into(), title.clone().into());
    }
    for (name, value) in &item.attributes {
        recommendation.payload.insert(name.clone(), value.clone());
    }
}

/// Stored history then the session, each item kept only at its most recent position, the last
/// `max_len` items kept.
pub fn merge_history(history: &[String], session: &[String], max_len: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut merged: Vec<String> = history
        .iter()
        .chain(session)
        .rev()
        .filter(|item| seen.insert(item.as_str()))
        .take(max_len)
        .cloned()
        .collect();
    merged.reverse();
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn merge_keeps_the_most_recent_occurrence_and_the_last_max_len() {
        let merged = merge_history(&ids(&["a", "b", "c"]), &ids(&["b", "d"]), 10);
        assert_eq!(merged, ["a", "c", "b", "d"]);
        let merged = merge_history(&ids(&["a", "b", "c"]), &ids(&["b", "d"]), 3);
        assert_eq!(merged, ["c", "b", "d"]);
        assert!(merge_history(&[], &[], 5).is_empty());
    }
}
