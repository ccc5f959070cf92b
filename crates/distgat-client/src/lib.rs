//! An async client for distgat's coordinator API.
//!
//! Typed wrappers over `distgat.v1.Coordinator`, retries with exponential backoff for codes
//! that mean "try again" (UNAVAILABLE, DEADLINE_EXCEEDED) on the calls a repetition cannot
//! harm (reads, cancel), connection retries for all, and helpers that write fetched results
//! to `.npy`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), distgat_client::ClientError> {
//! use distgat_client::{Client, Selection, Submit};
//! let mut client = Client::connect("127.0.0.1:50051").await?;
//! let graph = client
//!     .register_graph("data/cora/edges.npy", "data/cora/features.npy", "", "cora")
//!     .await?;
//! let job = client
//!     .submit(Submit {
//!         graph_id: graph.graph_id,
//!         model: "reference/cora-gat/model.json".into(),
//!         normalize_features: true,
//!         ..Default::default()
//!     })
//!     .await?;
//! let done = client.wait(&job.job_id, |_| {}).await?;
//! client.fetch_to_npy(&done.job_id, Selection::All, "out.npy".as_ref()).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use distgat_proto::v1::coordinator_client::CoordinatorClient;
use distgat_proto::v1::fetch_output_request::Selection as WireSelection;
use distgat_proto::v1::upload_graph_chunk::Body as UploadBody;
use distgat_proto::v1::{
    CancelJobRequest, ClusterStatusRequest, ClusterStatusResponse, CreatePartitionRequest,
    DeleteGraphRequest, DeleteJobRequest, DeletePartitionRequest, DeleteResponse,
    FetchAttentionRequest, FetchAttentionResponse, FetchEdgesRequest, FetchOutputRequest,
    GetJobRequest, GraphInfo, JobInfo, JobState, ListGraphsRequest, ListJobsRequest,
    ListPartitionsRequest, NeighbourSpec, NodeList, NodeRange, PartitionInfo, RegisterGraphRequest,
    SubmitJobRequest, UploadGraphChunk, UploadHeader,
};
use distgat_proto::AuthChannel;
use distgat_proto::MAX_CHUNK_BYTES;
use tonic::Code;

pub use distgat_proto::v1;
pub use distgat_proto::{SecurityError, TlsFiles};

/// The environment variable a client reads its bearer token from.
pub const TOKEN_ENV: &str = "DISTGAT_TOKEN";

/// How to reach a coordinator that speaks TLS or needs a bearer token. `Default` is
/// plaintext without a token.
#[derive(Clone, Default)]
pub struct Security {
    /// `--tls-ca` (required for TLS), optional `--tls-cert`/`--tls-key` (a client
    /// certificate), `--tls-domain` (the name in the server's certificate, when it differs
    /// from the address's host).
    pub tls: TlsFiles,
    /// Sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Where a token came from (see [`token_from`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    File,
    Env,
}

/// The client's bearer token: from `file` (`--auth-token-file`, trimmed) when given, else
/// from the `DISTGAT_TOKEN` variable (trimmed; empty means none). The file wins when both
/// are set; the second value says which was used. Errors: an unreadable or empty file, or
/// a token a header cannot carry, naming the file (or the variable).
pub fn token_from(file: Option<&Path>) -> Result<Option<(String, TokenSource)>> {
    if let Some(path) = file {
        return Ok(Some((
            distgat_proto::read_token_file(path)?,
            TokenSource::File,
        )));
    }
    match std::env::var(TOKEN_ENV) {
        Ok(v) if !v.trim().is_empty() => {
            let token = v.trim().to_string();
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ClientError::Address {
                    address: TOKEN_ENV.into(),
                    detail: "the token must be printable ASCII without spaces".into(),
                });
            }
            Ok(Some((token, TokenSource::Env)))
        }
        _ => Ok(None),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("coordinator address '{address}': {detail}")]
    Address { address: String, detail: String },
    #[error("connecting to {address}: {detail}")]
    Connect { address: String, detail: String },
    /// The coordinator answered with an error (its message, then the code).
    #[error("{} ({:?})", .0.message(), .0.code())]
    Status(Box<tonic::Status>),
    #[error("job {job_id} ended {state}: {error}")]
    JobFailed {
        job_id: String,
        state: String,
        error: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A TLS flag or file, or the token file (the text names the flag and the file).
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    Output(#[from] distgat_graph::GraphError),
    /// The server sent something this client cannot make sense of.
    #[error("bad response: {0}")]
    Protocol(String),
}

use distgat_proto::error_chain;

/// A hint for a failed connection, from its causes' text. `tls` names the TLS settings as
/// the user gave them (`None`: plaintext).
fn connect_hint(e: &dyn std::error::Error, tls: Option<&distgat_proto::TlsNames>) -> String {
    let text = error_chain(e).to_ascii_lowercase();
    match tls {
        Some(names) if text.contains("unknownissuer") || text.contains("certificate") => {
            format!(
                "; hint: the server's certificate is not signed by the CA of {}, or its name \
                 does not match the address (a different name goes in --tls-domain or \
                 DISTGAT_TLS_DOMAIN)",
                names.ca
            )
        }
        Some(_) if text.contains("corrupt message") || text.contains("invalid content type") => {
            "; hint: the server may speak plaintext: drop the TLS settings, or start it with TLS"
                .into()
        }
        Some(_) => String::new(),
        None => plaintext_hint(&text).into(),
    }
}

/// [`connect_hint`] for a plaintext client (`text`: the causes, lower case).
fn plaintext_hint(text: &str) -> &'static str {
    if text.contains("connection reset")
        || text.contains("broken pipe")
        || text.contains("frame with invalid size")
        || text.contains("connection closed")
    {
        "; hint: the server may speak TLS only: give --tls-ca (and use https:// or host:port)"
    } else {
        ""
    }
}

impl From<tonic::Status> for ClientError {
    /// A status the transport made (it has a source: the connection failed or broke, the
    /// server never answered) becomes UNAVAILABLE with its causes and a hint, since the
    /// usual cause at a first call is a plaintext client at a TLS-only server.
    fn from(s: tonic::Status) -> Self {
        use std::error::Error;
        if let Some(source) = s.source() {
            if matches!(
                s.code(),
                Code::Unknown | Code::Unavailable | Code::Cancelled
            ) {
                let detail = error_chain(source);
                return ClientError::Status(Box::new(tonic::Status::new(
                    Code::Unavailable,
                    format!(
                        "{}: {detail}; hint: if the coordinator speaks TLS, give --tls-ca \
                         (and use https:// or host:port); if it speaks plaintext, drop the TLS flags",
                        s.message()
                    ),
                )));
            }
        }
        ClientError::Status(Box::new(s))
    }
}

impl ClientError {
    /// The gRPC code, when the coordinator answered with an error.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// The number of an id such as `graph-12` (for listing in creation order).
fn id_number(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Which output rows to fetch (original node ids).
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    /// Half-open `[start, end)`.
    Range(u64, u64),
    Nodes(Vec<u64>),
}

/// A job to submit; `Default` partitions with METIS into one part per live worker.
#[derive(Debug, Clone, Default)]
pub struct Submit {
    pub graph_id: String,
    pub partition_id: String,
    pub parts: u32,
    pub method: String,
    pub model: String,
    pub normalize_features: bool,
    pub attention: bool,
    /// Kernel threads per worker; 0 (the default): all of each worker's cores.
    pub threads_per_worker: u32,
    /// "stream" or "shared" (where the workers get their inputs); empty: the
    /// coordinator's default.
    pub shard_source: String,
}

/// Fetched output rows, in the order asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub nodes: Vec<u64>,
    pub width: usize,
    /// `nodes.len() * width` values, row-major.
    pub values: Vec<f32>,
}

/// A graph's edge index: edge e is `sources[e] -> targets[e]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edges {
    pub sources: Vec<i64>,
    pub targets: Vec<i64>,
}

#[derive(Clone)]
pub struct Client {
    inner: CoordinatorClient<AuthChannel>,
    retry: RetryPolicy,
}

/// Whether a call may be repeated after this status. Only calls that change nothing (or
/// whose repetition is harmless) are retried: UNAVAILABLE can also arrive after the server
/// acted (a reset connection, a proxy's 503), and a repeated submit would queue the job
/// twice.
fn retryable(status: &tonic::Status, idempotent: bool) -> bool {
    idempotent && matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
}

impl Client {
    /// Connects to `host:port` (or a full `http://` URI), retrying while it is unreachable.
    pub async fn connect(address: &str) -> Result<Self> {
        Self::connect_with(address, RetryPolicy::default()).await
    }

    pub async fn connect_with(address: &str, retry: RetryPolicy) -> Result<Self> {
        Self::connect_secure(address, retry, &Security::default()).await
    }

    /// [`Client::connect_with`] over TLS and/or with a bearer token. An `https://` address
    /// or any TLS file selects TLS (`host:port` then means `https://host:port`); TLS needs
    /// `security.tls.ca`. Errors: a bad TLS file or flag combination (naming the flag and
    /// file), and connection failures, with a hint when the cause is likely a plaintext
    /// client at a TLS server, a certificate signed by another CA, or the reverse.
    pub async fn connect_secure(
        address: &str,
        retry: RetryPolicy,
        security: &Security,
    ) -> Result<Self> {
        let tls = security.tls.load_client()?;
        let bearer = distgat_proto::Bearer::new(security.token.as_deref())?;
        let endpoint = distgat_proto::secure_endpoint(address, tls.as_ref())?;
        let mut backoff = retry.first_backoff;
        let mut attempt = 1;
        let channel = loop {
            match endpoint.connect().await {
                Ok(c) => break c,
                // A certificate the CA does not vouch for will not change by waiting.
                Err(e) if attempt < retry.attempts && !error_chain(&e).contains("certificate") => {
                    tracing::debug!("connecting to {address} (attempt {attempt}): {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(retry.max_backoff);
                    attempt += 1;
                }
                Err(e) => {
                    return Err(ClientError::Connect {
                        address: address.into(),
                        detail: format!(
                            "{} (after {attempt} attempts){}",
                            error_chain(&e),
                            connect_hint(&e, tls.as_ref().map(|_| &security.tls.names))
                        ),
                    })
                }
            }
        };
        Ok(Client {
            inner: CoordinatorClient::with_interceptor(channel, bearer)
                .max_decoding_message_size(4 * MAX_CHUNK_BYTES),
            retry,
        })
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts run out.
    async fn retrying<T, F, Fut>(&self, idempotent: bool, mut call: F) -> Result<T>
    where
        F: FnMut(CoordinatorClient<AuthChannel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = self.retry.first_backoff;
        let mut attempt = 1;
        loop {
            match call(self.inner.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if attempt < self.retry.attempts && retryable(&s, idempotent) => {
                    tracing::debug!("retrying after {}: {}", s.code(), s.message());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    /// Registers a graph from files under the coordinator's data root.
    pub async fn register_graph(
        &mut self,
        graph: &str,
        features: &str,
        graph_format: &str,
        name: &str,
    ) -> Result<GraphInfo> {
        self.register_graph_with_edge_features(graph, features, None, graph_format, name)
            .await
    }

    /// [`Client::register_graph`] with edge attributes (`.npy` `[edges, D]`, row e for
    /// edge e of the graph file, under the data root), for models with `edge_dim` layers.
    pub async fn register_graph_with_edge_features(
        &mut self,
        graph: &str,
        features: &str,
        edge_features: Option<&str>,
        graph_format: &str,
        name: &str,
    ) -> Result<GraphInfo> {
        let req = RegisterGraphRequest {
            name: name.into(),
            graph: graph.into(),
            graph_format: graph_format.into(),
            features: features.into(),
            edge_features: edge_features.unwrap_or_default().into(),
            ..Default::default()
        };
        self.retrying(false, |mut c| {
            let req = req.clone();
            async move { c.register_graph(req).await }
        })
        .await
    }

    /// Registers a graph built from points: the coordinator builds the kNN or radius
    /// neighbourhood (`spec`: knn K >= 1, or radius R > 0 with an optional cap; euclidean)
    /// of `points` (`.npy` `[N, D]` under the data root; `None`: the features themselves)
    /// distributed over `parts` live workers (0: all), with edges j -> i sorted by
    /// (target, source) exactly as `distgat neighbours` writes them. Jobs on the graph run
    /// on the build's spatial parts by default. The call returns when the build is done
    /// (it waits for a running job first). Errors: INVALID_ARGUMENT for a bad spec or
    /// points whose rows differ from the features'; FAILED_PRECONDITION without workers.
    pub async fn register_neighbourhood(
        &mut self,
        features: &str,
        points: Option<&str>,
        spec: NeighbourSpec,
        parts: u32,
        name: &str,
    ) -> Result<GraphInfo> {
        let req = RegisterGraphRequest {
            name: name.into(),
            features: features.into(),
            points: points.unwrap_or_default().into(),
            neighbourhood: Some(spec),
            parts,
            ..Default::default()
        };
        // Not retried: a repeated call would build and register the graph twice.
        Ok(self.inner.register_graph(req).await?.into_inner())
    }

    /// A registered graph's edge index as int64 `[2, E]` (sources, then targets), in the
    /// graph file's order (sorted by (target, source) for a built neighbourhood).
    pub async fn fetch_edges(&mut self, graph_id: &str) -> Result<Edges> {
        let req = FetchEdgesRequest {
            graph_id: graph_id.into(),
        };
        let mut stream = self
            .retrying(true, |mut c| {
                let req = req.clone();
                async move { c.fetch_edges(req).await }
            })
            .await?;
        let mut edges = Edges::default();
        let mut total = None;
        while let Some(chunk) = stream.message().await? {
            let len = edges.sources.len() as u64;
            if chunk.sources.len() != chunk.targets.len()
                || chunk.offset != len
                || *total.get_or_insert(chunk.total_edges) != chunk.total_edges
            {
                return Err(ClientError::Protocol(format!(
                    "edge chunk at offset {} ({} sources, {} targets) after {len} edges",
                    chunk.offset,
                    chunk.sources.len(),
                    chunk.targets.len()
                )));
            }
            edges.sources.extend_from_slice(&chunk.sources);
            edges.targets.extend_from_slice(&chunk.targets);
        }
        if edges.sources.len() as u64 != total.unwrap_or(0) {
            return Err(ClientError::Protocol(format!(
                "the edge stream ended after {} of {} edges",
                edges.sources.len(),
                total.unwrap_or(0)
            )));
        }
        Ok(edges)
    }

    /// [`Client::fetch_edges`], written to `path` as int64 `.npy` `[2, E]` (atomically).
    pub async fn fetch_edges_to_npy(&mut self, graph_id: &str, path: &Path) -> Result<Edges> {
        let edges = self.fetch_edges(graph_id).await?;
        let mut ids = Vec::with_capacity(2 * edges.sources.len());
        ids.extend_from_slice(&edges.sources);
        ids.extend_from_slice(&edges.targets);
        distgat_graph::write_npy(path, &[2, edges.sources.len() as u64], &ids)?;
        Ok(edges)
    }

    /// Uploads a graph and its features from local files (small graphs; the coordinator
    /// enforces a size limit).
    pub async fn upload_graph(
        &mut self,
        graph: &Path,
        features: &Path,
        graph_format: &str,
        name: &str,
    ) -> Result<GraphInfo> {
        self.upload_graph_with_edge_features(graph, features, None, graph_format, name)
            .await
    }

    /// [`Client::upload_graph`] with an edge attributes file (`.npy` `[edges, D]`).
    pub async fn upload_graph_with_edge_features(
        &mut self,
        graph: &Path,
        features: &Path,
        edge_features: Option<&Path>,
        graph_format: &str,
        name: &str,
    ) -> Result<GraphInfo> {
        let edge_bytes = match edge_features {
            Some(p) => std::fs::read(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?,
            None => Vec::new(),
        };
        let graph_bytes = std::fs::read(graph)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", graph.display())))?;
        let features_bytes = std::fs::read(features)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", features.display())))?;
        let mut chunks = vec![UploadGraphChunk {
            body: Some(UploadBody::Header(UploadHeader {
                name: name.into(),
                graph_format: graph_format.into(),
                graph_bytes: graph_bytes.len() as u64,
                features_bytes: features_bytes.len() as u64,
                edge_features_bytes: edge_bytes.len() as u64,
            })),
        }];
        for c in graph_bytes.chunks(MAX_CHUNK_BYTES) {
            chunks.push(UploadGraphChunk {
                body: Some(UploadBody::GraphData(c.to_vec())),
            });
        }
        for c in features_bytes.chunks(MAX_CHUNK_BYTES) {
            chunks.push(UploadGraphChunk {
                body: Some(UploadBody::FeaturesData(c.to_vec())),
            });
        }
        for c in edge_bytes.chunks(MAX_CHUNK_BYTES) {
            chunks.push(UploadGraphChunk {
                body: Some(UploadBody::EdgeFeaturesData(c.to_vec())),
            });
        }
        // A retried upload could register the graph twice, so this call is not retried.
        Ok(self
            .inner
            .upload_graph(tokio_stream::iter(chunks))
            .await?
            .into_inner())
    }

    pub async fn create_partition(
        &mut self,
        graph_id: &str,
        parts: u32,
        method: &str,
        seed: u64,
    ) -> Result<PartitionInfo> {
        let req = CreatePartitionRequest {
            graph_id: graph_id.into(),
            parts,
            method: method.into(),
            seed,
        };
        self.retrying(false, |mut c| {
            let req = req.clone();
            async move { c.create_partition(req).await }
        })
        .await
    }

    pub async fn submit(&mut self, job: Submit) -> Result<JobInfo> {
        let req = SubmitJobRequest {
            graph_id: job.graph_id,
            partition_id: job.partition_id,
            parts: job.parts,
            method: job.method,
            model: job.model,
            normalize_features: job.normalize_features,
            attention: job.attention,
            threads_per_worker: job.threads_per_worker,
            shard_source: job.shard_source,
        };
        self.retrying(false, |mut c| {
            let req = req.clone();
            async move { c.submit_job(req).await }
        })
        .await
    }

    pub async fn job(&mut self, job_id: &str) -> Result<JobInfo> {
        let req = GetJobRequest {
            job_id: job_id.into(),
        };
        self.retrying(true, |mut c| {
            let req = req.clone();
            async move { c.get_job(req).await }
        })
        .await
    }

    pub async fn jobs(&mut self) -> Result<Vec<JobInfo>> {
        Ok(self
            .retrying(true, |mut c| async move {
                c.list_jobs(ListJobsRequest {}).await
            })
            .await?
            .jobs)
    }

    /// The registered graphs, in id order.
    pub async fn graphs(&mut self) -> Result<Vec<GraphInfo>> {
        let mut graphs = self
            .retrying(true, |mut c| async move {
                c.list_graphs(ListGraphsRequest {}).await
            })
            .await?
            .graphs;
        graphs.sort_by_key(|g| id_number(&g.graph_id));
        Ok(graphs)
    }

    /// The partitions (made by CreatePartition or by jobs), in id order.
    pub async fn partitions(&mut self) -> Result<Vec<PartitionInfo>> {
        let mut partitions = self
            .retrying(true, |mut c| async move {
                c.list_partitions(ListPartitionsRequest {}).await
            })
            .await?
            .partitions;
        partitions.sort_by_key(|p| id_number(&p.partition_id));
        Ok(partitions)
    }

    pub async fn cancel(&mut self, job_id: &str, reason: &str) -> Result<JobInfo> {
        let req = CancelJobRequest {
            job_id: job_id.into(),
            reason: reason.into(),
        };
        self.retrying(true, |mut c| {
            let req = req.clone();
            async move { c.cancel_job(req).await }
        })
        .await
    }

    /// Deletes an ended job and its output files (FAILED_PRECONDITION while it is queued
    /// or running). Not retried: a repeated delete would say NOT_FOUND.
    pub async fn delete_job(&mut self, job_id: &str) -> Result<DeleteResponse> {
        let req = DeleteJobRequest {
            job_id: job_id.into(),
        };
        self.retrying(false, |mut c| {
            let req = req.clone();
            async move { c.delete_job(req).await }
        })
        .await
    }

    /// Deletes a partition and its directory (FAILED_PRECONDITION while a queued or
    /// running job uses it).
    pub async fn delete_partition(&mut self, partition_id: &str) -> Result<DeleteResponse> {
        let req = DeletePartitionRequest {
            partition_id: partition_id.into(),
        };
        self.retrying(false, |mut c| {
            let req = req.clone();
            async move { c.delete_partition(req).await }
        })
        .await
    }

    /// Forgets a graph, deleting an uploaded graph's files (FAILED_PRECONDITION while a
    /// partition or a job refers to it).
    pub async fn delete_graph(&mut self, graph_id: &str) -> Result<DeleteResponse> {
        let req = DeleteGraphRequest {
            graph_id: graph_id.into(),
        };
        self.retrying(false, |mut c| {
            let req = req.clone();
            async move { c.delete_graph(req).await }
        })
        .await
    }

    pub async fn cluster_status(&mut self) -> Result<ClusterStatusResponse> {
        self.retrying(true, |mut c| async move {
            c.cluster_status(ClusterStatusRequest {}).await
        })
        .await
    }

    /// Waits until at least `count` healthy workers are registered.
    pub async fn wait_for_workers(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> Result<ClusterStatusResponse> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.cluster_status().await?;
            let healthy = status.workers.iter().filter(|w| w.healthy).count();
            if healthy >= count {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(tonic::Status::deadline_exceeded(format!(
                    "{healthy} of {count} workers healthy after {:.0} s",
                    timeout.as_secs_f64()
                ))
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Follows a job, calling `on_event` with every snapshot, until it ends; returns the
    /// last snapshot, or [`ClientError::JobFailed`]. A broken stream is resumed.
    pub async fn wait(
        &mut self,
        job_id: &str,
        mut on_event: impl FnMut(&JobInfo),
    ) -> Result<JobInfo> {
        let mut backoff = self.retry.first_backoff;
        let mut failures = 0;
        loop {
            let req = GetJobRequest {
                job_id: job_id.into(),
            };
            let stream = self.inner.watch_job(req).await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(s) if retryable(&s, true) && failures + 1 < self.retry.attempts => {
                    failures += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                    continue;
                }
                Err(s) => return Err(s.into()),
            };
            loop {
                match stream.message().await {
                    Ok(Some(info)) => {
                        on_event(&info);
                        if is_terminal(&info) {
                            return finished(info);
                        }
                    }
                    Ok(None) => break,
                    Err(s) if retryable(&s, true) && failures + 1 < self.retry.attempts => {
                        failures += 1;
                        break;
                    }
                    Err(s) => return Err(s.into()),
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }

    /// Output rows of a finished job.
    pub async fn fetch(&mut self, job_id: &str, selection: Selection) -> Result<Rows> {
        let req = FetchOutputRequest {
            job_id: job_id.into(),
            selection: match selection {
                Selection::All => None,
                Selection::Range(start, end) => {
                    Some(WireSelection::Range(NodeRange { start, end }))
                }
                Selection::Nodes(ids) => Some(WireSelection::Nodes(NodeList { ids })),
            },
        };
        let mut stream = self
            .retrying(true, |mut c| {
                let req = req.clone();
                async move { c.fetch_output(req).await }
            })
            .await?;
        let mut rows = Rows {
            nodes: Vec::new(),
            width: 0,
            values: Vec::new(),
        };
        while let Some(chunk) = stream.message().await? {
            let w = chunk.width as usize;
            if chunk.values.len() != chunk.nodes.len() * w * 4
                || (rows.width != 0 && rows.width != w)
            {
                return Err(ClientError::Protocol(format!(
                    "output chunk of {} bytes for {} rows of width {w}",
                    chunk.values.len(),
                    chunk.nodes.len()
                )));
            }
            rows.width = w;
            rows.nodes.extend_from_slice(&chunk.nodes);
            rows.values.extend(
                chunk
                    .values
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Ok(rows)
    }

    /// Fetches rows and writes them to `path` as a `[rows, width]` float32 `.npy`
    /// (atomically: a failed fetch leaves no file).
    pub async fn fetch_to_npy(
        &mut self,
        job_id: &str,
        selection: Selection,
        path: &Path,
    ) -> Result<Rows> {
        let rows = self.fetch(job_id, selection).await?;
        distgat_graph::write_npy(
            path,
            &[rows.nodes.len() as u64, rows.width as u64],
            &rows.values,
        )?;
        Ok(rows)
    }

    pub async fn attention(
        &mut self,
        job_id: &str,
        layer: u32,
        nodes: Vec<u64>,
        top_k: u32,
    ) -> Result<FetchAttentionResponse> {
        let req = FetchAttentionRequest {
            job_id: job_id.into(),
            layer,
            nodes,
            top_k,
        };
        self.retrying(true, |mut c| {
            let req = req.clone();
            async move { c.fetch_attention(req).await }
        })
        .await
    }
}

/// The state's display name (`succeeded`, `running`, ...).
pub fn state_name(info: &JobInfo) -> &'static str {
    match JobState::try_from(info.state).unwrap_or(JobState::Unspecified) {
        JobState::Unspecified => "unknown",
        JobState::Queued => "queued",
        JobState::Partitioning => "partitioning",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

pub fn is_terminal(info: &JobInfo) -> bool {
    matches!(
        JobState::try_from(info.state),
        Ok(JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    )
}

fn finished(info: JobInfo) -> Result<JobInfo> {
    if info.state == JobState::Succeeded as i32 {
        Ok(info)
    } else {
        Err(ClientError::JobFailed {
            job_id: info.job_id.clone(),
            state: state_name(&info).into(),
            error: info.error.clone(),
        })
    }
}
