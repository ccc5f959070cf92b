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

/// Centres per block (one GEMM row block; the unit of parallel work).
const BLOCK_ROWS: usize = 256;

/// Points per column tile: a block's GEMM runs tile by tile, each `BLOCK_ROWS × TILE_COLS`
/// float32 result (1 MiB) scanned while it is still in cache, instead of one
/// `BLOCK_ROWS × N` result written out and read back.
const TILE_COLS: usize = 1024;

pub(crate) struct Brute<'a> {
    exact: &'a Exact<'a>,
    /// The GEMM's right operand, the points transposed (cosine: normalised), cut into
    /// column tiles of [`TILE_COLS`] points: tile `t` is a contiguous `[D, C_t]` block at
    /// `t·D·TILE_COLS`.
    panels: Vec<f32>,
    /// The GEMM's left operand rows: `[N, D]` (cosine: normalised; euclidean: empty,
    /// the points themselves are used).
    normalised: Vec<f32>,
    /// Euclidean: every point's squared norm in float64.
    sq: Vec<f64>,
    /// The float32 prefilter's per-point term: euclidean `fl32(sq_j / 2)`, cosine 0 (see
    /// [`Brute::prefilter_limit`]).
    half_sq: Vec<f32>,
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
        let mut panels = vec![0f32; if exact_only { 0 } else { n * dim }];
        if !exact_only {
            for (tile, panel) in panels.chunks_mut(dim * TILE_COLS).enumerate() {
                let c0 = tile * TILE_COLS;
                let cols = panel.len() / dim;
                for c in 0..cols {
                    for t in 0..dim {
                        panel[t * cols + c] = source[(c0 + c) * dim + t];
                    }
                }
            }
        }
        let half_sq = match exact.metric {
            Metric::Euclidean => sq.iter().map(|&v| (v / 2.0) as f32).collect(),
            Metric::Cosine => vec![0f32; n],
        };
        Brute {
            exact,
            half_sq,
            panels,
            normalised,
            sq,
            sq_max,
            exact_only,
            block: BLOCK_ROWS,
        }
    }

    pub fn block(&self) -> usize {
        self.block
    }

    /// The float32 prefilter of the scans: for centre `i` and a limit `L` on the
    /// approximate distance `ã_j`, a float32 `P` such that `ã_j ≤ L` implies
    /// `fl32(h_j − dot_j) ≤ P`, where `dot_j` is the GEMM's float32 value and `h_j` is
    /// `half_sq[j]`. A chunk of columns none of which passes this test is skipped; the
    /// others are tested with the float64 `ã_j` itself, so the candidates are the same.
    ///
    /// Euclidean: `ã_j = fl64(fl64(s_i + s_j) − 2·dot_j) ≤ L` gives
    /// `s_j/2 − dot_j ≤ (L − s_i)/2 + 2^-51·(s_i + s_max)` (float64 rounding, with
    /// `|dot_j| ≤ 1.01·(s_i + s_j)/2`), and `fl32(h_j − dot_j)` is within
    /// `u·s_j/2 + u·(1.01·s_j/2 + |dot_j|) ≤ 2u·(s_i + s_max)` of `s_j/2 − dot_j`
    /// (`u = 2^-24`). So `P = (L − s_i)/2 + 4u·(s_i + s_max)`, rounded up to float32.
    /// Cosine: `ã_j = fl64(1 − dot_j) ≤ L` gives `−dot_j ≤ L − 1 + 2^-51`, `h_j = 0` and
    /// `fl32(0 − dot_j) = −dot_j` exactly, so `P = L − 1 + 1e-9`, rounded up.
    fn prefilter_limit(&self, i: usize, limit: f64) -> f32 {
        let u = f32::EPSILON as f64 / 2.0;
        let p = match self.exact.metric {
            Metric::Euclidean => (limit - self.sq[i]) / 2.0 + 4.0 * u * (self.sq[i] + self.sq_max),
            Metric::Cosine => limit - 1.0 + 1e-9,
        };
        let q = p as f32;
        if (q as f64) < p {
            q.next_up()
        } else {
            q
        }
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
    /// The m-th smallest value so far (`+inf` until m values were pushed): a value is
    /// worth pushing only below it.
    #[inline]
    fn bar(&self) -> f64 {
        if self.values.len() == self.m {
            self.values[self.m - 1]
        } else {
            f64::INFINITY
        }
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
        if self.exact_only {
            return self.search_rows_exact(centres, query, out, approx);
        }
        let points = self.exact.points;
        let (n, dim) = (points.len(), points.dim());
        let rows = centres.len();
        let left = match self.exact.metric {
            Metric::Euclidean => &points.values()[centres.start * dim..centres.end * dim],
            Metric::Cosine => &self.normalised[centres.start * dim..centres.end * dim],
        };
        if dots.len() < rows * TILE_COLS {
            dots.resize(rows * TILE_COLS, 0.0);
        }
        // Per centre: the m smallest approximate distances so far (knn) and the bound b_i.
        // `out[r]` collects (approximate distance, j) for every j that may still pass the
        // final threshold: knn, `ã_j ≤ bar + 2b` with `bar` the m-th smallest ã seen so far
        // (it only decreases towards a_m, so every j with ã_j ≤ a_m + 2b is collected);
        // radius, `ã_j ≤ limit + b`. The final filter and the exact distances come last.
        let mut smallest: Vec<SmallestM> = match query {
            Query::Knn { m } => (0..rows).map(|_| SmallestM::new(m)).collect(),
            Query::Radius { .. } => Vec::new(),
        };
        let bounds: Vec<f64> = centres.clone().map(|i| self.bound(i)).collect();
        for (tile, panel) in self.panels.chunks(dim * TILE_COLS).enumerate() {
            let c0 = tile * TILE_COLS;
            let cols = panel.len() / dim;
            gemm_strided(rows, dim, cols, left, panel, dots, 0, cols);
            let sq = &self.sq[c0..c0 + cols];
            let half_sq = &self.half_sq[c0..c0 + cols];
            for (r, i) in centres.clone().enumerate() {
                let row = &dots[r * cols..(r + 1) * cols];
                let b = bounds[r];
                let si = self.sq[i];
                let mut limit = match query {
                    Query::Knn { .. } => smallest[r].bar() + 2.0 * b,
                    Query::Radius { limit } => limit + b,
                };
                let mut pre = self.prefilter_limit(i, limit);
                let slot = &mut out[r];
                for (c, (dchunk, hchunk)) in row.chunks(SCAN).zip(half_sq.chunks(SCAN)).enumerate()
                {
                    // Branch-free float32 test first: most chunks hold nothing that can
                    // pass (see prefilter_limit).
                    if !dchunk
                        .iter()
                        .zip(hchunk)
                        .fold(false, |any, (&dot, &h)| any | (h - dot <= pre))
                    {
                        continue;
                    }
                    for (o, &dot) in dchunk.iter().enumerate() {
                        let j = c0 + c * SCAN + o;
                        let a = match self.exact.metric {
                            Metric::Euclidean => si + sq[c * SCAN + o] - 2.0 * dot as f64,
                            Metric::Cosine => 1.0 - dot as f64,
                        };
                        // The centre is never a candidate.
                        if a > limit || j == i {
                            continue;
                        }
                        slot.push((a, j as u32));
                        if let Query::Knn { .. } = query {
                            let s = &mut smallest[r];
                            if a < s.bar() {
                                s.push(a);
                                limit = s.bar() + 2.0 * b;
                                pre = self.prefilter_limit(i, limit);
                            }
                        }
                    }
                }
            }
        }
        debug_assert!(n == 0 || !self.panels.is_empty());
        for (r, (i, slot)) in centres.zip(out.iter_mut()).enumerate() {
            let threshold = match query {
                Query::Knn { .. } => smallest[r].largest() + 2.0 * bounds[r],
                Query::Radius { limit } => limit + bounds[r],
            };
            slot.retain(|&(a, _)| a <= threshold);
            for c in slot.iter_mut() {
                c.0 = self.exact.d(i, c.1 as usize);
            }
        }
    }

    /// [`Self::search_rows`] when float32 products could overflow: the "approximate"
    /// distances are the exact ones (correct, slower).
    fn search_rows_exact(
        &self,
        centres: Range<usize>,
        query: Query,
        out: &mut [Vec<(f64, u32)>],
        approx: &mut Vec<f64>,
    ) {
        let n = self.exact.points.len();
        approx.resize(n, 0.0);
        for (i, slot) in centres.zip(out.iter_mut()) {
            for (j, a) in approx.iter_mut().enumerate() {
                *a = self.exact.d(i, j);
            }
            // The centre is never a candidate.
            approx[i] = f64::INFINITY;
            let b = self.bound(i);
            let threshold = match query {
                Query::Knn { m } => {
                    let mut smallest = SmallestM::new(m);
                    for &a in approx.iter() {
                        if a < smallest.bar() {
                            smallest.push(a);
                        }
                    }
                    smallest.largest() + 2.0 * b
                }
                Query::Radius { limit } => limit + b,
            };
            for (j, &a) in approx.iter().enumerate() {
                if a <= threshold {
                    slot.push((a, j as u32));
                }
            }
        }
    }
}
