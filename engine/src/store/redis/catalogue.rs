//! The catalogue on Redis, for key prefix `p` (one hash slot, `{p:catalogue}`, so it suits a
//! cluster as well):
//!
//! ```text
//! p:{p:catalogue}:items     hash  item id -> JSON `CatalogueItem`
//! p:{p:catalogue}:changes   zset  item id scored by the sequence number of its latest change
//! p:{p:catalogue}:sequence  string  the last sequence number given out
//! ```
//!
//! An upsert is one script call, so a record and its place in the log change together. A reader
//! takes the ids after its cursor from the zset and then their records: an item changed again
//! in between is read in its newer state and read once more at its newer number, which is
//! harmless.

use redis::Script;

use super::{unavailable, RedisStore};
use crate::catalogue::{CatalogueChange, CatalogueItem, CatalogueStore};
use crate::store::StoreError;

/// `KEYS`: items, changes, sequence. `ARGV`: item id, JSON, item id, JSON, ...
const UPSERT_SCRIPT: &str = r#"
for i = 1, #ARGV, 2 do
  local sequence = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], sequence, ARGV[i])
end
return #ARGV / 2
"#;

/// Items per script call: two arguments each, within Lua's stack for `unpack`-free scripts and
/// small enough to keep one call short for the other clients of the server.
const ITEMS_PER_CALL: usize = 500;

impl RedisStore {
    fn catalogue_key(&self, name: &str) -> String {
        format!("{0}:{{{0}:catalogue}}:{name}", self.key_prefix)
    }
}

fn decode(item_id: &str, json: &[u8]) -> Result<CatalogueItem, StoreError> {
    serde_json::from_slice(json).map_err(|error| StoreError::Corrupt {
        key: format!("catalogue item {item_id}"),
        problem: error.to_string(),
    })
}

#[async_trait::async_trait]
impl CatalogueStore for RedisStore {
    async fn upsert_items(&self, items: &[CatalogueItem]) -> Result<(), StoreError> {
        let script = Script::new(UPSERT_SCRIPT);
        let (items_key, changes_key, sequence_key) = (
            self.catalogue_key("items"),
            self.catalogue_key("changes"),
            self.catalogue_key("sequence"),
        );
        let mut connection = self.connection();
        for chunk in items.chunks(ITEMS_PER_CALL) {
            let mut invocation = script.prepare_invoke();
            invocation
                .key(&items_key)
                .key(&changes_key)
                .key(&sequence_key);
            for item in chunk {
                invocation
                    .arg(&item.item_id)
                    .arg(serde_json::to_vec(item).expect("catalogue items serialise"));
            }
            let _: usize = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn catalogue_items(&self, item_ids: &[String]) -> Result<Vec<CatalogueItem>, StoreError> {
        if item_ids.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(self.catalogue_key("items"))
            .arg(item_ids)
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        item_ids
            .iter()
            .zip(records)
            .filter_map(|(item_id, json)| Some(decode(item_id, &json?)))
            .collect()
    }

    async fn catalogue_changes(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<CatalogueChange>, StoreError> {
        let mut connection = self.connection();
        let changed: Vec<(String, u64)> = redis::cmd("ZRANGE")
            .arg(self.catalogue_key("changes"))
            .arg(format!("({after}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = changed
            .iter()
            .map(|(item_id, _)| item_id.as_str())
            .collect();
        let records: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(self.catalogue_key("items"))
            .arg(&ids)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        changed
            .into_iter()
            .zip(records)
            .map(|((item_id, sequence), json)| {
                let json = json.ok_or_else(|| StoreError::Corrupt {
                    key: self.catalogue_key("changes"),
                    problem: format!("names item {item_id}, which has no record"),
                })?;
                Ok(CatalogueChange {
                    sequence,
                    item: decode(&item_id, &json)?,
                })
            })
            .collect()
    }
}
