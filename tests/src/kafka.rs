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
}

impl KafkaBroker {
    pub fn start() -> KafkaBroker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu must be installed (scripts/setup.sh --tests installs it)");
        let broker = KafkaBroker {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
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
