//! The API as deployed: assembled from configuration by the same start-up code `recsys serve`
//! uses, on a real TCP port, with a real redis-server as the store and the model either in
//! process or behind `recsys model-server` over HTTP.

use std::sync::Arc;
use std::time::Duration;

use api::AppState;
use dataset::bundle::EncoderKind;
use engine::config::Config;
use engine::model::HttpModel;
use engine::retrieve::Retriever;
use model_server::fixtures::train_tiny_bundle;
use model_server::{Embedder, EmbedderConfig, ModelBundle};
use serde_json::{json, Value};
use testkit::RedisServer;

struct Deployment {
    /// Servers of this deployment; stopped before the data dir is removed.
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The API with the in-process model.
    embedded_url: String,
    /// The same store and index, with the model behind the model server.
    http_url: String,
    retriever: Arc<Retriever>,
    redis: RedisServer,
    client: reqwest::Client,
    _data_dir: tempfile::TempDir,
}

async fn serve(
    retriever: Arc<Retriever>,
    config: &Config,
    tasks: &mut Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = api::spawn(
        listener,
        AppState::new(config, retriever).unwrap(),
        std::future::pending(),
    )
    .unwrap();
    tasks.push(handle.task);
    format!("http://{}", handle.local_addr)
}

async fn deploy() -> Deployment {
    let data_dir = tempfile::tempdir().unwrap();
    let trained = train_tiny_bundle(data_dir.path(), EncoderKind::Gru).unwrap();
    let redis = RedisServer::start();
    let mut config = Config {
        data_dir: data_dir.path().to_owned(),
        ..Config::default()
    };
    config.state.url = redis.url();
    config.state.key_prefix = testkit::unique_prefix("serve");
    // Short enough that a dead store turns into a fallback quickly.
    config.api.request_budget_ms = 500;
    engine::startup::build_index_from_bundle(&config)
        .await
        .unwrap();
    let (retriever, _refresher) = engine::startup::build_retriever(&config).await.unwrap();

    let model_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bundle = ModelBundle::load(&trained.bundle_dir).unwrap();
    let max_len = bundle.config.max_len as usize;
    let model_server = model_server::server::spawn(
        model_listener,
        model_server::served::ServedModels::new(Embedder::start(bundle, EmbedderConfig::default())),
        std::future::pending(),
    )
    .unwrap();
    let http_model = HttpModel::new(
        &format!("http://{}", model_server.local_addr),
        Duration::from_secs(2),
    )
    .unwrap();
    let http_retriever = Arc::new(Retriever::new(
        Arc::clone(retriever.store()),
        Arc::clone(retriever.index()),
        Arc::new(http_model),
        Arc::clone(retriever.popular()),
        max_len,
        Duration::from_millis(config.api.request_budget_ms),
        retriever.model_version().to_owned(),
    ));
    let mut tasks = vec![model_server.task];
    Deployment {
        embedded_url: serve(Arc::clone(&retriever), &config, &mut tasks).await,
        http_url: serve(http_retriever, &config, &mut tasks).await,
        tasks,
        retriever,
        redis,
        client: reqwest::Client::new(),
        _data_dir: data_dir,
    }
}

impl Deployment {
    /// Stops the servers and waits for them, so the index is closed before its directory goes.
    async fn shut_down(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }

    async fn post(&self, base: &str, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{base}{path}"))
            .json(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

fn item_ids(answer: &Value) -> Vec<String> {
    answer["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["item_id"].as_str().unwrap().to_owned())
        .collect()
}

fn scores(answer: &Value) -> Vec<f64> {
    answer["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["score"].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_model_backends_give_the_same_answers_through_the_api() {
    let deployment = deploy().await;
    engine::fixtures::remember(
        deployment.retriever.store().as_ref(),
        "u7",
        &["i1", "i2", "i3"],
    )
    .await;

    let retrieve = json!({"user_ids_raw": ["u7"], "item_seq_raw": [["i4", "ghost"]]});
    let rank =
        json!({"item_seq_raw": [["i1", "i2"]], "candidate_items_raw": ["i9", "nope", "i5", "i6"]});
    let get_embedding = json!({"ctx": {"item_seq_raw": [["i1", "i2"], ["i3"]]}, "endpoint": "get_query_embeddings"});
    let predict = json!({"ctx": {"item_seq_raw": [["i1", "i2"]], "candidate_items_raw": ["i5", "nope"]}, "endpoint": "predict", "debug": true});
    let mut answers = Vec::new();
    for base in [&deployment.embedded_url, &deployment.http_url] {
        let (status, personalized) = deployment
            .post(base, "/recs/retrieve?count=5", &retrieve)
            .await;
        assert_eq!(status, 200, "{base}: {personalized}");
        assert_eq!(personalized["metadata"]["source"], "personalized", "{base}");
        assert_eq!(personalized["metadata"]["unknown_items"], json!(["ghost"]));
        let returned = item_ids(&personalized);
        assert_eq!(returned.len(), 5);
        assert!(
            returned
                .iter()
                .all(|item| !["i1", "i2", "i3", "i4"].contains(&item.as_str())),
            "{base}: seen items returned: {returned:?}"
        );

        let (status, ranked) = deployment.post(base, "/recs/retrieve", &rank).await;
        assert_eq!(status, 200, "{base}: {ranked}");
        let mut ranked_ids = item_ids(&ranked);
        ranked_ids.sort();
        assert_eq!(ranked_ids, ["i5", "i6", "i9"], "{base}");
        assert_eq!(ranked["metadata"]["unknown_items"], json!(["nope"]));

        let (status, embedding) = deployment
            .post(base, "/vendor/seq_retriever", &get_embedding)
            .await;
        assert_eq!(status, 200, "{base}: {embedding}");
        assert!(embedding["rec_id"].is_string(), "{embedding}");
        let embedding = embedding["result"].clone();
        assert_eq!(embedding["query_embedding"].as_array().unwrap().len(), 2);
        assert_eq!(embedding["ctx"], with_defaults(&get_embedding["ctx"]));
        let (status, predicted) = deployment
            .post(base, "/vendor/seq_retriever", &predict)
            .await;
        assert_eq!(status, 200, "{base}: {predicted}");
        assert!(
            predicted["debug_info"]["model_micros"].is_number(),
            "{predicted}"
        );
        let predicted = predicted["result"].clone();
        assert!(predicted["scores"][0].is_number() && predicted["scores"][1].is_null());
        assert_eq!(predicted["unknown_items"], json!(["nope"]));
        assert!(predicted["metadata"]["model_name"].is_string());

        let (status, empty) = deployment
            .post(
                base,
                "/vendor/seq_retriever",
                &json!({"ctx": {"item_seq_raw": [["ghost"]]}, "endpoint": "get_query_embeddings"}),
            )
            .await;
        assert_eq!(status, 422, "{base}: {empty}");
        assert!(
            empty["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ctx.item_seq_raw[0]"),
            "{empty}"
        );
        answers.push((personalized, ranked, embedding, predicted));
    }
    let (embedded, http) = (&answers[0], &answers[1]);
    assert_eq!(item_ids(&embedded.0), item_ids(&http.0));
    assert_eq!(item_ids(&embedded.1), item_ids(&http.1));
    for (a, b) in scores(&embedded.0).iter().zip(scores(&http.0)) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    assert_eq!(
        embedded.0["metadata"]["model_version"],
        http.0["metadata"]["model_version"]
    );
    let vectors = |answer: &Value| -> Vec<f64> {
        answer["query_embedding"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_f64().unwrap())
            .collect()
    };
    for (a, b) in vectors(&embedded.2).iter().zip(vectors(&http.2)) {
        assert!((a - b).abs() < 1e-5);
    }
    let predicted_score = |answer: &Value| answer["scores"][0].as_f64().unwrap();
    assert!((predicted_score(&embedded.3) - predicted_score(&http.3)).abs() < 1e-4);
    deployment.shut_down().await;
}

/// `ctx` with the tutorial's defaults filled in, as the API echoes it back.
fn with_defaults(ctx: &Value) -> Value {
    let context: schemas::RetrieveContext = serde_json::from_value(ctx.clone()).unwrap();
    serde_json::to_value(context).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_killed_mid_run_turns_answers_into_popular_items_not_errors() {
    let mut deployment = deploy().await;
    engine::fixtures::remember(deployment.retriever.store().as_ref(), "u1", &["i1", "i2"]).await;
    let body = json!({"user_ids_raw": ["u1"], "item_seq_raw": [["i3"]]});
    let url = deployment.embedded_url.clone();

    let (status, before) = deployment.post(&url, "/recs/retrieve?count=4", &body).await;
    assert_eq!(
        (status, &before["metadata"]["source"]),
        (200, &json!("personalized"))
    );

    // Requests keep coming while the store dies: every one is answered 200.
    let load = {
        let client = deployment.client.clone();
        let url = url.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let mut sources = Vec::new();
            for _ in 0..40 {
                let response = client
                    .post(format!("{url}/recs/retrieve?count=4"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let answer: Value = response.json().await.unwrap();
                sources.push(answer["metadata"]["source"].as_str().unwrap().to_owned());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sources
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    deployment.redis.kill();
    let sources = load.await.unwrap();
    assert!(
        sources.iter().any(|source| source == "popular"),
        "{sources:?}"
    );

    let (status, during) = deployment.post(&url, "/recs/retrieve?count=4", &body).await;
    assert_eq!(status, 200, "{during}");
    assert_eq!(during["metadata"]["source"], "popular");
    assert_eq!(
        during["metadata"]["fallback_reason"], "store_unavailable",
        "{during}"
    );
    assert_eq!(item_ids(&during).len(), 4);
    assert!(
        !item_ids(&during).contains(&"i3".to_owned()),
        "the session item is still excluded"
    );
    let readiness = deployment
        .client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readiness.status(), 503);
    let readiness: Value = readiness.json().await.unwrap();
    assert_ne!(readiness["dependencies"]["store"], "ok");
    assert_eq!(readiness["dependencies"]["index"], "ok");

    // The server comes back with its append-only file: personalized answers resume, history intact.
    deployment.redis.restart();
    let mut recovered = None;
    for _ in 0..50 {
        let (status, answer) = deployment.post(&url, "/recs/retrieve?count=4", &body).await;
        assert_eq!(status, 200);
        if answer["metadata"]["source"] == "personalized" {
            recovered = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = recovered.expect("personalized answers resume after the store restarts");
    assert!(item_ids(&recovered)
        .iter()
        .all(|item| !["i1", "i2", "i3"].contains(&item.as_str())));
    let history: Value = deployment
        .client
        .get(format!("{url}/users/u1/history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["recent_items"], json!(["i1", "i2"]));
    deployment.shut_down().await;
}
