//! `recsys consume` killed with SIGKILL at random moments while all of MovieLens-100k streams
//! through a real broker into a real redis-server, restarted each time: at the end every user's
//! stored sequence equals the one computed directly from the file, with no event lost and none
//! applied twice. Then SIGTERM stops it cleanly (exit status 0).

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dataset::Dataset;
use engine::event_log::replay::{
    dataset_events, replay, ReplayOptions, ReplayTarget, ReplayTimestamps,
};
use engine::store::{open_store, StoreLimits};
use rand::{Rng, SeedableRng};
use testkit::{KafkaBroker, RedisServer};

struct ConsumerProcess {
    child: Child,
}

impl ConsumerProcess {
    fn start(
        redis: &RedisServer,
        broker: &KafkaBroker,
        prefix: &str,
        work_dir: &std::path::Path,
    ) -> ConsumerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_recsys"))
            .args(["consume", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(work_dir)
            .env("RECSYS__STATE__URL", redis.url())
            .env("RECSYS__STATE__KEY_PREFIX", prefix)
            .env("RECSYS__EVENTS__URL", broker.url())
            .env("RECSYS__EVENTS__TOPIC", format!("{prefix}-events"))
            .env(
                "RECSYS__EVENTS__DEAD_LETTER_TOPIC",
                format!("{prefix}-dead"),
            )
            .env("RECSYS__CONSUMER__GROUP_ID", format!("{prefix}-group"))
            // A killed member's partitions move on after this long.
            .env("RECSYS__CONSUMER__SESSION_TIMEOUT_MS", "6000")
            // Small batches: more commits, so kills land between and inside them.
            .env("RECSYS__CONSUMER__MAX_BATCH_EVENTS", "1000")
            .env("RUST_LOG", "warn")
            .current_dir(work_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start recsys consume");
        ConsumerProcess { child }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Blocks until it printed its "consuming ..." line (its signal handlers are installed).
    fn wait_until_started(&mut self) {
        use std::io::BufRead;
        let stdout = self.child.stdout.take().expect("stdout is piped");
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("consuming"),
            "unexpected first line: {line:?}"
        );
        // Keep reading, so its last words do not meet a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_consumers_lose_and_duplicate_nothing_of_movielens() {
    let dataset = Dataset::load(&support::movielens_data_dir(), "ml-100k")
        .expect("MovieLens-100k is needed: scripts/setup.sh fetches it into $RECSYS_DATA_DIR");
    let events = dataset_events(&dataset.name, &dataset.interactions);
    let limits = StoreLimits::default();
    let mut expected: BTreeMap<String, (Vec<String>, u64)> = BTreeMap::new();
    for event in &events {
        let (sequence, count) = expected.entry(event.user_id.clone()).or_default();
        if sequence.last() != Some(&event.item_id) {
            sequence.push(event.item_id.clone());
        }
        *count += 1;
    }
    for (sequence, _) in expected.values_mut() {
        let excess = sequence.len().saturating_sub(limits.max_history);
        sequence.drain(..excess);
    }

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
        // About 20 s of stream, so the kills land while it flows.
        let options = ReplayOptions {
            rate: Some(5_000.0),
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
    let mut kills_mid_stream = 0;
    for kill in 0..5 {
        let before = applied_total().await;
        if before == total {
            break;
        }
        let consumer = ConsumerProcess::start(&redis, &broker, &prefix, work_dir.path());
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

    let mut consumer = ConsumerProcess::start(&redis, &broker, &prefix, work_dir.path());
    tokio::task::block_in_place(|| consumer.wait_until_started());
    let deadline = Instant::now() + Duration::from_secs(300);
    while applied_total().await < events.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the stream was not consumed within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = consumer.terminate();
    assert!(
        status.success(),
        "SIGTERM must end the consumer with status 0: {status}"
    );

    let mut wrong = Vec::new();
    for (user, (sequence, count)) in &expected {
        let state = store.user_state(user).await.unwrap();
        if &state.recent_items != sequence || state.history_version != *count {
            wrong.push(format!(
                "{user}: {} applied for {count} events, sequence equal: {}",
                state.history_version,
                &state.recent_items == sequence
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} users differ: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}
