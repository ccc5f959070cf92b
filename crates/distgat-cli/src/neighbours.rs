//! `distgat neighbours`: build a neighbourhood graph (kNN, radius or k-hop) and write it as
//! an int64 `[2, E]` edge index sorted by (target, source). The rules are those of
//! `distgat-neighbours` (reference README 8.6, PyG's `knn_graph` / `radius_graph`).

use std::path::PathBuf;
use std::time::Instant;

use clap::ArgGroup;
use distgat_graph::read_graph;
use distgat_neighbours::{
    build, Execution, Metric, NeighbourError, NeighbourRule, Neighbours, Options, Points, Search,
};

/// What `distgat neighbours` does; `Default` leaves every choice unset, so a config must
/// set `out` and exactly one of `knn`, `radius`, `hops`.
#[derive(Debug, Clone, Default)]
pub struct NeighboursConfig {
    /// float32/float64 `.npy` `[N, D]`; required for knn and radius; with hops, its row
    /// count is the node count.
    pub points: Option<PathBuf>,
    /// `--knn K`.
    pub knn: Option<usize>,
    /// `--radius R`.
    pub radius: Option<f64>,
    /// `--max-neighbours M` (radius and hops).
    pub max_neighbours: Option<usize>,
    /// `--hops H` (needs `graph`).
    pub hops: Option<usize>,
    /// `--graph G`: the graph the hops rule walks (any format `read_graph` knows).
    pub graph: Option<PathBuf>,
    /// Overrides the format implied by `graph`'s extension.
    pub format: Option<distgat_graph::GraphFormat>,
    /// `--loop`: the centre is its own neighbour, counted within K / M.
    pub self_loops: bool,
    pub metric: Metric,
    /// Worker threads (default: all cores); the output is the same bits for any count.
    pub threads: Option<usize>,
    /// Output: int64 `.npy` `[2, E]`.
    pub out: PathBuf,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct NeighboursReport {
    pub num_nodes: usize,
    pub num_edges: usize,
    pub min_degree: usize,
    pub max_degree: usize,
    pub threads: usize,
    pub total_ms: f64,
}

/// A `distgat neighbours` failure; every message names the flag or file.
#[derive(Debug, thiserror::Error)]
pub enum NeighboursError {
    /// A flag's value is not acceptable.
    #[error("{flag}: {detail}")]
    Flag { flag: &'static str, detail: String },
    /// A file is missing, malformed or has bad content (the message names it).
    #[error(transparent)]
    Input(NeighbourError),
    /// The graph of `--graph` is not acceptable.
    #[error("{}: {error}", graph.display())]
    Graph {
        graph: PathBuf,
        error: NeighbourError,
    },
}

fn flag(flag: &'static str, detail: impl Into<String>) -> NeighboursError {
    NeighboursError::Flag {
        flag,
        detail: detail.into(),
    }
}

impl NeighboursConfig {
    fn rule(&self) -> Result<NeighbourRule, NeighboursError> {
        match (self.knn, self.radius, self.hops) {
            (Some(k), None, None) => {
                if self.max_neighbours.is_some() {
                    return Err(flag(
                        "--max-neighbours",
                        "applies to --radius and --hops, not --knn (K is already the count)",
                    ));
                }
                Ok(NeighbourRule::Knn { k })
            }
            (None, Some(r), None) => Ok(NeighbourRule::Radius {
                r,
                max_neighbours: self.max_neighbours,
            }),
            (None, None, Some(hops)) => Ok(NeighbourRule::Hops {
                hops,
                max_neighbours: self.max_neighbours,
            }),
            _ => Err(flag("--knn/--radius/--hops", "give exactly one of them")),
        }
    }
}

/// Puts the flag the user typed in front of a parameter error; file errors already name
/// their file.
fn name_flag(e: NeighbourError, config: &NeighboursConfig) -> NeighboursError {
    let msg = e.to_string();
    match e {
        NeighbourError::BadK { .. } => flag("--knn", msg),
        NeighbourError::BadRadius { .. } => flag("--radius", msg),
        NeighbourError::BadMaxNeighbours { .. } => flag("--max-neighbours", msg),
        NeighbourError::BadHops { .. } => flag("--hops", msg),
        NeighbourError::MissingGraph => flag("--graph", "--hops needs --graph G"),
        NeighbourError::MissingPoints { .. } => flag("--points", msg),
        NeighbourError::GraphId { .. } => match &config.graph {
            Some(graph) => NeighboursError::Graph {
                graph: graph.clone(),
                error: e,
            },
            None => NeighboursError::Input(e),
        },
        other => NeighboursError::Input(other),
    }
}

/// Builds the neighbourhood and writes `config.out` (atomically: nothing is left under that
/// name, nor a partial file, when anything fails).
pub fn run_neighbours(config: &NeighboursConfig) -> Result<NeighboursReport, NeighboursError> {
    let start = Instant::now();
    let threads = config.threads.unwrap_or_else(rayon::current_num_threads);
    crate::infer::check_output_file("--out", &config.out)
        .map_err(|e| NeighboursError::Input(NeighbourError::from(e)))?;
    let nb = build_neighbours(config, threads)?;
    nb.write_npy(&config.out).map_err(NeighboursError::Input)?;
    let degrees = (0..nb.num_nodes()).map(|i| nb.of(i).len());
    Ok(NeighboursReport {
        num_nodes: nb.num_nodes(),
        num_edges: nb.num_edges(),
        min_degree: degrees.clone().min().unwrap_or(0),
        max_degree: degrees.max().unwrap_or(0),
        threads,
        total_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// Builds the neighbourhood `config` asks for on `threads` threads (`config.out` and
/// `config.threads` are not read): what `distgat neighbours` writes, and what `distgat
/// infer --knn/--radius/--hops` runs the model over.
pub fn build_neighbours(
    config: &NeighboursConfig,
    threads: usize,
) -> Result<Neighbours, NeighboursError> {
    let rule = config.rule()?;
    if threads == 0 {
        return Err(flag("--threads", "must be at least 1"));
    }
    if config.points.is_none() && !matches!(rule, NeighbourRule::Hops { .. }) {
        return Err(flag("--points", "--knn and --radius need --points P.npy"));
    }
    if config.graph.is_some() && !matches!(rule, NeighbourRule::Hops { .. }) {
        return Err(flag("--graph", "is used only by --hops"));
    }
    if config.metric != Metric::Euclidean && matches!(rule, NeighbourRule::Hops { .. }) {
        return Err(flag(
            "--metric",
            "is used only by --knn and --radius (--hops counts edges)",
        ));
    }
    let points = match &config.points {
        Some(path) => Some(Points::read_npy(path).map_err(NeighboursError::Input)?),
        None => None,
    };
    let graph = match &config.graph {
        Some(path) => Some(
            read_graph(path, config.format)
                .map_err(|e| NeighboursError::Input(NeighbourError::from(e)))?,
        ),
        None => None,
    };
    let options = Options {
        metric: config.metric,
        self_loops: config.self_loops,
        execution: if threads == 1 {
            Execution::Sequential
        } else {
            Execution::Parallel
        },
        search: Search::Auto,
    };
    let run = || build(&rule, points.as_ref(), graph.as_ref(), &options);
    // `infer` calls this inside its own pool of `threads`: no second pool then.
    let built = if rayon::current_num_threads() == threads {
        run()
    } else {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| flag("--threads", e.to_string()))?
            .install(run)
    };
    built.map_err(|e| name_flag(e, config))
}

/// What `distgat run --points ...` checks before it starts any process: the same flag
/// errors as [`build_neighbours`] (a stray `--graph`, a missing `--points`, K against the
/// point count, R, M), plus what the distributed build does not do (`--hops`), each
/// naming its flag. Reads only the points file's header; the coordinator
/// reads and validates its values. Returns the rule and options, and the point count N.
pub fn check_distributed(
    config: &NeighboursConfig,
) -> Result<(NeighbourRule, Options, usize), NeighboursError> {
    let rule = config.rule()?;
    if matches!(rule, NeighbourRule::Hops { .. }) {
        return Err(flag(
            "--hops",
            "distgat run builds --knn and --radius neighbourhoods distributed, not k-hop ones; \
             build those with `distgat neighbours --hops H --graph G --out E.npy` and run over \
             --graph E.npy",
        ));
    }
    let Some(path) = &config.points else {
        return Err(flag("--points", "--knn and --radius need --points P.npy"));
    };
    if config.graph.is_some() {
        return Err(flag(
            "--graph",
            "not used with --knn or --radius: the neighbourhood built from --points is the \
             graph (run over a graph file without --points)",
        ));
    }
    let body = distgat_graph::NpyBody::open(path)
        .map_err(|e| NeighboursError::Input(NeighbourError::from(e)))?;
    if body.shape.len() != 2 || body.shape[1] == 0 {
        return Err(NeighboursError::Input(NeighbourError::Shape {
            origin: path.display().to_string(),
            shape: body.shape.clone(),
        }));
    }
    let n = body.shape[0] as usize;
    let options = Options {
        metric: config.metric,
        self_loops: config.self_loops,
        execution: Execution::Sequential,
        search: Search::Auto,
    };
    distgat_neighbours::check_rule(&rule, n, &options).map_err(|e| name_flag(e, config))?;
    Ok((rule, options, n))
}

/// `--metric` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MetricArg {
    /// squared euclidean distance in float64 from the float32 coordinates (the reference rule)
    Euclidean,
    /// 1 - cos(p_i, p_j) in float64; a zero vector is an error; --radius R compares d < R
    Cosine,
}

/// The neighbourhood options `distgat neighbours` and `distgat infer` share (one spelling,
/// one meaning).
#[derive(Debug, Clone, clap::Args)]
pub struct NeighbourhoodArgs {
    /// Points: float32 or float64 .npy [N, D], one row per node (float64 is rounded to float32; it may be the features file itself); required by --knn and --radius; with --hops, its row count is the node count
    #[arg(long, value_name = "P.npy")]
    pub points: Option<PathBuf>,
    /// kNN (PyG knn_graph): each node's K nearest other points by (distance, index), ties to the lower index; K < N (K <= N with --loop)
    #[arg(long, value_name = "K", allow_negative_numbers = true)]
    pub knn: Option<usize>,
    /// Radius (PyG radius_graph): every other point with squared distance < R*R (strict; cosine: distance < R)
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub radius: Option<f64>,
    /// With --radius or --hops: keep at most M neighbours per node, the M smallest (distance or hop count, index); torch-cluster keeps the first M found instead; default: no cap (PyG's radius_graph defaults to 32)
    #[arg(long, value_name = "M", allow_negative_numbers = true)]
    pub max_neighbours: Option<usize>,
    /// k-hop: every node with a directed path of at most H edges into the node in --graph (the pattern of (A+I)^H)
    #[arg(
        long,
        value_name = "H",
        requires = "graph",
        allow_negative_numbers = true
    )]
    pub hops: Option<usize>,
    /// PyG's loop=True: each node is also its own neighbour (edge i -> i), counted within K and M
    #[arg(long = "loop")]
    pub self_loops: bool,
    /// Distance for --knn and --radius (default: euclidean)
    #[arg(long, value_enum)]
    pub metric: Option<MetricArg>,
}

impl NeighbourhoodArgs {
    /// Whether any neighbourhood option was given.
    pub fn any(&self) -> bool {
        self.points.is_some()
            || self.knn.is_some()
            || self.radius.is_some()
            || self.max_neighbours.is_some()
            || self.hops.is_some()
            || self.self_loops
            || self.metric.is_some()
    }

    /// The config that builds this neighbourhood (`graph`: the graph --hops walks).
    /// Options that apply to none of the given rule are errors naming the flag, never
    /// ignored.
    pub fn config(&self, graph: Option<PathBuf>) -> Result<NeighboursConfig, NeighboursError> {
        let rule_given = self.knn.is_some() || self.radius.is_some() || self.hops.is_some();
        if !rule_given {
            let stray = [
                (self.points.is_some(), "--points"),
                (self.max_neighbours.is_some(), "--max-neighbours"),
                (self.self_loops, "--loop"),
                (self.metric.is_some(), "--metric"),
            ];
            if let Some((_, name)) = stray.iter().find(|(given, _)| *given) {
                return Err(flag(
                    name,
                    "describes a neighbourhood: give --knn K, --radius R or --hops H with it",
                ));
            }
        }
        if self.hops.is_some() && self.metric.is_some() {
            return Err(flag(
                "--metric",
                "is used only by --knn and --radius (--hops counts edges)",
            ));
        }
        Ok(NeighboursConfig {
            points: self.points.clone(),
            knn: self.knn,
            radius: self.radius,
            max_neighbours: self.max_neighbours,
            hops: self.hops,
            graph,
            format: None,
            self_loops: self.self_loops,
            metric: match self.metric {
                None | Some(MetricArg::Euclidean) => Metric::Euclidean,
                Some(MetricArg::Cosine) => Metric::Cosine,
            },
            threads: None,
            out: PathBuf::new(),
        })
    }
}

/// The clap arguments of `distgat neighbours` (the binary maps them onto
/// [`NeighboursConfig`]).
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("rule").required(true).multiple(false).args(["knn", "radius", "hops"])))]
pub struct NeighboursArgs {
    #[command(flatten)]
    pub neighbourhood: NeighbourhoodArgs,
    /// The graph --hops walks: .npy edge index, text edge list, METIS .graph or Matrix Market .mtx (by extension)
    #[arg(long, value_name = "G", requires = "hops")]
    pub graph: Option<PathBuf>,
    /// Worker threads (default: all cores); the output is bitwise the same for any count
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
    /// Output: int64 .npy [2, E], row 0 = source (neighbour), row 1 = target (centre), sorted by (target, source)
    #[arg(long, value_name = "EDGES.npy")]
    pub out: PathBuf,
}

/// The binary's entry: run and print one summary line on stderr.
pub fn neighbours_command(args: NeighboursArgs) -> Result<(), NeighboursError> {
    let config = NeighboursConfig {
        threads: args.threads,
        out: args.out,
        ..args.neighbourhood.config(args.graph)?
    };
    let r = run_neighbours(&config)?;
    eprintln!(
        "wrote {} ({} edges over {} nodes; in-degree {}..{}) in {:.1} ms with {} thread(s)",
        config.out.display(),
        r.num_edges,
        r.num_nodes,
        r.min_degree,
        r.max_degree,
        r.total_ms,
        r.threads
    );
    Ok(())
}
