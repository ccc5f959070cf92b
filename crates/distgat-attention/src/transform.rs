//! Dense part of a GAT layer: `z = x W^T` and the per-head scores
//! `s_src[n, h] = <z[n, h, :], att_src[h, :]>`, `s_dst[n, h] = <z[n, h, :], att_dst[h, :]>`.

use rayon::prelude::*;

use crate::buffer::RowBuffer;
use crate::exec::Execution;
use crate::model::GatLayer;

/// Rows per GEMM call. Fixed (not derived from the thread count) so chunking never changes
/// which rows are multiplied together; matrixmultiply's per-element sum order depends only
/// on the inner dimension anyway, so a row's bits do not depend on its neighbours.
const ROWS_PER_BLOCK: usize = 256;

/// Output buffers of [`transform`], row-major.
pub struct Transformed {
    /// `[rows, heads * channels]`, gathered at random by the aggregation.
    pub z: RowBuffer,
    /// `[rows, heads]`
    pub s_src: Vec<f32>,
    /// `[rows, heads]`
    pub s_dst: Vec<f32>,
}

impl Transformed {
    pub fn zeroed(rows: usize, layer: &GatLayer) -> Self {
        Transformed {
            z: RowBuffer::zeroed(rows * layer.hidden_width()),
            s_src: vec![0.0; rows * layer.heads],
            s_dst: vec![0.0; rows * layer.heads],
        }
    }
}

/// Transforms `x` (`[rows, in_features]`, row-major) into the caller's buffers.
pub fn transform_into(layer: &GatLayer, x: &[f32], exec: Execution, out: &mut Transformed) {
    transform_rows_into(layer, x, exec, &mut out.z, &mut out.s_src, &mut out.s_dst);
}

/// [`transform_into`] on plain slices: `z` is `[rows, heads * channels]`, the scores are
/// `[rows, heads]` (so a worker can transform its owned rows into the front of buffers
/// that also hold its halo rows).
pub fn transform_rows_into(
    layer: &GatLayer,
    x: &[f32],
    exec: Execution,
    z: &mut [f32],
    s_src: &mut [f32],
    s_dst: &mut [f32],
) {
    let f = layer.in_features;
    let hc = layer.hidden_width();
    let h = layer.heads;
    let rows = s_src.len() / h;
    assert_eq!(x.len(), rows * f, "transform: x is not [rows, in_features]");
    assert_eq!(z.len(), rows * hc, "transform: z buffer size");
    assert_eq!(s_src.len(), rows * h, "transform: s_src buffer size");
    assert_eq!(s_dst.len(), rows * h, "transform: s_dst buffer size");
    if rows == 0 {
        return;
    }
    let block = |b: Block<'_>| {
        let m = b.s_src.len() / h;
        let x = &x[b.first_row * f..(b.first_row + m) * f];
        gemm_rows(m, f, hc, x, &layer.weight_t, b.z);
        scores(layer, b.z, b.s_src, b.s_dst);
    };
    let work: Vec<Block<'_>> = z
        .chunks_mut(ROWS_PER_BLOCK * hc)
        .zip(s_src.chunks_mut(ROWS_PER_BLOCK * h))
        .zip(s_dst.chunks_mut(ROWS_PER_BLOCK * h))
        .enumerate()
        .map(|(k, ((z, s_src), s_dst))| Block {
            first_row: k * ROWS_PER_BLOCK,
            z,
            s_src,
            s_dst,
        })
        .collect();
    match exec {
        Execution::Sequential => work.into_iter().for_each(block),
        Execution::Parallel => work.into_par_iter().for_each(block),
    }
}

/// The output rows one GEMM call fills.
struct Block<'a> {
    first_row: usize,
    z: &'a mut [f32],
    s_src: &'a mut [f32],
    s_dst: &'a mut [f32],
}

/// `c[m, n] = a[m, k] * b[k, n]`, all row-major and contiguous.
fn gemm_rows(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    assert_eq!(c.len(), m * n);
    if k == 0 {
        c.fill(0.0);
        return;
    }
    // SAFETY: matrixmultiply reads a[i*k + p] for i < m, p < k, reads b[p*n + j] for
    // p < k, j < n, and writes c[i*n + j] for i < m, j < n (row strides k, n, n and column
    // stride 1, as passed). The asserts above prove all those offsets are inside the
    // three slices; `c` is a unique borrow, so it aliases neither `a` nor `b`. With
    // beta = 0, c's previous contents are never read (matrixmultiply documents that).
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Per-row, per-head attention scores of the transformed rows `z`.
fn scores(layer: &GatLayer, z: &[f32], s_src: &mut [f32], s_dst: &mut [f32]) {
    let c = layer.channels;
    let hc = layer.hidden_width();
    for ((zrow, srow), drow) in z
        .chunks_exact(hc)
        .zip(s_src.chunks_exact_mut(layer.heads))
        .zip(s_dst.chunks_exact_mut(layer.heads))
    {
        for (h, (s, d)) in srow.iter_mut().zip(drow.iter_mut()).enumerate() {
            let zh = &zrow[h * c..(h + 1) * c];
            *s = dot(zh, &layer.att_src[h * c..(h + 1) * c]);
            *d = dot(zh, &layer.att_dst[h * c..(h + 1) * c]);
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |acc, (x, y)| acc + x * y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_transformed_alone_has_the_same_bits_as_in_a_full_gemm() {
        // Owner computes: a worker transforms only its own rows, in blocks that differ
        // from the single-process engine's; the bits of each row must not change.
        let (f, h, c, n) = (37, 4, 8, 700);
        let w: Vec<f32> = (0..h * c * f)
            .map(|i| ((i * 7919) % 1000) as f32 / 997.0 - 0.5)
            .collect();
        let att: Vec<f32> = (0..h * c).map(|i| (i as f32 * 0.37).sin()).collect();
        let layer = GatLayer::from_pyg(f, h, c, true, 0.2, true, &w, att.clone(), att, vec![]);
        let x: Vec<f32> = (0..n * f)
            .map(|i| ((i * 104_729) % 2000) as f32 / 1999.0 - 0.5)
            .collect();
        let mut full = Transformed::zeroed(n, &layer);
        transform_into(&layer, &x, Execution::Parallel, &mut full);
        for first in [0, 3, 255, 256, 699] {
            let rows = (n - first).min(5);
            let mut part = Transformed::zeroed(rows, &layer);
            transform_into(
                &layer,
                &x[first * f..(first + rows) * f],
                Execution::Sequential,
                &mut part,
            );
            let hc = h * c;
            let want = &full.z[first * hc..(first + rows) * hc];
            assert!(
                part.z
                    .iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "rows from {first}"
            );
            let want = &full.s_src[first * h..(first + rows) * h];
            assert!(part
                .s_src
                .iter()
                .zip(want)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
