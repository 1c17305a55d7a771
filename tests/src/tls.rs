//! A certificate authority and a server certificate for `localhost` and 127.0.0.1, made with the
//! `openssl` command for one test: TLS servers of the harness present them, clients trust the
//! authority (`SSL_CERT_FILE`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct TestCertificates {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    _directory: tempfile::TempDir,
}

impl TestCertificates {
    pub fn make() -> TestCertificates {
        let directory = tempfile::tempdir().unwrap();
        let path = |name: &str| directory.path().join(name);
        std::fs::write(
            path("server.ext"),
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            directory.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=recsys test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        openssl(
            directory.path(),
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        openssl(
            directory.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        TestCertificates {
            ca_cert: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            _directory: directory,
        }
    }
}

fn openssl(directory: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(directory)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl command must be installed");
    assert!(status.success(), "openssl {args:?} failed: {status}");
}
