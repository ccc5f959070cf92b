//! What the coordinator streams to the workers of a job run with shard source `stream`:
//! each part's shard file (`FetchShard`) and its other inputs (`FetchInputs`): the model
//! files, the feature rows of the nodes it owns and the edge attribute rows of its local
//! edges, each only when the shard does not carry them. Every request is checked against
//! the running job: the job exists and streams, and the part is the asking worker's.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use distgat_attention::Model;
use distgat_graph::Features;
use distgat_partition::PartitionDir;
use distgat_proto::v1::input_chunk::Body;
use distgat_proto::v1::{InputChunk, InputRows, InputsDone, ModelFileChunk, ShardChunk};
use distgat_proto::MAX_CHUNK_BYTES;
use tokio::sync::mpsc;
use tonic::Status;

use super::state::State;
use crate::catalog::lock;
use crate::error::{Result, RuntimeError};
use crate::worker::f32_bytes;

/// A running job's inputs, as the coordinator serves them to its workers.
pub(crate) struct JobInputs {
    /// The partition directory; `None` for a job on a kept build, whose parts hold their
    /// own plans (no shard to send).
    pub partition: Option<PartitionDir>,
    /// The manifest's text, sent to each worker in its StartJobRequest (empty for a kept
    /// build).
    pub manifest_text: String,
    /// A kept build's nodes per part, ascending (the feature rows each part gets).
    pub owned: Option<Arc<Vec<Vec<u64>>>>,
    pub model: PathBuf,
    /// The features file, when the shards carry no feature rows.
    pub features: Option<PathBuf>,
    /// The edge features file, when the model needs edge attributes the shards lack.
    pub edge_features: Option<PathBuf>,
    /// The worker id of each part; a recovery (`job.rs`) gives a lost worker's part to a
    /// spare, so this changes between attempts.
    pub workers: std::sync::Mutex<Vec<String>>,
    /// Bytes sent per part: shard file bytes, and every other input's bytes.
    pub shard_bytes: Vec<AtomicU64>,
    pub input_bytes: Vec<AtomicU64>,
    /// Turns of the current attempt's shard streams (`--max-concurrent-shard-streams`):
    /// each attempt gets its own ([`JobInputs::new_attempt`]), so a stream of a failed
    /// attempt that is stuck on a silent worker can never hold up the next attempt.
    pub shard_turns: std::sync::Mutex<Arc<ShardTurns>>,
    shard_streams: usize,
}

/// Which shard streams may send now: at most `limit` at once (0: no limit), the largest
/// waiting shard first (ties: the lower part), and a stream yields its turn between chunks
/// when a larger shard is waiting. Streams that share the coordinator's cores or link
/// delay each other's parts to the end of the slowest transfer; in turn, largest first,
/// the part with the most work starts computing first while the others still receive.
/// Senders are blocking threads, so a mutex and a condition variable suffice.
pub(crate) struct ShardTurns {
    limit: usize,
    state: std::sync::Mutex<TurnState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct TurnState {
    sending: usize,
    /// (shard bytes, part) of each stream waiting for a turn.
    waiting: Vec<(u64, u32)>,
}

/// Orders waiting streams: the larger shard first, then the lower part.
fn before(a: (u64, u32), b: (u64, u32)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// A stream's turn; dropping it lets the next stream send.
pub(crate) struct Turn<'a> {
    turns: &'a ShardTurns,
    me: (u64, u32),
}

impl ShardTurns {
    pub fn new(limit: usize) -> Self {
        ShardTurns {
            limit,
            state: std::sync::Mutex::new(TurnState::default()),
            changed: std::sync::Condvar::new(),
        }
    }

    /// Blocks until the stream of `part` (its shard `bytes` long) may send.
    pub fn take(&self, bytes: u64, part: u32) -> Turn<'_> {
        let me = (bytes, part);
        let mut state = lock(&self.state);
        if self.limit > 0 {
            state.waiting.push(me);
            loop {
                let first = state.waiting.iter().all(|&w| w == me || before(me, w));
                if first && state.sending < self.limit {
                    break;
                }
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            // One entry: the same part may wait twice (a recovery's attempt while the
            // previous attempt's stream still waits).
            if let Some(i) = state.waiting.iter().position(|&w| w == me) {
                state.waiting.swap_remove(i);
            }
        }
        state.sending += 1;
        Turn { turns: self, me }
    }
}

impl Turn<'_> {
    /// Gives the turn up to a larger waiting shard, if any, and waits for the next one.
    pub fn yield_to_larger(self) -> Self {
        let (turns, me) = (self.turns, self.me);
        let larger = turns.limit > 0 && lock(&turns.state).waiting.iter().any(|&w| before(w, me));
        if !larger {
            return self;
        }
        drop(self);
        turns.take(me.0, me.1)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(&self.turns.state).sending -= 1;
        self.turns.changed.notify_all();
    }
}

impl JobInputs {
    pub fn new(
        partition_dir: &Path,
        model: PathBuf,
        features: Option<PathBuf>,
        edge_features: Option<PathBuf>,
        workers: Vec<String>,
        shard_streams: usize,
    ) -> Result<Self> {
        let manifest_path = partition_dir.join("manifest.json");
        let manifest_text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            RuntimeError::Io(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", manifest_path.display()),
            ))
        })?;
        let partition = PartitionDir::from_manifest(partition_dir, &manifest_text)?;
        let parts = workers.len();
        Ok(JobInputs {
            features: features.filter(|_| !partition.manifest.features_in_shards),
            partition: Some(partition),
            manifest_text,
            owned: None,
            model,
            edge_features,
            workers: std::sync::Mutex::new(workers),
            shard_bytes: (0..parts).map(|_| AtomicU64::new(0)).collect(),
            input_bytes: (0..parts).map(|_| AtomicU64::new(0)).collect(),
            shard_turns: std::sync::Mutex::new(Arc::new(ShardTurns::new(shard_streams))),
            shard_streams,
        })
    }

    /// The inputs of a job on a kept build: the model, and the feature rows of `owned[p]`
    /// for part `p` (no shards, no edge features).
    pub fn for_kept_build(
        owned: Arc<Vec<Vec<u64>>>,
        model: PathBuf,
        features: PathBuf,
        workers: Vec<String>,
    ) -> Self {
        let parts = workers.len();
        JobInputs {
            partition: None,
            manifest_text: String::new(),
            owned: Some(owned),
            model,
            features: Some(features),
            edge_features: None,
            workers: std::sync::Mutex::new(workers),
            shard_bytes: (0..parts).map(|_| AtomicU64::new(0)).collect(),
            input_bytes: (0..parts).map(|_| AtomicU64::new(0)).collect(),
            shard_turns: std::sync::Mutex::new(Arc::new(ShardTurns::new(0))),
            shard_streams: 0,
        }
    }

    /// Part `part` now runs on worker `worker` (a part restarted alone on a spare).
    pub fn reassign(&self, part: usize, worker: String) {
        if let Some(w) = lock(&self.workers).get_mut(part) {
            *w = worker;
        }
    }

    /// A new attempt of the job runs on `workers` (by part), with fresh shard turns.
    pub fn new_attempt(&self, workers: Vec<String>) {
        *lock(&self.workers) = workers;
        *lock(&self.shard_turns) = Arc::new(ShardTurns::new(self.shard_streams));
    }
}

/// The inputs of `job_id` if it is running with shard source `stream` and `part` is
/// assigned to `worker_id`.
fn checked(state: &State, job_id: &str, part: u32, worker_id: &str) -> Result<Arc<JobInputs>> {
    let inputs = lock(&state.inputs).get(job_id).cloned();
    let running = lock(&state.jobs).contains_key(job_id);
    let workers = inputs.as_ref().map(|i| lock(&i.workers).clone());
    authorise(job_id, part, worker_id, workers.as_deref(), running)?;
    Ok(inputs.expect("authorised"))
}

/// Whether a worker may fetch `part` of `job_id`: `workers` are the job's worker ids by
/// part when it runs with shard source `stream`; `running` whether it runs at all.
fn authorise(
    job_id: &str,
    part: u32,
    worker_id: &str,
    workers: Option<&[String]>,
    running: bool,
) -> Result<()> {
    let Some(workers) = workers else {
        return Err(if running {
            RuntimeError::FailedPrecondition(format!(
                "job {job_id} runs with shard source \"shared\": its workers open its files by path"
            ))
        } else {
            RuntimeError::NotFound(format!("job_id '{job_id}' is not running"))
        });
    };
    let Some(owner) = workers.get(part as usize) else {
        return Err(RuntimeError::InvalidArgument(format!(
            "part: job {job_id} has parts 0..{}, not {part}",
            workers.len()
        )));
    };
    if owner != worker_id {
        return Err(RuntimeError::PermissionDenied(format!(
            "part {part} of job {job_id} is assigned to {owner}, not to worker_id '{worker_id}'"
        )));
    }
    Ok(())
}

type Sender<T> = mpsc::Sender<Result<T, Status>>;

/// Streams the shard file of `part` in chunks of at most [`MAX_CHUNK_BYTES`].
pub(crate) fn fetch_shard(
    state: &State,
    job_id: &str,
    part: u32,
    worker_id: &str,
    tx: Sender<ShardChunk>,
) -> Result<()> {
    let inputs = checked(state, job_id, part, worker_id)?;
    let Some(partition) = &inputs.partition else {
        return Err(RuntimeError::FailedPrecondition(format!(
            "job {job_id} runs on a kept neighbourhood build: its parts have no shard to fetch"
        )));
    };
    let info = partition.shard_file(part)?.clone();
    let path = partition.path.join(&info.file);
    let turns = lock(&inputs.shard_turns).clone();
    tokio::task::spawn_blocking(move || {
        let send = || -> Result<()> {
            let io = |e: std::io::Error| {
                RuntimeError::Io(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ))
            };
            let mut turn = turns.take(info.bytes, part);
            let mut file = std::fs::File::open(&path).map_err(io)?;
            let mut offset = 0u64;
            loop {
                turn = turn.yield_to_larger();
                // Read into spare capacity (no zero fill), up to one chunk.
                let mut data = Vec::with_capacity(MAX_CHUNK_BYTES);
                let got = (&mut file)
                    .take(MAX_CHUNK_BYTES as u64)
                    .read_to_end(&mut data)
                    .map_err(io)?;
                if got == 0 {
                    break;
                }
                let chunk = ShardChunk {
                    offset,
                    total_bytes: info.bytes,
                    data: data.into(),
                };
                offset += got as u64;
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return Ok(()); // the worker went away
                }
                inputs.shard_bytes[part as usize].fetch_add(got as u64, Ordering::Relaxed);
            }
            Ok(())
        };
        if let Err(e) = send() {
            let _ = tx.blocking_send(Err(e.into()));
        }
    });
    Ok(())
}

/// Streams the model files, then the part's feature rows and edge attribute rows (when
/// its shard lacks them), then an [`InputsDone`] with the BLAKE3 of everything sent.
pub(crate) fn fetch_inputs(
    state: &State,
    job_id: &str,
    part: u32,
    worker_id: &str,
    tx: Sender<InputChunk>,
) -> Result<()> {
    let inputs = checked(state, job_id, part, worker_id)?;
    tokio::task::spawn_blocking(move || {
        if let Err(e) = send_inputs(&inputs, part, &tx) {
            let _ = tx.blocking_send(Err(e.into()));
        }
    });
    Ok(())
}

fn send_inputs(inputs: &JobInputs, part: u32, tx: &Sender<InputChunk>) -> Result<()> {
    let mut hasher = blake3::Hasher::new();
    let send = |body: Body, payload_len: usize| -> Result<()> {
        inputs.input_bytes[part as usize].fetch_add(payload_len as u64, Ordering::Relaxed);
        tx.blocking_send(Ok(InputChunk { body: Some(body) }))
            .map_err(|_| RuntimeError::Cancelled("the worker closed its FetchInputs stream".into()))
    };
    let files = Model::read_files(&inputs.model)?;
    let mut model_files = vec![(String::new(), Vec::new(), files.json)];
    for w in files.weights {
        let mut names = w.names.into_iter();
        let first = names.next().unwrap_or_default();
        model_files.push((first, names.collect(), w.bytes));
    }
    for (name, aliases, bytes) in model_files {
        let total = bytes.len() as u64;
        let mut chunks = bytes.chunks(MAX_CHUNK_BYTES).peekable();
        if chunks.peek().is_none() {
            send(
                Body::Model(ModelFileChunk {
                    name: name.clone(),
                    offset: 0,
                    total_bytes: 0,
                    data: Vec::new(),
                    aliases: aliases.clone(),
                }),
                0,
            )?;
        }
        let mut offset = 0u64;
        for (i, data) in chunks.enumerate() {
            hasher.update(data);
            let n = data.len();
            send(
                Body::Model(ModelFileChunk {
                    name: name.clone(),
                    offset,
                    total_bytes: total,
                    data: data.to_vec(),
                    aliases: if i == 0 { aliases.clone() } else { Vec::new() },
                }),
                n,
            )?;
            offset += n as u64;
        }
    }
    let (mut feature_rows, mut edge_rows) = (0u64, 0u64);
    if inputs.features.is_some() || inputs.edge_features.is_some() {
        let shard_plan;
        let (owned, edge_id): (&[u64], &[u64]) = match (&inputs.owned, &inputs.partition) {
            (Some(owned), _) => (owned.get(part as usize).map_or(&[][..], |o| &o[..]), &[]),
            (None, Some(partition)) => {
                shard_plan = partition.load_shard(part)?.plan;
                (&shard_plan.owned, &shard_plan.edge_id)
            }
            (None, None) => unreachable!("JobInputs holds a partition or a kept build's parts"),
        };
        // Only this part's rows are read (one pass over the file, bounded memory besides
        // those rows), so the coordinator never holds a whole features file.
        if let Some(path) = &inputs.features {
            let rows = Features::read_rows(path, "features", owned).map_err(|e| {
                RuntimeError::InvalidArgument(format!("features (part {part}'s rows): {e}"))
            })?;
            feature_rows = send_rows(&rows, &mut hasher, &mut |rows, n| {
                send(Body::Features(rows), n)
            })?;
        }
        if let Some(path) = &inputs.edge_features {
            let rows = Features::read_rows(path, "edge features", edge_id).map_err(|e| {
                RuntimeError::InvalidArgument(format!(
                    "edge_features (part {part}'s local edges): {e}"
                ))
            })?;
            edge_rows = send_rows(&rows, &mut hasher, &mut |rows, n| {
                send(Body::EdgeAttr(rows), n)
            })?;
        }
    }
    send(
        Body::Done(InputsDone {
            blake3: hasher.finalize().to_hex().to_string(),
            feature_rows,
            edge_rows,
        }),
        0,
    )
}

/// Sends every row of `rows` in order, in chunks of at most [`MAX_CHUNK_BYTES`].
fn send_rows(
    rows: &Features,
    hasher: &mut blake3::Hasher,
    send: &mut dyn FnMut(InputRows, usize) -> Result<()>,
) -> Result<u64> {
    let width = rows.width;
    let per_chunk = (MAX_CHUNK_BYTES / (4 * width.max(1))).max(1);
    for (i, block) in rows.values.chunks(per_chunk * width.max(1)).enumerate() {
        let values = f32_bytes(block);
        hasher.update(&values);
        let n = values.len();
        send(
            InputRows {
                first_row: (i * per_chunk) as u64,
                num_rows: (block.len() / width.max(1)) as u32,
                width: width as u32,
                values,
            },
            n,
        )?;
    }
    Ok(rows.num_nodes as u64)
}

#[cfg(test)]
mod tests {
    use super::{authorise, ShardTurns};
    use std::sync::{Arc, Mutex};

    /// Waits (up to 10 s) until `n` streams wait for a turn.
    fn until_waiting(turns: &ShardTurns, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while crate::catalog::lock(&turns.state).waiting.len() != n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} waiting streams expected"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn shard_turns_go_to_the_largest_waiting_shard_and_a_smaller_stream_yields() {
        let turns = Arc::new(ShardTurns::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let small = turns.take(10, 1);
        let waiters: Vec<_> = [(20u64, 2u32), (30, 0), (30, 3)]
            .into_iter()
            .map(|(bytes, part)| {
                let (turns, order) = (turns.clone(), order.clone());
                std::thread::spawn(move || {
                    let _turn = turns.take(bytes, part);
                    order.lock().unwrap().push(part);
                })
            })
            .collect();
        until_waiting(&turns, 3);
        // Between chunks the small stream gives way to all three larger ones.
        let small = small.yield_to_larger();
        order.lock().unwrap().push(1);
        drop(small);
        for w in waiters {
            w.join().unwrap();
        }
        // Larger first; equal sizes by part.
        assert_eq!(*order.lock().unwrap(), vec![0, 3, 2, 1]);
    }

    #[test]
    fn shard_turns_without_a_limit_never_wait() {
        let turns = ShardTurns::new(0);
        let a = turns.take(10, 0);
        let b = turns.take(20, 1).yield_to_larger();
        let _c = a.yield_to_larger();
        drop(b);
        assert_eq!(crate::catalog::lock(&turns.state).sending, 1);
    }

    #[test]
    fn only_the_assigned_worker_of_a_streaming_job_may_fetch_a_part() {
        let w = vec!["worker-1".to_string(), "worker-2".to_string()];
        let code = |r: crate::error::Result<()>| tonic::Status::from(r.unwrap_err()).code();
        assert!(authorise("job-1", 1, "worker-2", Some(&w), true).is_ok());
        assert_eq!(
            code(authorise("job-1", 1, "worker-1", Some(&w), true)),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            code(authorise("job-1", 2, "worker-2", Some(&w), true)),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(authorise("job-1", 0, "worker-1", None, true)),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(authorise("job-9", 0, "worker-1", None, false)),
            tonic::Code::NotFound
        );
    }
}
