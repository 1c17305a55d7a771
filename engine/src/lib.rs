//! What the API and the consumer share: the user-state store, the vector index, popularity, the
//! retrieve pipeline and configuration.

pub mod config;
pub mod events;
pub mod fixtures;
pub mod index;
pub mod indexing;
pub mod loadgen;
pub mod model;
pub mod popularity;
pub mod retrieve;
pub mod startup;
pub mod store;

/// A hash map for the per-batch maps of the stream path (hundreds of thousands of lookups per
/// batch): foldhash instead of SipHash, still seeded per process, as the keys (user and item ids)
/// come from clients.
pub(crate) type BatchMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
