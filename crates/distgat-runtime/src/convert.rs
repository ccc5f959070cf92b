//! Domain <-> wire conversions for the client API, in one place.

use distgat_proto::v1;

use crate::catalog::{GraphEntry, JobRecord, JobState, JobStatus, PartitionEntry};
use crate::registry::WorkerEntry;

impl From<JobState> for v1::JobState {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Queued => v1::JobState::Queued,
            JobState::Partitioning => v1::JobState::Partitioning,
            JobState::Running => v1::JobState::Running,
            JobState::Succeeded => v1::JobState::Succeeded,
            JobState::Failed => v1::JobState::Failed,
            JobState::Cancelled => v1::JobState::Cancelled,
        }
    }
}

pub(crate) fn graph_info(g: &GraphEntry) -> v1::GraphInfo {
    v1::GraphInfo {
        graph_id: g.id.clone(),
        name: g.name.clone(),
        nodes: g.nodes,
        edges: g.edges,
        feature_width: g.feature_width,
        edge_feature_width: g.edge_feature_width,
        source: if g.uploaded { "upload" } else { "path" }.into(),
    }
}

pub(crate) fn partition_info(p: &PartitionEntry) -> v1::PartitionInfo {
    v1::PartitionInfo {
        partition_id: p.id.clone(),
        graph_id: p.graph_id.clone(),
        parts: p.parts,
        method: p.method.clone(),
        edge_cut: p.edge_cut,
        halo_rows: p.halo_rows,
        seconds: p.seconds,
    }
}

pub(crate) fn job_info(record: &JobRecord, s: &JobStatus) -> v1::JobInfo {
    v1::JobInfo {
        job_id: record.id.clone(),
        state: v1::JobState::from(s.state) as i32,
        graph_id: record.spec.graph.id.clone(),
        partition_id: s.partition_id.clone(),
        parts: s.parts,
        layers: s.layers,
        progress: s
            .progress
            .iter()
            .map(|p| v1::PartProgress {
                part: p.part,
                worker_id: p.worker_id.clone(),
                worker_address: p.worker_address.clone(),
                layers_done: p.layers_done,
                halo_bytes_sent: p.halo_bytes_sent,
                layer_entries_done: p.layer_entries_done,
                layer_entries_total: p.layer_entries_total,
            })
            .collect(),
        error: s.error.clone(),
        queue_position: 0,
        output_rows: s.output_rows,
        output_width: s.output_width,
        attention: record.spec.attention,
        seconds: s.seconds,
        summary_json: s.summary_json.clone(),
    }
}

pub(crate) fn worker_status(
    w: &WorkerEntry,
    healthy: bool,
    job: Option<&str>,
    part: Option<u32>,
) -> v1::WorkerStatus {
    v1::WorkerStatus {
        worker_id: w.id.clone(),
        address: w.address.clone(),
        healthy,
        last_heartbeat_ms_ago: w.last_seen.elapsed().as_millis() as u64,
        job_id: job.unwrap_or_default().to_string(),
        part,
    }
}
