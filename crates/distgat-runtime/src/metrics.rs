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
//! | `distgat_rpc_errors_total` | counter | `code` (gRPC code name) | both (every error status a server answers, see [`CountErrors`]) |
//! | `distgat_layer_seconds` | histogram | | worker (compute of one layer of one part) |
//! | `distgat_halo_bytes_sent_total` | counter | | worker |
//! | `distgat_halo_bytes_received_total` | counter | | worker |
//! | `distgat_halo_rows_sent_total` | counter | | worker |
//! | `distgat_rows_computed_total` | counter | | worker (output rows of every layer) |

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
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

/// The canonical name of a gRPC code (`NOT_FOUND`), as the gRPC docs spell it.
pub(crate) fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}"); // NotFound
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Counts one error answer in `distgat_rpc_errors_total` (OK is not an error).
fn count_error(code: tonic::Code) {
    if code != tonic::Code::Ok {
        METRICS
            .rpc_errors
            .get_or_create(&CodeLabel {
                code: code_name(code),
            })
            .inc();
    }
}

/// The `grpc-status` of a response's headers or trailers, if they carry one.
fn grpc_status(headers: &hyper::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// The tower layer on every server of this process (coordinator and worker, see
/// `Dialer::server`): counts each error status a server answers, once, by code, where it
/// leaves the server: in the response headers (a call refused before any message: the
/// token and client-certificate interceptors, an error returned by a handler) or in the
/// trailers (a stream that ends with an error). Refusals made anywhere in a service are
/// counted alike, however they were made. Not counted: a call cut by its own
/// `grpc-timeout`, which tonic answers outside the services (CANCELLED), and TLS handshake
/// failures, which are no gRPC answer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CountErrors;

impl<S> tower_layer::Layer<S> for CountErrors {
    type Service = CountErrorsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountErrorsService(inner)
    }
}

/// [`CountErrors`] around one service.
#[derive(Debug, Clone)]
pub(crate) struct CountErrorsService<S>(S);

impl<S, Req, B> tonic::codegen::Service<hyper::Request<Req>> for CountErrorsService<S>
where
    S: tonic::codegen::Service<hyper::Request<Req>, Response = hyper::Response<B>>,
{
    type Response = hyper::Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: hyper::Request<Req>) -> Self::Future {
        CountedFuture(Box::pin(self.0.call(request)))
    }
}

/// The response future of [`CountErrorsService`]: counts a status in the headers.
pub(crate) struct CountedFuture<F>(Pin<Box<F>>);

impl<F, B, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<hyper::Response<B>, E>>,
{
    type Output = Result<hyper::Response<CountedBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map_ok(|response| {
            // A status in the headers is the whole answer (gRPC's trailers-only response).
            let counted = match grpc_status(response.headers()) {
                Some(code) => {
                    count_error(code);
                    true
                }
                None => false,
            };
            response.map(|body| CountedBody { body, counted })
        })
    }
}

/// A response body that counts the status in its trailers (once).
pub(crate) struct CountedBody<B> {
    body: B,
    counted: bool,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                if !this.counted {
                    this.counted = true;
                    count_error(code);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

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
