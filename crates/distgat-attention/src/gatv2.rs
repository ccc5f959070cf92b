//! PyG 2.8.1 `GATv2Conv` (eval mode; Brody et al. 2022, "How attentive are graph
//! attention networks?"), with `share_weights`, `edge_dim`, `residual` and `bias`.
//!
//! `x_l = lin_l(x)` (source side j), `x_r = lin_r(x)` (target side i). For an edge
//! j -> i: `m = x_l[j] + x_r[i] (+ lin_edge(edge_attr_e))`,
//! `e[h] = sum_c att[h,c] * LeakyReLU(m[h,c])`, `alpha = softmax_i(e)`,
//! `out_i = sum_j alpha x_l[j]`, then concat or head mean, `+ res(x_i)`, `+ bias`.
//!
//! Rows: source = `x_l` (`H*C`), target = `x_r ‖ res(x)`. The score needs `H*C` work per
//! edge (plus `D*H*C` with edge features, recomputed per entry, never stored).

use distgat_graph::IncomingCsr;

use crate::dense::Linear;
use crate::kind::{
    add_into, combine_heads, dot_lanes, exponentiate, leaky_relu, prefetch_ahead,
    prefetch_distance, write_alpha, AttentionKind, FillValue, RowInputs, Scratch, SOFTMAX_EPS,
};
use crate::weighted_sum::{weighted_sum, RegisterShape, WeightedSum};

#[derive(Debug, Clone, PartialEq)]
pub struct GatV2Conv {
    pub heads: usize,
    pub channels: usize,
    pub concat: bool,
    pub negative_slope: f32,
    pub add_self_loops: bool,
    pub fill_value: FillValue,
    /// `lin_l` (`[H*C, F_in]` + bias `[H*C]` with `bias=True`).
    pub lin_l: Linear,
    /// `lin_r` (the same map as `lin_l` with `share_weights=True`).
    pub lin_r: Linear,
    /// `att` flattened `[H*C]`.
    pub att: Vec<f32>,
    /// With `edge_dim`: `lin_edge` (`[H*C, D]`, no bias).
    pub lin_edge: Option<Linear>,
    /// With `residual`: `res` (`[out_width, F_in]`, no bias).
    pub res: Option<Linear>,
    /// `[out_width]`, or empty for `bias=False`.
    pub bias: Vec<f32>,
}

impl GatV2Conv {
    fn hc(&self) -> usize {
        self.heads * self.channels
    }
}

impl AttentionKind for GatV2Conv {
    fn kind(&self) -> &'static str {
        "GATv2Conv"
    }
    fn in_features(&self) -> usize {
        self.lin_l.in_features
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
        self.lin_edge.as_ref().map(|l| l.in_features)
    }
    fn fill_value(&self) -> FillValue {
        self.fill_value
    }
    fn source_width(&self) -> usize {
        self.hc()
    }
    fn target_width(&self) -> usize {
        self.hc() + self.res.as_ref().map_or(0, |r| r.out_features)
    }

    fn transform_block(&self, x: &[f32], source: &mut [f32], target: &mut [f32]) {
        let (hc, tw) = (self.hc(), self.target_width());
        self.lin_l.apply(x, source, 0, hc);
        self.lin_r.apply(x, target, 0, tw);
        if let Some(res) = &self.res {
            res.apply(x, target, hc, tw);
        }
    }

    // In the widest build the CPU has.
    crate::kind::aggregate_rows_dispatch!();
}

impl GatV2Conv {
    crate::kind::wide_aggregate_builds!();

    /// The row loop of [`AttentionKind::aggregate_rows`], in the portable build unless
    /// inlined into a wider one.
    #[inline(always)]
    fn aggregate_rows_portable(&self, args: crate::kind::AggregateArgs<'_, '_>) {
        let (csr, inputs, rows, out, mut alpha, scratch) = args;
        let (h, c, hc, ow, tw) = (
            self.heads,
            self.channels,
            self.hc(),
            self.out_width(),
            self.target_width(),
        );
        let slope = self.negative_slope;
        let first_entry = csr.row_ptr[rows.start];
        scratch.max.resize(h, 0.0);
        scratch.sum.resize(h, 0.0);
        scratch.acc.resize(hc, 0.0);
        scratch.edge.resize(hc, 0.0);
        scratch.row.resize(hc, 0.0);
        let ahead = prefetch_distance(hc);
        let registers = RegisterShape::of(hc, c);
        for (local, i) in rows.enumerate() {
            let sources = csr.row(i);
            let row_start = csr.row_ptr[i];
            let out_row = &mut out[local * ow..(local + 1) * ow];
            let target = &inputs.target[i * tw..(i + 1) * tw];
            let (x_r, res) = target.split_at(hc);
            if sources.is_empty() {
                out_row.fill(0.0);
            } else {
                // Pass 1: scores (H*C work per entry) and their per-head maximum.
                let weights = &mut scratch.weights;
                weights.clear();
                scratch.max.fill(f32::NEG_INFINITY);
                for (k, &j) in sources.iter().enumerate() {
                    prefetch_ahead(csr, row_start + k, ahead, inputs.source, hc);
                    let x_l = &inputs.source[j as usize * hc..(j as usize + 1) * hc];
                    match &self.lin_edge {
                        None => {
                            for head in 0..h {
                                let (l, r) = (
                                    &x_l[head * c..(head + 1) * c],
                                    &x_r[head * c..(head + 1) * c],
                                );
                                let e = dot_lanes(&self.att[head * c..(head + 1) * c], |t| {
                                    leaky_relu(l[t] + r[t], slope)
                                });
                                scratch.max[head] = scratch.max[head].max(e);
                                weights.push(e);
                            }
                        }
                        Some(lin_edge) => {
                            let m = &mut scratch.row;
                            for ((m, &a), &b) in m.iter_mut().zip(x_l).zip(x_r) {
                                *m = a + b;
                            }
                            let d = lin_edge.in_features;
                            let e = row_start + k;
                            let ea = &inputs.edge_attr.unwrap_or_default()[e * d..(e + 1) * d];
                            lin_edge.apply_row_no_bias(ea, &mut scratch.edge);
                            add_into(m, &scratch.edge);
                            for head in 0..h {
                                let mh = &m[head * c..(head + 1) * c];
                                let e = dot_lanes(&self.att[head * c..(head + 1) * c], |t| {
                                    leaky_relu(mh[t], slope)
                                });
                                scratch.max[head] = scratch.max[head].max(e);
                                weights.push(e);
                            }
                        }
                    }
                }
                exponentiate(weights, &scratch.max, &mut scratch.sum);
                // Pass 2: the weighted sum of x_l rows (pass 1 read them: no prefetch).
                let sum = WeightedSum::over_read_rows(
                    csr,
                    row_start,
                    sources,
                    weights,
                    inputs.source,
                    hc,
                    0,
                );
                weighted_sum(registers, &sum, h, c, &mut scratch.acc);
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
