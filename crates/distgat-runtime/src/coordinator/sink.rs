//! Where a running job's output goes: the presized `out.npy` and attention files that
//! workers' rows are written into as they arrive, each row checked in exactly once.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use distgat_graph::{AtomicFile, SyncBehind};
use distgat_proto::v1::output_chunk::Body;
use distgat_proto::v1::{OutputChunk, OutputRows, WorkerStats};

use super::placement::{rows_per_block, OwnedOrder};
use crate::catalog::{consecutive_runs, lock, JobRecord};

/// At most this many bytes of rows wait in incomplete blocks; beyond it the fullest blocks
/// are written as they are (a write per run of consecutive rows) and their later rows go
/// straight to the file.
const MAX_PENDING_BYTES: usize = 512 << 20;

/// Output rows gathered by block of the file (`block_rows` consecutive node ids), so rows
/// that arrive scattered (a part's ids interleave with the other parts') reach the disk in
/// a few large writes. A block is written when all its rows are in; past
/// [`MAX_PENDING_BYTES`] the fullest blocks are spilled (their rows written run by run) and
/// are written through from then on. Each row arrives once (the sink checks that first).
pub(super) struct Blocks {
    num_rows: usize,
    row_bytes: usize,
    block_rows: usize,
    pending: HashMap<usize, Pending>,
    pending_bytes: usize,
    spilled: Vec<bool>,
}

struct Pending {
    bytes: Vec<u8>,
    /// Which of the block's rows are in `bytes`.
    have: Vec<bool>,
    count: usize,
}

impl Blocks {
    fn new(num_rows: usize, row_bytes: usize) -> Self {
        let block_rows = rows_per_block(row_bytes);
        Blocks {
            num_rows,
            row_bytes,
            block_rows,
            pending: HashMap::new(),
            pending_bytes: 0,
            spilled: vec![false; num_rows.div_ceil(block_rows)],
        }
    }

    /// Forgets every pending row (a new attempt sends them all again).
    fn reset(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.spilled.fill(false);
    }

    fn block_len(&self, b: usize) -> usize {
        self.block_rows.min(self.num_rows - b * self.block_rows)
    }

    /// Takes rows `nodes` (increasing, in range, new) with their `values`; returns the
    /// writes now due as (first row, bytes of consecutive rows).
    fn add(&mut self, nodes: &[u64], values: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let rb = self.row_bytes;
        let mut writes = Vec::new();
        for run in consecutive_runs(nodes) {
            let mut i = run.start;
            while i < run.end {
                // The part of this run inside one block.
                let v = nodes[i] as usize;
                let b = v / self.block_rows;
                let end = run.end.min(i + ((b + 1) * self.block_rows - v));
                let rows = &values[i * rb..end * rb];
                if self.spilled[b] {
                    writes.push((v as u64, rows.to_vec()));
                } else {
                    let len = self.block_len(b);
                    let first = b * self.block_rows;
                    let p = self.pending.entry(b).or_insert_with(|| Pending {
                        bytes: vec![0; len * rb],
                        have: vec![false; len],
                        count: 0,
                    });
                    if p.count == 0 {
                        self.pending_bytes += len * rb;
                    }
                    let at = v - first;
                    p.bytes[at * rb..(at + end - i) * rb].copy_from_slice(rows);
                    p.have[at..at + end - i].fill(true);
                    p.count += end - i;
                    if p.count == len {
                        let p = self.pending.remove(&b).expect("present");
                        self.pending_bytes -= len * rb;
                        writes.push((first as u64, p.bytes));
                    }
                }
                i = end;
            }
        }
        while self.pending_bytes > MAX_PENDING_BYTES {
            let b = *self
                .pending
                .iter()
                .max_by_key(|(_, p)| p.count)
                .expect("pending bytes without blocks")
                .0;
            writes.extend(self.spill(b));
        }
        writes
    }

    /// Hands out block `b`'s rows run by run and writes its later rows through.
    fn spill(&mut self, b: usize) -> Vec<(u64, Vec<u8>)> {
        let rb = self.row_bytes;
        let p = self.pending.remove(&b).expect("pending block");
        self.pending_bytes -= p.have.len() * rb;
        self.spilled[b] = true;
        let first = b * self.block_rows;
        let mut writes = Vec::new();
        let mut i = 0;
        while i < p.have.len() {
            if !p.have[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < p.have.len() && p.have[i] {
                i += 1;
            }
            writes.push(((first + start) as u64, p.bytes[start * rb..i * rb].to_vec()));
        }
        writes
    }

    /// Hands out every pending block's rows (incomplete ones run by run).
    fn drain(&mut self) -> Vec<(u64, Vec<u8>)> {
        let blocks: Vec<usize> = self.pending.keys().copied().collect();
        blocks.into_iter().flat_map(|b| self.spill(b)).collect()
    }
}
use crate::error::{Result, RuntimeError};

/// Which blocks of the output ([`BLOCK_BYTES`](super::placement::BLOCK_BYTES) of rows each) the workers have filled
/// (`workers_write_output`), so the sync behind the rows pushes only finished stretches
/// to the disk. Rows written by two processes interleave in every page; an `fdatasync` of
/// the whole file while they are still arriving wrote most pages two to four times
/// (1.1 GB to the disk for a 512 MB output on R-MAT 1M/10M).
pub(super) struct Filled {
    block_rows: usize,
    num_rows: usize,
    /// Per block: rows still to come.
    remaining: Vec<u32>,
    /// Byte ranges (offset, length) of blocks filled since the last sync.
    unsynced: Vec<(u64, u64)>,
    /// Whether any row was counted (the workers write the rows: the file is synced by
    /// filled blocks only).
    counting: bool,
}

impl Filled {
    fn new(num_rows: usize, row_bytes: usize) -> Self {
        let block_rows = rows_per_block(row_bytes);
        let mut f = Filled {
            block_rows,
            num_rows,
            remaining: Vec::new(),
            unsynced: Vec::new(),
            counting: false,
        };
        f.reset();
        f
    }

    fn reset(&mut self) {
        let (n, b) = (self.num_rows, self.block_rows);
        self.remaining = (0..n.div_ceil(b))
            .map(|k| (b.min(n - k * b)) as u32)
            .collect();
        self.unsynced.clear();
    }

    /// Counts in rows `nodes` (new, in range); returns the bytes of blocks they filled.
    fn add(&mut self, nodes: impl Iterator<Item = u64>, header_len: u64, row_bytes: u64) -> u64 {
        let mut filled = 0;
        self.counting = true;
        for v in nodes {
            let b = v as usize / self.block_rows;
            self.remaining[b] -= 1;
            if self.remaining[b] == 0 {
                let first = (b * self.block_rows) as u64;
                let rows = (self.block_rows.min(self.num_rows - b * self.block_rows)) as u64;
                self.unsynced
                    .push((header_len + first * row_bytes, rows * row_bytes));
                filled += rows * row_bytes;
            }
        }
        filled
    }
}

/// Starts the disk writes of `ranges` of `file` (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`: it does not wait for them; the commit's fsync does). Linux
/// only; elsewhere an `fdatasync` of the whole file.
#[cfg(not(target_os = "linux"))]
fn start_writeback(file: &std::fs::File, _ranges: &[(u64, u64)]) -> std::io::Result<()> {
    file.sync_data()
}

/// Starts the disk writes of `ranges` of `file` (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`: it does not wait for them; the commit's fsync does).
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, ranges: &[(u64, u64)]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    for &(offset, len) in ranges {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            continue;
        };
        // SAFETY: sync_file_range reads no memory of this process: it takes a file
        // descriptor, which `file` keeps open for the call, and three integers.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Where a running job's output goes.
pub(super) struct JobSink {
    pub(super) parts: usize,
    pub(super) width: usize,
    pub(super) out: AtomicFile,
    pub(super) header_len: u64,
    /// Bytes of output rows written to the file so far (all attempts), for `out_sync`.
    pub(super) out_written: Arc<AtomicU64>,
    /// Pushes the output rows to the disk as they arrive, so the commit's fsync waits
    /// only for the tail; stopped before the commit.
    pub(super) out_sync: SyncBehind,
    /// Per output row: 0 until it arrived, then 1 + the part that sent it.
    pub(super) rows_seen: Mutex<Vec<u16>>,
    /// Parts restarted on another worker within the job ([`JobSink::replay_part`]), with
    /// how often: their rows that already arrived may arrive again (the same bytes) and
    /// are skipped, and the lost workers' streams can no longer fail the job.
    pub(super) replayed: Mutex<HashMap<u32, u32>>,
    /// Output rows gathered into blocks before they are written (see [`Blocks`]).
    pub(super) blocks: Mutex<Blocks>,
    /// The blocks the workers filled (`rows_written`), shared with `out_sync`.
    pub(super) filled: Arc<Mutex<Filled>>,
    pub(super) attention: Vec<Option<AttentionSink>>,
    pub(super) done: Mutex<HashMap<u32, WorkerStats>>,
    pub(super) failure: Mutex<Option<(u32, String)>>,
    /// The client-API job this output belongs to, for progress reports.
    pub(super) progress: Option<Arc<JobRecord>>,
    /// With workers_write_output: the temporary output file's absolute path, which the
    /// workers write their rows into (they report them with `rows_written`).
    pub(super) worker_written: Option<String>,
    /// With workers_write_output on a partition: the parts' own files, which the workers
    /// write their rows into instead, in owned order (placed in node order as blocks of
    /// the output fill).
    pub(super) owned_order: Option<OwnedOrder>,
}

pub(super) struct AttentionSink {
    pub(super) file: AtomicFile,
    pub(super) header_len: u64,
    pub(super) heads: usize,
    pub(super) edges: usize,
    pub(super) add_self_loops: bool,
    /// Input self loops before each input edge (to map edges to PyG positions).
    pub(super) loops_before: Vec<u32>,
    /// Which coefficient rows arrived (each exactly once).
    pub(super) seen: Mutex<Vec<bool>>,
    pub(super) kept: usize,
}

impl AttentionSink {
    /// PyG attention position of a key: an input edge, or -(v + 1) for v's added loop.
    pub(super) fn position(&self, key: i64) -> Option<usize> {
        if key >= 0 {
            let k = key as usize;
            let before = *self.loops_before.get(k)? as usize;
            Some(if self.add_self_loops { k - before } else { k })
        } else {
            let v = (-(key + 1)) as usize;
            Some(self.kept + v)
        }
        .filter(|&p| p < self.edges)
    }
}

/// `.npy` header (format 1.0) for a C-order array; the body follows at its length. The
/// output is written row by row as workers send it, which needs the header on its own.
pub(super) fn npy_header(descr: &str, shape: &[u64]) -> Vec<u8> {
    // The same text npyz writes, so the file is byte-identical to `distgat infer`'s.
    let shape: String = shape.iter().map(|d| format!("{d}, ")).collect();
    let shape = format!("({shape})");
    let mut dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}").into_bytes();
    let unpadded = 10 + dict.len() + 1;
    dict.resize(dict.len() + (64 - unpadded % 64) % 64, b' ');
    dict.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(&dict);
    out
}

pub(super) fn presized(
    path: &Path,
    descr: &str,
    shape: &[u64],
    item: u64,
) -> Result<(AtomicFile, u64)> {
    let file = AtomicFile::create(path)?;
    let header = npy_header(descr, shape);
    file.as_file().write_all_at(&header, 0)?;
    file.as_file()
        .set_len(header.len() as u64 + shape.iter().product::<u64>() * item)?;
    Ok((file, header.len() as u64))
}

impl JobSink {
    /// The sink of `out` (presized, `header_len` bytes of header) with its rows synced
    /// behind (see [`SyncBehind`]); the other fields start empty.
    pub(super) fn new(
        out_path: &Path,
        out: AtomicFile,
        header_len: u64,
        parts: usize,
        num_nodes: usize,
        width: usize,
        attention: Vec<Option<AttentionSink>>,
    ) -> Result<Self> {
        if parts >= u16::MAX as usize {
            return Err(RuntimeError::InvalidArgument(format!(
                "a job of {parts} parts: at most {} are supported",
                u16::MAX - 1
            )));
        }
        let out_written = Arc::new(AtomicU64::new(0));
        let filled = Arc::new(Mutex::new(Filled::new(num_nodes, width * 4)));
        let out_sync = SyncBehind::start(
            out_path,
            {
                let written = out_written.clone();
                move || written.load(Ordering::Relaxed)
            },
            {
                let file = out.as_file().try_clone()?;
                let path = out_path.to_path_buf();
                let filled = filled.clone();
                move || {
                    // Rows the workers wrote: the blocks they filled (never a block
                    // still filling). Rows this process wrote went out in whole blocks,
                    // so all of the file is due.
                    let (ranges, counting) = {
                        let mut f = lock(&filled);
                        (std::mem::take(&mut f.unsynced), f.counting)
                    };
                    if counting {
                        start_writeback(&file, &ranges)
                    } else {
                        file.sync_data()
                    }
                    .map_err(|e| distgat_graph::GraphError::io(&path, e))
                }
            },
        );
        Ok(JobSink {
            parts,
            width,
            out,
            header_len,
            out_written,
            out_sync,
            rows_seen: Mutex::new(vec![0; num_nodes]),
            replayed: Mutex::new(HashMap::new()),
            blocks: Mutex::new(Blocks::new(num_nodes, width * 4)),
            filled,
            attention,
            done: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            progress: None,
            worker_written: None,
            owned_order: None,
        })
    }

    /// Forgets what an attempt checked in (rows and attention rows seen, finished parts,
    /// the reported failure), so the next attempt of the job (a recovery in `job.rs`) can
    /// send every row again. The bytes already written stay: the next attempt writes the
    /// same bytes at the same offsets (the output is deterministic). Call only when no
    /// PushOutput handler holds the sink.
    pub(super) fn reset(&self) {
        lock(&self.rows_seen).fill(0);
        lock(&self.replayed).clear();
        lock(&self.blocks).reset();
        lock(&self.filled).reset();
        if let Some(order) = &self.owned_order {
            order.reset();
        }
        for a in self.attention.iter().flatten() {
            lock(&a.seen).fill(false);
        }
        lock(&self.done).clear();
        *lock(&self.failure) = None;
    }

    /// Part `part` restarts on another worker within the job: its rows may all arrive
    /// again (those already here are skipped: the output is deterministic, so they are
    /// the same bytes), it has not finished, and a failure it reported is forgotten. Its attention rows are not replayable;
    /// jobs that write attention restart whole instead.
    pub(super) fn replay_part(&self, part: u32) {
        *lock(&self.replayed).entry(part).or_default() += 1;
        lock(&self.done).remove(&part);
        // The lost worker's own report (its output stream broke) is about the past.
        let mut failure = lock(&self.failure);
        if failure.as_ref().is_some_and(|(p, _)| *p == part) {
            *failure = None;
        }
    }

    /// N: the output's rows.
    pub(super) fn num_rows(&self) -> usize {
        lock(&self.rows_seen).len()
    }

    /// Rows never checked in.
    pub(super) fn missing_rows(&self) -> usize {
        lock(&self.rows_seen).iter().filter(|&&s| s == 0).count()
    }

    /// How often `part` restarted: an output stream notes it at its first message, and
    /// its failures count only while it is unchanged ([`JobSink::fail_from`]).
    pub(super) fn generation(&self, part: u32) -> u32 {
        lock(&self.replayed).get(&part).copied().unwrap_or(0)
    }

    /// A failure of `part` seen on a stream that began at `generation`: ignored when the
    /// part restarted since (the stream was the lost worker's).
    pub(super) fn fail_from(&self, part: u32, generation: u32, detail: String) {
        if self.generation(part) == generation {
            self.fail(part, detail);
        }
    }

    pub(super) fn fail(&self, part: u32, detail: String) {
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            *failure = Some((part, detail));
        }
    }

    /// Writes what [`Blocks`] handed out, outside its lock.
    fn write(&self, writes: Vec<(u64, Vec<u8>)>) -> std::io::Result<()> {
        for (row, bytes) in writes {
            self.out
                .as_file()
                .write_all_at(&bytes, self.header_len + row * self.blocks_row_bytes())?;
            // What the file holds now, for the sync behind it.
            self.out_written
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn blocks_row_bytes(&self) -> u64 {
        (self.width * 4) as u64
    }

    /// Writes the blocks still held (call once every row arrived).
    pub(super) fn flush_blocks(&self) -> std::io::Result<()> {
        let writes = lock(&self.blocks).drain();
        self.write(writes)
    }

    /// Checks in output rows `nodes` of `part`: each must be in range and new, except
    /// that a restarted part's rows its lost worker had delivered may come again. Returns
    /// the positions in `nodes` of those repeats (to be skipped).
    fn check_in(&self, part: u32, nodes: &[u64]) -> Result<Vec<usize>> {
        let replayed = lock(&self.replayed).contains_key(&part);
        let mut seen = lock(&self.rows_seen);
        let mut again = Vec::new();
        let from = part as u16 + 1;
        for (i, &v) in nodes.iter().enumerate() {
            let v = v as usize;
            match seen.get(v).copied() {
                Some(0) => seen[v] = from,
                // A restarted part's row that its lost worker had delivered.
                Some(s) if replayed && s == from => again.push(i),
                _ => {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "output rows from part {part}: node {v} is out of range or sent twice"
                    )))
                }
            }
        }
        Ok(again)
    }

    /// Writes one chunk of a worker's output into place.
    pub(super) fn accept(&self, chunk: OutputChunk) -> Result<()> {
        let part = chunk.part;
        match chunk.body {
            Some(Body::Rows(rows)) => {
                let w = rows.width as usize;
                if w != self.width || rows.values.len() != rows.nodes.len() * w * 4 {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "output rows from part {part}: width {w} and {} bytes for {} rows (expected width {})",
                        rows.values.len(),
                        rows.nodes.len(),
                        self.width
                    )));
                }
                let again = self.check_in(part, &rows.nodes)?;
                let rows = if again.is_empty() {
                    rows
                } else {
                    let rb = w * 4;
                    let mut nodes = Vec::with_capacity(rows.nodes.len() - again.len());
                    let mut values = Vec::with_capacity(nodes.capacity() * rb);
                    let mut skip = again.into_iter().peekable();
                    for (i, &v) in rows.nodes.iter().enumerate() {
                        if skip.next_if_eq(&i).is_none() {
                            nodes.push(v);
                            values.extend_from_slice(&rows.values[i * rb..(i + 1) * rb]);
                        }
                    }
                    OutputRows {
                        nodes,
                        values,
                        ..rows
                    }
                };
                // A part's owned ids are increasing but rarely consecutive (METIS parts
                // interleave), so a write per run of consecutive ids was a syscall per row
                // or two (7 s of a 40 s run at 10M nodes). Rows are gathered into blocks
                // of the file instead, each written once it is complete.
                let writes = lock(&self.blocks).add(&rows.nodes, &rows.values);
                self.write(writes)?;
            }
            // Rows the part wrote into the output file itself (workers_write_output).
            Some(Body::RowsWritten(written)) => {
                if self.worker_written.is_none() {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "rows_written from part {part}: this job's workers send their rows \
                         (it has no workers_write_output)"
                    )));
                }
                if let Some(order) = &self.owned_order {
                    // Each row must be in the part's own file: a part's rows placed from
                    // another's file would be silently wrong.
                    order.check_owner(part, &written.nodes)?;
                    let again = self.check_in(part, &written.nodes)?;
                    let mut skip = again.into_iter().peekable();
                    order.add(
                        written
                            .nodes
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| skip.next_if_eq(i).is_none())
                            .map(|(_, &v)| v),
                    );
                    return Ok(());
                }
                let again = self.check_in(part, &written.nodes)?;
                let mut skip = again.into_iter().peekable();
                let new = written
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| skip.next_if_eq(i).is_none())
                    .map(|(_, &v)| v);
                // The sync behind counts only filled blocks: a block still missing rows
                // would be written again when they come.
                let filled = lock(&self.filled).add(new, self.header_len, self.blocks_row_bytes());
                self.out_written.fetch_add(filled, Ordering::Relaxed);
            }
            Some(Body::Attention(a)) => {
                let sink = self
                    .attention
                    .get(a.layer as usize)
                    .and_then(|s| s.as_ref())
                    .ok_or_else(|| {
                        RuntimeError::InvalidArgument(format!(
                            "attention for unexpected layer {}",
                            a.layer
                        ))
                    })?;
                let h = sink.heads;
                if a.heads as usize != h || a.values.len() != a.edges.len() * h * 4 {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "attention from part {part}: shape does not match {h} heads"
                    )));
                }
                let mut seen = lock(&sink.seen);
                for (i, &key) in a.edges.iter().enumerate() {
                    let pos = sink
                        .position(key)
                        .filter(|&p| !std::mem::replace(&mut seen[p], true))
                        .ok_or_else(|| {
                            RuntimeError::InvalidArgument(format!(
                                "attention from part {part}: edge key {key} out of range or sent twice"
                            ))
                        })?;
                    sink.file.as_file().write_all_at(
                        &a.values[i * h * 4..(i + 1) * h * 4],
                        sink.header_len + (pos * h * 4) as u64,
                    )?;
                }
            }
            Some(Body::Stats(stats)) => {
                if part as usize >= self.parts {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "statistics for part {part} of a {}-part job",
                        self.parts
                    )));
                }
                lock(&self.done).insert(part, stats);
            }
            Some(Body::Failure(detail)) => self.fail(part, detail),
            // The worker's keepalive on a quiet stream: nothing to record.
            Some(Body::Alive(_)) => {}
            Some(Body::Progress(stats)) => {
                if let Some(record) = &self.progress {
                    record.layer_done(part, &stats);
                }
            }
            None => {
                return Err(RuntimeError::InvalidArgument(format!(
                    "output chunk from part {part} has no body"
                )))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `writes` to an in-memory file.
    fn apply(file: &mut [u8], rb: usize, writes: Vec<(u64, Vec<u8>)>) {
        for (row, bytes) in writes {
            let at = row as usize * rb;
            file[at..at + bytes.len()].copy_from_slice(&bytes);
        }
    }

    /// Rows sent by interleaved parts, in any order of chunks, end up as one file with
    /// every row in place: complete blocks are written whole, incomplete ones by `drain`,
    /// and spilled ones (past the cap) run by run and then straight through.
    #[test]
    fn scattered_rows_land_in_place() {
        let rb = 1 << 10; // 4096 rows per block
        for (num_rows, cap_blocks) in [(10_000usize, None), (10_000, Some(1)), (4096, None)] {
            let mut blocks = Blocks::new(num_rows, rb);
            if cap_blocks.is_some() {
                // Force spills: a block's worth over the cap at once.
                blocks.pending_bytes = MAX_PENDING_BYTES - rb;
            }
            let row = |v: usize| -> Vec<u8> { (0..rb).map(|k| (v * 7 + k) as u8).collect() };
            let mut file = vec![0u8; num_rows * rb];
            // Three "parts": ids by v % 3, each sent in increasing chunks of 500 rows,
            // the chunks of the parts interleaved (part 2 last, reversed chunk order).
            let parts: Vec<Vec<u64>> = (0..3)
                .map(|q| (0..num_rows as u64).filter(|v| v % 3 == q).collect())
                .collect();
            let mut chunks: Vec<&[u64]> = Vec::new();
            let (c0, c1): (Vec<_>, Vec<_>) = (
                parts[0].chunks(500).collect(),
                parts[1].chunks(500).collect(),
            );
            for k in 0..c0.len().max(c1.len()) {
                chunks.extend(c0.get(k));
                chunks.extend(c1.get(k));
            }
            chunks.extend(parts[2].chunks(500).rev());
            for nodes in chunks {
                let values: Vec<u8> = nodes.iter().flat_map(|&v| row(v as usize)).collect();
                let writes = blocks.add(nodes, &values);
                apply(&mut file, rb, writes);
            }
            assert!(blocks.pending.is_empty(), "all blocks complete");
            apply(&mut file, rb, blocks.drain());
            for v in 0..num_rows {
                assert_eq!(&file[v * rb..(v + 1) * rb], &row(v)[..], "row {v}");
            }
            if cap_blocks.is_some() {
                assert!(blocks.spilled.iter().any(|&s| s), "the cap spilled a block");
            }
        }
        // Incomplete blocks: drain writes what arrived and nothing else.
        let mut blocks = Blocks::new(100, 8);
        let mut file = vec![0u8; 800];
        apply(&mut file, 8, blocks.add(&[3, 4, 9], &[1u8; 24]));
        apply(&mut file, 8, blocks.drain());
        for v in 0..100 {
            let want = if [3, 4, 9].contains(&v) { 1 } else { 0 };
            assert!(
                file[v * 8..(v + 1) * 8].iter().all(|&b| b == want),
                "row {v}"
            );
        }
    }

    fn rows(part: u32, nodes: &[u64]) -> OutputChunk {
        OutputChunk {
            job_id: "job".into(),
            part,
            body: Some(Body::Rows(OutputRows {
                nodes: nodes.to_vec(),
                width: 1,
                values: nodes
                    .iter()
                    .flat_map(|&v| (v as f32).to_le_bytes())
                    .collect(),
            })),
        }
    }

    /// Rows written by the workers count towards their block; a block is due for the
    /// disk once, when its last row is in, and a new attempt counts from scratch.
    #[test]
    fn filled_blocks_are_synced_once_each_and_only_when_full() {
        // 10 rows of 1 MiB: blocks of 4 rows, the last one of 2.
        let rb = 1u64 << 20;
        let mut f = Filled::new(10, rb as usize);
        assert_eq!(f.block_rows, 4);
        // Part 1's rows first (odd ids), then part 0's (even): no block fills before.
        assert_eq!(f.add([1, 3, 5, 7, 9].into_iter(), 128, rb), 0);
        assert!(f.unsynced.is_empty());
        assert_eq!(f.add([0, 2, 8].into_iter(), 128, rb), 4 * rb + 2 * rb);
        assert_eq!(f.unsynced, vec![(128, 4 * rb), (128 + 8 * rb, 2 * rb)]);
        assert_eq!(f.add([4, 6].into_iter(), 128, rb), 4 * rb);
        assert_eq!(f.unsynced.last(), Some(&(128 + 4 * rb, 4 * rb)));
        // A new attempt counts from scratch.
        f.reset();
        assert!(f.unsynced.is_empty());
        assert_eq!(f.add((0..4).map(|v| v as u64), 0, rb), 4 * rb);
    }

    /// A part restarted on a spare sends every row again: the rows its lost worker had
    /// sent are skipped, the others land; another part's rows are still refused twice,
    /// and the lost worker's stream can no longer fail the job.
    #[test]
    fn a_replayed_part_may_send_its_rows_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npy");
        let (file, header_len) = presized(&path, "<f4", &[6, 1], 4).unwrap();
        let sink = JobSink::new(&path, file, header_len, 2, 6, 1, Vec::new()).unwrap();
        sink.accept(rows(0, &[0, 2, 4])).unwrap();
        sink.accept(rows(1, &[1])).unwrap();
        let old = sink.generation(1);
        assert!(
            sink.accept(rows(1, &[1])).is_err(),
            "a repeat without a restart"
        );
        sink.replay_part(1);
        sink.fail_from(1, old, "the lost worker's stream broke".into());
        assert!(lock(&sink.failure).is_none());
        sink.accept(rows(1, &[1, 3, 5])).unwrap();
        assert!(
            sink.accept(rows(1, &[1, 4])).is_err(),
            "part 0's row 4 from part 1"
        );
        assert_eq!(sink.missing_rows(), 0);
        sink.fail_from(1, sink.generation(1), "the replacement failed".into());
        assert!(lock(&sink.failure).is_some());
        sink.flush_blocks().unwrap();
        let mut bytes = vec![0u8; 24];
        sink.out
            .as_file()
            .read_exact_at(&mut bytes, header_len)
            .unwrap();
        let want: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        assert_eq!(bytes, want);
    }
}
