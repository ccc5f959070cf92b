//! The seam between candidate generation (tree, brute force) and the exact rule.

use std::ops::Range;

use distgat_attention::Execution;
use rayon::prelude::*;

use crate::Neighbours;

/// What a centre asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Query {
    /// Candidates that include every j ≠ i whose exact distance is ≤ the m-th smallest
    /// exact distance over j ≠ i (m ≥ 1).
    Knn { m: usize },
    /// Candidates that include every j ≠ i with exact distance < `limit`.
    Radius { limit: f64 },
}

/// Proposes candidates with their exact distances. It may propose more than asked (the
/// rule is applied afterwards), never fewer, never the centre itself, never a point twice.
pub(crate) trait CandidateSearch: Sync {
    /// Fills `out[r]` for centre `centres.start + r`; `out[r]` is empty on entry.
    fn search_block(&self, centres: Range<usize>, query: Query, out: &mut [Vec<(f64, u32)>]);
}

/// Applies the rule to every centre's candidates: radius keeps `d < limit`; then the
/// `keep` smallest `(d, j)`; then the centre itself when `self_loops`; sources ascending.
///
/// Centres are processed in blocks of `block` whatever the thread count, and each
/// centre's result depends only on the exact distances, so the output is the same bits
/// for any `execution` and pool size.
pub(crate) fn apply_rule(
    search: &dyn CandidateSearch,
    n: usize,
    block: usize,
    query: Option<Query>,
    keep: usize,
    self_loops: bool,
    execution: Execution,
) -> Neighbours {
    apply_rule_ids(search, n, block, query, keep, self_loops, execution, None).0
}

/// [`apply_rule`] over the centres `0..n` of a point set whose row `r` is the point with
/// global id `ids[r]` (`None`: the identity). Ties in `(d, j)` go to the lower *global* id,
/// and the sources are global ids, ascending, so a subset that holds every candidate of a
/// centre gives that centre exactly the edges the whole set gives it.
///
/// Also returns, per centre, the largest exact distance kept before the self loop
/// (`+inf` when fewer than `keep` candidates were kept): for knn, the m-th smallest
/// distance, an upper bound of the centre's m-th distance in any superset.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_rule_ids(
    search: &dyn CandidateSearch,
    n: usize,
    block: usize,
    query: Option<Query>,
    keep: usize,
    self_loops: bool,
    execution: Execution,
    ids: Option<&[u32]>,
) -> (Neighbours, Vec<f64>) {
    let id = |r: u32| ids.map_or(r, |ids| ids[r as usize]);
    let block = block.max(1);
    let chunks = n.div_ceil(block);
    let one = |c: usize| -> (Vec<u32>, Vec<u32>, Vec<f64>) {
        let range = c * block..((c + 1) * block).min(n);
        let mut slots = vec![Vec::new(); range.len()];
        if let Some(q) = query {
            search.search_block(range.clone(), q, &mut slots);
        }
        let mut counts = Vec::with_capacity(range.len());
        let mut reach = Vec::with_capacity(range.len());
        let mut flat = Vec::new();
        for (i, mut cands) in range.zip(slots) {
            if let Some(Query::Radius { limit }) = query {
                cands.retain(|&(d, _)| d < limit);
            }
            if cands.len() > keep {
                cands.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(id(a.1).cmp(&id(b.1))));
                cands.truncate(keep);
            }
            reach.push(if cands.len() < keep {
                f64::INFINITY
            } else {
                cands.iter().map(|c| c.0).fold(f64::NEG_INFINITY, f64::max)
            });
            let start = flat.len();
            flat.extend(cands.iter().map(|&(_, j)| id(j)));
            if self_loops {
                flat.push(id(i as u32));
            }
            flat[start..].sort_unstable();
            counts.push((flat.len() - start) as u32);
        }
        (counts, flat, reach)
    };
    let parts: Vec<(Vec<u32>, Vec<u32>, Vec<f64>)> = match execution {
        Execution::Sequential => (0..chunks).map(one).collect(),
        Execution::Parallel => (0..chunks).into_par_iter().map(one).collect(),
    };
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0u64);
    let total: usize = parts.iter().map(|p| p.1.len()).sum();
    let mut sources = Vec::with_capacity(total);
    let mut reach = Vec::with_capacity(n);
    for (counts, flat, r) in parts {
        for c in counts {
            offsets.push(offsets.last().expect("non-empty") + c as u64);
        }
        sources.extend_from_slice(&flat);
        reach.extend_from_slice(&r);
    }
    (Neighbours { offsets, sources }, reach)
}
