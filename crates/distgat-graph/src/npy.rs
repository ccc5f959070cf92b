//! `.npy` reading and writing.
//!
//! npyz parses and writes the header; the body is moved in 1 MiB blocks so that reading a
//! few hundred MiB of features costs one pass over the bytes and no second copy, and so a
//! truncated body is reported with its expected and actual size before anything is read.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use npyz::{DType, Order, WriterBuilder};

use crate::error::{GraphError, Result};
use crate::output::AtomicFile;

/// Element types distgat reads from `.npy` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    F32,
    F64,
    I32,
    I64,
}

impl NpyDtype {
    fn from_descr(descr: &str) -> Option<Self> {
        match descr {
            "<f4" => Some(NpyDtype::F32),
            "<f8" => Some(NpyDtype::F64),
            "<i4" => Some(NpyDtype::I32),
            "<i8" => Some(NpyDtype::I64),
            _ => None,
        }
    }
    pub fn size(self) -> usize {
        match self {
            NpyDtype::F32 | NpyDtype::I32 => 4,
            NpyDtype::F64 | NpyDtype::I64 => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            NpyDtype::F32 => "float32",
            NpyDtype::F64 => "float64",
            NpyDtype::I32 => "int32",
            NpyDtype::I64 => "int64",
        }
    }
}

/// An opened `.npy` file positioned at the start of its body, whose size has been checked
/// against the header.
pub struct NpyBody {
    reader: BufReader<File>,
    pub dtype: NpyDtype,
    pub shape: Vec<u64>,
    pub fortran_order: bool,
    /// Bytes before the body: row `i` of a C-order 2-D array starts at
    /// `header_len + i * row_bytes`.
    pub header_len: u64,
    len: usize,
    /// Read the body into memory advised to use transparent huge pages
    /// ([`NpyBody::in_huge_pages`]).
    huge_pages: bool,
    /// Memory a float32 C-order body is read into ([`NpyBody::reusing`]).
    reuse: Option<Vec<f32>>,
}

impl NpyBody {
    /// Reads the body (native float32/int64/float64 C-order reads) into memory advised to
    /// use 2 MiB transparent huge pages. Worth it only for an array a kernel will gather
    /// rows of at random (fewer TLB misses); elsewhere it costs: on the test VM a huge
    /// page's first touch cost more system time than the 4 KiB pages it replaces
    /// (`docs/performance.md`, tenth session, gives the measurement and a guess at why).
    pub fn in_huge_pages(mut self) -> Self {
        self.huge_pages = true;
        self
    }

    /// Reads a float32 C-order body into `buffer`'s memory when it holds at least the
    /// body's values (its values are overwritten, and its capacity beyond them is given
    /// back): memory the caller has already touched costs no page faults, where a new
    /// allocation's first touch faults and zero-fills every page. Any other body, or a
    /// shorter buffer, gets a new allocation as without this call.
    pub fn reusing(mut self, buffer: Vec<f32>) -> Self {
        self.reuse = Some(buffer);
        self
    }

    /// Opens `path`, parses the header and checks that the file holds exactly the bytes
    /// the header promises.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| GraphError::io(path, e))?;
        let meta = file.metadata().map_err(|e| GraphError::io(path, e))?;
        if let Some(what) = crate::files::irregular_kind(&meta) {
            return Err(GraphError::argument(
                path.display().to_string(),
                format!("is not a regular file ({what}); .npy inputs are read by position"),
            ));
        }
        let file_len = meta.len();
        let mut reader = BufReader::with_capacity(HEADER_BUFFER, file);
        let head = reader.fill_buf().unwrap_or_default();
        // npyz allocates the header's claimed length (u32 in versions 2 and 3) before
        // reading it: 4 bytes could ask for 4 GiB (found by fuzzing). The header must fit
        // in the file and in the first buffer (so the checks below see all of it; numpy
        // itself refuses headers over 10 000 bytes by default).
        if let Some((start, len)) = header_extent(head) {
            let end = (start + len) as u64;
            if end > file_len || end > HEADER_BUFFER as u64 {
                return Err(GraphError::format(
                    path,
                    format!(
                        "not a valid .npy file: the header claims {len} bytes, the file has \
                         {file_len} (at most {HEADER_BUFFER} header bytes are read)"
                    ),
                ));
            }
            // npyz's Python-literal parser backtracks exponentially in nested brackets
            // (`{{{{...`: 10 deep took 10 s in the fuzz build, 12 over a minute; found by
            // fuzzing). numpy writes a dict holding a tuple (2 deep; a structured dtype,
            // which distgat refuses anyway, a few more): deeper nesting is refused here.
            let text = &head[start.min(head.len())..(start + len).min(head.len())];
            let depth = nesting_depth(text);
            if depth > MAX_HEADER_DEPTH {
                return Err(GraphError::format(
                    path,
                    format!(
                        "not a valid .npy file: the header nests brackets {depth} deep \
                         (at most {MAX_HEADER_DEPTH})"
                    ),
                ));
            }
        }
        // npyz multiplies the shape's dimensions unchecked (a panic in builds with overflow
        // checks; found by fuzzing): refuse such a shape before npyz sees it.
        // npyz also evaluates arithmetic in the tuple (`(10-1,)`): numpy writes plain
        // integers only, and anything else is refused here.
        match header_shapes(reader.fill_buf().unwrap_or_default()) {
            Ok(shapes) => {
                if let Some(shape) = shapes.iter().find(|s| shape_overflows(s)) {
                    return Err(GraphError::format(
                        path,
                        format!("shape {shape:?} overflows"),
                    ));
                }
            }
            Err(token) => {
                return Err(GraphError::format(
                    path,
                    format!("not a valid .npy file: shape dimension '{token}' is not an integer"),
                ));
            }
        }
        let header = npyz::NpyHeader::from_reader(&mut reader)
            .map_err(|e| GraphError::format(path, format!("not a valid .npy file: {e}")))?;
        let header_len = reader
            .stream_position()
            .map_err(|e| GraphError::io(path, e))?;
        let info = npyz::NpyFile::with_header(header, std::io::empty());
        let descr = match info.dtype() {
            DType::Plain(ts) => ts.to_string(),
            other => other.descr(),
        };
        let dtype = NpyDtype::from_descr(&descr).ok_or_else(|| {
            GraphError::format(
                path,
                format!(
                    "unsupported dtype {descr}: expected little-endian float32 ('<f4'), \
                     float64 ('<f8'), int32 ('<i4') or int64 ('<i8')"
                ),
            )
        })?;
        let shape = info.shape().to_vec();
        let count = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| GraphError::format(path, format!("shape {shape:?} overflows")))?;
        let body_len = count
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| GraphError::format(path, format!("shape {shape:?} overflows")))?;
        // A header may claim a body of almost 2^64 bytes: the sum with the header's own
        // length must not overflow (fuzz/README.md, bug 1).
        let expected_len = header_len
            .checked_add(body_len)
            .ok_or_else(|| GraphError::format(path, format!("shape {shape:?} overflows")))?;
        if file_len < expected_len {
            return Err(GraphError::format(
                path,
                format!(
                    "truncated body: shape {shape:?} of {} needs {body_len} bytes after the \
                     {header_len}-byte header, the file has only {}",
                    dtype.name(),
                    file_len.saturating_sub(header_len)
                ),
            ));
        }
        if file_len > expected_len {
            return Err(GraphError::format(
                path,
                format!(
                    "{} unexpected trailing bytes after the {body_len}-byte body of shape {shape:?}",
                    file_len - expected_len
                ),
            ));
        }
        let len = usize::try_from(count)
            .map_err(|_| GraphError::format(path, "array too large for this machine"))?;
        Ok(NpyBody {
            reader,
            dtype,
            fortran_order: info.order() == Order::Fortran,
            shape,
            header_len,
            len,
            huge_pages: false,
            reuse: None,
        })
    }

    /// The open file, for reads at offsets past [`NpyBody::header_len`].
    pub fn into_file(self) -> File {
        self.reader.into_inner()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads a float32 or float64 body as f32 (float64 is rounded to nearest).
    pub fn read_f32(self, path: &Path) -> Result<Vec<f32>> {
        self.read_f32_checked(path, |_, _| Ok(()))
    }

    /// [`NpyBody::read_f32`] that also runs `check(first, values)` over the values, in
    /// pieces: `values` are the body's elements `first..first + values.len()` (in file
    /// order, not necessarily whole rows). A float32 body is checked piece by piece right
    /// after each piece is read, in parallel on the current rayon pool, while the piece is
    /// still in the cache. When several pieces fail, the error of the first one in file
    /// order is returned (so the report does not depend on the threads).
    pub fn read_f32_checked(
        mut self,
        path: &Path,
        check: impl Fn(usize, &[f32]) -> Result<()> + Sync,
    ) -> Result<Vec<f32>> {
        match self.dtype {
            NpyDtype::F32 => {
                let out = match self.reuse.take() {
                    Some(mut buffer) if buffer.len() >= self.len => {
                        buffer.truncate(self.len);
                        buffer.shrink_to_fit();
                        buffer
                    }
                    _ => vec![0f32; self.len],
                };
                self.read_native_into(path, out, |b: [u8; 4]| f32::from_le_bytes(b), check)
            }
            NpyDtype::F64 => {
                let values = self.read_elements(path, |b: [u8; 8]| f64::from_le_bytes(b) as f32)?;
                check_in_pieces(&values, &check)?;
                Ok(values)
            }
            _ => Err(self.not_float(path)),
        }
    }

    /// `Ok` for a float32 or float64 body, else the error naming `path` and the dtype
    /// found (the one every float reader gives).
    pub fn expect_float(&self, path: &Path) -> Result<()> {
        match self.dtype {
            NpyDtype::F32 | NpyDtype::F64 => Ok(()),
            _ => Err(self.not_float(path)),
        }
    }

    fn not_float(&self, path: &Path) -> GraphError {
        GraphError::format(
            path,
            format!(
                "dtype {} where float32 or float64 was expected",
                self.dtype.name()
            ),
        )
    }

    /// Streams a float32 or float64 body (float64 rounded to nearest) in blocks of whole
    /// rows of `row_len` values: `f(first_row, values)` gets at most about 16 MiB of
    /// values at a time, in file order, and stops the pass by returning `false`. Memory
    /// stays at one block whatever the file's size.
    pub fn for_each_f32_block(
        mut self,
        path: &Path,
        row_len: usize,
        mut f: impl FnMut(usize, &[f32]) -> Result<bool>,
    ) -> Result<()> {
        self.expect_float(path)?;
        let size = self.dtype.size();
        let row_len = row_len.max(1);
        let rows = self.len / row_len;
        // No rows: nothing to size a buffer by (a `[0, 2^40]` header is 128 bytes).
        if rows == 0 {
            return Ok(());
        }
        // At most the file's rows (so the buffers never exceed what the file holds).
        let rows_per_block = ((16usize << 20) / row_len.saturating_mul(4)).clamp(1, rows);
        let mut bytes = vec![0u8; rows_per_block * row_len * size];
        let mut values = vec![0f32; rows_per_block * row_len];
        let mut first = 0usize;
        while first < rows {
            let take = rows_per_block.min(rows - first);
            let raw = &mut bytes[..take * row_len * size];
            self.reader
                .read_exact(raw)
                .map_err(|e| GraphError::io(path, e))?;
            let out = &mut values[..take * row_len];
            if size == 4 {
                for (v, b) in out.iter_mut().zip(raw.chunks_exact(4)) {
                    *v = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                }
            } else {
                for (v, b) in out.iter_mut().zip(raw.chunks_exact(8)) {
                    *v = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32;
                }
            }
            if !f(first, out)? {
                break;
            }
            first += take;
        }
        Ok(())
    }

    /// Streams the whole body's bytes as they are in the file (any dtype, little-endian),
    /// in blocks of at most 16 MiB, in file order, through one reused buffer (so a pass
    /// over a large file touches no fresh memory beyond it). No value is converted or
    /// checked. Errors: reading the file (naming `path`), or `f`'s own.
    pub fn for_each_bytes_block(
        self,
        path: &Path,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let total = self.len.saturating_mul(self.dtype.size());
        self.stream_bytes(path, total, 16 << 20, |raw| f(raw).map(|()| true))
    }

    /// Streams a float32 body's bytes as they are in the file (little-endian), in blocks of
    /// whole rows of `row_len` values, at most about 16 MiB each, in file order; `f` stops
    /// the pass by returning `false`. No value is converted or checked. An error for any
    /// other dtype.
    pub fn for_each_f32_bytes_block(
        self,
        path: &Path,
        row_len: usize,
        f: impl FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        if self.dtype != NpyDtype::F32 {
            return Err(GraphError::format(
                path,
                format!("dtype {} where float32 was expected", self.dtype.name()),
            ));
        }
        let row_bytes = row_len.max(1) * 4;
        let rows = self.len / row_len.max(1);
        if rows == 0 {
            return Ok(());
        }
        let rows_per_block = ((16usize << 20) / row_bytes).clamp(1, rows);
        self.stream_bytes(path, rows * row_bytes, rows_per_block * row_bytes, f)
    }

    /// The first `total` body bytes, in file order, in blocks of `block` bytes (the last
    /// may be shorter) through one reused buffer; `f` stops the pass by returning `false`.
    fn stream_bytes(
        mut self,
        path: &Path,
        total: usize,
        block: usize,
        mut f: impl FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        let block = block.max(1);
        let mut bytes = vec![0u8; total.min(block)];
        let mut done = 0usize;
        while done < total {
            let raw = &mut bytes[..(total - done).min(block)];
            self.reader
                .read_exact(raw)
                .map_err(|e| GraphError::io(path, e))?;
            if !f(raw)? {
                break;
            }
            done += raw.len();
        }
        Ok(())
    }

    /// Reads a float64 or float32 body as f64 (for reference outputs kept in float64).
    pub fn read_f64(self, path: &Path) -> Result<Vec<f64>> {
        match self.dtype {
            NpyDtype::F64 => {
                self.read_native(path, |b: [u8; 8]| f64::from_le_bytes(b), |_, _| Ok(()))
            }
            NpyDtype::F32 => self.read_elements(path, |b: [u8; 4]| f32::from_le_bytes(b) as f64),
            other => Err(GraphError::format(
                path,
                format!(
                    "dtype {} where float64 or float32 was expected",
                    other.name()
                ),
            )),
        }
    }

    pub fn read_i64(self, path: &Path) -> Result<Vec<i64>> {
        match self.dtype {
            NpyDtype::I64 => {
                self.read_native(path, |b: [u8; 8]| i64::from_le_bytes(b), |_, _| Ok(()))
            }
            NpyDtype::I32 => self.read_elements(path, |b: [u8; 4]| i32::from_le_bytes(b) as i64),
            other => Err(GraphError::format(
                path,
                format!("dtype {} where int64 or int32 was expected", other.name()),
            )),
        }
    }

    /// Reads an int64 or int32 body as the `u64` bits of its int64 values (two's
    /// complement: a negative value has its top bit set), running `check(first, values)`
    /// over the values in pieces as [`NpyBody::read_f32_checked`] does. Node ids are
    /// read this way, straight into the `u64` vector the graph keeps, with the check for
    /// negative ids fused into the read.
    pub fn read_i64_bits_checked(
        self,
        path: &Path,
        check: impl Fn(usize, &[u64]) -> Result<()> + Sync,
    ) -> Result<Vec<u64>> {
        match self.dtype {
            NpyDtype::I64 => self.read_native(path, |b: [u8; 8]| u64::from_le_bytes(b), check),
            NpyDtype::I32 => {
                let values =
                    self.read_elements(path, |b: [u8; 4]| i64::from(i32::from_le_bytes(b)) as u64)?;
                check_in_pieces(&values, &check)?;
                Ok(values)
            }
            other => Err(GraphError::format(
                path,
                format!("dtype {} where int64 or int32 was expected", other.name()),
            )),
        }
    }

    /// Reads a body whose stored type is `T` itself and runs `check` over it in pieces.
    ///
    /// On a little-endian Unix machine the file's bytes go straight into the returned
    /// vector: pieces of [`READ_PIECE`] bytes are read with positional reads (`pread`) in
    /// parallel on the current rayon pool, each checked right after its read. That is one
    /// copy from the page cache, no per-element work, and the page faults of the new
    /// vector and the copy split over the threads. Elsewhere element by element with
    /// `convert`, then checked.
    ///
    /// Why not mmap: a mapped input that another process truncates or rewrites while we
    /// read it is a SIGBUS or undefined behaviour, which no comment can prove away; a
    /// read of a file being rewritten only gives wrong values, which the checks see like
    /// any others. The engine also needs the features as an owned, writable `Vec` (row
    /// normalisation, and the layer input is moved into the engine), so a mapping would
    /// be copied once anyway.
    fn read_native<T: bytemuck::Pod + Send + Sync, const W: usize>(
        self,
        path: &Path,
        convert: impl Fn([u8; W]) -> T,
        check: impl Fn(usize, &[T]) -> Result<()> + Sync,
    ) -> Result<Vec<T>> {
        let out = vec![T::zeroed(); self.len];
        self.read_native_into(path, out, convert, check)
    }

    /// [`NpyBody::read_native`] into `out` (`self.len` values, whose old values are
    /// overwritten).
    fn read_native_into<T: bytemuck::Pod + Send + Sync, const W: usize>(
        self,
        path: &Path,
        mut out: Vec<T>,
        convert: impl Fn([u8; W]) -> T,
        check: impl Fn(usize, &[T]) -> Result<()> + Sync,
    ) -> Result<Vec<T>> {
        use rayon::prelude::*;
        debug_assert_eq!(std::mem::size_of::<T>(), W);
        debug_assert_eq!(out.len(), self.len);
        if cfg!(target_endian = "big") || cfg!(not(unix)) {
            let values = self.read_elements(path, convert)?;
            check_in_pieces(&values, &check)?;
            return Ok(values);
        }
        let header_len = self.header_len;
        let file = self.reader.into_inner();
        if self.huge_pages {
            advise_huge_pages(bytemuck::cast_slice_mut(&mut out));
        }
        let per_piece = (READ_PIECE / W).max(1);
        // Pieces start at READ_PIECE (2 MiB) boundaries of memory, so each huge page is
        // faulted in by one thread: a piece straddling two would have both threads wait
        // on each other's page.
        let start = out.as_ptr() as usize;
        let lead = ((start.next_multiple_of(READ_PIECE) - start) / W).min(out.len());
        let (head, tail) = out.split_at_mut(lead);
        let mut pieces = Vec::with_capacity(tail.len() / per_piece + 2);
        if !head.is_empty() {
            pieces.push((0, head));
        }
        for (k, piece) in tail.chunks_mut(per_piece).enumerate() {
            pieces.push((lead + k * per_piece, piece));
        }
        let results: Vec<Result<()>> = pieces
            .into_par_iter()
            .map(|(first, piece)| {
                let offset = header_len + (first * W) as u64;
                read_exact_at(&file, bytemuck::cast_slice_mut::<T, u8>(piece), offset)
                    .map_err(|e| GraphError::io(path, e))?;
                check(first, piece)
            })
            .collect();
        results.into_iter().collect::<Result<()>>()?;
        Ok(out)
    }

    fn read_elements<T, const W: usize>(
        mut self,
        path: &Path,
        convert: impl Fn([u8; W]) -> T,
    ) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(self.len);
        let mut block = vec![0u8; (1 << 20) / W * W];
        let mut remaining = self.len * W;
        while remaining > 0 {
            let take = remaining.min(block.len());
            self.reader
                .read_exact(&mut block[..take])
                .map_err(|e| GraphError::io(path, e))?;
            out.extend(
                block[..take]
                    .chunks_exact(W)
                    .map(|c| convert(c.try_into().expect("chunks_exact yields W bytes"))),
            );
            remaining -= take;
        }
        Ok(out)
    }
}

/// Asks the kernel to back `bytes` (a fresh, still untouched allocation) with 2 MiB
/// transparent huge pages where whole ones fit, before the read first touches it: one
/// fault per 2 MiB instead of per 4 KiB, and rows that a kernel later gathers at random
/// (a one-layer model's features become its source rows, transformed in place) cost far
/// fewer TLB misses. Only a hint: without THP, or below 4 MiB, nothing changes.
#[cfg(target_os = "linux")]
pub(crate) fn advise_huge_pages(bytes: &mut [u8]) {
    const HUGE: usize = 2 << 20;
    if bytes.len() < 2 * HUGE {
        return;
    }
    let start = bytes.as_mut_ptr() as usize;
    let first = start.next_multiple_of(HUGE);
    let end = (start + bytes.len()) / HUGE * HUGE;
    if end <= first {
        return;
    }
    // SAFETY: `[first, end)` lies inside `bytes`, which this function borrows mutably,
    // so no other code uses those pages meanwhile; both ends are 2 MiB (so page)
    // aligned, as madvise requires. MADV_HUGEPAGE changes neither the contents nor the
    // access rights of any page: it only lets the kernel use huge pages for the range
    // (faults and khugepaged), so every reference into it stays valid. A failure (no
    // THP in the kernel) is ignored, as a hint may be.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn advise_huge_pages(_bytes: &mut [u8]) {}

/// Bytes per positional read of [`NpyBody::read_native`]: large enough that the system
/// call costs nothing next to the copy, small enough that the check that follows finds
/// the piece in the cache, and giving a few hundred pieces to balance over the threads.
const READ_PIECE: usize = 2 << 20;

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(_file: &File, _buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
    unreachable!("read_native reads sequentially on this platform")
}

/// Runs `check(first, piece)` over `values` in pieces of about a million elements, in
/// parallel on the current rayon pool; the error of the first failing piece in order.
fn check_in_pieces<T: Sync>(
    values: &[T],
    check: &(impl Fn(usize, &[T]) -> Result<()> + Sync),
) -> Result<()> {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 20;
    let results: Vec<Result<()>> = values
        .par_chunks(PIECE)
        .enumerate()
        .map(|(k, piece)| check(k * PIECE, piece))
        .collect();
    results.into_iter().collect()
}

/// The dimensions of every `shape` tuple (or list) in the header at the start of `bytes`
/// (npyz keeps the last of repeated keys), or the first token that is not a plain integer.
/// A backslash (an escape that could spell the key otherwise) is refused too: numpy never
/// writes one. The header is looked at within the bytes buffered (up to 1 MiB).
/// The bytes [`NpyBody::open`] buffers at once, and the longest header it accepts.
const HEADER_BUFFER: usize = 1 << 20;

/// Where a `.npy` file's header text starts and how long its pre-header says it is, when
/// `bytes` begin with the magic and a version npyz reads (1, 2 or 3).
fn header_extent(bytes: &[u8]) -> Option<(usize, usize)> {
    // Magic (6 bytes), version (2), header length (u16 for version 1, else u32), header.
    match bytes {
        [0x93, b'N', b'U', b'M', b'P', b'Y', 1, _, a, b, ..] => {
            Some((10, u16::from_le_bytes([*a, *b]) as usize))
        }
        [0x93, b'N', b'U', b'M', b'P', b'Y', 2 | 3, _, a, b, c, d, ..] => {
            Some((12, u32::from_le_bytes([*a, *b, *c, *d]) as usize))
        }
        _ => None,
    }
}

/// The deepest nesting of the header text's brackets that [`NpyBody::open`] lets npyz
/// parse.
const MAX_HEADER_DEPTH: usize = 4;

/// How deep `(`, `[` and `{` nest in `text` (quotes are not looked at: a bracket inside
/// a string counts too, which only makes the bound stricter).
fn nesting_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for &b in text {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn header_shapes(bytes: &[u8]) -> std::result::Result<Vec<Vec<u64>>, String> {
    // Magic (6 bytes), version (2), header length (u16 for version 1, else u32), header.
    let (start, len) = match bytes {
        [_, _, _, _, _, _, 1, _, a, b, ..] => (10, u16::from_le_bytes([*a, *b]) as usize),
        [_, _, _, _, _, _, _, _, a, b, c, d, ..] => {
            (12, u32::from_le_bytes([*a, *b, *c, *d]) as usize)
        }
        _ => return Ok(Vec::new()),
    };
    let bytes = &bytes[start.min(bytes.len())..start.saturating_add(len).min(bytes.len())];
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    };
    if text.contains('\\') {
        return Err("\\".into());
    }
    let mut shapes = Vec::new();
    for (at, _) in text.match_indices("shape") {
        let after = &text[at + 5..];
        let Some(open) = after.find(['(', '[']) else {
            continue;
        };
        let Some(len) = after[open..].find([')', ']']) else {
            continue;
        };
        let shape = after[open + 1..open + len]
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.trim_end_matches('L')
                    .parse::<u64>()
                    .map_err(|_| t.to_string())
            })
            .collect::<std::result::Result<Vec<u64>, String>>()?;
        shapes.push(shape);
    }
    Ok(shapes)
}

/// Whether a product of some of the dimensions overflows u64 (npyz multiplies them for
/// the element count and for every stride; zeros aside, the full product bounds them all).
fn shape_overflows(shape: &[u64]) -> bool {
    shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .is_none()
}

/// The `.npy` header numpy writes for a C-order array of `T` with `shape` (npyz's
/// format: magic, version, padded dict), as bytes.
fn npy_header<T: npyz::Serialize + npyz::AutoSerialize>(shape: &[u64]) -> std::io::Result<Vec<u8>> {
    let mut header = Vec::new();
    // The writer writes the header when it begins; dropping it unfinished writes nothing
    // more (its drop only checks the element count, ignoring the result).
    let writer = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut header)
        .begin_nd()?;
    drop(writer);
    Ok(header)
}

/// Bytes per positional write of an output body: large writes, a few hundred pieces for
/// the threads at 512 MB.
const WRITE_PIECE: usize = 4 << 20;

/// Writes `bytes` at `offset` of `file` in pieces, in parallel on the current rayon pool
/// (positional writes, so the pieces need no order); the first failing piece's error.
#[cfg(unix)]
fn write_all_at_par(file: &File, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    use rayon::prelude::*;
    use std::os::unix::fs::FileExt;
    let results: Vec<std::io::Result<()>> = bytes
        .par_chunks(WRITE_PIECE)
        .enumerate()
        .map(|(k, piece)| file.write_all_at(piece, offset + (k * WRITE_PIECE) as u64))
        .collect();
    results.into_iter().collect()
}

/// Writes `data` as a C-order `.npy` array of `shape`, atomically (temp file, then rename).
/// On a little-endian Unix machine the body is the values' own bytes, written with
/// positional writes in parallel pieces on the current rayon pool.
pub fn write_npy<T>(path: &Path, shape: &[u64], data: &[T]) -> Result<()>
where
    T: npyz::Serialize + npyz::AutoSerialize + bytemuck::Pod,
{
    let expected: u64 = shape.iter().product();
    if expected != data.len() as u64 {
        return Err(GraphError::argument(
            path.display().to_string(),
            format!(
                "internal: shape {shape:?} does not match {} values",
                data.len()
            ),
        ));
    }
    let file = AtomicFile::create(path)?;
    let result = (|| -> std::io::Result<()> {
        #[cfg(unix)]
        if cfg!(target_endian = "little") {
            // npyz's default dtypes of plain numbers are little-endian ('<f4', '<i8', ...).
            let header = npy_header::<T>(shape)?;
            let body = bytemuck::cast_slice::<T, u8>(data);
            let len = header.len() as u64 + body.len() as u64;
            file.as_file().set_len(len)?;
            std::os::unix::fs::FileExt::write_all_at(file.as_file(), &header, 0)?;
            // A large body goes around the page cache, as `NpyRowsFile`'s does.
            let direct = staged_writer(&file, &header, len, crate::direct::SEGMENT_BYTES);
            let Some(direct) = direct else {
                return write_all_at_par(file.as_file(), header.len() as u64, body);
            };
            use rayon::prelude::*;
            body.par_chunks(WRITE_PIECE)
                .enumerate()
                .for_each(|(k, piece)| {
                    direct.write_at(piece, (header.len() + k * WRITE_PIECE) as u64)
                });
            return direct.finish();
        }
        let mut buffered = BufWriter::with_capacity(1 << 20, file.as_file());
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(shape)
            .writer(&mut buffered)
            .begin_nd()?;
        writer.extend(data.iter().copied())?;
        writer.finish()?;
        buffered.flush()
    })();
    result.map_err(|e| GraphError::io(path, e))?;
    file.commit()
}

/// The direct writer (see `direct.rs`) of `file`'s temp file of `len` bytes, whose
/// `header` is already written plainly, when the body after it spans at least four
/// segments of `segment` bytes; `None` otherwise or where `O_DIRECT` is refused. The
/// header is staged into segment 0 too, as that segment's direct write covers it.
#[cfg(unix)]
fn staged_writer(
    file: &AtomicFile,
    header: &[u8],
    len: u64,
    segment: usize,
) -> Option<crate::direct::DirectWriter> {
    let body = len - header.len() as u64;
    if body < 4 * segment as u64 {
        return None;
    }
    let direct = crate::direct::DirectWriter::open(file.temp_path(), file.as_file(), len, segment)?;
    direct.write_at(header, 0);
    Some(direct)
}

/// A float32 C-order `[rows, width]` `.npy` output filled by row ranges, in any order and
/// from any thread, while the values are still being computed, then committed atomically
/// (temp file in the destination directory, fsync, rename; dropped without commit, the
/// temp file is removed and nothing appears under `path`).
///
/// The bytes equal [`write_npy`]'s for the same values: the same header (npyz), then row
/// `i` at `header_len + i * width * 4`. Write errors are kept (the first one) and
/// returned by [`NpyRowsFile::commit`], so a writer on a compute thread never panics.
/// Unix only (positional writes).
///
/// A body of 16 MiB or more is written around the page cache where the system allows
/// (Linux `O_DIRECT`, staged in aligned 4 MiB segments by a writer thread; see
/// `direct.rs`): a buffered write costs a fresh page-cache page per 4 KiB, which is most of
/// what writing costs on a VM. The bytes are the same either way.
#[cfg(unix)]
pub struct NpyRowsFile {
    direct: Option<crate::direct::DirectWriter>,
    file: AtomicFile,
    path: std::path::PathBuf,
    header_len: u64,
    rows: usize,
    width: usize,
    rows_written: std::sync::atomic::AtomicUsize,
    error: std::sync::Mutex<Option<std::io::Error>>,
}

#[cfg(unix)]
impl NpyRowsFile {
    /// Creates the temp file beside `path` with the header of a float32 `[rows, width]`
    /// array, presized to the whole array. Errors name `path`.
    pub fn create(path: &Path, rows: usize, width: usize) -> Result<Self> {
        Self::create_staged(path, rows, width, crate::direct::SEGMENT_BYTES)
    }

    /// [`NpyRowsFile::create`] with direct segments of `segment` bytes (a multiple of
    /// 4096) when the body has at least four of them.
    fn create_staged(path: &Path, rows: usize, width: usize, segment: usize) -> Result<Self> {
        let file = AtomicFile::create(path)?;
        let header =
            npy_header::<f32>(&[rows as u64, width as u64]).map_err(|e| GraphError::io(path, e))?;
        let body = (rows as u64)
            .checked_mul(width as u64 * 4)
            .ok_or_else(|| GraphError::argument(path.display().to_string(), "output too large"))?;
        (|| -> std::io::Result<()> {
            file.as_file().set_len(header.len() as u64 + body)?;
            std::os::unix::fs::FileExt::write_all_at(file.as_file(), &header, 0)
        })()
        .map_err(|e| GraphError::io(path, e))?;
        // The header is on disk already (for `write_all`, which drops staged bytes).
        let direct = staged_writer(&file, &header, header.len() as u64 + body, segment);
        Ok(NpyRowsFile {
            direct,
            file,
            path: path.to_path_buf(),
            header_len: header.len() as u64,
            rows,
            width,
            rows_written: Default::default(),
            error: Default::default(),
        })
    }

    /// Writes rows `first..first + values.len() / width` (whole rows, row-major). A
    /// failure (or rows out of range) is recorded for [`NpyRowsFile::commit`].
    pub fn write_rows(&self, first: usize, values: &[f32]) {
        use std::sync::atomic::Ordering::Relaxed;
        let width = self.width.max(1);
        let count = values.len() / width;
        let result = if !values.len().is_multiple_of(width) || first + count > self.rows {
            Err(std::io::Error::other(format!(
                "internal: rows {first}..{} of width {width} do not fit the {} rows",
                first + count,
                self.rows
            )))
        } else {
            let offset = self.header_len + (first * self.width * 4) as u64;
            let bytes = bytemuck::cast_slice(values);
            match &self.direct {
                // Errors are kept by the writer, for the commit.
                Some(direct) => {
                    direct.write_at(bytes, offset);
                    Ok(())
                }
                None => {
                    std::os::unix::fs::FileExt::write_all_at(self.file.as_file(), bytes, offset)
                }
            }
        };
        match result {
            Ok(()) => {
                self.rows_written.fetch_add(count, Relaxed);
            }
            Err(e) => {
                let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(e);
            }
        }
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> u64 {
        self.width as u64 * 4
    }

    /// Rows written so far (each row is expected once).
    pub fn rows_written(&self) -> usize {
        self.rows_written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes every row of `values` (`[rows, width]`), in parallel pieces; for when the
    /// rows did not arrive one by one. Rows already written are written again with the
    /// same bytes.
    pub fn write_all(&self, values: &[f32]) -> Result<()> {
        if values.len() != self.rows * self.width {
            return Err(GraphError::argument(
                self.path.display().to_string(),
                format!(
                    "internal: {} values for {} rows of width {}",
                    values.len(),
                    self.rows,
                    self.width
                ),
            ));
        }
        if let Some(direct) = &self.direct {
            direct.all_plain();
        }
        write_all_at_par(
            self.file.as_file(),
            self.header_len,
            bytemuck::cast_slice(values),
        )
        .map_err(|e| GraphError::io(&self.path, e))?;
        self.rows_written
            .store(self.rows, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Starts writing what is written so far to the disk and waits for it (`fdatasync`),
    /// so that the final fsync of [`NpyRowsFile::commit`] has less left to do. Meant for a
    /// background thread while the rows are computed.
    pub fn sync_data(&self) -> Result<()> {
        self.file
            .as_file()
            .sync_data()
            .map_err(|e| GraphError::io(&self.path, e))
    }

    /// The first recorded write error, else: every row written, then fsync and rename.
    pub fn commit(self) -> Result<()> {
        let error = self.error.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = error {
            return Err(GraphError::io(&self.path, e));
        }
        if self.rows_written() < self.rows {
            return Err(GraphError::argument(
                self.path.display().to_string(),
                format!(
                    "internal: only {} of {} rows were written",
                    self.rows_written(),
                    self.rows
                ),
            ));
        }
        if let Some(direct) = &self.direct {
            direct.finish().map_err(|e| GraphError::io(&self.path, e))?;
        }
        self.file.commit()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A body of several 2 MiB pieces (the first one cut at a 2 MiB boundary of memory)
    /// reads back exactly, each piece's check sees its own elements, and of two bad
    /// values the first in file order is reported, whatever the threads do.
    #[test]
    fn a_body_read_in_pieces_reads_back_exactly_and_reports_the_first_bad_value() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * (READ_PIECE / 4) + 12_345;
        let values: Vec<f32> = (0..len).map(|i| (i % 1000) as f32 - 0.5).collect();
        let path = dir.path().join("x.npy");
        write_npy(&path, &[len as u64], &values).unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let got = NpyBody::open(&path)
            .unwrap()
            .read_f32_checked(&path, |first, piece| {
                assert!(
                    piece
                        .iter()
                        .enumerate()
                        .all(|(k, &v)| v == values[first + k]),
                    "piece at {first}"
                );
                seen.lock().unwrap().push((first, piece.len()));
                Ok(())
            })
            .unwrap();
        assert!(got == values);
        let huge = NpyBody::open(&path)
            .unwrap()
            .in_huge_pages()
            .read_f32(&path)
            .unwrap();
        assert!(huge == values, "read into huge pages");
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        let mut next = 0;
        for (first, n) in &seen {
            assert_eq!(*first, next, "pieces cover the body once");
            next += n;
        }
        assert_eq!(next, len);
        assert!(seen.len() >= 4, "{seen:?}");

        let bad = [READ_PIECE / 4 + 7, len - 3];
        let mut with_nan = values.clone();
        for &b in &bad {
            with_nan[b] = f32::NAN;
        }
        write_npy(&path, &[len as u64], &with_nan).unwrap();
        let e = NpyBody::open(&path)
            .unwrap()
            .read_f32_checked(&path, |first, piece| {
                match piece.iter().position(|v| v.is_nan()) {
                    Some(k) => Err(GraphError::argument("x", format!("NaN at {}", first + k))),
                    None => Ok(()),
                }
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("NaN at {}", bad[0])), "{e}");
    }

    /// Rows written out of order from several threads give `write_npy`'s bytes; an
    /// uncommitted file leaves nothing behind; a missing row is an error at commit.
    #[test]
    fn rows_file_equals_write_npy() {
        use rayon::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        let (rows, width) = (1000usize, 7usize);
        let values: Vec<f32> = (0..rows * width).map(|i| i as f32 * 0.37 - 11.0).collect();
        let want = dir.path().join("want.npy");
        write_npy(&want, &[rows as u64, width as u64], &values).unwrap();
        let got = dir.path().join("got.npy");
        let file = NpyRowsFile::create(&got, rows, width).unwrap();
        let bounds = [0usize, 3, 250, 251, 600, 999, 1000];
        bounds
            .windows(2)
            .collect::<Vec<_>>()
            .par_iter()
            .rev()
            .for_each(|w| {
                file.write_rows(w[0], &values[w[0] * width..w[1] * width]);
            });
        assert_eq!(file.rows_written(), rows);
        assert!(!got.exists(), "not visible before commit");
        file.commit().unwrap();
        assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&want).unwrap());

        let all = dir.path().join("all.npy");
        let file = NpyRowsFile::create(&all, rows, width).unwrap();
        file.write_all(&values).unwrap();
        file.commit().unwrap();
        assert_eq!(std::fs::read(&all).unwrap(), std::fs::read(&want).unwrap());

        let partial = dir.path().join("partial.npy");
        let file = NpyRowsFile::create(&partial, rows, width).unwrap();
        file.write_rows(0, &values[..10 * width]);
        let e = file.commit().unwrap_err().to_string();
        assert!(e.contains("only 10 of 1000 rows"), "{e}");
        assert!(!partial.exists());
        let file = NpyRowsFile::create(&partial, rows, width).unwrap();
        file.write_rows(999, &values[..2 * width]);
        let e = file.commit().unwrap_err().to_string();
        assert!(e.contains("do not fit"), "{e}");
        drop(NpyRowsFile::create(&partial, rows, width).unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            3,
            "temp files removed"
        );
    }

    /// With direct segments of 4 KiB (so rows of 28 bytes straddle them): rows written
    /// in any order from several threads, rows scattered over more segments than there
    /// are staging buffers, rows written twice, and `write_all` after some rows all give
    /// `write_npy`'s bytes; a missing row is still an error at commit.
    #[test]
    fn rows_file_written_around_the_page_cache_equals_write_npy() {
        use rayon::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        let (rows, width) = (5000usize, 7usize);
        let values: Vec<f32> = (0..rows * width).map(|i| i as f32 * 0.61 - 7.0).collect();
        let want = dir.path().join("want.npy");
        write_npy(&want, &[rows as u64, width as u64], &values).unwrap();
        let want = std::fs::read(&want).unwrap();
        let row = |r: usize| &values[r * width..(r + 1) * width];
        let seg = 4096;

        // Pieces of 37 rows in reverse, from the rayon pool.
        let got = dir.path().join("chunks.npy");
        let file = NpyRowsFile::create_staged(&got, rows, width, seg).unwrap();
        let direct = file.direct.as_ref().map(|d| d.direct_works());
        eprintln!("O_DIRECT in {}: {direct:?}", dir.path().display());
        let firsts: Vec<usize> = (0..rows).step_by(37).collect();
        firsts.par_iter().rev().for_each(|&f| {
            let l = (f + 37).min(rows);
            file.write_rows(f, &values[f * width..l * width]);
        });
        file.commit().unwrap();
        assert!(std::fs::read(&got).unwrap() == want, "chunks");

        // One row at a time with a stride, so every segment opens before any completes
        // (more than MAX_BUFFERS: the rest go plain); then some rows again.
        let got = dir.path().join("scattered.npy");
        let file = NpyRowsFile::create_staged(&got, rows, width, seg).unwrap();
        for start in 0..100 {
            for r in (start..rows).step_by(100) {
                file.write_rows(r, row(r));
            }
        }
        for r in [0, 1, 2500, rows - 1] {
            file.write_rows(r, row(r));
        }
        assert_eq!(file.rows_written(), rows + 4);
        file.commit().unwrap();
        assert!(std::fs::read(&got).unwrap() == want, "scattered");

        // Half the rows streamed, then all of them at once.
        let got = dir.path().join("all.npy");
        let file = NpyRowsFile::create_staged(&got, rows, width, seg).unwrap();
        file.write_rows(0, &values[..rows / 2 * width]);
        file.write_all(&values).unwrap();
        file.commit().unwrap();
        assert!(std::fs::read(&got).unwrap() == want, "write_all");

        let partial = dir.path().join("partial.npy");
        let file = NpyRowsFile::create_staged(&partial, rows, width, seg).unwrap();
        file.write_rows(0, &values[..(rows - 1) * width]);
        let e = file.commit().unwrap_err().to_string();
        assert!(e.contains("only 4999 of 5000 rows"), "{e}");
        assert!(!partial.exists());
    }

    /// A body large enough to go around the page cache (17 MiB, pieces of 4 MiB that do
    /// not start on segment boundaries because of the header) reads back exactly.
    #[test]
    fn a_large_write_npy_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.npy");
        let (rows, width) = (17 * 1024 + 3, 256usize);
        let values: Vec<f32> = (0..rows * width).map(|i| (i % 9973) as f32 * 0.5).collect();
        write_npy(&path, &[rows as u64, width as u64], &values).unwrap();
        let body = NpyBody::open(&path).unwrap();
        assert_eq!(body.shape, [rows as u64, width as u64]);
        assert!(body.read_f32(&path).unwrap() == values);
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert_eq!(bytes, 128 + values.len() as u64 * 4);
    }
}
