//! The API against its own OpenAPI document, fuzzed by Schemathesis (installed by
//! `scripts/setup.sh --tests`): every request the document allows is answered as documented,
//! every request it forbids is refused, no answer is a 5xx, and every answer matches its schema.
//! `tests/schemathesis.toml` lists the few rules a document cannot state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::AppState;
use dataset::bundle::EncoderKind;
use engine::config::Config;
use model_server::fixtures::train_tiny_bundle;

/// Enough cases that each of the sixteen operations meets its edges several times over.
const MIN_CASES: u64 = 1_000;

fn schemathesis() -> Option<PathBuf> {
    let cache = std::env::var_os("RECSYS_CACHE_DIR")?;
    let st = Path::new(&cache).join("tools/schemathesis/bin/st");
    st.exists().then_some(st)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_its_openapi_document_says() {
    let Some(st) = schemathesis() else {
        eprintln!("SKIPPED: Schemathesis is not installed (scripts/setup.sh --tests installs it)");
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    train_tiny_bundle(data_dir.path(), EncoderKind::Gru).unwrap();
    let config = Config {
        data_dir: data_dir.path().to_owned(),
        ..Config::default()
    };
    engine::startup::build_index_from_bundle(&config)
        .await
        .unwrap();
    let (retriever, _refresher) = engine::startup::build_retriever(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = api::spawn(
        listener,
        AppState::new(&config, Arc::clone(&retriever)).unwrap(),
        std::future::pending(),
    )
    .unwrap();

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut schemathesis = std::process::Command::new(st);
    schemathesis
        .arg("--config-file")
        .arg(repo.join("tests/schemathesis.toml"))
        .arg("run")
        .arg(format!("http://{}/openapi.json", server.local_addr))
        // Every check but one: DELETE /items/{id} withdraws an item from every answer, and
        // GET /items/{id} goes on showing it, with "available": false, so that the shop sees
        // what it withdrew and can put it back.
        .args(["--checks", "all", "--exclude-checks", "use_after_free"])
        .args(["--max-examples", "30", "--seed", "1", "--no-color"])
        .current_dir(data_dir.path());
    let output = tokio::task::spawn_blocking(move || schemathesis.output())
        .await
        .unwrap()
        .unwrap();
    server.task.abort();
    let _ = server.task.await;
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (generated, passed) = cases(&report).expect("a summary line: N generated, M passed");
    assert!(generated >= MIN_CASES, "{generated} cases:\n{report}");
    assert_eq!(passed, generated, "{report}");
}

/// `1146 generated, 1146 passed` from the summary.
fn cases(report: &str) -> Option<(u64, u64)> {
    let line = report.lines().find(|line| line.contains(" generated, "))?;
    let mut numbers = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<u64>().ok());
    Some((numbers.next()??, numbers.next()??))
}
