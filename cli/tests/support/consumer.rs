//! `recsys consume` as a process of a consumer group on the harness's broker and redis-server.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::{KafkaBroker, RedisServer};

/// One member's process. Killed (SIGKILL) when dropped.
pub struct ConsumerProcess {
    child: Child,
    /// What it printed on standard output so far.
    printed: Arc<Mutex<String>>,
}

/// The environment of every member of the group `<prefix>-group` reading `<prefix>-events`.
pub fn group_env(redis: &RedisServer, broker: &KafkaBroker, prefix: &str) -> Vec<(String, String)> {
    [
        ("RECSYS__STATE__URL", redis.url()),
        ("RECSYS__STATE__KEY_PREFIX", prefix.to_owned()),
        ("RECSYS__EVENTS__URL", broker.url()),
        ("RECSYS__EVENTS__TOPIC", format!("{prefix}-events")),
        (
            "RECSYS__EVENTS__DEAD_LETTER_TOPIC",
            format!("{prefix}-dead"),
        ),
        ("RECSYS__CONSUMER__GROUP_ID", format!("{prefix}-group")),
        ("RECSYS__ARCHIVE__ENABLED", "false".to_owned()),
        // No items topic here.
        ("RECSYS__CATALOGUE__TOPIC", String::new()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

impl ConsumerProcess {
    /// Starts `recsys consume` in `data_dir` (its static member id is kept there) and waits
    /// until it printed its first line (its signal handlers are installed).
    pub fn start(data_dir: &Path, env: &[(String, String)]) -> ConsumerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_recsys"))
            .args(["consume", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .envs(env.iter().cloned())
            .env("RUST_LOG", "warn")
            .current_dir(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start recsys consume");
        let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert!(
            first.starts_with("consuming"),
            "unexpected first line: {first:?}"
        );
        let printed = Arc::new(Mutex::new(first));
        let collected = Arc::clone(&printed);
        // Keep reading, so its last words do not meet a closed pipe.
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let mut printed = collected.lock().unwrap();
                printed.push_str(&line);
                printed.push('\n');
            }
        });
        ConsumerProcess { child, printed }
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status and everything it printed.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(terminated.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread ends with the pipe; give it a moment to take the last line.
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.printed.lock().unwrap().clone());
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many interactions a `recsys consume` reported applied when it stopped.
pub fn applied_in(printed: &str) -> u64 {
    let line = printed
        .lines()
        .find(|line| line.starts_with("stopped after"))
        .unwrap_or_else(|| panic!("no totals line in {printed:?}"));
    line.split(": ")
        .nth(1)
        .and_then(|totals| totals.split(' ').next())
        .and_then(|applied| applied.parse().ok())
        .unwrap_or_else(|| panic!("unexpected totals line {line:?}"))
}
