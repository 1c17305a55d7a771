//! Durable file replacement: a reader sees the old content or the new, never a partial write, and
//! after a power loss the rename is not undone. A rename alone gives the first; the second needs
//! the file synced before the rename and its directory synced after it.

use std::io::Write as _;
use std::path::Path;

/// Flushes a directory's entries (a created, removed or renamed name) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` and syncs the file; `path` is created or truncated.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Replaces `path` with `bytes` atomically and durably: a temporary file in the same directory,
/// synced, renamed over `path`, then the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("file");
    let temporary = path.with_file_name(format!(".{file_name}.{}.partial", std::process::id()));
    if let Err(error) = write_synced(&temporary, bytes) {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    rename_durably(&temporary, path)
}

/// Replaces `path` with `name` and a newline (an alias or `CURRENT` pointer), atomically and
/// durably.
pub fn write_pointer_file(path: &Path, name: &str) -> std::io::Result<()> {
    write_atomically(path, format!("{name}\n").as_bytes())
}

/// Renames `from` to `to` (a file or a fully written directory) and syncs the directory that now
/// holds `to`, so the new name survives a crash. A directory's own files must be synced by whoever
/// wrote them; `from` itself is synced here before the rename.
pub fn rename_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        sync_dir(from)?;
    }
    std::fs::rename(from, to)?;
    match to.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("CURRENT");
        write_pointer_file(&path, "v1").unwrap();
        write_pointer_file(&path, "v2").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "v2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("CURRENT")]);
    }

    #[test]
    fn a_directory_is_renamed_into_place_whole() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join(".v1.partial");
        std::fs::create_dir(&staging).unwrap();
        write_synced(&staging.join("config.json"), b"{}").unwrap();
        let target = dir.path().join("v1");
        rename_durably(&staging, &target).unwrap();
        assert!(!staging.exists());
        assert_eq!(std::fs::read(target.join("config.json")).unwrap(), b"{}");
    }
}
