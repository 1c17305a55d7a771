//! The state store over TLS (`rediss://`) to a redis-server that speaks only TLS, with a
//! certificate from a test authority the process trusts through `SSL_CERT_FILE`. Its own test
//! binary: it sets that variable for the whole process.

use engine::store::{open_store, AppliedInteraction, ItemKey, StoreLimits, UserUpdate};

#[tokio::test]
async fn the_state_store_speaks_tls_to_a_tls_only_redis() {
    let certificates = testkit::TestCertificates::make();
    // Safe here: this binary has this one test, and nothing else reads the environment yet.
    std::env::set_var("SSL_CERT_FILE", &certificates.ca_cert);
    let server = testkit::RedisServer::start_tls(&certificates);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("rediss://localhost:{}/", server.port);
    let store = open_store(
        &url,
        &testkit::unique_prefix("tls"),
        StoreLimits::default(),
        dir.path(),
    )
    .await
    .unwrap();
    store
        .apply(vec![UserUpdate {
            user_id: "u".into(),
            interactions: vec![AppliedInteraction {
                item: ItemKey::new("a"),
                event_time_ms: 1,
                position: None,
                event: None,
                popularity_increment: 1.0,
            }],
        }])
        .await
        .unwrap();
    assert_eq!(store.user_state("u").await.unwrap().recent_items, ["a"]);

    // The same server in plain text is no server at all.
    let plain = format!("redis://localhost:{}/", server.port);
    let refused = open_store(&plain, "p", StoreLimits::default(), dir.path()).await;
    assert!(refused.is_err());
}
