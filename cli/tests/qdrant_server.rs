//! `recsys` with its index in a Qdrant server the harness starts (SKIPPED where this machine has
//! no Qdrant binary): `recsys index` builds the collection in the server, `recsys serve` answers a
//! stored user from it, and a promotion builds the next collection there and is served without a
//! restart.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use dataset::bundle::EncoderKind;
use model_server::fixtures::train_tiny_bundle;
use serde_json::{json, Value};
use support::KillOnDrop;

fn retrieve(client: &reqwest::blocking::Client, url: &str, body: &Value) -> Value {
    client
        .post(format!("{url}/recs/retrieve?count=5"))
        .json(body)
        .send()
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn serve_answers_a_stored_user_from_a_qdrant_server_and_swaps_collections() {
    let Some(qdrant) = testkit::QdrantServer::start_or_skip("recsys on a Qdrant server") else {
        return;
    };
    let recsys = Path::new(env!("CARGO_BIN_EXE_recsys"));
    let data_dir = tempfile::tempdir().unwrap();
    let env = [("RECSYS__INDEX__URL".to_owned(), qdrant.url())];
    let run = |args: &[&str]| support::run(recsys, data_dir.path(), &env, args);
    let version_of = |outcome: model_server::offline::TrainOutcome| {
        let name = outcome.bundle_dir.file_name().unwrap().to_str().unwrap();
        name.to_owned()
    };
    let first = version_of(train_tiny_bundle(data_dir.path(), EncoderKind::Gru).unwrap());
    let indexed = run(&["index"]);
    assert!(
        indexed.contains(&format!("now serves {first}-")),
        "{indexed}"
    );

    let (api, address) = support::serve(recsys, data_dir.path(), |command| {
        command
            .env("RECSYS__INDEX__URL", qdrant.url())
            .env("RECSYS__MODEL__RELOAD_INTERVAL_MS", "200");
    });
    let _api = KillOnDrop(api);
    let url = format!("http://{address}");
    let client = reqwest::blocking::Client::new();
    let events: String = ["i1", "i2", "i3"]
        .iter()
        .enumerate()
        .map(|(step, item)| {
            format!(
                "{{\"event_id\": \"e{step}\", \"user_id\": \"u1\", \"item_id\": \"{item}\", \"event_type\": \"click\", \"event_time_ms\": {}}}\n",
                1_700_000_000_000_u64 + step as u64
            )
        })
        .collect();
    client
        .post(format!("{url}/events"))
        .header("content-type", "application/x-ndjson")
        .body(events)
        .send()
        .unwrap()
        .error_for_status()
        .unwrap();
    let stored_user = json!({"user_ids_raw": ["u1"]});
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = retrieve(&client, &url, &stored_user);
        if answer["metadata"]["source"] == "personalized" {
            break answer;
        }
        assert!(Instant::now() < deadline, "u1 was never answered: {answer}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        answer["metadata"]["model_version"],
        first.as_str(),
        "{answer}"
    );
    assert_eq!(
        answer["metadata"]["index_bundle"],
        first.as_str(),
        "{answer}"
    );
    let items = answer["recommendations"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{answer}");
    for item in items {
        let item_id = item["item_id"].as_str().unwrap();
        assert!(
            !["i1", "i2", "i3"].contains(&item_id),
            "seen {item_id}: {answer}"
        );
        assert!(item["title"].is_string(), "payload from the server: {item}");
    }

    // Bundle versions are named by the second they were made in.
    std::thread::sleep(Duration::from_millis(1_100));
    let second = version_of(train_tiny_bundle(data_dir.path(), EncoderKind::Gru).unwrap());
    dataset::bundle::set_current_bundle(data_dir.path(), &first).unwrap();
    let promoted = run(&["promote", &second]);
    assert!(promoted.contains(&second), "{promoted}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = retrieve(&client, &url, &stored_user);
        if answer["metadata"]["model_version"] == second.as_str() {
            assert_eq!(
                answer["metadata"]["index_bundle"],
                second.as_str(),
                "{answer}"
            );
            assert_eq!(answer["metadata"]["source"], "personalized", "{answer}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{second} was never served: {answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
