//! `distgat`: graph attention inference on graphs too large for PyTorch Geometric.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use distgat_cli::config::{load_config, pick};
use distgat_cli::{
    format_report, run_infer, run_partition, AssignmentDtype, InferConfig, PartitionConfig,
};
use distgat_graph::{GraphFormat, Normalization};
use distgat_partition::{Method, Objective};
use indicatif::{ProgressBar, ProgressStyle};

/// Large blocks start on a page boundary (rows gathered from them stay cache-line
/// aligned): see `distgat_graph::alloc`.
#[global_allocator]
static ALLOCATOR: distgat_graph::LargePageAligned = distgat_graph::LargePageAligned;

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
    /// Build a kNN, radius or k-hop neighbourhood graph and write it as an int64 [2, E] edge index.
    Neighbours(distgat_cli::neighbours::NeighboursArgs),
    /// Run a job on a local cluster: partition, start a coordinator and K workers, run, stop.
    /// With no --graph: the shipped Cora data and trained model on 4 workers.
    Run(RunArgs),
    /// Serve the coordinator (prints `listening on ADDR` once bound).
    ///
    /// Settings: flag > DISTGAT_* env var > --config TOML file > default.
    Coordinator(CoordinatorArgs),
    /// Serve a worker that registers with a coordinator (prints `listening on ADDR`).
    ///
    /// Settings: flag > DISTGAT_* env var > --config TOML file > default.
    Worker(WorkerArgs),
    /// Submit a job to a running coordinator (prints its job id).
    Submit(SubmitArgs),
    /// Show one job, or list all jobs.
    Status {
        /// The job id (as submit printed it); none lists every job
        job: Option<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the coordinator's graphs (ids for submit --graph-id and delete graph).
    Graphs {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the coordinator's partitions, including those jobs made (ids for submit
    /// --partition-id and delete partition).
    Partitions {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow a job with a progress bar until it ends (non-zero exit unless it succeeds).
    Watch {
        /// The job id (as submit printed it)
        job: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Fetch a finished job's output rows (original node ids) into a .npy file.
    Fetch {
        /// The job id (as submit printed it)
        job: String,
        /// Output .npy [rows, width] float32
        #[arg(long, value_name = "OUT.npy")]
        out: PathBuf,
        /// Only these node ids, comma-separated, in this order
        #[arg(long, value_name = "IDS")]
        nodes: Option<String>,
        /// Only node ids START..END (END excluded)
        #[arg(long, value_name = "START:END")]
        range: Option<String>,
        /// Also write the node id of each row to this int64 .npy
        #[arg(long, value_name = "IDS.npy")]
        ids_out: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Fetch a registered graph's edge index (e.g. a neighbourhood built by submit --knn) into an int64 [2, E] .npy.
    FetchEdges {
        /// The graph id (as submit or `distgat graphs` printed it)
        graph: String,
        /// Output .npy int64 [2, E]: sources, then targets, in the graph's edge order (a built neighbourhood's is sorted by (target, source))
        #[arg(long, value_name = "EDGES.npy")]
        out: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the neighbours that contributed most to chosen nodes (jobs run with --attention).
    Explain {
        /// The job id (a job submitted with --attention)
        job: String,
        /// Target node ids, comma-separated
        #[arg(long, value_name = "IDS")]
        nodes: String,
        /// The layer whose attention coefficients to show (0 = the first)
        #[arg(long, default_value_t = 0)]
        layer: u32,
        /// How many neighbours to show per node, by mean coefficient over the heads
        /// (1..=1000)
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
        top_k: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// The job id (as submit printed it)
        job: String,
        /// Why, for the job's record and the coordinator's log
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete an ended job (its output), a partition, or a graph from the coordinator.
    ///
    /// Nothing in use can be deleted: a queued or running job (cancel it first), a
    /// partition a queued or running job uses, a graph a partition or job refers to. An
    /// uploaded graph's files are deleted; a registered graph's files are left alone.
    Delete {
        /// What to delete: a job, a partition or a graph
        #[arg(value_enum)]
        what: DeleteWhat,
        /// Its id (job-N, partition-N, graph-N, as `status`, `partitions` and `graphs` list)
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the registered workers, their health and parts.
    Workers {
        /// Wait until at least this many healthy workers are registered
        #[arg(long, value_name = "K")]
        wait: Option<usize>,
        /// Seconds to wait for --wait, for the coordinator to answer as well (default 60)
        #[arg(long, value_name = "SECONDS", requires = "wait")]
        timeout: Option<u64>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask a server's grpc.health.v1 service; exit 0 when it is SERVING.
    Health {
        /// host:port of a coordinator or worker
        address: String,
        /// Service name ("" is the whole server)
        #[arg(long, default_value = "")]
        service: String,
        /// Keep asking for this many seconds before giving up (default: ask once)
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// PEM CA that signed the server's certificate (TLS; health needs no token)
        #[arg(long, env = "DISTGAT_TLS_CA", value_name = "PEM")]
        tls_ca: Option<PathBuf>,
        /// The name in the server's certificate, when it differs from the address's host (TLS)
        #[arg(long, env = "DISTGAT_TLS_DOMAIN", value_name = "NAME")]
        tls_domain: Option<String>,
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

/// TLS and bearer-token flags, the same on the coordinator, the workers, `distgat run`
/// and the client subcommands.
#[derive(clap::Args, Clone, Default)]
struct SecurityArgs {
    /// PEM certificate (chain) this process presents; with --tls-key (servers: and --tls-ca) it speaks TLS only
    #[arg(long, env = "DISTGAT_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "DISTGAT_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate that signed the other side's certificate (servers: also required of workers and peers calling in)
    #[arg(long, env = "DISTGAT_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// File holding the bearer token (trimmed) every Coordinator RPC must carry; clients: wins over DISTGAT_TOKEN
    #[arg(long, env = "DISTGAT_AUTH_TOKEN_FILE", value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
}

/// The TLS settings after the config file is merged in, with how the user gave each.
#[derive(Clone, Default)]
struct Security {
    args: SecurityArgs,
    names: distgat_proto::TlsNames,
}

impl SecurityArgs {
    /// Each setting from its flag (or variable), else from the config file's `section`.
    fn or_file(
        &self,
        file: &distgat_cli::config::FileConfig,
        section: &str,
        cert: &Option<PathBuf>,
        key: &Option<PathBuf>,
        ca: &Option<PathBuf>,
        token: &Option<PathBuf>,
    ) -> Security {
        let name = |given: bool, flag: &str, env: &str, key: &str| {
            setting_name(given, flag, env, file, &format!("{section}.{key}"))
        };
        let names = distgat_proto::TlsNames {
            cert: name(
                self.tls_cert.is_some(),
                "--tls-cert",
                "DISTGAT_TLS_CERT",
                "tls_cert",
            ),
            key: name(
                self.tls_key.is_some(),
                "--tls-key",
                "DISTGAT_TLS_KEY",
                "tls_key",
            ),
            ca: name(
                self.tls_ca.is_some(),
                "--tls-ca",
                "DISTGAT_TLS_CA",
                "tls_ca",
            ),
            ..Default::default()
        };
        Security {
            args: SecurityArgs {
                tls_cert: self.tls_cert.clone().or_else(|| cert.clone()),
                tls_key: self.tls_key.clone().or_else(|| key.clone()),
                tls_ca: self.tls_ca.clone().or_else(|| ca.clone()),
                auth_token_file: self.auth_token_file.clone().or_else(|| token.clone()),
            },
            names,
        }
    }

    /// The settings as given on the command line or in the environment (no config file).
    fn alone(&self) -> Security {
        self.or_file(&Default::default(), "", &None, &None, &None, &None)
    }
}

impl Security {
    /// `domain_name` is how the domain was given (see [`setting_name`]).
    fn tls(&self, domain: Option<String>, domain_name: Option<String>) -> distgat_proto::TlsFiles {
        let mut names = self.names.clone();
        if let Some(d) = domain_name {
            names.domain = d;
        }
        distgat_proto::TlsFiles {
            cert: self.args.tls_cert.clone(),
            key: self.args.tls_key.clone(),
            ca: self.args.tls_ca.clone(),
            domain,
            names,
        }
    }
}

/// How the user gave a setting, for error messages: `flag` when it is on the command line,
/// else `env` when that variable is set, else the config file's `key` (when `from_flag_or_env`
/// is false, the value came from the file).
fn setting_name(
    from_flag_or_env: bool,
    flag: &str,
    env: &str,
    file: &distgat_cli::config::FileConfig,
    key: &str,
) -> String {
    if !from_flag_or_env {
        return format!("config file {}: {key}", file.path.display());
    }
    if !typed_on_command_line(flag) && std::env::var_os(env).is_some() {
        return env.to_string();
    }
    flag.to_string()
}

/// Whether `flag` (`--name`) is on the command line, as `--name V` or `--name=V`.
fn typed_on_command_line(flag: &str) -> bool {
    std::env::args_os().skip(1).any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
    })
}

#[derive(clap::Args)]
struct CoordinatorArgs {
    /// Address to bind; port 0 picks a free port [default: 127.0.0.1:50051]
    #[arg(long, env = "DISTGAT_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Clients' server-side paths must resolve inside this directory [default: .]
    #[arg(long, env = "DISTGAT_DATA_ROOT", value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Uploads, partitions and job outputs (workers see it only with --shard-source
    /// shared) [default: distgat-work]
    #[arg(long, env = "DISTGAT_WORK_DIR", value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Largest graph upload in bytes [default: 67108864]
    #[arg(long, env = "DISTGAT_MAX_UPLOAD_BYTES", value_name = "BYTES")]
    max_upload_bytes: Option<u64>,
    /// A worker silent this long fails its job [default: 3000]
    #[arg(long, env = "DISTGAT_HEARTBEAT_TIMEOUT_MS", value_name = "MS")]
    heartbeat_timeout_ms: Option<u64>,
    /// Write the bound host:port here once listening (for scripts)
    #[arg(long, env = "DISTGAT_ADDR_FILE", value_name = "FILE")]
    addr_file: Option<PathBuf>,
    /// TOML configuration file ([coordinator] section)
    #[arg(long, env = "DISTGAT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free port)
    #[arg(long, env = "DISTGAT_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Ended jobs to keep with their outputs; as more end, the oldest are deleted (0 keeps
    /// all) [default: 0]
    #[arg(long, env = "DISTGAT_KEEP_JOBS", value_name = "N")]
    keep_jobs: Option<usize>,
    /// Where workers get their inputs for jobs that do not say: stream (the shard, feature rows, model and edge attributes from this coordinator over gRPC; workers need no shared storage) or shared (workers open this coordinator's paths: every node must mount the work dir and data root at the same paths) [default: stream]
    #[arg(long, env = "DISTGAT_SHARD_SOURCE", value_name = "SOURCE")]
    shard_source: Option<ShardSourceArg>,
    /// What restarts when a worker is lost mid-job: part (only its part, on another worker; every part keeps the halo rows it sends until the job ends, about one layer's halo more memory per worker) or job (every part, nothing kept) [default: part]
    #[arg(long, env = "DISTGAT_RECOVERY", value_name = "MODE")]
    recovery: Option<RecoveryArg>,
    /// Client fetches (fetch, fetch-edges, explain) streaming at once; one more is refused with RESOURCE_EXHAUSTED until one ends [default: 16]
    #[arg(long, env = "DISTGAT_MAX_CONCURRENT_FETCHES", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_fetches: Option<u32>,
    /// Shards streamed to workers at once (shard source stream), the largest first, a stream yielding to a larger one between chunks; 0 streams all at once. Use 1 when the coordinator's link or cores are the bottleneck (the part with the most work then starts first) [default: 0]
    #[arg(long, env = "DISTGAT_MAX_CONCURRENT_SHARD_STREAMS", value_name = "N")]
    max_concurrent_shard_streams: Option<u32>,
    /// Serve RunJob, whose paths are not confined to the data root (for the private
    /// loopback cluster `distgat run` starts; never on a shared network)
    #[arg(long, hide = true)]
    allow_run_job: bool,
    #[command(flatten)]
    security: SecurityArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeleteWhat {
    /// An ended job and its output files
    Job,
    /// A partition no queued or running job uses
    Partition,
    /// A graph no partition or job refers to
    Graph,
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// The coordinator's host:port
    #[arg(long, env = "DISTGAT_COORDINATOR")]
    coordinator: Option<String>,
    /// Address to bind; port 0 picks a free port [default: 127.0.0.1:0]
    #[arg(long, env = "DISTGAT_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Host name other workers and the coordinator reach this worker by
    /// [default: the listen IP]
    #[arg(long, env = "DISTGAT_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// Write the bound host:port here once registered (for scripts)
    #[arg(long, env = "DISTGAT_ADDR_FILE", value_name = "FILE")]
    addr_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free port)
    #[arg(long, env = "DISTGAT_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// TOML configuration file ([worker] section)
    #[arg(long, env = "DISTGAT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    security: SecurityArgs,
    /// This worker's own directory (created if missing; must be writable): shards streamed from the coordinator are cached in DIR/shards by content hash, so a partition reused by the next job is not sent again [default: a temporary directory, removed when the worker stops]
    #[arg(long, env = "DISTGAT_WORKER_WORK_DIR", value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Size limit of the shard cache in --work-dir: after a shard is cached, the least recently used others are deleted until the cache fits; 0 caches nothing [default: 17179869184 (16 GiB)]
    #[arg(long, env = "DISTGAT_SHARD_CACHE_MAX_BYTES", value_name = "BYTES")]
    shard_cache_max_bytes: Option<u64>,
    /// Halo bytes this worker holds for its jobs at once; a peer's rows beyond it fail the job, naming this flag [default: 8589934592 (8 GiB)]
    #[arg(long, env = "DISTGAT_MAILBOX_MAX_BYTES", value_name = "BYTES")]
    mailbox_max_bytes: Option<u64>,
}

/// `--shard-source`: parsed by the runtime's own names, so clap's error names the flag.
#[derive(Clone, Copy, Debug)]
struct ShardSourceArg(distgat_runtime::ShardSource);

impl std::str::FromStr for ShardSourceArg {
    type Err = distgat_runtime::UnknownShardSource;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(ShardSourceArg)
    }
}

/// `--recovery`: parsed by the runtime's own names, so clap's error names the flag.
#[derive(Clone, Copy, Debug)]
struct RecoveryArg(distgat_runtime::Recovery);

impl std::str::FromStr for RecoveryArg {
    type Err = distgat_runtime::UnknownRecovery;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(RecoveryArg)
    }
}

#[derive(clap::Args, Clone)]
struct ClientArgs {
    /// The coordinator's host:port [default: 127.0.0.1:50051]
    #[arg(long, env = "DISTGAT_COORDINATOR")]
    coordinator: Option<String>,
    /// TOML configuration file ([client] section)
    #[arg(long, env = "DISTGAT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    security: SecurityArgs,
    /// The name in the coordinator's certificate, when it differs from the address's host (TLS)
    #[arg(long, env = "DISTGAT_TLS_DOMAIN", value_name = "NAME")]
    tls_domain: Option<String>,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("rule").args(["knn", "radius"])))]
struct SubmitArgs {
    /// A graph registered before (see the graph line submit prints)
    #[arg(long, conflicts_with_all = [
        "graph", "features", "rule", "edge_features", "max_neighbours", "metric", "self_loops",
        "points", "format", "upload", "name",
    ])]
    graph_id: Option<String>,
    /// Graph file: a path under the coordinator's data root, or local with --upload
    #[arg(long, requires = "features", conflicts_with = "rule")]
    graph: Option<String>,
    /// Feature .npy: under the data root, or local with --upload
    #[arg(long)]
    features: Option<String>,
    /// Build the graph instead: each node's K nearest points (euclidean), distributed over the workers; the job then runs on the build's spatial parts
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    knn: Option<u64>,
    /// Build the graph instead: every point closer than R (strict), distributed over the workers
    #[arg(long, value_name = "R")]
    radius: Option<f64>,
    /// With --radius: keep at most the M nearest (ties to the lower index)
    #[arg(long, value_name = "M", requires = "radius", value_parser = clap::value_parser!(u64).range(1..))]
    max_neighbours: Option<u64>,
    /// With --knn/--radius: the distance, euclidean (default) or cosine (1 - cosine similarity)
    #[arg(long, value_enum, requires = "rule")]
    metric: Option<distgat_cli::neighbours::MetricArg>,
    /// With --knn/--radius: each node is its own neighbour (PyG's loop=True)
    #[arg(long = "loop", requires = "rule")]
    self_loops: bool,
    /// With --knn/--radius: points .npy [N, D] under the data root (default: the --features)
    #[arg(long, value_name = "P.npy", requires = "rule")]
    points: Option<String>,
    /// Edge attributes .npy [E, D] (row e for edge e of --graph), for models with edge_dim layers: under the data root, or local with --upload
    #[arg(long, value_name = "E.npy", requires = "graph")]
    edge_features: Option<String>,
    /// Graph file format (default: from the --graph file's extension)
    #[arg(long, value_enum, requires = "graph", conflicts_with = "graph_id")]
    format: Option<FormatArg>,
    /// Stream the local --graph and --features files to the coordinator
    #[arg(long, conflicts_with = "graph_id")]
    upload: bool,
    /// A label for the graph this submit registers
    #[arg(long, default_value = "", conflicts_with = "graph_id")]
    name: String,
    /// Model JSON (pyg-attention-model-v1 or gat-model-v1) under the coordinator's data root
    #[arg(long)]
    model: String,
    /// Parts, one worker each, at least 1 (default: one per live worker)
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    parts: Option<u32>,
    /// metis, random, range, or spatial (a graph built by --knn/--radius; the default for one)
    #[arg(long)]
    method: Option<String>,
    /// Reuse a partition made before (of --graph-id: a graph this submit registers has none)
    #[arg(long, conflicts_with_all = ["graph", "rule", "method"])]
    partition_id: Option<String>,
    /// Feature normalisation: none (the default), or row (PyG's NormalizeFeatures); a bare --normalize-features means row, on every subcommand
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "row")]
    normalize_features: Option<NormalizeArg>,
    /// Keep attention coefficients (for `distgat explain`)
    #[arg(long)]
    attention: bool,
    /// Kernel threads per worker (at least 1; capped at each worker's cores) [default: all of each worker's cores]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads_per_worker: Option<u32>,
    /// Where the workers get their inputs: stream (from the coordinator) or shared (they open the coordinator's paths) [default: the coordinator's --shard-source]
    #[arg(long, value_name = "SOURCE")]
    shard_source: Option<ShardSourceArg>,
    /// Then follow it like `distgat watch`
    #[arg(long)]
    watch: bool,
    /// Print the job as JSON instead of its id
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").multiple(true).args(["graph", "points"])))]
struct RunArgs {
    /// Graph file (default: the shipped Cora graph, with its features, model and labels)
    #[arg(long, value_name = "G", requires_all = ["features", "model", "out"])]
    graph: Option<PathBuf>,
    /// Build the graph from points instead (--points with --knn or --radius), distributed over the workers; the edges and the output are those of `distgat infer --points ...`
    #[command(flatten)]
    neighbourhood: distgat_cli::neighbours::NeighbourhoodArgs,
    /// Also write the neighbourhood built from --points, as int64 .npy [2, E] sorted by (target, source)
    #[arg(long, value_name = "EDGES.npy")]
    neighbours_out: Option<PathBuf>,
    /// Graph format, overriding the file extension (with --graph)
    #[arg(long, value_enum, requires = "graph")]
    format: Option<FormatArg>,
    /// Node features .npy [N, F] (with --graph or --points; alone with --model and --out for a model of global layers only)
    #[arg(long, value_name = "X")]
    features: Option<PathBuf>,
    /// Feature normalisation: none, or row (PyG's NormalizeFeatures); bare means row (the Cora demo uses row)
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "row")]
    normalize_features: Option<NormalizeArg>,
    /// Model JSON (with --graph or --points; without them, a model of global layers only: MultiheadAttention, NystromAttention)
    #[arg(long, value_name = "M")]
    model: Option<PathBuf>,
    /// Edge attributes .npy [E, D] (row e for edge e of --graph); required exactly when a layer has edge_dim
    #[arg(long, value_name = "E.npy", requires = "graph")]
    edge_features: Option<PathBuf>,
    /// Output .npy [N, D] (default with no --graph: cora_out.npy)
    #[arg(long, value_name = "OUT.npy")]
    out: Option<PathBuf>,
    /// Worker processes, one per part (default: the parts of --partition, else 4)
    #[arg(long, value_name = "K")]
    workers: Option<usize>,
    /// Extra idle worker processes: a worker lost mid-job has its part given to a spare (else to a surviving worker), which restarts it (output unchanged)
    #[arg(long, value_name = "S", default_value_t = 0)]
    spares: usize,
    /// What restarts when a worker is lost: part (only its part; every part keeps the halo rows it sends until the job ends) or job (every part, nothing kept) [default: part]
    #[arg(long, value_name = "MODE")]
    recovery: Option<RecoveryArg>,
    /// Reuse this partition directory (its parts must equal --workers)
    #[arg(long, value_name = "DIR")]
    partition: Option<PathBuf>,
    /// Partitioner when no --partition is given (default: metis; with --points, the spatial parts the neighbourhood was built on)
    #[arg(long, value_parser = parse_method_name, conflicts_with = "partition")]
    method: Option<MethodArg>,
    /// Also write per layer layer{k}_alpha.npy [E', H] and layer{k}_att_edge_index.npy [2, E'] (PyG edge order)
    #[arg(long, value_name = "DIR")]
    attention_dir: Option<PathBuf>,
    /// Kernel threads per worker (at least 1) [default: this machine's cores; the workers share them, so a part waiting for halo rows leaves the cores to the parts still computing]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    threads_per_worker: Option<u64>,
    /// Write the job summary (per worker and layer: times, rows and halo bytes; per worker the shard source, shard cache use and bytes streamed) as JSON
    #[arg(long, value_name = "S.json")]
    summary_json: Option<PathBuf>,
    /// TLS between the processes of this private cluster (the certificate must name 127.0.0.1) and a token on its coordinator
    #[command(flatten)]
    security: SecurityArgs,
    /// Where the workers get their inputs: shared (they open the files by path: this command starts every process on this machine) or stream (from the coordinator over gRPC, as on a cluster without shared storage; this command's workers cache no shard, as their work dirs are removed when it ends) [default: shared]
    #[arg(long, value_name = "SOURCE")]
    shard_source: Option<ShardSourceArg>,
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
    /// Edge attributes .npy [E, D] (row e for edge e of --graph): each shard keeps its edges' rows, for layers with edge_dim
    #[arg(long, value_name = "E.npy")]
    edge_features: Option<PathBuf>,
    /// Node count, when there are no features and the last ids are isolated nodes
    #[arg(long, value_name = "N")]
    num_nodes: Option<u64>,
    /// Number of parts (1..=N)
    #[arg(long, value_name = "K")]
    parts: usize,
    /// metis, random, range (contiguous id blocks), stream (Fennel, one pass, for graphs METIS cannot hold) or file:PARTS.npy (int32/int64 [N]) (default: metis)
    #[arg(long, value_parser = parse_method_name)]
    method: Option<MethodArg>,
    /// METIS objective: edge cut or communication volume (metis only) [default: cut]
    #[arg(long, value_enum)]
    objective: Option<ObjectiveArg>,
    /// METIS recursive bisection instead of k-way (metis only)
    #[arg(long)]
    recursive: bool,
    /// Balance incoming edges per part as well as nodes (a second METIS constraint; metis only)
    #[arg(long)]
    balance_edges: bool,
    /// Seed for metis and random [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// METIS partitions computed from different random starts; the best is kept (metis only) [default: 1]
    #[arg(long)]
    trials: Option<u32>,
    /// Allowed largest part / average part (metis: ufactor = (x - 1) * 1000; stream: a hard cap) [default: 1.03]
    #[arg(long)]
    imbalance: Option<f64>,
    /// Output partition directory (created atomically)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace an --out directory that holds a different partition (never anything else)
    #[arg(long)]
    force: bool,
    /// Also write the node -> part map as .npy [N]
    #[arg(long, value_name = "A.npy")]
    assignment_out: Option<PathBuf>,
    /// dtype of --assignment-out [default: int64]
    #[arg(long, value_enum, requires = "assignment_out")]
    assignment_dtype: Option<DtypeArg>,
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
    Stream,
    File(PathBuf),
}

fn parse_method_name(s: &str) -> Result<MethodArg, String> {
    match s {
        "metis" => Ok(MethodArg::Metis),
        "random" => Ok(MethodArg::Random),
        "range" => Ok(MethodArg::Range),
        "stream" => Ok(MethodArg::Stream),
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(MethodArg::File(PathBuf::from(p))),
            _ => Err(format!(
                "'{s}': expected metis, random, range, stream or file:PARTS.npy"
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
    /// Graph file: .npy edge index, text edge list (.txt .tsv .csv .el .edges), METIS .graph or Matrix Market .mtx; with --hops, the graph it walks; not given with --knn or --radius, whose neighbourhood is the graph, nor for a model of global layers only (MultiheadAttention, NystromAttention), which attend over all nodes
    #[arg(long, value_name = "G")]
    graph: Option<PathBuf>,
    #[command(flatten)]
    neighbourhood: distgat_cli::neighbours::NeighbourhoodArgs,
    /// Also write the neighbourhood built by --knn, --radius or --hops, as int64 .npy [2, E] sorted by (target, source)
    #[arg(long, value_name = "EDGES.npy")]
    neighbours_out: Option<PathBuf>,
    /// Graph format, overriding the file extension (with --graph)
    #[arg(long, value_enum, requires = "graph")]
    format: Option<FormatArg>,
    /// Node features: float32 or float64 .npy [N, F]; N (the rows) is the node count
    #[arg(long, value_name = "X")]
    features: PathBuf,
    /// Feature normalisation: none (the default), or row (PyG's NormalizeFeatures); a bare --normalize-features means row
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "row")]
    normalize_features: Option<NormalizeArg>,
    /// Expected node count; must equal the feature rows (a check for isolated trailing nodes)
    #[arg(long, value_name = "N")]
    num_nodes: Option<u64>,
    /// Edge attributes: float32 or float64 .npy [E, D], row e for edge e of the graph file (PyG's edge_attr); required exactly when a layer has edge_dim
    #[arg(long, value_name = "E.npy")]
    edge_features: Option<PathBuf>,
    /// Model JSON (pyg-attention-model-v1 for GATConv/GATv2Conv/TransformerConv/MultiheadAttention/NystromAttention, or gat-model-v1) naming its safetensors weights
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
    /// Also run each approximating global layer (NystromAttention, MultiheadAttention with "approx") exactly and print its relative Frobenius error (also in --stats-json)
    #[arg(long)]
    report_approximation_error: bool,
    /// Run the layers in a locality-friendly node numbering (rcm: reverse Cuthill-McKee); the outputs stay in the input's numbering with the same bits; local layers only
    #[arg(long, value_enum, default_value = "none")]
    reorder: ReorderArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReorderArg {
    /// The input's numbering
    None,
    /// Reverse Cuthill-McKee
    Rcm,
}

/// Parses the command line. A bad value that came from an environment variable (clap's
/// error names only the flag) also names the variable, which is what the user typed.
fn parse_cli() -> Cli {
    Cli::try_parse().unwrap_or_else(|e| {
        if let Some(var) = env_source_of(&e) {
            let _ = e.print();
            eprintln!(
                "note: that value came from the environment variable {var}, not the command \
                 line: fix or unset {var}"
            );
            std::process::exit(e.exit_code());
        }
        e.exit()
    })
}

/// The environment variable that supplied the invalid value of `e`, when the flag itself
/// is not on the command line.
fn env_source_of(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.split_whitespace().next()?.to_string();
    let long = flag.strip_prefix("--")?;
    if typed_on_command_line(&flag) {
        return None;
    }
    fn find(cmd: &clap::Command, long: &str) -> Option<String> {
        cmd.get_arguments()
            .filter(|a| a.get_long() == Some(long))
            .filter_map(|a| a.get_env())
            .map(|v| v.to_string_lossy().into_owned())
            .find(|v| std::env::var_os(v).is_some())
            .or_else(|| cmd.get_subcommands().find_map(|c| find(c, long)))
    }
    find(&<Cli as clap::CommandFactory>::command(), long)
}

fn main() -> ExitCode {
    // Colour only on a terminal, and never with NO_COLOR: logs written to files stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = parse_cli();
    let result = match cli.command {
        Command::Infer(args) => infer(args),
        Command::Partition(args) => partition(args),
        Command::Neighbours(args) => {
            distgat_cli::neighbours::neighbours_command(args).map_err(anyhow::Error::from)
        }
        Command::PartitionReport { dir, json } => partition_report(&dir, json),
        Command::Run(args) => run(args),
        Command::Coordinator(args) => coordinator(args),
        Command::Worker(args) => worker(args),
        Command::Submit(args) => client_command(&args.client.clone(), |c| submit(c, args)),
        Command::Status { job, json, client } => client_command(&client, |c| status(c, job, json)),
        Command::Graphs { json, client } => client_command(&client, |mut c| async move {
            let graphs = c.graphs().await?;
            println!("{}", distgat_cli::remote::format_graphs(&graphs, json));
            Ok(())
        }),
        Command::Partitions { json, client } => client_command(&client, |mut c| async move {
            let partitions = c.partitions().await?;
            println!(
                "{}",
                distgat_cli::remote::format_partitions(&partitions, json)
            );
            Ok(())
        }),
        Command::Watch { job, client } => client_command(&client, |c| watch(c, job, true)),
        Command::Fetch {
            job,
            out,
            nodes,
            range,
            ids_out,
            client,
        } => check_fetch_outputs(&out, ids_out.as_deref())
            .and_then(|()| client_command(&client, |c| fetch(c, job, out, nodes, range, ids_out))),
        Command::FetchEdges { graph, out, client } => client_command(&client, |mut c| async move {
            let edges = c.fetch_edges_to_npy(&graph, &out).await.map_err(|e| {
                anyhow::anyhow!("fetching the edges of {graph} into {}: {e}", out.display())
            })?;
            eprintln!("{} edges -> {}", edges.sources.len(), out.display());
            Ok(())
        }),
        Command::Explain {
            job,
            nodes,
            layer,
            top_k,
            client,
        } => client_command(&client, |c| explain(c, job, nodes, layer, top_k)),
        Command::Cancel {
            job,
            reason,
            client,
        } => client_command(&client, |mut c| async move {
            let info = c.cancel(&job, &reason).await?;
            println!("{}", distgat_cli::remote::format_job(&info));
            Ok(())
        }),
        Command::Delete { what, id, client } => client_command(&client, |mut c| async move {
            let reply = match what {
                DeleteWhat::Job => c.delete_job(&id).await?,
                DeleteWhat::Partition => c.delete_partition(&id).await?,
                DeleteWhat::Graph => c.delete_graph(&id).await?,
            };
            println!(
                "deleted {}; {} freed in the coordinator's work dir",
                reply.id,
                distgat_cli::remote::human_bytes(reply.bytes_freed)
            );
            Ok(())
        }),
        Command::Workers {
            wait,
            timeout,
            json,
            client,
        } => {
            // --wait also waits for the coordinator itself to come up, within --timeout.
            let timeout = timeout.unwrap_or(60);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
            let patience = wait.map(|_| (std::time::Duration::from_secs(timeout), "--timeout"));
            client_command_within(&client, patience, |c| workers(c, wait, deadline, json))
        }
        Command::Health {
            address,
            service,
            timeout,
            tls_ca,
            tls_domain,
        } => tokio_runtime().and_then(|rt| {
            let none = distgat_cli::config::FileConfig::default();
            let names = distgat_proto::TlsNames {
                ca: setting_name(true, "--tls-ca", "DISTGAT_TLS_CA", &none, ""),
                domain: setting_name(true, "--tls-domain", "DISTGAT_TLS_DOMAIN", &none, ""),
                ..Default::default()
            };
            let tls = distgat_proto::TlsFiles {
                ca: tls_ca,
                domain: tls_domain,
                names,
                ..Default::default()
            }
            .load_client()?;
            rt.block_on(distgat_cli::remote::check_health(
                &address,
                &service,
                std::time::Duration::from_secs(timeout.unwrap_or(0)),
                tls.as_ref(),
            ))?;
            println!("{address}: SERVING");
            Ok(())
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
        // Off a terminal the bar is not drawn: a plain line per phase, with the time so
        // far, so a log file shows where a long run is.
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("[{:>7.1} s] {name}", bar.elapsed().as_secs_f64());
        }
    }
    tracing::info!(phase = name);
}

/// Shows the progress inside each layer while `work` runs. On a terminal the bar's message
/// is the current layer, a bar of its edges, the percentage and an estimate of the time
/// left; off a terminal a plain line says the same every `DISTGAT_PROGRESS_SECONDS`
/// (default 10) while a layer runs, so a log shows where a long run is.
fn with_layer_progress<T>(
    bar: &ProgressBar,
    progress: &distgat_attention::Progress,
    work: impl FnOnce() -> T,
) -> T {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let every = progress_line_interval();
    let poll = every.min(std::time::Duration::from_millis(100));
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // The layer shown, and when (and at how many entries) its aggregation was
            // first seen under way: the rate since then gives the time left.
            let (mut layer, mut since) = (0, None);
            let mut last_line = std::time::Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(poll);
                let snap = progress.snapshot();
                if snap.layer != layer {
                    (layer, since, last_line) = (snap.layer, None, std::time::Instant::now());
                }
                if snap.layer == 0 || snap.entries_done >= snap.entries_total {
                    continue;
                }
                if since.is_none() && snap.entries_done > 0 {
                    since = Some((std::time::Instant::now(), snap.entries_done));
                }
                let line = layer_progress_line(&snap, since);
                if terminal {
                    bar.set_message(line);
                } else if last_line.elapsed() >= every {
                    eprintln!("[{:>7.1} s] {line}", bar.elapsed().as_secs_f64());
                    last_line = std::time::Instant::now();
                }
            }
        });
        let result = work();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })
}

/// How often a plain progress line is written when stderr is not a terminal:
/// `DISTGAT_PROGRESS_SECONDS` (a positive number), default 10 s.
fn progress_line_interval() -> std::time::Duration {
    std::env::var("DISTGAT_PROGRESS_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .map_or(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs_f64,
        )
}

/// `layer 2/3 [#######.............]  35% of 10000000 edges, about 12 s left`, or
/// `layer 2/3: transforming the rows` before its aggregation starts. The time left is the
/// remaining entries at the rate seen since `since` (when, and at how many entries done).
fn layer_progress_line(
    snap: &distgat_attention::ProgressSnapshot,
    since: Option<(std::time::Instant, u64)>,
) -> String {
    if snap.entries_done == 0 {
        return format!(
            "layer {}/{}: transforming the rows",
            snap.layer, snap.layers
        );
    }
    let fraction = snap.layer_fraction();
    let filled = (fraction * 20.0).round() as usize;
    let left = match since {
        Some((at, done0)) if snap.entries_done > done0 && at.elapsed().as_secs_f64() > 0.5 => {
            let rate = (snap.entries_done - done0) as f64 / at.elapsed().as_secs_f64();
            let secs = (snap.entries_total - snap.entries_done) as f64 / rate;
            if secs < 1.0 {
                ", under 1 s left".to_string()
            } else {
                format!(", about {secs:.0} s left")
            }
        }
        _ => String::new(),
    };
    format!(
        "layer {}/{} [{}{}] {:>3.0}% of {} {}{left}",
        snap.layer,
        snap.layers,
        "#".repeat(filled),
        ".".repeat(20 - filled),
        fraction * 100.0,
        snap.entries_total,
        snap.unit
    )
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

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let file = load_config(args.config.as_deref())?;
    let c = &file.coordinator;
    let security = args.security.or_file(
        &file,
        "coordinator",
        &c.tls_cert,
        &c.tls_key,
        &c.tls_ca,
        &c.auth_token_file,
    );
    let defaults = distgat_runtime::CoordinatorConfig::default();
    let config = distgat_runtime::CoordinatorConfig {
        listen: pick(
            args.listen,
            file.parse("coordinator.listen", c.listen.as_ref())?,
            ([127, 0, 0, 1], 50051).into(),
        ),
        data_root: pick(
            args.data_root,
            c.data_root.clone(),
            defaults.data_root.clone(),
        ),
        work_dir: pick(args.work_dir, c.work_dir.clone(), defaults.work_dir.clone()),
        max_upload_bytes: pick(
            args.max_upload_bytes,
            c.max_upload_bytes,
            defaults.max_upload_bytes,
        ),
        heartbeat_timeout: pick(
            args.heartbeat_timeout_ms,
            c.heartbeat_timeout_ms,
            defaults.heartbeat_timeout.as_millis() as u64,
        )
        .pipe(std::time::Duration::from_millis),
        allow_run_job: args.allow_run_job,
        keep_jobs: pick(args.keep_jobs, c.keep_jobs, defaults.keep_jobs),
        metrics_listen: match args.metrics_listen {
            Some(a) => Some(a),
            None => file.parse("coordinator.metrics_listen", c.metrics_listen.as_ref())?,
        },
        tls: security.tls(None, None),
        auth_token_file: security.args.auth_token_file.clone(),
        max_concurrent_fetches: match (args.max_concurrent_fetches, c.max_concurrent_fetches) {
            (Some(n), _) => n as usize,
            (None, Some(0)) => anyhow::bail!(
                "config file {}: coordinator.max_concurrent_fetches: 0: expected at least 1",
                file.path.display()
            ),
            (None, Some(n)) => n as usize,
            (None, None) => distgat_runtime::DEFAULT_MAX_CONCURRENT_FETCHES,
        },
        max_concurrent_shard_streams: pick(
            args.max_concurrent_shard_streams.map(|n| n as usize),
            c.max_concurrent_shard_streams.map(|n| n as usize),
            defaults.max_concurrent_shard_streams,
        ),
        shard_source: match args.shard_source {
            Some(s) => s.0,
            None => file
                .parse::<ShardSourceArg>("coordinator.shard_source", c.shard_source.as_ref())?
                .map_or(defaults.shard_source, |s| s.0),
        },
        recovery: match args.recovery {
            Some(r) => r.0,
            None => file
                .parse::<RecoveryArg>("coordinator.recovery", c.recovery.as_ref())?
                .map_or(defaults.recovery, |r| r.0),
        },
        ..defaults
    };
    let addr_file = args.addr_file.or(c.addr_file.clone());
    serve(
        async move { distgat_runtime::start_coordinator(config).await },
        addr_file,
    )
}

fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let file = load_config(args.config.as_deref())?;
    let w = &file.worker;
    let security = args.security.or_file(
        &file,
        "worker",
        &w.tls_cert,
        &w.tls_key,
        &w.tls_ca,
        &w.auth_token_file,
    );
    let coordinator = args.coordinator.or(w.coordinator.clone()).ok_or_else(|| {
        anyhow::anyhow!(
            "no coordinator address: give --coordinator HOST:PORT, DISTGAT_COORDINATOR or \
             worker.coordinator in the config file"
        )
    })?;
    let config = distgat_runtime::WorkerConfig {
        coordinator,
        listen: pick(
            args.listen,
            file.parse("worker.listen", w.listen.as_ref())?,
            ([127, 0, 0, 1], 0).into(),
        ),
        advertise_host: args.advertise_host.or(w.advertise_host.clone()),
        metrics_listen: match args.metrics_listen {
            Some(a) => Some(a),
            None => file.parse("worker.metrics_listen", w.metrics_listen.as_ref())?,
        },
        tls: security.tls(None, None),
        auth_token_file: security.args.auth_token_file.clone(),
        work_dir: args.work_dir.or(w.work_dir.clone()),
        shard_cache_max_bytes: pick(
            args.shard_cache_max_bytes,
            w.shard_cache_max_bytes,
            distgat_runtime::DEFAULT_SHARD_CACHE_MAX_BYTES,
        ),
        mailbox_max_bytes: pick(
            args.mailbox_max_bytes,
            w.mailbox_max_bytes,
            distgat_runtime::DEFAULT_MAILBOX_MAX_BYTES,
        ),
        ..Default::default()
    };
    let addr_file = args.addr_file.or(w.addr_file.clone());
    serve(
        async move { distgat_runtime::start_worker(config).await },
        addr_file,
    )
}

/// Small extension: `value.pipe(f)` reads better than nesting in long initialisers.
trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

/// Connects to the coordinator named by flag, env or config file and runs `command`.
fn client_command<F, Fut>(args: &ClientArgs, command: F) -> anyhow::Result<()>
where
    F: FnOnce(distgat_client::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    client_command_within(args, None, command)
}

/// [`client_command`], but when `patience` is given, keeps trying to reach a coordinator
/// that is not up yet for that long (a cluster being started), instead of a few attempts.
fn client_command_within<F, Fut>(
    args: &ClientArgs,
    patience: Option<(std::time::Duration, &str)>,
    command: F,
) -> anyhow::Result<()>
where
    F: FnOnce(distgat_client::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let file = load_config(args.config.as_deref())?;
    let address = pick(
        args.coordinator.clone(),
        file.client.coordinator.clone(),
        "127.0.0.1:50051".to_string(),
    );
    let cs = &file.client;
    let from_file = args.security.or_file(
        &file,
        "client",
        &cs.tls_cert,
        &cs.tls_key,
        &cs.tls_ca,
        &cs.auth_token_file,
    );
    let domain_name = setting_name(
        args.tls_domain.is_some(),
        "--tls-domain",
        "DISTGAT_TLS_DOMAIN",
        &file,
        "client.tls_domain",
    );
    let tls_domain = args.tls_domain.clone().or(cs.tls_domain.clone());
    let token = distgat_client::token_from(from_file.args.auth_token_file.as_deref())?;
    if token.as_ref().map(|(_, from)| *from) == Some(distgat_client::TokenSource::File)
        && std::env::var_os(distgat_client::TOKEN_ENV).is_some()
    {
        eprintln!("note: using the token of --auth-token-file; DISTGAT_TOKEN is ignored");
    }
    let security = distgat_client::Security {
        tls: from_file.tls(tls_domain, Some(domain_name)),
        token: token.map(|(t, _)| t),
    };
    tokio_runtime()?.block_on(async {
        let client = match patience {
            None => {
                distgat_client::Client::connect_secure(&address, Default::default(), &security)
                    .await?
            }
            Some((within, flag)) => {
                let retry = distgat_client::RetryPolicy {
                    attempts: u32::MAX,
                    ..Default::default()
                };
                tokio::time::timeout(
                    within,
                    distgat_client::Client::connect_secure(&address, retry, &security),
                )
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no coordinator answered at {address} within {} s ({flag})",
                        within.as_secs()
                    )
                })??
            }
        };
        command(client).await
    })
}

async fn submit(mut client: distgat_client::Client, args: SubmitArgs) -> anyhow::Result<()> {
    let config = distgat_cli::remote::SubmitConfig {
        graph_id: args.graph_id,
        graph: args.graph,
        features: args.features,
        edge_features: args.edge_features,
        graph_format: args
            .format
            .map(|f| graph_format(f).name().to_string())
            .unwrap_or_default(),
        upload: args.upload,
        name: args.name,
        neighbourhood: (args.knn.is_some() || args.radius.is_some()).then(|| {
            distgat_cli::remote::Neighbourhood {
                spec: distgat_client::v1::NeighbourSpec {
                    knn: args.knn,
                    radius: args.radius,
                    max_neighbours: args.max_neighbours,
                    self_loops: args.self_loops,
                    metric: match args.metric {
                        Some(distgat_cli::neighbours::MetricArg::Cosine) => "cosine".into(),
                        _ => String::new(),
                    },
                },
                points: args.points,
            }
        }),
        job: distgat_client::Submit {
            partition_id: args.partition_id.unwrap_or_default(),
            parts: args.parts.unwrap_or(0),
            // Empty: the coordinator's default (metis, or a built graph's spatial parts).
            method: args.method.unwrap_or_default(),
            model: args.model,
            normalize_features: matches!(args.normalize_features, Some(NormalizeArg::Row)),
            attention: args.attention,
            // 0: all of each worker's cores (the API's default).
            threads_per_worker: args.threads_per_worker.unwrap_or(0),
            shard_source: args
                .shard_source
                .map(|s| s.0.name().to_string())
                .unwrap_or_default(),
            ..Default::default()
        },
    };
    let info = distgat_cli::remote::submit(&mut client, config).await?;
    if args.json {
        println!("{}", distgat_cli::remote::job_json(&info));
    } else {
        println!("{}", info.job_id);
    }
    if args.watch {
        // stdout carries only the job id (or its JSON), so `job=$(distgat submit --watch
        // ...)` captures just that; the progress and the final line go to stderr.
        watch(client, info.job_id, false).await?;
    }
    Ok(())
}

async fn status(
    mut client: distgat_client::Client,
    job: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let jobs = match job {
        Some(id) => vec![client.job(&id).await?],
        None => client.jobs().await?,
    };
    for j in &jobs {
        if json {
            println!("{}", distgat_cli::remote::job_json(j));
        } else {
            println!("{}", distgat_cli::remote::format_job(j));
        }
    }
    Ok(())
}

async fn watch(
    mut client: distgat_client::Client,
    job: String,
    final_line_to_stdout: bool,
) -> anyhow::Result<()> {
    // Position in thousandths of the job's work (layers x parts, with the share of each
    // part's current layer), so the percentage and the time left move inside a layer.
    let bar = ProgressBar::new(1000).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed}] {bar:30} {percent:>3}% (about {eta} left) {msg}",
        )
        .expect("static template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut last_state = String::new();
    // Off a terminal the bar is not drawn: a line per state change, and while the job
    // runs, one every DISTGAT_PROGRESS_SECONDS with the share of the work done.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (every, mut last_line) = (progress_line_interval(), std::time::Instant::now());
    let result = client
        .wait(&job, |info| {
            let state = distgat_client::state_name(info);
            bar.set_position((distgat_cli::remote::work_fraction(info) * 1000.0).round() as u64);
            let (layer, parts_done) = distgat_cli::remote::layer_progress(info);
            bar.set_message(format!(
                "{} {state}: layer {layer}/{} on {} parts ({parts_done} done)",
                info.job_id, info.layers, info.parts
            ));
            if state != last_state || (!terminal && last_line.elapsed() >= every) {
                bar.suspend(|| eprintln!("{}", distgat_cli::remote::format_job(info)));
                last_state = state.to_string();
                last_line = std::time::Instant::now();
            }
        })
        .await;
    bar.finish_and_clear();
    let info = result?;
    if final_line_to_stdout {
        println!("{}", distgat_cli::remote::format_job(&info));
    } else {
        eprintln!("{}", distgat_cli::remote::format_job(&info));
    }
    Ok(())
}

/// `fetch`'s output files, checked before connecting: writable, and not the same file.
fn check_fetch_outputs(out: &Path, ids_out: Option<&Path>) -> anyhow::Result<()> {
    distgat_cli::infer::check_output_file("--out", out)?;
    if let Some(ids) = ids_out {
        distgat_cli::infer::check_output_file("--ids-out", ids)?;
        if std::path::absolute(ids)? == std::path::absolute(out)? {
            anyhow::bail!(
                "--ids-out: {} is also named by --out; give each output its own file",
                ids.display()
            );
        }
    }
    Ok(())
}

async fn fetch(
    mut client: distgat_client::Client,
    job: String,
    out: PathBuf,
    nodes: Option<String>,
    range: Option<String>,
    ids_out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let selection = distgat_cli::remote::selection(nodes.as_deref(), range.as_deref())?;
    let rows = client.fetch_to_npy(&job, selection, &out).await?;
    if let Some(path) = ids_out {
        let ids: Vec<i64> = rows.nodes.iter().map(|&v| v as i64).collect();
        distgat_graph::write_npy(&path, &[ids.len() as u64], &ids)?;
    }
    println!(
        "wrote {} rows of {} columns to {}",
        rows.nodes.len(),
        rows.width,
        out.display()
    );
    Ok(())
}

async fn explain(
    mut client: distgat_client::Client,
    job: String,
    nodes: String,
    layer: u32,
    top_k: u32,
) -> anyhow::Result<()> {
    let distgat_client::Selection::Nodes(ids) = distgat_cli::remote::selection(Some(&nodes), None)?
    else {
        unreachable!("a node list parses to Selection::Nodes")
    };
    let reply = client.attention(&job, layer, ids, top_k).await?;
    for n in &reply.nodes {
        println!(
            "node {} (layer {}, in-degree {}):",
            n.node, reply.layer, n.in_degree
        );
        for t in &n.top {
            let heads: Vec<String> = t.alpha.iter().map(|a| format!("{a:.4}")).collect();
            println!(
                "  from {:>8}  mean {:.4}  heads [{}]",
                t.source,
                t.mean_alpha,
                heads.join(", ")
            );
        }
    }
    Ok(())
}

async fn workers(
    mut client: distgat_client::Client,
    wait: Option<usize>,
    deadline: std::time::Instant,
    json: bool,
) -> anyhow::Result<()> {
    let status = match wait {
        Some(k) => {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            client.wait_for_workers(k, left).await?
        }
        None => client.cluster_status().await?,
    };
    if json {
        println!("{}", distgat_cli::remote::workers_json(&status));
    } else {
        println!("{}", distgat_cli::remote::format_workers(&status));
    }
    Ok(())
}

/// Runs a server until SIGTERM or Ctrl-C; prints its address once bound (and writes it to
/// `addr_file`, if given). A signal while it is still starting (a worker waits up to 30 s
/// for its coordinator) stops the start, so what it made is removed (a worker's temporary
/// work directory), and exits with 128 + the signal's number.
fn serve(
    start: impl std::future::Future<Output = distgat_runtime::Result<distgat_runtime::RunningServer>>,
    addr_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let runtime = tokio_runtime()?;
    let stopped = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let started = tokio::select! {
            server = start => Ok(server?),
            _ = tokio::signal::ctrl_c() => Err(("SIGINT", 130)),
            _ = term.recv() => Err(("SIGTERM", 143)),
        };
        let server = match started {
            Ok(server) => server,
            Err(stopped) => return anyhow::Ok(Some(stopped)),
        };
        println!("listening on {}", server.addr);
        if let Some(metrics) = server.metrics_addr {
            println!("metrics on http://{metrics}/metrics");
        }
        if let Some(path) = &addr_file {
            distgat_cli::remote::write_addr_file(path, &server.addr.to_string())?;
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = server.shutdown.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server.join).await;
        anyhow::Ok(None)
    })?;
    // Stopped while starting: the tasks the start spawned (a worker's server, which holds
    // its temporary work directory) end with the runtime, before the exit; a blocking task
    // still running gets 5 s, so a signal never hangs the process.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    if let Some((signal, code)) = stopped {
        eprintln!("stopped by {signal} while starting");
        std::process::exit(code);
    }
    Ok(())
}

fn method_of(arg: MethodArg, seed: u64) -> Method {
    match arg {
        MethodArg::Metis => Method::metis_default(),
        MethodArg::Random => Method::Random { seed },
        MethodArg::Range => Method::Range,
        MethodArg::Stream => Method::Stream { imbalance: 1.03 },
        MethodArg::File(path) => Method::File { path },
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let root = std::env::var_os("DISTGAT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let neighbourhood = if args.neighbourhood.any() {
        let spec = args.neighbourhood.config(args.graph.clone())?;
        // --hops walks --graph; distgat run refuses it (check_distributed names the flag).
        Some(spec)
    } else {
        None
    };
    // No --graph and no --points: the Cora demo when none of --features/--model/--out is
    // given, else a model of global layers only, which needs all three.
    let global_only = args.graph.is_none()
        && neighbourhood.is_none()
        && (args.features.is_some() || args.model.is_some());
    let shipped = args.graph.is_none() && neighbourhood.is_none() && !global_only;
    if shipped && args.normalize_features.is_some() {
        anyhow::bail!(
            "--normalize-features: applies to the job's --features, given with --graph (or \
             --points, or alone for a model of global layers only); the Cora demo (no \
             --graph) normalises its own"
        );
    }
    if neighbourhood.is_some() || global_only {
        let with = if global_only {
            "without --graph (a model of global layers only; give --graph G for a graph model)"
        } else {
            "with --points"
        };
        for (given, name) in [
            (args.features.is_some(), "--features"),
            (args.model.is_some(), "--model"),
            (args.out.is_some(), "--out"),
        ] {
            if !given {
                anyhow::bail!(
                    "{name}: required {with} (the run needs features, a model and an output file)"
                );
            }
        }
    }
    let (graph, features, model, normalize) = match (args.graph, &neighbourhood) {
        (Some(g), None) => (
            g,
            args.features.expect("clap requires it"),
            args.model.expect("clap requires it"),
            args.normalize_features.unwrap_or(NormalizeArg::None),
        ),
        (g, Some(_)) => (
            g.unwrap_or_default(),
            args.features.expect("checked above"),
            args.model.expect("checked above"),
            args.normalize_features.unwrap_or(NormalizeArg::None),
        ),
        (None, None) if global_only => (
            PathBuf::new(),
            args.features.expect("checked above"),
            args.model.expect("checked above"),
            args.normalize_features.unwrap_or(NormalizeArg::None),
        ),
        (None, None) => (
            root.join("data/cora/edges.npy"),
            root.join("data/cora/features.npy"),
            root.join("reference/cora-gat/model.json"),
            NormalizeArg::Row,
        ),
    };
    let out = args.out.unwrap_or_else(|| PathBuf::from("cora_out.npy"));
    if let Some(path) = &args.summary_json {
        // Checked before the job, not after it.
        distgat_cli::infer::check_output_file("--summary-json", path)?;
        let others = [Some(&out), args.neighbours_out.as_ref()];
        if others
            .into_iter()
            .flatten()
            .any(|o| distgat_cli::infer::same_file(o, path))
        {
            anyhow::bail!(
                "--summary-json: {} is also named by --out or --neighbours-out; give each \
                 output its own file",
                path.display()
            );
        }
    }
    // With a reused partition and no --workers, one worker per part of that partition.
    let workers = match (args.workers, &args.partition) {
        (Some(k), _) => k,
        (None, Some(dir)) => distgat_partition::PartitionDir::open(dir)?.manifest.parts,
        (None, None) => 4,
    };
    let config = distgat_cli::run::RunConfig {
        graph,
        neighbourhood,
        neighbours_out: args.neighbours_out,
        format: args.format.map(graph_format),
        features,
        normalize: match normalize {
            NormalizeArg::None => Normalization::None,
            NormalizeArg::Row => Normalization::Row,
        },
        model,
        edge_features: args.edge_features,
        out: out.clone(),
        workers,
        spares: args.spares,
        recovery: args.recovery.map(|r| r.0),
        partition: args.partition,
        method: args.method.map(|m| method_of(m, 0)),
        attention_dir: args.attention_dir,
        // 0: all of each worker's cores (the worker decides, as for a submitted job).
        threads_per_worker: args.threads_per_worker.map_or(0, |t| t as usize),
        // This command starts every process on this machine: they share its files.
        shard_source: args
            .shard_source
            .map_or(distgat_runtime::ShardSource::Shared, |s| s.0),
        exe: std::env::current_exe()?,
        tls: args.security.alone().tls(None, None),
        auth_token_file: args.security.auth_token_file.clone(),
    };
    let bar = progress_bar();
    let started = std::time::Instant::now();
    let summary = distgat_cli::run::run_cluster(&config, show_phase);
    let total = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let outcome = summary?;
    let mut parsed: serde_json::Value = serde_json::from_str(&outcome.summary_json)?;
    parsed["command_seconds"] = serde_json::json!({
        "total": total,
        "building_neighbourhood": outcome.build_secs,
        "partitioning": outcome.partition_secs,
        "starting": outcome.start_secs,
        "job": outcome.job_secs,
        "stopping": outcome.stop_secs,
    });
    // The whole command's time, then each phase's.
    eprintln!(
        "wrote {} in {total:.2} s with {} workers: {}partitioning {:.2} s{}, starting the \
         processes {:.2} s, the job {:.2} s, stopping them {:.2} s",
        out.display(),
        config.workers,
        if outcome.build_json.is_some() {
            format!("building the neighbourhood {:.2} s, ", outcome.build_secs)
        } else {
            String::new()
        },
        outcome.partition_secs,
        if config.partition.is_some() {
            " (reused)"
        } else {
            ""
        },
        outcome.start_secs,
        outcome.job_secs,
        outcome.stop_secs,
    );
    if let Some(json) = &outcome.build_json {
        let build: serde_json::Value = serde_json::from_str(json)?;
        eprintln!(
            "neighbourhood built distributed in {:.2} s: {} edges over {} nodes; point bytes \
             fetched from peers vs. needed (fetched points that became neighbours):",
            outcome.build_secs,
            build["edges"].as_u64().unwrap_or(0),
            build["nodes"].as_u64().unwrap_or(0),
        );
        eprintln!("part   points  boundary  search ms  fetch ms  bytes fetched  bytes needed");
        for p in build["parts"].as_array().into_iter().flatten() {
            eprintln!(
                "{:>4} {:>8} {:>9} {:>10.1} {:>9.1} {:>14} {:>13}",
                p["part"].as_u64().unwrap_or(0),
                p["points"].as_u64().unwrap_or(0),
                p["boundary_centres"].as_u64().unwrap_or(0),
                p["search_ms"].as_f64().unwrap_or(0.0),
                p["fetch_ms"].as_f64().unwrap_or(0.0),
                p["bytes_fetched"].as_u64().unwrap_or(0),
                p["bytes_needed"].as_u64().unwrap_or(0),
            );
        }
        parsed["neighbourhood"] = build;
    }
    eprintln!("part layer  compute ms  wait ms  send ms  rows sent  halo bytes (planned)");
    for w in parsed["workers"].as_array().into_iter().flatten() {
        for l in w["layers"].as_array().into_iter().flatten() {
            eprintln!(
                "{:>4} {:>5} {:>11.1} {:>8.1} {:>8.1} {:>10} {:>11} ({})",
                w["part"].as_u64().unwrap_or(0),
                l["layer"].as_u64().unwrap_or(0),
                l["compute_ms"].as_f64().unwrap_or(0.0),
                l["wait_ms"].as_f64().unwrap_or(0.0),
                l["send_ms"].as_f64().unwrap_or(0.0),
                l["rows_sent"].as_u64().unwrap_or(0),
                l["halo_bytes_sent"].as_u64().unwrap_or(0),
                l["halo_bytes_planned"].as_u64().unwrap_or(0)
            );
        }
    }
    for r in parsed["recoveries"].as_array().into_iter().flatten() {
        eprintln!(
            "recovered: worker {} (part {}) was lost {:.2} s into the job; {} took the part \
             and the job restarted from layer 0 ({:.2} s lost): {}",
            r["lost_worker"].as_str().unwrap_or("?"),
            r["part"].as_u64().unwrap_or(0),
            r["detected_after_s"].as_f64().unwrap_or(0.0),
            r["replacement"].as_str().unwrap_or("?"),
            r["time_lost_s"].as_f64().unwrap_or(0.0),
            r["detail"].as_str().unwrap_or(""),
        );
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

/// The partitioner `partition`'s flags describe. A flag the chosen `--method` does not
/// use is an error naming it (given to another method, it would be silently ignored).
fn partition_method(args: &PartitionArgs) -> anyhow::Result<Method> {
    let method = args.method.clone().unwrap_or(MethodArg::Metis);
    let (name, uses): (&str, &[&str]) = match &method {
        MethodArg::Metis => (
            "metis",
            &[
                "--objective",
                "--recursive",
                "--balance-edges",
                "--seed",
                "--trials",
                "--imbalance",
            ],
        ),
        MethodArg::Random => ("random", &["--seed"]),
        MethodArg::Range => ("range", &[]),
        MethodArg::Stream => ("stream", &["--imbalance"]),
        MethodArg::File(_) => ("file", &[]),
    };
    let given = [
        ("--objective", args.objective.is_some()),
        ("--recursive", args.recursive),
        ("--balance-edges", args.balance_edges),
        ("--seed", args.seed.is_some()),
        ("--trials", args.trials.is_some()),
        ("--imbalance", args.imbalance.is_some()),
    ];
    // One part needs no partitioner: every node goes to part 0 whatever the method, so
    // its options would be recorded in the report and never used.
    if args.parts == 1 && !matches!(method, MethodArg::File(_)) {
        if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
            anyhow::bail!(
                "{flag}: not used with --parts 1 (every node goes to part 0 and no \
                 partitioner runs); drop it or ask for more parts"
            );
        }
    }
    if let Some((flag, _)) = given.iter().find(|(f, set)| *set && !uses.contains(f)) {
        anyhow::bail!(
            "{flag}: not used by --method {name} ({}); drop it or choose a method that uses it",
            match uses {
                [] => "which takes no options".to_string(),
                _ => format!("which takes {}", uses.join(", ")),
            }
        );
    }
    if args.recursive && matches!(args.objective, Some(ObjectiveArg::Volume)) {
        anyhow::bail!(
            "--objective volume: METIS's recursive bisection (--recursive) minimises the edge \
             cut only; drop one of them"
        );
    }
    let imbalance = args.imbalance.unwrap_or(1.03);
    Ok(match method {
        MethodArg::Metis => Method::Metis {
            objective: match args.objective.unwrap_or(ObjectiveArg::Cut) {
                ObjectiveArg::Cut => Objective::Cut,
                ObjectiveArg::Volume => Objective::Volume,
            },
            recursive: args.recursive,
            seed: args.seed.unwrap_or(0),
            imbalance,
            balance_edges: args.balance_edges,
            trials: args.trials.unwrap_or(1),
        },
        MethodArg::Random => Method::Random {
            seed: args.seed.unwrap_or(0),
        },
        MethodArg::Range => Method::Range,
        MethodArg::Stream => Method::Stream { imbalance },
        MethodArg::File(path) => Method::File { path },
    })
}

fn partition(args: PartitionArgs) -> anyhow::Result<()> {
    let method = partition_method(&args)?;
    let config = PartitionConfig {
        graph: args.graph,
        format: args.format.map(graph_format),
        num_nodes: args.num_nodes,
        features: args.features,
        shared_features: args.shared_features,
        edge_features: args.edge_features,
        parts: args.parts,
        method,
        out: args.out,
        assignment_out: args.assignment_out,
        assignment_dtype: match args.assignment_dtype.unwrap_or(DtypeArg::Int64) {
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
    let progress = std::sync::Arc::new(distgat_attention::Progress::with_layer_hook(|k, l| {
        show_phase(&format!("layer {}/{l}", k + 1))
    }));
    let neighbourhood = if args.neighbourhood.any() {
        Some(args.neighbourhood.config(args.graph.clone())?)
    } else {
        None
    };
    let config = InferConfig {
        graph: args.graph.unwrap_or_default(),
        neighbourhood,
        neighbours_out: args.neighbours_out,
        format: args.format.map(graph_format),
        num_nodes: args.num_nodes,
        features: args.features,
        edge_features: args.edge_features,
        normalize: match args.normalize_features.unwrap_or(NormalizeArg::None) {
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
        report_approximation_error: args.report_approximation_error,
        reorder: match args.reorder {
            ReorderArg::None => distgat_cli::infer::Reorder::None,
            ReorderArg::Rcm => distgat_cli::infer::Reorder::Rcm,
        },
        on_phase: Some(show_phase),
        progress: Some(progress.clone()),
    };
    let report = with_layer_progress(&bar, &progress, || run_infer(&config));
    bar.finish_and_clear();
    let report = report?;
    eprintln!(
        "wrote {} ({} nodes x {} columns; {} edges) in {:.1} ms with {} thread(s){}",
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
    for (k, layer) in report.layers.iter().enumerate() {
        if let Some(err) = layer.approximation_error {
            println!(
                "layer {k} ({}): relative Frobenius error vs exact attention: {err:.6e}",
                layer.kind
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// Every subcommand and every argument of every subcommand says what it is for.
    #[test]
    fn every_argument_has_help_text() {
        let mut missing = Vec::new();
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            if sub.get_about().is_none() {
                missing.push(sub.get_name().to_string());
            }
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{} {id}", sub.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    /// An option that several subcommands have takes the same kind of value everywhere:
    /// the same number of values, the same choices and the same default.
    #[test]
    fn every_shared_option_behaves_the_same_everywhere() {
        use std::collections::BTreeMap;
        let cli = Cli::command();
        let mut seen: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if long == "help" {
                    continue;
                }
                let shape = format!(
                    "takes values: {:?}; num_args: {:?}; choices: {:?}; default: {:?}",
                    arg.get_action().takes_values(),
                    arg.get_num_args(),
                    arg.get_possible_values()
                        .iter()
                        .map(|v| v.get_name().to_string())
                        .collect::<Vec<_>>(),
                    arg.get_default_values(),
                );
                seen.entry(long.to_string())
                    .or_default()
                    .push((sub.get_name().to_string(), shape));
            }
        }
        let mut differing = Vec::new();
        for (long, uses) in &seen {
            if uses.iter().any(|(_, shape)| *shape != uses[0].1) {
                differing.push(format!("--{long}: {uses:#?}"));
            }
        }
        assert!(differing.is_empty(), "{}", differing.join("\n"));
    }

    /// `--normalize-features` is spelled and parsed the same by every subcommand that has
    /// it: bare means row, and `none`/`row` are accepted everywhere.
    #[test]
    fn normalize_features_is_one_option_everywhere() {
        let cli = Cli::command();
        let subs: Vec<_> = cli
            .get_subcommands()
            .filter(|s| {
                s.get_arguments()
                    .any(|a| a.get_id().as_str() == "normalize_features")
            })
            .map(|s| s.get_name().to_string())
            .collect();
        assert!(subs.len() >= 3, "{subs:?}");
        for sub in &subs {
            let base: Vec<&str> = match sub.as_str() {
                "infer" => vec![
                    "distgat",
                    "infer",
                    "--graph",
                    "g",
                    "--features",
                    "x",
                    "--model",
                    "m",
                    "--out",
                    "o",
                ],
                "run" => vec![
                    "distgat",
                    "run",
                    "--graph",
                    "g",
                    "--features",
                    "x",
                    "--model",
                    "m",
                    "--out",
                    "o",
                ],
                "submit" => vec![
                    "distgat",
                    "submit",
                    "--graph",
                    "g",
                    "--features",
                    "x",
                    "--model",
                    "m",
                ],
                other => panic!("add {other} to this test"),
            };
            for extra in [
                vec!["--normalize-features"],
                vec!["--normalize-features", "row"],
                vec!["--normalize-features", "none"],
            ] {
                let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
                let parsed = Cli::try_parse_from(&args);
                assert!(parsed.is_ok(), "{sub} {extra:?}: {:?}", parsed.err());
            }
            let bad: Vec<&str> = base
                .iter()
                .copied()
                .chain(["--normalize-features", "col"])
                .collect();
            assert!(Cli::try_parse_from(&bad).is_err(), "{sub}: accepted col");
        }
    }
}
