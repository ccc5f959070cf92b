//! Global attention: every node attends to every node, the N nodes taken as one sequence
//! in node-ID order (reference README 8.2). Two model kinds share one implementation,
//! [`GlobalAttention`], behind the [`GlobalKind`] seam:
//!
//! * **`MultiheadAttention`** (torch 2.15, README 8.7). Input and output `[N, E]` float32.
//!   `q, k, v = x · W_{q,k,v}^T + b_{q,k,v}` (rows of `in_proj_weight [3E, E]`, q then k
//!   then v), head `h` uses columns `h·d_h .. (h+1)·d_h` with `d_h = E / H`,
//!   `A_h = softmax_rows(q_h k_h^T / √d_h)` over all N keys (no mask),
//!   `out = concat_h(A_h v_h) · W_o^T + b_o` (`out_proj`).
//! * **`NystromAttention`** (nystrom-attention 0.0.14, README 8.8), `residual=False` only:
//!   `to_qkv [3·H·d, dim]` (no bias), `to_out.0 [dim, H·d]` with bias, scale `d^-½`.
//!
//! # Exact attention: blockwise, online softmax, O(N·E) memory
//!
//! Never an N x N matrix. Queries are split into blocks of [`Blocks::query`] rows (the
//! parallel work items) and keys into blocks of [`Blocks::key`] rows. For a query block and
//! head, each key block in node order gives `S = q_h k_h^T / √d_h` (one SGEMM on strided
//! views of the `[N, 3E]` projection), then per row the running maximum `m`, the running
//! denominator `l` and the `[d_h]` accumulator are rescaled by `exp(m_old − m_new)` and
//! `exp(S − m_new)` is added (flash-attention's online softmax), `acc += P v_h` by a second
//! SGEMM. The running max, sum and accumulator are **float32**: the denominator is a sum of
//! at most N terms in `(0, 1]` whose largest is 1, so its relative rounding error is about
//! `(N / key block)·2^-24` plus the within-block SGEMM error, far below the 1e-4 tolerance
//! (measured: max |diff| 1.0e-7 against torch on the reference case, 4.7e-8 against the
//! float64 dense test at N = 37, which asserts 1e-5).
//!
//! The `N²` exponentials use [`exp_nonpositive`], a branch-free float32 `exp` (Cephes'
//! `expf` polynomial, within 2 ulp of the true value for the `x ≤ 0` arguments a softmax
//! has) that the compiler vectorises, and the block sums run in eight interleaved lanes
//! combined in a fixed tree ([`softmax_block`]): the plain `f32::exp` calls and the serial
//! sum were most of the kernel's time.
//!
//! **Determinism.** Block boundaries are constants, never derived from the thread count; a
//! query row is computed by one thread, its key blocks always in node order, and
//! matrixmultiply's sum order for an element depends only on the inner dimension. So the
//! bits are identical for any thread count and for [`Execution::Sequential`] (tested).
//!
//! # Nyström attention
//!
//! README 8.8, step by step, on the `n` real rows with `m` landmarks:
//! `p = (m − n mod m) mod m` zero rows are **prepended** (never materialised: their q, k
//! and v are zero, as in the package, whose `to_qkv` has no bias), `l = (n + p) / m`,
//! `q ← q·d^-½`; landmark `s` is the sum of the q (and k) rows of padded segment
//! `[s·l, (s+1)·l)` divided by `l` (so padding dilutes the first segment);
//! `A1 = softmax(q k̃^T)`, `A2 = softmax(q̃ k̃^T)`, `A3 = softmax(q̃ k^T)` where each
//! padded key adds `exp(0 − max)` to A3's denominators and nothing to its numerators;
//! `Z₀ = A2^T / (max row sum |A2| · max column sum |A2|)` with both maxima over **all
//! heads**, then `pinv_iterations` times `Z ← ¼ Z (13I − A2Z (15I − A2Z (7I − A2Z)))`;
//! `out_h = A1 (Z (A3 v_h))` (the package's `(A1 Z)(A3 v_h)`, reassociated so the N-sized
//! products have inner dimension m), then `to_out`, keeping the n real rows.
//!
//! Precision: the landmarks, `A2`, `Z`, and `A3 v` are float64; the N-sized score and
//! value products are float32 SGEMMs.
//!
//! **Partition independence.** Every reduction over nodes gives bits that do not depend on
//! which worker or thread holds which rows, so a distributed run can match one process
//! bit for bit ([`NystromPlan`] is the same computation in the steps a worker runs): the
//! landmark segment sums are exact (float32 values summed exactly in float64 buckets per
//! exponent group, then in a [`crate::exact_sum::ExactSum`] superaccumulator, rounded
//! once); the A3 maxima are maxima; the A3 denominators `Σ exp(s − max)` and numerators
//! `Σ exp(s − max)·v` (with the *global* max) are exact integer sums of fixed-point terms,
//! each term rounded to a unit fixed by global maxima alone ([`A3Sums`]: `2^-48`, and
//! `2^-48` of the column's max `|v|` power of two). The float32 score of a (landmark, key)
//! pair depends only on the two rows (matrixmultiply's sum order depends only on the inner
//! dimension). Tested: random scattered splits of the rows over 1–7 "workers" give the
//! one-process bits. Cost at N = 100k, m = 64, E = 64, 4 heads, 2 threads, per step
//! (`cargo run --release -p distgat-attention --example nystrom_steps -- 100000 64 5`,
//! medians of 5, alternated with the previous version in one sitting on a shared machine):
//! about 0.13 s, against 0.41 s for the first exact version (a superaccumulator add per
//! landmark value, two float64 digits per `p·v` term, SSE2 loops); 0.38 s was measured
//! earlier for the former float64 block partials, which were not partition independent.

//! # `approx` on MultiheadAttention
//!
//! `"approx": {"method": "nystrom", "landmarks": m, "pinv_iterations": 6}` runs the same
//! Nyström computation on the MultiheadAttention layer's own q, k, v (with `in_proj_bias`,
//! scale `1/√d_h`) and `out_proj`. **When m does not divide N**, the rule above applies
//! unchanged: `p = m − N mod m` rows with q = k = v = 0 (zero *projections*, not zero
//! inputs, so the bias does not leak into them) are prepended, the first landmark is the
//! mean over `l` padded positions of which only `l − p` are real nodes, every A3 row gets
//! `p·exp(−max)` more in its denominator, and the padded rows' outputs are dropped. Unlike
//! NystromAttention (where the package defines m > N by padding), `m > N` is an error for
//! `approx`: it would approximate with more landmarks than keys. Both kinds accept at most
//! [`crate::model::MAX_LANDMARKS`] landmarks.

use std::fmt::Debug;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::collective::{
    all_reduce_exact_sums, decode_a3_max, decode_a3_sums, encode_a3_max, encode_a3_sums,
    Collective, SingleProcess,
};
use crate::dense::{dgemm, for_each_row_block, sgemm_views, Linear, Strides};
use crate::error::{ModelError, Result};
use crate::exact_sum::ExactSum;
use crate::exec::Execution;
pub use crate::kind::exp_nonpositive;
use crate::kind::with_wide_vectors;

/// One global attention layer, ready to run: the seam through which the engine runs any
/// layer that attends over all nodes instead of a graph's edges. Implemented by
/// [`GlobalAttention`] (`MultiheadAttention`, `NystromAttention`).
pub trait GlobalKind: Send + Sync + Debug {
    /// The model file's class name (`"MultiheadAttention"`, `"NystromAttention"`).
    fn kind(&self) -> &'static str;
    /// Width of the input rows.
    fn in_features(&self) -> usize;
    /// The model argument that sets it (`embed_dim`, `dim`), for errors.
    fn in_features_arg(&self) -> &'static str;
    /// Width of the output rows.
    fn out_width(&self) -> usize;
    /// `Some(description)` when the layer approximates exact softmax attention.
    fn approximation(&self) -> Option<String>;
    /// The layer over all rows of `x` (`[N, in_features]` float32, node order) into
    /// `[N, out_width]`. Errors when the layer cannot run on N rows (an `approx` with more
    /// landmarks than nodes).
    fn forward(&self, x: &[f32], exec: Execution) -> Result<Vec<f32>> {
        let n = x.len() / self.in_features().max(1);
        self.forward_part(x, &mut SingleProcess::new(n), exec)
    }
    /// The layer's output for this worker's rows only: `x` is `[own, in_features]` in the
    /// order of `comm.own_ids()`, the result `[own, out_width]`; every other row is reached
    /// through `comm`. Bitwise the rows [`GlobalKind::forward`] gives for those nodes, for
    /// any split of the nodes over workers. Errors: as `forward`, and a failed exchange.
    fn forward_part(
        &self,
        x: &[f32],
        comm: &mut dyn Collective,
        exec: Execution,
    ) -> Result<Vec<f32>>;
    /// Exact softmax attention with the same weights (what [`GlobalKind::forward`]
    /// approximates; the same as `forward` for exact layers). For NystromAttention this is
    /// the reference's `exact_out`: `to_out(concat_h softmax(q_h k_h^T d^-½) v_h)`.
    fn forward_exact(&self, x: &[f32], exec: Execution) -> Result<Vec<f32>>;
}

/// How attention over all keys is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Blockwise exact softmax attention.
    Exact,
    /// Nyström with `landmarks` segment-mean landmarks (README 8.8).
    Nystrom {
        landmarks: usize,
        pinv_iterations: usize,
    },
}

/// Block sizes of the blockwise kernels. Fixed per layer, never derived from the thread
/// count; changing them changes the rounding (not the mathematics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    /// Query rows per parallel work item.
    pub query: usize,
    /// Key rows per score block of exact attention (the `[query, key]` score scratch).
    pub key: usize,
    /// Key rows per partial of Nyström's `A3 v` reduction.
    pub reduce: usize,
}

impl Default for Blocks {
    fn default() -> Self {
        Blocks {
            query: 64,
            key: 512,
            reduce: 4096, // at most 2^12: A3Sums sums a block in i64 (at most 2^60)
        }
    }
}

/// `MultiheadAttention` or `NystromAttention` (see the module documentation).
#[derive(Debug, Clone)]
pub struct GlobalAttention {
    /// `"MultiheadAttention"` or `"NystromAttention"`.
    pub kind: &'static str,
    /// Input and output width (`embed_dim` / `dim`).
    pub dim: usize,
    pub heads: usize,
    /// Per-head width `d` (`embed_dim / num_heads`, or `dim_head`).
    pub head_dim: usize,
    /// `dim -> 3·heads·head_dim` (q, then k, then v; head-major inside each).
    pub qkv: Linear,
    /// `heads·head_dim -> dim`.
    pub out: Linear,
    pub method: Method,
    pub blocks: Blocks,
    /// The model file and layer index, for errors found when the layer runs.
    pub model: PathBuf,
    pub layer: usize,
}

impl GlobalAttention {
    fn inner(&self) -> usize {
        self.heads * self.head_dim
    }

    /// `y = lin(x)` over all rows, in fixed row blocks.
    fn project(lin: &Linear, x: &[f32], exec: Execution) -> Vec<f32> {
        let rows = x.len() / lin.in_features.max(1);
        let w = lin.out_features;
        let mut y = vec![0f32; rows * w];
        for_each_row_block(
            x,
            lin.in_features,
            [(&mut y, w), (&mut [], 0)],
            exec,
            &|x, y, _| lin.apply(x, y, 0, w),
        );
        y
    }

    fn check_input(&self, x: &[f32]) -> Result<usize> {
        let n = x.len() / self.dim.max(1);
        if n * self.dim != x.len() {
            return Err(ModelError::Mismatch(format!(
                "layers[{}] ({}): input of {} values is not [N, {}]",
                self.layer,
                self.kind,
                x.len(),
                self.dim
            )));
        }
        Ok(n)
    }

    /// The layer for this worker's rows (`x`: `[own, dim]`, see
    /// [`GlobalKind::forward_part`]). Exact: gathers every input row and projects them all
    /// (each worker computes every key and value; the input rows are a third of the
    /// projection's bytes), then attends from its own query rows. Nyström: the
    /// [`NystromPlan`] steps on its own rows, with the three reductions merged over
    /// workers exactly.
    fn run(
        &self,
        x: &[f32],
        method: Method,
        comm: &mut dyn Collective,
        exec: Execution,
    ) -> Result<Vec<f32>> {
        let own = self.check_input(x)?;
        let n = comm.num_nodes();
        if own != comm.own_ids().len() {
            return Err(ModelError::Mismatch(format!(
                "layers[{}] ({}): {own} input rows for {} owned nodes",
                self.layer,
                self.kind,
                comm.own_ids().len()
            )));
        }
        if let Method::Nystrom { landmarks, .. } = method {
            if self.kind == "MultiheadAttention" && landmarks > n {
                return Err(ModelError::Spec {
                    path: self.model.clone(),
                    detail: format!(
                        "layers[{}].args.approx.landmarks is {landmarks}, more than the {n} \
                         nodes: Nyström needs at most one landmark per node",
                        self.layer
                    ),
                });
            }
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let (heads, d) = (self.heads, self.head_dim);
        let att = match method {
            Method::Exact => {
                let all = comm.all_gather_rows(x, self.dim)?;
                let keys = Self::project(&self.qkv, &all, exec);
                drop(all);
                let ld = self.qkv.out_features;
                let gathered;
                let queries: &[f32] = if comm.owns_all() {
                    &keys
                } else {
                    gathered = comm
                        .own_ids()
                        .iter()
                        .flat_map(|&i| &keys[i * ld..(i + 1) * ld])
                        .copied()
                        .collect::<Vec<f32>>();
                    &gathered
                };
                // In runs of query blocks, reporting progress after each (a query row's
                // bits do not depend on which rows are computed with it).
                let chunk = PROGRESS_QUERY_BLOCKS * self.blocks.query.max(1) * ld;
                let mut att = Vec::with_capacity(own * self.inner());
                for rows in queries.chunks(chunk) {
                    att.extend(exact_attention_for(
                        rows,
                        &keys,
                        heads,
                        d,
                        self.blocks,
                        exec,
                    ));
                    comm.rows_done(rows.len() / ld);
                }
                att
            }
            Method::Nystrom {
                landmarks,
                pinv_iterations,
            } => {
                let qkv = Self::project(&self.qkv, x, exec);
                let plan = NystromPlan {
                    n,
                    heads,
                    d,
                    m: landmarks,
                    pinv_iterations,
                    blocks: self.blocks,
                };
                let att = nystrom_part(&plan, &qkv, comm, exec)?;
                comm.rows_done(own);
                att
            }
        };
        debug_assert_eq!(att.len(), own * self.inner());
        Ok(Self::project(&self.out, &att, exec))
    }
}

/// Exact attention reports progress after every this many query blocks.
const PROGRESS_QUERY_BLOCKS: usize = 16;

/// Nyström attention of this worker's rows (`qkv`: `[own, 3·H·d]`, ids
/// `comm.own_ids()`), the plan's steps with each reduction merged over all workers (exact
/// merges: the result has the single-process bits for any split).
fn nystrom_part(
    plan: &NystromPlan,
    qkv: &[f32],
    comm: &mut dyn Collective,
    exec: Execution,
) -> Result<Vec<f32>> {
    let ids = (!comm.owns_all()).then(|| comm.own_ids().to_vec());
    let sums = plan.landmark_sums(qkv, ids.as_deref(), exec);
    let sums = all_reduce_exact_sums(comm, sums, "Nyström landmark sums")?;
    let lm = plan.landmarks(&sums);
    let mut max = plan.a3_max(&lm, qkv, exec);
    let (scores, values) = (max.score.len(), max.value.len());
    for bytes in comm.all_gather_bytes(encode_a3_max(&max))? {
        max.merge(&decode_a3_max(&bytes, scores, values)?);
    }
    plan.include_padding_max(&mut max);
    let own = plan.a3_sums(&lm, &max, qkv, exec);
    let all = comm.all_gather_bytes(encode_a3_sums(&own))?;
    let sums = if all.len() == 1 {
        own
    } else {
        let (s, v) = (own.sum.len(), own.num.len());
        let mut merged = A3Sums {
            sum: vec![0; s],
            num: vec![0; v],
        };
        for bytes in all {
            let part = decode_a3_sums(&bytes, s, v)?;
            for (a, b) in merged
                .sum
                .iter_mut()
                .chain(merged.num.iter_mut())
                .zip(part.sum.iter().chain(&part.num))
            {
                *a = a.checked_add(*b).ok_or_else(|| {
                    ModelError::Mismatch("Nyström A3 sums: the merged sum overflows".into())
                })?;
            }
        }
        merged
    };
    let w = plan.weights(&lm, &max, &sums);
    Ok(plan.output(&lm, &w, qkv, exec))
}

impl GlobalKind for GlobalAttention {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn in_features(&self) -> usize {
        self.dim
    }
    fn in_features_arg(&self) -> &'static str {
        if self.kind == "MultiheadAttention" {
            "embed_dim"
        } else {
            "dim"
        }
    }
    fn out_width(&self) -> usize {
        self.dim
    }
    fn approximation(&self) -> Option<String> {
        match self.method {
            Method::Exact => None,
            Method::Nystrom {
                landmarks,
                pinv_iterations,
            } => Some(format!(
                "Nyström, {landmarks} landmarks, {pinv_iterations} pinv iterations"
            )),
        }
    }
    fn forward_part(
        &self,
        x: &[f32],
        comm: &mut dyn Collective,
        exec: Execution,
    ) -> Result<Vec<f32>> {
        self.run(x, self.method, comm, exec)
    }
    fn forward_exact(&self, x: &[f32], exec: Execution) -> Result<Vec<f32>> {
        let n = self.check_input(x)?;
        self.run(x, Method::Exact, &mut SingleProcess::new(n), exec)
    }
}

/// Relative Frobenius error `‖approx − exact‖_F / ‖exact‖_F`, summed in float64 (0 when
/// both are zero, infinite when only `exact` is).
pub fn relative_frobenius_error(approx: &[f32], exact: &[f32]) -> f64 {
    assert_eq!(approx.len(), exact.len(), "relative error: lengths differ");
    let (mut diff, mut norm) = (0f64, 0f64);
    for (&a, &e) in approx.iter().zip(exact) {
        let d = f64::from(a) - f64::from(e);
        diff += d * d;
        norm += f64::from(e) * f64::from(e);
    }
    if diff == 0.0 {
        0.0
    } else {
        (diff / norm).sqrt()
    }
}

/// Runs `task(block_index, rows)` over consecutive chunks of `chunk` elements of `out`.
fn for_each_chunk(
    out: &mut [f32],
    chunk: usize,
    exec: Execution,
    task: impl Fn(usize, &mut [f32]) + Sync,
) {
    match exec {
        Execution::Sequential => out
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(b, rows)| task(b, rows)),
        Execution::Parallel => out
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(b, rows)| task(b, rows)),
    }
}

/// Exact softmax attention of the `[n, 3·heads·d]` projection `qkv` (q ‖ k ‖ v per row),
/// into `[n, heads·d]` (heads concatenated), blockwise with an online softmax.
pub fn exact_attention(
    qkv: &[f32],
    n: usize,
    heads: usize,
    d: usize,
    blocks: Blocks,
    exec: Execution,
) -> Vec<f32> {
    assert_eq!(
        qkv.len(),
        n * 3 * heads * d,
        "exact attention: qkv is not [n, 3·H·d]"
    );
    exact_attention_for(qkv, qkv, heads, d, blocks, exec)
}

/// Exact softmax attention of the query rows of `queries` (`[rows, 3·heads·d]`, only the
/// q part is read) over every key and value row of `keys` (`[n, 3·heads·d]`, node order),
/// into `[rows, heads·d]`. A query row's bits depend only on that row and `keys` (its
/// score and value products have fixed inner dimensions and fixed key blocks), so a
/// worker computing its own rows gets the single-process bits.
pub fn exact_attention_for(
    queries: &[f32],
    keys: &[f32],
    heads: usize,
    d: usize,
    blocks: Blocks,
    exec: Execution,
) -> Vec<f32> {
    let inner = heads * d;
    let ld = 3 * inner;
    if ld == 0 {
        return Vec::new();
    }
    assert!(
        queries.len().is_multiple_of(ld) && keys.len().is_multiple_of(ld),
        "exact attention: queries or keys are not [rows, 3·H·d]"
    );
    let (n, qkv) = (keys.len() / ld, keys);
    let n_queries = queries.len() / ld;
    assert!(
        blocks.query > 0 && blocks.key > 0,
        "exact attention: empty blocks"
    );
    let scale = 1.0 / (d as f32).sqrt();
    let mut att = vec![0f32; n_queries * inner];
    if n == 0 || n_queries == 0 {
        return att;
    }
    for_each_chunk(&mut att, blocks.query * inner, exec, |b, rows_out| {
        let q0 = b * blocks.query;
        let rows = rows_out.len() / inner;
        let mut s = vec![0f32; rows * blocks.key];
        let mut pv = vec![0f32; rows * d];
        let mut acc = vec![0f32; rows * d];
        let mut max = vec![0f32; rows];
        let mut sum = vec![0f32; rows];
        for h in 0..heads {
            max.fill(f32::NEG_INFINITY);
            sum.fill(0.0);
            acc.fill(0.0);
            let q = &queries[q0 * ld + h * d..];
            for k0 in (0..n).step_by(blocks.key) {
                let kb = blocks.key.min(n - k0);
                let k = &qkv[k0 * ld + inner + h * d..];
                let v = &qkv[k0 * ld + 2 * inner + h * d..];
                // S = q_h k_h^T / √d  [rows, kb]
                sgemm_views(
                    rows,
                    d,
                    kb,
                    scale,
                    q,
                    Strides::rows(ld),
                    k,
                    Strides::transposed(ld),
                    &mut s,
                    kb,
                );
                with_wide_vectors(|| {
                    for r in 0..rows {
                        let srow = &mut s[r * kb..(r + 1) * kb];
                        let block_max = srow.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                        let new_max = max[r].max(block_max);
                        // exp(-inf) = 0 on the first block: nothing to rescale yet.
                        let correction = (max[r] - new_max).exp();
                        let block_sum = softmax_block(srow, new_max);
                        sum[r] = sum[r] * correction + block_sum;
                        max[r] = new_max;
                        for a in &mut acc[r * d..(r + 1) * d] {
                            *a *= correction;
                        }
                    }
                });
                // acc += P v_h  ([rows, kb] x [kb, d])
                sgemm_views(
                    rows,
                    kb,
                    d,
                    1.0,
                    &s,
                    Strides::rows(kb),
                    v,
                    Strides::rows(ld),
                    &mut pv,
                    d,
                );
                for (a, p) in acc.iter_mut().zip(&pv) {
                    *a += p;
                }
            }
            for r in 0..rows {
                let inv = 1.0 / sum[r];
                for (o, a) in rows_out[r * inner + h * d..r * inner + (h + 1) * d]
                    .iter_mut()
                    .zip(&acc[r * d..(r + 1) * d])
                {
                    *o = a * inv;
                }
            }
        }
    });
    att
}

/// Replaces each score `v` of `row` by `exp_nonpositive(v − max)` and returns their sum,
/// accumulated in eight interleaved lanes combined in a fixed tree (the order depends
/// only on the length).
#[inline(always)]
pub fn softmax_block(row: &mut [f32], max: f32) -> f32 {
    for v in row.iter_mut() {
        *v = exp_nonpositive(*v - max);
    }
    let mut acc = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += v;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Softmax of each row of `x` (`[rows, width]`, float64) in place.
fn softmax_rows_f64(x: &mut [f64], width: usize) {
    for row in x.chunks_mut(width) {
        let max = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v));
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// The package's `moore_penrose_iter_pinv` for all heads' `a2` (`[heads, m, m]`): `Z₀`
/// scaled by the maxima over all heads, then `iterations` Newton–Schulz-type steps.
pub fn iterative_pinv(a2: &[f64], heads: usize, m: usize, iterations: usize) -> Vec<f64> {
    assert_eq!(a2.len(), heads * m * m, "pinv: a2 is not [heads, m, m]");
    let (mut max_row, mut max_col) = (0f64, 0f64);
    for a in a2.chunks(m * m) {
        for i in 0..m {
            max_row = max_row.max(a[i * m..(i + 1) * m].iter().map(|v| v.abs()).sum());
            max_col = max_col.max((0..m).map(|r| a[r * m + i].abs()).sum());
        }
    }
    let denom = max_row * max_col;
    let mut z = vec![0f64; heads * m * m];
    let (mut xz, mut t, mut u) = (vec![0f64; m * m], vec![0f64; m * m], vec![0f64; m * m]);
    for (a, z) in a2.chunks(m * m).zip(z.chunks_mut(m * m)) {
        for i in 0..m {
            for j in 0..m {
                z[i * m + j] = a[j * m + i] / denom;
            }
        }
        // With c·I − M written as `shift(c, M)`:
        // Z ← ¼ Z (13I − XZ (15I − XZ (7I − XZ))).
        let shift = |c: f64, src: &[f64], dst: &mut [f64]| {
            for (k, (d, s)) in dst.iter_mut().zip(src).enumerate() {
                *d = if k % (m + 1) == 0 { c - s } else { -s };
            }
        };
        for _ in 0..iterations {
            dgemm(m, m, m, a, z, &mut xz);
            shift(7.0, &xz, &mut t); // t = 7I − XZ
            dgemm(m, m, m, &xz, &t, &mut u); // u = XZ t
            shift(15.0, &u, &mut t); // t = 15I − u
            dgemm(m, m, m, &xz, &t, &mut u); // u = XZ t
            shift(13.0, &u, &mut t); // t = 13I − u
            dgemm(m, m, m, z, &t, &mut u); // u = Z t
            for (z, u) in z.iter_mut().zip(&u) {
                *z = 0.25 * u;
            }
        }
    }
    z
}

/// The shape of one Nyström computation over `n` real rows (README 8.8), split into the
/// steps a distributed runtime runs on each worker's own rows, with the reductions over
/// nodes in between. Every reduction over nodes is an exact sum ([`ExactSum`]) or a max,
/// so the result does not depend on which worker (or thread) holds which rows:
///
/// 1. [`NystromPlan::landmark_sums`] — per padded segment, exact sums of the scaled q and
///    the k rows (`[m, 2·H·d]` accumulators); merge by [`ExactSum::merge`].
/// 2. [`NystromPlan::landmarks`] — landmarks, `A2` and `Z` (every worker the same bits).
/// 3. [`NystromPlan::a3_max`] — per head and landmark, the max score over the rows; merge by
///    elementwise max, then [`NystromPlan::include_padding_max`].
/// 4. [`NystromPlan::a3_sums`] — exact `Σ exp(s − max)` and `Σ exp(s − max)·v`; merge.
/// 5. [`NystromPlan::weights`] — `W_h = Z_h (A3 v_h)` as float32 `[H, m, d]`.
/// 6. [`NystromPlan::output`] — `softmax(q k̃^T) W_h` for the rows, `[rows, H·d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NystromPlan {
    /// Real rows (nodes) over all workers.
    pub n: usize,
    pub heads: usize,
    /// Per-head width.
    pub d: usize,
    /// Landmarks.
    pub m: usize,
    pub pinv_iterations: usize,
    pub blocks: Blocks,
}

/// Landmarks and `Z` of one Nyström computation ([`NystromPlan::landmarks`]).
#[derive(Debug, Clone)]
pub struct NystromLandmarks {
    /// `q̃` (scaled) and `k̃` as float32, `[H, m, d]`.
    pub q32: Vec<f32>,
    pub k32: Vec<f32>,
    /// `Z ≈ pinv(A2)`, float64 `[H, m, m]`.
    pub z: Vec<f64>,
}

/// The A3 maxima of [`NystromPlan::a3_max`]: per head and landmark the max score
/// (`[H·m]`), and per value column the max `|v|` (`[H·d]`), which fixes the fixed-point
/// scale of [`A3Sums::num`]. Merged by elementwise max (exact).
#[derive(Debug, Clone, PartialEq)]
pub struct A3Max {
    pub score: Vec<f32>,
    pub value: Vec<f32>,
}

impl A3Max {
    /// Elementwise max with another worker's (or block's) maxima.
    pub fn merge(&mut self, other: &A3Max) {
        merge_max(&mut self.score, &other.score);
        merge_max(&mut self.value, &other.value);
    }
}

/// Bits of each fixed-point A3 term: every term is at most `2^FIXED_BITS` units.
const FIXED_BITS: i32 = 48;
/// Keys per sub-block of the A3 steps: all heads pass over a sub-block's qkv rows
/// (`A3_KEYS·3·H·d` float32) while they are in L2.
const A3_KEYS: usize = 256;
/// Keys per chunk of the A3 sums: their values (`FIXED_CHUNK·d` float64) stay in L1
/// while every landmark passes over them.
const FIXED_CHUNK: usize = 64;
/// The A3 reductions of [`NystromPlan::a3_sums`], as exact integer sums of fixed-point
/// terms: `sum` `[H·m]` counts units of `2^-48` (every `p = exp(s − max) ≤ 1`), `num`
/// `[H·m·d]` counts units of `2^(e_c − 48)` where `2^e_c` is the smallest power of two
/// above column `c`'s max `|v|` ([`A3Max::value`]). Each term `p` or `p·v` (exact in
/// float64: a product of two float32s, scaled by a power of two) is rounded to the nearest
/// unit (ties to even) — a function of the term alone — and the rounded terms are summed
/// exactly, so any split of the keys over workers or threads gives the same integers.
///
/// Accuracy: the rounding costs at most half a unit per key, `N·2^-49·max|v|` absolute in
/// a numerator and `N·2^-49` in a denominator, against denominators `≥ 1` (the key with the
/// max score has `p = 1`): below float32's resolution `2^-24` of `max|v|` for
/// `N < 2^25`, and in practice far below, as the errors of round-to-nearest cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct A3Sums {
    pub sum: Vec<i128>,
    pub num: Vec<i128>,
}

impl A3Sums {
    /// Adds another worker's (or block's) sums (exact).
    pub fn merge(&mut self, other: &A3Sums) {
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        for (a, b) in self.num.iter_mut().zip(&other.num) {
            *a += b;
        }
    }
}

/// The exponent `e` with `max < 2^e` (`max` finite and `> 0`), else 0.
fn unit_exponent(max: f32) -> i32 {
    if max.is_finite() && max > 0.0 {
        let e = ((max.to_bits() >> 23) & 0xff) as i32;
        if e == 0 {
            -126
        } else {
            e - 126
        }
    } else {
        0
    }
}

/// `1.5·2^52`: for `|y| ≤ 2^50`, `y + ROUND` lies in `[2^52, 2^53)`, where float64's ulp
/// is 1, so the addition rounds `y` to the nearest integer `k` (ties to even), and the
/// sum's bits are `ROUND_BITS + k` (same exponent; the mantissa field is `2^51 + k`).
const ROUND: f64 = 6_755_399_441_055_744.0;
const ROUND_BITS: u64 = 0x4338_0000_0000_0000;

/// `ROUND_BITS + round(y)` for `|y| ≤ 2^50` (see [`ROUND`]): summing these with wrapping
/// `u64` additions and subtracting `count·ROUND_BITS` gives `Σ round(y)` exactly modulo
/// `2^64`, hence exactly when the true sum fits in `i64`. Branch-free, so loops over it
/// vectorise (one float64 add and one integer add per term). The result depends only on
/// `y`; a non-finite `y` gives meaningless bits (callers mark those sums NaN).
#[inline(always)]
fn fixed_bits(y: f64) -> u64 {
    (y + ROUND).to_bits()
}

/// `y` (`|y| ≤ 2^50`) rounded to the nearest integer (ties to even), exactly.
fn round_fixed(y: f64) -> i64 {
    fixed_bits(y).wrapping_sub(ROUND_BITS) as i64
}

impl NystromPlan {
    fn inner(&self) -> usize {
        self.heads * self.d
    }
    /// Zero rows prepended: `(m − n mod m) mod m`.
    pub fn pad(&self) -> usize {
        (self.m - self.n % self.m) % self.m
    }
    /// Padded rows per segment.
    pub fn segment_len(&self) -> usize {
        (self.n + self.pad()) / self.m
    }
    fn scale(&self) -> f32 {
        (self.d as f32).powf(-0.5)
    }
    fn rows(&self, qkv: &[f32]) -> usize {
        let ld = 3 * self.inner();
        assert_eq!(
            qkv.len() % ld.max(1),
            0,
            "nystrom: qkv is not [rows, 3·H·d]"
        );
        qkv.len() / ld.max(1)
    }

    /// Step 1: exact per-segment sums of `q·d^-½` and of `k` over the rows of `qkv`
    /// (`[rows, 3·H·d]`), whose global ids are `ids` (`None`: row `i` is node `i`); each
    /// id must be `< n`. Returns `[m, 2·H·d]` accumulators (segment-major, q then k).
    pub fn landmark_sums(
        &self,
        qkv: &[f32],
        ids: Option<&[usize]>,
        exec: Execution,
    ) -> Vec<ExactSum> {
        let inner = self.inner();
        let ld = 3 * inner;
        let rows = self.rows(qkv);
        let (pad, l, scale) = (self.pad(), self.segment_len(), self.scale());
        let id = |r: usize| ids.map_or(r, |ids| ids[r]);
        // Rows of each segment (counting sort by segment).
        let mut start = vec![0usize; self.m + 1];
        for r in 0..rows {
            start[(id(r) + pad) / l + 1] += 1;
        }
        for s in 0..self.m {
            start[s + 1] += start[s];
        }
        let mut fill = start.clone();
        let mut order = vec![0usize; rows];
        for r in 0..rows {
            let s = (id(r) + pad) / l;
            order[fill[s]] = r;
            fill[s] += 1;
        }
        // Exact float32 sums without a superaccumulator add per value: each value goes to
        // the float64 bucket of its column and of its exponent group (the top 4 bits of
        // the float32 exponent field, `e >> 4` of the biased exponent `e`). A float32 with
        // biased exponent `e ∈ [16g, 16g + 15]` is a multiple of `u_g = 2^(16g − 150)`
        // (subnormals: of `2^-149`) and below `2^(e − 126) ≤ 2^39·u_g` in magnitude, so
        // every partial sum of up to `2^14` of them is a multiple of `u_g` below
        // `2^53·u_g`: exact in float64 (`u_g ≥ 2^-150` is far above float64's subnormals).
        // Buckets go into the ExactSums every `2^14` rows (exact too), so the result is the
        // exact sum of the values, as before. Infinities and NaN reach the ExactSum
        // through group 15 (a bucket with both infinities holds NaN: the value is NaN
        // either way).
        const GROUPS: usize = 16;
        const FLUSH_ROWS: usize = 1 << 14;
        let width = 2 * inner;
        let segment = |s: usize| -> Vec<ExactSum> {
            let mut sums = vec![ExactSum::default(); width];
            let mut buckets = vec![0f64; GROUPS * width];
            let flush = |buckets: &mut [f64], sums: &mut [ExactSum]| {
                for b in buckets.chunks_mut(width) {
                    for (acc, v) in sums.iter_mut().zip(b.iter_mut()) {
                        if *v != 0.0 {
                            // (NaN included: NaN != 0)
                            acc.add(*v);
                            *v = 0.0;
                        }
                    }
                }
            };
            let add = |buckets: &mut [f64], c: usize, x: f32| {
                let g = ((x.to_bits() >> 27) & 0xf) as usize;
                buckets[g * width + c] += f64::from(x);
            };
            for (k, &r) in order[start[s]..start[s + 1]].iter().enumerate() {
                if k > 0 && k % FLUSH_ROWS == 0 {
                    flush(&mut buckets, &mut sums);
                }
                let row = &qkv[r * ld..(r + 1) * ld];
                for c in 0..inner {
                    add(&mut buckets, c, row[c] * scale);
                    add(&mut buckets, inner + c, row[inner + c]);
                }
            }
            flush(&mut buckets, &mut sums);
            sums
        };
        let per: Vec<Vec<ExactSum>> = match exec {
            Execution::Sequential => (0..self.m).map(segment).collect(),
            Execution::Parallel => (0..self.m).into_par_iter().map(segment).collect(),
        };
        per.into_iter().flatten().collect()
    }

    /// Step 2: from the merged [`NystromPlan::landmark_sums`] of all rows, the landmarks
    /// (sum / `l`, rounded once to float64), `A2 = softmax(q̃ k̃^T)` and `Z`.
    pub fn landmarks(&self, sums: &[ExactSum]) -> NystromLandmarks {
        let (heads, m, d, inner) = (self.heads, self.m, self.d, self.inner());
        assert_eq!(
            sums.len(),
            m * 2 * inner,
            "nystrom: landmark sums are not [m, 2·H·d]"
        );
        let l = self.segment_len() as f64;
        let mut q_land = vec![0f64; heads * m * d];
        let mut k_land = vec![0f64; heads * m * d];
        for s in 0..m {
            let sums = &sums[s * 2 * inner..(s + 1) * 2 * inner];
            for h in 0..heads {
                for c in 0..d {
                    q_land[(h * m + s) * d + c] = sums[h * d + c].value() / l;
                    k_land[(h * m + s) * d + c] = sums[inner + h * d + c].value() / l;
                }
            }
        }
        let mut a2 = vec![0f64; heads * m * m];
        for h in 0..heads {
            let qh = &q_land[h * m * d..(h + 1) * m * d];
            let kh = &k_land[h * m * d..(h + 1) * m * d];
            let a = &mut a2[h * m * m..(h + 1) * m * m];
            for i in 0..m {
                for j in 0..m {
                    a[i * m + j] = (0..d).map(|c| qh[i * d + c] * kh[j * d + c]).sum();
                }
            }
            softmax_rows_f64(a, m);
        }
        let z = iterative_pinv(&a2, heads, m, self.pinv_iterations);
        NystromLandmarks {
            q32: q_land.iter().map(|&v| v as f32).collect(),
            k32: k_land.iter().map(|&v| v as f32).collect(),
            z,
        }
    }

    /// `S = q̃_h k_h^T` `[m, kb]` for the key rows `k0..k0+kb` of `qkv`.
    fn a3_scores(
        &self,
        lm: &NystromLandmarks,
        qkv: &[f32],
        h: usize,
        k0: usize,
        kb: usize,
        s: &mut [f32],
    ) {
        let (m, d, inner) = (self.m, self.d, self.inner());
        sgemm_views(
            m,
            d,
            kb,
            1.0,
            &lm.q32[h * m * d..(h + 1) * m * d],
            Strides::rows(d),
            &qkv[k0 * 3 * inner + inner + h * d..],
            Strides::transposed(3 * inner),
            s,
            kb,
        );
    }

    /// Step 3: per head and landmark, the max A3 score over the rows of `qkv` (`-inf`
    /// when there are none), and per value column the max `|v|`.
    pub fn a3_max(&self, lm: &NystromLandmarks, qkv: &[f32], exec: Execution) -> A3Max {
        let (heads, m, inner) = (self.heads, self.m, self.inner());
        let rows = self.rows(qkv);
        let empty = || A3Max {
            score: vec![f32::NEG_INFINITY; heads * m],
            value: vec![0f32; inner],
        };
        let block = |b: usize| -> A3Max {
            let b0 = b * self.blocks.reduce;
            let bl = self.blocks.reduce.min(rows - b0);
            let mut s_buf = vec![0f32; m * A3_KEYS.min(bl)];
            let mut max = empty();
            // Sub-blocks of A3_KEYS keys for all heads (their rows stay in L2).
            for k0 in (b0..b0 + bl).step_by(A3_KEYS) {
                let kb = A3_KEYS.min(b0 + bl - k0);
                let s = &mut s_buf[..m * kb];
                for h in 0..heads {
                    self.a3_scores(lm, qkv, h, k0, kb, s);
                    with_wide_vectors(
                        #[inline(always)]
                        || {
                            for i in 0..m {
                                let r = h * m + i;
                                max.score[r] =
                                    max_nan(max.score[r], row_max_nan(&s[i * kb..(i + 1) * kb]));
                            }
                        },
                    );
                }
            }
            let (k0, kb) = (b0, bl);
            for row in qkv[k0 * 3 * inner..(k0 + kb) * 3 * inner].chunks(3 * inner) {
                for (m, &v) in max.value.iter_mut().zip(&row[2 * inner..]) {
                    // NaN propagates (f32::max would drop it).
                    *m = if v.is_nan() { v } else { m.max(v.abs()) };
                }
            }
            max
        };
        let blocks = rows.div_ceil(self.blocks.reduce);
        let parts: Vec<A3Max> = match exec {
            Execution::Sequential => (0..blocks).map(block).collect(),
            Execution::Parallel => (0..blocks).into_par_iter().map(block).collect(),
        };
        let mut max = empty();
        for p in &parts {
            max.merge(p);
        }
        max
    }

    /// The padded keys (score 0) take part in every A3 max when `pad > 0`.
    pub fn include_padding_max(&self, max: &mut A3Max) {
        if self.pad() > 0 {
            max.score.iter_mut().for_each(|v| *v = max_nan(*v, 0.0));
        }
    }

    /// Step 4: the fixed-point sums `Σ_k exp(s − max)` and `Σ_k exp(s − max)·v_k` over the
    /// rows of `qkv` ([`A3Sums`]), with `max` the merged maxima of all rows (padding
    /// included). The padded keys are added by [`NystromPlan::weights`], once.
    pub fn a3_sums(
        &self,
        lm: &NystromLandmarks,
        max: &A3Max,
        qkv: &[f32],
        exec: Execution,
    ) -> A3Sums {
        let (heads, m, d, inner) = (self.heads, self.m, self.d, self.inner());
        let ld = 3 * inner;
        let rows = self.rows(qkv);
        let units: Vec<f64> = max
            .value
            .iter()
            .map(|&v| 2f64.powi(FIXED_BITS - unit_exponent(v)))
            .collect();
        let p_unit = 2f64.powi(FIXED_BITS);
        let empty = || A3Sums {
            sum: vec![0; heads * m],
            num: vec![0; heads * m * d],
        };
        let block = |b: usize| -> A3Sums {
            let b0 = b * self.blocks.reduce;
            let bl = self.blocks.reduce.min(rows - b0);
            let mut s_buf = vec![0f32; m * A3_KEYS.min(bl)];
            // Each rounded term is an integer of magnitude ≤ 2^48 (p ≤ 1, |v| < 2^e_c), so
            // a block's (≤ 2^12 keys) sums fit in i64, |Σ| ≤ 2^60: the wrapping (modulo
            // 2^64) sums of `fixed_bits` minus the biases are the exact sums.
            let mut sum64 = vec![0i64; heads * m];
            let mut num64 = vec![0i64; heads * m * d];
            // v of this block in units: exact (a power-of-two scaling of a float32).
            let mut vs_buf = vec![0f64; A3_KEYS.min(bl) * d];
            // Sub-blocks of A3_KEYS keys for all heads: their qkv rows stay in L2 while the
            // heads pass over them (a key's score and terms do not depend on its sub-block).
            for k0 in (b0..b0 + bl).step_by(A3_KEYS) {
                let kb = A3_KEYS.min(b0 + bl - k0);
                let s = &mut s_buf[..m * kb];
                let vs = &mut vs_buf[..kb * d];
                for h in 0..heads {
                    for j in 0..kb {
                        let v = &qkv[(k0 + j) * ld + 2 * inner + h * d..][..d];
                        for ((t, &v), u) in vs[j * d..(j + 1) * d]
                            .iter_mut()
                            .zip(v)
                            .zip(&units[h * d..])
                        {
                            *t = f64::from(v) * u;
                        }
                    }
                    self.a3_scores(lm, qkv, h, k0, kb, s);
                    with_wide_vectors(
                        #[inline(always)]
                        || {
                            for i in 0..m {
                                softmax_block(&mut s[i * kb..(i + 1) * kb], max.score[h * m + i]);
                            }
                        },
                    );
                    with_wide_vectors(
                        #[inline(always)]
                        || {
                            // Chunks of FIXED_CHUNK keys (their values stay in L1) against every
                            // landmark, in groups of 8 value columns (accumulators in registers).
                            for c0 in (0..kb).step_by(FIXED_CHUNK) {
                                let cb = FIXED_CHUNK.min(kb - c0);
                                let vc = &vs[c0 * d..(c0 + cb) * d];
                                let bias = (cb as u64).wrapping_mul(ROUND_BITS);
                                for i in 0..m {
                                    let r = h * m + i;
                                    let ps = &s[i * kb + c0..i * kb + c0 + cb];
                                    let mut acc_p = 0u64;
                                    for &p in ps {
                                        acc_p =
                                            acc_p.wrapping_add(fixed_bits(f64::from(p) * p_unit));
                                    }
                                    sum64[r] =
                                        sum64[r].wrapping_add(acc_p.wrapping_sub(bias) as i64);
                                    for g in (0..d).step_by(8) {
                                        let w = 8.min(d - g);
                                        let mut acc = [0u64; 8];
                                        if w == 8 {
                                            // Fixed width: the 8 lanes stay in two AVX2 registers.
                                            for (&p, vrow) in ps.iter().zip(vc.chunks_exact(d)) {
                                                let p = f64::from(p);
                                                let v: &[f64; 8] =
                                                    vrow[g..g + 8].try_into().unwrap();
                                                for (a, &v) in acc.iter_mut().zip(v) {
                                                    *a = a.wrapping_add(fixed_bits(p * v));
                                                }
                                            }
                                        } else {
                                            for (&p, vrow) in ps.iter().zip(vc.chunks_exact(d)) {
                                                let p = f64::from(p);
                                                for (a, &v) in acc.iter_mut().zip(&vrow[g..g + w]) {
                                                    *a = a.wrapping_add(fixed_bits(p * v));
                                                }
                                            }
                                        }
                                        for (t, &a) in
                                            num64[r * d + g..r * d + g + w].iter_mut().zip(&acc)
                                        {
                                            *t = t.wrapping_add(a.wrapping_sub(bias) as i64);
                                        }
                                    }
                                }
                            }
                        },
                    );
                }
            }
            A3Sums {
                sum: sum64.into_iter().map(i128::from).collect(),
                num: num64.into_iter().map(i128::from).collect(),
            }
        };
        assert!(
            self.blocks.reduce <= 1 << 12,
            "nystrom: reduce block above 2^12 keys"
        );
        let blocks = rows.div_ceil(self.blocks.reduce);
        let parts: Vec<A3Sums> = match exec {
            Execution::Sequential => (0..blocks).map(block).collect(),
            Execution::Parallel => (0..blocks).into_par_iter().map(block).collect(),
        };
        let mut total = empty();
        for p in &parts {
            total.merge(p);
        }
        total
    }

    /// Step 5: `W_h = Z_h (A3 v_h)` `[H, m, d]` float32 from the merged maxima and sums of
    /// all rows; adds the `pad` padded keys (`exp(0 − max)` each, to the denominators).
    /// Each sum is rounded once to float64.
    pub fn weights(&self, lm: &NystromLandmarks, max: &A3Max, sums: &A3Sums) -> Vec<f32> {
        let (heads, m, d) = (self.heads, self.m, self.d);
        let pad = self.pad() as f64;
        let p_unit = 2f64.powi(-FIXED_BITS);
        let units: Vec<f64> = max
            .value
            .iter()
            .map(|&v| {
                if v.is_finite() {
                    2f64.powi(unit_exponent(v) - FIXED_BITS)
                } else {
                    f64::NAN
                }
            })
            .collect();
        let mut a3v = vec![0f64; heads * m * d];
        for r in 0..heads * m {
            let mut sum = sums.sum[r];
            if pad > 0.0 {
                let p = f64::from(exp_nonpositive(0.0 - max.score[r])) * (1.0 / p_unit);
                sum += i128::from(round_fixed(p)) * self.pad() as i128;
            }
            // A NaN or infinite max score (NaN or overflowing inputs) leaves the sums
            // meaningless: the weights become NaN rather than silently finite.
            let sum = if max.score[r].is_finite() {
                sum as f64 * p_unit
            } else {
                f64::NAN
            };
            let h = r / m;
            for c in 0..d {
                a3v[r * d + c] = sums.num[r * d + c] as f64 * units[h * d + c] / sum;
            }
        }
        let mut w = vec![0f64; heads * m * d];
        for h in 0..heads {
            dgemm(
                m,
                m,
                d,
                &lm.z[h * m * m..(h + 1) * m * m],
                &a3v[h * m * d..(h + 1) * m * d],
                &mut w[h * m * d..(h + 1) * m * d],
            );
        }
        w.iter().map(|&v| v as f32).collect()
    }

    /// Step 6: `softmax(q k̃^T) W_h` for the rows of `qkv`, `[rows, H·d]`.
    pub fn output(
        &self,
        lm: &NystromLandmarks,
        w32: &[f32],
        qkv: &[f32],
        exec: Execution,
    ) -> Vec<f32> {
        let (heads, m, d, inner) = (self.heads, self.m, self.d, self.inner());
        let ld = 3 * inner;
        let rows = self.rows(qkv);
        let scale = self.scale();
        let mut att = vec![0f32; rows * inner];
        if rows == 0 || inner == 0 {
            return att;
        }
        // Work items of OUTPUT_QUERY_BLOCKS query blocks: the packing of the small `k̃` and
        // `W` operands is amortised over more rows. A row's bits do not depend on the
        // block it is in (matrixmultiply's sum order depends only on the inner dimension;
        // the softmax is per row), so this is free to choose.
        const OUTPUT_QUERY_BLOCKS: usize = 4;
        let chunk_rows = self.blocks.query * OUTPUT_QUERY_BLOCKS;
        for_each_chunk(&mut att, chunk_rows * inner, exec, |b, rows_out| {
            let q0 = b * chunk_rows;
            let rows = rows_out.len() / inner;
            let mut s = vec![0f32; rows * m];
            for h in 0..heads {
                sgemm_views(
                    rows,
                    d,
                    m,
                    scale,
                    &qkv[q0 * ld + h * d..],
                    Strides::rows(ld),
                    &lm.k32[h * m * d..(h + 1) * m * d],
                    Strides::transposed(d),
                    &mut s,
                    m,
                );
                with_wide_vectors(
                    #[inline(always)]
                    || {
                        for row in s.chunks_mut(m) {
                            let max = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                            let inv = 1.0 / softmax_block(row, max);
                            row.iter_mut().for_each(|v| *v *= inv);
                        }
                    },
                );
                sgemm_views(
                    rows,
                    m,
                    d,
                    1.0,
                    &s,
                    Strides::rows(m),
                    &w32[h * m * d..(h + 1) * m * d],
                    Strides::rows(d),
                    &mut rows_out[h * d..],
                    inner,
                );
            }
        });
        att
    }
}

/// `acc = max(acc, other)` elementwise (exact, order-free; NaN wins, so a NaN score or
/// value reaches [`NystromPlan::weights`], which makes the affected weights NaN).
pub fn merge_max(acc: &mut [f32], other: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(other) {
        *a = max_nan(*a, b);
    }
}

/// The max of `row` (`-inf` when empty), NaN when any value is NaN (`f32::max` would drop
/// it). Eight lanes combined at the end: a max is exact, so the lanes give the same value
/// as one pass (up to the sign of a zero max, which no later step can see: `s − 0` and
/// `s − (−0)` are equal but for `s = −0`, and `exp` of either zero is 1), and they
/// vectorise.
#[inline(always)]
fn row_max_nan(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut nan = [false; 8];
    let mut lanes = |c: &[f32]| {
        for ((a, n), &v) in acc.iter_mut().zip(nan.iter_mut()).zip(c) {
            *a = if v > *a { v } else { *a };
            *n |= v.is_nan();
        }
    };
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        lanes(c);
    }
    lanes(chunks.remainder());
    if nan.iter().any(|&n| n) {
        f32::NAN
    } else {
        acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
    }
}

/// `max(a, b)`, NaN when either is (`f32::max` would drop the NaN).
#[inline(always)]
fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// Nyström attention (README 8.8) of the `[n, 3·heads·d]` projection `qkv`, into
/// `[n, heads·d]`; see the module documentation for the steps and the padding rule, and
/// [`NystromPlan`] for the same computation split over workers (same bits).
#[allow(clippy::too_many_arguments)]
pub fn nystrom_attention(
    qkv: &[f32],
    n: usize,
    heads: usize,
    d: usize,
    m: usize,
    pinv_iterations: usize,
    blocks: Blocks,
    exec: Execution,
) -> Vec<f32> {
    let inner = heads * d;
    assert_eq!(qkv.len(), n * 3 * inner, "nystrom: qkv is not [n, 3·H·d]");
    assert!(m > 0 && blocks.query > 0 && blocks.reduce > 0);
    if n == 0 || inner == 0 {
        return vec![0f32; n * inner];
    }
    let plan = NystromPlan {
        n,
        heads,
        d,
        m,
        pinv_iterations,
        blocks,
    };
    let lm = plan.landmarks(&plan.landmark_sums(qkv, None, exec));
    let mut max = plan.a3_max(&lm, qkv, exec);
    plan.include_padding_max(&mut max);
    let sums = plan.a3_sums(&lm, &max, qkv, exec);
    let w = plan.weights(&lm, &max, &sums);
    plan.output(&lm, &w, qkv, exec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The staged Nyström on random subsets of the rows (each worker's rows in a random
    /// order, with their global ids), merged, gives the single-process bits.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// `[n, 3·H·d]` uniform in `[-2, 2)`; with `adversarial`, every value column gets its
    /// own power-of-two scale in `[2^-30, 2^30]`, a few rows of huge values, and rows that
    /// cancel (v, then −v).
    fn random_qkv(n: usize, heads: usize, d: usize, adversarial: bool, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let inner = heads * d;
        let ld = 3 * inner;
        let mut qkv: Vec<f32> = (0..n * ld)
            .map(|_| ((xorshift(&mut state) >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0)
            .collect();
        if adversarial {
            let scales: Vec<f32> = (0..inner)
                .map(|_| 2f32.powi((xorshift(&mut state) % 61) as i32 - 30))
                .collect();
            for r in 0..n {
                for (c, &scale) in scales.iter().enumerate() {
                    let at = r * ld + 2 * inner + c;
                    qkv[at] = if r % 2 == 1 && r % 5 != 0 {
                        -qkv[at - ld]
                    } else if r % 97 == 5 {
                        qkv[at] * scale * 1e6
                    } else {
                        qkv[at] * scale
                    };
                }
            }
        }
        qkv
    }

    /// The staged Nyström on random subsets of the rows (each worker's rows in a random
    /// order, with their global ids), merged, gives the single-process bits: padding, a
    /// head width with a tail beyond the 8-column groups (12), reduce blocks that do not
    /// divide the rows, and value columns of adversarial magnitudes.
    #[test]
    fn nystrom_split_over_workers_gives_the_same_bits() {
        // (n, heads, d, m, adversarial values, reduce block); 1000 mod 24 != 0 and
        // 700 mod 7 == 0; a reduce block of 4096 spans several A3_KEYS sub-blocks.
        for (case, (n, heads, d, m, adversarial, reduce)) in [
            (1000, 2, 8, 24, false, 96),
            (1000, 2, 8, 24, true, 96),
            (700, 3, 12, 7, true, 96),
            (301, 1, 3, 5, false, 96),
            (1500, 2, 8, 16, true, 4096),
        ]
        .into_iter()
        .enumerate()
        {
            let blocks = Blocks {
                query: 16,
                key: 64,
                reduce,
            };
            split_case(n, heads, d, m, adversarial, blocks, case as u64 + 1);
        }
    }

    fn split_case(
        n: usize,
        heads: usize,
        d: usize,
        m: usize,
        adversarial: bool,
        blocks: Blocks,
        seed: u64,
    ) {
        let mut state = 0x2545_F491_4F6C_DD1Du64 ^ seed;
        let mut rnd = || xorshift(&mut state);
        let ld = 3 * heads * d;
        let qkv = random_qkv(n, heads, d, adversarial, seed);
        let want = nystrom_attention(&qkv, n, heads, d, m, 6, blocks, Execution::Parallel);
        let plan = NystromPlan {
            n,
            heads,
            d,
            m,
            pinv_iterations: 6,
            blocks,
        };
        for parts in [1usize, 2, 3, 4, 7] {
            let mut owned: Vec<Vec<usize>> = vec![Vec::new(); parts];
            for i in 0..n {
                owned[(rnd() % parts as u64) as usize].push(i);
            }
            for ids in owned.iter_mut() {
                // A worker's rows in any order.
                for k in (1..ids.len()).rev() {
                    ids.swap(k, (rnd() % (k as u64 + 1)) as usize);
                }
            }
            let local: Vec<Vec<f32>> = owned
                .iter()
                .map(|ids| {
                    ids.iter()
                        .flat_map(|&i| qkv[i * ld..(i + 1) * ld].to_vec())
                        .collect()
                })
                .collect();
            let mut sums = vec![ExactSum::default(); m * 2 * heads * d];
            for (ids, x) in owned.iter().zip(&local) {
                let part = plan.landmark_sums(x, Some(ids), Execution::Sequential);
                sums.iter_mut().zip(&part).for_each(|(a, b)| a.merge(b));
            }
            let lm = plan.landmarks(&sums);
            let mut max = plan.a3_max(&lm, &local[0], Execution::Sequential);
            for x in &local[1..] {
                max.merge(&plan.a3_max(&lm, x, Execution::Parallel));
            }
            plan.include_padding_max(&mut max);
            let mut a3 = plan.a3_sums(&lm, &max, &local[0], Execution::Sequential);
            for x in &local[1..] {
                a3.merge(&plan.a3_sums(&lm, &max, x, Execution::Parallel));
            }
            let w = plan.weights(&lm, &max, &a3);
            let inner = heads * d;
            let mut got = vec![0f32; n * inner];
            for (ids, x) in owned.iter().zip(&local) {
                let out = plan.output(&lm, &w, x, Execution::Parallel);
                for (r, &i) in ids.iter().enumerate() {
                    got[i * inner..(i + 1) * inner]
                        .copy_from_slice(&out[r * inner..(r + 1) * inner]);
                }
            }
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "n={n} H={heads} d={d} m={m} adversarial={adversarial}, {parts} parts: \
                 output bits differ from one process"
            );
        }
    }

    /// `Σ` of `±M·2^k` (`M < 2^24`, `k ∈ [-20, 60]`) with cancelling pairs, spanning more
    /// than `2^14` rows per segment (the bucket flush): the landmark sums are the exact
    /// sums, checked against i128 fixed-point sums in units of `2^-21` (q is scaled by
    /// `d^-½ = ½`), and the same bits come from a scattered split over workers.
    #[test]
    fn landmark_sums_are_exact_on_adversarial_magnitudes() {
        let (n, heads, d, m) = (40_000, 1, 4, 2); // segments of 20 000 rows
        let ld = 3 * heads * d;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut qkv = vec![0f32; n * ld];
        for r in 0..n {
            for c in 0..2 * d {
                let x = if r % 2 == 1 && r < 30_000 {
                    -qkv[(r - 1) * ld + c]
                } else {
                    let mant = (xorshift(&mut state) >> 40) as f32; // < 2^24: exact
                    let k = (xorshift(&mut state) % 81) as i32 - 20;
                    let sign = if xorshift(&mut state) & 1 == 0 {
                        1.0
                    } else {
                        -1.0
                    };
                    sign * mant * 2f32.powi(k - 23)
                };
                qkv[r * ld + c] = x;
            }
        }
        let plan = NystromPlan {
            n,
            heads,
            d,
            m,
            pinv_iterations: 0,
            blocks: Blocks::default(),
        };
        let sums = plan.landmark_sums(&qkv, None, Execution::Parallel);
        let l = plan.segment_len();
        let unit = 2f64.powi(-21 - 23);
        for s in 0..m {
            for c in 0..2 * d {
                let scale = if c < d { 0.5 } else { 1.0 };
                let exact: i128 = (s * l..(s + 1) * l)
                    .map(|r| (f64::from(qkv[r * ld + c]) * scale / unit) as i128)
                    .sum();
                let want = exact as f64 * unit; // i128 -> f64 rounds once
                let got = sums[s * 2 * d + c].value();
                assert!(
                    (got - want).abs() <= f64::EPSILON * want.abs(),
                    "segment {s} column {c}: {got:e}, exact {want:e}"
                );
            }
        }
        // Scattered split over 3 workers: the same bits.
        let mut owned: Vec<Vec<usize>> = vec![Vec::new(); 3];
        for i in 0..n {
            owned[(xorshift(&mut state) % 3) as usize].push(i);
        }
        let mut merged = vec![ExactSum::default(); m * 2 * d];
        for ids in &owned {
            let x: Vec<f32> = ids
                .iter()
                .flat_map(|&i| qkv[i * ld..(i + 1) * ld].to_vec())
                .collect();
            let part = plan.landmark_sums(&x, Some(ids), Execution::Sequential);
            merged.iter_mut().zip(&part).for_each(|(a, b)| a.merge(b));
        }
        for (a, b) in merged.iter().zip(&sums) {
            assert_eq!(a.value().to_bits(), b.value().to_bits());
        }
    }

    /// Float32 extremes in one segment: a subnormal survives `2^100 − 2^100`, the largest
    /// float32s do not overflow, and infinities and NaN are kept.
    #[test]
    fn landmark_sums_keep_subnormals_extremes_and_specials() {
        let plan = NystromPlan {
            n: 3,
            heads: 1,
            d: 1,
            m: 1,
            pinv_iterations: 0,
            blocks: Blocks::default(),
        };
        let tiny = f32::from_bits(1); // 2^-149
        let sums_of = |k: [f32; 3]| {
            let qkv: Vec<f32> = k.iter().flat_map(|&k| [0.0, k, 0.0]).collect();
            plan.landmark_sums(&qkv, None, Execution::Sequential)[1].value()
        };
        assert_eq!(
            sums_of([2f32.powi(100), tiny, -2f32.powi(100)]),
            2f64.powi(-149)
        );
        assert_eq!(
            sums_of([f32::MAX, f32::MAX, -f32::MAX]),
            f64::from(f32::MAX)
        );
        assert_eq!(sums_of([f32::INFINITY, 1.0, 2.0]), f64::INFINITY);
        assert!(sums_of([f32::INFINITY, f32::NEG_INFINITY, 2.0]).is_nan());
        assert!(sums_of([f32::NAN, 1.0, 2.0]).is_nan());
    }

    /// `W_h = Z_h (A3 v_h)` from the fixed-point sums against a float64 reference computed
    /// here from the same landmarks (scores, `exp`, sums and products all in float64), on
    /// value columns of adversarial magnitudes (and a head width with a tail group).
    #[test]
    fn a3_weights_match_a_float64_reference() {
        for (n, heads, d, m) in [(2000, 2, 12, 16), (999, 1, 8, 10)] {
            let qkv = random_qkv(n, heads, d, true, 11);
            let inner = heads * d;
            let ld = 3 * inner;
            let plan = NystromPlan {
                n,
                heads,
                d,
                m,
                pinv_iterations: 6,
                blocks: Blocks::default(),
            };
            let exec = Execution::Parallel;
            let lm = plan.landmarks(&plan.landmark_sums(&qkv, None, exec));
            let mut max = plan.a3_max(&lm, &qkv, exec);
            plan.include_padding_max(&mut max);
            let w = plan.weights(&lm, &max, &plan.a3_sums(&lm, &max, &qkv, exec));
            let pad = plan.pad() as f64;
            for h in 0..heads {
                let mut a3v = vec![0f64; m * d];
                for i in 0..m {
                    let q = &lm.q32[(h * m + i) * d..(h * m + i + 1) * d];
                    let s: Vec<f64> = (0..n)
                        .map(|j| {
                            let k = &qkv[j * ld + inner + h * d..][..d];
                            q.iter()
                                .zip(k)
                                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                                .sum()
                        })
                        .collect();
                    let mut mx = s.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                    if pad > 0.0 {
                        mx = mx.max(0.0);
                    }
                    let mut den = pad * (-mx).exp();
                    for (j, &sj) in s.iter().enumerate() {
                        let p = (sj - mx).exp();
                        den += p;
                        for c in 0..d {
                            a3v[i * d + c] += p * f64::from(qkv[j * ld + 2 * inner + h * d + c]);
                        }
                    }
                    a3v[i * d..(i + 1) * d].iter_mut().for_each(|v| *v /= den);
                }
                let mut want = vec![0f64; m * d];
                dgemm(m, m, d, &lm.z[h * m * m..(h + 1) * m * m], &a3v, &mut want);
                // Per column, relative to the column's largest weight (the columns'
                // magnitudes differ by up to 2^60).
                for c in 0..d {
                    let col_max = (0..m).map(|i| want[i * d + c].abs()).fold(0f64, f64::max);
                    for i in 0..m {
                        let got = f64::from(w[(h * m + i) * d + c]);
                        let err = (got - want[i * d + c]).abs();
                        assert!(
                            err <= 1e-4 * col_max,
                            "n={n} h={h} landmark {i} column {c}: {got:e} vs {:e}",
                            want[i * d + c]
                        );
                    }
                }
            }
        }
    }
}
