//! Computing one part of a job: per layer, transform the owned rows, send each peer its
//! halo rows, aggregate interior rows while they travel, then the boundary rows, through
//! the layer's [`AttentionKind`] (the part never asks which kind it runs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::borrow::Cow;

use distgat_attention::{
    aggregate_into, aggregate_to_sink, entry_edge_attr, fill_source_aux_in, transform_into,
    AttentionKind, Collective, Execution, FillValue, FinalRowsSink, HaloPayload, Layer, Model,
    Progress, RowBuffer, RowInputs,
};
use distgat_graph::{Features, IncomingCsr};
use distgat_partition::{EdgeIds, PartPlan, PartitionDir};
use distgat_proto::v1::output_chunk::Body;
use distgat_proto::v1::{
    AttentionValues, LayerStats, OutputChunk, OutputRows, PayloadKind, RowChunk, RowsWritten,
    StartJobRequest, WorkerStats,
};
use distgat_proto::MAX_CHUNK_BYTES;
use prost::Message;
use tokio::sync::mpsc;

use crate::catalog::lock;
use crate::error::{transport, Result, RuntimeError};

use super::fetch::{self, ShardOrigin};
use super::links::{receiver_lost, send_chunks, JobLinks, HALO_TIMEOUT};
use super::mailbox::Mailbox;
use super::output::OutputFile;
use super::scratch::Scratch;
use super::LastLayerOrder;
use crate::net::Dialer;
use crate::source::ShardSource;
use std::path::PathBuf;
use tonic::transport::Endpoint;

/// A part's rows split into those that need no halo row and those that do, each with its
/// own CSR over the part's local ids (owned rows, then halo rows).
struct RowSplit {
    interior: Subset,
    boundary: Subset,
    /// Per owned row: whether it is a boundary row.
    is_boundary: Arc<Vec<bool>>,
}

struct Subset {
    /// The subset's local owned rows, increasing.
    rows: Vec<u32>,
    /// Whether the CSR has a row for every owned row (row `r` is owned row `r`, the rows
    /// outside the subset empty), so the kernel writes the part's output rows in place;
    /// else CSR row `i` is owned row `rows[i]`.
    in_place: bool,
    csr: IncomingCsr,
    /// Per CSR entry: the input edge, or -(v + 1) for the added self loop of node v.
    /// Empty unless the job reads them (attention rows, edge attributes).
    keys: Vec<i64>,
    /// Per CSR entry: its position in the shard's local CSR, or -(v + 1) for the added
    /// self loop of node v (indexes the shard's edge attributes). Empty like `keys`.
    local_keys: Vec<i64>,
    /// The last `edge_dim` layer's attributes per CSR entry (`[entries, edge_dim]`), kept
    /// for the later layers with the same `(edge_dim, fill_value)` (the split fixes the
    /// self loops): each build reads `edge_dim` values an entry at random, into fresh
    /// memory. Dropped by [`RowSplit::keep_attr_for`] once no later layer needs them.
    attr: Mutex<Option<(AttrKey, Arc<Vec<f32>>)>>,
}

/// What a subset's per-entry edge attributes depend on besides the subset and the edge
/// features: (`edge_dim`, `fill_value`).
type AttrKey = (usize, FillValue);

impl RowSplit {
    /// Drops the subsets' kept edge attributes unless one of `later` (the keys of the
    /// later layers on this split) is theirs.
    fn keep_attr_for(&self, later: impl Iterator<Item = AttrKey> + Clone) {
        for subset in [&self.interior, &self.boundary] {
            let mut kept = lock(&subset.attr);
            if let Some((key, _)) = &*kept {
                if !later.clone().any(|k| k == *key) {
                    *kept = None;
                }
            }
        }
    }

    /// Applies a layer's self-loop rule to the part's raw local CSR, in engine order.
    /// The interior subset is [in place](Subset::in_place): computed first, it writes its
    /// rows straight into the output (and the boundary rows' empty results there are
    /// overwritten by the boundary subset after), instead of into a buffer of its own
    /// copied over (a fresh `[interior, out_width]` buffer and a copy per layer).
    /// With `keys` false the subsets carry no per-entry keys (16 bytes an entry, 130 MB
    /// for a part of 8M entries, that only attention rows and edge attributes read).
    fn new(plan: &PartPlan, add_self_loops: bool, keys: bool) -> Self {
        let n_owned = plan.owned.len();
        let row = |r: usize| plan.row_ptr[r] as usize..plan.row_ptr[r + 1] as usize;
        // Pass 1: which rows need a halo row, and each subset's size, so the builders
        // allocate once (a part's subsets hold tens of millions of entries).
        let mut boundary_row = vec![false; n_owned];
        let (mut sizes, mut rows) = ([0usize; 2], [0usize; 2]);
        for (r, b) in boundary_row.iter_mut().enumerate() {
            let cols = &plan.col[row(r)];
            *b = cols.iter().any(|&c| c as usize >= n_owned);
            let dropped = if add_self_loops {
                cols.iter().filter(|&&c| c as usize == r).count()
            } else {
                0
            };
            sizes[usize::from(*b)] += cols.len() - dropped + usize::from(add_self_loops);
            rows[usize::from(*b)] += 1;
        }
        let mut interior = SubsetBuilder::with_capacity(n_owned, sizes[0], keys);
        let mut boundary = SubsetBuilder::with_capacity(rows[1], sizes[1], keys);
        for (r, &b) in boundary_row.iter().enumerate() {
            if b {
                // An empty row of the in-place interior subset.
                interior.end_row();
            }
            let target = if b { &mut boundary } else { &mut interior };
            target.start_row(r as u32);
            for k in row(r) {
                let c = plan.col[k];
                if !(add_self_loops && c as usize == r) {
                    // `plan.edge_id` is empty when the job needs no keys (EdgeIds::Skip).
                    let key = if keys { plan.edge_id[k] as i64 } else { 0 };
                    target.entry(c, key, k as i64);
                    target.kept += 1;
                }
            }
            if add_self_loops {
                let key = -(plan.owned[r] as i64) - 1;
                target.entry(r as u32, key, key);
            }
            target.end_row();
        }
        RowSplit {
            interior: interior.finish(add_self_loops, true),
            boundary: boundary.finish(add_self_loops, false),
            is_boundary: Arc::new(boundary_row),
        }
    }
}

struct SubsetBuilder {
    rows: Vec<u32>,
    row_ptr: Vec<usize>,
    col: Vec<u32>,
    /// Whether `keys` and `local_keys` are filled.
    with_keys: bool,
    keys: Vec<i64>,
    local_keys: Vec<i64>,
    /// Entries that are input edges (not added self loops).
    kept: usize,
}

impl SubsetBuilder {
    fn with_capacity(rows: usize, entries: usize, with_keys: bool) -> Self {
        let mut row_ptr = Vec::with_capacity(rows + 1);
        row_ptr.push(0);
        let key_room = if with_keys { entries } else { 0 };
        SubsetBuilder {
            rows: Vec::with_capacity(rows),
            row_ptr,
            col: Vec::with_capacity(entries),
            with_keys,
            keys: Vec::with_capacity(key_room),
            local_keys: Vec::with_capacity(key_room),
            kept: 0,
        }
    }
    fn start_row(&mut self, row: u32) {
        self.rows.push(row);
    }
    #[inline]
    fn entry(&mut self, c: u32, key: i64, local_key: i64) {
        self.col.push(c);
        if self.with_keys {
            self.keys.push(key);
            self.local_keys.push(local_key);
        }
    }
    fn end_row(&mut self) {
        self.row_ptr.push(self.col.len());
    }
    fn finish(self, self_loops_added: bool, in_place: bool) -> Subset {
        Subset {
            in_place,
            csr: IncomingCsr {
                num_nodes: self.row_ptr.len() - 1,
                row_ptr: self.row_ptr,
                col: self.col,
                self_loops_added,
                kept_edges: self.kept,
            },
            rows: self.rows,
            keys: self.keys,
            local_keys: self.local_keys,
            attr: Mutex::new(None),
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

/// The kernel threads for a request's `threads`: 0 (the API's default) is all of this
/// machine's cores; more than the cores is capped at them.
pub(super) fn kernel_threads(requested: u32) -> usize {
    match requested {
        0 => max_threads(),
        t => (t as usize).clamp(1, max_threads()),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A global layer's exchanges (all-gathers of rows and of reduction partials) wait at most
/// this long for the other parts. Longer than [`HALO_TIMEOUT`]: every part reaches them
/// only after finishing the previous layer, so the wait includes the parts' imbalance; a
/// dead part is caught sooner by the coordinator's heartbeats, which cancel the job.
const COLLECTIVE_TIMEOUT: Duration = Duration::from_secs(600);

/// What one part computes with, shared by its layers.
struct Part<'a> {
    mailbox: &'a Mailbox,
    rt: &'a tokio::runtime::Handle,
    req: &'a StartJobRequest,
    cancel: &'a AtomicBool,
    progress: &'a Progress,
    out: &'a mpsc::Sender<OutputChunk>,
    /// Where the output rows go when the part writes them itself (`out_file`).
    out_file: Option<Arc<OutputFile>>,
    plan: PartPlan,
    /// N: the graph's nodes over all parts.
    num_nodes: usize,
    /// Global ids of the owned nodes (as `plan.owned`).
    own_ids: Vec<usize>,
    /// `plan.owned`, shared with the threads that write the output rows.
    owned: Arc<[u64]>,
    edge_attr: Option<EdgeAttr>,
    pool: rayon::ThreadPool,
    /// The row split of each self-loop rule the model's graph layers use.
    splits: HashMap<bool, RowSplit>,
    /// Each owner's block of halo slots (halo rows are grouped by owner).
    halo_blocks: HashMap<u32, std::ops::Range<usize>>,
    /// Where each peer part runs (it may move: `Worker.RerouteJob`), and the rows kept.
    links: &'a JobLinks,
    /// Buffers one layer leaves for the next (fresh pages are the expensive part).
    scratch: Scratch,
    /// [`LastLayerOrder`] of this worker.
    last_layer_order: LastLayerOrder,
}

/// A layer's numbers for [`LayerStats`], added up over its graph and global parts.
#[derive(Default)]
struct Measured {
    compute: Duration,
    wait: Duration,
    send: Duration,
    rows_sent: u64,
    bytes_sent: u64,
    bytes_planned: u64,
    /// Whether a last layer computed (and sent) its boundary rows before its interior
    /// rows, its halo rows being there before its interior started.
    boundary_first: bool,
}

impl Measured {
    fn add(&mut self, o: Measured) {
        self.boundary_first |= o.boundary_first;
        self.compute += o.compute;
        self.wait += o.wait;
        self.send = self.send.max(o.send);
        self.rows_sent += o.rows_sent;
        self.bytes_sent += o.bytes_sent;
        self.bytes_planned += o.bytes_planned;
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn compute_part(
    mailbox: &Mailbox,
    dialer: &Dialer,
    rt: &tokio::runtime::Handle,
    coordinator: &Endpoint,
    shards_dir: &fetch::ShardCache,
    builds: &super::build::Builds,
    links: &JobLinks,
    req: &StartJobRequest,
    cancel: &AtomicBool,
    progress: &Progress,
    out: &mpsc::Sender<OutputChunk>,
    last_layer_order: LastLayerOrder,
) -> Result<()> {
    let PartInputs {
        num_nodes,
        shard_plan: mut plan,
        model,
        mut features,
        edge_attr,
        origin,
    } = {
        let t = Instant::now();
        let inputs = match req.build_id.is_empty() {
            true => part_inputs(rt, coordinator, &dialer.bearer, req, shards_dir)?,
            false => kept_inputs(rt, coordinator, &dialer.bearer, req, builds)?,
        };
        tracing::info!(
            job = %req.job_id,
            part = req.part,
            shard = inputs.origin.name(),
            ms = ms(t.elapsed()),
            threads = kernel_threads(req.threads),
            "part inputs ready"
        );
        inputs
    };
    let n_owned = plan.owned.len();
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
    if plan.owned.iter().any(|&v| v as usize >= num_nodes) {
        return Err(RuntimeError::InvalidArgument(format!(
            "the shard of part {} owns a node beyond the partition's {num_nodes} nodes",
            req.part
        )));
    }
    // A part restarted alone starts from layer 0 while the others run on: it could never
    // rejoin a global layer's collective steps, so such jobs restart whole and keep nothing.
    if links.keep && model.has_collective_layers() {
        return Err(RuntimeError::InvalidArgument(
            "keep_sent_rows: the model has global layers, whose parts cannot restart alone".into(),
        ));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(kernel_threads(req.threads))
        .build()
        .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))?;
    // Attention rows name their edges by key; edge attributes are looked up by key.
    let with_keys = req.want_attention || edge_attr.is_some();
    let splits: HashMap<bool, RowSplit> = model
        .layers
        .iter()
        .filter_map(|l| l.add_self_loops())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|loops| (loops, RowSplit::new(&plan, loops, with_keys)))
        .collect();
    // The local CSR lives on in the row splits (with the entry keys they need): the
    // plan's copy is freed before the layers take their buffers. At R-MAT 1M/10M that is
    // 100 MB of part 0's 1 GB (`col`, and `edge_id` at 8 bytes an entry).
    plan.row_ptr = Vec::new();
    plan.col = Vec::new();
    plan.edge_id = Vec::new();
    let halo_blocks = halo_blocks(&plan.halo_owner);
    // Opened before any work, so a bad path fails the part at once.
    let out_file = OutputFile::requested(
        &req.out_file,
        req.out_header_len,
        req.out_rows,
        model.out_width(),
        req.out_owned_order,
        &plan.owned,
    )?
    .map(Arc::new);
    let part = Part {
        mailbox,
        rt,
        req,
        cancel,
        progress,
        out,
        out_file,
        own_ids: plan.owned.iter().map(|&v| v as usize).collect(),
        owned: plan.owned.as_slice().into(),
        plan,
        num_nodes,
        edge_attr,
        pool,
        splits,
        halo_blocks,
        links,
        scratch: Scratch::default(),
        last_layer_order,
    };

    let mut x = features.values;
    let mut stats = Vec::with_capacity(model.layers.len());
    for (k, layer) in model.layers.iter().enumerate() {
        // Progress counts the graph layer's edges and a global layer's rows.
        let entries = layer.local().map_or(0, |l| {
            let view = &part.splits[&l.add_self_loops()];
            (view.interior.csr.num_entries() + view.boundary.csr.num_entries()) as u64
        });
        let global_rows = match layer {
            Layer::Local(_) => 0,
            Layer::Global(_) | Layer::Gps(_) => n_owned as u64,
        };
        match layer {
            Layer::Global(_) => progress.start_global_layer(k, model.layers.len(), global_rows),
            _ => progress.start_layer(k, model.layers.len(), entries + global_rows),
        }
        let (mut out_rows, measured) = match layer {
            // A local last layer's rows are the output (no activation follows): the
            // layer sends them all itself, as they finish, and returns none.
            // The layer's input is dead once it is transformed and its halo rows are
            // sent: the layer takes it, so its allocation becomes the output rows.
            Layer::Local(l) => part.graph_layer(
                l.as_ref(),
                k,
                LayerInput::Owned(std::mem::take(&mut x)),
                k + 1 == model.layers.len(),
            )?,
            Layer::Global(g) => {
                part.global_layer(k, |comm| g.forward_part(&x, comm, Execution::Parallel))?
            }
            Layer::Gps(g) => {
                let mut measured = Measured::default();
                let conv_out = match &g.conv {
                    Some(conv) => {
                        let (rows, m) =
                            part.graph_layer(conv.as_ref(), k, LayerInput::Borrowed(&x), false)?;
                        measured.add(m);
                        Some(rows)
                    }
                    None => None,
                };
                let (rows, m) = part.global_layer(k, |comm| {
                    g.forward_part(&x, conv_out, comm, Execution::Parallel)
                })?;
                measured.add(m);
                (rows, measured)
            }
        };
        if cancel.load(Ordering::Relaxed) {
            return Err(RuntimeError::Cancelled(format!("job {}", req.job_id)));
        }
        // Edge attributes no later layer builds the same way are not kept.
        for (&loops, split) in &part.splits {
            split.keep_attr_for(
                model.layers[k + 1..]
                    .iter()
                    .filter_map(Layer::local)
                    .filter(|l| l.add_self_loops() == loops)
                    .filter_map(|l| l.edge_dim().map(|d| (d, l.fill_value()))),
            );
        }
        tracing::info!(
            job = %req.job_id,
            part = req.part,
            layer = k,
            compute_ms = ms(measured.compute),
            wait_ms = ms(measured.wait),
            boundary_first = measured.boundary_first,
            "layer done"
        );
        let layer_stats = LayerStats {
            layer: k as u32,
            compute_ms: ms(measured.compute),
            wait_ms: ms(measured.wait),
            send_ms: ms(measured.send),
            rows_sent: measured.rows_sent,
            bytes_sent: measured.bytes_sent,
            bytes_planned: measured.bytes_planned,
        };
        send_output(out, req, Body::Progress(layer_stats))?;
        let metrics = &crate::metrics::METRICS;
        metrics
            .layer_seconds
            .observe(measured.compute.as_secs_f64());
        metrics.halo_bytes_sent.inc_by(measured.bytes_sent);
        metrics.halo_rows_sent.inc_by(measured.rows_sent);
        metrics.rows_computed.inc_by(n_owned as u64);
        stats.push(layer_stats);
        if k + 1 < model.layers.len() {
            model.activation.apply(&mut out_rows);
        }
        part.scratch.give(std::mem::replace(&mut x, out_rows));
    }
    part.scratch.clear();
    // A local last layer sent every output row itself; after a global one, the output
    // rows go in chunks, in original ids.
    if !matches!(model.layers.last(), Some(Layer::Local(_))) {
        let all: Vec<u32> = (0..part.plan.owned.len() as u32).collect();
        send_rows(
            out,
            part.out_file.as_deref(),
            &req.job_id,
            req.part,
            &part.plan.owned,
            &all,
            &x,
            model.out_width(),
        )?;
    }
    send_output(
        out,
        req,
        Body::Stats(WorkerStats {
            layers: stats,
            shard_cache: origin.name().to_string(),
            threads: part.pool.current_num_threads() as u32,
        }),
    )
}

impl Part<'_> {
    /// A graph attention layer (`layers[k]`, or a GPSConv's conv) over the owned rows
    /// `x` (`[owned, F]`): transform, send each peer its halo rows, aggregate the interior
    /// rows while they travel, then the boundary rows. Sends the layer's attention
    /// coefficients when the job wants them. Returns the `[owned, out_width]` rows, or,
    /// with `final_rows` (the model's last layer), none: it sends every output row itself
    /// (to the coordinator or into the output file) as soon as it is computed.
    fn graph_layer(
        &self,
        layer: &dyn AttentionKind,
        k: usize,
        input: LayerInput<'_>,
        final_rows: bool,
    ) -> Result<(Vec<f32>, Measured)> {
        let x: &[f32] = match &input {
            LayerInput::Owned(v) => v,
            LayerInput::Borrowed(v) => v,
        };
        let (req, plan, pool) = (self.req, &self.plan, &self.pool);
        let (n_owned, n_halo) = (plan.owned.len(), plan.halo.len());
        let n_local = n_owned + n_halo;
        let (h, sw, tw, ow, f) = (
            layer.heads(),
            layer.source_width(),
            layer.target_width(),
            layer.out_width(),
            layer.in_features(),
        );
        let started = Instant::now();
        let mut source = self.scratch.take_rows(n_local * sw);
        let mut target = self.scratch.take(n_owned * tw);
        pool.install(|| {
            transform_into(
                layer,
                x,
                Execution::Parallel,
                &mut source[..n_owned * sw],
                &mut target,
            )
        });
        let transformed = started.elapsed();
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
            let chunks = row_chunks(
                pool,
                req,
                k as u32,
                rows,
                width,
                |r| match raw {
                    true => &x[r * f..(r + 1) * f],
                    false => &source[r * sw..(r + 1) * sw],
                },
                if raw {
                    PayloadKind::Raw
                } else {
                    PayloadKind::Transformed
                },
            );
            rows_sent += rows.len() as u64;
            sends.push(self.send(*q, chunks, &send_failed)?);
        }
        let chunked = started.elapsed() - transformed;

        // The input is not read again: an owned one serves the output rows.
        if let LayerInput::Owned(v) = input {
            self.scratch.give(v);
        }
        let view = &self.splits[&layer.add_self_loops()];
        let aw = layer.source_aux_width();
        let mut aux = vec![0f32; n_local * aw];
        pool.install(|| {
            fill_source_aux_in(
                layer,
                &source[..n_owned * sw],
                &mut aux[..n_owned * aw],
                Execution::Parallel,
            )
        });
        let mut alpha: Vec<(Vec<i64>, Vec<f32>)> = Vec::new();
        let mut compute = started.elapsed();
        let mut wait = Duration::ZERO;
        let mut placed = Duration::ZERO;
        // The halo rows: waited for, placed into `source`, their aux rows filled.
        let mut take_halo = |source: &mut RowBuffer, aux: &mut [f32]| -> Result<Duration> {
            let waited = Instant::now();
            let taken = self.mailbox.take(
                &req.job_id,
                req.part,
                k as u32,
                0,
                n_halo as u64,
                self.cancel,
                &send_failed,
                HALO_TIMEOUT,
            );
            let chunks = self.or_send_error(taken, &mut sends)?;
            wait = waited.elapsed();
            let t = Instant::now();
            let placed_chunks =
                place_halo(layer, plan, &self.halo_blocks, chunks, raw, pool, source)?;
            // Their payload buffers serve the next layer's halo rows.
            self.mailbox.recycle(placed_chunks);
            pool.install(|| {
                fill_source_aux_in(
                    layer,
                    &source[n_owned * sw..],
                    &mut aux[n_owned * aw..],
                    Execution::Parallel,
                )
            });
            placed = t.elapsed();
            Ok(placed)
        };
        // The last layer's rows are the model's output (no activation follows). When the
        // halo rows are already here (the other parts are ahead, waiting for this one's),
        // the boundary rows compute and go out first: then the rows that go out last are
        // the interior's, one edge-balanced chunk at a time in increasing owned order, so
        // the output file fills in increasing id order and the coordinator can push each
        // completed stretch to the disk while this part still computes. Otherwise the
        // interior computes while the halo rows are in flight.
        // One subset of this layer's rows (the rest of aggregate_subset's arguments are
        // the layer's).
        let subset = |subset: &Subset,
                      source: &[f32],
                      aux: &[f32],
                      out: SubsetOut<'_>,
                      alpha: &mut Vec<(Vec<i64>, Vec<f32>)>| {
            aggregate_subset(
                pool,
                layer,
                subset,
                source,
                aux,
                &target,
                self.edge_attr.as_ref(),
                out,
                req.want_attention.then_some(alpha),
                self.progress,
            )
        };
        let boundary_first = final_rows
            && match self.last_layer_order {
                LastLayerOrder::Auto => {
                    self.mailbox
                        .ready(&req.job_id, req.part, k as u32, 0, n_halo as u64)
                }
                LastLayerOrder::BoundaryFirst => true,
                LastLayerOrder::InteriorFirst => false,
            };
        // The last layer's boundary rows: computed into a compact buffer and sent, like
        // its interior rows (so the part's `[owned, out_width]` rows are never needed).
        // The time the last layer's boundary rows took to write or send (after computing).
        let written = std::cell::Cell::new(Duration::ZERO);
        let send_boundary = |source: &[f32], aux: &[f32], alpha: &mut Vec<_>| -> Result<()> {
            let rows = subset(
                &view.boundary,
                source,
                aux,
                SubsetOut::Compact(&self.scratch),
                alpha,
            )
            .unwrap_or_default();
            let t = Instant::now();
            send_rows(
                self.out,
                self.out_file.as_deref(),
                &req.job_id,
                req.part,
                &plan.owned,
                &view.boundary.rows,
                &rows,
                ow,
            )?;
            written.set(t.elapsed());
            self.scratch.give(rows);
            Ok(())
        };
        let mut out_rows = Vec::new();
        if boundary_first {
            compute += take_halo(&mut source, &mut aux)?;
            let t = Instant::now();
            send_boundary(&source, &aux, &mut alpha)?;
            self.aggregate_interior(layer, view, &source, &aux, &target, &mut alpha)?;
            compute += t.elapsed();
        } else if final_rows {
            let t = Instant::now();
            self.aggregate_interior(layer, view, &source, &aux, &target, &mut alpha)?;
            compute += t.elapsed();
            compute += take_halo(&mut source, &mut aux)?;
            let t = Instant::now();
            send_boundary(&source, &aux, &mut alpha)?;
            compute += t.elapsed();
        } else {
            out_rows = self.scratch.take(n_owned * ow);
            let t = Instant::now();
            subset(
                &view.interior,
                &source,
                &aux,
                SubsetOut::Into(&mut out_rows, &self.scratch),
                &mut alpha,
            );
            compute += t.elapsed();
            compute += take_halo(&mut source, &mut aux)?;
            let t = Instant::now();
            subset(
                &view.boundary,
                &source,
                &aux,
                SubsetOut::Into(&mut out_rows, &self.scratch),
                &mut alpha,
            );
            compute += t.elapsed();
        }
        self.scratch.give_rows(source);
        self.scratch.give(target);
        tracing::debug!(
            job = %req.job_id,
            part = req.part,
            layer = k,
            transform_ms = ms(transformed),
            chunks_ms = ms(chunked),
            wait_ms = ms(wait),
            place_ms = ms(placed),
            aggregate_ms = ms(compute.saturating_sub(transformed + chunked + placed + written.get())),
            boundary_rows_out_ms = ms(written.get()),
            "graph layer phases"
        );

        let (bytes_sent, send) = self.join(sends)?;
        for (keys, values) in alpha {
            send_output(
                self.out,
                req,
                Body::Attention(AttentionValues {
                    layer: k as u32,
                    heads: h as u32,
                    edges: keys,
                    values: f32_bytes(&values),
                }),
            )?;
        }
        Ok((
            out_rows,
            Measured {
                compute,
                wait,
                send,
                rows_sent,
                bytes_sent,
                bytes_planned: rows_sent * width as u64 * 4,
                boundary_first,
            },
        ))
    }

    /// The last layer's interior rows, each piece of at most 1024 rows written into the
    /// output file (or sent) as soon as it is done, from the pool's threads: the rows
    /// are final, and writing them while the others compute keeps the write off the end
    /// of the job. They are kept nowhere else (no `[owned, out_width]` array is written):
    /// after the last layer only its boundary rows are read from the part's rows.
    fn aggregate_interior(
        &self,
        layer: &dyn AttentionKind,
        view: &RowSplit,
        source: &[f32],
        aux: &[f32],
        target: &[f32],
        alpha: &mut Vec<(Vec<i64>, Vec<f32>)>,
    ) -> Result<()> {
        let ow = layer.out_width();
        let failed: Arc<Mutex<Option<RuntimeError>>> = Arc::default();
        let sink: FinalRowsSink = {
            let (out, file) = (self.out.clone(), self.out_file.clone());
            let (job, part) = (self.req.job_id.clone(), self.req.part);
            let (owned, boundary) = (self.owned.clone(), view.is_boundary.clone());
            let failed = failed.clone();
            Arc::new(move |first: usize, values: &[f32]| {
                // After a failure the rest of the rows stay here: the part fails anyway.
                if lock(&failed).is_some() {
                    return;
                }
                let n = values.len() / ow;
                // The chunk's boundary rows are the interior pass's empty rows.
                let rows: Vec<u32> = (0..n as u32)
                    .filter(|&i| !boundary[first + i as usize])
                    .collect();
                let sent = send_picked_rows(
                    &out,
                    file.as_deref(),
                    &job,
                    part,
                    &owned,
                    first,
                    &rows,
                    values,
                    ow,
                );
                if let Err(e) = sent {
                    lock(&failed).get_or_insert(e);
                }
            })
        };
        self.progress.set_final_rows_sink(Some(sink));
        self.progress.set_final_layer(true);
        aggregate_subset(
            &self.pool,
            layer,
            &view.interior,
            source,
            aux,
            target,
            self.edge_attr.as_ref(),
            SubsetOut::ToSink,
            self.req.want_attention.then_some(alpha),
            self.progress,
        );
        self.progress.set_final_layer(false);
        self.progress.set_final_rows_sink(None);
        let failure = lock(&failed).take();
        failure.map_or(Ok(()), Err)
    }

    /// A layer that reads every node (global attention, GPSConv's global part): runs
    /// `forward` on the pool with a [`PeerCollective`] over the other parts.
    fn global_layer(
        &self,
        k: usize,
        forward: impl FnOnce(&mut dyn Collective) -> distgat_attention::Result<Vec<f32>> + Send,
    ) -> Result<(Vec<f32>, Measured)> {
        let started = Instant::now();
        let mut comm = PeerCollective {
            part: self,
            layer: k as u32,
            step: 0,
            measured: Measured::default(),
            failure: None,
        };
        let result = self.pool.install(|| forward(&mut comm));
        let mut measured = comm.measured;
        let rows = match (result, comm.failure) {
            (Ok(rows), _) => rows,
            // The exchange's own error (cancelled, timed out, a peer's) is the cause.
            (Err(_), Some(failure)) => return Err(failure),
            (Err(e), None) => return Err(e.into()),
        };
        measured.compute = started.elapsed().saturating_sub(measured.wait);
        Ok((rows, measured))
    }

    /// Starts sending `chunks` to part `q`; a failure sets `failed`.
    fn send(
        &self,
        q: u32,
        mut chunks: Vec<RowChunk>,
        failed: &Arc<AtomicBool>,
    ) -> Result<tokio::task::JoinHandle<Result<(u64, Duration)>>> {
        for c in &mut chunks {
            c.target_part = q;
        }
        let (channel, mut moved) = self.links.route(q, &chunks)?;
        let keep = self.links.keep;
        let bytes: u64 = chunks.iter().map(|c| c.encoded_len() as u64).sum();
        let failed = failed.clone();
        let job = self.req.job_id.clone();
        Ok(self.rt.spawn(async move {
            let t = Instant::now();
            let sent = tokio::select! {
                sent = send_chunks(channel, chunks) => sent,
                // Part q moved (its worker was lost) while this send hung: the chunks
                // are kept and were re-sent to its new worker.
                Ok(()) = moved.changed(), if keep => {
                    tracing::warn!(%job, part = q, "part moved while sending to it; its kept rows went to its new worker");
                    return Ok((0, t.elapsed()));
                }
            };
            match sent {
                Ok(()) => Ok::<_, RuntimeError>((bytes, t.elapsed())),
                // Kept for part q's replacement: RerouteJob sends them there.
                Err(status) if keep && receiver_lost(&status) => {
                    tracing::warn!(
                        %job, part = q,
                        "sending rows failed ({}); they are kept for the part's replacement",
                        status.message()
                    );
                    Ok((0, t.elapsed()))
                }
                Err(status) => {
                    failed.store(true, Ordering::Relaxed);
                    Err(transport(format!("sending rows to part {q}"))(status))
                }
            }
        }))
    }

    /// `taken`, or, when it failed, the error of a send that failed first (the cause
    /// worth reporting, not the wait it cut short).
    fn or_send_error<T>(
        &self,
        taken: Result<T>,
        sends: &mut Vec<tokio::task::JoinHandle<Result<(u64, Duration)>>>,
    ) -> Result<T> {
        match taken {
            Ok(t) => Ok(t),
            Err(e) => {
                for s in std::mem::take(sends)
                    .into_iter()
                    .filter(|s| s.is_finished())
                {
                    if let Ok(Err(send_error)) = self.rt.block_on(s) {
                        return Err(send_error);
                    }
                }
                Err(e)
            }
        }
    }

    /// Waits for `sends`: their bytes and the longest one's time.
    fn join(
        &self,
        sends: Vec<tokio::task::JoinHandle<Result<(u64, Duration)>>>,
    ) -> Result<(u64, Duration)> {
        let (mut bytes, mut time) = (0u64, Duration::ZERO);
        for s in sends {
            let (b, took) = self
                .rt
                .block_on(s)
                .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))??;
            bytes += b;
            time = time.max(took);
        }
        Ok((bytes, time))
    }
}

/// The [`Collective`] of one part of a distributed job: every exchange goes to every
/// other part over `HaloExchange.SendRows` (the layer's steps 1, 2, ... in order, so
/// each step's chunks are told apart in the mailbox) and waits for theirs.
struct PeerCollective<'p, 'a> {
    part: &'p Part<'a>,
    layer: u32,
    /// The last step used.
    step: u32,
    measured: Measured,
    /// The runtime error behind a failed exchange (the layer's error is only its text).
    failure: Option<RuntimeError>,
}

impl PeerCollective<'_, '_> {
    /// Sends `chunks` to every other part, then takes `expected` rows of this step from
    /// the mailbox.
    fn exchange(&mut self, chunks: Vec<RowChunk>, expected: u64) -> Result<Vec<RowChunk>> {
        let part = self.part;
        let send_failed = Arc::new(AtomicBool::new(false));
        let mut sends = Vec::new();
        let mut rows = 0u64;
        let mut planned = 0u64;
        if !chunks.is_empty() {
            for q in part.links.peers() {
                // Rows are counted for gathered rows; a partial's words are only bytes.
                rows += chunks
                    .iter()
                    .filter(|c| c.kind == PayloadKind::Gather as i32)
                    .map(|c| c.num_rows as u64)
                    .sum::<u64>();
                planned += chunks.iter().map(|c| c.payload.len() as u64).sum::<u64>();
                sends.push(part.send(q, chunks.clone(), &send_failed)?);
            }
        }
        let waited = Instant::now();
        let taken = part.mailbox.take(
            &part.req.job_id,
            part.req.part,
            self.layer,
            self.step,
            expected,
            part.cancel,
            &send_failed,
            COLLECTIVE_TIMEOUT,
        );
        let taken = part.or_send_error(taken, &mut sends)?;
        self.measured.wait += waited.elapsed();
        let (bytes, time) = part.join(sends)?;
        self.measured.rows_sent += rows;
        self.measured.bytes_sent += bytes;
        self.measured.bytes_planned += planned;
        self.measured.send = self.measured.send.max(time);
        Ok(taken)
    }

    fn chunk(&self, kind: PayloadKind, first: usize, rows: usize, width: usize) -> RowChunk {
        RowChunk {
            job_id: self.part.req.job_id.clone(),
            layer: self.layer,
            step: self.step,
            source_part: self.part.req.part,
            first_row: first as u64,
            num_rows: rows as u32,
            row_width: width as u32,
            kind: kind as i32,
            ..Default::default()
        }
    }

    fn gather_rows(&mut self, own: &[f32], width: usize) -> Result<Vec<f32>> {
        self.step += 1;
        let part = self.part;
        let (n, ids) = (part.num_nodes, &part.own_ids);
        let per_chunk = (MAX_CHUNK_BYTES / (4 * width.max(1))).max(1);
        let chunks: Vec<RowChunk> = ids
            .chunks(per_chunk)
            .enumerate()
            .map(|(i, block)| {
                let first = i * per_chunk;
                RowChunk {
                    nodes: block.iter().map(|&v| v as u32).collect(),
                    payload: f32_bytes(&own[first * width..(first + block.len()) * width]).into(),
                    ..self.chunk(PayloadKind::Gather, first, block.len(), width)
                }
            })
            .collect();
        let received = self.exchange(chunks, (n - ids.len()) as u64)?;
        place_gathered(own, ids, received, n, width, (self.layer, self.step))
    }

    fn gather_bytes(&mut self, own: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        self.step += 1;
        let part = self.part;
        if !own.len().is_multiple_of(4) {
            return Err(RuntimeError::Io(std::io::Error::other(format!(
                "a reduction partial of {} bytes is not whole 4-byte words",
                own.len()
            ))));
        }
        let words = own.len() / 4;
        let per_chunk = MAX_CHUNK_BYTES / 4;
        let chunks: Vec<RowChunk> = own
            .chunks(per_chunk * 4)
            .enumerate()
            .map(|(i, bytes)| RowChunk {
                payload: bytes.to_vec().into(),
                ..self.chunk(PayloadKind::Partial, i * per_chunk, bytes.len() / 4, 1)
            })
            .collect();
        let parts = part.req.peers.len() + 1;
        let received = self.exchange(chunks, ((parts - 1) * words) as u64)?;
        let mut all: Vec<Option<(Vec<u8>, Vec<bool>)>> = vec![None; parts];
        for c in received {
            let bad = |what: String| {
                RuntimeError::InvalidArgument(format!(
                    "layer {} exchange {}: partial from part {}: {what}",
                    self.layer, self.step, c.source_part
                ))
            };
            let p = c.source_part as usize;
            if p >= parts || p == part.req.part as usize {
                return Err(bad("not a peer of this job".into()));
            }
            if c.kind != PayloadKind::Partial as i32 || c.row_width != 1 {
                return Err(bad(format!(
                    "kind {} width {}, expected PARTIAL width 1",
                    c.kind, c.row_width
                )));
            }
            let (first, len) = (c.first_row, c.num_rows as u64);
            if first.checked_add(len).is_none_or(|end| end > words as u64) {
                return Err(bad(format!(
                    "words {first} (+{len}) beyond the partial's {words}"
                )));
            }
            let (buf, got) =
                all[p].get_or_insert_with(|| (vec![0u8; own.len()], vec![false; words]));
            let first = first as usize;
            let range = &mut got[first..first + len as usize];
            if let Some(w) = range.iter().position(|&g| g) {
                return Err(bad(format!("word {} sent twice", first + w)));
            }
            range.fill(true);
            buf[first * 4..first * 4 + c.payload.len()].copy_from_slice(&c.payload);
        }
        let me = part.req.part as usize;
        all.into_iter()
            .enumerate()
            .map(|(p, got)| match (p == me, got) {
                (true, _) => Ok(own.clone()),
                (false, Some((buf, got))) if got.iter().all(|&g| g) => Ok(buf),
                _ if words == 0 => Ok(Vec::new()),
                _ => Err(RuntimeError::InvalidArgument(format!(
                    "layer {} exchange {}: part {p}'s partial never arrived whole",
                    self.layer, self.step
                ))),
            })
            .collect()
    }

    /// Keeps `e` for [`Part::global_layer`] and gives the layer its text.
    fn failed(&mut self, e: RuntimeError) -> distgat_attention::ModelError {
        let text = e.to_string();
        self.failure = Some(e);
        distgat_attention::ModelError::Mismatch(text)
    }
}

impl Collective for PeerCollective<'_, '_> {
    fn num_nodes(&self) -> usize {
        self.part.num_nodes
    }
    fn own_ids(&self) -> &[usize] {
        &self.part.own_ids
    }
    fn all_gather_rows<'x>(
        &mut self,
        own: &'x [f32],
        width: usize,
    ) -> distgat_attention::Result<Cow<'x, [f32]>> {
        if self.part.req.peers.is_empty() {
            return Ok(Cow::Borrowed(own));
        }
        self.gather_rows(own, width)
            .map(Cow::Owned)
            .map_err(|e| self.failed(e))
    }
    fn rows_done(&mut self, rows: usize) {
        self.part.progress.add_entries(rows as u64);
    }
    fn all_gather_bytes(&mut self, own: Vec<u8>) -> distgat_attention::Result<Vec<Vec<u8>>> {
        if self.part.req.peers.is_empty() {
            return Ok(vec![own]);
        }
        self.gather_bytes(own).map_err(|e| self.failed(e))
    }
}

/// Everything a part computes from, however it was obtained.
struct PartInputs {
    /// N: the graph's nodes over all parts (the manifest's).
    num_nodes: usize,
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
            let (dir, shard, origin) =
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
                num_nodes: dir.manifest.graph.rows,
                shard_plan: shard.plan,
                model,
                features,
                edge_attr,
                origin,
            })
        }
    }
}

/// A part kept from neighbourhood build `req.build_id` (no shard): its plan from the
/// build, the model and its feature rows by path (shard source `shared`) or from the
/// coordinator (`stream`).
fn kept_inputs(
    rt: &tokio::runtime::Handle,
    coordinator: &Endpoint,
    bearer: &distgat_proto::Bearer,
    req: &StartJobRequest,
    builds: &super::build::Builds,
) -> Result<PartInputs> {
    for (field, value) in [
        ("partition_dir", &req.partition_dir),
        ("partition_manifest", &req.partition_manifest),
    ] {
        if !value.is_empty() {
            return Err(RuntimeError::InvalidArgument(format!(
                "{field}: a part kept from build {} has no partition; {field} must be empty",
                req.build_id
            )));
        }
    }
    let kept = builds.take_kept(&req.build_id).ok_or_else(|| {
        RuntimeError::NotFound(format!(
            "build_id: this worker keeps no part of build {} (kept parts serve one job)",
            req.build_id
        ))
    })?;
    if kept.plan.part != req.part || kept.num_nodes as u64 != req.num_nodes {
        return Err(RuntimeError::InvalidArgument(format!(
            "part {} of {} nodes asked, but this worker kept part {} of {} nodes of build {}",
            req.part, req.num_nodes, kept.plan.part, kept.num_nodes, req.build_id
        )));
    }
    let n_owned = kept.plan.owned.len();
    let (model, features) = match crate::convert::shard_source_of(req.shard_source)? {
        ShardSource::Shared => (
            Model::load(std::path::Path::new(&req.model))?,
            Features::read_rows(
                std::path::Path::new(&req.features),
                "features",
                &kept.plan.owned,
            )?,
        ),
        ShardSource::Stream => {
            if req.worker_id.is_empty() {
                return Err(RuntimeError::InvalidArgument(
                    "shard_source stream needs worker_id".into(),
                ));
            }
            let got = fetch::inputs(rt, coordinator.connect_lazy(), bearer, req)?;
            let label = PathBuf::from(format!("<coordinator>/model-of-{}.json", req.job_id));
            let model = Model::from_files(&label, got.model)?;
            if got.edge_attr.is_some() {
                return Err(RuntimeError::InvalidArgument(
                    "edge_attr: the coordinator sent edge attributes for a kept build, which \
                     has none"
                        .into(),
                ));
            }
            match got.features {
                Some(f) if f.num_nodes == n_owned => (model, f),
                Some(f) => {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "features: the coordinator sent {} rows, this part owns {n_owned}",
                        f.num_nodes
                    )))
                }
                None => {
                    return Err(RuntimeError::InvalidArgument(
                        "features: the coordinator sent no feature rows".into(),
                    ))
                }
            }
        }
    };
    if model.edge_dim().is_some() {
        return Err(RuntimeError::InvalidArgument(
            "edge_features: the model has edge_dim layers, but a built neighbourhood has no \
             edge attributes"
                .into(),
        ));
    }
    Ok(PartInputs {
        num_nodes: kept.num_nodes,
        shard_plan: kept.plan,
        model,
        features,
        edge_attr: None,
        origin: ShardOrigin::Kept,
    })
}

/// Shard source `shared`: every input opened by the paths of the request.
fn shared_inputs(req: &StartJobRequest) -> Result<PartInputs> {
    let dir = PartitionDir::open(std::path::Path::new(&req.partition_dir))?;
    let model = Model::load(std::path::Path::new(&req.model))?;
    // The entries' input edge ids name attention coefficients and index an edge features
    // file; a job with neither never reads them (8 bytes an entry, not kept).
    let edge_ids = match req.want_attention || model.edge_dim().is_some() {
        true => EdgeIds::Keep,
        false => EdgeIds::Skip,
    };
    let shard = dir.load_shard_with(req.part, edge_ids)?;
    let plan = shard.plan;
    let features = match shard.features {
        Some(f) => f,
        None => {
            if req.features.is_empty() {
                return Err(RuntimeError::InvalidArgument(
                    "features: the shards carry no feature rows, so a features file is needed"
                        .into(),
                ));
            }
            // Only this part's rows, read in one pass over the file in bounded blocks: a
            // worker never holds (or first-touches the pages of) the whole features file.
            Features::read_rows(std::path::Path::new(&req.features), "features", &plan.owned)?
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
        num_nodes: dir.manifest.graph.rows,
        shard_plan: plan,
        model,
        features,
        edge_attr,
        origin: ShardOrigin::Shared,
    })
}

/// Sends local owned rows `first + i` for `i` in `rows` (increasing), row `i` of `values`
/// for local row `first + i` (global ids from `owned`), in messages of at most
/// [`MAX_CHUNK_BYTES`] of values, each built straight from `values` (no gathered copy of
/// all the rows first: at 10M nodes that was 640 MB of fresh memory per worker).
///
/// With `file` (`out_file`), each chunk of rows is written into it instead and only
/// their ids are sent (`rows_written`).
#[allow(clippy::too_many_arguments)]
fn send_picked_rows(
    out: &mpsc::Sender<OutputChunk>,
    file: Option<&OutputFile>,
    job_id: &str,
    part: u32,
    owned: &[u64],
    first: usize,
    rows: &[u32],
    values: &[f32],
    width: usize,
) -> Result<()> {
    let per_chunk = (MAX_CHUNK_BYTES / (4 * width.max(1))).max(1);
    let node = |i: u32| owned[first + i as usize];
    if let Some(file) = file {
        for block in rows.chunks(per_chunk) {
            file.write_picked(owned, first, block, values)?;
            let nodes = block.iter().map(|&i| node(i)).collect();
            send_body(out, job_id, part, Body::RowsWritten(RowsWritten { nodes }))?;
        }
        return Ok(());
    }
    for block in rows.chunks(per_chunk) {
        let mut bytes = vec![0u8; block.len() * width * 4];
        for (dst, &r) in bytes.chunks_exact_mut(width * 4).zip(block) {
            let row = &values[r as usize * width..(r as usize + 1) * width];
            for (d, v) in dst.chunks_exact_mut(4).zip(row) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        let rows = Body::Rows(OutputRows {
            nodes: block.iter().map(|&i| node(i)).collect(),
            width: width as u32,
            values: bytes,
        });
        send_body(out, job_id, part, rows)?;
    }
    Ok(())
}

/// Sends output rows for local owned rows `local` (increasing; node `owned[r]` for row
/// `r`), row `k` of `values` (`[local.len(), width]`) for `local[k]`, in messages of at
/// most [`MAX_CHUNK_BYTES`] of values.
/// With `file` (`out_file`), the rows are written into it instead and only their ids
/// are sent (`rows_written`).
#[allow(clippy::too_many_arguments)]
fn send_rows(
    out: &mpsc::Sender<OutputChunk>,
    file: Option<&OutputFile>,
    job_id: &str,
    part: u32,
    owned: &[u64],
    local: &[u32],
    values: &[f32],
    width: usize,
) -> Result<()> {
    let per_chunk = (MAX_CHUNK_BYTES / (4 * width.max(1))).max(1);
    for (rows_of, vals) in local
        .chunks(per_chunk)
        .zip(values.chunks(per_chunk * width.max(1)))
    {
        let nodes: Vec<u64> = rows_of.iter().map(|&r| owned[r as usize]).collect();
        if let Some(file) = file {
            file.write_compact(owned, rows_of, vals)?;
            send_body(out, job_id, part, Body::RowsWritten(RowsWritten { nodes }))?;
            continue;
        }
        let rows = Body::Rows(OutputRows {
            nodes,
            width: width as u32,
            values: f32_bytes(vals),
        });
        send_body(out, job_id, part, rows)?;
    }
    Ok(())
}

fn send_output(out: &mpsc::Sender<OutputChunk>, req: &StartJobRequest, body: Body) -> Result<()> {
    send_body(out, &req.job_id, req.part, body)
}

/// One message of part `part`'s PushOutput stream; blocks while the stream is full.
fn send_body(out: &mpsc::Sender<OutputChunk>, job_id: &str, part: u32, body: Body) -> Result<()> {
    out.blocking_send(OutputChunk {
        job_id: job_id.to_string(),
        part,
        body: Some(body),
    })
    .map_err(|_| RuntimeError::Cancelled("the output stream to the coordinator closed".into()))
}

/// Little-endian bytes of `values` (one pass, no per-element iterator chain).
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    extend_f32_bytes(&mut out, values);
    out
}

/// Appends the little-endian bytes of `values` to `out`: one copy on a little-endian
/// machine (the bytes of an `f32` slice are its values' little-endian bytes there).
fn extend_f32_bytes(out: &mut Vec<u8>, values: &[f32]) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(values));
    } else {
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
}

/// Decodes little-endian f32 `bytes` into `dst` (same element count): one copy on a
/// little-endian machine (the bytes of an `f32` slice are its values' little-endian bytes
/// there; `bytes` need not be aligned).
pub(crate) fn read_f32s(bytes: &[u8], dst: &mut [f32]) {
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice_mut::<f32, u8>(dst).copy_from_slice(bytes);
        return;
    }
    for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Splits the rows `rows` (local ids) into chunks of at most [`MAX_CHUNK_BYTES`] payload,
/// each row (`row(r)`, `width` values) copied once, straight into its chunk's payload
/// bytes; the chunks are built in parallel on `pool` (at R-MAT 1M/10M a part sends
/// 79 MB of rows a layer, which its peer waits for).
fn row_chunks<'s>(
    pool: &rayon::ThreadPool,
    req: &StartJobRequest,
    layer: u32,
    rows: &[u32],
    width: usize,
    row: impl Fn(usize) -> &'s [f32] + Sync,
    kind: PayloadKind,
) -> Vec<RowChunk> {
    use rayon::prelude::*;
    let per_chunk = (MAX_CHUNK_BYTES / (4 * width.max(1))).max(1);
    pool.install(|| {
        rows.par_chunks(per_chunk)
            .enumerate()
            .map(|(i, block)| {
                let mut payload = Vec::with_capacity(block.len() * width * 4);
                for &r in block {
                    extend_f32_bytes(&mut payload, row(r as usize));
                }
                RowChunk {
                    job_id: req.job_id.clone(),
                    layer,
                    source_part: req.part,
                    first_row: (i * per_chunk) as u64,
                    num_rows: block.len() as u32,
                    row_width: width as u32,
                    kind: kind as i32,
                    payload: payload.into(),
                    ..Default::default()
                }
            })
            .collect()
    })
}

/// Each owner's block of halo slots: from its first slot, the run of slots it owns (the
/// plan groups halo rows by owner). Found once per part: a chunk's check is then a
/// lookup (it was a scan of the block per chunk, 1-2 s a layer at 100M edges).
fn halo_blocks(halo_owner: &[u32]) -> HashMap<u32, std::ops::Range<usize>> {
    let mut blocks: HashMap<u32, std::ops::Range<usize>> = HashMap::new();
    let mut i = 0;
    while i < halo_owner.len() {
        let o = halo_owner[i];
        let len = halo_owner[i..].iter().take_while(|&&x| x == o).count();
        blocks.entry(o).or_insert(i..i + len);
        i += len;
    }
    blocks
}

/// All `n` rows of width `width` in node order (row-major, f32): this part's `own` rows
/// (the rows of `own_ids`, in that order) and the rows every other part sent in
/// `received` (GATHER chunks naming their nodes). `at` is (layer, exchange step), for the
/// errors. Errors: a chunk of another kind or width, node ids not matching its rows, a
/// payload not `rows x width x 4` bytes, a node beyond `n` or sent twice, a node whose row
/// never arrived (each naming the layer, the exchange and the sending part).
fn place_gathered(
    own: &[f32],
    own_ids: &[usize],
    received: Vec<RowChunk>,
    n: usize,
    width: usize,
    at: (u32, u32),
) -> Result<Vec<f32>> {
    let (layer, step) = at;
    let mut all = vec![0f32; n * width];
    let mut filled = vec![false; n];
    for (i, &v) in own_ids.iter().enumerate() {
        all[v * width..(v + 1) * width].copy_from_slice(&own[i * width..(i + 1) * width]);
        filled[v] = true;
    }
    for c in received {
        let bad = |what: String| {
            RuntimeError::InvalidArgument(format!(
                "layer {layer} exchange {step}: rows from part {}: {what}",
                c.source_part
            ))
        };
        if c.kind != PayloadKind::Gather as i32 || c.row_width as usize != width {
            return Err(bad(format!(
                "kind {} width {}, expected GATHER width {width}",
                c.kind, c.row_width
            )));
        }
        if c.nodes.len() != c.num_rows as usize {
            return Err(bad(format!(
                "{} node ids for {} rows",
                c.nodes.len(),
                c.num_rows
            )));
        }
        if c.payload.len() != c.nodes.len() * width * 4 {
            return Err(bad(format!(
                "{} payload bytes for {} rows of width {width}",
                c.payload.len(),
                c.nodes.len()
            )));
        }
        for (i, &v) in c.nodes.iter().enumerate() {
            let v = v as usize;
            if v >= n || std::mem::replace(&mut filled[v], true) {
                return Err(bad(format!(
                    "node {v} is beyond the {n} nodes or was sent twice"
                )));
            }
            read_f32s(
                &c.payload[i * width * 4..(i + 1) * width * 4],
                &mut all[v * width..(v + 1) * width],
            );
        }
    }
    if let Some(v) = filled.iter().position(|&f| !f) {
        return Err(RuntimeError::InvalidArgument(format!(
            "layer {layer} exchange {step}: the row of node {v} never arrived"
        )));
    }
    Ok(all)
}

/// Copies received halo rows into their local slots of `source` (transforming raw rows
/// first, with the same transform the owner runs, so the bits are the owner's).
/// Returns the chunks, whose payload buffers can then be reused
/// ([`super::mailbox::Mailbox::recycle`]).
fn place_halo(
    layer: &dyn AttentionKind,
    plan: &PartPlan,
    halo_blocks: &HashMap<u32, std::ops::Range<usize>>,
    chunks: Vec<RowChunk>,
    raw: bool,
    pool: &rayon::ThreadPool,
    source: &mut [f32],
) -> Result<Vec<RowChunk>> {
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
    let expected_kind = if raw {
        PayloadKind::Raw
    } else {
        PayloadKind::Transformed
    };
    // Every chunk checked first (one pass over the slots), then the rows copied on the
    // pool: each chunk fills its own run of slots (at 100M edges a part receives 5M rows,
    // 640 MB, a layer).
    let mut runs: Vec<(usize, RowChunk)> = Vec::with_capacity(chunks.len());
    for c in chunks {
        let bad = |what: String| {
            RuntimeError::InvalidArgument(format!("halo chunk from part {}: {what}", c.source_part))
        };
        if c.kind != expected_kind as i32 || c.row_width as usize != width {
            return Err(bad(format!(
                "kind {} width {}, expected {:?} width {width}",
                c.kind, c.row_width, expected_kind
            )));
        }
        let block = halo_blocks
            .get(&c.source_part)
            .ok_or_else(|| bad("this part needs no rows from it".into()))?;
        let (start, block_len) = (block.start, block.len());
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
        if c.payload.len() != n * width * 4 {
            return Err(bad(format!(
                "{} payload bytes for {n} rows of width {width}",
                c.payload.len()
            )));
        }
        for i in 0..n {
            if std::mem::replace(&mut filled[start + first + i], true) {
                return Err(bad(format!("row {} sent twice", first + i)));
            }
        }
        runs.push((start + first, c));
    }
    if let Some(slot) = filled.iter().position(|&f| !f) {
        return Err(RuntimeError::InvalidArgument(format!(
            "halo row of node {} (owner part {}) never arrived",
            plan.halo[slot], plan.halo_owner[slot]
        )));
    }
    // The runs are disjoint (each slot filled once) and cover every slot: in slot order,
    // each takes its rows off the front of what is left.
    runs.sort_unstable_by_key(|(slot, _)| *slot);
    let mut rest: &mut [f32] = if raw {
        &mut x_halo
    } else {
        &mut source[n_owned * sw..(n_owned + n_halo) * sw]
    };
    let mut copies = Vec::with_capacity(runs.len());
    let mut at = 0;
    for (slot, c) in &runs {
        debug_assert_eq!(*slot, at, "the runs tile the halo slots");
        at += c.num_rows as usize;
        let (dst, tail) = std::mem::take(&mut rest).split_at_mut(c.num_rows as usize * width);
        copies.push((dst, &c.payload[..]));
        rest = tail;
    }
    pool.install(|| {
        use rayon::prelude::*;
        copies
            .into_par_iter()
            .for_each(|(dst, bytes)| read_f32s(bytes, dst));
    });
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
    Ok(runs.into_iter().map(|(_, c)| c).collect())
}

/// A graph layer's input rows (`[owned, F]`).
enum LayerInput<'a> {
    /// Taken: freed for reuse (the output rows) once transformed and sent.
    Owned(Vec<f32>),
    /// Still needed after the layer (GPSConv's global part reads it).
    Borrowed(&'a [f32]),
}

/// Where [`aggregate_subset`] puts a subset's rows.
enum SubsetOut<'a> {
    /// Into the part's `[owned, out_width]` rows: in place for an
    /// [in-place](Subset::in_place) subset, else through a buffer from the scratch,
    /// scattered by owned row.
    Into(&'a mut [f32], &'a Scratch),
    /// Into a `[subset rows, out_width]` buffer from the scratch, returned (not for an
    /// in-place subset).
    Compact(&'a Scratch),
    /// Only to the progress's final-rows sink, in small pieces
    /// ([`aggregate_to_sink`]; an in-place subset of the last layer): kept nowhere.
    ToSink,
}

/// Aggregates the rows of `subset` into `out`; returns the rows with
/// [`SubsetOut::Compact`] (`None` for an empty subset).
#[allow(clippy::too_many_arguments)]
fn aggregate_subset(
    pool: &rayon::ThreadPool,
    layer: &dyn AttentionKind,
    subset: &Subset,
    source: &[f32],
    source_aux: &[f32],
    target: &[f32],
    edge_attr: Option<&EdgeAttr>,
    out: SubsetOut<'_>,
    alpha: Option<&mut Vec<(Vec<i64>, Vec<f32>)>>,
    progress: &Progress,
) -> Option<Vec<f32>> {
    let (h, ow, tw) = (layer.heads(), layer.out_width(), layer.target_width());
    let n = subset.rows.len();
    if n == 0 {
        return None;
    }
    // In place: the CSR's rows are the owned rows, so the kernel reads `target` and writes
    // `out` as they are. Else each subset row's target row is gathered, and its output
    // row scattered after.
    let rows_target = if subset.in_place {
        Vec::new()
    } else {
        let mut t = Vec::with_capacity(n * tw);
        for &r in &subset.rows {
            t.extend_from_slice(&target[r as usize * tw..(r as usize + 1) * tw]);
        }
        t
    };
    // Edge attributes of the subset's entries (the owner holds every incoming edge of
    // its rows, so the self-loop fill is computed here, in the engine's order).
    // Kept for the later layers that build the same ones (`Subset::attr`).
    let entry_attr = match (layer.edge_dim(), edge_attr) {
        (Some(d), Some(ea)) => {
            let key = (d, layer.fill_value());
            let mut kept = lock(&subset.attr);
            match &*kept {
                Some((k, values)) if *k == key => Some(values.clone()),
                _ => {
                    // The other attributes go first, not to be in memory with the new ones.
                    *kept = None;
                    let (keys, values) = match ea {
                        EdgeAttr::Shard(f) => (&subset.local_keys, &f.values),
                        EdgeAttr::File(f) => (&subset.keys, &f.values),
                    };
                    let built = Arc::new(pool.install(|| {
                        entry_edge_attr(
                            &subset.csr.row_ptr,
                            keys,
                            d,
                            layer.fill_value(),
                            values,
                            Execution::Parallel,
                        )
                    }));
                    *kept = Some((key, built.clone()));
                    Some(built)
                }
            }
        }
        _ => None,
    };
    let mut coefficients = alpha
        .as_ref()
        .map(|_| vec![0f32; subset.csr.num_entries() * h]);
    let inputs = RowInputs {
        source,
        source_aux,
        target: if subset.in_place {
            target
        } else {
            &rows_target
        },
        edge_attr: entry_attr.as_deref().map(Vec::as_slice),
    };
    let aggregate = |rows_out: &mut [f32], coefficients: Option<&mut [f32]>| {
        pool.install(|| {
            aggregate_into(
                layer,
                &subset.csr,
                &inputs,
                Execution::Parallel,
                rows_out,
                coefficients,
                Some(progress),
            )
        })
    };
    let kept = match out {
        SubsetOut::Into(out, _) if subset.in_place => {
            aggregate(out, coefficients.as_deref_mut());
            None
        }
        SubsetOut::Into(out, scratch) => {
            let mut rows_out = scratch.take(n * ow);
            aggregate(&mut rows_out, coefficients.as_deref_mut());
            for (i, &r) in subset.rows.iter().enumerate() {
                out[r as usize * ow..(r as usize + 1) * ow]
                    .copy_from_slice(&rows_out[i * ow..(i + 1) * ow]);
            }
            scratch.give(rows_out);
            None
        }
        SubsetOut::ToSink => {
            assert!(
                subset.in_place,
                "only an in-place subset's rows go to the sink"
            );
            pool.install(|| {
                aggregate_to_sink(
                    layer,
                    &subset.csr,
                    &inputs,
                    Execution::Parallel,
                    coefficients.as_deref_mut(),
                    progress,
                )
            });
            None
        }
        SubsetOut::Compact(scratch) => {
            assert!(
                !subset.in_place,
                "an in-place subset has no rows of its own"
            );
            let mut rows_out = scratch.take(n * ow);
            aggregate(&mut rows_out, coefficients.as_deref_mut());
            Some(rows_out)
        }
    };
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
    kept
}

#[cfg(test)]
mod tests {
    use super::{f32_bytes, kernel_threads, max_threads, read_f32s, row_chunks};
    use distgat_proto::v1::{PayloadKind, StartJobRequest};

    /// The wire bytes of rows are each value's little-endian IEEE 754 bits, whatever the
    /// value (signed zero, subnormal, infinities, a NaN payload), and decode back to the
    /// same bits.
    #[test]
    fn row_bytes_are_little_endian_bits_and_round_trip() {
        let values = [
            0.0f32,
            -0.0,
            1.5,
            -3.25e-41,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::from_bits(0x7fc0_1234),
            f32::MAX,
        ];
        let expected: Vec<u8> = values
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect();
        assert_eq!(f32_bytes(&values), expected);
        // From aligned bytes, and from bytes one past an alignment (a payload inside a
        // received buffer need not be aligned for f32).
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&expected);
        for bytes in [&expected[..], &shifted[1..]] {
            let mut back = [0f32; 8];
            read_f32s(bytes, &mut back);
            assert!(back
                .iter()
                .zip(&values)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    /// Halo chunks hold the asked rows in the asked order, cut at the chunk size, each
    /// chunk numbered by its first row, whether built by one thread or several.
    #[test]
    fn row_chunks_hold_the_rows_in_order() {
        let width = 3000; // 12 kB rows: a chunk (MAX_CHUNK_BYTES, 1 MiB) holds 87 of them
        let source: Vec<f32> = (0..1000 * width).map(|i| i as f32 * 0.5 - 7.0).collect();
        let rows: Vec<u32> = (0..1000u32).rev().step_by(3).collect();
        let req = StartJobRequest {
            job_id: "j".into(),
            part: 1,
            ..Default::default()
        };
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let chunks = row_chunks(
                &pool,
                &req,
                2,
                &rows,
                width,
                |r| &source[r * width..(r + 1) * width],
                PayloadKind::Transformed,
            );
            assert!(chunks.len() > 1);
            let mut first = 0u64;
            let mut payload = Vec::new();
            for c in &chunks {
                assert_eq!((c.first_row, c.layer, c.source_part), (first, 2, 1));
                assert_eq!(c.payload.len(), c.num_rows as usize * width * 4);
                first += u64::from(c.num_rows);
                payload.extend_from_slice(&c.payload);
            }
            let expected: Vec<u8> = rows
                .iter()
                .flat_map(|&r| f32_bytes(&source[r as usize * width..(r as usize + 1) * width]))
                .collect();
            assert_eq!(first as usize, rows.len());
            assert!(payload == expected);
        }
    }

    /// Received halo rows land in their slots after the owned rows whatever order the
    /// chunks arrive in, the owned rows untouched; a row sent twice, a missing row, rows
    /// beyond the sender's block, a short payload and a sender with no block are errors
    /// naming what is wrong.
    #[test]
    fn halo_rows_land_in_their_slots_and_bad_chunks_are_refused() {
        use distgat_proto::v1::RowChunk;
        let (f, c) = (4, 2); // transformed rows of width 2
        let layer = distgat_attention::GatConv::from_pyg(
            f,
            1,
            c,
            true,
            0.2,
            true,
            &[0.5; 8],
            vec![1.0; 2],
            vec![1.0; 2],
            Vec::new(),
        );
        let plan = distgat_partition::PartPlan {
            part: 0,
            owned: vec![0, 1],
            halo: vec![10, 11, 12, 13, 14],
            halo_owner: vec![1, 1, 1, 2, 2],
            row_ptr: vec![0, 0, 0],
            col: Vec::new(),
            edge_id: Vec::new(),
            send: Vec::new(),
        };
        let halo_blocks = super::halo_blocks(&plan.halo_owner);
        assert_eq!(
            halo_blocks,
            std::collections::HashMap::from([(1u32, 0..3), (2, 3..5)])
        );
        let chunk = |from: u32, first: u64, rows: &[f32]| RowChunk {
            source_part: from,
            first_row: first,
            num_rows: (rows.len() / c) as u32,
            row_width: c as u32,
            kind: PayloadKind::Transformed as i32,
            payload: f32_bytes(rows).into(),
            ..Default::default()
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let place = |chunks: Vec<RowChunk>| {
            let mut source = vec![f32::NAN; 7 * c];
            source[..4].copy_from_slice(&[-1.0, -2.0, -3.0, -4.0]);
            super::place_halo(
                &layer,
                &plan,
                &halo_blocks,
                chunks,
                false,
                &pool,
                &mut source,
            )
            .map(|_| source)
            .map_err(|e| e.to_string())
        };
        let good = || {
            vec![
                chunk(2, 0, &[13.0, 13.5, 14.0, 14.5]),
                chunk(1, 1, &[11.0, 11.5, 12.0, 12.5]),
                chunk(1, 0, &[10.0, 10.5]),
            ]
        };
        let got = place(good()).unwrap();
        let want = [
            -1.0, -2.0, -3.0, -4.0, 10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0, 13.5,
        ];
        assert_eq!(&got[..12], &want);
        assert_eq!(&got[12..], &[14.0, 14.5]);

        let mut twice = good();
        twice.push(chunk(1, 2, &[12.0, 12.5]));
        assert!(place(twice).unwrap_err().contains("row 2 sent twice"));
        let mut missing = good();
        missing.pop();
        let err = place(missing).unwrap_err();
        assert!(
            err.contains("node 10 (owner part 1) never arrived"),
            "{err}"
        );
        let mut beyond = good();
        beyond[0] = chunk(2, 1, &[13.0, 13.5, 14.0, 14.5]);
        assert!(place(beyond).unwrap_err().contains("beyond its block of 2"));
        let mut short = good();
        short[2].payload = short[2].payload.slice(..4);
        assert!(place(short)
            .unwrap_err()
            .contains("4 payload bytes for 1 rows"));
        let mut stranger = good();
        stranger.push(chunk(3, 0, &[0.0, 0.0]));
        assert!(place(stranger)
            .unwrap_err()
            .contains("part 3: this part needs no rows"));
    }

    /// A gathered exchange puts every part's rows at their nodes, whatever order the
    /// chunks arrive in; a short payload, a node sent twice or beyond the nodes, ids not
    /// matching the rows, another kind and a row that never arrived are errors naming the
    /// sending part or the node.
    #[test]
    fn gathered_rows_land_at_their_nodes_and_bad_chunks_are_refused() {
        use distgat_proto::v1::RowChunk;
        let width = 2;
        let chunk = |from: u32, nodes: &[u32], rows: &[f32]| RowChunk {
            source_part: from,
            num_rows: nodes.len() as u32,
            row_width: width as u32,
            kind: PayloadKind::Gather as i32,
            nodes: nodes.to_vec(),
            payload: f32_bytes(rows).into(),
            ..Default::default()
        };
        let own = [1.0, 1.5, 4.0, 4.5];
        let place = |chunks: Vec<RowChunk>| {
            super::place_gathered(&own, &[1, 4], chunks, 5, width, (1, 3))
                .map_err(|e| e.to_string())
        };
        let good = || {
            vec![
                chunk(2, &[3], &[3.0, 3.5]),
                chunk(1, &[2, 0], &[2.0, 2.5, 0.0, 0.5]),
            ]
        };
        assert_eq!(
            place(good()).unwrap(),
            [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
        );
        let mut short = good();
        short[1].payload = short[1].payload.slice(..12);
        let err = place(short).unwrap_err();
        assert!(
            err.contains("layer 1 exchange 3: rows from part 1: 12 payload bytes for 2 rows"),
            "{err}"
        );
        let mut twice = good();
        twice[0].nodes = vec![4];
        assert!(place(twice).unwrap_err().contains("node 4 is beyond"));
        let mut beyond = good();
        beyond[0].nodes = vec![5];
        assert!(place(beyond)
            .unwrap_err()
            .contains("node 5 is beyond the 5 nodes"));
        let mut ids = good();
        ids[1].nodes.pop();
        assert!(place(ids).unwrap_err().contains("1 node ids for 2 rows"));
        let mut kind = good();
        kind[0].kind = PayloadKind::Transformed as i32;
        assert!(place(kind).unwrap_err().contains("expected GATHER width 2"));
        let mut missing = good();
        missing.pop();
        let err = place(missing).unwrap_err();
        assert!(err.contains("the row of node 0 never arrived"), "{err}");
    }

    /// 0 (the API's default) is every core; a request is capped at the cores and never 0.
    #[test]
    fn zero_threads_means_every_core_and_requests_are_capped() {
        let cores = max_threads();
        assert_eq!(kernel_threads(0), cores);
        assert_eq!(kernel_threads(1), 1);
        assert_eq!(kernel_threads(u32::MAX), cores);
    }
}
