//! `recsys consume` processes as one consumer group on a 6-partition topic of the harness's
//! broker, writing to its redis-server.
//!
//! - Scale-out and in: three members with pushing on while MovieLens-100k streams in, one
//!   SIGKILLed mid-stream and another added later. At the end every user's state is what one
//!   uninterrupted consumer makes of the same events, and every user's pushed list reflects the
//!   user's final state.
//! - Recovery: with static membership a member restarted after a SIGKILL takes its partitions
//!   back at once. One crash, two crashes 4 s apart and a crash during a rebalance each resume
//!   within 15 s (time from the kill until an event produced then to every partition is
//!   applied).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::event_log::replay::{replay, ReplayOptions, ReplayTarget, ReplayTimestamps};
use engine::store::{open_store, StoreLimits, UserStore};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use support::consumer::{applied_in, group_env, ConsumerProcess};
use support::movielens_stream::{small_model, MovieLensStream};
use testkit::{KafkaBroker, RedisServer};

const PARTITIONS: i32 = 6;
const RESUME_WITHIN: Duration = Duration::from_secs(15);

fn start(data_dir: &Path, env: &[(String, String)]) -> ConsumerProcess {
    tokio::task::block_in_place(|| ConsumerProcess::start(data_dir, env))
}

/// Interactions applied so far, over `users`.
async fn applied_total(store: &dyn UserStore, users: &[String]) -> u64 {
    let mut total = 0;
    for user in users {
        total += store.user_state(user).await.unwrap().history_version;
    }
    total
}

async fn wait_for_applied(
    store: &dyn UserStore,
    users: &[String],
    at_least: u64,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    while applied_total(store, users).await < at_least {
        assert!(
            Instant::now() < deadline,
            "fewer than {at_least} interactions applied within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_loses_a_member_and_gains_one_ends_as_one_consumer_would() {
    let movielens = support::data_dir_with_movielens();
    let limits = StoreLimits::default();
    let stream = MovieLensStream::load(movielens.path(), limits);
    let events = &stream.events;
    let users = stream.users();

    // A small model and its index, so members push; each member gets its own copy of the data
    // dir (an embedded index is opened by one process), hence its own static member id.
    small_model(Path::new(env!("CARGO_BIN_EXE_recsys")), movielens.path());
    let members: Vec<tempfile::TempDir> = (0..4)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            for part in ["bundles", "index"] {
                let copied = std::process::Command::new("cp")
                    .arg("-a")
                    .arg(movielens.path().join(part))
                    .arg(dir.path())
                    .status()
                    .unwrap();
                assert!(copied.success());
            }
            dir
        })
        .collect();

    let broker = KafkaBroker::start();
    let redis = RedisServer::start();
    let prefix = testkit::unique_prefix("group");
    broker.create_topic(&format!("{prefix}-events"), PARTITIONS as u32);
    broker.create_topic(&format!("{prefix}-dead"), 1);
    let store = open_store(&redis.url(), &prefix, limits, movielens.path())
        .await
        .unwrap();
    let mut env = group_env(&redis, &broker, &prefix);
    env.extend(
        [
            ("RECSYS__CONSUMER__PUSH_RECOMMENDATIONS", "true"),
            ("RECSYS__CONSUMER__MAX_BATCH_EVENTS", "2000"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );

    let first = start(members[0].path(), &env);
    let second = start(members[1].path(), &env);
    let third = start(members[2].path(), &env);
    let target = ReplayTarget::Kafka {
        brokers: broker.bootstrap(),
        topic: format!("{prefix}-events"),
    };
    let replayed = events.clone();
    let replaying = tokio::spawn(async move {
        // About 25 s of stream, so the kill and the new member land while it flows.
        let options = ReplayOptions {
            rate: Some(4_000.0),
            timestamps: ReplayTimestamps::Original,
            api_batch: 1_000,
        };
        replay(replayed, &target, &options, |_| {}).await
    });

    let total = events.len() as u64;
    wait_for_applied(store.as_ref(), &users, total / 5, Duration::from_secs(120)).await;
    second.kill();
    println!(
        "member 2 killed at {} interactions applied",
        applied_total(store.as_ref(), &users).await
    );
    wait_for_applied(store.as_ref(), &users, total / 2, Duration::from_secs(120)).await;
    let fourth = start(members[3].path(), &env);
    println!(
        "member 4 added at {} interactions applied",
        applied_total(store.as_ref(), &users).await
    );
    assert_eq!(replaying.await.unwrap().unwrap(), events.len());
    wait_for_applied(store.as_ref(), &users, total, Duration::from_secs(300)).await;

    let mut applied_by_member = Vec::new();
    for member in [first, third, fourth] {
        let (status, printed) = tokio::task::block_in_place(|| member.terminate());
        assert!(status.success(), "{status}: {printed}");
        applied_by_member.push(applied_in(&printed));
    }
    println!("applied by the members that lived to the end: {applied_by_member:?}");
    // The partitions moved: the added member took some over.
    assert!(applied_by_member[2] > 0, "{applied_by_member:?}");

    let wrong = stream.users_that_differ(store.as_ref()).await;
    let mut stale_lists = Vec::new();
    for user in &users {
        let state = store.user_state(user).await.unwrap();
        let reflects = state.cached.map(|cached| cached.reflects_history_version);
        if reflects != Some(state.history_version) {
            stale_lists.push(format!(
                "{user}: list of version {reflects:?}, state {}",
                state.history_version
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} users differ: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert!(
        stale_lists.is_empty(),
        "{} pushed lists do not reflect the final state: {:?}",
        stale_lists.len(),
        &stale_lists[..stale_lists.len().min(10)]
    );
}

/// Produces one event to each partition (user `marker-<round>-<partition>`) and waits until
/// all are applied; how long after `since` that was.
async fn markers_applied(
    producer: &FutureProducer,
    topic: &str,
    store: &dyn UserStore,
    round: &str,
    since: Instant,
) -> Duration {
    let users: Vec<String> = (0..PARTITIONS)
        .map(|partition| format!("marker-{round}-{partition}"))
        .collect();
    for (partition, user) in users.iter().enumerate() {
        let event = serde_json::json!({
            "event_id": user,
            "user_id": user,
            "item_id": "1",
            "event_type": "click",
            "event_time_ms": common::clock::now_ms(),
        })
        .to_string();
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(partition as i32)
                    .key(user)
                    .payload(&event),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(error, _)| error)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while applied_total(store, &users).await < PARTITIONS as u64 {
        assert!(
            Instant::now() < deadline,
            "round {round}: markers not applied within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_after_a_crash_resumes_within_15_seconds() {
    let broker = KafkaBroker::start();
    let redis = RedisServer::start();
    let prefix = testkit::unique_prefix("recovery");
    let topic = format!("{prefix}-events");
    broker.create_topic(&topic, PARTITIONS as u32);
    broker.create_topic(&format!("{prefix}-dead"), 1);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let store: Arc<dyn UserStore> = open_store(
        &redis.url(),
        &prefix,
        StoreLimits::default(),
        dirs[0].path(),
    )
    .await
    .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let env = group_env(&redis, &broker, &prefix);
    let mut first = start(dirs[0].path(), &env);
    let mut second = start(dirs[1].path(), &env);
    let warm = markers_applied(&producer, &topic, store.as_ref(), "warm", Instant::now()).await;
    println!("both members applying after {warm:?}");

    // One crash: killed and restarted at once (a supervisor's restart).
    let killed = Instant::now();
    first.kill();
    first = start(dirs[0].path(), &env);
    let one = markers_applied(&producer, &topic, store.as_ref(), "one", killed).await;
    println!("one crash: resumed {one:?} after the kill");

    // Two crashes 4 s apart.
    let first_killed = Instant::now();
    first.kill();
    first = start(dirs[0].path(), &env);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let second_killed = Instant::now();
    second.kill();
    second = start(dirs[1].path(), &env);
    let two = markers_applied(&producer, &topic, store.as_ref(), "two", second_killed).await;
    println!(
        "two crashes 4 s apart: resumed {:?} after the first kill, {two:?} after the second",
        first_killed.elapsed()
    );

    // A crash during a rebalance: a third member joins, and a member dies while the group
    // reassigns.
    let third = start(dirs[2].path(), &env);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    first.kill();
    first = start(dirs[0].path(), &env);
    let during = markers_applied(&producer, &topic, store.as_ref(), "rebalance", killed).await;
    println!("crash during a rebalance: resumed {during:?} after the kill");

    for member in [first, second, third] {
        let (status, printed) = tokio::task::block_in_place(|| member.terminate());
        assert!(status.success(), "{status}: {printed}");
    }
    for (sequence, took) in [
        ("one crash", one),
        ("two crashes 4 s apart", two),
        ("a crash during a rebalance", during),
    ] {
        assert!(
            took <= RESUME_WITHIN,
            "{sequence}: the group resumed {took:?} after the kill"
        );
    }
}
