//! The compare-and-set script a batch's writes go through, and what its answer means.

use redis::{ErrorKind, ServerErrorKind};

use super::unavailable;
use crate::store::StoreError;

/// For each key `KEYS[i]`: writes `ARGV[2i]` when the key still holds `ARGV[2i-1]` (empty:
/// absent). Answers the positions (1-based) of the keys that changed meanwhile and were not
/// written; usually none. One call per chunk of users, and inside it one `MGET` and one `MSET`
/// rather than a `GET` and a `SET` per key: each command called from Lua has a fixed cost (its
/// arguments and reply converted, the command looked up) that two calls per key pay twice
/// (`BENCHMARKS.md` has the comparison). Every byte that enters Lua is also hashed once (Redis'
/// Lua interns strings), which is why a record's old and new bytes are worth keeping small. All
/// keys of a call are declared, as Redis requires; on Redis Cluster a call names the keys of one
/// slot (`connection.rs` groups them).
pub(super) const COMPARE_AND_SET_SCRIPT: &str = r#"
local current = redis.call('MGET', unpack(KEYS))
local changed = {}
local writes = {}
for i, key in ipairs(KEYS) do
  if (current[i] or '') == ARGV[2 * i - 1] then
    writes[#writes + 1] = key
    writes[#writes + 1] = ARGV[2 * i]
  else
    changed[#changed + 1] = i
  end
end
if #writes > 0 then
  redis.call('MSET', unpack(writes))
end
return changed
"#;

/// For each key `KEYS[i]` (a user's cache slot): writes `ARGV[2i]`, a list computed from history
/// version `ARGV[2i-1]`, unless the slot already holds a list computed from a later version. A
/// member that lost the user's partition in a rebalance may finish its push after the new owner
/// pushed from newer events; its older list must not replace the newer one.
pub(super) const PUT_NEWER_SLOTS_SCRIPT: &str = r#"
local current = redis.call('MGET', unpack(KEYS))
local writes = {}
for i, key in ipairs(KEYS) do
  local stored = current[i] and tonumber(string.match(current[i], '"reflects_history_version":(%d+)'))
  if not stored or stored <= tonumber(ARGV[2 * i - 1]) then
    writes[#writes + 1] = key
    writes[#writes + 1] = ARGV[2 * i]
  end
end
if #writes > 0 then
  redis.call('MSET', unpack(writes))
end
return #writes / 2
"#;

/// Bytes of a record key besides the prefix and the user id: `:{`, `}:s`.
/// Which writes of a compare-and-set call went in, and what stopped the others.
#[derive(Debug, Default)]
pub(super) struct WriteResults {
    /// Per write: `false` if the record had changed since it was read, or if the server refused
    /// or did not answer the call.
    pub(super) written: Vec<bool>,
    /// The call failed because the server does not know the script.
    pub(super) script_missing: bool,
    pub(super) error: Option<StoreError>,
}

impl WriteResults {
    /// What the server's answer to a call of `count` writes says (the 1-based positions of
    /// the writes that did not go in). Without a well-formed answer nothing is known, so none
    /// counts as written: they are read and applied again, and whatever did go in then counts
    /// as a duplicate.
    pub(super) fn from_answer(
        count: usize,
        answer: redis::RedisResult<Vec<usize>>,
    ) -> WriteResults {
        let (script_missing, error) = match answer {
            Ok(changed)
                if changed
                    .iter()
                    .all(|&position| (1..=count).contains(&position)) =>
            {
                let mut written = vec![true; count];
                for position in changed {
                    written[position - 1] = false;
                }
                return WriteResults {
                    written,
                    script_missing: false,
                    error: None,
                };
            }
            Ok(changed) => (
                false,
                Some(StoreError::Unavailable(format!(
                    "the answer to {count} writes names positions outside them: {changed:?}"
                ))),
            ),
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                (true, None)
            }
            Err(error) => (false, Some(unavailable(error))),
        };
        WriteResults {
            written: vec![false; count],
            script_missing,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_complete_answer_counts_writes_as_done() {
        // The answer names the writes that did not go in, counted from 1.
        let results = WriteResults::from_answer(3, Ok(vec![2]));
        assert_eq!(results.written, [true, false, true]);
        assert!(results.error.is_none() && !results.script_missing);
        let results = WriteResults::from_answer(2, Ok(vec![]));
        assert_eq!(results.written, [true, true]);

        // A server that lost its scripts: nothing written, the script is loaded again, and that
        // is no outage.
        let no_script = redis::RedisError::from((
            ErrorKind::Server(ServerErrorKind::NoScript),
            "NOSCRIPT No matching script",
        ));
        let results = WriteResults::from_answer(2, Err(no_script));
        assert_eq!(results.written, [false, false]);
        assert!(results.script_missing);
        assert!(results.error.is_none());

        let read_only =
            redis::RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        let results = WriteResults::from_answer(2, Err(read_only));
        assert_eq!(results.written, [false, false]);
        assert!(matches!(results.error, Some(StoreError::Unavailable(_))));

        // A position outside the call (0, or past its end) is no answer this client understands.
        for malformed in [vec![0], vec![4], vec![1, 4]] {
            let results = WriteResults::from_answer(3, Ok(malformed));
            assert_eq!(results.written, [false, false, false]);
            assert!(matches!(results.error, Some(StoreError::Unavailable(_))));
        }
    }
}
