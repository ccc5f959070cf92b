//! Node reorderings for locality: the aggregation gathers one source row per edge, and a
//! numbering that keeps neighbours close keeps those gathers in the caches.
//!
//! A reordering only renames nodes. The engine's CSR lists each row's sources in input
//! edge order, which a renaming does not change, and a row's bits do not depend on which
//! rows are computed with it, so a local layer gives every node the same bits under any
//! numbering. Layers that sum over all nodes in node order (global attention, graph-mode
//! LayerNorm) would not, and callers refuse them.

use crate::edges::EdgeList;
use crate::error::Result;

/// The reverse Cuthill-McKee order of the undirected graph of `edges` over `num_nodes`
/// nodes (self loops ignored, duplicates counted in the degrees): `order[new] = old`.
///
/// Each connected component is walked breadth first from its unvisited node of smallest
/// degree (ties to the smaller id), the neighbours of each node visited in increasing
/// (degree, id); the whole sequence is then reversed (George and Liu, *Computer Solution
/// of Large Sparse Positive Definite Systems*, 1981, ch. 4; the start is the simple
/// minimum-degree choice, not a pseudo-peripheral node). Deterministic: it depends only
/// on the edges, not on the threads. The adjacency ([`crate::csr::undirected_adjacency`])
/// and the ranking of the starts run on the current rayon pool; the walk is sequential.
/// Memory: the undirected adjacency, 12 bytes per non-loop edge (8 more while it is
/// built), plus 4-12 bytes per node. Errors: an id `>= num_nodes` (callers check ids
/// first and name the file) or `num_nodes` of 2^32 or more.
pub fn rcm_order(edges: &EdgeList, num_nodes: usize) -> Result<Vec<u32>> {
    use rayon::prelude::*;
    let n = num_nodes;
    let (ptr, adj) = crate::csr::undirected_adjacency(edges, n)?;
    let degree = |v: u32| ptr[v as usize + 1] - ptr[v as usize];
    let mut starts: Vec<u32> = (0..n as u32).collect();
    // The keys are distinct (ids are), so an unstable sort has one result.
    starts.par_sort_unstable_by_key(|&v| (degree(v), v));
    // rank[v]: v's place in (degree, id) order, so neighbours sort by one 4-byte key read
    // once each.
    let mut rank = vec![0u32; n];
    for (k, &v) in starts.iter().enumerate() {
        rank[v as usize] = k as u32;
    }
    let mut visited = vec![false; n];
    let mut order: Vec<u32> = Vec::with_capacity(n);
    let mut next: Vec<(u32, u32)> = Vec::new();
    for &root in &starts {
        if visited[root as usize] {
            continue;
        }
        visited[root as usize] = true;
        let mut head = order.len();
        order.push(root);
        while head < order.len() {
            let u = order[head] as usize;
            head += 1;
            next.clear();
            for &v in &adj[ptr[u]..ptr[u + 1]] {
                if !visited[v as usize] {
                    visited[v as usize] = true;
                    next.push((rank[v as usize], v));
                }
            }
            next.sort_unstable();
            order.extend(next.iter().map(|&(_, v)| v));
        }
    }
    order.reverse();
    Ok(order)
}

/// Row offsets of the undirected adjacency of `edges` over `num_nodes` nodes: every edge
/// `s -> d` with `s != d` in both rows `s` and `d` (self loops left out, duplicates kept).
/// `offsets[v]..offsets[v + 1]` is row `v` of [`undirected_entries`]; `offsets[num_nodes]`
/// is the number of entries (twice the non-loop edges). Ids must be below `num_nodes`
/// (checked by the caller). Sequential, with no temporary beyond 8 bytes per node: the
/// partitioners' symmetric graph (`distgat_partition::SymmetricGraph`, which then sorts
/// and deduplicates rows) uses it under its peak-memory bound; the RCM order uses the
/// parallel [`crate::csr::undirected_adjacency`], which gives the same rows.
pub fn undirected_offsets(edges: &EdgeList, num_nodes: usize) -> Vec<usize> {
    let mut offsets = vec![0usize; num_nodes + 1];
    for (&s, &d) in edges.src().iter().zip(edges.dst()) {
        if s != d {
            offsets[s as usize + 1] += 1;
            offsets[d as usize + 1] += 1;
        }
    }
    for i in 0..num_nodes {
        offsets[i + 1] += offsets[i];
    }
    offsets
}

/// The entries of the undirected adjacency whose rows [`undirected_offsets`] gave: each
/// row lists its neighbours in input edge order (an edge `s -> d` adds `d` to row `s` and
/// `s` to row `d` when it is reached). Memory: 4 bytes per entry plus 8 per node while
/// filling.
pub fn undirected_entries(edges: &EdgeList, offsets: &[usize]) -> Vec<u32> {
    let n = offsets.len() - 1;
    let mut adj = vec![0u32; offsets[n]];
    let mut at = offsets[..n].to_vec();
    for (&s, &d) in edges.src().iter().zip(edges.dst()) {
        if s != d {
            adj[at[s as usize]] = d as u32;
            at[s as usize] += 1;
            adj[at[d as usize]] = s as u32;
            at[d as usize] += 1;
        }
    }
    adj
}

/// The inverse of a permutation: `new_of[order[k]] = k`.
pub fn inverse(order: &[u32]) -> Vec<u32> {
    let mut new_of = vec![0u32; order.len()];
    for (k, &old) in order.iter().enumerate() {
        new_of[old as usize] = k as u32;
    }
    new_of
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcm_of_a_path_and_a_star_is_a_permutation_with_small_bandwidth() {
        // A path 0-5-2-4-1-3 (ids scrambled), an isolated node 6, a self loop on 2.
        let edges = EdgeList::from_pairs(&[0, 5, 2, 4, 1, 2], &[5, 2, 4, 1, 3, 2]);
        let order = rcm_order(&edges, 7).unwrap();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..7).collect::<Vec<u32>>());
        let new_of = inverse(&order);
        for (&s, &d) in edges.src().iter().zip(edges.dst()) {
            let gap = (new_of[s as usize] as i64 - new_of[d as usize] as i64).abs();
            assert!(gap <= 1, "path edge {s}-{d} spans {gap}");
        }
        // Isolated node (degree 0) is the first root, so it comes last after reversal.
        assert_eq!(order[6], 6);
        assert_eq!(order, rcm_order(&edges, 7).unwrap(), "deterministic");
    }

    /// RCM as George and Liu state it, written plainly (neighbour sets, a queue, sorts
    /// by (degree, id) with degrees counted over every non-loop edge end).
    fn reference_rcm(src: &[u64], dst: &[u64], n: usize) -> Vec<u32> {
        let mut nbrs = vec![Vec::new(); n];
        for (&s, &d) in src.iter().zip(dst) {
            if s != d {
                nbrs[s as usize].push(d as usize);
                nbrs[d as usize].push(s as usize);
            }
        }
        let key = |v: usize| (nbrs[v].len(), v);
        let mut roots: Vec<usize> = (0..n).collect();
        roots.sort_by_key(|&v| key(v));
        let mut seen = vec![false; n];
        let mut order = Vec::new();
        for r in roots {
            if seen[r] {
                continue;
            }
            seen[r] = true;
            let mut queue = std::collections::VecDeque::from([r]);
            while let Some(u) = queue.pop_front() {
                order.push(u as u32);
                let mut fresh: Vec<usize> = nbrs[u].iter().copied().filter(|&v| !seen[v]).collect();
                fresh.sort_by_key(|&v| key(v));
                fresh.dedup();
                for v in fresh {
                    seen[v] = true;
                    queue.push_back(v);
                }
            }
        }
        order.reverse();
        order
    }

    /// Against the plain reference on a random graph with hubs, duplicate edges, self
    /// loops, isolated nodes and several components, on 1 and 3 threads.
    #[test]
    fn rcm_equals_a_plain_reference() {
        let n = 3000usize;
        let mut state = 5u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        let (mut src, mut dst) = (Vec::new(), Vec::new());
        for k in 0..20_000u64 {
            // Nodes >= 2900 isolated; 0..2400 and 2400..2900 two components.
            let (lo, hi) = if k % 5 == 0 { (2400, 2900) } else { (0, 2400) };
            let s = lo + next() % (hi - lo);
            let d = match k % 7 {
                0 => lo,
                1 => s,
                _ => lo + next() % (hi - lo),
            };
            src.push(s);
            dst.push(d);
            if k % 11 == 0 {
                src.push(s);
                dst.push(d);
            }
        }
        let want = reference_rcm(&src, &dst, n);
        let edges = EdgeList::from_pairs(&src, &dst);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| rcm_order(&edges, n)).unwrap();
            assert_eq!(got, want, "{threads} threads");
        }
    }

    #[test]
    fn undirected_adjacency_has_both_directions_no_loops_and_keeps_duplicates() {
        // 0->1, 2->0, 1->1 (loop), 0->1 again, 3->2.
        let edges = EdgeList::from_pairs(&[0, 2, 1, 0, 3], &[1, 0, 1, 1, 2]);
        let offsets = undirected_offsets(&edges, 5);
        assert_eq!(offsets, vec![0, 3, 5, 7, 8, 8]);
        let adj = undirected_entries(&edges, &offsets);
        // Row 0: 1, 2, 1; row 1: 0, 0; row 2: 0, 3; row 3: 2; row 4 (isolated): empty.
        assert_eq!(adj, vec![1, 2, 1, 0, 0, 0, 3, 2]);
    }
}
