//! A part's output rows written straight into a file of the coordinator's
//! (`RunJobRequest.workers_write_output`: workers on the coordinator's machine).
//!
//! Sent over gRPC, every output row was copied about seven times (into a message, through
//! the socket both ways, decoded, gathered into a block of the file, written); the
//! coordinator spent about 1.3 s of CPU on R-MAT 1M/10M's 512 MB of rows, on cores the
//! workers need. Here each row is one copy into the file's page cache, by the part that
//! computed it, and only its id travels (8 bytes a row, in `rows_written`).
//!
//! Two layouts (`StartJobRequest.out_owned_order`):
//! - **node order**: the coordinator's output file itself, row `id` at node `id`. A part's
//!   ids interleave with the other parts' (METIS parts of a random graph come in runs of
//!   about 2 ids), so this is a positioned write per row or two, and the parts contend
//!   for the file's inode lock: 4-5 s a part for the last layer's boundary rows at 100M
//!   edges (docs/performance.md).
//! - **owned order**: the part's own file, row `r` for its `r`-th owned node (increasing
//!   ids). A run of consecutive local rows is one write, no other process writes the file,
//!   and the coordinator places the rows in node order at the end
//!   (`coordinator::sink::place_owned_rows`).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Result, RuntimeError};

/// A presized output file: file row `i` (`width` float32, little-endian) at byte
/// `header_len + i * width * 4`, written with a positioned write per run of rows
/// consecutive both in the file and in the values. File row `i` is node `i` (node
/// order), or the part's `i`-th owned node (owned order). (A shared mapping of the file
/// in node order added its pages to the worker's resident memory, 470 MB on R-MAT
/// 1M/10M, and did not make the job faster: docs/performance.md.)
pub(super) struct OutputFile {
    file: std::fs::File,
    header_len: usize,
    rows: usize,
    row_bytes: usize,
    owned_order: bool,
}

/// `out_header_len`, `out_rows` and `out_owned_order` describe `out_file`: without one
/// they must be 0 and false (else an error naming them).
pub(super) fn check_layout(
    path: &str,
    header_len: u64,
    rows: u64,
    owned_order: bool,
) -> Result<()> {
    if path.is_empty() && (header_len != 0 || rows != 0) {
        return Err(RuntimeError::InvalidArgument(format!(
            "out_header_len ({header_len}) and out_rows ({rows}) describe out_file, which is \
             empty: the output rows are sent, not written"
        )));
    }
    if path.is_empty() && owned_order {
        return Err(RuntimeError::InvalidArgument(
            "out_owned_order describes out_file, which is empty: the output rows are sent, \
             not written"
                .into(),
        ));
    }
    Ok(())
}

impl OutputFile {
    /// The file `StartJobRequest` names: `None` when `out_file` is empty (the rows are sent),
    /// and then `out_header_len`, `out_rows` and `out_owned_order` must be unset (else an
    /// error naming them: a field that describes no file is not ignored); else
    /// [`OutputFile::open`]. With `owned_order`, `rows` must be the part's count of
    /// `owned` nodes (else an error naming `out_rows`), and they must be increasing, as the
    /// coordinator places them (else an error).
    pub(super) fn requested(
        path: &str,
        header_len: u64,
        rows: u64,
        width: usize,
        owned_order: bool,
        owned: &[u64],
    ) -> Result<Option<Self>> {
        check_layout(path, header_len, rows, owned_order)?;
        if path.is_empty() {
            return Ok(None);
        }
        if owned_order && rows != owned.len() as u64 {
            return Err(RuntimeError::InvalidArgument(format!(
                "out_rows ({rows}): with out_owned_order the file holds this part's {} \
                 owned rows",
                owned.len()
            )));
        }
        if owned_order && owned.windows(2).any(|w| w[0] >= w[1]) {
            return Err(RuntimeError::InvalidArgument(
                "out_owned_order: this part's owned nodes are not in increasing order, the \
                 order the coordinator places the file's rows in"
                    .into(),
            ));
        }
        let mut file = Self::open(path, header_len, rows, width)?;
        file.owned_order = owned_order;
        Ok(Some(file))
    }

    /// Opens `path` (`StartJobRequest.out_file`) in node order; it must be a regular file
    /// of exactly `header_len + rows * width * 4` bytes (else an error naming it: a stale
    /// or foreign path is never written past its end).
    pub(super) fn open(path: &str, header_len: u64, rows: u64, width: usize) -> Result<Self> {
        let bad =
            |detail: String| RuntimeError::InvalidArgument(format!("out_file: {path}: {detail}"));
        let expected = (width as u64)
            .checked_mul(4)
            .and_then(|b| b.checked_mul(rows))
            .and_then(|b| b.checked_add(header_len))
            .ok_or_else(|| bad(format!("{rows} rows of {width} values overflow")))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(Path::new(path))
            .map_err(|e| bad(e.to_string()))?;
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() || meta.len() != expected {
            return Err(bad(format!(
                "not a regular file of {expected} bytes ({header_len} of header and {rows} \
                 rows of {width} float32), as the coordinator made it"
            )));
        }
        usize::try_from(expected).map_err(|_| bad("too large to address".into()))?;
        Ok(OutputFile {
            file,
            header_len: header_len as usize,
            rows: rows as usize,
            row_bytes: width * 4,
            owned_order: false,
        })
    }

    /// The file row of local owned row `r` (node `owned[r]`).
    fn file_row(&self, owned: &[u64], r: usize) -> u64 {
        if self.owned_order {
            r as u64
        } else {
            owned[r]
        }
    }

    /// Writes local owned rows `local` (increasing; node `owned[r]` for row `r`), row `k`
    /// of `values` (`[local.len(), width]`) for `local[k]`.
    pub(super) fn write_compact(&self, owned: &[u64], local: &[u32], values: &[f32]) -> Result<()> {
        assert_eq!(
            values.len() * 4,
            local.len() * self.row_bytes,
            "one row of values per row"
        );
        self.write_runs(
            local.iter().enumerate().map(|(k, &r)| {
                let r = r as usize;
                (self.file_row(owned, r), k)
            }),
            values,
        )
    }

    /// Writes local owned rows `first + i` for `i` in `picked` (increasing), row `i` of
    /// `values` for local row `first + i`.
    pub(super) fn write_picked(
        &self,
        owned: &[u64],
        first: usize,
        picked: &[u32],
        values: &[f32],
    ) -> Result<()> {
        self.write_runs(
            picked
                .iter()
                .map(|&i| (self.file_row(owned, first + i as usize), i as usize)),
            values,
        )
    }

    /// Writes row `k` of `values` at file row `row` for each `(row, k)`, one positioned
    /// write per run consecutive in both. Every file row must be below the file's rows
    /// (else an error, before anything is written).
    fn write_runs(
        &self,
        rows: impl Iterator<Item = (u64, usize)> + Clone,
        values: &[f32],
    ) -> Result<()> {
        if let Some(hi) = rows.clone().map(|(row, _)| row).max() {
            if hi as usize >= self.rows {
                return Err(RuntimeError::InvalidArgument(format!(
                    "output row {hi}: beyond the output's {} rows",
                    self.rows
                )));
            }
        }
        let w = self.row_bytes / 4;
        let mut run: Option<(u64, usize, usize)> = None;
        for (row, k) in rows {
            run = match run {
                Some((first, start, len)) if row == first + len as u64 && k == start + len => {
                    Some((first, start, len + 1))
                }
                Some((first, start, len)) => {
                    self.write_run(first, &values[start * w..(start + len) * w])?;
                    Some((row, k, 1))
                }
                None => Some((row, k, 1)),
            };
        }
        if let Some((first, start, len)) = run {
            self.write_run(first, &values[start * w..(start + len) * w])?;
        }
        Ok(())
    }

    /// Writes `values` (whole rows) at file row `first` on (rows checked by
    /// [`OutputFile::write_runs`]).
    fn write_run(&self, first: u64, values: &[f32]) -> Result<()> {
        let at = (self.header_len + first as usize * self.row_bytes) as u64;
        self.file
            .write_all_at(&little_endian(values), at)
            .map_err(|e| RuntimeError::Io(std::io::Error::new(e.kind(), format!("out_file: {e}"))))
    }
}

/// The little-endian bytes of `values`: their memory on a little-endian machine.
fn little_endian(values: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        std::borrow::Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected file: `header` bytes of 0xAA, then rows of 0xAA, with `put` rows.
    fn put(want: &mut [u8], header: u64, width: usize, row: u64, values: &[f32]) {
        let at = header as usize + row as usize * width * 4;
        for (c, x) in values.iter().enumerate() {
            want[at + c * 4..at + c * 4 + 4].copy_from_slice(&x.to_le_bytes());
        }
    }

    #[test]
    fn rows_land_at_their_ids_and_nothing_else_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npy");
        // Three pages of rows.
        let (header, rows, width) = (128u64, 1000u64, 3usize);
        let mut want = vec![0xAAu8; header as usize + rows as usize * width * 4];
        std::fs::write(&path, &want).unwrap();
        let file = OutputFile::open(path.to_str().unwrap(), header, rows, width).unwrap();
        // Ids 2, 3, 4 (one run), 700, 999 (single rows), all of a part's rows.
        let owned = [2u64, 3, 4, 700, 999];
        let values: Vec<f32> = (0..owned.len() * width).map(|i| i as f32 + 0.5).collect();
        file.write_compact(&owned, &[0, 1, 2, 3, 4], &values)
            .unwrap();
        for (k, &v) in owned.iter().enumerate() {
            put(
                &mut want,
                header,
                width,
                v,
                &values[k * width..(k + 1) * width],
            );
        }
        // Local rows 1, 2, 4 of a part owning 499, 500, 501, 502, 900, from a block of
        // values that starts at local row 1.
        let owned = [499u64, 500, 501, 502, 900];
        let block: Vec<f32> = (0..4 * width).map(|i| -(i as f32)).collect();
        file.write_picked(&owned, 1, &[0, 1, 3], &block).unwrap();
        for i in [0usize, 1, 3] {
            put(
                &mut want,
                header,
                width,
                owned[1 + i],
                &block[i * width..(i + 1) * width],
            );
        }
        // A compact subset: local rows 0 and 4.
        let two = [7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0];
        file.write_compact(&owned, &[0, 4], &two).unwrap();
        put(&mut want, header, width, 499, &two[..3]);
        put(&mut want, header, width, 900, &two[3..]);
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    /// In owned order, local row r lands at file row r whatever its node id.
    #[test]
    fn owned_order_puts_local_row_r_at_file_row_r() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-1.rows");
        let (header, width) = (0u64, 2usize);
        let owned = [5u64, 9, 10, 11, 40, 41];
        let mut want = vec![0xAAu8; owned.len() * width * 4];
        std::fs::write(&path, &want).unwrap();
        let p = path.to_str().unwrap();
        let file = OutputFile::requested(p, header, 6, width, true, &owned)
            .unwrap()
            .unwrap();
        // Interior rows 1, 2 and 5 of a block of local rows 0..6.
        let block: Vec<f32> = (0..owned.len() * width).map(|i| i as f32).collect();
        file.write_picked(&owned, 0, &[1, 2, 5], &block).unwrap();
        for r in [1usize, 2, 5] {
            put(
                &mut want,
                header,
                width,
                r as u64,
                &block[r * width..(r + 1) * width],
            );
        }
        // Boundary rows 0, 3 and 4, compact.
        let compact = [-1.0f32, -2.0, -3.0, -4.0, -5.0, -6.0];
        file.write_compact(&owned, &[0, 3, 4], &compact).unwrap();
        for (k, r) in [0u64, 3, 4].into_iter().enumerate() {
            put(
                &mut want,
                header,
                width,
                r,
                &compact[k * width..(k + 1) * width],
            );
        }
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), want);
        // out_rows must be the part's owned count.
        let err = OutputFile::requested(p, header, 6, width, true, &owned[..5])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("out_rows (6)") && err.contains("5 owned rows"),
            "{err}"
        );
        let err = OutputFile::requested(p, header, 6, width, true, &[5, 9, 9, 11, 40, 41])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not in increasing order"), "{err}");
    }

    #[test]
    fn a_file_of_another_size_or_a_row_beyond_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npy");
        std::fs::write(&path, vec![0u8; 128 + 10 * 12]).unwrap();
        let p = path.to_str().unwrap();
        let err = OutputFile::open(p, 128, 11, 3).err().unwrap().to_string();
        assert!(
            err.contains("out.npy") && err.contains("260 bytes"),
            "{err}"
        );
        let err = OutputFile::open(&format!("{p}.missing"), 128, 10, 3)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("out.npy.missing"), "{err}");
        let file = OutputFile::open(p, 128, 10, 3).unwrap();
        let err = file
            .write_compact(&[9, 10], &[0, 1], &[0.0; 6])
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 10: beyond the output's 10 rows"), "{err}");
        file.write_compact(&[], &[], &[]).unwrap();
    }

    #[test]
    fn no_file_takes_no_layout() {
        assert!(OutputFile::requested("", 0, 0, 3, false, &[])
            .unwrap()
            .is_none());
        for (header, rows) in [(128, 0), (0, 10), (128, 10)] {
            let err = OutputFile::requested("", header, rows, 3, false, &[])
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains(&format!("out_header_len ({header}) and out_rows ({rows})"))
                    && err.contains("out_file, which is empty"),
                "{err}"
            );
        }
        let err = OutputFile::requested("", 0, 0, 3, true, &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("out_owned_order describes out_file, which is empty"),
            "{err}"
        );
    }
}
