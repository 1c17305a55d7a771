//! The sequence model: data, training, offline evaluation, the bundle on disk, the micro-batching
//! embedder shared by the API and the consumer, and the HTTP model server.

pub mod bench;
pub mod blocking;
pub mod bundle;
pub mod data;
pub mod embedder;
pub mod eval;
pub mod fixtures;
pub mod gru_kernel;
pub mod id_map;
pub mod model;
pub mod offline;
pub mod ranking_metrics;
pub mod server;
pub mod split;
pub mod telemetry;
pub mod train;

pub use bundle::{BundleError, ModelBundle};
pub use embedder::{EmbedError, Embedder, EmbedderConfig, QueryEmbedding};
pub use id_map::IdMap;
