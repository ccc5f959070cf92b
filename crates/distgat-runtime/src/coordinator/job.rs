//! Running one job: prepare the outputs, start every part on a worker, watch them until
//! all finish, one fails or one goes silent.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distgat_attention::Model;
use distgat_graph::{attention_edge_index, read_graph, write_npy, Features, GraphFormat};
use distgat_partition::PartitionDir;
use distgat_proto::v1::worker_client::WorkerClient;
use distgat_proto::v1::{
    self, CancelJobRequest, Peer, RerouteJobRequest, RunJobRequest, StartJobRequest,
};
use serde::Serialize;
use tonic::Request;

use super::inputs::JobInputs;
use super::placement::OwnedOrder;
use super::sink::{presized, AttentionSink, JobSink};
use super::state::{KeptBuild, Shortfall, State};
use crate::catalog::{lock, JobRecord};
use crate::convert;
use crate::error::{transport, Result, RuntimeError};
use crate::net::RPC_DEADLINE;
use crate::source::ShardSource;

#[derive(Debug, Serialize)]
pub struct JobSummary {
    pub job_id: String,
    pub seconds: f64,
    /// "stream" or "shared": where the workers got their inputs.
    pub shard_source: &'static str,
    /// "written" (each worker wrote its rows into the output file: workers_write_output)
    /// or "sent" (the rows came to the coordinator over gRPC).
    pub output_rows: &'static str,
    pub workers: Vec<WorkerSummary>,
    /// Each worker loss the job survived, in order (empty when none was lost).
    pub recoveries: Vec<RecoverySummary>,
}

/// A worker loss the job survived: the lost worker's part went to another worker (an idle
/// spare, else a surviving worker of the job) and restarted from layer 0, alone
/// (`restarted: "part"`, the other parts running on) or with every part (`"job"`: when the
/// worker was lost while parts were starting, or the job cannot restart a part alone:
/// attention output, global layers, a kept build's parts). The output is the same bytes
/// either way.
#[derive(Debug, Serialize)]
pub struct RecoverySummary {
    pub part: u32,
    pub lost_worker: String,
    /// The worker that took the part (an idle spare, else a surviving worker of the job).
    pub replacement: String,
    /// "part" or "job": what restarted.
    pub restarted: &'static str,
    /// Seconds from the job's start until the loss was detected (heartbeats stop for
    /// `heartbeat_timeout`, 3 s by default, before a silent worker counts as lost).
    pub detected_after_s: f64,
    /// Seconds from the attempt's start to the detected loss: the compute thrown away (the
    /// lost part's, or every part's for a job restart) plus the detection delay.
    pub time_lost_s: f64,
    /// Why the worker counts as lost.
    pub detail: String,
}

/// Most recoveries one job makes (each also needs an idle live worker).
pub const MAX_RECOVERIES: usize = 16;

/// The id attempt `k` of `job_id` runs under on the workers: the job's own id first, then
/// `<job>-r<k>` (worker job ids allow letters, digits, '-' and '_').
fn attempt_name(job_id: &str, k: usize) -> String {
    if k == 0 {
        job_id.to_string()
    } else {
        format!("{job_id}-r{k}")
    }
}

/// The job id an attempt id belongs to (`job-7-r2` -> `job-7`; any other id unchanged).
pub(crate) fn job_of_attempt(id: &str) -> &str {
    match id.rsplit_once("-r") {
        Some((job, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => job,
        _ => id,
    }
}

/// Why an attempt ended: a worker is gone (recoverable with a spare), or anything else
/// (bad input, cancellation, a live worker's own failure), which fails the job.
enum AttemptFailure {
    Lost {
        worker: String,
        part: u32,
        detail: String,
    },
    Other(RuntimeError),
}

impl std::fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptFailure::Lost {
                worker,
                part,
                detail,
            } => write!(f, "worker {worker} (part {part}) lost: {detail}"),
            AttemptFailure::Other(e) => e.fmt(f),
        }
    }
}

impl From<RuntimeError> for AttemptFailure {
    fn from(e: RuntimeError) -> Self {
        AttemptFailure::Other(e)
    }
}

/// Tells every worker of a failed attempt to stop it (2 s each; a dead one just fails).
async fn cancel_attempt(
    state: &State,
    attempt_id: &str,
    assigned: &[(String, String)],
    reason: &str,
) {
    for (_, address) in assigned {
        if let Ok(ep) = state.dialer.endpoint(address) {
            let mut client = WorkerClient::new(ep.connect_lazy());
            let mut r = Request::new(CancelJobRequest {
                job_id: attempt_id.to_string(),
                reason: reason.to_string(),
            });
            r.set_timeout(Duration::from_secs(2));
            let _ = client.cancel_job(r).await;
        }
    }
}

/// The worker losses one job survived, and every address lost in it (never chosen again):
/// the one record both recoveries (a part restarted alone, or the whole job) keep.
struct Recoveries {
    made: Vec<RecoverySummary>,
    lost_addresses: HashSet<String>,
    /// When the job started (for the recoveries' times).
    job_started: Instant,
}

impl Recoveries {
    fn new(job_started: Instant) -> Self {
        Recoveries {
            made: Vec::new(),
            lost_addresses: HashSet::new(),
            job_started,
        }
    }

    /// Part `part`'s worker is lost: its address is never used again in this job. Returns
    /// the worker to take the part ([`replacement_worker`]), `None` when none is left or
    /// [`MAX_RECOVERIES`] are made.
    fn replacement(
        &mut self,
        state: &State,
        assigned: &[(String, String)],
        part: usize,
    ) -> Option<(String, String)> {
        self.lost_addresses.insert(assigned[part].1.clone());
        (self.made.len() < MAX_RECOVERIES)
            .then(|| replacement_worker(state, assigned, part, &self.lost_addresses))
            .flatten()
    }

    /// Records that `lost` worker's part went to `replacement`, restarting `restarted`
    /// ("part" or "job") after `attempt_started`.
    fn record(
        &mut self,
        part: u32,
        lost: String,
        replacement: &str,
        restarted: &'static str,
        attempt_started: Instant,
        detail: String,
    ) {
        self.made.push(RecoverySummary {
            part,
            lost_worker: lost,
            replacement: replacement.to_string(),
            restarted,
            detected_after_s: self.job_started.elapsed().as_secs_f64(),
            time_lost_s: attempt_started.elapsed().as_secs_f64(),
            detail,
        });
    }

    /// Why no worker could take `part` after `worker` was lost: every worker lost so far.
    fn none_left(&self, worker: &str, part: u32) -> String {
        let mut lost: Vec<&str> = self.made.iter().map(|r| r.lost_worker.as_str()).collect();
        lost.push(worker);
        format!(
            "no worker was left to take part {part} (no idle spare, no surviving worker of \
             the job; workers lost in this job: {}; recoveries made: {})",
            lost.join(", "),
            self.made.len()
        )
    }
}

/// A live worker to take lost part `part`: an idle one (registered, heartbeating, not in
/// `assigned`) first, else a surviving worker of the job (then running two parts; the
/// one with the fewest parts, ties by part), never one at an address lost in this job.
fn replacement_worker(
    state: &State,
    assigned: &[(String, String)],
    part: usize,
    lost_addresses: &HashSet<String>,
) -> Option<(String, String)> {
    let workers = lock(&state.workers);
    let live = |id: &str, address: &str| {
        !lost_addresses.contains(address) && workers.iter().any(|w| w.id == id && state.is_live(w))
    };
    let idle = workers
        .iter()
        .filter(|w| state.is_live(w))
        .find(|w| {
            !assigned
                .iter()
                .any(|(id, a)| id == &w.id || a == &w.address)
                && !lost_addresses.contains(&w.address)
        })
        .map(|w| (w.id.clone(), w.address.clone()));
    idle.or_else(|| {
        assigned
            .iter()
            .enumerate()
            .filter(|&(q, (id, a))| q != part && live(id, a))
            .min_by_key(|&(q, (id, _))| (assigned.iter().filter(|(i, _)| i == id).count(), q))
            .map(|(_, w)| w.clone())
    })
}

/// Waits (up to 10 s) until no PushOutput handler holds the sink, so resetting it cannot
/// race a failed attempt's last write; the caller has removed it from `state.jobs`.
async fn quiescent(sink: &Arc<JobSink>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(sink) > 1 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[derive(Debug, Serialize)]
pub struct WorkerSummary {
    pub part: u32,
    pub worker: String,
    pub address: String,
    /// "shared" (read by path), "fetched" (streamed), "cached" (the worker's cache held
    /// the shard: no shard byte sent), "refetched" (its cache entry was corrupt).
    pub shard_cache: String,
    /// Kernel threads the part computed with (0 when the worker did not report).
    pub threads: u32,
    /// Stream only: shard file bytes sent to this worker, and the bytes of its other
    /// inputs (model files, feature rows, edge attribute rows).
    pub shard_bytes_streamed: u64,
    pub input_bytes_streamed: u64,
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

/// The result of a blocking task that returns a [`Result`] (a task that panicked is an
/// I/O error).
fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    r.map_err(|e| RuntimeError::Io(std::io::Error::other(e)))?
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
    lock(&state.inputs).remove(job_id);
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
    let source =
        convert::shard_source("shard_source", &req.shard_source, state.config.shard_source)?;
    if req.workers_write_output && source != ShardSource::Shared {
        return Err(RuntimeError::InvalidArgument(format!(
            "workers_write_output: the workers would open the coordinator's output file by \
             path, which needs shard_source \"shared\" (this job's is \"{source}\")"
        )));
    }
    let kept = if req.build_id.is_empty() {
        None
    } else {
        Some(take_kept_build(state, &req)?)
    };
    let dir = match kept {
        Some(_) => PathBuf::new(),
        None => PathBuf::from(required(&req.partition_dir, "partition_dir")?),
    };
    let model_path = PathBuf::from(required(&req.model, "model")?);
    let out_path = PathBuf::from(required(&req.out, "out")?);
    let attention_dir = (!req.attention_dir.is_empty()).then(|| PathBuf::from(&req.attention_dir));

    // Everything that reads files runs off the async threads. A cancel stops the
    // features file's pass (when row normalisation needs it before the job starts).
    let prep_req = req.clone();
    let prep_kept = kept.clone();
    let prep_cancel = record.map(|r| r.cancel.clone()).unwrap_or_default();
    let prepared = joined(
        tokio::task::spawn_blocking(move || match prep_kept {
            Some(k) => prepare_kept(&k, &model_path, &out_path, &prep_req),
            None => prepare(
                &dir,
                &model_path,
                &out_path,
                attention_dir.as_deref(),
                &prep_req,
                &prep_cancel,
            ),
        })
        .await,
    );
    let prepared = match prepared {
        Err(_) if cancelled() => {
            return Err(RuntimeError::Cancelled("cancelled by a client".into()))
        }
        r => r?,
    };
    let Prepared {
        parts,
        part_restart,
        mut sink,
        feature_min,
        edge_indexes,
        features_path,
        edge_features_path,
        features_check,
        graph_check,
    } = prepared;
    // The checks of the features file and the graph file run beside the job (one after
    // the other, on one blocking thread); a failure stops the job, and the output is
    // committed only after they passed. When the job ends first (failed or cancelled),
    // `stop_check` stops the features check at its next block.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_check = SetOnDrop(stop.clone());
    let mut input_checks = (features_check.is_some() || graph_check.is_some()).then(|| {
        tokio::task::spawn_blocking(move || {
            if let Some(check) = &features_check {
                check.verify(&stop)?;
            }
            match &graph_check {
                Some(check) if !stop.load(Ordering::Relaxed) => check.verify(),
                _ => Ok(()),
            }
        })
    });
    sink.progress = record.cloned();
    if req.workers_write_output {
        let temp = sink.out.temp_path();
        let path = std::fs::canonicalize(temp).map_err(|e| {
            RuntimeError::Io(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", temp.display()),
            ))
        })?;
        sink.worker_written = Some(path.to_string_lossy().into_owned());
    }
    let sink = Arc::new(sink);

    // Enough live workers? (A kept build's parts run where they are kept.)
    let assigned = match &kept {
        Some(k) => kept_workers(state, &req.build_id, k)?,
        None => state
            .live_workers_for(|_| parts, &cancelled)
            .await
            .map_err(|shortfall| match shortfall {
                Shortfall::Cancelled => RuntimeError::Cancelled("cancelled by a client".into()),
                Shortfall::TooFew { live, .. } => RuntimeError::FailedPrecondition(format!(
                    "the partition has {parts} parts but {live} live workers are registered; \
                     start more with `distgat worker --coordinator <this address>`"
                )),
            })?,
    };
    let inputs = match (source, &kept) {
        (ShardSource::Shared, _) => None,
        (ShardSource::Stream, Some(k)) => Some(Arc::new(JobInputs::for_kept_build(
            k.owned.clone(),
            PathBuf::from(&req.model),
            PathBuf::from(&req.features),
            assigned.iter().map(|(id, _)| id.clone()).collect(),
        ))),
        (ShardSource::Stream, None) => {
            let dir = PathBuf::from(&req.partition_dir);
            let model = PathBuf::from(&req.model);
            let workers = assigned.iter().map(|(id, _)| id.clone()).collect();
            let streams = state.config.max_concurrent_shard_streams;
            let inputs = joined(
                tokio::task::spawn_blocking(move || {
                    JobInputs::new(
                        &dir,
                        model,
                        features_path,
                        edge_features_path,
                        workers,
                        streams,
                    )
                })
                .await,
            )?;
            let inputs = Arc::new(inputs);
            Some(inputs)
        }
    };
    // Parts keep the halo rows they send when a lost part could restart alone (on an idle
    // worker or a surviving one): a job of graph layers, unless told `--recovery job`.
    let keep_sent_rows = part_restart && state.config.recovery == crate::source::Recovery::Part;
    // Attempts: the first runs under the job's id, each job restart under `<job>-r<k>`, so
    // a late halo chunk or output message of a failed attempt can never mix into the next.
    let mut assigned = assigned;
    let mut recoveries = Recoveries::new(started);
    let mut attempt = 0usize;
    loop {
        let attempt_id = attempt_name(job_id, attempt);
        let ids: Vec<String> = assigned.iter().map(|(id, _)| id.clone()).collect();
        if let Some(inputs) = &inputs {
            inputs.new_attempt(ids.clone());
            lock(&state.inputs).insert(attempt_id.clone(), inputs.clone());
        }
        lock(&state.jobs).insert(attempt_id.clone(), sink.clone());
        *lock(&state.assignment) = Some((job_id.to_string(), ids));
        if let Some(r) = record {
            r.set_assigned(&assigned);
        }
        tracing::info!(job = %job_id, attempt = %attempt_id, parts, "job starting");
        let attempt_started = Instant::now();
        let ctx = AttemptCtx {
            state,
            job_id: &attempt_id,
            req: &req,
            sink: &sink,
            feature_min,
            inputs: inputs.as_deref(),
            kept_nodes: kept.as_ref().map_or(0, |k| k.nodes as u64),
            keep_sent_rows,
            record,
        };
        let outcome = {
            let attempt = drive(&ctx, &mut assigned, &mut recoveries, &cancelled);
            tokio::pin!(attempt);
            loop {
                tokio::select! {
                    outcome = &mut attempt => break outcome,
                    checked = async { input_checks.as_mut().expect("guarded").await },
                        if input_checks.is_some() =>
                    {
                        input_checks = None;
                        if let Err(e) = joined(checked) {
                            break Err(AttemptFailure::Other(e));
                        }
                    }
                }
            }
        };
        let failure = match outcome {
            Ok(()) => {
                lock(&state.jobs).remove(&attempt_id);
                lock(&state.inputs).remove(&attempt_id);
                if keep_sent_rows {
                    // The workers drop the halo rows they kept for a lost peer.
                    cancel_attempt(state, &attempt_id, &assigned, "the job is done").await;
                }
                break;
            }
            Err(failure) => failure,
        };
        let reason = failure.to_string();
        cancel_attempt(state, &attempt_id, &assigned, &reason).await;
        // No new message of this attempt reaches the sink or the inputs from here on.
        lock(&state.jobs).remove(&attempt_id);
        lock(&state.inputs).remove(&attempt_id);
        let error = match failure {
            // A kept build's part lives only on its worker: no spare can take it.
            AttemptFailure::Lost {
                worker,
                part,
                detail,
            } if kept.is_some() => RuntimeError::WorkerFailed {
                worker,
                part,
                detail: format!(
                    "{detail}; the part's edges were kept on that worker by build {}, so no \
                     spare can take it: run again (or run on a partition, which can move parts)",
                    req.build_id
                ),
            },
            AttemptFailure::Lost {
                worker,
                part,
                detail,
            } if !cancelled() => {
                match recoveries.replacement(state, &assigned, part as usize) {
                    // Every output row of the next attempt must be checkable once more.
                    Some(spare) if quiescent(&sink).await => {
                        sink.reset();
                        tracing::warn!(
                            job = %job_id, part, lost = %worker, replacement = %spare.0,
                            "worker lost; restarting the job with the part on another worker: {detail}"
                        );
                        recoveries.record(part, worker, &spare.0, "job", attempt_started, detail);
                        assigned[part as usize] = spare;
                        attempt += 1;
                        continue;
                    }
                    Some(_) => RuntimeError::WorkerFailed {
                        worker,
                        part,
                        detail: format!(
                            "{detail}; a worker could take the part, but the failed attempt's \
                             output streams did not close within 10 s"
                        ),
                    },
                    None => {
                        let detail = format!("{detail}; {}", recoveries.none_left(&worker, part));
                        RuntimeError::WorkerFailed {
                            worker,
                            part,
                            detail,
                        }
                    }
                }
            }
            AttemptFailure::Lost {
                worker,
                part,
                detail,
            } => RuntimeError::WorkerFailed {
                worker,
                part,
                detail,
            },
            AttemptFailure::Other(e) => e,
        };
        // The input checks are of no use now (they would read on while the streams close).
        stop_check.set();
        // Drop the temporary output files before answering, so a caller that sees the
        // failure never sees them.
        drop(released(sink).await);
        return Err(error);
    }
    if let Some(check) = input_checks {
        if let Err(e) = joined(check.await) {
            drop(released(sink).await);
            return Err(e);
        }
    }
    let sink = released(sink).await.ok_or_else(|| {
        RuntimeError::Io(std::io::Error::other(
            "an output stream did not close within 10 s of its last message",
        ))
    })?;
    let done = std::mem::take(&mut *lock(&sink.done));
    // Every stream is closed: what waits in incomplete blocks (only when rows are missing,
    // which is an error below) goes out now.
    sink.flush_blocks()?;
    let missing = sink.missing_rows();
    let JobSink {
        out,
        out_sync,
        attention,
        owned_order,
        ..
    } = sink;
    if missing > 0 {
        return Err(RuntimeError::FailedPrecondition(format!(
            "{missing} output rows never arrived"
        )));
    }
    joined(
        tokio::task::spawn_blocking(move || -> Result<()> {
            if let Some(order) = owned_order {
                // The last blocks (the rest were placed while the parts ran); the parts'
                // files are deleted after.
                let t = Instant::now();
                let (placed, blocks) = order.progress();
                let direct = order.direct_blocks();
                order.finish()?;
                tracing::debug!(
                    seconds = t.elapsed().as_secs_f64(),
                    blocks_left = blocks - placed,
                    blocks,
                    direct_before = direct,
                    "the last output rows placed in node order"
                );
            }
            // Attention files first, out.npy last: a complete out.npy means a complete job.
            for (k, a) in attention.into_iter().enumerate() {
                if let Some(a) = a {
                    let missing = lock(&a.seen).iter().filter(|&&s| !s).count();
                    if missing > 0 {
                        return Err(RuntimeError::FailedPrecondition(format!(
                            "layer {k}: {missing} attention coefficient rows never arrived"
                        )));
                    }
                    if let Some(Some((path, index))) = edge_indexes.get(k) {
                        write_npy(path, &[2, (index.len() / 2) as u64], index)?;
                    }
                    a.file.commit()?;
                }
            }
            out_sync.stop()?;
            out.commit().map_err(RuntimeError::from)
        })
        .await,
    )?;
    let workers = assigned
        .iter()
        .enumerate()
        .map(|(p, (id, address))| WorkerSummary {
            part: p as u32,
            worker: id.clone(),
            address: address.clone(),
            shard_cache: done
                .get(&(p as u32))
                .map(|s| s.shard_cache.clone())
                .unwrap_or_default(),
            threads: done.get(&(p as u32)).map_or(0, |s| s.threads),
            shard_bytes_streamed: inputs
                .as_ref()
                .map_or(0, |i| i.shard_bytes[p].load(Ordering::Relaxed)),
            input_bytes_streamed: inputs
                .as_ref()
                .map_or(0, |i| i.input_bytes[p].load(Ordering::Relaxed)),
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
        shard_source: source.name(),
        output_rows: if req.workers_write_output {
            "written"
        } else {
            "sent"
        },
        workers,
        recoveries: recoveries.made,
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

/// The kept build a job names (`build_id`), taken from the coordinator's list: checks
/// that the request names nothing a kept build cannot use.
fn take_kept_build(state: &State, req: &RunJobRequest) -> Result<Arc<KeptBuild>> {
    let id = &req.build_id;
    for (field, value) in [
        ("partition_dir", &req.partition_dir),
        ("graph", &req.graph),
        ("graph_format", &req.graph_format),
        ("edge_features", &req.edge_features),
        ("attention_dir", &req.attention_dir),
    ] {
        if !value.is_empty() {
            return Err(RuntimeError::InvalidArgument(format!(
                "{field}: a job on kept build {id} runs on the build's own parts and edges; \
                 {field} must be empty (run on a partition for it)"
            )));
        }
    }
    required(&req.features, "features")?;
    let mut kept = lock(&state.kept_builds);
    let at = kept.iter().position(|(k, _)| k == id).ok_or_else(|| {
        RuntimeError::NotFound(format!(
            "build_id: no kept build {id} (a build made with keep_parts, not yet used by a job)"
        ))
    })?;
    Ok(kept.remove(at).1)
}

/// The workers holding a kept build's parts, by part, each of which must still be live.
fn kept_workers(state: &State, id: &str, k: &KeptBuild) -> Result<Vec<(String, String)>> {
    let workers = lock(&state.workers);
    for (p, (worker, _)) in k.workers.iter().enumerate() {
        if !workers.iter().any(|w| &w.id == worker && state.is_live(w)) {
            return Err(RuntimeError::FailedPrecondition(format!(
                "part {p} of kept build {id} is held by worker {worker}, which is no longer \
                 live; build the neighbourhood again"
            )));
        }
    }
    Ok(k.workers.clone())
}

/// [`prepare`] for a job on a kept build: N from the build, no partition, no attention.
fn prepare_kept(
    kept: &KeptBuild,
    model_path: &Path,
    out_path: &Path,
    req: &RunJobRequest,
) -> Result<Prepared> {
    let n = kept.nodes;
    let parts = kept.workers.len();
    let model = Model::load(model_path)?;
    model
        .check_edge_features("edge_features (--edge-features)", None)
        .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
    let features_path = PathBuf::from(&req.features);
    let rows = distgat_graph::NpyBody::open(&features_path)?
        .shape
        .first()
        .copied()
        .unwrap_or(0);
    if rows != n as u64 {
        return Err(RuntimeError::InvalidArgument(format!(
            "features: {} has {rows} rows, but the build has {n} points (one row per point)",
            features_path.display()
        )));
    }
    let feature_min = if req.normalize_rows {
        Features::scan(&features_path, "features")?.2
    } else {
        0.0
    };
    let width = model.out_width();
    let (out, header_len) = presized(out_path, "<f4", &[n as u64, width as u64], 4)?;
    Ok(Prepared {
        parts,
        // A kept part lives only on its worker.
        part_restart: false,
        sink: JobSink::new(out_path, out, header_len, parts, n, width, Vec::new())?,
        feature_min,
        edge_indexes: Vec::new(),
        features_path: Some(features_path),
        edge_features_path: None,
        features_check: None,
        graph_check: None,
    })
}

struct Prepared {
    parts: usize,
    /// Whether a lost part can restart alone: only graph layers (no collectives) and no
    /// attention output (its rows are not replayable).
    part_restart: bool,
    sink: JobSink,
    feature_min: f32,
    /// Per layer: where its attention edge index goes, and the index.
    /// Per layer, where its attention edge index goes (`None` for a global layer).
    edge_indexes: Vec<Option<(PathBuf, Vec<i64>)>>,
    /// The features file (when the shards carry no feature rows) and the edge features
    /// file (when the model needs edge attributes the shards do not carry).
    features_path: Option<PathBuf>,
    edge_features_path: Option<PathBuf>,
    /// The job's features file, still to be checked against the shards' feature rows
    /// (while the parts run; before the output is committed).
    features_check: Option<FeaturesCheck>,
    /// The job's graph file, still to be checked against the partition (likewise).
    graph_check: Option<GraphCheck>,
}

/// Sets its flag when dropped, on every way out of the scope that holds it.
struct SetOnDrop(Arc<AtomicBool>);

impl SetOnDrop {
    /// Sets the flag now.
    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.set();
    }
}

/// A features file named with a partition whose shards carry feature rows: it must be the
/// file they were made from, or its rows would be silently ignored.
struct FeaturesCheck {
    path: PathBuf,
    /// What the manifest recorded.
    fingerprint: String,
    partitioned: String,
}

impl FeaturesCheck {
    /// Checks the file in one streaming pass; returns its smallest value. Setting `stop`
    /// ends the pass early with an error.
    fn run(&self, stop: &AtomicBool) -> Result<f32> {
        let scan = distgat_partition::features_file_fingerprint(&self.path, "features", stop)?;
        self.compare(&scan.fingerprint)?;
        Ok(scan.min_value)
    }

    /// [`FeaturesCheck::run`] without the smallest value: a float32 file's bytes are
    /// hashed as they are (no conversion, no finiteness check: the shards' features were
    /// checked when partitioned, so a file with a NaN never matches). On a mismatch the
    /// file is read again with its values checked, so a non-finite value is reported by
    /// its row and column rather than as a different file.
    fn verify(&self, stop: &AtomicBool) -> Result<()> {
        let (digest, _, _) = distgat_partition::features_file_digest(&self.path, "features", stop)?;
        if digest == self.fingerprint {
            return Ok(());
        }
        // The checked pass names a non-finite value, else the mismatch.
        self.run(stop).map(drop)
    }

    fn compare(&self, fingerprint: &str) -> Result<()> {
        if fingerprint != self.fingerprint {
            return Err(RuntimeError::InvalidArgument(format!(
                "features: {} differs from the features the partition's shards carry ({}); \
                 name that file, or repartition with these features",
                self.path.display(),
                self.partitioned
            )));
        }
        Ok(())
    }
}

/// A graph file named with a partition (`RunJobRequest.graph`, without attention output,
/// which reads the graph itself): it must be the graph the partition was made from, or the
/// job would silently run on another graph's edges than the one the caller named.
struct GraphCheck {
    partition: PartitionDir,
    path: PathBuf,
    format: Option<GraphFormat>,
    /// The graph's node count as `distgat infer` counts it: the named features file's
    /// rows, else the partition's nodes.
    num_nodes: usize,
}

impl GraphCheck {
    /// One streaming pass over an int64 `.npy` edge index (any other file is read whole),
    /// compared with the manifest's fingerprint ([`PartitionDir::check_graph_file`]).
    /// Errors name the `graph` field and the file.
    fn verify(&self) -> Result<()> {
        self.partition
            .check_graph_file(&self.path, self.format, self.num_nodes)
            .map_err(|e| graph_error(&self.path, &e.to_string()))
    }
}

/// An error about the job's graph file `path`, naming the `graph` field and the file (an
/// error reading the file names it already; a mismatch names the partition).
fn graph_error(path: &Path, e: &str) -> RuntimeError {
    let path = path.display().to_string();
    RuntimeError::InvalidArgument(match e.contains(&path) {
        true => format!("graph: {e}"),
        false => format!("graph: {path}: {e}"),
    })
}

fn prepare(
    dir: &Path,
    model_path: &Path,
    out_path: &Path,
    attention_dir: Option<&Path>,
    req: &RunJobRequest,
    cancel: &AtomicBool,
) -> Result<Prepared> {
    let partition = PartitionDir::open(dir)?;
    let manifest = &partition.manifest;
    let n = manifest.graph.rows;
    let model = Model::load(model_path)?;
    if attention_dir.is_some() && model.first_local().is_none() {
        return Err(RuntimeError::InvalidArgument(
            "attention_dir: every layer of the model is global attention over all nodes, \
             which has no per-edge coefficients to write; leave attention_dir empty"
                .into(),
        ));
    }
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
    // Edge attributes come from the shards when the partition was made with them;
    // otherwise from the job's edge features file. Given both, they must be the same.
    let edge_features = (!req.edge_features.is_empty()).then(|| PathBuf::from(&req.edge_features));
    let edge_width = match (&edge_features, &manifest.edge_features) {
        (Some(p), in_shards) => {
            let ea = Features::read_edge_npy_for(
                p,
                manifest.graph.size,
                Path::new(&manifest.graph.path),
            )?;
            if let Some(info) = in_shards {
                if distgat_partition::features_fingerprint(&ea) != info.fingerprint {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "edge_features: {} differs from the edge features the partition's \
                         shards carry ({}); repartition with these, or omit them",
                        p.display(),
                        info.path
                    )));
                }
            }
            Some((p.as_path(), ea.width))
        }
        // Edge features the shards carry are used by edge_dim layers and are no error
        // for a model without (the job did not name them).
        (None, Some(info)) if model.edge_dim().is_some() => {
            Some((Path::new(info.path.as_str()), info.size))
        }
        (None, _) => None,
    };
    model
        .check_edge_features("edge_features (--edge-features)", edge_width)
        .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
    // Shards that carry feature rows are what the workers use: a features file given
    // with them must be the one they were made from (else its rows would be ignored). One
    // streaming pass checks it, without holding the matrix; unless row normalisation needs
    // the minimum first, it runs while the workers load their shards.
    let given = (!req.features.is_empty()).then(|| PathBuf::from(&req.features));
    let features_check = match (&given, manifest.features_in_shards, &manifest.features) {
        (Some(p), true, Some(info)) => Some(FeaturesCheck {
            path: p.clone(),
            fingerprint: info.fingerprint.clone(),
            partitioned: info.path.clone(),
        }),
        _ => None,
    };
    // A graph named without attention output is checked against the partition beside the
    // job (with attention output it is read and checked below, for the edge index).
    let graph_check = match (req.graph.is_empty(), attention_dir) {
        (false, None) => Some(GraphCheck {
            partition: partition.clone(),
            path: PathBuf::from(&req.graph),
            format: match req.graph_format.as_str() {
                "" => None,
                name => Some(GraphFormat::from_name(name)?),
            },
            num_nodes: match &given {
                Some(p) => distgat_graph::NpyBody::open(p)?
                    .shape
                    .first()
                    .copied()
                    .unwrap_or(0) as usize,
                None => n,
            },
        }),
        (true, _) if !req.graph_format.is_empty() => {
            return Err(RuntimeError::InvalidArgument(format!(
                "graph_format ({}) describes graph, which is empty",
                req.graph_format
            )))
        }
        _ => None,
    };
    let (features_check, feature_min) = match (features_check, &features_path) {
        (check, _) if !req.normalize_rows => (check, 0.0),
        (Some(check), _) => (None, check.run(cancel)?),
        // One bounded-memory pass (every value checked finite), not the whole file held.
        (None, Some(p)) => (None, Features::scan(p, "features")?.2),
        (None, None) => (None, 0.0),
    };
    let width = model.out_width();
    let (out, header_len) = presized(out_path, "<f4", &[n as u64, width as u64], 4)?;
    let mut attention = Vec::new();
    let mut edge_indexes = Vec::new();
    if let Some(adir) = attention_dir {
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
        let edges = read_graph(&graph_path, format)
            .map_err(|e| graph_error(&graph_path, &e.to_string()))?;
        partition
            .check_graph(&edges, n)
            .map_err(|e| graph_error(&graph_path, &e.to_string()))?;
        // Only once the graph passed, so a refused job leaves no directory behind.
        std::fs::create_dir_all(adir)?;
        let mut loops_before = Vec::with_capacity(edges.len());
        let mut loops = 0u32;
        for (&s, &d) in edges.src().iter().zip(edges.dst()) {
            loops_before.push(loops);
            loops += u32::from(s == d);
        }
        for (k, layer) in model.layers.iter().enumerate() {
            // Global layers have no edges: no coefficient files (as `distgat infer`).
            let Some(layer) = layer.local() else {
                attention.push(None);
                edge_indexes.push(None);
                continue;
            };
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
            edge_indexes.push(Some((
                adir.join(format!("layer{k}_att_edge_index.npy")),
                index,
            )));
        }
    }
    let mut sink = JobSink::new(
        out_path,
        out,
        header_len,
        manifest.parts,
        n,
        width,
        attention,
    )?;
    if req.workers_write_output {
        // Each part writes its own file in owned order; the rows are placed in node order
        // once all are in (see `OwnedOrder`).
        sink.owned_order = Some(OwnedOrder::create(
            out_path,
            sink.out.as_file(),
            sink.out.temp_path(),
            header_len,
            sink.out_written.clone(),
            partition.load_assignment()?,
            manifest.parts,
            width * 4,
            super::placement::BLOCK_BYTES,
        )?);
    }
    Ok(Prepared {
        parts: manifest.parts,
        part_restart: attention_dir.is_none() && !model.has_collective_layers(),
        sink,
        feature_min,
        edge_indexes,
        graph_check,
        features_path: features_path.filter(|_| !manifest.features_in_shards),
        edge_features_path: match (&edge_features, &manifest.edge_features) {
            (Some(p), None) if model.edge_dim().is_some() => Some(p.clone()),
            _ => None,
        },
        features_check,
    })
}

/// What a job's attempt needs to start a part and to restart a lost one.
struct AttemptCtx<'a> {
    state: &'a State,
    job_id: &'a str,
    req: &'a RunJobRequest,
    sink: &'a JobSink,
    feature_min: f32,
    inputs: Option<&'a JobInputs>,
    kept_nodes: u64,
    /// Parts keep their sent halo rows, so a lost part can restart alone on another worker.
    keep_sent_rows: bool,
    record: Option<&'a Arc<JobRecord>>,
}

/// Sends part `p`'s StartJob to its worker `assigned[p]`.
async fn start_part(
    ctx: &AttemptCtx<'_>,
    assigned: &[(String, String)],
    p: usize,
) -> std::result::Result<(), AttemptFailure> {
    let (state, req) = (ctx.state, ctx.req);
    let (id, address) = &assigned[p];
    let peers = assigned
        .iter()
        .enumerate()
        .filter(|&(q, _)| q != p)
        .map(|(q, (_, a))| Peer {
            part: q as u32,
            address: a.clone(),
        })
        .collect();
    let mut client = WorkerClient::new(
        state
            .dialer
            .endpoint(address)?
            .connect()
            .await
            // A worker that cannot be reached is lost (a spare may take its part).
            .map_err(|e| AttemptFailure::Lost {
                worker: id.clone(),
                part: p as u32,
                detail: format!("connecting: {e}"),
            })?,
    );
    let common = StartJobRequest {
        job_id: ctx.job_id.to_string(),
        part: p as u32,
        peers,
        normalize_rows: req.normalize_rows,
        feature_min: ctx.feature_min,
        want_attention: !req.attention_dir.is_empty(),
        // 0: all of each worker's cores (the worker's `kernel_threads`).
        threads: req.threads_per_worker,
        worker_id: id.clone(),
        build_id: req.build_id.clone(),
        num_nodes: ctx.kept_nodes,
        keep_sent_rows: ctx.keep_sent_rows,
        ..Default::default()
    };
    // Stream: no path at all, so a worker cannot silently read a file it happens to see.
    let start = match ctx.inputs {
        Some(inputs) => StartJobRequest {
            shard_source: v1::ShardSource::Stream as i32,
            partition_manifest: inputs.manifest_text.clone(),
            ..common
        },
        None => {
            // The file's layout travels only with the file (a worker refuses it alone).
            let (out_file, out_header_len, out_rows, out_owned_order) =
                match (&ctx.sink.owned_order, &ctx.sink.worker_written) {
                    (Some(order), _) => {
                        let (path, rows) = order.part_file(p);
                        (path, 0, rows, true)
                    }
                    (None, Some(path)) => (
                        path.clone(),
                        ctx.sink.header_len,
                        ctx.sink.num_rows() as u64,
                        false,
                    ),
                    (None, None) => (String::new(), 0, 0, false),
                };
            StartJobRequest {
                shard_source: v1::ShardSource::Shared as i32,
                partition_dir: req.partition_dir.clone(),
                model: req.model.clone(),
                features: req.features.clone(),
                edge_features: req.edge_features.clone(),
                out_file,
                out_header_len,
                out_rows,
                out_owned_order,
                ..common
            }
        }
    };
    let mut r = Request::new(start);
    r.set_timeout(RPC_DEADLINE);
    if let Err(status) = client.start_job(r).await {
        // UNAVAILABLE, or a transport-level failure after which the worker's address
        // refuses connections (a worker killed during the call fails it with UNKNOWN
        // "transport error"): the worker is gone. A live worker's refusal of the job
        // (INVALID_ARGUMENT and the like), which a spare would refuse too, is not probed.
        let lost = status.code() == tonic::Code::Unavailable
            || (crate::net::transport_failure(&status)
                && unreachable_worker(state, assigned, p as u32)
                    .await
                    .is_some());
        let (worker, part) = (id.clone(), p as u32);
        let detail = transport("starting the job")(status).to_string();
        return Err(if lost {
            AttemptFailure::Lost {
                worker,
                part,
                detail,
            }
        } else {
            AttemptFailure::Other(RuntimeError::WorkerFailed {
                worker,
                part,
                detail,
            })
        });
    }
    tracing::info!(job = %ctx.job_id, worker = %id, part = p, "part started");
    Ok(())
}

/// Restarts the lost worker's part alone on another worker, the other parts running on:
/// the replacement starts the part from layer 0, and every other worker is told where the
/// part is now (`RerouteJob`), sending it there the halo rows it kept for it. `Err` (the
/// loss) when no worker is left to take it or the recoveries are used up; the caller then
/// fails the attempt, which may restart the whole job.
async fn restart_part(
    ctx: &AttemptCtx<'_>,
    assigned: &mut [(String, String)],
    recoveries: &mut Recoveries,
    attempt_started: Instant,
    dead: SilentWorker,
) -> std::result::Result<(), AttemptFailure> {
    let state = ctx.state;
    let p = dead.part as usize;
    let mut detail = dead.how;
    let mut lost = dead.worker;
    loop {
        let Some(spare) = recoveries.replacement(state, assigned, p) else {
            return Err(AttemptFailure::Lost {
                worker: lost,
                part: p as u32,
                detail,
            });
        };
        tracing::warn!(
            job = %ctx.job_id, part = p, lost = %lost, replacement = %spare.0,
            "worker lost; restarting its part on another worker: {detail}"
        );
        if let Some(inputs) = ctx.inputs {
            inputs.reassign(p, spare.0.clone());
        }
        ctx.sink.replay_part(p as u32);
        let lost_worker = std::mem::replace(&mut assigned[p], spare.clone());
        recoveries.record(
            p as u32,
            lost_worker.0,
            &spare.0,
            "part",
            attempt_started,
            detail.clone(),
        );
        match start_part(ctx, assigned, p).await {
            Ok(()) => break,
            // The spare is gone too: try the next one.
            Err(AttemptFailure::Lost {
                worker, detail: d, ..
            }) => {
                lost = worker;
                detail = d;
            }
            Err(other) => return Err(other),
        }
    }
    *lock(&state.assignment) = Some((
        ctx.job_id.to_string(),
        assigned.iter().map(|(id, _)| id.clone()).collect(),
    ));
    if let Some(r) = ctx.record {
        r.set_assigned(assigned);
    }
    let address = assigned[p].1.clone();
    // Once per worker: a worker reroutes every part of the job it runs.
    let mut told = HashSet::new();
    for (q, (id, a)) in assigned.iter().enumerate() {
        if q == p || !told.insert(a.clone()) {
            continue;
        }
        let outcome = async {
            let mut client = WorkerClient::new(state.dialer.endpoint(a)?.connect_lazy());
            let mut r = Request::new(RerouteJobRequest {
                job_id: ctx.job_id.to_string(),
                part: p as u32,
                address: address.clone(),
            });
            r.set_timeout(RPC_DEADLINE);
            client
                .reroute_job(r)
                .await
                .map_err(transport("rerouting the job"))
        }
        .await;
        match outcome {
            Ok(r) => tracing::info!(
                job = %ctx.job_id, worker = %id, part = p, chunks = r.into_inner().chunks,
                "rerouted"
            ),
            // A worker that is gone is caught by its heartbeats next.
            Err(e) => tracing::warn!(job = %ctx.job_id, worker = %id, "rerouting part {p}: {e}"),
        }
    }
    Ok(())
}

/// Starts every part and waits until all finish, one fails, or one goes silent (whose
/// part restarts alone on another worker when the parts keep their sent rows).
async fn drive(
    ctx: &AttemptCtx<'_>,
    assigned: &mut [(String, String)],
    recoveries: &mut Recoveries,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> std::result::Result<(), AttemptFailure> {
    let (state, sink) = (ctx.state, ctx.sink);
    let parts = assigned.len();
    let attempt_started = Instant::now();
    for p in 0..parts {
        start_part(ctx, assigned, p).await?;
    }
    let mut last_probe = Instant::now();
    'wait: loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if cancelled() {
            return Err(RuntimeError::Cancelled("cancelled by a client".into()).into());
        }
        let reported = lock(&sink.failure).clone();
        if let Some((part, detail)) = reported {
            // A part that reports a failure is often the victim (its peer died while it
            // was sending), or the report is the lost worker's own broken output stream.
            // Give heartbeats the chance to name the worker that is gone.
            let wait_until =
                Instant::now() + state.config.heartbeat_timeout + Duration::from_secs(1);
            // A worker whose port refuses connections is gone now (a killed process):
            // no need to wait out its heartbeats.
            let refused = unreachable_worker(state, assigned, part).await;
            while Instant::now() < wait_until {
                if let Some(dead) = refused.clone().or_else(|| silent_worker(state, assigned)) {
                    // The lost worker's own report: its part restarts alone (which
                    // clears the report); a live part's failure fails the attempt.
                    if ctx.keep_sent_rows && dead.part == part {
                        restart_part(ctx, assigned, recoveries, attempt_started, dead).await?;
                        continue 'wait;
                    }
                    return Err(dead.into_error(Some(&format!("part {part} reported: {detail}"))));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let worker = assigned
                .get(part as usize)
                .map_or("?".into(), |w| w.0.clone());
            // No worker went silent: a live worker failed at its own work (bad input, a
            // refused message); a spare would fail the same way.
            return Err(RuntimeError::WorkerFailed {
                worker,
                part,
                detail,
            }
            .into());
        }
        let done: HashSet<u32> = lock(&sink.done).keys().copied().collect();
        if done.len() == parts {
            return Ok(());
        }
        let mut gone = silent_worker(state, assigned);
        if gone.is_none() && last_probe.elapsed() >= Duration::from_millis(500) {
            last_probe = Instant::now();
            gone = late_and_refusing(state, assigned).await;
        }
        if let Some(dead) = gone {
            if !ctx.keep_sent_rows {
                return Err(dead.into_error(None));
            }
            restart_part(ctx, assigned, recoveries, attempt_started, dead).await?;
        }
    }
}

/// Part `part`'s worker if its address refuses connections (within 1 s): it is dropped
/// from the registry and counts as lost at once. A worker that answers, or a connection
/// that times out (a silent machine), is left to the heartbeats.
async fn unreachable_worker(
    state: &State,
    assigned: &[(String, String)],
    part: u32,
) -> Option<SilentWorker> {
    let (id, address) = assigned.get(part as usize)?;
    let endpoint = state.dialer.endpoint(address).ok()?;
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(1), endpoint.connect()).await {
        Ok(Err(e)) => {
            lock(&state.workers).retain(|w| &w.id != id);
            tracing::warn!(worker = %id, part, "worker lost: its address refuses connections");
            Some(SilentWorker {
                worker: id.clone(),
                part,
                how: format!(
                    "its address refuses connections ({e}; {:.0} ms)",
                    started.elapsed().as_secs_f64() * 1e3
                ),
            })
        }
        _ => None,
    }
}

/// A worker of the job whose heartbeat is two intervals late and whose address refuses
/// connections: a killed worker is found in about a second, not the heartbeat timeout.
async fn late_and_refusing(state: &State, assigned: &[(String, String)]) -> Option<SilentWorker> {
    let late = 2 * state.config.heartbeat_interval;
    let parts: Vec<u32> = {
        let workers = lock(&state.workers);
        assigned
            .iter()
            .enumerate()
            .filter(|(_, (id, _))| {
                workers
                    .iter()
                    .find(|w| &w.id == id)
                    .is_some_and(|w| w.last_seen.elapsed() > late)
            })
            .map(|(p, _)| p as u32)
            .collect()
    };
    for p in parts {
        if let Some(dead) = unreachable_worker(state, assigned, p).await {
            return Some(dead);
        }
    }
    None
}

/// A worker of the job that is gone.
#[derive(Clone)]
struct SilentWorker {
    worker: String,
    part: u32,
    /// How it was found gone (for the messages).
    how: String,
}

impl SilentWorker {
    fn into_error(self, context: Option<&str>) -> AttemptFailure {
        let mut detail = self.how;
        if let Some(c) = context {
            detail += &format!(" ({c})");
        }
        AttemptFailure::Lost {
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
                how: format!("no heartbeat for {:.1} s", silent.as_secs_f64()),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_ids_map_back_to_their_job() {
        assert_eq!(attempt_name("job-7", 0), "job-7");
        assert_eq!(attempt_name("job-7", 2), "job-7-r2");
        for k in 0..3 {
            assert_eq!(job_of_attempt(&attempt_name("job-7", k)), "job-7");
        }
        // Ids that only look similar stay as they are.
        assert_eq!(job_of_attempt("job-r"), "job-r");
        assert_eq!(job_of_attempt("my-run"), "my-run");
        assert_eq!(job_of_attempt("job-7-rx"), "job-7-rx");
    }
}
