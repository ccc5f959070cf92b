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
    /// Input edge index (column of the global edge index) of every local entry; empty for
    /// a shard loaded with [`crate::EdgeIds::Skip`].
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
        let owned: Vec<&[u64]> = plans.iter().map(|p| &p.owned[..]).collect();
        let sends = send_lists(
            plans.iter().map(|p| (&p.halo[..], &p.halo_owner[..])),
            &owned,
        );
        for (plan, send) in plans.iter_mut().zip(sends) {
            plan.send = send;
        }
        Ok(HaloPlan {
            num_nodes,
            parts: plans,
        })
    }
}

/// Every part's send lists from every part's halo (`halos`, in part order: ids grouped by
/// owner, with their owners) and nodes (`owned`, ascending): part p sends part q the block
/// of q's halo that p owns, as p's local ids, the lists in increasing q.
fn send_lists<'a>(
    halos: impl Iterator<Item = (&'a [u64], &'a [u32])>,
    owned: &[&[u64]],
) -> Vec<Vec<(u32, Vec<u32>)>> {
    let mut sends: Vec<Vec<(u32, Vec<u32>)>> = vec![Vec::new(); owned.len()];
    for (q, (halo, halo_owner)) in halos.enumerate() {
        let mut start = 0;
        while start < halo.len() {
            let owner = halo_owner[start];
            let end = start + halo_owner[start..].partition_point(|&o| o == owner);
            let sender = owned[owner as usize];
            let rows = halo[start..end]
                .iter()
                .map(|g| {
                    sender
                        .binary_search(g)
                        .expect("a halo node is owned by its owner") as u32
                })
                .collect();
            sends[owner as usize].push((q as u32, rows));
            start = end;
        }
    }
    sends
}

/// What a part needs, besides its own rows' edges, when those edges stay on the worker
/// that built them (`distgat run --points`, which never writes shards): its halo, its send
/// lists, and where its rows' edges sit in the global edge list. [`held_lists`] computes
/// them from the whole graph; [`PartPlan::from_held`] joins them with the part's own edges
/// into the plan [`HaloPlan::build`] gives for the same edges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeldLists {
    /// As [`PartPlan::halo`], [`PartPlan::halo_owner`] and [`PartPlan::send`].
    pub halo: Vec<u64>,
    pub halo_owner: Vec<u32>,
    pub send: Vec<(u32, Vec<u32>)>,
    /// Per owned row (increasing global id): the input edge index of its first edge.
    pub edge_base: Vec<u64>,
}

/// The [`HeldLists`] of every part of the graph whose incoming CSR is `offsets`
/// (`[N + 1]`) and `sources` (global ids): row `v` lists the sources of the edges into `v`
/// in input order, and the input edge list is the rows one after another (a graph sorted
/// by target, as `distgat neighbours` writes it). `assignment`: node -> part (< `parts`).
pub fn held_lists(
    offsets: &[u64],
    sources: &[u32],
    assignment: &[u32],
    parts: usize,
) -> Vec<HeldLists> {
    let n = assignment.len();
    assert_eq!(offsets.len(), n + 1, "offsets length");
    let mut halos: Vec<Vec<(u32, u64)>> = vec![Vec::new(); parts];
    for (v, &p) in assignment.iter().enumerate() {
        for &j in &sources[offsets[v] as usize..offsets[v + 1] as usize] {
            let owner = assignment[j as usize];
            if owner != p {
                halos[p as usize].push((owner, j as u64));
            }
        }
    }
    for h in &mut halos {
        h.sort_unstable();
        h.dedup();
    }
    held_lists_with_halos(halos, offsets, assignment, parts)
}

/// [`held_lists`] when each part's halo is already known: `halos[p]` holds part `p`'s
/// (owner, global id) pairs, sorted and distinct; `offsets` (`[N + 1]`) gives each node's
/// first edge in the target-sorted edge list (the sources themselves are not needed).
pub fn held_lists_with_halos(
    halos: Vec<Vec<(u32, u64)>>,
    offsets: &[u64],
    assignment: &[u32],
    parts: usize,
) -> Vec<HeldLists> {
    assert_eq!(offsets.len(), assignment.len() + 1, "offsets length");
    assert_eq!(halos.len(), parts, "one halo per part");
    let mut owned: Vec<Vec<u64>> = vec![Vec::new(); parts];
    for (v, &p) in assignment.iter().enumerate() {
        owned[p as usize].push(v as u64);
    }
    let mut lists: Vec<HeldLists> = owned
        .iter()
        .zip(halos)
        .map(|(owned, halo)| HeldLists {
            halo_owner: halo.iter().map(|&(o, _)| o).collect(),
            halo: halo.into_iter().map(|(_, j)| j).collect(),
            send: Vec::new(),
            edge_base: owned.iter().map(|&v| offsets[v as usize]).collect(),
        })
        .collect();
    let owned: Vec<&[u64]> = owned.iter().map(|o| &o[..]).collect();
    let sends = send_lists(
        lists.iter().map(|l| (&l.halo[..], &l.halo_owner[..])),
        &owned,
    );
    for (l, send) in lists.iter_mut().zip(sends) {
        l.send = send;
    }
    lists
}

impl PartPlan {
    /// The plan of `part` from its own rows' edges and its [`HeldLists`]: `owned` are its
    /// nodes (increasing global ids), and row `r`'s sources (global ids, input order) are
    /// `sources[offsets[r]..offsets[r + 1]]`. Equal to [`HaloPlan::build`]'s plan of the
    /// part for the same graph and assignment.
    ///
    /// Errors ([`PartitionError::Invalid`] naming `what`): lists that do not fit the rows
    /// (an id not below `num_nodes`, a source neither owned nor in the halo, lengths that
    /// differ, a send row beyond the owned rows, a halo node that is owned here).
    pub fn from_held(
        part: u32,
        owned: Vec<u64>,
        offsets: &[u64],
        sources: &[u32],
        lists: HeldLists,
        num_nodes: usize,
        what: &str,
    ) -> Result<PartPlan> {
        let bad = |detail: String| crate::PartitionError::invalid(what, detail);
        let n_owned = owned.len();
        if offsets.len() != n_owned + 1
            || offsets.windows(2).any(|w| w[0] > w[1])
            || offsets.last().copied() != Some(sources.len() as u64)
        {
            return Err(bad(format!(
                "{} row offsets for {n_owned} owned rows and {} edges",
                offsets.len(),
                sources.len()
            )));
        }
        if lists.edge_base.len() != n_owned || lists.halo.len() != lists.halo_owner.len() {
            return Err(bad(format!(
                "{} edge bases for {n_owned} owned rows, {} halo nodes with {} owners",
                lists.edge_base.len(),
                lists.halo.len(),
                lists.halo_owner.len()
            )));
        }
        const UNSET: u32 = u32::MAX;
        let mut local_of = vec![UNSET; num_nodes];
        for (l, &v) in owned.iter().enumerate() {
            match local_of.get_mut(v as usize) {
                Some(slot) => *slot = l as u32,
                None => return Err(bad(format!("owned node {v} is not below {num_nodes}"))),
            }
        }
        for (h, &j) in lists.halo.iter().enumerate() {
            match local_of.get_mut(j as usize) {
                Some(slot) if *slot == UNSET => *slot = (n_owned + h) as u32,
                Some(_) => return Err(bad(format!("halo node {j} is owned here or listed twice"))),
                None => return Err(bad(format!("halo node {j} is not below {num_nodes}"))),
            }
        }
        for (q, rows) in &lists.send {
            if let Some(&r) = rows.iter().find(|&&r| r as usize >= n_owned) {
                return Err(bad(format!(
                    "the send list for part {q} names row {r} of {n_owned} owned rows"
                )));
            }
        }
        let mut col = Vec::with_capacity(sources.len());
        let mut edge_id = Vec::with_capacity(sources.len());
        for (r, w) in offsets.windows(2).enumerate() {
            for (k, &j) in sources[w[0] as usize..w[1] as usize].iter().enumerate() {
                match local_of.get(j as usize) {
                    Some(&l) if l != UNSET => col.push(l),
                    _ => {
                        return Err(bad(format!(
                            "source {j} of node {} is neither owned by part {part} nor in its \
                             halo",
                            owned[r]
                        )))
                    }
                }
                edge_id.push(lists.edge_base[r] + k as u64);
            }
        }
        Ok(PartPlan {
            part,
            owned,
            halo: lists.halo,
            halo_owner: lists.halo_owner,
            row_ptr: offsets.iter().map(|&o| o - offsets[0]).collect(),
            col,
            edge_id,
            send: lists.send,
        })
    }
}

#[cfg(test)]
mod held_tests {
    use super::*;

    /// Held lists joined with each part's own rows give HaloPlan::build's plans, on random
    /// target-sorted graphs with duplicate edges, self loops and an empty part.
    #[test]
    fn held_plans_equal_the_halo_plan() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        for (n, parts, degree) in [(50usize, 3usize, 4u64), (200, 4, 9), (30, 5, 2), (1, 1, 1)] {
            let mut offsets = vec![0u64];
            let mut sources = Vec::new();
            for _ in 0..n {
                let mut row: Vec<u32> = (0..next(degree + 1))
                    .map(|_| next(n as u64) as u32)
                    .collect();
                row.sort_unstable();
                sources.extend(&row);
                offsets.push(sources.len() as u64);
            }
            // Part `parts - 1` stays empty when there are at least 2.
            let used = if parts > 1 { parts - 1 } else { 1 };
            let assignment: Vec<u32> = (0..n).map(|_| next(used as u64) as u32).collect();
            let (mut src, mut dst) = (Vec::new(), Vec::new());
            for v in 0..n {
                for &j in &sources[offsets[v] as usize..offsets[v + 1] as usize] {
                    src.push(j as u64);
                    dst.push(v as u64);
                }
            }
            let edges = EdgeList::from_pairs(&src, &dst);
            let want = HaloPlan::build(&edges, n, &assignment, parts).unwrap();
            let lists = held_lists(&offsets, &sources, &assignment, parts);
            for (p, l) in lists.into_iter().enumerate() {
                let owned: Vec<u64> = (0..n as u64)
                    .filter(|&v| assignment[v as usize] as usize == p)
                    .collect();
                let mut row_offsets = vec![0u64];
                let mut rows = Vec::new();
                for &v in &owned {
                    rows.extend_from_slice(
                        &sources[offsets[v as usize] as usize..offsets[v as usize + 1] as usize],
                    );
                    row_offsets.push(rows.len() as u64);
                }
                let got = PartPlan::from_held(p as u32, owned, &row_offsets, &rows, l, n, "test")
                    .unwrap();
                assert_eq!(got, want.parts[p], "n {n}, part {p}");
            }
        }
    }

    #[test]
    fn held_lists_that_do_not_fit_are_errors() {
        let lists = HeldLists {
            halo: vec![],
            halo_owner: vec![],
            send: vec![],
            edge_base: vec![0, 1],
        };
        // Node 1's source 2 is neither owned nor in the halo.
        let e = PartPlan::from_held(0, vec![0, 1], &[0, 1, 2], &[1, 2], lists.clone(), 3, "plan")
            .unwrap_err();
        assert!(e.to_string().contains("source 2 of node 1"), "{e}");
        let e = PartPlan::from_held(0, vec![0, 5], &[0, 0, 0], &[], lists.clone(), 3, "plan")
            .unwrap_err();
        assert!(e.to_string().contains("not below 3"), "{e}");
        let e = PartPlan::from_held(0, vec![0], &[0, 0], &[], lists, 3, "plan").unwrap_err();
        assert!(e.to_string().contains("edge bases"), "{e}");
    }
}
