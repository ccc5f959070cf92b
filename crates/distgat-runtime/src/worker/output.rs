//! A part's output rows written straight into the coordinator's temporary output file
//! (`RunJobRequest.workers_write_output`: workers on the coordinator's machine).
//!
//! Sent over gRPC, every output row was copied about seven times (into a message, through
//! the socket both ways, decoded, gathered into a block of the file, written); the
//! coordinator spent about 1.3 s of CPU on R-MAT 1M/10M's 512 MB of rows, on cores the
//! workers need. Here each row is one copy into the file's page cache, by the part that
//! computed it, and only its id travels (8 bytes a row, in `rows_written`).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Result, RuntimeError};

/// The coordinator's presized output file: row `id` (`width` float32, little-endian) at
/// byte `header_len + id * width * 4`, written with a positioned write per run of
/// consecutive ids. (A shared mapping of the whole file added its pages to the worker's
/// resident memory, 470 MB on R-MAT 1M/10M; mapping each chunk's stretch of the file
/// instead made the job slower than sending the rows.)
pub(super) struct OutputFile {
    file: std::fs::File,
    header_len: usize,
    rows: usize,
    row_bytes: usize,
}

/// `out_header_len` and `out_rows` describe `out_file`: without one they must be 0 (else an
/// error naming them).
pub(super) fn check_layout(path: &str, header_len: u64, rows: u64) -> Result<()> {
    if path.is_empty() && (header_len != 0 || rows != 0) {
        return Err(RuntimeError::InvalidArgument(format!(
            "out_header_len ({header_len}) and out_rows ({rows}) describe out_file, which is \
             empty: the output rows are sent, not written"
        )));
    }
    Ok(())
}

impl OutputFile {
    /// The file `StartJobRequest` names: `None` when `out_file` is empty (the rows are sent),
    /// and then `out_header_len` and `out_rows` must be 0 (else an error naming them: a
    /// field that describes no file is not ignored); else [`OutputFile::open`].
    pub(super) fn requested(
        path: &str,
        header_len: u64,
        rows: u64,
        width: usize,
    ) -> Result<Option<Self>> {
        check_layout(path, header_len, rows)?;
        if path.is_empty() {
            return Ok(None);
        }
        Self::open(path, header_len, rows, width).map(Some)
    }

    /// Opens `path` (`StartJobRequest.out_file`), which must be a regular file of exactly
    /// `header_len + rows * width * 4` bytes (else an error naming it: a stale or foreign
    /// path is never written past its end).
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
        usize::try_from(expected).map_err(|_| bad("too large to map".into()))?;
        Ok(OutputFile {
            file,
            header_len: header_len as usize,
            rows: rows as usize,
            row_bytes: width * 4,
        })
    }

    /// Writes rows `values` (`[nodes.len(), width]`) at rows `nodes`, a run of consecutive
    /// ids with one copy. Every id must be below the file's rows.
    pub(super) fn write_rows(&self, nodes: &[u64], values: &[f32]) -> Result<()> {
        let rb = self.row_bytes;
        assert_eq!(
            values.len() * 4,
            nodes.len() * rb,
            "one row of values per node"
        );
        self.check_ids(nodes.iter().copied())?;
        let mut i = 0;
        while i < nodes.len() {
            let mut end = i + 1;
            while end < nodes.len() && nodes[end] == nodes[end - 1] + 1 {
                end += 1;
            }
            self.write_run(nodes[i], &values[i * rb / 4..end * rb / 4])?;
            i = end;
        }
        Ok(())
    }

    /// Writes the local rows `rows` of `values` (`[owned.len(), width]`, local row r is
    /// node `owned[r]`), a run of rows consecutive in both numberings with one copy.
    pub(super) fn write_picked(&self, owned: &[u64], rows: &[u32], values: &[f32]) -> Result<()> {
        let w = self.row_bytes / 4;
        self.check_ids(rows.iter().map(|&r| owned[r as usize]))?;
        let mut i = 0;
        while i < rows.len() {
            let mut end = i + 1;
            while end < rows.len()
                && rows[end] == rows[end - 1] + 1
                && owned[rows[end] as usize] == owned[rows[end - 1] as usize] + 1
            {
                end += 1;
            }
            let (a, b) = (rows[i] as usize, rows[end - 1] as usize + 1);
            self.write_run(owned[a], &values[a * w..b * w])?;
            i = end;
        }
        Ok(())
    }

    /// An error unless every id is below the file's rows.
    fn check_ids(&self, ids: impl Iterator<Item = u64>) -> Result<()> {
        match ids.max() {
            Some(hi) if hi as usize >= self.rows => Err(RuntimeError::InvalidArgument(format!(
                "output row {hi}: beyond the output's {} rows",
                self.rows
            ))),
            _ => Ok(()),
        }
    }

    /// Writes `values` (whole rows) at row `first` on (ids checked by
    /// [`OutputFile::check_ids`]).
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

    #[test]
    fn rows_land_at_their_ids_and_nothing_else_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npy");
        // Three pages of rows.
        let (header, rows, width) = (128u64, 1000u64, 3usize);
        let mut want = vec![0xAAu8; header as usize + rows as usize * width * 4];
        std::fs::write(&path, &want).unwrap();
        let file = OutputFile::open(path.to_str().unwrap(), header, rows, width).unwrap();
        let put = |want: &mut Vec<u8>, v: u64, row: &[f32]| {
            let at = header as usize + v as usize * width * 4;
            for (c, x) in row.iter().enumerate() {
                want[at + c * 4..at + c * 4 + 4].copy_from_slice(&x.to_le_bytes());
            }
        };
        // Ids 2, 3, 4 (one run), 700, 999 (single rows).
        let nodes = [2u64, 3, 4, 700, 999];
        let values: Vec<f32> = (0..nodes.len() * width).map(|i| i as f32 + 0.5).collect();
        file.write_rows(&nodes, &values).unwrap();
        for (k, &v) in nodes.iter().enumerate() {
            put(&mut want, v, &values[k * width..(k + 1) * width]);
        }
        // Local rows 0, 1, 3 of a part owning 500, 501, 502, 900: a window from row 500.
        let owned = [500u64, 501, 502, 900];
        let local: Vec<f32> = (0..owned.len() * width).map(|i| -(i as f32)).collect();
        file.write_picked(&owned, &[0, 1, 3], &local).unwrap();
        for r in [0usize, 1, 3] {
            put(&mut want, owned[r], &local[r * width..(r + 1) * width]);
        }
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), want);
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
            .write_rows(&[9, 10], &[0.0; 6])
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 10: beyond the output's 10 rows"), "{err}");
        file.write_rows(&[], &[]).unwrap();
    }

    #[test]
    fn no_file_takes_no_layout() {
        assert!(OutputFile::requested("", 0, 0, 3).unwrap().is_none());
        for (header, rows) in [(128, 0), (0, 10), (128, 10)] {
            let err = OutputFile::requested("", header, rows, 3)
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains(&format!("out_header_len ({header}) and out_rows ({rows})"))
                    && err.contains("out_file, which is empty"),
                "{err}"
            );
        }
    }
}
