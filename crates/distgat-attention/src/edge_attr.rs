//! Edge attributes per CSR entry, with PyG's self-loop fill.
//!
//! PyG's `GATConv`/`GATv2Conv` with `add_self_loops` first remove every input loop i -> i
//! with its attribute row, then append one loop per node whose attribute is
//! `scatter(edge_attr, target, reduce=fill_value)` over the remaining edges into that node
//! (`torch_geometric.utils.add_self_loops`; for a node without incoming edges 0, except 1
//! for `'mul'`, whose product PyG starts from ones), or the constant `fill_value`. The remaining edges into node i are exactly the other entries of
//! its CSR row, so the fill is computed row by row, on the owner, in CSR order.

use rayon::prelude::*;

use crate::kind::{chunk_bounds, FillValue, EDGES_PER_CHUNK};
use crate::Execution;

/// Builds the `[entries, dim]` attribute rows of a CSR whose entry `e` came from input
/// edge `keys[e]` (`>= 0`) or is the added self loop of its row (`< 0`). `attr` is the
/// graph's `[E, dim]` edge attributes, row-major.
///
/// Each row depends only on its own entries, so with [`Execution::Parallel`] the rows go
/// in edge-balanced chunks on the rayon pool and the result has the same bits as the
/// sequential build. (Sequential and allocating a fill row per CSR row, this took a
/// third of a 4 x 8 GATConv layer's time with `edge_dim = 4` at 1M nodes / 10M edges;
/// docs/performance.md, twentieth session.)
pub fn entry_edge_attr(
    row_ptr: &[usize],
    keys: &[i64],
    dim: usize,
    fill: FillValue,
    attr: &[f32],
    exec: Execution,
) -> Vec<f32> {
    let mut out = vec![0f32; keys.len() * dim];
    if dim == 0 || row_ptr.len() < 2 {
        return out;
    }
    match exec {
        Execution::Sequential => fill_rows(row_ptr, keys, dim, fill, attr, &mut out),
        Execution::Parallel => {
            // Each chunk's rows and their slice of `out` (entries row_ptr[a]..row_ptr[b]).
            let bounds = chunk_bounds(row_ptr, EDGES_PER_CHUNK);
            let mut pieces = Vec::with_capacity(bounds.len());
            let mut rest = out.as_mut_slice();
            for w in bounds.windows(2) {
                let (a, b) = (w[0], w[1]);
                let (piece, tail) = rest.split_at_mut((row_ptr[b] - row_ptr[a]) * dim);
                pieces.push((a, b, piece));
                rest = tail;
            }
            pieces
                .into_par_iter()
                .for_each(|(a, b, piece)| fill_rows(&row_ptr[a..=b], keys, dim, fill, attr, piece));
        }
    }
    out
}

/// [`entry_edge_attr`] for the rows of `row_ptr` (a window of the CSR's, so its entries
/// start at `row_ptr[0]`) into `out`, their `[entries, dim]` slice.
fn fill_rows(
    row_ptr: &[usize],
    keys: &[i64],
    dim: usize,
    fill: FillValue,
    attr: &[f32],
    out: &mut [f32],
) {
    let base = row_ptr[0];
    let mut reduced = vec![0f32; dim];
    for w in row_ptr.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mut count = 0usize;
        reduced.fill(match fill {
            FillValue::Mul => 1.0,
            FillValue::Max => f32::NEG_INFINITY,
            FillValue::Min => f32::INFINITY,
            _ => 0.0,
        });
        for (e, &key) in (a..b).zip(&keys[a..b]) {
            if key >= 0 {
                let k = key as usize;
                let row = &attr[k * dim..(k + 1) * dim];
                let o = (e - base) * dim;
                out[o..o + dim].copy_from_slice(row);
                count += 1;
                for (r, &v) in reduced.iter_mut().zip(row) {
                    *r = match fill {
                        FillValue::Mean | FillValue::Add => *r + v,
                        FillValue::Mul => *r * v,
                        FillValue::Max => r.max(v),
                        FillValue::Min => r.min(v),
                        FillValue::Constant(_) => 0.0,
                    };
                }
            }
        }
        if a == b || keys[a..b].iter().all(|&k| k >= 0) {
            continue;
        }
        // The self loop's row, in place of the reduction.
        match fill {
            FillValue::Constant(c) => reduced.fill(c),
            // PyG starts the product from ones (`new_ones(..).scatter_reduce_(prod)`),
            // so a node without incoming edges gets 1.
            FillValue::Mul => {}
            // The others start from zeros (`include_self=False` for max/min).
            _ if count == 0 => reduced.fill(0.0),
            FillValue::Mean => reduced.iter_mut().for_each(|s| *s /= count as f32),
            _ => {}
        }
        for (e, &key) in (a..b).zip(&keys[a..b]) {
            if key < 0 {
                let o = (e - base) * dim;
                out[o..o + dim].copy_from_slice(&reduced);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_get_the_reduction_of_their_row() {
        // Row 0: edges 3 and 1, then its loop; row 1: only its loop; row 2: edge 0.
        let row_ptr = [0, 3, 4, 5];
        let keys = [3, 1, -1, -2, 0];
        let attr = [1.0, -1.0, 2.0, 4.0, 0.0, 0.0, 3.0, 5.0];
        let mean = entry_edge_attr(
            &row_ptr,
            &keys,
            2,
            FillValue::Mean,
            &attr,
            Execution::Sequential,
        );
        assert_eq!(mean, [3.0, 5.0, 2.0, 4.0, 2.5, 4.5, 0.0, 0.0, 1.0, -1.0]);
        let add = entry_edge_attr(
            &row_ptr,
            &keys,
            2,
            FillValue::Add,
            &attr,
            Execution::Sequential,
        );
        assert_eq!(&add[4..6], &[5.0, 9.0]);
        let max = entry_edge_attr(
            &row_ptr,
            &keys,
            2,
            FillValue::Max,
            &attr,
            Execution::Sequential,
        );
        assert_eq!(&max[4..8], &[3.0, 5.0, 0.0, 0.0]);
        let min = entry_edge_attr(
            &row_ptr,
            &keys,
            2,
            FillValue::Min,
            &attr,
            Execution::Sequential,
        );
        assert_eq!(&min[4..6], &[2.0, 4.0]);
        let mul = entry_edge_attr(
            &row_ptr,
            &keys,
            2,
            FillValue::Mul,
            &attr,
            Execution::Sequential,
        );
        assert_eq!(&mul[4..8], &[6.0, 20.0, 1.0, 1.0]);
        let c = entry_edge_attr(
            &row_ptr,
            &keys,
            2,
            FillValue::Constant(0.5),
            &attr,
            Execution::Sequential,
        );
        assert_eq!(&c[4..8], &[0.5, 0.5, 0.5, 0.5]);
    }

    /// The parallel build, over many edge-balanced chunks, has the sequential build's
    /// bits for every fill value, with rows of 0 to 60 entries, repeated edge ids and
    /// loops at any position of their row.
    #[test]
    fn the_parallel_build_has_the_sequential_bits() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        let (rows, dim, edges) = (3000usize, 3usize, 40_000u64);
        let mut row_ptr = vec![0usize];
        let mut keys = Vec::new();
        for r in 0..rows {
            let degree = next(61) as usize;
            let self_loop = next(4) != 0 && degree > 0;
            let at = next(degree.max(1) as u64) as usize;
            for k in 0..degree {
                if self_loop && k == at {
                    keys.push(-(r as i64) - 1);
                } else {
                    keys.push(next(edges) as i64);
                }
            }
            row_ptr.push(keys.len());
        }
        assert!(keys.len() > 4 * EDGES_PER_CHUNK, "{} entries", keys.len());
        let attr: Vec<f32> = (0..edges as usize * dim)
            .map(|_| next(2001) as f32 / 100.0 - 10.0)
            .collect();
        for fill in [
            FillValue::Mean,
            FillValue::Add,
            FillValue::Mul,
            FillValue::Max,
            FillValue::Min,
            FillValue::Constant(0.25),
        ] {
            let build = |exec| entry_edge_attr(&row_ptr, &keys, dim, fill, &attr, exec);
            let (seq, par) = (build(Execution::Sequential), build(Execution::Parallel));
            assert_eq!(seq.len(), keys.len() * dim);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&seq), bits(&par), "{fill:?}");
            // A loop's row is its row's reduction: spot-check the mean of row 0's others.
            if fill == FillValue::Mean {
                for r in 0..rows {
                    let (a, b) = (row_ptr[r], row_ptr[r + 1]);
                    if let Some(l) = (a..b).find(|&e| keys[e] < 0) {
                        let others: Vec<usize> = (a..b).filter(|&e| keys[e] >= 0).collect();
                        for c in 0..dim {
                            let want = if others.is_empty() {
                                0.0
                            } else {
                                others
                                    .iter()
                                    .map(|&e| attr[keys[e] as usize * dim + c] as f64)
                                    .sum::<f64>()
                                    / others.len() as f64
                            };
                            assert!((seq[l * dim + c] as f64 - want).abs() < 1e-4);
                        }
                    }
                }
            }
        }
    }
}
