//! What the coordinator and the workers share about serving and calling: the running
//! server handle, the RPC deadline, TLS and endpoint parsing.

use std::net::SocketAddr;
use std::time::Duration;

use distgat_proto::{Bearer, Tls};
use tokio::sync::oneshot;
use tonic::transport::{Endpoint, Server};
use tower_layer::{Identity, Stack};

use crate::error::{Result, RuntimeError};
use crate::metrics::CountErrors;

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

/// The default idle deadline of an incoming stream (`stream_idle_timeout` of the
/// coordinator's and the workers' configs): a client stream that sends nothing for this
/// long is ended with DEADLINE_EXCEEDED, so a stalled or vanished sender cannot hold the
/// server's files, buffers and task forever.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a failed call's status can mean the peer (or the way to it) is gone, rather
/// than a live peer refusing the call: UNAVAILABLE, or what tonic and hyper report for a
/// connection cut mid-call (UNKNOWN "transport error", CANCELLED, DEADLINE_EXCEEDED,
/// INTERNAL). A live peer's deliberate refusals (INVALID_ARGUMENT, NOT_FOUND,
/// FAILED_PRECONDITION, UNAUTHENTICATED, ...) are not.
pub(crate) fn transport_failure(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Internal
    )
}

/// The next message of an incoming stream, or DEADLINE_EXCEEDED (naming `what`) when none
/// comes within `idle`. A broken stream is a transport error with `what` as its context.
pub(crate) async fn next_message<T>(
    stream: &mut tonic::Streaming<T>,
    idle: Duration,
    what: &str,
) -> Result<Option<T>> {
    match tokio::time::timeout(idle, stream.message()).await {
        Ok(message) => message.map_err(crate::error::transport(what)),
        Err(_) => Err(RuntimeError::DeadlineExceeded(format!(
            "{what}: the stream sent nothing for {idle:?} (the server's idle deadline)"
        ))),
    }
}

/// How this process calls the others: over TLS (this side's certificate as client
/// identity, the cluster CA as the only trust root) when the server was started with TLS,
/// and with the bearer token on coordinator calls when it has one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dialer {
    pub tls: Option<Tls>,
    pub bearer: Bearer,
}

impl Dialer {
    pub(crate) fn endpoint(&self, addr: &str) -> Result<Endpoint> {
        Ok(distgat_proto::secure_endpoint(addr, self.tls.as_ref())?)
    }

    /// A server builder that speaks TLS only when this side has TLS, and counts every
    /// error status its services answer in `distgat_rpc_errors_total`
    /// ([`crate::metrics::CountErrors`]).
    pub(crate) fn server(&self) -> Result<Server<Stack<CountErrors, Identity>>> {
        let builder = match &self.tls {
            Some(tls) => Server::builder()
                .tls_config(tls.server_config())
                .map_err(|e| RuntimeError::Io(std::io::Error::other(format!("TLS: {e}"))))?,
            None => Server::builder(),
        };
        Ok(builder.layer(CountErrors))
    }
}
