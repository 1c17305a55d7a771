//! The retrieve pipeline end to end on real parts: a trained tiny model, Qdrant Edge, the embedded
//! store (and a real redis-server for the outage case).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use engine::index::VectorIndex;
use engine::model::{HttpModel, InProcessModel, QueryModel};
use engine::popularity::PopularSnapshot;
use engine::retrieve::{FallbackReason, PushError, RetrieveRequest, Retriever, Source};
use engine::store::{open_store, StoreLimits, UserStore};
use model_server::Embedder;

/// Field order matters: the index must be dropped (and flushed) before its directory is deleted.
struct Fixture {
    store: Arc<dyn UserStore>,
    index: Arc<dyn VectorIndex>,
    embedder: Embedder,
    popular: Arc<PopularSnapshot>,
    data_dir: tempfile::TempDir,
}

fn ids(raw: &[&str]) -> Vec<String> {
    raw.iter().map(|id| id.to_string()).collect()
}

async fn fixture() -> Fixture {
    let data_dir = tempfile::tempdir().unwrap();
    let (retriever, embedder) = engine::fixtures::tiny_retriever(data_dir.path()).await;
    Fixture {
        store: Arc::clone(retriever.store()),
        index: Arc::clone(retriever.index()),
        embedder,
        popular: Arc::clone(retriever.popular()),
        data_dir,
    }
}

impl Fixture {
    fn retriever_with(
        &self,
        store: Arc<dyn UserStore>,
        model: Arc<dyn QueryModel>,
        budget: Duration,
    ) -> Retriever {
        Retriever::new(
            store,
            Arc::clone(&self.index),
            model,
            Arc::clone(&self.popular),
            StoreLimits::default().max_history,
            budget,
            self.embedder.model_version().to_owned(),
        )
    }

    fn retriever(&self) -> Retriever {
        self.retriever_with(
            Arc::clone(&self.store),
            Arc::new(InProcessModel::new(self.embedder.clone())),
            Duration::from_secs(5),
        )
    }

    async fn history(&self, user: &str, items: &[&str]) {
        engine::fixtures::remember(self.store.as_ref(), user, items).await;
    }
}

/// A model that answers correctly, late.
struct SlowModel(InProcessModel, Duration);

#[async_trait::async_trait]
impl QueryModel for SlowModel {
    fn backend(&self) -> &'static str {
        "slow"
    }
    async fn metadata(&self) -> Result<schemas::ModelMetadata, engine::model::ModelError> {
        self.0.metadata().await
    }
    async fn query(
        &self,
        items: &[String],
    ) -> Result<engine::model::Query, engine::model::ModelError> {
        tokio::time::sleep(self.1).await;
        self.0.query(items).await
    }
    async fn score_candidates(
        &self,
        items: &[String],
        candidates: &[String],
    ) -> Result<(Vec<Option<f32>>, Vec<String>), engine::model::ModelError> {
        tokio::time::sleep(self.1).await;
        self.0.score_candidates(items, candidates).await
    }
}

fn request(
    user: Option<&str>,
    session: &[&str],
    candidates: &[&str],
    count: usize,
) -> RetrieveRequest {
    RetrieveRequest {
        user_id: user.map(str::to_owned),
        session_items: ids(session),
        candidates: ids(candidates),
        count,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_session_are_merged_embedded_and_excluded() {
    let fixture = fixture().await;
    fixture.history("u1", &["i1", "i2", "i3"]).await;
    let outcome = fixture
        .retriever()
        .retrieve(&request(Some("u1"), &["i4", "ghost"], &[], 10))
        .await;
    assert_eq!(outcome.source, Source::Personalized);
    assert_eq!(outcome.fallback_reason, None);
    assert_eq!(
        outcome.model_version.as_deref(),
        Some(fixture.embedder.model_version())
    );
    assert_eq!(outcome.unknown_items, ["ghost"]);
    assert_eq!(outcome.recommendations.len(), 10);
    let returned: HashSet<&str> = outcome
        .recommendations
        .iter()
        .map(|item| item.item_id.as_str())
        .collect();
    for excluded in ["i1", "i2", "i3", "i4"] {
        assert!(!returned.contains(excluded), "{excluded} was already seen");
    }
    assert!(outcome.recommendations[0].payload["title"].is_string());

    // The same as embedding the merged sequence by hand and searching with the same exclusions.
    let query = fixture
        .embedder
        .embed(&ids(&["i1", "i2", "i3", "i4"]))
        .await
        .unwrap();
    let expected = fixture
        .index
        .search(&query.vector, 10, &["i1", "i2", "i3", "i4"])
        .await
        .unwrap();
    let expected: Vec<&str> = expected.iter().map(|hit| hit.item_id.as_str()).collect();
    let actual: Vec<&str> = outcome
        .recommendations
        .iter()
        .map(|item| item.item_id.as_str())
        .collect();
    assert_eq!(actual, expected);
}

/// The model reads the most recent `max_len` items it knows, whichever path it is reached by:
/// items newer than the model at the end of a history must not push known ones out of its window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_model_paths_embed_the_last_max_len_known_items() {
    let fixture = fixture().await;
    let max_len = fixture.embedder.max_len();
    let known: Vec<String> = (1..=max_len + 2).map(|n| format!("i{n}")).collect();
    let mut history: Vec<&str> = known.iter().map(String::as_str).collect();
    history.extend(["new-1", "new-2", "new-3"]);
    fixture.history("u-new-items", &history).await;

    let window = &known[known.len() - max_len..];
    let query = fixture.embedder.embed(window).await.unwrap();
    let seen: Vec<&str> = known.iter().map(String::as_str).collect();
    // Scores to five decimals: the query vector itself has to match, not only the order.
    let rounded = |score: f64| (score * 1e5).round() as i64;
    let expected: Vec<(String, i64)> = fixture
        .index
        .search(&query.vector, 5, &seen)
        .await
        .unwrap()
        .into_iter()
        .map(|hit| (hit.item_id, rounded(hit.score as f64)))
        .collect();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = model_server::server::spawn(
        listener,
        model_server::served::ServedModels::new(fixture.embedder.clone()),
        std::future::pending(),
    )
    .unwrap();
    let http = HttpModel::new(
        &format!("http://{}", server.local_addr),
        Duration::from_secs(5),
    )
    .unwrap();
    let in_process: Arc<dyn QueryModel> = Arc::new(InProcessModel::new(fixture.embedder.clone()));
    for model in [in_process, Arc::new(http)] {
        let backend = model.backend();
        let outcome = fixture
            .retriever_with(Arc::clone(&fixture.store), model, Duration::from_secs(5))
            .retrieve(&request(Some("u-new-items"), &[], &[], 5))
            .await;
        assert_eq!(outcome.source, Source::Personalized, "{backend}");
        assert_eq!(
            outcome.unknown_items,
            ["new-1", "new-2", "new-3"],
            "{backend}"
        );
        let actual: Vec<(String, i64)> = outcome
            .recommendations
            .into_iter()
            .map(|item| (item.item_id, rounded(item.score)))
            .collect();
        assert_eq!(actual, expected, "{backend}");
    }
}

/// An index holding another bundle's item vectors would give scores without meaning: popular
/// items with the reason instead, nothing pushed, and the problem names both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_another_bundles_index_answers_popular_items_and_pushes_nothing() {
    let fixture = fixture().await;
    fixture.history("u1", &["i0", "i1"]).await;
    let paired = fixture.retriever();
    assert_eq!(paired.pairing_problem(), None);
    assert_eq!(
        paired.index_bundle(),
        Some(fixture.embedder.model_version())
    );

    let mismatched = Retriever::new(
        Arc::clone(&fixture.store),
        Arc::clone(&fixture.index),
        Arc::new(InProcessModel::new(fixture.embedder.clone())),
        Arc::clone(&fixture.popular),
        StoreLimits::default().max_history,
        Duration::from_secs(5),
        "gru-tiny-retrained".to_owned(),
    );
    let problem = mismatched.pairing_problem().unwrap();
    assert!(
        problem.contains("gru-tiny-retrained")
            && problem.contains(fixture.embedder.model_version()),
        "{problem}"
    );
    let outcome = mismatched
        .retrieve(&request(Some("u1"), &["i2"], &[], 4))
        .await;
    assert_eq!(outcome.source, Source::Popular);
    assert_eq!(
        outcome.fallback_reason,
        Some(FallbackReason::ModelIndexMismatch)
    );
    let returned: Vec<&str> = outcome
        .recommendations
        .iter()
        .map(|item| item.item_id.as_str())
        .collect();
    // The popular list is i0, i1, ...: the seen items stay excluded in the fallback.
    assert_eq!(returned, ["i3", "i4", "i5", "i6"]);
    assert!(matches!(
        mismatched
            .recommendations_to_push(&["u1".to_owned()], 5)
            .await,
        Err(PushError::ModelIndexMismatch(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_happens_inside_the_search() {
    let fixture = fixture().await;
    let seen: Vec<String> = (0..37).map(|n| format!("i{n}")).collect();
    let seen_refs: Vec<&str> = seen.iter().map(String::as_str).collect();
    fixture.history("heavy", &seen_refs).await;
    let outcome = fixture
        .retriever()
        .retrieve(&request(Some("heavy"), &[], &[], 10))
        .await;
    let mut returned: Vec<&str> = outcome
        .recommendations
        .iter()
        .map(|item| item.item_id.as_str())
        .collect();
    returned.sort();
    // 40 items, 37 seen: exactly the 3 unseen ones come back, however they rank.
    assert_eq!(returned, ["i37", "i38", "i39"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_are_scored_and_ranked_unknown_ones_listed() {
    let fixture = fixture().await;
    let outcome = fixture
        .retriever()
        .retrieve(&request(
            None,
            &["i1", "i2"],
            &["i5", "nope", "i7", "i9"],
            10,
        ))
        .await;
    assert_eq!(outcome.source, Source::Personalized);
    assert_eq!(outcome.unknown_items, ["nope"]);
    let model = InProcessModel::new(fixture.embedder.clone());
    let (scores, _) = model
        .score_candidates(&ids(&["i1", "i2"]), &ids(&["i5", "i7", "i9"]))
        .await
        .unwrap();
    let mut expected: Vec<(String, f32)> = ["i5", "i7", "i9"]
        .iter()
        .map(|id| id.to_string())
        .zip(scores.into_iter().map(Option::unwrap))
        .collect();
    expected.sort_by(|left, right| right.1.total_cmp(&left.1));
    let actual: Vec<&str> = outcome
        .recommendations
        .iter()
        .map(|item| item.item_id.as_str())
        .collect();
    let expected: Vec<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(actual, expected);
    assert!(outcome
        .recommendations
        .iter()
        .all(|item| item.payload["title"].is_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_signal_answers_with_popular_items_and_says_why() {
    let fixture = fixture().await;
    let retriever = fixture.retriever();

    let outcome = retriever
        .retrieve(&request(Some("new-user"), &[], &[], 5))
        .await;
    assert_eq!(
        (outcome.source, outcome.fallback_reason),
        (Source::Popular, Some(FallbackReason::NoHistory))
    );
    let returned: Vec<&str> = outcome
        .recommendations
        .iter()
        .map(|item| item.item_id.as_str())
        .collect();
    assert_eq!(returned, ["i0", "i1", "i2", "i3", "i4"]);
    assert!(outcome.recommendations[0].payload["title"].is_string());

    let outcome = retriever
        .retrieve(&request(None, &["i0", "ghost"], &[], 3))
        .await;
    assert_eq!(
        outcome.source,
        Source::Personalized,
        "one known item is enough"
    );

    let outcome = retriever
        .retrieve(&request(None, &["ghost", "phantom"], &[], 3))
        .await;
    assert_eq!(outcome.fallback_reason, Some(FallbackReason::UnknownItems));
    assert_eq!(outcome.unknown_items, ["ghost", "phantom"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_outages_answer_with_popular_items() {
    let fixture = fixture().await;

    // The store: a real redis-server, killed.
    let mut server = testkit::RedisServer::start();
    let redis = open_store(
        &server.url(),
        &testkit::unique_prefix("outage"),
        StoreLimits::default(),
        fixture.data_dir.path(),
    )
    .await
    .unwrap();
    let retriever = fixture.retriever_with(
        redis,
        Arc::new(InProcessModel::new(fixture.embedder.clone())),
        Duration::from_secs(5),
    );
    assert_eq!(
        retriever
            .retrieve(&request(Some("u"), &["i1"], &[], 3))
            .await
            .source,
        Source::Personalized
    );
    server.kill();
    let outcome = retriever
        .retrieve(&request(Some("u"), &["i1"], &[], 3))
        .await;
    assert_eq!(
        (outcome.source, outcome.fallback_reason),
        (Source::Popular, Some(FallbackReason::StoreUnavailable))
    );
    let returned: Vec<&str> = outcome
        .recommendations
        .iter()
        .map(|item| item.item_id.as_str())
        .collect();
    assert_eq!(
        returned,
        ["i0", "i2", "i3"],
        "the session item is still excluded"
    );

    // The model: a model server that is not there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let http = HttpModel::new(&dead, Duration::from_millis(500)).unwrap();
    let retriever = fixture.retriever_with(
        Arc::clone(&fixture.store),
        Arc::new(http),
        Duration::from_secs(5),
    );
    let outcome = retriever.retrieve(&request(None, &["i1"], &[], 3)).await;
    assert_eq!(
        outcome.fallback_reason,
        Some(FallbackReason::ModelUnavailable)
    );
    assert_eq!(outcome.recommendations.len(), 3);

    // The budget: a model slower than the budget is reported as the late dependency.
    let slow = SlowModel(
        InProcessModel::new(fixture.embedder.clone()),
        Duration::from_millis(300),
    );
    let retriever = fixture.retriever_with(
        Arc::clone(&fixture.store),
        Arc::new(slow),
        Duration::from_millis(50),
    );
    let started = std::time::Instant::now();
    let outcome = retriever.retrieve(&request(None, &["i1"], &[], 3)).await;
    assert_eq!(
        outcome.fallback_reason,
        Some(FallbackReason::ModelUnavailable)
    );
    assert_eq!(outcome.recommendations.len(), 3);
    assert!(
        started.elapsed() < Duration::from_millis(290),
        "the answer must not wait for the model"
    );
}
