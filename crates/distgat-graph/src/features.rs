//! Node features: a dense row-major `[N, F]` float32 matrix.

use std::path::Path;

use crate::error::{GraphError, Result};
use crate::npy::{NpyBody, NpyDtype};

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
        Self::read_matrix(path, "features", "[N, F]", false)
    }

    /// [`Features::read_npy`] into memory advised to use transparent huge pages (see
    /// [`NpyBody::in_huge_pages`]): for features whose allocation a kernel will gather
    /// rows from at random.
    pub fn read_npy_in_huge_pages(path: &Path) -> Result<Self> {
        Self::read_matrix(path, "features", "[N, F]", true)
    }

    /// The `(N, F)` of a features `.npy`, from its header alone: the same header checks
    /// and errors as [`Features::read_npy`] (shape, size, and a float32 or float64
    /// dtype), before the body is read.
    pub fn npy_shape(path: &Path) -> Result<(usize, usize)> {
        let body = Self::open_matrix(path, "features", "[N, F]")?;
        body.expect_float(path)?;
        Ok((body.shape[0] as usize, body.shape[1] as usize))
    }

    /// [`Features::read_npy`] into `buffer`'s memory (see [`NpyBody::reusing`]: used
    /// when the file is float32 in C order and `buffer` holds at least `N * F` values).
    /// The same values and errors as [`Features::read_npy`].
    pub fn read_npy_into(path: &Path, buffer: Vec<f32>) -> Result<Self> {
        Self::read_matrix_into(path, "features", "[N, F]", false, Some(buffer))
    }

    /// `len` zeros for [`Features::read_npy_into`] to read into later, their memory
    /// advised to use transparent huge pages when `huge_pages` (as
    /// [`Features::read_npy_in_huge_pages`] does). The pages are untouched until used.
    pub fn buffer(len: usize, huge_pages: bool) -> Vec<f32> {
        let mut buffer = vec![0f32; len];
        if huge_pages {
            crate::npy::advise_huge_pages(bytemuck::cast_slice_mut(&mut buffer));
        }
        buffer
    }

    /// Reads edge attributes: a float32 or float64 `[E, D]` `.npy` whose row e belongs to
    /// edge e of the graph file (PyG's `edge_attr`). Same checks as [`Features::read_npy`],
    /// with errors that say "edge features".
    pub fn read_edge_npy(path: &Path) -> Result<Self> {
        Self::read_matrix(path, "edge features", "[E, D]", false)
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

    /// Checks a float32 or float64 `[N, F]` `.npy` as [`Features::read_npy`] does (shape,
    /// dtype, every value finite) in one pass of bounded memory, without keeping it:
    /// returns `(N, F, the smallest value)` (`+inf` when there are none). `what` names the
    /// file in errors ("features", "edge features").
    pub fn scan(path: &Path, what: &str) -> Result<(usize, usize, f32)> {
        let blocks = Self::blocks(path, what)?;
        let (n, f) = (blocks.num_rows(), blocks.width());
        let mut min = f32::INFINITY;
        blocks.for_each(|_, values| {
            min = values.iter().copied().fold(min, f32::min);
            Ok(())
        })?;
        Ok((n, f, min))
    }

    /// Opens a float32 or float64 `[N, F]` `.npy` (`[E, D]` when `what` names edge
    /// features) to be read block by block with [`FeatureBlocks::for_each`]: the shape
    /// and dtype are checked here, every value's finiteness as it is read, with the errors
    /// of [`Features::read_npy`]. `what` names the file in errors ("features", "edge
    /// features").
    pub fn blocks<'p>(path: &'p Path, what: &'p str) -> Result<FeatureBlocks<'p>> {
        let body = Self::open_matrix(path, what, shape_of(what))?;
        Ok(FeatureBlocks { path, what, body })
    }

    /// The rows `ids` (any order, repeats allowed, each below N) of a float32 or float64
    /// `[N, F]` `.npy`, as `[ids.len(), F]` in the order of `ids`, read in one pass over
    /// the file with bounded memory besides the result. Each row read must be finite
    /// (errors as in [`Features::read_npy`], naming the file's row); an id beyond N is an
    /// error naming it. `what` names the file in errors.
    pub fn read_rows(path: &Path, what: &str, ids: &[u64]) -> Result<Self> {
        let shape = shape_of(what);
        let body = Self::open_matrix(path, what, shape)?;
        let (n, f) = (body.shape[0] as usize, body.shape[1] as usize);
        if let Some(&bad) = ids.iter().find(|&&v| v >= n as u64) {
            return Err(GraphError::invalid(
                path,
                format!("row {bad} was asked for, but the {what} have {n} rows"),
            ));
        }
        let mut out = vec![0f32; ids.len() * f];
        if body.fortran_order {
            let all = Self::read_matrix(path, what, shape, false)?;
            for (k, &v) in ids.iter().enumerate() {
                out[k * f..(k + 1) * f].copy_from_slice(all.row(v as usize));
            }
            return Ok(Features::new(ids.len(), f, out));
        }
        // Positions in `ids` by increasing id (stable), to fill in file order.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        if !ids.windows(2).all(|w| w[0] <= w[1]) {
            order.sort_by_key(|&k| ids[k]);
        }
        let mut next = 0usize;
        body.for_each_f32_block(path, f, |first, values| {
            let rows = values.len() / f.max(1);
            while next < order.len() && (ids[order[next]] as usize) < first + rows {
                let (k, v) = (order[next], ids[order[next]] as usize);
                let row = &values[(v - first) * f..(v - first + 1) * f];
                check_finite(path, what, v, f, row)?;
                out[k * f..(k + 1) * f].copy_from_slice(row);
                next += 1;
            }
            Ok(next < order.len())
        })?;
        Ok(Features::new(ids.len(), f, out))
    }

    /// Opens a 2-D `.npy` named `what` of the given `shape` description.
    fn open_matrix(path: &Path, what: &str, shape: &str) -> Result<NpyBody> {
        let body = NpyBody::open(path)?;
        if body.shape.len() != 2 {
            return Err(GraphError::format(
                path,
                format!("{what} must have shape {shape}, found {:?}", body.shape),
            ));
        }
        Ok(body)
    }

    fn read_matrix(path: &Path, what: &str, shape: &str, huge_pages: bool) -> Result<Self> {
        Self::read_matrix_into(path, what, shape, huge_pages, None)
    }

    fn read_matrix_into(
        path: &Path,
        what: &str,
        shape: &str,
        huge_pages: bool,
        reuse: Option<Vec<f32>>,
    ) -> Result<Self> {
        let mut body = Self::open_matrix(path, what, shape)?;
        if huge_pages {
            body = body.in_huge_pages();
        }
        if let Some(buffer) = reuse {
            body = body.reusing(buffer);
        }
        let (n, f) = (body.shape[0] as usize, body.shape[1] as usize);
        if body.fortran_order {
            let mut values = body.read_f32(path)?;
            // An empty array needs no transpose; `[0, F]` with a huge F would otherwise
            // loop F times over nothing (fuzz/README.md, bug 2).
            if !values.is_empty() {
                values = transpose(&values, f, n);
            }
            check_finite_par(path, what, f, &values)?;
            return Ok(Features::new(n, f, values));
        }
        // C order: every piece is checked for NaN and infinities as soon as it is read
        // (in parallel, while it is in the cache); the first bad value in file order is
        // the one reported.
        let values = body.read_f32_checked(path, |first, piece| {
            check_finite_from(path, what, first, f, piece)
        })?;
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

/// The shape description of a matrix file named `what` in errors.
/// A features file being read in blocks of whole rows (from [`Features::blocks`]): the
/// memory is one block of about 16 MiB whatever the file's size (a Fortran-order file is
/// read whole and transposed, as [`Features::read_npy`] does).
pub struct FeatureBlocks<'p> {
    path: &'p Path,
    what: &'p str,
    body: NpyBody,
}

impl FeatureBlocks<'_> {
    /// N (rows).
    pub fn num_rows(&self) -> usize {
        self.body.shape[0] as usize
    }

    /// F (values per row).
    pub fn width(&self) -> usize {
        self.body.shape[1] as usize
    }

    /// Calls `f(first_row, values)` on consecutive blocks of whole rows (row-major f32,
    /// float64 rounded to nearest), in row order, each after its values were checked
    /// finite; stops at the first error, of the file or of `f`.
    pub fn for_each(self, mut f: impl FnMut(usize, &[f32]) -> Result<()>) -> Result<()> {
        let (path, what) = (self.path, self.what);
        let width = self.width();
        if self.body.fortran_order {
            let all = Features::read_matrix(path, what, shape_of(what), false)?;
            return f(0, &all.values);
        }
        self.body.for_each_f32_block(path, width, |first, values| {
            check_finite(path, what, first, width, values)?;
            f(first, values)?;
            Ok(true)
        })
    }

    /// Calls `f` on the matrix's values as row-major little-endian float32 bytes, in
    /// blocks, in row order. A float32 C-order file's bytes are passed as they are, with no
    /// value converted or checked finite (for a digest compared with one recorded from a
    /// checked matrix); other files go through [`FeatureBlocks::for_each`] (converted and
    /// checked).
    pub fn for_each_le_bytes(self, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let (path, width) = (self.path, self.width());
        if self.body.dtype == NpyDtype::F32 && !self.body.fortran_order {
            return self.body.for_each_f32_bytes_block(path, width, |bytes| {
                f(bytes)?;
                Ok(true)
            });
        }
        let mut le = Vec::new();
        self.for_each(|_, values| {
            le.clear();
            le.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            f(&le)
        })
    }
}

fn shape_of(what: &str) -> &'static str {
    if what.contains("edge") {
        "[E, D]"
    } else {
        "[N, F]"
    }
}

/// The first value of `values` (rows `first..` of width `width`) that is NaN or infinite,
/// as an error naming its row and column.
fn check_finite(path: &Path, what: &str, first: usize, width: usize, values: &[f32]) -> Result<()> {
    check_finite_from(path, what, first * width.max(1), width, values)
}

/// [`check_finite`] for `values` that are the matrix's elements `first..` (row-major,
/// `width` per row; a piece need not start at a row).
fn check_finite_from(
    path: &Path,
    what: &str,
    first: usize,
    width: usize,
    values: &[f32],
) -> Result<()> {
    let Some(pos) = values.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let at = first + pos;
    Err(GraphError::invalid(
        path,
        format!(
            "row {}, column {}: value {} ({what} must be finite{})",
            at / width.max(1),
            at % width.max(1),
            values[pos],
            if values[pos].is_infinite() {
                "; float64 values beyond the float32 range become inf"
            } else {
                ""
            }
        ),
    ))
}

/// [`check_finite`] over a whole row-major matrix, in parallel pieces on the current
/// rayon pool; the first bad value in row-major order is the one reported.
fn check_finite_par(path: &Path, what: &str, width: usize, values: &[f32]) -> Result<()> {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 20;
    let results: Vec<Result<()>> = values
        .par_chunks(PIECE)
        .enumerate()
        .map(|(k, piece)| check_finite_from(path, what, k * PIECE, width, piece))
        .collect();
    results.into_iter().collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use npyz::WriterBuilder;

    fn save<T: npyz::Serialize + npyz::AutoSerialize + bytemuck::Pod>(
        dir: &Path,
        name: &str,
        shape: &[u64],
        data: &[T],
    ) -> std::path::PathBuf {
        let path = dir.join(name);
        crate::write_npy(&path, shape, data).unwrap();
        path
    }

    /// Row subsets and the streamed scan against the whole-file reader, for float32,
    /// float64 and Fortran order, unsorted ids with repeats, and files spanning several
    /// 16 MiB blocks.
    #[test]
    fn read_rows_and_scan_equal_the_whole_file_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (n, f) = (70_000usize, 67usize); // 18 MB of float32: two blocks and a bit
        let values: Vec<f32> = (0..n * f)
            .map(|i| ((i * 7919) % 10007) as f32 - 5000.5)
            .collect();
        let f32_path = save(dir.path(), "a.npy", &[n as u64, f as u64], &values);
        let wide: Vec<f64> = values.iter().map(|&v| f64::from(v) * 1.000_000_1).collect();
        let f64_path = save(dir.path(), "b.npy", &[n as u64, f as u64], &wide);
        let ids: Vec<u64> = vec![69_999, 0, 5, 5, 62_000, 1, 31_337, 69_999];
        for path in [&f32_path, &f64_path] {
            let all = Features::read_npy(path).unwrap();
            let some = Features::read_rows(path, "features", &ids).unwrap();
            assert_eq!((some.num_nodes, some.width), (ids.len(), f));
            for (k, &v) in ids.iter().enumerate() {
                assert_eq!(some.row(k), all.row(v as usize), "row {v}");
            }
            let sorted: Vec<u64> = (0..n as u64).step_by(3).collect();
            let some = Features::read_rows(path, "features", &sorted).unwrap();
            for (k, &v) in sorted.iter().enumerate() {
                assert_eq!(some.row(k), all.row(v as usize));
            }
            assert_eq!(
                Features::scan(path, "features").unwrap(),
                (n, f, all.min_value())
            );
        }
        // Fortran order: [3, 2] stored column by column.
        let path = dir.path().join("fortran.npy");
        let mut header = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[3, 2])
            .order(npyz::Order::Fortran)
            .writer(std::fs::File::create(&path).unwrap())
            .begin_nd()
            .unwrap();
        header.extend([1f32, 2., 3., 4., 5., 6.]).unwrap();
        header.finish().unwrap();
        let rows = Features::read_rows(&path, "features", &[2, 0]).unwrap();
        assert_eq!(rows.values, vec![3., 6., 1., 4.]);
        assert_eq!(Features::scan(&path, "features").unwrap(), (3, 2, 1.0));
    }

    /// Reading into a caller's buffer (`read_npy_into`, as `infer` does with the CSR's
    /// scratch) gives the file's values whatever the buffer held and however long it was:
    /// float32 (read into the buffer, its spare length given back), float64 and Fortran
    /// order (a new allocation); a NaN is still the error naming its row and column.
    #[test]
    fn read_npy_into_a_dirty_buffer_gives_the_files_values() {
        let dir = tempfile::tempdir().unwrap();
        let (n, f) = (9_000usize, 131usize); // 4.7 MB: several 2 MiB read pieces
        let values: Vec<f32> = (0..n * f).map(|i| ((i * 31) % 997) as f32 * 0.25).collect();
        let f32_path = save(dir.path(), "a.npy", &[n as u64, f as u64], &values);
        let wide: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        let f64_path = save(dir.path(), "b.npy", &[n as u64, f as u64], &wide);
        assert_eq!(Features::npy_shape(&f32_path).unwrap(), (n, f));
        for path in [&f32_path, &f64_path] {
            for (len, huge) in [(n * f + 1000, false), (n * f, true), (17, false)] {
                let mut buffer = Features::buffer(len, huge);
                buffer.fill(f32::from_bits(0x7fc0_0001));
                let got = Features::read_npy_into(path, buffer).unwrap();
                assert_eq!((got.num_nodes, got.width), (n, f));
                assert!(got.values == values, "{} into {len}", path.display());
                assert_eq!(got.values.capacity(), n * f, "{len}");
            }
        }
        let mut bad = values.clone();
        bad[7_000 * f + 3] = f32::INFINITY;
        let bad_path = save(dir.path(), "bad.npy", &[n as u64, f as u64], &bad);
        let e = Features::read_npy_into(&bad_path, vec![0f32; n * f])
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 7000, column 3"), "{e}");
        let flat = save(dir.path(), "flat.npy", &[n as u64], &values[..n]);
        let e = Features::npy_shape(&flat).unwrap_err().to_string();
        assert!(e.contains("[N, F]"), "{e}");
        let ints = save(dir.path(), "ints.npy", &[2, 3], &[1i64, 2, 3, 4, 5, 6]);
        let e = Features::npy_shape(&ints).unwrap_err().to_string();
        assert!(e.contains("dtype int64 where float32 or float64"), "{e}");
    }

    /// A NaN in a row not asked for is not read; in a row asked for, it is an error naming
    /// the file's row and column; so is an id beyond the rows.
    #[test]
    fn read_rows_checks_the_rows_it_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut values = vec![1f32; 10 * 3];
        values[4 * 3 + 2] = f32::NAN;
        let path = save(dir.path(), "x.npy", &[10, 3], &values);
        assert!(Features::read_rows(&path, "features", &[0, 9, 3]).is_ok());
        let e = Features::read_rows(&path, "features", &[9, 4])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row 4, column 2") && e.contains("features must be finite"),
            "{e}"
        );
        let e = Features::scan(&path, "features").unwrap_err().to_string();
        assert!(e.contains("row 4, column 2"), "{e}");
        let e = Features::read_rows(&path, "edge features", &[10])
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 10") && e.contains("10 rows"), "{e}");
    }
}
