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

use crate::catalog::lock;
use crate::error::{Result, RuntimeError};

/// Output rows per block: about 4 MiB of the file.
pub(super) const BLOCK_BYTES: usize = 4 << 20;

/// Rows of `row_bytes` in one block of about [`BLOCK_BYTES`] (at least one).
pub(super) fn rows_per_block(row_bytes: usize) -> usize {
    (BLOCK_BYTES / row_bytes.max(1)).max(1)
}

/// What the placing threads share.
struct Layout {
    /// The partition's part of each node.
    assignment: Vec<u32>,
    parts: usize,
    row_bytes: usize,
    block_rows: usize,
    /// `starts[b * parts + p]`: part `p`'s rows in the blocks before block `b` (so block
    /// `b`'s rows of part `p` are rows `starts[b * parts + p]..starts[(b + 1) * parts + p]`
    /// of its file: a part's file holds its nodes in increasing order).
    starts: Vec<u64>,
    /// Per part: its file's absolute path.
    paths: Vec<String>,
}

impl Layout {
    fn block(&self, b: usize) -> std::ops::Range<usize> {
        b * self.block_rows..((b + 1) * self.block_rows).min(self.assignment.len())
    }
}

/// A job's parts' own output files: part `p`'s file holds its owned rows (the nodes `v`
/// with `assignment[v] == p`, increasing) one after the other, `row_bytes` each. Rows the
/// workers report written ([`OwnedOrder::add`]) count towards their block of the output;
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
}

impl OwnedOrder {
    /// Presized files for the parts of `assignment` (`parts` parts, rows of `row_bytes`)
    /// beside `out_path` (on the coordinator's file system, which the workers share, in a
    /// directory the user named), and the threads that place complete blocks into `out`
    /// (the output's temporary file: rows after `header_len` bytes), adding the bytes
    /// they write to `written`. Errors name the directory or the part.
    pub(crate) fn create(
        out_path: &Path,
        out: &File,
        header_len: u64,
        written: Arc<AtomicU64>,
        assignment: Vec<u32>,
        parts: usize,
        row_bytes: usize,
    ) -> Result<Self> {
        let n = assignment.len();
        let block_rows = rows_per_block(row_bytes);
        let blocks = n.div_ceil(block_rows);
        let mut starts = vec![0u64; (blocks + 1) * parts];
        let mut count = vec![0u64; parts];
        for b in 0..blocks {
            starts[b * parts..(b + 1) * parts].copy_from_slice(&count);
            for &p in &assignment[b * block_rows..((b + 1) * block_rows).min(n)] {
                let slot = count.get_mut(p as usize).ok_or_else(|| {
                    RuntimeError::InvalidArgument(format!(
                        "the partition's assignment names part {p} of a {parts}-part partition"
                    ))
                })?;
                *slot += 1;
            }
        }
        starts[blocks * parts..].copy_from_slice(&count);
        let dir = match out_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let name = out_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files = Vec::with_capacity(parts);
        let mut paths = Vec::with_capacity(parts);
        for (p, &rows) in count.iter().enumerate() {
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
            paths.push(
                std::fs::canonicalize(&path)
                    .map_err(io)?
                    .to_string_lossy()
                    .into_owned(),
            );
            files.push(path);
        }
        let layout = Arc::new(Layout {
            assignment,
            parts,
            row_bytes,
            block_rows,
            starts,
            paths,
        });
        let remaining = (0..blocks).map(|b| layout.block(b).len() as u32).collect();
        let (tx, rx) = mpsc::channel::<usize>();
        let rx = Arc::new(Mutex::new(rx));
        let stop = Arc::new(AtomicBool::new(false));
        let placed = Arc::new(AtomicUsize::new(0));
        let threads = (0..std::thread::available_parallelism().map_or(1, |t| t.get()))
            .map(|_| {
                let (layout, rx, stop, written, placed) = (
                    layout.clone(),
                    rx.clone(),
                    stop.clone(),
                    written.clone(),
                    placed.clone(),
                );
                let out = out.try_clone()?;
                Ok(std::thread::spawn(move || {
                    place_blocks(&layout, &out, header_len, &rx, &stop, &written, &placed)
                }))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(OwnedOrder {
            layout,
            _files: files,
            owned: count,
            remaining: Mutex::new(remaining),
            due: Mutex::new(Some(tx)),
            threads,
            stop,
            placed,
        })
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
            let b = v as usize / self.layout.block_rows;
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

    /// Forgets the rows counted in (a new attempt of the job writes them all again; what
    /// was placed is placed again, the same bytes).
    pub(crate) fn reset(&self) {
        let mut remaining = lock(&self.remaining);
        for (b, r) in remaining.iter_mut().enumerate() {
            *r = self.layout.block(b).len() as u32;
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

/// A placing thread: takes complete blocks from `due` until it closes (or `stop`), and
/// writes each into `out` in node order from the parts' files. Each part's rows of a
/// block are one read of consecutive rows of its file, and the block is one write.
fn place_blocks(
    layout: &Layout,
    out: &File,
    header_len: u64,
    due: &Mutex<mpsc::Receiver<usize>>,
    stop: &AtomicBool,
    written: &AtomicU64,
    placed: &AtomicUsize,
) -> Result<()> {
    let (parts, rb) = (layout.parts, layout.row_bytes);
    let io = |path: &str, e: std::io::Error| {
        RuntimeError::Io(std::io::Error::new(e.kind(), format!("{path}: {e}")))
    };
    let files = layout
        .paths
        .iter()
        .map(|path| File::open(path).map_err(|e| io(path, e)))
        .collect::<Result<Vec<_>>>()?;
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); parts];
    let mut block = Vec::with_capacity(layout.block_rows * rb);
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
            let (lo, hi) = (
                layout.starts[b * parts + p],
                layout.starts[(b + 1) * parts + p],
            );
            buf.resize((hi - lo) as usize * rb, 0);
            files[p]
                .read_exact_at(buf, lo * rb as u64)
                .map_err(|e| io(&layout.paths[p], e))?;
        }
        let rows = layout.block(b);
        block.clear();
        cursor.fill(0);
        for &p in &layout.assignment[rows.clone()] {
            let c = &mut cursor[p as usize];
            block.extend_from_slice(&bufs[p as usize][*c * rb..(*c + 1) * rb]);
            *c += 1;
        }
        out.write_all_at(&block, header_len + (rows.start * rb) as u64)
            .map_err(|e| io("the output's temporary file", e))?;
        written.fetch_add(block.len() as u64, Ordering::Relaxed);
        placed.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of three interleaved parts, each written in owned order into its own file and
    /// reported in any order of chunks, land in node order in the output; nothing before
    /// the header or beyond the rows changes; a row of another part is refused.
    #[test]
    fn owned_rows_land_in_node_order() {
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out.npy");
        // Rows of 4 KiB: blocks of 1024 rows, so 2500 nodes make 3 blocks.
        let (n, rb, header) = (2500usize, 4096usize, 128u64);
        let out = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&out_path)
            .unwrap();
        out.set_len(header + (n * rb) as u64).unwrap();
        out.write_all_at(&[0xAB; 128], 0).unwrap();
        // Parts by a hash of the id (runs of every length), part 2 never in block 1.
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
            header,
            written.clone(),
            assignment.clone(),
            3,
            rb,
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
        order.finish().unwrap();
        assert_eq!(written.load(Ordering::Relaxed), (n * rb) as u64);
        let mut got = vec![0u8; header as usize + n * rb];
        out.read_exact_at(&mut got, 0).unwrap();
        assert!(got[..128].iter().all(|&b| b == 0xAB), "the header is kept");
        for v in 0..n {
            let at = header as usize + v * rb;
            assert_eq!(&got[at..at + rb], &row(v)[..], "row {v}");
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
        let out = File::create(&out_path).unwrap();
        let order =
            OwnedOrder::create(&out_path, &out, 0, Arc::default(), vec![0, 1, 0, 1], 2, 8).unwrap();
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
