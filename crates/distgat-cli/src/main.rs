//! `distgat`: graph attention inference on graphs too large for PyTorch Geometric.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use distgat_cli::{run_infer, InferConfig};
use distgat_graph::{GraphFormat, Normalization};
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

fn infer(args: InferArgs) -> anyhow::Result<()> {
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("static template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let _ = PROGRESS.set(bar.clone());
    let config = InferConfig {
        graph: args.graph,
        format: args.format.map(|f| match f {
            FormatArg::Npy => GraphFormat::Npy,
            FormatArg::Edgelist => GraphFormat::EdgeList,
            FormatArg::Metis => GraphFormat::Metis,
            FormatArg::Mtx => GraphFormat::MatrixMarket,
        }),
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
