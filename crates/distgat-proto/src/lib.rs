//! The distgat.v1 gRPC protocol: generated message types, clients and servers.

/// Bumped on any incompatible change; workers send it at registration.
/// 2: workers send per-layer progress in PushOutput, which version 1 coordinators refuse.
/// 3: StartJobRequest may name no paths (shard source stream): the worker fetches its
/// inputs with FetchShard and FetchInputs, which a version 2 worker would not do.
/// 4: StartJobRequest.out_header_len and out_rows must be 0 without out_file (version 3
/// coordinators always set them, which a version 4 worker refuses).
/// 5: StartJobRequest.out_owned_order (the part's own output file in owned order), which a
/// version 4 worker would ignore, writing rows at their node ids past the file's end.
pub const PROTOCOL_VERSION: u32 = 5;

pub mod security;
pub use security::{
    error_chain, read_token_file, secure_endpoint, AuthChannel, Bearer, SecurityError, Tls,
    TlsFiles, TlsNames, TokenCheck,
};

/// Largest payload of one message; tonic's default receive limit is 4 MiB.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("distgat.v1");
}

/// HTTP/2 flow-control windows for every distgat connection, client and server side. The
/// 64 KiB default caps a stream at one window per round trip: output rows crawled at
/// 50 MB/s, and fetches at 120 MB/s, over loopback before these were raised.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;

/// A channel endpoint for `host:port` (or a full `http(s)://` URI) with distgat's
/// connection settings: connect timeout, no Nagle delay, the windows above.
pub fn endpoint(address: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let uri = if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Ok(tonic::transport::Endpoint::from_shared(uri)?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW))
}

/// The encoded descriptors of `distgat.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("distgat_descriptor");

/// Full gRPC service names, as health checks and reflection name them.
pub const COORDINATOR_SERVICE: &str = "distgat.v1.Coordinator";
pub const WORKER_SERVICE: &str = "distgat.v1.Worker";
pub const HALO_SERVICE: &str = "distgat.v1.HaloExchange";
