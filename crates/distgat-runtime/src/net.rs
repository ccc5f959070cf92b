//! What the coordinator and the workers share about serving and calling: the running
//! server handle, the RPC deadline and endpoint parsing.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tonic::transport::Endpoint;

use crate::error::{Result, RuntimeError};

/// A running server: its real address, and how to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served, when a metrics address was configured.
    pub metrics_addr: Option<SocketAddr>,
    pub shutdown: oneshot::Sender<()>,
    pub join: tokio::task::JoinHandle<Result<()>>,
}

/// Deadline of every unary RPC.
pub(crate) const RPC_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) fn endpoint(addr: &str) -> Result<Endpoint> {
    distgat_proto::endpoint(addr)
        .map_err(|e| RuntimeError::InvalidArgument(format!("address '{addr}': {e}")))
}
