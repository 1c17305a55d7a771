//! One module per group of subcommands; each owns its arguments and its `run` functions.

pub mod bench_cold_start;
pub mod bench_stream;
pub mod data;
pub mod promotion;
pub mod serve;
pub mod stream;

#[cfg(feature = "in-process-model")]
mod bench_embedder;
#[cfg(feature = "in-process-model")]
pub mod experiment;
mod load_bodies;
#[cfg(feature = "in-process-model")]
pub mod model;
#[cfg(feature = "in-process-model")]
pub mod retrain;
mod stream_load;

/// Keeps the process's pages resident when `lock_memory` asks for it and the process may, and
/// warm every `warm_interval_secs` (`common::memory`). Warming lasts as long as the answer.
#[must_use = "memory stays warm only while the answer lives"]
pub fn keep_memory_resident_and_warm(
    lock_memory: bool,
    warm_interval_secs: u64,
) -> Option<common::memory::KeepWarm> {
    if lock_memory {
        match common::memory::keep_resident() {
            common::memory::Residency::Locked => {
                tracing::info!("memory locked: pages once touched stay resident")
            }
            common::memory::Residency::NotAllowed(reason)
            | common::memory::Residency::Failed(reason) => {
                tracing::warn!(%reason, "memory not locked (lock_memory)")
            }
        }
    }
    if warm_interval_secs == 0 {
        return None;
    }
    let interval = std::time::Duration::from_secs(warm_interval_secs);
    common::memory::KeepWarm::start(interval)
        .inspect_err(|error| tracing::warn!(%error, "memory not kept warm"))
        .ok()
}
