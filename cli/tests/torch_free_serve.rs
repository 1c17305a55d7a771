//! The torch-free `recsys` (built with `--no-default-features`, as the `serving` image is) serves
//! personalised recommendations by asking `recsys model-server` for query vectors, and links no
//! libtorch. `scripts/test.sh` builds that binary and names it in `RECSYS_TORCH_FREE_BIN`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::KillOnDrop;

fn torch_free_binary() -> Option<PathBuf> {
    std::env::var_os("RECSYS_TORCH_FREE_BIN").map(PathBuf::from)
}

async fn wait_until_healthy(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(url).send().await.is_err() {
        assert!(Instant::now() < deadline, "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_torch_free_api_answers_through_the_model_server() {
    let Some(torch_free) = torch_free_binary() else {
        eprintln!("SKIPPED: RECSYS_TORCH_FREE_BIN is not set (scripts/test.sh builds and sets it)");
        return;
    };
    let linked = Command::new("ldd").arg(&torch_free).output().unwrap();
    let linked = String::from_utf8_lossy(&linked.stdout);
    assert!(
        !linked.contains("torch"),
        "the torch-free binary links libtorch:\n{linked}"
    );

    let data_dir = tempfile::tempdir().unwrap();
    let full = Path::new(env!("CARGO_BIN_EXE_recsys"));
    // Indexing reads the bundle's files without libtorch: the torch-free binary does it.
    let trained = support::tiny_deployment(data_dir.path(), &torch_free);

    // Without a model server to call, the torch-free API says what to configure and exits.
    let refused = support::recsys(&torch_free, data_dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("this build has no in-process model") && stderr.contains("model.url"),
        "{stderr}"
    );

    let model_port = testkit::free_port();
    let start_model_server = || {
        KillOnDrop(
            support::recsys(full, data_dir.path())
                .args([
                    "model-server",
                    "--listen",
                    &format!("127.0.0.1:{model_port}"),
                ])
                .arg("--data-dir")
                .arg(data_dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let model_server = start_model_server();
    let client = reqwest::Client::new();
    let model_url = format!("http://127.0.0.1:{model_port}");
    wait_until_healthy(&client, &format!("{model_url}/healthz")).await;

    let (api, address) = support::serve(&torch_free, data_dir.path(), |command| {
        command.env("RECSYS__MODEL__URL", &model_url);
    });
    let _api = KillOnDrop(api);

    let retrieve = || async {
        let response = client
            .post(format!("http://{address}/recs/retrieve?count=5"))
            .json(&serde_json::json!({"item_seq_raw": [["i1", "i2", "i3"]]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<serde_json::Value>().await.unwrap()
    };
    let answer = retrieve().await;
    assert_eq!(answer["metadata"]["source"], "personalized", "{answer}");
    let version = trained.bundle_dir.file_name().unwrap().to_str().unwrap();
    assert_eq!(answer["metadata"]["model_version"], version, "{answer}");
    let items = answer["recommendations"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    for item in items {
        let item_id = item["item_id"].as_str().unwrap();
        assert!(
            !["i1", "i2", "i3"].contains(&item_id),
            "a seen item came back: {answer}"
        );
    }

    // The model server dies: every answer is still a 200, popular items with the reason; once
    // it is back on its address, answers are personalized again.
    drop(model_server);
    let down = retrieve().await;
    assert_eq!(down["metadata"]["source"], "popular", "{down}");
    assert_eq!(
        down["metadata"]["fallback_reason"], "model_unavailable",
        "{down}"
    );
    assert_eq!(down["recommendations"].as_array().unwrap().len(), 5);
    let _model_server = start_model_server();
    wait_until_healthy(&client, &format!("{model_url}/healthz")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = retrieve().await;
        if answer["metadata"]["source"] == "personalized" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still not personalized: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
