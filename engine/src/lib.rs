//! The core the API and the consumer share: the user-state store, the vector index, the event log,
//! applying events, popularity, the model behind the pipeline, the retrieve pipeline and
//! configuration. Each backend is a trait chosen by URL (`embedded` or a service's URL).
//!
//! The in-process model is the `in-process-model` feature (on by default): without it the model
//! is `recsys model-server` over HTTP and nothing here links libtorch.

pub mod catalogue;
pub mod config;
pub mod event_log;
pub mod events;
#[cfg(feature = "testsuite")]
pub mod fixtures;
pub mod index;
pub mod indexing;
pub mod model;
pub mod popularity;
pub mod promotion;
pub mod retrieve;
pub mod serving;
pub mod startup;
pub mod store;

/// A hash map for the per-batch maps of the stream path (hundreds of thousands of lookups per
/// batch): foldhash instead of SipHash, still seeded per process, as the keys (user and item ids)
/// come from clients.
pub(crate) type BatchMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
