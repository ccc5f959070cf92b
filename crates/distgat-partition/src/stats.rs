//! Partition quality: what METIS optimises and what the runtime will pay.

use serde::{Deserialize, Serialize};

use crate::plan::HaloPlan;
use crate::symmetric::SymmetricGraph;

/// Edge cut and communication volume of an assignment over the symmetric graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quality {
    pub num_nodes: usize,
    /// Undirected pairs {u, v} (u != v).
    pub num_undirected_pairs: u64,
    /// Pairs whose endpoints are in different parts.
    pub edge_cut: u64,
    /// Over all nodes, the number of other parts among its neighbours.
    pub communication_volume: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionStats {
    pub parts: usize,
    pub num_nodes: usize,
    /// Directed input edges.
    pub num_edges: usize,
    /// Undirected pairs {u, v} (u != v) of the symmetrised graph: what the edge cut is a
    /// share of (0 in manifests written before it was recorded).
    #[serde(default)]
    pub num_undirected_pairs: u64,
    /// Undirected pairs {u, v} (u != v) whose endpoints are in different parts, as METIS
    /// counts its edge cut.
    pub edge_cut: u64,
    /// METIS's total communication volume: over all nodes, the number of other parts
    /// among its (undirected) neighbours.
    pub communication_volume: u64,
    /// Largest part's node count / average.
    pub node_imbalance: f64,
    /// Largest part's incoming edges / average (a worker's work is its incoming edges).
    pub edge_imbalance: f64,
    pub owned_rows: Vec<u64>,
    pub incoming_edges: Vec<u64>,
    /// Halo rows each part receives per layer.
    pub halo_rows: Vec<u64>,
    pub halo_rows_total: u64,
    /// Bytes on the wire per layer at `row_width` f32 columns per halo row.
    pub row_width: usize,
    pub halo_bytes_per_layer: u64,
}

impl PartitionStats {
    /// Parts that own no node (METIS may leave parts empty on small or disconnected
    /// graphs); a job on this partition still starts one worker per part.
    pub fn empty_parts(&self) -> Vec<usize> {
        (0..self.parts)
            .filter(|&p| self.owned_rows.get(p) == Some(&0))
            .collect()
    }

    /// Statistics of `assignment` over `graph` with its halo `plan` (see the fields).
    pub fn compute(
        graph: &SymmetricGraph,
        assignment: &[u32],
        plan: &HaloPlan,
        num_edges: usize,
        row_width: usize,
    ) -> Self {
        Self::from_plan(Self::quality(graph, assignment), plan, num_edges, row_width)
    }

    /// What needs the symmetric graph: its size, edge cut and communication volume (so
    /// the graph can be dropped before the halo plan is built).
    pub fn quality(graph: &SymmetricGraph, assignment: &[u32]) -> Quality {
        let mut edge_cut = 0u64;
        let mut volume = 0u64;
        let mut seen: Vec<u32> = Vec::new();
        for v in 0..graph.num_nodes {
            let pv = assignment[v];
            seen.clear();
            for &u in graph.neighbours(v) {
                let pu = assignment[u as usize];
                if pu != pv {
                    if (u as usize) > v {
                        edge_cut += 1;
                    }
                    if !seen.contains(&pu) {
                        seen.push(pu);
                    }
                }
            }
            volume += seen.len() as u64;
        }
        Quality {
            num_nodes: graph.num_nodes,
            num_undirected_pairs: graph.num_undirected_edges() as u64,
            edge_cut,
            communication_volume: volume,
        }
    }

    /// The statistics from [`PartitionStats::quality`] and the halo plan.
    pub fn from_plan(q: Quality, plan: &HaloPlan, num_edges: usize, row_width: usize) -> Self {
        let parts = plan.parts.len();
        let owned_rows: Vec<u64> = plan.parts.iter().map(|p| p.owned.len() as u64).collect();
        let incoming_edges: Vec<u64> = plan.parts.iter().map(|p| p.col.len() as u64).collect();
        let halo_rows: Vec<u64> = plan.parts.iter().map(|p| p.halo.len() as u64).collect();
        let halo_rows_total = halo_rows.iter().sum::<u64>();
        let imbalance = |v: &[u64]| {
            let total: u64 = v.iter().sum();
            if total == 0 {
                1.0
            } else {
                *v.iter().max().unwrap_or(&0) as f64 / (total as f64 / parts as f64)
            }
        };
        PartitionStats {
            parts,
            num_nodes: q.num_nodes,
            num_edges,
            num_undirected_pairs: q.num_undirected_pairs,
            edge_cut: q.edge_cut,
            communication_volume: q.communication_volume,
            node_imbalance: imbalance(&owned_rows),
            edge_imbalance: imbalance(&incoming_edges),
            owned_rows,
            incoming_edges,
            halo_rows,
            halo_rows_total,
            row_width,
            halo_bytes_per_layer: halo_rows_total * row_width as u64 * 4,
        }
    }
}
