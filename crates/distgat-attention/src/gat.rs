//! PyG 2.8.1 `GATConv` (eval mode), with `edge_dim`, `residual` and `bias`.
//!
//! For an edge j -> i and head h (Veličković et al. 2018; PyG's `GATConv.forward`):
//! `z = x lin.weight^T`, `s_src[n,h] = <z[n,h,:], att_src[h,:]>`,
//! `s_dst[n,h] = <z[n,h,:], att_dst[h,:]>`, with `edge_dim` also
//! `s_edge[e,h] = <lin_edge(edge_attr[e])[h,:], att_edge[h,:]>`;
//! `e = LeakyReLU(s_src[j] + s_dst[i] (+ s_edge[e]))`, `alpha = softmax_i(e)`,
//! `out_i = sum_j alpha z[j]`, then concat or head mean, `+ res(x_i)`, `+ bias`.
//!
//! Rows: source = `z` (`H*C`; a halo row carries it), source aux = `s_src` (`H`,
//! recomputed from `z` by whoever holds the row, so pass 1 reads a dense `[N, H]` array
//! instead of one cache line per source row), target = `s_dst ‖ res(x)` (`H + out_width`
//! with `residual`, else `H`). `s_edge` is computed per entry from the folded vector
//! `v[h, d] = sum_c lin_edge.weight[h*C + c, d] * att_edge[h, c]` (`H x D`), so edge
//! features add `H*D` work per edge and no per-edge tensor.

use distgat_graph::IncomingCsr;

use crate::dense::{dot, Linear};
use crate::kind::{
    add_into, combine_heads, exp_nonpositive, exponentiate, l2_prefetch_distance, leaky_relu,
    prefetch_ahead, prefetch_distance, prefetch_row, write_alpha, AttentionKind, FillValue,
    RowInputs, Scratch, SOFTMAX_EPS,
};
use crate::weighted_sum::{weighted_sum, RegisterShape, WeightedSum};

/// Pass 1 reads only `H` scores per entry, so it prefetches further ahead.
const SCORE_PREFETCH_DISTANCE: usize = 32;

/// Source rows at most this wide (bytes) have their scores `<z_j[h], att_src[h]>`
/// computed in pass 1 from the row itself, which pass 2 then finds in L1, instead of
/// looked up in the `[N, H]` score table: at 128-byte rows a score is a random 64-byte
/// line an edge besides the row's two. The same [`dot`] in the same order as
/// [`AttentionKind::fill_source_aux`], so the same bits. Measured at 10M nodes / 100M
/// edges with 4 x 8 heads: 7.37 s -> 6.03 s a layer; at 1M / 10M with 4 x 32 heads
/// (512-byte rows) it was slower (1.25-1.29 s -> 1.43-1.46 s: four sequential 32-term
/// dot products an edge), hence the bound (docs/performance.md, eleventh session).
const SCORES_FROM_ROWS_MAX_BYTES: usize = 256;

/// Bytes of source rows [`GatConv::narrow_rows`] prefetches ahead into L1 (16 rows of
/// 128 bytes; no fewer than 8 rows and no more than 64). At 10M nodes / 100M edges with
/// 4 x 8 heads, 8 interleaved runs each: 2 KiB ahead gave `infer` a median of 9.4 s
/// against 11.2 s at 4 KiB (two runs each at 1.5 KiB, 11.0-11.3 s, and 3 KiB, 9.5-9.9 s).
/// The runs of one setting spread by up to 6 s on this VM, so this is a lean, not a
/// proof; at 1M / 10M no difference showed (docs/performance.md, twentieth session).
const NARROW_PREFETCH_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq)]
pub struct GatConv {
    pub heads: usize,
    pub channels: usize,
    pub concat: bool,
    pub negative_slope: f32,
    pub add_self_loops: bool,
    pub fill_value: FillValue,
    /// `lin.weight` (`[H*C, F_in]`, no bias).
    pub lin: Linear,
    /// `att_src` flattened `[H*C]`: weighs the sending node.
    pub att_src: Vec<f32>,
    /// `att_dst` flattened `[H*C]`: weighs the receiving node.
    pub att_dst: Vec<f32>,
    /// With `edge_dim = D`: the folded `lin_edge`/`att_edge` vector `[H, D]`.
    pub edge_score: Option<(usize, Vec<f32>)>,
    /// With `residual`: `res.weight` (`[out_width, F_in]`, no bias).
    pub res: Option<Linear>,
    /// `[out_width]`, or empty for `bias=False`.
    pub bias: Vec<f32>,
}

impl GatConv {
    /// A plain layer (no edge features, no residual) from PyG-shaped tensors:
    /// `lin_weight` is `[H*C, F_in]` row-major, `att_*` `[H*C]`, `bias` `[out_width]` or empty.
    #[allow(clippy::too_many_arguments)]
    pub fn from_pyg(
        in_features: usize,
        heads: usize,
        channels: usize,
        concat: bool,
        negative_slope: f32,
        add_self_loops: bool,
        lin_weight: &[f32],
        att_src: Vec<f32>,
        att_dst: Vec<f32>,
        bias: Vec<f32>,
    ) -> Self {
        GatConv {
            heads,
            channels,
            concat,
            negative_slope,
            add_self_loops,
            fill_value: FillValue::Mean,
            lin: Linear::from_torch(lin_weight, heads * channels, in_features, Vec::new()),
            att_src,
            att_dst,
            edge_score: None,
            res: None,
            bias,
        }
    }

    /// Folds `lin_edge.weight` (`[H*C, D]`) and `att_edge` (`[H*C]`) into `[H, D]`.
    pub fn fold_edge(
        heads: usize,
        channels: usize,
        dim: usize,
        lin_edge: &[f32],
        att_edge: &[f32],
    ) -> Vec<f32> {
        let mut v = vec![0f32; heads * dim];
        for h in 0..heads {
            for d in 0..dim {
                v[h * dim + d] = (0..channels).fold(0.0, |acc, c| {
                    acc + lin_edge[(h * channels + c) * dim + d] * att_edge[h * channels + c]
                });
            }
        }
        v
    }

    fn hc(&self) -> usize {
        self.heads * self.channels
    }
}

impl AttentionKind for GatConv {
    fn kind(&self) -> &'static str {
        "GATConv"
    }
    fn in_features(&self) -> usize {
        self.lin.in_features
    }
    fn heads(&self) -> usize {
        self.heads
    }
    fn out_width(&self) -> usize {
        if self.concat {
            self.hc()
        } else {
            self.channels
        }
    }
    fn add_self_loops(&self) -> bool {
        self.add_self_loops
    }
    fn edge_dim(&self) -> Option<usize> {
        self.edge_score.as_ref().map(|(d, _)| *d)
    }
    fn fill_value(&self) -> FillValue {
        self.fill_value
    }
    fn source_width(&self) -> usize {
        self.hc()
    }
    fn target_width(&self) -> usize {
        self.heads + self.res.as_ref().map_or(0, |r| r.out_features)
    }

    /// `H` (the score table) for wide source rows; 0 when the scores come from the rows
    /// themselves (see [`GatConv::scores_from_rows`]), so no caller builds the table.
    fn source_aux_width(&self) -> usize {
        if self.scores_from_rows() {
            0
        } else {
            self.heads
        }
    }

    fn fill_source_aux(&self, source: &[f32], aux: &mut [f32]) {
        if self.source_aux_width() > 0 {
            self.fill_source_scores(source, aux);
        }
    }

    fn transform_block(&self, x: &[f32], source: &mut [f32], target: &mut [f32]) {
        let (h, c) = (self.heads, self.channels);
        let (sw, tw) = (self.source_width(), self.target_width());
        self.lin.apply(x, source, 0, sw);
        if let Some(res) = &self.res {
            res.apply(x, target, h, tw);
        }
        for (z, tgt) in source.chunks_exact(sw).zip(target.chunks_exact_mut(tw)) {
            for head in 0..h {
                let zh = &z[head * c..(head + 1) * c];
                tgt[head] = dot(zh, &self.att_dst[head * c..(head + 1) * c]);
            }
        }
    }

    // In the widest build the CPU has.
    crate::kind::aggregate_rows_dispatch!();
}

impl GatConv {
    crate::kind::wide_aggregate_builds!();

    /// The row loop of [`AttentionKind::aggregate_rows`], in the portable build unless
    /// inlined into a wider one.
    #[inline(always)]
    fn aggregate_rows_portable(&self, args: crate::kind::AggregateArgs<'_, '_>) {
        let (csr, inputs, rows, out, alpha, scratch) = args;
        let from_rows = self.scores_from_rows();
        self.aggregate_rows_scored(csr, inputs, rows, out, alpha, scratch, from_rows);
    }

    /// Whether the aggregation computes each source score `<z_j[h], att_src[h]>` from the
    /// source row itself (rows of at most [`SCORES_FROM_ROWS_MAX_BYTES`]) instead of
    /// reading the `[N, H]` score table; then the table has width 0 and is never built.
    pub fn scores_from_rows(&self) -> bool {
        4 * self.source_width() <= SCORES_FROM_ROWS_MAX_BYTES
    }

    /// The `[rows, H]` source scores of `source` (`[rows, H*C]`) into `aux`:
    /// `aux[r, h] = <source[r, h*C..(h+1)*C], att_src[h]>` (PyG's `alpha_src`).
    pub(crate) fn fill_source_scores(&self, source: &[f32], aux: &mut [f32]) {
        let (c, hc, h) = (self.channels, self.hc(), self.heads);
        for (z, s) in source.chunks_exact(hc).zip(aux.chunks_exact_mut(h)) {
            for head in 0..h {
                s[head] = dot(
                    &z[head * c..(head + 1) * c],
                    &self.att_src[head * c..(head + 1) * c],
                );
            }
        }
    }

    /// The edge score's inputs for CSR entry `e` with `edge_dim = D`: the entry's `[D]`
    /// attributes (from the `[entries, D]` `edge_attr`), the folded `[H, D]` vector and
    /// `D`; `None` without `edge_dim`.
    #[inline(always)]
    fn edge_of<'a>(
        &'a self,
        edge_attr: Option<&'a [f32]>,
        e: usize,
    ) -> Option<(&'a [f32], &'a [f32], usize)> {
        self.edge_score.as_ref().map(|(d, v)| {
            let d = *d;
            (
                &edge_attr.unwrap_or_default()[e * d..(e + 1) * d],
                &v[..],
                d,
            )
        })
    }

    /// [`GatConv::aggregate_rows_scored`] for narrow rows (scores computed from the rows)
    /// of `H` heads of `C` channels (`W = H * C`), known at compile time; with `edge_dim`,
    /// each score adds the edge's `<edge_attr[e], v[h]>` as the general loop does.
    ///
    /// Every value goes through the same operations, on the same operands, in the same
    /// order as in the general loop, so the bits are the same (tested against the score
    /// table's loop): each score is `0 + z_0 a_0 + z_1 a_1 + ...` in channel order (the
    /// general loop's `dot`), each softmax term is [`exp_nonpositive`] of the score minus
    /// its head's maximum and each head's sum runs in entry order (as in
    /// [`exponentiate`]), and the weighted sum adds `w_h * z` entry by entry. What changes
    /// is only the code: fixed-size loops the compiler unrolls and vectorises, the scores
    /// of all heads side by side, the sums and the `[H*C]` accumulator in registers. On
    /// an ER graph of 1M nodes / 10M edges with 4 x 8 heads this was most of the layer's
    /// time (docs/performance.md, twentieth session).
    // Each head indexes four fixed-size arrays at once (scores, maxima, sums, weights).
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[inline(always)]
    fn narrow_rows<const H: usize, const C: usize, const W: usize>(
        &self,
        csr: &IncomingCsr,
        inputs: &RowInputs<'_>,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        mut alpha: Option<&mut [f32]>,
        scratch: &mut Scratch,
    ) {
        debug_assert_eq!((H, C, W), (self.heads, self.channels, self.hc()));
        let att: &[f32; W] = self.att_src[..].try_into().expect("att_src is [H*C]");
        let (ow, tw) = (self.out_width(), self.target_width());
        let slope = self.negative_slope;
        let first_entry = csr.row_ptr[rows.start];
        let ahead = (NARROW_PREFETCH_BYTES / (4 * W)).clamp(8, 64);
        let row_of = |j: u32| -> &[f32; W] {
            let j = j as usize;
            inputs.source[j * W..(j + 1) * W]
                .try_into()
                .expect("a source row is [H*C]")
        };
        for (local, i) in rows.enumerate() {
            let sources = csr.row(i);
            let row_start = csr.row_ptr[i];
            let out_row = &mut out[local * ow..(local + 1) * ow];
            let target = &inputs.target[i * tw..(i + 1) * tw];
            let (s_dst, res) = target.split_at(H);
            let s_dst: &[f32; H] = s_dst.try_into().expect("target rows start with [H]");
            if sources.is_empty() {
                // No incoming edge: the message is 0, the output res(x) + bias.
                out_row.fill(0.0);
            } else {
                // Pass 1: scores and their per-head maximum.
                let weights = &mut scratch.weights;
                weights.clear();
                weights.resize(sources.len() * H, 0.0);
                let mut max = [f32::NEG_INFINITY; H];
                for (k, (&j, w)) in sources.iter().zip(weights.chunks_exact_mut(H)).enumerate() {
                    prefetch_ahead(csr, row_start + k, ahead, inputs.source, W);
                    let z = row_of(j);
                    let edge = self.edge_of(inputs.edge_attr, row_start + k);
                    for head in 0..H {
                        let mut s = 0.0f32;
                        for ch in head * C..(head + 1) * C {
                            s += z[ch] * att[ch];
                        }
                        let mut e = s + s_dst[head];
                        if let Some((ea, v, d)) = edge {
                            e += dot(ea, &v[head * d..(head + 1) * d]);
                        }
                        let e = leaky_relu(e, slope);
                        max[head] = max[head].max(e);
                        w[head] = e;
                    }
                }
                // Softmax numerators and their per-head sums, in entry order.
                let mut sum = [0f32; H];
                for w in weights.chunks_exact_mut(H) {
                    for head in 0..H {
                        w[head] = exp_nonpositive(w[head] - max[head]);
                        sum[head] += w[head];
                    }
                }
                // Pass 2: the weighted sum of the source rows, which pass 1 left in L1.
                let mut acc = [0f32; W];
                for (&j, w) in sources.iter().zip(weights.chunks_exact(H)) {
                    let z = row_of(j);
                    for head in 0..H {
                        let wh = w[head];
                        for ch in head * C..(head + 1) * C {
                            acc[ch] += wh * z[ch];
                        }
                    }
                }
                let inv = sum.map(|s| 1.0 / (s + SOFTMAX_EPS));
                combine_heads(&acc, &inv, C, self.concat, out_row);
                if let Some(alpha) = alpha.as_deref_mut() {
                    let begin = (row_start - first_entry) * H;
                    write_alpha(&mut alpha[begin..begin + sources.len() * H], weights, &inv);
                }
            }
            add_into(out_row, res);
            add_into(out_row, &self.bias);
        }
    }

    /// [`GatConv::aggregate_rows_portable`], with the source scores computed from the
    /// source rows (`scores_from_rows`) or read from `inputs.source_aux`: the same bits.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn aggregate_rows_scored(
        &self,
        csr: &IncomingCsr,
        inputs: &RowInputs<'_>,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        mut alpha: Option<&mut [f32]>,
        scratch: &mut Scratch,
        scores_from_rows: bool,
    ) {
        let (h, c, hc, ow) = (self.heads, self.channels, self.hc(), self.out_width());
        if scores_from_rows {
            // Narrow rows of a common shape: the same loop with `H` and `C` known to the
            // compiler (`narrow_rows`).
            macro_rules! shapes {
                ($(($hh:literal, $cc:literal)),*) => {
                    match (h, c) {
                        $(($hh, $cc) => {
                            return self.narrow_rows::<$hh, $cc, { $hh * $cc }>(
                                csr, inputs, rows, out, alpha, scratch,
                            )
                        })*
                        _ => {}
                    }
                };
            }
            shapes!(
                (1, 8),
                (1, 16),
                (1, 32),
                (1, 64),
                (2, 8),
                (2, 16),
                (2, 32),
                (4, 8),
                (4, 16),
                (8, 8)
            );
        }
        let (sw, tw) = (self.source_width(), self.target_width());
        let slope = self.negative_slope;
        let first_entry = csr.row_ptr[rows.start];
        scratch.max.resize(h, 0.0);
        scratch.sum.resize(h, 0.0);
        scratch.acc.resize(hc, 0.0);
        scratch.row.resize(h, 0.0);
        let ahead = prefetch_distance(sw);
        let ahead_to_l2 = l2_prefetch_distance(sw);
        // The register loop needs the rows to be exactly the summed `H*C` values.
        let registers = RegisterShape::of(hc, c).filter(|_| sw == hc);
        for (local, i) in rows.enumerate() {
            let sources = csr.row(i);
            let row_start = csr.row_ptr[i];
            let out_row = &mut out[local * ow..(local + 1) * ow];
            let target = &inputs.target[i * tw..(i + 1) * tw];
            let (s_dst, res) = target.split_at(h);
            if sources.is_empty() {
                // No incoming edge: the message is 0, the output res(x) + bias.
                out_row.fill(0.0);
            } else {
                // Pass 1: scores and their per-head maximum.
                let weights = &mut scratch.weights;
                weights.clear();
                scratch.max.fill(f32::NEG_INFINITY);
                for (k, &j) in sources.iter().enumerate() {
                    let j = j as usize;
                    let s_src: &[f32] = if scores_from_rows {
                        prefetch_ahead(csr, row_start + k, ahead, inputs.source, sw);
                        let z = &inputs.source[j * sw..(j + 1) * sw];
                        for (head, s) in scratch.row.iter_mut().enumerate() {
                            let att = &self.att_src[head * c..(head + 1) * c];
                            *s = dot(&z[head * c..(head + 1) * c], att);
                        }
                        &scratch.row
                    } else {
                        let next = csr.col.get(row_start + k + SCORE_PREFETCH_DISTANCE);
                        if let Some(&next) = next {
                            let a = next as usize * h;
                            if let Some(row) = inputs.source_aux.get(a..a + h) {
                                prefetch_row(row);
                            }
                        }
                        &inputs.source_aux[j * h..(j + 1) * h]
                    };
                    let edge = self.edge_of(inputs.edge_attr, row_start + k);
                    for head in 0..h {
                        let mut e = s_src[head] + s_dst[head];
                        if let Some((ea, v, d)) = edge {
                            e += dot(ea, &v[head * d..(head + 1) * d]);
                        }
                        let e = leaky_relu(e, slope);
                        scratch.max[head] = scratch.max[head].max(e);
                        weights.push(e);
                    }
                }
                exponentiate(weights, &scratch.max, &mut scratch.sum);
                // Pass 2: the weighted sum of source rows.
                if scores_from_rows {
                    // Narrow rows, already prefetched by pass 1: the plain loop (with the
                    // register loop or this loop inside the seventeenth session's
                    // `WeightedSum`, which prefetched, the aggregation at 10M nodes / 100M
                    // edges with 4 x 8 heads was 7-15% slower). `WeightedSum::over_read_rows`
                    // (no prefetch) is this loop's twin, not yet measured here.
                    scratch.acc.fill(0.0);
                    for (&j, w) in sources.iter().zip(weights.chunks_exact(h)) {
                        let z = &inputs.source[j as usize * sw..(j as usize + 1) * sw];
                        for head in 0..h {
                            let wh = w[head];
                            let acc = &mut scratch.acc[head * c..(head + 1) * c];
                            for (a, &zv) in acc.iter_mut().zip(&z[head * c..(head + 1) * c]) {
                                *a += wh * zv;
                            }
                        }
                    }
                } else {
                    let sum = WeightedSum::<true> {
                        csr,
                        row_start,
                        ahead: ahead_to_l2,
                        sources,
                        weights,
                        source: inputs.source,
                        width: sw,
                        offset: 0,
                    };
                    weighted_sum(registers, &sum, h, c, &mut scratch.acc);
                }
                for s in scratch.sum.iter_mut() {
                    *s = 1.0 / (*s + SOFTMAX_EPS);
                }
                combine_heads(&scratch.acc, &scratch.sum, c, self.concat, out_row);
                if let Some(alpha) = alpha.as_deref_mut() {
                    let begin = (row_start - first_entry) * h;
                    write_alpha(
                        &mut alpha[begin..begin + sources.len() * h],
                        weights,
                        &scratch.sum,
                    );
                }
            }
            add_into(out_row, res);
            add_into(out_row, &self.bias);
        }
    }
}
