//! distgat's fuzz targets: one function per parser that takes outside bytes.
//!
//! The cargo-fuzz binaries in `fuzz/` call these functions with the fuzzer's input, and
//! `tests/replay.rs` calls them with every file of `fuzz/corpus/<target>/`, so the corpora
//! run as ordinary tests in `cargo test --workspace` (stable, no cargo-fuzz).
//!
//! The property of every target: the parser returns `Ok` or `Err` for any bytes; it never
//! panics, hangs or allocates without bound (a header that claims 10^12 rows is an error,
//! not an out-of-memory abort). Parsers that take a path get the input written to a file
//! in a per-thread temporary directory (on `/dev/shm` when there is one).

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use distgat_attention::Model;
use distgat_graph::{read_graph, Features, GraphFormat, NpyBody};
use distgat_neighbours::Points;
use distgat_partition::PartitionDir;
use distgat_proto::v1;
use prost::Message;

/// A target: any bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its `fuzz/corpus/<name>` directory and of its
/// cargo-fuzz binary).
pub const TARGETS: &[(&str, Target)] = &[
    ("npy_features", npy_features),
    ("npy_edges", npy_edges),
    ("npy_points", npy_points),
    ("edgelist", edgelist),
    ("metis", metis),
    ("mtx", mtx),
    ("model_json", model_json),
    ("safetensors", safetensors),
    ("partition_manifest", partition_manifest),
    ("partition_shard", partition_shard),
    ("proto_coordinator", proto_coordinator),
    ("proto_worker", proto_worker),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

// ---- Fixtures: small valid files the targets put beside the fuzzed one.

/// A `pyg-attention-model-v1` model (GATConv with residual and edge_dim) and its weights.
const PYG_MODEL_JSON: &[u8] =
    include_bytes!("../../../reference/gat-residual-edge-n120/model.json");
const PYG_MODEL_WEIGHTS: &[u8] =
    include_bytes!("../../../reference/gat-residual-edge-n120/model.safetensors");
/// A `gat-model-v1` model's two weight files.
const V1_LAYER0: &[u8] = include_bytes!("../../../reference/quirks-n40-loops/layer0.safetensors");
const V1_LAYER1: &[u8] = include_bytes!("../../../reference/quirks-n40-loops/layer1.safetensors");
/// A partition directory of quirks-n40-loops in 2 parts with features in the shards
/// (`fuzz/fixtures/partition`, made by `distgat partition`).
const PART_MANIFEST: &[u8] = include_bytes!("../../../fuzz/fixtures/partition/manifest.json");
const PART_ASSIGNMENT: &[u8] = include_bytes!("../../../fuzz/fixtures/partition/assignment.npy");
const PART_SHARD0: &[u8] =
    include_bytes!("../../../fuzz/fixtures/partition/part-00000.safetensors");
const PART_SHARD1: &[u8] =
    include_bytes!("../../../fuzz/fixtures/partition/part-00001.safetensors");

thread_local! {
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// This thread's scratch directory, made once (with the fixed files every target needs).
fn scratch() -> PathBuf {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            let shm = Path::new("/dev/shm");
            let dir = if shm.is_dir() {
                tempfile::Builder::new()
                    .prefix("distgat-fuzz")
                    .tempdir_in(shm)
            } else {
                tempfile::Builder::new().prefix("distgat-fuzz").tempdir()
            }
            .expect("a scratch directory");
            let p = dir.path();
            for (name, bytes) in [
                ("model/model.safetensors", PYG_MODEL_WEIGHTS),
                ("model/layer0.safetensors", V1_LAYER0),
                ("model/layer1.safetensors", V1_LAYER1),
                ("weights/model.json", PYG_MODEL_JSON),
                ("manifest/assignment.npy", PART_ASSIGNMENT),
                ("manifest/part-00000.safetensors", PART_SHARD0),
                ("manifest/part-00001.safetensors", PART_SHARD1),
                ("shard/assignment.npy", PART_ASSIGNMENT),
                ("shard/part-00001.safetensors", PART_SHARD1),
            ] {
                let path = p.join(name);
                std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
                std::fs::write(path, bytes).expect("a fixture");
            }
            *s = Some(dir);
        }
        s.as_ref().expect("made above").path().to_path_buf()
    })
}

/// Writes `data` to `name` in the scratch directory and returns its path.
fn put(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("writing the fuzz input");
    path
}

// ---- npy.

/// Node features and edge attributes (`[N, F]` f32/f64), and a reference output read as
/// f64.
pub fn npy_features(data: &[u8]) {
    let path = put("x.npy", data);
    if let Ok(f) = Features::read_npy(&path) {
        assert_eq!(f.values.len(), f.num_nodes * f.width);
        assert!(f.values.iter().all(|v| v.is_finite()));
    }
    let _ = Features::read_edge_npy_for(&path, 3, Path::new("graph.npy"));
    if let Ok(body) = NpyBody::open(&path) {
        let len = body.len();
        if let Ok(v) = body.read_f64(&path) {
            assert_eq!(v.len(), len);
        }
    }
}

/// Edge index `[2, E]` int32/int64 (`read_graph` in npy format).
pub fn npy_edges(data: &[u8]) {
    let path = put("edge_index.npy", data);
    if let Ok(edges) = read_graph(&path, Some(GraphFormat::Npy)) {
        assert_eq!(edges.src().len(), edges.dst().len());
    }
}

/// Points `[N, D]` f32/f64 (`distgat neighbours --points`).
pub fn npy_points(data: &[u8]) {
    let path = put("points.npy", data);
    if let Ok(p) = Points::read_npy(&path) {
        assert_eq!(p.values().len(), p.len() * p.dim());
    }
}

// ---- Text graph formats.

fn text_graph(name: &str, format: GraphFormat, data: &[u8]) {
    let path = put(name, data);
    if let Ok(edges) = read_graph(&path, Some(format)) {
        assert_eq!(edges.src().len(), edges.dst().len());
        // What every caller does next: the ids against the node count the file implies.
        let _ = edges.check_ids(edges.num_nodes, &path, "the graph file");
    }
}

/// Text edge lists (whitespace- or comma-separated `src dst` lines).
pub fn edgelist(data: &[u8]) {
    text_graph("graph.txt", GraphFormat::EdgeList, data)
}

/// METIS `.graph`.
pub fn metis(data: &[u8]) {
    text_graph("graph.graph", GraphFormat::Metis, data)
}

/// Matrix Market `.mtx`.
pub fn mtx(data: &[u8]) {
    text_graph("graph.mtx", GraphFormat::MatrixMarket, data)
}

// ---- Models.

/// The model JSON varies; beside it are valid weights (`model.safetensors` of a
/// pyg-attention-model-v1 model, `layer0/1.safetensors` of a gat-model-v1 model).
pub fn model_json(data: &[u8]) {
    let dir = scratch().join("model");
    let path = dir.join("model.json");
    std::fs::write(&path, data).expect("writing the fuzz input");
    let _ = Model::load(&path);
}

/// The safetensors bytes vary under a fixed pyg-attention-model-v1 model JSON.
pub fn safetensors(data: &[u8]) {
    let dir = scratch().join("weights");
    std::fs::write(dir.join("model.safetensors"), data).expect("writing the fuzz input");
    let _ = Model::load(&dir.join("model.json"));
}

// ---- Partition directories.

/// The manifest varies beside a valid assignment and shards; every shard it lists (up to
/// 8) is loaded.
pub fn partition_manifest(data: &[u8]) {
    let dir = scratch().join("manifest");
    std::fs::write(dir.join("manifest.json"), data).expect("writing the fuzz input");
    let Ok(p) = PartitionDir::open(&dir) else {
        return;
    };
    let _ = p.load_assignment();
    for part in 0..p.manifest.parts.min(8) {
        let _ = p.load_shard(part as u32);
    }
}

/// Shard 0 varies; the fixed manifest is patched with its size and BLAKE3 (which the
/// loader checks first), so the fuzzer reaches the shard's parser.
pub fn partition_shard(data: &[u8]) {
    let dir = scratch().join("shard");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(PART_MANIFEST).expect("the fixture manifest");
    let shard = &mut manifest["shards"][0];
    shard["bytes"] = data.len().into();
    shard["blake3"] = blake3::hash(data).to_hex().to_string().into();
    let file = shard["file"]
        .as_str()
        .expect("a shard file name")
        .to_string();
    std::fs::write(dir.join(&file), data).expect("writing the fuzz input");
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).expect("JSON"),
    )
    .expect("writing the manifest");
    let p = PartitionDir::open(&dir).expect("the fixture manifest opens");
    if let Ok(shard) = p.load_shard(0) {
        if let Some(f) = &shard.features {
            assert_eq!(f.values.len(), f.num_nodes * f.width);
        }
    }
}

// ---- Protobuf messages.

/// Decodes `bytes` as `M`; if it decodes, re-encoding and decoding again gives the same
/// bytes (prost's round trip; compared as bytes, since a NaN field is not equal to itself).
fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    let once = m.encode_to_vec();
    let again = M::decode(once.as_slice()).expect("prost decodes its own encoding");
    assert_eq!(again.encode_to_vec(), once, "prost round trip");
    Some(m)
}

/// The first byte picks a message of the client API (coordinator service) and the rest
/// is decoded as it: RegisterGraph, UploadGraph chunks, SubmitJob, FetchOutput,
/// FetchAttention, CreatePartition, FetchEdges, GetJob, Delete*, CancelJob, the workers'
/// RegisterWorker/Heartbeat and their OutputChunk stream.
pub fn proto_coordinator(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 14 {
        0 => {
            if let Some(m) = decode::<v1::RegisterGraphRequest>(bytes) {
                // A neighbourhood spec is checked as the workers check it.
                if m.neighbourhood.is_some() {
                    let _ = distgat_runtime::fuzzing::neighbour_spec(m.neighbourhood.as_ref());
                }
            }
        }
        1 => {
            let _ = decode::<v1::UploadGraphChunk>(bytes);
        }
        2 => {
            let _ = decode::<v1::SubmitJobRequest>(bytes);
        }
        3 => {
            let _ = decode::<v1::FetchOutputRequest>(bytes);
        }
        4 => {
            let _ = decode::<v1::FetchAttentionRequest>(bytes);
        }
        5 => {
            let _ = decode::<v1::CreatePartitionRequest>(bytes);
        }
        6 => {
            let _ = decode::<v1::FetchEdgesRequest>(bytes);
        }
        7 => {
            let _ = decode::<v1::GetJobRequest>(bytes);
        }
        8 => {
            let _ = decode::<v1::DeleteJobRequest>(bytes);
            let _ = decode::<v1::DeleteGraphRequest>(bytes);
            let _ = decode::<v1::DeletePartitionRequest>(bytes);
        }
        9 => {
            let _ = decode::<v1::CancelJobRequest>(bytes);
        }
        10 => {
            let _ = decode::<v1::RegisterWorkerRequest>(bytes);
        }
        11 => {
            let _ = decode::<v1::HeartbeatRequest>(bytes);
        }
        12 => {
            let _ = decode::<v1::OutputChunk>(bytes);
        }
        _ => {
            let _ = decode::<v1::BuildNeighboursRequest>(bytes);
        }
    }
}

/// The first byte picks a message a worker receives (RowChunk, BuildChunk,
/// FetchPointsRequest, StartJobRequest, RunJobRequest) and the second the point dimension
/// (1..=4); the rest is decoded and checked as the worker checks it.
pub fn proto_worker(data: &[u8]) {
    let [which, dim, bytes @ ..] = data else {
        return;
    };
    let dim = 1 + usize::from(*dim % 4);
    match which % 5 {
        0 => {
            let _ = decode::<v1::RowChunk>(bytes);
        }
        1 => {
            let Some(chunk) = decode::<v1::BuildChunk>(bytes) else {
                return;
            };
            match chunk.body {
                Some(v1::build_chunk::Body::Header(h)) => {
                    let _ = distgat_runtime::fuzzing::neighbour_spec(h.spec.as_ref());
                    for b in &h.boxes {
                        let _ = distgat_runtime::fuzzing::part_box(b, dim);
                    }
                }
                Some(v1::build_chunk::Body::Points(p)) => {
                    let n = p.ids.len();
                    if let Ok(taken) = distgat_runtime::fuzzing::point_chunk(p, dim, 1 << 20) {
                        assert_eq!(taken, n);
                    }
                }
                Some(v1::build_chunk::Body::Held(h)) => {
                    if let Ok(lists) =
                        distgat_runtime::fuzzing::held_part(vec![h], 64, 1 << 20, dim)
                    {
                        assert!(lists.edge_base.len() <= 64 && lists.halo.len() <= 1 << 20);
                    }
                }
                None => {}
            }
        }
        2 => {
            if let Some(req) = decode::<v1::FetchPointsRequest>(bytes) {
                let _ = distgat_runtime::fuzzing::fetch_points(&req, dim);
            }
        }
        3 => {
            let _ = decode::<v1::StartJobRequest>(bytes);
        }
        _ => {
            let _ = decode::<v1::RunJobRequest>(bytes);
        }
    }
}
