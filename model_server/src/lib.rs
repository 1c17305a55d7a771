//! Everything that needs libtorch: the encoders, training, offline evaluation, loading a bundle for
//! serving, the micro-batching embedder and the HTTP model server. The torch-free parts (data sets,
//! split, id map, metrics, the bundle's manifest) are in the `dataset` crate.

pub mod bundle;
pub mod embedder;
pub mod encoder;
pub mod eval;
#[cfg(any(test, feature = "testsuite"))]
pub mod fixtures;
pub mod gate;
pub mod gru_kernel;
pub mod item_features;
pub mod model;
pub mod offline;
pub mod served;
pub mod server;
pub mod serving_gru;
pub mod train;

pub use bundle::{BundleError, ModelBundle};
pub use embedder::{EmbedError, Embedder, EmbedderConfig, QueryEmbedding};
