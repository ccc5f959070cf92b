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

/// Aggregates every CSR row into `out` (`[rows, out_width]`, row-major). With `alpha`
/// (`[csr entries, heads]`), also writes the attention coefficients in CSR order.
/// Work is split into chunks of whole rows holding about [`EDGES_PER_CHUNK`] entries, so
/// rayon balances by edges; each row is computed by one thread in CSR order, so the bits
/// do not depend on the thread count or on how rows are grouped.
pub fn aggregate_into(
    layer: &dyn AttentionKind,
    csr: &IncomingCsr,
    inputs: &RowInputs<'_>,
    exec: Execution,
    out: &mut [f32],
    mut alpha: Option<&mut [f32]>,
) {
    let rows = csr.row_ptr.len() - 1;
    let (h, ow) = (layer.heads(), layer.out_width());
    assert_eq!(out.len(), rows * ow, "aggregate: out buffer size");
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
        let (o, rest) = out_rest.split_at_mut((end - start) * ow);
        out_rest = rest;
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
    let run = |(start, end, o, a): (usize, usize, &mut [f32], Option<&mut [f32]>)| {
        let mut scratch = Scratch::default();
        with_wide_vectors(|| layer.aggregate_rows(csr, inputs, start..end, o, a, &mut scratch));
    };
    match exec {
        Execution::Sequential => work.into_iter().for_each(run),
        Execution::Parallel => work.into_par_iter().for_each(run),
    }
}

/// Runs `f` compiled for AVX2 when the CPU has it (kinds mark their row loops
/// `#[inline(always)]` so they are compiled into this frame). The arithmetic is the same
/// IEEE operations in the same order either way (Rust never contracts to FMA or
/// reassociates), only wider, so both paths give the same bits.
pub fn with_wide_vectors(f: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `run_avx2` only requires that the CPU supports AVX2, which was detected
        // at run time just above.
        #[allow(unsafe_code)]
        unsafe {
            run_avx2(f);
        }
        return;
    }
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

/// How many CSR entries ahead kernels prefetch source rows. A row is 128-512 bytes read
/// from a random place; without prefetching the kernel runs at memory latency rather than
/// bandwidth (measured at 1M nodes / 10M edges: 2.7 s without, 1.3-1.6 s with 8 ahead).
pub(crate) const PREFETCH_DISTANCE: usize = 8;

#[inline(always)]
pub(crate) fn prefetch_row(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: a prefetch is only a cache hint: it never faults, reads nothing into the
        // program and has no observable effect on memory; the address comes from a live
        // slice besides. SSE (which `_mm_prefetch` needs) is part of the x86_64 baseline.
        #[allow(unsafe_code)]
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Prefetches the source row of the CSR entry `entry + PREFETCH_DISTANCE` (across row
/// boundaries: rows are often shorter than the distance).
#[inline(always)]
pub(crate) fn prefetch_ahead(csr: &IncomingCsr, entry: usize, source: &[f32], width: usize) {
    if let Some(&ahead) = csr.col.get(entry + PREFETCH_DISTANCE) {
        let a = ahead as usize * width;
        if let Some(row) = source.get(a..a + width) {
            prefetch_row(row);
        }
    }
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

/// Turns the scores `weights` (`[degree, heads]`, maximum per head in `max`) into
/// `exp(e - max)` in place and returns their per-head sums in `sum`.
#[inline(always)]
pub(crate) fn exponentiate(weights: &mut [f32], max: &[f32], sum: &mut [f32]) {
    let h = max.len();
    sum.fill(0.0);
    for w in weights.chunks_exact_mut(h) {
        for ((w, &m), s) in w.iter_mut().zip(max).zip(sum.iter_mut()) {
            *w = (*w - m).exp();
            *s += *w;
        }
    }
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
