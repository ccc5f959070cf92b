//! Partitioning for distgat: who owns which node (METIS k-way or recursive bisection,
//! random and range baselines, or the user's own assignment), the halo plan each worker
//! runs on, partition quality statistics, and the on-disk partition directory.

pub mod dir;
pub mod error;
pub mod method;
pub mod pipeline;
pub mod plan;
pub mod stats;
pub mod stream;
pub mod symmetric;
mod tensors;

pub use dir::{
    check_bytes, features_file_digest, features_file_fingerprint, features_fingerprint,
    graph_fingerprint, npy_graph_fingerprint, write_partition, EdgeIds, FeaturesScan, FileInfo,
    InputInfo, Manifest, NewPartition, PartitionDir, RunInfo, Shard, PARTITION_FORMAT,
};
pub use error::{PartitionError, Result};
pub use method::{assign, read_assignment, trial_seed, Method, Objective};
pub use pipeline::{
    format_report, peak_rss_bytes, run_partition, AssignmentDtype, PartitionConfig,
};
pub use plan::{held_lists, held_lists_with_halos, HaloPlan, HeldLists, PartPlan};
pub use stats::{PartitionStats, Quality};
pub use symmetric::SymmetricGraph;
