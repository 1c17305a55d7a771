//! A promotion with the model in another process: `recsys serve` asks `recsys model-server` for
//! query vectors. Both watch `bundles/CURRENT`; whichever swaps first, the API keeps asking for
//! the version its index was built for until it swaps too, and the model server answers with the
//! bundle it replaced meanwhile. Under load, through a promotion and a rollback, no request fails
//! and every answer is personalised by the model its index belongs to.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataset::bundle::EncoderKind;
use model_server::fixtures::train_tiny_bundle;
use serde_json::{json, Value};
use support::KillOnDrop;

/// (status, source, model version, index bundle) of one answer.
type Served = (u16, Option<String>, Option<String>, Option<String>);

fn ask(client: &reqwest::blocking::Client, url: &str) -> Served {
    let response = client
        .post(format!("{url}/recs/retrieve?count=5"))
        .json(&json!({"item_seq_raw": [["i1", "i2", "i3"]]}))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().unwrap_or_default();
    let text = |field: &str| answer["metadata"][field].as_str().map(str::to_owned);
    (
        status,
        text("source"),
        text("model_version"),
        text("index_bundle"),
    )
}

fn await_served(client: &reqwest::blocking::Client, url: &str, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while ask(client, url).2.as_deref() != Some(version) {
        assert!(Instant::now() < deadline, "{version} was never served");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_api_and_a_remote_model_server_swap_together_under_load() {
    let recsys = Path::new(env!("CARGO_BIN_EXE_recsys"));
    let data_dir = tempfile::tempdir().unwrap();
    let first = support::tiny_deployment(data_dir.path(), recsys);
    let version_of = |outcome: &model_server::offline::TrainOutcome| {
        outcome
            .bundle_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let first = version_of(&first);

    let model_port = testkit::free_port();
    let model_url = format!("http://127.0.0.1:{model_port}");
    let _model_server = KillOnDrop(
        support::recsys(recsys, data_dir.path())
            .args(["model-server", "--reload-interval-ms", "300", "--listen"])
            .arg(format!("127.0.0.1:{model_port}"))
            .arg("--data-dir")
            .arg(data_dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{model_url}/healthz")).send().is_err() {
        assert!(
            Instant::now() < deadline,
            "the model server did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (api, address) = support::serve(recsys, data_dir.path(), |command| {
        command
            .env("RECSYS__MODEL__URL", &model_url)
            // Slower than the model server: for most of a second it serves the new bundle
            // while the API still asks for the old one.
            .env("RECSYS__MODEL__RELOAD_INTERVAL_MS", "1000");
    });
    let _api = KillOnDrop(api);
    let url = format!("http://{address}");
    await_served(&client, &url, &first);

    // Bundle versions are named by the second they were made in.
    std::thread::sleep(Duration::from_millis(1_100));
    let second = version_of(&train_tiny_bundle(data_dir.path(), EncoderKind::Gru).unwrap());
    // Training made it current; the old champion is current again until the promotion.
    dataset::bundle::set_current_bundle(data_dir.path(), &first).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, answers, url) = (Arc::clone(&stop), Arc::clone(&answers), url.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let served = ask(&client, &url);
                    answers.lock().unwrap().push(served);
                }
            })
        })
        .collect();
    let run = |args: &[&str]| support::run(recsys, data_dir.path(), &[], args);
    run(&["promote", &second]);
    await_served(&client, &url, &second);
    std::thread::sleep(Duration::from_millis(300));
    run(&["rollback"]);
    await_served(&client, &url, &first);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }

    let answers = std::mem::take(&mut *answers.lock().unwrap());
    assert!(answers.len() > 50, "only {} answers", answers.len());
    for (status, source, model_version, index_bundle) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(
            source.as_deref(),
            Some("personalized"),
            "an answer fell back during the swap"
        );
        assert_eq!(model_version, index_bundle, "a mixed answer");
    }
    let versions: BTreeSet<_> = answers
        .iter()
        .filter_map(|served| served.2.clone())
        .collect();
    assert_eq!(versions, BTreeSet::from([first, second]));
    let metadata: Value = client
        .get(format!("{model_url}/metadata"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        metadata["model_version"],
        answers.last().unwrap().2.clone().unwrap(),
        "the model server serves the rolled-back bundle too"
    );
}
