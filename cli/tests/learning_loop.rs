//! The learning loop end to end, as an operator runs it, once through a real broker and
//! redis-server and once on the embedded default. A deployment with no model serves popular
//! items; the first 80 % of MovieLens-100k is replayed and archived; `recsys train --from-events`
//! and `recsys index` make the first model, which the running API picks up; the rest is replayed
//! (its last part later, as the gate's holdout); `recsys retrain` trains a challenger, the gate
//! promotes it, and the API swaps to it under load; `recsys rollback` brings the champion back.
//! Not one request fails, and no answer names one bundle's model with another's index.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::KillOnDrop;
use testkit::{KafkaBroker, RedisServer};

const TRAINED_FIRST: usize = 80_000;
const HOLDOUT_FROM: usize = 95_000;
const ALL_EVENTS: usize = 100_000;
/// Few epochs: the test shows the loop, `MODEL.md` the model.
const MAX_EPOCHS: &str = "3";

/// One loop at a time: each trains on both cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The broker and redis-server of the Kafka deployment, with its environment.
struct Backends {
    _broker: KafkaBroker,
    _redis: RedisServer,
    env: Vec<(String, String)>,
}

fn kafka_backends() -> Backends {
    let broker = KafkaBroker::start();
    let redis = RedisServer::start();
    let prefix = testkit::unique_prefix("loop");
    for (topic, partitions) in [("events", 3), ("dead", 1), ("items", 1), ("items-dead", 1)] {
        broker.create_topic(&format!("{prefix}-{topic}"), partitions);
    }
    let env = [
        ("RECSYS__STATE__URL", redis.url()),
        ("RECSYS__STATE__KEY_PREFIX", prefix.clone()),
        ("RECSYS__EVENTS__URL", broker.url()),
        ("RECSYS__EVENTS__TOPIC", format!("{prefix}-events")),
        (
            "RECSYS__EVENTS__DEAD_LETTER_TOPIC",
            format!("{prefix}-dead"),
        ),
        ("RECSYS__CATALOGUE__TOPIC", format!("{prefix}-items")),
        (
            "RECSYS__CATALOGUE__DEAD_LETTER_TOPIC",
            format!("{prefix}-items-dead"),
        ),
        ("RECSYS__CONSUMER__GROUP_ID", format!("{prefix}-group")),
        // The API owns the embedded index; the consumer only applies and archives here.
        ("RECSYS__CONSUMER__PUSH_RECOMMENDATIONS", "false".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    Backends {
        _broker: broker,
        _redis: redis,
        env,
    }
}

/// A data dir with MovieLens-100k's item descriptions, and how to run `recsys` on it.
struct Operator {
    binary: PathBuf,
    data_dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Operator {
    fn new(env: Vec<(String, String)>) -> Operator {
        let data_dir = support::data_dir_with_movielens();
        let mut env = env;
        env.extend(
            [
                ("RECSYS__ARCHIVE__FLUSH_INTERVAL_MS", "200"),
                ("RECSYS__MODEL__RELOAD_INTERVAL_MS", "200"),
            ]
            .map(|(key, value)| (key.to_owned(), value.to_owned())),
        );
        Operator {
            binary: PathBuf::from(env!("CARGO_BIN_EXE_recsys")),
            data_dir,
            env,
        }
    }

    fn dir(&self) -> &Path {
        self.data_dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = support::recsys(&self.binary, self.dir());
        command
            .args(args)
            .arg("--data-dir")
            .arg(self.dir())
            .envs(self.env.iter().cloned());
        command
    }

    /// Runs a command to its end; its standard output.
    fn run(&self, args: &[&str]) -> String {
        support::run(&self.binary, self.dir(), &self.env, args)
    }

    fn serve(&self) -> (KillOnDrop, SocketAddr) {
        let (child, address) = support::serve(&self.binary, self.dir(), |command| {
            command.envs(self.env.iter().cloned());
        });
        (KillOnDrop(child), address)
    }

    fn consume(&self) -> KillOnDrop {
        let child = self
            .command(&["consume", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        KillOnDrop(child)
    }

    fn replay(&self, to: &str, skip: usize, limit: usize) {
        let (skip, limit) = (skip.to_string(), limit.to_string());
        let args = ["replay", "--to", to, "--skip", &skip, "--limit", &limit];
        self.run(&args);
    }

    /// Waits until the archive holds `count` events.
    fn await_archived(&self, count: usize) {
        let archive = archive::EventArchive::new(self.dir().join("archive"), "test");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let archived = archive.read(None, None).map_or(0, |events| events.len());
            if archived == count {
                return;
            }
            assert!(
                archived < count && Instant::now() < deadline,
                "the archive holds {archived} events, {count} expected"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn current_bundle(&self) -> String {
        std::fs::read_to_string(self.dir().join("bundles/CURRENT"))
            .unwrap()
            .trim()
            .to_owned()
    }
}

/// One answer: its status, source, model and the bundle its index was built for.
#[derive(Debug, Clone)]
struct Served {
    status: u16,
    source: Option<String>,
    model_version: Option<String>,
    index_bundle: Option<String>,
}

fn ask(address: SocketAddr) -> Served {
    let client = reqwest::blocking::Client::new();
    let response = client
        .post(format!("http://{address}/recs/retrieve?count=10"))
        .json(&json!({"item_seq_raw": [["50", "181", "172", "174"]]}))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().unwrap_or_default();
    let text = |field: &str| answer["metadata"][field].as_str().map(str::to_owned);
    Served {
        status,
        source: text("source"),
        model_version: text("model_version"),
        index_bundle: text("index_bundle"),
    }
}

/// Asks until an answer comes from `model_version`.
fn await_served(address: SocketAddr, model_version: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ask(address).model_version.as_deref() != Some(model_version) {
        assert!(
            Instant::now() < deadline,
            "{model_version} was never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Requests from three threads until stopped; every answer.
struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    answers: Arc<Mutex<Vec<Served>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(address: SocketAddr) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..3)
            .map(|_| {
                let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let served = ask(address);
                        answers.lock().unwrap().push(served);
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            workers,
        }
    }

    fn finish(self) -> Vec<Served> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for worker in self.workers {
            worker.join().unwrap();
        }
        std::mem::take(&mut *self.answers.lock().unwrap())
    }
}

/// The loop on `operator`'s deployment; `to` is where replays go (`kafka` or the API).
fn learning_loop(operator: &Operator, address: SocketAddr, to: &str) {
    let untrained = ask(address);
    assert_eq!(untrained.status, 200);
    assert_eq!(
        untrained.source.as_deref(),
        Some("popular"),
        "{untrained:?}"
    );

    operator.replay(to, 0, TRAINED_FIRST);
    operator.await_archived(TRAINED_FIRST);
    let trained = operator.run(&[
        "train",
        "--from-events",
        "--items-from",
        "ml-100k",
        "--max-epochs",
        MAX_EPOCHS,
    ]);
    assert!(
        trained.contains(&format!("data set events: {TRAINED_FIRST} events")),
        "{trained}"
    );
    operator.run(&["index"]);
    let champion = operator.current_bundle();
    await_served(address, &champion);

    operator.replay(to, TRAINED_FIRST, HOLDOUT_FROM - TRAINED_FIRST);
    // The holdout comes 2.5 s later and takes well under a second: the retrain's cut, 1.5 s
    // before the newest event, falls in the pause.
    std::thread::sleep(Duration::from_millis(2_500));
    operator.replay(to, HOLDOUT_FROM, ALL_EVENTS - HOLDOUT_FROM);
    operator.await_archived(ALL_EVENTS);

    let load = Load::start(address);
    let holdout_hours = 1.5 / 3_600.0;
    let retrained = operator.run(&[
        "retrain",
        "--holdout-hours",
        &holdout_hours.to_string(),
        "--items-from",
        "ml-100k",
        "--max-epochs",
        MAX_EPOCHS,
    ]);
    println!("{retrained}");
    assert!(
        retrained.contains(&format!("{HOLDOUT_FROM} events of")),
        "the challenger trains on everything before the holdout: {retrained}"
    );
    assert!(
        retrained.contains("holdout events: champion"),
        "{retrained}"
    );
    let challenger = operator.current_bundle();
    assert!(
        retrained.contains(&format!("promoted {challenger}")) && challenger != champion,
        "the gate refused the challenger: {retrained}"
    );
    await_served(address, &challenger);
    std::thread::sleep(Duration::from_millis(500));

    let rolled_back = operator.run(&["rollback"]);
    assert_eq!(operator.current_bundle(), champion, "{rolled_back}");
    await_served(address, &champion);
    std::thread::sleep(Duration::from_millis(500));
    let answers = load.finish();

    assert!(answers.len() > 100, "only {} answers", answers.len());
    let failed: Vec<_> = answers
        .iter()
        .filter(|served| served.status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        &failed[..1]
    );
    for served in &answers {
        assert_eq!(served.source.as_deref(), Some("personalized"), "{served:?}");
        assert_eq!(
            served.model_version, served.index_bundle,
            "an answer mixed one bundle's model with another's index"
        );
    }
    let versions: BTreeSet<_> = answers
        .iter()
        .filter_map(|served| served.model_version.clone())
        .collect();
    assert_eq!(versions, BTreeSet::from([champion.clone(), challenger]));
    assert_eq!(
        answers.last().unwrap().model_version.as_deref(),
        Some(champion.as_str()),
        "the rollback is served at the end"
    );
}

#[test]
fn the_loop_through_kafka_and_redis_promotes_swaps_and_rolls_back() {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let backends = kafka_backends();
    let operator = Operator::new(backends.env.clone());
    let mut consumer = operator.consume();
    let (mut server, address) = operator.serve();
    learning_loop(&operator, address, "kafka");
    support::stop(&mut server);
    support::stop(&mut consumer);
}

#[test]
fn the_loop_on_the_embedded_default_promotes_swaps_and_rolls_back() {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let operator = Operator::new(Vec::new());
    let (mut server, address) = operator.serve();
    learning_loop(&operator, address, &format!("http://{address}"));
    support::stop(&mut server);
}
