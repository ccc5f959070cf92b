//! The undirected view of a graph that partitioners balance and cut: every edge in both
//! directions, without self loops or duplicate pairs (what METIS expects).

use distgat_graph::EdgeList;

use crate::error::{PartitionError, Result};

/// Undirected adjacency in CSR form with 32-bit indices (METIS's `idx_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymmetricGraph {
    pub num_nodes: usize,
    /// `xadj[v]..xadj[v + 1]` index `adjncy`.
    pub xadj: Vec<i32>,
    pub adjncy: Vec<i32>,
}

/// The vendored METIS indexes with signed 32-bit integers.
pub const METIS_MAX_INDEX: u64 = i32::MAX as u64;

impl SymmetricGraph {
    /// Symmetrises `edges` over `num_nodes` nodes (ids already checked).
    pub fn build(edges: &EdgeList, num_nodes: usize) -> Result<Self> {
        if num_nodes as u64 > METIS_MAX_INDEX {
            return Err(too_large(format!("{num_nodes} nodes")));
        }
        let degree = distgat_graph::reorder::undirected_offsets(edges, num_nodes);
        let total = degree[num_nodes] as u64;
        // Before deduplication: a bound that also keeps the temporary indexable.
        if total > 2 * METIS_MAX_INDEX {
            return Err(too_large(format!("{} directed adjacency entries", total)));
        }
        let mut adj = distgat_graph::reorder::undirected_entries(edges, &degree);
        // Sort and deduplicate each row, compacting in place.
        let mut xadj = Vec::with_capacity(num_nodes + 1);
        xadj.push(0i32);
        let mut write = 0usize;
        for v in 0..num_nodes {
            let (a, b) = (degree[v], degree[v + 1]);
            adj[a..b].sort_unstable();
            let mut last = None;
            for r in a..b {
                let u = adj[r];
                if last != Some(u) {
                    adj[write] = u;
                    write += 1;
                    last = Some(u);
                }
            }
            if write as u64 > METIS_MAX_INDEX {
                return Err(too_large(format!(
                    "more than {} undirected adjacency entries",
                    METIS_MAX_INDEX
                )));
            }
            xadj.push(write as i32);
        }
        adj.truncate(write);
        let adjncy = adj.into_iter().map(|u| u as i32).collect();
        Ok(SymmetricGraph {
            num_nodes,
            xadj,
            adjncy,
        })
    }

    pub fn neighbours(&self, v: usize) -> &[i32] {
        &self.adjncy[self.xadj[v] as usize..self.xadj[v + 1] as usize]
    }

    /// Undirected pairs {u, v}, u != v.
    pub fn num_undirected_edges(&self) -> usize {
        self.adjncy.len() / 2
    }
}

fn too_large(what: String) -> PartitionError {
    PartitionError::TooLarge(format!(
        "the graph has {what}: the vendored METIS indexes with 32 bits (at most {} \
         adjacency entries, about 1.07 billion undirected edges). Use --method random or \
         range, or bring your own assignment with --method file:PARTS.npy",
        METIS_MAX_INDEX
    ))
}
