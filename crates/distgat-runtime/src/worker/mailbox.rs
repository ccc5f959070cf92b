//! Halo chunks received by a worker, kept until the job's thread takes them.
//!
//! Bounded: the payload bytes held at once are capped (`--mailbox-max-bytes`); a chunk
//! that would exceed the cap is refused with RESOURCE_EXHAUSTED, which fails the sending
//! part's job with a message naming the flag. Chunks for a job that has ended on this
//! worker (a late sender, a cancelled job) are refused with FAILED_PRECONDITION instead of
//! being kept forever; a job's id is forgotten as ended after [`ENDED_MEMORY`] or when a
//! job of that id starts here again.
//!
//! Payloads of 64 KiB or more are copied out of the transport's receive buffer into
//! buffers the mailbox keeps ([`Mailbox::put`]). A received chunk's payload is otherwise
//! a slice of tonic's receive buffer, which then cannot be reused while the chunk waits
//! here, so tonic put every received byte on a fresh page (a fault and a kernel zero
//! fill each). After placing a layer's halo rows the part hands the chunks back
//! ([`Mailbox::recycle`]), and their buffers take later chunks. A peer usually sends
//! the next layer's rows before they come back, so in a two-layer job the copies fault
//! about as much as tonic's buffer did (docs/performance.md: faults 3-5% fewer, wall
//! unchanged); deeper models reuse them from the third layer on. The kept buffers and
//! the held chunks stay within the byte cap together.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use distgat_proto::v1::RowChunk;
use prost::bytes::BytesMut;

use crate::error::{Result, RuntimeError};

/// How long an ended job's late chunks are refused (rather than kept).
pub(super) const ENDED_MEMORY: Duration = Duration::from_secs(600);
/// At most this many ended job ids are remembered.
const ENDED_CAPACITY: usize = 1024;

#[derive(Default)]
struct Inbox {
    /// By (job, part, layer, step): step 0 is a layer's halo, later steps its
    /// collectives; the part is the receiving one (one worker may run two parts of a job
    /// after a recovery).
    chunks: HashMap<Key, Held>,
    /// Payload bytes held in `chunks`.
    bytes: u64,
    /// (job, part, layer, step) already taken by the part's thread.
    taken: HashSet<Key>,
    /// Jobs that ended here, oldest first, with when, and whether their late chunks are
    /// dropped quietly (a finished part of a job that keeps its sent rows: a restarted
    /// peer sends it rows it no longer needs) rather than refused.
    /// The part is `None` when every part of the job ended (CancelJob).
    ended: VecDeque<(String, Option<u32>, Instant, bool)>,
}

/// (job, receiving part, layer, step).
type Key = (String, u32, u32, u32);

impl Inbox {
    /// Rows held for `key`.
    fn rows_held(&self, key: &Key) -> u64 {
        self.chunks
            .get(key)
            .map_or(0, |h| h.chunks.iter().map(|c| c.num_rows as u64).sum())
    }
}

/// The chunks of one (job, layer, step), and which halo chunks they are.
#[derive(Default)]
struct Held {
    chunks: Vec<RowChunk>,
    /// (source part, first row) of each halo (step 0) chunk held.
    halo: HashSet<(u32, u64)>,
}

/// Halo and collective chunks received, by (job, layer, step), until the job's thread
/// takes them.
pub(super) struct Mailbox {
    inbox: Mutex<Inbox>,
    arrived: Condvar,
    max_bytes: u64,
    /// Payload buffers handed back by [`Mailbox::recycle`], for the next chunks; their
    /// capacity and the held payload bytes are within `max_bytes` together when kept.
    spare: Mutex<Vec<BytesMut>>,
}

/// Payloads smaller than this stay in the transport's buffer (their pages are few).
const OWN_MIN_BYTES: usize = 64 << 10;

impl Mailbox {
    /// A mailbox holding at most `max_bytes` payload bytes at once.
    pub(super) fn new(max_bytes: u64) -> Self {
        Mailbox {
            inbox: Mutex::new(Inbox::default()),
            arrived: Condvar::new(),
            max_bytes,
            spare: Mutex::new(Vec::new()),
        }
    }

    /// `chunk` with its payload copied into a kept buffer (or a new one), so the
    /// transport's receive buffer is free for the next message. Small payloads are left
    /// as they are.
    fn own_payload(&self, mut chunk: RowChunk) -> RowChunk {
        let len = chunk.payload.len();
        if len < OWN_MIN_BYTES {
            return chunk;
        }
        let kept = {
            let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
            let fit = spare.iter().position(|b| b.capacity() >= len);
            fit.map(|i| spare.swap_remove(i))
        };
        let mut buf = kept.unwrap_or_else(|| BytesMut::with_capacity(len));
        buf.clear();
        buf.extend_from_slice(&chunk.payload);
        chunk.payload = buf.freeze();
        chunk
    }

    /// Keeps the payload buffers of `chunks` (taken and used) for later chunks, while
    /// nothing else holds them and the kept capacity plus the payload bytes held stay
    /// within the byte cap.
    pub(super) fn recycle(&self, chunks: Vec<RowChunk>) {
        let held = self.inbox.lock().unwrap_or_else(|p| p.into_inner()).bytes;
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept: u64 = held + spare.iter().map(|b| b.capacity() as u64).sum::<u64>();
        for c in chunks {
            if c.payload.len() < OWN_MIN_BYTES {
                continue;
            }
            if let Ok(buf) = c.payload.try_into_mut() {
                if kept + buf.capacity() as u64 <= self.max_bytes {
                    kept += buf.capacity() as u64;
                    spare.push(buf);
                }
            }
        }
    }

    /// Keeps `chunk` for its job's thread. Errors: the job ended here
    /// (FAILED_PRECONDITION), or the chunk would take the mailbox over its byte cap
    /// (RESOURCE_EXHAUSTED); the chunk is then dropped.
    pub(super) fn put(&self, chunk: RowChunk) -> Result<()> {
        let chunk = self.own_payload(chunk);
        let len = chunk.payload.len() as u64;
        let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while inbox
            .ended
            .front()
            .is_some_and(|(_, _, at, _)| now.duration_since(*at) > ENDED_MEMORY)
        {
            inbox.ended.pop_front();
        }
        let ended = inbox
            .ended
            .iter()
            .find(|(j, p, _, _)| *j == chunk.job_id && p.is_none_or(|p| p == chunk.target_part));
        if let Some((_, _, _, quiet)) = ended {
            if *quiet {
                return Ok(());
            }
            return Err(RuntimeError::FailedPrecondition(format!(
                "part {} of job {} has ended on this worker: halo rows for it (layer {}, from \
                 part {}) are not kept",
                chunk.target_part, chunk.job_id, chunk.layer, chunk.source_part
            )));
        }
        let key = (
            chunk.job_id.clone(),
            chunk.target_part,
            chunk.layer,
            chunk.step,
        );
        let halo = (chunk.source_part, chunk.first_row);
        // Re-sent halo rows (a part restarted elsewhere, or its peers' re-send to it).
        let here = |h: &Held| chunk.step == 0 && h.halo.contains(&halo);
        if inbox.taken.contains(&key) || inbox.chunks.get(&key).is_some_and(here) {
            return Ok(());
        }
        if inbox.bytes + len > self.max_bytes {
            return Err(RuntimeError::ResourceExhausted(format!(
                "the receiving worker's halo mailbox holds {} bytes; {len} more (job {}, layer \
                 {}, from part {}) would exceed its --mailbox-max-bytes {}: raise it on the \
                 workers, or use more workers so each receives fewer halo rows",
                inbox.bytes, chunk.job_id, chunk.layer, chunk.source_part, self.max_bytes
            )));
        }
        let held = inbox.chunks.entry(key).or_default();
        if chunk.step == 0 {
            held.halo.insert(halo);
        }
        held.chunks.push(chunk);
        crate::metrics::METRICS.halo_bytes_received.inc_by(len);
        inbox.bytes += len;
        self.arrived.notify_all();
        Ok(())
    }

    /// Blocks until `rows` rows of (job, layer, step) arrived, the job is cancelled, one
    /// of this part's own sends failed (`send_failed`, checked at least every 100 ms), or
    /// `timeout`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn take(
        &self,
        job: &str,
        part: u32,
        layer: u32,
        step: u32,
        rows: u64,
        cancel: &AtomicBool,
        send_failed: &AtomicBool,
        timeout: Duration,
    ) -> Result<Vec<RowChunk>> {
        let key = (job.to_string(), part, layer, step);
        let deadline = Instant::now() + timeout;
        let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let have = inbox.rows_held(&key);
            if have >= rows {
                let taken = inbox.chunks.remove(&key).unwrap_or_default().chunks;
                inbox.bytes -= taken.iter().map(|c| c.payload.len() as u64).sum::<u64>();
                inbox.taken.insert(key);
                return Ok(taken);
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(RuntimeError::Cancelled(format!("job {job}")));
            }
            if send_failed.load(Ordering::Relaxed) {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "layer {layer}: sending this part's {what} failed; {have} of {rows} had \
                     arrived",
                    what = what(step)
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "layer {layer}: {have} of {rows} {what} arrived within {timeout:?}",
                    what = what(step)
                )));
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            inbox = self
                .arrived
                .wait_timeout(inbox, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Whether `rows` rows of (job, layer, step) are here, so that [`Mailbox::take`]
    /// would return at once.
    pub(super) fn ready(&self, job: &str, part: u32, layer: u32, step: u32, rows: u64) -> bool {
        let key = (job.to_string(), part, layer, step);
        let inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        inbox.rows_held(&key) >= rows
    }

    /// Part `part` of job `job` starts here: its chunks are welcome again.
    pub(super) fn job_started(&self, job: &str, part: u32) {
        let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        inbox
            .ended
            .retain(|(j, p, _, _)| !(j == job && p.is_none_or(|p| p == part)));
        inbox.taken.retain(|(j, p, _, _)| !(j == job && *p == part));
    }

    /// Part `part` of job `job` ended here (`None`: every part of the job, CancelJob):
    /// drops its chunks, and refuses later ones for a while (drops them quietly when
    /// `quiet`: a finished part of a job that keeps its sent rows). A part that ended
    /// quietly and then ends for good refuses from then on.
    pub(super) fn forget_job(&self, job: &str, part: Option<u32>, quiet: bool) {
        let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        let of = |j: &String, p: u32| j == job && part.is_none_or(|q| q == p);
        let mut freed = 0u64;
        inbox.chunks.retain(|(j, p, _, _), held| {
            let keep = !of(j, *p);
            if !keep {
                freed += held
                    .chunks
                    .iter()
                    .map(|c| c.payload.len() as u64)
                    .sum::<u64>();
            }
            keep
        });
        inbox.bytes -= freed;
        inbox.taken.retain(|(j, p, _, _)| !of(j, *p));
        inbox
            .ended
            .retain(|(j, p, _, _)| !(j == job && (part.is_none() || *p == part)));
        if inbox.ended.len() == ENDED_CAPACITY {
            inbox.ended.pop_front();
        }
        inbox
            .ended
            .push_back((job.to_string(), part, Instant::now(), quiet));
        let idle = inbox.chunks.is_empty();
        drop(inbox);
        if idle {
            // Nothing is waiting here: the kept buffers go back to the system.
            self.spare.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        // Wake a job thread waiting in `take`, so it sees its cancel flag at once.
        self.arrived.notify_all();
    }
}

/// What step `step` of a layer exchanges, for errors.
fn what(step: u32) -> String {
    if step == 0 {
        "halo rows".into()
    } else {
        format!("rows (or partial words) of the layer's exchange {step}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(job: &str, layer: u32, rows: u32, width: u32) -> RowChunk {
        from(job, layer, 0, 0, rows, width)
    }

    fn from(job: &str, layer: u32, part: u32, first: u64, rows: u32, width: u32) -> RowChunk {
        RowChunk {
            job_id: job.into(),
            source_part: part,
            first_row: first,
            layer,
            num_rows: rows,
            row_width: width,
            payload: vec![0u8; (rows * width * 4) as usize].into(),
            ..Default::default()
        }
    }

    /// A large payload is copied out of the buffer it came in (same bytes); handed back
    /// after use, its buffer takes the next large payload; small payloads stay as they
    /// came; the kept buffers are freed when no chunk is left (the job ended).
    #[test]
    fn payloads_are_copied_into_kept_buffers_that_are_reused() {
        let m = Mailbox::new(1 << 30);
        let never = AtomicBool::new(false);
        // Layer `layer`'s chunks of job-5, part 0 (all `rows` of them arrived).
        let take = |layer: u32, rows: u32| {
            m.take(
                "job-5",
                0,
                layer,
                0,
                rows as u64,
                &never,
                &never,
                Duration::ZERO,
            )
            .unwrap()
        };
        let rows = (OWN_MIN_BYTES / 16) as u32; // width 4: 16 bytes a row
        let mut big = from("job-5", 0, 1, 0, rows, 4);
        big.payload = (0..rows * 16).map(|i| i as u8).collect::<Vec<u8>>().into();
        let sent = big.payload.clone();
        m.put(big).unwrap();
        let got = take(0, rows);
        assert_eq!(got[0].payload, sent, "same bytes");
        assert_ne!(got[0].payload.as_ptr(), sent.as_ptr(), "copied out");
        let buffer = got[0].payload.as_ptr();
        m.recycle(got);
        assert_eq!(m.spare.lock().unwrap().len(), 1);
        m.put(from("job-5", 1, 1, 0, rows, 4)).unwrap();
        let again = take(1, rows);
        assert_eq!(again[0].payload.as_ptr(), buffer, "the kept buffer reused");
        assert!(again[0].payload.iter().all(|&b| b == 0));
        let small = from("job-5", 2, 1, 0, 2, 4);
        let small_ptr = small.payload.as_ptr();
        m.put(small).unwrap();
        let got = take(2, 2);
        assert_eq!(
            got[0].payload.as_ptr(),
            small_ptr,
            "small payloads not copied"
        );
        m.recycle(again);
        m.forget_job("job-5", None, false);
        assert!(
            m.spare.lock().unwrap().is_empty(),
            "freed when the job ends"
        );

        // Held chunks and kept buffers share the byte cap: with one chunk held, a
        // mailbox of 1.5 chunks keeps no buffer.
        let cap = (OWN_MIN_BYTES + OWN_MIN_BYTES / 2) as u64;
        let m = Mailbox::new(cap);
        let never = AtomicBool::new(false);
        m.put(from("job-6", 0, 1, 0, rows, 4)).unwrap();
        let first = m
            .take(
                "job-6",
                0,
                0,
                0,
                rows as u64,
                &never,
                &never,
                Duration::ZERO,
            )
            .unwrap();
        m.put(from("job-6", 1, 1, 0, rows, 4)).unwrap();
        m.recycle(first);
        assert!(m.spare.lock().unwrap().is_empty(), "over the cap: not kept");
    }

    #[test]
    fn the_byte_cap_refuses_and_taking_frees() {
        let m = Mailbox::new(100);
        let never = AtomicBool::new(false);
        m.put(chunk("job-1", 0, 2, 8)).unwrap(); // 64 bytes
        let e = m.put(from("job-1", 0, 0, 2, 2, 8)).unwrap_err().to_string();
        assert!(
            e.contains("--mailbox-max-bytes 100") && e.contains("holds 64 bytes"),
            "{e}"
        );
        m.put(chunk("job-1", 1, 1, 8)).unwrap(); // 96 bytes
        let got = m
            .take("job-1", 0, 0, 0, 2, &never, &never, Duration::ZERO)
            .unwrap();
        assert_eq!(got.len(), 1);
        m.put(chunk("job-1", 2, 2, 8)).unwrap(); // 32 + 64: fits again
        m.forget_job("job-1", None, false);
        assert_eq!(m.inbox.lock().unwrap().bytes, 0);
    }

    #[test]
    fn an_ended_jobs_late_chunks_are_refused_until_it_starts_again() {
        let m = Mailbox::new(1 << 20);
        m.put(chunk("job-2", 0, 1, 4)).unwrap();
        m.forget_job("job-2", None, false);
        let e = m.put(chunk("job-2", 1, 1, 4)).unwrap_err();
        assert!(matches!(e, RuntimeError::FailedPrecondition(_)), "{e}");
        assert!(e.to_string().contains("job job-2 has ended"), "{e}");
        m.put(chunk("job-3", 0, 1, 4)).unwrap();
        m.job_started("job-2", 0);
        m.put(chunk("job-2", 0, 1, 4)).unwrap();
        assert_eq!(m.inbox.lock().unwrap().bytes, 32);
    }

    #[test]
    fn re_sent_halo_chunks_and_chunks_of_taken_layers_are_dropped() {
        let m = Mailbox::new(1 << 20);
        let never = AtomicBool::new(false);
        m.put(from("job-4", 0, 1, 0, 2, 4)).unwrap();
        m.put(from("job-4", 0, 1, 0, 2, 4)).unwrap(); // the same chunk again: dropped
        m.put(from("job-4", 0, 2, 0, 1, 4)).unwrap(); // another sender's first chunk
        assert_eq!(m.inbox.lock().unwrap().bytes, 48);
        // Three rows, not five: the duplicate does not count towards the layer.
        let e = m.take("job-4", 0, 0, 0, 4, &never, &never, Duration::ZERO);
        assert!(e.is_err());
        let got = m
            .take("job-4", 0, 0, 0, 3, &never, &never, Duration::ZERO)
            .unwrap();
        assert_eq!(got.len(), 2);
        // The layer was taken: a re-send of it (a restarted peer) is dropped.
        m.put(from("job-4", 0, 1, 0, 2, 4)).unwrap();
        assert_eq!(m.inbox.lock().unwrap().bytes, 0);
        // A finished part of a job that keeps its rows drops late chunks quietly, until
        // the job ends for good.
        m.forget_job("job-4", Some(0), true);
        m.put(from("job-4", 1, 1, 0, 2, 4)).unwrap();
        assert_eq!(m.inbox.lock().unwrap().bytes, 0);
        m.forget_job("job-4", None, false);
        assert!(m.put(from("job-4", 1, 1, 0, 2, 4)).is_err());
    }
}
