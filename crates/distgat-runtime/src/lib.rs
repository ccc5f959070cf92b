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
pub use coordinator::{DEFAULT_MAX_CONCURRENT_FETCHES, MAX_ATTENTION_NODES, MAX_QUEUED_JOBS};
pub use error::{Result, RuntimeError};
pub use net::{RunningServer, DEFAULT_STREAM_IDLE_TIMEOUT};
pub use source::{Recovery, ShardSource, UnknownRecovery, UnknownShardSource};
pub use worker::{
    start_worker, LastLayerOrder, WorkerConfig, DEFAULT_MAILBOX_MAX_BYTES,
    DEFAULT_SHARD_CACHE_MAX_BYTES,
};

/// Entry points for the fuzz targets (`fuzz/`, `crates/distgat-fuzz-targets`): the
/// validation the services run on decoded requests. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use distgat_proto::v1;

    use crate::convert;
    use crate::error::Result;

    /// What a worker checks of a `BuildHeader`'s neighbourhood spec.
    pub fn neighbour_spec(spec: Option<&v1::NeighbourSpec>) -> Result<()> {
        convert::neighbour_spec("spec", spec).map(|_| ())
    }

    /// What a worker checks of a `BuildHeader`'s part box, `dim` coordinates per corner.
    pub fn part_box(b: &v1::PartBox, dim: usize) -> Result<()> {
        convert::bbox(&b.lo, &b.hi, dim, "BuildHeader.boxes").map(|_| ())
    }

    /// What a worker checks of a `FetchPointsRequest` for points of `dim` coordinates.
    pub fn fetch_points(req: &v1::FetchPointsRequest, dim: usize) -> Result<()> {
        convert::reach_request(req, dim).map(|_| ())
    }

    /// What a worker checks of a `PointChunk` (ids below `total`, `dim` coordinates each);
    /// returns the points taken.
    pub fn point_chunk(chunk: v1::PointChunk, dim: usize, total: u64) -> Result<usize> {
        let (mut ids, mut coords) = (Vec::new(), Vec::new());
        convert::take_point_chunk(chunk, dim, total, &mut ids, &mut coords)?;
        Ok(ids.len())
    }

    /// What a worker checks of `HeldPart` chunks (ids below `total`, owners below
    /// `parts`, no more entries than `owned` rows can need), then of the whole: the lists
    /// it would build its plan from.
    pub fn held_part(
        chunks: Vec<v1::HeldPart>,
        owned: usize,
        total: u64,
        parts: usize,
    ) -> Result<distgat_partition::HeldLists> {
        let mut acc = convert::HeldAcc::default();
        for c in chunks {
            if acc.take(c, owned, total, parts)? {
                break;
            }
        }
        acc.finish()
    }
}
