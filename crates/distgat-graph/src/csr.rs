//! Incoming-edge CSR in PyG's edge order.
//!
//! Row `i` holds the sources of the edges into `i`, in the order the input lists them,
//! followed by `i`'s self loop when self loops are added. This per-row order is the
//! summation order of the kernels; it depends only on the input, never on threads or
//! partitions, which is what makes the output bitwise reproducible.
//!
//! The build is a stable counting sort by target, in two cache-sized steps on the current
//! rayon pool ([`blocked_counting_sort`]): the edges are first distributed, stably, into
//! blocks of consecutive target rows, then each block is sorted by row on its own. A
//! stable sort has one result, so the CSR does not depend on the threads.

use crate::edges::EdgeList;
use crate::error::{GraphError, Result};

/// Compressed sparse rows by destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCsr {
    pub num_nodes: usize,
    /// `row_ptr[i]..row_ptr[i + 1]` are the entries of row `i`.
    pub row_ptr: Vec<usize>,
    /// Source node of each entry.
    pub col: Vec<u32>,
    /// Whether every row ends with its self loop (PyG `add_self_loops=True`).
    pub self_loops_added: bool,
    /// Input edges kept: all of them, or all but the self loops when loops are re-added.
    pub kept_edges: usize,
}

impl IncomingCsr {
    /// Builds the CSR of `edges` over `num_nodes` nodes with PyG's self-loop handling:
    /// with `add_self_loops`, input self loops (every copy) are dropped and one loop per
    /// node appended; without, edges are used exactly as given (duplicates are kept in
    /// both cases). Ids must already be checked against `num_nodes` (callers name the
    /// file and the count's source); an id beyond it is still an error here, naming the
    /// edge, never a wrong row. The build holds 8 bytes per kept edge of temporary memory
    /// besides the CSR (see [`blocked_counting_sort`]).
    ///
    /// With `want_attention_order`, also returns for each attention edge in PyG's order
    /// (kept input edges in input order, then the loops of nodes 0..N) its CSR position.
    pub fn build(
        edges: &EdgeList,
        num_nodes: usize,
        add_self_loops: bool,
        want_attention_order: bool,
    ) -> Result<(Self, Option<Vec<usize>>)> {
        Self::build_with_scratch(
            edges,
            num_nodes,
            add_self_loops,
            want_attention_order,
            &mut Vec::new(),
        )
    }

    /// [`IncomingCsr::build`] whose temporary memory (8 bytes per kept edge) is the
    /// front of `scratch`, so a caller can hand that memory on afterwards instead of
    /// letting it be freed, and the next large array does not fault in fresh pages
    /// (`distgat infer` reads the features into it: on the test VM a fresh page costs
    /// more than the sort's own work, `docs/performance.md`, sixteenth session).
    /// `scratch`'s values on entry do not matter and on return are unspecified; when it
    /// holds fewer than two `f32`s per kept edge it is replaced by a new zeroed vector of
    /// that length. The CSR is the same as [`IncomingCsr::build`]'s, bit for bit.
    pub fn build_with_scratch(
        edges: &EdgeList,
        num_nodes: usize,
        add_self_loops: bool,
        want_attention_order: bool,
        scratch: &mut Vec<f32>,
    ) -> Result<(Self, Option<Vec<usize>>)> {
        if num_nodes > u32::MAX as usize {
            return Err(GraphError::argument(
                "graph",
                format!(
                    "{num_nodes} nodes: the single-process engine indexes nodes with 32 bits \
                     (at most {}); partition the graph across workers",
                    u32::MAX
                ),
            ));
        }
        let (src, dst) = (edges.src(), edges.dst());
        let keep = |k: usize| !(add_self_loops && src[k] == dst[k]);
        let (row_ptr, col, kept_edges) = blocked_counting_sort(
            src,
            dst,
            num_nodes,
            Rows::Incoming { add_self_loops },
            scratch,
        )?;
        // PyG's attention order needs, per kept edge, its CSR position: one sequential
        // pass (only when attention coefficients are written).
        let order = want_attention_order.then(|| {
            let mut order = Vec::with_capacity(col.len());
            let mut cursor = row_ptr[..num_nodes].to_vec();
            for (k, &d) in dst.iter().enumerate() {
                if keep(k) {
                    order.push(cursor[d as usize]);
                    cursor[d as usize] += 1;
                }
            }
            if add_self_loops {
                order.extend((0..num_nodes).map(|i| row_ptr[i + 1] - 1));
            }
            order
        });
        Ok((
            IncomingCsr {
                num_nodes,
                row_ptr,
                col,
                self_loops_added: add_self_loops,
                kept_edges,
            },
            order,
        ))
    }

    /// Per CSR entry, the input edge it came from (its column in the graph file), or
    /// `-(v + 1)` for the self loop added to node `v`. `edges` must be the list this CSR
    /// was built from. Edge attributes are gathered through these keys.
    pub fn entry_keys(&self, edges: &EdgeList) -> Vec<i64> {
        let (src, dst) = (edges.src(), edges.dst());
        let loops = self.self_loops_added;
        let row_ptr = &self.row_ptr;
        let ranges = row_ranges(self.num_nodes, src.len());
        let entry_ranges = entry_ranges(row_ptr, &ranges);
        let mut keys = vec![0i64; self.col.len()];
        let slices = split_by_rows(row_ptr, &entry_ranges, &mut keys);
        run_ranges(slices, |(lo, hi, out)| {
            let base = row_ptr[lo];
            let mut cursor = row_ptr[lo..hi].to_vec();
            for (k, &d) in dst.iter().enumerate() {
                let d = d as usize;
                if (lo..hi).contains(&d) && !(loops && src[k] == dst[k]) {
                    out[cursor[d - lo] - base] = k as i64;
                    cursor[d - lo] += 1;
                }
            }
            if loops {
                for i in lo..hi {
                    out[row_ptr[i + 1] - 1 - base] = -(i as i64) - 1;
                }
            }
        });
        keys
    }

    pub fn num_entries(&self) -> usize {
        self.col.len()
    }

    pub fn row(&self, i: usize) -> &[u32] {
        &self.col[self.row_ptr[i]..self.row_ptr[i + 1]]
    }

    pub fn max_degree(&self) -> usize {
        self.row_ptr
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

/// Input edges per chunk of [`blocked_counting_sort`]'s first step. Chunks are cut by
/// edge count only, never by the thread count.
const CHUNK_EDGES: usize = 1 << 18;

/// log2 of the rows per block of [`blocked_counting_sort`]: about 256 blocks, and at least
/// 256 rows each. At 1M nodes / 10M edges a block is 4096 rows with about 40k entries, so
/// its counters (32 KiB) and its part of `col` (160 KiB) stay in the L2 cache.
fn block_shift(num_nodes: usize) -> u32 {
    let bits = usize::BITS - num_nodes.saturating_sub(1).leading_zeros();
    bits.saturating_sub(8).max(8)
}

/// Which rows [`blocked_counting_sort`] builds from the edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Row `d` lists the source `s` of each edge `s -> d` ([`IncomingCsr`]).
    Incoming { add_self_loops: bool },
    /// Rows `s` and `d` list each other for each edge `s -> d` with `s != d`
    /// ([`undirected_adjacency`]).
    Undirected,
}

/// The undirected adjacency of `edges` over `num_nodes` nodes, `(offsets, entries)`:
/// row `v` (`entries[offsets[v]..offsets[v + 1]]`) lists, for every edge with `v` at one
/// end and another node at the other, that node, in input edge order (self loops left
/// out, duplicates kept). The same rows as the sequential
/// [`crate::reorder::undirected_offsets`] and [`crate::reorder::undirected_entries`]
/// give, built by [`blocked_counting_sort`] on the current rayon pool; it holds 8 bytes
/// per entry (twice the non-loop edges) of temporary memory besides its result, so the
/// partitioners, whose peak memory is bounded, keep the sequential build. Errors: an id
/// `>= num_nodes` names the first such edge.
pub fn undirected_adjacency(edges: &EdgeList, num_nodes: usize) -> Result<(Vec<usize>, Vec<u32>)> {
    if num_nodes > u32::MAX as usize {
        return Err(GraphError::argument(
            "graph",
            format!("{num_nodes} nodes: node ids are indexed with 32 bits here"),
        ));
    }
    let (offsets, entries, _) = blocked_counting_sort(
        edges.src(),
        edges.dst(),
        num_nodes,
        Rows::Undirected,
        &mut Vec::new(),
    )?;
    Ok((offsets, entries))
}

/// The stable counting sort of the edges by target: `(row_ptr, col, kept_edges)` of
/// [`IncomingCsr`] (row `i` = the sources of the kept edges into `i` in input order, then
/// `i` itself when `add_self_loops`; with it, every input self loop is dropped). With
/// [`Rows::Undirected`] each non-loop edge is two entries (one in each end's row) and
/// `kept_edges` counts entries; nothing is appended.
///
/// A plain counting sort scatters every edge to a random place in `col` (40 MB at 10M
/// edges) and bumps a random counter (8 MB at 1M nodes): two cache misses per edge per
/// pass. This does it in two passes whose random accesses stay in the caches:
///
/// 1. The edges are cut into contiguous chunks of [`CHUNK_EDGES`]. Each chunk counts its
///    kept edges per block of `2^block_shift` consecutive target rows (about 256 counters).
/// 2. A temporary array holds, for each block in turn, chunk 0's edges of that block,
///    then chunk 1's, and so on; each chunk copies its kept edges into its own disjoint
///    sub-slices in input order, as `[source, target]` (ids are below 2^32). So each
///    block's region lists the block's edges in input order. The array is the front of
///    `scratch`, viewed as pairs of `u32` (replaced by a zeroed vector when too short).
/// 3. Each block then counts its rows, writes its part of `row_ptr` (its first entry is
///    the sum of the earlier blocks' entries) and places its region's edges into its rows
///    in region order, then the loops.
///
/// Chunks and blocks depend only on the edge and node counts, the output of a stable sort
/// is unique, and every task writes its own slices, so the result is the same for any
/// thread count (tests/csr.rs checks it against a plain stable sort). Memory: 8 bytes per
/// kept edge for the temporary array, left in `scratch` for the caller.
///
/// Errors: an id `>= num_nodes` names the first such edge (callers check ids against
/// the feature rows first, so this is a guard, not the usual report).
fn blocked_counting_sort(
    src: &[u64],
    dst: &[u64],
    num_nodes: usize,
    rows: Rows,
    scratch: &mut Vec<f32>,
) -> Result<(Vec<usize>, Vec<u32>, usize)> {
    use rayon::prelude::*;
    let add_self_loops = rows
        == Rows::Incoming {
            add_self_loops: true,
        };
    // The entries edge `s -> d` adds, as (row, value), in this order.
    #[inline(always)]
    fn entries(rows: Rows, s: u64, d: u64, mut put: impl FnMut(u64, u64)) {
        match rows {
            Rows::Incoming { add_self_loops } => {
                if !(add_self_loops && s == d) {
                    put(d, s);
                }
            }
            Rows::Undirected => {
                if s != d {
                    put(s, d);
                    put(d, s);
                }
            }
        }
    }
    let shift = block_shift(num_nodes);
    let blocks = num_nodes.div_ceil(1 << shift);
    let n = num_nodes as u64;
    let chunks: Vec<(usize, usize)> = (0..src.len().div_ceil(CHUNK_EDGES))
        .map(|c| (c * CHUNK_EDGES, ((c + 1) * CHUNK_EDGES).min(src.len())))
        .collect();
    // Step 1: per chunk, kept edges per block, or the chunk's first edge with a bad id.
    let counts: Vec<std::result::Result<Vec<usize>, usize>> = chunks
        .par_iter()
        .map(|&(a, b)| {
            let mut count = vec![0usize; blocks];
            for (k, (&s, &d)) in src[a..b].iter().zip(&dst[a..b]).enumerate() {
                if s >= n || d >= n {
                    return Err(a + k);
                }
                entries(rows, s, d, |row, _| count[(row >> shift) as usize] += 1);
            }
            Ok(count)
        })
        .collect();
    let mut per_chunk = Vec::with_capacity(counts.len());
    for c in counts {
        match c {
            Ok(c) => per_chunk.push(c),
            Err(k) => {
                return Err(GraphError::argument(
                    "graph",
                    format!(
                        "edge {k}: {} -> {} has an id beyond the {num_nodes} nodes",
                        src[k], dst[k]
                    ),
                ))
            }
        }
    }
    let block_edges: Vec<usize> = (0..blocks)
        .map(|b| per_chunk.iter().map(|c| c[b]).sum())
        .collect();
    let kept_edges: usize = block_edges.iter().sum();
    // Step 2: the block-major temporary array, cut into each chunk's sub-slices.
    // Any bits are a valid f32, so the scratch's old values need no clearing: every pair
    // below is written before it is read.
    if scratch.len() < 2 * kept_edges {
        *scratch = vec![0f32; 2 * kept_edges];
    }
    let temp: &mut [[u32; 2]] = bytemuck::cast_slice_mut(&mut scratch[..2 * kept_edges]);
    {
        let mut slices: Vec<Vec<&mut [[u32; 2]]>> = (0..chunks.len())
            .map(|_| Vec::with_capacity(blocks))
            .collect();
        let mut rest = &mut temp[..];
        for b in 0..blocks {
            for (c, count) in per_chunk.iter().enumerate() {
                let (head, tail) = rest.split_at_mut(count[b]);
                slices[c].push(head);
                rest = tail;
            }
        }
        chunks
            .par_iter()
            .zip(slices.par_iter_mut())
            .for_each(|(&(a, b), out)| {
                let mut at = vec![0usize; blocks];
                for (&s, &d) in src[a..b].iter().zip(&dst[a..b]) {
                    entries(rows, s, d, |row, value| {
                        let blk = (row >> shift) as usize;
                        // Both below 2^32: ids were checked against num_nodes.
                        out[blk][at[blk]] = [value as u32, row as u32];
                        at[blk] += 1;
                    });
                }
            });
    }
    // Step 3: each block sorts its region by row into its part of `col` and `row_ptr`.
    let loops = usize::from(add_self_loops);
    let rows_of = |b: usize| (b << shift, ((b + 1) << shift).min(num_nodes));
    let block_entries: Vec<usize> = (0..blocks)
        .map(|b| {
            let (lo, hi) = rows_of(b);
            block_edges[b] + loops * (hi - lo)
        })
        .collect();
    let mut row_ptr = vec![0usize; num_nodes + 1];
    let mut col = vec![0u32; block_entries.iter().sum()];
    {
        let mut tasks = Vec::with_capacity(blocks);
        let (mut regions, mut cols, mut ptrs) = (&temp[..], col.as_mut_slice(), &mut row_ptr[1..]);
        let mut base = 0usize;
        for b in 0..blocks {
            let (lo, hi) = rows_of(b);
            let (region, r) = regions.split_at(block_edges[b]);
            let (out, c) = cols.split_at_mut(block_entries[b]);
            let (ptr, p) = ptrs.split_at_mut(hi - lo);
            tasks.push((lo, base, region, out, ptr));
            (regions, cols, ptrs) = (r, c, p);
            base += block_entries[b];
        }
        tasks
            .into_par_iter()
            .for_each(|(lo, base, region, out, ptr)| {
                // Row r's entries first hold its count, then its running position in `out`.
                let mut cursor = vec![0usize; ptr.len()];
                for &[_, row] in region {
                    cursor[row as usize - lo] += 1;
                }
                let mut at = 0usize;
                for (c, p) in cursor.iter_mut().zip(ptr.iter_mut()) {
                    let start = at;
                    at += *c + loops;
                    *p = base + at;
                    *c = start;
                }
                for &[value, row] in region {
                    let r = row as usize - lo;
                    out[cursor[r]] = value;
                    cursor[r] += 1;
                }
                if add_self_loops {
                    for (r, &p) in ptr.iter().enumerate() {
                        out[p - base - 1] = (lo + r) as u32;
                    }
                }
            });
    }
    Ok((row_ptr, col, kept_edges))
}

/// Below this many edges the CSR is built on the calling thread.
const PARALLEL_MIN_EDGES: usize = 1 << 17;

/// Node ranges, one per thread of the current rayon pool (one range when the pool has one
/// thread or the graph is small). Each thread scans every edge and handles those whose
/// target is in its range, so the CSR is the same for any number of ranges.
fn row_ranges(num_nodes: usize, num_edges: usize) -> Vec<(usize, usize)> {
    let threads = if num_edges < PARALLEL_MIN_EDGES {
        1
    } else {
        rayon::current_num_threads().clamp(1, 64)
    };
    let threads = threads.min(num_nodes.max(1));
    (0..threads)
        .map(|t| (t * num_nodes / threads, (t + 1) * num_nodes / threads))
        .collect()
}

/// The same number of ranges as `ranges`, re-cut so each holds about as many CSR entries.
fn entry_ranges(row_ptr: &[usize], ranges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let n = row_ptr.len() - 1;
    let total = row_ptr[n];
    let parts = ranges.len();
    let mut bounds: Vec<usize> = (0..=parts)
        .map(|t| {
            let want = (total as u128 * t as u128 / parts.max(1) as u128) as usize;
            // The first row whose start is at or past `want`.
            row_ptr[..n].partition_point(|&p| p < want)
        })
        .collect();
    bounds[0] = 0;
    bounds[parts] = n;
    bounds.windows(2).map(|w| (w[0], w[1].max(w[0]))).collect()
}

/// Splits `data` (indexed by CSR entry) into the disjoint slices of the row ranges.
fn split_by_rows<'a, T>(
    row_ptr: &[usize],
    ranges: &[(usize, usize)],
    mut data: &'a mut [T],
) -> Vec<(usize, usize, &'a mut [T])> {
    let mut out = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges {
        let (head, rest) = data.split_at_mut(row_ptr[hi] - row_ptr[lo]);
        out.push((lo, hi, head));
        data = rest;
    }
    out
}

/// Runs `f` on every range, in parallel on the current rayon pool when there are several.
fn run_ranges<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    use rayon::prelude::*;
    if items.len() == 1 {
        items.into_iter().for_each(f);
    } else {
        items.into_par_iter().for_each(f);
    }
}

/// The attention edge index in PyG's order, as int64 `[2, E']` (sources, then targets):
/// kept input edges in input order, then one self loop per node when loops are added.
pub fn attention_edge_index(edges: &EdgeList, num_nodes: usize, add_self_loops: bool) -> Vec<i64> {
    let (src, dst) = (edges.src(), edges.dst());
    let kept: Vec<usize> = (0..src.len())
        .filter(|&k| !(add_self_loops && src[k] == dst[k]))
        .collect();
    let loops = if add_self_loops { num_nodes } else { 0 };
    let mut out = Vec::with_capacity(2 * (kept.len() + loops));
    out.extend(kept.iter().map(|&k| src[k] as i64));
    out.extend((0..loops).map(|i| i as i64));
    out.extend(kept.iter().map(|&k| dst[k] as i64));
    out.extend((0..loops).map(|i| i as i64));
    out
}
