//! `distgat infer`: the whole model over the whole graph in one process.

use std::path::{Path, PathBuf};
use std::time::Instant;

use distgat_attention::{run_model, Execution, Model, ModelError, Progress, Topology};
use std::io::Write;

use distgat_graph::{
    attention_edge_index, read_graph, write_npy, AtomicFile, EdgeList, Features, GraphError,
    GraphFormat, Normalization, NpyBody, NpyRowsFile,
};
use serde::Serialize;

/// Everything `distgat infer` needs; `Default` leaves the paths empty.
#[derive(Debug, Clone, Default)]
pub struct InferConfig {
    /// The graph; with `neighbourhood` the graph its `--hops` walks, or empty for knn and
    /// radius, whose built neighbourhood is the graph.
    pub graph: PathBuf,
    /// Build the graph as a neighbourhood (knn, radius or hops) instead of reading it; its
    /// `out` and `threads` are not read (infer's own `threads` apply).
    pub neighbourhood: Option<crate::neighbours::NeighboursConfig>,
    /// Writes the built neighbourhood here (int64 `[2, E]`), with the other outputs.
    pub neighbours_out: Option<PathBuf>,
    /// Overrides the format implied by the graph file's extension.
    pub format: Option<GraphFormat>,
    /// Node count when it exceeds what the graph and the features imply.
    pub num_nodes: Option<u64>,
    pub features: PathBuf,
    /// float32/float64 `[E, D]` edge attributes, row e for edge e of the graph file
    /// (PyG's `edge_attr`); required exactly when a layer has `edge_dim`.
    pub edge_features: Option<PathBuf>,
    pub normalize: Normalization,
    pub model: PathBuf,
    pub out: PathBuf,
    /// Writes `layer{k}_alpha.npy` and `layer{k}_att_edge_index.npy` here.
    pub attention_dir: Option<PathBuf>,
    /// Worker threads for the kernels (default: all cores).
    pub threads: Option<usize>,
    /// int64 `[N]` class labels, with `test_idx`: report accuracy on those nodes.
    pub labels: Option<PathBuf>,
    pub test_idx: Option<PathBuf>,
    /// Writes the [`InferReport`] here as JSON.
    pub stats_json: Option<PathBuf>,
    /// Also run every approximating global layer exactly on the same input and report the
    /// relative Frobenius error of its output (an error when no layer approximates).
    pub report_approximation_error: bool,
    /// Renumber the nodes for locality before the layers run (the outputs stay in the
    /// input's numbering, with the same bits); local layers only.
    pub reorder: Reorder,
    /// Called with a short description as each phase starts.
    pub on_phase: Option<fn(&str)>,
    /// Told as each layer starts and as its edges are aggregated (for a progress bar that
    /// another thread draws). Without it, layer starts go to `on_phase`.
    pub progress: Option<std::sync::Arc<Progress>>,
}

/// A node renumbering `distgat infer` runs the layers in (`--reorder`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reorder {
    /// The input's numbering.
    #[default]
    None,
    /// Reverse Cuthill-McKee ([`distgat_graph::reorder::rcm_order`]).
    Rcm,
}

/// What a run did, with the time of each phase in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct InferReport {
    pub num_nodes: usize,
    pub num_edges: usize,
    pub out_width: usize,
    pub threads: usize,
    pub read_graph_ms: f64,
    pub read_features_ms: f64,
    pub load_model_ms: f64,
    pub build_csr_ms: f64,
    /// Computing the `--reorder` numbering and renumbering the edges and features (0
    /// without it).
    pub reorder_ms: f64,
    pub layers: Vec<LayerReport>,
    /// Writing the outputs after the layers (the output's remaining rows, fsync, rename;
    /// attention files).
    pub write_ms: f64,
    /// Whether the output's rows were written while the last layer computed (a local last
    /// layer); otherwise they are all written after it, within `write_ms`.
    pub output_streamed: bool,
    pub total_ms: f64,
    pub peak_rss_bytes: Option<u64>,
    pub accuracy: Option<Accuracy>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// The layer's class name (`GATConv`, `MultiheadAttention`, ...).
    pub kind: String,
    pub transform_ms: f64,
    pub aggregate_ms: f64,
    /// With `--report-approximation-error`, for approximating global layers:
    /// `‖out − exact‖_F / ‖exact‖_F` against exact blockwise attention on the same input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approximation_error: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    pub correct: usize,
    pub total: usize,
}

impl Accuracy {
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("--threads: {0}")]
    Threads(String),
    #[error(transparent)]
    Neighbours(#[from] crate::neighbours::NeighboursError),
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

pub fn run_infer(config: &InferConfig) -> Result<InferReport, InferError> {
    let threads = config.threads.unwrap_or_else(rayon::current_num_threads);
    if threads == 0 {
        return Err(InferError::Threads("must be at least 1".into()));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| InferError::Threads(e.to_string()))?;
    pool.install(|| infer_in_pool(config, threads))
}

fn infer_in_pool(config: &InferConfig, threads: usize) -> Result<InferReport, InferError> {
    let phase = |name: &str| {
        if let Some(f) = config.on_phase {
            f(name)
        }
    };
    let started = Instant::now();
    // Fail before hours of work, not after: where outputs go must exist.
    check_output_dir("--out", &config.out)?;
    if let Some(stats) = &config.stats_json {
        check_output_dir("--stats-json", stats)?;
        if same_file(stats, &config.out) {
            return Err(GraphError::argument(
                "--stats-json",
                format!(
                    "{} is also named by --out; give each output its own file",
                    stats.display()
                ),
            )
            .into());
        }
        if stats.is_dir() {
            return Err(GraphError::argument(
                "--stats-json",
                format!(
                    "{} is a directory; name the JSON file to write",
                    stats.display()
                ),
            )
            .into());
        }
    }
    if let Some(dir) = &config.attention_dir {
        // The directory itself is created when the coefficients are written.
        check_output_dir("--attention-dir", dir)?;
        if dir.exists() && !dir.is_dir() {
            return Err(GraphError::argument(
                "--attention-dir",
                format!(
                    "{} exists and is not a directory; name a directory for the \
                     coefficient files",
                    dir.display()
                ),
            )
            .into());
        }
    }
    if config.out.is_dir() {
        return Err(GraphError::argument(
            "--out",
            format!(
                "{} is a directory; name the .npy file to write",
                config.out.display()
            ),
        )
        .into());
    }

    phase("loading model");
    let t = Instant::now();
    let model = Model::load(&config.model)?;
    let load_model_ms = ms(t);
    // A model of global layers only attends over all nodes: it reads no graph, and one
    // given would be ignored. Any local layer needs one.
    let needs_graph = model.first_local();
    let graph_given = !config.graph.as_os_str().is_empty() || config.neighbourhood.is_some();
    match (needs_graph, graph_given) {
        (Some((k, kind)), false) => {
            return Err(GraphError::argument(
                "--graph",
                format!(
                    "missing: layers[{k}] ({kind}) of {} attends over a graph's edges; give \
                     --graph, or build a neighbourhood with --knn, --radius or --hops",
                    config.model.display()
                ),
            )
            .into())
        }
        (None, true) => {
            return Err(GraphError::argument(
                if config.neighbourhood.is_some() {
                    "--knn/--radius/--hops"
                } else {
                    "--graph"
                },
                format!(
                    "every layer of {} is global attention over all nodes, so no graph is \
                     read; drop it",
                    config.model.display()
                ),
            )
            .into())
        }
        _ => {}
    }
    if let (None, Some(path)) = (needs_graph, &config.edge_features) {
        return Err(GraphError::argument(
            "--edge-features",
            format!(
                "{}: every layer of {} is global attention over all nodes, which reads no \
                 edge features; drop --edge-features",
                path.display(),
                config.model.display()
            ),
        )
        .into());
    }
    if config.report_approximation_error
        && !model.layers.iter().any(|l| l.approximation().is_some())
    {
        return Err(GraphError::argument(
            "--report-approximation-error",
            format!(
                "no layer of {} approximates attention (only MultiheadAttention or GPSConv with \
                 \"approx\" and NystromAttention do), so there is no error to report",
                config.model.display()
            ),
        )
        .into());
    }
    if config.reorder != Reorder::None {
        if let Some((k, layer)) = model
            .layers
            .iter()
            .enumerate()
            .find(|(_, l)| !matches!(l, distgat_attention::Layer::Local(_)))
        {
            return Err(GraphError::argument(
                "--reorder",
                format!(
                    "layers[{k}] ({}) of {} sums over all nodes in node order, so a \
                     renumbering would change its bits; --reorder needs a model of local \
                     layers only (GATConv, GATv2Conv, TransformerConv)",
                    layer.kind(),
                    config.model.display()
                ),
            )
            .into());
        }
    }
    if let (None, Some(dir)) = (needs_graph, &config.attention_dir) {
        return Err(GraphError::argument(
            "--attention-dir",
            format!(
                "{}: every layer of {} is global attention, which has no per-edge \
                 coefficients to write",
                dir.display(),
                config.model.display()
            ),
        )
        .into());
    }

    if let Some(out) = &config.neighbours_out {
        check_output_file("--neighbours-out", out)?;
        let same = |other: &Path| std::path::absolute(other).ok() == std::path::absolute(out).ok();
        if same(&config.out) || config.stats_json.as_deref().is_some_and(same) {
            return Err(GraphError::argument(
                "--neighbours-out",
                format!(
                    "{} is also named by --out or --stats-json; give each output its own file",
                    out.display()
                ),
            )
            .into());
        }
        if config.neighbourhood.is_none() {
            return Err(GraphError::argument(
                "--neighbours-out",
                "writes a built neighbourhood; give --knn, --radius or --hops",
            )
            .into());
        }
    }
    let t = Instant::now();
    // The graph: read, or built as a neighbourhood (then also kept as an edge index for
    // --neighbours-out, and with the points' row count to check against the features).
    let (mut edges, built) = match &config.neighbourhood {
        None if needs_graph.is_none() => (EdgeList::default(), None),
        None => {
            phase("reading graph");
            (read_graph(&config.graph, config.format)?, None)
        }
        Some(spec) => {
            if config.edge_features.is_some() {
                // Edge feature rows belong to a graph file's edges, in its order; a built
                // neighbourhood has no such file, so any rows given would be misattached.
                return Err(GraphError::argument(
                    "--edge-features",
                    "its rows belong to the edges of a graph file, and a neighbourhood built \
                     by --knn, --radius or --hops has none; models with edge_dim need --graph",
                )
                .into());
            }
            let walks_graph = spec.hops.is_some();
            if !walks_graph && !config.graph.as_os_str().is_empty() {
                return Err(GraphError::argument(
                    "--graph",
                    "not used with --knn or --radius: the neighbourhood built from --points \
                     is the graph (--graph goes with --hops)",
                )
                .into());
            }
            phase("building the neighbourhood");
            let spec = crate::neighbours::NeighboursConfig {
                graph: walks_graph.then(|| config.graph.clone()),
                format: config.format,
                ..spec.clone()
            };
            let nb = crate::neighbours::build_neighbours(&spec, threads)?;
            let points = spec.points.clone().map(|p| (p, nb.num_nodes()));
            let list = nb.to_edge_list();
            let keep = config.neighbours_out.is_some().then(|| nb.edge_index());
            (list, Some((points, keep)))
        }
    };
    for w in &edges.warnings {
        tracing::warn!("{w}");
    }
    let read_graph_ms = ms(t);

    // The features' shape from their header: the graph is checked against it and the
    // CSR built before the body is read, so that the CSR's temporary memory can become
    // the features' (a fresh page costs a fault and a zero fill; see below).
    let (n, width) = Features::npy_shape(&config.features)?;
    if let Some((Some((points, rows)), _)) = &built {
        if *rows != n {
            return Err(GraphError::argument(
                "--points",
                format!(
                    "{} has {rows} rows but {} has {n} (one point per node)",
                    points.display(),
                    config.features.display()
                ),
            )
            .into());
        }
    }
    if let Some(want) = config.num_nodes {
        if want != n as u64 {
            return Err(GraphError::argument(
                "--num-nodes",
                format!(
                    "{want} nodes, but {} has {n} feature rows (one row per node)",
                    config.features.display()
                ),
            )
            .into());
        }
    }
    if edges.num_nodes > n as u64 && built.is_some() {
        // Only --hops gets here (--knn/--radius nodes are the points, checked above): the
        // walked graph's ids reach beyond the features. Its edge numbers are not the
        // file's, so the file is named with its largest id instead.
        return Err(GraphError::invalid(
            &config.graph,
            format!(
                "has node ids up to {}, but {} has only {n} feature rows (one row per node; \
                 --hops walks this graph)",
                edges.num_nodes - 1,
                config.features.display()
            ),
        )
        .into());
    }
    if edges.num_nodes > n as u64 {
        edges.check_ids(
            n as u64,
            &config.graph,
            &format!("the {n} rows of {}", config.features.display()),
        )?;
        // Ids are fine but the header declares more nodes (METIS / Matrix Market).
        return Err(GraphError::invalid(
            &config.graph,
            format!(
                "declares {} nodes, but {} has only {n} feature rows",
                edges.num_nodes,
                config.features.display()
            ),
        )
        .into());
    }
    model.check_input_width(width, &config.features)?;
    let edge_attr = match &config.edge_features {
        Some(path) => Some(Features::read_edge_npy_for(
            path,
            edges.len(),
            &config.graph,
        )?),
        None => None,
    };
    model.check_edge_features(
        "--edge-features",
        edge_attr
            .as_ref()
            .zip(config.edge_features.as_deref())
            .map(|(ea, p)| (p, ea.width)),
    )?;

    // Locality: the layers run in a renumbering (`order[new] = old`); every id was
    // checked below n above. Edge order, hence every row's summation order, is unchanged.
    let t = Instant::now();
    let renumbered = match config.reorder {
        Reorder::None => None,
        Reorder::Rcm => {
            phase("reordering nodes (RCM)");
            let t = Instant::now();
            let order = distgat_graph::reorder::rcm_order(&edges, n)?;
            let order_ms = ms(t);
            let new_of = distgat_graph::reorder::inverse(&order);
            // The input's numbering is needed after the layers only to write attention
            // coefficients (their edge index); otherwise the edges are renamed in place.
            let relabelled = if config.attention_dir.is_some() {
                let mut copy = edges.clone();
                copy.rename(&new_of);
                Some(copy)
            } else {
                edges.rename(&new_of);
                None
            };
            let relabel_ms = ms(t) - order_ms;
            tracing::debug!(order_ms, relabel_ms, "RCM renumbering");
            Some((new_of, relabelled, order))
        }
    };
    let mut reorder_ms = ms(t);

    // Its rows go only to the output file (no renumbering, no accuracy): a one-layer
    // model then transforms the features in place and gathers from them, so they go
    // into huge pages, as the engine's source rows otherwise do.
    let rows_only = config.labels.is_none() && config.test_idx.is_none();
    let sink_only = config.reorder == Reorder::None && rows_only;
    let huge_pages = sink_only && distgat_attention::transforms_features_in_place(&model);
    // One allocation serves first as the CSR build's temporary memory (8 bytes per kept
    // edge), then holds the features: its pages are faulted in and zeroed once, where a
    // fresh allocation for each cost 0.8 GB more of new pages at 100M edges
    // (docs/performance.md, sixteenth session).
    let csr_scratch = if needs_graph.is_some() {
        2 * edges.len()
    } else {
        0
    };
    let mut scratch = Features::buffer((n.saturating_mul(width)).max(csr_scratch), huge_pages);

    phase("building CSR");
    let t = Instant::now();
    let want_attention = config.attention_dir.is_some();
    let topology = if needs_graph.is_some() {
        let run_edges = match &renumbered {
            Some((_, Some(copy), _)) => copy,
            _ => &edges,
        };
        Topology::build_with_scratch(run_edges, n, &model, want_attention, &mut scratch)?
    } else {
        Topology::without_graph(n)
    };
    let build_csr_ms = ms(t);

    phase("reading features");
    let t = Instant::now();
    let mut features = Features::read_npy_into(&config.features, scratch)?;
    if (features.num_nodes, features.width) != (n, width) {
        return Err(GraphError::invalid(
            &config.features,
            format!(
                "changed while being read: its header said [{n}, {width}], now [{}, {}]",
                features.num_nodes, features.width
            ),
        )
        .into());
    }
    features.normalize(config.normalize);
    let read_features_ms = ms(t);
    if let Some((_, _, order)) = &renumbered {
        let t = Instant::now();
        features.values = permute_rows(&features.values, features.width, order);
        reorder_ms += ms(t);
    }
    let num_edges = edges.len();
    let attention_edges: Vec<(bool, Vec<i64>)> = if want_attention {
        let mut settings: Vec<bool> = model
            .layers
            .iter()
            .filter_map(|l| l.add_self_loops())
            .collect();
        settings.sort_unstable();
        settings.dedup();
        settings
            .into_iter()
            .map(|loops| (loops, attention_edge_index(&edges, n, loops)))
            .collect()
    } else {
        Vec::new()
    };
    // The edge ids' resident memory (huge pages for an .npy graph) can hold the first
    // layer's source rows (`run_model`'s `spare`).
    let spare = edges
        .into_spare_ids()
        .map(distgat_attention::RowBuffer::spare_words);
    let new_of = renumbered.map(|(new_of, _, _)| new_of);

    let progress = match (&config.progress, config.on_phase) {
        (Some(p), _) => p.clone(),
        (None, Some(on_phase)) => std::sync::Arc::new(Progress::with_layer_hook(move |k, l| {
            on_phase(&format!("layer {}/{l}", k + 1))
        })),
        (None, None) => Default::default(),
    };
    // The output file is written while the last layer computes: each chunk of its rows
    // goes to the (temporary, presized) file as soon as it is final, from the thread that
    // computed it, and a flusher thread pushes what is written to the disk meanwhile, so
    // the final fsync has little left. The file appears under its name only at commit.
    let out_file = std::sync::Arc::new(NpyRowsFile::create(&config.out, n, model.out_width())?);
    let flusher = distgat_graph::SyncBehind::start(
        &config.out,
        {
            let file = out_file.clone();
            move || file.rows_written() as u64 * file.row_bytes()
        },
        {
            let file = out_file.clone();
            move || file.sync_data()
        },
    );
    // Renumbered rows are not in the file's order: they are written after the layers.
    // Unless the accuracy needs them, the rows go only to the file, so a local last
    // layer needs no output array; the sink then counts their non-finite values.
    let sunk_non_finite = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if new_of.is_none() {
        let sink: distgat_attention::FinalRowsSink = {
            let file = out_file.clone();
            let non_finite = sunk_non_finite.clone();
            std::sync::Arc::new(move |first, rows: &[f32]| {
                if sink_only {
                    let bad = rows.iter().filter(|v| !v.is_finite()).count();
                    non_finite.fetch_add(bad, std::sync::atomic::Ordering::Relaxed);
                }
                file.write_rows(first, rows)
            })
        };
        if sink_only {
            progress.set_final_rows_sink_only(sink);
        } else {
            progress.set_final_rows_sink(Some(sink));
        }
    }
    let output = run_model(
        &model,
        &topology,
        features.values,
        spare,
        edge_attr.as_ref(),
        Execution::Parallel,
        want_attention,
        config.report_approximation_error,
        &progress,
    );
    progress.set_final_rows_sink(None);
    let flushed = flusher.stop();
    let mut output = output?;
    flushed?;
    drop(topology);
    if let Some(new_of) = &new_of {
        // Back to the input's numbering: row `old` is the computed row `new_of[old]`, and
        // so are the added loops at the end of each local layer's coefficients. Rows that
        // only go to the file are put back in order as they are written.
        if !rows_only {
            output.values = permute_rows(&output.values, output.width, new_of);
        }
        for (layer, alpha) in model.layers.iter().zip(output.attention.iter_mut()) {
            if let (Some(true), Some(kind)) = (layer.add_self_loops(), layer.local()) {
                let h = kind.heads();
                let start = alpha.len() - n * h;
                let loops = permute_rows(&alpha[start..], h, new_of);
                alpha[start..].copy_from_slice(&loops);
            }
        }
    }
    // distgat refuses non-finite inputs; a non-finite output (features so large that
    // float32 overflows, as PyG's float32 forward does too) is reported, not hidden.
    // Rows the last layer handed only to the file (no values kept) were counted as they
    // went.
    let non_finite: usize = if output.values.is_empty() {
        sunk_non_finite.load(std::sync::atomic::Ordering::Relaxed)
    } else {
        use rayon::prelude::*;
        output
            .values
            .par_chunks(1 << 20)
            .map(|c| c.iter().filter(|v| !v.is_finite()).count())
            .sum()
    };
    if non_finite > 0 {
        tracing::warn!(
            "{non_finite} of {} output values are NaN or infinite: the computation overflowed \
             float32 (PyG's float32 forward gives the same); check the scale of the features \
             and weights",
            n * output.width
        );
    }

    let accuracy = match (&config.labels, &config.test_idx) {
        (Some(labels), Some(idx)) => Some(accuracy(&output.values, output.width, n, labels, idx)?),
        (None, None) => None,
        _ => {
            return Err(GraphError::argument(
                "--labels/--test-idx",
                "give both (labels and the node ids to score) or neither",
            )
            .into())
        }
    };

    phase("writing output");
    let t = Instant::now();
    if let (Some(new_of), true) = (&new_of, rows_only) {
        write_rows_from(&out_file, &output.values, output.width, new_of);
    }
    // A global or GPSConv last layer hands over no rows while it computes: all of them now.
    let output_streamed = out_file.rows_written() == n;
    if !output_streamed {
        out_file.write_all(&output.values)?;
    }
    std::sync::Arc::into_inner(out_file)
        .expect("the sink and the flusher have dropped their handles")
        .commit()?;
    if let Some(dir) = &config.attention_dir {
        if !dir.is_dir() {
            std::fs::create_dir(dir).map_err(|e| GraphError::io(dir, e))?;
        }
        for (k, (layer, alpha)) in model.layers.iter().zip(&output.attention).enumerate() {
            // Global layers have no edges (and an empty entry in `output.attention`).
            let Some(loops) = layer.add_self_loops() else {
                continue;
            };
            let layer = layer.local().expect("a layer with add_self_loops is local");
            let edge_index = &attention_edges
                .iter()
                .find(|(l, _)| *l == loops)
                .expect("an edge index per self-loop setting")
                .1;
            let e = (edge_index.len() / 2) as u64;
            write_npy(
                &dir.join(format!("layer{k}_alpha.npy")),
                &[e, layer.heads() as u64],
                alpha,
            )?;
            write_npy(
                &dir.join(format!("layer{k}_att_edge_index.npy")),
                &[2, e],
                edge_index,
            )?;
        }
    }
    if let (Some(path), Some((_, Some(edge_index)))) = (&config.neighbours_out, &built) {
        let e = (edge_index.len() / 2) as u64;
        write_npy(path, &[2, e], edge_index)?;
    }
    let write_ms = ms(t);

    let report = InferReport {
        num_nodes: n,
        num_edges,
        out_width: output.width,
        threads,
        read_graph_ms,
        read_features_ms,
        load_model_ms,
        build_csr_ms,
        reorder_ms,
        layers: output
            .timings
            .iter()
            .zip(&model.layers)
            .map(|(t, l)| LayerReport {
                kind: l.kind().to_string(),
                transform_ms: t.transform.as_secs_f64() * 1e3,
                aggregate_ms: t.aggregate.as_secs_f64() * 1e3,
                approximation_error: t.approximation_error,
            })
            .collect(),
        write_ms,
        output_streamed,
        total_ms: ms(started),
        peak_rss_bytes: crate::stats::peak_rss_bytes(),
        accuracy,
    };
    if let Some(path) = &config.stats_json {
        let json = serde_json::to_string_pretty(&report).expect("the report serialises");
        let file = AtomicFile::create(path)?;
        (|| -> std::io::Result<()> {
            let mut f = file.as_file();
            f.write_all(json.as_bytes())?;
            f.write_all(b"\n")
        })()
        .map_err(|e| GraphError::io(path, e))?;
        file.commit()?;
    }
    Ok(report)
}

/// Writes `[rows, width]` row-major rows to `file` with file row `k` taken from row
/// `from[k]` of `values`: in parallel pieces of about 2 MiB, each gathered into its
/// thread's reused buffer (no permuted copy of the whole array; a write error is kept by
/// `file` for its commit).
fn write_rows_from(file: &NpyRowsFile, values: &[f32], width: usize, from: &[u32]) {
    use rayon::prelude::*;
    if width == 0 {
        return;
    }
    let piece_rows = ((2usize << 20) / (4 * width)).max(1);
    from.par_chunks(piece_rows)
        .enumerate()
        .for_each_init(Vec::new, |buf, (i, rows)| {
            buf.clear();
            for &k in rows {
                buf.extend_from_slice(&values[k as usize * width..(k as usize + 1) * width]);
            }
            file.write_rows(i * piece_rows, buf);
        });
}

/// `[rows, width]` row-major with row `k` taken from row `from[k]` of `values`, in
/// parallel.
fn permute_rows(values: &[f32], width: usize, from: &[u32]) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0f32; values.len()];
    if width == 0 {
        return out;
    }
    out.par_chunks_mut(width)
        .zip(from.par_iter())
        .for_each(|(row, &k)| {
            row.copy_from_slice(&values[k as usize * width..(k as usize + 1) * width])
        });
    out
}

/// Checks, before any work, that `out` (given by `flag`) can be written as a file: its
/// directory exists and it is not itself a directory.
/// Whether two output paths name the same file (compared as absolute paths).
pub fn same_file(a: &Path, b: &Path) -> bool {
    std::path::absolute(a).ok() == std::path::absolute(b).ok()
}

pub fn check_output_file(flag: &str, out: &Path) -> Result<(), GraphError> {
    check_output_dir(flag, out)?;
    if out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/') {
        return Err(GraphError::argument(
            flag,
            format!("{} is a directory; name the file to write", out.display()),
        ));
    }
    Ok(())
}

fn check_output_dir(flag: &str, out: &Path) -> Result<(), GraphError> {
    let dir = distgat_graph::parent_dir(out);
    if !dir.is_dir() {
        return Err(GraphError::argument(
            flag,
            format!(
                "{}: the directory {} does not exist",
                out.display(),
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Accuracy of the argmax of an output `.npy` `[N, C]` on the nodes of `idx_path`.
pub fn accuracy_of(out: &Path, labels: &Path, idx: &Path) -> Result<Accuracy, GraphError> {
    let f = Features::read_npy(out)?;
    accuracy(&f.values, f.width, f.num_nodes, labels, idx)
}

/// Fraction of the nodes in `idx_path` whose argmax over the output row equals the label.
fn accuracy(
    out: &[f32],
    width: usize,
    n: usize,
    labels_path: &Path,
    idx_path: &Path,
) -> Result<Accuracy, GraphError> {
    let labels = read_1d_i64(labels_path)?;
    if labels.len() != n {
        return Err(GraphError::invalid(
            labels_path,
            format!("{} labels for {n} nodes", labels.len()),
        ));
    }
    let idx = read_1d_i64(idx_path)?;
    let mut correct = 0;
    for (pos, &i) in idx.iter().enumerate() {
        if i < 0 || i as usize >= n {
            return Err(GraphError::invalid(
                idx_path,
                format!("entry {pos}: node id {i} is outside 0..{n}"),
            ));
        }
        let row = &out[i as usize * width..(i as usize + 1) * width];
        let predicted = argmax(row);
        if predicted as i64 == labels[i as usize] {
            correct += 1;
        }
    }
    Ok(Accuracy {
        correct,
        total: idx.len(),
    })
}

/// Index of the largest value (the first one on ties, like numpy).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn read_1d_i64(path: &Path) -> Result<Vec<i64>, GraphError> {
    let body = NpyBody::open(path)?;
    if body.shape.len() != 1 {
        return Err(GraphError::format(
            path,
            format!("expected a 1-D array, found shape {:?}", body.shape),
        ));
    }
    body.read_i64(path)
}
