//! One part of a distributed neighbourhood build (`Worker.BuildNeighbours`) and the
//! peers' side of it (`HaloExchange.FetchPoints`).
//!
//! The part receives its points, searches them ([`build_local`], pass 1: each centre's
//! reach), asks every peer whose box some centre can reach for the points within reach
//! ([`reach_request`]), then searches again, for those boundary centres only, over its own
//! points plus the fetched ones (pass 2). Interior centres keep their pass-1 edges, which
//! are already exact: nothing outside the part is within their reach. The arithmetic runs
//! on a rayon pool inside `spawn_blocking`, never on a tokio thread.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distgat_neighbours::distributed::{
    box_reach, build_local, directions, reach_request, within_reach, BBox, ReachRequest,
};
use distgat_neighbours::{Execution, Points};
use distgat_partition::PartPlan;
use distgat_proto::v1::build_chunk::Body as ChunkBody;
use distgat_proto::v1::build_output::Body as OutputBody;
use distgat_proto::v1::halo_exchange_client::HaloExchangeClient;
use distgat_proto::v1::{
    BuildChunk, BuildHeader, BuildOutput, BuildStats, CentreEdges, FetchPointsRequest, HeldHalo,
    PartKept, PointChunk,
};
use distgat_proto::MAX_CHUNK_BYTES;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use crate::convert;
use crate::error::{transport, Result, RuntimeError};
use crate::net::Dialer;

/// A part's own points, kept for its peers' fetches while its build runs.
pub(crate) struct OwnPoints {
    pub points: Points,
    /// The points in the metric's box space (cosine: their directions); `None`: the
    /// points themselves (euclidean).
    pub space: Option<Points>,
    /// Global id of each row, ascending.
    pub ids: Vec<u32>,
}

type Slot = Arc<watch::Sender<Option<Arc<OwnPoints>>>>;

/// A part kept after its build (`BuildHeader.keep`) for a job on it: its plan, as a shard
/// would give it, and N.
pub(crate) struct KeptPart {
    pub plan: PartPlan,
    pub num_nodes: usize,
}

/// Parts a worker keeps at most; a newer build's part evicts the oldest.
const MAX_KEPT: usize = 2;

/// The points of the builds running here, by build id (a fetch may arrive before the
/// points do and then waits for them), and the parts kept for jobs.
#[derive(Default)]
pub(crate) struct Builds {
    slots: Mutex<HashMap<String, Slot>>,
    kept: Mutex<VecDeque<(String, KeptPart)>>,
}

/// How long a peer's fetch waits for this part's points to arrive.
const FETCH_WAIT: Duration = Duration::from_secs(120);

impl Builds {
    fn slot(&self, id: &str) -> Slot {
        let mut map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_string())
            .or_insert_with(|| Arc::new(watch::channel(None).0))
            .clone()
    }

    fn forget(&self, id: &str) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn keep(&self, id: &str, part: KeptPart) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|(k, _)| k != id);
        if kept.len() >= MAX_KEPT {
            kept.pop_front();
        }
        kept.push_back((id.to_string(), part));
    }

    /// The part kept from build `id`, taken (a job uses it once).
    pub(crate) fn take_kept(&self, id: &str) -> Option<KeptPart> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let i = kept.iter().position(|(k, _)| k == id)?;
        kept.remove(i).map(|(_, p)| p)
    }

    /// The points of build `id`, waiting (up to [`FETCH_WAIT`]) until they arrived.
    pub(crate) async fn points(&self, id: &str) -> Result<Arc<OwnPoints>> {
        let mut rx = self.slot(id).subscribe();
        let waited = tokio::time::timeout(FETCH_WAIT, rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(points)) => Ok(points.clone().expect("waited for Some")),
            Ok(Err(_)) => Err(RuntimeError::NotFound(format!(
                "build {id} ended on this worker before its points were fetched"
            ))),
            Err(_) => {
                self.forget(id);
                Err(RuntimeError::NotFound(format!(
                    "build {id}: this worker's points did not arrive within {} s",
                    FETCH_WAIT.as_secs()
                )))
            }
        }
    }
}

/// `FetchPoints`: this part's points within the asker's reach, in chunks.
pub(crate) async fn fetch_points(
    builds: &Builds,
    req: FetchPointsRequest,
) -> Result<Vec<PointChunk>> {
    let own = builds.points(&req.build_id).await?;
    let request = convert::reach_request(&req, own.points.dim())?;
    tokio::task::spawn_blocking(move || {
        let rows = within_reach(own.space.as_ref().unwrap_or(&own.points), &request);
        convert::point_chunks(&own.points, &own.ids, &rows, MAX_CHUNK_BYTES)
    })
    .await
    .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))
}

/// Runs the part: reads its points from `inbound`, answers on `tx`; keeps the points for
/// peers until the coordinator closes `inbound`, then forgets them.
pub(crate) async fn serve_build(
    builds: Arc<Builds>,
    dialer: Dialer,
    header: BuildHeader,
    mut inbound: Streaming<BuildChunk>,
    tx: mpsc::Sender<Result<BuildOutput, Status>>,
) {
    let id = header.build_id.clone();
    // Held for the whole build: peers' fetches wait on it.
    let slot = builds.slot(&id);
    let result = run_part(&builds, &slot, &dialer, header, &mut inbound, &tx).await;
    if let Err(e) = result {
        tracing::warn!(build = %id, "neighbourhood build failed: {e}");
        // Peers waiting for these points stop waiting (their watch closes).
        drop(slot);
        builds.forget(&id);
        let _ = tx.send(Err(e.into())).await;
        return;
    }
    drop(tx);
    while let Ok(Some(_)) = inbound.message().await {}
    builds.forget(&id);
}

async fn run_part(
    builds: &Builds,
    slot: &Slot,
    dialer: &Dialer,
    header: BuildHeader,
    inbound: &mut Streaming<BuildChunk>,
    tx: &mpsc::Sender<Result<BuildOutput, Status>>,
) -> Result<()> {
    let (rule, mut options) = convert::neighbour_spec("spec", header.spec.as_ref())?;
    let dim = header.dim as usize;
    let total = header.total_points;
    let part = header.part;
    let parts = header.boxes.len();
    if dim == 0 || part as usize >= parts {
        return Err(RuntimeError::InvalidArgument(format!(
            "BuildHeader: dim {dim}, part {part} of {parts} boxes"
        )));
    }
    let mut boxes = Vec::with_capacity(parts);
    for (k, b) in header.boxes.iter().enumerate() {
        if b.part as usize != k {
            return Err(RuntimeError::InvalidArgument(format!(
                "BuildHeader.boxes[{k}] is for part {}",
                b.part
            )));
        }
        boxes.push(convert::bbox(&b.lo, &b.hi, dim, "BuildHeader.boxes")?);
    }
    let peers: HashMap<u32, String> = header
        .peers
        .iter()
        .map(|p| (p.part, p.address.clone()))
        .collect();

    // The part's points.
    let t = Instant::now();
    if header.own_points > total {
        return Err(RuntimeError::InvalidArgument(format!(
            "BuildHeader: own_points {} exceeds total_points {total}",
            header.own_points
        )));
    }
    let own_n = usize::try_from(header.own_points).map_err(|_| {
        RuntimeError::InvalidArgument(format!("BuildHeader: own_points {}", header.own_points))
    })?;
    // Reserved from the header only up to what one chunk can hold: the vectors grow as
    // points arrive, so a header that claims 10^12 points cannot allocate them up front.
    let reserve = own_n.min(MAX_CHUNK_BYTES / 4);
    let (mut ids, mut coords) = (
        Vec::with_capacity(reserve),
        Vec::with_capacity(reserve.saturating_mul(dim).min(MAX_CHUNK_BYTES / 4)),
    );
    while ids.len() < own_n {
        match inbound
            .message()
            .await
            .map_err(transport("receiving points"))?
        {
            Some(BuildChunk {
                body: Some(ChunkBody::Points(chunk)),
            }) => convert::take_point_chunk(chunk, dim, total, &mut ids, &mut coords)?,
            Some(_) => {
                return Err(RuntimeError::InvalidArgument(
                    "BuildChunk: expected points after the header".into(),
                ))
            }
            None => {
                return Err(RuntimeError::InvalidArgument(format!(
                    "the points stream ended after {} of {own_n} points",
                    ids.len()
                )))
            }
        }
    }
    if ids.len() != own_n || ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(RuntimeError::InvalidArgument(format!(
            "BuildChunk: {} points for {own_n} announced, ids must ascend",
            ids.len()
        )));
    }
    let points = Points::new(own_n, dim, coords, &format!("points of part {part}"))?;
    let metric = options.metric;
    let own = Arc::new(
        blocking(move || -> Result<OwnPoints> {
            Ok(OwnPoints {
                space: directions(&points, metric)?,
                points,
                ids,
            })
        })
        .await??,
    );
    slot.send_replace(Some(own.clone()));
    let receive_ms = t.elapsed().as_secs_f64() * 1e3;

    let threads = super::part::kernel_threads(header.threads);
    options.execution = if threads > 1 {
        Execution::Parallel
    } else {
        Execution::Sequential
    };
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))?,
    );

    // Pass 1: own points only.
    let t = Instant::now();
    let first = {
        let (own, pool) = (own.clone(), pool.clone());
        blocking(move || {
            pool.install(|| {
                build_local(
                    &own.points,
                    &own.ids,
                    own_n,
                    total as usize,
                    &rule,
                    &options,
                )
            })
        })
        .await??
    };
    let mut search_ms = t.elapsed().as_secs_f64() * 1e3;
    // Reaches and own rows in the box space the peers' boxes are in.
    let reach: Vec<f64> = first
        .reach
        .iter()
        .map(|&r| box_reach(r, metric, dim))
        .collect();

    // Fetch from every peer some centre can reach.
    let t = Instant::now();
    let mut fetches = Vec::new();
    for (q, b) in boxes.iter().enumerate() {
        if q == part as usize {
            continue;
        }
        let space = own.space.as_ref().unwrap_or(&own.points);
        let Some(request) = reach_request(space, &reach, b) else {
            continue;
        };
        let address = peers.get(&(q as u32)).cloned().ok_or_else(|| {
            RuntimeError::InvalidArgument(format!("BuildHeader.peers has no address for part {q}"))
        })?;
        let req = convert::fetch_points_request(&header.build_id, part, &request);
        let endpoint = dialer.endpoint(&address)?;
        fetches.push((
            q as u32,
            tokio::spawn(fetch_from(endpoint, address, q, req, dim, total)),
        ));
    }
    // Every fetched point with the part that owns it (the peer that sent it).
    let (mut fetched_ids, mut fetched_coords, mut fetched_owner) =
        (Vec::new(), Vec::new(), Vec::new());
    for (q, f) in fetches {
        let (i, c) = f
            .await
            .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))??;
        fetched_owner.extend(std::iter::repeat_n(q, i.len()));
        fetched_ids.extend(i);
        fetched_coords.extend(c);
    }
    let fetch_ms = t.elapsed().as_secs_f64() * 1e3;
    let points_fetched = fetched_ids.len() as u64;
    let point_bytes = 4 + 4 * dim as u64;

    // Pass 2: the boundary centres over own + fetched points.
    let t = Instant::now();
    let keep = header.keep;
    let counts_only = header.counts_only;
    if counts_only && !keep {
        return Err(RuntimeError::InvalidArgument(
            "BuildHeader: counts_only needs keep".into(),
        ));
    }
    let (output, halo, boundary, needed, rows) = {
        let own = own.clone();
        blocking(move || -> Result<_> {
            let boundary: Vec<usize> = (0..own_n)
                .filter(|&r| {
                    let space = own.space.as_ref().unwrap_or(&own.points);
                    boxes
                        .iter()
                        .enumerate()
                        .any(|(q, b)| q != part as usize && b.distance(space.row(r)) <= reach[r])
                })
                .collect();
            let mut second = None;
            if !boundary.is_empty() && !fetched_ids.is_empty() {
                let mut is_boundary = vec![false; own_n];
                boundary.iter().for_each(|&r| is_boundary[r] = true);
                // The own points a boundary centre can reach: as a peer answers a fetch
                // (within_reach), over the box of the boundary centres and their largest
                // reach. Every own neighbour q of a boundary centre i has
                // d(i, q) <= reach_i, so the box distance passes; the others cannot be
                // neighbours and are left out of the second search.
                let space = own.space.as_ref().unwrap_or(&own.points);
                let request = ReachRequest {
                    centres: BBox::of(space, boundary.iter().copied()).expect("non-empty"),
                    reach: boundary
                        .iter()
                        .map(|&r| reach[r])
                        .fold(f64::NEG_INFINITY, f64::max),
                };
                let order: Vec<usize> = boundary
                    .iter()
                    .copied()
                    .chain((0..own_n).filter(|&r| {
                        !is_boundary[r] && request.centres.distance(space.row(r)) <= request.reach
                    }))
                    .collect();
                let mut ids: Vec<u32> = order.iter().map(|&r| own.ids[r]).collect();
                let mut values: Vec<f32> = order
                    .iter()
                    .flat_map(|&r| own.points.row(r).iter().copied())
                    .collect();
                ids.extend_from_slice(&fetched_ids);
                values.extend_from_slice(&fetched_coords);
                let local = Points::new(ids.len(), dim, values, "own and fetched points")?;
                let built = pool.install(|| {
                    build_local(
                        &local,
                        &ids,
                        boundary.len(),
                        total as usize,
                        &rule,
                        &options,
                    )
                })?;
                second = Some(built.neighbours);
            }
            // Per own row, its edges: pass 2 for boundary centres, else pass 1.
            let mut slot_of = vec![None; own_n];
            if second.is_some() {
                for (k, &r) in boundary.iter().enumerate() {
                    slot_of[r] = Some(k);
                }
            }
            let edges_of = |r: usize| -> &[u32] {
                match (slot_of[r], &second) {
                    (Some(k), Some(s)) => s.of(k),
                    _ => first.neighbours.of(r),
                }
            };
            // (id, owner) of every fetched point, by id.
            let mut sorted_fetched: Vec<(u32, u32)> = fetched_ids
                .iter()
                .copied()
                .zip(fetched_owner.iter().copied())
                .collect();
            sorted_fetched.sort_unstable();
            let mut used = vec![false; sorted_fetched.len()];
            let mut chunker = EdgeChunker::default();
            for (r, slot) in slot_of.iter().enumerate() {
                let e = edges_of(r);
                // Only a centre searched again has fetched neighbours.
                if slot.is_some() {
                    for &j in e {
                        if let Ok(pos) = sorted_fetched.binary_search_by_key(&j, |&(id, _)| id) {
                            used[pos] = true;
                        }
                    }
                }
                if counts_only {
                    chunker.push_count(own.ids[r], e.len(), MAX_CHUNK_BYTES / 8);
                } else {
                    chunker.push(own.ids[r], e, MAX_CHUNK_BYTES / 4);
                }
            }
            let chunks = chunker.finish();
            let needed = used.iter().filter(|&&u| u).count() as u64;
            // The halo: the fetched points that became neighbours (ids ascending).
            let halo: Vec<(u32, u32)> = match counts_only {
                true => sorted_fetched
                    .iter()
                    .zip(&used)
                    .filter(|&(_, &u)| u)
                    .map(|(&p, _)| p)
                    .collect(),
                false => Vec::new(),
            };
            // Kept for a job: every own row's sources, rows in own (ascending id) order.
            let rows = keep.then(|| {
                let mut offsets = Vec::with_capacity(own_n + 1);
                offsets.push(0u64);
                let mut sources = Vec::new();
                for r in 0..own_n {
                    sources.extend_from_slice(edges_of(r));
                    offsets.push(sources.len() as u64);
                }
                (offsets, sources)
            });
            Ok((chunks, halo, boundary.len() as u64, needed, rows))
        })
        .await??
    };
    search_ms += t.elapsed().as_secs_f64() * 1e3;
    for c in output {
        send(tx, OutputBody::Edges(c)).await?;
    }
    for block in halo.chunks(MAX_CHUNK_BYTES / 16) {
        let chunk = HeldHalo {
            ids: block.iter().map(|&(id, _)| id).collect(),
            owners: block.iter().map(|&(_, q)| q).collect(),
        };
        send(tx, OutputBody::Halo(chunk)).await?;
    }
    tracing::info!(
        part,
        points = own_n,
        boundary,
        points_fetched,
        needed,
        receive_ms,
        search_ms,
        fetch_ms,
        "neighbourhood part built"
    );
    send(
        tx,
        OutputBody::Stats(BuildStats {
            points: own_n as u64,
            boundary_centres: boundary,
            points_fetched,
            bytes_fetched: points_fetched * point_bytes,
            points_needed: needed,
            bytes_needed: needed * point_bytes,
            search_ms,
            fetch_ms,
        }),
    )
    .await?;
    let Some((offsets, sources)) = rows else {
        return Ok(());
    };
    // Keep the part: its halo, send lists and edge bases come next.
    let mut acc = convert::HeldAcc::default();
    loop {
        match inbound
            .message()
            .await
            .map_err(transport("receiving the held part"))?
        {
            Some(BuildChunk {
                body: Some(ChunkBody::Held(chunk)),
            }) => {
                if acc.take(chunk, own_n, total, parts)? {
                    break;
                }
            }
            Some(_) => {
                return Err(RuntimeError::InvalidArgument(
                    "BuildChunk: expected HeldPart chunks after the statistics".into(),
                ))
            }
            None => {
                return Err(RuntimeError::InvalidArgument(
                    "the build stream ended before the held part's last chunk".into(),
                ))
            }
        }
    }
    let lists = acc.finish()?;
    let owned: Vec<u64> = own.ids.iter().map(|&i| i as u64).collect();
    let plan = blocking(move || {
        PartPlan::from_held(
            part,
            owned,
            &offsets,
            &sources,
            lists,
            total as usize,
            "HeldPart",
        )
    })
    .await??;
    let kept = PartKept {
        owned: plan.owned.len() as u64,
        entries: plan.col.len() as u64,
    };
    builds.keep(
        &header.build_id,
        KeptPart {
            plan,
            num_nodes: total as usize,
        },
    );
    send(tx, OutputBody::Kept(kept)).await
}

async fn send(tx: &mpsc::Sender<Result<BuildOutput, Status>>, body: OutputBody) -> Result<()> {
    tx.send(Ok(BuildOutput { body: Some(body) }))
        .await
        .map_err(|_| RuntimeError::Cancelled("the coordinator closed the build stream".into()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Io(std::io::Error::other(e)))
}

/// The points peer `q` (at `address`) sends for `req`: ids and `dim` coordinates each.
async fn fetch_from(
    endpoint: tonic::transport::Endpoint,
    address: String,
    q: usize,
    req: FetchPointsRequest,
    dim: usize,
    total: u64,
) -> Result<(Vec<u32>, Vec<f32>)> {
    let context = format!("fetching points from part {q} at {address}");
    let mut client = HaloExchangeClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(2 * MAX_CHUNK_BYTES);
    let mut stream = client
        .fetch_points(req)
        .await
        .map_err(transport(context.clone()))?
        .into_inner();
    let (mut ids, mut coords) = (Vec::new(), Vec::new());
    while let Some(chunk) = stream.message().await.map_err(transport(context.clone()))? {
        convert::take_point_chunk(chunk, dim, total, &mut ids, &mut coords)?;
    }
    Ok((ids, coords))
}

/// Packs centres' edges into [`CentreEdges`] messages of at most `limit` sources each
/// (plus one centre's id and count per entry). A centre with more neighbours than fit is
/// split over consecutive entries with the same id; the coordinator concatenates them in
/// order.
#[derive(Default)]
struct EdgeChunker {
    chunks: Vec<CentreEdges>,
    current: CentreEdges,
}

impl EdgeChunker {
    fn push(&mut self, centre: u32, mut edges: &[u32], limit: usize) {
        loop {
            let room = limit - self.current.sources.len();
            let take = edges.len().min(room);
            self.current.centres.push(centre);
            self.current.counts.push(take as u32);
            self.current.sources.extend_from_slice(&edges[..take]);
            edges = &edges[take..];
            if self.current.sources.len() >= limit {
                self.chunks.push(std::mem::take(&mut self.current));
            }
            if edges.is_empty() {
                return;
            }
        }
    }

    /// A centre's neighbour count only (no sources), at most `limit` centres per message.
    fn push_count(&mut self, centre: u32, count: usize, limit: usize) {
        self.current.centres.push(centre);
        self.current.counts.push(count as u32);
        if self.current.centres.len() >= limit {
            self.chunks.push(std::mem::take(&mut self.current));
        }
    }

    fn finish(mut self) -> Vec<CentreEdges> {
        if !self.current.centres.is_empty() {
            self.chunks.push(self.current);
        }
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use super::EdgeChunker;

    #[test]
    fn large_neighbourhoods_are_split_over_messages() {
        let mut c = EdgeChunker::default();
        let big: Vec<u32> = (0..25).collect();
        c.push(7, &[1, 2, 3], 10);
        c.push(8, &big, 10);
        c.push(9, &[], 10);
        let chunks = c.finish();
        assert!(chunks.iter().all(|m| m.sources.len() <= 10));
        // Concatenated per centre in order, the edges are the input's.
        let mut per: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
        for m in &chunks {
            let mut at = 0;
            for (&centre, &k) in m.centres.iter().zip(&m.counts) {
                per.entry(centre)
                    .or_default()
                    .extend(&m.sources[at..at + k as usize]);
                at += k as usize;
            }
        }
        assert_eq!(per[&7], vec![1, 2, 3]);
        assert_eq!(per[&8], big);
        assert_eq!(per[&9], Vec::<u32>::new());
    }
}
