//! distgat's distributed runtime: a coordinator and workers that exchange halo rows over
//! gRPC (`distgat.v1`), computing exactly the single-process engine's bits.

mod catalog;
mod convert;
pub mod coordinator;
pub mod error;
mod metrics;
mod net;
mod registry;
pub mod source;
mod standard;
mod store;
pub mod worker;

pub use coordinator::{start_coordinator, CoordinatorConfig, JobSummary};
pub use coordinator::{MAX_ATTENTION_NODES, MAX_QUEUED_JOBS};
pub use error::{Result, RuntimeError};
pub use net::RunningServer;
pub use source::{ShardSource, UnknownShardSource};
pub use worker::{start_worker, WorkerConfig};
