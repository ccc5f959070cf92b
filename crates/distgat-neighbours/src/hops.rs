//! k-hop neighbourhoods: the nonzero pattern of `(A + I)^H` with sparse products (sprs).
//!
//! `A[i][j] = 1` for every edge `j -> i` of the graph (PyG's source -> target), so row `i`
//! of `(A + I)^h` holds every node with a directed path of at most `h` edges into `i`.
//! The hop distance of `j` from centre `i` is the smallest such `h` (0 for `i` itself).

use std::ops::Range;

use distgat_graph::EdgeList;
use sprs::CsMat;

use crate::search::{CandidateSearch, Query};

/// Row `i`: the nodes within `hops` of `i` along incoming edges, ascending, each with its
/// hop distance (the centre included, at 0).
pub(crate) struct HopPattern {
    indptr: Vec<usize>,
    indices: Vec<usize>,
    hop: Vec<u32>,
}

/// `A + I` as a CSR pattern (row = target, column = source), values 1.
fn adjacency_plus_identity(graph: &EdgeList, n: usize) -> CsMat<f32> {
    let mut rows: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    for (&s, &d) in graph.src().iter().zip(graph.dst()) {
        rows[d as usize].push(s as usize);
    }
    let mut indptr = Vec::with_capacity(n + 1);
    let mut indices = Vec::new();
    indptr.push(0);
    for mut row in rows {
        row.sort_unstable();
        row.dedup();
        indices.extend_from_slice(&row);
        indptr.push(indices.len());
    }
    let data = vec![1f32; indices.len()];
    CsMat::new((n, n), indptr, indices, data)
}

impl HopPattern {
    /// `graph`'s ids must all be below `n` (checked by the caller).
    pub fn build(graph: &EdgeList, n: usize, hops: usize) -> Self {
        let step = adjacency_plus_identity(graph, n);
        let mut reach = step.clone();
        // Hop distances aligned with reach's entries: 0 on the diagonal, 1 elsewhere.
        let mut hop: Vec<u32> = Vec::with_capacity(reach.nnz());
        for (i, row) in reach.outer_iterator().enumerate() {
            hop.extend(row.indices().iter().map(|&j| u32::from(j != i)));
        }
        for h in 2..=hops {
            let mut next: CsMat<f32> = &reach * &step;
            // Only the pattern matters: reset the path counts so they cannot overflow.
            next.data_mut().fill(1.0);
            if next.nnz() == reach.nnz() {
                break; // (A + I)^h has the pattern of (A + I)^(h-1): a fixed point.
            }
            let mut next_hop = Vec::with_capacity(next.nnz());
            let mut old_pos = 0usize;
            for (old, new) in reach.outer_iterator().zip(next.outer_iterator()) {
                // reach ⊆ next row by row (I is in the product), both ascending.
                let (oi, base) = (old.indices(), &hop[old_pos..old_pos + old.nnz()]);
                old_pos += old.nnz();
                let mut k = 0usize;
                for &j in new.indices() {
                    if k < oi.len() && oi[k] == j {
                        next_hop.push(base[k]);
                        k += 1;
                    } else {
                        next_hop.push(h as u32);
                    }
                }
            }
            reach = next;
            hop = next_hop;
        }
        let (indptr, indices, _) = reach.into_raw_storage();
        HopPattern {
            indptr,
            indices,
            hop,
        }
    }
}

impl CandidateSearch for HopPattern {
    fn search_block(&self, centres: Range<usize>, _query: Query, out: &mut [Vec<(f64, u32)>]) {
        for (i, slot) in centres.zip(out.iter_mut()) {
            let range = self.indptr[i]..self.indptr[i + 1];
            slot.extend(
                self.indices[range.clone()]
                    .iter()
                    .zip(&self.hop[range])
                    .filter(|(&j, _)| j != i)
                    .map(|(&j, &h)| (h as f64, j as u32)),
            );
        }
    }
}
