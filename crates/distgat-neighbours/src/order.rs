//! A spatial (Morton, Z-order) ordering of the points for the k-d tree path.
//!
//! The tree answers queries much faster when consecutive queries are close in space: the
//! cells and points one query touches are still in cache for the next. The points are
//! therefore copied in Morton order (row `r` of the copy is point `perm[r]`), searched with
//! their global ids `perm` (ties go to the lower *global* id, sources are global ids, see
//! [`apply_rule_ids`](crate::search::apply_rule_ids)), and the resulting CSR is put back in
//! the original centre order. Exact distances are computed from the same float32 values,
//! so every centre gets exactly the edges the unordered search gives it: the order changes
//! the time only.

use rayon::prelude::*;

use crate::{Neighbours, Points};

/// Centres per parallel task when gathering the CSR back.
const GATHER_BLOCK: usize = 4096;

/// The Morton order of `points`: `perm[r]` is the point at rank `r`. Coordinates are
/// quantised on `64 / D` bits (at most 21) within the bounding box; ties in the key go to
/// the lower index, so the order is a function of the points alone.
pub(crate) fn morton_order(points: &Points) -> Vec<u32> {
    let (n, dim) = (points.len(), points.dim());
    if n == 0 {
        return Vec::new();
    }
    let bits = (64 / dim).clamp(1, 21) as u32;
    let mut lo = vec![f64::INFINITY; dim];
    let mut hi = vec![f64::NEG_INFINITY; dim];
    for i in 0..n {
        for (t, &v) in points.row(i).iter().enumerate() {
            lo[t] = lo[t].min(v as f64);
            hi[t] = hi[t].max(v as f64);
        }
    }
    let top = ((1u64 << bits) - 1) as f64;
    let scale: Vec<f64> = lo
        .iter()
        .zip(&hi)
        .map(|(&l, &h)| if h > l { top / (h - l) } else { 0.0 })
        .collect();
    let key = |i: usize| -> u64 {
        let row = points.row(i);
        let mut q = [0u64; 64];
        for t in 0..dim {
            // In [0, top] (float to int casts saturate); only the order matters.
            q[t] = ((row[t] as f64 - lo[t]) * scale[t]) as u64;
        }
        let mut key = 0u64;
        for b in (0..bits).rev() {
            for &qt in &q[..dim] {
                key = (key << 1) | ((qt >> b) & 1);
            }
        }
        key
    };
    let mut keyed: Vec<(u64, u32)> = (0..n).into_par_iter().map(|i| (key(i), i as u32)).collect();
    keyed.par_sort_unstable();
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// The rows `perm` of `points`, in that order.
pub(crate) fn permuted(points: &Points, perm: &[u32]) -> Points {
    let dim = points.dim();
    let mut values = vec![0f32; points.values().len()];
    values
        .par_chunks_mut(dim * GATHER_BLOCK)
        .zip(perm.par_chunks(GATHER_BLOCK))
        .for_each(|(out, rows)| {
            for (o, &i) in out.chunks_mut(dim).zip(rows) {
                o.copy_from_slice(points.row(i as usize));
            }
        });
    Points::new(points.len(), dim, values, points.origin())
        .expect("a permutation of valid points is valid")
}

/// `nb` holds the centres in the order `perm` (its centre `r` is point `perm[r]`); returns
/// the same CSR with the centres in their own order `0..N`.
pub(crate) fn unpermuted(nb: &Neighbours, perm: &[u32]) -> Neighbours {
    let n = perm.len();
    let mut inv = vec![0u32; n];
    for (r, &i) in perm.iter().enumerate() {
        inv[i as usize] = r as u32;
    }
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0u64);
    let mut total = 0u64;
    for &r in &inv {
        total += nb.offsets[r as usize + 1] - nb.offsets[r as usize];
        offsets.push(total);
    }
    let mut sources = vec![0u32; total as usize];
    // Split the output at block boundaries (known from the offsets), then fill the blocks
    // in parallel.
    let mut parts = Vec::with_capacity(n.div_ceil(GATHER_BLOCK));
    let mut rest = &mut sources[..];
    for start in (0..n).step_by(GATHER_BLOCK) {
        let end = (start + GATHER_BLOCK).min(n);
        let (part, tail) = rest.split_at_mut((offsets[end] - offsets[start]) as usize);
        parts.push((start..end, part));
        rest = tail;
    }
    parts.into_par_iter().for_each(|(centres, part)| {
        let mut at = 0;
        for i in centres {
            let of = nb.of(inv[i] as usize);
            part[at..at + of.len()].copy_from_slice(of);
            at += of.len();
        }
    });
    Neighbours { offsets, sources }
}
