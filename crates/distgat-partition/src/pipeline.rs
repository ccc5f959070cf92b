//! The whole partitioning pipeline behind `distgat partition` and the coordinator's
//! CreatePartition: read, symmetrise, assign, plan, write the directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{
    assign, features_fingerprint, graph_fingerprint, write_partition, HaloPlan, InputInfo,
    Manifest, Method, NewPartition, PartitionError, PartitionStats, RunInfo, SymmetricGraph,
};
use distgat_graph::{read_graph, write_npy, Features, GraphError, GraphFormat};

/// Element type of `--assignment-out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssignmentDtype {
    Int32,
    #[default]
    Int64,
}

/// Everything `distgat partition` needs.
#[derive(Debug, Clone)]
pub struct PartitionConfig {
    pub graph: PathBuf,
    pub format: Option<GraphFormat>,
    /// Node count when no features are given and the graph implies fewer nodes.
    pub num_nodes: Option<u64>,
    pub features: Option<PathBuf>,
    /// Keep features out of the shards (workers read them from the shared file).
    pub shared_features: bool,
    /// Edge attributes `[E, D]` (row e for edge e of the graph): each shard keeps the rows
    /// of its local edges.
    pub edge_features: Option<PathBuf>,
    pub parts: usize,
    pub method: Method,
    pub out: PathBuf,
    pub assignment_out: Option<PathBuf>,
    pub assignment_dtype: AssignmentDtype,
    /// Row width (f32 columns) used to report halo bytes per layer.
    pub row_width: usize,
    /// Replace an output directory that holds a different partition.
    pub force: bool,
    pub on_phase: Option<fn(&str)>,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig {
            graph: PathBuf::new(),
            format: None,
            num_nodes: None,
            features: None,
            shared_features: false,
            edge_features: None,
            parts: 2,
            method: Method::metis_default(),
            out: PathBuf::new(),
            assignment_out: None,
            assignment_dtype: AssignmentDtype::default(),
            row_width: 128,
            force: false,
            on_phase: None,
        }
    }
}

pub fn run_partition(config: &PartitionConfig) -> Result<Manifest, PartitionError> {
    let phase = |name: &str| {
        if let Some(f) = config.on_phase {
            f(name)
        }
    };
    let started = Instant::now();
    if let Some(path) = &config.assignment_out {
        let dir = distgat_graph::parent_dir(path);
        if path.is_dir() {
            return Err(GraphError::argument(
                "--assignment-out",
                format!(
                    "{} is a directory; name the .npy file to write",
                    path.display()
                ),
            )
            .into());
        }
        if !dir.is_dir() {
            return Err(GraphError::argument(
                "--assignment-out",
                format!(
                    "{}: the directory {} does not exist",
                    path.display(),
                    dir.display()
                ),
            )
            .into());
        }
    }

    phase("reading graph");
    let edges = read_graph(&config.graph, config.format)?;
    for w in &edges.warnings {
        tracing::warn!("{w}");
    }
    let features = match &config.features {
        Some(path) => {
            phase("reading features");
            Some(Features::read_npy(path)?)
        }
        None => None,
    };
    let (n, source) = match (&features, config.num_nodes) {
        (Some(f), Some(want)) if want != f.num_nodes as u64 => {
            return Err(GraphError::argument(
                "--num-nodes",
                format!("{want} nodes, but the features have {} rows", f.num_nodes),
            )
            .into())
        }
        (Some(f), _) => (
            f.num_nodes as u64,
            format!(
                "the {} rows of {}",
                f.num_nodes,
                config
                    .features
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            ),
        ),
        (None, Some(want)) => (want, "--num-nodes".to_string()),
        (None, None) => (edges.num_nodes, "the graph".to_string()),
    };
    edges.check_ids(n, &config.graph, &source)?;
    if edges.num_nodes > n {
        return Err(GraphError::invalid(
            &config.graph,
            format!("declares {} nodes, but {source} give {n}", edges.num_nodes),
        )
        .into());
    }
    let n = usize::try_from(n).map_err(|_| PartitionError::TooLarge(format!("{n} nodes")))?;
    let edge_features = match &config.edge_features {
        Some(path) => {
            phase("reading edge features");
            let ea = Features::read_edge_npy_for(path, edges.len(), &config.graph)?;
            Some((
                InputInfo {
                    path: path.display().to_string(),
                    rows: ea.num_nodes,
                    size: ea.width,
                    fingerprint: features_fingerprint(&ea),
                },
                ea,
            ))
        }
        None => None,
    };

    phase("symmetrising");
    let graph = SymmetricGraph::build(&edges, n)?;
    // Incoming edges per node: METIS's second constraint, only with --balance-edges.
    let in_degree = match &config.method {
        Method::Metis {
            balance_edges: true,
            ..
        } => {
            let mut d = vec![0u64; n];
            for &t in edges.dst() {
                d[t as usize] += 1;
            }
            d
        }
        _ => Vec::new(),
    };
    let graph_info = InputInfo {
        path: config.graph.display().to_string(),
        rows: n,
        size: edges.len(),
        fingerprint: graph_fingerprint(&edges, n),
    };
    // Memory: the edge list (16 bytes per edge) is not needed while the partitioner runs;
    // a regular file is read again afterwards (and must not have changed), so the peak
    // is the symmetric graph plus METIS's own copies, not the input as well.
    let reread = std::fs::metadata(&config.graph)
        .map(|m| m.is_file())
        .unwrap_or(false);
    let mut kept = Some(edges);
    if reread {
        kept = None;
    }

    phase(&format!("partitioning ({})", config.method.name()));
    let assignment = assign(&config.method, &graph, &in_degree, config.parts)?;
    drop(in_degree);
    let quality = PartitionStats::quality(&graph, &assignment);
    drop(graph);

    let edges = match kept {
        Some(edges) => edges,
        None => {
            phase("reading graph again");
            let edges = read_graph(&config.graph, config.format)?;
            if edges.len() != graph_info.size
                || graph_fingerprint(&edges, n) != graph_info.fingerprint
            {
                return Err(GraphError::invalid(
                    &config.graph,
                    "changed while it was being partitioned; partition it again",
                )
                .into());
            }
            edges
        }
    };

    phase("building halo plan");
    let plan = HaloPlan::build(&edges, n, &assignment, config.parts)?;
    let stats = PartitionStats::from_plan(quality, &plan, edges.len(), config.row_width);

    phase("writing shards");
    drop(edges);
    let features_info = match (&features, &config.features) {
        (Some(f), Some(path)) => Some((
            InputInfo {
                path: path.display().to_string(),
                rows: f.num_nodes,
                size: f.width,
                fingerprint: features_fingerprint(f),
            },
            f,
        )),
        _ => None,
    };
    let report = RunInfo {
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
    };
    let manifest = write_partition(
        &config.out,
        NewPartition {
            graph: graph_info,
            features: features_info,
            features_in_shards: features.is_some() && !config.shared_features,
            edge_features: edge_features.as_ref().map(|(info, ea)| (info.clone(), ea)),
            method: config.method.clone(),
            assignment: &assignment,
            plan: &plan,
            stats,
            report,
        },
        config.force,
    )?;
    if let Some(path) = &config.assignment_out {
        match config.assignment_dtype {
            AssignmentDtype::Int32 => {
                let a: Vec<i32> = assignment.iter().map(|&p| p as i32).collect();
                write_npy(path, &[n as u64], &a)?;
            }
            AssignmentDtype::Int64 => {
                let a: Vec<i64> = assignment.iter().map(|&p| p as i64).collect();
                write_npy(path, &[n as u64], &a)?;
            }
        }
    }
    Ok(manifest)
}

/// The human-readable report of a partition.
pub fn format_report(m: &Manifest) -> String {
    let s = &m.stats;
    let mut out = String::new();
    let method = serde_json::to_string(&m.method).unwrap_or_default();
    out += &format!(
        "partition of {} ({} nodes, {} edges) into {} parts with {method}\n",
        m.graph.path, s.num_nodes, s.num_edges, s.parts
    );
    // The cut is a share of the symmetrised graph's undirected pairs (a directed edge and
    // its reverse are one pair; a one-way edge is a pair too), never of E / 2.
    let share = if s.num_undirected_pairs > 0 {
        format!(
            " ({:.2}% of {})",
            100.0 * s.edge_cut as f64 / s.num_undirected_pairs as f64,
            s.num_undirected_pairs
        )
    } else {
        String::new()
    };
    out += &format!(
        "edge cut {} undirected pairs{share}, communication volume {}\n",
        s.edge_cut, s.communication_volume
    );
    out += &format!(
        "imbalance: nodes {:.3}, incoming edges {:.3}\n",
        s.node_imbalance, s.edge_imbalance
    );
    out += &format!(
        "halo rows {} in all; {} bytes per layer at {} f32 columns per row\n",
        s.halo_rows_total, s.halo_bytes_per_layer, s.row_width
    );
    let empty = s.empty_parts();
    if !empty.is_empty() {
        out += &format!(
            "warning: {} of {} parts own no node (parts {empty:?}): a job on this partition \
             starts a worker for each that computes nothing; partition into fewer parts \
             (--parts) for this graph\n",
            empty.len(),
            s.parts
        );
    }
    out += "part   owned   incoming edges   halo rows\n";
    for p in 0..s.parts {
        out += &format!(
            "{p:>4} {:>7} {:>16} {:>11}\n",
            s.owned_rows[p], s.incoming_edges[p], s.halo_rows[p]
        );
    }
    out += &format!(
        "took {:.2} s{}",
        m.report.seconds,
        m.report
            .peak_rss_bytes
            .map(|b| format!(", peak memory {:.1} MiB", b as f64 / (1 << 20) as f64))
            .unwrap_or_default()
    );
    out
}

/// Peak resident set size of this process in bytes (`VmHWM`), if the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
