//! Keeping a serving process's memory resident, and warm ([`KeepWarm`]).
//!
//! A machine may page out memory nobody touched for a while even when it is not short of memory
//! (proactive reclaim: DAMON page-out schemes, cgroup `memory.reclaim`). A server that idled then
//! faults its code, the model and the index back in from disk on the next requests, hundreds of
//! milliseconds each. `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` keeps every page the
//! process has touched, or will touch, resident, without faulting in pages it never used.
//!
//! Only a process with `CAP_IPC_LOCK` (or an unlimited `ulimit -l`) locks: with a finite limit,
//! a later allocation past it would fail, and a failed allocation is worse than a slow request.

mod warm;

use rustix::mm::{mlockall, MlockAllFlags};

pub use warm::{touch_resident_pages, KeepWarm};

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
