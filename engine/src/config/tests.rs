//! Layering, unknown keys and bad URLs, all reported together.

use std::path::Path;

use figment::providers::Env;

use super::load::load_config_from;
use super::*;

/// An environment layer reading only variables with a prefix unique to one test.
fn env(test: &str, pairs: &[(&str, &str)]) -> Env {
    let prefix = format!("RECSYS_TEST_{test}__");
    for (key, value) in pairs {
        std::env::set_var(format!("{prefix}{key}"), value);
    }
    Env::prefixed(&prefix).split("__")
}

#[test]
fn defaults_run_on_embedded_backends() {
    let config = load_config_from(
        Some(Path::new("/nonexistent/recsys.toml")),
        env("DEFAULTS", &[]),
    )
    .unwrap_err();
    assert_eq!(
        config.problems,
        ["config file /nonexistent/recsys.toml does not exist"]
    );
    let defaults = Config::default();
    assert_eq!(defaults.state.url, "embedded");
    assert_eq!(defaults.index.url, "embedded");
    assert_eq!(defaults.model.url, "embedded");
}

#[test]
fn file_then_environment_and_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recsys.toml");
    std::fs::write(
        &file,
        "data_dir = '/srv/recsys'\n[state]\nurl = 'redis://cache:6379'\ncolour = 'blue'\n[index]\nurl = 'ftp://nope'\n[api]\nlisten = '0.0.0.0:9000'\n",
    )
    .unwrap();
    let error = load_config_from(
        Some(&file),
        env("LAYERS1", &[("MODEL__URL", "carrier-pigeon")]),
    )
    .unwrap_err();
    assert_eq!(error.problems.len(), 3, "{error}");
    let message = error.to_string();
    assert!(message.contains("unknown key 'state.colour'"), "{message}");
    assert!(message.contains("index.url = 'ftp://nope'"), "{message}");
    assert!(
        message.contains("model.url = 'carrier-pigeon'"),
        "{message}"
    );

    std::fs::write(
        &file,
        "[state]\nurl = 'redis://cache:6379'\n[api]\nlisten = '0.0.0.0:9000'\n",
    )
    .unwrap();
    let environment = env(
        "LAYERS2",
        &[
            ("STATE__URL", "redis://env-wins:6379"),
            ("MODEL__MAX_BATCH_SIZE", "8"),
        ],
    );
    let config = load_config_from(Some(&file), environment).unwrap();
    assert_eq!(config.state.url, "redis://env-wins:6379");
    assert_eq!(config.model.max_batch_size, 8);
    assert_eq!(config.api.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(config.index.url, "embedded");
}

#[test]
fn wrong_types_are_reported_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recsys.toml");
    std::fs::write(
        &file,
        "[api]\nmax_body_bytes = 'lots'\n[model]\nurl = 'grpc://x'\n",
    )
    .unwrap();
    let error = load_config_from(Some(&file), env("TYPES", &[]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("max_body_bytes"), "{error}");
    assert!(error.contains("invalid type"), "{error}");
}

#[test]
fn an_archive_that_would_never_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recsys.toml");
    std::fs::write(&file, "[archive]\nflush_interval_ms = 0\n").unwrap();
    let error = load_config_from(Some(&file), env("ARCHIVE", &[])).unwrap_err();
    assert!(
        error.to_string().contains("archive.flush_interval_ms"),
        "{error}"
    );
    std::fs::write(&file, "[archive]\nenabled = false\nflush_interval_ms = 0\n").unwrap();
    assert!(load_config_from(Some(&file), env("ARCHIVE2", &[])).is_ok());
}

#[test]
fn cors_origins_are_checked_and_each_bad_one_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recsys.toml");
    std::fs::write(
        &file,
        "[api]\ncors_allowed_origins = ['https://shop.example', 'http://127.0.0.1:3000', '*', 'shop.example', 'https://shop.example/app', 'https://']\n",
    )
    .unwrap();
    let error = load_config_from(Some(&file), env("CORS", &[])).unwrap_err();
    assert_eq!(error.problems.len(), 3, "{error}");
    for bad in ["'shop.example'", "'https://shop.example/app'", "'https://'"] {
        assert!(
            error
                .to_string()
                .contains(&format!("api.cors_allowed_origins: {bad}")),
            "{error}"
        );
    }
}

#[test]
fn a_static_member_id_kafka_would_refuse_and_a_poll_interval_below_the_session_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recsys.toml");
    std::fs::write(
        &file,
        "[consumer]\ninstance_id = 'host 1'\nsession_timeout_ms = 10000\nmax_poll_interval_ms = 5000\n",
    )
    .unwrap();
    let error = load_config_from(Some(&file), env("MEMBER", &[])).unwrap_err();
    assert_eq!(error.problems.len(), 2, "{error}");
    assert!(
        error.to_string().contains("consumer.instance_id: 'host 1'"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("consumer.max_poll_interval_ms (5000)"),
        "{error}"
    );
    std::fs::write(&file, "[consumer]\ninstance_id = 'host-1.a_b'\n").unwrap();
    assert!(load_config_from(Some(&file), env("MEMBER2", &[])).is_ok());
}

#[test]
fn api_keys_are_read_from_the_file_checked_together_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recsys.toml");
    std::fs::write(
        &file,
        r#"
[api]
reads_need_key = true

[[api.keys]]
name = "shop"
secret = "a-long-enough-secret"
scopes = ["write_events", "write_items"]
requests_per_second = 50

[[api.keys]]
name = "shop"
secret = "short"
scopes = []
"#,
    )
    .unwrap();
    let problems = load_config_from(Some(&file), env("KEYS", &[]))
        .unwrap_err()
        .problems;
    for expected in [
        "api.keys[1].name 'shop' is used twice",
        "api.keys[1].secret must be at least 16 characters",
        "api.keys[1].scopes must name at least one scope",
        "api.reads_need_key is set but no key has the read scope",
    ] {
        assert!(
            problems.iter().any(|problem| problem.contains(expected)),
            "{expected}: {problems:?}"
        );
    }
    assert!(!format!("{problems:?}").contains("a-long-enough-secret"));

    std::fs::write(
        &file,
        "[[api.keys]]\nname = \"typo\"\nsecret = \"another-long-secret\"\nscopes = [\"admin\"]\nburts = 3\n",
    )
    .unwrap();
    let problems = load_config_from(Some(&file), env("KEYS_TYPO", &[]))
        .unwrap_err()
        .problems;
    assert!(
        problems.iter().any(|problem| problem.contains("burts")),
        "{problems:?}"
    );

    std::fs::write(
        &file,
        r#"
[[api.keys]]
name = "shop"
secret = "a-long-enough-secret"
scopes = ["write_events", "read"]
"#,
    )
    .unwrap();
    let config = load_config_from(Some(&file), env("KEYS_OK", &[])).unwrap();
    assert_eq!(config.api.keys[0].scopes, [Scope::WriteEvents, Scope::Read]);
    let printed = format!("{config:?}");
    assert!(
        printed.contains("shop") && !printed.contains("a-long-enough-secret"),
        "{printed}"
    );
}
