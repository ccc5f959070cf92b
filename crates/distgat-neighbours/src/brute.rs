//! Candidate generation by blocked brute force (float32 GEMM) for high dimensions.
//!
//! For a block of centres, one GEMM gives every dot product `p_i·p_j` in float32, and from
//! it an approximate distance to every point:
//! - euclidean: `ã = |p_i|² + |p_j|² − 2·fl32(p_i·p_j)`, squared norms in float64;
//! - cosine: `ã = 1 − fl32(p̂_i·p̂_j)` with `p̂ = fl32(p / |p|)`.
//!
//! Error bound. A float32 dot product of length D, in any summation order and with or
//! without FMA, is within `γ_D·Σ_t |x_t||y_t| ≤ γ_D·|x||y|` of the exact value, with
//! `γ_D = D·u/(1 − D·u)` and `u = 2^-24`. So, for every pair:
//! - euclidean: `|ã − d| ≤ 2·γ_D·|p_i||p_j| ≤ γ_D·(|p_i|² + |p_j|²)`, plus float64 noise;
//! - cosine: the normalisation adds ≤ 2u (+u²) relative to `|p̂_i||p̂_j| ≤ 1 + 2u`, so
//!   `|ã − d| ≤ γ_D·(1 + u)² + 2u + u² < (D + 3)·u` for `D·u ≤ 1e-3`.
//!
//! We use `b_i = 2·(D + 4)·u·(|p_i|² + max_j |p_j|²)` (euclidean) and `b = 2·(D + 4)·u`
//! (cosine), about twice the bound. Then:
//! - knn: let `a_m` be the m-th smallest `ã` over j ≠ i and `d*_m` the m-th smallest exact
//!   distance. The m-th smallest of `d_j + e_j` with `|e_j| ≤ b` is ≥ `d*_m − b`, so
//!   `a_m ≥ d*_m − b`. Any j with `d_j ≤ d*_m` has `ã_j ≤ d*_m + b ≤ a_m + 2b`. Keeping every
//!   j with `ã_j ≤ a_m + 2b` keeps every true neighbour and every point tied with the m-th.
//! - radius: any j with `d_j < limit` has `ã_j < limit + b`.
//!
//! The candidates' distances are then recomputed exactly in float64. Coordinates whose
//! squared norm exceeds 1e30 could overflow float32 products; then the block's
//! "approximate" distances are the exact ones (correct, slower).

use std::ops::Range;

use distgat_attention::dense::gemm_strided;

use crate::metric::{squared_norm, Exact, Metric};
use crate::search::{CandidateSearch, Query};

/// Distances computed per block: about this many float32 values (16 MiB) per thread.
const BLOCK_VALUES: usize = 4 << 20;

pub(crate) struct Brute<'a> {
    exact: &'a Exact<'a>,
    /// The GEMM's right operand: `[D, N]`, the points transposed (cosine: normalised).
    transposed: Vec<f32>,
    /// The GEMM's left operand rows: `[N, D]` (cosine: normalised; euclidean: empty,
    /// the points themselves are used).
    normalised: Vec<f32>,
    /// Euclidean: every point's squared norm in float64.
    sq: Vec<f64>,
    sq_max: f64,
    /// Squared norms too large for float32 products: use exact distances throughout.
    exact_only: bool,
    block: usize,
}

impl<'a> Brute<'a> {
    pub fn new(exact: &'a Exact<'a>) -> Self {
        let points = exact.points;
        let (n, dim) = (points.len(), points.dim());
        let sq: Vec<f64> = (0..n).map(|i| squared_norm(points.row(i))).collect();
        let sq_max = sq.iter().copied().fold(0.0, f64::max);
        let normalised: Vec<f32> = match exact.metric {
            Metric::Euclidean => Vec::new(),
            Metric::Cosine => (0..n)
                .flat_map(|i| {
                    let norm = exact.norms[i];
                    points.row(i).iter().map(move |&v| (v as f64 / norm) as f32)
                })
                .collect(),
        };
        let exact_only = exact.metric == Metric::Euclidean && sq_max > 1e30;
        let source = match exact.metric {
            Metric::Euclidean => points.values(),
            Metric::Cosine => &normalised[..],
        };
        let mut transposed = vec![0f32; if exact_only { 0 } else { n * dim }];
        if !exact_only {
            for i in 0..n {
                for t in 0..dim {
                    transposed[t * n + i] = source[i * dim + t];
                }
            }
        }
        Brute {
            exact,
            transposed,
            normalised,
            sq,
            sq_max,
            exact_only,
            block: (BLOCK_VALUES / n.max(1)).clamp(1, 256),
        }
    }

    pub fn block(&self) -> usize {
        self.block
    }

    /// The bound `b_i` on |approximate − exact| for centre i (see the module docs).
    fn bound(&self, i: usize) -> f64 {
        if self.exact_only {
            return 0.0;
        }
        let u = f32::EPSILON as f64 / 2.0; // 2^-24
        let gamma = 2.0 * (self.exact.points.dim() as f64 + 4.0) * u;
        match self.exact.metric {
            Metric::Euclidean => gamma * (self.sq[i] + self.sq_max) + f64::MIN_POSITIVE,
            Metric::Cosine => gamma,
        }
    }
}

/// The m smallest values seen, ascending (m is small: a neighbour count).
struct SmallestM {
    m: usize,
    values: Vec<f64>,
}

impl SmallestM {
    fn new(m: usize) -> Self {
        SmallestM {
            m,
            values: Vec::with_capacity(m + 1),
        }
    }
    #[inline]
    fn push(&mut self, v: f64) {
        if self.values.len() == self.m {
            if v >= self.values[self.m - 1] {
                return;
            }
            self.values.pop();
        }
        let pos = self.values.partition_point(|&x| x <= v);
        self.values.insert(pos, v);
    }
    fn is_full(&self) -> bool {
        self.values.len() == self.m
    }
    fn largest(&self) -> f64 {
        *self.values.last().expect("m >= 1 values were pushed")
    }
}

impl CandidateSearch for Brute<'_> {
    fn search_block(&self, centres: Range<usize>, query: Query, out: &mut [Vec<(f64, u32)>]) {
        // search_rows calls nothing that could run another block on this thread (no
        // rayon inside), so the borrow never nests.
        BUFFERS.with(|cell| {
            let mut buffers = cell.borrow_mut();
            let (dots, approx) = &mut *buffers;
            self.search_rows(centres, query, out, dots, approx);
        });
    }
}

thread_local! {
    /// Per-thread scratch (the GEMM block and one row of approximate distances), reused
    /// across blocks: the GEMM overwrites it (beta = 0) and each row is rewritten in full.
    /// It stays allocated with its thread (about 16 MiB plus 8·N bytes per pool thread).
    static BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f64>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Values per chunk in the scans: a chunk is skipped with one vectorisable comparison.
const SCAN: usize = 16;

impl Brute<'_> {
    fn search_rows(
        &self,
        centres: Range<usize>,
        query: Query,
        out: &mut [Vec<(f64, u32)>],
        dots: &mut Vec<f32>,
        approx: &mut Vec<f64>,
    ) {
        let points = self.exact.points;
        let (n, dim) = (points.len(), points.dim());
        let rows = centres.len();
        if !self.exact_only {
            let left = match self.exact.metric {
                Metric::Euclidean => &points.values()[centres.start * dim..centres.end * dim],
                Metric::Cosine => &self.normalised[centres.start * dim..centres.end * dim],
            };
            if dots.len() < rows * n {
                dots.resize(rows * n, 0.0);
            }
            gemm_strided(rows, dim, n, left, &self.transposed, dots, 0, n);
        }
        approx.resize(n, 0.0);
        for (r, (i, slot)) in centres.zip(out.iter_mut()).enumerate() {
            if self.exact_only {
                for (j, a) in approx.iter_mut().enumerate() {
                    *a = self.exact.d(i, j);
                }
            } else {
                let row = &dots[r * n..(r + 1) * n];
                match self.exact.metric {
                    Metric::Euclidean => {
                        let si = self.sq[i];
                        for ((a, &dot), &sj) in approx.iter_mut().zip(row).zip(&self.sq) {
                            *a = si + sj - 2.0 * dot as f64;
                        }
                    }
                    Metric::Cosine => {
                        for (a, &dot) in approx.iter_mut().zip(row) {
                            *a = 1.0 - dot as f64;
                        }
                    }
                }
            }
            // The centre is never a candidate.
            approx[i] = f64::INFINITY;
            let b = self.bound(i);
            let threshold = match query {
                Query::Knn { m } => {
                    let mut smallest = SmallestM::new(m);
                    let mut bar = f64::INFINITY;
                    for chunk in approx.chunks(SCAN) {
                        // Branch-free test first: most chunks hold nothing below the bar.
                        if !chunk.iter().fold(false, |any, &a| any | (a < bar)) {
                            continue;
                        }
                        for &a in chunk {
                            if a < bar {
                                smallest.push(a);
                                if smallest.is_full() {
                                    bar = smallest.largest();
                                }
                            }
                        }
                    }
                    smallest.largest() + 2.0 * b
                }
                Query::Radius { limit } => limit + b,
            };
            for (c, chunk) in approx.chunks(SCAN).enumerate() {
                if !chunk.iter().fold(false, |any, &a| any | (a <= threshold)) {
                    continue;
                }
                for (o, &a) in chunk.iter().enumerate() {
                    if a <= threshold {
                        let j = c * SCAN + o;
                        slot.push((self.exact.d(i, j), j as u32));
                    }
                }
            }
        }
    }
}
