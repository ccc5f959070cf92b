//! Deleting jobs, partitions and graphs, and the job retention limit
//! ([`CoordinatorConfig::keep_jobs`](super::CoordinatorConfig)).
//!
//! Nothing in use can be deleted: a job only once it has ended, a partition only while no
//! queued or running job uses it, a graph only while no partition and no job refers to it.
//! The checks and the removal from the catalog happen under the catalog's locks, taken in
//! one order everywhere (jobs, then graphs, then partitions), so a concurrent submit or
//! partition cannot start using what is being deleted. Files go after the catalog entry.

use std::path::Path;
use std::sync::Arc;

use distgat_proto::v1::DeleteResponse;

use super::state::State;
use crate::catalog::{lock, JobRecord, JobState};
use crate::error::{Result, RuntimeError};
use crate::store::Table;

/// Bytes of the regular files under `path` (0 when it does not exist).
fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| tree_bytes(&e.path()))
                .sum::<u64>()
        })
        .unwrap_or(0)
}

/// Removes `dir` (a directory the coordinator made under its work dir) and returns the
/// bytes it held.
fn remove_tree(dir: &Path) -> Result<u64> {
    let bytes = tree_bytes(dir);
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(RuntimeError::Io(e)),
    }
}

fn in_use(what: String) -> RuntimeError {
    RuntimeError::FailedPrecondition(what)
}

/// Whether a job may still read `partition_id` (queued or running with it).
fn uses_partition(job: &JobRecord, partition_id: &str) -> bool {
    let status = job.status();
    !status.state.is_terminal()
        && (status.partition_id == partition_id
            || job
                .spec
                .partition
                .as_ref()
                .is_some_and(|p| p.id == partition_id))
}

/// An id field a request must set: empty is INVALID_ARGUMENT, not "not found".
fn required_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(RuntimeError::InvalidArgument(format!("{field} is empty")));
    }
    Ok(())
}

pub async fn delete_job(state: &Arc<State>, job_id: &str) -> Result<DeleteResponse> {
    required_id("job_id", job_id)?;
    let record = {
        let mut jobs = lock(&state.catalog.jobs);
        let at = jobs
            .iter()
            .position(|j| j.id == job_id)
            .ok_or_else(|| RuntimeError::NotFound(format!("job_id '{job_id}' is not known")))?;
        let job_state = jobs[at].state();
        if !job_state.is_terminal() {
            return Err(in_use(format!(
                "job_id '{job_id}' is {}; cancel it first (CancelJob), then delete it",
                state_name(job_state)
            )));
        }
        state.catalog.forget(Table::Jobs, job_id)?;
        jobs.remove(at)
    };
    remove_job_files(record).await
}

async fn remove_job_files(record: Arc<JobRecord>) -> Result<DeleteResponse> {
    let dir = record.out_dir.clone();
    let bytes = super::api::blocking(move || remove_tree(&dir)).await?;
    tracing::info!(job = %record.id, bytes, "job deleted");
    Ok(DeleteResponse {
        id: record.id.clone(),
        bytes_freed: bytes,
    })
}

pub async fn delete_partition(state: &Arc<State>, partition_id: &str) -> Result<DeleteResponse> {
    required_id("partition_id", partition_id)?;
    let entry = {
        let jobs = lock(&state.catalog.jobs);
        if let Some(job) = jobs.iter().find(|j| uses_partition(j, partition_id)) {
            return Err(in_use(format!(
                "partition_id '{partition_id}' is used by job '{}', which is {}; wait for it \
                 to end or cancel it",
                job.id,
                state_name(job.state())
            )));
        }
        let mut partitions = lock(&state.catalog.partitions);
        if !partitions.contains_key(partition_id) {
            return Err(RuntimeError::NotFound(format!(
                "partition_id '{partition_id}' is not known"
            )));
        }
        state.catalog.forget(Table::Partitions, partition_id)?;
        partitions
            .remove(partition_id)
            .expect("checked under this lock")
    };
    let dir = entry.dir.clone();
    let bytes = super::api::blocking(move || remove_tree(&dir)).await?;
    tracing::info!(partition = %partition_id, bytes, "partition deleted");
    Ok(DeleteResponse {
        id: partition_id.to_string(),
        bytes_freed: bytes,
    })
}

pub async fn delete_graph(state: &Arc<State>, graph_id: &str) -> Result<DeleteResponse> {
    required_id("graph_id", graph_id)?;
    let entry = {
        let jobs = lock(&state.catalog.jobs);
        let mut graphs = lock(&state.catalog.graphs);
        if !graphs.contains_key(graph_id) {
            return Err(RuntimeError::NotFound(format!(
                "graph_id '{graph_id}' is not known"
            )));
        }
        if let Some(job) = jobs.iter().find(|j| j.spec.graph.id == graph_id) {
            return Err(in_use(format!(
                "graph_id '{graph_id}' is used by job '{}' ({}); delete the job first",
                job.id,
                state_name(job.state())
            )));
        }
        let partitions = lock(&state.catalog.partitions);
        let mut users: Vec<&str> = partitions
            .values()
            .filter(|p| p.graph_id == graph_id)
            .map(|p| p.id.as_str())
            .collect();
        if !users.is_empty() {
            users.sort_unstable();
            return Err(in_use(format!(
                "graph_id '{graph_id}' is partitioned by {}; delete those partitions first",
                users.join(", ")
            )));
        }
        drop(partitions);
        state.catalog.forget(Table::Graphs, graph_id)?;
        graphs.remove(graph_id).expect("checked under this lock")
    };
    // Only an upload's files are the coordinator's; a registered graph's are the user's.
    let bytes = if entry.uploaded {
        let dir = state.storage.work_dir.join("graphs").join(&entry.id);
        super::api::blocking(move || remove_tree(&dir)).await?
    } else {
        0
    };
    tracing::info!(graph = %graph_id, bytes, "graph deleted");
    Ok(DeleteResponse {
        id: graph_id.to_string(),
        bytes_freed: bytes,
    })
}

/// Deletes the oldest ended jobs beyond the retention limit (`keep_jobs`; 0 keeps all).
pub async fn enforce_retention(state: &Arc<State>) {
    let keep = state.config.keep_jobs;
    if keep == 0 {
        return;
    }
    let expired: Vec<Arc<JobRecord>> = {
        let mut jobs = lock(&state.catalog.jobs);
        let ended = jobs.iter().filter(|j| j.state().is_terminal()).count();
        let mut excess = ended.saturating_sub(keep);
        let mut expired = Vec::new();
        // Submission order: the oldest ended jobs go first.
        jobs.retain(|j| {
            if excess > 0 && j.state().is_terminal() {
                if let Err(e) = state.catalog.forget(Table::Jobs, &j.id) {
                    tracing::warn!(job = %j.id, "retention: {e}");
                    return true;
                }
                excess -= 1;
                expired.push(j.clone());
                false
            } else {
                true
            }
        });
        expired
    };
    for record in expired {
        let id = record.id.clone();
        if let Err(e) = remove_job_files(record).await {
            tracing::warn!(job = %id, "retention: removing the job's files failed: {e}");
        }
    }
}

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Partitioning => "partitioning",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}
