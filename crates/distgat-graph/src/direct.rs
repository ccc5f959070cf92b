//! Writing a large output around the page cache (Linux `O_DIRECT`), for
//! [`crate::NpyRowsFile`] and [`crate::write_npy`] (bodies of 16 MiB or more).
//!
//! A buffered write of a 1.28 GB output costs the writing threads a fresh page-cache page
//! per 4 KiB (allocation, on a VM often a hypervisor fault, and a copy), and the kernel's
//! writeback later. Measured on the project's 2-core VM with `dd` (1.28 GB; docs/performance.md):
//! buffered 3.1-3.4 s, `O_DIRECT` 0.78-1.16 s with 0.24 s of system time. `O_DIRECT` needs
//! block-aligned offsets, lengths and memory, while rows arrive as row ranges of any size
//! from any thread, so the file is cut into aligned segments of [`SEGMENT_BYTES`]: the
//! bytes of a segment are gathered in a staging buffer, and the segment is written by a
//! writer thread when its last byte has arrived. Buffers are reused from a pool.
//!
//! Everything degrades to plain positional writes, never to an error of its own: a file
//! system without `O_DIRECT` (tmpfs, or an `EINVAL` on the first write), a segment whose
//! length is not a multiple of [`ALIGN`] (the file's tail), or more open segments than
//! [`MAX_BUFFERS`] (rows arriving scattered). A segment written plainly stays plain, so no
//! byte is written by both paths.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};

/// Bytes of one segment (a multiple of [`ALIGN`]; the largest request of the project's
/// virtio disk is 4 MiB).
pub(crate) const SEGMENT_BYTES: usize = 4 << 20;

/// Alignment of offsets, lengths and memory for `O_DIRECT` (a page: at least any block
/// size a Linux file system uses).
pub(crate) const ALIGN: usize = 4096;

/// Staging buffers alive at once (pooled, filling or queued): 64 MiB at 4 MiB segments.
/// Rows computed in edge-balanced chunks by a few threads fill a few segments at a time.
pub(crate) const MAX_BUFFERS: usize = 16;

/// A staging buffer: `ALIGN` more bytes than a segment, used from its first aligned byte.
struct Buffer(Vec<u8>);

impl Buffer {
    fn new(segment: usize) -> Self {
        Buffer(vec![0u8; segment + ALIGN])
    }
    fn aligned(&mut self, len: usize) -> &mut [u8] {
        let start = self.0.as_ptr().align_offset(ALIGN);
        &mut self.0[start..start + len]
    }
}

enum Slot {
    /// No byte arrived yet.
    Untouched,
    /// Bytes arrive into the buffer; `filled` counts them.
    Staging { buffer: Buffer, filled: usize },
    /// Handed to the writer thread (complete).
    Sent,
    /// Written with plain positional writes.
    Plain,
}

/// What the writer thread and the filling threads share.
struct Shared {
    /// The file opened with `O_DIRECT`.
    direct: File,
    /// The same file, opened plainly.
    plain: File,
    direct_works: AtomicBool,
    pool: Mutex<Vec<Buffer>>,
    buffers: AtomicUsize,
    error: Mutex<Option<std::io::Error>>,
}

impl Shared {
    fn record(&self, e: std::io::Error) {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }

    /// Writes a complete segment: directly when it can, else plainly.
    fn write_segment(&self, bytes: &[u8], offset: u64) {
        if bytes.len().is_multiple_of(ALIGN) && self.direct_works.load(Relaxed) {
            match self.direct.write_all_at(bytes, offset) {
                Ok(()) => return,
                // The file system takes the flag at open but not the write: plain from now.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct_works.store(false, Relaxed)
                }
                Err(e) => return self.record(e),
            }
        }
        if let Err(e) = self.plain.write_all_at(bytes, offset) {
            self.record(e);
        }
    }
}

/// The staged direct writer of one file of `len` bytes (see the module doc).
pub(crate) struct DirectWriter {
    shared: Arc<Shared>,
    segment: usize,
    len: u64,
    slots: Vec<Mutex<Slot>>,
    queue: Mutex<Option<mpsc::Sender<(Buffer, usize, u64)>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl DirectWriter {
    /// Opens `path` (an existing file of `len` bytes, also open as `plain`) a second time
    /// with `O_DIRECT`; `None` when the system refuses (the caller writes plainly).
    /// `segment` must be a positive multiple of [`ALIGN`].
    pub(crate) fn open(
        path: &std::path::Path,
        plain: &File,
        len: u64,
        segment: usize,
    ) -> Option<Self> {
        assert!(segment > 0 && segment.is_multiple_of(ALIGN));
        let direct = open_direct(path)?;
        let plain = plain.try_clone().ok()?;
        let shared = Arc::new(Shared {
            direct,
            plain,
            direct_works: AtomicBool::new(true),
            pool: Mutex::new(Vec::new()),
            buffers: AtomicUsize::new(0),
            error: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel::<(Buffer, usize, u64)>();
        let writer = std::thread::Builder::new()
            .name("distgat-direct-writer".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    for (mut buffer, len, offset) in rx {
                        shared.write_segment(buffer.aligned(len), offset);
                        shared
                            .pool
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(buffer);
                    }
                }
            })
            .ok()?;
        let segments = len.div_ceil(segment as u64) as usize;
        Some(DirectWriter {
            shared,
            segment,
            len,
            slots: (0..segments).map(|_| Mutex::new(Slot::Untouched)).collect(),
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    fn segment_len(&self, k: usize) -> usize {
        let start = (k * self.segment) as u64;
        (self.len - start).min(self.segment as u64) as usize
    }

    fn take_buffer(&self) -> Option<Buffer> {
        if let Some(b) = self
            .shared
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
        {
            return Some(b);
        }
        let count = self.shared.buffers.fetch_add(1, Relaxed);
        if count >= MAX_BUFFERS {
            self.shared.buffers.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Buffer::new(self.segment))
    }

    /// Writes `bytes` at `offset` (within the file). Errors are kept for
    /// [`DirectWriter::finish`].
    pub(crate) fn write_at(&self, bytes: &[u8], offset: u64) {
        let mut at = offset;
        let mut rest = bytes;
        while !rest.is_empty() {
            let k = (at / self.segment as u64) as usize;
            let seg_start = (k * self.segment) as u64;
            let seg_len = self.segment_len(k);
            let within = (at - seg_start) as usize;
            let take = rest.len().min(seg_len - within);
            let (piece, tail) = rest.split_at(take);
            self.write_piece(k, seg_len, within, piece, at);
            rest = tail;
            at += take as u64;
        }
    }

    fn write_piece(&self, k: usize, seg_len: usize, within: usize, piece: &[u8], at: u64) {
        let mut slot = self.slots[k].lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*slot, Slot::Untouched) {
            *slot = match self.take_buffer() {
                Some(buffer) => Slot::Staging { buffer, filled: 0 },
                None => Slot::Plain,
            };
        }
        let complete = match &mut *slot {
            Slot::Staging { buffer, filled } => {
                buffer.aligned(seg_len)[within..within + piece.len()].copy_from_slice(piece);
                *filled += piece.len();
                *filled >= seg_len
            }
            // Rows written again (the same bytes) or a segment that could not be staged.
            Slot::Sent | Slot::Plain => {
                if let Err(e) = self.shared.plain.write_all_at(piece, at) {
                    self.shared.record(e);
                }
                false
            }
            Slot::Untouched => unreachable!("set above"),
        };
        if !complete {
            return;
        }
        let Slot::Staging { buffer, .. } = std::mem::replace(&mut *slot, Slot::Sent) else {
            unreachable!("complete only when staging")
        };
        drop(slot);
        let offset = (k * self.segment) as u64;
        let unsent = match self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(queue) => queue.send((buffer, seg_len, offset)).err().map(|e| e.0 .0),
            None => Some(buffer),
        };
        // The writer has stopped (the file is being finished): write it here.
        if let Some(mut buffer) = unsent {
            self.shared.write_segment(buffer.aligned(seg_len), offset);
        }
    }

    /// Makes every segment plain, dropping what is staged (for a caller about to write
    /// every byte again plainly), after the queued segments are written.
    pub(crate) fn all_plain(&self) {
        self.stop_writer();
        for slot in &self.slots {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Slot::Plain;
        }
    }

    fn stop_writer(&self) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            if writer.join().is_err() {
                self.shared.record(std::io::Error::other(
                    "internal: the thread writing the output panicked",
                ));
            }
        }
    }

    /// Waits until every complete segment is written: the first write error, else whether
    /// a segment is still partly staged (some of its bytes never arrived).
    pub(crate) fn finish(&self) -> std::io::Result<()> {
        self.stop_writer();
        if let Some(e) = self
            .shared
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(e);
        }
        let open = self
            .slots
            .iter()
            .filter(|s| {
                matches!(
                    *s.lock().unwrap_or_else(|p| p.into_inner()),
                    Slot::Staging { .. }
                )
            })
            .count();
        if open > 0 {
            return Err(std::io::Error::other(format!(
                "internal: {open} segment(s) of the output were never completed"
            )));
        }
        Ok(())
    }

    /// Whether `O_DIRECT` writes still work on this file (for tests).
    #[cfg(test)]
    pub(crate) fn direct_works(&self) -> bool {
        self.shared.direct_works.load(Relaxed)
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        self.stop_writer();
    }
}

/// `path` (an existing file) opened for writing with Linux `O_DIRECT`: writes through it
/// go around the page cache, and need offsets, lengths and memory aligned to 4096 bytes.
/// `None` where the system refuses the flag (tmpfs,
/// or a non-Linux system): the caller writes plainly. A file system may still refuse a
/// write with `EINVAL`, which a caller should take as "write plainly from now on".
#[cfg(target_os = "linux")]
pub fn open_direct(path: &std::path::Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// Not Linux: no `O_DIRECT` (see the Linux version).
#[cfg(not(target_os = "linux"))]
pub fn open_direct(_path: &std::path::Path) -> Option<File> {
    None
}
