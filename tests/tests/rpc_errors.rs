//! `distgat_rpc_errors_total`: every error status a server answers is counted once, by
//! code, wherever it was made: the token interceptor (a wrong or missing token), the
//! client-certificate checks (the workers' interceptor, the coordinator's worker-only
//! RPCs), a `Status` a handler returns itself, a `RuntimeError` turned into one, an error
//! that ends a stream (in its trailers), and the health service's NOT_FOUND.
//!
//! Its own test binary: the counters belong to the process, and with this test alone in it
//! the scrape's differences are exactly this test's answers.

use std::time::Duration;

use distgat_client::v1::coordinator_client::CoordinatorClient;
use distgat_client::v1::halo_exchange_client::HaloExchangeClient;
use distgat_client::v1::worker_client::WorkerClient;
use distgat_client::v1::{
    CancelJobRequest, FetchEdgesRequest, FetchShardRequest, GetJobRequest, ListJobsRequest,
    OutputChunk, RowChunk, StartJobRequest,
};
use distgat_client::{Client, RetryPolicy, Security};
use distgat_proto::{secure_endpoint, Bearer, TlsFiles};
use distgat_tests::scrape::{find_sample, http_get, sample};
use distgat_tests::{certs, repo_root, TestCluster};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const TOKEN: &str = "metrics-test-token";

/// The canonical name of a code, as the metric's label spells it.
fn label(code: Code) -> &'static str {
    match code {
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::NotFound => "NOT_FOUND",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        other => panic!("no label for {other:?} in this test"),
    }
}

fn errors(text: &str, code: Code) -> f64 {
    find_sample(
        text,
        &format!("distgat_rpc_errors_total{{code=\"{}\"}}", label(code)),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_is_counted_once_by_code() {
    let dir = tempfile::tempdir().unwrap();
    let pki = certs::pki(dir.path(), "cluster").unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    // A data root of its own, holding a copy of Cora whose edges file goes away later.
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    for file in ["edges.npy", "features.npy"] {
        std::fs::copy(repo_root().join("data/cora").join(file), root.join(file)).unwrap();
    }
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let cluster = TestCluster::start(
        1,
        |c| {
            c.data_root = root.clone();
            c.tls = pki.server();
            c.auth_token_file = Some(token_file.clone());
            c.metrics_listen = Some(any);
        },
        |w| {
            w.tls = pki.server();
            w.auth_token_file = Some(token_file.clone());
        },
    )
    .await;
    let metrics = cluster.servers[0].metrics_addr.unwrap();
    let worker = cluster.servers[1].addr.to_string();
    let mut client = Client::connect_secure(
        &cluster.address,
        RetryPolicy::default(),
        &Security {
            tls: pki.client(),
            token: Some(TOKEN.into()),
        },
    )
    .await
    .unwrap();
    client
        .wait_for_workers(1, Duration::from_secs(20))
        .await
        .unwrap();
    let graph = client
        .register_graph("edges.npy", "features.npy", "", "cora")
        .await
        .unwrap()
        .graph_id;

    let channel = |address: String, cert: bool| {
        let tls = TlsFiles {
            cert: cert.then(|| pki.cert.clone()),
            key: cert.then(|| pki.key.clone()),
            ..pki.client()
        }
        .load_client()
        .unwrap();
        async move {
            secure_endpoint(&address, tls.as_ref())
                .unwrap()
                .connect()
                .await
                .unwrap()
        }
    };
    let coordinator = |channel: Channel, token: Option<&str>| {
        CoordinatorClient::with_interceptor(channel, Bearer::new(token).unwrap())
    };
    let plain = channel(cluster.address.clone(), false).await;
    let with_cert = channel(cluster.address.clone(), true).await;
    let worker_plain = channel(worker.clone(), false).await;
    let worker_cert = channel(worker.clone(), true).await;

    let (status, before) = http_get(metrics, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let mut seen: Vec<(&str, tonic::Status)> = Vec::new();

    // The token interceptor: a wrong token, no token.
    for (what, token) in [("wrong token", Some("wrong")), ("no token", None)] {
        let status = coordinator(plain.clone(), token)
            .list_jobs(ListJobsRequest {})
            .await
            .unwrap_err();
        seen.push((what, status));
    }
    // The coordinator's worker-only check, in the handler.
    let status = coordinator(plain.clone(), Some(TOKEN))
        .fetch_shard(FetchShardRequest {
            job_id: "job-none".into(),
            part: 0,
            worker_id: "worker-none".into(),
        })
        .await
        .unwrap_err();
    seen.push(("FetchShard without a client certificate", status));
    // A Status the handler makes itself (PushOutput's NOT_FOUND).
    let status = coordinator(with_cert.clone(), Some(TOKEN))
        .push_output(tokio_stream::iter(vec![OutputChunk {
            job_id: "job-none".into(),
            ..Default::default()
        }]))
        .await
        .unwrap_err();
    seen.push(("PushOutput of an unknown job", status));
    // A RuntimeError turned into a Status.
    let status = coordinator(plain.clone(), Some(TOKEN))
        .get_job(GetJobRequest {
            job_id: "job-none".into(),
        })
        .await
        .unwrap_err();
    seen.push(("GetJob of an unknown job", status));
    // An error that ends a stream, after its headers: the graph's file went away.
    std::fs::remove_file(root.join("edges.npy")).unwrap();
    let mut edges = coordinator(plain.clone(), Some(TOKEN))
        .fetch_edges(FetchEdgesRequest {
            graph_id: graph.clone(),
        })
        .await
        .expect("the stream starts before the file is read")
        .into_inner();
    let status = edges.message().await.unwrap_err();
    seen.push(("FetchEdges of a vanished file", status));
    // The worker's client-certificate interceptor.
    let status = WorkerClient::new(worker_plain)
        .cancel_job(CancelJobRequest {
            job_id: "job-none".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    seen.push(("worker CancelJob without a client certificate", status));
    // A StartJob whose output layout describes no file: refused before any input is read.
    let status = WorkerClient::new(worker_cert.clone())
        .start_job(StartJobRequest {
            job_id: "job-layout".into(),
            out_header_len: 128,
            out_rows: 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        status.code() == Code::InvalidArgument
            && status
                .message()
                .contains("out_header_len (128) and out_rows (10) describe out_file"),
        "{status:?}"
    );
    seen.push(("StartJob with out_rows but no out_file", status));
    // A Status a worker's handler makes itself (SendRows' INVALID_ARGUMENT).
    let status = HaloExchangeClient::new(worker_cert)
        .send_rows(tokio_stream::iter(vec![RowChunk {
            job_id: "job-none".into(),
            num_rows: 1,
            row_width: 1,
            ..Default::default()
        }]))
        .await
        .unwrap_err();
    seen.push(("SendRows with a short payload", status));
    // The health service (a standard route, outside the token check).
    let status = HealthClient::new(plain)
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    seen.push(("health of an unknown service", status));

    let (_, after) = http_get(metrics, "/metrics").await;
    for (what, status) in &seen {
        eprintln!("{what}: {:?} {}", status.code(), status.message());
    }
    let codes = [Code::Unauthenticated, Code::NotFound, Code::InvalidArgument];
    for code in codes {
        let answered = seen.iter().filter(|(_, s)| s.code() == code).count() as f64;
        assert_eq!(
            errors(&after, code) - errors(&before, code),
            answered,
            "{code:?}: the counter's increase differs from the answers with that code; \
             before:\n{before}\nafter:\n{after}"
        );
    }
    // Each answer has one of those codes, so every one of them was counted.
    for (what, status) in &seen {
        assert!(codes.contains(&status.code()), "{what}: {status:?}");
    }
    // A wrong token in particular: the sample is there.
    assert!(sample(&after, "distgat_rpc_errors_total{code=\"UNAUTHENTICATED\"}") >= 2.0);
}
