//! distgat's distributed runtime: a coordinator and workers that exchange halo rows over
//! gRPC (`distgat.v1`), computing exactly the single-process engine's bits.

pub mod coordinator;
pub mod error;
pub mod worker;

pub use coordinator::{start_coordinator, CoordinatorConfig, JobSummary};
pub use error::{Result, RuntimeError};
pub use worker::{start_worker, RunningServer, WorkerConfig};
