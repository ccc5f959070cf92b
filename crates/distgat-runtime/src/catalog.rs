//! The coordinator's client-facing state: registered graphs, partitions, and the job queue
//! with each job's status. Jobs run one at a time (they share every worker); everything
//! else is bookkeeping behind short mutexes.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use distgat_attention::Model;
use distgat_graph::{read_graph, Features, GraphFormat};
use distgat_partition::{run_partition, Method, PartitionConfig};
use distgat_proto::v1::LayerStats;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Result, RuntimeError};
use crate::store::{Loaded, Store, StoredJob, Table};

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Index ranges of `ids` over which the ids are consecutive (v, v + 1, ...): rows that sit
/// next to each other in an `.npy` body, read or written with one call.
pub(crate) fn consecutive_runs(ids: &[u64]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= ids.len() {
            return None;
        }
        let mut end = start + 1;
        while end < ids.len() && ids[end] == ids[end - 1] + 1 {
            end += 1;
        }
        let run = start..end;
        start = end;
        Some(run)
    })
}

/// A graph format stored by its name (`npy`, `edgelist`, `metis`, `mtx`).
mod format_name {
    use distgat_graph::GraphFormat;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(f: &Option<GraphFormat>, s: S) -> Result<S::Ok, S::Error> {
        f.map(|f| f.name()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GraphFormat>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|name| GraphFormat::from_name(&name).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Where client-supplied paths may point, and where the coordinator keeps its own files.
#[derive(Debug)]
pub(crate) struct Storage {
    /// Canonical; every server-side path a client names must resolve inside it.
    pub data_root: PathBuf,
    /// Uploads, partitions and job outputs. Workers read partitions from here, so on a
    /// real cluster it is on storage they share.
    pub work_dir: PathBuf,
    pub max_upload_bytes: u64,
}

impl Storage {
    pub fn new(data_root: &Path, work_dir: &Path, max_upload_bytes: u64) -> Result<Self> {
        let data_root = data_root.canonicalize().map_err(|e| {
            RuntimeError::InvalidArgument(format!("data root {}: {e}", data_root.display()))
        })?;
        // Created when first needed, so a coordinator that is never used leaves nothing.
        let work_dir = std::path::absolute(work_dir).map_err(|e| {
            RuntimeError::InvalidArgument(format!("work dir {}: {e}", work_dir.display()))
        })?;
        Ok(Storage {
            data_root,
            work_dir,
            max_upload_bytes,
        })
    }

    /// Resolves a client path (relative to the data root, or absolute) and refuses anything
    /// that leaves the root, by `..` or through a symbolic link. The lexical check comes
    /// first so that probing outside the root does not reveal whether a file exists.
    pub fn resolve(&self, field: &str, path: &str) -> Result<PathBuf> {
        if path.is_empty() {
            return Err(RuntimeError::InvalidArgument(format!("{field} is empty")));
        }
        let joined = self.data_root.join(path);
        let mut lexical = PathBuf::new();
        for c in joined.components() {
            match c {
                Component::ParentDir => {
                    lexical.pop();
                }
                Component::CurDir => {}
                other => lexical.push(other),
            }
        }
        let outside = || {
            RuntimeError::PermissionDenied(format!(
                "{field} '{path}' is outside the data root {}",
                self.data_root.display()
            ))
        };
        if !lexical.starts_with(&self.data_root) {
            return Err(outside());
        }
        let canonical = lexical.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RuntimeError::NotFound(format!(
                "{field} '{path}' does not exist under the data root"
            )),
            _ => RuntimeError::InvalidArgument(format!("{field} '{path}': {e}")),
        })?;
        if !canonical.starts_with(&self.data_root) {
            return Err(outside());
        }
        Ok(canonical)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GraphEntry {
    pub id: String,
    pub name: String,
    pub graph: PathBuf,
    #[serde(with = "format_name")]
    pub format: Option<GraphFormat>,
    pub features: PathBuf,
    pub nodes: u64,
    pub edges: u64,
    pub feature_width: u32,
    /// Edge attributes `[edges, D]`, for models with `edge_dim` layers.
    pub edge_features: Option<PathBuf>,
    pub edge_feature_width: u32,
    /// The coordinator's own files (an upload, a built neighbourhood): under
    /// `work_dir/graphs/<id>`, deleted with the graph.
    pub uploaded: bool,
    /// Set for a graph built from points (`RegisterGraph` with a neighbourhood).
    #[serde(default)]
    pub neighbourhood: Option<BuiltNeighbourhood>,
}

/// How a registered graph was built from points, and the spatial split of the build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BuiltNeighbourhood {
    /// The rule as `distgat graphs` shows it, e.g. `knn:16` or `radius:0.5,loop`.
    pub rule: String,
    /// int64 `[N]`: the part of each node in the build's recursive coordinate bisection.
    pub assignment: PathBuf,
    pub parts: u32,
    pub summary_json: String,
}

impl GraphEntry {
    /// Reads the files and checks they fit together (blocking).
    pub fn load(
        id: String,
        name: String,
        graph: PathBuf,
        format: Option<GraphFormat>,
        features: PathBuf,
        edge_features: Option<PathBuf>,
        uploaded: bool,
    ) -> Result<Self> {
        let edges = read_graph(&graph, format)?;
        let f = Features::read_npy(&features)?;
        let source = format!("the {} rows of the features", f.num_nodes);
        edges.check_ids(f.num_nodes as u64, &graph, &source)?;
        let edge_feature_width = match &edge_features {
            Some(path) => Features::read_edge_npy_for(path, edges.len(), &graph)?.width as u32,
            None => 0,
        };
        Ok(GraphEntry {
            edge_features,
            edge_feature_width,
            id,
            name,
            nodes: f.num_nodes as u64,
            edges: edges.len() as u64,
            feature_width: f.width as u32,
            graph,
            format,
            features,
            uploaded,
            neighbourhood: None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartitionEntry {
    pub id: String,
    pub graph_id: String,
    pub dir: PathBuf,
    pub parts: u32,
    pub method: String,
    pub edge_cut: u64,
    pub halo_rows: u64,
    pub seconds: f64,
}

/// Parses a method name from a request (`field` names it in errors).
pub(crate) fn parse_method(field: &str, name: &str, seed: u64) -> Result<Method> {
    match name.to_ascii_lowercase().as_str() {
        "" | "metis" => {
            let mut m = Method::metis_default();
            if let Method::Metis { seed: s, .. } = &mut m {
                *s = seed;
            }
            Ok(m)
        }
        "random" => Ok(Method::Random { seed }),
        // The seed is proto3's 0 when unset; another seed would be silently unused.
        "range" if seed != 0 => Err(RuntimeError::InvalidArgument(format!(
            "seed {seed}: method 'range' (contiguous id blocks) takes no seed; leave seed 0"
        ))),
        "range" => Ok(Method::Range),
        other => Err(RuntimeError::InvalidArgument(format!(
            "{field} '{other}' is not a method: expected metis, random or range"
        ))),
    }
}

/// Partitions a registered graph into `dir` (blocking; METIS may take minutes).
pub(crate) fn partition_graph(
    id: String,
    graph: &GraphEntry,
    parts: u32,
    method: Method,
    dir: PathBuf,
) -> Result<PartitionEntry> {
    let started = Instant::now();
    std::fs::create_dir_all(distgat_graph::parent_dir(&dir))?;
    let manifest = run_partition(&PartitionConfig {
        graph: graph.graph.clone(),
        format: graph.format,
        features: Some(graph.features.clone()),
        edge_features: graph.edge_features.clone(),
        parts: parts as usize,
        method: method.clone(),
        out: dir.clone(),
        ..Default::default()
    })?;
    Ok(PartitionEntry {
        id,
        graph_id: graph.id.clone(),
        dir,
        parts,
        // The split a graph built from points came with is shown as what it is.
        method: match (&method, &graph.neighbourhood) {
            (Method::File { path }, Some(nb)) if *path == nb.assignment => "spatial".into(),
            _ => method.name().to_string(),
        },
        edge_cut: manifest.stats.edge_cut as u64,
        halo_rows: manifest.stats.halo_rows_total as u64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Partitioning,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// What a submitted job runs, validated at submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobSpec {
    pub graph: GraphEntry,
    pub partition: Option<PartitionEntry>,
    pub parts: u32,
    pub method: Method,
    pub model: PathBuf,
    pub normalize_features: bool,
    pub attention: bool,
    pub threads_per_worker: u32,
    /// "stream" or "shared" (checked at submission); empty (a job recorded before shard
    /// sources existed): the coordinator's default.
    #[serde(default)]
    pub shard_source: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PartStatus {
    pub part: u32,
    pub worker_id: String,
    pub worker_address: String,
    pub layers_done: u32,
    pub halo_bytes_sent: u64,
    /// Within layer `layers_done`: attention entries aggregated, of all (last heartbeat).
    pub layer_entries_done: u64,
    pub layer_entries_total: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobStatus {
    pub state: JobState,
    pub partition_id: String,
    pub parts: u32,
    pub layers: u32,
    pub progress: Vec<PartStatus>,
    pub error: String,
    pub output_rows: u64,
    pub output_width: u32,
    /// Not stored: a reloaded job is never running.
    #[serde(skip)]
    pub started: Option<Instant>,
    pub seconds: f64,
    pub summary_json: String,
}

/// One submitted job: its spec, its status, and who is watching it.
pub(crate) struct JobRecord {
    pub id: String,
    /// Submission order (for queue positions and listings).
    pub seq: u64,
    pub spec: JobSpec,
    pub out_dir: PathBuf,
    status: Mutex<JobStatus>,
    /// Bumped on every status change; WatchJob streams follow it.
    changed: watch::Sender<u64>,
    pub cancel: Arc<AtomicBool>,
    /// Where state changes are recorded (none in unit tests).
    store: Option<Arc<Store>>,
}

impl JobRecord {
    pub fn new(id: String, seq: u64, spec: JobSpec, out_dir: PathBuf, layers: u32) -> Self {
        let status = JobStatus {
            state: JobState::Queued,
            partition_id: spec
                .partition
                .as_ref()
                .map(|p| p.id.clone())
                .unwrap_or_default(),
            parts: spec.parts,
            layers,
            progress: Vec::new(),
            error: String::new(),
            output_rows: spec.graph.nodes,
            output_width: 0,
            started: None,
            seconds: 0.0,
            summary_json: String::new(),
        };
        JobRecord {
            id,
            seq,
            spec,
            out_dir,
            status: Mutex::new(status),
            changed: watch::channel(0).0,
            cancel: Arc::new(AtomicBool::new(false)),
            store: None,
        }
    }

    /// Records this job (now and at every change of state) in `store`.
    pub fn stored_in(mut self, store: Option<Arc<Store>>) -> Result<Self> {
        self.store = store;
        self.persist(&lock(&self.status))?;
        Ok(self)
    }

    /// A job read back from the store (one that had not ended is marked failed).
    pub fn reloaded(job: StoredJob, store: Arc<Store>) -> Result<Self> {
        let mut status = job.status;
        let was = status.state;
        crate::store::interrupted(&mut status);
        let record = JobRecord {
            id: job.id,
            seq: job.seq,
            spec: job.spec,
            out_dir: job.out_dir,
            status: Mutex::new(status),
            changed: watch::channel(0).0,
            cancel: Arc::new(AtomicBool::new(false)),
            store: Some(store),
        };
        if !was.is_terminal() {
            record.persist(&lock(&record.status))?;
        }
        Ok(record)
    }

    fn persist(&self, status: &JobStatus) -> Result<()> {
        match &self.store {
            Some(store) => store.put_job(&self.id, self.seq, &self.spec, &self.out_dir, status),
            None => Ok(()),
        }
    }

    pub fn status(&self) -> JobStatus {
        let mut s = lock(&self.status).clone();
        if let (Some(t), false) = (s.started, s.state.is_terminal()) {
            s.seconds = t.elapsed().as_secs_f64();
        }
        s
    }

    /// Only the state: for checks that need no copy of the whole status.
    pub fn state(&self) -> JobState {
        lock(&self.status).state
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Applies `f` to the status and wakes watchers. Terminal states are final.
    pub fn update(&self, f: impl FnOnce(&mut JobStatus)) {
        self.update_if(|s| {
            f(s);
            true
        });
    }

    /// Applies `f` to the status; wakes watchers only when `f` says it changed something.
    /// Terminal states are final.
    fn update_if(&self, f: impl FnOnce(&mut JobStatus) -> bool) {
        {
            let mut s = lock(&self.status);
            let before = s.state;
            if s.state.is_terminal() || !f(&mut s) {
                return;
            }
            if s.state.is_terminal() {
                if let Some(t) = s.started {
                    s.seconds = t.elapsed().as_secs_f64();
                }
            }
            // Recorded under the status lock, so the store never ends on an older state.
            if s.state != before {
                if let Err(e) = self.persist(&s) {
                    tracing::error!(job = %self.id, "recording the job's state: {e}");
                }
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn set_state(&self, state: JobState) {
        self.update(|s| {
            if state != JobState::Queued && s.started.is_none() {
                s.started = Some(Instant::now());
            }
            s.state = state;
        });
    }

    /// Whether the executor may start this job: false if it was cancelled (or ended)
    /// first. Read under the status lock that [`JobRecord::cancel_if_queued`] takes.
    pub fn start(&self) -> bool {
        let s = lock(&self.status);
        s.state == JobState::Queued && !self.cancel.load(Ordering::SeqCst)
    }

    /// Sets the cancel flag, and ends the job at once if it has not started; both under the
    /// status lock, so the executor cannot start it in between.
    pub fn cancel_if_queued(&self, why: String) {
        let ended = {
            let mut s = lock(&self.status);
            self.cancel.store(true, Ordering::SeqCst);
            if s.state == JobState::Queued {
                s.state = JobState::Cancelled;
                s.error = why;
                true
            } else {
                false
            }
        };
        if ended {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    pub fn fail(&self, error: String) {
        let cancelled = self.cancel.load(Ordering::SeqCst);
        self.update(|s| {
            s.state = if cancelled {
                JobState::Cancelled
            } else {
                JobState::Failed
            };
            s.error = error;
        });
    }

    /// The workers a running job was given, one per part.
    pub fn set_assigned(&self, assigned: &[(String, String)]) {
        self.update(|s| {
            s.progress = assigned
                .iter()
                .enumerate()
                .map(|(p, (id, address))| PartStatus {
                    part: p as u32,
                    worker_id: id.clone(),
                    worker_address: address.clone(),
                    ..Default::default()
                })
                .collect();
        });
    }

    pub fn layer_done(&self, part: u32, stats: &LayerStats) {
        self.update(|s| {
            if let Some(p) = s.progress.get_mut(part as usize) {
                // Saturating: these numbers come from the network.
                p.layers_done = p.layers_done.max(stats.layer.saturating_add(1));
                p.halo_bytes_sent = p.halo_bytes_sent.saturating_add(stats.bytes_sent);
                (p.layer_entries_done, p.layer_entries_total) = (0, 0);
            }
        });
    }

    /// A heartbeat's report that `part` has aggregated `done` of the `total` entries of
    /// `layer`; kept only while that is the part's next layer to finish (a late report of a
    /// finished layer is dropped). Watchers wake only when the numbers changed (heartbeats repeat them).
    pub fn layer_progress(&self, part: u32, layer: u32, done: u64, total: u64) {
        self.update_if(|s| match s.progress.get_mut(part as usize) {
            Some(p) if p.layers_done == layer => {
                let now = (done.min(total), total);
                let changed = (p.layer_entries_done, p.layer_entries_total) != now;
                (p.layer_entries_done, p.layer_entries_total) = now;
                changed
            }
            _ => false,
        });
    }

    pub fn out_path(&self) -> PathBuf {
        self.out_dir.join("out.npy")
    }

    pub fn attention_dir(&self) -> PathBuf {
        self.out_dir.join("attention")
    }
}

/// Everything the client API keeps.
#[derive(Default)]
pub(crate) struct Catalog {
    /// The same, on disk (none in unit tests).
    pub store: Option<Arc<Store>>,
    pub graphs: Mutex<HashMap<String, Arc<GraphEntry>>>,
    pub partitions: Mutex<HashMap<String, Arc<PartitionEntry>>>,
    /// In submission order.
    pub jobs: Mutex<Vec<Arc<JobRecord>>>,
}

impl Catalog {
    /// A catalog holding what `store` had (jobs that had not ended are marked failed), and
    /// the next free id number.
    pub fn reload(store: Store) -> Result<(Self, u64)> {
        let store = Arc::new(store);
        let Loaded {
            graphs,
            partitions,
            jobs,
        } = store.load()?;
        let number = |id: &str| {
            id.rsplit('-')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut next = 1;
        for id in graphs
            .iter()
            .map(|g| &g.id)
            .chain(partitions.iter().map(|p| &p.id))
        {
            next = next.max(number(id) + 1);
        }
        for job in &jobs {
            next = next.max(job.seq + 1).max(number(&job.id) + 1);
        }
        let catalog = Catalog {
            graphs: Mutex::new(
                graphs
                    .into_iter()
                    .map(|g| (g.id.clone(), Arc::new(g)))
                    .collect(),
            ),
            partitions: Mutex::new(
                partitions
                    .into_iter()
                    .map(|p| (p.id.clone(), Arc::new(p)))
                    .collect(),
            ),
            jobs: Mutex::new(
                jobs.into_iter()
                    .map(|j| JobRecord::reloaded(j, store.clone()).map(Arc::new))
                    .collect::<Result<_>>()?,
            ),
            store: Some(store),
        };
        Ok((catalog, next))
    }

    /// Records `value` under `id` in the store (if there is one).
    pub fn record<T: Serialize>(&self, table: Table, id: &str, value: &T) -> Result<()> {
        match &self.store {
            Some(store) => store.put(table, id, value),
            None => Ok(()),
        }
    }

    /// Removes `id` from the store (if there is one).
    pub fn forget(&self, table: Table, id: &str) -> Result<()> {
        match &self.store {
            Some(store) => store.remove(table, id),
            None => Ok(()),
        }
    }

    pub fn graph(&self, id: &str) -> Result<Arc<GraphEntry>> {
        if id.is_empty() {
            return Err(RuntimeError::InvalidArgument("graph_id is empty".into()));
        }
        lock(&self.graphs).get(id).cloned().ok_or_else(|| {
            RuntimeError::NotFound(format!(
                "graph_id '{id}' is not registered (RegisterGraph or UploadGraph first)"
            ))
        })
    }

    pub fn partition(&self, id: &str) -> Result<Arc<PartitionEntry>> {
        lock(&self.partitions)
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("partition_id '{id}' does not exist")))
    }

    pub fn job(&self, id: &str) -> Result<Arc<JobRecord>> {
        if id.is_empty() {
            return Err(RuntimeError::InvalidArgument("job_id is empty".into()));
        }
        lock(&self.jobs)
            .iter()
            .find(|j| j.id == id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("job_id '{id}' does not exist")))
    }

    /// Queued jobs submitted before `job`.
    pub fn queue_position(&self, job: &JobRecord) -> u32 {
        lock(&self.jobs)
            .iter()
            .filter(|j| j.seq < job.seq && j.state() == JobState::Queued)
            .count() as u32
    }

    pub fn queued(&self) -> usize {
        lock(&self.jobs)
            .iter()
            .filter(|j| j.state() == JobState::Queued)
            .count()
    }
}

/// Loads a model to validate it against a registered graph (blocking).
pub(crate) fn load_model(path: &Path, graph: &GraphEntry) -> Result<Model> {
    let model = Model::load(path)?;
    model.check_input_width(graph.feature_width as usize, &graph.features)?;
    let edge = graph
        .edge_features
        .as_deref()
        .map(|p| (p, graph.edge_feature_width as usize));
    model
        .check_edge_features("the graph's edge_features", edge)
        .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> JobRecord {
        let graph = GraphEntry {
            id: "g".into(),
            name: "g".into(),
            graph: PathBuf::from("g.npy"),
            format: None,
            features: PathBuf::from("x.npy"),
            nodes: 10,
            edges: 20,
            feature_width: 4,
            edge_features: None,
            edge_feature_width: 0,
            uploaded: false,
            neighbourhood: None,
        };
        let spec = JobSpec {
            graph,
            partition: None,
            parts: 2,
            method: Method::metis_default(),
            model: PathBuf::from("m.json"),
            normalize_features: false,
            attention: false,
            threads_per_worker: 1,
            shard_source: String::new(),
        };
        JobRecord::new("j".into(), 0, spec, PathBuf::from("out"), 2)
    }

    /// The catalog survives a restart: graphs, partitions and jobs come back; a job that
    /// had not ended is failed with the reason; ids continue after the largest.
    #[test]
    fn reload_restores_records_and_fails_unfinished_jobs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let catalog = Catalog {
                store: Some(store.clone()),
                ..Default::default()
            };
            let graph = record().spec.graph;
            catalog.record(Table::Graphs, &graph.id, &graph).unwrap();
            let done = JobRecord::new("job-3".into(), 3, record().spec, "o3".into(), 2)
                .stored_in(Some(store.clone()))
                .unwrap();
            done.set_state(JobState::Running);
            done.update(|s| {
                s.state = JobState::Succeeded;
                s.summary_json = "{}".into();
            });
            let running = JobRecord::new("job-9".into(), 9, record().spec, "o9".into(), 2)
                .stored_in(Some(store))
                .unwrap();
            running.set_state(JobState::Running);
            running.layer_done(0, &LayerStats::default()); // progress alone is not stored
        }
        let (catalog, next) = Catalog::reload(Store::open(dir.path()).unwrap()).unwrap();
        assert_eq!(next, 10);
        assert!(lock(&catalog.graphs).contains_key("g"));
        let jobs = lock(&catalog.jobs);
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["job-3", "job-9"], "submission order");
        let done = jobs[0].status();
        assert_eq!(
            (done.state, done.summary_json.as_str()),
            (JobState::Succeeded, "{}")
        );
        let failed = jobs[1].status();
        assert_eq!(failed.state, JobState::Failed);
        assert!(failed
            .error
            .contains("coordinator stopped while the job was running"));
        drop(jobs);
        // The failure was recorded: a second restart reads it back as it is.
        drop(catalog);
        let (catalog, _) = Catalog::reload(Store::open(dir.path()).unwrap()).unwrap();
        assert_eq!(lock(&catalog.jobs)[1].status().state, JobState::Failed);
    }

    /// Heartbeats repeat the same numbers every interval: only a change wakes watchers.
    #[test]
    fn repeated_layer_progress_does_not_wake_watchers() {
        let job = record();
        job.set_state(JobState::Running);
        job.set_assigned(&[("w0".into(), "a0".into()), ("w1".into(), "a1".into())]);
        let mut watcher = job.subscribe();
        watcher.mark_unchanged();
        job.layer_progress(1, 0, 50, 100);
        assert!(watcher.has_changed().unwrap(), "new numbers wake watchers");
        watcher.mark_unchanged();
        job.layer_progress(1, 0, 50, 100);
        assert!(!watcher.has_changed().unwrap(), "the same numbers again");
        job.layer_progress(1, 3, 70, 100); // not the part's current layer: dropped
        assert!(!watcher.has_changed().unwrap(), "a report of another layer");
        job.layer_progress(1, 0, 60, 100);
        assert!(watcher.has_changed().unwrap());
        assert_eq!(job.status().progress[1].layer_entries_done, 60);
    }
}
