//! Prometheus metrics of the coordinator and the workers, served as text on
//! `--metrics-listen` (`GET /metrics`, OpenMetrics text format 1.0.0, through the
//! Prometheus project's `prometheus-client` crate).
//!
//! Three registries per process: the series of both roles, the coordinator's and the
//! worker's; an endpoint serves the shared one and its own role's ([`Role`]), so a
//! worker's `/metrics` has no coordinator series and the reverse. Counters and the layer-time histogram are updated where the
//! work happens; the coordinator's gauges (jobs by state, queue length, workers by health)
//! are computed from its state when scraped.
//!
//! | metric | kind | labels | where |
//! | --- | --- | --- | --- |
//! | `distgat_jobs` | gauge | `state` | coordinator |
//! | `distgat_job_queue_length` | gauge | | coordinator |
//! | `distgat_workers` | gauge | `health` (`healthy`, `unhealthy`) | coordinator |
//! | `distgat_rpc_errors_total` | counter | `code` (gRPC code name) | both |
//! | `distgat_layer_seconds` | histogram | | worker (compute of one layer of one part) |
//! | `distgat_halo_bytes_sent_total` | counter | | worker |
//! | `distgat_halo_bytes_received_total` | counter | | worker |
//! | `distgat_halo_rows_sent_total` | counter | | worker |
//! | `distgat_rows_computed_total` | counter | | worker (output rows of every layer) |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

use crate::error::Result;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HealthLabel {
    pub health: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabel {
    pub code: String,
}

/// Which process serves the endpoint: it lists the shared series and its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Coordinator,
    Worker,
}

pub(crate) struct Metrics {
    /// Series of both roles (RPC errors).
    common: Registry,
    coordinator: Registry,
    worker: Registry,
    pub jobs: Family<StateLabel, Gauge>,
    pub queue_length: Gauge,
    pub workers: Family<HealthLabel, Gauge>,
    pub rpc_errors: Family<CodeLabel, Counter>,
    pub layer_seconds: Histogram,
    pub halo_bytes_sent: Counter,
    pub halo_bytes_received: Counter,
    pub halo_rows_sent: Counter,
    pub rows_computed: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut common = Registry::with_prefix("distgat");
        let mut coordinator = Registry::with_prefix("distgat");
        let mut worker = Registry::with_prefix("distgat");
        let jobs = Family::<StateLabel, Gauge>::default();
        coordinator.register(
            "jobs",
            "Jobs in the coordinator's catalog, by state",
            jobs.clone(),
        );
        let queue_length = Gauge::default();
        coordinator.register(
            "job_queue_length",
            "Jobs queued, not yet started",
            queue_length.clone(),
        );
        let workers = Family::<HealthLabel, Gauge>::default();
        coordinator.register(
            "workers",
            "Registered workers, by health (heartbeats arriving in time)",
            workers.clone(),
        );
        let rpc_errors = Family::<CodeLabel, Counter>::default();
        common.register(
            "rpc_errors",
            "gRPC calls this process answered with an error, by status code",
            rpc_errors.clone(),
        );
        // 1 ms .. about 9 min, doubling.
        let layer_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        worker.register(
            "layer_seconds",
            "Compute time of one layer of one part on a worker, in seconds",
            layer_seconds.clone(),
        );
        let halo_bytes_sent = Counter::default();
        worker.register(
            "halo_bytes_sent",
            "Halo row bytes this worker sent to its peers (encoded messages)",
            halo_bytes_sent.clone(),
        );
        let halo_bytes_received = Counter::default();
        worker.register(
            "halo_bytes_received",
            "Halo row payload bytes this worker received from its peers",
            halo_bytes_received.clone(),
        );
        let halo_rows_sent = Counter::default();
        worker.register(
            "halo_rows_sent",
            "Halo rows this worker sent to its peers",
            halo_rows_sent.clone(),
        );
        let rows_computed = Counter::default();
        worker.register(
            "rows_computed",
            "Output rows this worker computed, summed over layers",
            rows_computed.clone(),
        );
        Metrics {
            common,
            coordinator,
            worker,
            jobs,
            queue_length,
            workers,
            rpc_errors,
            layer_seconds,
            halo_bytes_sent,
            halo_bytes_received,
            halo_rows_sent,
            rows_computed,
        }
    }

    /// The text exposition of the shared series and `role`'s.
    pub fn encode(&self, role: Role) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let own = match role {
            Role::Coordinator => &self.coordinator,
            Role::Worker => &self.worker,
        };
        let mut text = String::new();
        encode_registry(&mut text, &self.common)
            .and_then(|()| encode_registry(&mut text, own))
            .and_then(|()| encode_eof(&mut text))
            .expect("writing to a String cannot fail");
        text
    }
}

/// This process's metrics.
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Serves `GET /metrics` on `addr` until `shutdown` fires; `refresh` runs before every
/// scrape (the coordinator sets its gauges from its state there); `role` picks the
/// series listed. Returns the bound
/// address (port 0 picks a free one).
pub(crate) async fn serve(
    role: Role,
    addr: SocketAddr,
    refresh: Arc<dyn Fn() + Send + Sync>,
    mut shutdown: oneshot::Receiver<()>,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::error::RuntimeError::InvalidArgument(format!("--metrics-listen {addr}: {e}"))
    })?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("metrics endpoint: accept failed: {e}");
                        continue;
                    }
                },
                _ = &mut shutdown => return,
            };
            let refresh = refresh.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let refresh = refresh.clone();
                    async move { Ok::<_, Infallible>(answer(role, &req, &*refresh)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!("metrics endpoint: connection: {e}");
                }
            });
        }
    });
    Ok(bound)
}

fn answer(
    role: Role,
    req: &Request<Incoming>,
    refresh: &(dyn Fn() + Send + Sync),
) -> Response<Full<Bytes>> {
    let reply = |status, content_type, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a static response is valid")
    };
    match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => {
            refresh();
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                METRICS.encode(role),
            )
        }
        (_, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET /metrics\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "distgat serves its metrics at /metrics\n".into(),
        ),
    }
}
