//! Graph and feature input for distgat: file formats, validation, and the incoming-edge
//! CSR the attention kernels run on.
//!
//! Everything that enters from a file is checked here, and every error names the file and
//! says where (line, row, edge) and what was expected.

pub mod alloc;
pub mod csr;
#[cfg(unix)]
mod direct;
pub mod edges;
pub mod error;
pub mod features;
pub mod files;
pub mod npy;
pub mod output;
pub mod reorder;

pub use alloc::LargePageAligned;
pub use csr::{attention_edge_index, IncomingCsr};
pub use direct::open_direct;
pub use edges::{read_graph, EdgeList, GraphFormat};
pub use error::{GraphError, Result};
pub use features::{FeatureBlocks, Features, Normalization};
pub use files::read_regular_file;
#[cfg(unix)]
pub use npy::NpyRowsFile;
pub use npy::{write_npy, NpyBody, NpyDtype};
pub use output::{parent_dir, AtomicFile, SyncBehind};
