//! The Redis store (redis-rs, multiplexed connection manager, pipelined).
//!
//! Layout, for key prefix `p` and user `u` (the `{u}` hash tag keeps a user's keys in one slot, so
//! the layout works on Redis Cluster):
//!
//! ```text
//! p:{u}          hash   seq  = recent items joined by \x1f (most recent last)
//!                       t    = newest applied event time (ms)
//!                       v    = history version (applied interactions so far)
//!                       o<N> = last applied offset of partition N
//!                       recs = cached recommendations (JSON)
//! p:{u}:seen     zset   item -> last seen event time (ms), trimmed to max_seen
//! p:popular      zset   item -> popularity score
//! ```
//!
//! Needs Redis 6.2 or later (`ZADD ... GT`).
//!
//! One user's interactions are applied by a Lua script, so the append, the seen set and the offsets
//! change together or not at all; a batch sends one script call per user in a single pipeline. The
//! script answers which interactions were new, and only those add to `p:popular` (a second
//! pipeline: the popular key is in another cluster slot than the user's keys).

use std::collections::HashMap;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ErrorKind, Script, ServerErrorKind};

use super::{
    ApplyOutcome, CachedRecommendations, StoreError, StoreLimits, UserState, UserStore, UserUpdate,
};

/// Separates items inside the packed `seq` field; item ids never contain control characters.
const ITEM_SEPARATOR: char = '\u{1f}';

const APPLY_SCRIPT: &str = r#"
local max_history = tonumber(ARGV[1])
local max_seen = tonumber(ARGV[2])
local items = {}
local packed = redis.call('HGET', KEYS[1], 'seq')
if packed then
  for item in string.gmatch(packed, '[^\031]+') do items[#items + 1] = item end
end
local newest = redis.call('HGET', KEYS[1], 't')
local offsets = {}
local applied, duplicates = 0, 0
local fresh_flags = {}
for i = 3, #ARGV, 4 do
  local item, time, partition, offset = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local fresh = true
  if partition ~= '' then
    local field = 'o' .. partition
    local last = offsets[field] or redis.call('HGET', KEYS[1], field)
    if last and tonumber(offset) <= tonumber(last) then fresh = false else offsets[field] = offset end
  end
  if fresh then
    if items[#items] ~= item then items[#items + 1] = item end
    redis.call('ZADD', KEYS[2], 'GT', time, item)
    if (not newest) or tonumber(time) > tonumber(newest) then newest = time end
    applied = applied + 1
    fresh_flags[#fresh_flags + 1] = '1'
  else
    duplicates = duplicates + 1
    fresh_flags[#fresh_flags + 1] = '0'
  end
end
if applied > 0 then
  local first = math.max(1, #items - max_history + 1)
  redis.call('HSET', KEYS[1], 'seq', table.concat(items, '\031', first, #items), 't', newest)
  redis.call('HINCRBY', KEYS[1], 'v', applied)
  for field, offset in pairs(offsets) do redis.call('HSET', KEYS[1], field, offset) end
  local excess = redis.call('ZCARD', KEYS[2]) - max_seen
  if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1) end
end
return {applied, duplicates, table.concat(fresh_flags)}
"#;

pub struct RedisStore {
    connection: ConnectionManager,
    key_prefix: String,
    limits: StoreLimits,
    apply_script: Script,
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl RedisStore {
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        limits: StoreLimits,
    ) -> Result<RedisStore, StoreError> {
        if key_prefix.is_empty() || key_prefix.contains(['{', '}']) {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                problem: format!("key prefix '{key_prefix}' must be non-empty and free of braces"),
            });
        }
        let client = redis::Client::open(url).map_err(|error| StoreError::InvalidUrl {
            url: url.to_owned(),
            problem: error.to_string(),
        })?;
        // Bounded waits: a dead server must turn into an error the caller can fall back on, not a
        // request that hangs.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)))
            .set_number_of_retries(2);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(RedisStore {
            connection,
            key_prefix: key_prefix.to_owned(),
            limits,
            apply_script: Script::new(APPLY_SCRIPT),
        })
    }

    fn user_key(&self, user_id: &str) -> String {
        format!("{}:{{{user_id}}}", self.key_prefix)
    }

    fn seen_key(&self, user_id: &str) -> String {
        format!("{}:{{{user_id}}}:seen", self.key_prefix)
    }

    fn popular_key(&self) -> String {
        format!("{}:popular", self.key_prefix)
    }

    /// Every key this store wrote for `user_id` (for memory measurements and tests).
    pub fn user_keys(&self, user_id: &str) -> [String; 2] {
        [self.user_key(user_id), self.seen_key(user_id)]
    }

    /// Bytes Redis uses for everything stored about `user_id` (`MEMORY USAGE` of each key).
    pub async fn memory_usage_bytes(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut connection = self.connection.clone();
        let mut total = 0;
        for key in self.user_keys(user_id) {
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            total += bytes.unwrap_or_default();
        }
        Ok(total)
    }

    fn apply_pipeline(&self, updates: &[UserUpdate]) -> redis::Pipeline {
        let mut pipeline = redis::pipe();
        for update in updates {
            let command = pipeline
                .cmd("EVALSHA")
                .arg(self.apply_script.get_hash())
                .arg(2)
                .arg(self.user_key(&update.user_id))
                .arg(self.seen_key(&update.user_id))
                .arg(self.limits.max_history)
                .arg(self.limits.max_seen);
            for interaction in &update.interactions {
                command
                    .arg(&interaction.item_id)
                    .arg(interaction.event_time_ms);
                match interaction.position {
                    Some(position) => command.arg(position.partition).arg(position.offset),
                    None => command.arg("").arg(""),
                };
            }
        }
        pipeline
    }
}

fn check_item_ids(updates: &[UserUpdate]) -> Result<(), StoreError> {
    for update in updates {
        for interaction in &update.interactions {
            if interaction.item_id.is_empty() || interaction.item_id.contains(ITEM_SEPARATOR) {
                return Err(StoreError::Corrupt {
                    key: update.user_id.clone(),
                    problem: format!("item id {:?} cannot be stored", interaction.item_id),
                });
            }
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl UserStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn user_state(&self, user_id: &str) -> Result<UserState, StoreError> {
        let mut connection = self.connection.clone();
        let ((packed, newest, history_version, cached), seen): (
            (Option<String>, Option<i64>, Option<u64>, Option<String>),
            Vec<String>,
        ) = redis::pipe()
            .cmd("HMGET")
            .arg(self.user_key(user_id))
            .arg(&["seq", "t", "v", "recs"])
            .zrange(self.seen_key(user_id), 0, -1)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let cached = match cached {
            None => None,
            Some(json) => {
                Some(
                    serde_json::from_str(&json).map_err(|error| StoreError::Corrupt {
                        key: self.user_key(user_id),
                        problem: format!("recs: {error}"),
                    })?,
                )
            }
        };
        Ok(UserState {
            recent_items: packed
                .map(|packed| {
                    packed
                        .split(ITEM_SEPARATOR)
                        .filter(|item| !item.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            seen_items: seen,
            newest_event_time_ms: newest,
            history_version: history_version.unwrap_or_default(),
            cached,
        })
    }

    async fn apply(&self, updates: &[UserUpdate]) -> Result<ApplyOutcome, StoreError> {
        check_item_ids(updates)?;
        let updates: Vec<&UserUpdate> = updates
            .iter()
            .filter(|update| !update.interactions.is_empty())
            .collect();
        if updates.is_empty() {
            return Ok(ApplyOutcome::default());
        }
        let owned: Vec<UserUpdate> = updates.into_iter().cloned().collect();
        let pipeline = self.apply_pipeline(&owned);
        let mut connection = self.connection.clone();
        let replies: Vec<(usize, usize, String)> = match pipeline.query_async(&mut connection).await
        {
            Ok(replies) => replies,
            // A restarted server forgets loaded scripts: load it and send the batch again. The
            // script is idempotent, so a partly applied first attempt does no harm.
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.apply_script
                    .prepare_invoke()
                    .load_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                pipeline
                    .query_async(&mut connection)
                    .await
                    .map_err(unavailable)?
            }
            Err(error) => return Err(unavailable(error)),
        };
        let mut outcome = ApplyOutcome::default();
        let mut popularity_increments: HashMap<&str, f64> = HashMap::new();
        for (update, (applied, duplicates, fresh_flags)) in owned.iter().zip(&replies) {
            outcome.applied += applied;
            outcome.duplicates += duplicates;
            for (interaction, flag) in update.interactions.iter().zip(fresh_flags.bytes()) {
                if flag == b'1' && interaction.popularity_increment != 0.0 {
                    *popularity_increments
                        .entry(interaction.item_id.as_str())
                        .or_default() += interaction.popularity_increment;
                }
            }
        }
        let increments: Vec<(String, f64)> = popularity_increments
            .into_iter()
            .map(|(item_id, amount)| (item_id.to_owned(), amount))
            .collect();
        self.add_popularity(&increments).await?;
        Ok(outcome)
    }

    async fn put_cached_recommendations(
        &self,
        entries: &[(String, CachedRecommendations)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for (user_id, recommendations) in entries {
            let json = serde_json::to_string(recommendations).expect("recommendations serialise");
            pipeline.hset(self.user_key(user_id), "recs", json).ignore();
        }
        let mut connection = self.connection.clone();
        pipeline
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn add_popularity(&self, increments: &[(String, f64)]) -> Result<(), StoreError> {
        if increments.is_empty() {
            return Ok(());
        }
        let key = self.popular_key();
        let mut pipeline = redis::pipe();
        for (item_id, amount) in increments {
            pipeline.zincr(&key, item_id, *amount).ignore();
        }
        let mut connection = self.connection.clone();
        pipeline
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn top_popular(&self, count: usize) -> Result<Vec<(String, f64)>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut connection = self.connection.clone();
        connection
            .zrevrange_withscores(self.popular_key(), 0, count as isize - 1)
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }
}
