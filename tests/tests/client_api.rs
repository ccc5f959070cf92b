//! The coordinator's client API through `distgat-client`, against an in-process coordinator
//! and workers on ephemeral ports: a whole Cora job compared with `distgat infer`, and one
//! test per error code the API promises.

use std::path::{Path, PathBuf};
use std::time::Duration;

use distgat_cli::{run_infer, InferConfig};
use distgat_client::v1::{JobState, RegisterGraphRequest};
use distgat_client::{Client, ClientError, RetryPolicy, Selection, Submit};
use distgat_graph::Normalization;
use distgat_runtime::{
    start_coordinator, start_worker, CoordinatorConfig, LastLayerOrder, WorkerConfig,
};
use distgat_tests::scrape::{http_get, sample};
use distgat_tests::{repo_root, TestCluster};
use tonic::Code;

const CORA_EDGES: &str = "data/cora/edges.npy";
const CORA_FEATURES: &str = "data/cora/features.npy";
const CORA_MODEL: &str = "reference/cora-gat/model.json";

type Cluster = TestCluster;

async fn cluster(workers: usize, max_upload_bytes: u64) -> Cluster {
    cluster_in(&repo_root(), workers, max_upload_bytes).await
}

async fn cluster_in(data_root: &Path, workers: usize, max_upload_bytes: u64) -> Cluster {
    cluster_with(workers, |c| {
        c.data_root = data_root.to_path_buf();
        c.max_upload_bytes = max_upload_bytes;
    })
    .await
}

/// A cluster whose coordinator's config `edit` adjusts (data root: the repository; work
/// dir: `<temp>/work`).
async fn cluster_with(workers: usize, edit: impl FnOnce(&mut CoordinatorConfig)) -> Cluster {
    TestCluster::start(workers, edit, |_| {}).await
}

/// A client of `c` once `workers` workers are live, and the id of Cora registered as
/// "cora".
async fn cora_ready(c: &Cluster, workers: usize) -> (Client, String) {
    let mut client = client(c).await;
    client
        .wait_for_workers(workers, Duration::from_secs(20))
        .await
        .unwrap();
    let graph = client
        .register_graph(CORA_EDGES, CORA_FEATURES, "", "cora")
        .await
        .unwrap()
        .graph_id;
    (client, graph)
}

async fn client(c: &Cluster) -> Client {
    Client::connect(&c.address).await.unwrap()
}

/// The generated client of `c`'s coordinator, for requests `Client` never makes.
async fn raw_client(
    c: &Cluster,
) -> distgat_client::v1::coordinator_client::CoordinatorClient<tonic::transport::Channel> {
    distgat_client::v1::coordinator_client::CoordinatorClient::connect(format!(
        "http://{}",
        c.address
    ))
    .await
    .unwrap()
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

/// The last layer's two orders (boundary rows first, as the part the others wait for
/// runs it; interior rows first, while the halo rows travel), each forced on every worker
/// so neither depends on timing: both give `distgat infer`'s bytes, and every attention
/// coefficient arrives once (the coordinator refuses a repeat or a gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_order_of_the_last_layer_gives_infers_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("infer.npy");
    infer_cora(&reference, None);
    for order in [LastLayerOrder::BoundaryFirst, LastLayerOrder::InteriorFirst] {
        let c = TestCluster::start(3, |_| {}, move |w| w.last_layer_order = order).await;
        let (mut client, graph_id) = cora_ready(&c, 3).await;
        let job = client
            .submit(Submit {
                graph_id,
                model: CORA_MODEL.into(),
                normalize_features: true,
                attention: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let done = client.wait(&job.job_id, |_| {}).await.unwrap();
        assert_eq!(
            done.state,
            JobState::Succeeded as i32,
            "{order:?}: {done:?}"
        );
        let fetched = dir.path().join(format!("{order:?}.npy"));
        client
            .fetch_to_npy(&job.job_id, Selection::All, &fetched)
            .await
            .unwrap();
        assert!(
            std::fs::read(&fetched).unwrap() == std::fs::read(&reference).unwrap(),
            "{order:?}: the output differs from distgat infer's"
        );
    }
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

    // Every in-edge of a few nodes (FetchAttention reads them through the layer's index):
    // the in-degree, edges, sources and rows of a scan of infer's attention files.
    let index = distgat_graph::read_graph(
        &dir.path().join("attention/layer1_att_edge_index.npy"),
        None,
    )
    .unwrap();
    let alpha1 =
        distgat_graph::Features::read_npy(&dir.path().join("attention/layer1_alpha.npy")).unwrap();
    let asked = vec![2707, 0, 1358, 0];
    let att = client
        .attention(&job.job_id, 1, asked.clone(), 1000)
        .await
        .unwrap();
    for (v, got) in asked.iter().zip(&att.nodes) {
        let want: Vec<usize> = (0..index.len()).filter(|&e| index.dst()[e] == *v).collect();
        assert_eq!(got.node, *v);
        assert_eq!(got.in_degree as usize, want.len(), "node {v}");
        let mut edges: Vec<usize> = got.top.iter().map(|n| n.edge as usize).collect();
        edges.sort_unstable();
        assert_eq!(edges, want, "node {v}");
        for n in &got.top {
            assert_eq!(n.source, index.src()[n.edge as usize]);
            assert_eq!(n.alpha, alpha1.row(n.edge as usize), "edge {}", n.edge);
        }
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

    // A bad upload's error names the uploaded file, not the coordinator's temporary path.
    let (code_bad, message) = code(
        client
            .upload_graph(&root.join(CORA_EDGES), &root.join(CORA_EDGES), "npy", "")
            .await
            .unwrap_err(),
    );
    assert_eq!(code_bad, Code::InvalidArgument, "{message}");
    assert!(message.contains("the uploaded features"), "{message}");
    assert!(!message.contains("uploads/"), "{message}");

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
    let uploads = small.work_dir().join("uploads");
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
    // A global layer runs distributed, but its width must fit the graph's features.
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
        m.contains("1433 columns") && m.contains("embed_dim = 32"),
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
    let mut raw = raw_client(&c).await;
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

async fn cora_job(client: &mut Client, graph_id: &str, partition_id: &str) -> String {
    client
        .submit(Submit {
            graph_id: graph_id.into(),
            partition_id: partition_id.into(),
            model: CORA_MODEL.into(),
            normalize_features: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .job_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_refuses_what_is_in_use_and_frees_the_rest() {
    let c = cluster(2, 64 << 20).await;
    let work = c.work_dir();
    let (mut client, graph) = cora_ready(&c, 2).await;

    // A job that has not ended cannot be deleted.
    let job = cora_job(&mut client, &graph, "").await;
    let (code_, message) = code(client.delete_job(&job).await.unwrap_err());
    assert_eq!(code_, Code::FailedPrecondition, "{message}");
    assert!(
        message.contains(&job) && message.contains("cancel it first"),
        "{message}"
    );
    let done = client.wait(&job, |_| {}).await.unwrap();
    let partition = done.partition_id.clone();
    assert!(work.join("jobs").join(&job).join("out.npy").is_file());

    // The graph is used by the job and by the partition the job made.
    let (code_, message) = code(client.delete_graph(&graph).await.unwrap_err());
    assert_eq!(code_, Code::FailedPrecondition, "{message}");
    assert!(
        message.contains(&job) && message.contains("delete the job first"),
        "{message}"
    );

    let deleted = client.delete_job(&job).await.unwrap();
    assert_eq!(deleted.id, job);
    assert!(
        deleted.bytes_freed >= 2708 * 7 * 4,
        "{}",
        deleted.bytes_freed
    );
    assert!(
        !work.join("jobs").join(&job).exists(),
        "the job's files are gone"
    );
    assert_eq!(code(client.job(&job).await.unwrap_err()).0, Code::NotFound);
    assert_eq!(
        code(client.delete_job(&job).await.unwrap_err()).0,
        Code::NotFound
    );

    let (code_, message) = code(client.delete_graph(&graph).await.unwrap_err());
    assert_eq!(code_, Code::FailedPrecondition, "{message}");
    assert!(message.contains(&partition), "{message}");
    // What is left is listed, so it can be found and deleted.
    let partitions = client.partitions().await.unwrap();
    assert!(partitions
        .iter()
        .any(|p| p.partition_id == partition && p.graph_id == graph));
    assert!(client
        .graphs()
        .await
        .unwrap()
        .iter()
        .any(|g| g.graph_id == graph));

    // A partition in use by a job that has not ended cannot be deleted.
    let second = cora_job(&mut client, &graph, &partition).await;
    let (code_, message) = code(client.delete_partition(&partition).await.unwrap_err());
    assert_eq!(code_, Code::FailedPrecondition, "{message}");
    assert!(message.contains(&second), "{message}");
    client.wait(&second, |_| {}).await.unwrap();
    client.delete_job(&second).await.unwrap();

    let deleted = client.delete_partition(&partition).await.unwrap();
    assert!(deleted.bytes_freed > 0);
    assert!(!work.join("partitions").join(&partition).exists());
    // A registered graph's files are the user's: forgotten, not deleted.
    let deleted = client.delete_graph(&graph).await.unwrap();
    assert_eq!(deleted.bytes_freed, 0);
    assert!(repo_root().join(CORA_EDGES).is_file());
    assert_eq!(
        code(client.delete_graph(&graph).await.unwrap_err()).0,
        Code::NotFound
    );
    // A deleted graph cannot take new jobs.
    let err = client
        .submit(Submit {
            graph_id: graph.clone(),
            model: CORA_MODEL.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code(err).0, Code::NotFound);
    // An empty id is a malformed request, named.
    for (err, field) in [
        (client.delete_job("").await.unwrap_err(), "job_id"),
        (
            client.delete_partition("").await.unwrap_err(),
            "partition_id",
        ),
        (client.delete_graph("").await.unwrap_err(), "graph_id"),
    ] {
        let (c, message) = code(err);
        assert_eq!(c, Code::InvalidArgument, "{message}");
        assert!(message.contains(&format!("{field} is empty")), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_jobs_deletes_the_oldest_ended_jobs() {
    let c = cluster_with(1, |config| config.keep_jobs = 1).await;
    let work = c.work_dir();
    let (mut client, graph) = cora_ready(&c, 1).await;
    let first = cora_job(&mut client, &graph, "").await;
    client.wait(&first, |_| {}).await.unwrap();
    let second = cora_job(&mut client, &graph, "").await;
    client.wait(&second, |_| {}).await.unwrap();
    // Retention runs right after a job ends; give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ids: Vec<String> = client
            .jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.job_id)
            .collect();
        if ids == [second.clone()] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs still listed: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !work.join("jobs").join(&first).exists(),
        "the oldest job's files are gone"
    );
    assert!(work.join("jobs").join(&second).join("out.npy").is_file());
}

/// A coordinator restarted on the same work dir lists and serves what it had: the graph,
/// the partition and the succeeded job, whose output fetches byte for byte as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_keeps_its_catalog() {
    let work = tempfile::tempdir().unwrap();
    let config = || CoordinatorConfig {
        data_root: repo_root(),
        work_dir: work.path().join("work"),
        ..Default::default()
    };
    let out = work.path().join("before.npy");
    let again = work.path().join("after.npy");
    let (graph, job) = {
        let coordinator = start_coordinator(config()).await.unwrap();
        let address = coordinator.addr.to_string();
        // A second coordinator on the same work dir is refused, naming why.
        let err = match start_coordinator(config()).await {
            Ok(_) => panic!("two coordinators opened one work dir"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("another coordinator is using this work dir"),
            "{err}"
        );
        let worker = start_worker(WorkerConfig {
            coordinator: address.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut client = Client::connect(&address).await.unwrap();
        client
            .wait_for_workers(1, Duration::from_secs(20))
            .await
            .unwrap();
        let graph = client
            .register_graph(CORA_EDGES, CORA_FEATURES, "", "cora")
            .await
            .unwrap()
            .graph_id;
        let job = cora_job(&mut client, &graph, "").await;
        client.wait(&job, |_| {}).await.unwrap();
        client
            .fetch_to_npy(&job, Selection::All, &out)
            .await
            .unwrap();
        for server in [worker, coordinator] {
            let _ = server.shutdown.send(());
            let _ = server.join.await;
        }
        (graph, job)
    };
    // What a coordinator stopped mid-work leaves (a partition not yet recorded) goes at the
    // restart; anything not named like the coordinator's own ids stays.
    let orphan = work.path().join("work/partitions/partition-999");
    let foreign = work.path().join("work/partitions/notes");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("manifest.json"), "{}").unwrap();
    std::fs::create_dir_all(&foreign).unwrap();
    // And half-made uploads and neighbourhood builds.
    let half_made = [
        work.path().join("work/uploads/.upload-x"),
        work.path().join("work/uploads/.build-x"),
    ];
    for dir in &half_made {
        std::fs::create_dir_all(dir).unwrap();
    }
    // The database is closed once the old coordinator's state is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let coordinator = loop {
        match start_coordinator(config()).await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("restart: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("restart: {e}"),
        }
    };
    assert!(
        !orphan.exists(),
        "an unrecorded partition left by the old coordinator"
    );
    assert!(foreign.exists(), "a directory the coordinator did not make");
    for dir in &half_made {
        assert!(!dir.exists(), "{} was left", dir.display());
    }
    let mut client = Client::connect(&coordinator.addr.to_string())
        .await
        .unwrap();
    let info = client.job(&job).await.unwrap();
    assert_eq!(info.state, JobState::Succeeded as i32);
    assert!(!info.partition_id.is_empty());
    client
        .fetch_to_npy(&job, Selection::All, &again)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    // New ids do not collide with the old ones.
    let second = client
        .register_graph(CORA_EDGES, CORA_FEATURES, "", "cora again")
        .await
        .unwrap()
        .graph_id;
    assert_ne!(second, graph);
    let _ = coordinator.shutdown.send(());
}

/// Prometheus metrics on --metrics-listen: jobs by state, queue length, workers by health,
/// RPC errors by code on the coordinator; layer times, halo bytes and rows on the workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoints_count_jobs_workers_errors_and_halo_bytes() {
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let c = TestCluster::start(
        2,
        |config| config.metrics_listen = Some(any),
        |config| config.metrics_listen = Some(any),
    )
    .await;
    let coordinator_metrics = c.servers[0].metrics_addr.expect("metrics address");
    let worker_metrics: Vec<_> = c.servers[1..]
        .iter()
        .map(|w| w.metrics_addr.expect("metrics address"))
        .collect();
    let (mut client, graph) = cora_ready(&c, 2).await;
    let job = cora_job(&mut client, &graph, "").await;
    client.wait(&job, |_| {}).await.unwrap();
    assert_eq!(
        code(client.job("job-none").await.unwrap_err()).0,
        Code::NotFound
    );

    let (status, text) = http_get(coordinator_metrics, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(sample(&text, "distgat_jobs{state=\"succeeded\"}"), 1.0);
    assert_eq!(sample(&text, "distgat_jobs{state=\"running\"}"), 0.0);
    assert_eq!(sample(&text, "distgat_job_queue_length"), 0.0);
    assert_eq!(sample(&text, "distgat_workers{health=\"healthy\"}"), 2.0);
    assert!(sample(&text, "distgat_rpc_errors_total{code=\"NOT_FOUND\"}") >= 1.0);
    // Each role lists its own series (and the shared ones), not the other role's.
    assert!(!text.contains("distgat_layer_seconds"), "{text}");
    assert!(!text.contains("distgat_halo_bytes"), "{text}");
    // The worker's numbers (one registry per process: in this test process, the sums over
    // every worker of every test, so at least this job's).
    let (_, text) = http_get(worker_metrics[0], "/metrics").await;
    assert!(
        sample(&text, "distgat_layer_seconds_count") >= 4.0,
        "2 layers x 2 parts"
    );
    assert!(sample(&text, "distgat_rows_computed_total") >= 2.0 * 2708.0);
    assert!(sample(&text, "distgat_halo_bytes_sent_total") > 0.0);
    assert!(sample(&text, "distgat_halo_bytes_received_total") > 0.0);
    assert!(text.contains("distgat_rpc_errors_total"), "{text}");
    assert!(!text.contains("distgat_jobs"), "{text}");
    assert!(!text.contains("distgat_workers"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let (status, _) = http_get(worker_metrics[1], "/other").await;
    assert!(status.contains("404"), "{status}");
}

/// A graph built from points through the client API (RegisterGraph with a neighbourhood,
/// then SubmitJob on it): the fetched edges equal the reference case's expected edges,
/// the job runs on the build's spatial parts by default, and its output equals
/// `distgat infer --points`'s; bad requests name the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbourhood_built_through_the_api_matches_infer() {
    use distgat_client::v1::NeighbourSpec;
    let case = "reference/knn-gatv2-n400";
    let (points, x, model) = (
        format!("{case}/points.npy"),
        format!("{case}/x.npy"),
        format!("{case}/model.json"),
    );
    let c = cluster(2, 64 << 20).await;
    let mut client = client(&c).await;
    client
        .wait_for_workers(2, Duration::from_secs(20))
        .await
        .unwrap();
    let knn = |k: u64| NeighbourSpec {
        knn: Some(k),
        ..Default::default()
    };
    let graph = client
        .register_neighbourhood(&x, Some(&points), knn(8), 0, "")
        .await
        .unwrap();
    assert_eq!((graph.nodes, graph.edges), (400, 3200));
    assert_eq!(
        (
            graph.source.as_str(),
            graph.neighbourhood.as_str(),
            graph.spatial_parts
        ),
        ("neighbourhood", "knn:8", 2)
    );
    let summary: serde_json::Value = serde_json::from_str(&graph.build_summary_json).unwrap();
    assert_eq!(summary["parts"].as_array().unwrap().len(), 2);

    // The edges, against the reference's (PyG's rule, sorted by (target, source)).
    let root = repo_root();
    let edges = client.fetch_edges(&graph.graph_id).await.unwrap();
    let (shape, want) = distgat_tests::read_i64(&root.join(case).join("expected/edges.npy"));
    assert_eq!(shape, vec![2, 3200]);
    assert_eq!(edges.sources, want[..3200]);
    assert_eq!(edges.targets, want[3200..]);
    let work = tempfile::tempdir().unwrap();
    let edges_npy = work.path().join("edges.npy");
    client
        .fetch_edges_to_npy(&graph.graph_id, &edges_npy)
        .await
        .unwrap();
    assert_eq!(distgat_tests::read_i64(&edges_npy).1, want);

    // A job on it: the spatial parts by default, the same bytes as infer --points.
    let job = client
        .submit(Submit {
            graph_id: graph.graph_id.clone(),
            model: model.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = client.wait(&job.job_id, |_| {}).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded as i32, "{}", done.error);
    let partitions = client.partitions().await.unwrap();
    let used = partitions
        .iter()
        .find(|p| p.partition_id == done.partition_id)
        .unwrap();
    assert_eq!((used.method.as_str(), used.parts), ("spatial", 2));
    let fetched = work.path().join("fetched.npy");
    client
        .fetch_to_npy(&job.job_id, Selection::All, &fetched)
        .await
        .unwrap();
    let infer_out = work.path().join("infer.npy");
    let build = distgat_cli::neighbours::NeighboursConfig {
        points: Some(root.join(&points)),
        knn: Some(8),
        ..Default::default()
    };
    run_infer(&InferConfig {
        features: root.join(&x),
        model: root.join(&model),
        out: infer_out.clone(),
        neighbourhood: Some(build),
        threads: Some(1),
        ..InferConfig::default()
    })
    .unwrap();
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&infer_out).unwrap()
    );

    // METIS on request, and spatial refused where it does not apply.
    let by_metis = client
        .submit(Submit {
            graph_id: graph.graph_id.clone(),
            model: model.clone(),
            method: "metis".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = client.wait(&by_metis.job_id, |_| {}).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded as i32, "{}", done.error);
    let metis_out = work.path().join("metis.npy");
    client
        .fetch_to_npy(&by_metis.job_id, Selection::All, &metis_out)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&metis_out).unwrap(),
        std::fs::read(&infer_out).unwrap()
    );
    let (code_, msg) = code(
        client
            .submit(Submit {
                graph_id: graph.graph_id.clone(),
                model: model.clone(),
                method: "spatial".into(),
                parts: 1,
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(code_, Code::InvalidArgument);
    assert!(msg.contains("built on 2 parts"), "{msg}");
    let cora = client
        .register_graph(CORA_EDGES, CORA_FEATURES, "", "cora")
        .await
        .unwrap();
    let (code_, msg) = code(
        client
            .create_partition(&cora.graph_id, 2, "spatial", 0)
            .await
            .unwrap_err(),
    );
    assert_eq!(code_, Code::InvalidArgument);
    assert!(msg.contains("needs a graph built from points"), "{msg}");

    // Bad requests, each refused by name before any build.
    let bad = |spec: Option<NeighbourSpec>, points: &str, graph: &str| RegisterGraphRequest {
        features: x.clone(),
        points: points.into(),
        graph: graph.into(),
        neighbourhood: spec,
        ..Default::default()
    };
    let cases = [
        (bad(Some(knn(0)), &points, ""), "neighbourhood: k = 0"),
        (bad(Some(knn(400)), &points, ""), "neighbourhood: k = 400"),
        (
            bad(
                Some(NeighbourSpec {
                    radius: Some(-1.0),
                    ..Default::default()
                }),
                &points,
                "",
            ),
            "neighbourhood: r",
        ),
        (
            bad(Some(NeighbourSpec::default()), &points, ""),
            "neighbourhood: give exactly one",
        ),
        (
            bad(
                Some(NeighbourSpec {
                    knn: Some(4),
                    metric: "manhattan".into(),
                    ..Default::default()
                }),
                &points,
                "",
            ),
            "neighbourhood.metric 'manhattan'",
        ),
        (
            bad(Some(knn(4)), &points, CORA_EDGES),
            "graph cannot be given",
        ),
        (
            bad(Some(knn(4)), "data/cora/features.npy", ""),
            "has 2708 rows",
        ),
        (
            bad(None, &points, CORA_EDGES),
            "points applies to a graph built",
        ),
    ];
    let mut raw = raw_client(&c).await;
    for (req, want) in cases {
        let status = raw.register_graph(req.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{req:?}: {status:?}");
        assert!(
            status.message().contains(want),
            "{req:?}: {}",
            status.message()
        );
    }
    let status = raw
        .fetch_edges(distgat_client::v1::FetchEdgesRequest {
            graph_id: "graph-999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

/// Workers whose halo mailbox holds less than one layer's halo rows: the job fails,
/// cleanly and soon, with a message that names `--mailbox-max-bytes`; nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_halo_mailbox_fails_the_job_naming_the_flag() {
    let c = TestCluster::start(2, |_| {}, |w| w.mailbox_max_bytes = 4096).await;
    let (mut client, graph) = cora_ready(&c, 2).await;
    let job = cora_job(&mut client, &graph, "").await;
    let started = std::time::Instant::now();
    let err = client.wait(&job, |_| {}).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("--mailbox-max-bytes 4096"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "{message}");
}

/// A worker's output stream that goes quiet (no rows, no keepalive) ends with
/// DEADLINE_EXCEEDED after the coordinator's stream idle deadline, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_output_stream_hits_the_idle_deadline() {
    let c = cluster_with(0, |config| {
        config.stream_idle_timeout = Duration::from_millis(500)
    })
    .await;
    let mut raw = raw_client(&c).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<distgat_proto::v1::OutputChunk>(4);
    let started = std::time::Instant::now();
    let status = raw
        .push_output(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    drop(tx); // held open (silent) until the server gave up
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(
        status.message().contains("output stream") && status.message().contains("500ms"),
        "{status}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// An upload that stalls after its header ends with DEADLINE_EXCEEDED after the
/// coordinator's stream idle deadline, naming it, and leaves nothing in the uploads dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_hits_the_idle_deadline() {
    use distgat_proto::v1::upload_graph_chunk::Body;
    use distgat_proto::v1::{UploadGraphChunk, UploadHeader};
    let c = cluster_with(0, |config| {
        config.stream_idle_timeout = Duration::from_millis(500)
    })
    .await;
    let mut raw = raw_client(&c).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(UploadGraphChunk {
        body: Some(Body::Header(UploadHeader {
            name: "stalled".into(),
            graph_format: "npy".into(),
            graph_bytes: 100,
            features_bytes: 100,
            edge_features_bytes: 0,
        })),
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let status = raw
        .upload_graph(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    drop(tx); // held open (silent) until the server gave up
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(
        status.message().contains("sent nothing for 500ms"),
        "{status}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let uploads = c.work_dir().join("uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Fields a request would leave unused are refused, naming them: a seed for a method that
/// takes none, a method next to a partition made already, attention for a model with no
/// edges, declared upload sizes that are not what arrived, and attention_dir on a raw
/// RunJob of a global-only model. Each request's valid neighbour is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_a_request_would_not_use_are_refused() {
    // A data root holding Cora and a global-attention case with a ring graph of its nodes.
    let root = tempfile::tempdir().unwrap();
    for (from, to) in [
        (CORA_EDGES, "edges.npy"),
        (CORA_FEATURES, "features.npy"),
        (CORA_MODEL, "cora-model.json"),
        ("reference/cora-gat/model.safetensors", "model.safetensors"),
        ("reference/mha-global-n256/x.npy", "mha-x.npy"),
        ("reference/mha-global-n256/model.json", "mha-model.json"),
        (
            "reference/mha-global-n256/model.safetensors",
            "mha-model.safetensors",
        ),
    ] {
        std::fs::copy(repo_root().join(from), root.path().join(to))
            .unwrap_or_else(|e| panic!("{from}: {e}"));
    }
    // The copied model JSONs name their weights by file: point them at the copies.
    for (json, weights) in [
        ("cora-model.json", "model.safetensors"),
        ("mha-model.json", "mha-model.safetensors"),
    ] {
        let path = root.path().join(json);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        fn rename(v: &mut serde_json::Value, to: &str) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m.iter_mut() {
                        if k == "weights" && x.is_string() {
                            *x = to.into();
                        } else {
                            rename(x, to);
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(|x| rename(x, to)),
                _ => {}
            }
        }
        rename(&mut v, weights);
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    }
    let ring: Vec<i64> = (0..256).chain((0..256).map(|i| (i + 1) % 256)).collect();
    distgat_graph::write_npy::<i64>(&root.path().join("ring.npy"), &[2, 256], &ring).unwrap();
    let c = cluster_with(1, |cfg| {
        cfg.data_root = root.path().to_path_buf();
        cfg.allow_run_job = true;
    })
    .await;
    let mut client = client(&c).await;
    client
        .wait_for_workers(1, Duration::from_secs(20))
        .await
        .unwrap();
    let cora = client
        .register_graph("edges.npy", "features.npy", "", "cora")
        .await
        .unwrap()
        .graph_id;

    // CreatePartition: range takes no seed, and one part runs no partitioner at all.
    let (k, m) = code(
        client
            .create_partition(&cora, 2, "range", 5)
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(m.contains("seed 5") && m.contains("range"), "{m}");
    let (k, m) = code(
        client
            .create_partition(&cora, 1, "metis", 5)
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(m.contains("seed 5") && m.contains("parts 1"), "{m}");
    // Parts 0 (one per live worker: here one) is named as the request gave it.
    let (k, m) = code(
        client
            .create_partition(&cora, 0, "metis", 5)
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(m.contains("parts 0 (one per live worker: 1)"), "{m}");
    let part = client
        .create_partition(&cora, 1, "metis", 0)
        .await
        .unwrap()
        .partition_id;

    // SubmitJob: a method beside a partition made already.
    let (k, m) = code(
        client
            .submit(Submit {
                graph_id: cora.clone(),
                partition_id: part.clone(),
                method: "random".into(),
                model: "cora-model.json".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(m.contains("method 'random'") && m.contains(&part), "{m}");

    // SubmitJob: attention for a model of global layers only.
    let mha = client
        .register_graph("ring.npy", "mha-x.npy", "", "ring")
        .await
        .unwrap()
        .graph_id;
    let global = Submit {
        graph_id: mha.clone(),
        model: "mha-model.json".into(),
        attention: true,
        ..Default::default()
    };
    let (k, m) = code(client.submit(global.clone()).await.unwrap_err());
    assert_eq!(k, Code::InvalidArgument, "{m}");
    assert!(
        m.contains("attention") && m.contains("global attention"),
        "{m}"
    );
    let job = client
        .submit(Submit {
            attention: false,
            ..global
        })
        .await
        .unwrap()
        .job_id;
    let done = client.wait(&job, |_| {}).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded, "{}", done.error);

    // RunJob: attention_dir for a model of global layers only.
    let mut raw = raw_client(&c).await;
    let status = raw
        .run_job(distgat_client::v1::RunJobRequest {
            partition_dir: c
                .work_dir()
                .join("partitions")
                .join(&part)
                .display()
                .to_string(),
            model: root.path().join("mha-model.json").display().to_string(),
            out: root.path().join("never.npy").display().to_string(),
            attention_dir: root.path().join("att").display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("attention_dir"), "{status}");
    assert!(!root.path().join("never.npy").exists());

    // UploadGraph: declared sizes must be what arrived.
    use distgat_client::v1::upload_graph_chunk::Body;
    use distgat_client::v1::{UploadGraphChunk, UploadHeader};
    let graph = std::fs::read(root.path().join("ring.npy")).unwrap();
    let features = std::fs::read(root.path().join("mha-x.npy")).unwrap();
    for (graph_bytes, features_bytes, field) in [
        (graph.len() as u64 + 1, features.len() as u64, "graph_bytes"),
        (
            graph.len() as u64,
            features.len() as u64 - 1,
            "features_bytes",
        ),
    ] {
        let chunks = vec![
            UploadGraphChunk {
                body: Some(Body::Header(UploadHeader {
                    name: "ring".into(),
                    graph_format: "npy".into(),
                    graph_bytes,
                    features_bytes,
                    edge_features_bytes: 0,
                })),
            },
            UploadGraphChunk {
                body: Some(Body::GraphData(graph.clone())),
            },
            UploadGraphChunk {
                body: Some(Body::FeaturesData(features.clone())),
            },
        ];
        let status = raw
            .upload_graph(tokio_stream::iter(chunks))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");
        assert!(
            status.message().contains(&format!("header.{field}")),
            "{status}"
        );
    }
}
