//! Torch-free data: interaction data sets and their loaders, the leave-one-out split, the raw id ↔
//! model index map, ranking metrics, and the model bundle's files as far as they can be read
//! without libtorch.

pub mod bundle;
pub mod data;
pub mod id_map;
pub mod ranking_metrics;
pub mod split;

pub use bundle::{BundleError, BundleManifest};
pub use data::{DataError, Dataset, Interaction, ItemMetadata};
pub use id_map::IdMap;
