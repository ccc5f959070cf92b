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
