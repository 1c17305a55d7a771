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

/// Keeps the process's pages resident when `lock_memory` asks for it and the process may
/// (`common::memory`).
pub fn keep_memory_resident(lock_memory: bool) {
    if !lock_memory {
        return;
    }
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
