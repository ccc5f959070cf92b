//! Candidate generation with a k-d tree (kiddo's `ImmutableKdTree`) for low dimensions.
//!
//! The tree only proposes candidates; every candidate's distance is recomputed exactly
//! (float64, [`Exact::d`]) and the rule is applied to those exact values. What has to be
//! proved is that no true neighbour is left out of the candidates.
//!
//! The tree works on float64 coordinates: the float32 points themselves (euclidean), or
//! the points divided by their float64 norm (cosine, where `|u − v|² = 2·d_cos` for unit
//! vectors). Its distances differ from the exact ones only by rounding:
//! - a point's tree distance vs. the exact value: relative error ≤ ~2·D·ε (euclidean: the
//!   same non-negative terms summed, maybe in another order); absolute ≤ ~20·D·ε for the
//!   normalised cosine coordinates, whose squared differences are ≤ 4 per axis;
//! - the tree's pruning bound (distance from the query to a cell), updated incrementally
//!   along the descent: absolute error ≤ ~(depth·4)·ε·S, where `S = Σ_t extent_t²` is the
//!   squared diagonal of the bounding box (no offset exceeds the extent).
//!
//! A query for "everything within exact distance T" therefore asks the tree for tree
//! distance ≤ `T·(1 + 1e-9) + 1e-9·S` (euclidean) or `2T + 1e-9·S` (cosine). The relative
//! and absolute margins are many orders of magnitude above the error bounds (ε = 2^-52,
//! depth ≤ 64, D ≤ 16), so a cell holding a point of exact distance ≤ T is never pruned
//! and the point itself passes the tree's test.

use std::num::NonZero;
use std::ops::Range;

use kiddo::immutable::float::kdtree::ImmutableKdTree;
use kiddo::SquaredEuclidean;

use crate::metric::{Exact, Metric};
use crate::search::{CandidateSearch, Query};

/// The largest dimension the tree is built for (one monomorphised tree per D).
pub const TREE_MAX_DIM: usize = 16;

/// [`crate::Search::Auto`] uses the tree up to this dimension and brute force above.
///
/// Measured with `examples/search_threshold.rs` (N = 100 000 uniform points in [0, 1)^D,
/// k = 16, 2 threads; seconds, tree / brute force): D = 3: 0.26 / 11.2; D = 8: 2.8 / 13.4;
/// D = 10: 8.7 / 22.3; D = 11: 35.9 / 23.0; D = 12: 49.9 / 26.8. A k-d tree prunes less and
/// less as D grows (every cell is near the query sphere), while brute force costs N²·D
/// whatever the data. Brute force grows as N², the tree more slowly, so for much larger N
/// the crossover moves up; ask for [`crate::Search::Tree`] there.
pub const AUTO_TREE_MAX_DIM: usize = 10;

/// The k-d tree over the points (bucket size 32, 32-bit items = point indices).
pub(crate) struct Tree<'a, const D: usize> {
    tree: ImmutableKdTree<f64, u32, D, 32>,
    coords: Vec<[f64; D]>,
    exact: &'a Exact<'a>,
    /// `1e-9·S`: the absolute margin in tree space.
    abs_margin: f64,
}

impl<'a, const D: usize> Tree<'a, D> {
    pub fn new(exact: &'a Exact<'a>) -> Self {
        let points = exact.points;
        let coords: Vec<[f64; D]> = (0..points.len())
            .map(|i| {
                let row = points.row(i);
                let mut c = [0f64; D];
                for t in 0..D {
                    c[t] = match exact.metric {
                        Metric::Euclidean => row[t] as f64,
                        Metric::Cosine => row[t] as f64 / exact.norms[i],
                    };
                }
                c
            })
            .collect();
        let mut lo = [f64::INFINITY; D];
        let mut hi = [f64::NEG_INFINITY; D];
        for c in &coords {
            for t in 0..D {
                lo[t] = lo[t].min(c[t]);
                hi[t] = hi[t].max(c[t]);
            }
        }
        let s: f64 = (0..D)
            .map(|t| {
                let e = hi[t] - lo[t];
                if e.is_finite() {
                    e * e
                } else {
                    0.0
                }
            })
            .sum();
        // The f64 differences of f32 coordinates can overflow only beyond ~1.8e308, which
        // f32 (max ~3.4e38) cannot reach; S itself is at most D·(6.8e38)² < f64::MAX.
        let tree = ImmutableKdTree::new_from_slice(&coords);
        Tree {
            tree,
            coords,
            exact,
            abs_margin: 1e-9 * s + f64::MIN_POSITIVE,
        }
    }

    /// The tree-space radius that covers every point of exact distance ≤ `t`.
    fn tree_radius(&self, t: f64) -> f64 {
        let r = match self.exact.metric {
            Metric::Euclidean => t * (1.0 + 1e-9),
            Metric::Cosine => 2.0 * t + 1e-9,
        } + self.abs_margin;
        r.max(self.abs_margin)
    }

    /// Every j ≠ i with tree distance ≤ `tree_radius(t)`, with exact distances.
    fn within(&self, i: usize, t: f64, out: &mut Vec<(f64, u32)>) {
        let found = self
            .tree
            .within_unsorted::<SquaredEuclidean>(&self.coords[i], self.tree_radius(t));
        out.extend(
            found
                .into_iter()
                .filter(|nb| nb.item as usize != i)
                .map(|nb| (self.exact.d(i, nb.item as usize), nb.item)),
        );
    }

    fn knn(&self, i: usize, m: usize, out: &mut Vec<(f64, u32)>) {
        let n = self.coords.len();
        // m + 1 for the centre itself, + 1 to see past the m-th.
        let ask = (m + 2).min(n);
        // Unsorted (kiddo keeps a binary heap then, not a sorted vector it shifts on every
        // insertion): only the set and its largest tree distance are used.
        let found = self.tree.nearest_n_within::<SquaredEuclidean>(
            &self.coords[i],
            f64::INFINITY,
            NonZero::new(ask).expect("m >= 1"),
            false,
        );
        let tree_max = found
            .iter()
            .map(|nb| nb.distance)
            .fold(f64::NEG_INFINITY, f64::max);
        // The candidates go straight into `out` (empty on entry): no buffer per query.
        out.reserve(ask);
        out.extend(
            found
                .iter()
                .filter(|nb| nb.item as usize != i)
                .map(|nb| (self.exact.d(i, nb.item as usize), nb.item)),
        );
        // m distinct points j != i were found, so the true m-th smallest distance is at
        // most theirs: t bounds it from above.
        let (_, &mut (t, _), _) =
            out.select_nth_unstable_by(m - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if ask == n || tree_max > self.tree_radius(t) + self.abs_margin {
            // Every point was returned, or every point not returned has tree distance
            // ≥ tree_max − margin > tree_radius(t), hence exact distance > t: nothing
            // missing can tie with or beat the m-th.
        } else {
            out.clear();
            self.within(i, t, out);
        }
    }
}

impl<const D: usize> CandidateSearch for Tree<'_, D> {
    fn search_block(&self, centres: Range<usize>, query: Query, out: &mut [Vec<(f64, u32)>]) {
        for (i, slot) in centres.zip(out.iter_mut()) {
            match query {
                Query::Knn { m } => self.knn(i, m, slot),
                Query::Radius { limit } => self.within(i, limit, slot),
            }
        }
    }
}
