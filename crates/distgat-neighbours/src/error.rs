//! What can be wrong with the input of a neighbourhood construction.

use distgat_graph::GraphError;

/// Every error names what is wrong: the file (or `points` for an in-memory array), the row
/// and column of a bad coordinate, or the parameter and its value.
///
/// Parameter variants name the parameter the way the library spells it (`k`, `r`,
/// `max_neighbours`, `hops`); the CLI puts the flag the user typed in front.
#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    /// Reading a file failed, or its header, dtype or size is wrong (the message names
    /// the file).
    #[error(transparent)]
    Input(#[from] GraphError),
    /// The points array is not two-dimensional `[N, D]` with `D >= 1`.
    #[error("{origin}: points must be a 2-D array [N, D] with D >= 1 (one row per point), found shape {shape:?}")]
    Shape { origin: String, shape: Vec<u64> },
    /// A coordinate is NaN or infinite.
    #[error("{origin}: row {row}, column {column}: coordinate {value} is not finite (points must be finite{hint})")]
    NonFiniteCoordinate {
        origin: String,
        row: usize,
        column: usize,
        value: f32,
        hint: &'static str,
    },
    /// The cosine distance is undefined for a point at the origin.
    #[error("{origin}: row {row} is the zero vector; the cosine distance to it is undefined (use the euclidean metric, or drop the row)")]
    ZeroNorm { origin: String, row: usize },
    /// More points than 32-bit node ids can name.
    #[error(
        "{origin}: {n} points; at most {} are supported (node ids are 32-bit)",
        u32::MAX
    )]
    TooManyPoints { origin: String, n: usize },
    /// `k` is out of range for the number of points.
    #[error("k = {k}: {detail}")]
    BadK { k: usize, detail: String },
    /// The radius is not a positive finite number.
    #[error("r = {r}: the radius must be a finite number greater than 0")]
    BadRadius { r: f64 },
    /// The neighbour cap is 0.
    #[error("max_neighbours = {m}: must be at least 1")]
    BadMaxNeighbours { m: usize },
    /// The hop count is 0.
    #[error("hops = {h}: must be at least 1")]
    BadHops { h: usize },
    /// The hops rule was asked for without a graph.
    #[error("the hops rule needs a graph to walk (none was given)")]
    MissingGraph,
    /// The knn and radius rules were asked for without points.
    #[error("the {rule} rule needs points (none were given)")]
    MissingPoints { rule: &'static str },
    /// A rule or metric the called function does not cover.
    #[error("{what} is not supported")]
    Unsupported { what: String },
    /// The graph names a node beyond the node count.
    #[error(
        "graph edge {edge}: node id {id} is beyond the node count {num_nodes} ({source_of_count})"
    )]
    GraphId {
        edge: usize,
        id: u64,
        num_nodes: usize,
        source_of_count: String,
    },
}

pub type Result<T, E = NeighbourError> = std::result::Result<T, E>;
