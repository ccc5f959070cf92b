//! Neighbourhood graphs for distgat, built exactly by the rule of the reference README
//! (section 8.6 "Neighbourhood graphs") with PyG's edge direction: each neighbour `j` of
//! centre `i` gives the edge `j -> i` (`flow='source_to_target'`).
//!
//! Three rules ([`NeighbourRule`]):
//! - **kNN** (PyG `knn_graph`): the `k` points `j ≠ i` with the smallest `(d, j)`, so a
//!   tie at the k-th distance goes to the lower index.
//! - **radius** (PyG `radius_graph`): every `j ≠ i` with `d < r·r` (euclidean, strictly) or
//!   `d < r` (cosine), optionally capped at the `max_neighbours` smallest `(d, j)`.
//!   torch-cluster's `max_num_neighbors` keeps the first M *found* (search order)
//!   instead; the two agree whenever the cap does not bind.
//! - **hops**: every node with a directed path of at most `H` edges into `i` in a given
//!   graph, i.e. the nonzero pattern of `(A + I)^H` with `A[i][j] = 1` for an edge `j -> i`,
//!   optionally capped at the `max_neighbours` smallest `(hop distance, j)`.
//!
//! Distances are exact float64 values computed from the float32 coordinates ([`Metric`]),
//! so exact ties are recognised as ties. The search structures (a k-d tree for `D ≤ 10`,
//! a float32 GEMM above) only propose candidates, with margins proved in
//! [`tree`](crate::tree) and [`brute`](crate::brute)'s module docs; the rule is then
//! applied to the exact distances. The output therefore does not depend on the search
//! method, the thread count or [`Execution`].
//!
//! **Self loops** (`Options::self_loops`, PyG's `loop=`): when false, the centre is
//! excluded by index (a duplicate point at distance 0 is an ordinary neighbour). When true,
//! the centre is always a neighbour of itself and counts within `k` (and within
//! `max_neighbours`), as in PyG, where `knn_graph(loop=True)` returns `k` neighbours
//! including the point itself: here the centre plus the `k − 1` smallest `(d, j)` over
//! `j ≠ i`. PyG differs only when `k` or more other points lie at distance 0 from the
//! centre (then its search order decides whether the centre itself is among the `k`).
//!
//! Output: [`Neighbours`], the edges sorted by (target, source), as a CSR by target.

pub mod brute;
pub mod distributed;
pub mod error;
mod hops;
pub mod metric;
mod order;
pub mod points;
mod search;
pub mod tree;

use std::path::Path;

pub use distgat_attention::Execution;
use distgat_graph::EdgeList;

pub use error::{NeighbourError, Result};
pub use metric::Metric;
pub use points::Points;

use crate::metric::Exact;
use crate::search::{apply_rule, apply_rule_ids, CandidateSearch, Query};

/// Which neighbourhood to build (reference README 8.6; PyG `knn_graph`, `radius_graph`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NeighbourRule {
    /// The `k` nearest points (`k ≥ 1`; `k < N` without self loops, `k ≤ N` with).
    Knn { k: usize },
    /// Every point closer than `r` (`r > 0`, finite; compared as `d < r·r` for euclidean,
    /// `d < r` for cosine), at most `max_neighbours` (≥ 1) per centre when given.
    Radius {
        r: f64,
        max_neighbours: Option<usize>,
    },
    /// Every node within `hops` (≥ 1) hops along incoming edges of a graph, at most
    /// `max_neighbours` (≥ 1) per centre when given (the smallest (hop distance, j)).
    Hops {
        hops: usize,
        max_neighbours: Option<usize>,
    },
}

/// How candidates are generated; never changes the result, only the time it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Search {
    /// A k-d tree for `D ≤` [`tree::AUTO_TREE_MAX_DIM`] (10), brute force above; the
    /// measurements behind the threshold are in that constant's docs.
    #[default]
    Auto,
    /// Always the k-d tree (only for `D ≤` [`tree::TREE_MAX_DIM`]; above, brute force).
    Tree,
    /// Always blocked brute force (float32 GEMM, then exact re-ranking).
    Brute,
}

/// Settings shared by the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// The distance (knn and radius; ignored by hops).
    pub metric: Metric,
    /// PyG's `loop=`: the centre is also its own neighbour (edge `i -> i`), counted within
    /// `k` / `max_neighbours`.
    pub self_loops: bool,
    /// Sequential, or parallel over centres on the current rayon pool; same bits either
    /// way.
    pub execution: Execution,
    /// Candidate generation (knn and radius).
    pub search: Search,
}

/// A neighbourhood graph: edges `j -> i` sorted by (target `i`, source `j`), stored as a
/// CSR by target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Neighbours {
    /// `[N + 1]`: the neighbours of centre `i` are `sources[offsets[i]..offsets[i + 1]]`.
    pub offsets: Vec<u64>,
    /// `[E]`: neighbour (source) ids, ascending within each centre.
    pub sources: Vec<u32>,
}

impl Neighbours {
    /// Number of centres `N`.
    pub fn num_nodes(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Number of edges `E`.
    pub fn num_edges(&self) -> usize {
        self.sources.len()
    }

    /// The neighbours (sources) of centre `i`, ascending.
    pub fn of(&self, i: usize) -> &[u32] {
        &self.sources[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The int64 `[2, E]` edge index, row-major: sources (row 0) then targets (row 1).
    pub fn edge_index(&self) -> Vec<i64> {
        let mut out = Vec::with_capacity(2 * self.sources.len());
        out.extend(self.sources.iter().map(|&j| j as i64));
        for i in 0..self.num_nodes() {
            let count = (self.offsets[i + 1] - self.offsets[i]) as usize;
            out.extend(std::iter::repeat_n(i as i64, count));
        }
        out
    }

    /// As a distgat-graph [`EdgeList`] (with `num_nodes` = N, including isolated centres).
    pub fn to_edge_list(&self) -> EdgeList {
        let src: Vec<u64> = self.sources.iter().map(|&j| j as u64).collect();
        let dst: Vec<u64> = (0..self.num_nodes())
            .flat_map(|i| {
                let count = (self.offsets[i + 1] - self.offsets[i]) as usize;
                std::iter::repeat_n(i as u64, count)
            })
            .collect();
        let mut list = EdgeList::from_pairs(&src, &dst);
        list.num_nodes = self.num_nodes() as u64;
        list
    }

    /// Writes the int64 `[2, E]` edge index (row 0 = source j, row 1 = target i) as `.npy`,
    /// atomically: on failure no file (and no partial file) is left under `path`.
    ///
    /// The file holds the bytes `distgat_graph::write_npy` writes for [`Self::edge_index`]
    /// (npyz's header, little-endian int64 body), streamed in blocks instead of
    /// materialising the `2·E` int64 values first.
    pub fn write_npy(&self, path: &Path) -> Result<()> {
        use npyz::WriterBuilder;
        use std::io::Write;
        /// Values converted per write.
        const CHUNK: usize = 1 << 16;
        let e = self.sources.len() as u64;
        let file = distgat_graph::AtomicFile::create(path)?;
        let result = (|| -> std::io::Result<()> {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file.as_file());
            // npyz writes the header (numpy's format, version and padding); dropping the
            // writer unfinished writes nothing more (as in distgat_graph::write_npy).
            let writer = npyz::WriteOptions::<i64>::new()
                .default_dtype()
                .shape(&[2, e])
                .writer(&mut out)
                .begin_nd()?;
            drop(writer);
            let mut bytes = Vec::with_capacity(CHUNK * 8);
            for chunk in self.sources.chunks(CHUNK) {
                bytes.clear();
                for &j in chunk {
                    bytes.extend_from_slice(&(j as i64).to_le_bytes());
                }
                out.write_all(&bytes)?;
            }
            bytes.clear();
            for i in 0..self.num_nodes() {
                let count = (self.offsets[i + 1] - self.offsets[i]) as usize;
                let value = (i as i64).to_le_bytes();
                for _ in 0..count {
                    bytes.extend_from_slice(&value);
                }
                if bytes.len() >= CHUNK * 8 {
                    out.write_all(&bytes)?;
                    bytes.clear();
                }
            }
            out.write_all(&bytes)?;
            out.flush()
        })();
        result.map_err(|err| distgat_graph::GraphError::io(path, err))?;
        file.commit()?;
        Ok(())
    }
}

/// The checks of `k` against the point count `n` that [`knn_graph`] makes.
fn check_k(k: usize, n: usize, self_loops: bool) -> Result<()> {
    if k < 1 {
        return Err(NeighbourError::BadK {
            k,
            detail: "must be at least 1".into(),
        });
    }
    if !self_loops && k >= n {
        return Err(NeighbourError::BadK {
            k,
            detail: format!(
                "must be less than the number of points ({n}) without self loops: a centre \
                 has only {} other points",
                n.saturating_sub(1)
            ),
        });
    }
    if self_loops && k > n {
        return Err(NeighbourError::BadK {
            k,
            detail: format!(
                "must be at most the number of points ({n}) with self loops (the centre \
                 counts as one of the k)"
            ),
        });
    }
    Ok(())
}

/// Checks `rule`'s parameters against `n` points exactly as [`knn_graph`],
/// [`radius_graph`] and [`hop_graph`] do (the same errors), without building anything:
/// what a distributed build checks before it splits the points.
pub fn check_rule(rule: &NeighbourRule, n: usize, options: &Options) -> Result<()> {
    match *rule {
        NeighbourRule::Knn { k } => check_k(k, n, options.self_loops),
        NeighbourRule::Radius { r, max_neighbours } => {
            if !r.is_finite() || r <= 0.0 {
                return Err(NeighbourError::BadRadius { r });
            }
            check_cap(max_neighbours)
        }
        NeighbourRule::Hops {
            hops,
            max_neighbours,
        } => {
            if hops < 1 {
                return Err(NeighbourError::BadHops { h: hops });
            }
            check_cap(max_neighbours)
        }
    }
}

fn check_cap(max_neighbours: Option<usize>) -> Result<()> {
    match max_neighbours {
        Some(0) => Err(NeighbourError::BadMaxNeighbours { m: 0 }),
        _ => Ok(()),
    }
}

/// How many neighbours other than the centre are kept under a cap.
fn keep_others(cap: Option<usize>, self_loops: bool) -> usize {
    match cap {
        Some(m) => m - usize::from(self_loops),
        None => usize::MAX,
    }
}

/// Whether `options.search` picks the k-d tree for `points`.
fn uses_tree(points: &Points, options: &Options) -> bool {
    !points.is_empty()
        && match options.search {
            Search::Auto => points.dim() <= tree::AUTO_TREE_MAX_DIM,
            Search::Tree => points.dim() <= tree::TREE_MAX_DIM,
            Search::Brute => false,
        }
}

/// Point sets at least this large are searched in Morton order on the tree path.
const MORTON_MIN_POINTS: usize = 4096;

/// [`apply_rule_ids`] with the search [`with_search`] picks, for the centres `0..centres`
/// of `points` (row `r` has the global id `ids[r]`, `None`: the identity); returns the CSR
/// in centre order and each centre's reach (see [`apply_rule_ids`]).
///
/// On the tree path (and for at least [`MORTON_MIN_POINTS`] points) the points are copied
/// in Morton order, the centres first and then the other rows, each in Morton order among
/// themselves, and searched with their global ids; the CSR and the reach are put back in
/// centre order (see `order.rs`). Same edges, faster.
fn search_and_apply(
    points: &Points,
    options: &Options,
    query: Option<Query>,
    keep: usize,
    ids: Option<&[u32]>,
    centres: usize,
) -> Result<(Neighbours, Vec<f64>)> {
    let n = points.len();
    if uses_tree(points, options) && n >= MORTON_MIN_POINTS {
        // Errors (a zero cosine norm) name the row of the caller's points.
        Exact::new(points, options.metric).map_err(|row| NeighbourError::ZeroNorm {
            origin: points.origin().to_string(),
            row,
        })?;
        let mut perm = order::morton_order(points);
        if centres < n {
            let c = centres as u32;
            let others: Vec<u32> = perm.iter().copied().filter(|&r| r >= c).collect();
            perm.retain(|&r| r < c);
            perm.extend_from_slice(&others);
        }
        let sorted = order::permuted(points, &perm);
        let sorted_ids: Vec<u32> = match ids {
            None => perm.clone(),
            Some(ids) => perm.iter().map(|&r| ids[r as usize]).collect(),
        };
        let (nb, reach) = with_search(&sorted, options, |s, block| {
            apply_rule_ids(
                s,
                centres,
                block,
                query,
                keep,
                options.self_loops,
                options.execution,
                Some(&sorted_ids),
            )
        })?;
        let by_centre = &perm[..centres];
        let mut centre_reach = vec![0.0; centres];
        for (&i, &r) in by_centre.iter().zip(&reach) {
            centre_reach[i as usize] = r;
        }
        return Ok((order::unpermuted(&nb, by_centre), centre_reach));
    }
    with_search(points, options, |s, block| {
        apply_rule_ids(
            s,
            centres,
            block,
            query,
            keep,
            options.self_loops,
            options.execution,
            ids,
        )
    })
}

/// Runs `f` with the candidate search `options.search` picks for `points`.
fn with_search<T>(
    points: &Points,
    options: &Options,
    f: impl FnOnce(&dyn CandidateSearch, usize) -> T,
) -> Result<T> {
    let exact = Exact::new(points, options.metric).map_err(|row| NeighbourError::ZeroNorm {
        origin: points.origin().to_string(),
        row,
    })?;
    let use_tree = uses_tree(points, options);
    const TREE_BLOCK: usize = 512;
    macro_rules! tree_dims {
        ($($d:literal)*) => {
            match points.dim() {
                $($d => {
                    let t = tree::Tree::<$d>::new(&exact);
                    return Ok(f(&t, TREE_BLOCK));
                })*
                _ => {}
            }
        };
    }
    if use_tree {
        tree_dims!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
    }
    let b = brute::Brute::new(&exact);
    let block = b.block();
    Ok(f(&b, block))
}

/// kNN graph (PyG `knn_graph(pos, k, loop=options.self_loops)`, rule of reference README
/// 8.6): for each centre `i`, the `k` points `j ≠ i` with the smallest `(d, j)` (with self
/// loops: `i` plus the `k − 1` smallest), as edges `j -> i`; exactly `k` per centre.
///
/// `points`: `[N, D]` float32. Errors: `k < 1`, `k ≥ N` without self loops, `k > N` with
/// them ([`NeighbourError::BadK`]); a zero vector with the cosine metric
/// ([`NeighbourError::ZeroNorm`], naming the row).
pub fn knn_graph(points: &Points, k: usize, options: &Options) -> Result<Neighbours> {
    let n = points.len();
    check_k(k, n, options.self_loops)?;
    let m = k - usize::from(options.self_loops);
    let query = (m > 0).then_some(Query::Knn { m });
    search_and_apply(points, options, query, m, None, points.len()).map(|(nb, _)| nb)
}

/// Radius graph (PyG `radius_graph(pos, r, loop=options.self_loops,
/// max_num_neighbors=M)`, rule of reference README 8.6): for each centre `i`, every
/// `j ≠ i` with `d < r·r` (euclidean; `r·r` in float64) or `d < r` (cosine), strictly; when
/// more than `max_neighbours` qualify (counting the centre itself with self loops), the
/// smallest `(d, j)` are kept. Unlike torch-cluster (first M found), the cap keeps the M
/// nearest. `None` means no cap (PyG's default is 32; pass it explicitly to match).
///
/// Errors: `r` not finite or ≤ 0 ([`NeighbourError::BadRadius`]); `max_neighbours = 0`;
/// a zero vector with the cosine metric.
pub fn radius_graph(
    points: &Points,
    r: f64,
    max_neighbours: Option<usize>,
    options: &Options,
) -> Result<Neighbours> {
    if !r.is_finite() || r <= 0.0 {
        return Err(NeighbourError::BadRadius { r });
    }
    check_cap(max_neighbours)?;
    let limit = match options.metric {
        Metric::Euclidean => r * r,
        Metric::Cosine => r,
    };
    let keep = keep_others(max_neighbours, options.self_loops);
    let query = (keep > 0).then_some(Query::Radius { limit });
    search_and_apply(points, options, query, keep, None, points.len()).map(|(nb, _)| nb)
}

/// k-hop graph: for each centre `i`, every `j ≠ i` with a directed path of at most `hops`
/// edges `j -> … -> i` in `graph` (the nonzero pattern of `(A + I)^hops`, built with sprs
/// sparse products), as edges `j -> i`; capped at the `max_neighbours` smallest
/// (hop distance, j) when given (the centre counts within the cap with self loops).
///
/// `num_nodes`: the node count (`None`: the graph's, max id + 1). Uses
/// `options.self_loops` and `options.execution` (for the per-centre selection; the sparse
/// products run on the calling thread). Errors: `hops < 1`, `max_neighbours = 0`, an id
/// at or beyond `num_nodes`.
pub fn hop_graph(
    graph: &EdgeList,
    num_nodes: Option<usize>,
    hops: usize,
    max_neighbours: Option<usize>,
    options: &Options,
) -> Result<Neighbours> {
    if hops < 1 {
        return Err(NeighbourError::BadHops { h: hops });
    }
    check_cap(max_neighbours)?;
    let (n, source_of_count) = match num_nodes {
        Some(n) => (n, "given".to_string()),
        None => (graph.num_nodes as usize, "the graph's".to_string()),
    };
    if n > u32::MAX as usize {
        return Err(NeighbourError::TooManyPoints {
            origin: "graph".into(),
            n,
        });
    }
    let e = graph.len();
    let ids = graph.src().iter().chain(graph.dst());
    if let Some((pos, &id)) = ids.enumerate().find(|(_, &id)| id >= n as u64) {
        return Err(NeighbourError::GraphId {
            edge: pos % e.max(1),
            id,
            num_nodes: n,
            source_of_count,
        });
    }
    let pattern = hops::HopPattern::build(graph, n, hops);
    let keep = keep_others(max_neighbours, options.self_loops);
    let query = (keep > 0).then_some(Query::Knn { m: keep });
    Ok(apply_rule(
        &pattern,
        n,
        1024,
        query,
        keep,
        options.self_loops,
        options.execution,
    ))
}

/// Builds the neighbourhood `rule` asks for: knn and radius from `points`, hops from
/// `graph` (with `points`' row count as the node count when points are given).
///
/// Errors: those of [`knn_graph`], [`radius_graph`], [`hop_graph`], and
/// [`NeighbourError::MissingGraph`] / [`NeighbourError::MissingPoints`].
pub fn build(
    rule: &NeighbourRule,
    points: Option<&Points>,
    graph: Option<&EdgeList>,
    options: &Options,
) -> Result<Neighbours> {
    match *rule {
        NeighbourRule::Knn { k } => {
            let p = points.ok_or(NeighbourError::MissingPoints { rule: "knn" })?;
            knn_graph(p, k, options)
        }
        NeighbourRule::Radius { r, max_neighbours } => {
            let p = points.ok_or(NeighbourError::MissingPoints { rule: "radius" })?;
            radius_graph(p, r, max_neighbours, options)
        }
        NeighbourRule::Hops {
            hops,
            max_neighbours,
        } => {
            let g = graph.ok_or(NeighbourError::MissingGraph)?;
            hop_graph(g, points.map(Points::len), hops, max_neighbours, options).map_err(
                |e| match (e, points) {
                    (
                        NeighbourError::GraphId {
                            edge,
                            id,
                            num_nodes,
                            ..
                        },
                        Some(p),
                    ) => NeighbourError::GraphId {
                        edge,
                        id,
                        num_nodes,
                        source_of_count: format!("the rows of {}", p.origin()),
                    },
                    (e, _) => e,
                },
            )
        }
    }
}
