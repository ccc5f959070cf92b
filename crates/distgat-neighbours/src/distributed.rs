//! The pieces of a distributed kNN / radius build (euclidean metric), exact by the same
//! rule as [`knn_graph`](crate::knn_graph) and [`radius_graph`](crate::radius_graph):
//!
//! 1. [`rcb`] splits the points into balanced parts by recursive coordinate bisection;
//!    [`BBox`] is a part's bounding box.
//! 2. A part searches its own points with [`build_local`] (centres = its points): for
//!    knn, each centre's m-th distance among its own points, its *reach*, bounds the
//!    true m-th distance from above; for radius the reach is `r·r`.
//! 3. For each peer, [`reach_request`] names the box and reach of the centres that can
//!    reach the peer's box, and the peer answers with [`within_reach`]: its points whose
//!    [`BBox::distance`] to that box is at most the reach. Every point that can be a
//!    neighbour of one of the centres is among them (proof in [`BBox::distance`]).
//! 4. The part runs [`build_local`] again for the centres that reached some peer, over
//!    its own points plus the points received, with their global ids: ties go to the
//!    lower global id, so each centre gets exactly the single-process edges.
//!
//! The cosine metric runs the same steps with the boxes, the split and the reach tests
//! over each point's direction ([`directions`]) instead of the point, and each reach
//! widened into that space by [`box_reach`]; the distances the rule ranks are still the
//! exact cosine distances of the original coordinates.

use crate::error::{NeighbourError, Result};
use crate::metric::Metric;
use crate::search::Query;
use crate::{check_rule, keep_others, NeighbourRule, Neighbours, Options, Points};

/// The axis-aligned bounding box of a non-empty set of points: `lo[t]` / `hi[t]` are the
/// smallest / largest float32 coordinate on axis `t` (length `D` each).
#[derive(Debug, Clone, PartialEq)]
pub struct BBox {
    pub lo: Vec<f32>,
    pub hi: Vec<f32>,
}

impl BBox {
    /// The box of the rows `rows` of `points`; `None` when `rows` is empty.
    pub fn of(points: &Points, rows: impl IntoIterator<Item = usize>) -> Option<BBox> {
        let mut rows = rows.into_iter();
        let first = points.row(rows.next()?);
        let mut b = BBox {
            lo: first.to_vec(),
            hi: first.to_vec(),
        };
        for r in rows {
            b.add(points.row(r));
        }
        Some(b)
    }

    /// Grows the box to hold `p` (`D` coordinates).
    pub fn add(&mut self, p: &[f32]) {
        for ((lo, hi), &v) in self.lo.iter_mut().zip(&mut self.hi).zip(p) {
            *lo = lo.min(v);
            *hi = hi.max(v);
        }
    }

    /// Squared euclidean distance from `p` (`D` float32 coordinates) to the box, in
    /// float64, summed over the axes left to right: `Σ_t g_t²` with
    /// `g_t = max(lo_t − p_t, p_t − hi_t, 0)`.
    ///
    /// It is never above the exact distance [`Metric::Euclidean`] computes from `p` to any
    /// point `q` inside the box, *as computed in floating point*: per axis the exact gap is
    /// at most `|p_t − q_t|`, rounding is monotone, so the rounded gap, its square and each
    /// partial sum (the same order, non-negative terms) are at most the rounded values of
    /// the exact distance's. Hence `distance(p) <= d(p, q)` for every `q` in the box, and
    /// by symmetry of the formula the same holds with the roles of point and box swapped.
    pub fn distance(&self, p: &[f32]) -> f64 {
        let mut s = 0.0f64;
        for ((&lo, &hi), &v) in self.lo.iter().zip(&self.hi).zip(p) {
            let v = v as f64;
            let g = if v < lo as f64 {
                lo as f64 - v
            } else if v > hi as f64 {
                v - hi as f64
            } else {
                0.0
            };
            s += g * g;
        }
        s
    }

    /// Squared euclidean distance between two boxes (0 when they overlap), a lower bound
    /// of the distance between any point of one and any point of the other, with the same
    /// rounding argument as [`BBox::distance`].
    pub fn distance_to_box(&self, other: &BBox) -> f64 {
        let mut s = 0.0f64;
        for t in 0..self.lo.len() {
            let g = if (self.hi[t] as f64) < other.lo[t] as f64 {
                other.lo[t] as f64 - self.hi[t] as f64
            } else if (other.hi[t] as f64) < self.lo[t] as f64 {
                self.lo[t] as f64 - other.hi[t] as f64
            } else {
                0.0
            };
            s += g * g;
        }
        s
    }
}

/// The coordinates the boxes, the split and the reach tests of a distributed build use:
/// for the cosine metric each point's direction `u = p / |p|`, the norm and the quotient
/// in float64 and `u` rounded to float32 (so `|ũ − û| <= 2^-23` for the exact unit vector
/// `û`); `None` for the euclidean metric, which uses the points themselves.
///
/// Errors: [`NeighbourError::ZeroNorm`] naming the first point at the origin (cosine).
pub fn directions(points: &Points, metric: Metric) -> Result<Option<Points>> {
    if metric == Metric::Euclidean {
        return Ok(None);
    }
    let (n, dim) = (points.len(), points.dim());
    let mut values = Vec::with_capacity(n * dim);
    for r in 0..n {
        let p = points.row(r);
        let norm = crate::metric::squared_norm(p).sqrt();
        if norm == 0.0 {
            return Err(NeighbourError::ZeroNorm {
                origin: points.origin().to_string(),
                row: r,
            });
        }
        values.extend(p.iter().map(|&v| (v as f64 / norm) as f32));
    }
    Points::new(
        n,
        dim,
        values,
        &format!("directions of {}", points.origin()),
    )
    .map(Some)
}

/// A reach (the largest distance at which a point can still be a neighbour, in the
/// metric's units) as a squared euclidean distance in the space of [`directions`]: the
/// identity for euclidean; for cosine `(sqrt(2·(reach + δ)) + 2^-22)² · (1 + 2^-20)`.
///
/// Why it is safe for cosine: the computed distance `d̃ = 1 − dot / (|p|·|q|)` is within
/// `δ = (2D + 16)·2^-52` of the exact `d = |û − v̂|² / 2` (the float32 products are exact
/// in float64; the sum of D terms errs by at most `(D − 1)·2^-53·|p|·|q|` by
/// Cauchy-Schwarz, the norms, their product, the quotient and the subtraction by a few
/// ulps more). So `d̃ <= reach` gives `|û − v̂| <= sqrt(2·(reach + δ))`, the rounded
/// directions move each point by at most `2^-23`, and the box distance, never above the
/// computed distance between the rounded directions ([`BBox::distance`]), which is within
/// a relative `(D + 2)·2^-53` of the exact one, stays below the returned value.
/// `-inf` (nothing can be a neighbour) stays `-inf`.
pub fn box_reach(reach: f64, metric: Metric, dim: usize) -> f64 {
    match metric {
        Metric::Euclidean => reach,
        Metric::Cosine if reach == f64::NEG_INFINITY => reach,
        Metric::Cosine => {
            let delta = (2.0 * dim as f64 + 16.0) * f64::EPSILON;
            let spread = (2.0 * (reach + delta).max(0.0)).sqrt() + 2f64.powi(-22);
            spread * spread * (1.0 + 2f64.powi(-20))
        }
    }
}

/// Splits the `N` points into `parts` balanced parts by recursive coordinate bisection:
/// a set of `n` points bound for `q` parts is split on the axis where its bounding box is
/// widest (the lowest axis on a tie) at the `⌊n·⌊q/2⌋/q⌋`-th smallest `(coordinate, id)`,
/// the lower side for the first `⌊q/2⌋` parts. Deterministic; part sizes differ by at
/// most one (`⌊N/parts⌋` or `⌈N/parts⌉`).
///
/// Returns, per part, its point ids ascending (`parts` lists, every id in exactly one).
/// `parts = 0` gives no lists (and is the caller's error to report).
pub fn rcb(points: &Points, parts: usize) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); parts];
    if parts == 0 {
        return out;
    }
    let all: Vec<u32> = (0..points.len() as u32).collect();
    split(points, all, 0, parts, &mut out);
    for p in &mut out {
        p.sort_unstable();
    }
    out
}

fn split(points: &Points, mut ids: Vec<u32>, first: usize, q: usize, out: &mut [Vec<u32>]) {
    if q == 1 || ids.is_empty() {
        out[first] = ids;
        return;
    }
    let ql = q / 2;
    let nl = ids.len() * ql / q;
    let b = BBox::of(points, ids.iter().map(|&i| i as usize)).expect("non-empty");
    let axis = (0..points.dim())
        .map(|t| (t, b.hi[t] as f64 - b.lo[t] as f64))
        .fold((0, f64::NEG_INFINITY), |best, cur| {
            if cur.1 > best.1 {
                cur
            } else {
                best
            }
        })
        .0;
    let key = |i: &u32| (points.row(*i as usize)[axis], *i);
    if nl > 0 {
        ids.select_nth_unstable_by(nl, |a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.total_cmp(&kb.0).then(ka.1.cmp(&kb.1))
        });
    }
    let right = ids.split_off(nl);
    split(points, ids, first, ql, out);
    split(points, right, first + ql, q - ql, out);
}

/// What a part asks a peer for: the box of its centres that can reach the peer's box, and
/// the largest reach among them (squared euclidean distance).
#[derive(Debug, Clone, PartialEq)]
pub struct ReachRequest {
    pub centres: BBox,
    pub reach: f64,
}

/// The request for a peer whose points lie in `peer`: over the centres `i` (rows
/// `0..reach.len()` of `points`) with `peer.distance(row i) <= reach[i]`, their box and
/// largest reach; `None` when no centre can reach the peer. `reach`: per centre, as
/// [`build_local`] returns it.
pub fn reach_request(points: &Points, reach: &[f64], peer: &BBox) -> Option<ReachRequest> {
    let mut request: Option<ReachRequest> = None;
    for (i, &r) in reach.iter().enumerate() {
        let p = points.row(i);
        if peer.distance(p) <= r {
            match &mut request {
                None => {
                    request = Some(ReachRequest {
                        centres: BBox {
                            lo: p.to_vec(),
                            hi: p.to_vec(),
                        },
                        reach: r,
                    })
                }
                Some(q) => {
                    q.centres.add(p);
                    q.reach = q.reach.max(r);
                }
            }
        }
    }
    request
}

/// The rows of `points` a peer asked for with `request`: every row whose distance to
/// `request.centres` is at most `request.reach`, ascending. Every point within exact
/// distance `reach[i]` of a requesting centre `i` is among them (see [`BBox::distance`]).
pub fn within_reach(points: &Points, request: &ReachRequest) -> Vec<usize> {
    (0..points.len())
        .filter(|&r| request.centres.distance(points.row(r)) <= request.reach)
        .collect()
}

/// The neighbourhoods built from a subset of the points (see [`build_local`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LocalNeighbours {
    /// The edges of the centres, in centre order; sources are global ids, ascending.
    pub neighbours: Neighbours,
    /// Per centre, the largest distance (the metric's: squared euclidean, or cosine) at
    /// which a point outside the subset could still be one of its neighbours: knn, its
    /// m-th smallest distance within the subset (`+inf` when the subset holds fewer than m
    /// other points, `-inf` when m = 0, i.e. `k = 1` with self loops); radius, `r·r`
    /// (euclidean) or `r` (cosine). [`box_reach`] turns it into a box-space reach.
    pub reach: Vec<f64>,
}

/// The kNN or radius neighbourhoods (either metric) of the
/// centres `0..centres` of `points`, with every row of `points` as a candidate; row `r` is
/// the point with global id `ids[r]` (`ids`: `[points.len()]`, distinct). `total` is the
/// global point count the rule is checked against (the same errors as
/// [`knn_graph`](crate::knn_graph) / [`radius_graph`](crate::radius_graph)).
///
/// When `points` holds every point that is within a centre's true m-th distance (knn) or
/// within `r` (radius), that centre's edges are exactly the single-process ones: the rule
/// is applied to the same exact float64 distances and ties go to the lower global id.
///
/// Errors: the rule's parameter errors; [`NeighbourError::Shape`] when `ids` or `centres`
/// do not fit `points`; hops ([`NeighbourError::Unsupported`]); a point at the origin
/// with the cosine metric ([`NeighbourError::ZeroNorm`]).
pub fn build_local(
    points: &Points,
    ids: &[u32],
    centres: usize,
    total: usize,
    rule: &NeighbourRule,
    options: &Options,
) -> Result<LocalNeighbours> {
    check_rule(rule, total, options)?;
    if ids.len() != points.len() || centres > points.len() {
        return Err(NeighbourError::Shape {
            origin: points.origin().to_string(),
            shape: vec![points.len() as u64, ids.len() as u64, centres as u64],
        });
    }
    let n = points.len();
    let (query, keep) = match *rule {
        NeighbourRule::Knn { k } => {
            let m = k - usize::from(options.self_loops);
            // Fewer than m other points here: every one of them is a neighbour (the
            // search then returns them all).
            let query = match m {
                0 => None,
                m if n.saturating_sub(1) < m => Some(Query::Radius { limit: f64::MAX }),
                m => Some(Query::Knn { m }),
            };
            (query, m)
        }
        NeighbourRule::Radius { r, max_neighbours } => {
            let keep = keep_others(max_neighbours, options.self_loops);
            // As radius_graph: d < r·r (squared euclidean) or d < r (cosine).
            let limit = match options.metric {
                Metric::Euclidean => r * r,
                Metric::Cosine => r,
            };
            ((keep > 0).then_some(Query::Radius { limit }), keep)
        }
        NeighbourRule::Hops { .. } => {
            return Err(NeighbourError::Unsupported {
                what: "the hops rule in a distributed build".into(),
            })
        }
    };
    let (neighbours, mut reach) =
        crate::search_and_apply(points, options, query, keep, Some(ids), centres)?;
    if let NeighbourRule::Radius { r, .. } = *rule {
        let limit = match (keep, options.metric) {
            (0, _) => f64::NEG_INFINITY,
            (_, Metric::Euclidean) => r * r,
            (_, Metric::Cosine) => r,
        };
        reach.iter_mut().for_each(|x| *x = limit);
    }
    Ok(LocalNeighbours { neighbours, reach })
}

/// The exact squared euclidean distance between two points (`D` float32 coordinates
/// each), as every rule computes it (float64, left to right).
pub fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    crate::metric::euclidean(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_points(n: usize, dim: usize, seed: u64, grid: bool) -> Points {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let values: Vec<f32> = (0..n * dim)
            .map(|_| {
                if grid {
                    rng.random_range(0..6) as f32
                } else {
                    rng.random::<f32>()
                }
            })
            .collect();
        Points::new(n, dim, values, "points").unwrap()
    }

    #[test]
    fn rcb_is_balanced_deterministic_and_a_partition() {
        for (n, dim, parts, grid) in [
            (1000, 3, 3, false),
            (997, 2, 4, true),
            (10, 1, 3, true),
            (50, 5, 7, false),
            (5, 2, 5, true),
        ] {
            let p = random_points(n, dim, n as u64, grid);
            let a = rcb(&p, parts);
            assert_eq!(a, rcb(&p, parts), "deterministic");
            assert_eq!(a.len(), parts);
            let sizes: Vec<usize> = a.iter().map(Vec::len).collect();
            let (lo, hi) = (n / parts, n.div_ceil(parts));
            assert!(
                sizes.iter().all(|&s| s == lo || s == hi),
                "{sizes:?} for n={n} parts={parts}"
            );
            let mut all: Vec<u32> = a.concat();
            all.sort_unstable();
            assert_eq!(all, (0..n as u32).collect::<Vec<_>>(), "each point once");
            assert!(a.iter().all(|p| p.windows(2).all(|w| w[0] < w[1])));
        }
    }

    #[test]
    fn rcb_splits_space() {
        // Points along one axis: the parts are contiguous intervals.
        let values: Vec<f32> = (0..12).map(|i| ((i * 7) % 12) as f32).collect();
        let p = Points::new(12, 1, values.clone(), "p").unwrap();
        let parts = rcb(&p, 3);
        let mut coords: Vec<Vec<f32>> = parts
            .iter()
            .map(|ids| ids.iter().map(|&i| values[i as usize]).collect())
            .collect();
        for c in &mut coords {
            c.sort_by(f32::total_cmp);
        }
        assert_eq!(coords[0], vec![0., 1., 2., 3.]);
        assert_eq!(coords[1], vec![4., 5., 6., 7.]);
        assert_eq!(coords[2], vec![8., 9., 10., 11.]);
    }

    /// `within_reach` keeps every point within reach of some requesting centre (brute
    /// force over all pairs). On the grid the peer's points lie beside the centres', so
    /// needed points sit exactly at the reach and at the box distance (`<` would fail).
    #[test]
    fn within_reach_covers_brute_force() {
        for (seed, grid) in [(1u64, true), (2, false), (3, true)] {
            let a = random_points(60, 3, seed, grid);
            let mut b = random_points(80, 3, seed + 100, grid);
            if grid {
                let shifted: Vec<f32> = b
                    .values()
                    .chunks(3)
                    .flat_map(|p| [p[0] + 6.0, p[1], p[2]])
                    .collect();
                b = Points::new(80, 3, shifted, "b").unwrap();
            }
            let peer = BBox::of(&b, 0..b.len()).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // Grid: every reach is the smallest distance between the sets, so the nearest
            // peer points are needed at exactly the reach and at exactly the box distance.
            let closest = (0..a.len())
                .flat_map(|i| (0..b.len()).map(move |q| (i, q)))
                .map(|(i, q)| squared_distance(a.row(i), b.row(q)))
                .fold(f64::INFINITY, f64::min);
            let reach: Vec<f64> = (0..a.len())
                .map(|_| {
                    if grid {
                        closest
                    } else {
                        rng.random_range(0.0..0.05)
                    }
                })
                .collect();
            let Some(request) = reach_request(&a, &reach, &peer) else {
                panic!("seed {seed}: no centre reaches the peer");
            };
            let got = within_reach(&b, &request);
            let mut at_the_edge = 0;
            for q in 0..b.len() {
                let needed = (0..a.len()).any(|i| squared_distance(a.row(i), b.row(q)) <= reach[i]);
                if needed {
                    assert!(got.contains(&q), "seed {seed}: point {q} missing");
                }
                if request.centres.distance(b.row(q)) == request.reach {
                    at_the_edge += 1;
                }
            }
            if grid {
                assert!(
                    at_the_edge > 0,
                    "seed {seed}: the test has no boundary case"
                );
            }
            // And the box distance is a lower bound of every exact distance.
            for i in 0..a.len() {
                for q in 0..b.len() {
                    assert!(peer.distance(a.row(i)) <= squared_distance(a.row(i), b.row(q)));
                }
            }
        }
    }

    /// The whole distributed procedure, in one process, equals knn_graph / radius_graph.
    #[test]
    fn parts_reproduce_the_single_process_graph() {
        let cases: Vec<(Points, NeighbourRule, bool)> = vec![
            (
                random_points(200, 2, 7, true),
                NeighbourRule::Knn { k: 5 },
                false,
            ),
            (
                random_points(200, 3, 8, false),
                NeighbourRule::Knn { k: 7 },
                true,
            ),
            (
                random_points(30, 2, 9, true),
                NeighbourRule::Knn { k: 12 },
                false,
            ),
            (
                random_points(300, 2, 10, true),
                NeighbourRule::Radius {
                    r: 2.0,
                    max_neighbours: Some(6),
                },
                false,
            ),
            (
                random_points(300, 3, 11, false),
                NeighbourRule::Radius {
                    r: 0.2,
                    max_neighbours: None,
                },
                true,
            ),
            // Parts of at least MORTON_MIN_POINTS points: build_local's Morton path, with
            // the fetched points after the centres (grid points: exact ties).
            (
                random_points(12_000, 3, 12, true),
                NeighbourRule::Knn { k: 8 },
                false,
            ),
        ];
        for (case, (points, rule, self_loops)) in cases.into_iter().enumerate() {
            let options = Options {
                self_loops,
                ..Options::default()
            };
            let want = crate::build(&rule, Some(&points), None, &options).unwrap();
            for parts in 1..=4 {
                let got = simulate(&points, &rule, &options, parts);
                assert_eq!(got, want, "case {case}, {parts} parts");
            }
        }
    }

    /// Cosine: the same procedure over directions, on points with exact ties (integer
    /// grid points, many on the same ray: parallel duplicates at distance ~0) and in 64-D.
    #[test]
    fn cosine_parts_reproduce_the_single_process_graph() {
        let shifted = |mut p: Points| {
            // Off the origin (a zero vector has no direction).
            let (n, d) = (p.len(), p.dim());
            let values: Vec<f32> = (0..n)
                .flat_map(|r| p.row(r).iter().map(|&v| v + 1.0).collect::<Vec<_>>())
                .collect();
            p = Points::new(n, d, values, "shifted").unwrap();
            p
        };
        let cases: Vec<(Points, NeighbourRule, bool)> = vec![
            (
                shifted(random_points(200, 2, 21, true)),
                NeighbourRule::Knn { k: 6 },
                false,
            ),
            (
                shifted(random_points(200, 3, 22, false)),
                NeighbourRule::Knn { k: 5 },
                true,
            ),
            (
                shifted(random_points(120, 64, 23, false)),
                NeighbourRule::Knn { k: 4 },
                false,
            ),
            (
                shifted(random_points(250, 3, 24, true)),
                NeighbourRule::Radius {
                    r: 0.01,
                    max_neighbours: Some(5),
                },
                false,
            ),
            (
                shifted(random_points(250, 2, 25, false)),
                NeighbourRule::Radius {
                    r: 0.002,
                    max_neighbours: None,
                },
                true,
            ),
        ];
        for (case, (points, rule, self_loops)) in cases.into_iter().enumerate() {
            let options = Options {
                self_loops,
                metric: Metric::Cosine,
                ..Options::default()
            };
            let want = crate::build(&rule, Some(&points), None, &options).unwrap();
            assert!(want.num_edges() > 0, "case {case}");
            for parts in 1..=4 {
                let got = simulate(&points, &rule, &options, parts);
                assert_eq!(got, want, "cosine case {case}, {parts} parts");
            }
        }
    }

    /// A cosine reach in box space covers every point the exact rule can keep: for random
    /// pairs, the box distance between their directions is within the widened reach of
    /// their computed cosine distance.
    #[test]
    fn cosine_box_reach_bounds_the_direction_distance() {
        for (seed, dim) in [(31u64, 2usize), (32, 3), (33, 64)] {
            let p = random_points(300, dim, seed, seed == 31);
            let values: Vec<f32> = (0..p.len())
                .flat_map(|r| p.row(r).iter().map(|&v| v - 0.25).collect::<Vec<_>>())
                .collect();
            let p = Points::new(p.len(), dim, values, "centred").unwrap();
            let Ok(Some(dirs)) = directions(&p, Metric::Cosine) else {
                continue; // a point at the origin: not this test's subject
            };
            let exact = crate::metric::Exact::new(&p, Metric::Cosine).unwrap();
            for i in 0..p.len() {
                for j in 0..p.len() {
                    let d = exact.d(i, j);
                    let b = BBox::of(&dirs, [j]).unwrap();
                    assert!(
                        b.distance(dirs.row(i)) <= box_reach(d, Metric::Cosine, dim),
                        "seed {seed}: pair ({i}, {j})"
                    );
                }
            }
        }
    }

    fn subset(points: &Points, rows: &[u32]) -> Points {
        let values = rows
            .iter()
            .flat_map(|&r| points.row(r as usize).iter().copied())
            .collect();
        Points::new(rows.len(), points.dim(), values, "subset").unwrap()
    }

    fn simulate(
        points: &Points,
        rule: &NeighbourRule,
        options: &Options,
        parts: usize,
    ) -> Neighbours {
        let n = points.len();
        // Boxes, split and reach tests in the metric's box space (as the runtime does).
        let dirs = directions(points, options.metric).unwrap();
        let space = dirs.as_ref().unwrap_or(points);
        let split = rcb(space, parts);
        let boxes: Vec<BBox> = split
            .iter()
            .map(|ids| BBox::of(space, ids.iter().map(|&i| i as usize)).unwrap())
            .collect();
        let mut per_node: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (p, own) in split.iter().enumerate() {
            let own_points = subset(points, own);
            let own_space = subset(space, own);
            let first = build_local(&own_points, own, own.len(), n, rule, options).unwrap();
            let reach: Vec<f64> = first
                .reach
                .iter()
                .map(|&r| box_reach(r, options.metric, points.dim()))
                .collect();
            let mut fetched: Vec<u32> = Vec::new();
            for (q, other) in split.iter().enumerate() {
                if q == p {
                    continue;
                }
                if let Some(req) = reach_request(&own_space, &reach, &boxes[q]) {
                    let other_space = subset(space, other);
                    fetched.extend(within_reach(&other_space, &req).iter().map(|&r| other[r]));
                }
            }
            fetched.sort_unstable();
            let mut ids = own.clone();
            ids.extend(&fetched);
            let all = subset(points, &ids);
            let second = build_local(&all, &ids, own.len(), n, rule, options).unwrap();
            for (r, &i) in own.iter().enumerate() {
                per_node[i as usize] = second.neighbours.of(r).to_vec();
                // The first pass is already right for a centre that reaches no peer.
                let reaches = boxes
                    .iter()
                    .enumerate()
                    .any(|(q, b)| q != p && b.distance(own_space.row(r)) <= reach[r]);
                if !reaches {
                    assert_eq!(first.neighbours.of(r), &per_node[i as usize][..]);
                }
            }
        }
        let mut offsets = vec![0u64];
        let mut sources = Vec::new();
        for s in per_node {
            sources.extend(&s);
            offsets.push(sources.len() as u64);
        }
        Neighbours { offsets, sources }
    }
}
