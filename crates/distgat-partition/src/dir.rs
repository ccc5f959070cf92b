//! The partition directory: written once by `distgat partition`, reused by many jobs.
//!
//! ```text
//! DIR/manifest.json          format version, graph/features fingerprints, method, stats,
//!                            and size + BLAKE3 of every other file
//! DIR/assignment.npy         int32 [N]: the part of every node
//! DIR/part-00000.safetensors one shard per part: its halo plan (and feature rows)
//! ```
//!
//! The directory is assembled under a temporary name next to its destination and renamed
//! into place, so it is either complete or absent. Every load checks the manifest's
//! format version, each file's size and checksum, and that the shard belongs to the
//! manifest's graph; a shard loads without reading the graph or the other shards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use distgat_graph::{write_npy, EdgeList, Features, GraphFormat};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::error::{PartitionError, Result};
use crate::method::Method;
use crate::plan::{HaloPlan, PartPlan};
use crate::stats::PartitionStats;
use crate::tensors::{ReadError, ShardTensors, TensorData};

pub const PARTITION_FORMAT: &str = "distgat-partition-v1";
const MANIFEST: &str = "manifest.json";
const ASSIGNMENT: &str = "assignment.npy";
const SHARD_META_KEY: &str = "distgat";

#[derive(Debug, Serialize, Deserialize)]
struct ShardMeta {
    format: String,
    part: u32,
    parts: usize,
    graph_fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub created_by: String,
    pub graph: InputInfo,
    pub features: Option<InputInfo>,
    /// Edge attributes (`[E, D]`, PyG's `edge_attr`) the shards carry for their local
    /// edges, if the partition was made with them (`rows` = E, `size` = D).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_features: Option<InputInfo>,
    /// Whether shards carry their owned feature rows (otherwise workers read them from
    /// the features file by global id).
    pub features_in_shards: bool,
    pub parts: usize,
    pub method: Method,
    pub assignment: FileInfo,
    pub shards: Vec<ShardInfo>,
    pub stats: PartitionStats,
    pub report: RunInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputInfo {
    pub path: String,
    pub rows: usize,
    /// Edges for a graph, columns for features.
    pub size: usize,
    /// BLAKE3 of the content (ids or values), independent of the file format.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    pub file: String,
    pub bytes: u64,
    pub blake3: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub part: u32,
    pub owned: usize,
    pub halo: usize,
    pub entries: usize,
    #[serde(flatten)]
    pub file: FileInfo,
}

/// How long partitioning took and how much memory it needed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunInfo {
    pub seconds: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// BLAKE3 of a graph's node count and edges (sources, then targets, as LE u64).
pub fn graph_fingerprint(edges: &EdgeList, num_nodes: usize) -> String {
    let mut h = graph_hasher(num_nodes, edges.len() as u64);
    for ids in [edges.src(), edges.dst()] {
        hash_le(&mut h, ids, |v, out| {
            out.extend_from_slice(&v.to_le_bytes())
        });
    }
    h.finalize().to_hex().to_string()
}

/// [`graph_fingerprint`] of the `.npy` edge index `path` of `num_nodes` nodes, straight
/// from the file's bytes when they are exactly the fingerprint's input: an int64
/// (little-endian) C-order `[2, E]` body is the sources, then the targets, as
/// little-endian u64. Streamed in 16 MiB blocks, hashed on the rayon pool. The ids are not
/// checked (a negative id hashes as its bits): equal to a fingerprint taken of a read
/// graph means the same ids. `None` for any other `.npy` (int32, Fortran order, another
/// shape): read it. Errors: the file cannot be opened, parsed or read (naming it).
pub fn npy_graph_fingerprint(path: &Path, num_nodes: usize) -> Result<Option<String>> {
    let body = distgat_graph::NpyBody::open(path)?;
    if body.dtype != distgat_graph::NpyDtype::I64
        || body.fortran_order
        || body.shape.len() != 2
        || body.shape[0] != 2
    {
        return Ok(None);
    }
    let mut h = graph_hasher(num_nodes, body.shape[1]);
    body.for_each_bytes_block(path, |block| {
        h.update_rayon(block);
        Ok(())
    })?;
    Ok(Some(h.finalize().to_hex().to_string()))
}

/// A graph fingerprint's hasher after the node and edge counts: the sources, then the
/// targets, as little-endian u64, follow.
fn graph_hasher(num_nodes: usize, num_edges: u64) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    h.update(b"distgat-graph-v1");
    h.update(&(num_nodes as u64).to_le_bytes());
    h.update(&num_edges.to_le_bytes());
    h
}

/// BLAKE3 of a feature matrix's shape and values (LE f32).
pub fn features_fingerprint(features: &Features) -> String {
    let mut h = features_hasher(features.num_nodes, features.width);
    hash_le(&mut h, &features.values, |v, out| {
        out.extend_from_slice(&v.to_le_bytes())
    });
    h.finalize().to_hex().to_string()
}

/// A features fingerprint's hasher after the shape: `[num_nodes, width]`'s values follow.
fn features_hasher(num_nodes: usize, width: usize) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    h.update(b"distgat-features-v1");
    h.update(&(num_nodes as u64).to_le_bytes());
    h.update(&(width as u64).to_le_bytes());
    h
}

/// What [`features_file_fingerprint`] learns in its pass over a features file.
#[derive(Debug, Clone, PartialEq)]
pub struct FeaturesScan {
    /// [`features_fingerprint`] of the file's matrix.
    pub fingerprint: String,
    /// `[num_nodes, width]`.
    pub num_nodes: usize,
    pub width: usize,
    /// The smallest value (`+inf` when there are none), for row normalisation.
    pub min_value: f32,
}

/// [`features_fingerprint`] of the float32 or float64 `[N, F]` `.npy` at `path`, without
/// holding it: one pass of bounded memory (about 16 MiB blocks) with the checks and errors
/// of [`Features::read_npy`] (`what` names the file in them: "features", "edge features").
/// Equal to `features_fingerprint(&Features::read_npy(path)?)` since BLAKE3 digests a
/// stream the same however it is split.
///
/// `stop` is read before each block: once it is set the pass ends with an I/O error of
/// kind `Interrupted` naming the file (a caller that no longer needs the answer, such as a
/// failed or cancelled job, sets it rather than wait for the rest of the file).
pub fn features_file_fingerprint(
    path: &Path,
    what: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<FeaturesScan> {
    let blocks = Features::blocks(path, what)?;
    let (num_nodes, width) = (blocks.num_rows(), blocks.width());
    let mut h = features_hasher(num_nodes, width);
    let mut min_value = f32::INFINITY;
    blocks.for_each(|_, values| {
        stopped(path, stop)?;
        min_value = values.iter().copied().fold(min_value, f32::min);
        hash_le(&mut h, values, |v, out| {
            out.extend_from_slice(&v.to_le_bytes())
        });
        Ok(())
    })?;
    Ok(FeaturesScan {
        fingerprint: h.finalize().to_hex().to_string(),
        num_nodes,
        width,
        min_value,
    })
}

/// [`features_fingerprint`] of the float32 or float64 `[N, F]` `.npy` at `path`, with
/// `[N, F]`, in one bounded pass like [`features_file_fingerprint`], for comparing with a
/// recorded fingerprint: a float32 C-order file's bytes are hashed as they are, with no
/// value converted or checked finite (a recorded fingerprint is of a checked matrix, so a
/// file with a NaN never matches one). `stop` as in [`features_file_fingerprint`].
pub fn features_file_digest(
    path: &Path,
    what: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(String, usize, usize)> {
    let blocks = Features::blocks(path, what)?;
    let (num_nodes, width) = (blocks.num_rows(), blocks.width());
    let mut h = features_hasher(num_nodes, width);
    blocks.for_each_le_bytes(|bytes| {
        stopped(path, stop)?;
        h.update_rayon(bytes);
        Ok(())
    })?;
    Ok((h.finalize().to_hex().to_string(), num_nodes, width))
}

/// An `Interrupted` I/O error naming `path` once `stop` is set.
fn stopped(path: &Path, stop: &std::sync::atomic::AtomicBool) -> distgat_graph::Result<()> {
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(distgat_graph::GraphError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::Interrupted, "check stopped"),
        ));
    }
    Ok(())
}

/// Feeds `values` to `h` as their little-endian bytes. On a little-endian machine that is
/// their memory, hashed in place on rayon's threads (BLAKE3 is a tree hash: the digest does
/// not depend on how the input is split); elsewhere each value is converted (`le`) first.
fn hash_le<T: bytemuck::Pod>(h: &mut blake3::Hasher, values: &[T], le: impl Fn(&T, &mut Vec<u8>)) {
    if cfg!(target_endian = "little") {
        h.update_rayon(bytemuck::cast_slice(values));
    } else {
        let mut bytes = Vec::new();
        for chunk in values.chunks(8192) {
            bytes.clear();
            chunk.iter().for_each(|v| le(v, &mut bytes));
            h.update(&bytes);
        }
    }
}

/// What goes into a new partition directory.
pub struct NewPartition<'a> {
    pub graph: InputInfo,
    pub features: Option<(InputInfo, &'a Features)>,
    pub features_in_shards: bool,
    /// Edge attributes `[E, D]`: each shard keeps the rows of its local edges.
    pub edge_features: Option<(InputInfo, &'a Features)>,
    pub method: Method,
    pub assignment: &'a [u32],
    pub plan: &'a HaloPlan,
    pub stats: PartitionStats,
    pub report: RunInfo,
}

/// Writes a partition directory at `dir`. An existing directory is replaced only if it
/// holds the same partition (same inputs, parts and method) or `force` is set.
pub fn write_partition(dir: &Path, new: NewPartition<'_>, force: bool) -> Result<Manifest> {
    let parent = distgat_graph::parent_dir(dir);
    if !parent.is_dir() {
        return Err(PartitionError::directory(
            dir,
            format!("the parent directory {} does not exist", parent.display()),
        ));
    }
    // Refuse what can never be replaced before doing any work.
    if dir.exists() && !dir.is_dir() {
        return Err(PartitionError::directory(
            dir,
            "exists and is not a directory",
        ));
    }

    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempdir_in(&parent)
        .map_err(|e| PartitionError::io(dir, e))?;
    let tdir = temp.path();

    let assignment: Vec<i32> = new.assignment.iter().map(|&p| p as i32).collect();
    write_npy(
        &tdir.join(ASSIGNMENT),
        &[assignment.len() as u64],
        &assignment,
    )?;
    let assignment = file_info(&tdir.join(ASSIGNMENT))?;

    let mut shards = Vec::with_capacity(new.plan.parts.len());
    for part in &new.plan.parts {
        let file = format!("part-{:05}.safetensors", part.part);
        let rows = match (&new.features, new.features_in_shards) {
            (Some((_, f)), true) => Some(feature_rows(f, &part.owned)),
            _ => None,
        };
        let edge_rows = new
            .edge_features
            .as_ref()
            .map(|(_, ea)| (edge_rows(ea, &part.edge_id), ea.width));
        write_shard(
            &tdir.join(&file),
            part,
            new.plan.parts.len(),
            &new.graph.fingerprint,
            rows.as_ref()
                .map(|r| (r, new.features.as_ref().map_or(0, |f| f.1.width))),
            edge_rows.as_ref().map(|(r, w)| (r, *w)),
        )?;
        shards.push(ShardInfo {
            part: part.part,
            owned: part.owned.len(),
            halo: part.halo.len(),
            entries: part.num_entries(),
            file: file_info(&tdir.join(&file))?,
        });
    }
    let manifest = Manifest {
        format: PARTITION_FORMAT.to_string(),
        created_by: format!("distgat {}", env!("CARGO_PKG_VERSION")),
        graph: new.graph,
        features: new.features.map(|(info, _)| info),
        edge_features: new.edge_features.map(|(info, _)| info),
        features_in_shards: new.features_in_shards,
        parts: new.plan.parts.len(),
        method: new.method,
        assignment,
        shards,
        stats: new.stats,
        report: new.report,
    };
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    std::fs::write(tdir.join(MANIFEST), json + "\n")
        .map_err(|e| PartitionError::io(&tdir.join(MANIFEST), e))?;

    // Decide about an existing directory now that the new manifest is complete; on refusal
    // the temporary directory is removed when `temp` drops.
    let replace = check_existing(dir, &manifest, force)?;
    // Swap into place: old directory aside, new one in, old one removed. A rename onto an
    // empty directory replaces it.
    if replace {
        let aside = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &aside).map_err(|e| PartitionError::io(dir, e))?;
        if let Err(e) = std::fs::rename(temp.path(), dir) {
            let _ = std::fs::rename(&aside, dir);
            return Err(PartitionError::io(dir, e));
        }
        let _ = std::fs::remove_dir_all(&aside);
    } else {
        std::fs::rename(temp.path(), dir).map_err(|e| PartitionError::io(dir, e))?;
    }
    // The temporary path no longer exists; keep `temp` from trying to delete it.
    let _ = temp.keep();
    Ok(manifest)
}

/// Whether an existing `dir` must be moved aside (true) or is absent or empty (false).
/// Refuses to replace a different partition without `force`, and anything that is not a
/// partition directory at all, even with `force`.
fn check_existing(dir: &Path, new: &Manifest, force: bool) -> Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    if !dir.is_dir() {
        return Err(PartitionError::directory(
            dir,
            "exists and is not a directory",
        ));
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| PartitionError::io(dir, e))?;
    if entries.next().is_none() {
        return Ok(false);
    }
    let manifest_path = dir.join(MANIFEST);
    let Ok(text) = std::fs::read_to_string(&manifest_path) else {
        return Err(PartitionError::directory(
            dir,
            "exists, is not empty and holds no partition manifest: refusing to replace it \
             (even with --force); choose another --out",
        ));
    };
    if force {
        return Ok(true);
    }
    let same = serde_json::from_str::<Manifest>(&text).is_ok_and(|m| {
        m.graph.fingerprint == new.graph.fingerprint
            && m.features.as_ref().map(|f| &f.fingerprint)
                == new.features.as_ref().map(|f| &f.fingerprint)
            && m.edge_features.as_ref().map(|f| &f.fingerprint)
                == new.edge_features.as_ref().map(|f| &f.fingerprint)
            && m.features_in_shards == new.features_in_shards
            && m.parts == new.parts
            && m.method == new.method
            && m.assignment.blake3 == new.assignment.blake3
    });
    if !same {
        return Err(PartitionError::directory(
            dir,
            "already holds a different partition (other graph, features, parts, method or \
             assignment); choose another --out or pass --force to replace it",
        ));
    }
    Ok(true)
}

fn file_info(path: &Path) -> Result<FileInfo> {
    let bytes = distgat_graph::read_regular_file(path).map_err(|e| PartitionError::io(path, e))?;
    Ok(FileInfo {
        file: path
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .into_owned(),
        bytes: bytes.len() as u64,
        blake3: blake3::hash(&bytes).to_hex().to_string(),
    })
}

fn feature_rows(features: &Features, owned: &[u64]) -> Vec<f32> {
    let mut rows = Vec::with_capacity(owned.len() * features.width);
    for &v in owned {
        rows.extend_from_slice(features.row(v as usize));
    }
    rows
}

/// The edge attribute rows of a shard's local entries, in entry order.
fn edge_rows(edge_attr: &Features, edge_id: &[u64]) -> Vec<f32> {
    let mut rows = Vec::with_capacity(edge_id.len() * edge_attr.width);
    for &e in edge_id {
        rows.extend_from_slice(edge_attr.row(e as usize));
    }
    rows
}

fn le_bytes<T: Copy, const W: usize>(values: &[T], f: impl Fn(T) -> [u8; W]) -> Vec<u8> {
    values.iter().flat_map(|&v| f(v)).collect()
}

fn write_shard(
    path: &Path,
    part: &PartPlan,
    parts: usize,
    graph_fingerprint: &str,
    features: Option<(&Vec<f32>, usize)>,
    edge_attr: Option<(&Vec<f32>, usize)>,
) -> Result<()> {
    let to_i64 = |v: &[u64]| le_bytes(v, |x| (x as i64).to_le_bytes());
    let to_u32 = |v: &[u32]| le_bytes(v, u32::to_le_bytes);
    let mut send_ptr = vec![0u64];
    let mut send_rows = Vec::new();
    for (_, rows) in &part.send {
        send_rows.extend_from_slice(rows);
        send_ptr.push(send_rows.len() as u64);
    }
    let send_peer: Vec<u32> = part.send.iter().map(|(q, _)| *q).collect();
    let mut tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
        (
            "owned",
            Dtype::I64,
            vec![part.owned.len()],
            to_i64(&part.owned),
        ),
        (
            "halo",
            Dtype::I64,
            vec![part.halo.len()],
            to_i64(&part.halo),
        ),
        (
            "halo_owner",
            Dtype::U32,
            vec![part.halo_owner.len()],
            to_u32(&part.halo_owner),
        ),
        (
            "row_ptr",
            Dtype::I64,
            vec![part.row_ptr.len()],
            to_i64(&part.row_ptr),
        ),
        ("col", Dtype::U32, vec![part.col.len()], to_u32(&part.col)),
        (
            "edge_id",
            Dtype::I64,
            vec![part.edge_id.len()],
            to_i64(&part.edge_id),
        ),
        (
            "send_peer",
            Dtype::U32,
            vec![send_peer.len()],
            to_u32(&send_peer),
        ),
        (
            "send_ptr",
            Dtype::I64,
            vec![send_ptr.len()],
            to_i64(&send_ptr),
        ),
        (
            "send_rows",
            Dtype::U32,
            vec![send_rows.len()],
            to_u32(&send_rows),
        ),
    ];
    if let Some((rows, width)) = features {
        tensors.push((
            "features",
            Dtype::F32,
            vec![part.owned.len(), width],
            le_bytes(rows, f32::to_le_bytes),
        ));
    }
    if let Some((rows, width)) = edge_attr {
        tensors.push((
            "edge_attr",
            Dtype::F32,
            vec![part.col.len(), width],
            le_bytes(rows, f32::to_le_bytes),
        ));
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| {
                    PartitionError::directory(path, format!("internal: tensor {name}: {e:?}"))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    // One metadata key holding a JSON object: safetensors writes its metadata map in hash
    // order, so several keys would make identical shards differ byte for byte.
    let shard_meta = ShardMeta {
        format: PARTITION_FORMAT.to_string(),
        part: part.part,
        parts,
        graph_fingerprint: graph_fingerprint.to_string(),
    };
    let metadata: HashMap<String, String> = [(
        SHARD_META_KEY.to_string(),
        serde_json::to_string(&shard_meta).expect("shard metadata serialises"),
    )]
    .into_iter()
    .collect();
    safetensors::serialize_to_file(views, &Some(metadata), path)
        .map_err(|e| PartitionError::directory(path, format!("writing the shard: {e:?}")))
}

/// A partition directory opened for reading.
#[derive(Debug, Clone)]
pub struct PartitionDir {
    pub path: PathBuf,
    pub manifest: Manifest,
}

/// Whether [`PartitionDir::load_shard_with`] keeps the shard's `edge_id` tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeIds {
    /// `plan.edge_id` holds each entry's input edge.
    Keep,
    /// `plan.edge_id` is empty (the tensor is verified, not kept).
    Skip,
}

/// A loaded shard: the part's plan and, if the shard carries them, its feature rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub plan: PartPlan,
    /// `[owned, width]` row-major, in `plan.owned` order.
    pub features: Option<Features>,
    /// `[entries, D]` row-major: the edge attributes of the local CSR entries, in entry
    /// order (`plan.edge_id` names each entry's input edge).
    pub edge_attr: Option<Features>,
}

impl PartitionDir {
    pub fn open(path: &Path) -> Result<Self> {
        let manifest_path = path.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| PartitionError::io(&manifest_path, e))?;
        Self::from_manifest(path, &text)
    }

    /// A partition known only by its manifest's text (a worker that receives its shard
    /// over the network); `path` names it in errors. Checked as [`PartitionDir::open`]
    /// checks a manifest file.
    pub fn from_manifest(path: &Path, text: &str) -> Result<Self> {
        let manifest_path = path.join(MANIFEST);
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            PartitionError::directory(&manifest_path, format!("not valid JSON: {e}"))
        })?;
        let format = value
            .get("format")
            .and_then(|f| f.as_str())
            .unwrap_or("<missing>");
        if format != PARTITION_FORMAT {
            return Err(PartitionError::directory(
                &manifest_path,
                format!("format is \"{format}\", this distgat reads \"{PARTITION_FORMAT}\": re-run distgat partition"),
            ));
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| {
            PartitionError::directory(&manifest_path, format!("not a valid manifest: {e}"))
        })?;
        if manifest.shards.len() != manifest.parts {
            return Err(PartitionError::directory(
                &manifest_path,
                format!(
                    "lists {} shards for {} parts",
                    manifest.shards.len(),
                    manifest.parts
                ),
            ));
        }
        Ok(PartitionDir {
            path: path.to_path_buf(),
            manifest,
        })
    }

    /// Refuses a graph other than the one this directory was made from. A node id of
    /// `num_nodes` or more gets its own error (naming the id and the edge), not "another
    /// graph".
    pub fn check_graph(&self, edges: &EdgeList, num_nodes: usize) -> Result<()> {
        let beyond = |ids: &[u64]| ids.iter().position(|&v| v as usize >= num_nodes);
        for (row, ids) in [("source", edges.src()), ("target", edges.dst())] {
            if let Some(e) = beyond(ids) {
                return Err(PartitionError::invalid(
                    format!("edge {e}"),
                    format!(
                        "{row} node {} is beyond the graph's {num_nodes} nodes (ids 0..{num_nodes})",
                        ids[e]
                    ),
                ));
            }
        }
        let fp = graph_fingerprint(edges, num_nodes);
        self.check_graph_fingerprint(&fp, num_nodes, edges.len())
    }

    /// [`PartitionDir::check_graph`] for the graph file `path` (`format` as
    /// [`distgat_graph::read_graph`] takes it) of `num_nodes` nodes. An int64 C-order
    /// `.npy` edge index is fingerprinted from its bytes ([`npy_graph_fingerprint`]), with
    /// no edge list in memory (at 100M edges the edge list was 1.6 GB of fresh memory and
    /// about 4 s of `distgat run`); a match is the partition's own graph, validated when
    /// it was partitioned. Any other file, or a mismatch, is read whole (a mismatch is
    /// the error path: reading it lets a malformed file, such as an id beyond
    /// `num_nodes`, get its own error, not only "another graph"). Errors: the file cannot be read or parsed (naming it), or
    /// the partition was made from another graph.
    pub fn check_graph_file(
        &self,
        path: &Path,
        format: Option<GraphFormat>,
        num_nodes: usize,
    ) -> Result<()> {
        let npy = match format {
            Some(f) => f == GraphFormat::Npy,
            None => GraphFormat::from_path(path)? == GraphFormat::Npy,
        };
        if npy
            && npy_graph_fingerprint(path, num_nodes)?.as_ref()
                == Some(&self.manifest.graph.fingerprint)
        {
            return Ok(());
        }
        let edges = distgat_graph::read_graph(path, format)?;
        self.check_graph(&edges, num_nodes)
    }

    fn check_graph_fingerprint(&self, fp: &str, num_nodes: usize, num_edges: usize) -> Result<()> {
        if fp != self.manifest.graph.fingerprint {
            return Err(PartitionError::directory(
                &self.path,
                format!(
                    "was made from another graph ({} nodes, {} edges, fingerprint {}, from {}); \
                     this one has {num_nodes} nodes, {} edges, fingerprint {}; name the graph \
                     the partition was made from, or partition this one",
                    self.manifest.graph.rows,
                    self.manifest.graph.size,
                    self.manifest.graph.fingerprint.get(..16).unwrap_or("?"),
                    self.manifest.graph.path,
                    num_edges,
                    fp.get(..16).unwrap_or("?"),
                ),
            ));
        }
        Ok(())
    }

    fn read_checked(&self, info: &FileInfo) -> Result<Vec<u8>> {
        let path = self.path.join(&info.file);
        let bytes =
            distgat_graph::read_regular_file(&path).map_err(|e| PartitionError::io(&path, e))?;
        check_bytes(&path, info, &bytes)?;
        Ok(bytes)
    }

    /// The manifest's record of `part`'s shard file (name, size, BLAKE3).
    pub fn shard_file(&self, part: u32) -> Result<&FileInfo> {
        self.manifest
            .shards
            .iter()
            .find(|s| s.part == part)
            .map(|s| &s.file)
            .ok_or_else(|| {
                PartitionError::directory(
                    &self.path,
                    format!("no shard for part {part} (parts: {})", self.manifest.parts),
                )
            })
    }
}

/// Checks `bytes` (the file `path`) against the manifest's size and BLAKE3 of it.
pub fn check_bytes(path: &Path, info: &FileInfo, bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 != info.bytes {
        return Err(size_mismatch(path, bytes.len() as u64, info));
    }
    let hash = blake3::hash(bytes).to_hex().to_string();
    if hash != info.blake3 {
        return Err(hash_mismatch(path, &hash, info));
    }
    Ok(())
}

fn size_mismatch(path: &Path, len: u64, info: &FileInfo) -> PartitionError {
    PartitionError::directory(
        path,
        format!(
            "is {len} bytes, the manifest says {} (truncated or replaced)",
            info.bytes
        ),
    )
}

fn hash_mismatch(path: &Path, hash: &str, info: &FileInfo) -> PartitionError {
    PartitionError::directory(
        path,
        format!(
            "checksum mismatch: BLAKE3 {}, the manifest says {} (corrupted)",
            &hash[..16],
            &info.blake3[..16.min(info.blake3.len())]
        ),
    )
}

impl PartitionDir {
    /// The node -> part map.
    pub fn load_assignment(&self) -> Result<Vec<u32>> {
        self.read_checked(&self.manifest.assignment)?;
        let path = self.path.join(&self.manifest.assignment.file);
        let values = distgat_graph::NpyBody::open(&path)?.read_i64(&path)?;
        values
            .into_iter()
            .map(|p| {
                if p < 0 || p as usize >= self.manifest.parts {
                    Err(PartitionError::directory(
                        &path,
                        format!("part {p} outside 0..{}", self.manifest.parts),
                    ))
                } else {
                    Ok(p as u32)
                }
            })
            .collect()
    }

    /// Loads and verifies the shard of `part`: its size and BLAKE3 against the manifest,
    /// then every structural check. Each tensor is read from the file straight into the
    /// array that keeps it ([`ShardTensors::read_file`]); a file whose header that reader
    /// does not take is read whole instead, which names the problem.
    pub fn load_shard(&self, part: u32) -> Result<Shard> {
        self.load_shard_with(part, EdgeIds::Keep)
    }

    /// [`PartitionDir::load_shard`], keeping `plan.edge_id` or not. With
    /// [`EdgeIds::Skip`] the `edge_id` tensor is read and hashed (the shard is verified
    /// whole) but not kept: `plan.edge_id` is empty. That is 8 bytes an entry of fresh
    /// memory saved (387 MB for a part of the 100M-edge graph) for a job that needs no
    /// edge ids (no attention coefficients, no edge attributes).
    pub fn load_shard_with(&self, part: u32, edge_ids: EdgeIds) -> Result<Shard> {
        let info = self.shard_file(part)?;
        let path = self.path.join(&info.file);
        let skip: &[&str] = match edge_ids {
            EdgeIds::Keep => &[],
            EdgeIds::Skip => &["edge_id"],
        };
        let tensors = match ShardTensors::read_file(&path, info.bytes, &info.blake3, skip) {
            Ok(t) => t,
            Err(ReadError::Io(e)) => return Err(PartitionError::io(&path, e)),
            Err(ReadError::Size(len)) => return Err(size_mismatch(&path, len, info)),
            Err(ReadError::Hash(hash)) => return Err(hash_mismatch(&path, &hash, info)),
            Err(ReadError::Header) => {
                let bytes = self.read_checked(info)?;
                return self.shard_from_bytes(part, &path, &bytes);
            }
        };
        self.shard_from_tensors(part, &path, tensors)
    }

    /// Parses the shard of `part` from `bytes` (whose size and BLAKE3 the caller checked
    /// with [`check_bytes`]), with every structural check of [`PartitionDir::load_shard`];
    /// `path` names it in errors.
    pub fn shard_from_bytes(&self, part: u32, path: &Path, bytes: &[u8]) -> Result<Shard> {
        let tensors = ShardTensors::from_bytes(bytes)
            .map_err(|e| PartitionError::directory(path, format!("not a valid shard: {e:?}")))?;
        self.shard_from_tensors(part, path, tensors)
    }

    fn shard_from_tensors(
        &self,
        part: u32,
        path: &Path,
        mut tensors: ShardTensors,
    ) -> Result<Shard> {
        let info = self
            .manifest
            .shards
            .iter()
            .find(|s| s.part == part)
            .ok_or_else(|| {
                PartitionError::directory(
                    &self.path,
                    format!("no shard for part {part} (parts: {})", self.manifest.parts),
                )
            })?;
        let bad = |detail: String| PartitionError::directory(path, detail);
        let meta: ShardMeta = tensors
            .metadata
            .get(SHARD_META_KEY)
            .and_then(|json| serde_json::from_str(json).ok())
            .ok_or_else(|| bad("not a distgat shard (no shard metadata)".into()))?;
        if meta.format != PARTITION_FORMAT {
            return Err(bad(format!(
                "shard format \"{}\", expected \"{PARTITION_FORMAT}\"",
                meta.format
            )));
        }
        if meta.part != part || meta.parts != self.manifest.parts {
            return Err(bad(format!(
                "holds part {} of {}, expected part {part} of {}",
                meta.part, meta.parts, self.manifest.parts
            )));
        }
        if meta.graph_fingerprint != self.manifest.graph.fingerprint {
            return Err(bad("belongs to another graph than the manifest's".into()));
        }
        let owned = tensors.u64s("owned").map_err(bad)?;
        let halo = tensors.u64s("halo").map_err(bad)?;
        let halo_owner = tensors.u32s("halo_owner").map_err(bad)?;
        let row_ptr = tensors.u64s("row_ptr").map_err(bad)?;
        let col = tensors.u32s("col").map_err(bad)?;
        // The entry count comes from the tensor's shape whether it was kept or skipped.
        let (edge_id, entries) = match tensors.tensors.get("edge_id").map(|t| &t.data) {
            Some(TensorData::Skipped) => (
                Vec::new(),
                tensors.count("edge_id", Dtype::I64).map_err(bad)?,
            ),
            _ => {
                let v = tensors.u64s("edge_id").map_err(bad)?;
                let n = v.len();
                (v, n)
            }
        };
        let send_peer = tensors.u32s("send_peer").map_err(bad)?;
        let send_ptr = tensors.u64s("send_ptr").map_err(bad)?;
        let send_rows = tensors.u32s("send_rows").map_err(bad)?;
        // Structural checks, so a worker never indexes out of bounds.
        let n_local = owned.len() + halo.len();
        let consistent = halo_owner.len() == halo.len()
            && row_ptr.len() == owned.len() + 1
            && row_ptr.first() == Some(&0)
            && row_ptr.windows(2).all(|w| w[0] <= w[1])
            && row_ptr.last() == Some(&(col.len() as u64))
            && entries == col.len()
            && col.iter().all(|&c| (c as usize) < n_local)
            && halo_owner
                .iter()
                .all(|&o| (o as usize) < self.manifest.parts && o != part)
            && send_ptr.len() == send_peer.len() + 1
            && send_ptr.first() == Some(&0)
            && send_ptr.windows(2).all(|w| w[0] <= w[1])
            && send_ptr.last() == Some(&(send_rows.len() as u64))
            && send_rows.iter().all(|&r| (r as usize) < owned.len())
            && owned.len() == info.owned
            && halo.len() == info.halo;
        if !consistent {
            return Err(bad(
                "inconsistent shard structure (index out of range or sizes disagree)".into(),
            ));
        }
        let send = send_peer
            .iter()
            .enumerate()
            .map(|(k, &q)| {
                (
                    q,
                    send_rows[send_ptr[k] as usize..send_ptr[k + 1] as usize].to_vec(),
                )
            })
            .collect();
        let features = match tensors.tensors.contains_key("features") {
            true => {
                let (shape, values) = tensors.f32s("features").map_err(bad)?;
                if shape.len() != 2 || shape[0] != owned.len() {
                    return Err(bad(format!(
                        "tensor 'features' has shape {shape:?}, expected [{}, F]",
                        owned.len()
                    )));
                }
                Some(Features::new(shape[0], shape[1], values))
            }
            false => None,
        };
        let edge_attr = match tensors.tensors.contains_key("edge_attr") {
            true => {
                let (shape, values) = tensors.f32s("edge_attr").map_err(bad)?;
                let want = self.manifest.edge_features.as_ref().map(|e| e.size);
                if shape.len() != 2 || shape[0] != entries || Some(shape[1]) != want {
                    return Err(bad(format!(
                        "tensor 'edge_attr' has shape {shape:?}, expected [{}, {}]",
                        entries,
                        want.map_or("D".to_string(), |w| w.to_string())
                    )));
                }
                Some(Features::new(shape[0], shape[1], values))
            }
            false if self.manifest.edge_features.is_some() => {
                return Err(bad(
                    "tensor 'edge_attr' is missing, but the manifest says the shards carry \
                     edge features"
                        .into(),
                ))
            }
            false => None,
        };
        Ok(Shard {
            plan: PartPlan {
                part,
                owned,
                halo,
                halo_owner,
                row_ptr,
                col,
                edge_id,
                send,
            },
            features,
            edge_attr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.npy` with a hand-written header (for float64 and Fortran order).
    fn raw_npy(path: &Path, descr: &str, fortran: bool, shape: (usize, usize), body: &[u8]) {
        let dict = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({}, {}), }}",
            if fortran { "True" } else { "False" },
            shape.0,
            shape.1
        );
        let mut header = dict.into_bytes();
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(body);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn file_fingerprint_equals_the_fingerprint_of_the_whole_matrix() {
        let dir = tempfile::tempdir().unwrap();
        // Rows of just over 8 MiB: the streaming pass reads one row per block, so it
        // crosses block boundaries.
        let (n, f) = (3usize, (1usize << 21) + 3);
        let values: Vec<f32> = (0..n * f).map(|i| (i % 1013) as f32 * 0.25 - 7.0).collect();
        let c32 = dir.path().join("c32.npy");
        write_npy(&c32, &[n as u64, f as u64], &values).unwrap();
        let c64 = dir.path().join("c64.npy");
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|&v| (v as f64).to_le_bytes())
            .collect();
        raw_npy(&c64, "<f8", false, (n, f), &bytes);
        // Fortran order: column-major bytes of the same matrix.
        let (fn_, ff) = (5usize, 3usize);
        let small: Vec<f32> = (0..fn_ * ff).map(|i| i as f32 - 4.5).collect();
        let fortran = dir.path().join("fortran.npy");
        let column_major: Vec<u8> = (0..ff)
            .flat_map(|c| (0..fn_).map(move |r| (r, c)))
            .flat_map(|(r, c)| small[r * ff + c].to_le_bytes())
            .collect();
        raw_npy(&fortran, "<f4", true, (fn_, ff), &column_major);

        for (path, rows, width, min) in [
            (&c32, n, f, -7.0f32),
            (&c64, n, f, -7.0),
            (&fortran, fn_, ff, -4.5),
        ] {
            let whole = Features::read_npy(path).unwrap();
            let scan = features_file_fingerprint(path, "features", &go()).unwrap();
            assert_eq!(scan.fingerprint, features_fingerprint(&whole), "{path:?}");
            let digest = features_file_digest(path, "features", &go()).unwrap();
            assert_eq!(digest, (scan.fingerprint.clone(), rows, width), "{path:?}");
            assert_eq!((scan.num_nodes, scan.width), (rows, width));
            assert_eq!(scan.min_value, min);
        }
        // Another value gives another fingerprint.
        let mut changed = values.clone();
        changed[n * f - 1] += 1.0;
        let c32b = dir.path().join("c32b.npy");
        write_npy(&c32b, &[n as u64, f as u64], &changed).unwrap();
        assert_ne!(
            features_file_fingerprint(&c32b, "features", &go())
                .unwrap()
                .fingerprint,
            features_file_fingerprint(&c32, "features", &go())
                .unwrap()
                .fingerprint
        );
    }

    fn go() -> std::sync::atomic::AtomicBool {
        std::sync::atomic::AtomicBool::new(false)
    }

    #[test]
    fn a_stopped_file_fingerprint_ends_with_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        write_npy(&path, &[2, 3], &[0.0f32; 6]).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(true);
        let digest_err = features_file_digest(&path, "features", &stop).unwrap_err();
        assert!(
            digest_err.to_string().contains("x.npy: check stopped"),
            "{digest_err}"
        );
        let err = features_file_fingerprint(&path, "features", &stop).unwrap_err();
        assert!(
            matches!(&err, PartitionError::Graph(distgat_graph::GraphError::Io { error, .. })
                if error.kind() == std::io::ErrorKind::Interrupted),
            "{err:?}"
        );
        assert!(err.to_string().contains("x.npy: check stopped"), "{err}");
    }

    #[test]
    fn file_fingerprint_names_the_first_bad_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        write_npy(&path, &[2, 3], &[0.0f32, 1.0, 2.0, 3.0, f32::NAN, 5.0]).unwrap();
        let err = features_file_fingerprint(&path, "features", &go())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.npy") && err.contains("row 1, column 1"),
            "{err}"
        );
        // The digest only compares: it hashes the bytes as they are.
        let (digest, n, f) = features_file_digest(&path, "features", &go()).unwrap();
        assert_eq!((n, f), (2, 3));
        assert_eq!(digest.len(), 64);
    }
}
