//! Halo chunks received by a worker, kept until the job's thread takes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use distgat_proto::v1::RowChunk;

use crate::error::{Result, RuntimeError};

/// Halo chunks received, by (job, layer), until the job's thread takes them.
#[derive(Default)]
pub(super) struct Mailbox {
    inbox: Mutex<HashMap<(String, u32), Vec<RowChunk>>>,
    arrived: Condvar,
}

impl Mailbox {
    pub(super) fn put(&self, chunk: RowChunk) {
        crate::metrics::METRICS
            .halo_bytes_received
            .inc_by(chunk.payload.len() as u64);
        let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        inbox
            .entry((chunk.job_id.clone(), chunk.layer))
            .or_default()
            .push(chunk);
        self.arrived.notify_all();
    }

    /// Blocks until `rows` rows of (job, layer) arrived, the job is cancelled, or `timeout`.
    pub(super) fn take(
        &self,
        job: &str,
        layer: u32,
        rows: u64,
        cancel: &AtomicBool,
        timeout: Duration,
    ) -> Result<Vec<RowChunk>> {
        let key = (job.to_string(), layer);
        let deadline = Instant::now() + timeout;
        let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let have: u64 = inbox
                .get(&key)
                .map_or(0, |c| c.iter().map(|c| c.num_rows as u64).sum());
            if have >= rows {
                return Ok(inbox.remove(&key).unwrap_or_default());
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(RuntimeError::Cancelled(format!("job {job}")));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "layer {layer}: {have} of {rows} halo rows arrived within {timeout:?}"
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

    pub(super) fn forget_job(&self, job: &str) {
        let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        inbox.retain(|(j, _), _| j != job);
        drop(inbox);
        // Wake a job thread waiting in `take`, so it sees its cancel flag at once.
        self.arrived.notify_all();
    }
}
