//! `distgat-bench`: one GATConv-shaped layer on synthetic graphs, timed in-process (the
//! kernels), as a whole `distgat infer` process (I/O included), and optionally as PyG on
//! the same files in the same run, with peak memory for each. Medians throughout.
//!
//! ```text
//! cargo build --release -p distgat-cli -p distgat-bench
//! target/release/distgat-bench layer --sizes small,medium [--pyg ~/pyg-venv/bin/python]
//! ```

mod api;
mod synth;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use distgat_attention::{
    aggregate_into, transform_into, Execution, Model, RowBuffer, RowInputs, Topology,
};
use distgat_graph::{read_graph, Features};
use rayon::prelude::*;
use serde::Serialize;
use synth::Generator;

/// Large blocks start on a page boundary (rows gathered from them stay cache-line
/// aligned): see `distgat_graph::alloc`.
#[global_allocator]
static ALLOCATOR: distgat_graph::LargePageAligned = distgat_graph::LargePageAligned;

#[derive(Parser)]
#[command(
    name = "distgat-bench",
    about = "distgat benchmarks (medians; ratios against a baseline measured in the same run)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One GATConv layer (F_in=128, heads=4, C=32, self loops) on synthetic graphs
    Layer(LayerArgs),
    /// `distgat run --workers K` against `distgat infer`: wall time and halo bytes (2-layer 4x32)
    Run(RunBenchArgs),
    /// A job through the client API of a standing cluster against `distgat infer`: job
    /// time, fetch throughput (2-layer 4x32)
    Api(RunBenchArgs),
    /// Partition time, peak memory, edge cut and halo rows of `distgat partition`
    Partition(PartitionBenchArgs),
    /// Machine memory bandwidth: streaming read and random 512-byte row gather
    Bandwidth {
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// (internal) time the kernels on a case directory in a fresh process
    #[command(hide = true)]
    KernelChild {
        dir: PathBuf,
        #[arg(long)]
        repeats: usize,
        #[arg(long)]
        threads: usize,
    },
}

#[derive(Clone, Copy, ValueEnum, Debug, Serialize, PartialEq, Eq)]
enum Size {
    /// N = 10k, E = 100k
    Small,
    /// N = 100k, E = 2M
    Medium,
    /// N = 1M, E = 10M (about 40 s of PyG and 14 GB of its memory: opt-in)
    Large,
    /// N = 10M, E = 100M, with F = 32 and two 4 x 8 GAT layers (issue 15's scale case;
    /// about 3 GB of input files and several minutes: opt-in; `run` and `api` only)
    Huge,
}

impl Size {
    fn shape(self) -> (usize, usize) {
        match self {
            Size::Small => (10_000, 100_000),
            Size::Medium => (100_000, 2_000_000),
            Size::Large => (1_000_000, 10_000_000),
            Size::Huge => (10_000_000, 100_000_000),
        }
    }
    /// The `run` case's model: (in_features, heads, channels), two layers.
    fn run_model(self) -> (usize, usize, usize) {
        match self {
            Size::Huge => (32, 4, 8),
            _ => (128, 4, 32),
        }
    }
    /// PyG 2.8.1 / torch 2.15 on this 2-core machine, 2 threads, forward only, ER graph
    /// (from the engine issue): median ms and peak RSS MB. Used when --pyg is not given.
    fn pyg_quoted(self) -> Option<(f64, f64)> {
        match self {
            Size::Small => Some((55.6, 871.0)),
            Size::Medium => Some((1175.0, 3082.0)),
            Size::Large => Some((12088.0, 13799.0)),
            Size::Huge => None,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, Debug, Serialize, PartialEq, Eq)]
enum PartitionGraph {
    /// the METIS 4elt mesh (15 606 nodes, 91 756 directed edges)
    Fourelt,
    /// Cora (2 708 nodes, 10 556 directed edges)
    Cora,
    /// R-MAT, 1M nodes / 10M edges
    Rmat10m,
    /// R-MAT, 5M nodes / 50M edges (several GB and minutes: opt-in)
    Rmat50m,
}

#[derive(clap::Args)]
struct PartitionBenchArgs {
    #[arg(long, value_delimiter = ',', default_value = "fourelt,cora,rmat10m")]
    graphs: Vec<PartitionGraph>,
    #[arg(long, default_value_t = 8)]
    parts: usize,
    /// Where to put generated graphs and partitions (default: a temporary directory)
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunBenchArgs {
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    #[arg(long, value_enum, default_value = "large")]
    size: Size,
    #[arg(long, value_enum, default_value = "rmat")]
    generator: Generator,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Cores to use in all: infer gets them all, and so does each of the K workers (they
    /// share the cores, as `distgat run` does by default)
    #[arg(long, default_value_t = 2)]
    cores: usize,
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// `distgat run --shard-source` values to time, each on the same partition (run:
    /// the ratio of each to the first is printed)
    #[arg(long, value_delimiter = ',', default_value = "shared")]
    shard_sources: Vec<String>,
}

#[derive(clap::Args)]
struct LayerArgs {
    #[arg(long, value_delimiter = ',', default_value = "small,medium")]
    sizes: Vec<Size>,
    #[arg(long, value_delimiter = ',', default_value = "er")]
    generators: Vec<Generator>,
    /// Timed repetitions per measurement (after one warm-up)
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Python with torch_geometric: measure PyG on the same files in this run
    #[arg(long, value_name = "PYTHON")]
    pyg: Option<PathBuf>,
    /// Python with dgl 2.1 (its own venv; DGLBACKEND=pytorch is set): measure DGL's
    /// GATConv forward on the same files in this run (bench/dgl_layer_bench.py)
    #[arg(long, value_name = "PYTHON")]
    dgl: Option<PathBuf>,
    /// Where to put the generated cases (default: a temporary directory)
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the results as JSON
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize, serde::Deserialize, Clone)]
struct KernelResult {
    transform_ms: f64,
    aggregate_ms: f64,
    /// Fastest repetition: on a shared machine, the closest to the undisturbed cost.
    aggregate_min_ms: f64,
    layer_ms: f64,
    attention_edges: usize,
    /// Bytes the aggregation must move at least once (CSR, scores, gathered rows, output).
    aggregate_bytes: f64,
    peak_rss_mb: f64,
}

#[derive(Debug, Serialize)]
struct Row {
    generator: Generator,
    size: Size,
    nodes: usize,
    edges: usize,
    kernel: KernelResult,
    infer_wall_ms: f64,
    infer_peak_rss_mb: f64,
    pyg_ms: f64,
    pyg_peak_rss_mb: f64,
    pyg_measured_here: bool,
    max_abs_diff_vs_pyg: Option<f64>,
    /// DGL's GATConv forward alone (median ms) and its process's peak RSS, when measured.
    dgl_ms: Option<f64>,
    dgl_peak_rss_mb: Option<f64>,
    max_abs_diff_vs_dgl: Option<f64>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Layer(args) => layer(args),
        Cmd::Partition(args) => partition_bench(args),
        Cmd::Run(args) => run_bench(args),
        Cmd::Api(args) => api_bench(args),
        Cmd::Bandwidth { threads } => bandwidth(threads).map(|b| {
            println!(
                "stream read {:.1} GB/s, random 512-byte row gather {:.1} GB/s ({threads} threads)",
                b.0, b.1
            )
        }),
        Cmd::KernelChild {
            dir,
            repeats,
            threads,
        } => kernel_child(&dir, repeats, threads),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The directory to generate cases in: `dir` if given, else a temporary one (kept alive
/// by the returned guard).
fn work_dir(dir: Option<&Path>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            Ok((d.to_path_buf(), None))
        }
        None => {
            let temp = tempfile::tempdir()?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn peak_rss_mb() -> f64 {
    distgat_cli::stats::peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / 1e6)
}

fn kernel_child(dir: &Path, repeats: usize, threads: usize) -> anyhow::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let edges = read_graph(&dir.join("edge_index.npy"), None)?;
        let features = Features::read_npy(&dir.join("x.npy"))?;
        let model = Model::load(&dir.join("model.json"))?;
        let n = features.num_nodes;
        let topology = Topology::build(&edges, n, &model, false)?;
        drop(edges);
        let layer = model.local_layers("the kernel benchmark")?[0];
        let csr = topology.csr(layer.add_self_loops());
        let mut source = RowBuffer::zeroed(n * layer.source_width());
        let mut target = vec![0f32; n * layer.target_width()];
        let mut out = vec![0f32; n * layer.out_width()];
        let (mut tt, mut ta, mut tl) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..=repeats {
            let t0 = Instant::now();
            transform_into(
                layer,
                &features.values,
                Execution::Parallel,
                &mut source,
                &mut target,
            );
            let t1 = Instant::now();
            let aux = distgat_attention::source_aux(layer, &source, Execution::Parallel);
            let inputs = RowInputs {
                source: &source,
                source_aux: &aux,
                target: &target,
                edge_attr: None,
            };
            aggregate_into(
                layer,
                csr,
                &inputs,
                Execution::Parallel,
                &mut out,
                None,
                None,
            );
            let t2 = Instant::now();
            if r > 0 {
                tt.push((t1 - t0).as_secs_f64() * 1e3);
                ta.push((t2 - t1).as_secs_f64() * 1e3);
                tl.push((t2 - t0).as_secs_f64() * 1e3);
            }
        }
        // Bytes the aggregation must move: per entry its column and source row, per row
        // its target row, output row and row pointer.
        let (sw, tw, ow) = (
            layer.source_width(),
            layer.target_width(),
            layer.out_width(),
        );
        let entries = csr.num_entries() as f64;
        let aggregate_bytes =
            entries * (4.0 + 4.0 * sw as f64) + n as f64 * (8.0 + 4.0 * (tw + ow) as f64);
        let result = KernelResult {
            transform_ms: median(tt),
            aggregate_min_ms: ta.iter().copied().fold(f64::INFINITY, f64::min),
            aggregate_ms: median(ta),
            layer_ms: median(tl),
            attention_edges: csr.num_entries(),
            aggregate_bytes,
            peak_rss_mb: peak_rss_mb(),
        };
        println!("{}", serde_json::to_string(&result)?);
        anyhow::Ok(())
    })
}

fn run_json<T: serde::de::DeserializeOwned>(cmd: &mut Command) -> anyhow::Result<T> {
    let output = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("parsing the output of {cmd:?}: {line}"))
}

fn distgat_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("distgat");
    if !bin.exists() {
        bail!(
            "{} not found: build it next to the bench (cargo build --release -p distgat-cli -p distgat-bench)",
            bin.display()
        );
    }
    Ok(bin)
}

fn layer(args: LayerArgs) -> anyhow::Result<()> {
    let distgat = distgat_binary()?;
    let (work, _temp) = work_dir(args.work_dir.as_deref())?;
    let (read_bw, gather_bw) = bandwidth(args.threads)?;
    eprintln!("machine: stream read {read_bw:.1} GB/s, random row gather {gather_bw:.1} GB/s");
    if args.sizes.contains(&Size::Huge) {
        bail!("--sizes huge: the layer bench runs F_in = 128 (5 GB of features at 10M nodes); huge is for `run` and `api` (F = 32)");
    }
    let mut rows = Vec::new();
    for &generator in &args.generators {
        for &size in &args.sizes {
            let (n, e) = size.shape();
            let dir = work.join(format!("{generator:?}-{size:?}").to_lowercase());
            std::fs::create_dir_all(&dir)?;
            eprintln!(
                "{generator:?} {size:?}: generating N={n} E={e} in {}",
                dir.display()
            );
            let spec = synth::CaseSpec {
                generator,
                nodes: n,
                edges: e,
                in_features: 128,
                heads: 4,
                channels: 32,
                layers: 1,
                seed: 42,
            };
            synth::write_case(&dir, &spec)?;
            sync_files_in(&dir)?;

            eprintln!("  kernels ({} repeats)", args.repeats);
            let exe = std::env::current_exe()?;
            let kernel: KernelResult = run_json(
                Command::new(&exe)
                    .arg("kernel-child")
                    .arg(&dir)
                    .args(["--repeats", &args.repeats.to_string()])
                    .args(["--threads", &args.threads.to_string()]),
            )?;

            eprintln!(
                "  distgat infer (whole process, {} runs)",
                args.repeats.min(3)
            );
            let mut walls = Vec::new();
            let mut rss = Vec::new();
            for _ in 0..args.repeats.min(3) {
                // A new output each run, as a first run writes: replacing the last run's
                // file would add its unlink (0.1-0.3 s on an ext4 mounted with `discard`).
                match std::fs::remove_file(dir.join("out.npy")) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
                let t = Instant::now();
                let status = Command::new(&distgat)
                    .arg("infer")
                    .arg("--graph")
                    .arg(dir.join("edge_index.npy"))
                    .arg("--features")
                    .arg(dir.join("x.npy"))
                    .arg("--model")
                    .arg(dir.join("model.json"))
                    .arg("--out")
                    .arg(dir.join("out.npy"))
                    .args(["--threads", &args.threads.to_string()])
                    .arg("--stats-json")
                    .arg(dir.join("stats.json"))
                    .status()?;
                walls.push(t.elapsed().as_secs_f64() * 1e3);
                if !status.success() {
                    bail!("distgat infer failed on {}", dir.display());
                }
                let stats: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(dir.join("stats.json"))?)?;
                rss.push(stats["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / 1e6);
            }

            let (mut pyg_ms, mut pyg_rss) = size.pyg_quoted().unwrap_or((f64::NAN, f64::NAN));
            let mut diff = None;
            if let Some(python) = &args.pyg {
                eprintln!("  PyG ({} repeats)", args.repeats);
                let b = baseline(python, "pyg_layer_bench.py", &dir, "pyg_out.npy", &args)?;
                (pyg_ms, pyg_rss, diff) = (b.median_ms, b.peak_rss_mb, Some(b.max_abs_diff));
            }
            let (mut dgl_ms, mut dgl_rss, mut dgl_diff) = (None, None, None);
            if let Some(python) = &args.dgl {
                eprintln!("  DGL ({} repeats)", args.repeats);
                let b = baseline(python, "dgl_layer_bench.py", &dir, "dgl_out.npy", &args)?;
                (dgl_ms, dgl_rss, dgl_diff) =
                    (Some(b.median_ms), Some(b.peak_rss_mb), Some(b.max_abs_diff));
            }
            rows.push(Row {
                dgl_ms,
                dgl_peak_rss_mb: dgl_rss,
                max_abs_diff_vs_dgl: dgl_diff,
                generator,
                size,
                nodes: n,
                edges: e,
                kernel,
                infer_wall_ms: median(walls),
                infer_peak_rss_mb: median(rss),
                pyg_ms,
                pyg_peak_rss_mb: pyg_rss,
                pyg_measured_here: args.pyg.is_some(),
                max_abs_diff_vs_pyg: diff,
            });
            print_table(&rows, gather_bw, args.threads);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")?;
    }
    Ok(())
}

/// One baseline library's forward on a case directory, measured in this run.
struct Baseline {
    median_ms: f64,
    /// MB (10^6 bytes) of the baseline's whole process.
    peak_rss_mb: f64,
    /// Largest difference between its output and ours (`dir/out.npy`).
    max_abs_diff: f64,
}

/// Runs `bench/<script>` (`pyg_layer_bench.py`, `dgl_layer_bench.py`: the same arguments
/// and one JSON line out) with `python` on `dir`, its output written to `dir/<out>`.
fn baseline(
    python: &Path,
    script: &str,
    dir: &Path,
    out: &str,
    args: &LayerArgs,
) -> anyhow::Result<Baseline> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench")
        .join(script);
    let v: serde_json::Value = run_json(
        Command::new(python)
            .env("DGLBACKEND", "pytorch") // read by DGL only
            .arg(&script)
            .arg(dir)
            .args(["--threads", &args.threads.to_string()])
            .args(["--repeats", &args.repeats.to_string()])
            .arg("--out")
            .arg(dir.join(out)),
    )?;
    Ok(Baseline {
        median_ms: v["median_ms"].as_f64().unwrap_or(f64::NAN),
        // The scripts report MiB.
        peak_rss_mb: v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN) * 1.048576,
        max_abs_diff: max_abs_diff(&dir.join("out.npy"), &dir.join(out))?,
    })
}

fn timed(cmd: &mut Command) -> anyhow::Result<f64> {
    Ok(timed_output(cmd)?.0)
}

/// Wall milliseconds and the output (stdout, then stderr) of a command that must succeed.
fn timed_output(cmd: &mut Command) -> anyhow::Result<(f64, String)> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((
        t.elapsed().as_secs_f64() * 1e3,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// The "peak memory X MiB" a distgat command printed, in MiB.
fn printed_peak_mib(stdout: &str) -> Option<f64> {
    let rest = &stdout[stdout.rfind("peak memory ")? + "peak memory ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Writes the 2-layer case `run` and `api` use (F = 128 and 4 x 32, or at `huge` F = 32
/// and 4 x 8); returns its directory.
fn write_run_case(work: &Path, args: &RunBenchArgs) -> anyhow::Result<PathBuf> {
    let (n, e) = args.size.shape();
    let (in_features, heads, channels) = args.size.run_model();
    let dir = work.join(format!("run-{:?}-{:?}", args.generator, args.size).to_lowercase());
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "generating {:?} N={n} E={e}, F = {in_features}, 2 layers of {heads} x {channels}",
        args.generator
    );
    synth::write_case(
        &dir,
        &synth::CaseSpec {
            generator: args.generator,
            nodes: n,
            edges: e,
            in_features,
            heads,
            channels,
            layers: 2,
            seed: 42,
        },
    )?;
    Ok(dir)
}

fn api_bench(args: RunBenchArgs) -> anyhow::Result<()> {
    let distgat = distgat_binary()?;
    let (work, _temp) = work_dir(args.work_dir.as_deref())?;
    let dir = write_run_case(&work, &args)?;
    for &workers in &args.workers {
        api::api_bench(
            &distgat,
            api::ApiCase {
                dir: &dir,
                workers,
                repeats: args.repeats,
                cores: args.cores,
            },
        )?;
    }
    Ok(())
}

fn run_bench(args: RunBenchArgs) -> anyhow::Result<()> {
    let distgat = distgat_binary()?;
    let (work, _temp) = work_dir(args.work_dir.as_deref())?;
    let dir = write_run_case(&work, &args)?;
    let graph = dir.join("edge_index.npy");
    let features = dir.join("x.npy");
    let model = dir.join("model.json");
    // `distgat infer|run` over the case's graph, features and model, writing `out`.
    let case_command = |verb: &str, out: &str| {
        let mut cmd = Command::new(&distgat);
        cmd.arg(verb)
            .arg("--graph")
            .arg(&graph)
            .arg("--features")
            .arg(&features)
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(dir.join(out));
        cmd
    };
    let mut infer = Vec::new();
    let mut infer_peak = None;
    for _ in 0..args.repeats {
        infer.push(
            timed_output(
                case_command("infer", "infer.npy").args(["--threads", &args.cores.to_string()]),
            )
            .map(|(ms, stdout)| {
                infer_peak = printed_peak_mib(&stdout).or(infer_peak);
                ms
            })?,
        );
    }
    let infer_ms = median(infer);
    let infer_bytes = std::fs::read(dir.join("infer.npy"))?;
    let peak = |p: Option<f64>| p.map_or("-".to_string(), |p| format!("{p:.0}"));
    println!("| workers | shard source | partition (metis) s | partition / infer peak MiB | run wall ms | run / infer | vs first source | halo bytes sent | planned | sent / planned | bytes streamed per worker (shard + inputs) | identical to infer |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    println!(
        "| infer | - | - | {} | {infer_ms:.0} | 1.00 | - | - | - | - | - | - |",
        peak(infer_peak)
    );
    for &k in &args.workers {
        let part = dir.join(format!("partition-{k}"));
        eprintln!("partitioning into {k}");
        let (part_ms, part_out) = timed_output(
            Command::new(&distgat)
                .arg("partition")
                .arg("--graph")
                .arg(&graph)
                .arg("--features")
                .arg(&features)
                .args(["--parts", &k.to_string(), "--force"])
                .arg("--out")
                .arg(&part),
        )?;
        let mut first_wall = None;
        for source in &args.shard_sources {
            let mut walls = Vec::new();
            let summary = dir.join(format!("summary-{k}-{source}.json"));
            for _ in 0..args.repeats {
                eprintln!("run --workers {k} --shard-source {source}");
                walls.push(timed(
                    case_command("run", "run.npy")
                        .args(["--workers", &k.to_string()])
                        .arg("--partition")
                        .arg(&part)
                        .args(["--shard-source", source])
                        .args(["--threads-per-worker", &args.cores.to_string()])
                        .arg("--summary-json")
                        .arg(&summary),
                )?);
            }
            let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
            let (mut sent, mut planned) = (0u64, 0u64);
            let mut streamed = Vec::new();
            for w in s["workers"].as_array().into_iter().flatten() {
                streamed.push(format!(
                    "{} + {}",
                    w["shard_bytes_streamed"].as_u64().unwrap_or(0),
                    w["input_bytes_streamed"].as_u64().unwrap_or(0)
                ));
                for l in w["layers"].as_array().into_iter().flatten() {
                    sent += l["halo_bytes_sent"].as_u64().unwrap_or(0);
                    planned += l["halo_bytes_planned"].as_u64().unwrap_or(0);
                }
            }
            let same = std::fs::read(dir.join("run.npy"))? == infer_bytes;
            let wall = median(walls);
            let first = *first_wall.get_or_insert(wall);
            println!(
            "| {k} | {source} | {:.1} | {} | {wall:.0} | {:.2} | {:.3} | {sent} | {planned} | {:.4} | {} | {same} |",
            part_ms / 1e3,
            peak(printed_peak_mib(&part_out)),
            wall / infer_ms,
            wall / first,
            if planned > 0 {
                sent as f64 / planned as f64
            } else {
                1.0
            },
            streamed.join("; "),
        );
        }
    }
    Ok(())
}

fn partition_bench(args: PartitionBenchArgs) -> anyhow::Result<()> {
    let distgat = distgat_binary()?;
    let (work, _temp) = work_dir(args.work_dir.as_deref())?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    println!("| graph | N | E | method | parts | edge cut | halo rows | time s | peak RSS MB | bytes/edge |");
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for graph in &args.graphs {
        let path = match graph {
            PartitionGraph::Fourelt => root.join("data/4elt/4elt.graph"),
            PartitionGraph::Cora => root.join("data/cora/edges.npy"),
            PartitionGraph::Rmat10m | PartitionGraph::Rmat50m => {
                let (n, e) = if *graph == PartitionGraph::Rmat10m {
                    (1_000_000, 10_000_000)
                } else {
                    (5_000_000, 50_000_000)
                };
                let path = work.join(format!("rmat-{n}-{e}.npy"));
                if !path.exists() {
                    eprintln!("generating R-MAT N={n} E={e}");
                    let edges = synth::edges(Generator::Rmat, n, e, 42);
                    distgat_graph::write_npy(&path, &[2, e as u64], &edges)?;
                }
                path
            }
        };
        for method in ["metis", "random", "range"] {
            let out = work.join(format!("{graph:?}-{method}").to_lowercase());
            eprintln!("{graph:?} {method}");
            let v: serde_json::Value = run_json(
                Command::new(&distgat)
                    .arg("partition")
                    .arg("--graph")
                    .arg(&path)
                    .args(["--parts", &args.parts.to_string(), "--method", method])
                    .arg("--out")
                    .arg(&out)
                    .args(["--force", "--json"]),
            )?;
            let s = &v["stats"];
            let edges = s["num_edges"].as_f64().unwrap_or(f64::NAN);
            let rss = v["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {graph:?} | {} | {} | {method} | {} | {} | {} | {:.2} | {:.0} | {:.0} |",
                s["num_nodes"],
                s["num_edges"],
                s["parts"],
                s["edge_cut"],
                s["halo_rows_total"],
                v["seconds"].as_f64().unwrap_or(f64::NAN),
                rss / 1e6,
                rss / edges,
            );
            std::fs::remove_dir_all(&out).ok();
        }
    }
    Ok(())
}

fn print_table(rows: &[Row], gather_bw: f64, threads: usize) {
    println!();
    println!("| graph | N | E | transform ms | aggregate ms | layer ms | edges/s | agg GB/s (% of gather bw) | infer wall ms | infer RSS MB | PyG ms{} | PyG RSS MB | speed-up (layer) | RSS ratio (infer/PyG) | max abs diff vs PyG |",
        if rows.iter().any(|r| r.pyg_measured_here) { "" } else { " (quoted)" });
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let k = &r.kernel;
        let agg_gbs = k.aggregate_bytes / (k.aggregate_ms * 1e-3) / 1e9;
        println!(
            "| {:?} | {} | {} | {:.1} | {:.1} | {:.1} | {:.3e} | {:.1} ({:.0}%) | {:.0} | {:.0} | {:.1} | {:.0} | {:.1}x | {:.3} | {} |",
            r.generator,
            r.nodes,
            r.edges,
            k.transform_ms,
            k.aggregate_ms,
            k.layer_ms,
            r.edges as f64 / (k.layer_ms * 1e-3),
            agg_gbs,
            100.0 * agg_gbs / gather_bw,
            r.infer_wall_ms,
            r.infer_peak_rss_mb,
            r.pyg_ms,
            r.pyg_peak_rss_mb,
            r.pyg_ms / k.layer_ms,
            r.infer_peak_rss_mb / r.pyg_peak_rss_mb,
            r.max_abs_diff_vs_pyg.map_or("-".into(), |d| format!("{d:.1e}")),
        );
    }
    println!("({threads} threads; medians)");
    if rows
        .iter()
        .any(|r| r.pyg_measured_here || r.dgl_ms.is_some())
    {
        println!();
        println!("Whole `distgat infer` process (read, CSR, layer, write + fsync) against the baselines' forward alone, same run:");
        println!();
        println!("| graph | N | E | infer wall ms | PyG fwd ms | PyG fwd / infer | DGL fwd ms | DGL fwd / infer | DGL fwd / layer | infer RSS MB | PyG RSS MB | DGL RSS MB | infer RSS / PyG RSS | max abs diff vs DGL |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let opt = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
        for r in rows {
            let pyg = r.pyg_measured_here.then_some(r.pyg_ms);
            println!(
                "| {:?} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
                r.generator,
                r.nodes,
                r.edges,
                r.infer_wall_ms,
                opt(pyg, 0),
                opt(pyg.map(|p| p / r.infer_wall_ms), 2),
                opt(r.dgl_ms, 0),
                opt(r.dgl_ms.map(|d| d / r.infer_wall_ms), 2),
                opt(r.dgl_ms.map(|d| d / r.kernel.layer_ms), 2),
                r.infer_peak_rss_mb,
                opt(r.pyg_measured_here.then_some(r.pyg_peak_rss_mb), 0),
                opt(r.dgl_peak_rss_mb, 0),
                opt(
                    r.pyg_measured_here
                        .then_some(r.infer_peak_rss_mb / r.pyg_peak_rss_mb),
                    3
                ),
                r.max_abs_diff_vs_dgl
                    .map_or("-".into(), |d| format!("{d:.1e}")),
            );
        }
    }
}

fn max_abs_diff(a: &Path, b: &Path) -> anyhow::Result<f64> {
    let a = Features::read_npy(a)?;
    let b = Features::read_npy(b)?;
    if a.values.len() != b.values.len() {
        bail!("outputs differ in shape");
    }
    Ok(a.values
        .iter()
        .zip(&b.values)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max))
}

/// Requests every cache line of `row` into the L1 cache.
fn prefetch_row(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: a prefetch is only a cache hint: it never faults, reads nothing into the
        // program and has no observable effect on memory; the address comes from a live
        // slice. SSE (which `_mm_prefetch` needs) is part of the x86_64 baseline.
        #[allow(unsafe_code)]
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Flushes every file in `dir` to the disk, so that no timed run shares the machine with
/// the kernel's writeback of the 0.7 GB of inputs the bench has just written.
fn sync_files_in(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    Ok(())
}

/// (streaming read GB/s, random 512-byte row gather GB/s) with `threads` threads: the
/// ceilings the aggregation's memory traffic is compared with.
fn bandwidth(threads: usize) -> anyhow::Result<(f64, f64)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let len = 64 << 20; // 256 MiB of f32
        let data: Vec<f32> = (0..len).map(|i| (i % 7) as f32).collect();
        let mut best_read = 0f64;
        for _ in 0..5 {
            let t = Instant::now();
            let s: f32 = data
                .par_chunks(1 << 16)
                .map(|c| c.iter().sum::<f32>())
                .sum();
            let secs = t.elapsed().as_secs_f64();
            std::hint::black_box(s);
            best_read = best_read.max((len * 4) as f64 / secs / 1e9);
        }
        // Random gather of 128-float rows from the same 256 MiB table, each row requested
        // 8 rows ahead and summed into a local accumulator: the pattern of the
        // aggregation's pass 2. (Without the prefetch the loop waits on every row's
        // latency: 5.1 GB/s against 7.3 with it, two threads on the test VM, and the
        // kernel seemed to beat the machine, docs/performance.md, seventeenth session.)
        let row = 128;
        let rows = len / row;
        let picks = 1 << 20;
        let idx = synth::edges(Generator::Er, rows, picks, 7);
        let idx = &idx[..picks];
        let mut best_gather = 0f64;
        for _ in 0..5 {
            let t = Instant::now();
            let s: f32 = idx
                .par_chunks(4096)
                .map(|chunk| {
                    let mut acc = [0f32; 128];
                    for (k, &j) in chunk.iter().enumerate() {
                        if let Some(&ahead) = chunk.get(k + 8) {
                            prefetch_row(&data[ahead as usize * row..(ahead as usize + 1) * row]);
                        }
                        let r = &data[j as usize * row..(j as usize + 1) * row];
                        acc.iter_mut().zip(r).for_each(|(a, v)| *a += v);
                    }
                    acc.iter().sum::<f32>()
                })
                .sum();
            let secs = t.elapsed().as_secs_f64();
            std::hint::black_box(s);
            best_gather = best_gather.max((picks * row * 4) as f64 / secs / 1e9);
        }
        Ok((best_read, best_gather))
    })
}
