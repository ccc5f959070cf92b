//! Graph attention for distgat: model files with PyG weights, the attention-kind seam
//! ([`AttentionKind`]) with PyG-exact `GATConv`, `GATv2Conv` and `TransformerConv`, dense
//! transforms, fused sparse kernels, global attention over all nodes ([`GlobalKind`]:
//! torch's `MultiheadAttention`, blockwise, and `NystromAttention`), and the single-process
//! engine.
//!
//! Semantics follow PyTorch Geometric 2.8.1 in eval mode (see `reference/README.md` in
//! the repository and each kind's module documentation).

pub mod buffer;
pub mod collective;
pub mod dense;
pub mod edge_attr;
pub mod engine;
pub mod error;
pub mod exact_sum;
pub mod exec;
pub mod gat;
pub mod gatv2;
pub mod global;
pub mod gps;
pub mod kind;
pub mod model;
pub mod progress;
pub mod transformer;
mod weighted_sum;
mod weights;

pub use buffer::RowBuffer;
pub use collective::{Collective, SingleProcess};
pub use dense::Linear;
pub use edge_attr::entry_edge_attr;
pub use engine::{run_model, transforms_features_in_place, LayerTiming, ModelOutput, Topology};
pub use error::{ModelError, Result};
pub use exec::Execution;
pub use gat::GatConv;
pub use gatv2::GatV2Conv;
pub use global::{relative_frobenius_error, Blocks, GlobalAttention, GlobalKind, Method};
pub use gps::{GpsActivation, GpsConv, GpsNorm};
pub use kind::{
    aggregate_into, aggregate_to_sink, fill_source_aux_in, source_aux, transform_in_place,
    transform_into, AttentionKind, FillValue, HaloPayload, RowInputs, Scratch,
};
pub use model::{Activation, Layer, Model, ModelFiles, WeightsBytes};
pub use progress::{FinalRowsSink, Progress, ProgressSnapshot};
pub use transformer::TransformerConv;
