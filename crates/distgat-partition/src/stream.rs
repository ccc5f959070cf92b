//! A streaming partitioner for graphs METIS cannot hold: Fennel (Tsourakakis, Gkantsidis,
//! Radunovic and Vojnovic, "FENNEL: Streaming Graph Partitioning for Massive Scale Graphs",
//! WSDM 2014), one pass over the nodes in id order.

use crate::symmetric::SymmetricGraph;

/// Fennel's exponent gamma (the paper's recommended 1.5).
pub const FENNEL_GAMMA: f64 = 1.5;

/// Assigns every node of `graph` to one of `parts` parts in one pass over the nodes in
/// increasing id, reading each node's undirected neighbours from the CSR.
///
/// Node `v` goes to the part `p` maximising Fennel's score
/// `|N(v) ∩ P_p| - alpha * gamma * |P_p|^(gamma - 1)`, with `gamma = 1.5` and
/// `alpha = sqrt(K) * m / n^1.5` (m undirected pairs, n nodes; the paper's section 3.2),
/// among the parts below the hard cap `max(ceil(n / K), floor(imbalance * n / K))` nodes.
/// Ties go to the smaller part, then the lower part id, so the result is deterministic.
///
/// Memory besides the graph: the `[N]` u32 assignment and O(K) counters.
/// Returns `[N]` part ids in `0..parts`. `parts` must be in `1..=max(N, 1)` and
/// `imbalance` at least 1 (checked by [`crate::assign`]).
pub fn fennel(graph: &SymmetricGraph, parts: usize, imbalance: f64) -> Vec<u32> {
    let n = graph.num_nodes;
    const UNSET: u32 = u32::MAX;
    let mut assignment = vec![UNSET; n];
    if n == 0 {
        return assignment;
    }
    if parts == 1 {
        assignment.fill(0);
        return assignment;
    }
    let k = parts as f64;
    let m = graph.num_undirected_edges() as f64;
    let alpha = k.sqrt() * m / (n as f64).powf(FENNEL_GAMMA);
    let cap = (n.div_ceil(parts)).max((imbalance * n as f64 / k).floor() as usize);
    let mut size = vec![0usize; parts];
    // Neighbours of the current node per part, and which entries are non-zero.
    let mut count = vec![0u32; parts];
    let mut touched: Vec<u32> = Vec::new();
    // The part with the highest score among those without assigned neighbours is the
    // smallest one below the cap (the penalty grows with size); found in O(K).
    for v in 0..n {
        for &u in graph.neighbours(v) {
            let p = assignment[u as usize];
            if p != UNSET {
                if count[p as usize] == 0 {
                    touched.push(p);
                }
                count[p as usize] += 1;
            }
        }
        let penalty = |s: usize| alpha * FENNEL_GAMMA * (s as f64).powf(FENNEL_GAMMA - 1.0);
        // Best among the empty-neighbourhood parts: the smallest part (lowest id on ties).
        let mut best: Option<(f64, usize, u32)> = None;
        let consider = |p: u32, score: f64, best: &mut Option<(f64, usize, u32)>| {
            let s = size[p as usize];
            if s >= cap {
                return;
            }
            let better = match *best {
                None => true,
                Some((bs, bsize, bp)) => {
                    score > bs || (score == bs && (s < bsize || (s == bsize && p < bp)))
                }
            };
            if better {
                *best = Some((score, s, p));
            }
        };
        for &p in &touched {
            let score = count[p as usize] as f64 - penalty(size[p as usize]);
            consider(p, score, &mut best);
        }
        if touched.len() < parts {
            let mut smallest: Option<u32> = None;
            for p in 0..parts as u32 {
                if count[p as usize] == 0
                    && size[p as usize] < cap
                    && smallest.is_none_or(|q| size[p as usize] < size[q as usize])
                {
                    smallest = Some(p);
                }
            }
            if let Some(p) = smallest {
                consider(p, -penalty(size[p as usize]), &mut best);
            }
        }
        let (_, _, p) = best.expect("the cap leaves room: cap * parts >= n");
        assignment[v] = p;
        size[p as usize] += 1;
        for &p in &touched {
            count[p as usize] = 0;
        }
        touched.clear();
    }
    assignment
}
