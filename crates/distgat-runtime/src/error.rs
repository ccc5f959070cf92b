use distgat_attention::ModelError;
use distgat_graph::GraphError;
use distgat_neighbours::NeighbourError;
use distgat_partition::PartitionError;

/// Errors of the distributed runtime, mapped to gRPC codes in one place
/// ([`From<RuntimeError> for tonic::Status`]).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// Bad points or neighbourhood parameters (the message names the file or parameter).
    #[error(transparent)]
    Neighbour(#[from] NeighbourError),
    /// A request or message is malformed (the text names the field).
    #[error("{0}")]
    InvalidArgument(String),
    #[error("protocol version {found} is not supported (this side speaks {expected})")]
    ProtocolVersion { found: u32, expected: u32 },
    #[error("{0}")]
    NotFound(String),
    /// A path outside the coordinator's data root.
    #[error("{0}")]
    PermissionDenied(String),
    /// An upload beyond the size limit, or a full job queue.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The cluster is not in a state to do this (e.g. too few workers registered).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A worker failed or stopped answering during a job.
    #[error("worker {worker} (part {part}) failed: {detail}")]
    WorkerFailed {
        worker: String,
        part: u32,
        detail: String,
    },
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A stream sent nothing for longer than its idle deadline.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A gRPC call failed.
    #[error("{context}: {status}")]
    Transport {
        context: String,
        status: Box<tonic::Status>,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A TLS flag or file, the token file or an address (the text names the flag and file).
    #[error(transparent)]
    Security(#[from] distgat_proto::SecurityError),
    /// The coordinator's catalog database failed (the text names its file).
    #[error("{0}")]
    Store(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl RuntimeError {
    /// Whether this refuses the caller's request or input (a bad file, field or id, or a
    /// cancel), which the caller is told in full, rather than a failure of the cluster or
    /// the machine. Servers log a refused job at INFO and a failed one at WARN, so
    /// `distgat run` (whose coordinator logs at WARN to the user's terminal) prints a bad
    /// input's error once, as its own `error:` line.
    pub fn is_refusal(&self) -> bool {
        match self {
            RuntimeError::Graph(_)
            | RuntimeError::Model(_)
            | RuntimeError::Partition(_)
            | RuntimeError::Neighbour(_)
            | RuntimeError::InvalidArgument(_)
            | RuntimeError::NotFound(_)
            | RuntimeError::Cancelled(_) => true,
            RuntimeError::ProtocolVersion { .. }
            | RuntimeError::Security(_)
            | RuntimeError::PermissionDenied(_)
            | RuntimeError::ResourceExhausted(_)
            | RuntimeError::FailedPrecondition(_)
            | RuntimeError::WorkerFailed { .. }
            | RuntimeError::DeadlineExceeded(_)
            | RuntimeError::Transport { .. }
            | RuntimeError::Io(_)
            | RuntimeError::Store(_) => false,
        }
    }
}

impl From<RuntimeError> for tonic::Status {
    fn from(e: RuntimeError) -> Self {
        use tonic::Code;
        let code = match &e {
            RuntimeError::Graph(_)
            | RuntimeError::Model(_)
            | RuntimeError::Partition(_)
            | RuntimeError::Neighbour(_) => Code::InvalidArgument,
            RuntimeError::InvalidArgument(_) | RuntimeError::Security(_) => Code::InvalidArgument,
            RuntimeError::ProtocolVersion { .. } => Code::FailedPrecondition,
            RuntimeError::NotFound(_) => Code::NotFound,
            RuntimeError::PermissionDenied(_) => Code::PermissionDenied,
            RuntimeError::ResourceExhausted(_) => Code::ResourceExhausted,
            RuntimeError::FailedPrecondition(_) => Code::FailedPrecondition,
            RuntimeError::WorkerFailed { .. } => Code::Aborted,
            RuntimeError::Cancelled(_) => Code::Cancelled,
            RuntimeError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            RuntimeError::Transport { status, .. } => status.code(),
            RuntimeError::Io(_) | RuntimeError::Store(_) => Code::Internal,
        };
        // Counted in `distgat_rpc_errors_total` where it leaves the server (the
        // `metrics::CountErrors` layer), as every other error status is.
        tonic::Status::new(code, e.to_string())
    }
}

/// Wraps a failed gRPC call with what was being done.
pub fn transport(context: impl Into<String>) -> impl FnOnce(tonic::Status) -> RuntimeError {
    let context = context.into();
    move |status| RuntimeError::Transport {
        context,
        status: Box::new(status),
    }
}
