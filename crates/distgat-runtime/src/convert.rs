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

/// Elements (ids, counts, bases) per [`v1::HeldPart`] chunk: at most 10 bytes each as
/// varints, so a chunk stays within `MAX_CHUNK_BYTES`.
const HELD_PER_CHUNK: usize = distgat_proto::MAX_CHUNK_BYTES / 10;

/// A part's [`HeldLists`](distgat_partition::HeldLists) as [`v1::HeldPart`] chunks (halo,
/// then send lists, then edge bases; the last chunk says so).
pub(crate) fn held_chunks(l: &distgat_partition::HeldLists) -> Vec<v1::HeldPart> {
    let mut chunks = Vec::new();
    for (halo, owner) in l
        .halo
        .chunks(HELD_PER_CHUNK)
        .zip(l.halo_owner.chunks(HELD_PER_CHUNK))
    {
        chunks.push(v1::HeldPart {
            halo: halo.to_vec(),
            halo_owner: owner.to_vec(),
            ..Default::default()
        });
    }
    chunks.push(v1::HeldPart {
        send_peer: l.send.iter().map(|(q, _)| *q).collect(),
        send_count: l.send.iter().map(|(_, rows)| rows.len() as u64).collect(),
        ..Default::default()
    });
    let rows: Vec<u32> = l.send.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    for block in rows.chunks(HELD_PER_CHUNK) {
        chunks.push(v1::HeldPart {
            send_rows: block.to_vec(),
            ..Default::default()
        });
    }
    for block in l.edge_base.chunks(HELD_PER_CHUNK) {
        chunks.push(v1::HeldPart {
            edge_base: block.to_vec(),
            ..Default::default()
        });
    }
    chunks.push(v1::HeldPart {
        last: true,
        ..Default::default()
    });
    chunks
}

/// [`v1::HeldPart`] chunks as they arrive, for a part of `owned` rows out of `total`
/// nodes and `parts` parts; [`HeldAcc::finish`] checks the whole.
#[derive(Default)]
pub(crate) struct HeldAcc {
    lists: distgat_partition::HeldLists,
    send_peer: Vec<u32>,
    send_count: Vec<u64>,
    send_rows: Vec<u32>,
}

impl HeldAcc {
    /// Appends a chunk; refuses lists longer than a part can need (so a bad stream cannot
    /// grow them without bound). Returns whether it was the last chunk.
    pub(crate) fn take(
        &mut self,
        c: v1::HeldPart,
        owned: usize,
        total: u64,
        parts: usize,
    ) -> Result<bool> {
        let bad = |what: &str| RuntimeError::InvalidArgument(format!("HeldPart: {what}"));
        if c.halo.len() != c.halo_owner.len() || c.send_peer.len() != c.send_count.len() {
            return Err(bad(
                "halo and halo_owner (or send_peer and send_count) differ in length",
            ));
        }
        if let Some(&j) = c.halo.iter().find(|&&j| j >= total) {
            return Err(bad(&format!("halo node {j} is not below {total}")));
        }
        if let Some(&o) = c
            .halo_owner
            .iter()
            .chain(&c.send_peer)
            .find(|&&o| o as usize >= parts)
        {
            return Err(bad(&format!("part {o} is not below {parts}")));
        }
        self.lists.halo.extend(c.halo);
        self.lists.halo_owner.extend(c.halo_owner);
        self.send_peer.extend(c.send_peer);
        self.send_count.extend(c.send_count);
        self.send_rows.extend(c.send_rows);
        self.lists.edge_base.extend(c.edge_base);
        if self.lists.halo.len() as u64 > total
            || self.lists.edge_base.len() > owned
            || self.send_peer.len() > parts
            || self.send_rows.len() > owned.saturating_mul(parts)
        {
            return Err(bad("more entries than this part can need"));
        }
        Ok(c.last)
    }

    pub(crate) fn finish(self) -> Result<distgat_partition::HeldLists> {
        let mut lists = self.lists;
        let total: u64 = self.send_count.iter().sum();
        if total != self.send_rows.len() as u64 {
            return Err(RuntimeError::InvalidArgument(format!(
                "HeldPart: send counts add up to {total}, {} send rows came",
                self.send_rows.len()
            )));
        }
        let mut at = 0usize;
        for (q, k) in self.send_peer.into_iter().zip(self.send_count) {
            lists
                .send
                .push((q, self.send_rows[at..at + k as usize].to_vec()));
            at += k as usize;
        }
        Ok(lists)
    }
}

#[cfg(test)]
mod held_tests {
    use super::{held_chunks, HeldAcc};
    use distgat_partition::HeldLists;

    #[test]
    fn held_lists_round_trip_through_chunks() {
        let lists = HeldLists {
            halo: (0..300_000).collect(),
            halo_owner: (0..300_000).map(|i| (i % 3) as u32).collect(),
            send: vec![(0, vec![1, 2, 3]), (2, (0..250_000).collect())],
            edge_base: (0..400_000).map(|i| 16 * i).collect(),
        };
        let chunks = held_chunks(&lists);
        assert!(chunks.len() > 5);
        let mut acc = HeldAcc::default();
        let mut last = false;
        for c in chunks {
            assert!(!last, "nothing after the last chunk");
            last = acc.take(c, 400_000, 1_000_000, 3).unwrap();
        }
        assert!(last);
        assert_eq!(acc.finish().unwrap(), lists);
    }

    #[test]
    fn bad_held_chunks_are_refused() {
        let mut acc = HeldAcc::default();
        let c = distgat_proto::v1::HeldPart {
            halo: vec![5],
            halo_owner: vec![1],
            ..Default::default()
        };
        let e = acc.take(c, 10, 5, 2).unwrap_err();
        assert!(e.to_string().contains("halo node 5 is not below 5"), "{e}");
        let c = distgat_proto::v1::HeldPart {
            edge_base: vec![0; 11],
            ..Default::default()
        };
        assert!(acc.take(c, 10, 100, 2).is_err());
    }
}
