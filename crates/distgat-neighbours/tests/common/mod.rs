//! Helpers shared by the neighbourhood tests: the O(N²) float64 reference rules, written
//! here from the reference README 8.6 independently of the library's code.

#![allow(dead_code)]

use std::path::PathBuf;

use distgat_neighbours::{Metric, Neighbours};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Edges `(source, target)` sorted by (target, source).
pub type Edges = Vec<(u32, u32)>;

pub fn edges_of(nb: &Neighbours) -> Edges {
    let mut out = Vec::new();
    for i in 0..nb.num_nodes() {
        for &j in nb.of(i) {
            out.push((j, i as u32));
        }
    }
    out
}

/// The reference distance: euclidean d2 summed left to right, or 1 − cos, in float64.
pub fn dist(metric: Metric, a: &[f32], b: &[f32]) -> f64 {
    match metric {
        Metric::Euclidean => a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64) * (x as f64 - y as f64))
            .fold(0.0, |s, v| s + v),
        Metric::Cosine => {
            let dot = a
                .iter()
                .zip(b)
                .fold(0.0f64, |s, (&x, &y)| s + x as f64 * y as f64);
            let na = a
                .iter()
                .fold(0.0f64, |s, &x| s + x as f64 * x as f64)
                .sqrt();
            let nb = b
                .iter()
                .fold(0.0f64, |s, &x| s + x as f64 * x as f64)
                .sqrt();
            1.0 - dot / (na * nb)
        }
    }
}

fn sorted_candidates(
    values: &[f32],
    dim: usize,
    metric: Metric,
    i: usize,
    keep: impl Fn(f64) -> bool,
) -> Vec<(f64, usize)> {
    let n = values.len() / dim;
    let p = |k: usize| &values[k * dim..(k + 1) * dim];
    let mut c: Vec<(f64, usize)> = (0..n)
        .filter(|&j| j != i)
        .map(|j| (dist(metric, p(i), p(j)), j))
        .filter(|&(d, _)| keep(d))
        .collect();
    c.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
    c
}

fn finish(i: usize, mut chosen: Vec<usize>, self_loops: bool, out: &mut Edges) {
    if self_loops {
        chosen.push(i);
    }
    chosen.sort();
    out.extend(chosen.into_iter().map(|j| (j as u32, i as u32)));
}

pub fn ref_knn(values: &[f32], dim: usize, metric: Metric, k: usize, self_loops: bool) -> Edges {
    let n = values.len() / dim;
    let mut out = Vec::new();
    for i in 0..n {
        let c = sorted_candidates(values, dim, metric, i, |_| true);
        let take = k - usize::from(self_loops);
        finish(
            i,
            c.iter().take(take).map(|&(_, j)| j).collect(),
            self_loops,
            &mut out,
        );
    }
    out
}

pub fn ref_radius(
    values: &[f32],
    dim: usize,
    metric: Metric,
    r: f64,
    cap: Option<usize>,
    self_loops: bool,
) -> Edges {
    let n = values.len() / dim;
    let limit = match metric {
        Metric::Euclidean => r * r,
        Metric::Cosine => r,
    };
    let mut out = Vec::new();
    for i in 0..n {
        let c = sorted_candidates(values, dim, metric, i, |d| d < limit);
        let take = cap.map_or(usize::MAX, |m| m - usize::from(self_loops));
        finish(
            i,
            c.iter().take(take).map(|&(_, j)| j).collect(),
            self_loops,
            &mut out,
        );
    }
    out
}

/// Breadth-first search backwards along incoming edges from every centre.
pub fn ref_hops(
    n: usize,
    src: &[u64],
    dst: &[u64],
    hops: usize,
    cap: Option<usize>,
    self_loops: bool,
) -> Edges {
    let mut incoming = vec![Vec::new(); n];
    for (&s, &d) in src.iter().zip(dst) {
        incoming[d as usize].push(s as usize);
    }
    let mut out = Vec::new();
    for i in 0..n {
        let mut level = vec![usize::MAX; n];
        level[i] = 0;
        let mut frontier = vec![i];
        for h in 1..=hops {
            let mut next = Vec::new();
            for &v in &frontier {
                for &u in &incoming[v] {
                    if level[u] == usize::MAX {
                        level[u] = h;
                        next.push(u);
                    }
                }
            }
            frontier = next;
        }
        let mut c: Vec<(usize, usize)> = (0..n)
            .filter(|&j| j != i && level[j] != usize::MAX)
            .map(|j| (level[j], j))
            .collect();
        c.sort();
        let take = cap.map_or(usize::MAX, |m| m - usize::from(self_loops));
        finish(
            i,
            c.iter().take(take).map(|&(_, j)| j).collect(),
            self_loops,
            &mut out,
        );
    }
    out
}
