//! `[[api.keys]]`: who may call what. Each key has a name (what logs and metrics show), a
//! secret (what the client sends; never shown), the scopes it grants and, optionally, its own
//! rate limit. Several keys may grant the same scopes, so a secret is rotated by adding the new
//! key, moving the clients, then removing the old one.

use serde::{Deserialize, Serialize};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Recommendations, item reads and searches (keyed only with `api.reads_need_key`).
    Read,
    /// `POST /events`.
    WriteEvents,
    /// `POST /items`, `DELETE /items/{id}`.
    WriteItems,
    /// `DELETE /users/{id}` (erasure).
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::WriteEvents => "write_events",
            Scope::WriteItems => "write_items",
            Scope::Admin => "admin",
        }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    /// Sent as `authorization: Bearer <secret>` or `x-api-key: <secret>`.
    pub secret: String,
    pub scopes: Vec<Scope>,
    /// Requests per second this key may make on average; none: no limit.
    #[serde(default)]
    pub requests_per_second: Option<u32>,
    /// Requests it may make at once above that rate; default: one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// The secret stays out of every log line and error message that prints a configuration.
impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApiKeyConfig")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("requests_per_second", &self.requests_per_second)
            .field("burst", &self.burst)
            .finish()
    }
}

/// What is wrong with the keys, each problem a line.
pub(super) fn key_problems(keys: &[ApiKeyConfig], reads_need_key: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut secrets = std::collections::HashSet::new();
    for (position, key) in keys.iter().enumerate() {
        let at = format!("api.keys[{position}]");
        if key.name.trim().is_empty() {
            problems.push(format!("{at}.name must be set"));
        } else if !names.insert(key.name.as_str()) {
            problems.push(format!("{at}.name '{}' is used twice", key.name));
        }
        if key.secret.len() < 16 {
            problems.push(format!("{at}.secret must be at least 16 characters"));
        } else if !secrets.insert(key.secret.as_str()) {
            problems.push(format!("{at}.secret is the secret of another key"));
        }
        if key.scopes.is_empty() {
            problems.push(format!("{at}.scopes must name at least one scope"));
        }
        if key.requests_per_second == Some(0) || key.burst == Some(0) {
            problems.push(format!(
                "{at}: requests_per_second and burst must be at least 1"
            ));
        }
    }
    if reads_need_key && !keys.iter().any(|key| key.scopes.contains(&Scope::Read)) {
        problems.push("api.reads_need_key is set but no key has the read scope".into());
    }
    problems
}
