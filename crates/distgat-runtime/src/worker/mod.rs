//! The worker: runs its part of a job, exchanging halo rows with its peers.
//!
//! Async (tokio) code only moves bytes: the gRPC services store incoming halo chunks in a
//! mailbox and send outgoing ones. Each job runs on its own OS thread, whose kernels run
//! on a rayon pool; that thread waits on the mailbox, never on a tokio thread.
//!
//! Modules: [`mailbox`] (received halo chunks), [`part`] (computing one part of a job);
//! this file holds the gRPC services and the job thread.

mod build;
mod fetch;
mod links;
mod mailbox;
mod output;
mod part;
mod scratch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distgat_proto::v1::coordinator_client::CoordinatorClient;
use distgat_proto::v1::halo_exchange_server::{HaloExchange, HaloExchangeServer};
use distgat_proto::v1::output_chunk::Body;
use distgat_proto::v1::worker_server::{Worker, WorkerServer};
use distgat_proto::v1::{
    BuildChunk, BuildOutput, CancelJobRequest, CancelJobResponse, FetchPointsRequest,
    HeartbeatRequest, OutputChunk, PointChunk, RegisterWorkerRequest, RerouteJobRequest,
    RerouteJobResponse, RowChunk, RunningPart, SendRowsResponse, StartJobRequest, StartJobResponse,
};
use distgat_proto::{
    CONNECTION_WINDOW, HALO_SERVICE, MAX_CHUNK_BYTES, PROTOCOL_VERSION, STREAM_WINDOW,
    WORKER_SERVICE,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};

use crate::catalog::lock;
use crate::error::{transport, Result, RuntimeError};
use crate::standard::{set_serving, standard_routes};
use distgat_attention::Progress;

use links::JobLinks;
use mailbox::Mailbox;
use part::compute_part;
pub(crate) use part::f32_bytes;

use crate::net::{Dialer, RunningServer, RPC_DEADLINE};

/// How a worker starts; `Default` listens on an ephemeral loopback port.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The coordinator's address (`host:port`).
    pub coordinator: String,
    pub listen: SocketAddr,
    /// Host name peers use to reach this worker (default: the listen IP).
    pub advertise_host: Option<String>,
    /// How long to keep trying to register.
    pub register_timeout: Duration,
    /// Serve Prometheus metrics (`GET /metrics`) here; none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS (`--tls-cert`, `--tls-key`, `--tls-ca`, all three or none): the worker serves
    /// TLS only, requires a client certificate signed by the CA on the Worker and
    /// HaloExchange services, and presents its own when calling the coordinator and its
    /// peers. None by default (plaintext).
    pub tls: distgat_proto::TlsFiles,
    /// The coordinator's bearer token, sent on every call to it (`--auth-token-file`).
    pub auth_token_file: Option<std::path::PathBuf>,
    /// This worker's own directory: streamed shards are cached in `DIR/shards`, by content
    /// hash. `None`: a new temporary directory, removed when the worker stops.
    pub work_dir: Option<std::path::PathBuf>,
    /// Size limit of the shard cache in bytes (`--shard-cache-max-bytes`): after a shard
    /// is cached, the least recently used others are deleted until the cache fits. 0
    /// caches nothing. Default 16 GiB.
    pub shard_cache_max_bytes: u64,
    /// Halo payload bytes this worker holds for its jobs at once
    /// (`--mailbox-max-bytes`); a peer's chunk beyond it is refused (RESOURCE_EXHAUSTED),
    /// failing the job with a message that names the flag. Default 8 GiB.
    pub mailbox_max_bytes: u64,
    /// Idle deadline of incoming SendRows streams (a peer's halo rows): one that sends
    /// nothing for this long ends with DEADLINE_EXCEEDED. Default 60 s.
    pub stream_idle_timeout: Duration,
    /// Which rows of a job's last (local) layer a part computes and sends first. Not a
    /// flag: [`LastLayerOrder::Auto`] is right for every job; the others make each path
    /// testable on its own. The output's bytes are the same in every order.
    pub last_layer_order: LastLayerOrder,
}

/// Which rows of a job's last local layer a part computes and sends first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LastLayerOrder {
    /// The boundary rows when the layer's halo rows are already here (the part the
    /// others wait for), so its interior rows, sent last, fill the output in id order;
    /// else the interior rows, while the halo rows travel.
    #[default]
    Auto,
    /// Always the boundary rows (waiting for the halo rows first).
    BoundaryFirst,
    /// Always the interior rows.
    InteriorFirst,
}

/// [`WorkerConfig::mailbox_max_bytes`]'s default: 8 GiB.
pub const DEFAULT_MAILBOX_MAX_BYTES: u64 = 8 << 30;

/// [`WorkerConfig::shard_cache_max_bytes`]'s default: 16 GiB.
pub const DEFAULT_SHARD_CACHE_MAX_BYTES: u64 = 16 << 30;

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            coordinator: "127.0.0.1:50051".into(),
            listen: ([127, 0, 0, 1], 0).into(),
            advertise_host: None,
            register_timeout: Duration::from_secs(30),
            metrics_listen: None,
            tls: Default::default(),
            auth_token_file: None,
            work_dir: None,
            shard_cache_max_bytes: DEFAULT_SHARD_CACHE_MAX_BYTES,
            mailbox_max_bytes: DEFAULT_MAILBOX_MAX_BYTES,
            stream_idle_timeout: crate::net::DEFAULT_STREAM_IDLE_TIMEOUT,
            last_layer_order: LastLayerOrder::Auto,
        }
    }
}

/// Binds, registers with the coordinator, starts heartbeats and serves. Errors: an
/// unreadable or invalid TLS or token file (naming the flag and file), the bind, or no
/// registration within `register_timeout`.
pub async fn start_worker(config: WorkerConfig) -> Result<RunningServer> {
    let token = config
        .auth_token_file
        .as_deref()
        .map(distgat_proto::read_token_file)
        .transpose()?;
    let dialer = Dialer {
        tls: config.tls.load_server()?,
        bearer: distgat_proto::Bearer::new(token.as_deref())?,
    };
    let work_dir = WorkDir::open(config.work_dir.as_deref(), config.shard_cache_max_bytes)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let host = config
        .advertise_host
        .clone()
        .unwrap_or_else(|| addr.ip().to_string());
    let advertised = format!("{host}:{}", addr.port());
    if config.advertise_host.is_none() && addr.ip().is_unspecified() {
        tracing::warn!(
            "listening on {addr} without an advertise host: peers on other machines cannot \
             reach {advertised}; set --advertise-host (DISTGAT_ADVERTISE_HOST)"
        );
    }

    let state = Arc::new(WorkerState {
        mailbox: Mailbox::new(config.mailbox_max_bytes),
        stream_idle_timeout: config.stream_idle_timeout,
        last_layer_order: config.last_layer_order,
        builds: Arc::new(build::Builds::default()),
        jobs: Mutex::new(HashMap::new()),
        links: Mutex::new(HashMap::new()),
        coordinator: dialer.endpoint(&config.coordinator)?,
        dialer: dialer.clone(),
        work_dir,
    });
    // Not serving until registered: a probe then means "part of a cluster".
    let (mut health, routes) =
        standard_routes(WORKER_SERVICE, &[WORKER_SERVICE, HALO_SERVICE], false).await?;
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    // Only the coordinator and peers (client certificate signed by the CA) may call the
    // Worker and HaloExchange services; health and reflection stay open for probes.
    let peers_only = distgat_proto::security::ClientCertCheck {
        tls_on: dialer.tls.is_some(),
    };
    let server = dialer
        .server()?
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .add_routes(routes)
        .add_service(InterceptedService::new(
            WorkerServer::new(WorkerService(state.clone()))
                .max_decoding_message_size(2 * MAX_CHUNK_BYTES)
                .max_encoding_message_size(2 * MAX_CHUNK_BYTES),
            peers_only,
        ))
        .add_service(InterceptedService::new(
            HaloExchangeServer::new(HaloService(state.clone()))
                .max_decoding_message_size(2 * MAX_CHUNK_BYTES)
                .max_encoding_message_size(2 * MAX_CHUNK_BYTES),
            peers_only,
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = shutdown_rx.await;
        });
    let serving = tokio::spawn(server);

    // Register (retrying while the coordinator starts), then heartbeat.
    let deadline = Instant::now() + config.register_timeout;
    let mut told = false;
    let (worker_id, interval) = loop {
        match register(&state.coordinator, &dialer.bearer, &advertised).await {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                if !told {
                    // Once, so a wrong address is visible long before the timeout.
                    tracing::warn!(
                        "coordinator {} not reachable yet ({e}); retrying for up to {} s",
                        config.coordinator,
                        config.register_timeout.as_secs()
                    );
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "coordinator {}: could not register within {} s: {e}",
                    config.coordinator,
                    config.register_timeout.as_secs()
                )))
            }
        }
    };
    tracing::info!(worker = %worker_id, %advertised, "registered with the coordinator");
    set_serving(&mut health, WORKER_SERVICE, true).await;
    let heartbeat_channel = state.coordinator.connect_lazy();
    let coordinator = state.coordinator.clone();
    let reporting = state.clone();
    let bearer = dialer.bearer.clone();
    tokio::spawn(async move {
        let mut client = CoordinatorClient::with_interceptor(heartbeat_channel, bearer.clone());
        let mut worker_id = worker_id;
        // A coordinator that is down fails every heartbeat: warn on the first failure and
        // on recovery, not every interval.
        let mut failing = false;
        loop {
            tokio::time::sleep(interval).await;
            let mut req = Request::new(HeartbeatRequest {
                worker_id: worker_id.clone(),
                running: reporting.running_parts(),
            });
            req.set_timeout(RPC_DEADLINE);
            let reply = client.heartbeat(req).await;
            if reply.is_ok() && failing {
                tracing::warn!(worker = %worker_id, "heartbeats reach the coordinator again");
                failing = false;
            }
            match reply {
                Ok(_) => {}
                // A restarted coordinator has forgotten us: register again, so the
                // cluster heals without restarting workers.
                Err(e) if e.code() == tonic::Code::NotFound => {
                    match register(&coordinator, &bearer, &advertised).await {
                        Ok((id, _)) => {
                            tracing::info!(old = %worker_id, new = %id, "registered again");
                            worker_id = id;
                        }
                        Err(e) => tracing::warn!("registering again: {e}"),
                    }
                }
                Err(e) if failing => {
                    tracing::debug!(worker = %worker_id, "heartbeat failed: {}", e.message())
                }
                Err(e) => {
                    tracing::warn!(
                        worker = %worker_id,
                        "heartbeat failed ({:?}: {}); retrying every {} ms quietly",
                        e.code(),
                        e.message(),
                        interval.as_millis()
                    );
                    failing = true;
                }
            }
        }
    });
    let (metrics_addr, metrics_guard) = match config.metrics_listen {
        Some(at) => {
            let (guard, stop) = oneshot::channel::<()>();
            let addr =
                crate::metrics::serve(crate::metrics::Role::Worker, at, Arc::new(|| {}), stop)
                    .await?;
            (Some(addr), Some(guard))
        }
        None => (None, None),
    };
    let join = tokio::spawn(async move {
        // The metrics endpoint stops with the server (when its guard drops).
        let _metrics = metrics_guard;
        serving
            .await
            .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))?
            .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))
    });
    Ok(RunningServer {
        addr,
        metrics_addr,
        shutdown,
        join,
    })
}

async fn register(
    coordinator: &Endpoint,
    bearer: &distgat_proto::Bearer,
    advertised: &str,
) -> Result<(String, Duration)> {
    let channel = coordinator
        .connect()
        .await
        .map_err(|e| RuntimeError::FailedPrecondition(format!("connecting: {e}")))?;
    let mut req = Request::new(RegisterWorkerRequest {
        protocol_version: PROTOCOL_VERSION,
        address: advertised.to_string(),
    });
    req.set_timeout(RPC_DEADLINE);
    let resp = CoordinatorClient::with_interceptor(channel, bearer.clone())
        .register_worker(req)
        .await
        .map_err(transport("registering"))?
        .into_inner();
    Ok((
        resp.worker_id,
        Duration::from_millis(resp.heartbeat_interval_ms.max(100) as u64),
    ))
}

/// The worker's directory: the one given (kept), or a temporary one (removed on drop).
struct WorkDir {
    shards: fetch::ShardCache,
    _temp: Option<tempfile::TempDir>,
}

impl WorkDir {
    fn open(given: Option<&std::path::Path>, max_bytes: u64) -> Result<Self> {
        let (root, temp) = match given {
            Some(dir) => (dir.to_path_buf(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("distgat-worker-")
                    .tempdir()
                    .map_err(|e| {
                        RuntimeError::Io(std::io::Error::new(
                            e.kind(),
                            format!("creating a temporary work dir (give --work-dir): {e}"),
                        ))
                    })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let bad = |e: std::io::Error| {
            RuntimeError::InvalidArgument(format!("work dir (--work-dir) {}: {e}", root.display()))
        };
        let shards = root.join("shards");
        std::fs::create_dir_all(&shards).map_err(bad)?;
        // Writable? A probe file, removed at once, so a bad dir fails now, not mid-job.
        tempfile::Builder::new()
            .prefix(".probe-")
            .tempfile_in(&shards)
            .map_err(bad)?;
        // Partial files of a worker that was killed mid-write are never used: drop them.
        if let Ok(entries) = std::fs::read_dir(&shards) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".partial") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(WorkDir {
            shards: fetch::ShardCache {
                dir: shards,
                max_bytes,
            },
            _temp: temp,
        })
    }
}

struct WorkerState {
    mailbox: Mailbox,
    /// [`WorkerConfig::stream_idle_timeout`].
    stream_idle_timeout: Duration,
    /// [`WorkerConfig::last_layer_order`].
    last_layer_order: LastLayerOrder,
    work_dir: WorkDir,
    /// Points of the neighbourhood builds running here, for peers' fetches.
    builds: Arc<build::Builds>,
    /// Running parts by (job, part): cancellation flag and progress inside the current
    /// layer. After a recovery one worker may run two parts of a job.
    jobs: Mutex<HashMap<(String, u32), RunningJob>>,
    /// Jobs whose part keeps its sent halo rows (`StartJobRequest.keep_sent_rows`), until
    /// the job ends (CancelJob) or [`mailbox::ENDED_MEMORY`] after the part ended.
    links: Mutex<HashMap<(String, u32), Arc<JobLinks>>>,
    coordinator: Endpoint,
    /// How this worker calls its peers and the coordinator (TLS, token).
    dialer: Dialer,
}

struct RunningJob {
    cancel: Arc<AtomicBool>,
    progress: Arc<Progress>,
}

impl WorkerState {
    /// What the heartbeat reports: each running part's layer and entries done.
    fn running_parts(&self) -> Vec<RunningPart> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.iter()
            .filter_map(|((job, part), running)| {
                let snap = running.progress.snapshot();
                (snap.layer > 0).then(|| RunningPart {
                    job_id: job.clone(),
                    part: *part,
                    layer: (snap.layer - 1) as u32,
                    entries_done: snap.entries_done,
                    entries_total: snap.entries_total,
                })
            })
            .collect()
    }
}

struct WorkerService(Arc<WorkerState>);

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn start_job(
        &self,
        request: Request<StartJobRequest>,
    ) -> Result<Response<StartJobResponse>, Status> {
        let req = request.into_inner();
        let valid_id = !req.job_id.is_empty()
            && req.job_id.len() <= 64
            && req
                .job_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            return Err(RuntimeError::InvalidArgument(
                "job_id must be 1-64 ASCII letters, digits, '-' or '_'".into(),
            )
            .into());
        }
        // Refused here, before any input is fetched (the part opens the file itself).
        output::check_layout(
            &req.out_file,
            req.out_header_len,
            req.out_rows,
            req.out_owned_order,
        )?;
        let cancel = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let key = (req.job_id.clone(), req.part);
        let links = Arc::new(JobLinks::new(
            &req.peers,
            &self.0.dialer,
            req.keep_sent_rows,
        )?);
        {
            let mut jobs = self.0.jobs.lock().unwrap_or_else(|p| p.into_inner());
            if jobs.contains_key(&key) {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "part {} of job {} is already running here",
                    req.part, req.job_id
                ))
                .into());
            }
            jobs.insert(
                key.clone(),
                RunningJob {
                    cancel: cancel.clone(),
                    progress: progress.clone(),
                },
            );
        }
        self.0.mailbox.job_started(&req.job_id, req.part);
        {
            let mut kept = lock(&self.0.links);
            kept.retain(|_, l| !l.ended_before(mailbox::ENDED_MEMORY));
            if links.keep {
                kept.insert(key.clone(), links.clone());
            }
        }
        let state = self.0.clone();
        let handle = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name(format!("job-{}-part-{}", req.job_id, req.part))
            .spawn(move || {
                let (job, part) = (req.job_id.clone(), req.part);
                let ok = run_job(&state, &handle, req, &links, &cancel, &progress);
                // A finished part of a job that keeps its rows may still get a restarted
                // peer's rows: they are dropped quietly (refused otherwise).
                state.mailbox.forget_job(&job, Some(part), ok && links.keep);
                links.part_ended();
                lock(&state.jobs).remove(&(job, part));
            })
            .map_err(|e| {
                lock(&self.0.jobs).remove(&key);
                RuntimeError::Io(std::io::Error::other(format!(
                    "starting the job thread: {e}"
                )))
            })?;
        Ok(Response::new(StartJobResponse {}))
    }

    type BuildNeighboursStream = ReceiverStream<Result<BuildOutput, Status>>;

    async fn build_neighbours(
        &self,
        request: Request<Streaming<BuildChunk>>,
    ) -> Result<Response<Self::BuildNeighboursStream>, Status> {
        let mut inbound = request.into_inner();
        let header = match inbound.message().await? {
            Some(BuildChunk {
                body: Some(distgat_proto::v1::build_chunk::Body::Header(h)),
            }) => h,
            _ => {
                return Err(RuntimeError::InvalidArgument(
                    "the first BuildChunk must be the BuildHeader".into(),
                )
                .into())
            }
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(build::serve_build(
            self.0.builds.clone(),
            self.0.dialer.clone(),
            header,
            inbound,
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        let req = request.into_inner();
        for ((job, part), running) in lock(&self.0.jobs).iter() {
            if *job == req.job_id {
                tracing::info!(job = %req.job_id, part, reason = %req.reason, "cancelling");
                running.cancel.store(true, Ordering::Relaxed);
            }
        }
        lock(&self.0.links).retain(|(job, _), _| *job != req.job_id);
        self.0.mailbox.forget_job(&req.job_id, None, false);
        Ok(Response::new(CancelJobResponse {}))
    }

    async fn reroute_job(
        &self,
        request: Request<RerouteJobRequest>,
    ) -> Result<Response<RerouteJobResponse>, Status> {
        let req = request.into_inner();
        // Every part of the job here except the moved one itself (it may have moved here).
        let links: Vec<Arc<JobLinks>> = lock(&self.0.links)
            .iter()
            .filter(|((job, part), _)| *job == req.job_id && *part != req.part)
            .map(|(_, l)| l.clone())
            .collect();
        if links.is_empty() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "this worker keeps no sent rows of job {}",
                req.job_id
            ))
            .into());
        }
        let channel = self.0.dialer.endpoint(&req.address)?.connect_lazy();
        let rerouted: Vec<Vec<RowChunk>> = links
            .iter()
            .filter_map(|l| l.reroute(req.part, channel.clone()))
            .collect();
        if rerouted.is_empty() {
            return Err(RuntimeError::InvalidArgument(format!(
                "part: no part of job {} on this worker sends rows to part {}",
                req.job_id, req.part
            ))
            .into());
        }
        let chunks: Vec<RowChunk> = rerouted.into_iter().flatten().collect();
        let n = chunks.len() as u64;
        tracing::info!(
            job = %req.job_id, part = req.part, to = %req.address, chunks = n,
            "part moved: re-sending the rows kept for it"
        );
        if n > 0 {
            let (job, part) = (req.job_id, req.part);
            tokio::spawn(async move {
                if let Err(status) = links::send_chunks(channel, chunks).await {
                    // Its replacement is lost too: the coordinator reroutes again.
                    tracing::warn!(%job, part, "re-sending kept rows failed: {}", status.message());
                }
            });
        }
        Ok(Response::new(RerouteJobResponse { chunks: n }))
    }
}

struct HaloService(Arc<WorkerState>);

#[tonic::async_trait]
impl HaloExchange for HaloService {
    type FetchPointsStream = ReceiverStream<Result<PointChunk, Status>>;

    async fn fetch_points(
        &self,
        request: Request<FetchPointsRequest>,
    ) -> Result<Response<Self::FetchPointsStream>, Status> {
        let chunks = build::fetch_points(&self.0.builds, request.into_inner()).await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for c in chunks {
                if tx.send(Ok(c)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn send_rows(
        &self,
        request: Request<Streaming<RowChunk>>,
    ) -> Result<Response<SendRowsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut rows = 0u64;
        let idle = self.0.stream_idle_timeout;
        while let Some(chunk) = crate::net::next_message(&mut stream, idle, "halo rows").await? {
            let want = (chunk.num_rows as u64)
                .checked_mul(chunk.row_width as u64)
                .and_then(|v| v.checked_mul(4));
            if want != Some(chunk.payload.len() as u64) {
                return Err(Status::invalid_argument(format!(
                    "row chunk from part {}: payload has {} bytes, num_rows x row_width x 4 = {want:?}",
                    chunk.source_part,
                    chunk.payload.len()
                )));
            }
            rows += chunk.num_rows as u64;
            self.0.mailbox.put(chunk)?;
        }
        Ok(Response::new(SendRowsResponse { rows }))
    }
}

/// How long a part's output stream may go without a message before it sends `alive`.
const OUTPUT_KEEPALIVE: Duration = Duration::from_secs(2);

/// Runs a job's part on this thread and reports its outcome to the coordinator; returns
/// whether the part succeeded.
fn run_job(
    state: &WorkerState,
    rt: &tokio::runtime::Handle,
    req: StartJobRequest,
    links: &JobLinks,
    cancel: &AtomicBool,
    progress: &Progress,
) -> bool {
    let _runtime = rt.enter(); // lazy channels spawn their connection tasks on it
    let (job, part) = (req.job_id.clone(), req.part);
    let (tx, mut rx) = mpsc::channel::<OutputChunk>(8);
    let channel = state.coordinator.connect_lazy();
    let bearer = state.dialer.bearer.clone();
    // The stream carries an `alive` message whenever the part sent nothing for
    // OUTPUT_KEEPALIVE, so the coordinator's idle deadline on it (60 s by default) catches
    // only a stuck stream, never a long layer.
    let (out_tx, out_rx) = mpsc::channel::<OutputChunk>(8);
    let (alive_job, alive_part) = (job.clone(), part);
    rt.spawn(async move {
        loop {
            let next = match tokio::time::timeout(OUTPUT_KEEPALIVE, rx.recv()).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(_) => OutputChunk {
                    job_id: alive_job.clone(),
                    part: alive_part,
                    body: Some(Body::Alive(true)),
                },
            };
            if out_tx.send(next).await.is_err() {
                break;
            }
        }
    });
    let pushing = rt.spawn(async move {
        CoordinatorClient::with_interceptor(channel, bearer)
            .max_encoding_message_size(4 * MAX_CHUNK_BYTES)
            .push_output(ReceiverStream::new(out_rx))
            .await
    });
    // A panic in the job must still fail the job at the coordinator, not hang it.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        compute_part(
            &state.mailbox,
            &state.dialer,
            rt,
            &state.coordinator,
            &state.work_dir.shards,
            &state.builds,
            links,
            &req,
            cancel,
            progress,
            &tx,
            state.last_layer_order,
        )
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(RuntimeError::Io(std::io::Error::other(format!(
            "internal error: {what}"
        ))))
    });
    if let Err(e) = &outcome {
        // After a cancel (the coordinator ended the job: another part failed, an input
        // check refused the job, a client cancelled), what failed here is a consequence:
        // the coordinator reports the cause.
        match cancel.load(Ordering::Relaxed) {
            true => tracing::info!(%job, part, "part stopped after the job was cancelled: {e}"),
            false => tracing::warn!(%job, part, "job failed: {e}"),
        }
        let _ = tx.blocking_send(OutputChunk {
            job_id: job.clone(),
            part,
            body: Some(Body::Failure(e.to_string())),
        });
    }
    drop(tx);
    if let Err(e) = rt.block_on(pushing) {
        tracing::warn!(%job, part, "output stream task: {e}");
    } else {
        tracing::info!(%job, part, ok = outcome.is_ok(), "job finished");
    }
    outcome.is_ok()
}
