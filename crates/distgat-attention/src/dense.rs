//! Dense linear maps (`torch.nn.Linear` / PyG `Linear`): `y = x W^T (+ b)` through
//! matrixmultiply's blocked SGEMM, written into strided caller buffers so one row of a
//! layer's source or target buffer can hold several maps side by side.

use crate::exec::Execution;
use rayon::prelude::*;

/// Rows per GEMM call. Fixed (not derived from the thread count) so chunking never changes
/// which rows are multiplied together; matrixmultiply's per-element sum order depends only
/// on the inner dimension anyway, so a row's bits do not depend on its neighbours.
pub const ROWS_PER_BLOCK: usize = 256;

/// A linear map stored for row-major GEMM.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    /// `weight` transposed: row-major `[in_features, out_features]`.
    pub weight_t: Vec<f32>,
    /// `[out_features]`, or empty when the map has no bias.
    pub bias: Vec<f32>,
}

impl Linear {
    /// From PyTorch's layout: `weight` is row-major `[out_features, in_features]`, `bias`
    /// `[out_features]` or empty.
    pub fn from_torch(
        weight: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Vec<f32>,
    ) -> Self {
        assert_eq!(
            weight.len(),
            out_features * in_features,
            "Linear: weight shape"
        );
        assert!(
            bias.is_empty() || bias.len() == out_features,
            "Linear: bias shape"
        );
        let mut weight_t = vec![0f32; weight.len()];
        for o in 0..out_features {
            for f in 0..in_features {
                weight_t[f * out_features + o] = weight[o * in_features + f];
            }
        }
        Linear {
            in_features,
            out_features,
            weight_t,
            bias,
        }
    }

    /// `y[i, offset..offset + out_features] = x[i, :] W^T + b` for the `m` rows of `x`
    /// (`[m, in_features]`, contiguous); `y` rows are `ldy` floats apart.
    pub fn apply(&self, x: &[f32], y: &mut [f32], offset: usize, ldy: usize) {
        let m = x.len() / self.in_features.max(1);
        gemm_strided(
            m,
            self.in_features,
            self.out_features,
            x,
            &self.weight_t,
            y,
            offset,
            ldy,
        );
        if !self.bias.is_empty() {
            for row in y.chunks_mut(ldy).take(m) {
                for (v, b) in row[offset..offset + self.out_features]
                    .iter_mut()
                    .zip(&self.bias)
                {
                    *v += b;
                }
            }
        }
    }

    /// `y = x W^T` for one row (used for edge attributes inside kernels), summing over the
    /// inner dimension in order.
    #[inline(always)]
    pub fn apply_row_no_bias(&self, x: &[f32], y: &mut [f32]) {
        y.fill(0.0);
        for (f, &xv) in x.iter().enumerate() {
            let w = &self.weight_t[f * self.out_features..(f + 1) * self.out_features];
            for (o, &wv) in y.iter_mut().zip(w) {
                *o += xv * wv;
            }
        }
    }
}

/// What [`for_each_row_block`] runs per block: `(x rows, output rows a, output rows b)`.
pub type RowBlockFn<'a> = dyn Fn(&[f32], &mut [f32], &mut [f32]) + Sync + 'a;

/// Runs `block(x_rows, a_rows, b_rows)` over blocks of [`ROWS_PER_BLOCK`] rows of
/// `x` (`[rows, in_width]`) and of each output buffer (`[rows, width_k]`), sequentially or
/// on the rayon pool. Block boundaries never depend on the thread count.
pub fn for_each_row_block(
    x: &[f32],
    in_width: usize,
    outputs: [(&mut [f32], usize); 2],
    exec: Execution,
    block: &RowBlockFn<'_>,
) {
    let rows = x.len().checked_div(in_width).unwrap_or(0);
    if rows == 0 {
        return;
    }
    let [(a, wa), (b, wb)] = outputs;
    let xs = x.chunks(ROWS_PER_BLOCK * in_width);
    let a_chunks: Vec<&mut [f32]> = if wa == 0 {
        (0..xs.len()).map(|_| &mut [][..]).collect()
    } else {
        a.chunks_mut(ROWS_PER_BLOCK * wa).collect()
    };
    let b_chunks: Vec<&mut [f32]> = if wb == 0 {
        (0..xs.len()).map(|_| &mut [][..]).collect()
    } else {
        b.chunks_mut(ROWS_PER_BLOCK * wb).collect()
    };
    let work: Vec<_> = xs.zip(a_chunks).zip(b_chunks).collect();
    match exec {
        Execution::Sequential => work.into_iter().for_each(|((x, a), b)| block(x, a, b)),
        Execution::Parallel => work.into_par_iter().for_each(|((x, a), b)| block(x, a, b)),
    }
}

/// `c[i * ldc + offset + j] = sum_p a[i * k + p] * b[p * n + j]` for `i < m`, `j < n`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    offset: usize,
    ldc: usize,
) {
    assert_eq!(a.len(), m * k, "gemm: a is not [m, k]");
    assert_eq!(b.len(), k * n, "gemm: b is not [k, n]");
    assert!(offset + n <= ldc, "gemm: columns beyond the row stride");
    assert!(c.len() >= m * ldc, "gemm: c holds fewer than m rows");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            row[offset..offset + n].fill(0.0);
        }
        return;
    }
    // SAFETY: matrixmultiply reads a[i*k + p] for i < m, p < k and b[p*n + j] for p < k,
    // j < n (row strides k and n, column stride 1, as passed), and writes
    // c[offset + i*ldc + j] for i < m, j < n. The asserts above prove a and b have exactly
    // those sizes and that offset + (m-1)*ldc + n <= m*ldc <= c.len(), so every access is
    // inside its slice. `c` is a unique borrow, so it aliases neither `a` nor `b`. With
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
            c.as_mut_ptr().add(offset),
            ldc as isize,
            1,
        );
    }
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |acc, (x, y)| acc + x * y)
}

/// Row and column strides of a matrix operand, in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strides {
    pub row: usize,
    pub col: usize,
}

impl Strides {
    /// Row-major with rows `ld` elements apart.
    pub const fn rows(ld: usize) -> Self {
        Strides { row: ld, col: 1 }
    }
    /// The transpose of a row-major matrix with rows `ld` elements apart.
    pub const fn transposed(ld: usize) -> Self {
        Strides { row: 1, col: ld }
    }
}

/// Largest offset `(rows - 1) * s.row + (cols - 1) * s.col` an operand touches, or `None`
/// on overflow.
fn last_offset(rows: usize, cols: usize, s: Strides) -> Option<usize> {
    (rows - 1)
        .checked_mul(s.row)?
        .checked_add((cols - 1).checked_mul(s.col)?)
}

/// `c[i * ldc + j] = alpha * sum_p a(i, p) * b(p, j)` for `i < m`, `j < n`, with
/// `a(i, p) = a[i * sa.row + p * sa.col]` (`[m, k]`) and `b(p, j) = b[p * sb.row + j * sb.col]`
/// (`[k, n]`): matrixmultiply's SGEMM on strided views, so a head's columns of a
/// `[N, 3E]` projection (or its transpose) are used in place. As with [`gemm_strided`], the
/// sum order of an element depends only on `k`, never on `m`, `n` or which rows share a call.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_views(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    sa: Strides,
    b: &[f32],
    sb: Strides,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n, "gemm: c's row stride is below n");
    let c_last = last_offset(m, n, Strides::rows(ldc)).expect("gemm: c overflows");
    assert!(c_last < c.len(), "gemm: c holds fewer than m rows");
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            row[..n].fill(0.0);
        }
        return;
    }
    let a_last = last_offset(m, k, sa).expect("gemm: a overflows");
    let b_last = last_offset(k, n, sb).expect("gemm: b overflows");
    assert!(a_last < a.len(), "gemm: a is smaller than its [m, k] view");
    assert!(b_last < b.len(), "gemm: b is smaller than its [k, n] view");
    assert!(
        [sa.row, sa.col, sb.row, sb.col, ldc]
            .iter()
            .all(|&s| s <= isize::MAX as usize),
        "gemm: stride beyond isize"
    );
    // SAFETY: matrixmultiply reads a[i*sa.row + p*sa.col] (i < m, p < k) and
    // b[p*sb.row + j*sb.col] (p < k, j < n), and writes c[i*ldc + j] (i < m, j < n). The
    // asserts above prove the largest such offsets are inside a, b and c, and that the
    // strides fit isize. Since ldc >= n, distinct (i, j) write distinct elements of c. `c`
    // is a unique borrow, so it aliases neither `a` nor `b`. With beta = 0, c's previous
    // contents are never read (matrixmultiply documents that).
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            sa.row as isize,
            sa.col as isize,
            b.as_ptr(),
            sb.row as isize,
            sb.col as isize,
            0.0,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
}

/// `c = a · b` for row-major float64 `a` (`[m, k]`), `b` (`[k, n]`) and `c` (`[m, n]`), by
/// matrixmultiply's DGEMM (the small landmark matrices of Nyström attention).
pub fn dgemm(m: usize, k: usize, n: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
    assert_eq!(a.len(), m * k, "dgemm: a is not [m, k]");
    assert_eq!(b.len(), k * n, "dgemm: b is not [k, n]");
    assert_eq!(c.len(), m * n, "dgemm: c is not [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    // SAFETY: row-major operands with row strides k, n and n and column stride 1; the
    // asserts above prove a, b and c hold exactly [m, k], [k, n] and [m, n] elements, so
    // every access is inside its slice; `c` is a unique borrow (no aliasing), and with
    // beta = 0 its previous contents are never read.
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::dgemm(
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
