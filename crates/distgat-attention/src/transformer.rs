//! PyG 2.8.1 `TransformerConv` (eval mode; Shi et al. 2021, "Masked label prediction"),
//! with `heads`, `concat`, `beta`, `root_weight`, `edge_dim` and `bias`.
//!
//! `q = lin_query(x)[i]`, `k = lin_key(x)[j]`, `v = lin_value(x)[j]` (each `[H, C]`);
//! with `edge_dim`, `ee = lin_edge(edge_attr_e)` is added to both `k` and `v`.
//! `alpha = softmax_i(<q, k> / sqrt(C))`, `out_i = sum_j alpha v`, concat or head mean.
//! Root (`root_weight`): `r = lin_skip(x_i)`; with `beta`,
//! `b = sigmoid([out ‖ r ‖ out - r] lin_beta.weight^T)` and `out = b r + (1 - b) out`;
//! without, `out = out + r`. No self loops are added: the file's loops are ordinary edges.
//!
//! Rows: source = `k ‖ v` (`2*H*C`), target = `q ‖ r`.

use distgat_graph::IncomingCsr;

use crate::dense::Linear;
use crate::kind::{
    add_into, combine_heads, dot_lanes, exponentiate, prefetch_ahead, prefetch_distance,
    write_alpha, AttentionKind, FillValue, RowInputs, Scratch, SOFTMAX_EPS,
};
use crate::weighted_sum::{weighted_sum, RegisterShape, WeightedSum};

#[derive(Debug, Clone, PartialEq)]
pub struct TransformerConv {
    pub heads: usize,
    pub channels: usize,
    pub concat: bool,
    pub lin_query: Linear,
    pub lin_key: Linear,
    pub lin_value: Linear,
    /// With `edge_dim`: `lin_edge` (`[H*C, D]`, no bias).
    pub lin_edge: Option<Linear>,
    /// With `root_weight`: `lin_skip` (`[out_width, F_in]`).
    pub lin_skip: Option<Linear>,
    /// With `beta` and `root_weight`: `lin_beta.weight` flattened `[3 * out_width]`.
    pub lin_beta: Option<Vec<f32>>,
}

impl TransformerConv {
    fn hc(&self) -> usize {
        self.heads * self.channels
    }
}

impl AttentionKind for TransformerConv {
    fn kind(&self) -> &'static str {
        "TransformerConv"
    }
    fn in_features(&self) -> usize {
        self.lin_query.in_features
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
        false
    }
    fn edge_dim(&self) -> Option<usize> {
        self.lin_edge.as_ref().map(|l| l.in_features)
    }
    fn fill_value(&self) -> FillValue {
        FillValue::Mean
    }
    fn source_width(&self) -> usize {
        2 * self.hc()
    }
    fn target_width(&self) -> usize {
        self.hc() + self.lin_skip.as_ref().map_or(0, |r| r.out_features)
    }

    fn transform_block(&self, x: &[f32], source: &mut [f32], target: &mut [f32]) {
        let (hc, sw, tw) = (self.hc(), self.source_width(), self.target_width());
        self.lin_key.apply(x, source, 0, sw);
        self.lin_value.apply(x, source, hc, sw);
        self.lin_query.apply(x, target, 0, tw);
        if let Some(skip) = &self.lin_skip {
            skip.apply(x, target, hc, tw);
        }
    }

    // In the widest build the CPU has.
    crate::kind::aggregate_rows_dispatch!();
}

impl TransformerConv {
    crate::kind::wide_aggregate_builds!();

    /// The row loop of [`AttentionKind::aggregate_rows`], in the portable build unless
    /// inlined into a wider one.
    #[inline(always)]
    fn aggregate_rows_portable(&self, args: crate::kind::AggregateArgs<'_, '_>) {
        let (csr, inputs, rows, out, mut alpha, scratch) = args;
        let (h, c, hc, ow) = (self.heads, self.channels, self.hc(), self.out_width());
        let (sw, tw) = (self.source_width(), self.target_width());
        let scale = (c as f32).sqrt();
        let first_entry = csr.row_ptr[rows.start];
        scratch.max.resize(h, 0.0);
        scratch.sum.resize(h, 0.0);
        scratch.acc.resize(hc, 0.0);
        scratch.edge.resize(hc, 0.0);
        scratch.row.resize(hc, 0.0);
        let edge_attr = inputs.edge_attr.unwrap_or_default();
        let ahead = prefetch_distance(sw);
        let registers = RegisterShape::of(hc, c);
        for (local, i) in rows.enumerate() {
            let sources = csr.row(i);
            let row_start = csr.row_ptr[i];
            let out_row = &mut out[local * ow..(local + 1) * ow];
            let target = &inputs.target[i * tw..(i + 1) * tw];
            let (q, r) = target.split_at(hc);
            if sources.is_empty() {
                out_row.fill(0.0);
            } else {
                // Pass 1: scaled dot products and their per-head maximum.
                let weights = &mut scratch.weights;
                weights.clear();
                scratch.max.fill(f32::NEG_INFINITY);
                for (k, &j) in sources.iter().enumerate() {
                    prefetch_ahead(csr, row_start + k, ahead, inputs.source, sw);
                    let key = &inputs.source[j as usize * sw..j as usize * sw + hc];
                    let key = match &self.lin_edge {
                        Some(lin_edge) => {
                            let (d, e) = (lin_edge.in_features, row_start + k);
                            lin_edge.apply_row_no_bias(
                                &edge_attr[e * d..(e + 1) * d],
                                &mut scratch.edge,
                            );
                            for ((m, &a), &b) in scratch.row.iter_mut().zip(key).zip(&scratch.edge)
                            {
                                *m = a + b;
                            }
                            &scratch.row[..]
                        }
                        None => key,
                    };
                    for head in 0..h {
                        let qh = &q[head * c..(head + 1) * c];
                        let e = dot_lanes(&key[head * c..(head + 1) * c], |t| qh[t]) / scale;
                        scratch.max[head] = scratch.max[head].max(e);
                        weights.push(e);
                    }
                }
                exponentiate(weights, &scratch.max, &mut scratch.sum);
                // Pass 2: the weighted sum of value rows (plus the edge embedding). Pass 1
                // prefetched whole rows, the values too.
                if self.lin_edge.is_none() {
                    let sum = WeightedSum::over_read_rows(
                        csr,
                        row_start,
                        sources,
                        weights,
                        inputs.source,
                        sw,
                        hc,
                    );
                    weighted_sum(registers, &sum, h, c, &mut scratch.acc);
                } else {
                    scratch.acc.fill(0.0);
                    for (k, (&j, w)) in sources.iter().zip(weights.chunks_exact(h)).enumerate() {
                        let value = &inputs.source[j as usize * sw + hc..(j as usize + 1) * sw];
                        let value = match &self.lin_edge {
                            Some(lin_edge) => {
                                let (d, e) = (lin_edge.in_features, row_start + k);
                                lin_edge.apply_row_no_bias(
                                    &edge_attr[e * d..(e + 1) * d],
                                    &mut scratch.edge,
                                );
                                for ((m, &a), &b) in
                                    scratch.row.iter_mut().zip(value).zip(&scratch.edge)
                                {
                                    *m = a + b;
                                }
                                &scratch.row[..]
                            }
                            None => value,
                        };
                        for head in 0..h {
                            let wh = w[head];
                            let acc = &mut scratch.acc[head * c..(head + 1) * c];
                            for (a, &v) in acc.iter_mut().zip(&value[head * c..(head + 1) * c]) {
                                *a += wh * v;
                            }
                        }
                    }
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
            if self.lin_skip.is_some() {
                match &self.lin_beta {
                    Some(w) => {
                        let (w_out, rest) = w.split_at(ow);
                        let (w_r, w_diff) = rest.split_at(ow);
                        let mut logit = 0.0f32;
                        for t in 0..ow {
                            logit += out_row[t] * w_out[t];
                        }
                        for t in 0..ow {
                            logit += r[t] * w_r[t];
                        }
                        for t in 0..ow {
                            logit += (out_row[t] - r[t]) * w_diff[t];
                        }
                        let b = 1.0 / (1.0 + (-logit).exp());
                        for (o, &rv) in out_row.iter_mut().zip(r) {
                            *o = b * rv + (1.0 - b) * *o;
                        }
                    }
                    None => add_into(out_row, r),
                }
            }
        }
    }
}
