//! Node features: a dense row-major `[N, F]` float32 matrix.

use std::path::Path;

use crate::error::{GraphError, Result};
use crate::npy::NpyBody;

#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub num_nodes: usize,
    pub width: usize,
    /// Row-major `[num_nodes, width]`.
    pub values: Vec<f32>,
}

/// Feature normalisations applied after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalization {
    #[default]
    None,
    /// PyG's `NormalizeFeatures`: subtract the global minimum, then divide each row by its
    /// sum clamped to at least 1.
    Row,
}

impl Features {
    pub fn new(num_nodes: usize, width: usize, values: Vec<f32>) -> Self {
        assert_eq!(
            values.len(),
            num_nodes * width,
            "features: values do not match shape"
        );
        Features {
            num_nodes,
            width,
            values,
        }
    }

    /// Reads a float32 or float64 `[N, F]` `.npy` (float64 is rounded to float32) and
    /// rejects NaN and infinite values, naming the first one.
    pub fn read_npy(path: &Path) -> Result<Self> {
        Self::read_matrix(path, "features", "[N, F]")
    }

    /// Reads edge attributes: a float32 or float64 `[E, D]` `.npy` whose row e belongs to
    /// edge e of the graph file (PyG's `edge_attr`). Same checks as [`Features::read_npy`],
    /// with errors that say "edge features".
    pub fn read_edge_npy(path: &Path) -> Result<Self> {
        Self::read_matrix(path, "edge features", "[E, D]")
    }

    /// [`Features::read_edge_npy`] for a graph of `num_edges` edges read from `graph`:
    /// the rows must be exactly the graph's edges.
    pub fn read_edge_npy_for(path: &Path, num_edges: usize, graph: &Path) -> Result<Self> {
        let ea = Self::read_edge_npy(path)?;
        if ea.num_nodes != num_edges {
            return Err(GraphError::invalid(
                path,
                format!(
                    "{} rows of edge features, but {} has {num_edges} edges (row e belongs to \
                     edge e of the graph file)",
                    ea.num_nodes,
                    graph.display(),
                ),
            ));
        }
        Ok(ea)
    }

    fn read_matrix(path: &Path, what: &str, shape: &str) -> Result<Self> {
        let body = NpyBody::open(path)?;
        if body.shape.len() != 2 {
            return Err(GraphError::format(
                path,
                format!("{what} must have shape {shape}, found {:?}", body.shape),
            ));
        }
        let (n, f) = (body.shape[0] as usize, body.shape[1] as usize);
        let fortran = body.fortran_order;
        let mut values = body.read_f32(path)?;
        // An empty array needs no transpose; `[0, F]` with a huge F would otherwise loop F
        // times over nothing (fuzz/README.md, bug 2).
        if fortran && !values.is_empty() {
            values = transpose(&values, f, n);
        }
        if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
            return Err(GraphError::invalid(
                path,
                format!(
                    "row {}, column {}: value {} ({what} must be finite{})",
                    pos / f.max(1),
                    pos % f.max(1),
                    values[pos],
                    if values[pos].is_infinite() {
                        "; float64 values beyond the float32 range become inf"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(Features::new(n, f, values))
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    pub fn normalize(&mut self, how: Normalization) {
        match how {
            Normalization::None => {}
            Normalization::Row => self.normalize_rows(),
        }
    }

    /// The smallest value (`+inf` when there are none).
    pub fn min_value(&self) -> f32 {
        self.values.iter().copied().fold(f32::INFINITY, f32::min)
    }

    /// PyG `NormalizeFeatures`: `x = x - x.min(); x = x / x.sum(-1).clamp(min=1)`.
    fn normalize_rows(&mut self) {
        self.normalize_rows_with_min(self.min_value());
    }

    /// Row normalisation with the minimum of the whole matrix given, for a subset of its
    /// rows (a worker's shard) to get the same bits as the whole.
    pub fn normalize_rows_with_min(&mut self, min: f32) {
        if !min.is_finite() {
            return; // no values at all
        }
        for row in self.values.chunks_exact_mut(self.width.max(1)) {
            if min != 0.0 {
                row.iter_mut().for_each(|v| *v -= min);
            }
            let sum: f32 = row.iter().sum();
            let denom = sum.max(1.0);
            row.iter_mut().for_each(|v| *v /= denom);
        }
    }
}

/// Transposes a row-major `[rows, cols]` matrix.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}
