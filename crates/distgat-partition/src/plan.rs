//! The halo plan: what each part owns, which remote rows it needs, and what it sends.

use distgat_graph::{EdgeList, IncomingCsr};

use crate::error::Result;

/// One part's share of the graph, in local ids: owned rows are `0..owned.len()` (in
/// increasing global id), halo rows follow (grouped by owner part, then by global id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartPlan {
    pub part: u32,
    /// Global ids of the owned nodes, increasing.
    pub owned: Vec<u64>,
    /// Global ids of the halo nodes: sources of incoming edges owned elsewhere, ordered
    /// by (owner, global id), so each peer's rows arrive as one contiguous block.
    pub halo: Vec<u64>,
    /// Owner part of each halo node.
    pub halo_owner: Vec<u32>,
    /// Local incoming CSR: one row per owned node; entries are local source ids, in the
    /// single-process engine's order (input order), input self loops included.
    pub row_ptr: Vec<u64>,
    pub col: Vec<u32>,
    /// Input edge index (column of the global edge index) of every local entry.
    pub edge_id: Vec<u64>,
    /// Per peer that needs rows from this part: the peer and the local (owned) ids to
    /// send, in the order the peer stores them in its halo.
    pub send: Vec<(u32, Vec<u32>)>,
}

impl PartPlan {
    pub fn num_local(&self) -> usize {
        self.owned.len() + self.halo.len()
    }
    pub fn num_entries(&self) -> usize {
        self.col.len()
    }
}

/// The plan of every part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaloPlan {
    pub num_nodes: usize,
    pub parts: Vec<PartPlan>,
}

impl HaloPlan {
    /// Builds the plan for `assignment` (node -> part, values < `parts`) over `edges`.
    pub fn build(
        edges: &EdgeList,
        num_nodes: usize,
        assignment: &[u32],
        parts: usize,
    ) -> Result<Self> {
        assert_eq!(assignment.len(), num_nodes, "assignment length");
        // The global CSR in engine order, and the input edge of every entry.
        let (csr, order) = IncomingCsr::build(edges, num_nodes, false, true)?;
        let order = order.expect("asked for the order");
        let mut edge_of_entry = vec![0u64; order.len()];
        for (k, &pos) in order.iter().enumerate() {
            edge_of_entry[pos] = k as u64;
        }
        drop(order);

        let mut owned: Vec<Vec<u64>> = vec![Vec::new(); parts];
        for (v, &p) in assignment.iter().enumerate() {
            owned[p as usize].push(v as u64);
        }
        // Reused global -> local map; entries are reset after each part.
        const UNSET: u32 = u32::MAX;
        let mut local_of = vec![UNSET; num_nodes];
        let mut plans: Vec<PartPlan> = Vec::with_capacity(parts);
        for (p, owned) in owned.into_iter().enumerate() {
            for (l, &v) in owned.iter().enumerate() {
                local_of[v as usize] = l as u32;
            }
            // Halo: remote sources of incoming edges, by (owner, id).
            let mut halo: Vec<(u32, u64)> = Vec::new();
            for &v in &owned {
                for &j in csr.row(v as usize) {
                    let owner = assignment[j as usize];
                    if owner as usize != p && local_of[j as usize] == UNSET {
                        local_of[j as usize] = 0; // mark seen; the real id comes below
                        halo.push((owner, j as u64));
                    }
                }
            }
            halo.sort_unstable();
            let base = owned.len() as u32;
            for (h, &(_, j)) in halo.iter().enumerate() {
                local_of[j as usize] = base + h as u32;
            }
            let mut row_ptr = Vec::with_capacity(owned.len() + 1);
            row_ptr.push(0u64);
            let mut col = Vec::new();
            let mut edge_id = Vec::new();
            for &v in &owned {
                let (a, b) = (csr.row_ptr[v as usize], csr.row_ptr[v as usize + 1]);
                for pos in a..b {
                    col.push(local_of[csr.col[pos] as usize]);
                    edge_id.push(edge_of_entry[pos]);
                }
                row_ptr.push(col.len() as u64);
            }
            for &v in &owned {
                local_of[v as usize] = UNSET;
            }
            for &(_, j) in &halo {
                local_of[j as usize] = UNSET;
            }
            plans.push(PartPlan {
                part: p as u32,
                owned,
                halo_owner: halo.iter().map(|&(o, _)| o).collect(),
                halo: halo.into_iter().map(|(_, j)| j).collect(),
                row_ptr,
                col,
                edge_id,
                send: Vec::new(),
            });
        }
        // Send lists: the block of q's halo owned by p, as p's local ids.
        let mut sends: Vec<Vec<(u32, Vec<u32>)>> = vec![Vec::new(); parts];
        for q in &plans {
            let mut start = 0;
            while start < q.halo.len() {
                let owner = q.halo_owner[start];
                let end = start + q.halo_owner[start..].partition_point(|&o| o == owner);
                let sender = &plans[owner as usize];
                let rows = q.halo[start..end]
                    .iter()
                    .map(|g| {
                        sender
                            .owned
                            .binary_search(g)
                            .expect("halo node is owned by its owner")
                            as u32
                    })
                    .collect();
                sends[owner as usize].push((q.part, rows));
                start = end;
            }
        }
        for (plan, send) in plans.iter_mut().zip(sends) {
            plan.send = send;
        }
        Ok(HaloPlan {
            num_nodes,
            parts: plans,
        })
    }
}
