//! Pushed recommendations: computing them for the consumer to cache, and serving them back when
//! they are still current for the user.

use std::time::Instant;

use super::{
    before, merge_history, micros, PushError, RetrieveOutcome, RetrieveRequest, Retriever, Source,
    StageTimings,
};
use crate::index::IndexError;
use crate::model::ModelError;
use crate::store::{CachedItem, CachedRecommendations, UserState};

impl Retriever {
    /// The consumer's pushed list, when the request adds nothing to what it was computed from
    /// and nothing happened to the user since. Item metadata comes from the index; if the index
    /// cannot give it, the list is still the user's, with bare payloads.
    pub(super) async fn cached(
        &self,
        request: &RetrieveRequest,
        state: &UserState,
        deadline: tokio::time::Instant,
        timings: &mut StageTimings,
    ) -> Option<RetrieveOutcome> {
        if !request.session_items.is_empty() || !request.candidates.is_empty() {
            return None;
        }
        let cached = state.cached.as_ref()?;
        let current = cached.reflects_history_version == state.history_version
            && cached.model_version == self.model_version
            && cached.items.len() >= request.count;
        if !current {
            return None;
        }
        // Items removed since the list was pushed are left out when it is served; a list left
        // too short is computed afresh instead.
        let catalogue = self.catalogue.view();
        let available = cached
            .items
            .iter()
            .filter(|item| catalogue.is_available(&item.item_id));
        if available.clone().count() < request.count {
            return None;
        }
        let ranked: Vec<(String, f64)> = available
            .take(request.count)
            .map(|item| (item.item_id.clone(), f64::from(item.score)))
            .collect();
        let ids: Vec<String> = ranked.iter().map(|(item_id, _)| item_id.clone()).collect();
        let stage = Instant::now();
        let payloads = before(deadline, self.index.items(&ids), IndexError::Unavailable)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cached recommendations served without item metadata");
                Vec::new()
            });
        timings.payload_micros = Some(micros(stage));
        let mut recommendations = self.with_payloads(ranked, payloads);
        let seen: Vec<&str> = state
            .seen_items
            .iter()
            .chain(&state.recent_items)
            .map(String::as_str)
            .collect();
        self.blend_in_fresh_items(&mut recommendations, &seen, request.count)
            .await;
        Some(RetrieveOutcome {
            recommendations,
            source: Source::Cache,
            fallback_reason: None,
            unknown_items: Vec::new(),
            model_version: Some(cached.model_version.clone()),
            timings: StageTimings::default(),
            // Computed by the consumer from the stored history, not here.
            embedded_sequence: Vec::new(),
        })
    }

    /// Recomputes each user's recommendations from the stored state alone, for the consumer to
    /// push into the cache slot. The sequences are embedded together (one batched forward pass
    /// in-process). Users without a usable history are left out: the API answers them with
    /// popular items anyway.
    pub async fn recommendations_to_push(
        &self,
        user_ids: &[String],
        count: usize,
    ) -> Result<Vec<(String, CachedRecommendations)>, PushError> {
        if let Some(problem) = &self.pairing_problem {
            return Err(PushError::ModelIndexMismatch(problem.clone()));
        }
        let started = Instant::now();
        let states = futures::future::try_join_all(
            user_ids
                .iter()
                .map(|user_id| self.store.user_state(user_id)),
        )
        .await?;
        let mut users = Vec::with_capacity(user_ids.len());
        let mut sequences = Vec::with_capacity(user_ids.len());
        for (user_id, state) in user_ids.iter().zip(states) {
            let sequence = merge_history(&state.recent_items, &[], self.max_sequence_len);
            if !sequence.is_empty() {
                users.push((user_id, state));
                sequences.push(sequence);
            }
        }
        let read_at = Instant::now();
        let queries = self.model.query_many(&sequences).await;
        let embedded_at = Instant::now();
        let searches = users
            .into_iter()
            .zip(queries)
            .filter_map(|((user_id, state), query)| {
                let query = match query {
                    Ok(query) => query,
                    // Only unknown items: nothing personal to push.
                    Err(ModelError::EmptySequence { .. }) => return None,
                    Err(error) => return Some(Err(PushError::Model(error))),
                };
                Some(Ok((user_id, state, query)))
            });
        let mut pushed = Vec::new();
        for search in searches {
            let (user_id, state, query) = search?;
            let exclude: Vec<&str> = state
                .seen_items
                .iter()
                .chain(&state.recent_items)
                .map(String::as_str)
                .collect();
            let stage = Instant::now();
            let hits = self.index.search(&query.vector, count, &exclude).await?;
            metrics::histogram!("recsys_index_search_duration_seconds")
                .record(stage.elapsed().as_secs_f64());
            pushed.push((
                user_id.clone(),
                CachedRecommendations {
                    model_version: self.model_version.clone(),
                    reflects_event_time_ms: state.newest_event_time_ms.unwrap_or_default(),
                    reflects_history_version: state.history_version,
                    computed_at_ms: common::clock::now_ms(),
                    items: hits
                        .into_iter()
                        .map(|hit| CachedItem {
                            item_id: hit.item_id,
                            score: hit.score,
                        })
                        .collect(),
                },
            ));
        }
        tracing::debug!(
            users = user_ids.len(),
            read_ms = (read_at - started).as_secs_f64() * 1e3,
            embed_ms = (embedded_at - read_at).as_secs_f64() * 1e3,
            search_ms = embedded_at.elapsed().as_secs_f64() * 1e3,
            "recommendations to push"
        );
        Ok(pushed)
    }
}
