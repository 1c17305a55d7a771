//! Requests that name their candidates (`candidate_items_raw`): the model scores exactly those,
//! instead of a search of the whole index.

use std::collections::HashSet;
use std::time::Instant;

use super::{
    before, micros, Attempt, FallbackReason, RetrieveOutcome, RetrieveRequest, Retriever, Source,
    StageTimings,
};
use crate::index::IndexError;
use crate::model::ModelError;

impl Retriever {
    /// Ranks the request's candidates by the model's scores for `sequence`; unknown candidates
    /// are reported, not ranked.
    pub(super) async fn rank_candidates(
        &self,
        request: &RetrieveRequest,
        sequence: &[String],
        timings: &mut StageTimings,
        deadline: tokio::time::Instant,
    ) -> Attempt {
        let stage = Instant::now();
        let scored = before(
            deadline,
            self.model.score_candidates(sequence, &request.candidates),
            ModelError::Unavailable,
        )
        .await;
        timings.embed_micros = Some(micros(stage));
        let (scores, unknown_items) = match scored {
            Ok(scored) => scored,
            Err(ModelError::EmptySequence { unknown_items }) => {
                return Attempt::Fallback {
                    reason: FallbackReason::UnknownItems,
                    exclude: request.session_items.iter().cloned().collect(),
                    unknown_items,
                }
            }
            Err(error) => {
                return self.dependency_failure(
                    FallbackReason::ModelUnavailable,
                    &error,
                    request.session_items.iter().cloned().collect(),
                )
            }
        };
        let mut ranked: Vec<(String, f64)> = Vec::new();
        let mut seen_candidates = HashSet::new();
        let catalogue = self.catalogue.view();
        for (candidate, score) in request.candidates.iter().zip(scores) {
            if let Some(score) = score {
                if catalogue.is_available(candidate) && seen_candidates.insert(candidate.clone()) {
                    ranked.push((candidate.clone(), f64::from(score)));
                }
            }
        }
        ranked.sort_by(|left, right| right.1.total_cmp(&left.1));
        ranked.truncate(request.count);
        let stage = Instant::now();
        let ids: Vec<String> = ranked.iter().map(|(item_id, _)| item_id.clone()).collect();
        let payloads = match before(deadline, self.index.items(&ids), IndexError::Unavailable).await
        {
            Ok(payloads) => payloads,
            Err(error) => {
                return self.index_failure(error, request.session_items.iter().cloned().collect())
            }
        };
        timings.payload_micros = Some(micros(stage));
        Attempt::Done(RetrieveOutcome {
            recommendations: self.with_payloads(ranked, payloads),
            source: Source::Personalized,
            fallback_reason: None,
            unknown_items,
            model_version: Some(self.model_version.clone()),
            timings: StageTimings::default(),
            embedded_sequence: sequence.to_vec(),
        })
    }
}
