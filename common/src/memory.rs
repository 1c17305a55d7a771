//! Keeping a serving process's memory resident.
//!
//! A machine may page out memory nobody touched for a while even when it is not short of memory
//! (proactive reclaim: DAMON page-out schemes, cgroup `memory.reclaim`). A server that idled then
//! faults its code, the model and the index back in from disk on the next requests, hundreds of
//! milliseconds each. `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` keeps every page the
//! process has touched, or will touch, resident, without faulting in pages it never used.
//!
//! Only a process with `CAP_IPC_LOCK` (or an unlimited `ulimit -l`) locks: with a finite limit,
//! a later allocation past it would fail, and a failed allocation is worse than a slow request.

use std::path::Path;

use rustix::mm::{madvise, mlockall, Advice, MlockAllFlags};

/// `CAP_IPC_LOCK`'s bit in the capability sets.
const CAP_IPC_LOCK: u32 = 14;

/// What [`keep_resident`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Residency {
    Locked,
    /// Not allowed to lock without risking failed allocations; the reason.
    NotAllowed(String),
    Failed(String),
}

/// Locks the process's pages in memory as they are touched, when the process may.
pub fn keep_resident() -> Residency {
    if !may_lock_without_limit() {
        return Residency::NotAllowed(
            "no CAP_IPC_LOCK and `ulimit -l` is finite: pages idle for long may be paged out"
                .into(),
        );
    }
    match mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT) {
        Ok(()) => Residency::Locked,
        Err(error) => Residency::Failed(error.to_string()),
    }
}

/// Faults in every page of this process's file mappings under `dir` and returns how many bytes
/// that covered. Locking only keeps what was touched: a memory-mapped index that a warm-up
/// touched in part still has pages whose first reader is a request, long after start, when the
/// host may have paged their file cache out. Called once the index is open, with the lock on,
/// it makes the whole index resident and locked from the start, at the cost of its size in
/// memory.
pub fn populate_mappings_under(dir: &Path) -> std::io::Result<u64> {
    let dir = dir.canonicalize()?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut populated = 0;
    for (start, end) in file_mappings_under(&maps, &dir) {
        // SAFETY: the range is a whole mapping of this process as /proc/self/maps listed it, and
        // MADV_POPULATE_READ only faults its pages in (as reading them would); it changes no
        // contents. A mapping gone since the listing makes the call fail, which is skipped.
        #[allow(unsafe_code)]
        let outcome = unsafe {
            madvise(
                start as *mut std::ffi::c_void,
                end - start,
                Advice::LinuxPopulateRead,
            )
        };
        if outcome.is_ok() {
            populated += (end - start) as u64;
        }
    }
    Ok(populated)
}

/// The address ranges of `/proc/<pid>/maps` lines whose file lies under `dir`.
fn file_mappings_under(maps: &str, dir: &Path) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            // address perms offset dev inode path: the path is the first `/` on the line.
            let path = Path::new(&line[line.find('/')?..]);
            if !path.starts_with(dir) {
                return None;
            }
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        })
        .collect()
}

fn may_lock_without_limit() -> bool {
    let unlimited = rustix::process::getrlimit(rustix::process::Resource::Memlock)
        .current
        .is_none();
    unlimited
        || has_capability(
            &std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
            CAP_IPC_LOCK,
        )
}

/// Whether `/proc/<pid>/status` text shows `capability` in the effective set.
fn has_capability(status: &str, capability: u32) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|set| set & (1 << capability) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_under_a_directory_are_picked_from_proc_maps() {
        let maps = "\
7f0000000000-7f0000400000 r--s 00000000 fd:01 1234   /data/index/items/v1/vectors.dat
7f0000400000-7f0000401000 rw-p 00000000 00:00 0
7f0000500000-7f0000600000 r--p 00000000 fd:01 99     /usr/lib/libc.so.6
7f0000600000-7f0000700000 r--s 00000000 fd:01 1235   /data/index-old/items.dat
7f0000700000-7f0000800000 r--s 00000000 fd:01 1236   /data/index/with space/graph.bin
";
        assert_eq!(
            file_mappings_under(maps, Path::new("/data/index")),
            [
                (0x7f0000000000, 0x7f0000400000),
                (0x7f0000700000, 0x7f0000800000)
            ]
        );
    }

    #[test]
    fn a_mapped_file_under_the_directory_becomes_resident() {
        let dir = tempfile::tempdir().unwrap();
        let file_path = dir.path().join("segment.bin");
        std::fs::write(&file_path, vec![7u8; 1 << 20]).unwrap();
        let file = std::fs::File::open(&file_path).unwrap();
        // SAFETY (test): the file is this test's own and nothing writes it while mapped.
        #[allow(unsafe_code)]
        let mapping = unsafe { memmap2::Mmap::map(&file).unwrap() };
        let resident = || resident_bytes_of_mapping_at(mapping.as_ptr() as usize);
        assert_eq!(resident(), 0, "nothing read through the mapping yet");

        assert_eq!(populate_mappings_under(dir.path()).unwrap(), 1 << 20);
        assert_eq!(resident(), 1 << 20);
    }

    /// `Rss` of the mapping that starts at `address`, from /proc/self/smaps.
    fn resident_bytes_of_mapping_at(address: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let header = format!("{address:x}-");
        let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&header));
        lines.next().expect("the mapping is listed");
        let rss_kb: u64 = lines
            .find_map(|line| line.strip_prefix("Rss:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("the mapping has an Rss line");
        rss_kb * 1024
    }

    #[test]
    fn the_effective_capability_set_is_read_from_proc_status() {
        let root = "Name:\trecsys\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let user = "Name:\trecsys\nCapEff:\t0000000000000000\n";
        let only_ipc_lock = "CapEff:\t0000000000004000\n";
        assert!(has_capability(root, CAP_IPC_LOCK));
        assert!(!has_capability(user, CAP_IPC_LOCK));
        assert!(has_capability(only_ipc_lock, CAP_IPC_LOCK));
        assert!(!has_capability("", CAP_IPC_LOCK));
    }
}
