//! A private copy of an embedded index version, for a process that finds the version open in
//! another process on the same data dir (`recsys serve` and a pushing `recsys consume`, say).
//!
//! Qdrant Edge locks a shard's write-ahead log, so one process at a time can open a shard. A
//! version never changes once built, so a copy answers exactly as the original does. Copies live
//! in `index/<alias>/.copies/<pid>-<version>` (a dot name: never taken for a version, never
//! pruned as one), are removed when the index is dropped, and copies left by processes that no
//! longer run are removed by the next copy made.

use std::path::{Path, PathBuf};

const COPIES_DIR: &str = ".copies";

/// A copied shard directory, removed on drop.
#[derive(Debug)]
pub(super) struct PrivateCopy {
    dir: PathBuf,
}

impl PrivateCopy {
    /// Copies `alias_dir/version` for this process.
    pub(super) fn make(alias_dir: &Path, version: &str) -> std::io::Result<PrivateCopy> {
        let copies = alias_dir.join(COPIES_DIR);
        std::fs::create_dir_all(&copies)?;
        remove_abandoned(&copies);
        let dir = copies.join(format!("{}-{version}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let copy = PrivateCopy { dir };
        copy_dir(&alias_dir.join(version), &copy.dir)?;
        Ok(copy)
    }

    pub(super) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(%error, dir = %self.dir.display(), "cannot remove a private index copy");
        }
    }
}

/// Removes the copies of processes that are gone (their pid has no `/proc` entry).
fn remove_abandoned(copies: &Path) {
    let Ok(entries) = std::fs::read_dir(copies) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
