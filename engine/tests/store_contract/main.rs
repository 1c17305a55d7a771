//! One contract for every `UserStore` backend, run against the embedded store and a real
//! redis-server started by the harness.

use std::sync::Arc;

use engine::store::{
    open_store, AppliedInteraction, CachedItem, CachedRecommendations, EventDigest, ItemKey,
    SourcePosition, StoreLimits, UserStore, UserUpdate,
};

/// Keeps whatever backs a store (temporary dir, server) alive for the test's duration.
type Guard = Box<dyn std::any::Any + Send>;

const LIMITS: StoreLimits = StoreLimits {
    max_history: 5,
    max_seen: 8,
    max_event_ids: 4,
};

async fn embedded() -> (Arc<dyn UserStore>, Guard) {
    let data_dir = tempfile::tempdir().unwrap();
    let store = open_store("embedded", "unused", LIMITS, data_dir.path())
        .await
        .unwrap();
    (store, Box::new(data_dir))
}

async fn redis_store(server: &testkit::RedisServer, test: &str) -> Arc<dyn UserStore> {
    open_store(
        &server.url(),
        &testkit::unique_prefix(test),
        LIMITS,
        std::path::Path::new("."),
    )
    .await
    .unwrap()
}

async fn redis_cluster() -> (Arc<dyn UserStore>, Guard) {
    let cluster = testkit::RedisCluster::start();
    let store = open_store(
        &cluster.url(),
        &testkit::unique_prefix("cluster"),
        LIMITS,
        std::path::Path::new("."),
    )
    .await
    .unwrap();
    (store, Box::new(cluster))
}

async fn redis() -> (Arc<dyn UserStore>, Guard) {
    let server = testkit::RedisServer::start();
    let store = redis_store(&server, "contract").await;
    (store, Box::new(server))
}

fn interaction(item: &str, time: i64, position: Option<(i32, i64)>) -> AppliedInteraction {
    AppliedInteraction {
        item: ItemKey::new(item),
        event_time_ms: time,
        position: position.map(|(partition, offset)| SourcePosition { partition, offset }),
        event: None,
        popularity_increment: 0.0,
    }
}

fn update(user: &str, interactions: Vec<AppliedInteraction>) -> UserUpdate {
    UserUpdate {
        user_id: user.to_owned(),
        interactions,
    }
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

mod catalogue;
mod contract;

macro_rules! store_contract {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let (store, _guard) = super::$backend().await;
                    super::contract::$test(store.as_ref()).await;
                }
            )*

            /// Takes the shared store itself: the live views hold it.
            #[tokio::test]
            async fn replicas_following_one_catalogue_see_each_change() {
                let (store, _guard) = super::$backend().await;
                super::catalogue::replicas_following_one_catalogue_see_each_change(store).await;
            }
        }
    };
}

macro_rules! every_backend {
    ($($backend:ident),*) => {
        $(
            store_contract!($backend:
                unknown_user_has_empty_state,
                sequence_is_bounded_most_recent_last_without_consecutive_repeats,
                a_user_named_twice_in_one_batch_gets_both_in_order,
                seen_items_forget_the_oldest_beyond_the_limit,
                redelivered_events_change_nothing,
                repeated_event_ids_are_applied_once,
                users_do_not_see_each_other,
                cached_recommendations_round_trip_next_to_the_history,
                popularity_accumulates_and_ranks,
                only_applied_interactions_add_popularity,
                concurrent_writers_to_one_user_lose_nothing,
                catalogue_upserts_replace_and_the_change_log_names_each_item_once,
                a_forgotten_user_keeps_nothing_and_old_events_stay_out,
            );
        )*
    };
}

every_backend!(embedded, redis, redis_cluster);

#[tokio::test]
async fn embedded_state_survives_a_reopen() {
    let data_dir = tempfile::tempdir().unwrap();
    {
        let store = open_store("embedded", "unused", LIMITS, data_dir.path())
            .await
            .unwrap();
        store
            .apply(vec![update("u", vec![interaction("a", 1, Some((0, 1)))])])
            .await
            .unwrap();
    }
    let reopened = open_store("embedded", "unused", LIMITS, data_dir.path())
        .await
        .unwrap();
    assert_eq!(reopened.user_state("u").await.unwrap().recent_items, ["a"]);
    let again = reopened
        .apply(vec![update("u", vec![interaction("a", 1, Some((0, 1)))])])
        .await
        .unwrap();
    assert_eq!(again.duplicates, 1);
}

#[tokio::test]
async fn redis_state_survives_a_server_restart_and_scripts_reload() {
    let mut server = testkit::RedisServer::start();
    let store = redis_store(&server, "restart").await;
    store
        .apply(vec![update("u", vec![interaction("a", 1, Some((0, 1)))])])
        .await
        .unwrap();
    server.restart();
    // The restarted server has the data (append-only file) but not the script; the store reloads it.
    let mut outcome = store
        .apply(vec![update("u", vec![interaction("b", 2, Some((0, 2)))])])
        .await;
    for _ in 0..20 {
        if outcome.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        outcome = store
            .apply(vec![update("u", vec![interaction("b", 2, Some((0, 2)))])])
            .await;
    }
    assert_eq!(outcome.unwrap().applied, 1);
    assert_eq!(
        store.user_state("u").await.unwrap().recent_items,
        ["a", "b"]
    );
}

#[tokio::test]
async fn redis_auth_takes_the_password_from_the_url_and_no_error_shows_it() {
    let server = testkit::RedisServer::start_with_password("s3cret-pw");
    let dir = tempfile::tempdir().unwrap();
    let prefix = testkit::unique_prefix("auth");
    let url = |user_info: &str| format!("redis://{user_info}127.0.0.1:{}/", server.port);
    let store = open_store(&url(":s3cret-pw@"), &prefix, LIMITS, dir.path())
        .await
        .unwrap();
    store
        .apply(vec![update("u", vec![interaction("a", 1, None)])])
        .await
        .unwrap();
    assert_eq!(store.user_state("u").await.unwrap().recent_items, ["a"]);

    for user_info in ["", ":wrong-pw@"] {
        let error = match open_store(&url(user_info), &prefix, LIMITS, dir.path()).await {
            Ok(store) => store.user_state("u").await.unwrap_err(),
            Err(error) => error,
        }
        .to_string();
        assert!(error.to_lowercase().contains("auth"), "{error}");
        assert!(!error.contains("pw"), "{error}");
    }
}

#[tokio::test]
async fn a_stopped_redis_is_an_unavailable_error_not_a_hang() {
    let mut server = testkit::RedisServer::start();
    let store = redis_store(&server, "down").await;
    server.kill();
    let started = std::time::Instant::now();
    let error = store.user_state("u").await.unwrap_err();
    assert!(
        matches!(error, engine::store::StoreError::Unavailable(_)),
        "{error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

#[tokio::test]
async fn bad_urls_and_prefixes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let error = open_store("postgres://x", "p", LIMITS, dir.path())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("expected redis://, rediss://, redis+cluster://"),
        "{error}"
    );
    let error = open_store("redis://127.0.0.1:1/", "a{b", LIMITS, dir.path())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("free of braces"), "{error}");
    let error = open_store("redis+cluster://:pw@/", "p", LIMITS, dir.path())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("no seed node"), "{error}");
    assert!(!error.contains("pw"), "{error}");
}

/// The Redis store remembers the records it wrote, to skip reading them back: a record another
/// process changed since must be read again, not overwritten from memory.
#[tokio::test]
async fn redis_writer_with_a_stale_memory_of_a_record_reads_it_again() {
    let server = testkit::RedisServer::start();
    let prefix = testkit::unique_prefix("stale");
    let url = server.url();
    let open = || open_store(&url, &prefix, LIMITS, std::path::Path::new("."));
    let (first, second) = (open().await.unwrap(), open().await.unwrap());
    let at = |item: &str, offset: i64| interaction(item, offset, Some((0, offset)));

    first
        .apply(vec![update("u", vec![at("a", 1)])])
        .await
        .unwrap();
    second
        .apply(vec![update("u", vec![at("b", 2)])])
        .await
        .unwrap();
    // `first` still remembers the record holding only "a".
    let outcome = first
        .apply(vec![update("u", vec![at("b", 2), at("c", 3)])])
        .await
        .unwrap();

    assert_eq!((outcome.applied, outcome.duplicates), (1, 1));
    let state = second.user_state("u").await.unwrap();
    assert_eq!(state.recent_items, ["a", "b", "c"]);
    assert_eq!(state.history_version, 3);
}

/// A consumer's view of a cluster node restarting: writes fail while the node is down (a
/// transient error, retried like the consumer does) and nothing is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_loses_nothing_when_a_node_restarts_mid_run() {
    let cluster = testkit::RedisCluster::start();
    let store = open_store(
        &cluster.url(),
        &testkit::unique_prefix("cluster-restart"),
        LIMITS,
        std::path::Path::new("."),
    )
    .await
    .unwrap();
    let users: Vec<String> = (0..60).map(|user| format!("user-{user}")).collect();
    let batches = 120;
    let mut restarting = None;
    let mut cluster = Some(cluster);
    let mut failures = 0;
    for batch in 0..batches {
        if batch == 30 {
            let mut cluster = cluster.take().unwrap();
            restarting = Some(tokio::task::spawn_blocking(move || {
                cluster.restart_node(1);
                cluster
            }));
        }
        let updates: Vec<UserUpdate> = users
            .iter()
            .map(|user| {
                update(
                    user,
                    vec![interaction(&format!("i{batch}"), batch, Some((0, batch)))],
                )
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while let Err(error) = store.apply(updates.clone()).await {
            assert!(
                matches!(error, engine::store::StoreError::Unavailable(_)),
                "{error}"
            );
            assert!(std::time::Instant::now() < deadline, "{error}");
            failures += 1;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let _cluster = restarting.unwrap().await.unwrap();
    println!("{failures} writes failed while the node restarted");
    for user in &users {
        let state = store.user_state(user).await.unwrap();
        assert_eq!(state.history_version, batches as u64, "{user}");
        assert_eq!(state.recent_items.len(), LIMITS.max_history, "{user}");
    }
}
