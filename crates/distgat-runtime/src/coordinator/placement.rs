//! The parts' own output files (`StartJobRequest.out_owned_order`) and their placement
//! into the output in node order.
//!
//! Written in node order straight into the output, a part's rows were a positioned write
//! per run of about 2 ids on METIS parts of a random graph, with the parts contending for
//! the file's inode lock: 4-5 s a part for the last layer's boundary rows at 100M edges
//! (docs/performance.md). In owned order each part's file is its own and its rows go in
//! long runs. Here the coordinator moves them into the output one block of about
//! [`BLOCK_BYTES`] at a time, as soon as every row of the block is in (while the parts
//! still compute the rest), so at the job's end only the last blocks are left to place.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use distgat_graph::open_direct;

use crate::catalog::lock;
use crate::error::{Result, RuntimeError};

/// Bytes of one block of the output file (4 MiB: the largest request of the project's
/// virtio disk); the node-order sink counts rows in blocks of about as many bytes.
pub(super) const BLOCK_BYTES: usize = 4 << 20;

/// Rows of `row_bytes` in one block of about [`BLOCK_BYTES`] (at least one).
pub(super) fn rows_per_block(row_bytes: usize) -> usize {
    (BLOCK_BYTES / row_bytes.max(1)).max(1)
}

/// Alignment of `O_DIRECT` offsets, lengths and memory (a page: at least any block size
/// a Linux file system uses). [`BLOCK_BYTES`] is a multiple of it.
const ALIGN: usize = 4096;

/// What the placing threads share. Block `b` is the output file's bytes
/// `b * block_bytes..(b + 1) * block_bytes` (the last one shorter): aligned, so a placing
/// thread writes it around the page cache (`O_DIRECT`) where the file system allows. Its
/// rows are the rows with a byte in it: a row across a block boundary is in both blocks.
struct Layout {
    /// The partition's part of each node.
    assignment: Vec<u32>,
    parts: usize,
    row_bytes: usize,
    header: Vec<u8>,
    block_bytes: usize,
    /// Per block: its rows (a row across a block boundary is in both blocks).
    rows: Vec<std::ops::Range<usize>>,
    /// `starts[b * parts + p]`: part `p`'s rows before block `b`'s first row, and
    /// `ends[b * parts + p]` before its end (so block `b`'s rows of part `p` are rows
    /// `starts[..]..ends[..]` of its file: a part's file holds its nodes in increasing
    /// order).
    starts: Vec<u64>,
    ends: Vec<u64>,
    /// Per part: its file's absolute path.
    paths: Vec<String>,
}

impl Layout {
    /// The layout of `assignment`'s rows behind `header` in blocks of `block_bytes` (a
    /// positive multiple of [`ALIGN`]); an error when the assignment names a part beyond
    /// `parts`. `paths` are the parts' files (filled in later by the caller).
    fn new(
        assignment: Vec<u32>,
        parts: usize,
        row_bytes: usize,
        header: Vec<u8>,
        block_bytes: usize,
        paths: Vec<String>,
    ) -> Result<Self> {
        assert!(block_bytes > 0 && block_bytes.is_multiple_of(ALIGN) && row_bytes > 0);
        let (n, h) = (assignment.len(), header.len());
        let file_len = h + n * row_bytes;
        let blocks = file_len.div_ceil(block_bytes);
        let rows: Vec<_> = (0..blocks)
            .map(|b| {
                let (s, e) = (b * block_bytes, ((b + 1) * block_bytes).min(file_len));
                let first = s.saturating_sub(h) / row_bytes;
                let end = e.saturating_sub(h).div_ceil(row_bytes).min(n);
                first..end.max(first)
            })
            .collect();
        if let Some(p) = assignment.iter().find(|&&p| p as usize >= parts) {
            return Err(RuntimeError::InvalidArgument(format!(
                "the partition's assignment names part {p} of a {parts}-part partition"
            )));
        }
        // Per part, its rows before every block's first row, and before its end.
        let starts = prefix_counts(&assignment, parts, rows.iter().map(|r| r.start));
        let ends = prefix_counts(&assignment, parts, rows.iter().map(|r| r.end));
        Ok(Layout {
            assignment,
            parts,
            row_bytes,
            header,
            block_bytes,
            rows,
            starts,
            ends,
            paths,
        })
    }

    /// Each part's owned rows.
    fn owned(&self) -> Vec<u64> {
        let mut owned = vec![0u64; self.parts];
        for &p in &self.assignment {
            owned[p as usize] += 1;
        }
        owned
    }

    /// The first and last block row `v` has bytes in (the same block, the next one, or
    /// more for a row longer than a block).
    fn blocks_of(&self, v: usize) -> (usize, usize) {
        let h = self.header.len();
        let first = (h + v * self.row_bytes) / self.block_bytes;
        let last = (h + (v + 1) * self.row_bytes - 1) / self.block_bytes;
        (first, last)
    }

    /// The output file's bytes of block `b`.
    fn span(&self, b: usize) -> std::ops::Range<usize> {
        let len = self.header.len() + self.assignment.len() * self.row_bytes;
        b * self.block_bytes..((b + 1) * self.block_bytes).min(len)
    }
}

/// For each of `points` (nondecreasing row indices), the rows of each of the `parts` parts
/// before it: `parts` counts a point, one after the other (every part of `assignment`
/// below `parts`).
fn prefix_counts(
    assignment: &[u32],
    parts: usize,
    points: impl Iterator<Item = usize>,
) -> Vec<u64> {
    let mut out = Vec::new();
    let mut count = vec![0u64; parts];
    let mut at = 0;
    for to in points {
        for &p in &assignment[at..to] {
            count[p as usize] += 1;
        }
        at = to;
        out.extend_from_slice(&count);
    }
    out
}

/// A job's parts' own output files: part `p`'s file holds its owned rows (the nodes `v`
/// with `assignment[v] == p`, increasing) one after the other, `row_bytes` each. Rows the
/// workers report written ([`OwnedOrder::add`]) count towards their blocks of the output;
/// a complete block is placed in node order into the output by a placing thread
/// ([`OwnedOrder::finish`] waits for the last). Dropped, it tells the placing threads to
/// stop (without waiting) and deletes the files.
pub(crate) struct OwnedOrder {
    layout: Arc<Layout>,
    /// Per part: its file beside the output, held only to be deleted when this is
    /// dropped (after the placing threads stopped).
    _files: Vec<tempfile::TempPath>,
    /// Per part: its owned rows.
    owned: Vec<u64>,
    /// Per block: rows still to come.
    remaining: Mutex<Vec<u32>>,
    /// Complete blocks, to the placing threads (`None` once finished).
    due: Mutex<Option<mpsc::Sender<usize>>>,
    threads: Vec<JoinHandle<Result<()>>>,
    stop: Arc<AtomicBool>,
    /// Blocks placed so far (for the log).
    placed: Arc<AtomicUsize>,
    output: Arc<Output>,
}

impl OwnedOrder {
    /// Presized files for the parts of `assignment` (`parts` parts, rows of `row_bytes`)
    /// beside `out_path` (on the coordinator's file system, which the workers share, in a
    /// directory the user named), and the threads that place complete blocks into `out`
    /// (the output's temporary file at `out_temp`, its `header_len` bytes of header
    /// written: the rows follow), adding the bytes of rows they write to `written`.
    /// Blocks are `block_bytes` of the file ([`BLOCK_BYTES`] in a job; a positive multiple
    /// of 4096). Errors name the directory or the part.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create(
        out_path: &Path,
        out: &File,
        out_temp: &Path,
        header_len: u64,
        written: Arc<AtomicU64>,
        assignment: Vec<u32>,
        parts: usize,
        row_bytes: usize,
        block_bytes: usize,
    ) -> Result<Self> {
        let mut header = vec![0u8; header_len as usize];
        out.read_exact_at(&mut header, 0)?;
        let dir = distgat_graph::parent_dir(out_path);
        let name = out_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut layout = Layout::new(
            assignment,
            parts,
            row_bytes,
            header,
            block_bytes,
            Vec::new(),
        )?;
        let owned = layout.owned();
        let mut files = Vec::with_capacity(parts);
        for (p, &rows) in owned.iter().enumerate() {
            let io = |e: std::io::Error| {
                RuntimeError::Io(std::io::Error::new(
                    e.kind(),
                    format!("{}: part {p}'s output rows: {e}", dir.display()),
                ))
            };
            let file = tempfile::Builder::new()
                .prefix(&format!(".{name}.part-{p}."))
                .suffix(".rows")
                .tempfile_in(&dir)
                .map_err(io)?;
            file.as_file()
                .set_len(rows * row_bytes as u64)
                .map_err(io)?;
            let path = file.into_temp_path();
            layout.paths.push(
                std::fs::canonicalize(&path)
                    .map_err(io)?
                    .to_string_lossy()
                    .into_owned(),
            );
            files.push(path);
        }
        let layout = Arc::new(layout);
        let remaining = layout.rows.iter().map(|r| r.len() as u32).collect();
        let (tx, rx) = mpsc::channel::<usize>();
        let rx = Arc::new(Mutex::new(rx));
        let stop = Arc::new(AtomicBool::new(false));
        let placed = Arc::new(AtomicUsize::new(0));
        let output = Arc::new(Output {
            plain: out.try_clone()?,
            direct: open_direct(out_temp),
            direct_works: AtomicBool::new(true),
            direct_blocks: AtomicUsize::new(0),
        });
        let threads = (0..std::thread::available_parallelism().map_or(1, |t| t.get()))
            .map(|_| {
                let (layout, rx, stop, written, placed, output) = (
                    layout.clone(),
                    rx.clone(),
                    stop.clone(),
                    written.clone(),
                    placed.clone(),
                    output.clone(),
                );
                std::thread::spawn(move || {
                    place_blocks(&layout, &output, &rx, &stop, &written, &placed)
                })
            })
            .collect();
        Ok(OwnedOrder {
            layout,
            _files: files,
            owned,
            remaining: Mutex::new(remaining),
            due: Mutex::new(Some(tx)),
            threads,
            stop,
            placed,
            output,
        })
    }

    /// Blocks written around the page cache so far.
    pub(crate) fn direct_blocks(&self) -> usize {
        self.output.direct_blocks.load(Ordering::Relaxed)
    }

    /// (blocks placed so far, blocks of the output).
    pub(crate) fn progress(&self) -> (usize, usize) {
        (
            self.placed.load(Ordering::Relaxed),
            lock(&self.remaining).len(),
        )
    }

    /// Part `p`'s file for its worker: (absolute path, owned rows).
    pub(crate) fn part_file(&self, p: usize) -> (String, u64) {
        (self.layout.paths[p].clone(), self.owned[p])
    }

    /// An error unless every node of `nodes` is part `part`'s (its row is in that part's
    /// file, where the placement reads it).
    pub(crate) fn check_owner(&self, part: u32, nodes: &[u64]) -> Result<()> {
        let assignment = &self.layout.assignment;
        match nodes
            .iter()
            .find(|&&v| assignment.get(v as usize) != Some(&part))
        {
            Some(v) => Err(RuntimeError::InvalidArgument(format!(
                "rows_written from part {part}: node {v} is not one of its owned nodes"
            ))),
            None => Ok(()),
        }
    }

    /// Counts in rows `nodes` (checked in: new, in range, the part's own); each block they
    /// complete goes to the placing threads.
    pub(crate) fn add(&self, nodes: impl Iterator<Item = u64>) {
        let mut remaining = lock(&self.remaining);
        let due = lock(&self.due);
        for v in nodes {
            let (first, last) = self.layout.blocks_of(v as usize);
            for b in first..=last {
                remaining[b] -= 1;
                if remaining[b] == 0 {
                    if let Some(tx) = due.as_ref() {
                        // A closed channel means the threads stopped on an error, which
                        // `finish` reports.
                        let _ = tx.send(b);
                    }
                }
            }
        }
    }

    /// Forgets the rows counted in (a new attempt of the job writes them all again; what
    /// was placed is placed again, the same bytes).
    pub(crate) fn reset(&self) {
        let mut remaining = lock(&self.remaining);
        for (r, rows) in remaining.iter_mut().zip(&self.layout.rows) {
            *r = rows.len() as u32;
        }
    }

    /// Waits until every complete block is placed (call once every row is in): the first
    /// error of a placing thread, naming the file. The parts' files are deleted after.
    pub(crate) fn finish(mut self) -> Result<()> {
        let incomplete = lock(&self.remaining).iter().filter(|&&r| r > 0).count();
        drop(lock(&self.due).take());
        let mut first = Ok(());
        for t in std::mem::take(&mut self.threads) {
            let r = t.join().unwrap_or_else(|_| {
                Err(RuntimeError::Io(std::io::Error::other(
                    "placing the output rows panicked",
                )))
            });
            if first.is_ok() {
                first = r;
            }
        }
        first?;
        if incomplete > 0 {
            return Err(RuntimeError::FailedPrecondition(format!(
                "{incomplete} blocks of the output are missing rows"
            )));
        }
        Ok(())
    }
}

/// Stops the placing threads without waiting for them: a failed job's sink is dropped
/// on an async thread, which must not block on a block's read and write. A thread still
/// placing a block finishes it through its own descriptors (the deleted files stay
/// readable to it) and then sees `stop`; what it writes goes to the uncommitted output.
impl Drop for OwnedOrder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(lock(&self.due).take());
    }
}

/// The output's temporary file, opened plainly and (where the system allows) a second
/// time with `O_DIRECT`.
struct Output {
    plain: File,
    direct: Option<File>,
    /// Cleared at the first `EINVAL` of a direct write (a file system that takes the flag
    /// at open but not the write): plain writes from then on.
    direct_works: AtomicBool,
    /// Blocks written directly (for the log and the tests).
    direct_blocks: AtomicUsize,
}

impl Output {
    /// Writes `bytes` at `offset`: around the page cache when the offset, the length and
    /// the memory are aligned and the system allows (a buffered write costs a fresh page
    /// of page cache per 4 KiB: on a VM, often a hypervisor fault; docs/performance.md),
    /// else plainly. The bytes in the file are the same either way.
    fn write_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        let aligned = offset.is_multiple_of(ALIGN as u64)
            && bytes.len().is_multiple_of(ALIGN)
            && (bytes.as_ptr() as usize).is_multiple_of(ALIGN);
        if let (true, Some(direct)) = (aligned, &self.direct) {
            if self.direct_works.load(Ordering::Relaxed) {
                match direct.write_all_at(bytes, offset) {
                    Ok(()) => {
                        self.direct_blocks.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        self.direct_works.store(false, Ordering::Relaxed)
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.plain.write_all_at(bytes, offset)
    }
}

/// A placing thread: takes complete blocks from `due` until it closes (or `stop`), and
/// writes each into the output in node order from the parts' files. Each part's rows of a
/// block are one read of consecutive rows of its file, and the block is one write (direct
/// where it can: see [`Output::write_at`]).
fn place_blocks(
    layout: &Layout,
    out: &Output,
    due: &Mutex<mpsc::Receiver<usize>>,
    stop: &AtomicBool,
    written: &AtomicU64,
    placed: &AtomicUsize,
) -> Result<()> {
    let (parts, rb, h) = (layout.parts, layout.row_bytes, layout.header.len());
    let io = |path: &str, e: std::io::Error| {
        RuntimeError::Io(std::io::Error::new(e.kind(), format!("{path}: {e}")))
    };
    let files = layout
        .paths
        .iter()
        .map(|path| File::open(path).map_err(|e| io(path, e)))
        .collect::<Result<Vec<_>>>()?;
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); parts];
    let mut rows_buf = Vec::new();
    // The block's bytes, from its first aligned byte.
    let mut staging = vec![0u8; layout.block_bytes + ALIGN];
    let skip = staging.as_ptr().align_offset(ALIGN);
    let mut cursor = vec![0usize; parts];
    loop {
        // The lock is held only while waiting; another thread places meanwhile.
        let b = match lock(due).recv() {
            Ok(b) => b,
            Err(_) => return Ok(()),
        };
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        for (p, buf) in bufs.iter_mut().enumerate() {
            let (lo, hi) = (layout.starts[b * parts + p], layout.ends[b * parts + p]);
            buf.resize((hi - lo) as usize * rb, 0);
            files[p]
                .read_exact_at(buf, lo * rb as u64)
                .map_err(|e| io(&layout.paths[p], e))?;
        }
        let rows = layout.rows[b].clone();
        rows_buf.clear();
        cursor.fill(0);
        for &p in &layout.assignment[rows.clone()] {
            let c = &mut cursor[p as usize];
            rows_buf.extend_from_slice(&bufs[p as usize][*c * rb..(*c + 1) * rb]);
            *c += 1;
        }
        // The block's bytes: the header's part of it, then its rows' (the first and last
        // row may be cut at the block's edges).
        let span = layout.span(b);
        let block = &mut staging[skip..skip + span.len()];
        let in_header = span.start.min(h)..span.end.min(h);
        block[..in_header.len()].copy_from_slice(&layout.header[in_header.clone()]);
        let body = span.start.max(h)..span.end;
        let from = body.start - (h + rows.start * rb);
        block[in_header.len()..].copy_from_slice(&rows_buf[from..from + body.len()]);
        out.write_at(block, span.start as u64)
            .map_err(|e| io("the output's temporary file", e))?;
        written.fetch_add(body.len() as u64, Ordering::Relaxed);
        placed.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of three interleaved parts, each written in owned order into its own file and
    /// reported in any order of chunks, land in node order in the output behind its
    /// header; a row of another part is refused. `block` bytes a block: rows of 4 KiB
    /// behind a 128-byte header in 4 MiB blocks (the blocks of a real job), and rows of 12
    /// bytes in 8 KiB blocks (a row across every block boundary; 24 blocks), and rows of
    /// 12 KiB in 8 KiB blocks (each row in two or three blocks).
    #[test]
    fn owned_rows_land_in_node_order() {
        for (n, rb, block) in [
            (2500usize, 4096usize, BLOCK_BYTES),
            (16_000, 12, 8192),
            (40, 12_288, 8192),
        ] {
            owned_rows_land_in_node_order_in(n, rb, block);
        }
    }

    fn owned_rows_land_in_node_order_in(n: usize, rb: usize, block: usize) {
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out.npy");
        let header = 128u64;
        let out = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&out_path)
            .unwrap();
        out.set_len(header + (n * rb) as u64).unwrap();
        out.write_all_at(&[0xAB; 128], 0).unwrap();
        // Parts by a hash of the id (runs of every length), part 2 never in 1024..2048.
        let assignment: Vec<u32> = (0..n)
            .map(|v| {
                let p = ((v * 2654435761) >> 7) % 3;
                if (1024..2048).contains(&v) && p == 2 {
                    0
                } else {
                    p as u32
                }
            })
            .collect();
        let written = Arc::new(AtomicU64::new(0));
        let order = OwnedOrder::create(
            &out_path,
            &out,
            &out_path,
            header,
            written.clone(),
            assignment.clone(),
            3,
            rb,
            block,
        )
        .unwrap();
        let row = |v: usize| -> Vec<u8> { (0..rb).map(|k| (v * 31 + k * 7) as u8).collect() };
        for p in 0..3u32 {
            let owned: Vec<u64> = (0..n as u64)
                .filter(|&v| assignment[v as usize] == p)
                .collect();
            let (path, rows) = order.part_file(p as usize);
            assert_eq!(rows, owned.len() as u64);
            let file = File::options().write(true).open(&path).unwrap();
            let bytes: Vec<u8> = owned.iter().flat_map(|&v| row(v as usize)).collect();
            file.write_all_at(&bytes, 0).unwrap();
            let other = (0..n as u64)
                .find(|&v| assignment[v as usize] != p)
                .unwrap();
            assert!(order
                .check_owner(p, &[owned[0], other])
                .unwrap_err()
                .to_string()
                .contains(&format!("node {other} is not one of its owned nodes")));
            order.check_owner(p, &owned).unwrap();
            // Reported in reversed chunks.
            for chunk in owned.chunks(300).rev() {
                order.add(chunk.iter().copied());
            }
        }
        let paths: Vec<String> = (0..3).map(|p| order.part_file(p).0).collect();
        let blocks = order.progress().1;
        assert_eq!(blocks, (header as usize + n * rb).div_ceil(block));
        let direct = open_direct(&out_path).is_some();
        let output = order.output.clone();
        order.finish().unwrap();
        // Every block but a last one shorter than 4 KiB went around the page cache, where
        // this file system allows it.
        let aligned = (header as usize + n * rb) / block;
        if direct {
            assert!(
                output.direct_blocks.load(Ordering::Relaxed) >= aligned,
                "{aligned}"
            );
        }
        assert_eq!(written.load(Ordering::Relaxed), (n * rb) as u64);
        let got = std::fs::read(&out_path).unwrap();
        assert_eq!(got.len(), header as usize + n * rb);
        assert!(got[..128].iter().all(|&b| b == 0xAB), "the header is kept");
        for v in 0..n {
            let at = header as usize + v * rb;
            assert_eq!(
                &got[at..at + rb],
                &row(v)[..],
                "row {v} of {n} x {rb} bytes"
            );
        }
        for p in paths {
            assert!(!Path::new(&p).exists(), "{p} deleted");
        }
    }

    /// A job that ends with rows missing is an error, and nothing is left behind.
    #[test]
    fn missing_rows_are_an_error_and_the_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out.npy");
        let out = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&out_path)
            .unwrap();
        let order = OwnedOrder::create(
            &out_path,
            &out,
            &out_path,
            0,
            Arc::default(),
            vec![0, 1, 0, 1],
            2,
            8,
            BLOCK_BYTES,
        )
        .unwrap();
        let path = order.part_file(1).0;
        order.add([0u64, 2].into_iter());
        let err = order.finish().unwrap_err().to_string();
        assert!(
            err.contains("1 blocks of the output are missing rows"),
            "{err}"
        );
        assert!(!Path::new(&path).exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only out.npy"
        );
    }
}
