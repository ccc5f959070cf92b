//! The coordinator's shared state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::inputs::JobInputs;
use super::sink::JobSink;
use crate::catalog::{Catalog, JobRecord, Storage};
use crate::registry::WorkerEntry;
use crate::source::ShardSource;

/// [`CoordinatorConfig::max_concurrent_fetches`]'s default.
pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 16;

/// One permit of `fetches` (of `limit` in all), or RESOURCE_EXHAUSTED naming the flag.
fn fetch_permit(
    fetches: &Arc<tokio::sync::Semaphore>,
    limit: usize,
) -> crate::error::Result<tokio::sync::OwnedSemaphorePermit> {
    fetches.clone().try_acquire_owned().map_err(|_| {
        crate::error::RuntimeError::ResourceExhausted(format!(
            "{limit} fetches are already streaming from this coordinator (its \
             --max-concurrent-fetches): retry when one has ended"
        ))
    })
}

/// How the coordinator starts; `Default` listens on an ephemeral loopback port.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    pub heartbeat_interval: Duration,
    /// A worker silent for this long during a job fails the job.
    pub heartbeat_timeout: Duration,
    /// How long a job waits for enough workers to register.
    pub worker_wait: Duration,
    /// Client-named paths must resolve inside this directory.
    pub data_root: PathBuf,
    /// Uploads, partitions and job outputs (workers need not see it with shard source
    /// `stream`).
    pub work_dir: PathBuf,
    /// Largest graph upload (graph plus feature bytes).
    pub max_upload_bytes: u64,
    /// Serve `RunJob`, whose paths are not confined to the data root: only for a private
    /// cluster such as `distgat run` starts on loopback.
    pub allow_run_job: bool,
    /// Ended jobs kept (with their output files); older ones are deleted as new jobs end.
    /// 0 keeps every job.
    pub keep_jobs: usize,
    /// Serve Prometheus metrics (`GET /metrics`) here; none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS (`--tls-cert`, `--tls-key`, `--tls-ca`, all three or none): the server speaks
    /// TLS only, and calls the workers over TLS with its certificate as client identity.
    /// None by default (plaintext).
    pub tls: distgat_proto::TlsFiles,
    /// A file holding the bearer token every Coordinator-service RPC must carry
    /// (`--auth-token-file`, trimmed; an empty file is an error). None: no token needed.
    pub auth_token_file: Option<PathBuf>,
    /// Where workers get their inputs for jobs that do not say (RunJob and SubmitJob's
    /// `shard_source`).
    pub shard_source: ShardSource,
    /// What restarts when a worker is lost (`--recovery`, default part).
    pub recovery: crate::source::Recovery,
    /// Idle deadline of incoming streams (UploadGraph, and workers' PushOutput, which
    /// send a keepalive every 2 s while a part computes): one that sends nothing for
    /// this long ends with DEADLINE_EXCEEDED and leaves nothing behind.
    pub stream_idle_timeout: Duration,
    /// Client fetches (FetchOutput, FetchEdges, FetchAttention) served at once
    /// (`--max-concurrent-fetches`); one more is refused with RESOURCE_EXHAUSTED until
    /// one ends. At least 1.
    pub max_concurrent_fetches: usize,
    /// Shards streamed to workers at once (`--max-concurrent-shard-streams`; shard source
    /// `stream`), the largest first; 0 (the default) streams all at once. `distgat run`
    /// uses 1: its processes share one machine's cores, and the part with the most work
    /// then starts first.
    pub max_concurrent_shard_streams: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(3),
            worker_wait: Duration::from_secs(30),
            data_root: PathBuf::from("."),
            work_dir: PathBuf::from("distgat-work"),
            max_upload_bytes: 64 << 20,
            allow_run_job: false,
            keep_jobs: 0,
            metrics_listen: None,
            tls: Default::default(),
            auth_token_file: None,
            shard_source: ShardSource::default(),
            recovery: crate::source::Recovery::default(),
            stream_idle_timeout: crate::net::DEFAULT_STREAM_IDLE_TIMEOUT,
            max_concurrent_fetches: DEFAULT_MAX_CONCURRENT_FETCHES,
            max_concurrent_shard_streams: 0,
        }
    }
}

pub(crate) struct State {
    pub config: CoordinatorConfig,
    pub storage: Storage,
    pub catalog: Catalog,
    /// Submitted jobs, to the executor ([`super::api::run_queue`]).
    pub queue: mpsc::UnboundedSender<Arc<JobRecord>>,
    pub workers: Mutex<Vec<WorkerEntry>>,
    /// Output sinks of running jobs, by job id.
    pub jobs: Mutex<HashMap<String, Arc<JobSink>>>,
    /// Inputs of running jobs with shard source `stream`, by job id (FetchShard and
    /// FetchInputs serve only these).
    pub inputs: Mutex<HashMap<String, Arc<JobInputs>>>,
    /// The running job and its worker per part.
    pub assignment: Mutex<Option<(String, Vec<String>)>>,
    /// One job at a time.
    pub job_lock: tokio::sync::Mutex<()>,
    pub next_id: AtomicU64,
    /// How the coordinator calls its workers (TLS or not).
    pub dialer: crate::net::Dialer,
    /// Permits of the client fetches in progress ([`State::fetch_permit`]).
    pub fetches: Arc<tokio::sync::Semaphore>,
    /// Builds whose workers keep their parts for a job (`keep_parts`), by build id; a job
    /// on one takes it. At most [`MAX_KEPT_BUILDS`], the oldest dropped first.
    pub kept_builds: Mutex<Vec<(String, Arc<KeptBuild>)>>,
}

/// Kept builds remembered at most (each worker keeps at most two parts as well).
pub(crate) const MAX_KEPT_BUILDS: usize = 2;

/// A neighbourhood build whose parts stay on the workers that built them.
#[derive(Debug)]
pub(crate) struct KeptBuild {
    /// N: the points (nodes) of the build.
    pub nodes: usize,
    /// The worker (id, address) holding each part, by part.
    pub workers: Vec<(String, String)>,
    /// Each part's nodes, ascending (whose feature rows the part needs).
    pub owned: Arc<Vec<Vec<u64>>>,
}

/// Why [`State::live_workers_for`] gave up.
pub(crate) enum Shortfall {
    Cancelled,
    /// The deadline passed with `live` live workers where `want` were needed.
    TooFew {
        live: usize,
        want: usize,
    },
}

impl State {
    /// A permit for one client fetch, held until its stream ends; RESOURCE_EXHAUSTED when
    /// `max_concurrent_fetches` are in progress.
    pub fn fetch_permit(&self) -> crate::error::Result<tokio::sync::OwnedSemaphorePermit> {
        fetch_permit(&self.fetches, self.config.max_concurrent_fetches)
    }

    /// Waits up to `worker_wait` for enough live workers and returns the first `want(live)`
    /// of them as (id, address); `want` gets the live count (a part count of 0 means "one
    /// per live worker"). Polls every 100 ms; `cancelled` is checked each time.
    pub(crate) async fn live_workers_for(
        &self,
        want: impl Fn(usize) -> usize,
        cancelled: impl Fn() -> bool,
    ) -> std::result::Result<Vec<(String, String)>, Shortfall> {
        let deadline = std::time::Instant::now() + self.config.worker_wait;
        loop {
            {
                let workers = crate::catalog::lock(&self.workers);
                let live: Vec<_> = workers
                    .iter()
                    .filter(|w| self.is_live(w))
                    .map(|w| (w.id.clone(), w.address.clone()))
                    .collect();
                let want = want(live.len());
                if live.len() >= want {
                    return Ok(live.into_iter().take(want).collect());
                }
                if cancelled() {
                    return Err(Shortfall::Cancelled);
                }
                if std::time::Instant::now() >= deadline {
                    return Err(Shortfall::TooFew {
                        live: live.len(),
                        want,
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A worker counts as live (healthy) while its heartbeats arrive in time.
    pub(crate) fn is_live(&self, w: &WorkerEntry) -> bool {
        w.last_seen.elapsed() < self.config.heartbeat_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_permits_are_capped_and_returned() {
        let fetches = Arc::new(tokio::sync::Semaphore::new(2));
        let a = fetch_permit(&fetches, 2).unwrap();
        let _b = fetch_permit(&fetches, 2).unwrap();
        let e = fetch_permit(&fetches, 2).unwrap_err();
        assert!(matches!(
            e,
            crate::error::RuntimeError::ResourceExhausted(_)
        ));
        assert!(
            e.to_string().contains("2 fetches")
                && e.to_string().contains("--max-concurrent-fetches")
        );
        drop(a);
        let _c = fetch_permit(&fetches, 2).unwrap();
    }
}
