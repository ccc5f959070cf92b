//! Where a running job's output goes: the presized `out.npy` and attention files that
//! workers' rows are written into as they arrive, each row checked in exactly once.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use distgat_graph::{AtomicFile, SyncBehind};
use distgat_proto::v1::output_chunk::Body;
use distgat_proto::v1::{OutputChunk, WorkerStats};

use crate::catalog::{consecutive_runs, lock, JobRecord};
use crate::error::{Result, RuntimeError};

/// Where a running job's output goes.
pub(super) struct JobSink {
    pub(super) parts: usize,
    pub(super) num_nodes: usize,
    pub(super) width: usize,
    pub(super) out: AtomicFile,
    pub(super) header_len: u64,
    /// Bytes of output rows written so far (all attempts), for `out_sync`.
    pub(super) out_written: Arc<AtomicU64>,
    /// Pushes the output rows to the disk as they arrive, so the commit's fsync waits
    /// only for the tail; stopped before the commit.
    pub(super) out_sync: SyncBehind,
    pub(super) rows_seen: Mutex<Vec<bool>>,
    pub(super) attention: Vec<Option<AttentionSink>>,
    pub(super) done: Mutex<HashMap<u32, WorkerStats>>,
    pub(super) failure: Mutex<Option<(u32, String)>>,
    /// The client-API job this output belongs to, for progress reports.
    pub(super) progress: Option<Arc<JobRecord>>,
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
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        out_path: &Path,
        out: AtomicFile,
        header_len: u64,
        parts: usize,
        num_nodes: usize,
        width: usize,
        attention: Vec<Option<AttentionSink>>,
    ) -> Result<Self> {
        let out_written = Arc::new(AtomicU64::new(0));
        let out_sync = SyncBehind::start(
            out_path,
            {
                let written = out_written.clone();
                move || written.load(Ordering::Relaxed)
            },
            {
                let file = out.as_file().try_clone()?;
                let path = out_path.to_path_buf();
                move || {
                    file.sync_data()
                        .map_err(|e| distgat_graph::GraphError::io(&path, e))
                }
            },
        );
        Ok(JobSink {
            parts,
            num_nodes,
            width,
            out,
            header_len,
            out_written,
            out_sync,
            rows_seen: Mutex::new(vec![false; num_nodes]),
            attention,
            done: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            progress: None,
        })
    }

    /// Forgets what an attempt checked in (rows and attention rows seen, finished parts,
    /// the reported failure), so the next attempt of the job (a recovery in `job.rs`) can
    /// send every row again. The bytes already written stay: the next attempt writes the
    /// same bytes at the same offsets (the output is deterministic). Call only when no
    /// PushOutput handler holds the sink.
    pub(super) fn reset(&self) {
        lock(&self.rows_seen).fill(false);
        for a in self.attention.iter().flatten() {
            lock(&a.seen).fill(false);
        }
        lock(&self.done).clear();
        *lock(&self.failure) = None;
    }

    pub(super) fn fail(&self, part: u32, detail: String) {
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            *failure = Some((part, detail));
        }
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
                let row_bytes = (w * 4) as u64;
                let mut seen = lock(&self.rows_seen);
                for &v in &rows.nodes {
                    let v = v as usize;
                    if v >= self.num_nodes || std::mem::replace(&mut seen[v], true) {
                        return Err(RuntimeError::InvalidArgument(format!(
                            "output rows from part {part}: node {v} is out of range or sent twice"
                        )));
                    }
                }
                drop(seen);
                // One write per run of consecutive node ids (owned ids are increasing).
                for run in consecutive_runs(&rows.nodes) {
                    self.out.as_file().write_all_at(
                        &rows.values[run.start * w * 4..run.end * w * 4],
                        self.header_len + rows.nodes[run.start] * row_bytes,
                    )?;
                }
                self.out_written
                    .fetch_add(rows.values.len() as u64, Ordering::Relaxed);
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
