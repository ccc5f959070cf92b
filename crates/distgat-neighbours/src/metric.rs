//! The exact distances the rules are defined on.

use crate::points::Points;

/// How the distance between two points is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// Squared euclidean distance (reference README 8.6):
    /// `d2(i, j) = Σ_t (p_i[t] − p_j[t])²`, each difference and square in float64 from the
    /// float32 coordinates, summed over `t = 0..D` left to right. Unit: coordinate units
    /// squared, so the radius rule compares with `r·r` (computed in float64).
    #[default]
    Euclidean,
    /// Cosine distance `d = 1 − (p_i·p_j) / (|p_i| |p_j|)` in float64: the dot product
    /// `Σ_t p_i[t]·p_j[t]` and the squared norms `Σ_t p[t]²` summed left to right, the norm
    /// its square root, and `1 − dot / (|p_i| · |p_j|)`. Unitless, in `[0, 2]` up to
    /// rounding (it can be a few ulps below 0 for parallel vectors). The radius rule
    /// compares `d < r` directly. A point at the origin is an error. torch-cluster's
    /// `knn(..., cosine=True)` ranks by the same quantity (1 − cosine similarity), but its
    /// float32 arithmetic was not compared with this bit for bit; PyG's `radius_graph` has
    /// no cosine option, so cosine radius graphs are this crate's own definition.
    Cosine,
}

impl Metric {
    pub const NAMES: &'static str = "euclidean, cosine";

    /// The metric's name, as [`Metric::from_name`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Euclidean => "euclidean",
            Metric::Cosine => "cosine",
        }
    }

    /// Parses `euclidean` or `cosine` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "euclidean" => Some(Metric::Euclidean),
            "cosine" => Some(Metric::Cosine),
            _ => None,
        }
    }
}

/// Exact float64 distances over a point set, per the rule of [`Metric`].
pub(crate) struct Exact<'a> {
    pub points: &'a Points,
    pub metric: Metric,
    /// Cosine: the float64 norm of every point. Euclidean: empty.
    pub norms: Vec<f64>,
}

/// `Σ_t x[t]²` in float64, left to right.
pub(crate) fn squared_norm(x: &[f32]) -> f64 {
    let mut s = 0.0f64;
    for &v in x {
        let v = v as f64;
        s += v * v;
    }
    s
}

/// The exact squared euclidean distance `Σ_t (a[t] − b[t])²`, each difference and square
/// in float64 from the float32 coordinates, summed left to right.
#[inline]
pub(crate) fn euclidean(a: &[f32], b: &[f32]) -> f64 {
    let mut s = 0.0f64;
    for t in 0..a.len() {
        let diff = a[t] as f64 - b[t] as f64;
        s += diff * diff;
    }
    s
}

impl<'a> Exact<'a> {
    /// For the cosine metric, fails with the first row of norm 0.
    pub fn new(points: &'a Points, metric: Metric) -> Result<Self, usize> {
        let norms = match metric {
            Metric::Euclidean => Vec::new(),
            Metric::Cosine => {
                let norms: Vec<f64> = (0..points.len())
                    .map(|i| squared_norm(points.row(i)).sqrt())
                    .collect();
                if let Some(row) = norms.iter().position(|&n| n == 0.0) {
                    return Err(row);
                }
                norms
            }
        };
        Ok(Exact {
            points,
            metric,
            norms,
        })
    }

    /// The exact distance between points `i` and `j`; symmetric bit for bit.
    #[inline]
    pub fn d(&self, i: usize, j: usize) -> f64 {
        let (a, b) = (self.points.row(i), self.points.row(j));
        match self.metric {
            Metric::Euclidean => euclidean(a, b),
            Metric::Cosine => {
                let mut dot = 0.0f64;
                for t in 0..a.len() {
                    dot += a[t] as f64 * b[t] as f64;
                }
                1.0 - dot / (self.norms[i] * self.norms[j])
            }
        }
    }
}
