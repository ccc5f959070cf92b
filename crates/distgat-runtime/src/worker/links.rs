//! Where a running part sends its halo rows, and the rows it keeps for a lost peer.
//!
//! A part of a job started with `StartJobRequest.keep_sent_rows` keeps every halo chunk it
//! sends (step 0 of a graph layer), by receiving part, until the job ends on this worker
//! (`CancelJob`). When the coordinator moves a lost part to another worker
//! (`Worker.RerouteJob`), the route changes and every kept chunk for that part goes to the
//! new worker, which restarts the part from layer 0: those are exactly the halo rows it
//! needs, layer by layer, and receivers drop the chunks they already have
//! (`Mailbox::put`). Chunks are `bytes::Bytes`, so keeping one costs no copy; the memory
//! kept is the part's sent halo rows of every layer so far.
//!
//! Route change and keeping happen under one lock, so a send either kept its chunks before
//! a reroute (and the reroute re-sends them) or uses the new route.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use distgat_proto::v1::halo_exchange_client::HaloExchangeClient;
use distgat_proto::v1::{Peer, RowChunk};
use distgat_proto::MAX_CHUNK_BYTES;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::error::{Result, RuntimeError};
use crate::net::Dialer;

/// Halo rows are expected within this time of the layer's start, and one stream of them
/// may take at most this long.
pub(super) const HALO_TIMEOUT: Duration = Duration::from_secs(120);

/// The routes of one part of a job on this worker, and its kept chunks.
pub(super) struct JobLinks {
    /// Whether sent chunks are kept (`StartJobRequest.keep_sent_rows`).
    pub(super) keep: bool,
    inner: Mutex<Links>,
}

struct Links {
    routes: HashMap<u32, Channel>,
    /// Bumped when a part moves: a send to its old worker that still hangs (a silent
    /// machine) gives up then, its chunks being re-sent to the new one.
    moved: HashMap<u32, watch::Sender<u64>>,
    /// By receiving part, in sending order.
    kept: HashMap<u32, Vec<RowChunk>>,
    /// When the part ended here (its links are dropped some time after).
    ended: Option<Instant>,
}

impl JobLinks {
    /// Routes to `peers` (connected lazily). Errors: an address that is not a valid URI.
    pub(super) fn new(peers: &[Peer], dialer: &Dialer, keep: bool) -> Result<Self> {
        let routes = peers
            .iter()
            .map(|p| Ok((p.part, dialer.endpoint(&p.address)?.connect_lazy())))
            .collect::<Result<HashMap<u32, Channel>>>()?;
        let moved = routes.keys().map(|&q| (q, watch::channel(0).0)).collect();
        Ok(JobLinks {
            keep,
            inner: Mutex::new(Links {
                routes,
                moved,
                kept: HashMap::new(),
                ended: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Links> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The other parts, ascending.
    pub(super) fn peers(&self) -> Vec<u32> {
        let mut parts: Vec<u32> = self.lock().routes.keys().copied().collect();
        parts.sort_unstable();
        parts
    }

    /// The channel to part `q`'s worker; with `keep`, `chunks` are kept for a re-send
    /// first (only jobs without collective steps keep: a restarted part could not take
    /// part in a collective that ran on).
    /// Also returns a receiver that changes when part `q` moves.
    pub(super) fn route(
        &self,
        q: u32,
        chunks: &[RowChunk],
    ) -> Result<(Channel, watch::Receiver<u64>)> {
        let mut links = self.lock();
        let channel = links.routes.get(&q).cloned().ok_or_else(|| {
            RuntimeError::InvalidArgument(format!("peers: no address for part {q}"))
        })?;
        let moved = links
            .moved
            .entry(q)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        if self.keep {
            links
                .kept
                .entry(q)
                .or_default()
                .extend(chunks.iter().cloned());
        }
        Ok((channel, moved))
    }

    /// Part `q` now runs behind `channel`: later sends go there; returns every chunk kept
    /// for `q`, to be sent there again. `None` (nothing changed) when `q` is not one of
    /// this part's peers.
    pub(super) fn reroute(&self, q: u32, channel: Channel) -> Option<Vec<RowChunk>> {
        let mut links = self.lock();
        if !links.routes.contains_key(&q) {
            return None;
        }
        links.routes.insert(q, channel);
        links
            .moved
            .entry(q)
            .or_insert_with(|| watch::channel(0).0)
            .send_modify(|n| *n += 1);
        Some(links.kept.get(&q).cloned().unwrap_or_default())
    }

    /// The part ended on this worker (its kept chunks stay until the job ends).
    pub(super) fn part_ended(&self) {
        self.lock().ended = Some(Instant::now());
    }

    /// Whether the part ended more than `age` ago.
    pub(super) fn ended_before(&self, age: Duration) -> bool {
        self.lock().ended.is_some_and(|at| at.elapsed() > age)
    }
}

/// Sends `chunks` to a peer in one `HaloExchange.SendRows` stream.
pub(super) async fn send_chunks(
    channel: Channel,
    chunks: Vec<RowChunk>,
) -> std::result::Result<(), Status> {
    let mut client =
        HaloExchangeClient::new(channel).max_encoding_message_size(2 * MAX_CHUNK_BYTES);
    let mut request = Request::new(tokio_stream::iter(chunks));
    request.set_timeout(HALO_TIMEOUT);
    client.send_rows(request).await.map(|_| ())
}

/// Whether a failed send means the receiver (or the way to it) is gone, rather than a
/// live receiver refusing the rows: such a send is left to a re-send to the part's
/// replacement when rows are kept.
pub(super) fn receiver_lost(status: &Status) -> bool {
    crate::net::transport_failure(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(target_part: u32, first_row: u64) -> RowChunk {
        RowChunk {
            job_id: "j".into(),
            target_part,
            first_row,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn reroute_resends_the_kept_chunks_and_refuses_a_part_that_is_no_peer() {
        let dialer = Dialer {
            tls: None,
            bearer: distgat_proto::Bearer::new(None).unwrap(),
        };
        let peers = [1, 2].map(|part| Peer {
            part,
            address: format!("127.0.0.1:{}", 40000 + part),
        });
        let links = JobLinks::new(&peers, &dialer, true).unwrap();
        let (_, moved) = links.route(1, &[chunk(1, 0), chunk(1, 8)]).unwrap();
        links.route(2, &[chunk(2, 0)]).unwrap();
        let new = dialer.endpoint("127.0.0.1:40009").unwrap().connect_lazy();
        let kept = links.reroute(1, new.clone()).expect("part 1 is a peer");
        assert_eq!(
            kept.iter()
                .map(|c| (c.target_part, c.first_row))
                .collect::<Vec<_>>(),
            [(1, 0), (1, 8)]
        );
        assert!(
            moved.has_changed().unwrap(),
            "a hanging send to part 1 is not told"
        );
        // Part 7 is not in the job (or is this part itself): nothing changes.
        assert!(links.reroute(7, new).is_none());
        assert_eq!(links.peers(), [1, 2]);
    }
}
