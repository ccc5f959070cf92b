//! Where a job's workers get their inputs (shard, feature rows, model, edge attributes).

use std::fmt;
use std::str::FromStr;

/// `stream` (the default): from the coordinator over gRPC, the shard cached by content
/// hash in the worker's work dir, so workers need no storage shared with the coordinator.
/// `shared`: the workers open the coordinator's paths themselves (a fast path for a
/// cluster whose nodes all mount the same storage at the same paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardSource {
    #[default]
    Stream,
    Shared,
}

impl ShardSource {
    pub fn name(self) -> &'static str {
        match self {
            ShardSource::Stream => "stream",
            ShardSource::Shared => "shared",
        }
    }
}

impl fmt::Display for ShardSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown shard source name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shard source \"{0}\" is not one of: stream, shared")]
pub struct UnknownShardSource(pub String);

impl FromStr for ShardSource {
    type Err = UnknownShardSource;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stream" => Ok(ShardSource::Stream),
            "shared" => Ok(ShardSource::Shared),
            other => Err(UnknownShardSource(other.to_string())),
        }
    }
}

/// What restarts when a worker is lost mid-job (`--recovery`).
///
/// `part` (the default): only the lost part, on another worker, from layer 0; every part
/// keeps the halo rows it sends until the job ends (about one layer's halo more memory per
/// worker for a 2-layer model) so that its peers can re-send them. `job`: every part,
/// from layer 0, and nothing is kept. Jobs whose parts cannot restart alone (attention
/// output, global layers, a kept neighbourhood build) restart whole either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recovery {
    #[default]
    Part,
    Job,
}

impl Recovery {
    pub fn name(self) -> &'static str {
        match self {
            Recovery::Part => "part",
            Recovery::Job => "job",
        }
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown recovery name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recovery \"{0}\" is not one of: part, job")]
pub struct UnknownRecovery(pub String);

impl FromStr for Recovery {
    type Err = UnknownRecovery;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "part" => Ok(Recovery::Part),
            "job" => Ok(Recovery::Job),
            other => Err(UnknownRecovery(other.to_string())),
        }
    }
}
