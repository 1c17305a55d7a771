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
