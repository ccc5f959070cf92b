//! The coordinator's client API through `distgat-client`, against an in-process coordinator
//! and workers on ephemeral ports: a whole Cora job compared with `distgat infer`, and one
//! test per error code the API promises.

use std::path::{Path, PathBuf};
use std::time::Duration;

use distgat_cli::{run_infer, InferConfig};
use distgat_client::v1::JobState;
use distgat_client::{Client, ClientError, RetryPolicy, Selection, Submit};
use distgat_graph::Normalization;
use distgat_runtime::{start_coordinator, start_worker, CoordinatorConfig, WorkerConfig};
use distgat_tests::repo_root;
use tonic::Code;

const CORA_EDGES: &str = "data/cora/edges.npy";
const CORA_FEATURES: &str = "data/cora/features.npy";
const CORA_MODEL: &str = "reference/cora-gat/model.json";

/// A coordinator (data root = the repository) and `workers` workers; stopped on drop.
struct Cluster {
    address: String,
    _work: tempfile::TempDir,
    servers: Vec<distgat_runtime::RunningServer>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self.servers.drain(..) {
            let _ = s.shutdown.send(());
            s.join.abort();
        }
    }
}

async fn cluster(workers: usize, max_upload_bytes: u64) -> Cluster {
    cluster_in(&repo_root(), workers, max_upload_bytes).await
}

async fn cluster_in(data_root: &Path, workers: usize, max_upload_bytes: u64) -> Cluster {
    let work = tempfile::tempdir().unwrap();
    let coordinator = start_coordinator(CoordinatorConfig {
        data_root: data_root.to_path_buf(),
        work_dir: work.path().join("work"),
        max_upload_bytes,
        ..Default::default()
    })
    .await
    .unwrap();
    let address = coordinator.addr.to_string();
    let mut servers = vec![coordinator];
    for _ in 0..workers {
        servers.push(
            start_worker(WorkerConfig {
                coordinator: address.clone(),
                ..Default::default()
            })
            .await
            .unwrap(),
        );
    }
    Cluster {
        address,
        _work: work,
        servers,
    }
}

async fn client(c: &Cluster) -> Client {
    Client::connect(&c.address).await.unwrap()
}

fn code(e: ClientError) -> (Code, String) {
    match e {
        ClientError::Status(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

fn infer_cora(out: &Path, attention: Option<PathBuf>) {
    let root = repo_root();
    run_infer(&InferConfig {
        graph: root.join(CORA_EDGES),
        format: None,
        num_nodes: None,
        features: root.join(CORA_FEATURES),
        normalize: Normalization::Row,
        model: root.join(CORA_MODEL),
        out: out.to_path_buf(),
        attention_dir: attention,
        threads: Some(1),
        ..InferConfig::default()
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cora_job_matches_infer_and_fetches_subsets() {
    let c = cluster(3, 64 << 20).await;
    let mut client = client(&c).await;
    client
        .wait_for_workers(3, Duration::from_secs(20))
        .await
        .unwrap();
    let graph = client
        .register_graph(CORA_EDGES, CORA_FEATURES, "", "cora")
        .await
        .unwrap();
    assert_eq!(
        (graph.nodes, graph.edges, graph.feature_width),
        (2708, 10556, 1433)
    );
    let job = client
        .submit(Submit {
            graph_id: graph.graph_id.clone(),
            model: CORA_MODEL.into(),
            normalize_features: true,
            attention: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(job.parts, 3, "parts = 0 means one per live worker");
    let mut states = Vec::new();
    let done = client
        .wait(&job.job_id, |info| states.push(info.state))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded as i32);
    assert!(states.contains(&(JobState::Running as i32)), "{states:?}");
    assert!(
        done.progress.iter().all(|p| p.layers_done == 2),
        "{:?}",
        done.progress
    );

    let dir = tempfile::tempdir().unwrap();
    let fetched = dir.path().join("fetched.npy");
    let reference = dir.path().join("infer.npy");
    let all = client
        .fetch_to_npy(&job.job_id, Selection::All, &fetched)
        .await
        .unwrap();
    infer_cora(&reference, Some(dir.path().join("attention")));
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&reference).unwrap(),
        "fetched output differs from distgat infer"
    );

    // Subsets are rows of the whole, in the order asked for.
    let row = |v: u64| &all.values[v as usize * all.width..(v as usize + 1) * all.width];
    let some = client
        .fetch(&job.job_id, Selection::Nodes(vec![17, 0, 2707]))
        .await
        .unwrap();
    assert_eq!(some.nodes, vec![17, 0, 2707]);
    assert_eq!(&some.values[..all.width], row(17));
    assert_eq!(&some.values[2 * all.width..], row(2707));
    let range = client
        .fetch(&job.job_id, Selection::Range(100, 110))
        .await
        .unwrap();
    assert_eq!(range.nodes, (100..110).collect::<Vec<_>>());
    assert_eq!(&range.values[..all.width], row(100));

    // Top attention of node 0 in layer 0: its in-edges, best first, matching infer's file.
    let att = client.attention(&job.job_id, 0, vec![0], 3).await.unwrap();
    let node = &att.nodes[0];
    assert_eq!(node.node, 0);
    assert!(node.top.len() <= 3 && !node.top.is_empty());
    assert!(node
        .top
        .windows(2)
        .all(|w| w[0].mean_alpha >= w[1].mean_alpha));
    let alpha =
        distgat_graph::Features::read_npy(&dir.path().join("attention/layer0_alpha.npy")).unwrap();
    for n in &node.top {
        assert_eq!(n.alpha, alpha.row(n.edge as usize), "edge {}", n.edge);
    }

    let too_many = client
        .attention(&job.job_id, 0, vec![0], 5_000)
        .await
        .unwrap_err();
    assert_eq!(code(too_many).0, Code::InvalidArgument);

    // The job shows in listings and the cluster is idle again.
    assert!(client
        .jobs()
        .await
        .unwrap()
        .iter()
        .any(|j| j.job_id == job.job_id));
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.workers.len(), 3);
    assert!(status.running_job.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_then_limit_is_resource_exhausted() {
    let features_len = std::fs::metadata(repo_root().join(CORA_FEATURES))
        .unwrap()
        .len();
    let c = cluster(0, features_len + (1 << 20)).await;
    let mut client = client(&c).await;
    let root = repo_root();
    let info = client
        .upload_graph(
            &root.join(CORA_EDGES),
            &root.join(CORA_FEATURES),
            "npy",
            "cora",
        )
        .await
        .unwrap();
    assert_eq!((info.nodes, info.source.as_str()), (2708, "upload"));

    // Over the limit: refused, and nothing is left in the uploads directory.
    let small = cluster(0, 4096).await;
    let mut client = Client::connect(&small.address).await.unwrap();
    let (code, message) = code(
        client
            .upload_graph(&root.join(CORA_EDGES), &root.join(CORA_FEATURES), "npy", "")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("4096"), "{message}");
    let uploads = small._work.path().join("work/uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_code() {
    let c = cluster(0, 1 << 20).await;
    let mut client = Client::connect_with(
        &c.address,
        RetryPolicy {
            attempts: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // NOT_FOUND: unknown job, graph and partition ids; missing files.
    let (k, m) = code(client.job("job-999").await.unwrap_err());
    assert_eq!(k, Code::NotFound, "{m}");
    assert!(m.contains("job-999"), "{m}");
    let missing_graph = Submit {
        graph_id: "graph-999".into(),
        model: CORA_MODEL.into(),
        ..Default::default()
    };
    let (k, m) = code(client.submit(missing_graph).await.unwrap_err());
    assert_eq!(k, Code::NotFound, "{m}");
    assert!(m.contains("graph-999"), "{m}");
    let (k, m) = code(
        client
            .register_graph("data/nope.npy", CORA_FEATURES, "", "")
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound, "{m}");
    assert!(m.contains("graph") && m.contains("data/nope.npy"), "{m}");

    // PERMISSION_DENIED: out of the data root by `..`, by absolute path, by symlink.
    for path in [
        "../../../etc/passwd",
        "/etc/passwd",
        "data/../../outside.npy",
    ] {
        let (k, m) = code(
            client
                .register_graph(path, CORA_FEATURES, "", "")
                .await
                .unwrap_err(),
        );
        assert_eq!(k, Code::PermissionDenied, "{path}: {m}");
        assert!(m.contains("data root"), "{m}");
    }

    // INVALID_ARGUMENT, naming the field.
    let (k, m) = code(
        client
            .register_graph(CORA_EDGES, CORA_FEATURES, "parquet", "")
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(m.contains("graph_format"), "{m}");
    let (k, m) = code(
        client
            .register_graph("", CORA_FEATURES, "", "")
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(m.contains("graph is empty"), "{m}");
    // Features that do not fit the graph: the message names the file.
    let (k, m) = code(
        client
            .register_graph(CORA_EDGES, "data/cora/labels.npy", "", "")
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(m.contains("labels.npy"), "{m}");

    let graph = client
        .register_graph(CORA_EDGES, CORA_FEATURES, "", "cora")
        .await
        .unwrap();
    let (k, m) = code(
        client
            .create_partition(&graph.graph_id, 2, "spectral", 0)
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(m.contains("method"), "{m}");
    let (k, m) = code(client.job("").await.unwrap_err());
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(m.contains("job_id"), "{m}");

    // FAILED_PRECONDITION: no worker registered, with a hint.
    let job = Submit {
        graph_id: graph.graph_id.clone(),
        model: CORA_MODEL.into(),
        normalize_features: true,
        ..Default::default()
    };
    let (k, m) = code(client.submit(job.clone()).await.unwrap_err());
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    assert!(m.contains("distgat worker"), "{m}");

    // With a worker: a bad model is INVALID_ARGUMENT; then a 1-part job runs, an unknown
    // node in a fetch is INVALID_ARGUMENT naming its index, and a queued job cancels.
    let w = start_worker(WorkerConfig {
        coordinator: c.address.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (k, m) = code(
        client
            .submit(Submit {
                model: CORA_FEATURES.into(),
                ..job.clone()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument, "{m}");
    // A model with a global layer: the runtime does not run those yet.
    let (k, m) = code(
        client
            .submit(Submit {
                model: "reference/mha-global-n256/model.json".into(),
                ..job.clone()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(
        m.contains("model.json")
            && m.contains("layers[0] is MultiheadAttention")
            && m.contains("global layers run only in `distgat infer` for now"),
        "{m}"
    );
    let (k, m) = code(
        client
            .submit(Submit {
                parts: 2,
                ..job.clone()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    let first = client.submit(job.clone()).await.unwrap();
    let second = client.submit(job.clone()).await.unwrap();
    let cancelled = client.cancel(&second.job_id, "test").await.unwrap();
    // Cancelling again is harmless (a retried call must not fail).
    let again = client.cancel(&second.job_id, "test").await.unwrap();
    assert_eq!(again.state, JobState::Cancelled as i32);
    let ended = client.wait(&second.job_id, |_| {}).await.unwrap_err();
    assert!(
        matches!(&ended, ClientError::JobFailed { state, .. } if state == "cancelled"),
        "{ended} ({cancelled:?})"
    );
    client.wait(&first.job_id, |_| {}).await.unwrap();
    let (k, m) = code(
        client
            .fetch(&first.job_id, Selection::Nodes(vec![1, 99_999]))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(m.contains("nodes.ids[1]"), "{m}");
    let (k, m) = code(
        client
            .attention(&first.job_id, 0, vec![0], 3)
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    let (k, m) = code(
        client
            .attention(&first.job_id, 0, vec![0], 1_000_000)
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    let (k, m) = code(client.cancel(&first.job_id, "").await.unwrap_err());
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    let (k, m) = code(
        client
            .fetch(&second.job_id, Selection::All)
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    let _ = w.shutdown.send(());
}

/// A symbolic link inside the data root that leads out of it is refused like `..`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_out_of_the_root_is_permission_denied() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("edges.npy");
    std::fs::copy(repo_root().join(CORA_EDGES), &target).unwrap();
    std::fs::copy(
        repo_root().join(CORA_FEATURES),
        root.path().join("features.npy"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&target, root.path().join("edges.npy")).unwrap();
    let c = cluster_in(root.path(), 0, 1 << 20).await;
    let mut client = client(&c).await;
    let (k, m) = code(
        client
            .register_graph("edges.npy", "features.npy", "", "")
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::PermissionDenied, "{m}");
    // The same file copied inside the root is fine.
    std::fs::remove_file(root.path().join("edges.npy")).unwrap();
    std::fs::copy(&target, root.path().join("edges.npy")).unwrap();
    let info = client
        .register_graph("edges.npy", "features.npy", "", "")
        .await
        .unwrap();
    assert_eq!(info.nodes, 2708);
}

/// RunJob takes arbitrary paths, so a coordinator refuses it unless started for a private
/// cluster (`distgat run` passes --allow-run-job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_job_is_refused_by_default() {
    let c = cluster(0, 1 << 20).await;
    let mut raw = distgat_client::v1::coordinator_client::CoordinatorClient::connect(format!(
        "http://{}",
        c.address
    ))
    .await
    .unwrap();
    let status = raw
        .run_job(distgat_client::v1::RunJobRequest {
            partition_dir: "/tmp".into(),
            model: "/tmp/model.json".into(),
            out: "/tmp/overwritten.npy".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    assert!(status.message().contains("--allow-run-job"), "{status}");
    assert!(!Path::new("/tmp/overwritten.npy").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_features_registered_and_uploaded_give_infers_output() {
    // A TransformerConv model with edge_dim: by path (RegisterGraph) and streamed
    // (UploadGraph), each job's output equals distgat infer's bytes; a graph registered
    // without its edge features is refused at submit, naming what is missing.
    let case = "reference/transformer-edge-beta-n200";
    let (edges, x, ea, model) = (
        format!("{case}/edge_index.npy"),
        format!("{case}/x.npy"),
        format!("{case}/edge_attr.npy"),
        format!("{case}/model.json"),
    );
    let c = cluster(2, 64 << 20).await;
    let mut client = client(&c).await;
    client
        .wait_for_workers(2, Duration::from_secs(20))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("infer.npy");
    let root = repo_root();
    run_infer(&InferConfig {
        graph: root.join(&edges),
        features: root.join(&x),
        edge_features: Some(root.join(&ea)),
        model: root.join(&model),
        out: reference.clone(),
        threads: Some(1),
        ..InferConfig::default()
    })
    .unwrap();

    let registered = client
        .register_graph_with_edge_features(&edges, &x, Some(&ea), "", "edges")
        .await
        .unwrap();
    assert_eq!(registered.edge_feature_width, 3);
    let uploaded = client
        .upload_graph_with_edge_features(
            &root.join(&edges),
            &root.join(&x),
            Some(&root.join(&ea)),
            "npy",
            "edges-upload",
        )
        .await
        .unwrap();
    assert_eq!(uploaded.edge_feature_width, 3);
    for graph in [registered, uploaded] {
        let job = client
            .submit(Submit {
                graph_id: graph.graph_id.clone(),
                model: model.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let done = client.wait(&job.job_id, |_| {}).await.unwrap();
        assert_eq!(done.state, JobState::Succeeded as i32, "{done:?}");
        let fetched = dir.path().join(format!("{}.npy", graph.graph_id));
        client
            .fetch_to_npy(&job.job_id, Selection::All, &fetched)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(&fetched).unwrap(),
            std::fs::read(&reference).unwrap(),
            "{}: fetched output differs from distgat infer",
            graph.name
        );
    }

    let bare = client.register_graph(&edges, &x, "", "bare").await.unwrap();
    let err = client
        .submit(Submit {
            graph_id: bare.graph_id,
            model: model.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let (status, message) = code(err);
    assert_eq!(status, Code::InvalidArgument, "{message}");
    assert!(message.contains("edge_dim = 3"), "{message}");

    // Edge features whose rows are not the graph's edges are refused at registration.
    let err = client
        .register_graph_with_edge_features(&edges, &x, Some(&x), "", "wrong")
        .await
        .unwrap_err();
    let (status, message) = code(err);
    assert_eq!(status, Code::InvalidArgument, "{message}");
    assert!(message.contains("200 rows of edge features"), "{message}");
}
