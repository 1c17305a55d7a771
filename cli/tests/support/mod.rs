//! What the tests that run `recsys` as a process share: a command on embedded backends whatever
//! the environment says, a tiny trained and indexed deployment, and `recsys serve` on a free port.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[allow(
    dead_code,
    reason = "each test binary compiles this module; not every one uses it"
)]
pub mod consumer;
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not every one uses it"
)]
pub mod movielens_stream;

use dataset::bundle::EncoderKind;
use model_server::fixtures::train_tiny_bundle;
use model_server::offline::TrainOutcome;

/// A child process killed (and reaped) when the test ends, passing or not.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not every one uses it"
)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `binary` run in `data_dir`, quiet, with no backend URL inherited from the environment.
pub fn recsys(binary: &Path, data_dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .env("RUST_LOG", "warn")
        .env_remove("RECSYS__EVENTS__URL")
        .env_remove("RECSYS__STATE__URL")
        .env_remove("RECSYS__INDEX__URL")
        .env_remove("RECSYS__MODEL__URL")
        .current_dir(data_dir);
    command
}

/// Where `scripts/setup.sh` put the data sets (MovieLens-100k under `datasets/ml-100k`).
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not every one uses it"
)]
pub fn movielens_data_dir() -> PathBuf {
    std::env::var_os("RECSYS_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // Read when the test runs: the binary may come from another checkout (shared
            // target dir).
            PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../data")
        })
}

/// A fresh data dir that borrows MovieLens-100k (linked, not copied).
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not every one uses it"
)]
pub fn data_dir_with_movielens() -> tempfile::TempDir {
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data_dir.path().join("datasets")).unwrap();
    std::os::unix::fs::symlink(
        movielens_data_dir().join("datasets/ml-100k"),
        data_dir.path().join("datasets/ml-100k"),
    )
    .unwrap();
    data_dir
}

/// Runs `recsys <args> --data-dir <data_dir>` with `env` to its end; what it printed on standard
/// output. Panics if it fails.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not every one uses it"
)]
pub fn run(binary: &Path, data_dir: &Path, env: &[(String, String)], args: &[&str]) -> String {
    let output = recsys(binary, data_dir)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .envs(env.iter().cloned())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "recsys {args:?}: {printed}");
    printed
}

/// Trains the tiny bundle into `data_dir` and has `indexer` (a `recsys` binary) index it.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not every one uses it"
)]
pub fn tiny_deployment(data_dir: &Path, indexer: &Path) -> TrainOutcome {
    let trained = train_tiny_bundle(data_dir, EncoderKind::Gru).unwrap();
    let indexed = recsys(indexer, data_dir)
        .args(["index", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(indexed.success());
    trained
}

/// Starts `recsys serve` on a free port (after `configure`); returns the process and the address
/// it printed.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not every one uses it"
)]
pub fn serve(
    binary: &Path,
    data_dir: &Path,
    configure: impl FnOnce(&mut Command),
) -> (Child, SocketAddr) {
    let mut command = recsys(binary, data_dir);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    configure(&mut command);
    let mut child = command.spawn().expect("start recsys serve");
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("recsys API listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .unwrap();
    // Keep reading, so its last words do not meet a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    (child, address)
}

/// SIGTERM, then waits for the exit: serve writes the event archive before it exits.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not every one uses it"
)]
pub fn stop(server: &mut KillOnDrop) {
    let terminated = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.0.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "serve did not stop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Posts one click now for each of the tiny data set's first `users` users (new event ids, so
/// the archive keeps them next to a replay's).
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not every one uses it"
)]
pub fn post_later_clicks(data_dir: &Path, address: SocketAddr, users: usize) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let sequences = dataset::Dataset::load(data_dir, model_server::fixtures::TINY_DATASET)
        .unwrap()
        .user_sequences();
    let later: String = sequences
        .iter()
        .take(users)
        .enumerate()
        .map(|(step, user)| {
            format!(
                "{{\"event_id\": \"later-{0}\", \"user_id\": \"{0}\", \"item_id\": \"i{1}\", \"event_type\": \"click\", \"event_time_ms\": {2}}}\n",
                user.user_id,
                step % 40,
                now_ms + step as u128
            )
        })
        .collect();
    let posted = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "-H",
            "content-type: application/x-ndjson",
        ])
        .arg(format!("http://{address}/events"))
        .args(["--data-binary", &later])
        .output()
        .unwrap();
    assert!(posted.status.success(), "{posted:?}");
}
