//! GAT attention for distgat: the `gat-model-v1` spec with PyG `GATConv` weights, the
//! dense transform, the fused sparse attention kernel, and the single-process engine.
//!
//! Semantics follow PyTorch Geometric 2.8 `GATConv` in eval mode exactly (see
//! `reference/README.md` section 5 in the repository).

pub mod buffer;
pub mod engine;
pub mod error;
pub mod exec;
pub mod kernel;
pub mod model;
pub mod transform;

pub use buffer::RowBuffer;
pub use engine::{run_model, LayerTiming, ModelOutput, Topology};
pub use error::{ModelError, Result};
pub use exec::Execution;
pub use kernel::{aggregate_into, AttentionInputs};
pub use model::{Activation, GatLayer, Model};
pub use transform::{transform_into, transform_rows_into, Transformed};
