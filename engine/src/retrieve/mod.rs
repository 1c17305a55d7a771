//! The retrieve pipeline shared by the API and the consumer: stored history + session → embed →
//! search with the seen items excluded inside the search → top `count` with item payloads. Any
//! dependency failure or an exhausted time budget answers with popular items and says why.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

mod answers;
mod candidates;
mod fresh;
mod pushed;
mod similar;

pub use answers::merge_history;
use answers::{bare_payload, describe, described_hits};
pub use similar::SimilarError;

use crate::catalogue::LiveCatalogue;
use crate::index::{IndexError, Payload, VectorIndex};
use crate::model::{ModelError, QueryModel};
use crate::popularity::PopularSnapshot;
use crate::store::{StoreError, UserState, UserStore};

#[derive(Debug, Clone, PartialEq)]
pub struct RetrieveRequest {
    pub user_id: Option<String>,
    /// The client's current session, oldest first.
    pub session_items: Vec<String>,
    /// When non-empty, rank exactly these items instead of searching the index.
    pub candidates: Vec<String>,
    pub count: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Personalized,
    Popular,
    Cache,
    /// Item-to-item: the nearest items to one item's vector.
    Similar,
}

/// Why an answer is popular items rather than personalised ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    /// No user history and no session items.
    NoHistory,
    /// Every item of history and session is unknown to the model.
    UnknownItems,
    StoreUnavailable,
    ModelUnavailable,
    IndexUnavailable,
    /// The personalised path did not finish within the request budget (a dependency that is
    /// late is reported as unavailable; this is the outer guard).
    Timeout,
    /// The index holds the item vectors of another bundle than the model's: its scores would
    /// be meaningless.
    ModelIndexMismatch,
}

impl FallbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::NoHistory => "no_history",
            FallbackReason::UnknownItems => "unknown_items",
            FallbackReason::StoreUnavailable => "store_unavailable",
            FallbackReason::ModelUnavailable => "model_unavailable",
            FallbackReason::IndexUnavailable => "index_unavailable",
            FallbackReason::Timeout => "timeout",
            FallbackReason::ModelIndexMismatch => "model_index_mismatch",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub item_id: String,
    pub score: f64,
    /// Item metadata from the index (title, year, genres, popularity, ...).
    pub payload: Payload,
}

/// Microseconds spent per stage (only the stages that ran).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageTimings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_micros: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_micros: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_micros: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_micros: Option<u64>,
    pub total_micros: u64,
}

/// Why recommendations could not be recomputed for pushing.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(ModelError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{0}")]
    ModelIndexMismatch(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetrieveOutcome {
    pub recommendations: Vec<Recommendation>,
    pub source: Source,
    pub fallback_reason: Option<FallbackReason>,
    pub unknown_items: Vec<String>,
    /// Version of the model that produced personalised or cached answers.
    pub model_version: Option<String>,
    pub timings: StageTimings,
    /// The sequence the model embedded (stored history merged with the session, most recent
    /// last); empty when no model was asked.
    pub embedded_sequence: Vec<String>,
}

pub struct Retriever {
    store: Arc<dyn UserStore>,
    index: Arc<dyn VectorIndex>,
    model: Arc<dyn QueryModel>,
    popular: Arc<PopularSnapshot>,
    /// How many of the merged history's most recent items go to the model (the store's
    /// `max_history`). The model, in process or over HTTP, drops the items it does not know and
    /// keeps the most recent `max_len` of the rest: exactly what the bundle was trained on, also
    /// when the history ends with items newer than the model.
    max_sequence_len: usize,
    budget: Duration,
    model_version: String,
    /// Why the model and the index do not belong together, if they do not.
    pairing_problem: Option<String>,
    /// What the shop says about its items now: unavailable items are in no answer, and titles
    /// and attributes are taken from it over the index's copy.
    catalogue: Arc<LiveCatalogue>,
    /// Places at the end of a personalized list for items newer than the model (`fresh.rs`).
    fresh_slots: usize,
    unindexed: fresh::UnindexedItems,
}

/// Why `model_version` must not be served with `index`, if it must not.
fn pairing_problem(model_version: &str, index: &dyn VectorIndex) -> Option<String> {
    let index_bundle = index.bundle_version()?;
    (index_bundle != model_version).then(|| {
        format!(
            "the model is {model_version} but index '{}' holds the item vectors of \
             {index_bundle}: run `recsys index` to build the index for this model",
            index.version()
        )
    })
}

/// Internal result of the personalised path: either an answer or the reason to fall back.
enum Attempt {
    Done(RetrieveOutcome),
    Fallback {
        reason: FallbackReason,
        exclude: HashSet<String>,
        unknown_items: Vec<String>,
    },
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// Runs a dependency call that must answer before `deadline`. A late answer is that dependency's
/// failure (`unavailable`), so the fallback reason names who was slow, and a dead dependency
/// costs a request no more than the budget.
async fn before<T, E>(
    deadline: tokio::time::Instant,
    call: impl std::future::Future<Output = Result<T, E>>,
    unavailable: impl FnOnce(String) -> E,
) -> Result<T, E> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(result) => result,
        Err(_elapsed) => Err(unavailable(
            "no answer within the request budget".to_owned(),
        )),
    }
}

impl Retriever {
    pub fn new(
        store: Arc<dyn UserStore>,
        index: Arc<dyn VectorIndex>,
        model: Arc<dyn QueryModel>,
        popular: Arc<PopularSnapshot>,
        max_sequence_len: usize,
        budget: Duration,
        model_version: String,
    ) -> Retriever {
        let pairing_problem = pairing_problem(&model_version, index.as_ref());
        if let Some(problem) = &pairing_problem {
            tracing::error!(%problem, "answers fall back to popular items");
        }
        Retriever {
            pairing_problem,
            catalogue: Arc::new(LiveCatalogue::empty()),
            fresh_slots: 0,
            unindexed: Default::default(),
            store,
            index,
            model,
            popular,
            max_sequence_len,
            budget,
            model_version,
        }
    }

    /// Follows `catalogue` instead of an empty one, and keeps `fresh_slots` places of each
    /// personalized list for its items that the model does not know yet.
    pub fn with_catalogue(
        mut self,
        catalogue: Arc<LiveCatalogue>,
        fresh_slots: usize,
    ) -> Retriever {
        self.catalogue = catalogue;
        self.fresh_slots = fresh_slots;
        self
    }

    /// The same retriever (store, popularity, catalogue) serving another model with its index:
    /// what a promotion swaps in (`crate::serving`).
    pub fn with_model_and_index(
        &self,
        model: Arc<dyn QueryModel>,
        index: Arc<dyn VectorIndex>,
        model_version: String,
    ) -> Retriever {
        Retriever::new(
            Arc::clone(&self.store),
            index,
            model,
            Arc::clone(&self.popular),
            self.max_sequence_len,
            self.budget,
            model_version,
        )
        .with_catalogue(Arc::clone(&self.catalogue), self.fresh_slots)
    }

    pub fn catalogue(&self) -> &Arc<LiveCatalogue> {
        &self.catalogue
    }

    pub fn store(&self) -> &Arc<dyn UserStore> {
        &self.store
    }

    pub fn index(&self) -> &Arc<dyn VectorIndex> {
        &self.index
    }

    pub fn model(&self) -> &Arc<dyn QueryModel> {
        &self.model
    }

    pub fn popular(&self) -> &Arc<PopularSnapshot> {
        &self.popular
    }

    pub fn model_version(&self) -> &str {
        &self.model_version
    }

    /// The bundle whose item vectors the index holds.
    pub fn index_bundle(&self) -> Option<&str> {
        self.index.bundle_version()
    }

    /// Why the model and the index do not belong together (then every answer is popular items).
    pub fn pairing_problem(&self) -> Option<&str> {
        self.pairing_problem.as_deref()
    }

    pub async fn retrieve(&self, request: &RetrieveRequest) -> RetrieveOutcome {
        let started = Instant::now();
        let mut timings = StageTimings::default();
        let deadline = tokio::time::Instant::from_std(started) + self.budget;
        // The outer guard leaves a little room so that a late stage reports itself first.
        let attempt = tokio::time::timeout_at(
            deadline + Duration::from_millis(5),
            self.personalized(request, &mut timings, deadline),
        )
        .await;
        let (reason, exclude, unknown_items) = match attempt {
            Ok(Attempt::Done(mut outcome)) => {
                outcome.timings = StageTimings {
                    total_micros: micros(started),
                    ..timings
                };
                return outcome;
            }
            Ok(Attempt::Fallback {
                reason,
                exclude,
                unknown_items,
            }) => (reason, exclude, unknown_items),
            Err(_elapsed) => (
                FallbackReason::Timeout,
                request.session_items.iter().cloned().collect(),
                Vec::new(),
            ),
        };
        metrics::counter!("recsys_retrieve_fallbacks_total", "reason" => reason.as_str())
            .increment(1);
        let recommendations = self.popular_items(request.count, &exclude).await;
        RetrieveOutcome {
            recommendations,
            source: Source::Popular,
            fallback_reason: Some(reason),
            unknown_items,
            model_version: None,
            timings: StageTimings {
                total_micros: micros(started),
                ..timings
            },
            embedded_sequence: Vec::new(),
        }
    }

    async fn personalized(
        &self,
        request: &RetrieveRequest,
        timings: &mut StageTimings,
        deadline: tokio::time::Instant,
    ) -> Attempt {
        let state = match &request.user_id {
            None => UserState::default(),
            Some(user_id) => {
                let stage = Instant::now();
                let state = before(
                    deadline,
                    self.store.user_state(user_id),
                    StoreError::Unavailable,
                )
                .await;
                timings.state_micros = Some(micros(stage));
                match state {
                    Ok(state) => state,
                    Err(error) => {
                        return self.dependency_failure(
                            FallbackReason::StoreUnavailable,
                            &error,
                            owned_set(&request.session_items),
                        )
                    }
                }
            }
        };
        // Borrowed, and duplicates left in: the index turns the list into a set of its own.
        let catalogue = self.catalogue.view();
        let exclude: Vec<&str> = request
            .session_items
            .iter()
            .chain(&state.seen_items)
            .chain(&state.recent_items)
            .chain(catalogue.unavailable())
            .map(String::as_str)
            .collect();

        if self.pairing_problem.is_some() {
            return Attempt::Fallback {
                reason: FallbackReason::ModelIndexMismatch,
                exclude: owned_set(&exclude),
                unknown_items: Vec::new(),
            };
        }
        if let Some(outcome) = self.cached(request, &state, deadline, timings).await {
            return Attempt::Done(outcome);
        }
        let sequence = merge_history(
            &state.recent_items,
            &request.session_items,
            self.max_sequence_len,
        );
        if sequence.is_empty() {
            return Attempt::Fallback {
                reason: FallbackReason::NoHistory,
                exclude: owned_set(&exclude),
                unknown_items: Vec::new(),
            };
        }
        if !request.candidates.is_empty() {
            return self
                .rank_candidates(request, &sequence, timings, deadline)
                .await;
        }

        let stage = Instant::now();
        let query = before(
            deadline,
            self.model.query(&sequence),
            ModelError::Unavailable,
        )
        .await;
        timings.embed_micros = Some(micros(stage));
        let query = match query {
            Ok(query) => query,
            Err(ModelError::EmptySequence { unknown_items }) => {
                return Attempt::Fallback {
                    reason: FallbackReason::UnknownItems,
                    exclude: owned_set(&exclude),
                    unknown_items,
                }
            }
            Err(error) => {
                return self.dependency_failure(
                    FallbackReason::ModelUnavailable,
                    &error,
                    owned_set(&exclude),
                )
            }
        };
        let stage = Instant::now();
        let hits = before(
            deadline,
            self.index.search(&query.vector, request.count, &exclude),
            IndexError::Unavailable,
        )
        .await;
        timings.search_micros = Some(micros(stage));
        metrics::histogram!("recsys_index_search_duration_seconds")
            .record(stage.elapsed().as_secs_f64());
        let hits = match hits {
            Ok(hits) => hits,
            Err(error) => return self.index_failure(error, owned_set(&exclude)),
        };
        let mut recommendations = described_hits(hits, &catalogue);
        self.blend_in_fresh_items(&mut recommendations, &exclude, request.count)
            .await;
        Attempt::Done(RetrieveOutcome {
            recommendations,
            source: Source::Personalized,
            fallback_reason: None,
            unknown_items: query.unknown_items,
            model_version: Some(self.model_version.clone()),
            timings: StageTimings::default(),
            embedded_sequence: sequence,
        })
    }

    fn dependency_failure(
        &self,
        reason: FallbackReason,
        error: &dyn std::fmt::Display,
        exclude: HashSet<String>,
    ) -> Attempt {
        tracing::warn!(%error, reason = reason.as_str(), "dependency failed; answering with popular items");
        Attempt::Fallback {
            reason,
            exclude,
            unknown_items: Vec::new(),
        }
    }

    fn index_failure(&self, error: IndexError, exclude: HashSet<String>) -> Attempt {
        self.dependency_failure(FallbackReason::IndexUnavailable, &error, exclude)
    }
}

/// The items a fallback answer leaves out, owned (the request's borrowed list dies with it).
fn owned_set<T: AsRef<str>>(items: &[T]) -> HashSet<String> {
    items.iter().map(|item| item.as_ref().to_owned()).collect()
}
