//! The attention-kind seam: the one interface through which the engine, the partitioner
//! and the runtime run a layer without asking which PyG class it is.
//!
//! Kinds differ in three things only:
//! 1. **Rows.** A dense transform turns each input row `x[n]` into a *source row* (what
//!    an edge `n -> i` reads: GAT `z ‖ s_src`, GATv2 `x_l`, Transformer `k ‖ v`) and a
//!    *target row* (what only the owner of `n` needs: GAT `s_dst ‖ res(x)`, GATv2
//!    `x_r ‖ res(x)`, Transformer `q ‖ lin_skip(x)`). A halo row carries the source row,
//!    or the raw input row when that is narrower ([`AttentionKind::halo_payload`]).
//! 2. **Rows aggregated.** [`AttentionKind::aggregate_rows`] scores, softmaxes and sums one
//!    destination row at a time over its incoming CSR entries (no `E x H x C` tensor).
//! 3. **Epilogue.** Bias, residual / root weight, beta gate, head concat or mean: done per
//!    row inside `aggregate_rows` from the target row.
//!
//! [`transform_into`] and [`aggregate_into`] drive any kind over row blocks and
//! edge-balanced chunks, sequentially or on rayon, with bits that never depend on either.

use std::fmt::Debug;

use distgat_graph::IncomingCsr;
use rayon::prelude::*;

use crate::dense::for_each_row_block;
use crate::exec::Execution;
use crate::progress::Progress;

/// PyG's softmax denominator epsilon (`torch_geometric.utils.softmax`).
pub const SOFTMAX_EPS: f32 = 1e-16;

/// Target edges per parallel work item: large enough to amortise scheduling, small enough
/// to give rayon many items to balance.
pub const EDGES_PER_CHUNK: usize = 16 * 1024;

/// How a self loop's edge attribute is made when loops are added (PyG's `fill_value` of
/// `add_self_loops`): a reduction over the node's other incoming edge attributes (0 for a
/// node without any), or a constant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FillValue {
    Mean,
    /// `'add'` (and its alias `'sum'`).
    Add,
    Max,
    Min,
    Mul,
    Constant(f32),
}

/// What a halo row carries for a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaloPayload {
    /// The raw input row (`in_features` floats); the receiver transforms it.
    Raw,
    /// The source row (`source_width` floats).
    Source,
}

/// One attention layer, ready to run. Implemented by [`crate::GatConv`],
/// [`crate::GatV2Conv`] and [`crate::TransformerConv`].
pub trait AttentionKind: Send + Sync + Debug {
    /// PyG's class name (`"GATConv"`, ...).
    fn kind(&self) -> &'static str;
    /// Width of the input rows.
    fn in_features(&self) -> usize;
    /// Attention heads: the width of the coefficient rows.
    fn heads(&self) -> usize;
    /// Width of the output rows.
    fn out_width(&self) -> usize;
    /// PyG's `add_self_loops` (always false for TransformerConv).
    fn add_self_loops(&self) -> bool;
    /// `Some(D)` when the layer reads `D` edge attributes per edge (PyG's `edge_dim`).
    fn edge_dim(&self) -> Option<usize>;
    /// How added self loops get their edge attribute.
    fn fill_value(&self) -> FillValue;
    /// Width of a source row.
    fn source_width(&self) -> usize;
    /// Width of a target row.
    fn target_width(&self) -> usize;
    /// Transforms one block of input rows `x` (`[m, in_features]`) into `source`
    /// (`[m, source_width]`) and `target` (`[m, target_width]`). Each row's bits depend
    /// only on that input row.
    fn transform_block(&self, x: &[f32], source: &mut [f32], target: &mut [f32]);
    /// Aggregates CSR rows `rows` into `out` (`[rows.len(), out_width]`) and, when asked,
    /// writes their coefficients into `alpha` (`[entries of those rows, heads]`).
    fn aggregate_rows(
        &self,
        csr: &IncomingCsr,
        inputs: &RowInputs<'_>,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        alpha: Option<&mut [f32]>,
        scratch: &mut Scratch,
    );

    /// Width of an optional compact per-source array derived from the source rows (GAT:
    /// the `H` source scores, read by every entry in a pass of their own, so they are
    /// kept dense instead of one cache line per row). 0 when the kind has none.
    fn source_aux_width(&self) -> usize {
        0
    }

    /// Fills `aux` (`[rows, source_aux_width]`) from `source` (`[rows, source_width]`).
    fn fill_source_aux(&self, source: &[f32], aux: &mut [f32]) {
        let _ = (source, aux);
    }

    /// What a halo row should carry: whichever of the raw input row and the source row is
    /// narrower (invariant 2: rows, not edges, and the smaller payload).
    fn halo_payload(&self) -> HaloPayload {
        if self.in_features() < self.source_width() {
            HaloPayload::Raw
        } else {
            HaloPayload::Source
        }
    }
}

/// The inputs of [`AttentionKind::aggregate_rows`].
pub struct RowInputs<'a> {
    /// Source rows `[num_sources, source_width]`, indexed by CSR column.
    pub source: &'a [f32],
    /// `[num_sources, source_aux_width]` from [`source_aux`] (empty for kinds without).
    pub source_aux: &'a [f32],
    /// Target rows `[csr rows, target_width]`, indexed by CSR row.
    pub target: &'a [f32],
    /// Edge attributes `[csr entries, edge_dim]`, indexed by CSR entry (self loops
    /// included, filled by [`crate::edge_attr::entry_edge_attr`]); `None` without `edge_dim`.
    pub edge_attr: Option<&'a [f32]>,
}

/// Per-thread scratch reused across rows; kinds size the vectors as they need.
#[derive(Debug, Default)]
pub struct Scratch {
    /// `[degree, heads]` scores, then softmax weights, of the current row.
    pub weights: Vec<f32>,
    /// `[heads * channels]` weighted sum.
    pub acc: Vec<f32>,
    /// `[heads]`
    pub max: Vec<f32>,
    /// `[heads]`
    pub sum: Vec<f32>,
    /// Edge embedding of one entry (`[heads * channels]`).
    pub edge: Vec<f32>,
    /// Kind-specific row buffer.
    pub row: Vec<f32>,
}

/// The compact per-source array of `layer` for `source` (`[rows, source_width]`); empty
/// for kinds without one. In blocks of rows on the current rayon pool with
/// [`Execution::Parallel`] ([`fill_source_aux_in`]).
pub fn source_aux(layer: &dyn AttentionKind, source: &[f32], exec: Execution) -> Vec<f32> {
    let (sw, aw) = (layer.source_width(), layer.source_aux_width());
    let rows = source.len().checked_div(sw).unwrap_or(0);
    let mut aux = vec![0f32; rows * aw];
    fill_source_aux_in(layer, source, &mut aux, exec);
    aux
}

/// [`AttentionKind::fill_source_aux`] of `source` (`[rows, source_width]`) into `aux`
/// (`[rows, source_aux_width]`) in blocks of
/// [`ROWS_PER_BLOCK`](crate::dense::ROWS_PER_BLOCK) rows, in parallel on the current
/// rayon pool with [`Execution::Parallel`]. A row's aux depends on that row only, so the
/// values are those of one call over all rows. (At 1M rows of 512 bytes one thread took
/// about 70 ms of the layer's wall time, with the other core idle.)
pub fn fill_source_aux_in(
    layer: &dyn AttentionKind,
    source: &[f32],
    aux: &mut [f32],
    exec: Execution,
) {
    use crate::dense::ROWS_PER_BLOCK;
    let (sw, aw) = (layer.source_width(), layer.source_aux_width());
    if aw == 0 || sw == 0 {
        return;
    }
    let work = source
        .chunks(ROWS_PER_BLOCK * sw)
        .zip(aux.chunks_mut(ROWS_PER_BLOCK * aw));
    match exec {
        Execution::Sequential => work.for_each(|(s, a)| layer.fill_source_aux(s, a)),
        Execution::Parallel => work
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(s, a)| layer.fill_source_aux(s, a)),
    }
}

/// Transforms `x` (`[rows, in_features]`) into `source` (`[rows, source_width]`) and
/// `target` (`[rows, target_width]`) in fixed blocks of rows.
pub fn transform_into(
    layer: &dyn AttentionKind,
    x: &[f32],
    exec: Execution,
    source: &mut [f32],
    target: &mut [f32],
) {
    let (f, sw, tw) = (
        layer.in_features(),
        layer.source_width(),
        layer.target_width(),
    );
    let rows = x.len().checked_div(f).unwrap_or(0);
    assert_eq!(x.len(), rows * f, "transform: x is not [rows, in_features]");
    assert_eq!(source.len(), rows * sw, "transform: source buffer size");
    assert_eq!(target.len(), rows * tw, "transform: target buffer size");
    for_each_row_block(x, f, [(source, sw), (target, tw)], exec, &|x, s, t| {
        layer.transform_block(x, s, t)
    });
}

/// [`transform_into`] with the source rows written over the input rows: `x`
/// (`[rows, in_features]`) becomes `[rows, source_width]` in place, which needs
/// `source_width == in_features` (panics otherwise). Each block of
/// [`ROWS_PER_BLOCK`](crate::dense::ROWS_PER_BLOCK) rows is transformed into a per-thread
/// buffer by the same call as [`transform_into`] makes, then copied over its own input
/// rows, so the bits are the same. It saves a `[rows, source_width]` allocation, whose
/// fresh pages cost a fault and a kernel zero fill each.
pub fn transform_in_place(
    layer: &dyn AttentionKind,
    x: &mut [f32],
    exec: Execution,
    target: &mut [f32],
) {
    use crate::dense::ROWS_PER_BLOCK;
    let (f, sw, tw) = (
        layer.in_features(),
        layer.source_width(),
        layer.target_width(),
    );
    assert_eq!(
        f, sw,
        "transform in place: source rows as wide as the input"
    );
    let rows = x.len().checked_div(f).unwrap_or(0);
    assert_eq!(x.len(), rows * f, "transform: x is not [rows, in_features]");
    assert_eq!(target.len(), rows * tw, "transform: target buffer size");
    if rows == 0 {
        return;
    }
    let xs = x.chunks_mut(ROWS_PER_BLOCK * f);
    let ts: Vec<&mut [f32]> = if tw == 0 {
        (0..xs.len()).map(|_| &mut [][..]).collect()
    } else {
        target.chunks_mut(ROWS_PER_BLOCK * tw).collect()
    };
    let work: Vec<_> = xs.zip(ts).collect();
    let run = |buf: &mut Vec<f32>, (x, t): (&mut [f32], &mut [f32])| {
        buf.clear();
        buf.resize(x.len(), 0.0);
        layer.transform_block(x, buf, t);
        x.copy_from_slice(buf);
    };
    match exec {
        Execution::Sequential => {
            let mut buf = Vec::new();
            work.into_iter().for_each(|w| run(&mut buf, w))
        }
        Execution::Parallel => work.into_par_iter().for_each_init(Vec::new, run),
    }
}

/// Aggregates every CSR row into `out` (`[rows, out_width]`, row-major). With `alpha`
/// (`[csr entries, heads]`), also writes the attention coefficients in CSR order.
/// Work is split into chunks of whole rows holding about [`EDGES_PER_CHUNK`] entries, so
/// rayon balances by edges; each row is computed by one thread in CSR order, so the bits
/// do not depend on the thread count or on how rows are grouped. Each finished chunk adds
/// its entries to `progress`, when given.
pub fn aggregate_into(
    layer: &dyn AttentionKind,
    csr: &IncomingCsr,
    inputs: &RowInputs<'_>,
    exec: Execution,
    out: &mut [f32],
    alpha: Option<&mut [f32]>,
    progress: Option<&Progress>,
) {
    let rows = csr.row_ptr.len() - 1;
    assert_eq!(
        out.len(),
        rows * layer.out_width(),
        "aggregate: out buffer size"
    );
    aggregate_chunks(layer, csr, inputs, exec, Some(out), alpha, progress);
}

/// [`aggregate_into`] without an output array: each edge-balanced chunk of rows is
/// computed in pieces of at most 1024 rows into a small per-thread buffer (the same
/// bits), and each piece is handed to `progress`'s final-rows sink
/// ([`Progress::set_final_rows_sink`]), which must be set and whose layer must be marked
/// final ([`Progress::set_final_layer`]); the rows are kept nowhere else.
/// This is how a model's last layer writes its output file without holding
/// `[rows, out_width]` in memory.
///
/// # Panics
/// When `progress` has no final-rows sink or is not in its final layer (the rows would
/// be lost).
pub fn aggregate_to_sink(
    layer: &dyn AttentionKind,
    csr: &IncomingCsr,
    inputs: &RowInputs<'_>,
    exec: Execution,
    alpha: Option<&mut [f32]>,
    progress: &Progress,
) {
    assert!(
        progress.sinks_final_rows(),
        "aggregate_to_sink: no final-rows sink to take the rows"
    );
    aggregate_chunks(layer, csr, inputs, exec, None, alpha, Some(progress));
}

/// Rows per buffer handed to the sink by [`aggregate_to_sink`] (256 KiB at 64 floats).
const SINK_ROWS: usize = 1024;

/// The driver of [`aggregate_into`] (`out` given) and [`aggregate_to_sink`] (`None`).
fn aggregate_chunks(
    layer: &dyn AttentionKind,
    csr: &IncomingCsr,
    inputs: &RowInputs<'_>,
    exec: Execution,
    out: Option<&mut [f32]>,
    mut alpha: Option<&mut [f32]>,
    progress: Option<&Progress>,
) {
    let rows = csr.row_ptr.len() - 1;
    let (h, ow) = (layer.heads(), layer.out_width());
    assert_eq!(
        inputs.target.len(),
        rows * layer.target_width(),
        "aggregate: target rows"
    );
    if let Some(d) = layer.edge_dim() {
        let ea = inputs
            .edge_attr
            .expect("aggregate: a layer with edge_dim needs edge attributes");
        assert_eq!(ea.len(), csr.num_entries() * d, "aggregate: edge_attr size");
    }
    if let Some(a) = alpha.as_deref() {
        assert_eq!(
            a.len(),
            csr.num_entries() * h,
            "aggregate: alpha buffer size"
        );
    }
    let bounds = chunk_bounds(&csr.row_ptr, EDGES_PER_CHUNK);
    let mut work = Vec::with_capacity(bounds.len().saturating_sub(1));
    let mut out_rest = out;
    let mut alpha_rest = alpha.take();
    for w in bounds.windows(2) {
        let (start, end) = (w[0], w[1]);
        let o = match out_rest.take() {
            Some(o) => {
                let (head, rest) = o.split_at_mut((end - start) * ow);
                out_rest = Some(rest);
                Some(head)
            }
            None => None,
        };
        let a = match alpha_rest.take() {
            Some(a) => {
                let (head, rest) = a.split_at_mut((csr.row_ptr[end] - csr.row_ptr[start]) * h);
                alpha_rest = Some(rest);
                Some(head)
            }
            None => None,
        };
        work.push((start, end, o, a));
    }
    type Chunk<'o> = (usize, usize, Option<&'o mut [f32]>, Option<&'o mut [f32]>);
    // Per thread: the row scratch and, without `out`, a buffer of at most
    // SINK_ROWS rows (a chunk of low-degree rows can hold 16 k of them).
    let run = |(scratch, rows_buf): &mut (Scratch, Vec<f32>), (start, end, o, a): Chunk<'_>| {
        match o {
            Some(o) => {
                layer.aggregate_rows(csr, inputs, start..end, o, a, scratch);
                if let Some(p) = progress {
                    p.rows_done(start, o);
                }
            }
            None => {
                let mut a = a;
                for first in (start..end).step_by(SINK_ROWS) {
                    let last = (first + SINK_ROWS).min(end);
                    let a_rows = match a.take() {
                        Some(rest) => {
                            let entries = csr.row_ptr[last] - csr.row_ptr[first];
                            let (head, rest) = rest.split_at_mut(entries * h);
                            a = Some(rest);
                            Some(head)
                        }
                        None => None,
                    };
                    rows_buf.clear();
                    rows_buf.resize((last - first) * ow, 0.0);
                    layer.aggregate_rows(csr, inputs, first..last, rows_buf, a_rows, scratch);
                    if let Some(p) = progress {
                        p.rows_done(first, rows_buf);
                    }
                }
            }
        }
        if let Some(p) = progress {
            p.add_entries((csr.row_ptr[end] - csr.row_ptr[start]) as u64);
        }
    };
    let init = || (Scratch::default(), Vec::new());
    match exec {
        Execution::Sequential => {
            let mut state = init();
            work.into_iter().for_each(|c| run(&mut state, c))
        }
        Execution::Parallel => work.into_par_iter().for_each_init(init, run),
    }
}

/// Runs `f` inside a frame compiled for AVX-512 (else AVX2) when the CPU has it. Only what
/// LLVM inlines into that frame is built wide: a small closure such as ELU's is (3x
/// faster, measured); a large one may stay a call to its portable build, which is why a
/// kind's aggregation uses `aggregate_rows_dispatch!` instead.
///
/// The arithmetic is the same IEEE operations in the same order either way (Rust never
/// contracts to FMA or reassociates, whatever the target features), only wider, so every
/// path gives the same bits (checked by the tests
/// `a_row_aggregated_alone_has_the_same_bits_as_in_a_full_pass` and
/// `elu_in_wide_vectors_has_the_portable_bits`).
pub fn with_wide_vectors(f: impl FnOnce()) {
    match vector_width() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `run_avx512` only requires that the CPU supports AVX-512F (which implies
        // AVX2 and FMA): `vector_width` returns `Avx512` only when it was detected.
        #[allow(unsafe_code)]
        Vectors::Avx512 => unsafe { run_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, `Avx2` only when AVX2 was detected.
        #[allow(unsafe_code)]
        Vectors::Avx2 => unsafe { run_avx2(f) },
        _ => f(),
    }
}

/// The widest vectors this CPU has (detected at run time, cached by std), within what
/// tests allow ([`with_widest`]).
pub(crate) fn vector_width() -> Vectors {
    #[cfg(target_arch = "x86_64")]
    {
        let widest = widest_allowed();
        if widest >= Vectors::Avx512 && std::arch::is_x86_feature_detected!("avx512f") {
            return Vectors::Avx512;
        }
        if widest >= Vectors::Avx2 && std::arch::is_x86_feature_detected!("avx2") {
            return Vectors::Avx2;
        }
    }
    Vectors::Portable
}

/// Implements [`AttentionKind::aggregate_rows`] (invoked inside a kind's `impl
/// AttentionKind`): the kind's `aggregate_rows_portable` row loop (`#[inline(always)]`) in
/// the widest build the CPU has, chosen at run time ([`vector_width`]) among those that
/// [`wide_aggregate_builds`] adds. A closure through [`with_wide_vectors`] would not do
/// here: LLVM does not inline a loop this large into the wide frame.
macro_rules! aggregate_rows_dispatch {
    () => {
        fn aggregate_rows(
            &self,
            csr: &IncomingCsr,
            inputs: &RowInputs<'_>,
            rows: std::ops::Range<usize>,
            out: &mut [f32],
            alpha: Option<&mut [f32]>,
            scratch: &mut Scratch,
        ) {
            let args = (csr, inputs, rows, out, alpha, scratch);
            match $crate::kind::vector_width() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `vector_width` returns `Avx512` only on a CPU with AVX-512F.
                #[allow(unsafe_code)]
                $crate::kind::Vectors::Avx512 => unsafe { self.aggregate_rows_avx512(args) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `vector_width` returns `Avx2` only on a CPU with AVX2.
                #[allow(unsafe_code)]
                $crate::kind::Vectors::Avx2 => unsafe { self.aggregate_rows_avx2(args) },
                _ => self.aggregate_rows_portable(args),
            }
        }
    };
}
pub(crate) use aggregate_rows_dispatch;

/// The arguments of [`AttentionKind::aggregate_rows`], passed on to a wide build and to
/// each kind's `aggregate_rows_portable` (one argument list, declared once).
pub(crate) type AggregateArgs<'a, 'i> = (
    &'a IncomingCsr,
    &'a RowInputs<'i>,
    std::ops::Range<usize>,
    &'a mut [f32],
    Option<&'a mut [f32]>,
    &'a mut Scratch,
);

/// Adds a kind's AVX-512F and AVX2 builds of its `aggregate_rows_portable` (invoked inside
/// the kind's inherent `impl`), for [`aggregate_rows_dispatch`].
macro_rules! wide_aggregate_builds {
    () => {
        $crate::kind::wide_aggregate_builds!(aggregate_rows_avx512, "avx512f");
        $crate::kind::wide_aggregate_builds!(aggregate_rows_avx2, "avx2");
    };
    ($name:ident, $feature:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        fn $name(&self, args: $crate::kind::AggregateArgs<'_, '_>) {
            self.aggregate_rows_portable(args)
        }
    };
}
pub(crate) use wide_aggregate_builds;

/// The vector widths [`with_wide_vectors`] may choose from, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Vectors {
    Portable,
    Avx2,
    Avx512,
}

#[cfg(test)]
thread_local! {
    static WIDEST: std::cell::Cell<Vectors> = const { std::cell::Cell::new(Vectors::Avx512) };
}

#[cfg(test)]
fn widest_allowed() -> Vectors {
    WIDEST.with(|w| w.get())
}

#[cfg(not(test))]
fn widest_allowed() -> Vectors {
    Vectors::Avx512
}

/// Tests: runs `f` with [`with_wide_vectors`] on this thread limited to `widest`.
#[cfg(test)]
pub(crate) fn with_widest<R>(widest: Vectors, f: impl FnOnce() -> R) -> R {
    let old = WIDEST.with(|w| w.replace(widest));
    let r = f();
    WIDEST.with(|w| w.set(old));
    r
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn run_avx512(f: impl FnOnce()) {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2(f: impl FnOnce()) {
    f()
}

/// Row boundaries `[0, .., rows]` of chunks holding about `edges_per_chunk` edges each.
pub fn chunk_bounds(row_ptr: &[usize], edges_per_chunk: usize) -> Vec<usize> {
    let rows = row_ptr.len() - 1;
    let mut bounds = vec![0];
    let mut start = 0;
    while start < rows {
        let target = row_ptr[start] + edges_per_chunk;
        // Rows ending before the target, plus the row that reaches it.
        let before = row_ptr[start + 1..].partition_point(|&p| p < target);
        let end = start + (before + 1).min(rows - start);
        bounds.push(end);
        start = end;
    }
    bounds
}

/// How many CSR entries ahead kernels prefetch source rows, at least. A row is 128-512
/// bytes read from a random place; without prefetching the kernel runs at memory latency
/// rather than bandwidth (measured at 1M nodes / 10M edges, 512-byte rows: 2.7 s without,
/// 1.3-1.6 s with 8 ahead).
pub(crate) const PREFETCH_DISTANCE: usize = 8;

/// Bytes of source rows requested ahead of the gathers: narrow rows are prefetched more
/// entries ahead, so that as many cache lines are in flight as with 512-byte rows at
/// [`PREFETCH_DISTANCE`] (64 lines). At 10M nodes / 100M edges with 128-byte rows
/// (4 x 8 heads) 32 entries ahead instead of 8 took the aggregation from 8.06-8.16 s
/// to 7.88-7.92 s (docs/performance.md, eleventh session).
const PREFETCH_BYTES: usize = 4096;

/// How many CSR entries ahead to prefetch rows of `width` `f32`s: [`PREFETCH_BYTES`] of
/// rows, no fewer than [`PREFETCH_DISTANCE`] entries and no more than 64.
pub(crate) fn prefetch_distance(width: usize) -> usize {
    (PREFETCH_BYTES / (4 * width.max(1))).clamp(PREFETCH_DISTANCE, 64)
}

/// Bytes of source rows requested ahead into the L2 cache by [`prefetch_ahead_to_l2`]:
/// 48 rows of 512 bytes. At 1M nodes / 10M edges with 4 x 32 heads, GATConv's pass 2
/// took 0.94-0.99 s with 16-32 KiB ahead into L2, against 1.18-1.22 s with 4 KiB (or
/// 12 KiB) ahead into L1 (docs/performance.md, seventeenth session).
const L2_PREFETCH_BYTES: usize = 24 << 10;

/// How many CSR entries ahead [`prefetch_ahead_to_l2`] requests rows of `width` `f32`s:
/// [`L2_PREFETCH_BYTES`] of rows, no fewer than [`PREFETCH_DISTANCE`] entries and no
/// more than 64.
pub(crate) fn l2_prefetch_distance(width: usize) -> usize {
    (L2_PREFETCH_BYTES / (4 * width.max(1))).clamp(PREFETCH_DISTANCE, 64)
}

/// The cache level a prefetch requests a row into.
#[derive(Clone, Copy)]
enum CacheLevel {
    /// `prefetcht0`.
    L1,
    /// `prefetcht1`. A request into L1 waits for one of the core's few L1 fill buffers
    /// when they are all busy, which caps the lines in flight; measured on this Xeon,
    /// wide (512-byte) random rows arrive faster requested into L2 from further ahead.
    /// Narrow rows (128 bytes, whose scores GATConv's pass 1 computes from the row) did
    /// better into L1 (docs/performance.md, seventeenth session).
    L2,
}

/// Requests every cache line of `row` into `level`.
#[inline(always)]
fn prefetch_lines(row: &[f32], level: CacheLevel) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: a prefetch is only a cache hint: it never faults, reads nothing into the
        // program and has no observable effect on memory; the address comes from a live
        // slice besides. SSE (which `_mm_prefetch` needs) is part of the x86_64 baseline.
        #[allow(unsafe_code)]
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
            let p = line.as_ptr().cast::<i8>();
            match level {
                CacheLevel::L1 => _mm_prefetch::<_MM_HINT_T0>(p),
                CacheLevel::L2 => _mm_prefetch::<_MM_HINT_T1>(p),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (row, level);
}

/// Requests `row` into the L1 cache.
#[inline(always)]
pub(crate) fn prefetch_row(row: &[f32]) {
    prefetch_lines(row, CacheLevel::L1);
}

/// Requests the source row of the CSR entry `entry + distance` into `level` (across row
/// boundaries: rows are often shorter than the distance).
#[inline(always)]
fn prefetch_entry(
    csr: &IncomingCsr,
    entry: usize,
    distance: usize,
    source: &[f32],
    width: usize,
    level: CacheLevel,
) {
    if let Some(&ahead) = csr.col.get(entry + distance) {
        let a = ahead as usize * width;
        if let Some(row) = source.get(a..a + width) {
            prefetch_lines(row, level);
        }
    }
}

/// Prefetches the source row of the CSR entry `entry + distance` into L1; `distance`
/// from [`prefetch_distance`].
#[inline(always)]
pub(crate) fn prefetch_ahead(
    csr: &IncomingCsr,
    entry: usize,
    distance: usize,
    source: &[f32],
    width: usize,
) {
    prefetch_entry(csr, entry, distance, source, width, CacheLevel::L1);
}

/// [`prefetch_ahead`] into the L2 cache; `distance` from [`l2_prefetch_distance`].
#[inline(always)]
pub(crate) fn prefetch_ahead_to_l2(
    csr: &IncomingCsr,
    entry: usize,
    distance: usize,
    source: &[f32],
    width: usize,
) {
    prefetch_entry(csr, entry, distance, source, width, CacheLevel::L2);
}

/// Lanes of [`dot_lanes`]: one AVX register of f32.
const LANES: usize = 8;

/// `sum_i f(i) * b[i]` over `i < b.len()`, accumulated in [`LANES`] interleaved partial
/// sums (element i goes to lane i mod 8) combined in a fixed tree. A single running sum
/// is a chain of dependent additions that no compiler may reorder (IEEE), so it runs at
/// one addition per 4 cycles; eight lanes vectorise. The order depends only on the length,
/// so the bits are the same for every thread count and partition.
#[inline(always)]
pub(crate) fn dot_lanes(b: &[f32], f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let full = b.len() / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(base + l) * b[base + l];
        }
    }
    for (l, i) in (full..b.len()).enumerate() {
        acc[l] += f(i) * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// LeakyReLU as PyG computes it (`F.leaky_relu`): `v` if `v > 0`, else `slope * v`.
#[inline(always)]
pub(crate) fn leaky_relu(v: f32, slope: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        v * slope
    }
}

/// Values per block of [`exponentiate`]'s vectorised loop: whole rows of heads, the
/// per-head maxima repeated across it.
const EXP_BLOCK: usize = 64;

/// Turns the scores `weights` (`[degree, heads]`, maximum per head in `max`) into
/// `exp(e - max)` in place and returns their per-head sums in `sum`, each head's in
/// entry order. Every argument is at most 0 (`max` is over the same scores), so the
/// exponential is [`exp_nonpositive`] (Cephes' `expf`, within 2 ulp; PyTorch's CPU
/// `exp` is SLEEF's, within 1): unlike libm's `expf`, called once per value, it runs in
/// vector lanes. The values go in blocks of up to [`EXP_BLOCK`], a whole number of rows,
/// against the maxima repeated to the block's width, so a value's head is its position
/// in the block modulo `heads`.
#[inline(always)]
pub(crate) fn exponentiate(weights: &mut [f32], max: &[f32], sum: &mut [f32]) {
    let h = max.len();
    sum.fill(0.0);
    if h == 0 {
        return;
    }
    if h <= EXP_BLOCK {
        let width = EXP_BLOCK / h * h;
        let mut repeated = [0f32; EXP_BLOCK];
        for (k, m) in repeated[..width].iter_mut().enumerate() {
            *m = max[k % h];
        }
        let repeated = &repeated[..width];
        let mut blocks = weights.chunks_exact_mut(width);
        for block in &mut blocks {
            for (w, &m) in block.iter_mut().zip(repeated) {
                *w = exp_nonpositive(*w - m);
            }
        }
        // A whole number of rows too: `weights` and `width` are multiples of `h`.
        for (w, &m) in blocks.into_remainder().iter_mut().zip(repeated) {
            *w = exp_nonpositive(*w - m);
        }
    } else {
        for row in weights.chunks_exact_mut(h) {
            for (w, &m) in row.iter_mut().zip(max) {
                *w = exp_nonpositive(*w - m);
            }
        }
    }
    for row in weights.chunks_exact(h) {
        for (s, &w) in sum.iter_mut().zip(row) {
            *s += w;
        }
    }
}

/// `exp(x)` for `x ≤ 0` (and `-inf`), in float32 without branches or calls, so loops over
/// it vectorise: Cephes' `expf` (range reduction `x = n·ln 2 + r` with a two-part `ln 2`,
/// a degree-7 polynomial for `e^r`, and `2^n` built in the exponent bits). Within 2 ulp of
/// the true value for `-87 ≤ x ≤ 0`; below -87 it returns `exp(-87) ≈ 1.6e-38` instead of
/// a smaller (or zero) number, which no softmax denominator (always ≥ 1) can notice.
/// NaN stays NaN. Its bits depend only on `x`.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4; // 355/512 exactly in f32
    const C2: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer (|v| < 2^22).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * C1) - n * C2;
    let p = ((((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * (r * r)
        + r)
        + 1.0;
    // n is in [-126, 0], so n + 127 is a normal exponent. t = ROUND + n lies in
    // [2^23, 2^24), where the ulp is 1, so its bits are ROUND's plus n: the integer n
    // without a float-to-int conversion (whose saturation does not vectorise cheaply);
    // the same bits as `n as i32`. (A NaN x gives a NaN p, so the scale does not matter.)
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * scale
}

/// Writes the head-combined row: `acc` (`[heads, channels]`) times `inv[h]`, concatenated
/// (`out` is `[heads * channels]`) or averaged over heads (`out` is `[channels]`).
#[inline(always)]
pub(crate) fn combine_heads(
    acc: &[f32],
    inv: &[f32],
    channels: usize,
    concat: bool,
    out: &mut [f32],
) {
    if concat {
        for ((o, a), &inv) in out
            .chunks_exact_mut(channels)
            .zip(acc.chunks_exact(channels))
            .zip(inv)
        {
            for (o, &a) in o.iter_mut().zip(a) {
                *o = a * inv;
            }
        }
    } else {
        out.fill(0.0);
        for (a, &inv) in acc.chunks_exact(channels).zip(inv) {
            for (o, &a) in out.iter_mut().zip(a) {
                *o += a * inv;
            }
        }
        let heads = inv.len() as f32;
        out.iter_mut().for_each(|o| *o /= heads);
    }
}

/// Writes the coefficients `w * inv[h]` of one row into `alpha`.
#[inline(always)]
pub(crate) fn write_alpha(alpha: &mut [f32], weights: &[f32], inv: &[f32]) {
    let h = inv.len();
    for (a, w) in alpha.chunks_exact_mut(h).zip(weights.chunks_exact(h)) {
        for ((a, &w), &inv) in a.iter_mut().zip(w).zip(inv) {
            *a = w * inv;
        }
    }
}

/// `row += v` elementwise (no-op for an empty `v`).
#[inline(always)]
pub(crate) fn add_into(row: &mut [f32], v: &[f32]) {
    if !v.is_empty() {
        row.iter_mut().zip(v).for_each(|(o, b)| *o += b);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use distgat_graph::EdgeList;

    use super::*;
    use crate::dense::Linear;
    use crate::{GatConv, GatV2Conv, TransformerConv};

    /// The blocked exponentials give each value its own head's maximum: against a plain
    /// per-row loop (bits) and float64 `exp` with sequential sums, for head counts that
    /// divide the block, that do not, and that exceed it, and rows of any degree.
    #[test]
    fn exponentiate_in_blocks_uses_each_values_own_head() {
        let mut next = stream(77);
        for h in [1usize, 2, 3, 4, 5, 7, 8, 16, 33, 64, 65, 100] {
            for degree in [0usize, 1, 2, 15, 16, 17, 63, 64, 65, 200] {
                let scores: Vec<f32> = (0..degree * h).map(|_| next() * 40.0).collect();
                let mut max = vec![f32::NEG_INFINITY; h];
                for row in scores.chunks_exact(h) {
                    for (m, &v) in max.iter_mut().zip(row) {
                        *m = m.max(v);
                    }
                }
                let mut got = scores.clone();
                let mut sum = vec![f32::NAN; h];
                exponentiate(&mut got, &max, &mut sum);
                let mut want = scores.clone();
                let mut want_sum = vec![0f32; h];
                for row in want.chunks_exact_mut(h) {
                    for ((w, &m), s) in row.iter_mut().zip(&max).zip(want_sum.iter_mut()) {
                        *w = exp_nonpositive(*w - m);
                        *s += *w;
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{h} heads, degree {degree}");
                assert_eq!(
                    bits(&sum),
                    bits(&want_sum),
                    "{h} heads, degree {degree} sums"
                );
                for (k, (&g, &e)) in got.iter().zip(&scores).enumerate() {
                    // The argument as the kernel forms it (a float32 difference).
                    let exact = f64::from(e - max[k % h]).exp();
                    assert!(
                        (f64::from(g) - exact).abs() <= 3e-7 * exact + 1e-37,
                        "{h} heads, value {k}: {g} vs {exact}"
                    );
                }
            }
        }
    }

    /// Against float64 `exp` over [-87, 0] in small steps and at the ends.
    #[test]
    fn exp_nonpositive_is_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp_nonpositive(x));
            let ulp = f64::from(f32::EPSILON) * want;
            worst = worst.max((got - want).abs() / ulp);
            x += 0.000_97;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    /// A deterministic pseudo-random stream in [-1, 1).
    pub(crate) fn stream(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed | 1;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    fn linear(next: &mut impl FnMut() -> f32, out: usize, inp: usize, bias: bool) -> Linear {
        let w: Vec<f32> = (0..out * inp).map(|_| next()).collect();
        let b = if bias {
            (0..out).map(|_| next()).collect()
        } else {
            Vec::new()
        };
        Linear::from_torch(&w, out, inp, b)
    }

    /// One layer of each kind (3 heads x 5, F_in 37, with residual/root, edge_dim 2).
    fn kinds() -> Vec<Box<dyn AttentionKind>> {
        kinds_with_in(37)
    }

    /// A GATConv with random weights (`f` inputs, `h` x `c`, `concat`), an edge score of
    /// width `d` and a residual: every optional part of the kernel in use.
    fn random_gat(
        next: &mut impl FnMut() -> f32,
        f: usize,
        h: usize,
        c: usize,
        concat: bool,
        d: usize,
    ) -> GatConv {
        let hc = h * c;
        let ow = if concat { hc } else { c };
        let w: Vec<f32> = (0..hc * f).map(|_| next()).collect();
        let mut gat = GatConv::from_pyg(
            f,
            h,
            c,
            concat,
            0.2,
            true,
            &w,
            (0..hc).map(|_| next()).collect(),
            (0..hc).map(|_| next()).collect(),
            (0..ow).map(|_| next()).collect(),
        );
        let lin_edge: Vec<f32> = (0..hc * d).map(|_| next()).collect();
        let att_edge: Vec<f32> = (0..hc).map(|_| next()).collect();
        gat.edge_score = Some((d, GatConv::fold_edge(h, c, d, &lin_edge, &att_edge)));
        gat.res = Some(linear(next, ow, f, false));
        gat
    }

    /// The source scores filled block by block on the pool have the bits of one call over
    /// all rows (several blocks and a short last one).
    #[test]
    fn source_aux_in_blocks_has_the_bits_of_one_call() {
        let mut next = stream(7);
        let gat = random_gat(&mut next, 8, 4, 32, true, 1);
        assert_eq!(
            gat.source_aux_width(),
            4,
            "512-byte rows keep a score table"
        );
        let rows = 3 * crate::dense::ROWS_PER_BLOCK + 17;
        let source: Vec<f32> = (0..rows * gat.source_width()).map(|_| next()).collect();
        let mut whole = vec![0f32; rows * 4];
        gat.fill_source_aux(&source, &mut whole);
        assert!(whole.iter().all(|v| *v != 0.0));
        for exec in [Execution::Sequential, Execution::Parallel] {
            assert!(
                same_bits(&source_aux(&gat, &source, exec), &whole),
                "{exec:?}"
            );
        }
    }

    /// [`kinds`] with `f` input features.
    fn kinds_with_in(f: usize) -> Vec<Box<dyn AttentionKind>> {
        let mut next = stream(0x2545_f491_4f6c_dd1d);
        let (h, c, d) = (3, 5, 2);
        let hc = h * c;
        let gat = random_gat(&mut next, f, h, c, false, d);
        let gatv2 = GatV2Conv {
            heads: h,
            channels: c,
            concat: true,
            negative_slope: 0.2,
            add_self_loops: true,
            fill_value: FillValue::Mean,
            lin_l: linear(&mut next, hc, f, true),
            lin_r: linear(&mut next, hc, f, true),
            att: (0..hc).map(|_| next()).collect(),
            lin_edge: Some(linear(&mut next, hc, d, false)),
            res: Some(linear(&mut next, hc, f, false)),
            bias: (0..hc).map(|_| next()).collect(),
        };
        let transformer = TransformerConv {
            heads: h,
            channels: c,
            concat: true,
            lin_query: linear(&mut next, hc, f, true),
            lin_key: linear(&mut next, hc, f, true),
            lin_value: linear(&mut next, hc, f, true),
            lin_edge: Some(linear(&mut next, hc, d, false)),
            lin_skip: Some(linear(&mut next, hc, f, true)),
            lin_beta: Some((0..3 * hc).map(|_| next()).collect()),
        };
        vec![Box::new(gat), Box::new(gatv2), Box::new(transformer)]
    }

    struct Setup {
        csr: IncomingCsr,
        x: Vec<f32>,
        source: Vec<f32>,
        aux: Vec<f32>,
        target: Vec<f32>,
        edge_attr: Vec<f32>,
    }

    impl Setup {
        /// The aggregation's inputs, edge attributes included.
        fn inputs(&self) -> RowInputs<'_> {
            RowInputs {
                source: &self.source,
                source_aux: &self.aux,
                target: &self.target,
                edge_attr: Some(&self.edge_attr),
            }
        }
    }

    /// GATConv's loop for narrow rows of a shape known at compile time (`narrow_rows`)
    /// gives the bits of the general loop over the `[N, H]` score table, for every narrow
    /// shape of 1-8 heads and 4-64 channels (those it is built for and those it is not),
    /// concatenated heads or their mean, with and without edge scores, with the residual
    /// and the attention coefficients, on every vector width.
    #[test]
    fn gat_narrow_rows_of_every_shape_give_the_general_bits() {
        let mut next = stream(23);
        let shapes = [1usize, 2, 3, 4, 8]
            .into_iter()
            .flat_map(|h| [4usize, 8, 16, 32, 64].map(|c| (h, c)))
            .filter(|&(h, c)| 4 * h * c <= 256);
        for (h, c) in shapes {
            for (concat, edge_dim) in [(true, 0), (false, 0), (true, 3), (false, 2)] {
                let mut gat = random_gat(&mut next, 11, h, c, concat, edge_dim.max(1));
                if edge_dim == 0 {
                    gat.edge_score = None;
                }
                let n = 257;
                let s = setup(&gat, n);
                assert!(gat.scores_from_rows() && s.aux.is_empty());
                let mut table = vec![0f32; n * h];
                gat.fill_source_scores(&s.source, &mut table);
                let entries = s.csr.num_entries();
                for widest in [Vectors::Portable, Vectors::Avx2, Vectors::Avx512] {
                    let run = |from_rows: bool| {
                        let mut out = vec![0f32; n * gat.out_width()];
                        let mut alpha = vec![0f32; entries * h];
                        let inputs = RowInputs {
                            source_aux: &table,
                            ..s.inputs()
                        };
                        let scratch = &mut Scratch::default();
                        if from_rows {
                            // Through the dispatch, so `widest` picks the build.
                            with_widest(widest, || {
                                gat.aggregate_rows(
                                    &s.csr,
                                    &inputs,
                                    0..n,
                                    &mut out,
                                    Some(&mut alpha),
                                    scratch,
                                )
                            });
                        } else {
                            let (csr, alpha) = (&s.csr, Some(&mut alpha[..]));
                            gat.aggregate_rows_scored(
                                csr,
                                &inputs,
                                0..n,
                                &mut out,
                                alpha,
                                scratch,
                                false,
                            );
                        }
                        (out, alpha)
                    };
                    let (general, narrow) = (run(false), run(true));
                    assert!(general.0.iter().any(|&v| v != 0.0));
                    let what =
                        format!("{h} x {c}, concat {concat}, edge_dim {edge_dim}, {widest:?}");
                    assert!(same_bits(&general.0, &narrow.0), "output, {what}");
                    assert!(same_bits(&general.1, &narrow.1), "alpha, {what}");
                }
            }
        }
    }

    fn setup(layer: &dyn AttentionKind, n: usize) -> Setup {
        let mut next = stream(7);
        let (src, dst): (Vec<u64>, Vec<u64>) = (0..8 * n)
            .map(|_| {
                let s = ((next() + 1.0) * n as f32 / 2.0) as u64 % n as u64;
                let d = ((next() + 1.0) * n as f32 / 2.0) as u64 % n as u64;
                (s, d)
            })
            .unzip();
        let edges = EdgeList::from_pairs(&src, &dst);
        let (csr, _) = IncomingCsr::build(&edges, n, layer.add_self_loops(), false).unwrap();
        let x: Vec<f32> = (0..n * layer.in_features()).map(|_| next()).collect();
        let mut source = vec![0f32; n * layer.source_width()];
        let mut target = vec![0f32; n * layer.target_width()];
        transform_into(layer, &x, Execution::Parallel, &mut source, &mut target);
        let aux = source_aux(layer, &source, Execution::Sequential);
        let d = layer.edge_dim().unwrap_or(0);
        let attr: Vec<f32> = (0..src.len() * d).map(|_| next()).collect();
        let keys = csr.entry_keys(&edges);
        let edge_attr = crate::edge_attr::entry_edge_attr(
            &csr.row_ptr,
            &keys,
            d,
            layer.fill_value(),
            &attr,
            Execution::Sequential,
        );
        Setup {
            csr,
            x,
            source,
            aux,
            target,
            edge_attr,
        }
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn the_transform_in_place_and_the_aggregation_to_a_sink_give_the_same_bits() {
        // Source rows as wide as the input: GAT and GATv2 at F_in = H x C = 15,
        // TransformerConv (key and value) at 30. 3000 rows span 12 row blocks, and two
        // edge-balanced chunks, one of more than SINK_ROWS rows.
        let n = 3000;
        for f in [15, 30] {
            for layer in kinds_with_in(f) {
                let layer = layer.as_ref();
                if layer.source_width() != f {
                    continue;
                }
                let s = setup(layer, n);
                let bounds = chunk_bounds(&s.csr.row_ptr, EDGES_PER_CHUNK);
                assert!(bounds.len() > 2, "{bounds:?}");
                assert!(
                    bounds.windows(2).any(|w| w[1] - w[0] > SINK_ROWS),
                    "{bounds:?}"
                );
                for exec in [Execution::Sequential, Execution::Parallel] {
                    let mut x = s.x.clone();
                    let mut target = vec![0f32; n * layer.target_width()];
                    transform_in_place(layer, &mut x, exec, &mut target);
                    assert!(
                        same_bits(&x, &s.source),
                        "{} source, {exec:?}",
                        layer.kind()
                    );
                    assert!(same_bits(&target, &s.target), "{} target", layer.kind());
                }
                let inputs = s.inputs();
                let (ow, h) = (layer.out_width(), layer.heads());
                let mut rows = vec![0f32; n * ow];
                let mut alpha = vec![0f32; s.csr.num_entries() * h];
                aggregate_into(
                    layer,
                    &s.csr,
                    &inputs,
                    Execution::Parallel,
                    &mut rows,
                    Some(&mut alpha),
                    None,
                );
                for exec in [Execution::Sequential, Execution::Parallel] {
                    let sunk = std::sync::Arc::new(std::sync::Mutex::new(vec![f32::NAN; n * ow]));
                    let progress = Progress::default();
                    progress.set_final_rows_sink_only({
                        let sunk = sunk.clone();
                        std::sync::Arc::new(move |first, values: &[f32]| {
                            sunk.lock().unwrap()[first * ow..first * ow + values.len()]
                                .copy_from_slice(values)
                        })
                    });
                    progress.set_final_layer(true);
                    let mut sunk_alpha = vec![0f32; s.csr.num_entries() * h];
                    aggregate_to_sink(
                        layer,
                        &s.csr,
                        &inputs,
                        exec,
                        Some(&mut sunk_alpha),
                        &progress,
                    );
                    assert!(same_bits(&sunk.lock().unwrap(), &rows), "{}", layer.kind());
                    assert!(same_bits(&sunk_alpha, &alpha), "{} alpha", layer.kind());
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "no final-rows sink")]
    fn the_aggregation_to_a_sink_refuses_to_lose_rows() {
        let kinds = kinds();
        let layer = kinds[0].as_ref();
        let s = setup(layer, 20);
        let inputs = s.inputs();
        // A sink, but the layer is not marked final: its rows would go nowhere.
        let progress = Progress::default();
        progress.set_final_rows_sink_only(std::sync::Arc::new(|_, _: &[f32]| {}));
        aggregate_to_sink(
            layer,
            &s.csr,
            &inputs,
            Execution::Sequential,
            None,
            &progress,
        );
    }

    #[test]
    fn a_row_transformed_alone_has_the_same_bits_as_in_a_full_pass() {
        // Owner computes: a worker transforms only its rows (and raw halo rows), in blocks
        // that differ from the single-process engine's; no row's bits may change.
        for layer in kinds() {
            let layer = layer.as_ref();
            let n = 700;
            let s = setup(layer, n);
            let (f, sw, tw) = (
                layer.in_features(),
                layer.source_width(),
                layer.target_width(),
            );
            for first in [0, 3, 255, 256, 699] {
                let rows = (n - first).min(5);
                let mut source = vec![0f32; rows * sw];
                let mut target = vec![0f32; rows * tw];
                transform_into(
                    layer,
                    &s.x[first * f..(first + rows) * f],
                    Execution::Sequential,
                    &mut source,
                    &mut target,
                );
                assert!(
                    same_bits(&source, &s.source[first * sw..(first + rows) * sw]),
                    "{}: source rows from {first}",
                    layer.kind()
                );
                assert!(
                    same_bits(&target, &s.target[first * tw..(first + rows) * tw]),
                    "{}: target rows from {first}",
                    layer.kind()
                );
                let aux = source_aux(layer, &source, Execution::Sequential);
                let aw = layer.source_aux_width();
                assert!(same_bits(&aux, &s.aux[first * aw..(first + rows) * aw]));
            }
        }
    }

    #[test]
    fn a_row_aggregated_alone_has_the_same_bits_as_in_a_full_pass() {
        for layer in kinds() {
            let layer = layer.as_ref();
            let s = setup(layer, 200);
            let inputs = s.inputs();
            let (ow, h) = (layer.out_width(), layer.heads());
            let mut full = vec![0f32; s.csr.num_nodes * ow];
            let mut alpha = vec![0f32; s.csr.num_entries() * h];
            let progress = Progress::default();
            progress.start_layer(0, 1, s.csr.num_entries() as u64);
            aggregate_into(
                layer,
                &s.csr,
                &inputs,
                Execution::Parallel,
                &mut full,
                Some(&mut alpha),
                Some(&progress),
            );
            let done = progress.snapshot();
            assert_eq!(done.entries_done, s.csr.num_entries() as u64);
            assert_eq!(done.layer_fraction(), 1.0);
            let mut sequential = vec![0f32; s.csr.num_nodes * ow];
            aggregate_into(
                layer,
                &s.csr,
                &inputs,
                Execution::Sequential,
                &mut sequential,
                None,
                None,
            );
            assert!(same_bits(&full, &sequential), "{}", layer.kind());
            let mut scratch = Scratch::default();
            // The AVX2 build over all rows on this thread (the dispatched one above is
            // AVX-512 where the CPU has it): the same bits.
            let mut avx2 = vec![0f32; s.csr.num_nodes * ow];
            with_widest(Vectors::Avx2, || {
                layer.aggregate_rows(
                    &s.csr,
                    &inputs,
                    0..s.csr.num_nodes,
                    &mut avx2,
                    None,
                    &mut scratch,
                )
            });
            assert!(same_bits(&full, &avx2), "{} (AVX2)", layer.kind());
            for i in [0, 7, 199] {
                let mut one = vec![0f32; ow];
                let entries = s.csr.row(i).len();
                let mut one_alpha = vec![0f32; entries * h];
                // The portable build, on one row: the same bits as the dispatched (AVX-512
                // or AVX2) build over all rows.
                with_widest(Vectors::Portable, || {
                    layer.aggregate_rows(
                        &s.csr,
                        &inputs,
                        i..i + 1,
                        &mut one,
                        Some(&mut one_alpha),
                        &mut scratch,
                    )
                });
                assert!(
                    same_bits(&one, &full[i * ow..(i + 1) * ow]),
                    "{} row {i}",
                    layer.kind()
                );
                let start = s.csr.row_ptr[i] * h;
                assert!(same_bits(&one_alpha, &alpha[start..start + entries * h]));
            }
        }
    }

    #[test]
    fn chunks_cover_all_rows_and_respect_the_edge_budget() {
        let row_ptr = [0, 5, 5, 5, 40, 41, 42, 100, 100];
        let bounds = chunk_bounds(&row_ptr, 10);
        assert_eq!(bounds.first(), Some(&0));
        assert_eq!(bounds.last(), Some(&8));
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        // A chunk only exceeds the budget by its last row.
        for w in bounds.windows(2) {
            let before_last = row_ptr[w[1] - 1] - row_ptr[w[0]];
            assert!(before_last < 10, "chunk {w:?}");
        }
        assert_eq!(chunk_bounds(&[0], 10), vec![0]);
    }

    #[test]
    fn lane_dot_products_are_close_to_the_exact_sum() {
        let mut next = stream(3);
        for len in [1, 7, 8, 9, 32, 33, 128] {
            let a: Vec<f32> = (0..len).map(|_| next()).collect();
            let b: Vec<f32> = (0..len).map(|_| next()).collect();
            let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let ours = dot_lanes(&b, |i| a[i]) as f64;
            assert!((ours - exact).abs() <= 1e-5 * (1.0 + exact.abs()), "{len}");
        }
    }
}
