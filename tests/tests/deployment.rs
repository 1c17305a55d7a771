//! `compose.stream.yml`, its Prometheus configuration and the Grafana dashboard cannot run here
//! (no Docker engine), so they are parsed and checked against the code: services and files exist,
//! every `RECSYS__` variable is a real configuration key, Prometheus scrapes every program where
//! it listens, and every metric a dashboard panel queries is one the programs export.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Read when the test runs: the binary may come from another checkout (shared target dir).
fn repo() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join("..")
}

/// YAML as a JSON value (every file here is plain YAML: maps, lists, strings, numbers).
fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    let documents = yaml_rust2::YamlLoader::load_from_str(&text)
        .unwrap_or_else(|error| panic!("{path} is not valid YAML: {error}"));
    to_json(&documents[0])
}

fn to_json(node: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match node {
        Yaml::Real(text) => text.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
        Yaml::Integer(number) => Value::from(*number),
        Yaml::String(text) => Value::from(text.clone()),
        Yaml::Boolean(flag) => Value::from(*flag),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(entries) => Value::Object(
            entries
                .iter()
                .map(|(key, value)| {
                    let key = match key {
                        Yaml::String(text) => text.clone(),
                        other => format!("{other:?}"),
                    };
                    (key, to_json(value))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

const RECSYS_SERVICES: [&str; 4] = ["init", "model-server", "api", "consumer"];

#[test]
fn the_compose_file_describes_the_whole_stream_deployment() {
    let compose = yaml("compose.stream.yml");
    let services = compose["services"].as_object().unwrap();
    for name in [
        "kafka",
        "redis",
        "qdrant",
        "prometheus",
        "grafana",
        "init",
        "model-server",
        "api",
        "consumer",
    ] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    let kafka_roles = services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
        .as_str()
        .unwrap();
    assert!(
        kafka_roles.contains("controller"),
        "Kafka must run in KRaft mode"
    );
    let redis_command: Vec<&str> = services["redis"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| part.as_str().unwrap())
        .collect();
    assert!(
        redis_command
            .windows(2)
            .any(|pair| pair == ["--appendonly", "yes"]),
        "Redis must keep an append-only file: {redis_command:?}"
    );

    // The API and the consumer ship without libtorch; training and the model server with it.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for stage in ["AS serving", "AS full"] {
        assert!(
            dockerfile.contains(stage),
            "the Dockerfile has no stage `{stage}`"
        );
    }
    assert!(
        dockerfile.contains("--no-default-features"),
        "the serving image must be built without the in-process model"
    );
    for (name, target) in [
        ("api", "serving"),
        ("consumer", "serving"),
        ("model-server", "full"),
        ("init", "full"),
    ] {
        assert_eq!(
            services[name]["build"]["context"], ".",
            "{name} is built from the repo's Dockerfile"
        );
        assert_eq!(services[name]["build"]["target"], target, "{name}");
    }
    // The long-running processes lock their pages (`lock_memory`), which a container only
    // allows with this capability; without it they run unlocked and stall after idle spells.
    for name in ["api", "consumer", "model-server"] {
        assert_eq!(
            services[name]["cap_add"],
            serde_json::json!(["IPC_LOCK"]),
            "{name} needs IPC_LOCK to lock its memory"
        );
    }
    for name in ["api", "consumer"] {
        assert_eq!(
            services[name]["environment"]["RECSYS__MODEL__URL"], "http://model-server:3000",
            "the torch-free {name} asks the model server"
        );
    }
    for (name, expected) in [
        ("api", "serve"),
        ("consumer", "consume"),
        ("model-server", "model-server"),
    ] {
        assert_eq!(services[name]["command"][0], expected, "{name}");
    }
    let init = services["init"]["entrypoint"][0].as_str().unwrap();
    let init_script = repo().join(init.strip_prefix("/app/").unwrap());
    assert!(init_script.exists(), "{init} is not in the repository");
    let init_text = std::fs::read_to_string(&init_script).unwrap();
    for step in ["recsys create-topics", "recsys index"] {
        assert!(init_text.contains(step), "the init job must run `{step}`");
    }

    // Mounted files exist.
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(
                    repo().join(source).exists(),
                    "{name} mounts missing {source}"
                );
            }
        }
    }
}

#[test]
fn every_recsys_variable_in_the_compose_file_is_a_configuration_key() {
    let compose = yaml("compose.stream.yml");
    let known = serde_json::to_value(engine::config::Config::default()).unwrap();
    let mut checked = 0;
    let mut environments = vec![compose["x-recsys-environment"].clone()];
    for name in RECSYS_SERVICES {
        environments.push(compose["services"][name]["environment"].clone());
    }
    for environment in environments {
        for key in environment
            .as_object()
            .into_iter()
            .flat_map(|map| map.keys())
        {
            let Some(path) = key.strip_prefix("RECSYS__") else {
                continue;
            };
            let mut node = &known;
            for part in path.split("__") {
                node = node
                    .get(part.to_lowercase())
                    .unwrap_or_else(|| panic!("{key} names no configuration key"));
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} variables found");
}

#[test]
fn prometheus_scrapes_every_program_where_it_listens() {
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let targets: BTreeSet<String> = prometheus["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"].as_array().unwrap().clone())
        .flat_map(|config| config["targets"].as_array().unwrap().clone())
        .map(|target| target.as_str().unwrap().to_owned())
        .collect();
    let compose = yaml("compose.stream.yml");
    let services = &compose["services"];
    let listening = [
        (
            "api",
            services["api"]["environment"]["RECSYS__API__LISTEN"]
                .as_str()
                .unwrap(),
        ),
        (
            "consumer",
            services["consumer"]["environment"]["RECSYS__CONSUMER__LISTEN"]
                .as_str()
                .unwrap(),
        ),
        (
            "model-server",
            services["model-server"]["command"]
                .as_array()
                .unwrap()
                .iter()
                .skip_while(|part| *part != "--listen")
                .nth(1)
                .unwrap()
                .as_str()
                .unwrap(),
        ),
    ];
    for (service, address) in listening {
        let port = address.rsplit(':').next().unwrap();
        let target = format!("{service}:{port}");
        assert!(
            targets.contains(&target),
            "Prometheus does not scrape {target}: {targets:?}"
        );
    }
    let datasource = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(
        datasource["datasources"][0]["url"],
        "http://prometheus:9090"
    );
}

/// Every `recsys_*` string literal in the programs' sources: the metric names they register.
fn exported_metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for crate_dir in [
        "schemas",
        "model_server",
        "engine",
        "consumer",
        "api",
        "cli",
    ] {
        let mut pending = vec![repo().join(crate_dir).join("src")];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|extension| extension == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for literal in text.split("\"recsys_").skip(1) {
                        let name: String = literal
                            .chars()
                            .take_while(|c| {
                                c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'
                            })
                            .collect();
                        names.insert(format!("recsys_{name}"));
                    }
                }
            }
        }
    }
    names
}

#[test]
fn every_metric_a_dashboard_panel_queries_is_exported_by_the_programs() {
    let exported = exported_metric_names();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/dashboards/recsys.json")).unwrap(),
    )
    .unwrap();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queried.extend(metrics_in(target["expr"].as_str().unwrap()));
        }
    }
    let unknown: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "dashboard queries metrics nobody exports: {unknown:?}"
    );
    for required in [
        "recsys_api_request_duration_seconds",
        "recsys_retrieve_fallbacks_total",
        "recsys_consumer_events_total",
        "recsys_consumer_lag_messages",
        "recsys_consumer_dead_letters_total",
        "recsys_consumer_freshness_seconds",
    ] {
        assert!(queried.contains(required), "no panel shows {required}");
    }
}

/// The recsys metrics a PromQL expression reads (histogram series named as their histogram).
fn metrics_in(expression: &str) -> BTreeSet<String> {
    expression
        .split("recsys_")
        .skip(1)
        .map(|fragment| {
            let name: String = fragment
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let name = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name)
                .to_owned();
            format!("recsys_{name}")
        })
        .collect()
}

/// The alert rules Prometheus loads read only exported metrics, cover what an operator must
/// hear about, pass `promtool check rules`, and each fires in its unit test
/// (`promtool test rules`).
#[test]
fn every_alert_reads_exported_metrics_and_passes_its_promtool_unit_test() {
    let exported = exported_metric_names();
    let rules = yaml("deploy/prometheus/alerts.yml");
    let mut alerts = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            alerts.insert(rule["alert"].as_str().unwrap().to_owned());
            queried.extend(metrics_in(rule["expr"].as_str().unwrap()));
        }
    }
    let unknown: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "alerts on metrics nobody exports: {unknown:?}"
    );
    for required in [
        "recsys_consumer_lag_messages",
        "recsys_consumer_dead_letters_total",
        "recsys_retrieve_fallbacks_total",
        "recsys_api_request_duration_seconds",
        "recsys_consumer_ready",
        "recsys_api_ready",
    ] {
        assert!(queried.contains(required), "no alert reads {required}");
    }
    let tests = yaml("deploy/prometheus/alerts.test.yml");
    let tested: BTreeSet<String> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|test| test["alert_rule_test"].as_array().unwrap().iter())
        .map(|case| case["alertname"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tested, alerts, "every alert needs a unit test");

    let directory = repo().join("deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let Ok(output) = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&directory)
            .output()
        else {
            eprintln!("SKIPPED: promtool {args:?} (no promtool: scripts/setup.sh --tests installs prometheus)");
            return;
        };
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
