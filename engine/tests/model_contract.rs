//! The same questions to the in-process embedder and to `recsys model-server` over HTTP get the
//! same answers.

use std::sync::Arc;
use std::time::Duration;

use engine::model::{HttpModel, InProcessModel, ModelError, QueryModel};
use model_server::fixtures::train_tiny_bundle;
use model_server::model::EncoderKind;
use model_server::{Embedder, EmbedderConfig, ModelBundle};

fn items(raw: &[&str]) -> Vec<String> {
    raw.iter().map(|item| item.to_string()).collect()
}

async fn both_backends() -> (tempfile::TempDir, Vec<Arc<dyn QueryModel>>) {
    let data_dir = tempfile::tempdir().unwrap();
    let outcome = train_tiny_bundle(data_dir.path(), EncoderKind::Gru).unwrap();
    let start = || {
        Embedder::start(
            ModelBundle::load(&outcome.bundle_dir).unwrap(),
            EmbedderConfig::default(),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = model_server::server::spawn(
        listener,
        model_server::served::ServedModels::new(start()),
        std::future::pending(),
    )
    .unwrap();
    let http = HttpModel::new(
        &format!("http://{}", server.local_addr),
        Duration::from_secs(5),
    )
    .unwrap();
    (
        data_dir,
        vec![Arc::new(InProcessModel::new(start())), Arc::new(http)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_give_the_same_answers() {
    let (_data_dir, backends) = both_backends().await;
    let mut versions = Vec::new();
    let mut queries = Vec::new();
    let mut scores = Vec::new();
    for backend in &backends {
        versions.push(backend.metadata().await.unwrap());
        let query = backend.query(&items(&["i1", "ghost", "i2"])).await.unwrap();
        assert_eq!(query.unknown_items, ["ghost"], "{}", backend.backend());
        queries.push(query.vector);
        let (candidate_scores, unknown) = backend
            .score_candidates(&items(&["i1", "i2"]), &items(&["i5", "nope", "i7"]))
            .await
            .unwrap();
        assert!(candidate_scores[1].is_none() && candidate_scores[0].is_some());
        assert_eq!(unknown, ["nope"], "{}", backend.backend());
        scores.push(candidate_scores);
        match backend.query(&items(&["ghost", "phantom"])).await {
            Err(ModelError::EmptySequence { unknown_items }) => {
                assert_eq!(unknown_items, ["ghost", "phantom"])
            }
            other => panic!(
                "{}: expected EmptySequence, got {other:?}",
                backend.backend()
            ),
        }
    }
    assert_eq!(versions[0], versions[1]);
    for (embedded, http) in queries[0].iter().zip(&queries[1]) {
        assert!((embedded - http).abs() < 1e-6);
    }
    for (embedded, http) in scores[0].iter().zip(&scores[1]) {
        assert!((embedded.unwrap_or(0.0) - http.unwrap_or(0.0)).abs() < 1e-5);
    }
}

#[tokio::test]
async fn an_unreachable_model_server_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let http = HttpModel::new(&format!("http://{address}"), Duration::from_millis(500)).unwrap();
    assert!(matches!(
        http.query(&items(&["i1"])).await,
        Err(ModelError::Unavailable(_))
    ));
    assert!(matches!(
        http.metadata().await,
        Err(ModelError::Unavailable(_))
    ));
}
