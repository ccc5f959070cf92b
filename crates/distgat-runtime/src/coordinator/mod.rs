//! The coordinator: registers workers, runs jobs over a partition directory, and assembles
//! the output in original node order as the rows arrive.
//!
//! Modules: [`state`] (shared state), [`sink`] (job output files), [`placement`] (the
//! parts' own output files, placed in node order), [`job`] (running a job), [`api`] (the
//! client API). Dependencies point one way: `mod -> api -> job -> sink -> placement`,
//! `job -> state`, never back.

mod api;
mod attention_index;
mod build;
mod delete;
mod inputs;
mod job;
mod placement;
mod sink;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use distgat_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use distgat_proto::v1::{
    BuildNeighboursRequest, BuildNeighboursResponse, CancelJobRequest, ClusterStatusRequest,
    ClusterStatusResponse, CreatePartitionRequest, DeleteGraphRequest, DeleteJobRequest,
    DeletePartitionRequest, DeleteResponse, EdgeChunk, FetchAttentionRequest,
    FetchAttentionResponse, FetchEdgesRequest, FetchInputsRequest, FetchOutputRequest,
    FetchShardRequest, GetJobRequest, GraphInfo, HeartbeatRequest, HeartbeatResponse, InputChunk,
    JobInfo, ListGraphsRequest, ListGraphsResponse, ListJobsRequest, ListJobsResponse,
    ListPartitionsRequest, ListPartitionsResponse, OutputChunk, OutputRows, PartitionInfo,
    PushOutputResponse, RegisterGraphRequest, RegisterWorkerRequest, RegisterWorkerResponse,
    RunJobRequest, RunJobResponse, ShardChunk, SubmitJobRequest, UploadGraphChunk,
};
use distgat_proto::{
    CONNECTION_WINDOW, COORDINATOR_SERVICE, MAX_CHUNK_BYTES, PROTOCOL_VERSION, STREAM_WINDOW,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::catalog::{lock, Catalog, Storage};
use crate::convert;
use crate::error::{Result, RuntimeError};
use crate::net::RunningServer;
use crate::registry::{prune_departed, WorkerEntry};
use crate::standard::standard_routes;
use crate::store::Store;
pub use api::{MAX_ATTENTION_NODES, MAX_QUEUED_JOBS};
pub use build::{BuildSummary, PartBuildSummary};
use job::run_job;
pub use job::JobSummary;
use state::State;
pub use state::{CoordinatorConfig, DEFAULT_MAX_CONCURRENT_FETCHES};

/// Starts the coordinator: binds `config.listen`, serves the Coordinator service (behind
/// the bearer-token check when `auth_token_file` is set), health and reflection (always
/// open), with TLS when `config.tls` is set. Errors: an unreadable or invalid TLS or
/// token file (naming the flag and file), the work dir, the catalog, the bind.
pub async fn start_coordinator(config: CoordinatorConfig) -> Result<RunningServer> {
    let tls = config.tls.load_server()?;
    let token = config
        .auth_token_file
        .as_deref()
        .map(distgat_proto::read_token_file)
        .transpose()?;
    if token.is_some() && tls.is_none() {
        tracing::warn!(
            "a bearer token without TLS travels in plaintext: use --tls-cert, --tls-key and \
             --tls-ca unless every client is on this machine"
        );
    }
    let dialer = crate::net::Dialer {
        tls,
        bearer: Default::default(),
    };
    let token_check = distgat_proto::TokenCheck::new(token.as_deref());
    let storage = Storage::new(&config.data_root, &config.work_dir, config.max_upload_bytes)?;
    // What an earlier coordinator on this work dir registered, partitioned and ran.
    let (catalog, next_id) = Catalog::reload(Store::open(&storage.work_dir)?)?;
    remove_orphans(&storage.work_dir, &catalog);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (queue, queued) = mpsc::unbounded_channel();
    let fetches = Arc::new(tokio::sync::Semaphore::new(
        config.max_concurrent_fetches.max(1),
    ));
    let state = Arc::new(State {
        config,
        storage,
        catalog,
        queue,
        workers: Mutex::new(Vec::new()),
        jobs: Mutex::new(HashMap::new()),
        inputs: Mutex::new(HashMap::new()),
        assignment: Mutex::new(None),
        job_lock: tokio::sync::Mutex::new(()),
        fetches,
        kept_builds: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(next_id),
        dialer,
    });
    tokio::spawn(api::run_queue(Arc::downgrade(&state), queued));
    let (metrics_addr, metrics_guard) = match state.config.metrics_listen {
        Some(at) => {
            // Weak: the endpoint must not keep a stopped coordinator's state (its catalog
            // database) alive.
            let weak = Arc::downgrade(&state);
            let (guard, stop) = oneshot::channel::<()>();
            let refresh = Arc::new(move || {
                if let Some(state) = weak.upgrade() {
                    refresh_metrics(&state);
                }
            });
            (
                Some(
                    crate::metrics::serve(crate::metrics::Role::Coordinator, at, refresh, stop)
                        .await?,
                ),
                Some(guard),
            )
        }
        None => (None, None),
    };
    // The coordinator serves from the start.
    let (_health, routes) =
        standard_routes(COORDINATOR_SERVICE, &[COORDINATOR_SERVICE], true).await?;
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let server = state
        .dialer
        .server()?
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .add_routes(routes)
        // The token guards every Coordinator RPC, here in one place; health and reflection
        // (the routes above) stay open for probes.
        .add_service(InterceptedService::new(
            CoordinatorServer::new(Service(state)).max_decoding_message_size(4 * MAX_CHUNK_BYTES),
            token_check,
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = shutdown_rx.await;
        });
    let join = tokio::spawn(async move {
        // The metrics endpoint stops with the server (when its guard drops).
        let _metrics = metrics_guard;
        server
            .await
            .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))
    });
    Ok(RunningServer {
        addr,
        metrics_addr,
        shutdown,
        join,
    })
}

/// Removes what a coordinator stopped mid-work left in `work_dir` and its catalog does not
/// know: a partition directory being written, a job's output dir, an upload in progress.
fn remove_orphans(work_dir: &std::path::Path, catalog: &Catalog) {
    let partitions: std::collections::HashSet<String> =
        lock(&catalog.partitions).keys().cloned().collect();
    let jobs: std::collections::HashSet<String> =
        lock(&catalog.jobs).iter().map(|j| j.id.clone()).collect();
    let graphs: std::collections::HashSet<String> = lock(&catalog.graphs).keys().cloned().collect();
    let ours = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    for (sub, prefix, known) in [
        ("partitions", "partition-", &partitions),
        ("jobs", "job-", &jobs),
        ("graphs", "graph-", &graphs),
    ] {
        let Ok(entries) = std::fs::read_dir(work_dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only names this coordinator makes (`job-7`), never anything else found there.
            if ours(&name, prefix) && !known.contains(&name) {
                let path = entry.path();
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => tracing::warn!(
                        "removed {}: left by a coordinator that stopped before recording it",
                        path.display()
                    ),
                    Err(e) => tracing::warn!("could not remove {}: {e}", path.display()),
                }
            }
        }
    }
    // Uploads in progress (`.upload-*` temporary directories) never survive their coordinator.
    if let Ok(entries) = std::fs::read_dir(work_dir.join("uploads")) {
        for entry in entries.flatten() {
            // Half-made uploads and neighbourhood builds (RegisterGraph with a neighbourhood).
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".upload-") || name.starts_with(".build-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Sets the coordinator's gauges from its state (before each scrape).
fn refresh_metrics(state: &State) {
    use crate::catalog::JobState;
    use crate::metrics::{HealthLabel, StateLabel, METRICS};
    const STATES: [(JobState, &str); 6] = [
        (JobState::Queued, "queued"),
        (JobState::Partitioning, "partitioning"),
        (JobState::Running, "running"),
        (JobState::Succeeded, "succeeded"),
        (JobState::Failed, "failed"),
        (JobState::Cancelled, "cancelled"),
    ];
    let mut counts = [0i64; STATES.len()];
    for job in lock(&state.catalog.jobs).iter() {
        let s = job.state();
        if let Some(i) = STATES.iter().position(|(k, _)| *k == s) {
            counts[i] += 1;
        }
    }
    for ((_, name), count) in STATES.iter().zip(counts) {
        METRICS
            .jobs
            .get_or_create(&StateLabel { state: name })
            .set(count);
    }
    METRICS.queue_length.set(state.catalog.queued() as i64);
    let (mut healthy, mut unhealthy) = (0, 0);
    for w in lock(&state.workers).iter() {
        if state.is_live(w) {
            healthy += 1;
        } else {
            unhealthy += 1;
        }
    }
    METRICS
        .workers
        .get_or_create(&HealthLabel { health: "healthy" })
        .set(healthy);
    METRICS
        .workers
        .get_or_create(&HealthLabel {
            health: "unhealthy",
        })
        .set(unhealthy);
}

struct Service(Arc<State>);

impl Service {
    /// The worker-facing RPCs (RegisterWorker, Heartbeat, PushOutput, FetchShard,
    /// FetchInputs) need a client certificate signed by the cluster CA when the
    /// coordinator speaks TLS (UNAUTHENTICATED naming `rpc` and the certificate
    /// otherwise), on top of the token; client-API callers need none.
    // Called from handlers, which return a `Status` themselves.
    #[allow(clippy::result_large_err)]
    fn worker_only<T>(&self, rpc: &str, request: &Request<T>) -> Result<(), Status> {
        distgat_proto::security::require_client_cert(request, self.0.dialer.tls.is_some())
            .map_err(|s| Status::new(s.code(), format!("{rpc}: {}", s.message())))
    }
}

#[tonic::async_trait]
impl Coordinator for Service {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        self.worker_only("RegisterWorker", &request)?;
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
        self.worker_only("Heartbeat", &request)?;
        let req = request.into_inner();
        let id = req.worker_id;
        let known = {
            let mut workers = lock(&self.0.workers);
            workers
                .iter_mut()
                .find(|w| w.id == id)
                .map(|w| w.last_seen = Instant::now())
                .is_some()
        };
        match known {
            true => {
                // Progress inside a layer, for WatchJob; a job this coordinator does not
                // know (finished and forgotten, or from before a restart) is skipped.
                for r in &req.running {
                    // A recovery's attempt (`job-7-r1`) reports for its job.
                    if let Ok(record) = self.0.catalog.job(job::job_of_attempt(&r.job_id)) {
                        record.layer_progress(r.part, r.layer, r.entries_done, r.entries_total);
                    }
                }
                Ok(Response::new(HeartbeatResponse {}))
            }
            false => {
                Err(RuntimeError::NotFound(format!("worker_id '{id}' is not registered")).into())
            }
        }
    }

    async fn push_output(
        &self,
        request: Request<Streaming<OutputChunk>>,
    ) -> Result<Response<PushOutputResponse>, Status> {
        self.worker_only("PushOutput", &request)?;
        // An idle deadline (stream_idle_timeout): a worker sends `alive` whenever its part
        // sent nothing for 2 s, so only a stuck stream runs into it (a silent worker is
        // caught sooner by its heartbeats).
        let mut stream = request.into_inner();
        // The sink is looked up per message and never held between messages: a stream that
        // stays open (a worker still cancelling) must not keep a failed job's files alive.
        let sink_of = |job: &str| lock(&self.0.jobs).get(job).cloned();
        // The stream's job, part, and the part's generation when the stream began: a
        // stream of a lost worker whose part restarted elsewhere can no longer fail it.
        let mut current: Option<(String, u32, u32)> = None;
        let idle = self.0.config.stream_idle_timeout;
        loop {
            let next = crate::net::next_message(&mut stream, idle, "output stream").await;
            let chunk = match next {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    if let Some((job, part, generation)) = &current {
                        if let Some(sink) = sink_of(job) {
                            sink.fail_from(*part, *generation, format!("output stream broke: {e}"));
                        }
                    }
                    return Err(e.into());
                }
            };
            let sink = sink_of(&chunk.job_id).ok_or_else(|| {
                Status::not_found(format!("job_id '{}' is not running", chunk.job_id))
            })?;
            let part = chunk.part;
            let generation = match &current {
                Some((job, p, g)) if *job == chunk.job_id && *p == part => *g,
                _ => sink.generation(part),
            };
            current = Some((chunk.job_id.clone(), part, generation));
            let writer = sink.clone();
            let result = tokio::task::spawn_blocking(move || writer.accept(chunk))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            if let Err(e) = result {
                sink.fail_from(part, generation, e.to_string());
                return Err(e.into());
            }
        }
        if let Some((job, part, generation)) = current {
            if let Some(sink) = sink_of(&job) {
                if !lock(&sink.done).contains_key(&part) && lock(&sink.failure).is_none() {
                    sink.fail_from(
                        part,
                        generation,
                        "output stream ended before the part finished".into(),
                    );
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

    async fn delete_job(
        &self,
        request: Request<DeleteJobRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            delete::delete_job(&self.0, &req.job_id).await?,
        ))
    }

    async fn delete_partition(
        &self,
        request: Request<DeletePartitionRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            delete::delete_partition(&self.0, &req.partition_id).await?,
        ))
    }

    async fn delete_graph(
        &self,
        request: Request<DeleteGraphRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            delete::delete_graph(&self.0, &req.graph_id).await?,
        ))
    }

    type FetchEdgesStream = ReceiverStream<Result<EdgeChunk, Status>>;

    async fn fetch_edges(
        &self,
        request: Request<FetchEdgesRequest>,
    ) -> Result<Response<Self::FetchEdgesStream>, Status> {
        Ok(Response::new(api::fetch_edges(
            &self.0,
            &request.into_inner().graph_id,
        )?))
    }

    type FetchShardStream = ReceiverStream<Result<ShardChunk, Status>>;

    async fn fetch_shard(
        &self,
        request: Request<FetchShardRequest>,
    ) -> Result<Response<Self::FetchShardStream>, Status> {
        self.worker_only("FetchShard", &request)?;
        let req = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        inputs::fetch_shard(&self.0, &req.job_id, req.part, &req.worker_id, tx)?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type FetchInputsStream = ReceiverStream<Result<InputChunk, Status>>;

    async fn fetch_inputs(
        &self,
        request: Request<FetchInputsRequest>,
    ) -> Result<Response<Self::FetchInputsStream>, Status> {
        self.worker_only("FetchInputs", &request)?;
        let req = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        inputs::fetch_inputs(&self.0, &req.job_id, req.part, &req.worker_id, tx)?;
        Ok(Response::new(ReceiverStream::new(rx)))
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

    async fn build_neighbours(
        &self,
        request: Request<BuildNeighboursRequest>,
    ) -> Result<Response<BuildNeighboursResponse>, Status> {
        if !self.0.config.allow_run_job {
            return Err(RuntimeError::PermissionDenied(
                "BuildNeighbours takes paths outside the data root and is off on this \
                 coordinator (start it with --allow-run-job for a private cluster)"
                    .into(),
            )
            .into());
        }
        let req = request.into_inner();
        let state = self.0.clone();
        // On its own task, like RunJob: the build finishes and cleans up even if the
        // caller goes away.
        let build = tokio::spawn(async move {
            let _one_at_a_time = state.job_lock.lock().await;
            let id = format!("build-{}", state.next_id.fetch_add(1, Ordering::Relaxed));
            let result = build::build_neighbours(&state, &id, req).await;
            (id, result)
        });
        let (id, result) = build
            .await
            .map_err(|e| Status::from(RuntimeError::Io(std::io::Error::other(e))))?;
        match result {
            Ok(summary) => Ok(Response::new(BuildNeighboursResponse {
                build_id: summary.build_id.clone(),
                nodes: summary.nodes,
                edges: summary.edges,
                summary_json: serde_json::to_string(&summary).expect("summary serialises"),
            })),
            Err(e) => {
                tracing::warn!(build = %id, "neighbourhood build failed: {e}");
                Err(e.into())
            }
        }
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
                if e.is_refusal() {
                    tracing::info!(job = %job_id, "job refused: {e}");
                } else {
                    tracing::warn!(job = %job_id, "job failed: {e}");
                }
                Err(e.into())
            }
        }
    }
}
