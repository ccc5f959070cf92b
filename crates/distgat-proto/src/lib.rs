//! The distgat.v1 gRPC protocol: generated message types, clients and servers.

/// Bumped on any incompatible change; workers send it at registration.
/// 2: workers send per-layer progress in PushOutput, which version 1 coordinators refuse.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest payload of one message; tonic's default receive limit is 4 MiB.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("distgat.v1");
}

/// The encoded descriptors of `distgat.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("distgat_descriptor");

/// Full gRPC service names, as health checks and reflection name them.
pub const COORDINATOR_SERVICE: &str = "distgat.v1.Coordinator";
pub const WORKER_SERVICE: &str = "distgat.v1.Worker";
pub const HALO_SERVICE: &str = "distgat.v1.HaloExchange";
