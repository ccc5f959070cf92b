//! The library behind the `distgat` binary: each subcommand is a plain config struct with
//! `Default` and a `run_*` function, so tests drive them without going through clap.

pub mod config;
pub mod infer;
pub mod neighbours;
pub mod remote;
pub mod run;
pub mod stats;

pub use distgat_partition::{format_report, run_partition, AssignmentDtype, PartitionConfig};
pub use infer::{run_infer, InferConfig, InferReport};
