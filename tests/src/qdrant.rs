//! A Qdrant server per test, from the binary `scripts/setup.sh --tests` unpacks into the tool
//! cache when this machine has one (no package registry ships it). Where there is none, tests that
//! need it say SKIPPED.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// `$QDRANT_BIN`, or the tool cache's `qdrant`; `None` when neither exists.
pub fn qdrant_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("QDRANT_BIN") {
        return Some(PathBuf::from(path));
    }
    let cached = PathBuf::from(std::env::var_os("HOME")?).join(".cache/recsys/tools/bin/qdrant");
    cached.exists().then_some(cached)
}

/// A Qdrant server on free loopback ports with its own storage, killed on drop.
pub struct QdrantServer {
    child: Child,
    pub grpc_port: u16,
    _storage: tempfile::TempDir,
}

impl QdrantServer {
    /// `None` (and a SKIPPED line naming `what`) when this machine has no Qdrant server binary.
    pub fn start_or_skip(what: &str) -> Option<QdrantServer> {
        let Some(binary) = qdrant_binary() else {
            eprintln!(
                "SKIPPED: {what} (no Qdrant server binary: scripts/setup.sh --tests unpacks \
                 ../shared/tools/qdrant-*.gz where it exists, or set QDRANT_BIN)"
            );
            return None;
        };
        let (http_port, grpc_port) = (free_port(), free_port());
        let storage = tempfile::tempdir().unwrap();
        let child = Command::new(&binary)
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", http_port.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", grpc_port.to_string())
            .env(
                "QDRANT__STORAGE__STORAGE_PATH",
                storage.path().join("storage"),
            )
            .env(
                "QDRANT__STORAGE__SNAPSHOTS_PATH",
                storage.path().join("snapshots"),
            )
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .current_dir(storage.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));
        let server = QdrantServer {
            child,
            grpc_port,
            _storage: storage,
        };
        let ready = format!("127.0.0.1:{http_port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        // The gRPC listener (the one the index talks to) may come up after `/readyz` answers.
        while !is_ready(&ready) || std::net::TcpStream::connect(("127.0.0.1", grpc_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the Qdrant server did not become ready on {ready} and gRPC port {grpc_port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// The gRPC URL, as `index.url` wants it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
}

/// Whether `GET /readyz` on `address` answers 200 (a plain HTTP/1.0 exchange: the harness has no
/// HTTP client of its own).
fn is_ready(address: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

impl Drop for QdrantServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
