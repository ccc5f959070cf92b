//! `distgat run`: partition (or reuse a partition), start a coordinator and K workers on
//! loopback as child processes, run the job, and stop every process started.
//!
//! With `--points P --knn K | --radius R` the graph is built first, distributed over the
//! workers (the coordinator's `BuildNeighbours`), then partitioned with METIS and run like
//! a graph file: the processes start before partitioning in that case.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distgat_graph::{GraphFormat, Normalization};
use distgat_partition::Method;
use distgat_proto::v1::coordinator_client::CoordinatorClient;
use distgat_proto::v1::{BuildNeighboursRequest, NeighbourSpec, RunJobRequest};

use crate::neighbours::NeighboursConfig;

use distgat_partition::{run_partition, PartitionConfig};

/// Everything `distgat run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The graph file; unused (empty) when `neighbourhood` is given.
    pub graph: PathBuf,
    /// Build the graph from points (knn or radius, euclidean), distributed over the
    /// workers, instead of reading `graph`.
    pub neighbourhood: Option<NeighboursConfig>,
    /// Also keep the built neighbourhood here (int64 `[2, E]`, as `distgat neighbours`
    /// writes it).
    pub neighbours_out: Option<PathBuf>,
    pub format: Option<GraphFormat>,
    pub features: PathBuf,
    pub normalize: Normalization,
    pub model: PathBuf,
    /// Edge attributes `[E, D]` for layers with `edge_dim`.
    pub edge_features: Option<PathBuf>,
    pub out: PathBuf,
    pub workers: usize,
    /// Extra idle workers started beside the `workers` (`--spares`): when a worker is lost
    /// mid-job, the coordinator gives its part to one and restarts the job (every part
    /// from layer 0), at most once per spare.
    pub spares: usize,
    /// `--recovery` for the coordinator (`None`: its default, part).
    pub recovery: Option<distgat_runtime::Recovery>,
    /// Reuse this partition directory instead of partitioning.
    pub partition: Option<PathBuf>,
    /// The partitioner; `None`: METIS for a graph file, the build's spatial parts (its
    /// recursive coordinate bisection, no METIS) for a neighbourhood built from points.
    pub method: Option<Method>,
    pub attention_dir: Option<PathBuf>,
    /// Kernel threads per worker; 0: all of each worker's cores.
    pub threads_per_worker: usize,
    /// Where the workers get their inputs.
    pub shard_source: distgat_runtime::ShardSource,
    /// The `distgat` binary to start the coordinator and workers with.
    pub exe: PathBuf,
    /// TLS between the coordinator, the workers and this process (all three files or
    /// none; the certificate must name 127.0.0.1, where they listen).
    pub tls: distgat_proto::TlsFiles,
    /// The coordinator's bearer token file; this process and the workers send it.
    pub auth_token_file: Option<PathBuf>,
}

impl RunConfig {
    /// The TLS and token flags the coordinator and the workers are started with.
    fn security_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        for (flag, path) in [
            ("--tls-cert", &self.tls.cert),
            ("--tls-key", &self.tls.key),
            ("--tls-ca", &self.tls.ca),
            ("--auth-token-file", &self.auth_token_file),
        ] {
            if let Some(path) = path {
                flags.push(flag.to_string());
                flags.push(path.display().to_string());
            }
        }
        flags
    }

    /// A Coordinator client over this cluster's TLS and with its token. The files were
    /// checked before any process started ([`RunConfig::check_security`]).
    async fn coordinator_client(
        &self,
        address: &str,
    ) -> anyhow::Result<CoordinatorClient<distgat_proto::AuthChannel>> {
        let tls = self.tls.load_client()?;
        let token = self
            .auth_token_file
            .as_deref()
            .map(distgat_proto::read_token_file)
            .transpose()?;
        let channel = distgat_proto::secure_endpoint(address, tls.as_ref())?
            .connect()
            .await?;
        Ok(CoordinatorClient::with_interceptor(
            channel,
            distgat_proto::Bearer::new(token.as_deref())?,
        ))
    }

    /// The TLS and token files, checked as the coordinator and workers will check them,
    /// before anything starts: errors name the flag and the file.
    pub fn check_security(&self) -> anyhow::Result<()> {
        self.tls.load_server()?;
        if let Some(path) = &self.auth_token_file {
            distgat_proto::read_token_file(path)?;
        }
        Ok(())
    }
}

/// Children that are killed when this guard drops, whatever happens (and, after
/// [`Children::on_signal`], when this process gets SIGINT or SIGTERM).
#[derive(Default)]
pub struct Children(Arc<Mutex<Vec<(String, Child)>>>);

impl Children {
    fn push(&self, name: &str, child: Child) {
        lock(&self.0).push((name.to_string(), child));
    }

    /// On SIGINT or SIGTERM (Ctrl-C, `kill`, a supervisor stopping this command): kill
    /// every child, remove `temp` and the partial files the killed processes leave beside
    /// the outputs (`leftovers`: directory, name prefix, name suffix), and exit with 128 +
    /// the signal's number, so nothing of this private cluster outlives the command. Runs
    /// on `runtime`.
    fn on_signal(
        &self,
        runtime: &tokio::runtime::Runtime,
        temp: PathBuf,
        leftovers: Vec<(PathBuf, String, String)>,
    ) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = runtime.block_on(async { signal(SignalKind::interrupt()) })?;
        let mut term = runtime.block_on(async { signal(SignalKind::terminate()) })?;
        let children = self.0.clone();
        runtime.spawn(async move {
            let code = tokio::select! {
                _ = int.recv() => 130,
                _ = term.recv() => 143,
            };
            for (_, child) in lock(&children).iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_dir_all(&temp);
            for (dir, prefix, suffix) in &leftovers {
                for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with(prefix.as_str()) && name.ends_with(suffix.as_str()) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
            eprintln!("distgat run: stopped by a signal; its processes are stopped");
            std::process::exit(code);
        });
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in lock(&self.0).iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `exe args...` (a `distgat coordinator` or `worker`) and waits (up to 30 s) for its
/// line `listening on ADDR`; the child is killed when `children` drops.
pub fn spawn_server(
    exe: &Path,
    args: &[&str],
    name: &str,
    children: &mut Children,
) -> anyhow::Result<String> {
    let mut command = Command::new(exe);
    // The children get everything by flag: a DISTGAT_* variable meant for a served
    // coordinator (an address file, say) must not leak into this private cluster.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DISTGAT_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {name} ({}): {e}", exe.display()))?;
    let stdout = child.stdout.take().expect("piped");
    children.push(name, child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow::anyhow!("{name} did not report its address within 30 s"))
}

/// What [`run_cluster`] did: the coordinator's job summary, and the wall time of each phase
/// of the command in seconds (partitioning is 0 with a reused partition).
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub summary_json: String,
    /// The coordinator's neighbourhood build summary (JSON), with `neighbourhood`.
    pub build_json: Option<String>,
    /// Building the neighbourhood (0 without one).
    pub build_secs: f64,
    pub partition_secs: f64,
    pub start_secs: f64,
    pub job_secs: f64,
    pub stop_secs: f64,
}

/// Runs the job; returns the job summary and the time of each phase.
pub fn run_cluster(config: &RunConfig, on_phase: fn(&str)) -> anyhow::Result<RunOutcome> {
    // One worker per part: a bad count is the user's --workers, not the partitioner's
    // --parts.
    if config.workers == 0 {
        anyhow::bail!("--workers: 0 workers; give at least 1 (one worker process per part)");
    }
    config.check_security()?;
    // Where outputs go is checked before any work, naming the flag.
    if let Some(dir) = &config.attention_dir {
        if dir.exists() && !dir.is_dir() {
            anyhow::bail!(
                "--attention-dir: {} exists and is not a directory; name a directory for the \
                 coefficient files",
                dir.display()
            );
        }
    }
    if config.out.is_dir() {
        anyhow::bail!(
            "--out: {} is a directory; name the .npy file to write",
            config.out.display()
        );
    }
    crate::infer::check_output_file("--out", &config.out)?;
    // Without a graph (and no --points), every layer must be global attention.
    let model = distgat_attention::Model::load(&config.model)?;
    let no_graph = config.graph.as_os_str().is_empty() && config.neighbourhood.is_none();
    if let (true, Some((k, kind))) = (no_graph, model.first_local()) {
        anyhow::bail!(
            "--graph: layers[{k}] of {} is {kind}, which attends over a graph's edges; give \
             --graph (or --points with --knn/--radius). Only a model of global layers \
             (MultiheadAttention, NystromAttention) runs without one",
            config.model.display()
        );
    }
    if model.first_local().is_none() && !no_graph {
        anyhow::bail!(
            "{}: every layer of {} is global attention over all nodes, so no graph is read; \
             drop it",
            if config.neighbourhood.is_some() {
                "--knn/--radius"
            } else {
                "--graph"
            },
            config.model.display()
        );
    }
    if no_graph && config.attention_dir.is_some() {
        anyhow::bail!(
            "--attention-dir: every layer of {} is global attention, which has no per-edge \
             coefficients to write; omit --attention-dir",
            config.model.display()
        );
    }
    if no_graph && config.partition.is_some() {
        anyhow::bail!(
            "--partition: a model of global layers only is run without a graph, on contiguous \
             ranges of node ids; omit --partition"
        );
    }
    if let (Some(path), None) = (&config.edge_features, model.edge_dim()) {
        // The edge rows would go into the shards and never be read.
        model.check_edge_features("--edge-features", Some((path, 0)))?;
    }
    // `--recovery part` is a promise that only the lost part restarts; where a part cannot
    // restart alone, the job would silently restart whole instead.
    if config.recovery == Some(distgat_runtime::Recovery::Part) {
        let why = if config.attention_dir.is_some() {
            Some("with --attention-dir a restarted part's coefficients cannot be replayed")
        } else if model.has_collective_layers() {
            Some("the model's global layers need every part at every step")
        } else {
            None
        };
        if let Some(why) = why {
            anyhow::bail!(
                "--recovery part: {why}, so a lost worker restarts the whole job; pass \
                 --recovery job or drop --recovery"
            );
        }
    }
    drop(model);
    let built = match &config.neighbourhood {
        Some(spec) => Some(check_built(config, spec)?),
        None => {
            if config.neighbours_out.is_some() {
                anyhow::bail!(
                    "--neighbours-out: writes a neighbourhood built by --knn or --radius; give \
                     --points with one of them"
                );
            }
            None
        }
    };
    let temp = tempfile::tempdir()?;
    let mut children = Children::default();
    let mut coordinator = String::new();
    let mut start_secs = 0.0;
    let mut build_secs = 0.0;
    let mut build_json = None;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // What a stopped run's processes leave beside the outputs: the coordinator's
    // `.NAME.*.partial` files (out, attention files), the parts' output files and the
    // staged --neighbours-out.
    let partials = |p: &Path| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        (
            distgat_graph::parent_dir(p).to_path_buf(),
            format!(".{name}."),
            ".partial".to_string(),
        )
    };
    // And the parts' own output files beside it (`.NAME.part-P.*.rows`, the coordinator's
    // `OwnedOrder`).
    let part_rows = {
        let (dir, prefix, _) = partials(&config.out);
        (dir, format!("{prefix}part-"), ".rows".to_string())
    };
    let mut leftovers = vec![partials(&config.out), part_rows];
    if let Some(dir) = &config.attention_dir {
        leftovers.push((dir.clone(), ".layer".into(), ".partial".into()));
    }
    if let Some(edges) = &config.neighbours_out {
        let staged = Staged::path_beside(edges);
        let name = staged.file_name().map(|n| n.to_string_lossy().into_owned());
        leftovers.push((
            distgat_graph::parent_dir(edges).to_path_buf(),
            name.unwrap_or_default(),
            String::new(),
        ));
    }
    children.on_signal(&runtime, temp.path().to_path_buf(), leftovers)?;
    // The build's own split, when it is the partition.
    let spatial = temp.path().join("spatial_parts.npy");
    let mut staged: Option<Staged> = None;
    // The job runs on the parts where they were built (no edges file, no partition, no
    // shards) unless something needs a partition: another --method, per-edge attention
    // files (their edge index comes from a graph file), or spares (a kept part cannot
    // move to one).
    let in_place = built.is_some()
        && config.method.is_none()
        && config.attention_dir.is_none()
        && config.spares == 0;
    if let (Some(r), 1, 0) = (config.recovery, config.workers, config.spares) {
        anyhow::bail!(
            "--recovery {}: with one worker and no --spares, a lost worker leaves no other \
             to restart on; add --spares or drop --recovery",
            r.name()
        );
    }
    if let (true, Some(r)) = (in_place, config.recovery) {
        anyhow::bail!(
            "--recovery {}: the parts of a neighbourhood built in place stay on the workers \
             that built them, so a lost worker's part cannot restart anywhere; add --spares \
             (the built graph is then partitioned) or drop --recovery",
            r.name()
        );
    }
    let mut build_id = String::new();
    let graph = match &built {
        None if no_graph => {
            // An edgeless graph of the features' N nodes: the partition is then only the
            // split of the nodes (contiguous id ranges unless --method says otherwise).
            let path = temp.path().join("no_edges.npy");
            distgat_graph::write_npy::<i64>(&path, &[2, 0], &[])?;
            path
        }
        None => config.graph.clone(),
        Some((spec, edges)) => {
            let edges = match (edges.as_os_str().is_empty(), in_place) {
                // Written under a temporary name beside it, renamed once the job has
                // succeeded: a failed run leaves no --neighbours-out behind.
                (false, _) => staged.insert(Staged::beside(edges)).path.clone(),
                (true, false) => temp.path().join("neighbours.npy"),
                // Kept on the workers; no file asked for.
                (true, true) => PathBuf::new(),
            };
            let t = std::time::Instant::now();
            coordinator = start_processes(config, temp.path(), &mut children, on_phase)?;
            start_secs = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            on_phase("building the neighbourhood");
            let request = BuildNeighboursRequest {
                points: abs(spec.points.as_deref().expect("checked")),
                spec: Some(spec_of(spec)),
                out: if edges.as_os_str().is_empty() {
                    String::new()
                } else {
                    abs(&edges)
                },
                parts: config.workers as u32,
                threads_per_worker: config.threads_per_worker as u32,
                assignment_out: if config.method.is_none() && !in_place {
                    abs(&spatial)
                } else {
                    String::new()
                },
                keep_parts: in_place,
            };
            let address = coordinator.clone();
            let response = runtime.block_on(async move {
                let mut client = config.coordinator_client(&address).await?;
                let response = client
                    .build_neighbours(request)
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
                anyhow::Ok(response.into_inner())
            })?;
            build_json = Some(response.summary_json);
            if in_place {
                build_id = response.build_id;
            }
            build_secs = t.elapsed().as_secs_f64();
            edges
        }
    };
    let t = std::time::Instant::now();
    let partition = match &config.partition {
        _ if in_place => PathBuf::new(),
        Some(dir) => dir.clone(),
        None => {
            on_phase("partitioning");
            let dir = temp.path().join("partition");
            run_partition(&PartitionConfig {
                graph: graph.clone(),
                format: if built.is_some() {
                    Some(GraphFormat::Npy)
                } else {
                    config.format
                },
                features: Some(config.features.clone()),
                // The shards keep their edges' attributes (the workers then need no
                // edge features file).
                edge_features: config.edge_features.clone(),
                parts: config.workers,
                method: match (&config.method, &built) {
                    (Some(m), _) => m.clone(),
                    (None, None) if no_graph => Method::Range,
                    (None, Some(_)) => Method::File {
                        path: spatial.clone(),
                    },
                    (None, None) => Method::metis_default(),
                },
                out: dir.clone(),
                ..PartitionConfig::default()
            })
            .map_err(|e| match e {
                // The part count is the user's --workers here.
                distgat_partition::PartitionError::Invalid { what, detail }
                    if what == "--parts" =>
                {
                    anyhow::anyhow!(
                        "--workers: {} (one worker process per part)",
                        detail.replace("parts", "workers")
                    )
                }
                e => e.into(),
            })?;
            dir
        }
    };
    let opened = match in_place {
        true => None,
        false => Some(distgat_partition::PartitionDir::open(&partition)?),
    };
    // A reused partition must come from this graph: the coordinator checks the graph
    // named in the job against it while the workers load their shards (one pass over the
    // file: at R-MAT 1M/10M 0.1 s from the page cache, 0.4 s from the disk, before the
    // processes started), and commits the output only after it passed.
    if let Some(opened) = opened.filter(|o| o.manifest.parts != config.workers) {
        anyhow::bail!(
            "--workers {} but the partition {} has {} parts",
            config.workers,
            partition.display(),
            opened.manifest.parts
        );
    }

    let partition_secs = if config.partition.is_some() {
        0.0
    } else {
        t.elapsed().as_secs_f64()
    };
    if built.is_none() {
        let t = std::time::Instant::now();
        coordinator = start_processes(config, temp.path(), &mut children, on_phase)?;
        start_secs = t.elapsed().as_secs_f64();
    }
    let t = std::time::Instant::now();
    on_phase("running");
    // A partition made just now from these files carries their rows in its shards: naming
    // the files again would only make the coordinator read and fingerprint them a second
    // time. A reused partition gets them named, so a mismatch is caught.
    let reused = config.partition.is_some();
    let named = |p: &Path| {
        if reused || in_place {
            abs(p)
        } else {
            String::new()
        }
    };
    // The graph is also named for attention output (its edge index), which reads it.
    let name_graph = !in_place && (reused || config.attention_dir.is_some());
    let request = RunJobRequest {
        build_id,
        partition_dir: if in_place {
            String::new()
        } else {
            abs(&partition)
        },
        model: abs(&config.model),
        features: named(&config.features),
        normalize_rows: config.normalize == Normalization::Row,
        out: abs(&config.out),
        attention_dir: config.attention_dir.as_deref().map(abs).unwrap_or_default(),
        graph: if name_graph {
            abs(&graph)
        } else {
            String::new()
        },
        graph_format: if !name_graph {
            String::new()
        } else if built.is_some() {
            GraphFormat::Npy.name().to_string()
        } else {
            config
                .format
                .map(GraphFormat::name)
                .unwrap_or_default()
                .to_string()
        },
        shard_source: config.shard_source.name().to_string(),
        // Its workers share this machine: with shared paths they write their output rows
        // into the coordinator's file themselves (no row crosses a socket).
        workers_write_output: config.shard_source == distgat_runtime::ShardSource::Shared,
        threads_per_worker: config.threads_per_worker as u32,
        edge_features: config
            .edge_features
            .as_deref()
            .map(named)
            .unwrap_or_default(),
    };
    let summary = runtime.block_on(async {
        let mut client = config.coordinator_client(&coordinator).await?;
        if config.spares > 0 {
            // The job starts once its parts' workers are up; spares that register later
            // would not be there for a loss early in the job.
            wait_for_healthy(&mut client, config.workers + config.spares).await?;
        }
        let response = client
            .run_job(request)
            .await
            .map_err(|s| anyhow::anyhow!("{}", as_flags(s.message())))?;
        anyhow::Ok(response.into_inner().summary_json)
    })?;
    let job_secs = t.elapsed().as_secs_f64();
    if let Some(staged) = staged {
        staged.commit()?;
    }
    let t = std::time::Instant::now();
    on_phase("stopping the processes");
    drop(children);
    Ok(RunOutcome {
        summary_json: summary,
        build_json,
        build_secs,
        partition_secs,
        start_secs,
        job_secs,
        stop_secs: t.elapsed().as_secs_f64(),
    })
}

/// An output written under a temporary name beside its final path (`.NAME.partial-PID`)
/// and renamed onto it by [`Staged::commit`]; removed if dropped before.
struct Staged {
    path: PathBuf,
    target: PathBuf,
}

impl Staged {
    fn beside(target: &Path) -> Self {
        Staged {
            path: Self::path_beside(target),
            target: target.to_path_buf(),
        }
    }

    fn path_beside(target: &Path) -> PathBuf {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        distgat_graph::parent_dir(target).join(format!(".{name}.partial-{}", std::process::id()))
    }

    fn commit(self) -> anyhow::Result<()> {
        std::fs::rename(&self.path, &self.target).map_err(|e| {
            anyhow::anyhow!(
                "--neighbours-out: renaming {} to {}: {e}",
                self.path.display(),
                self.target.display()
            )
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After commit the path no longer exists; before it, nothing of a failed run stays.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The coordinator names the `RunJobRequest` field an error is about (`graph: ...`); this
/// command's user typed the flag, so a leading field name becomes the flag's.
fn as_flags(message: &str) -> String {
    for (field, flag) in [
        ("graph: ", "--graph "),
        ("features: ", "--features "),
        ("edge_features: ", "--edge-features "),
        ("edge_features (--edge-features) ", "--edge-features "),
    ] {
        if let Some(rest) = message.strip_prefix(field) {
            return format!("{flag}{rest}");
        }
    }
    message.to_string()
}

fn abs(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// The checks of a run over a built neighbourhood, before any process starts (the same
/// refusals as `distgat infer --points`); returns the spec and where the edges go.
fn check_built(
    config: &RunConfig,
    spec: &NeighboursConfig,
) -> anyhow::Result<(NeighboursConfig, PathBuf)> {
    if config.partition.is_some() {
        anyhow::bail!(
            "--partition: a reused partition is of another graph; with --points the \
             neighbourhood built is partitioned (drop --partition)"
        );
    }
    if config.edge_features.is_some() {
        anyhow::bail!(
            "--edge-features: its rows belong to the edges of a graph file, and a \
             neighbourhood built by --knn or --radius has none; models with edge_dim need \
             --graph"
        );
    }
    let (_, _, n) = crate::neighbours::check_distributed(spec)?;
    if config.workers > n {
        anyhow::bail!(
            "--workers {}: more workers than the {n} points of {} (one part of points per \
             worker)",
            config.workers,
            spec.points.as_deref().expect("checked").display()
        );
    }
    // Before the build, not after it: a bad model or features file wastes no search.
    let model = distgat_attention::Model::load(&config.model)?;
    if model.edge_dim().is_some() {
        anyhow::bail!(
            "--model: {} has edge_dim layers, which need edge attributes; a neighbourhood \
             built by --knn or --radius has none (run such a model over --graph with \
             --edge-features)",
            config.model.display()
        );
    }
    let features = distgat_graph::NpyBody::open(&config.features)?;
    let float = matches!(
        features.dtype,
        distgat_graph::NpyDtype::F32 | distgat_graph::NpyDtype::F64
    );
    let want = model.layers[0].in_features();
    if !float || features.shape.len() != 2 || features.shape[1] as usize != want {
        anyhow::bail!(
            "--features: {} is {} {:?}; the model's layer 0 expects float32 or float64 \
             [N, {want}]",
            config.features.display(),
            features.dtype.name(),
            features.shape
        );
    }
    let rows = features.shape.first().copied().unwrap_or(0) as usize;
    if rows != n {
        anyhow::bail!(
            "--points: {} has {n} rows but {} has {rows} (one point per node)",
            spec.points.as_deref().expect("checked").display(),
            config.features.display()
        );
    }
    let edges = match &config.neighbours_out {
        Some(path) => {
            crate::infer::check_output_file("--neighbours-out", path)?;
            let same =
                |other: &Path| std::path::absolute(other).ok() == std::path::absolute(path).ok();
            if same(&config.out) {
                anyhow::bail!(
                    "--neighbours-out: {} is also named by --out; give each output its own file",
                    path.display()
                );
            }
            path.clone()
        }
        // In the run's temporary directory (named once it exists).
        None => PathBuf::new(),
    };
    Ok((spec.clone(), edges))
}

/// The wire spec of a checked knn / radius config.
fn spec_of(spec: &NeighboursConfig) -> NeighbourSpec {
    NeighbourSpec {
        knn: spec.knn.map(|k| k as u64),
        radius: spec.radius,
        max_neighbours: spec.max_neighbours.map(|m| m as u64),
        self_loops: spec.self_loops,
        metric: spec.metric.name().to_string(),
    }
}

/// Waits up to 30 s until `count` workers are registered and healthy.
async fn wait_for_healthy(
    client: &mut CoordinatorClient<distgat_proto::AuthChannel>,
    count: usize,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = client
            .cluster_status(distgat_proto::v1::ClusterStatusRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("cluster status: {}", s.message()))?
            .into_inner();
        let healthy = status.workers.iter().filter(|w| w.healthy).count();
        if healthy >= count {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "--spares: {healthy} of {count} workers (--workers plus --spares) registered \
                 within 30 s"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Starts the coordinator, one worker per part and the spares; returns the coordinator's
/// address.
fn start_processes(
    config: &RunConfig,
    temp: &Path,
    children: &mut Children,
    on_phase: fn(&str),
) -> anyhow::Result<String> {
    on_phase("starting coordinator and workers");
    let security = config.security_flags();
    let security: Vec<&str> = security.iter().map(String::as_str).collect();
    let work = temp.join("work").display().to_string();
    // One shard stream at a time, the largest first: every process shares this machine's
    // cores, so concurrent streams would delay the part with the most work.
    let mut args = vec![
        "coordinator",
        "--allow-run-job",
        "--listen",
        "127.0.0.1:0",
        "--work-dir",
        &work,
        "--max-concurrent-shard-streams",
        "1",
    ];
    if let Some(r) = config.recovery {
        args.extend(["--recovery", r.name()]);
    }
    args.extend(&security);
    let coordinator = spawn_server(&config.exe, &args, "coordinator", children)?;
    for k in 0..config.workers + config.spares {
        // Each worker its own work dir, as on separate machines. No shard cache: the
        // work dirs are removed when the run ends, so a cached shard would never be read
        // again, and writing it (hundreds of MB at scale) competes with the kernels.
        let worker_dir = temp.join(format!("worker-{k}")).display().to_string();
        let mut args = vec![
            "worker",
            "--coordinator",
            &coordinator,
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
            &worker_dir,
            "--shard-cache-max-bytes",
            "0",
        ];
        args.extend(&security);
        spawn_server(&config.exe, &args, &format!("worker {k}"), children)?;
    }
    Ok(coordinator)
}

#[cfg(test)]
mod tests {
    use super::as_flags;

    #[test]
    fn leading_request_fields_become_the_flags_typed() {
        assert_eq!(
            as_flags("graph: /g.npy: /p: was made from another graph"),
            "--graph /g.npy: /p: was made from another graph"
        );
        assert_eq!(
            as_flags("features: /x.npy differs"),
            "--features /x.npy differs"
        );
        assert_eq!(
            as_flags("edge_features (--edge-features) /e.npy: no layer"),
            "--edge-features /e.npy: no layer"
        );
        // Only a leading field name: the rest of a message is left alone.
        assert_eq!(as_flags("the graph: changed"), "the graph: changed");
    }
}
