//! `distgat`: graph attention inference on graphs too large for PyTorch Geometric.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use distgat_cli::{
    format_report, run_infer, run_partition, AssignmentDtype, InferConfig, PartitionConfig,
};
use distgat_graph::{GraphFormat, Normalization};
use distgat_partition::{Method, Objective};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "distgat",
    version,
    about = "Full-graph GAT inference, exactly as PyTorch Geometric computes it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a GAT model over a whole graph in this process and write the last layer's output.
    Infer(InferArgs),
    /// Partition a graph (METIS or a baseline) into a reusable partition directory.
    Partition(PartitionArgs),
    /// Run a job on a local cluster: partition, start a coordinator and K workers, run, stop.
    /// With no --graph: the shipped Cora data and trained model on 4 workers.
    Run(RunArgs),
    /// Serve the coordinator (prints `listening on ADDR` once bound).
    Coordinator {
        /// Address to bind; port 0 picks a free port
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// Serve a worker that registers with a coordinator (prints `listening on ADDR`).
    Worker {
        /// The coordinator's host:port
        #[arg(long)]
        coordinator: String,
        /// Address to bind; port 0 picks a free port
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// Verify a partition directory (checksums, shard structure) and show its report.
    PartitionReport {
        /// The partition directory
        dir: PathBuf,
        /// Print the report as one JSON object
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Graph file (default: the shipped Cora graph, with its features, model and labels)
    #[arg(long, value_name = "G", requires_all = ["features", "model", "out"])]
    graph: Option<PathBuf>,
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    #[arg(long, value_name = "X")]
    features: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "none")]
    normalize_features: NormalizeArg,
    #[arg(long, value_name = "M")]
    model: Option<PathBuf>,
    /// Output .npy [N, D] (default with no --graph: cora_out.npy)
    #[arg(long, value_name = "OUT.npy")]
    out: Option<PathBuf>,
    /// Worker processes (= parts)
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Reuse this partition directory (its parts must equal --workers)
    #[arg(long, value_name = "DIR")]
    partition: Option<PathBuf>,
    /// Partitioner when no --partition is given
    #[arg(long, default_value = "metis", value_parser = parse_method_name)]
    method: MethodArg,
    #[arg(long, value_name = "DIR")]
    attention_dir: Option<PathBuf>,
    /// Kernel threads per worker
    #[arg(long, default_value_t = 1)]
    threads_per_worker: usize,
    /// Write the job summary (per worker and layer: times, rows and halo bytes) as JSON
    #[arg(long, value_name = "S.json")]
    summary_json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct PartitionArgs {
    /// Graph file (same formats as `infer`)
    #[arg(long, value_name = "G")]
    graph: PathBuf,
    /// Graph format, overriding the file extension
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Node features .npy [N, F]: their rows go into the shards, and N is the node count
    #[arg(long, value_name = "X")]
    features: Option<PathBuf>,
    /// Keep feature rows out of the shards (workers read the shared features file)
    #[arg(long, requires = "features")]
    shared_features: bool,
    /// Node count, when there are no features and the last ids are isolated nodes
    #[arg(long, value_name = "N")]
    num_nodes: Option<u64>,
    /// Number of parts (1..=N)
    #[arg(long, value_name = "K")]
    parts: usize,
    /// metis, random, range (contiguous id blocks) or file:PARTS.npy (int32/int64 [N])
    #[arg(long, default_value = "metis", value_parser = parse_method_name)]
    method: MethodArg,
    /// METIS objective: edge cut or communication volume
    #[arg(long, value_enum, default_value = "cut")]
    objective: ObjectiveArg,
    /// METIS recursive bisection instead of k-way
    #[arg(long)]
    recursive: bool,
    /// Balance incoming edges per part as well as nodes (a second METIS constraint)
    #[arg(long)]
    balance_edges: bool,
    /// Seed for METIS and random
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// METIS partitions computed from different random starts; the best is kept
    #[arg(long, default_value_t = 1)]
    trials: u32,
    /// Allowed largest part / average part (METIS ufactor = (x - 1) * 1000)
    #[arg(long, default_value_t = 1.03)]
    imbalance: f64,
    /// Output partition directory (created atomically)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace an --out directory that holds a different partition (never anything else)
    #[arg(long)]
    force: bool,
    /// Also write the node -> part map as .npy [N]
    #[arg(long, value_name = "A.npy")]
    assignment_out: Option<PathBuf>,
    /// dtype of --assignment-out
    #[arg(long, value_enum, default_value = "int64")]
    assignment_dtype: DtypeArg,
    /// f32 columns per halo row, for the halo bytes in the report
    #[arg(long, default_value_t = 128)]
    row_width: usize,
    /// Print the report as one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Clone)]
enum MethodArg {
    Metis,
    Random,
    Range,
    File(PathBuf),
}

fn parse_method_name(s: &str) -> Result<MethodArg, String> {
    match s {
        "metis" => Ok(MethodArg::Metis),
        "random" => Ok(MethodArg::Random),
        "range" => Ok(MethodArg::Range),
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(MethodArg::File(PathBuf::from(p))),
            _ => Err(format!(
                "'{s}': expected metis, random, range or file:PARTS.npy"
            )),
        },
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ObjectiveArg {
    Cut,
    Volume,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    Int32,
    Int64,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// int64/int32 [2, E] edge index (row 0 = source, row 1 = target)
    Npy,
    /// text: one `src dst` pair per line, whitespace or comma separated, # or % comments
    Edgelist,
    /// METIS .graph (1-based adjacency lists)
    Metis,
    /// Matrix Market coordinate (entry (i, j) is the edge i -> j)
    Mtx,
}

#[derive(Clone, Copy, ValueEnum)]
enum NormalizeArg {
    /// use the features as they are
    None,
    /// PyG NormalizeFeatures: subtract the global minimum, divide each row by max(1, row sum)
    Row,
}

#[derive(clap::Args)]
struct InferArgs {
    /// Graph file: .npy edge index, text edge list (.txt .tsv .csv .el .edges), METIS .graph or Matrix Market .mtx
    #[arg(long, value_name = "G")]
    graph: PathBuf,
    /// Graph format, overriding the file extension
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Node features: float32 or float64 .npy [N, F]; N (the rows) is the node count
    #[arg(long, value_name = "X")]
    features: PathBuf,
    /// Feature normalisation applied after loading
    #[arg(long, value_enum, default_value = "none")]
    normalize_features: NormalizeArg,
    /// Expected node count; must equal the feature rows (a check for isolated trailing nodes)
    #[arg(long, value_name = "N")]
    num_nodes: Option<u64>,
    /// Model spec (gat-model-v1 JSON naming PyG GATConv safetensors weights)
    #[arg(long, value_name = "M")]
    model: PathBuf,
    /// Output: float32 .npy [N, D], the last layer's output in original node order
    #[arg(long, value_name = "OUT.npy")]
    out: PathBuf,
    /// Also write per layer layer{k}_alpha.npy [E', H] and layer{k}_att_edge_index.npy [2, E'] (PyG edge order)
    #[arg(long, value_name = "DIR")]
    attention_dir: Option<PathBuf>,
    /// Kernel threads (default: all cores); the output is bitwise the same for any count
    #[arg(long, value_name = "T")]
    threads: Option<usize>,
    /// int64 [N] class labels: with --test-idx, print the accuracy of the argmax on those nodes
    #[arg(long, value_name = "LABELS.npy", requires = "test_idx")]
    labels: Option<PathBuf>,
    /// int64 node ids to score against --labels
    #[arg(long, value_name = "IDX.npy", requires = "labels")]
    test_idx: Option<PathBuf>,
    /// Write the run's report (phase times, peak memory, accuracy) as JSON
    #[arg(long, value_name = "S.json")]
    stats_json: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Infer(args) => infer(args),
        Command::Partition(args) => partition(args),
        Command::PartitionReport { dir, json } => partition_report(&dir, json),
        Command::Run(args) => run(args),
        Command::Coordinator { listen } => serve(async move {
            distgat_runtime::start_coordinator(distgat_runtime::CoordinatorConfig {
                listen,
                ..Default::default()
            })
            .await
        }),
        Command::Worker {
            coordinator,
            listen,
        } => serve(async move {
            distgat_runtime::start_worker(distgat_runtime::WorkerConfig {
                coordinator,
                listen,
                ..Default::default()
            })
            .await
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

static PROGRESS: std::sync::OnceLock<ProgressBar> = std::sync::OnceLock::new();

fn show_phase(name: &str) {
    if let Some(bar) = PROGRESS.get() {
        bar.set_message(name.to_string());
    }
    tracing::info!(phase = name);
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("static template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let _ = PROGRESS.set(bar.clone());
    bar
}

fn graph_format(f: FormatArg) -> GraphFormat {
    match f {
        FormatArg::Npy => GraphFormat::Npy,
        FormatArg::Edgelist => GraphFormat::EdgeList,
        FormatArg::Metis => GraphFormat::Metis,
        FormatArg::Mtx => GraphFormat::MatrixMarket,
    }
}

/// Runs a server until SIGTERM or Ctrl-C; prints its address once bound.
fn serve(
    start: impl std::future::Future<Output = distgat_runtime::Result<distgat_runtime::RunningServer>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = start.await?;
        println!("listening on {}", server.addr);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = server.shutdown.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server.join).await;
        anyhow::Ok(())
    })
}

fn method_of(arg: MethodArg, seed: u64) -> Method {
    match arg {
        MethodArg::Metis => Method::metis_default(),
        MethodArg::Random => Method::Random { seed },
        MethodArg::Range => Method::Range,
        MethodArg::File(path) => Method::File { path },
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let root = std::env::var_os("DISTGAT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let shipped = args.graph.is_none();
    let (graph, features, model, normalize) = match args.graph {
        Some(g) => (
            g,
            args.features.expect("clap requires it"),
            args.model.expect("clap requires it"),
            args.normalize_features,
        ),
        None => (
            root.join("data/cora/edges.npy"),
            root.join("data/cora/features.npy"),
            root.join("reference/cora-gat/model.json"),
            NormalizeArg::Row,
        ),
    };
    let out = args.out.unwrap_or_else(|| PathBuf::from("cora_out.npy"));
    let config = distgat_cli::run::RunConfig {
        graph,
        format: args.format.map(graph_format),
        features,
        normalize: match normalize {
            NormalizeArg::None => Normalization::None,
            NormalizeArg::Row => Normalization::Row,
        },
        model,
        out: out.clone(),
        workers: args.workers,
        partition: args.partition,
        method: method_of(args.method, 0),
        attention_dir: args.attention_dir,
        threads_per_worker: args.threads_per_worker,
        exe: std::env::current_exe()?,
    };
    let bar = progress_bar();
    let summary = distgat_cli::run::run_cluster(&config, show_phase);
    bar.finish_and_clear();
    let summary = summary?;
    let parsed: serde_json::Value = serde_json::from_str(&summary)?;
    eprintln!(
        "wrote {} in {:.2} s with {} workers",
        out.display(),
        parsed["seconds"].as_f64().unwrap_or(0.0),
        config.workers
    );
    eprintln!("part layer  compute ms  wait ms  send ms  rows sent  halo bytes (planned)");
    for w in parsed["workers"].as_array().into_iter().flatten() {
        for l in w["layers"].as_array().into_iter().flatten() {
            eprintln!(
                "{:>4} {:>5} {:>11.1} {:>8.1} {:>8.1} {:>10} {:>11} ({})",
                w["part"],
                l["layer"],
                l["compute_ms"].as_f64().unwrap_or(0.0),
                l["wait_ms"].as_f64().unwrap_or(0.0),
                l["send_ms"].as_f64().unwrap_or(0.0),
                l["rows_sent"],
                l["halo_bytes_sent"],
                l["halo_bytes_planned"]
            );
        }
    }
    if let Some(path) = &args.summary_json {
        std::fs::write(path, serde_json::to_string_pretty(&parsed)? + "\n")?;
    }
    if shipped {
        let acc = distgat_cli::infer::accuracy_of(
            &out,
            &root.join("data/cora/labels.npy"),
            &root.join("data/cora/test_idx.npy"),
        )?;
        println!(
            "test accuracy: {:.4} ({}/{})",
            acc.fraction(),
            acc.correct,
            acc.total
        );
    }
    Ok(())
}

fn partition(args: PartitionArgs) -> anyhow::Result<()> {
    let method = match args.method {
        MethodArg::Metis => Method::Metis {
            objective: match args.objective {
                ObjectiveArg::Cut => Objective::Cut,
                ObjectiveArg::Volume => Objective::Volume,
            },
            recursive: args.recursive,
            seed: args.seed,
            imbalance: args.imbalance,
            balance_edges: args.balance_edges,
            trials: args.trials,
        },
        MethodArg::Random => Method::Random { seed: args.seed },
        MethodArg::Range => Method::Range,
        MethodArg::File(path) => Method::File { path },
    };
    let config = PartitionConfig {
        graph: args.graph,
        format: args.format.map(graph_format),
        num_nodes: args.num_nodes,
        features: args.features,
        shared_features: args.shared_features,
        parts: args.parts,
        method,
        out: args.out,
        assignment_out: args.assignment_out,
        assignment_dtype: match args.assignment_dtype {
            DtypeArg::Int32 => AssignmentDtype::Int32,
            DtypeArg::Int64 => AssignmentDtype::Int64,
        },
        row_width: args.row_width,
        force: args.force,
        on_phase: Some(show_phase),
    };
    let bar = progress_bar();
    let manifest = run_partition(&config);
    bar.finish_and_clear();
    print_manifest(&manifest?, args.json)
}

fn print_manifest(manifest: &distgat_partition::Manifest, json: bool) -> anyhow::Result<()> {
    if json {
        let report = serde_json::json!({
            "method": manifest.method,
            "graph": manifest.graph,
            "stats": manifest.stats,
            "seconds": manifest.report.seconds,
            "peak_rss_bytes": manifest.report.peak_rss_bytes,
        });
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", format_report(manifest));
    }
    Ok(())
}

fn partition_report(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let opened = distgat_partition::PartitionDir::open(dir)?;
    // Reading the report also verifies the directory: every file's size and checksum and
    // every shard's structure.
    opened.load_assignment()?;
    for shard in &opened.manifest.shards {
        opened.load_shard(shard.part)?;
    }
    print_manifest(&opened.manifest, json)
}

fn infer(args: InferArgs) -> anyhow::Result<()> {
    let bar = progress_bar();
    let config = InferConfig {
        graph: args.graph,
        format: args.format.map(graph_format),
        num_nodes: args.num_nodes,
        features: args.features,
        normalize: match args.normalize_features {
            NormalizeArg::None => Normalization::None,
            NormalizeArg::Row => Normalization::Row,
        },
        model: args.model,
        out: args.out,
        attention_dir: args.attention_dir,
        threads: args.threads,
        labels: args.labels,
        test_idx: args.test_idx,
        stats_json: args.stats_json,
        on_phase: Some(show_phase),
    };
    let report = run_infer(&config);
    bar.finish_and_clear();
    let report = report?;
    eprintln!(
        "wrote {} ({} nodes x {} columns; {} edges) in {:.1} ms with {} threads{}",
        config.out.display(),
        report.num_nodes,
        report.out_width,
        report.num_edges,
        report.total_ms,
        report.threads,
        report
            .peak_rss_bytes
            .map(|b| format!(", peak memory {:.1} MiB", b as f64 / (1 << 20) as f64))
            .unwrap_or_default()
    );
    if let Some(acc) = &report.accuracy {
        println!(
            "test accuracy: {:.4} ({}/{})",
            acc.fraction(),
            acc.correct,
            acc.total
        );
    }
    Ok(())
}
