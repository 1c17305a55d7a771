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
