//! `BuildNeighbours`: a kNN or radius neighbourhood built distributed over the live
//! workers, written as the same int64 `[2, E]` file `distgat neighbours` writes.
//!
//! The coordinator reads the points, checks the rule against them exactly as the
//! single-process build does, splits them by recursive coordinate bisection
//! ([`rcb`]), and streams each worker its part's points with every part's box and its
//! peers' addresses. The workers fetch boundary points from each other
//! (`HaloExchange.FetchPoints`) and stream back their centres' edges; the coordinator
//! places them by centre id and writes the file atomically. Every centre's edges come
//! from exactly one part, so the file does not depend on the part count.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use distgat_neighbours::distributed::{directions, rcb, BBox};
use distgat_neighbours::{check_rule, NeighbourRule, Neighbours, Points};
use distgat_partition::{held_lists, held_lists_with_halos, HeldLists};
use distgat_proto::v1::build_chunk::Body as ChunkBody;
use distgat_proto::v1::build_output::Body as OutputBody;
use distgat_proto::v1::worker_client::WorkerClient;
use distgat_proto::v1::{
    BuildChunk, BuildHeader, BuildNeighboursRequest, BuildOutput, BuildStats, CentreEdges, Peer,
};
use distgat_proto::MAX_CHUNK_BYTES;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::state::{KeptBuild, Shortfall, State, MAX_KEPT_BUILDS};
use crate::catalog::lock;
use crate::convert;
use crate::error::{transport, Result, RuntimeError};

/// What a distributed build did, per part and in total (the `summary_json` of
/// `BuildNeighboursResponse`).
#[derive(Debug, Serialize)]
pub struct BuildSummary {
    pub build_id: String,
    pub nodes: u64,
    pub edges: u64,
    pub seconds: f64,
    /// Reading the points and splitting them (and writing the split), seconds.
    pub split_seconds: f64,
    /// Whether the workers kept their parts for a job (`keep_parts`), and the seconds
    /// spent sending each its halo and send lists and waiting for its plan.
    pub kept: bool,
    pub keep_seconds: f64,
    pub parts: Vec<PartBuildSummary>,
}

/// One part of a build. Point bytes count 4 for the id plus 4 per coordinate.
#[derive(Debug, Serialize)]
pub struct PartBuildSummary {
    pub part: u32,
    pub worker: String,
    pub address: String,
    pub points: u64,
    pub boundary_centres: u64,
    /// Points received from peers, and their bytes.
    pub points_fetched: u64,
    pub bytes_fetched: u64,
    /// Of the fetched points, those that are the neighbour of one of the part's centres.
    pub points_needed: u64,
    pub bytes_needed: u64,
    pub search_ms: f64,
    pub fetch_ms: f64,
}

/// Rules the distributed build runs: knn and radius (either metric); hops is refused.
pub(crate) fn check_distributable(field: &str, rule: &NeighbourRule) -> Result<()> {
    if matches!(rule, NeighbourRule::Hops { .. }) {
        return Err(RuntimeError::InvalidArgument(format!(
            "{field}: the hops rule is not built distributed"
        )));
    }
    Ok(())
}

/// Runs a build; the caller holds the job lock.
pub(crate) async fn build_neighbours(
    state: &State,
    build_id: &str,
    req: BuildNeighboursRequest,
) -> Result<BuildSummary> {
    let started = Instant::now();
    let (rule, options) = convert::neighbour_spec("spec", req.spec.as_ref())?;
    check_distributable("spec", &rule)?;
    if req.points.is_empty() {
        return Err(RuntimeError::InvalidArgument("points is empty".into()));
    }
    if req.out.is_empty() && !req.keep_parts {
        return Err(RuntimeError::InvalidArgument(
            "out is empty (it may be only with keep_parts)".into(),
        ));
    }
    let out = (!req.out.is_empty()).then(|| PathBuf::from(&req.out));
    let points_path = PathBuf::from(&req.points);
    let points = tokio::task::spawn_blocking(move || -> Result<Points> {
        let points = Points::read_npy(&points_path)?;
        check_rule(&rule, points.len(), &options)?;
        Ok(points)
    })
    .await
    .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))??;
    let n = points.len();

    // Enough live workers?
    let parts_asked = req.parts as usize;
    let assigned = state
        .live_workers_for(
            |live| {
                if parts_asked == 0 {
                    live.max(1)
                } else {
                    parts_asked
                }
            },
            || false,
        )
        .await
        .map_err(|shortfall| match shortfall {
            Shortfall::TooFew { live, want } => RuntimeError::FailedPrecondition(format!(
                "the build asks for {want} parts but {live} live workers are registered"
            )),
            Shortfall::Cancelled => RuntimeError::Cancelled("the build was cancelled".into()),
        })?;
    let parts = assigned.len();
    if parts > n {
        return Err(RuntimeError::InvalidArgument(format!(
            "parts: {parts} parts for {n} points; every part needs at least one point"
        )));
    }
    let points = Arc::new(points);
    let (split, boxes) = {
        let points = points.clone();
        tokio::task::spawn_blocking(move || {
            // Split and boxes in the metric's box space (cosine: the directions).
            let dirs = directions(&points, options.metric)?;
            let space = dirs.as_ref().unwrap_or(&points);
            let split = rcb(space, parts);
            let boxes: Vec<BBox> = split
                .iter()
                .map(|ids| {
                    BBox::of(space, ids.iter().map(|&i| i as usize)).expect("non-empty part")
                })
                .collect();
            Ok::<_, RuntimeError>((split, boxes))
        })
        .await
        .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))??
    };
    let mut part_of = vec![0u32; n];
    for (k, ids) in split.iter().enumerate() {
        ids.iter().for_each(|&i| part_of[i as usize] = k as u32);
    }
    let part_of = Arc::new(part_of);
    // Kept parts without an edges file: the workers send counts and halos, not edges.
    let counts_only = req.keep_parts && out.is_none();
    if !req.assignment_out.is_empty() {
        let path = PathBuf::from(&req.assignment_out);
        let assignment: Vec<i64> = part_of.iter().map(|&p| p as i64).collect();
        tokio::task::spawn_blocking(move || {
            distgat_graph::write_npy(&path, &[assignment.len() as u64], &assignment)
        })
        .await
        .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))??;
    }
    let split_seconds = started.elapsed().as_secs_f64();
    let boxes: Vec<_> = boxes
        .iter()
        .enumerate()
        .map(|(k, b)| convert::part_box(k as u32, b))
        .collect();
    let spec = convert::neighbour_spec_of(&rule, &options);

    // One stream per part: header and points out, edges and statistics back.
    let mut running = Vec::with_capacity(parts);
    for (k, ids) in split.into_iter().enumerate() {
        let header = BuildHeader {
            build_id: build_id.to_string(),
            part: k as u32,
            spec: Some(spec.clone()),
            total_points: n as u64,
            dim: points.dim() as u32,
            own_points: ids.len() as u64,
            boxes: boxes.clone(),
            peers: assigned
                .iter()
                .enumerate()
                .filter(|&(q, _)| q != k)
                .map(|(q, (_, address))| Peer {
                    part: q as u32,
                    address: address.clone(),
                })
                .collect(),
            threads: req.threads_per_worker,
            keep: req.keep_parts,
            counts_only,
        };
        let address = assigned[k].1.clone();
        let (tx, rx) = mpsc::channel::<BuildChunk>(4);
        let feeder = tokio::spawn(feed(tx, header, points.clone(), ids));
        let client = WorkerClient::new(state.dialer.endpoint(&address)?.connect_lazy())
            .max_encoding_message_size(2 * MAX_CHUNK_BYTES)
            .max_decoding_message_size(2 * MAX_CHUNK_BYTES);
        running.push((
            feeder,
            tokio::spawn(collect(
                client,
                rx,
                k as u32,
                address,
                part_of.clone(),
                counts_only,
            )),
        ));
    }
    // Every part's answer first; only then close the request streams (a worker keeps its
    // points for its peers until then). On a failure, every stream is closed at once, so
    // the other workers stop waiting for their peers and forget their points.
    let (feeders, collecting): (Vec<_>, Vec<_>) = running.into_iter().unzip();
    let mut results = Vec::with_capacity(parts);
    for c in collecting {
        let outcome = c
            .await
            .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))
            .and_then(|r| r);
        match outcome {
            Ok(r) => results.push(r),
            Err(e) => {
                feeders.iter().for_each(|f| f.abort());
                return Err(e);
            }
        }
    }
    let mut senders = Vec::with_capacity(parts);
    for f in feeders {
        match f.await {
            Ok(Ok(tx)) => senders.push(tx),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(RuntimeError::Io(std::io::Error::other(e))),
        }
    }

    let summaries: Vec<PartBuildSummary> = results
        .iter()
        .map(|r| {
            let s = &r.stats;
            PartBuildSummary {
                part: r.part,
                worker: assigned[r.part as usize].0.clone(),
                address: r.address.clone(),
                points: s.points,
                boundary_centres: s.boundary_centres,
                points_fetched: s.points_fetched,
                bytes_fetched: s.bytes_fetched,
                points_needed: s.points_needed,
                bytes_needed: s.bytes_needed,
                search_ms: s.search_ms,
                fetch_ms: s.fetch_ms,
            }
        })
        .collect();
    let mut streams: Vec<_> = results.iter_mut().map(|r| r.rest.take()).collect();
    let keep = req.keep_parts;
    let mut owned = keep.then(|| {
        let mut owned: Vec<Vec<u64>> = vec![Vec::new(); parts];
        for (v, &p) in part_of.iter().enumerate() {
            owned[p as usize].push(v as u64);
        }
        owned
    });
    let (edges, held) = tokio::task::spawn_blocking(move || -> Result<_> {
        if counts_only {
            let offsets = offsets_of(n, &results)?;
            let halos = results
                .iter_mut()
                .map(|r| std::mem::take(&mut r.halo))
                .collect();
            let held = held_lists_with_halos(halos, &offsets, &part_of, parts);
            return Ok((offsets[n] as usize, Some(held)));
        }
        let nb = assemble(n, &results)?;
        drop(results);
        if let Some(out) = &out {
            nb.write_npy(out)?;
        }
        let held = keep.then(|| held_lists(&nb.offsets, &nb.sources, &part_of, parts));
        Ok((nb.num_edges(), held))
    })
    .await
    .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))??;
    let t = Instant::now();
    if let Some(held) = held {
        // Each part's lists, then its PartKept; all parts at once.
        let mut waiting = Vec::with_capacity(parts);
        for (k, ((tx, lists), stream)) in senders
            .drain(..)
            .zip(held)
            .zip(streams.iter_mut().map(Option::take))
            .enumerate()
        {
            let address = assigned[k].1.clone();
            waiting.push(tokio::spawn(keep_part(
                tx, lists, stream, k as u32, address,
            )));
        }
        for w in waiting {
            w.await
                .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))??;
        }
        let mut kept = lock(&state.kept_builds);
        if kept.len() >= MAX_KEPT_BUILDS {
            kept.remove(0);
        }
        kept.push((
            build_id.to_string(),
            Arc::new(KeptBuild {
                nodes: n,
                workers: assigned.clone(),
                owned: Arc::new(owned.take().expect("computed with keep_parts")),
            }),
        ));
    }
    // Dropping the senders closes the streams (the workers forget their points).
    drop(senders);
    drop(streams);
    Ok(BuildSummary {
        build_id: build_id.to_string(),
        nodes: n as u64,
        edges: edges as u64,
        seconds: started.elapsed().as_secs_f64(),
        split_seconds,
        kept: keep,
        keep_seconds: if keep { t.elapsed().as_secs_f64() } else { 0.0 },
        parts: summaries,
    })
}

/// Sends the header, then the part's points in chunks; returns the sender, to be dropped
/// when every part has answered.
async fn feed(
    tx: mpsc::Sender<BuildChunk>,
    header: BuildHeader,
    points: Arc<Points>,
    ids: Vec<u32>,
) -> Result<mpsc::Sender<BuildChunk>> {
    let closed = || RuntimeError::Cancelled("a worker closed its build stream".into());
    tx.send(BuildChunk {
        body: Some(ChunkBody::Header(header)),
    })
    .await
    .map_err(|_| closed())?;
    let per = (MAX_CHUNK_BYTES / (4 + 4 * points.dim())).max(1);
    for block in ids.chunks(per) {
        let chunk = distgat_proto::v1::PointChunk {
            ids: block.to_vec(),
            coords: block
                .iter()
                .flat_map(|&i| points.row(i as usize).iter().flat_map(|v| v.to_le_bytes()))
                .collect(),
        };
        tx.send(BuildChunk {
            body: Some(ChunkBody::Points(chunk)),
        })
        .await
        .map_err(|_| closed())?;
    }
    Ok(tx)
}

/// What one part sent back.
struct PartResult {
    edges: Vec<CentreEdges>,
    /// `counts_only`: the part's halo as (owner, id), sorted and distinct.
    halo: Vec<(u32, u64)>,
    stats: BuildStats,
    part: u32,
    address: String,
    /// The answer stream after the statistics: a part that keeps its plan answers
    /// PartKept there once it has its lists; otherwise it just ends.
    rest: Option<tonic::Streaming<BuildOutput>>,
}

/// Reads a part's answer up to its statistics. `counts_only`: the CentreEdges carry no
/// sources, and the part's halo comes as HeldHalo, each id checked against `part_of`.
async fn collect(
    mut client: WorkerClient<tonic::transport::Channel>,
    rx: mpsc::Receiver<BuildChunk>,
    part: u32,
    address: String,
    part_of: Arc<Vec<u32>>,
    counts_only: bool,
) -> Result<PartResult> {
    let n = part_of.len() as u64;
    let context = format!("neighbourhood build, part {part} at {address}");
    let mut stream = client
        .build_neighbours(ReceiverStream::new(rx))
        .await
        .map_err(transport(context.clone()))?
        .into_inner();
    let mut edges = Vec::new();
    let mut halo = Vec::new();
    let mut stats = None;
    while let Some(out) = stream.message().await.map_err(transport(context.clone()))? {
        match out.body {
            Some(OutputBody::Edges(e)) => {
                let total: u64 = e.counts.iter().map(|&c| c as u64).sum();
                let sources = if counts_only { 0 } else { total };
                if e.centres.len() != e.counts.len() || sources != e.sources.len() as u64 {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "{context}: CentreEdges counts do not match its centres and sources"
                    )));
                }
                if let Some(bad) = e.centres.iter().chain(&e.sources).find(|&&i| i as u64 >= n) {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "{context}: node id {bad} is not below {n}"
                    )));
                }
                edges.push(e);
            }
            Some(OutputBody::Halo(h)) if counts_only => {
                if h.ids.len() != h.owners.len() {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "{context}: HeldHalo ids and owners differ in length"
                    )));
                }
                for (&j, &q) in h.ids.iter().zip(&h.owners) {
                    if part_of.get(j as usize) != Some(&q) || q == part {
                        return Err(RuntimeError::InvalidArgument(format!(
                            "{context}: HeldHalo names node {j} as part {q}'s, which it is not \
                             (or it is this part's own)"
                        )));
                    }
                    halo.push((q, j as u64));
                }
            }
            Some(OutputBody::Halo(_)) => {
                return Err(RuntimeError::InvalidArgument(format!(
                    "{context}: HeldHalo, but the build did not ask for counts only"
                )))
            }
            Some(OutputBody::Stats(s)) => {
                stats = Some(s);
                break;
            }
            Some(OutputBody::Kept(_)) => {
                return Err(RuntimeError::InvalidArgument(format!(
                    "{context}: PartKept before the statistics"
                )))
            }
            None => {}
        }
    }
    let stats = stats.ok_or_else(|| RuntimeError::WorkerFailed {
        worker: address.clone(),
        part,
        detail: "the build stream ended without statistics".into(),
    })?;
    halo.sort_unstable();
    halo.dedup();
    Ok(PartResult {
        edges,
        halo,
        stats,
        part,
        address,
        rest: Some(stream),
    })
}

/// Sends part `part` its held lists and waits for its PartKept (the worker has built and
/// stored its plan); the stream must then end.
async fn keep_part(
    tx: mpsc::Sender<BuildChunk>,
    lists: HeldLists,
    stream: Option<tonic::Streaming<BuildOutput>>,
    part: u32,
    address: String,
) -> Result<()> {
    let context = format!("neighbourhood build, part {part} at {address}, keeping its part");
    let mut stream = stream.ok_or_else(|| {
        RuntimeError::Io(std::io::Error::other(format!(
            "{context}: no answer stream"
        )))
    })?;
    for chunk in convert::held_chunks(&lists) {
        tx.send(BuildChunk {
            body: Some(ChunkBody::Held(chunk)),
        })
        .await
        .map_err(|_| RuntimeError::WorkerFailed {
            worker: address.clone(),
            part,
            detail: format!("{context}: the worker closed its build stream"),
        })?;
    }
    while let Some(out) = stream.message().await.map_err(transport(context.clone()))? {
        if let Some(OutputBody::Kept(_)) = out.body {
            return Ok(());
        }
    }
    Err(RuntimeError::WorkerFailed {
        worker: address,
        part,
        detail: format!("{context}: the stream ended without PartKept"),
    })
}

/// Places every centre's edges at its id. Each of the `n` centres comes from exactly one
/// part; a part may split a large neighbourhood over consecutive entries of the same
/// centre, which are concatenated in order.
fn assemble(n: usize, results: &[PartResult]) -> Result<Neighbours> {
    let offsets = offsets_of(n, results)?;
    let mut sources = vec![0u32; *offsets.last().expect("non-empty") as usize];
    let mut filled = vec![0u64; n];
    for e in results.iter().flat_map(|r| &r.edges) {
        let mut at = 0usize;
        for (&c, &k) in e.centres.iter().zip(&e.counts) {
            let start = (offsets[c as usize] + filled[c as usize]) as usize;
            sources[start..start + k as usize].copy_from_slice(&e.sources[at..at + k as usize]);
            filled[c as usize] += k as u64;
            at += k as usize;
        }
    }
    Ok(Neighbours { offsets, sources })
}

/// Each centre's first edge in the target-sorted edge list (`[n + 1]`), from the parts'
/// counts; checks that each of the `n` centres comes from exactly one part.
fn offsets_of(n: usize, results: &[PartResult]) -> Result<Vec<u64>> {
    const NONE: u32 = u32::MAX;
    let mut owner = vec![NONE; n];
    let mut count = vec![0u64; n];
    for r in results {
        let mut last = None;
        for e in &r.edges {
            for (&c, &k) in e.centres.iter().zip(&e.counts) {
                let o = &mut owner[c as usize];
                if *o == NONE {
                    *o = r.part;
                } else if *o != r.part || last != Some(c) {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "centre {c} was sent twice (parts {} and {})",
                        *o, r.part
                    )));
                }
                count[c as usize] += k as u64;
                last = Some(c);
            }
        }
    }
    if let Some(missing) = owner.iter().position(|&o| o == NONE) {
        return Err(RuntimeError::FailedPrecondition(format!(
            "the edges of centre {missing} never arrived"
        )));
    }
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0u64);
    for &c in &count {
        offsets.push(offsets.last().expect("non-empty") + c);
    }
    Ok(offsets)
}
