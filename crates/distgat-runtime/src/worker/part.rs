//! Computing one part of a job: per layer, transform the owned rows, send each peer its
//! halo rows, aggregate interior rows while they travel, then the boundary rows, through
//! the layer's [`AttentionKind`] (the part never asks which kind it runs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distgat_attention::{
    aggregate_into, entry_edge_attr, transform_into, AttentionKind, Execution, HaloPayload, Model,
    Progress, RowBuffer, RowInputs,
};
use distgat_graph::{Features, IncomingCsr};
use distgat_partition::{PartPlan, PartitionDir};
use distgat_proto::v1::halo_exchange_client::HaloExchangeClient;
use distgat_proto::v1::output_chunk::Body;
use distgat_proto::v1::{
    AttentionValues, LayerStats, OutputChunk, OutputRows, PayloadKind, RowChunk, StartJobRequest,
    WorkerStats,
};
use distgat_proto::MAX_CHUNK_BYTES;
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Request;

use crate::error::{transport, Result, RuntimeError};

use super::fetch::{self, ShardOrigin};
use super::mailbox::Mailbox;
use crate::net::Dialer;
use crate::source::ShardSource;
use std::path::PathBuf;
use tonic::transport::Endpoint;

/// A part's rows split into those that need no halo row and those that do, each with its
/// own CSR over the part's local ids (owned rows, then halo rows).
struct RowSplit {
    interior: Subset,
    boundary: Subset,
}

struct Subset {
    /// Local owned row of each CSR row.
    rows: Vec<u32>,
    csr: IncomingCsr,
    /// Per CSR entry: the input edge, or -(v + 1) for the added self loop of node v.
    keys: Vec<i64>,
    /// Per CSR entry: its position in the shard's local CSR, or -(v + 1) for the added
    /// self loop of node v (indexes the shard's edge attributes).
    local_keys: Vec<i64>,
}

impl RowSplit {
    /// Applies a layer's self-loop rule to the part's raw local CSR, in engine order.
    fn new(plan: &PartPlan, add_self_loops: bool) -> Self {
        let n_owned = plan.owned.len();
        let mut interior = SubsetBuilder::default();
        let mut boundary = SubsetBuilder::default();
        for r in 0..n_owned {
            let (a, b) = (plan.row_ptr[r] as usize, plan.row_ptr[r + 1] as usize);
            let mut entries: Vec<(u32, i64, i64)> = (a..b)
                .filter(|&k| !(add_self_loops && plan.col[k] as usize == r))
                .map(|k| (plan.col[k], plan.edge_id[k] as i64, k as i64))
                .collect();
            if add_self_loops {
                let key = -(plan.owned[r] as i64) - 1;
                entries.push((r as u32, key, key));
            }
            let target = if entries.iter().all(|&(c, _, _)| (c as usize) < n_owned) {
                &mut interior
            } else {
                &mut boundary
            };
            target.push(r as u32, &entries);
        }
        RowSplit {
            interior: interior.finish(add_self_loops),
            boundary: boundary.finish(add_self_loops),
        }
    }
}

#[derive(Default)]
struct SubsetBuilder {
    rows: Vec<u32>,
    row_ptr: Vec<usize>,
    col: Vec<u32>,
    keys: Vec<i64>,
    local_keys: Vec<i64>,
}

impl SubsetBuilder {
    fn push(&mut self, row: u32, entries: &[(u32, i64, i64)]) {
        if self.row_ptr.is_empty() {
            self.row_ptr.push(0);
        }
        self.rows.push(row);
        for &(c, k, l) in entries {
            self.col.push(c);
            self.keys.push(k);
            self.local_keys.push(l);
        }
        self.row_ptr.push(self.col.len());
    }
    fn finish(mut self, self_loops_added: bool) -> Subset {
        if self.row_ptr.is_empty() {
            self.row_ptr.push(0);
        }
        let kept = self.keys.iter().filter(|&&k| k >= 0).count();
        Subset {
            csr: IncomingCsr {
                num_nodes: self.rows.len(),
                row_ptr: self.row_ptr,
                col: self.col,
                self_loops_added,
                kept_edges: kept,
            },
            rows: self.rows,
            keys: self.keys,
            local_keys: self.local_keys,
        }
    }
}

/// Where a part's edge attributes come from.
enum EdgeAttr {
    /// The shard's `[entries, D]` rows, indexed by local entry.
    Shard(Features),
    /// The whole `[E, D]` edge features file, indexed by input edge.
    File(Features),
}

/// Kernel threads a job may ask for: this machine's cores.
fn max_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Halo rows are expected within this time of the layer's start.
const HALO_TIMEOUT: Duration = Duration::from_secs(120);

#[allow(clippy::too_many_arguments)]
pub(super) fn compute_part(
    mailbox: &Mailbox,
    dialer: &Dialer,
    rt: &tokio::runtime::Handle,
    coordinator: &Endpoint,
    shards_dir: &fetch::ShardCache,
    req: &StartJobRequest,
    cancel: &AtomicBool,
    progress: &Progress,
    out: &mpsc::Sender<OutputChunk>,
) -> Result<()> {
    let PartInputs {
        shard_plan: plan,
        model,
        mut features,
        edge_attr,
        origin,
    } = part_inputs(rt, coordinator, &dialer.bearer, req, shards_dir)?;
    // The coordinator refuses global layers before a job starts; checked again here, as
    // every input a worker gets is.
    let layers = model.local_layers("the distributed runtime (distgat run)")?;
    let (n_owned, n_halo) = (plan.owned.len(), plan.halo.len());
    let n_local = n_owned + n_halo;
    if req.normalize_rows {
        features.normalize_rows_with_min(req.feature_min);
    }
    if features.width != model.layers[0].in_features() {
        return Err(RuntimeError::InvalidArgument(format!(
            "features have {} columns, the model's layer 0 expects {}",
            features.width,
            model.layers[0].in_features()
        )));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads((req.threads as usize).clamp(1, max_threads()))
        .build()
        .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))?;
    let splits: HashMap<bool, RowSplit> = layers
        .iter()
        .map(|l| l.add_self_loops())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|loops| (loops, RowSplit::new(&plan, loops)))
        .collect();
    // Where each owner's block starts in the halo (halo rows are grouped by owner).
    let mut block_start: HashMap<u32, usize> = HashMap::new();
    for (i, &o) in plan.halo_owner.iter().enumerate() {
        block_start.entry(o).or_insert(i);
    }
    let peers: HashMap<u32, Channel> = req
        .peers
        .iter()
        .map(|p| Ok((p.part, dialer.endpoint(&p.address)?.connect_lazy())))
        .collect::<Result<_>>()?;

    let mut x = features.values;
    let mut stats = Vec::with_capacity(layers.len());
    for (k, &layer) in layers.iter().enumerate() {
        let (h, sw, tw, ow, f) = (
            layer.heads(),
            layer.source_width(),
            layer.target_width(),
            layer.out_width(),
            layer.in_features(),
        );
        let started = Instant::now();
        let mut source = RowBuffer::zeroed(n_local * sw);
        let mut target = vec![0f32; n_owned * tw];
        pool.install(|| {
            transform_into(
                layer,
                &x,
                Execution::Parallel,
                &mut source[..n_owned * sw],
                &mut target,
            )
        });
        // Send each peer its rows once: raw input rows or source rows, whichever is
        // smaller (the kind decides).
        let payload = layer.halo_payload();
        let raw = payload == HaloPayload::Raw;
        let width = if raw { f } else { sw };
        let mut sends = Vec::new();
        // Set by a send that failed, so the wait for this layer's halo stops at once (the
        // peer refused the rows, or is gone) instead of running into HALO_TIMEOUT.
        let send_failed = Arc::new(AtomicBool::new(false));
        let mut rows_sent = 0u64;
        for (q, rows) in &plan.send {
            let channel = peers.get(q).cloned().ok_or_else(|| {
                RuntimeError::InvalidArgument(format!("peers: no address for part {q}"))
            })?;
            let chunks = row_chunks(
                req,
                k as u32,
                rows,
                width,
                |r, buf| {
                    if raw {
                        buf.extend_from_slice(&x[r * f..(r + 1) * f]);
                    } else {
                        buf.extend_from_slice(&source[r * sw..(r + 1) * sw]);
                    }
                },
                if raw {
                    PayloadKind::Raw
                } else {
                    PayloadKind::Transformed
                },
            );
            rows_sent += rows.len() as u64;
            let bytes: u64 = chunks.iter().map(|c| c.encoded_len() as u64).sum();
            let q = *q;
            let failed = send_failed.clone();
            sends.push(rt.spawn(async move {
                let t = Instant::now();
                let mut client =
                    HaloExchangeClient::new(channel).max_encoding_message_size(2 * MAX_CHUNK_BYTES);
                let mut request = Request::new(tokio_stream::iter(chunks));
                request.set_timeout(HALO_TIMEOUT);
                let sent = client
                    .send_rows(request)
                    .await
                    .map_err(transport(format!("sending halo rows to part {q}")));
                if sent.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                sent?;
                Ok::<_, RuntimeError>((bytes, t.elapsed()))
            }));
        }

        // Interior rows while the halo is in flight (they read owned source rows only).
        let view = &splits[&layer.add_self_loops()];
        progress.start_layer(
            k,
            model.layers.len(),
            (view.interior.csr.num_entries() + view.boundary.csr.num_entries()) as u64,
        );
        let aw = layer.source_aux_width();
        let mut aux = vec![0f32; n_local * aw];
        if aw > 0 {
            layer.fill_source_aux(&source[..n_owned * sw], &mut aux[..n_owned * aw]);
        }
        let mut out_rows = vec![0f32; n_owned * ow];
        let mut alpha: Vec<(Vec<i64>, Vec<f32>)> = Vec::new();
        aggregate_subset(
            &pool,
            layer,
            &view.interior,
            &source,
            &aux,
            &target,
            edge_attr.as_ref(),
            &mut out_rows,
            req.want_attention.then_some(&mut alpha),
            progress,
        );
        let mut compute = started.elapsed();

        // Boundary rows once their halo rows are here.
        let waited = Instant::now();
        let taken = mailbox.take(
            &req.job_id,
            k as u32,
            n_halo as u64,
            cancel,
            &send_failed,
            HALO_TIMEOUT,
        );
        let chunks = match taken {
            Ok(chunks) => chunks,
            Err(e) => {
                // A failed send is the cause worth reporting, not the wait it cut short.
                for s in sends.into_iter().filter(|s| s.is_finished()) {
                    if let Ok(Err(send_error)) = rt.block_on(s) {
                        return Err(send_error);
                    }
                }
                return Err(e);
            }
        };
        let wait = waited.elapsed();
        let t = Instant::now();
        place_halo(layer, &plan, &block_start, chunks, raw, &pool, &mut source)?;
        if aw > 0 {
            layer.fill_source_aux(&source[n_owned * sw..], &mut aux[n_owned * aw..]);
        }
        aggregate_subset(
            &pool,
            layer,
            &view.boundary,
            &source,
            &aux,
            &target,
            edge_attr.as_ref(),
            &mut out_rows,
            req.want_attention.then_some(&mut alpha),
            progress,
        );
        compute += t.elapsed();
        drop(source);
        drop(target);

        let mut bytes_sent = 0u64;
        let mut send_time = Duration::ZERO;
        for s in sends {
            let (bytes, took) = rt
                .block_on(s)
                .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))??;
            bytes_sent += bytes;
            send_time = send_time.max(took);
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(RuntimeError::Cancelled(format!("job {}", req.job_id)));
        }
        for (keys, values) in alpha {
            send_output(
                out,
                req,
                Body::Attention(AttentionValues {
                    layer: k as u32,
                    heads: h as u32,
                    edges: keys,
                    values: f32_bytes(&values),
                }),
            )?;
        }
        tracing::info!(
            job = %req.job_id,
            part = req.part,
            layer = k,
            compute_ms = ms(compute),
            wait_ms = ms(wait),
            "layer done"
        );
        let layer_stats = LayerStats {
            layer: k as u32,
            compute_ms: ms(compute),
            wait_ms: ms(wait),
            send_ms: ms(send_time),
            rows_sent,
            bytes_sent,
            bytes_planned: rows_sent * width as u64 * 4,
        };
        send_output(out, req, Body::Progress(layer_stats))?;
        let metrics = &crate::metrics::METRICS;
        metrics.layer_seconds.observe(compute.as_secs_f64());
        metrics.halo_bytes_sent.inc_by(bytes_sent);
        metrics.halo_rows_sent.inc_by(rows_sent);
        metrics.rows_computed.inc_by(n_owned as u64);
        stats.push(layer_stats);
        if k + 1 < model.layers.len() {
            model.activation.apply(&mut out_rows);
        }
        x = out_rows;
    }
    // Output rows in chunks, in original ids.
    let width = model.out_width();
    let per_chunk = (MAX_CHUNK_BYTES / (4 * width.max(1))).max(1);
    for (i, rows) in x.chunks(per_chunk * width.max(1)).enumerate() {
        let first = i * per_chunk;
        let n = rows.len() / width.max(1);
        send_output(
            out,
            req,
            Body::Rows(OutputRows {
                nodes: plan.owned[first..first + n].to_vec(),
                width: width as u32,
                values: f32_bytes(rows),
            }),
        )?;
    }
    send_output(
        out,
        req,
        Body::Stats(WorkerStats {
            layers: stats,
            shard_cache: origin.name().to_string(),
        }),
    )
}

/// Everything a part computes from, however it was obtained.
struct PartInputs {
    shard_plan: PartPlan,
    model: Model,
    /// The owned rows, `[owned, F]`, not yet normalised.
    features: Features,
    edge_attr: Option<EdgeAttr>,
    origin: ShardOrigin,
}

/// Reads the part's inputs by path (shard source `shared`) or fetches them from the
/// coordinator (`stream`), checking each as it enters.
fn part_inputs(
    rt: &tokio::runtime::Handle,
    coordinator: &Endpoint,
    bearer: &distgat_proto::Bearer,
    req: &StartJobRequest,
    shards_dir: &fetch::ShardCache,
) -> Result<PartInputs> {
    match crate::convert::shard_source_of(req.shard_source)? {
        ShardSource::Shared => shared_inputs(req),
        ShardSource::Stream => {
            if req.worker_id.is_empty() || req.partition_manifest.is_empty() {
                return Err(RuntimeError::InvalidArgument(
                    "shard_source stream needs worker_id and partition_manifest".into(),
                ));
            }
            let (_, shard, origin) =
                fetch::shard(rt, coordinator.connect_lazy(), bearer, req, shards_dir)?;
            let got = fetch::inputs(rt, coordinator.connect_lazy(), bearer, req)?;
            let label = PathBuf::from(format!("<coordinator>/model-of-{}.json", req.job_id));
            let model = Model::from_files(&label, got.model)?;
            let n_owned = shard.plan.owned.len();
            let features =
                match (shard.features, got.features) {
                    (Some(f), None) => f,
                    (None, Some(f)) if f.num_nodes == n_owned => f,
                    (None, Some(f)) => {
                        return Err(RuntimeError::InvalidArgument(format!(
                            "features: the coordinator sent {} rows, this part owns {n_owned}",
                            f.num_nodes
                        )))
                    }
                    (Some(_), Some(_)) => return Err(RuntimeError::InvalidArgument(
                        "features: the coordinator sent feature rows, but the shard carries them"
                            .into(),
                    )),
                    (None, None) => return Err(RuntimeError::InvalidArgument(
                        "features: the shard carries no feature rows and the coordinator sent none"
                            .into(),
                    )),
                };
            let entries = shard.plan.col.len();
            let edge_attr = match (model.edge_dim(), shard.edge_attr, got.edge_attr) {
                (None, _, None) => None,
                (None, _, Some(_)) => {
                    return Err(RuntimeError::InvalidArgument(
                        "edge_attr: the coordinator sent edge attributes, but the model has no \
                         edge_dim layer"
                            .into(),
                    ))
                }
                (Some(d), Some(ea), None) | (Some(d), None, Some(ea)) => {
                    if ea.width != d || ea.num_nodes != entries {
                        return Err(RuntimeError::InvalidArgument(format!(
                            "edge attributes: [{}, {}] received, the part needs [{entries}, {d}] \
                             (its local edges, the model's edge_dim)",
                            ea.num_nodes, ea.width
                        )));
                    }
                    Some(EdgeAttr::Shard(ea))
                }
                (Some(_), Some(_), Some(_)) => return Err(RuntimeError::InvalidArgument(
                    "edge_attr: the coordinator sent edge attributes, but the shard carries them"
                        .into(),
                )),
                (Some(_), None, None) => {
                    return Err(RuntimeError::InvalidArgument(
                        "edge_features: the model has edge_dim layers, but neither the shard nor \
                         the coordinator provides edge attributes"
                            .into(),
                    ))
                }
            };
            Ok(PartInputs {
                shard_plan: shard.plan,
                model,
                features,
                edge_attr,
                origin,
            })
        }
    }
}

/// Shard source `shared`: every input opened by the paths of the request.
fn shared_inputs(req: &StartJobRequest) -> Result<PartInputs> {
    let dir = PartitionDir::open(std::path::Path::new(&req.partition_dir))?;
    let shard = dir.load_shard(req.part)?;
    let model = Model::load(std::path::Path::new(&req.model))?;
    let plan = shard.plan;
    let n_owned = plan.owned.len();
    let features = match shard.features {
        Some(f) => f,
        None => {
            if req.features.is_empty() {
                return Err(RuntimeError::InvalidArgument(
                    "features: the shards carry no feature rows, so a features file is needed"
                        .into(),
                ));
            }
            let all = Features::read_npy(std::path::Path::new(&req.features))?;
            let mut rows = Vec::with_capacity(n_owned * all.width);
            for &v in &plan.owned {
                let v = v as usize;
                if v >= all.num_nodes {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "features: {} has {} rows, the partition needs node {v}",
                        req.features, all.num_nodes
                    )));
                }
                rows.extend_from_slice(all.row(v));
            }
            Features::new(n_owned, all.width, rows)
        }
    };
    // Edge attributes of the local edges: from the shard (rows in local entry order) or,
    // for a partition made without them, from the edge features file (by input edge).
    let edge_attr = match (model.edge_dim(), shard.edge_attr) {
        (Some(d), Some(ea)) => {
            if ea.width != d {
                return Err(RuntimeError::InvalidArgument(format!(
                    "edge features: the partition's shards carry {} columns, the model's \
                     edge_dim is {d}",
                    ea.width
                )));
            }
            Some(EdgeAttr::Shard(ea))
        }
        (Some(_), None) if req.edge_features.is_empty() => {
            return Err(RuntimeError::InvalidArgument(
                "edge_features: the model has edge_dim layers, but the job names no edge \
                 features file"
                    .into(),
            ))
        }
        (Some(d), None) => {
            let ea = Features::read_edge_npy(std::path::Path::new(&req.edge_features))?;
            if ea.width != d {
                return Err(RuntimeError::InvalidArgument(format!(
                    "edge_features: {} has {} columns, the model's edge_dim is {d}",
                    req.edge_features, ea.width
                )));
            }
            // The coordinator checked the rows against the graph; the file is read again
            // here, so a file replaced meanwhile is caught instead of indexed past its end.
            if let Some(&last) = plan.edge_id.iter().max() {
                if last as usize >= ea.num_nodes {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "edge_features: {} has {} rows, but this part has edge {last}",
                        req.edge_features, ea.num_nodes
                    )));
                }
            }
            Some(EdgeAttr::File(ea))
        }
        (None, _) => None,
    };

    Ok(PartInputs {
        shard_plan: plan,
        model,
        features,
        edge_attr,
        origin: ShardOrigin::Shared,
    })
}

fn send_output(out: &mpsc::Sender<OutputChunk>, req: &StartJobRequest, body: Body) -> Result<()> {
    out.blocking_send(OutputChunk {
        job_id: req.job_id.clone(),
        part: req.part,
        body: Some(body),
    })
    .map_err(|_| RuntimeError::Cancelled("the output stream to the coordinator closed".into()))
}

/// Little-endian bytes of `values` (one pass, no per-element iterator chain).
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * 4];
    for (dst, v) in out.chunks_exact_mut(4).zip(values) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes little-endian f32 `bytes` into `dst` (same element count).
pub(crate) fn read_f32s(bytes: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Splits the rows `rows` (local ids) into chunks of at most [`MAX_CHUNK_BYTES`] payload.
fn row_chunks(
    req: &StartJobRequest,
    layer: u32,
    rows: &[u32],
    width: usize,
    mut fill: impl FnMut(usize, &mut Vec<f32>),
    kind: PayloadKind,
) -> Vec<RowChunk> {
    let per_chunk = (MAX_CHUNK_BYTES / (4 * width.max(1))).max(1);
    let mut chunks = Vec::with_capacity(rows.len().div_ceil(per_chunk));
    let mut buf = Vec::with_capacity(per_chunk * width);
    for (i, block) in rows.chunks(per_chunk).enumerate() {
        buf.clear();
        for &r in block {
            fill(r as usize, &mut buf);
        }
        chunks.push(RowChunk {
            job_id: req.job_id.clone(),
            layer,
            source_part: req.part,
            first_row: (i * per_chunk) as u64,
            num_rows: block.len() as u32,
            row_width: width as u32,
            kind: kind as i32,
            payload: f32_bytes(&buf),
        });
    }
    chunks
}

/// Copies received halo rows into their local slots of `source` (transforming raw rows
/// first, with the same transform the owner runs, so the bits are the owner's).
fn place_halo(
    layer: &dyn AttentionKind,
    plan: &PartPlan,
    block_start: &HashMap<u32, usize>,
    chunks: Vec<RowChunk>,
    raw: bool,
    pool: &rayon::ThreadPool,
    source: &mut [f32],
) -> Result<()> {
    let n_owned = plan.owned.len();
    let n_halo = plan.halo.len();
    let (sw, f) = (layer.source_width(), layer.in_features());
    let width = if raw { f } else { sw };
    let mut filled = vec![false; n_halo];
    let mut x_halo = if raw {
        vec![0f32; n_halo * f]
    } else {
        Vec::new()
    };
    for c in chunks {
        let bad = |what: String| {
            RuntimeError::InvalidArgument(format!("halo chunk from part {}: {what}", c.source_part))
        };
        let expected_kind = if raw {
            PayloadKind::Raw
        } else {
            PayloadKind::Transformed
        };
        if c.kind != expected_kind as i32 || c.row_width as usize != width {
            return Err(bad(format!(
                "kind {} width {}, expected {:?} width {width}",
                c.kind, c.row_width, expected_kind
            )));
        }
        let start = *block_start
            .get(&c.source_part)
            .ok_or_else(|| bad("this part needs no rows from it".into()))?;
        let block_len = plan.halo_owner[start..]
            .iter()
            .take_while(|&&o| o == c.source_part)
            .count();
        let (first, n) = (c.first_row, c.num_rows as u64);
        if first
            .checked_add(n)
            .is_none_or(|end| end > block_len as u64)
        {
            return Err(bad(format!(
                "rows {first} (+{n}) beyond its block of {block_len}"
            )));
        }
        let (first, n) = (first as usize, n as usize);
        for i in 0..n {
            let slot = start + first + i;
            if std::mem::replace(&mut filled[slot], true) {
                return Err(bad(format!("row {} sent twice", first + i)));
            }
            let row = &c.payload[i * width * 4..(i + 1) * width * 4];
            if raw {
                read_f32s(row, &mut x_halo[slot * f..(slot + 1) * f]);
            } else {
                let l = n_owned + slot;
                read_f32s(row, &mut source[l * sw..(l + 1) * sw]);
            }
        }
    }
    if let Some(slot) = filled.iter().position(|&f| !f) {
        return Err(RuntimeError::InvalidArgument(format!(
            "halo row of node {} (owner part {}) never arrived",
            plan.halo[slot], plan.halo_owner[slot]
        )));
    }
    if raw && n_halo > 0 {
        let mut target_unused = vec![0f32; n_halo * layer.target_width()];
        pool.install(|| {
            transform_into(
                layer,
                &x_halo,
                Execution::Parallel,
                &mut source[n_owned * sw..],
                &mut target_unused,
            )
        });
    }
    Ok(())
}

/// Aggregates the rows of `subset` and scatters them into `out` (by owned row).
#[allow(clippy::too_many_arguments)]
fn aggregate_subset(
    pool: &rayon::ThreadPool,
    layer: &dyn AttentionKind,
    subset: &Subset,
    source: &[f32],
    source_aux: &[f32],
    target: &[f32],
    edge_attr: Option<&EdgeAttr>,
    out: &mut [f32],
    alpha: Option<&mut Vec<(Vec<i64>, Vec<f32>)>>,
    progress: &Progress,
) {
    let (h, ow, tw) = (layer.heads(), layer.out_width(), layer.target_width());
    let n = subset.rows.len();
    if n == 0 {
        return;
    }
    let mut rows_target = Vec::with_capacity(n * tw);
    for &r in &subset.rows {
        rows_target.extend_from_slice(&target[r as usize * tw..(r as usize + 1) * tw]);
    }
    // Edge attributes of the subset's entries (the owner holds every incoming edge of
    // its rows, so the self-loop fill is computed here, in the engine's order).
    let entry_attr = match (layer.edge_dim(), edge_attr) {
        (Some(d), Some(ea)) => {
            let (keys, values) = match ea {
                EdgeAttr::Shard(f) => (&subset.local_keys, &f.values),
                EdgeAttr::File(f) => (&subset.keys, &f.values),
            };
            Some(entry_edge_attr(
                &subset.csr.row_ptr,
                keys,
                d,
                layer.fill_value(),
                values,
            ))
        }
        _ => None,
    };
    let mut rows_out = vec![0f32; n * ow];
    let mut coefficients = alpha
        .as_ref()
        .map(|_| vec![0f32; subset.csr.num_entries() * h]);
    let inputs = RowInputs {
        source,
        source_aux,
        target: &rows_target,
        edge_attr: entry_attr.as_deref(),
    };
    pool.install(|| {
        aggregate_into(
            layer,
            &subset.csr,
            &inputs,
            Execution::Parallel,
            &mut rows_out,
            coefficients.as_deref_mut(),
            Some(progress),
        )
    });
    for (i, &r) in subset.rows.iter().enumerate() {
        out[r as usize * ow..(r as usize + 1) * ow]
            .copy_from_slice(&rows_out[i * ow..(i + 1) * ow]);
    }
    if let (Some(alpha), Some(values)) = (alpha, coefficients) {
        // Chunk so no message exceeds the limit.
        let per_chunk = (MAX_CHUNK_BYTES / (4 * h + 8)).max(1);
        for (keys, vals) in subset
            .keys
            .chunks(per_chunk)
            .zip(values.chunks(per_chunk * h))
        {
            alpha.push((keys.to_vec(), vals.to_vec()));
        }
    }
}
