//! A `redis-server` per test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A `redis-server` of our own on a free loopback port, in a temporary directory.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    directory: tempfile::TempDir,
    /// Arguments besides the port, bind address and persistence (`--requirepass`, TLS).
    extra_args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// With `--requirepass password`: clients must AUTH.
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_with(&["--requirepass", password])
    }

    /// Speaking TLS only, with the certificate and key `tls` made for `localhost`; clients are
    /// not asked for certificates.
    pub fn start_tls(tls: &crate::TestCertificates) -> RedisServer {
        let port = free_port().to_string();
        let path = |path: &std::path::Path| path.to_str().unwrap().to_owned();
        let args = [
            "--tls-port".to_owned(),
            port.clone(),
            "--tls-cert-file".to_owned(),
            path(&tls.server_cert),
            "--tls-key-file".to_owned(),
            path(&tls.server_key),
            "--tls-ca-cert-file".to_owned(),
            path(&tls.ca_cert),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = RedisServer::start_with_port(&args, 0);
        server.port = port.parse().unwrap();
        server.wait_until_listening();
        server
    }

    /// A node for a cluster: its bus port (the port + 10000) must be free too.
    pub(crate) fn start_cluster_node() -> RedisServer {
        let port = loop {
            let port = free_port();
            if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
                break port;
            }
        };
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        let server = RedisServer::start_with_port(&args, port);
        server.wait_until_listening();
        server
    }

    fn start_with(extra_args: &[&str]) -> RedisServer {
        let server = RedisServer::start_with_port(extra_args, free_port());
        server.wait_until_listening();
        server
    }

    fn start_with_port(extra_args: &[&str], port: u16) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            directory: tempfile::tempdir().unwrap(),
            extra_args: extra_args.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        server.spawn_process();
        server
    }

    fn spawn(&mut self) {
        self.spawn_process();
        self.wait_until_listening();
    }

    fn spawn_process(&mut self) {
        // A TLS server's plain port is 0 (off); its TLS port is in `extra_args`.
        let plain_port = if self.extra_args.iter().any(|arg| arg == "--tls-port") {
            0
        } else {
            self.port
        };
        let child = Command::new("redis-server")
            .args([
                "--port",
                &plain_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(&self.extra_args)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.directory.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh --tests installs it)");
        self.child = Some(child);
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL); its append-only file keeps what was acknowledged.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A key prefix no other test shares.
pub fn unique_prefix(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{test}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
