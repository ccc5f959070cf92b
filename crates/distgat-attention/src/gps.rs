//! PyG's `GPSConv` (torch_geometric 2.8.1, `nn/conv/gps_conv.py`) in eval mode: a local
//! message-passing layer and global `MultiheadAttention` side by side, then an MLP, each
//! with a residual connection and a normalisation. For `x` `[N, C]` float32 (the whole
//! graph is one sequence: no batch vector):
//!
//! ```text
//! h1  = norm1(conv(x, edge_index) + x)            (skipped when conv is None)
//! h2  = norm2(MultiheadAttention(x, x, x) + x)
//! out = h1 + h2
//! out = norm3(out + mlp(out)),   mlp = Linear(C, 2C) -> act -> Linear(2C, C)
//! ```
//!
//! Dropout is inert in eval mode. The pieces reuse distgat's own kinds: the conv is any
//! [`AttentionKind`] (run by the engine over the graph, its output handed to
//! [`GpsConv::forward`]), the attention is a [`GlobalAttention`] (exact blockwise, or
//! Nyström with `approx`), and the row-wise parts (norms, MLP) are the small dense
//! functions of this module.
//!
//! Norms (PyG's `normalization_resolver`):
//! * `batch_norm`: PyG `BatchNorm` wrapping `torch.nn.BatchNorm1d` as `module`; eval mode
//!   with running statistics: `(x − running_mean) / √(running_var + eps) · weight + bias`
//!   per channel. `num_batches_tracked` is read by nothing in eval mode (it only sets the
//!   momentum when `momentum` is None in training) and is accepted without being read.
//! * `layer_norm`: PyG `LayerNorm`, default `mode="graph"`: GPSConv passes `batch=None`, so
//!   one mean and one (biased) standard deviation over **all N·C values**:
//!   `(x − mean) / (std + eps) · weight + bias` (note: `+ eps` outside the square root, as
//!   in PyG). With `norm_kwargs: {"mode": "node"}` it is `F.layer_norm` per row:
//!   `(x − mean_row) / √(var_row + eps) · weight + bias`. The graph-mode reductions are
//!   float64, summed in fixed row blocks combined in block order (bitwise independent of
//!   the thread count).

use rayon::prelude::*;

use crate::collective::{all_reduce_exact_sums, Collective, SingleProcess};
use crate::dense::{for_each_row_block, Linear, ROWS_PER_BLOCK};
use crate::error::{ModelError, Result};
use crate::exact_sum::ExactSum;
use crate::exec::Execution;
use crate::global::{relative_frobenius_error, GlobalAttention, GlobalKind};
use crate::kind::AttentionKind;

/// The MLP's activation (`act` of GPSConv, resolved as PyG's `activation_resolver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpsActivation {
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.GELU()` (`approximate="none"`): `x/2 · (1 + erf(x/√2))`.
    Gelu,
}

impl GpsActivation {
    fn apply(self, v: &mut [f32]) {
        match self {
            GpsActivation::Relu => v.iter_mut().for_each(|v| *v = v.max(0.0)),
            GpsActivation::Gelu => v.iter_mut().for_each(|v| {
                let x = f64::from(*v);
                *v = (0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
            }),
        }
    }
}

/// `erf(x)` to within about 1e-15 (float64): the Taylor series for |x| < 2.5, the
/// continued fraction of `erfc` beyond (Abramowitz & Stegun 7.1.5 and 7.1.14).
fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.5 {
        // erf(a) = 2/√π Σ (-1)^n a^(2n+1) / (n! (2n+1))
        let (mut term, mut sum, a2) = (a, a, a * a);
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if a > 6.0 {
        1.0
    } else {
        // erfc(a) = exp(-a²)/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...)))), from the tail.
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64) / 2.0 / f;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    r.copysign(x)
}

/// One normalisation of a GPSConv layer (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub enum GpsNorm {
    /// BatchNorm in eval mode, folded per channel as torch's CPU kernel does:
    /// `y = x · scale + shift`, `scale = weight / √(running_var + eps)`,
    /// `shift = bias − running_mean · scale`.
    Batch { scale: Vec<f32>, shift: Vec<f32> },
    /// PyG LayerNorm over the whole graph (`mode="graph"`, `batch=None`); `affine` is
    /// `(weight, bias)` or `None`.
    Graph {
        eps: f64,
        affine: Option<(Vec<f32>, Vec<f32>)>,
    },
    /// PyG LayerNorm with `mode="node"` (`F.layer_norm` per row).
    Node {
        eps: f64,
        affine: Option<(Vec<f32>, Vec<f32>)>,
    },
}

impl GpsNorm {
    /// BatchNorm from its eval-mode tensors (`[C]` each; `weight`/`bias` `None` without
    /// `affine`).
    pub fn batch(mean: &[f32], var: &[f32], eps: f64, affine: Option<(&[f32], &[f32])>) -> GpsNorm {
        let mut scale = Vec::with_capacity(mean.len());
        let mut shift = Vec::with_capacity(mean.len());
        for c in 0..mean.len() {
            let inv = 1.0 / (f64::from(var[c]) + eps).sqrt();
            let (w, b) = affine.map_or((1.0, 0.0), |(w, b)| (f64::from(w[c]), f64::from(b[c])));
            let s = w * inv;
            scale.push(s as f32);
            shift.push((b - f64::from(mean[c]) * s) as f32);
        }
        GpsNorm::Batch { scale, shift }
    }

    /// Normalises `x` (this worker's rows of `[N, c]`) in place; graph mode reduces over
    /// all workers' rows through `comm`.
    fn apply(
        &self,
        x: &mut [f32],
        c: usize,
        comm: &mut dyn Collective,
        exec: Execution,
    ) -> Result<()> {
        match self {
            GpsNorm::Batch { scale, shift } => rows_mut(x, c, exec, &|rows| {
                for row in rows.chunks_exact_mut(c) {
                    for ((v, s), b) in row.iter_mut().zip(scale).zip(shift) {
                        *v = *v * s + b;
                    }
                }
            }),
            GpsNorm::Node { eps, affine } => rows_mut(x, c, exec, &|rows| {
                for row in rows.chunks_exact_mut(c) {
                    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / c as f64;
                    let var = row
                        .iter()
                        .map(|&v| (f64::from(v) - mean).powi(2))
                        .sum::<f64>()
                        / c as f64;
                    let inv = 1.0 / (var + eps).sqrt();
                    for (j, v) in row.iter_mut().enumerate() {
                        let y = (f64::from(*v) - mean) * inv;
                        *v = match affine {
                            Some((w, b)) => (y * f64::from(w[j]) + f64::from(b[j])) as f32,
                            None => y as f32,
                        };
                    }
                }
            }),
            GpsNorm::Graph { eps, affine } => {
                let count = (comm.num_nodes() * c) as f64;
                if count == 0.0 {
                    return Ok(());
                }
                let sum = exact_sum(x, c, exec, &|v| f64::from(v));
                let mean =
                    all_reduce_exact_sums(comm, vec![sum], "LayerNorm sum")?[0].value() / count;
                let sq = exact_sum(x, c, exec, &|v| (f64::from(v) - mean).powi(2));
                let var =
                    all_reduce_exact_sums(comm, vec![sq], "LayerNorm squares")?[0].value() / count;
                let inv = 1.0 / (var.sqrt() + eps);
                rows_mut(x, c, exec, &|rows| {
                    for row in rows.chunks_exact_mut(c) {
                        for (j, v) in row.iter_mut().enumerate() {
                            let y = (f64::from(*v) - mean) * inv;
                            *v = match affine {
                                Some((w, b)) => (y * f64::from(w[j]) + f64::from(b[j])) as f32,
                                None => y as f32,
                            };
                        }
                    }
                })
            }
        }
        Ok(())
    }
}

/// Runs `f` over fixed blocks of rows of `x` (`[N, c]`).
fn rows_mut(x: &mut [f32], c: usize, exec: Execution, f: &(dyn Fn(&mut [f32]) + Sync)) {
    let chunk = ROWS_PER_BLOCK * c.max(1);
    match exec {
        Execution::Sequential => x.chunks_mut(chunk).for_each(f),
        Execution::Parallel => x.par_chunks_mut(chunk).for_each(f),
    }
}

/// The exact sum of the float64 terms `f(v)` over `x` ([`ExactSum`]: independent of how
/// the rows are split over threads and workers).
fn exact_sum(x: &[f32], c: usize, exec: Execution, f: &(dyn Fn(f32) -> f64 + Sync)) -> ExactSum {
    let chunk = ROWS_PER_BLOCK * c.max(1);
    let partial = |b: &[f32]| {
        let mut s = ExactSum::default();
        b.iter().for_each(|&v| s.add(f(v)));
        s
    };
    let parts: Vec<ExactSum> = match exec {
        Execution::Sequential => x.chunks(chunk).map(partial).collect(),
        Execution::Parallel => x.par_chunks(chunk).map(partial).collect(),
    };
    let mut total = ExactSum::default();
    parts.iter().for_each(|p| total.merge(p));
    total
}

/// `out[i] += add[i]`.
fn add_assign(out: &mut [f32], add: &[f32]) {
    for (o, a) in out.iter_mut().zip(add) {
        *o += a;
    }
}

/// A `GPSConv` layer, ready to run (see the module documentation).
#[derive(Debug)]
pub struct GpsConv {
    /// `channels` (C): input and output width.
    pub channels: usize,
    /// The local message-passing layer (`conv`; `None` when PyG's `conv=None`). Its
    /// input and output width are C.
    pub conv: Option<Box<dyn AttentionKind>>,
    /// `attn`: MultiheadAttention(C, heads), exact or with `approx`.
    pub attn: GlobalAttention,
    /// `mlp.0`: C -> 2C.
    pub mlp_in: Linear,
    /// `mlp.1`.
    pub act: GpsActivation,
    /// `mlp.3`: 2C -> C.
    pub mlp_out: Linear,
    /// `norm1`, `norm2`, `norm3` (all `None` with `norm=None`).
    pub norms: [Option<GpsNorm>; 3],
}

impl GpsConv {
    /// The layer over all N rows of `x` (`[N, C]` float32), given `conv_out`, the conv's
    /// output over the graph (`[N, C]`; `None` exactly when the layer has no conv). With
    /// `report_approximation` and an approximating attention, also runs the attention
    /// exactly and returns the relative Frobenius error of the attention output (before
    /// its residual and norm2).
    ///
    /// Errors: `x` or `conv_out` not `[N, C]`; an `approx` with more landmarks than nodes.
    pub fn forward(
        &self,
        x: &[f32],
        conv_out: Option<Vec<f32>>,
        exec: Execution,
        report_approximation: bool,
    ) -> Result<(Vec<f32>, Option<f64>)> {
        let n = x.len() / self.channels.max(1);
        let mut comm = SingleProcess::new(n);
        let error = match (report_approximation, self.attn.approximation()) {
            (true, Some(_)) => Some(relative_frobenius_error(
                &self.attn.forward(x, exec)?,
                &self.attn.forward_exact(x, exec)?,
            )),
            _ => None,
        };
        Ok((self.forward_part(x, conv_out, &mut comm, exec)?, error))
    }

    /// The layer for this worker's rows: `x` and `conv_out` are `[own, C]` in the order of
    /// `comm.own_ids()`; the attention and graph-mode norms reach the other rows through
    /// `comm` (bitwise the rows of [`GpsConv::forward`] for any split).
    pub fn forward_part(
        &self,
        x: &[f32],
        conv_out: Option<Vec<f32>>,
        comm: &mut dyn Collective,
        exec: Execution,
    ) -> Result<Vec<f32>> {
        let c = self.channels;
        let n = x.len() / c;
        let shape_err = |what: &str, len: usize| {
            ModelError::Mismatch(format!(
                "layers[{}] (GPSConv): {what} holds {len} values, expected [N, {c}]",
                self.attn.layer
            ))
        };
        if n * c != x.len() {
            return Err(shape_err("the input", x.len()));
        }
        let mut h = self.attn.forward_part(x, comm, exec)?;
        add_assign(&mut h, x);
        if let Some(norm) = &self.norms[1] {
            norm.apply(&mut h, c, comm, exec)?;
        }
        match (conv_out, &self.conv) {
            (Some(mut local), Some(_)) => {
                if local.len() != x.len() {
                    return Err(shape_err("the conv output", local.len()));
                }
                add_assign(&mut local, x);
                if let Some(norm) = &self.norms[0] {
                    norm.apply(&mut local, c, comm, exec)?;
                }
                // PyG: sum([h_local, h_attn]) = (0 + h_local) + h_attn.
                add_assign(&mut local, &h);
                h = local;
            }
            (None, None) => {}
            _ => {
                return Err(ModelError::Mismatch(format!(
                    "layers[{}] (GPSConv): the conv output must be given exactly when the \
                     layer has a conv",
                    self.attn.layer
                )))
            }
        }
        // out = out + mlp(out), row block by row block.
        let mut hidden_out = vec![0f32; h.len()];
        let (mlp_in, mlp_out, act) = (&self.mlp_in, &self.mlp_out, self.act);
        for_each_row_block(
            &h,
            c,
            [(&mut hidden_out, c), (&mut [], 0)],
            exec,
            &|rows, y, _| {
                let m = rows.len() / c;
                let mut hidden = vec![0f32; m * 2 * c];
                mlp_in.apply(rows, &mut hidden, 0, 2 * c);
                act.apply(&mut hidden);
                mlp_out.apply(&hidden, y, 0, c);
                add_assign(y, rows);
            },
        );
        drop(h);
        if let Some(norm) = &self.norms[2] {
            norm.apply(&mut hidden_out, c, comm, exec)?;
        }
        Ok(hidden_out)
    }
}

#[cfg(test)]
mod tests {
    use super::erf;

    #[test]
    fn erf_matches_known_values() {
        // Values from A&S table 7.1 / high-precision references.
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.5, -0.966_105_146_475_310_7),
        ] {
            assert!((erf(x) - want).abs() < 1e-13, "erf({x}) = {}", erf(x));
        }
    }
}
