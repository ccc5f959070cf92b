//! distgat's distributed runtime: a coordinator and workers that exchange halo rows over
//! gRPC (`distgat.v1`), computing exactly the single-process engine's bits.

mod api;
mod catalog;
mod convert;
pub mod coordinator;
pub mod error;
mod standard;
pub mod worker;

pub use api::{MAX_ATTENTION_NODES, MAX_QUEUED_JOBS};
pub use coordinator::{start_coordinator, CoordinatorConfig, JobSummary};
pub use error::{Result, RuntimeError};
pub use worker::{start_worker, RunningServer, WorkerConfig};
