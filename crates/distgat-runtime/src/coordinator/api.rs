//! The coordinator's client API: graphs, partitions, the job queue, results and cluster
//! status. Requests are validated here, at the boundary; every error names the field.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use distgat_graph::{read_graph, GraphFormat, NpyBody, NpyDtype};
use distgat_partition::Method;
use distgat_proto::v1::fetch_output_request::Selection;
use distgat_proto::v1::upload_graph_chunk::Body as UploadBody;
use distgat_proto::v1::{
    BuildNeighboursRequest, ClusterStatusResponse, CreatePartitionRequest, EdgeChunk,
    FetchAttentionRequest, FetchAttentionResponse, FetchOutputRequest, GraphInfo, JobInfo,
    Neighbour, NodeAttention, OutputRows, PartitionInfo, RegisterGraphRequest, RunJobRequest,
    SubmitJobRequest, UploadGraphChunk,
};
use distgat_proto::{MAX_CHUNK_BYTES, PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::job::run_job;
use super::state::State;
use crate::catalog::{
    consecutive_runs, load_model, lock, parse_method, partition_graph, BuiltNeighbourhood,
    GraphEntry, JobRecord, JobSpec, JobState,
};
use crate::convert;
use crate::error::{Result, RuntimeError};
use crate::store::Table;

/// Most jobs waiting in the queue; more is RESOURCE_EXHAUSTED.
pub const MAX_QUEUED_JOBS: usize = 64;
/// Most target nodes in one FetchAttention request.
pub const MAX_ATTENTION_NODES: usize = 10_000;
/// Most neighbours per node in one FetchAttention answer.
pub const MAX_TOP_K: u32 = 1_000;

fn join_error(e: tokio::task::JoinError) -> RuntimeError {
    RuntimeError::Io(std::io::Error::other(e))
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(join_error)?
}

fn new_id(state: &State, prefix: &str) -> String {
    format!("{prefix}-{}", state.next_id.fetch_add(1, Ordering::Relaxed))
}

fn parse_format(field: &str, name: &str) -> Result<Option<GraphFormat>> {
    if name.is_empty() {
        return Ok(None);
    }
    GraphFormat::from_name(name).map(Some).map_err(|_| {
        RuntimeError::InvalidArgument(format!(
            "{field} '{name}' is not a graph format: expected one of {}",
            GraphFormat::NAMES
        ))
    })
}

pub async fn register_graph(state: &Arc<State>, req: RegisterGraphRequest) -> Result<GraphInfo> {
    if req.neighbourhood.is_some() {
        return register_neighbourhood(state, req).await;
    }
    for (field, given) in [
        ("points", !req.points.is_empty()),
        ("parts", req.parts != 0),
        ("threads_per_worker", req.threads_per_worker != 0),
    ] {
        if given {
            return Err(RuntimeError::InvalidArgument(format!(
                "{field} applies to a graph built from points (with neighbourhood), not to \
                 a graph file"
            )));
        }
    }
    let graph = state.storage.resolve("graph", &req.graph)?;
    let features = state.storage.resolve("features", &req.features)?;
    let edge_features = if req.edge_features.is_empty() {
        None
    } else {
        Some(state.storage.resolve("edge_features", &req.edge_features)?)
    };
    let format = parse_format("graph_format", &req.graph_format)?;
    let id = new_id(state, "graph");
    let name = if req.name.is_empty() {
        req.graph.clone()
    } else {
        req.name
    };
    let entry =
        blocking(move || GraphEntry::load(id, name, graph, format, features, edge_features, false))
            .await?;
    add_graph(state, entry)
}

/// `RegisterGraph` with a neighbourhood: builds the graph from points over the live
/// workers (under the job lock, like a job), keeps its edges and spatial split under
/// `work_dir/graphs/<id>`, and registers it.
async fn register_neighbourhood(
    state: &Arc<State>,
    req: RegisterGraphRequest,
) -> Result<GraphInfo> {
    for (field, given) in [
        ("graph", !req.graph.is_empty()),
        ("graph_format", !req.graph_format.is_empty()),
        ("edge_features", !req.edge_features.is_empty()),
    ] {
        if given {
            return Err(RuntimeError::InvalidArgument(format!(
                "{field} cannot be given with neighbourhood: the graph is built from points \
                 (and a built neighbourhood has no edge attributes)"
            )));
        }
    }
    let (rule, options) = convert::neighbour_spec("neighbourhood", req.neighbourhood.as_ref())?;
    super::build::check_distributable("neighbourhood", &rule)?;
    let features = state.storage.resolve("features", &req.features)?;
    let points = if req.points.is_empty() {
        features.clone()
    } else {
        state.storage.resolve("points", &req.points)?
    };
    // Row counts first, from the headers: a mismatch costs no build.
    let (fp, pp) = (features.clone(), points.clone());
    let (feature_rows, point_rows) = blocking(move || {
        let rows = |p: &std::path::Path| -> Result<u64> {
            Ok(NpyBody::open(p)?.shape.first().copied().unwrap_or(0))
        };
        Ok((rows(&fp)?, rows(&pp)?))
    })
    .await?;
    if feature_rows != point_rows {
        return Err(RuntimeError::InvalidArgument(format!(
            "points '{}' has {point_rows} rows but features '{}' has {feature_rows}: one point \
             per node",
            req.points, req.features
        )));
    }
    distgat_neighbours::check_rule(&rule, point_rows as usize, &options)
        .map_err(|e| RuntimeError::InvalidArgument(format!("neighbourhood: {e}")))?;
    let id = new_id(state, "graph");
    let rule_text = convert::rule_text(&rule, &options);
    // Listings show the rule next to the name: the default name is the points file.
    let name = if req.name.is_empty() {
        if req.points.is_empty() {
            req.features.clone()
        } else {
            req.points.clone()
        }
    } else {
        req.name.clone()
    };
    // Built into a temporary directory (removed on failure; a crash leaves it under
    // uploads/, which a restarted coordinator clears), renamed into place when complete.
    let uploads = state.storage.work_dir.join("uploads");
    std::fs::create_dir_all(&uploads)?;
    let tmp = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&uploads)?;
    let (edges_tmp, assignment_tmp) = (
        tmp.path().join("edges.npy"),
        tmp.path().join("assignment.npy"),
    );
    let build_req = BuildNeighboursRequest {
        points: points.display().to_string(),
        spec: Some(convert::neighbour_spec_of(&rule, &options)),
        out: edges_tmp.display().to_string(),
        parts: req.parts,
        threads_per_worker: req.threads_per_worker,
        assignment_out: assignment_tmp.display().to_string(),
        keep_parts: false,
    };
    let summary = {
        let _one_at_a_time = state.job_lock.lock().await;
        super::build::build_neighbours(state, &id, build_req).await?
    };
    let summary_json = serde_json::to_string(&summary).unwrap_or_default();
    let parts = summary.parts.len() as u32;
    let final_dir = state.storage.work_dir.join("graphs").join(&id);
    let state = state.clone();
    blocking(move || {
        let mut entry = GraphEntry::load(
            id,
            name,
            edges_tmp,
            Some(GraphFormat::Npy),
            features,
            None,
            true,
        )?;
        keep_as(tmp, &final_dir)?;
        entry.graph = final_dir.join("edges.npy");
        entry.neighbourhood = Some(BuiltNeighbourhood {
            rule: rule_text,
            assignment: final_dir.join("assignment.npy"),
            parts,
            summary_json,
        });
        add_graph(&state, entry)
    })
    .await
}

/// A registered graph's edges, read from its file and streamed in chunks.
pub fn fetch_edges(
    state: &State,
    graph_id: &str,
) -> Result<ReceiverStream<Result<EdgeChunk, tonic::Status>>> {
    let graph = state.catalog.graph(graph_id)?;
    let permit = state.fetch_permit()?;
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let _permit = permit; // held while the edges stream
        let edges = match read_graph(&graph.graph, graph.format) {
            Ok(e) => e,
            Err(e) => {
                let _ = tx.blocking_send(Err(RuntimeError::from(e).into()));
                return;
            }
        };
        let total = edges.len() as u64;
        let per = convert::EDGES_PER_CHUNK;
        for (k, (s, t)) in edges
            .src()
            .chunks(per)
            .zip(edges.dst().chunks(per))
            .enumerate()
        {
            let chunk = convert::edge_chunk(total, (k * per) as u64, s, t);
            if tx.blocking_send(Ok(chunk)).is_err() {
                return; // the client went away
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// The partitioning method of a request on `graph` with `parts` parts: `name` as
/// [`parse_method`] reads it, plus `spatial` (the split a graph built from points came
/// with), which is also the default for such a graph when `parts` equals its build's.
/// `said` names the part count as the request gave it ([`parts_said`]).
fn method_for(
    field: &str,
    name: &str,
    seed: u64,
    graph: &GraphEntry,
    parts: u32,
    said: &str,
) -> Result<Method> {
    let lower = name.to_ascii_lowercase();
    match (&graph.neighbourhood, lower.as_str()) {
        // The built graph's own parts are the neighbourhood's: nothing is seeded.
        (Some(nb), "" | "spatial") if seed != 0 && nb.parts == parts => {
            Err(RuntimeError::InvalidArgument(format!(
                "seed {seed}: graph '{}' is partitioned into the spatial parts it was built on, \
             which takes no seed; leave seed 0 (or name a seeded method: metis, random)",
                graph.id
            )))
        }
        (Some(nb), "" | "spatial") if nb.parts == parts => Ok(Method::File {
            path: nb.assignment.clone(),
        }),
        (Some(nb), "spatial") => Err(RuntimeError::InvalidArgument(format!(
            "{field} 'spatial': graph '{}' was built on {} parts, not {said}; ask for {} \
             parts or another method",
            graph.id, nb.parts, nb.parts
        ))),
        (None, "spatial") => Err(RuntimeError::InvalidArgument(format!(
            "{field} 'spatial' needs a graph built from points (RegisterGraph with a \
             neighbourhood); graph '{}' was registered from a file",
            graph.id
        ))),
        // One part needs no partitioner: every node goes to part 0, and a seed would be
        // recorded and never used.
        _ if parts == 1 && seed != 0 => Err(RuntimeError::InvalidArgument(format!(
            "seed {seed}: {said} puts every node in part 0 and runs no partitioner; leave \
             seed 0 or ask for more parts"
        ))),
        _ => parse_method(field, name, seed),
    }
}

/// Keeps a complete temporary directory as `final_dir` (renamed; removed if that fails).
fn keep_as(tmp: tempfile::TempDir, final_dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(distgat_graph::parent_dir(final_dir))?;
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, final_dir) {
        let _ = std::fs::remove_dir_all(&kept);
        return Err(e.into());
    }
    Ok(())
}

fn add_graph(state: &State, entry: GraphEntry) -> Result<GraphInfo> {
    tracing::info!(graph = %entry.id, nodes = entry.nodes, edges = entry.edges, "graph registered");
    let info = convert::graph_info(&entry);
    state.catalog.record(Table::Graphs, &entry.id, &entry)?;
    lock(&state.catalog.graphs).insert(entry.id.clone(), Arc::new(entry));
    Ok(info)
}

/// Receives an upload into a temporary directory under the work dir; only a complete,
/// valid upload is kept.
pub async fn upload_graph(
    state: &Arc<State>,
    mut stream: Streaming<UploadGraphChunk>,
) -> Result<GraphInfo> {
    let limit = state.storage.max_upload_bytes;
    let idle = state.config.stream_idle_timeout;
    let header = match crate::net::next_message(&mut stream, idle, "upload").await? {
        Some(UploadGraphChunk {
            body: Some(UploadBody::Header(h)),
        }) => h,
        _ => {
            return Err(RuntimeError::InvalidArgument(
                "the first upload message must be a header".into(),
            ))
        }
    };
    let format = parse_format("header.graph_format", &header.graph_format)?.ok_or_else(|| {
        RuntimeError::InvalidArgument(
            "header.graph_format is empty (an upload has no file name to guess it from)".into(),
        )
    })?;
    let too_big = |n: u64| {
        RuntimeError::ResourceExhausted(format!(
            "upload of {n} bytes exceeds the coordinator's limit of {limit} bytes \
             (--max-upload-bytes); register large graphs by path under the data root instead"
        ))
    };
    let declared = header
        .graph_bytes
        .saturating_add(header.features_bytes)
        .saturating_add(header.edge_features_bytes);
    if declared > limit {
        return Err(too_big(declared));
    }
    let uploads = state.storage.work_dir.join("uploads");
    std::fs::create_dir_all(&uploads)?;
    let tmp = tempfile::Builder::new()
        .prefix(".upload-")
        .tempdir_in(&uploads)?;
    let graph_path = tmp.path().join("graph");
    let features_path = tmp.path().join("features.npy");
    let edge_path = tmp.path().join("edge_attr.npy");
    let mut graph_file = std::io::BufWriter::new(std::fs::File::create(&graph_path)?);
    let mut features_file = std::io::BufWriter::new(std::fs::File::create(&features_path)?);
    let mut edge_file = std::io::BufWriter::new(std::fs::File::create(&edge_path)?);
    let (mut graph_bytes, mut features_bytes, mut edge_bytes) = (0u64, 0u64, 0u64);
    while let Some(chunk) = crate::net::next_message(&mut stream, idle, "upload").await? {
        let (file, count, data) = match chunk.body {
            Some(UploadBody::GraphData(d)) => (&mut graph_file, &mut graph_bytes, d),
            Some(UploadBody::FeaturesData(d)) => (&mut features_file, &mut features_bytes, d),
            Some(UploadBody::EdgeFeaturesData(d)) => (&mut edge_file, &mut edge_bytes, d),
            Some(UploadBody::Header(_)) => {
                return Err(RuntimeError::InvalidArgument(
                    "a second upload header arrived".into(),
                ))
            }
            None => {
                return Err(RuntimeError::InvalidArgument(
                    "upload chunk has no body".into(),
                ))
            }
        };
        *count += data.len() as u64;
        let total = graph_bytes + features_bytes + edge_bytes;
        if total > limit {
            return Err(too_big(total));
        }
        file.write_all(&data)?;
    }
    if graph_bytes == 0 || features_bytes == 0 {
        return Err(RuntimeError::InvalidArgument(format!(
            "upload incomplete: {graph_bytes} graph bytes and {features_bytes} feature bytes \
             (both files are required)"
        )));
    }
    // A file cut short (or grown) on the way is refused rather than parsed as another one.
    for (field, declared, arrived) in [
        ("graph_bytes", header.graph_bytes, graph_bytes),
        ("features_bytes", header.features_bytes, features_bytes),
        (
            "edge_features_bytes",
            header.edge_features_bytes,
            edge_bytes,
        ),
    ] {
        if declared != arrived {
            return Err(RuntimeError::InvalidArgument(format!(
                "upload incomplete: header.{field} is {declared}, but {arrived} bytes arrived"
            )));
        }
    }
    graph_file.flush()?;
    features_file.flush()?;
    edge_file.flush()?;
    drop((graph_file, features_file, edge_file));
    let has_edges = edge_bytes > 0;

    let id = new_id(state, "graph");
    let name = if header.name.is_empty() {
        format!("upload {id}")
    } else {
        header.name
    };
    let final_dir = state.storage.work_dir.join("graphs").join(&id);
    let state = state.clone();
    // Validated, kept and registered in one blocking task: if the client goes away
    // meanwhile, the graph is still registered (ListGraphs shows it), never orphaned.
    blocking(move || {
        // A bad upload leaves nothing behind (tmp is dropped).
        // Errors name the uploaded files, not the coordinator's temporary paths (the
        // client puts its own file names in front).
        let labels = [
            (graph_path.display().to_string(), "the uploaded graph"),
            (features_path.display().to_string(), "the uploaded features"),
            (
                edge_path.display().to_string(),
                "the uploaded edge features",
            ),
        ];
        let edge = has_edges.then_some(edge_path.clone());
        let mut entry = GraphEntry::load(
            id,
            name,
            graph_path.clone(),
            Some(format),
            features_path.clone(),
            edge,
            true,
        )
        .map_err(|e| match e {
            RuntimeError::Graph(_) => RuntimeError::InvalidArgument(
                labels.iter().fold(e.to_string(), |text, (path, label)| {
                    text.replace(path, label)
                }),
            ),
            other => other,
        })?;
        keep_as(tmp, &final_dir)?;
        entry.graph = final_dir.join("graph");
        entry.features = final_dir.join("features.npy");
        if entry.edge_features.is_some() {
            entry.edge_features = Some(final_dir.join("edge_attr.npy"));
        }
        add_graph(&state, entry)
    })
    .await
}

/// Live workers right now.
fn live_workers(state: &State) -> usize {
    lock(&state.workers)
        .iter()
        .filter(|w| state.is_live(w))
        .count()
}

/// How to name the part count in a message, as the request gave it: `parts 3`, or
/// `parts 0 (one per live worker: 3)` when `requested` was 0.
fn parts_said(requested: u32, parts: u32) -> String {
    if requested == 0 {
        format!("parts 0 (one per live worker: {parts})")
    } else {
        format!("parts {parts}")
    }
}

/// The part count a request asks for (0: one per live worker).
fn parts_for(state: &State, parts: u32) -> Result<u32> {
    if parts > 0 {
        return Ok(parts);
    }
    match live_workers(state) {
        0 => Err(no_workers()),
        n => Ok(n as u32),
    }
}

fn no_workers() -> RuntimeError {
    RuntimeError::FailedPrecondition(
        "no worker is registered with this coordinator; start workers with \
         `distgat worker --coordinator <this address>` or `cluster/local.sh K`"
            .into(),
    )
}

pub async fn create_partition(
    state: &Arc<State>,
    req: CreatePartitionRequest,
) -> Result<PartitionInfo> {
    let graph = state.catalog.graph(&req.graph_id)?;
    let parts = parts_for(state, req.parts)?;
    let said = parts_said(req.parts, parts);
    if u64::from(parts) > graph.nodes {
        return Err(RuntimeError::InvalidArgument(format!(
            "{said} exceeds the graph's {} nodes",
            graph.nodes
        )));
    }
    let method = method_for("method", &req.method, req.seed, &graph, parts, &said)?;
    let id = new_id(state, "partition");
    let dir = state.storage.work_dir.join("partitions").join(&id);
    let graph_id = graph.id.clone();
    let entry = blocking(move || partition_graph(id, &graph, parts, method, dir)).await?;
    let info = convert::partition_info(&entry);
    // The graph may have been deleted meanwhile (lock order: graphs, then partitions).
    let graphs = lock(&state.catalog.graphs);
    if !graphs.contains_key(&graph_id) {
        drop(graphs);
        let _ = std::fs::remove_dir_all(&entry.dir);
        return Err(RuntimeError::NotFound(format!(
            "graph_id '{graph_id}' was deleted while it was being partitioned"
        )));
    }
    state.catalog.record(Table::Partitions, &entry.id, &entry)?;
    lock(&state.catalog.partitions).insert(entry.id.clone(), Arc::new(entry));
    drop(graphs);
    Ok(info)
}

pub async fn submit_job(state: &Arc<State>, req: SubmitJobRequest) -> Result<JobInfo> {
    let graph = state.catalog.graph(&req.graph_id)?;
    let model_path = state.storage.resolve("model", &req.model)?;
    let partition = if req.partition_id.is_empty() {
        None
    } else {
        let p = state.catalog.partition(&req.partition_id)?;
        if p.graph_id != graph.id {
            return Err(RuntimeError::InvalidArgument(format!(
                "partition_id '{}' partitions graph '{}', not graph_id '{}'",
                p.id, p.graph_id, graph.id
            )));
        }
        Some((*p).clone())
    };
    if let (Some(p), false) = (&partition, req.method.is_empty()) {
        return Err(RuntimeError::InvalidArgument(format!(
            "method '{}': partition_id '{}' names a partition made already (by {}); leave \
             method empty, or partition_id empty to partition anew",
            req.method, p.id, p.method
        )));
    }
    let shard_source =
        crate::convert::shard_source("shard_source", &req.shard_source, state.config.shard_source)?;
    let live = live_workers(state);
    if live == 0 {
        return Err(no_workers());
    }
    let parts = match (&partition, req.parts) {
        (Some(p), 0) => p.parts,
        (Some(p), k) if k != p.parts => {
            return Err(RuntimeError::InvalidArgument(format!(
                "parts {k} differs from partition_id '{}', which has {} parts",
                p.id, p.parts
            )))
        }
        (_, 0) => live as u32,
        (_, k) => k,
    };
    if parts as usize > live {
        return Err(RuntimeError::FailedPrecondition(format!(
            "the job needs {parts} workers (one per part) but {live} are registered; start \
             more workers or ask for fewer parts"
        )));
    }
    let said = match (&partition, req.parts) {
        (Some(p), 0) => format!("parts 0 (partition_id '{}' has {parts})", p.id),
        _ => parts_said(req.parts, parts),
    };
    if u64::from(parts) > graph.nodes {
        return Err(RuntimeError::InvalidArgument(format!(
            "{said} exceeds the graph's {} nodes",
            graph.nodes
        )));
    }
    let method = method_for("method", &req.method, 0, &graph, parts, &said)?;
    let entry = graph.clone();
    let model = blocking(move || load_model(&model_path, &entry).map(|m| (m, model_path))).await?;
    let (model, model_path) = model;
    if req.attention && model.first_local().is_none() {
        return Err(RuntimeError::InvalidArgument(
            "attention: every layer of the model is global attention over all nodes, which \
             has no per-edge coefficients to keep; leave attention false"
                .into(),
        ));
    }
    let mut jobs = lock(&state.catalog.jobs);
    // Under the jobs lock, which deletions take first: the graph and partition still exist.
    if !lock(&state.catalog.graphs).contains_key(&graph.id) {
        return Err(RuntimeError::NotFound(format!(
            "graph_id '{}' was deleted",
            graph.id
        )));
    }
    if let Some(p) = &partition {
        if !lock(&state.catalog.partitions).contains_key(&p.id) {
            return Err(RuntimeError::NotFound(format!(
                "partition_id '{}' was deleted",
                p.id
            )));
        }
    }
    // Counted and pushed under one lock, so concurrent submits cannot overfill the queue.
    let queued = jobs
        .iter()
        .filter(|j| j.state() == JobState::Queued)
        .count();
    if queued >= MAX_QUEUED_JOBS {
        return Err(RuntimeError::ResourceExhausted(format!(
            "{MAX_QUEUED_JOBS} jobs are already queued; wait for some to finish"
        )));
    }
    let seq = state.next_id.fetch_add(1, Ordering::Relaxed);
    let id = format!("job-{seq}");
    let spec = JobSpec {
        graph: (*graph).clone(),
        partition,
        parts,
        method,
        model: model_path,
        normalize_features: req.normalize_features,
        attention: req.attention,
        threads_per_worker: req.threads_per_worker,
        shard_source: shard_source.name().to_string(),
    };
    let out_dir = state.storage.work_dir.join("jobs").join(&id);
    let record = JobRecord::new(id.clone(), seq, spec, out_dir, model.layers.len() as u32);
    record.update(|s| s.output_width = model.out_width() as u32);
    let record = Arc::new(record.stored_in(state.catalog.store.clone())?);
    jobs.push(record.clone());
    drop(jobs);
    state
        .queue
        .send(record.clone())
        .map_err(|_| RuntimeError::FailedPrecondition("the coordinator is shutting down".into()))?;
    tracing::info!(job = %id, parts, "job queued");
    Ok(job_info(state, &record))
}

pub fn job_info(state: &State, record: &JobRecord) -> JobInfo {
    let status = record.status();
    let mut info = convert::job_info(record, &status);
    if status.state == JobState::Queued {
        info.queue_position = state.catalog.queue_position(record);
    }
    info
}

pub fn cancel_job(state: &State, job_id: &str, reason: &str) -> Result<JobInfo> {
    let record = state.catalog.job(job_id)?;
    let status = record.status();
    match status.state {
        // Cancelling twice is not an error: a retried call must not fail.
        JobState::Cancelled => return Ok(job_info(state, &record)),
        JobState::Succeeded | JobState::Failed => {
            return Err(RuntimeError::FailedPrecondition(format!(
                "job_id '{job_id}' already ended ({:?})",
                status.state
            )))
        }
        _ => {}
    }
    let why = if reason.is_empty() {
        "cancelled by a client".to_string()
    } else {
        format!("cancelled: {reason}")
    };
    // A queued job ends here; a started one when the executor sees the flag.
    record.cancel_if_queued(why);
    tracing::info!(job = %job_id, "cancel requested");
    Ok(job_info(state, &record))
}

/// A job's snapshots, from now until it ends.
pub fn watch_job(
    state: &Arc<State>,
    job_id: &str,
) -> Result<ReceiverStream<Result<JobInfo, tonic::Status>>> {
    let record = state.catalog.job(job_id)?;
    let (tx, rx) = mpsc::channel(16);
    let state = state.clone();
    tokio::spawn(async move {
        let mut changes = record.subscribe();
        loop {
            changes.borrow_and_update();
            let info = job_info(&state, &record);
            let ended = record.state().is_terminal();
            if tx.send(Ok(info)).await.is_err() || ended {
                return;
            }
            // Queue positions change without this job changing: poll now and then.
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// The executor: takes queued jobs in order and runs each to its end. It holds the state
/// weakly, so a coordinator that is shut down and dropped ends it.
pub async fn run_queue(state: Weak<State>, mut queue: mpsc::UnboundedReceiver<Arc<JobRecord>>) {
    while let Some(record) = queue.recv().await {
        let Some(state) = state.upgrade() else {
            return;
        };
        let _one_at_a_time = state.job_lock.lock().await;
        // Checked under the lock: the job may have been cancelled while it waited.
        if !record.start() {
            continue;
        }
        if let Err(e) = execute(&state, &record).await {
            if e.is_refusal() {
                tracing::info!(job = %record.id, "job refused: {e}");
            } else {
                tracing::warn!(job = %record.id, "job failed: {e}");
            }
            record.fail(e.to_string());
        }
        super::delete::enforce_retention(&state).await;
    }
}

async fn execute(state: &Arc<State>, record: &Arc<JobRecord>) -> Result<()> {
    let spec = &record.spec;
    let partition = match &spec.partition {
        Some(p) => p.clone(),
        None => {
            record.set_state(JobState::Partitioning);
            let id = new_id(state, "partition");
            let dir = state.storage.work_dir.join("partitions").join(&id);
            let graph = spec.graph.clone();
            let (parts, method) = (spec.parts, spec.method.clone());
            let entry = blocking(move || partition_graph(id, &graph, parts, method, dir)).await?;
            // The job names it before it is listed, so it cannot be deleted under the job.
            record.update(|s| s.partition_id = entry.id.clone());
            state.catalog.record(Table::Partitions, &entry.id, &entry)?;
            lock(&state.catalog.partitions).insert(entry.id.clone(), Arc::new(entry.clone()));
            entry
        }
    };
    if record.cancel.load(Ordering::SeqCst) {
        return Err(RuntimeError::Cancelled("cancelled by a client".into()));
    }
    record.set_state(JobState::Running);
    std::fs::create_dir_all(&record.out_dir)?;
    let req = RunJobRequest {
        build_id: String::new(),
        // Client-API workers may run on other machines: they send their rows.
        workers_write_output: false,
        partition_dir: partition.dir.display().to_string(),
        model: spec.model.display().to_string(),
        features: spec.graph.features.display().to_string(),
        normalize_rows: spec.normalize_features,
        out: record.out_path().display().to_string(),
        attention_dir: if spec.attention {
            record.attention_dir().display().to_string()
        } else {
            String::new()
        },
        // Read for the attention edge index. Without attention the job does not read it: the
        // coordinator made the partition from this registered graph itself, so it is not
        // fingerprinted again.
        graph: match spec.attention {
            true => spec.graph.graph.display().to_string(),
            false => String::new(),
        },
        graph_format: match (spec.attention, spec.graph.format) {
            (true, Some(f)) => f.name().to_string(),
            _ => String::new(),
        },
        edge_features: spec
            .graph
            .edge_features
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        threads_per_worker: spec.threads_per_worker,
        shard_source: spec.shard_source.clone(),
    };
    let summary = run_job(state, &record.id, req, Some(record)).await?;
    let json = serde_json::to_string(&summary).unwrap_or_default();
    // The model was read again when the job ran: take the width from what was written,
    // so fetches read rows at the right offsets whatever happened to the file meanwhile.
    let width = open_output(&record.out_path())?.width as u32;
    record.update(|s| {
        s.state = JobState::Succeeded;
        s.summary_json = json;
        s.output_width = width;
    });
    tracing::info!(job = %record.id, "job succeeded");
    Ok(())
}

/// A job's out.npy, opened and checked ([rows, width] float32, body size as the header
/// says): the file, its header length, rows and width.
struct OutputFile {
    file: std::fs::File,
    header_len: u64,
    rows: u64,
    width: usize,
}

fn open_output(path: &std::path::Path) -> Result<OutputFile> {
    let body = NpyBody::open(path)?;
    match (body.dtype, body.shape.as_slice()) {
        (NpyDtype::F32, &[rows, width]) if !body.fortran_order => Ok(OutputFile {
            header_len: body.header_len,
            rows,
            width: width as usize,
            file: body.into_file(),
        }),
        _ => Err(RuntimeError::Io(std::io::Error::other(format!(
            "{}: not a [rows, width] float32 output",
            path.display()
        )))),
    }
}

fn finished(state: &State, job_id: &str) -> Result<Arc<JobRecord>> {
    let record = state.catalog.job(job_id)?;
    let s = record.status();
    if s.state != JobState::Succeeded {
        return Err(RuntimeError::FailedPrecondition(format!(
            "job_id '{job_id}' has no results: it is {:?}{}",
            s.state,
            if s.error.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.error)
            }
        )));
    }
    Ok(record)
}

/// Streams output rows from the job's out.npy, in at most MAX_CHUNK_BYTES per message.
pub fn fetch_output(
    state: &State,
    req: FetchOutputRequest,
) -> Result<ReceiverStream<Result<OutputRows, tonic::Status>>> {
    let record = finished(state, &req.job_id)?;
    // Rows and width from the file itself, which is what the reads below index.
    let output = open_output(&record.out_path())?;
    let (rows, width, header) = (output.rows, output.width, output.header_len);
    let ids: Box<dyn Iterator<Item = u64> + Send> = match req.selection {
        None => Box::new(0..rows),
        Some(Selection::Range(r)) => {
            if r.start >= r.end || r.end > rows {
                return Err(RuntimeError::InvalidArgument(format!(
                    "range [{}, {}) is empty or beyond the {rows} output rows",
                    r.start, r.end
                )));
            }
            Box::new(r.start..r.end)
        }
        Some(Selection::Nodes(list)) => {
            if list.ids.is_empty() {
                return Err(RuntimeError::InvalidArgument("nodes.ids is empty".into()));
            }
            if let Some((i, v)) = list.ids.iter().enumerate().find(|(_, &v)| v >= rows) {
                return Err(RuntimeError::InvalidArgument(format!(
                    "nodes.ids[{i}] = {v} is out of range ({rows} output rows)"
                )));
            }
            Box::new(list.ids.into_iter())
        }
    };
    let file = Arc::new(output.file);
    let row_bytes = width * 4;
    let per_chunk = (MAX_CHUNK_BYTES / row_bytes.max(1)).max(1);
    let permit = state.fetch_permit()?;
    let (tx, rx) = mpsc::channel(4);
    // An async task that borrows a blocking thread only for each chunk's read: a client
    // that stops reading parks this task, not one of the blocking pool's threads.
    tokio::spawn(async move {
        let _permit = permit; // held while the rows stream
        let mut ids = ids.peekable();
        while ids.peek().is_some() {
            let nodes: Vec<u64> = ids.by_ref().take(per_chunk).collect();
            let file = file.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut values = vec![0u8; nodes.len() * row_bytes];
                // Consecutive ids (ranges, whole fetches) are read in one call.
                for run in consecutive_runs(&nodes) {
                    file.read_exact_at(
                        &mut values[run.start * row_bytes..run.end * row_bytes],
                        header + nodes[run.start] * row_bytes as u64,
                    )?;
                }
                Ok::<_, std::io::Error>(OutputRows {
                    nodes,
                    width: width as u32,
                    values,
                })
            })
            .await;
            let message = match read {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(e)) => Err(tonic::Status::internal(format!("reading the output: {e}"))),
                Err(e) => Err(tonic::Status::internal(format!("reading the output: {e}"))),
            };
            let failed = message.is_err();
            if tx.send(message).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

pub async fn fetch_attention(
    state: &State,
    req: FetchAttentionRequest,
) -> Result<FetchAttentionResponse> {
    let record = finished(state, &req.job_id)?;
    if !record.spec.attention {
        return Err(RuntimeError::FailedPrecondition(format!(
            "job_id '{}' was not submitted with attention = true",
            req.job_id
        )));
    }
    let status = record.status();
    if req.layer >= status.layers {
        return Err(RuntimeError::InvalidArgument(format!(
            "layer {} does not exist (the model has {} layers)",
            req.layer, status.layers
        )));
    }
    if req.nodes.is_empty() || req.nodes.len() > MAX_ATTENTION_NODES {
        return Err(RuntimeError::InvalidArgument(format!(
            "nodes has {} ids: ask for 1 to {MAX_ATTENTION_NODES}",
            req.nodes.len()
        )));
    }
    if let Some((i, v)) = req
        .nodes
        .iter()
        .enumerate()
        .find(|(_, &v)| v >= status.output_rows)
    {
        return Err(RuntimeError::InvalidArgument(format!(
            "nodes[{i}] = {v} is out of range ({} nodes)",
            status.output_rows
        )));
    }
    if req.top_k > MAX_TOP_K {
        return Err(RuntimeError::InvalidArgument(format!(
            "top_k {} exceeds {MAX_TOP_K}",
            req.top_k
        )));
    }
    let top_k = if req.top_k == 0 {
        10
    } else {
        req.top_k as usize
    };
    let dir = record.attention_dir();
    let layer = req.layer;
    let num_nodes = status.output_rows;
    let permit = state.fetch_permit()?;
    blocking(move || {
        let _permit = permit;
        let (heads, lists) = super::attention_index::incoming(&dir, layer, num_nodes, &req.nodes)?;
        let nodes = req
            .nodes
            .iter()
            .zip(lists)
            .map(|(&v, edges)| {
                let in_degree = edges.len() as u32;
                let mut top: Vec<Neighbour> = edges
                    .into_iter()
                    .map(|i| Neighbour {
                        source: i.source,
                        edge: i.edge,
                        mean_alpha: i.alpha.iter().sum::<f32>() / heads.max(1) as f32,
                        alpha: i.alpha,
                    })
                    .collect();
                top.sort_by(|a, b| {
                    b.mean_alpha
                        .total_cmp(&a.mean_alpha)
                        .then(a.edge.cmp(&b.edge))
                });
                top.truncate(top_k);
                NodeAttention {
                    node: v,
                    in_degree,
                    top,
                }
            })
            .collect();
        Ok(FetchAttentionResponse {
            layer,
            heads: heads as u32,
            nodes,
        })
    })
    .await
}

pub fn cluster_status(state: &State) -> ClusterStatusResponse {
    let assignment = lock(&state.assignment).clone();
    let mut registry = lock(&state.workers);
    crate::registry::prune_departed(&mut registry, state.config.heartbeat_timeout);
    let workers = registry
        .iter()
        .map(|w| {
            let part = assignment
                .as_ref()
                .and_then(|(_, ids)| ids.iter().position(|id| id == &w.id));
            convert::worker_status(
                w,
                state.is_live(w),
                part.and(assignment.as_ref().map(|(job, _)| job.as_str())),
                part.map(|p| p as u32),
            )
        })
        .collect();
    drop(registry);
    ClusterStatusResponse {
        protocol_version: PROTOCOL_VERSION,
        workers,
        running_job: assignment.map(|(job, _)| job).unwrap_or_default(),
        queued_jobs: state.catalog.queued() as u32,
    }
}
