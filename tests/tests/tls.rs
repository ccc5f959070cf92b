//! TLS and bearer tokens end to end: a coordinator and workers with TLS (mTLS between
//! them) and a token run Cora to `distgat infer`'s bytes; plaintext clients, clients
//! trusting another CA, calls without or with a wrong token, and worker RPCs without a
//! client certificate are refused with the right code; health stays open.
//!
//! Certificates are generated here with rcgen; no key is committed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use distgat_cli::{run_infer, InferConfig};
use distgat_client::v1::coordinator_client::CoordinatorClient;
use distgat_client::v1::worker_client::WorkerClient;
use distgat_client::v1::{CancelJobRequest, JobState, RegisterWorkerRequest};
use distgat_client::{Client, ClientError, RetryPolicy, Security, Selection, Submit, TlsFiles};
use distgat_graph::Normalization;
use distgat_proto::{secure_endpoint, Bearer, TlsFiles as ProtoTls};
use distgat_runtime::{start_coordinator, CoordinatorConfig};
use distgat_tests::certs::Pki;
use distgat_tests::{repo_root, TestCluster};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const TOKEN: &str = "s3cret-token-for-tests";

/// A CA named `name` and a certificate it signed, in `dir`.
fn pki(dir: &Path, name: &str) -> Pki {
    distgat_tests::certs::pki(dir, name).unwrap()
}

struct Cluster {
    address: String,
    worker: String,
    dir: tempfile::TempDir,
    pki: Pki,
    _servers: TestCluster,
}

/// A TLS + token coordinator and `workers` workers on port 0.
async fn secure_cluster(workers: usize) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path(), "cluster");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let servers = TestCluster::start(
        workers,
        |c| {
            c.tls = pki.server();
            c.auth_token_file = Some(token_file.clone());
        },
        |w| {
            w.tls = pki.server();
            w.auth_token_file = Some(token_file.clone());
        },
    )
    .await;
    Cluster {
        address: servers.address.clone(),
        worker: servers.servers[1].addr.to_string(),
        dir,
        pki,
        _servers: servers,
    }
}

fn once() -> RetryPolicy {
    RetryPolicy {
        attempts: 1,
        ..Default::default()
    }
}

async fn connect(c: &Cluster, tls: TlsFiles, token: Option<&str>) -> Result<Client, ClientError> {
    Client::connect_secure(
        &c.address,
        once(),
        &Security {
            tls,
            token: token.map(str::to_string),
        },
    )
    .await
}

/// The outcome of one cheap read (`ListJobs`): the code when it failed (connection
/// failures count as UNAVAILABLE, as the transport reports them) and the message.
async fn list_jobs(c: &Cluster, tls: TlsFiles, token: Option<&str>) -> (Code, String) {
    match connect(c, tls, token).await {
        Ok(mut client) => match client.jobs().await {
            Ok(_) => (Code::Ok, String::new()),
            Err(e) => (e.code().unwrap_or(Code::Unknown), e.to_string()),
        },
        Err(e @ ClientError::Connect { .. }) => (Code::Unavailable, e.to_string()),
        Err(e) => panic!("unexpected client error: {e}"),
    }
}

fn infer_cora(out: &Path) {
    let root = repo_root();
    run_infer(&InferConfig {
        graph: root.join("data/cora/edges.npy"),
        format: None,
        num_nodes: None,
        features: root.join("data/cora/features.npy"),
        normalize: Normalization::Row,
        model: root.join("reference/cora-gat/model.json"),
        out: out.to_path_buf(),
        threads: Some(1),
        ..InferConfig::default()
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cora_over_tls_with_a_token_matches_infer() {
    let c = secure_cluster(2).await;
    let mut client = connect(&c, c.pki.client(), Some(TOKEN)).await.unwrap();
    client
        .wait_for_workers(2, Duration::from_secs(20))
        .await
        .unwrap();
    let graph = client
        .register_graph("data/cora/edges.npy", "data/cora/features.npy", "", "cora")
        .await
        .unwrap();
    let job = client
        .submit(Submit {
            graph_id: graph.graph_id,
            model: "reference/cora-gat/model.json".into(),
            normalize_features: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let done = client.wait(&job.job_id, |_| {}).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded as i32, "{}", done.error);
    let fetched = c.dir.path().join("fetched.npy");
    let reference = c.dir.path().join("infer.npy");
    client
        .fetch_to_npy(&job.job_id, Selection::All, &fetched)
        .await
        .unwrap();
    infer_cora(&reference);
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&reference).unwrap(),
        "output over TLS differs from distgat infer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_the_right_codes() {
    let c = secure_cluster(1).await;

    // The right CA and token: served.
    assert_eq!(list_jobs(&c, c.pki.client(), Some(TOKEN)).await.0, Code::Ok);

    // Missing and wrong tokens: UNAUTHENTICATED, saying what to do.
    let (code, message) = list_jobs(&c, c.pki.client(), None).await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("DISTGAT_TOKEN"), "{message}");
    let (code, message) = list_jobs(&c, c.pki.client(), Some("s3cret-token-for-test")).await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("wrong bearer token"), "{message}");

    // Plaintext to a TLS-only server: refused by the transport, with a hint.
    let (code, message) = list_jobs(&c, TlsFiles::default(), Some(TOKEN)).await;
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(
        message.contains("TLS"),
        "plaintext refusal without a hint: {message}"
    );

    // A client trusting another CA: the handshake fails, with a hint.
    let other = pki(c.dir.path(), "other");
    let (code, message) = list_jobs(&c, other.client(), Some(TOKEN)).await;
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(message.contains("--tls-ca"), "{message}");

    // Health stays open for probes: TLS, but no token and no client certificate.
    let tls = ProtoTls {
        ca: Some(c.pki.ca.clone()),
        ..Default::default()
    }
    .load_client()
    .unwrap();
    for address in [&c.address, &c.worker] {
        let channel = secure_endpoint(address, tls.as_ref())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "health of {address}");
    }

    // Worker-facing RPCs need a client certificate signed by the CA, even with the token.
    let channel = secure_endpoint(&c.address, tls.as_ref())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut coordinator =
        CoordinatorClient::with_interceptor(channel, Bearer::new(Some(TOKEN)).unwrap());
    let err = coordinator
        .register_worker(RegisterWorkerRequest {
            protocol_version: distgat_proto::PROTOCOL_VERSION,
            address: "127.0.0.1:1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    let channel = secure_endpoint(&c.worker, tls.as_ref())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = WorkerClient::new(channel)
        .cancel_job(CancelJobRequest {
            job_id: "job-1".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    // A client certificate signed by another CA is refused in the handshake.
    let foreign = ProtoTls {
        cert: Some(other.cert.clone()),
        key: Some(other.key.clone()),
        ca: Some(c.pki.ca.clone()),
        ..Default::default()
    }
    .load_client()
    .unwrap();
    let refused = match secure_endpoint(&c.worker, foreign.as_ref())
        .unwrap()
        .connect()
        .await
    {
        Err(_) => true,
        Ok(channel) => WorkerClient::new(channel)
            .cancel_job(CancelJobRequest {
                job_id: "job-1".into(),
                reason: String::new(),
            })
            .await
            // The handshake's alert reaches the client at its first call: a transport
            // error (UNKNOWN, UNAVAILABLE or CANCELLED in tonic), never an answer of the service.
            .is_err_and(|s| {
                eprintln!("foreign client certificate: {s:?}");
                matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled
                )
            }),
    };
    assert!(refused, "a certificate of another CA was accepted");
}

/// Every worker-facing Coordinator RPC (RegisterWorker, Heartbeat, PushOutput, FetchShard,
/// FetchInputs) needs a client certificate signed by the cluster CA, even with the token:
/// UNAUTHENTICATED naming the RPC and the certificate. With the certificate each gets past
/// that check (to its own answer about the request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_only_coordinator_rpcs_need_a_client_certificate() {
    use distgat_client::v1::{
        FetchInputsRequest, FetchShardRequest, HeartbeatRequest, OutputChunk,
    };
    let c = secure_cluster(1).await;
    let channel = |cert: bool| {
        let tls = ProtoTls {
            cert: cert.then(|| c.pki.cert.clone()),
            key: cert.then(|| c.pki.key.clone()),
            ..c.pki.client()
        }
        .load_client()
        .unwrap();
        let address = c.address.clone();
        async move {
            let channel = secure_endpoint(&address, tls.as_ref())
                .unwrap()
                .connect()
                .await
                .unwrap();
            CoordinatorClient::with_interceptor(channel, Bearer::new(Some(TOKEN)).unwrap())
        }
    };
    for cert in [false, true] {
        let mut coordinator = channel(cert).await;
        let answers: Vec<(&str, tonic::Status)> = vec![
            (
                "RegisterWorker",
                coordinator
                    .register_worker(RegisterWorkerRequest {
                        protocol_version: 0, // refused after the check: nothing registers
                        address: "127.0.0.1:1".into(),
                    })
                    .await
                    .unwrap_err(),
            ),
            (
                "Heartbeat",
                coordinator
                    .heartbeat(HeartbeatRequest {
                        worker_id: "worker-none".into(),
                        running: Vec::new(),
                    })
                    .await
                    .unwrap_err(),
            ),
            (
                "PushOutput",
                coordinator
                    .push_output(tokio_stream::iter(vec![OutputChunk {
                        job_id: "job-none".into(),
                        ..Default::default()
                    }]))
                    .await
                    .unwrap_err(),
            ),
            (
                "FetchShard",
                coordinator
                    .fetch_shard(FetchShardRequest {
                        job_id: "job-none".into(),
                        part: 0,
                        worker_id: "worker-none".into(),
                    })
                    .await
                    .unwrap_err(),
            ),
            (
                "FetchInputs",
                coordinator
                    .fetch_inputs(FetchInputsRequest {
                        job_id: "job-none".into(),
                        part: 0,
                        worker_id: "worker-none".into(),
                    })
                    .await
                    .unwrap_err(),
            ),
        ];
        for (rpc, status) in answers {
            eprintln!("{rpc} (client certificate: {cert}): {status:?}");
            if cert {
                assert_ne!(status.code(), Code::Unauthenticated, "{rpc}: {status:?}");
            } else {
                assert_eq!(status.code(), Code::Unauthenticated, "{rpc}: {status:?}");
                assert!(
                    status.message().starts_with(rpc)
                        && status.message().contains("client certificate")
                        && status.message().contains("--tls-ca"),
                    "{rpc}: {}",
                    status.message()
                );
            }
        }
    }
    // The client API needs no certificate (the token does).
    let mut coordinator = channel(false).await;
    coordinator
        .list_jobs(distgat_client::v1::ListJobsRequest {})
        .await
        .unwrap();
}

/// Every bad TLS or token configuration is an error naming the flag and the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_and_token_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = pki(dir.path(), "good");
    let other = pki(dir.path(), "other");
    let start = |tls: ProtoTls, token: Option<PathBuf>| {
        let work = dir.path().join("work");
        async move {
            match start_coordinator(CoordinatorConfig {
                data_root: repo_root(),
                work_dir: work,
                tls,
                auth_token_file: token,
                ..Default::default()
            })
            .await
            {
                Ok(_) => panic!("started"),
                Err(e) => e.to_string(),
            }
        }
    };
    let e = start(
        ProtoTls {
            key: Some(good.key.clone()),
            ca: Some(good.ca.clone()),
            ..Default::default()
        },
        None,
    )
    .await;
    assert!(e.contains("--tls-key") && e.contains("--tls-cert"), "{e}");
    let e = start(
        ProtoTls {
            ca: None,
            ..good.server()
        },
        None,
    )
    .await;
    assert!(e.contains("--tls-ca"), "{e}");
    let missing = dir.path().join("missing.pem");
    let e = start(
        ProtoTls {
            cert: Some(missing.clone()),
            ..good.server()
        },
        None,
    )
    .await;
    assert!(e.contains("--tls-cert") && e.contains("missing.pem"), "{e}");
    let e = start(
        ProtoTls {
            ca: Some(good.key.clone()),
            ..good.server()
        },
        None,
    )
    .await;
    assert!(e.contains("--tls-ca") && e.contains("good-key.pem"), "{e}");
    let e = start(
        ProtoTls {
            key: Some(other.key.clone()),
            ..good.server()
        },
        None,
    )
    .await;
    assert!(
        e.contains("good-cert.pem") && e.contains("other-key.pem"),
        "a key of another certificate: {e}"
    );
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, " \n").unwrap();
    let e = start(ProtoTls::default(), Some(empty)).await;
    assert!(
        e.contains("--auth-token-file") && e.contains("empty-token") && e.contains("empty"),
        "{e}"
    );
    // A client: a certificate without its key names both flags, no CA names --tls-ca.
    let e = Client::connect_secure(
        "127.0.0.1:1",
        once(),
        &Security {
            tls: TlsFiles {
                cert: Some(good.cert.clone()),
                ca: Some(good.ca.clone()),
                ..Default::default()
            },
            token: None,
        },
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("--tls-cert") && e.contains("--tls-key"), "{e}");
    let e = Client::connect_secure("https://127.0.0.1:1", once(), &Security::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--tls-ca"), "{e}");
}
