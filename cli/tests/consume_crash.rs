//! `recsys consume` killed with SIGKILL at random moments while all of MovieLens-100k streams
//! through a real broker into a real redis-server, restarted each time: at the end every user's
//! stored sequence equals the one computed directly from the file, with no event lost and none
//! applied twice. Then SIGTERM stops it cleanly (exit status 0).

mod support;

use std::time::{Duration, Instant};

use engine::event_log::replay::{replay, ReplayOptions, ReplayTarget, ReplayTimestamps};
use engine::store::{open_store, StoreLimits};
use rand::{Rng, SeedableRng};
use support::consumer::{group_env, ConsumerProcess};
use support::movielens_stream::MovieLensStream;
use testkit::{KafkaBroker, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_consumers_lose_and_duplicate_nothing_of_movielens() {
    let limits = StoreLimits::default();
    let stream = MovieLensStream::load(&support::movielens_data_dir(), limits);
    let (events, expected) = (&stream.events, &stream.expected);

    let broker = KafkaBroker::start();
    let redis = RedisServer::start();
    let prefix = testkit::unique_prefix("crash");
    broker.create_topic(&format!("{prefix}-events"), 4);
    broker.create_topic(&format!("{prefix}-dead"), 1);
    let work_dir = tempfile::tempdir().unwrap();
    let store = open_store(&redis.url(), &prefix, limits, work_dir.path())
        .await
        .unwrap();

    let target = ReplayTarget::Kafka {
        brokers: broker.bootstrap(),
        topic: format!("{prefix}-events"),
    };
    let replayed_events = events.clone();
    let replaying = tokio::spawn(async move {
        // About 40 s of stream, so the kills land while it flows (a restarted member takes
        // its partitions back at once and catches up within seconds).
        let options = ReplayOptions {
            rate: Some(2_500.0),
            timestamps: ReplayTimestamps::Original,
            api_batch: 1_000,
        };
        replay(replayed_events, &target, &options, |_| {}).await
    });

    let seed: u64 = rand::rng().random();
    println!("kill schedule seed: {seed}");
    let mut schedule = rand::rngs::StdRng::seed_from_u64(seed);
    let applied_total = || async {
        let mut total = 0;
        for user in expected.keys() {
            total += store.user_state(user).await.unwrap().history_version;
        }
        total
    };
    let total = events.len() as u64;
    let mut env = group_env(&redis, &broker, &prefix);
    env.extend(
        [
            // Small batches: more commits, so kills land between and inside them.
            ("RECSYS__CONSUMER__MAX_BATCH_EVENTS", "1000"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    let mut kills_mid_stream = 0;
    for kill in 0..5 {
        let before = applied_total().await;
        if before == total {
            break;
        }
        let consumer =
            tokio::task::block_in_place(|| ConsumerProcess::start(work_dir.path(), &env));
        // Kill it while it works: once it has applied something, after a random extra moment.
        let deadline = Instant::now() + Duration::from_secs(60);
        while applied_total().await == before {
            assert!(
                Instant::now() < deadline,
                "consumer {kill} never got to work"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let extra = Duration::from_millis(schedule.random_range(0..1_000));
        tokio::time::sleep(extra).await;
        consumer.kill();
        let applied = applied_total().await;
        println!(
            "kill {kill} ({extra:?} after it started applying): {applied} interactions applied"
        );
        if applied < total {
            kills_mid_stream += 1;
        }
    }
    assert!(
        kills_mid_stream >= 3,
        "only {kills_mid_stream} kills hit the stream"
    );
    assert_eq!(replaying.await.unwrap().unwrap(), events.len());

    let consumer = tokio::task::block_in_place(|| ConsumerProcess::start(work_dir.path(), &env));
    let deadline = Instant::now() + Duration::from_secs(300);
    while applied_total().await < events.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the stream was not consumed within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, _) = tokio::task::block_in_place(|| consumer.terminate());
    assert!(
        status.success(),
        "SIGTERM must end the consumer with status 0: {status}"
    );

    let wrong = stream.users_that_differ(store.as_ref()).await;
    assert!(
        wrong.is_empty(),
        "{} users differ: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}
