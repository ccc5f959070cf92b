//! A worker's inputs for a job with shard source `stream`: the shard from the
//! coordinator's `FetchShard` (verified against the manifest's BLAKE3, cached by that hash
//! in the worker's work dir), everything else from `FetchInputs`.

use std::io::Write;
use std::path::{Path, PathBuf};

use distgat_attention::{ModelFiles, WeightsBytes};
use distgat_graph::Features;
use distgat_partition::{check_bytes, PartitionDir, Shard};
use distgat_proto::v1::coordinator_client::CoordinatorClient;
use distgat_proto::v1::input_chunk::Body;
use distgat_proto::v1::{FetchInputsRequest, FetchShardRequest, InputRows, StartJobRequest};
use distgat_proto::Bearer;
use distgat_proto::MAX_CHUNK_BYTES;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

use crate::error::{transport, Result, RuntimeError};

/// How the shard was obtained (reported in the job summary as `shard_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ShardOrigin {
    Shared,
    Fetched,
    Cached,
    Refetched,
    /// No shard: the part this worker kept from a neighbourhood build.
    Kept,
}

impl ShardOrigin {
    pub fn name(self) -> &'static str {
        match self {
            ShardOrigin::Shared => "shared",
            ShardOrigin::Fetched => "fetched",
            ShardOrigin::Cached => "cached",
            ShardOrigin::Refetched => "refetched",
            ShardOrigin::Kept => "kept",
        }
    }
}

/// A coordinator client that carries the bearer token (when the cluster has one).
fn client(
    channel: Channel,
    bearer: &Bearer,
) -> CoordinatorClient<InterceptedService<Channel, Bearer>> {
    CoordinatorClient::with_interceptor(channel, bearer.clone())
        .max_decoding_message_size(4 * MAX_CHUNK_BYTES)
}

fn invalid(what: String) -> RuntimeError {
    RuntimeError::InvalidArgument(what)
}

/// The worker's shard cache: `dir/<blake3>.safetensors`, at most `max_bytes` in all.
#[derive(Debug, Clone)]
pub(crate) struct ShardCache {
    pub dir: PathBuf,
    /// The cache's size limit in bytes (`--shard-cache-max-bytes`): after a shard is
    /// added, the least recently used others are removed until the total fits; 0 caches
    /// nothing.
    pub max_bytes: u64,
}

impl ShardCache {
    /// Removes the least recently used `*.safetensors` files (by modification time,
    /// which a cache hit refreshes), never `keep`, until the total is at most
    /// `max_bytes` (or only `keep` is left). Returns the files removed.
    pub fn prune(&self, keep: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut entries = Vec::new();
        let mut total = 0u64;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "safetensors") {
                continue;
            }
            let meta = entry.metadata()?;
            total += meta.len();
            if path != keep {
                entries.push((meta.modified()?, path, meta.len()));
            }
        }
        entries.sort();
        let mut removed = Vec::new();
        for (_, path, len) in entries {
            if total <= self.max_bytes {
                break;
            }
            std::fs::remove_file(&path)?;
            total -= len;
            removed.push(path);
        }
        Ok(removed)
    }
}

/// The part's shard: from the cache `shards_dir/<blake3>.safetensors` when it holds the
/// file the manifest names (size and BLAKE3 checked; the hit refreshes its modification
/// time, the cache's LRU clock), else streamed from the coordinator, checked, and written
/// to the cache (temporary file, then rename), which is then pruned to its size limit.
pub(super) fn shard(
    rt: &tokio::runtime::Handle,
    channel: Channel,
    bearer: &Bearer,
    req: &StartJobRequest,
    cache: &ShardCache,
) -> Result<(PartitionDir, Shard, ShardOrigin)> {
    let shards_dir = cache.dir.as_path();
    let label = PathBuf::from(format!("<coordinator>/partition-of-{}", req.job_id));
    let dir = PartitionDir::from_manifest(&label, &req.partition_manifest)?;
    let info = dir.shard_file(req.part)?.clone();
    let hash_ok = info.blake3.len() == 64 && info.blake3.bytes().all(|b| b.is_ascii_hexdigit());
    if !hash_ok {
        return Err(invalid(format!(
            "partition_manifest: shard of part {} has blake3 \"{}\", not 64 hex digits",
            req.part, info.blake3
        )));
    }
    let cached = shards_dir.join(format!("{}.safetensors", info.blake3));
    let mut origin = ShardOrigin::Fetched;
    match std::fs::read(&cached) {
        Ok(bytes) => match check_bytes(&cached, &info, &bytes) {
            Ok(()) => {
                // Most recently used now (best effort: a failure only ages it early).
                let _ = std::fs::File::options()
                    .append(true)
                    .open(&cached)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                let shard = dir.shard_from_bytes(req.part, &cached, &bytes)?;
                return Ok((dir, shard, ShardOrigin::Cached));
            }
            Err(e) => {
                tracing::warn!(job = %req.job_id, part = req.part, "cached shard rejected, fetching it again: {e}");
                std::fs::remove_file(&cached).map_err(|e| io_at(&cached, e))?;
                origin = ShardOrigin::Refetched;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(&cached, e)),
    }

    let request = FetchShardRequest {
        job_id: req.job_id.clone(),
        part: req.part,
        worker_id: req.worker_id.clone(),
    };
    let bytes = rt.block_on(async {
        let mut stream = client(channel, bearer)
            .fetch_shard(request)
            .await
            .map_err(transport("fetching the shard"))?
            .into_inner();
        let mut bytes = Vec::with_capacity(info.bytes.min(1 << 32) as usize);
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(transport("fetching the shard"))?
        {
            if chunk.offset != bytes.len() as u64 || chunk.total_bytes != info.bytes {
                return Err(invalid(format!(
                    "shard chunk at offset {} of {} bytes: expected offset {} of {}",
                    chunk.offset,
                    chunk.total_bytes,
                    bytes.len(),
                    info.bytes
                )));
            }
            bytes.extend_from_slice(&chunk.data);
            if bytes.len() as u64 > info.bytes {
                return Err(invalid(format!(
                    "shard of part {}: more than the manifest's {} bytes arrived",
                    req.part, info.bytes
                )));
            }
        }
        Ok::<_, RuntimeError>(bytes)
    })?;
    let received = label.join(&info.file);
    check_bytes(&received, &info, &bytes)?;
    let shard = dir.shard_from_bytes(req.part, &received, &bytes)?;
    // Into the cache only once verified, and atomically (a reader never sees a partial
    // file), on its own thread: the part computes meanwhile. A failed write costs only the
    // next job a fetch, so it is logged as a warning, not failed.
    if cache.max_bytes < info.bytes {
        return Ok((dir, shard, origin)); // never fits (0: caching is off)
    }
    let (cache, job, part) = (cache.clone(), req.job_id.clone(), req.part);
    std::thread::Builder::new()
        .name(format!("cache-{job}-{part}"))
        .spawn(move || {
            if let Err(e) = write_cache(&cache.dir, &cached, &bytes) {
                tracing::warn!(%job, part, "could not cache the shard (the next job fetches it again): {e}");
                return;
            }
            match cache.prune(&cached) {
                Ok(removed) if !removed.is_empty() => tracing::info!(
                    %job,
                    part,
                    "shard cache over --shard-cache-max-bytes {}: removed {} least recently used",
                    cache.max_bytes,
                    removed.len()
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(%job, part, "pruning the shard cache: {e}"),
            }
        })
        .map_err(|e| RuntimeError::Io(std::io::Error::other(format!("starting the cache writer: {e}"))))?;
    Ok((dir, shard, origin))
}

/// Writes `bytes` to `cached` through a temporary file in `shards_dir`, then a rename.
fn write_cache(shards_dir: &Path, cached: &Path, bytes: &[u8]) -> Result<()> {
    let mut temp = tempfile::Builder::new()
        .prefix(".shard-")
        .suffix(".partial")
        .tempfile_in(shards_dir)
        .map_err(|e| io_at(shards_dir, e))?;
    temp.write_all(bytes).map_err(|e| io_at(temp.path(), e))?;
    temp.persist(cached).map_err(|e| io_at(cached, e.error))?;
    Ok(())
}

fn io_at(path: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

/// What `FetchInputs` delivered.
pub(super) struct Inputs {
    pub model: ModelFiles,
    /// `[owned, F]`, when the shard carries no feature rows.
    pub features: Option<Features>,
    /// `[entries, D]` in local entry order, when the model needs edge attributes the
    /// shard does not carry.
    pub edge_attr: Option<Features>,
}

/// Appends `rows` (which must start at row `*next`) to `values`, checking its width.
fn take_rows(
    what: &str,
    rows: InputRows,
    width: &mut Option<u32>,
    next: &mut u64,
    values: &mut Vec<f32>,
) -> Result<()> {
    let w = *width.get_or_insert(rows.width);
    let expected = (rows.num_rows as usize) * (w as usize) * 4;
    if rows.width != w || rows.first_row != *next || rows.values.len() != expected {
        return Err(invalid(format!(
            "{what} rows from {} (+{}), width {}, {} bytes: expected rows from {next}, width {w}, {expected} bytes",
            rows.first_row,
            rows.num_rows,
            rows.width,
            rows.values.len()
        )));
    }
    values.extend(
        rows.values
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    *next += rows.num_rows as u64;
    Ok(())
}

pub(super) fn inputs(
    rt: &tokio::runtime::Handle,
    channel: Channel,
    bearer: &Bearer,
    req: &StartJobRequest,
) -> Result<Inputs> {
    let request = FetchInputsRequest {
        job_id: req.job_id.clone(),
        part: req.part,
        worker_id: req.worker_id.clone(),
    };
    rt.block_on(async {
        let mut stream = client(channel, bearer)
            .fetch_inputs(request)
            .await
            .map_err(transport("fetching the job's inputs"))?
            .into_inner();
        let mut hasher = blake3::Hasher::new();
        let mut json: Option<Vec<u8>> = None;
        let mut weights: Vec<WeightsBytes> = Vec::new();
        // The file being received: its name and expected size.
        let mut current: Option<(String, u64)> = None;
        // Expected size of the JSON and of each weights file, to check each is complete.
        let (mut json_total, mut weights_total) = (0u64, Vec::new());
        let (mut fw, mut fnext, mut fvals) = (None, 0u64, Vec::new());
        let (mut ew, mut enext, mut evals) = (None, 0u64, Vec::new());
        let done = loop {
            let Some(chunk) = stream
                .message()
                .await
                .map_err(transport("fetching the job's inputs"))?
            else {
                return Err(invalid(
                    "the coordinator's FetchInputs stream ended without InputsDone".into(),
                ));
            };
            match chunk.body {
                Some(Body::Model(m)) => {
                    hasher.update(&m.data);
                    if m.offset == 0 {
                        current = Some((m.name.clone(), m.total_bytes));
                        if m.name.is_empty() {
                            json_total = m.total_bytes;
                            json = Some(Vec::with_capacity(m.total_bytes.min(1 << 30) as usize));
                        } else {
                            weights_total.push(m.total_bytes);
                            let mut names = vec![m.name.clone()];
                            names.extend(m.aliases);
                            weights.push(WeightsBytes {
                                names,
                                bytes: Vec::with_capacity(m.total_bytes.min(1 << 32) as usize),
                            });
                        }
                    }
                    let buf = match (&current, m.name.is_empty()) {
                        (Some((name, total)), _) if *name == m.name && *total == m.total_bytes => {
                            if m.name.is_empty() {
                                json.as_mut()
                            } else {
                                weights.last_mut().map(|w| &mut w.bytes)
                            }
                        }
                        _ => None,
                    };
                    let Some(buf) = buf.filter(|b| b.len() as u64 == m.offset) else {
                        return Err(invalid(format!(
                            "model file \"{}\": chunk at offset {} out of order",
                            m.name, m.offset
                        )));
                    };
                    buf.extend_from_slice(&m.data);
                    if buf.len() as u64 > m.total_bytes {
                        return Err(invalid(format!(
                            "model file \"{}\": more than its {} bytes arrived",
                            m.name, m.total_bytes
                        )));
                    }
                }
                Some(Body::Features(rows)) => {
                    hasher.update(&rows.values);
                    take_rows("feature", rows, &mut fw, &mut fnext, &mut fvals)?;
                }
                Some(Body::EdgeAttr(rows)) => {
                    hasher.update(&rows.values);
                    take_rows("edge attribute", rows, &mut ew, &mut enext, &mut evals)?;
                }
                Some(Body::Done(done)) => break done,
                None => return Err(invalid("an InputChunk without a body".into())),
            }
        };
        let hash = hasher.finalize().to_hex().to_string();
        if hash != done.blake3 || done.feature_rows != fnext || done.edge_rows != enext {
            return Err(invalid(format!(
                "the job's inputs arrived damaged or incomplete: BLAKE3 {hash} of {fnext} \
                 feature and {enext} edge rows, the coordinator sent {} of {} and {}",
                done.blake3, done.feature_rows, done.edge_rows
            )));
        }
        let json = json.ok_or_else(|| invalid("the model JSON never arrived".into()))?;
        let complete = json.len() as u64 == json_total
            && weights
                .iter()
                .zip(&weights_total)
                .all(|(w, &t)| w.bytes.len() as u64 == t);
        if !complete {
            return Err(invalid("a model file arrived incomplete".into()));
        }
        Ok(Inputs {
            model: ModelFiles { json, weights },
            features: fw.map(|w| Features::new(fnext as usize, w as usize, fvals)),
            edge_attr: ew.map(|w| Features::new(enext as usize, w as usize, evals)),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least recently modified files go first, the one just added never, and files
    /// that are not shards are left alone.
    #[test]
    fn prune_removes_least_recently_used_until_it_fits() {
        let dir = tempfile::tempdir().unwrap();
        let at = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let make = |name: &str, len: usize, secs: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; len]).unwrap();
            let f = std::fs::File::options().append(true).open(&path).unwrap();
            f.set_modified(at(secs)).unwrap();
            path
        };
        let old = make("a.safetensors", 100, 1_000);
        let mid = make("b.safetensors", 100, 2_000);
        let newest = make("c.safetensors", 100, 3_000);
        let other = make("notes.txt", 1_000, 0);
        let cache = ShardCache {
            dir: dir.path().to_path_buf(),
            max_bytes: 250,
        };
        // 300 bytes of shards > 250: the oldest goes, even though `mid` is older than
        // `newest`, which is kept as the one just added.
        assert_eq!(cache.prune(&newest).unwrap(), vec![old.clone()]);
        assert!(!old.exists() && mid.exists() && newest.exists() && other.exists());
        // Keeping the older file removes the newer one.
        let tight = ShardCache {
            max_bytes: 100,
            ..cache.clone()
        };
        assert_eq!(tight.prune(&mid).unwrap(), vec![newest.clone()]);
        // A limit below the kept file alone removes everything else, never it.
        let none = ShardCache {
            max_bytes: 0,
            ..cache
        };
        assert!(none.prune(&mid).unwrap().is_empty());
        assert!(mid.exists());
    }
}
