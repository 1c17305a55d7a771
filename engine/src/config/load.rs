//! Loading: defaults, then the file, then the environment, every problem collected (unknown keys,
//! wrong types, unusable URLs and values) and reported together.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;

use super::Config;

/// Every problem found while loading the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|problem| format!("  - {problem}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

pub const DEFAULT_CONFIG_FILE: &str = "recsys.toml";
const ENV_PREFIX: &str = "RECSYS__";

/// Loads defaults, then `file` (or `recsys.toml` in the working directory if it exists), then the
/// environment.
pub fn load_config(file: Option<&Path>) -> Result<Config, ConfigError> {
    load_config_from(file, Env::prefixed(ENV_PREFIX).split("__"))
}

pub(super) fn load_config_from(
    file: Option<&Path>,
    environment: Env,
) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    match file {
        Some(path) if !path.exists() => {
            problems.push(format!("config file {} does not exist", path.display()))
        }
        Some(path) => figment = figment.merge(Toml::file(path)),
        None => figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE)),
    }
    figment = figment.merge(environment);

    // Unknown keys anywhere, with where they came from.
    let known = serde_json::to_value(Config::default()).expect("config serialises");
    match figment.extract::<serde_json::Value>() {
        Ok(merged) => unknown_keys(&figment, &known, &merged, "", &mut problems),
        Err(errors) => problems.extend(errors.into_iter().map(|error| error.to_string())),
    }
    let config = match figment.extract::<Config>() {
        Ok(config) => Some(config),
        Err(errors) => {
            problems.extend(errors.into_iter().map(|error| error.to_string()));
            None
        }
    };
    if let Some(config) = &config {
        check_url(
            &mut problems,
            "state.url",
            &config.state.url,
            &["embedded", "redis://", "rediss://"],
        );
        check_url(
            &mut problems,
            "index.url",
            &config.index.url,
            &["embedded", "http://", "https://"],
        );
        check_url(
            &mut problems,
            "model.url",
            &config.model.url,
            &["embedded", "http://", "https://"],
        );
        check_url(
            &mut problems,
            "events.url",
            &config.events.url,
            &["embedded", "kafka://"],
        );
        problems.extend(super::access::key_problems(
            &config.api.keys,
            config.api.reads_need_key,
        ));
        if config.events.topic.is_empty() || config.events.dead_letter_topic.is_empty() {
            problems.push("events.topic and events.dead_letter_topic must be set".into());
        }
        if config.archive.enabled
            && (config.archive.flush_interval_ms == 0 || config.archive.max_buffered_events == 0)
        {
            problems.push(
                "archive.flush_interval_ms and archive.max_buffered_events must be at least 1"
                    .into(),
            );
        }
        if !config.catalogue.topic.is_empty() && config.catalogue.dead_letter_topic.is_empty() {
            problems.push("catalogue.dead_letter_topic must be set with catalogue.topic".into());
        }
        if config.events.bus_capacity == 0 || config.events.max_events_per_request == 0 {
            problems.push(
                "events.bus_capacity and events.max_events_per_request must be at least 1".into(),
            );
        }
        if config.consumer.max_batch_events == 0 || config.consumer.push_count == 0 {
            problems.push(
                "consumer.max_batch_events and consumer.push_count must be at least 1".into(),
            );
        }
        if config.state.max_history == 0 {
            problems.push("state.max_history must be at least 1".into());
        }
        let instance_id = &config.consumer.instance_id;
        if instance_id.len() > 249
            || !instance_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            problems.push(format!(
                "consumer.instance_id: '{instance_id}' must be at most 249 of a-z, A-Z, 0-9, '.', '_', '-'"
            ));
        }
        if config.consumer.max_poll_interval_ms < config.consumer.session_timeout_ms {
            problems.push(format!(
                "consumer.max_poll_interval_ms ({}) must be at least consumer.session_timeout_ms ({})",
                config.consumer.max_poll_interval_ms, config.consumer.session_timeout_ms
            ));
        }
        if config.catalogue.refresh_interval_ms == 0
            || config.catalogue.max_items_per_request == 0
            || config.catalogue.max_item_bytes == 0
        {
            problems.push(
                "catalogue.refresh_interval_ms, catalogue.max_items_per_request and \
                 catalogue.max_item_bytes must be at least 1"
                    .into(),
            );
        }
        for origin in &config.api.cors_allowed_origins {
            // Scheme and host (and port), nothing after: a browser sends exactly that.
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let is_origin = host.is_some_and(|host| {
                !host.is_empty() && !host.contains(|c: char| c == '/' || c.is_whitespace())
            });
            if origin != "*" && !is_origin {
                problems.push(format!(
                    "api.cors_allowed_origins: '{origin}' is neither \"*\" nor an origin such as https://shop.example"
                ));
            }
        }
        if config.model.max_batch_size == 0 || config.model.queue_capacity == 0 {
            problems
                .push("model.max_batch_size and model.queue_capacity must be at least 1".into());
        }
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError { problems }),
    }
}

fn check_url(problems: &mut Vec<String>, key: &str, url: &str, accepted: &[&str]) {
    let scheme_ok = accepted.iter().any(|prefix| {
        url == *prefix
            || (prefix.ends_with("://") && url.starts_with(prefix) && url.len() > prefix.len())
    });
    if !scheme_ok {
        problems.push(format!(
            "{key} = '{url}': expected one of {}",
            accepted.join(", ")
        ));
    }
}

fn unknown_keys(
    figment: &Figment,
    known: &serde_json::Value,
    merged: &serde_json::Value,
    path: &str,
    problems: &mut Vec<String>,
) {
    let (Some(known), Some(merged)) = (known.as_object(), merged.as_object()) else {
        return;
    };
    for (key, value) in merged {
        let full_key = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match known.get(key) {
            Some(known_value) if known_value.is_object() => {
                unknown_keys(figment, known_value, value, &full_key, problems)
            }
            Some(_) => {}
            None => {
                let origin = figment
                    .find_metadata(&full_key)
                    .map(|metadata| match &metadata.source {
                        Some(source) => format!(" (from {} {source})", metadata.name),
                        None => format!(" (from {})", metadata.name),
                    })
                    .unwrap_or_default();
                problems.push(format!("unknown key '{full_key}'{origin}"));
            }
        }
    }
}
