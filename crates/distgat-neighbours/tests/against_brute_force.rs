//! The library against the O(N²) float64 reference written in `common`, on random points
//! in 1, 2, 3 and 64 dimensions, with duplicate points and integer grids (many exact ties
//! at the boundary), both metrics, with and without self loops and a cap, every search
//! method and both executions. Also: the k-hop rule against breadth-first search, and the
//! same bits for any thread count.

mod common;

use common::{edges_of, ref_hops, ref_knn, ref_radius};
use distgat_graph::EdgeList;
use distgat_neighbours::{
    hop_graph, knn_graph, radius_graph, Execution, Metric, Options, Points, Search,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A named point set: row-major values and the dimension.
struct Set {
    name: String,
    dim: usize,
    values: Vec<f32>,
}

fn uniform(rng: &mut StdRng, n: usize, dim: usize) -> Vec<f32> {
    (0..n * dim).map(|_| rng.random::<f32>()).collect()
}

/// Uniform points, then many rows copied over others: clusters of exact duplicates, one
/// of them larger than any k used here.
fn with_duplicates(rng: &mut StdRng, n: usize, dim: usize) -> Vec<f32> {
    let mut v = uniform(rng, n, dim);
    for _ in 0..n / 3 {
        let (from, to) = (rng.random_range(0..n), rng.random_range(0..n));
        let row: Vec<f32> = v[from * dim..(from + 1) * dim].to_vec();
        v[to * dim..(to + 1) * dim].copy_from_slice(&row);
    }
    for to in (0..n).step_by(7).take(20) {
        let row: Vec<f32> = v[..dim].to_vec();
        v[to * dim..(to + 1) * dim].copy_from_slice(&row);
    }
    v
}

/// Integer coordinates in `1..=side` (never the zero vector, so cosine works too).
fn grid(rng: &mut StdRng, n: usize, dim: usize, side: u32) -> Vec<f32> {
    (0..n * dim)
        .map(|_| rng.random_range(1..=side) as f32)
        .collect()
}

fn sets() -> Vec<Set> {
    let mut rng = StdRng::seed_from_u64(20261130);
    let mut out = Vec::new();
    for dim in [1usize, 2, 3, 64] {
        let n = if dim == 64 { 220 } else { 260 };
        out.push(Set {
            name: format!("uniform-{dim}d"),
            dim,
            values: uniform(&mut rng, n, dim),
        });
        out.push(Set {
            name: format!("duplicates-{dim}d"),
            dim,
            values: with_duplicates(&mut rng, n, dim),
        });
        let side = match dim {
            1 => 40,
            2 => 8,
            3 => 5,
            _ => 2,
        };
        out.push(Set {
            name: format!("grid-{dim}d"),
            dim,
            values: grid(&mut rng, n, dim, side),
        });
    }
    out
}

fn option_grid(self_loops: bool) -> Vec<Options> {
    let mut out = Vec::new();
    for metric in [Metric::Euclidean, Metric::Cosine] {
        for search in [Search::Auto, Search::Tree, Search::Brute] {
            out.push(Options {
                metric,
                self_loops,
                search,
                execution: if search == Search::Tree {
                    Execution::Sequential
                } else {
                    Execution::Parallel
                },
            });
        }
    }
    out
}

#[test]
fn knn_equals_the_brute_force_rule() {
    let mut checked = 0;
    for set in sets() {
        let n = set.values.len() / set.dim;
        let points = Points::new(n, set.dim, set.values.clone(), &set.name).unwrap();
        for self_loops in [false, true] {
            for options in option_grid(self_loops) {
                for k in [1usize, 2, 7, 16] {
                    if !self_loops && k >= n {
                        continue;
                    }
                    let want = ref_knn(&set.values, set.dim, options.metric, k, self_loops);
                    let got = knn_graph(&points, k, &options).unwrap();
                    assert_eq!(got.num_edges(), n * k, "{} k={k} {options:?}", set.name);
                    assert_eq!(edges_of(&got), want, "{} k={k} {options:?}", set.name);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 500, "{checked}");
}

/// Radii for a set: for integer grids, integers (many pairs exactly at the radius, which
/// the strict rule excludes); otherwise the distance of some pair itself.
fn radii(set: &Set, metric: Metric) -> Vec<f64> {
    let grid = set.name.starts_with("grid");
    match (metric, grid) {
        (Metric::Euclidean, true) => vec![1.0, 2.0, 3.0],
        (Metric::Cosine, _) => vec![0.01, 0.05, 0.2],
        (Metric::Euclidean, false) => {
            let p = |k: usize| &set.values[k * set.dim..(k + 1) * set.dim];
            let mut d: Vec<f64> = (1..40)
                .map(|j| common::dist(Metric::Euclidean, p(0), p(j)))
                .filter(|&d| d > 0.0)
                .collect();
            d.sort_by(|a, b| a.partial_cmp(b).unwrap());
            // sqrt of a pair's d2 need not square back exactly; both near-boundary cases
            // are interesting.
            vec![d[2].sqrt(), d[8].sqrt(), d[20].sqrt()]
        }
    }
}

#[test]
fn radius_equals_the_brute_force_rule() {
    let mut checked = 0;
    let mut capped = 0;
    for set in sets() {
        let n = set.values.len() / set.dim;
        let points = Points::new(n, set.dim, set.values.clone(), &set.name).unwrap();
        for self_loops in [false, true] {
            for options in option_grid(self_loops) {
                for r in radii(&set, options.metric) {
                    for cap in [None, Some(1), Some(3), Some(9)] {
                        let want =
                            ref_radius(&set.values, set.dim, options.metric, r, cap, self_loops);
                        let uncapped =
                            ref_radius(&set.values, set.dim, options.metric, r, None, self_loops);
                        if want.len() < uncapped.len() {
                            capped += 1;
                        }
                        let got = radius_graph(&points, r, cap, &options).unwrap();
                        assert_eq!(
                            edges_of(&got),
                            want,
                            "{} r={r} cap={cap:?} {options:?}",
                            set.name
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "{checked}");
    assert!(capped > 100, "the cap should bind often: {capped}");
}

#[test]
fn the_search_structures_keep_every_tie_on_a_dense_grid() {
    // Every point of a 12x12 grid, shuffled: each centre has 4 neighbours at d2 = 1,
    // 4 at 2, ... so the k-th distance is shared by several points for most k.
    let mut rng = StdRng::seed_from_u64(7);
    let mut cells: Vec<(u32, u32)> = (0..12).flat_map(|x| (0..12).map(move |y| (x, y))).collect();
    for i in (1..cells.len()).rev() {
        cells.swap(i, rng.random_range(0..=i));
    }
    let values: Vec<f32> = cells
        .iter()
        .flat_map(|&(x, y)| [x as f32 * 0.1, y as f32 * 0.1])
        .collect();
    let points = Points::new(cells.len(), 2, values.clone(), "grid").unwrap();
    for search in [Search::Tree, Search::Brute] {
        for k in 1..=20 {
            let options = Options {
                search,
                ..Options::default()
            };
            let want = ref_knn(&values, 2, Metric::Euclidean, k, false);
            assert_eq!(
                edges_of(&knn_graph(&points, k, &options).unwrap()),
                want,
                "k={k} {search:?}"
            );
        }
    }
}

fn random_graph(rng: &mut StdRng, n: usize, e: usize) -> EdgeList {
    let mut src = Vec::new();
    let mut dst = Vec::new();
    for _ in 0..e {
        src.push(rng.random_range(0..n as u64));
        dst.push(rng.random_range(0..n as u64));
    }
    // A self loop and a duplicate edge, which the pattern must absorb.
    src.extend([3, 5, 5]);
    dst.extend([3, 6, 6]);
    EdgeList::from_pairs(&src, &dst)
}

#[test]
fn hops_equal_breadth_first_search() {
    let mut rng = StdRng::seed_from_u64(11);
    for (n, e) in [(1usize, 0usize), (60, 40), (200, 500), (150, 900)] {
        let g = if n == 1 {
            EdgeList::from_pairs(&[0], &[0])
        } else {
            random_graph(&mut rng, n, e)
        };
        // Nodes beyond the graph's ids are isolated centres.
        for extra in [0usize, 3] {
            let n_all = g.num_nodes as usize + extra;
            for hops in [1usize, 2, 3, 6] {
                for cap in [None, Some(1), Some(4), Some(12)] {
                    for self_loops in [false, true] {
                        for execution in [Execution::Sequential, Execution::Parallel] {
                            let options = Options {
                                self_loops,
                                execution,
                                ..Options::default()
                            };
                            let want = ref_hops(n_all, g.src(), g.dst(), hops, cap, self_loops);
                            let got = hop_graph(&g, Some(n_all), hops, cap, &options).unwrap();
                            assert_eq!(
                                edges_of(&got),
                                want,
                                "n={n} e={e} hops={hops} cap={cap:?} loop={self_loops}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn same_bits_for_any_thread_count() {
    let mut rng = StdRng::seed_from_u64(3);
    for (n, dim) in [(6000usize, 3usize), (1500, 64)] {
        let values = with_duplicates(&mut rng, n, dim);
        let points = Points::new(n, dim, values, "points").unwrap();
        let sequential = Options {
            execution: Execution::Sequential,
            ..Options::default()
        };
        let knn = knn_graph(&points, 10, &sequential).unwrap();
        let radius = radius_graph(&points, 0.15, Some(20), &sequential).unwrap();
        for threads in [1usize, 2, 3, 5] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let p = Options::default();
                assert_eq!(
                    knn_graph(&points, 10, &p).unwrap(),
                    knn,
                    "{threads} threads"
                );
                assert_eq!(
                    radius_graph(&points, 0.15, Some(20), &p).unwrap(),
                    radius,
                    "{threads} threads"
                );
            });
        }
    }
}

#[test]
fn tiny_and_degenerate_point_sets() {
    let searches = [Search::Tree, Search::Brute];
    // One point: no neighbours, or only itself with a loop.
    let one = Points::new(1, 3, vec![0.5, 0.5, 0.5], "one").unwrap();
    for search in searches {
        let plain = Options {
            search,
            ..Options::default()
        };
        let looped = Options {
            self_loops: true,
            ..plain
        };
        assert_eq!(
            radius_graph(&one, 1.0, None, &plain).unwrap().num_edges(),
            0
        );
        assert_eq!(
            edges_of(&radius_graph(&one, 1.0, None, &looped).unwrap()),
            vec![(0, 0)]
        );
        assert_eq!(
            edges_of(&knn_graph(&one, 1, &looped).unwrap()),
            vec![(0, 0)]
        );
    }
    // No points at all: an empty graph for radius.
    let none = Points::new(0, 2, Vec::new(), "none").unwrap();
    assert_eq!(
        radius_graph(&none, 1.0, None, &Options::default())
            .unwrap()
            .num_nodes(),
        0
    );
    // 300 copies of one point: every pair is a tie at distance 0, so the lowest indices
    // win, and a cap keeps the lowest indices too.
    let same = vec![0.25f32; 300 * 3];
    let points = Points::new(300, 3, same.clone(), "same").unwrap();
    for search in searches {
        for metric in [Metric::Euclidean, Metric::Cosine] {
            for self_loops in [false, true] {
                let options = Options {
                    search,
                    metric,
                    self_loops,
                    ..Options::default()
                };
                assert_eq!(
                    edges_of(&knn_graph(&points, 5, &options).unwrap()),
                    ref_knn(&same, 3, metric, 5, self_loops),
                    "{options:?}"
                );
                assert_eq!(
                    edges_of(&radius_graph(&points, 0.5, Some(4), &options).unwrap()),
                    ref_radius(&same, 3, metric, 0.5, Some(4), self_loops),
                    "{options:?}"
                );
            }
        }
    }
}

/// Sets large enough for the paths small sets never take: the tree's Morton-ordered
/// search (at least 4096 points) and the brute force's column tiles (more than 1024
/// points, the last tile partial), with duplicate points and integer grids (exact ties).
fn large_sets() -> Vec<Set> {
    let mut rng = StdRng::seed_from_u64(20261201);
    let mut out = Vec::new();
    for dim in [1usize, 2, 3] {
        out.push(Set {
            name: format!("large-duplicates-{dim}d"),
            dim,
            values: with_duplicates(&mut rng, 4500, dim),
        });
    }
    for (dim, side) in [(2usize, 30u32), (3, 10)] {
        out.push(Set {
            name: format!("large-grid-{dim}d"),
            dim,
            values: grid(&mut rng, 4500, dim, side),
        });
    }
    out.push(Set {
        name: "large-duplicates-64d".into(),
        dim: 64,
        values: with_duplicates(&mut rng, 2300, 64),
    });
    out.push(Set {
        name: "large-grid-64d".into(),
        dim: 64,
        values: grid(&mut rng, 2300, 64, 2),
    });
    out
}

#[test]
fn large_sets_equal_the_brute_force_rule() {
    for set in large_sets() {
        let n = set.values.len() / set.dim;
        let points = Points::new(n, set.dim, set.values.clone(), &set.name).unwrap();
        let metrics: &[Metric] = if set.name.contains("duplicates-3d") || set.dim == 64 {
            &[Metric::Euclidean, Metric::Cosine]
        } else {
            &[Metric::Euclidean]
        };
        for &metric in metrics {
            for (k, self_loops) in [(16usize, false), (5, true)] {
                let want = ref_knn(&set.values, set.dim, metric, k, self_loops);
                for search in [Search::Auto, Search::Brute] {
                    let options = Options {
                        metric,
                        self_loops,
                        search,
                        execution: Execution::Parallel,
                    };
                    let got = knn_graph(&points, k, &options).unwrap();
                    assert_eq!(edges_of(&got), want, "{} k={k} {options:?}", set.name);
                }
            }
        }
        // A radius at the 8th-nearest nonzero distance of point 0 (grids: 2, with many
        // pairs exactly at it), capped and not.
        let options = Options::default();
        let r = match set.name.contains("grid") {
            true => 2.0,
            false => {
                // Point 0 has many exact duplicates (distance 0): skip those.
                let mut d: Vec<f64> = (1..n)
                    .map(|j| common::dist(Metric::Euclidean, points.row(0), points.row(j)))
                    .filter(|&d| d > 0.0)
                    .collect();
                d.sort_by(f64::total_cmp);
                d[8].sqrt()
            }
        };
        for cap in [None, Some(4)] {
            let want = ref_radius(&set.values, set.dim, Metric::Euclidean, r, cap, false);
            for search in [Search::Auto, Search::Brute] {
                let options = Options { search, ..options };
                let got = radius_graph(&points, r, cap, &options).unwrap();
                assert_eq!(edges_of(&got), want, "{} r={r} cap={cap:?}", set.name);
            }
        }
    }
}
