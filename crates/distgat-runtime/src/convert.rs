//! Domain <-> wire conversions for the client API, in one place.

use distgat_neighbours::distributed::{BBox, ReachRequest};
use distgat_neighbours::{Execution, Metric, NeighbourRule, Options, Points, Search};
use distgat_proto::v1;

use crate::error::{Result, RuntimeError};

use crate::catalog::{GraphEntry, JobRecord, JobState, JobStatus, PartitionEntry};
use crate::registry::WorkerEntry;
use crate::source::ShardSource;

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

/// A request's `shard_source` field: empty means `default`.
pub(crate) fn shard_source(field: &str, value: &str, default: ShardSource) -> Result<ShardSource> {
    if value.is_empty() {
        return Ok(default);
    }
    value
        .parse()
        .map_err(|e: crate::source::UnknownShardSource| {
            RuntimeError::InvalidArgument(format!("{field}: {e}"))
        })
}

impl From<ShardSource> for v1::ShardSource {
    fn from(s: ShardSource) -> Self {
        match s {
            ShardSource::Stream => v1::ShardSource::Stream,
            ShardSource::Shared => v1::ShardSource::Shared,
        }
    }
}

/// StartJobRequest.shard_source; unspecified (an older coordinator) means shared paths.
pub(crate) fn shard_source_of(value: i32) -> Result<ShardSource> {
    match v1::ShardSource::try_from(value) {
        Ok(v1::ShardSource::Stream) => Ok(ShardSource::Stream),
        Ok(v1::ShardSource::Shared | v1::ShardSource::Unspecified) => Ok(ShardSource::Shared),
        Err(_) => Err(RuntimeError::InvalidArgument(format!(
            "shard_source: {value} is not a ShardSource"
        ))),
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
        source: match (&g.neighbourhood, g.uploaded) {
            (Some(_), _) => "neighbourhood",
            (None, true) => "upload",
            (None, false) => "path",
        }
        .into(),
        neighbourhood: g
            .neighbourhood
            .as_ref()
            .map(|n| n.rule.clone())
            .unwrap_or_default(),
        spatial_parts: g.neighbourhood.as_ref().map_or(0, |n| n.parts),
        build_summary_json: g
            .neighbourhood
            .as_ref()
            .map(|n| n.summary_json.clone())
            .unwrap_or_default(),
    }
}

/// A knn or radius rule as listings show it: `knn:16`, `radius:0.5,max_neighbours:32`,
/// with `,loop` for PyG's `loop=True` and `,cosine` for that metric.
pub(crate) fn rule_text(rule: &NeighbourRule, options: &Options) -> String {
    let mut text = match *rule {
        NeighbourRule::Knn { k } => format!("knn:{k}"),
        NeighbourRule::Radius { r, max_neighbours } => match max_neighbours {
            Some(m) => format!("radius:{r},max_neighbours:{m}"),
            None => format!("radius:{r}"),
        },
        NeighbourRule::Hops {
            hops,
            max_neighbours,
        } => match max_neighbours {
            Some(m) => format!("hops:{hops},max_neighbours:{m}"),
            None => format!("hops:{hops}"),
        },
    };
    if options.self_loops {
        text.push_str(",loop");
    }
    if options.metric != Metric::Euclidean {
        text.push(',');
        text.push_str(options.metric.name());
    }
    text
}

/// Edges per `FetchEdges` chunk: 16 bytes each, at most [`distgat_proto::MAX_CHUNK_BYTES`].
pub(crate) const EDGES_PER_CHUNK: usize = distgat_proto::MAX_CHUNK_BYTES / 16;

/// One `FetchEdges` chunk: edges `offset..offset + sources.len()` of `total`.
pub(crate) fn edge_chunk(
    total: u64,
    offset: u64,
    sources: &[u64],
    targets: &[u64],
) -> v1::EdgeChunk {
    v1::EdgeChunk {
        total_edges: total,
        offset,
        sources: sources.iter().map(|&v| v as i64).collect(),
        targets: targets.iter().map(|&v| v as i64).collect(),
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

/// A neighbourhood spec from the wire: the rule and its options (sequential execution; the
/// caller picks its own). Errors name the field.
pub(crate) fn neighbour_spec(
    field: &str,
    spec: Option<&v1::NeighbourSpec>,
) -> Result<(NeighbourRule, Options)> {
    let spec = spec.ok_or_else(|| RuntimeError::InvalidArgument(format!("{field} is missing")))?;
    let metric = match spec.metric.as_str() {
        "" => Metric::Euclidean,
        name => Metric::from_name(name).ok_or_else(|| {
            RuntimeError::InvalidArgument(format!(
                "{field}.metric '{name}' is not one of {}",
                Metric::NAMES
            ))
        })?,
    };
    let cap = |m: Option<u64>| m.map(|m| m as usize);
    let rule = match (spec.knn, spec.radius) {
        (Some(k), None) => {
            if spec.max_neighbours.is_some() {
                return Err(RuntimeError::InvalidArgument(format!(
                    "{field}.max_neighbours applies to radius, not knn"
                )));
            }
            NeighbourRule::Knn { k: k as usize }
        }
        (None, Some(r)) => NeighbourRule::Radius {
            r,
            max_neighbours: cap(spec.max_neighbours),
        },
        _ => {
            return Err(RuntimeError::InvalidArgument(format!(
                "{field}: give exactly one of knn and radius"
            )))
        }
    };
    let options = Options {
        metric,
        self_loops: spec.self_loops,
        execution: Execution::Sequential,
        search: Search::Auto,
    };
    Ok((rule, options))
}

/// The wire form of a knn or radius rule (hops has none: it is refused before).
pub(crate) fn neighbour_spec_of(rule: &NeighbourRule, options: &Options) -> v1::NeighbourSpec {
    let (knn, radius, max_neighbours) = match *rule {
        NeighbourRule::Knn { k } => (Some(k as u64), None, None),
        NeighbourRule::Radius { r, max_neighbours } => {
            (None, Some(r), max_neighbours.map(|m| m as u64))
        }
        NeighbourRule::Hops { max_neighbours, .. } => {
            (None, None, max_neighbours.map(|m| m as u64))
        }
    };
    v1::NeighbourSpec {
        knn,
        radius,
        max_neighbours,
        self_loops: options.self_loops,
        metric: options.metric.name().to_string(),
    }
}

fn f32s_to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian f32 bytes -> values; `field` names the bytes in the error.
pub(crate) fn bytes_to_f32s(bytes: &[u8], expected: usize, field: &str) -> Result<Vec<f32>> {
    if bytes.len() != expected * 4 {
        return Err(RuntimeError::InvalidArgument(format!(
            "{field}: {} bytes, expected {} ({expected} f32)",
            bytes.len(),
            expected * 4
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub(crate) fn part_box(part: u32, b: &BBox) -> v1::PartBox {
    v1::PartBox {
        part,
        lo: f32s_to_bytes(&b.lo),
        hi: f32s_to_bytes(&b.hi),
    }
}

/// A box from the wire, `dim` coordinates per corner, `lo <= hi`, finite.
pub(crate) fn bbox(lo: &[u8], hi: &[u8], dim: usize, field: &str) -> Result<BBox> {
    let lo = bytes_to_f32s(lo, dim, &format!("{field}.lo"))?;
    let hi = bytes_to_f32s(hi, dim, &format!("{field}.hi"))?;
    if lo
        .iter()
        .zip(&hi)
        .any(|(l, h)| !(l.is_finite() && h.is_finite() && l <= h))
    {
        return Err(RuntimeError::InvalidArgument(format!(
            "{field}: corners must be finite with lo <= hi on every axis"
        )));
    }
    Ok(BBox { lo, hi })
}

pub(crate) fn fetch_points_request(
    build_id: &str,
    part: u32,
    request: &ReachRequest,
) -> v1::FetchPointsRequest {
    v1::FetchPointsRequest {
        build_id: build_id.to_string(),
        part,
        lo: f32s_to_bytes(&request.centres.lo),
        hi: f32s_to_bytes(&request.centres.hi),
        reach: request.reach,
    }
}

pub(crate) fn reach_request(req: &v1::FetchPointsRequest, dim: usize) -> Result<ReachRequest> {
    if req.reach.is_nan() {
        return Err(RuntimeError::InvalidArgument("reach is NaN".into()));
    }
    Ok(ReachRequest {
        centres: bbox(&req.lo, &req.hi, dim, "FetchPointsRequest")?,
        reach: req.reach,
    })
}

/// Rows `rows` of `points` (global ids `ids[row]`) as point chunks of at most about
/// `max_bytes` each.
pub(crate) fn point_chunks(
    points: &Points,
    ids: &[u32],
    rows: &[usize],
    max_bytes: usize,
) -> Vec<v1::PointChunk> {
    let per = (max_bytes / (4 + 4 * points.dim())).max(1);
    rows.chunks(per)
        .map(|block| v1::PointChunk {
            ids: block.iter().map(|&r| ids[r]).collect(),
            coords: block
                .iter()
                .flat_map(|&r| points.row(r).iter().flat_map(|v| v.to_le_bytes()))
                .collect(),
        })
        .collect()
}

/// A chunk's ids and coordinates, appended to `ids` / `coords` (`dim` per point); ids must
/// be below `total`.
pub(crate) fn take_point_chunk(
    chunk: v1::PointChunk,
    dim: usize,
    total: u64,
    ids: &mut Vec<u32>,
    coords: &mut Vec<f32>,
) -> Result<()> {
    let values = bytes_to_f32s(&chunk.coords, chunk.ids.len() * dim, "PointChunk.coords")?;
    if let Some(&bad) = chunk.ids.iter().find(|&&i| i as u64 >= total) {
        return Err(RuntimeError::InvalidArgument(format!(
            "PointChunk.ids: id {bad} is not below the point count {total}"
        )));
    }
    ids.extend_from_slice(&chunk.ids);
    coords.extend(values);
    Ok(())
}
