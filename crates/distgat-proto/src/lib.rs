//! The distgat.v1 gRPC protocol: generated message types, clients and servers.

/// Bumped on any incompatible change; workers send it at registration.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest payload of one message; tonic's default receive limit is 4 MiB.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("distgat.v1");
}
