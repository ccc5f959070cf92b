//! Points: a dense row-major `[N, D]` float32 matrix of finite coordinates.

use std::path::Path;

use distgat_graph::NpyBody;

use crate::error::{NeighbourError, Result};

/// `N` points in `D` dimensions, row-major float32, every coordinate finite.
///
/// The neighbourhood rules (reference README 8.6) are defined on the float32 values:
/// distances are computed in float64 from them. Float64 input is rounded to float32 first.
#[derive(Debug, Clone, PartialEq)]
pub struct Points {
    /// Names the array in error messages (the file path, or e.g. `points`).
    origin: String,
    n: usize,
    dim: usize,
    values: Vec<f32>,
}

impl Points {
    /// Wraps row-major `values` of shape `[n, dim]`.
    ///
    /// Errors: `dim == 0` or `values.len() != n * dim` ([`NeighbourError::Shape`]), a NaN
    /// or infinite coordinate ([`NeighbourError::NonFiniteCoordinate`], naming the first
    /// one's row and column), more than `u32::MAX` points. `origin` names the array in
    /// messages (a file path, or e.g. `"points"`).
    pub fn new(n: usize, dim: usize, values: Vec<f32>, origin: &str) -> Result<Self> {
        if dim == 0 || n.checked_mul(dim) != Some(values.len()) {
            return Err(NeighbourError::Shape {
                origin: origin.to_string(),
                shape: vec![n as u64, dim as u64],
            });
        }
        if n > u32::MAX as usize {
            return Err(NeighbourError::TooManyPoints {
                origin: origin.to_string(),
                n,
            });
        }
        if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
            return Err(NeighbourError::NonFiniteCoordinate {
                origin: origin.to_string(),
                row: pos / dim,
                column: pos % dim,
                value: values[pos],
                hint: "",
            });
        }
        Ok(Points {
            origin: origin.to_string(),
            n,
            dim,
            values,
        })
    }

    /// Reads a float32 or float64 `.npy` of shape `[N, D]` (C or Fortran order). Float64
    /// values are rounded to the nearest float32; one beyond the float32 range becomes
    /// infinite and is rejected.
    ///
    /// Errors name the file: a missing or malformed file, a dtype other than float32 or
    /// float64, a shape that is not 2-D with `D >= 1`, a NaN or infinite coordinate (its
    /// row and column).
    pub fn read_npy(path: &Path) -> Result<Self> {
        let origin = path.display().to_string();
        let body = NpyBody::open(path)?;
        if body.shape.len() != 2 || body.shape[1] == 0 {
            return Err(NeighbourError::Shape {
                origin,
                shape: body.shape.clone(),
            });
        }
        let (n, dim) = (body.shape[0] as usize, body.shape[1] as usize);
        let fortran = body.fortran_order;
        let was_f64 = body.dtype == distgat_graph::NpyDtype::F64;
        let mut values = body.read_f32(path)?;
        // An empty array needs no transpose; `[0, D]` with a huge D would otherwise loop D
        // times over nothing (fuzz/README.md, bug 3).
        if fortran && !values.is_empty() {
            let mut c = vec![0f32; values.len()];
            for col in 0..dim {
                for row in 0..n {
                    c[row * dim + col] = values[col * n + row];
                }
            }
            values = c;
        }
        Points::new(n, dim, values, &origin).map_err(|e| match e {
            NeighbourError::NonFiniteCoordinate {
                origin,
                row,
                column,
                value,
                ..
            } => NeighbourError::NonFiniteCoordinate {
                origin,
                row,
                column,
                value,
                hint: if was_f64 && value.is_infinite() {
                    "; float64 values beyond the float32 range become inf"
                } else {
                    ""
                },
            },
            other => other,
        })
    }

    /// What error messages call this array (its file, or the name given to [`Points::new`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of points `N`.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when there are no points.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row-major `[N, D]` coordinates.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Point `i`'s `D` coordinates.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }
}
