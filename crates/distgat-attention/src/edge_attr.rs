//! Edge attributes per CSR entry, with PyG's self-loop fill.
//!
//! PyG's `GATConv`/`GATv2Conv` with `add_self_loops` first remove every input loop i -> i
//! with its attribute row, then append one loop per node whose attribute is
//! `scatter(edge_attr, target, reduce=fill_value)` over the remaining edges into that node
//! (`torch_geometric.utils.add_self_loops`; for a node without incoming edges 0, except 1
//! for `'mul'`, whose product PyG starts from ones), or the constant `fill_value`. The remaining edges into node i are exactly the other entries of
//! its CSR row, so the fill is computed row by row, on the owner, in CSR order.

use crate::kind::FillValue;

/// Builds the `[entries, dim]` attribute rows of a CSR whose entry `e` came from input
/// edge `keys[e]` (`>= 0`) or is the added self loop of its row (`< 0`). `attr` is the
/// graph's `[E, dim]` edge attributes, row-major.
pub fn entry_edge_attr(
    row_ptr: &[usize],
    keys: &[i64],
    dim: usize,
    fill: FillValue,
    attr: &[f32],
) -> Vec<f32> {
    let mut out = vec![0f32; keys.len() * dim];
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
        for e in a..b {
            if keys[e] >= 0 {
                let k = keys[e] as usize;
                let row = &attr[k * dim..(k + 1) * dim];
                out[e * dim..(e + 1) * dim].copy_from_slice(row);
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
        let loop_row: Vec<f32> = match fill {
            FillValue::Constant(c) => vec![c; dim],
            // PyG starts the product from ones (`new_ones(..).scatter_reduce_(prod)`),
            // so a node without incoming edges gets 1.
            FillValue::Mul => reduced.clone(),
            // The others start from zeros (`include_self=False` for max/min).
            _ if count == 0 => vec![0.0; dim],
            FillValue::Mean => reduced.iter().map(|&s| s / count as f32).collect(),
            _ => reduced.clone(),
        };
        for e in a..b {
            if keys[e] < 0 {
                out[e * dim..(e + 1) * dim].copy_from_slice(&loop_row);
            }
        }
    }
    out
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
        let mean = entry_edge_attr(&row_ptr, &keys, 2, FillValue::Mean, &attr);
        assert_eq!(mean, [3.0, 5.0, 2.0, 4.0, 2.5, 4.5, 0.0, 0.0, 1.0, -1.0]);
        let add = entry_edge_attr(&row_ptr, &keys, 2, FillValue::Add, &attr);
        assert_eq!(&add[4..6], &[5.0, 9.0]);
        let max = entry_edge_attr(&row_ptr, &keys, 2, FillValue::Max, &attr);
        assert_eq!(&max[4..8], &[3.0, 5.0, 0.0, 0.0]);
        let min = entry_edge_attr(&row_ptr, &keys, 2, FillValue::Min, &attr);
        assert_eq!(&min[4..6], &[2.0, 4.0]);
        let mul = entry_edge_attr(&row_ptr, &keys, 2, FillValue::Mul, &attr);
        assert_eq!(&mul[4..8], &[6.0, 20.0, 1.0, 1.0]);
        let c = entry_edge_attr(&row_ptr, &keys, 2, FillValue::Constant(0.5), &attr);
        assert_eq!(&c[4..8], &[0.5, 0.5, 0.5, 0.5]);
    }
}
