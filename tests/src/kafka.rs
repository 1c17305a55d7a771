//! A Kafka-protocol broker per test: `tansu` (Apache Kafka itself cannot run here) with in-memory
//! storage on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Where the `tansu` binary is: `$TANSU_BIN`, the tool cache `scripts/setup.sh --tests` fills,
/// or `PATH`.
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(path);
    }
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/recsys/tools/bin/tansu"));
    match cached {
        Some(path) if path.exists() => path,
        _ => PathBuf::from("tansu"),
    }
}

pub struct KafkaBroker {
    child: Option<Child>,
    pub port: u16,
    storage_engine: String,
    /// The working directory of a persistent broker, where it keeps its SQLite file.
    directory: Option<tempfile::TempDir>,
}

impl KafkaBroker {
    /// A broker that keeps everything in memory.
    pub fn start() -> KafkaBroker {
        KafkaBroker::start_on("memory://tansu/".to_owned(), None)
    }

    /// A broker that keeps its topics, records and committed offsets in an SQLite file, so
    /// [`KafkaBroker::restart`] brings it back with them.
    pub fn start_persistent() -> KafkaBroker {
        // tansu reads the file's path relative to its working directory, which is this one.
        let directory = tempfile::tempdir().unwrap();
        KafkaBroker::start_on("sqlite://tansu.db".to_owned(), Some(directory))
    }

    fn start_on(storage_engine: String, directory: Option<tempfile::TempDir>) -> KafkaBroker {
        let mut broker = KafkaBroker {
            child: None,
            port: free_port(),
            storage_engine,
            directory,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new(tansu_binary());
        if let Some(directory) = &self.directory {
            command.current_dir(directory.path());
        }
        let child = command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage_engine])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu must be installed (scripts/setup.sh --tests installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    /// `host:port`, as `bootstrap.servers` wants it.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kafka://host:port`, as `events.url` wants it.
    pub fn url(&self) -> String {
        format!("kafka://{}", self.bootstrap())
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu_binary())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run tansu topic create");
        assert!(
            status.success(),
            "tansu topic create {name} failed: {status}"
        );
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
