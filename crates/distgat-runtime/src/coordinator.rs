//! The coordinator: registers workers, runs jobs over a partition directory, and assembles
//! the output in original node order as the rows arrive.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distgat_attention::Model;
use distgat_graph::{
    attention_edge_index, read_graph, write_npy, AtomicFile, Features, GraphFormat,
};
use distgat_partition::PartitionDir;
use distgat_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use distgat_proto::v1::output_chunk::Body;
use distgat_proto::v1::worker_client::WorkerClient;
use distgat_proto::v1::{
    CancelJobRequest, ClusterStatusRequest, ClusterStatusResponse, CreatePartitionRequest,
    FetchAttentionRequest, FetchAttentionResponse, FetchOutputRequest, GetJobRequest, GraphInfo,
    HeartbeatRequest, HeartbeatResponse, JobInfo, ListGraphsRequest, ListGraphsResponse,
    ListJobsRequest, ListJobsResponse, ListPartitionsRequest, ListPartitionsResponse, OutputChunk,
    OutputRows, PartitionInfo, Peer, PushOutputResponse, RegisterGraphRequest,
    RegisterWorkerRequest, RegisterWorkerResponse, RunJobRequest, RunJobResponse, StartJobRequest,
    SubmitJobRequest, UploadGraphChunk, WorkerStats,
};
use distgat_proto::{
    CONNECTION_WINDOW, COORDINATOR_SERVICE, MAX_CHUNK_BYTES, PROTOCOL_VERSION, STREAM_WINDOW,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use crate::api;
use crate::catalog::{consecutive_runs, lock, Catalog, JobRecord, Storage};
use crate::convert;
use crate::error::{transport, Result, RuntimeError};
use crate::standard::standard_routes;
use crate::worker::{endpoint, RunningServer, RPC_DEADLINE};

/// How the coordinator starts; `Default` listens on an ephemeral loopback port.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    pub heartbeat_interval: Duration,
    /// A worker silent for this long during a job fails the job.
    pub heartbeat_timeout: Duration,
    /// How long a job waits for enough workers to register.
    pub worker_wait: Duration,
    /// Client-named paths must resolve inside this directory.
    pub data_root: PathBuf,
    /// Uploads, partitions and job outputs (on storage the workers share).
    pub work_dir: PathBuf,
    /// Largest graph upload (graph plus feature bytes).
    pub max_upload_bytes: u64,
    /// Serve `RunJob`, whose paths are not confined to the data root: only for a private
    /// cluster such as `distgat run` starts on loopback.
    pub allow_run_job: bool,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(3),
            worker_wait: Duration::from_secs(30),
            data_root: PathBuf::from("."),
            work_dir: PathBuf::from("distgat-work"),
            max_upload_bytes: 64 << 20,
            allow_run_job: false,
        }
    }
}

pub async fn start_coordinator(config: CoordinatorConfig) -> Result<RunningServer> {
    let storage = Storage::new(&config.data_root, &config.work_dir, config.max_upload_bytes)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (queue, queued) = mpsc::unbounded_channel();
    let state = Arc::new(State {
        config,
        storage,
        catalog: Catalog::default(),
        queue,
        workers: Mutex::new(Vec::new()),
        jobs: Mutex::new(HashMap::new()),
        assignment: Mutex::new(None),
        job_lock: tokio::sync::Mutex::new(()),
        next_id: AtomicU64::new(1),
    });
    tokio::spawn(api::run_queue(Arc::downgrade(&state), queued));
    // The coordinator serves from the start.
    let (_health, routes) =
        standard_routes(COORDINATOR_SERVICE, &[COORDINATOR_SERVICE], true).await?;
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let server = Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .add_routes(routes)
        .add_service(
            CoordinatorServer::new(Service(state)).max_decoding_message_size(4 * MAX_CHUNK_BYTES),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = shutdown_rx.await;
        });
    let join = tokio::spawn(async move {
        server
            .await
            .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))
    });
    Ok(RunningServer {
        addr,
        shutdown,
        join,
    })
}

pub(crate) struct WorkerEntry {
    pub id: String,
    pub address: String,
    pub last_seen: Instant,
}

pub(crate) struct State {
    pub config: CoordinatorConfig,
    pub storage: Storage,
    pub catalog: Catalog,
    /// Submitted jobs, to the executor ([`api::run_queue`]).
    pub queue: mpsc::UnboundedSender<Arc<JobRecord>>,
    pub workers: Mutex<Vec<WorkerEntry>>,
    /// Output sinks of running jobs, by job id.
    jobs: Mutex<HashMap<String, Arc<JobSink>>>,
    /// The running job and its worker per part.
    pub assignment: Mutex<Option<(String, Vec<String>)>>,
    /// One job at a time.
    pub job_lock: tokio::sync::Mutex<()>,
    pub next_id: AtomicU64,
}

/// Where a running job's output goes.
struct JobSink {
    parts: usize,
    num_nodes: usize,
    width: usize,
    out: AtomicFile,
    header_len: u64,
    rows_seen: Mutex<Vec<bool>>,
    attention: Vec<Option<AttentionSink>>,
    done: Mutex<HashMap<u32, WorkerStats>>,
    failure: Mutex<Option<(u32, String)>>,
    /// The client-API job this output belongs to, for progress reports.
    progress: Option<Arc<JobRecord>>,
}

struct AttentionSink {
    file: AtomicFile,
    header_len: u64,
    heads: usize,
    edges: usize,
    add_self_loops: bool,
    /// Input self loops before each input edge (to map edges to PyG positions).
    loops_before: Vec<u32>,
    /// Which coefficient rows arrived (each exactly once).
    seen: Mutex<Vec<bool>>,
    kept: usize,
}

impl AttentionSink {
    /// PyG attention position of a key: an input edge, or -(v + 1) for v's added loop.
    fn position(&self, key: i64) -> Option<usize> {
        if key >= 0 {
            let k = key as usize;
            let before = *self.loops_before.get(k)? as usize;
            Some(if self.add_self_loops { k - before } else { k })
        } else {
            let v = (-(key + 1)) as usize;
            Some(self.kept + v)
        }
        .filter(|&p| p < self.edges)
    }
}

/// `.npy` header (format 1.0) for a C-order array; the body follows at its length. The
/// output is written row by row as workers send it, which needs the header on its own.
fn npy_header(descr: &str, shape: &[u64]) -> Vec<u8> {
    // The same text npyz writes, so the file is byte-identical to `distgat infer`'s.
    let shape: String = shape.iter().map(|d| format!("{d}, ")).collect();
    let shape = format!("({shape})");
    let mut dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}").into_bytes();
    let unpadded = 10 + dict.len() + 1;
    dict.resize(dict.len() + (64 - unpadded % 64) % 64, b' ');
    dict.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(&dict);
    out
}

fn presized(path: &Path, descr: &str, shape: &[u64], item: u64) -> Result<(AtomicFile, u64)> {
    let file = AtomicFile::create(path)?;
    let header = npy_header(descr, shape);
    file.as_file().write_all_at(&header, 0)?;
    file.as_file()
        .set_len(header.len() as u64 + shape.iter().product::<u64>() * item)?;
    Ok((file, header.len() as u64))
}

struct Service(Arc<State>);

#[tonic::async_trait]
impl Coordinator for Service {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        let req = request.into_inner();
        if req.protocol_version != PROTOCOL_VERSION {
            return Err(RuntimeError::ProtocolVersion {
                found: req.protocol_version,
                expected: PROTOCOL_VERSION,
            }
            .into());
        }
        if req.address.is_empty() {
            return Err(RuntimeError::InvalidArgument("address is empty".into()).into());
        }
        let id = format!("worker-{}", self.0.next_id.fetch_add(1, Ordering::Relaxed));
        tracing::info!(worker = %id, address = %req.address, "worker registered");
        let mut workers = lock(&self.0.workers);
        prune_departed(&mut workers, self.0.config.heartbeat_timeout);
        workers.push(WorkerEntry {
            id: id.clone(),
            address: req.address,
            last_seen: Instant::now(),
        });
        drop(workers);
        Ok(Response::new(RegisterWorkerResponse {
            worker_id: id,
            heartbeat_interval_ms: self.0.config.heartbeat_interval.as_millis() as u32,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let id = request.into_inner().worker_id;
        let mut workers = lock(&self.0.workers);
        match workers.iter_mut().find(|w| w.id == id) {
            Some(w) => {
                w.last_seen = Instant::now();
                Ok(Response::new(HeartbeatResponse {}))
            }
            None => {
                Err(RuntimeError::NotFound(format!("worker_id '{id}' is not registered")).into())
            }
        }
    }

    async fn push_output(
        &self,
        request: Request<Streaming<OutputChunk>>,
    ) -> Result<Response<PushOutputResponse>, Status> {
        let mut stream = request.into_inner();
        // The sink is looked up per message and never held between messages: a stream that
        // stays open (a worker still cancelling) must not keep a failed job's files alive.
        let sink_of = |job: &str| lock(&self.0.jobs).get(job).cloned();
        let mut current: Option<(String, u32)> = None;
        loop {
            let chunk = match stream.message().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    if let Some((job, part)) = &current {
                        if let Some(sink) = sink_of(job) {
                            sink.fail(*part, format!("output stream broke: {e}"));
                        }
                    }
                    return Err(e);
                }
            };
            let sink = sink_of(&chunk.job_id).ok_or_else(|| {
                Status::not_found(format!("job_id '{}' is not running", chunk.job_id))
            })?;
            current = Some((chunk.job_id.clone(), chunk.part));
            let part = chunk.part;
            let writer = sink.clone();
            let result = tokio::task::spawn_blocking(move || writer.accept(chunk))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            if let Err(e) = result {
                sink.fail(part, e.to_string());
                return Err(e.into());
            }
        }
        if let Some((job, part)) = current {
            if let Some(sink) = sink_of(&job) {
                if !lock(&sink.done).contains_key(&part) && lock(&sink.failure).is_none() {
                    sink.fail(part, "output stream ended before the part finished".into());
                }
            }
        }
        Ok(Response::new(PushOutputResponse {}))
    }

    async fn register_graph(
        &self,
        request: Request<RegisterGraphRequest>,
    ) -> Result<Response<GraphInfo>, Status> {
        Ok(Response::new(
            api::register_graph(&self.0, request.into_inner()).await?,
        ))
    }

    async fn upload_graph(
        &self,
        request: Request<Streaming<UploadGraphChunk>>,
    ) -> Result<Response<GraphInfo>, Status> {
        Ok(Response::new(
            api::upload_graph(&self.0, request.into_inner()).await?,
        ))
    }

    async fn list_graphs(
        &self,
        _: Request<ListGraphsRequest>,
    ) -> Result<Response<ListGraphsResponse>, Status> {
        let mut graphs: Vec<_> = lock(&self.0.catalog.graphs)
            .values()
            .map(|g| convert::graph_info(g))
            .collect();
        graphs.sort_by(|a, b| a.graph_id.cmp(&b.graph_id));
        Ok(Response::new(ListGraphsResponse { graphs }))
    }

    async fn create_partition(
        &self,
        request: Request<CreatePartitionRequest>,
    ) -> Result<Response<PartitionInfo>, Status> {
        Ok(Response::new(
            api::create_partition(&self.0, request.into_inner()).await?,
        ))
    }

    async fn list_partitions(
        &self,
        _: Request<ListPartitionsRequest>,
    ) -> Result<Response<ListPartitionsResponse>, Status> {
        let mut partitions: Vec<_> = lock(&self.0.catalog.partitions)
            .values()
            .map(|p| convert::partition_info(p))
            .collect();
        partitions.sort_by(|a, b| a.partition_id.cmp(&b.partition_id));
        Ok(Response::new(ListPartitionsResponse { partitions }))
    }

    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<JobInfo>, Status> {
        Ok(Response::new(
            api::submit_job(&self.0, request.into_inner()).await?,
        ))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<JobInfo>, Status> {
        let record = self.0.catalog.job(&request.into_inner().job_id)?;
        Ok(Response::new(api::job_info(&self.0, &record)))
    }

    async fn list_jobs(
        &self,
        _: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let jobs = lock(&self.0.catalog.jobs).clone();
        Ok(Response::new(ListJobsResponse {
            jobs: jobs.iter().map(|j| api::job_info(&self.0, j)).collect(),
        }))
    }

    type WatchJobStream = ReceiverStream<Result<JobInfo, Status>>;

    async fn watch_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        Ok(Response::new(api::watch_job(
            &self.0,
            &request.into_inner().job_id,
        )?))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<JobInfo>, Status> {
        let req = request.into_inner();
        Ok(Response::new(api::cancel_job(
            &self.0,
            &req.job_id,
            &req.reason,
        )?))
    }

    type FetchOutputStream = ReceiverStream<Result<OutputRows, Status>>;

    async fn fetch_output(
        &self,
        request: Request<FetchOutputRequest>,
    ) -> Result<Response<Self::FetchOutputStream>, Status> {
        Ok(Response::new(api::fetch_output(
            &self.0,
            request.into_inner(),
        )?))
    }

    async fn fetch_attention(
        &self,
        request: Request<FetchAttentionRequest>,
    ) -> Result<Response<FetchAttentionResponse>, Status> {
        Ok(Response::new(
            api::fetch_attention(&self.0, request.into_inner()).await?,
        ))
    }

    async fn cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Ok(Response::new(api::cluster_status(&self.0)))
    }

    async fn run_job(
        &self,
        request: Request<RunJobRequest>,
    ) -> Result<Response<RunJobResponse>, Status> {
        if !self.0.config.allow_run_job {
            return Err(RuntimeError::PermissionDenied(
                "RunJob takes paths outside the data root and is off on this coordinator \
                 (start it with --allow-run-job for a private cluster); use SubmitJob"
                    .into(),
            )
            .into());
        }
        let req = request.into_inner();
        let state = self.0.clone();
        // On its own task: if the client goes away and this handler is dropped, the job
        // still finishes (or fails) and cleans up after itself.
        let job = tokio::spawn(async move {
            let _one_at_a_time = state.job_lock.lock().await;
            let job_id = format!("job-{}", state.next_id.fetch_add(1, Ordering::Relaxed));
            let result = run_job(&state, &job_id, req, None).await;
            lock(&state.jobs).remove(&job_id);
            (job_id, result)
        });
        let (job_id, result) = job
            .await
            .map_err(|e| Status::from(RuntimeError::Io(std::io::Error::other(e))))?;
        match result {
            Ok(summary) => Ok(Response::new(RunJobResponse {
                job_id,
                summary_json: serde_json::to_string(&summary).expect("summary serialises"),
            })),
            Err(e) => {
                tracing::warn!(job = %job_id, "job failed: {e}");
                Err(e.into())
            }
        }
    }
}

impl JobSink {
    fn fail(&self, part: u32, detail: String) {
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            *failure = Some((part, detail));
        }
    }

    /// Writes one chunk of a worker's output into place.
    fn accept(&self, chunk: OutputChunk) -> Result<()> {
        let part = chunk.part;
        match chunk.body {
            Some(Body::Rows(rows)) => {
                let w = rows.width as usize;
                if w != self.width || rows.values.len() != rows.nodes.len() * w * 4 {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "output rows from part {part}: width {w} and {} bytes for {} rows (expected width {})",
                        rows.values.len(),
                        rows.nodes.len(),
                        self.width
                    )));
                }
                let row_bytes = (w * 4) as u64;
                let mut seen = lock(&self.rows_seen);
                for &v in &rows.nodes {
                    let v = v as usize;
                    if v >= self.num_nodes || std::mem::replace(&mut seen[v], true) {
                        return Err(RuntimeError::InvalidArgument(format!(
                            "output rows from part {part}: node {v} is out of range or sent twice"
                        )));
                    }
                }
                drop(seen);
                // One write per run of consecutive node ids (owned ids are increasing).
                for run in consecutive_runs(&rows.nodes) {
                    self.out.as_file().write_all_at(
                        &rows.values[run.start * w * 4..run.end * w * 4],
                        self.header_len + rows.nodes[run.start] * row_bytes,
                    )?;
                }
            }
            Some(Body::Attention(a)) => {
                let sink = self
                    .attention
                    .get(a.layer as usize)
                    .and_then(|s| s.as_ref())
                    .ok_or_else(|| {
                        RuntimeError::InvalidArgument(format!(
                            "attention for unexpected layer {}",
                            a.layer
                        ))
                    })?;
                let h = sink.heads;
                if a.heads as usize != h || a.values.len() != a.edges.len() * h * 4 {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "attention from part {part}: shape does not match {h} heads"
                    )));
                }
                let mut seen = lock(&sink.seen);
                for (i, &key) in a.edges.iter().enumerate() {
                    let pos = sink
                        .position(key)
                        .filter(|&p| !std::mem::replace(&mut seen[p], true))
                        .ok_or_else(|| {
                            RuntimeError::InvalidArgument(format!(
                                "attention from part {part}: edge key {key} out of range or sent twice"
                            ))
                        })?;
                    sink.file.as_file().write_all_at(
                        &a.values[i * h * 4..(i + 1) * h * 4],
                        sink.header_len + (pos * h * 4) as u64,
                    )?;
                }
            }
            Some(Body::Stats(stats)) => {
                if part as usize >= self.parts {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "statistics for part {part} of a {}-part job",
                        self.parts
                    )));
                }
                lock(&self.done).insert(part, stats);
            }
            Some(Body::Failure(detail)) => self.fail(part, detail),
            Some(Body::Progress(stats)) => {
                if let Some(record) = &self.progress {
                    record.layer_done(part, &stats);
                }
            }
            None => {
                return Err(RuntimeError::InvalidArgument(format!(
                    "output chunk from part {part} has no body"
                )))
            }
        }
        Ok(())
    }
}

#[derive(Debug, Serialize)]
pub struct JobSummary {
    pub job_id: String,
    pub seconds: f64,
    pub workers: Vec<WorkerSummary>,
}

#[derive(Debug, Serialize)]
pub struct WorkerSummary {
    pub part: u32,
    pub worker: String,
    pub address: String,
    pub layers: Vec<LayerSummary>,
}

#[derive(Debug, Serialize)]
pub struct LayerSummary {
    pub layer: u32,
    pub compute_ms: f64,
    pub wait_ms: f64,
    pub send_ms: f64,
    pub rows_sent: u64,
    pub halo_bytes_sent: u64,
    pub halo_bytes_planned: u64,
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str> {
    if value.is_empty() {
        Err(RuntimeError::InvalidArgument(format!("{field} is empty")))
    } else {
        Ok(value)
    }
}

/// Runs one job over a partition directory; `record` is set for client-API jobs (progress
/// and cancellation). The caller holds the job lock.
pub(crate) async fn run_job(
    state: &State,
    job_id: &str,
    req: RunJobRequest,
    record: Option<&Arc<JobRecord>>,
) -> Result<JobSummary> {
    let result = run_job_inner(state, job_id, req, record).await;
    lock(&state.jobs).remove(job_id);
    *lock(&state.assignment) = None;
    result
}

async fn run_job_inner(
    state: &State,
    job_id: &str,
    req: RunJobRequest,
    record: Option<&Arc<JobRecord>>,
) -> Result<JobSummary> {
    let cancelled = || record.is_some_and(|r| r.cancel.load(Ordering::SeqCst));
    let started = Instant::now();
    let dir = PathBuf::from(required(&req.partition_dir, "partition_dir")?);
    let model_path = PathBuf::from(required(&req.model, "model")?);
    let out_path = PathBuf::from(required(&req.out, "out")?);
    let attention_dir = (!req.attention_dir.is_empty()).then(|| PathBuf::from(&req.attention_dir));

    // Everything that reads files runs off the async threads.
    let prep_req = req.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        prepare(
            &dir,
            &model_path,
            &out_path,
            attention_dir.as_deref(),
            &prep_req,
        )
    })
    .await
    .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))??;
    let Prepared {
        parts,
        mut sink,
        feature_min,
        edge_indexes,
    } = prepared;
    sink.progress = record.cloned();
    let sink = Arc::new(sink);

    // Enough live workers?
    let deadline = Instant::now() + state.config.worker_wait;
    let assigned: Vec<(String, String)> = loop {
        {
            let workers = lock(&state.workers);
            let live: Vec<_> = workers
                .iter()
                .filter(|w| state.is_live(w))
                .map(|w| (w.id.clone(), w.address.clone()))
                .collect();
            if live.len() >= parts {
                break live.into_iter().take(parts).collect();
            }
            if cancelled() {
                return Err(RuntimeError::Cancelled("cancelled by a client".into()));
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "the partition has {parts} parts but {} live workers are registered; start \
                     more with `distgat worker --coordinator <this address>`",
                    live.len()
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    lock(&state.jobs).insert(job_id.to_string(), sink.clone());
    *lock(&state.assignment) = Some((
        job_id.to_string(),
        assigned.iter().map(|(id, _)| id.clone()).collect(),
    ));
    if let Some(r) = record {
        r.set_assigned(&assigned);
    }
    tracing::info!(job = %job_id, parts, "job starting");

    let outcome = drive(
        state,
        job_id,
        &req,
        &assigned,
        &sink,
        feature_min,
        &cancelled,
    )
    .await;
    if let Err(e) = &outcome {
        for (_, address) in &assigned {
            if let Ok(ep) = endpoint(address) {
                let mut client = WorkerClient::new(ep.connect_lazy());
                let mut r = Request::new(CancelJobRequest {
                    job_id: job_id.to_string(),
                    reason: e.to_string(),
                });
                r.set_timeout(Duration::from_secs(2));
                let _ = client.cancel_job(r).await;
            }
        }
        // Drop the temporary output files before answering, so a caller that sees the
        // failure never sees them.
        lock(&state.jobs).remove(job_id);
        drop(released(sink).await);
        return Err(outcome.unwrap_err());
    }
    lock(&state.jobs).remove(job_id);
    let sink = released(sink).await.ok_or_else(|| {
        RuntimeError::Io(std::io::Error::other(
            "an output stream did not close within 10 s of its last message",
        ))
    })?;
    let done = std::mem::take(&mut *lock(&sink.done));
    let JobSink {
        out,
        rows_seen,
        attention,
        ..
    } = sink;
    let missing = lock(&rows_seen).iter().filter(|&&s| !s).count();
    if missing > 0 {
        return Err(RuntimeError::FailedPrecondition(format!(
            "{missing} output rows never arrived"
        )));
    }
    tokio::task::spawn_blocking(move || -> Result<()> {
        // Attention files first, out.npy last: a complete out.npy means a complete job.
        for (k, a) in attention.into_iter().enumerate() {
            if let Some(a) = a {
                let missing = lock(&a.seen).iter().filter(|&&s| !s).count();
                if missing > 0 {
                    return Err(RuntimeError::FailedPrecondition(format!(
                        "layer {k}: {missing} attention coefficient rows never arrived"
                    )));
                }
                if let Some((path, index)) = edge_indexes.get(k) {
                    write_npy(path, &[2, (index.len() / 2) as u64], index)?;
                }
                a.file.commit()?;
            }
        }
        out.commit().map_err(RuntimeError::from)
    })
    .await
    .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))??;
    let workers = assigned
        .iter()
        .enumerate()
        .map(|(p, (id, address))| WorkerSummary {
            part: p as u32,
            worker: id.clone(),
            address: address.clone(),
            layers: done
                .get(&(p as u32))
                .map(|s| {
                    s.layers
                        .iter()
                        .map(|l| LayerSummary {
                            layer: l.layer,
                            compute_ms: l.compute_ms,
                            wait_ms: l.wait_ms,
                            send_ms: l.send_ms,
                            rows_sent: l.rows_sent,
                            halo_bytes_sent: l.bytes_sent,
                            halo_bytes_planned: l.bytes_planned,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    tracing::info!(job = %job_id, seconds = started.elapsed().as_secs_f64(), "job done");
    Ok(JobSummary {
        job_id: job_id.to_string(),
        seconds: started.elapsed().as_secs_f64(),
        workers,
    })
}

/// The sink once no PushOutput handler holds it (one may be finishing a write for a
/// moment); `None` after 10 s.
async fn released(mut sink: Arc<JobSink>) -> Option<JobSink> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Arc::try_unwrap(sink) {
            Ok(s) => return Some(s),
            Err(shared) if Instant::now() < deadline => {
                sink = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => return None,
        }
    }
}

struct Prepared {
    parts: usize,
    sink: JobSink,
    feature_min: f32,
    /// Per layer: where its attention edge index goes, and the index.
    edge_indexes: Vec<(PathBuf, Vec<i64>)>,
}

fn prepare(
    dir: &Path,
    model_path: &Path,
    out_path: &Path,
    attention_dir: Option<&Path>,
    req: &RunJobRequest,
) -> Result<Prepared> {
    let partition = PartitionDir::open(dir)?;
    let manifest = &partition.manifest;
    let n = manifest.graph.rows;
    let model = Model::load(model_path)?;
    let features_path = if req.features.is_empty() {
        manifest.features.as_ref().map(|f| PathBuf::from(&f.path))
    } else {
        Some(PathBuf::from(&req.features))
    };
    if !manifest.features_in_shards && features_path.is_none() {
        return Err(RuntimeError::InvalidArgument(
            "features is empty and the partition's shards carry no feature rows".into(),
        ));
    }
    let edge_features = (!req.edge_features.is_empty()).then(|| PathBuf::from(&req.edge_features));
    let edge_width = match &edge_features {
        Some(p) => {
            let body = distgat_graph::NpyBody::open(p)?;
            if body.shape.len() != 2 || body.shape[0] as usize != manifest.graph.size {
                return Err(RuntimeError::InvalidArgument(format!(
                    "edge_features: {} has shape {:?}, expected [{}, D]: one row per edge of \
                     the graph ({})",
                    p.display(),
                    body.shape,
                    manifest.graph.size,
                    manifest.graph.path
                )));
            }
            Some((p.as_path(), body.shape[1] as usize))
        }
        None => None,
    };
    model
        .check_edge_features("edge_features", edge_width)
        .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
    let feature_min = match (&features_path, req.normalize_rows) {
        (Some(p), true) => Features::read_npy(p)?.min_value(),
        _ => 0.0,
    };
    let width = model.out_width();
    let (out, header_len) = presized(out_path, "<f4", &[n as u64, width as u64], 4)?;
    let mut attention = Vec::new();
    let mut edge_indexes = Vec::new();
    if let Some(adir) = attention_dir {
        std::fs::create_dir_all(adir)?;
        let graph_path = if req.graph.is_empty() {
            PathBuf::from(&manifest.graph.path)
        } else {
            PathBuf::from(&req.graph)
        };
        let format = if req.graph_format.is_empty() {
            None
        } else {
            Some(GraphFormat::from_name(&req.graph_format)?)
        };
        let edges = read_graph(&graph_path, format)?;
        partition.check_graph(&edges, n)?;
        let mut loops_before = Vec::with_capacity(edges.len());
        let mut loops = 0u32;
        for (&s, &d) in edges.src().iter().zip(edges.dst()) {
            loops_before.push(loops);
            loops += u32::from(s == d);
        }
        for (k, layer) in model.layers.iter().enumerate() {
            let index = attention_edge_index(&edges, n, layer.add_self_loops());
            let e = index.len() / 2;
            let (file, header_len) = presized(
                &adir.join(format!("layer{k}_alpha.npy")),
                "<f4",
                &[e as u64, layer.heads() as u64],
                4,
            )?;
            attention.push(Some(AttentionSink {
                file,
                header_len,
                heads: layer.heads(),
                edges: e,
                add_self_loops: layer.add_self_loops(),
                loops_before: loops_before.clone(),
                seen: Mutex::new(vec![false; e]),
                kept: if layer.add_self_loops() {
                    edges.len() - loops as usize
                } else {
                    edges.len()
                },
            }));
            edge_indexes.push((adir.join(format!("layer{k}_att_edge_index.npy")), index));
        }
    }
    Ok(Prepared {
        parts: manifest.parts,
        sink: JobSink {
            parts: manifest.parts,
            num_nodes: n,
            width,
            out,
            header_len,
            rows_seen: Mutex::new(vec![false; n]),
            attention,
            done: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            progress: None,
        },
        feature_min,
        edge_indexes,
    })
}

/// Starts every part and waits until all finish, one fails, or one goes silent.
async fn drive(
    state: &State,
    job_id: &str,
    req: &RunJobRequest,
    assigned: &[(String, String)],
    sink: &JobSink,
    feature_min: f32,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<()> {
    let parts = assigned.len();
    for (p, (id, address)) in assigned.iter().enumerate() {
        let peers = assigned
            .iter()
            .enumerate()
            .filter(|&(q, _)| q != p)
            .map(|(q, (_, a))| Peer {
                part: q as u32,
                address: a.clone(),
            })
            .collect();
        let mut client = WorkerClient::new(endpoint(address)?.connect().await.map_err(|e| {
            RuntimeError::WorkerFailed {
                worker: id.clone(),
                part: p as u32,
                detail: format!("connecting: {e}"),
            }
        })?);
        let mut r = Request::new(StartJobRequest {
            job_id: job_id.to_string(),
            partition_dir: req.partition_dir.clone(),
            part: p as u32,
            peers,
            model: req.model.clone(),
            features: req.features.clone(),
            normalize_rows: req.normalize_rows,
            feature_min,
            want_attention: !req.attention_dir.is_empty(),
            threads: req.threads_per_worker.max(1),
            edge_features: req.edge_features.clone(),
        });
        r.set_timeout(RPC_DEADLINE);
        client
            .start_job(r)
            .await
            .map_err(|status| RuntimeError::WorkerFailed {
                worker: id.clone(),
                part: p as u32,
                detail: transport("starting the job")(status).to_string(),
            })?;
        tracing::info!(job = %job_id, worker = %id, part = p, "part started");
    }
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if cancelled() {
            return Err(RuntimeError::Cancelled("cancelled by a client".into()));
        }
        let reported = lock(&sink.failure).clone();
        if let Some((part, detail)) = reported {
            // A part that reports a failure is often the victim (its peer died while it
            // was sending). Give heartbeats the chance to name the worker that is gone.
            let wait_until =
                Instant::now() + state.config.heartbeat_timeout + Duration::from_secs(1);
            while Instant::now() < wait_until {
                if let Some(dead) = silent_worker(state, assigned) {
                    return Err(dead.into_error(Some(&format!("part {part} reported: {detail}"))));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let worker = assigned
                .get(part as usize)
                .map_or("?".into(), |w| w.0.clone());
            return Err(RuntimeError::WorkerFailed {
                worker,
                part,
                detail,
            });
        }
        let done: HashSet<u32> = lock(&sink.done).keys().copied().collect();
        if done.len() == parts {
            return Ok(());
        }
        if let Some(dead) = silent_worker(state, assigned) {
            return Err(dead.into_error(None));
        }
    }
}

impl State {
    /// A worker counts as live (healthy) while its heartbeats arrive in time.
    pub(crate) fn is_live(&self, w: &WorkerEntry) -> bool {
        w.last_seen.elapsed() < self.config.heartbeat_timeout
    }
}

/// Forgets workers silent for ten heartbeat timeouts (at least a minute): they are gone,
/// and a restarted worker registers under a new id. Shorter silences stay listed as
/// unhealthy, so `distgat workers` shows who went quiet.
pub(crate) fn prune_departed(workers: &mut Vec<WorkerEntry>, heartbeat_timeout: Duration) {
    let gone = (heartbeat_timeout * 10).max(Duration::from_secs(60));
    workers.retain(|w| w.last_seen.elapsed() < gone);
}

/// A worker of the job whose heartbeats stopped.
struct SilentWorker {
    worker: String,
    part: u32,
    silent: Duration,
}

impl SilentWorker {
    fn into_error(self, context: Option<&str>) -> RuntimeError {
        let mut detail = format!("no heartbeat for {:.1} s", self.silent.as_secs_f64());
        if let Some(c) = context {
            detail += &format!(" ({c})");
        }
        RuntimeError::WorkerFailed {
            worker: self.worker,
            part: self.part,
            detail,
        }
    }
}

/// Finds an assigned worker that went silent and drops it from the registry, so the next
/// job does not pick it.
fn silent_worker(state: &State, assigned: &[(String, String)]) -> Option<SilentWorker> {
    let mut workers = lock(&state.workers);
    for (p, (id, _)) in assigned.iter().enumerate() {
        let silent = workers
            .iter()
            .find(|w| &w.id == id)
            .map_or(Duration::MAX, |w| w.last_seen.elapsed());
        if silent > state.config.heartbeat_timeout {
            workers.retain(|w| &w.id != id);
            tracing::warn!(worker = %id, part = p, "worker lost");
            return Some(SilentWorker {
                worker: id.clone(),
                part: p as u32,
                silent,
            });
        }
    }
    None
}
