//! Pass 2 of the softmax-attention kinds (GATConv, GATv2Conv, TransformerConv): one
//! target row's weighted sum of source rows,
//! `acc[h*C + e] = sum_k w[k, h] * source[sources[k], offset + h*C + e]`
//! over its CSR entries `k` in order, where `w` are the softmax numerators of pass 1
//! (`exp(e - max)`; the caller divides by their sum afterwards, as PyG's `softmax` then
//! `aggregate` do).
//!
//! Each term is added as `acc += w * z` (no fused multiply-add) in entry order, so every
//! way of running it here gives the bits of the plain per-head loop the kinds used
//! before (and PyG-exact outputs stay unchanged).

use distgat_graph::IncomingCsr;

use crate::kind::prefetch_ahead_to_l2;

/// One target row's pass 2 over the row's CSR entries. With `L2_PREFETCH`, each step
/// prefetches the source row `ahead` entries on into L2 (for rows pass 1 did not read:
/// GATConv's wide rows, whose scores come from the `[N, H]` table); without it the rows
/// are expected in cache already (pass 1 read them).
pub(crate) struct WeightedSum<'a, const L2_PREFETCH: bool> {
    pub(crate) csr: &'a IncomingCsr,
    /// The CSR entry of `sources[0]`.
    pub(crate) row_start: usize,
    /// Entries ahead to prefetch into L2 ([`crate::kind::l2_prefetch_distance`]); not
    /// read without `L2_PREFETCH`.
    pub(crate) ahead: usize,
    pub(crate) sources: &'a [u32],
    /// `[sources.len(), H]` softmax numerators.
    pub(crate) weights: &'a [f32],
    /// `[N, width]` source rows.
    pub(crate) source: &'a [f32],
    pub(crate) width: usize,
    /// Column of a source row where the summed `H*C` values start (TransformerConv's
    /// value rows follow its key rows: `offset = H*C`; else 0).
    pub(crate) offset: usize,
}

impl<'a> WeightedSum<'a, false> {
    /// Over source rows that pass 1 already read (so no prefetch): GATv2Conv's `x_l`
    /// rows (`offset` 0) and TransformerConv's value rows (`offset = H*C`).
    pub(crate) fn over_read_rows(
        csr: &'a IncomingCsr,
        row_start: usize,
        sources: &'a [u32],
        weights: &'a [f32],
        source: &'a [f32],
        width: usize,
        offset: usize,
    ) -> Self {
        WeightedSum {
            csr,
            row_start,
            ahead: 0,
            sources,
            weights,
            source,
            width,
            offset,
        }
    }
}

impl<const L2_PREFETCH: bool> WeightedSum<'_, L2_PREFETCH> {
    #[inline(always)]
    fn prefetch(&self, k: usize) {
        if L2_PREFETCH {
            let (ahead, width) = (self.ahead, self.width);
            prefetch_ahead_to_l2(self.csr, self.row_start + k, ahead, self.source, width);
        }
    }

    /// Any shape: the `[H*C]` accumulator `acc` lives in memory (L1).
    #[inline(always)]
    pub(crate) fn run_in_memory(&self, h: usize, c: usize, acc: &mut [f32]) {
        acc.fill(0.0);
        let (sources, width, offset) = (self.sources, self.width, self.offset);
        for (k, (&j, w)) in sources.iter().zip(self.weights.chunks_exact(h)).enumerate() {
            self.prefetch(k);
            let start = j as usize * width + offset;
            let z = &self.source[start..start + h * c];
            for head in 0..h {
                let wh = w[head];
                let acc = &mut acc[head * c..(head + 1) * c];
                for (a, &zv) in acc.iter_mut().zip(&z[head * c..(head + 1) * c]) {
                    *a += wh * zv;
                }
            }
        }
    }

    /// `HC = H*C` known at compile time and `C` a multiple of `L`: the accumulator is a
    /// local `[f32; HC]` that LLVM keeps in vector registers (8 AVX-512 registers at
    /// `HC = 128`) instead of loading and storing it for every entry. Block `b` of `L`
    /// lanes belongs to head `head_of[b]`. The same additions in the same order as
    /// [`WeightedSum::run_in_memory`], hence the same bits. At 1M nodes / 10M edges
    /// with GATConv's 4 x 32 heads this took the aggregation from 1.29-1.33 s to
    /// 1.19-1.22 s (docs/performance.md, seventeenth session).
    #[inline(always)]
    fn run_in_registers<const HC: usize, const L: usize>(
        &self,
        h: usize,
        head_of: &[u8],
        acc: &mut [f32],
    ) {
        let mut sum = [0f32; HC];
        let (sources, width, offset) = (self.sources, self.width, self.offset);
        for (k, (&j, w)) in sources.iter().zip(self.weights.chunks_exact(h)).enumerate() {
            self.prefetch(k);
            let start = j as usize * width + offset;
            let z: &[f32; HC] = self.source[start..start + HC]
                .try_into()
                .expect("a range of HC elements");
            for ((a, z), &head) in sum.chunks_exact_mut(L).zip(z.chunks_exact(L)).zip(head_of) {
                let wh = w[usize::from(head)];
                for (a, &zv) in a.iter_mut().zip(z) {
                    *a += wh * zv;
                }
            }
        }
        acc[..HC].copy_from_slice(&sum);
    }
}

/// The head shapes whose pass 2 runs with its accumulator in registers
/// ([`WeightedSum::run_in_registers`]): `H*C` of 128 or 256 floats, `C` a multiple of 8.
/// (GATConv's narrower rows, whose scores come from the rows, keep their own plain
/// loop: see `GatConv::aggregate_rows_scored`.)
#[derive(Clone, Copy)]
pub(crate) struct RegisterShape {
    hc: usize,
    /// Lanes per block: 16 when `C` is a multiple of 16, else 8.
    lanes: usize,
    /// `head_of[b]`: the head of lanes `b*lanes..(b+1)*lanes`.
    head_of: [u8; 32],
}

impl RegisterShape {
    pub(crate) fn of(hc: usize, c: usize) -> Option<Self> {
        let lanes = if c.is_multiple_of(16) { 16 } else { 8 };
        if !matches!(hc, 128 | 256) || !c.is_multiple_of(lanes) {
            return None;
        }
        let mut head_of = [0u8; 32];
        for (b, head) in head_of.iter_mut().enumerate().take(hc / lanes) {
            *head = u8::try_from(b * lanes / c).expect("at most 32 heads here");
        }
        Some(Self { hc, lanes, head_of })
    }

    /// `acc[..H*C]` = the weighted sum, with the accumulator in registers.
    #[inline(always)]
    pub(crate) fn weighted_sum<const P: bool>(
        &self,
        sum: &WeightedSum<'_, P>,
        h: usize,
        acc: &mut [f32],
    ) {
        let head_of = &self.head_of[..self.hc / self.lanes];
        match (self.hc, self.lanes) {
            (128, 8) => sum.run_in_registers::<128, 8>(h, head_of, acc),
            (128, 16) => sum.run_in_registers::<128, 16>(h, head_of, acc),
            (256, 8) => sum.run_in_registers::<256, 8>(h, head_of, acc),
            (256, 16) => sum.run_in_registers::<256, 16>(h, head_of, acc),
            _ => unreachable!("RegisterShape::of admits only these shapes"),
        }
    }
}

/// Pass 2 of one row: in registers when `shape` admits the heads, else in memory.
#[inline(always)]
pub(crate) fn weighted_sum<const P: bool>(
    shape: Option<RegisterShape>,
    sum: &WeightedSum<'_, P>,
    h: usize,
    c: usize,
    acc: &mut [f32],
) {
    match shape {
        Some(shape) => shape.weighted_sum(sum, h, acc),
        None => sum.run_in_memory(h, c, acc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::l2_prefetch_distance;
    use crate::kind::tests::stream;

    /// Pass 2 with the accumulator in registers gives the in-memory loop's bits for every
    /// admitted shape (both lane widths, with and without the L2 prefetch, summed values
    /// at the start of a row or after an offset), and both agree with a float64 sum;
    /// shapes outside the list are not admitted.
    #[test]
    fn weighted_sum_in_registers_has_the_in_memory_bits() {
        let admitted = [
            (4, 32),
            (16, 8),
            (8, 16),
            (1, 128),
            (32, 8),
            (4, 64),
            (2, 128),
            (1, 256),
        ];
        for &(h, c) in &admitted {
            let hc = h * c;
            // GATConv and GATv2Conv rows (`H*C`, offset 0); TransformerConv's key ‖ value
            // rows (`2*H*C`, the values at `H*C`); a row with a gap after the values.
            for (width, offset) in [(hc, 0), (2 * hc, hc), (hc + 16, 8)] {
                let shape = RegisterShape::of(hc, c).expect("admitted");
                let mut next = stream((h * 1000 + c + width) as u64);
                let n = 37;
                // Rows of 0 to 40 entries with repeats; the prefetches reach across row
                // ends and past the last entry.
                let mut row_ptr = vec![0usize];
                let mut col = Vec::new();
                for i in 0..n {
                    let len = (i * 7) % 41;
                    col.extend((0..len).map(|k| ((i * 13 + k * k * 5) % n) as u32));
                    row_ptr.push(col.len());
                }
                let csr = IncomingCsr {
                    num_nodes: n,
                    row_ptr,
                    col,
                    self_loops_added: false,
                    kept_edges: 0,
                };
                let source: Vec<f32> = (0..n * width).map(|_| next() * 3.0).collect();
                for i in 0..n {
                    let (start, end) = (csr.row_ptr[i], csr.row_ptr[i + 1]);
                    let sources = &csr.col[start..end];
                    let weights: Vec<f32> = (0..sources.len() * h).map(|_| next().abs()).collect();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let with_l2 = WeightedSum::<true> {
                        csr: &csr,
                        row_start: start,
                        ahead: l2_prefetch_distance(width),
                        sources,
                        weights: &weights,
                        source: &source,
                        width,
                        offset,
                    };
                    let plain = WeightedSum::over_read_rows(
                        &csr, start, sources, &weights, &source, width, offset,
                    );
                    let mut in_memory = vec![f32::NAN; hc];
                    with_l2.run_in_memory(h, c, &mut in_memory);
                    for (label, got) in [
                        ("registers, L2", {
                            let mut a = vec![f32::NAN; hc];
                            shape.weighted_sum(&with_l2, h, &mut a);
                            a
                        }),
                        ("registers", {
                            let mut a = vec![f32::NAN; hc];
                            weighted_sum(Some(shape), &plain, h, c, &mut a);
                            a
                        }),
                        ("memory", {
                            let mut a = vec![f32::NAN; hc];
                            weighted_sum(None, &plain, h, c, &mut a);
                            a
                        }),
                    ] {
                        assert_eq!(
                            bits(&got),
                            bits(&in_memory),
                            "{h} x {c}, width {width}, {label}, row {i}"
                        );
                    }
                    for e in 0..hc {
                        let reference: f64 = sources
                            .iter()
                            .enumerate()
                            .map(|(k, &j)| {
                                f64::from(weights[k * h + e / c])
                                    * f64::from(source[j as usize * width + offset + e])
                            })
                            .sum();
                        let got = f64::from(in_memory[e]);
                        assert!(
                            (got - reference).abs() <= 1e-5 * (1.0 + reference.abs()),
                            "{h} x {c}, width {width}, row {i}, lane {e}: {got} vs {reference}"
                        );
                    }
                }
            }
        }
        // Not admitted: another width, C not a multiple of 8.
        assert!(RegisterShape::of(96, 32).is_none());
        assert!(RegisterShape::of(64, 16).is_none());
        assert!(RegisterShape::of(32, 4).is_none());
        assert!(RegisterShape::of(512, 64).is_none());
        assert!(RegisterShape::of(128, 4).is_none());
    }
}
