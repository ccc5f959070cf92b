//! Incoming-edge CSR in PyG's edge order.
//!
//! Row `i` holds the sources of the edges into `i`, in the order the input lists them,
//! followed by `i`'s self loop when self loops are added. This per-row order is the
//! summation order of the kernels; it depends only on the input, never on threads or
//! partitions, which is what makes the output bitwise reproducible.

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
        let mut row_ptr = vec![0usize; num_nodes + 1];
        let mut kept_edges = 0usize;
        for k in 0..src.len() {
            if keep(k) {
                row_ptr[dst[k] as usize + 1] += 1;
                kept_edges += 1;
            }
        }
        if add_self_loops {
            row_ptr[1..].iter_mut().for_each(|c| *c += 1);
        }
        for i in 0..num_nodes {
            row_ptr[i + 1] += row_ptr[i];
        }
        let mut cursor = row_ptr[..num_nodes].to_vec();
        let mut col = vec![0u32; row_ptr[num_nodes]];
        let mut order = want_attention_order.then(|| Vec::with_capacity(col.len()));
        for k in 0..src.len() {
            if keep(k) {
                let row = dst[k] as usize;
                let pos = cursor[row];
                cursor[row] += 1;
                col[pos] = src[k] as u32;
                if let Some(order) = order.as_mut() {
                    order.push(pos);
                }
            }
        }
        if add_self_loops {
            for i in 0..num_nodes {
                let pos = row_ptr[i + 1] - 1;
                col[pos] = i as u32;
                if let Some(order) = order.as_mut() {
                    order.push(pos);
                }
            }
        }
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
        let mut cursor = self.row_ptr[..self.num_nodes].to_vec();
        let mut keys = vec![0i64; self.col.len()];
        for k in 0..src.len() {
            if !(self.self_loops_added && src[k] == dst[k]) {
                let row = dst[k] as usize;
                keys[cursor[row]] = k as i64;
                cursor[row] += 1;
            }
        }
        if self.self_loops_added {
            for i in 0..self.num_nodes {
                keys[self.row_ptr[i + 1] - 1] = -(i as i64) - 1;
            }
        }
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
