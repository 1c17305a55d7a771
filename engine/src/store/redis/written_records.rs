//! What this process wrote last, so a user's next batch need not read its record back.

use crate::BatchMap;

/// Users whose last written record is remembered, per generation (two generations are kept):
/// with about 150 bytes a record plus its key, a few tens of megabytes, and every user of a
/// batch or two.
const REMEMBERED_USERS: usize = 50_000;

/// The records this process wrote last, by user, so a user's next batch need not read its
/// record back. Safe because every write is a compare-and-set against the bytes it assumes: if
/// anyone else changed the record since (another consumer after a rebalance, a restored
/// backup), the write is refused, the entry is gone, and the next round reads the record from
/// the server. A bounded two-generation map: when the current one is full it becomes the
/// previous one and the oldest generation is dropped. A taken entry keeps its place (emptied),
/// so a user written batch after batch costs no key copy and no map insertion.
#[derive(Default)]
pub(super) struct WrittenRecords {
    generations: std::sync::Mutex<[BatchMap<String, Option<Vec<u8>>>; 2]>,
}

impl WrittenRecords {
    /// A poisoned lock is still usable: whatever panicked left at worst an entry missing (the
    /// record is read) or stale (its write is refused, then it is read).
    fn generations(&self) -> std::sync::MutexGuard<'_, [BatchMap<String, Option<Vec<u8>>>; 2]> {
        self.generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes what is remembered of each user (a write puts it back).
    pub(super) fn take(&self, user_ids: &[&str]) -> Vec<Option<Vec<u8>>> {
        let mut generations = self.generations();
        let [current, previous] = &mut *generations;
        user_ids
            .iter()
            .map(|user_id| match current.get_mut(*user_id) {
                Some(remembered) => remembered.take(),
                None => previous.remove(*user_id).flatten(),
            })
            .collect()
    }

    pub(super) fn remember<'a>(&self, written: impl IntoIterator<Item = (&'a str, Vec<u8>)>) {
        let mut generations = self.generations();
        let [current, previous] = &mut *generations;
        for (user_id, record) in written {
            if let Some(remembered) = current.get_mut(user_id) {
                *remembered = Some(record);
                continue;
            }
            if current.len() >= REMEMBERED_USERS {
                *previous = std::mem::take(current);
            }
            current.insert(user_id.to_owned(), Some(record));
        }
    }
}
