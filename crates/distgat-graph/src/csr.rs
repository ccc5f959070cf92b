//! Incoming-edge CSR in PyG's edge order.
//!
//! Row `i` holds the sources of the edges into `i`, in the order the input lists them,
//! followed by `i`'s self loop when self loops are added. This per-row order is the
//! summation order of the kernels; it depends only on the input, never on threads or
//! partitions, which is what makes the output bitwise reproducible.
//!
//! The build is a stable counting sort by target. Large graphs are built on the current
//! rayon pool: each thread owns a range of target rows, scans every edge and places those
//! of its rows; a stable sort has one result, so the CSR does not depend on the threads.

use crate::edges::EdgeList;
use crate::error::{GraphError, Result};

/// Compressed sparse rows by destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCsr {
    pub num_nodes: usize,
    /// `row_ptr[i]..row_ptr[i + 1]` are the entries of row `i`.
    pub row_ptr: Vec<usize>,
    /// Source node of each entry.
    pub col: Vec<u32>,
    /// Whether every row ends with its self loop (PyG `add_self_loops=True`).
    pub self_loops_added: bool,
    /// Input edges kept: all of them, or all but the self loops when loops are re-added.
    pub kept_edges: usize,
}

impl IncomingCsr {
    /// Builds the CSR of `edges` over `num_nodes` nodes with PyG's self-loop handling:
    /// with `add_self_loops`, input self loops (every copy) are dropped and one loop per
    /// node appended; without, edges are used exactly as given (duplicates are kept in
    /// both cases). Ids must already be checked against `num_nodes`.
    ///
    /// With `want_attention_order`, also returns for each attention edge in PyG's order
    /// (kept input edges in input order, then the loops of nodes 0..N) its CSR position.
    pub fn build(
        edges: &EdgeList,
        num_nodes: usize,
        add_self_loops: bool,
        want_attention_order: bool,
    ) -> Result<(Self, Option<Vec<usize>>)> {
        if num_nodes > u32::MAX as usize {
            return Err(GraphError::argument(
                "graph",
                format!(
                    "{num_nodes} nodes: the single-process engine indexes nodes with 32 bits \
                     (at most {}); partition the graph across workers",
                    u32::MAX
                ),
            ));
        }
        let (src, dst) = (edges.src(), edges.dst());
        let keep = |k: usize| !(add_self_loops && src[k] == dst[k]);
        let ranges = row_ranges(num_nodes, src.len());
        // Entries per row (row_ptr[i + 1] counts row i), each node range on one thread.
        let mut row_ptr = vec![0usize; num_nodes + 1];
        let kept_edges: usize = for_each_range(&ranges, &mut row_ptr[1..], |lo, hi, counts| {
            let mut kept = 0usize;
            for (k, &d) in dst.iter().enumerate() {
                let d = d as usize;
                if (lo..hi).contains(&d) && keep(k) {
                    counts[d - lo] += 1;
                    kept += 1;
                }
            }
            kept
        })
        .into_iter()
        .sum();
        if add_self_loops {
            row_ptr[1..].iter_mut().for_each(|c| *c += 1);
        }
        for i in 0..num_nodes {
            row_ptr[i + 1] += row_ptr[i];
        }
        let mut col = vec![0u32; row_ptr[num_nodes]];
        // The stable counting sort's scatter: the kept edges into each row in input order
        // (then the row's loop). Its result is unique, so splitting the rows over threads
        // cannot change it; ranges are balanced by entries.
        let entry_ranges = entry_ranges(&row_ptr, &ranges);
        let slices = split_by_rows(&row_ptr, &entry_ranges, &mut col);
        run_ranges(slices, |(lo, hi, out)| {
            let base = row_ptr[lo];
            let mut cursor = row_ptr[lo..hi].to_vec();
            for (k, &d) in dst.iter().enumerate() {
                let d = d as usize;
                if (lo..hi).contains(&d) && keep(k) {
                    out[cursor[d - lo] - base] = src[k] as u32;
                    cursor[d - lo] += 1;
                }
            }
            if add_self_loops {
                for i in lo..hi {
                    out[row_ptr[i + 1] - 1 - base] = i as u32;
                }
            }
        });
        // PyG's attention order needs, per kept edge, its CSR position: one sequential
        // pass (only when attention coefficients are written).
        let order = want_attention_order.then(|| {
            let mut order = Vec::with_capacity(col.len());
            let mut cursor = row_ptr[..num_nodes].to_vec();
            for (k, &d) in dst.iter().enumerate() {
                if keep(k) {
                    order.push(cursor[d as usize]);
                    cursor[d as usize] += 1;
                }
            }
            if add_self_loops {
                order.extend((0..num_nodes).map(|i| row_ptr[i + 1] - 1));
            }
            order
        });
        Ok((
            IncomingCsr {
                num_nodes,
                row_ptr,
                col,
                self_loops_added: add_self_loops,
                kept_edges,
            },
            order,
        ))
    }

    /// Per CSR entry, the input edge it came from (its column in the graph file), or
    /// `-(v + 1)` for the self loop added to node `v`. `edges` must be the list this CSR
    /// was built from. Edge attributes are gathered through these keys.
    pub fn entry_keys(&self, edges: &EdgeList) -> Vec<i64> {
        let (src, dst) = (edges.src(), edges.dst());
        let loops = self.self_loops_added;
        let row_ptr = &self.row_ptr;
        let ranges = row_ranges(self.num_nodes, src.len());
        let entry_ranges = entry_ranges(row_ptr, &ranges);
        let mut keys = vec![0i64; self.col.len()];
        let slices = split_by_rows(row_ptr, &entry_ranges, &mut keys);
        run_ranges(slices, |(lo, hi, out)| {
            let base = row_ptr[lo];
            let mut cursor = row_ptr[lo..hi].to_vec();
            for (k, &d) in dst.iter().enumerate() {
                let d = d as usize;
                if (lo..hi).contains(&d) && !(loops && src[k] == dst[k]) {
                    out[cursor[d - lo] - base] = k as i64;
                    cursor[d - lo] += 1;
                }
            }
            if loops {
                for i in lo..hi {
                    out[row_ptr[i + 1] - 1 - base] = -(i as i64) - 1;
                }
            }
        });
        keys
    }

    pub fn num_entries(&self) -> usize {
        self.col.len()
    }

    pub fn row(&self, i: usize) -> &[u32] {
        &self.col[self.row_ptr[i]..self.row_ptr[i + 1]]
    }

    pub fn max_degree(&self) -> usize {
        self.row_ptr
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

/// Below this many edges the CSR is built on the calling thread.
const PARALLEL_MIN_EDGES: usize = 1 << 17;

/// Node ranges, one per thread of the current rayon pool (one range when the pool has one
/// thread or the graph is small). Each thread scans every edge and handles those whose
/// target is in its range, so the CSR is the same for any number of ranges.
fn row_ranges(num_nodes: usize, num_edges: usize) -> Vec<(usize, usize)> {
    let threads = if num_edges < PARALLEL_MIN_EDGES {
        1
    } else {
        rayon::current_num_threads().clamp(1, 64)
    };
    let threads = threads.min(num_nodes.max(1));
    (0..threads)
        .map(|t| (t * num_nodes / threads, (t + 1) * num_nodes / threads))
        .collect()
}

/// The same number of ranges as `ranges`, re-cut so each holds about as many CSR entries.
fn entry_ranges(row_ptr: &[usize], ranges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let n = row_ptr.len() - 1;
    let total = row_ptr[n];
    let parts = ranges.len();
    let mut bounds: Vec<usize> = (0..=parts)
        .map(|t| {
            let want = (total as u128 * t as u128 / parts.max(1) as u128) as usize;
            // The first row whose start is at or past `want`.
            row_ptr[..n].partition_point(|&p| p < want)
        })
        .collect();
    bounds[0] = 0;
    bounds[parts] = n;
    bounds.windows(2).map(|w| (w[0], w[1].max(w[0]))).collect()
}

/// Splits `data` (indexed by CSR entry) into the disjoint slices of the row ranges.
fn split_by_rows<'a, T>(
    row_ptr: &[usize],
    ranges: &[(usize, usize)],
    mut data: &'a mut [T],
) -> Vec<(usize, usize, &'a mut [T])> {
    let mut out = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges {
        let (head, rest) = data.split_at_mut(row_ptr[hi] - row_ptr[lo]);
        out.push((lo, hi, head));
        data = rest;
    }
    out
}

/// Runs `f` on every range, in parallel on the current rayon pool when there are several.
fn run_ranges<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    use rayon::prelude::*;
    if items.len() == 1 {
        items.into_iter().for_each(f);
    } else {
        items.into_par_iter().for_each(f);
    }
}

/// Runs `f(lo, hi, out[lo..hi])` for every node range over the matching slices of `out`
/// (indexed by node), in parallel when there are several ranges; returns the results in
/// range order.
fn for_each_range<T: Send, R: Send>(
    ranges: &[(usize, usize)],
    mut out: &mut [T],
    f: impl Fn(usize, usize, &mut [T]) -> R + Sync + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    let mut slices = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges {
        let (head, rest) = out.split_at_mut(hi - lo);
        slices.push((lo, hi, head));
        out = rest;
    }
    if slices.len() == 1 {
        slices.into_iter().map(|(lo, hi, s)| f(lo, hi, s)).collect()
    } else {
        slices
            .into_par_iter()
            .map(|(lo, hi, s)| f(lo, hi, s))
            .collect()
    }
}

/// The attention edge index in PyG's order, as int64 `[2, E']` (sources, then targets):
/// kept input edges in input order, then one self loop per node when loops are added.
pub fn attention_edge_index(edges: &EdgeList, num_nodes: usize, add_self_loops: bool) -> Vec<i64> {
    let (src, dst) = (edges.src(), edges.dst());
    let kept: Vec<usize> = (0..src.len())
        .filter(|&k| !(add_self_loops && src[k] == dst[k]))
        .collect();
    let loops = if add_self_loops { num_nodes } else { 0 };
    let mut out = Vec::with_capacity(2 * (kept.len() + loops));
    out.extend(kept.iter().map(|&k| src[k] as i64));
    out.extend((0..loops).map(|i| i as i64));
    out.extend(kept.iter().map(|&k| dst[k] as i64));
    out.extend((0..loops).map(|i| i as i64));
    out
}
