//! Shared helpers of the integration tests: locating the shipped data and the PyG
//! reference cases, reading `.npy` files, and the reference tolerance.

use std::path::{Path, PathBuf};

use distgat_graph::NpyBody;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// `reference/<case>`: a PyG 2.8.1 conformance case (see reference/README.md).
pub fn reference_case(case: &str) -> PathBuf {
    repo_root().join("reference").join(case)
}

pub fn read_f64(path: &Path) -> (Vec<u64>, Vec<f64>) {
    let body = NpyBody::open(path).unwrap_or_else(|e| panic!("{e}"));
    let shape = body.shape.clone();
    (shape, body.read_f64(path).unwrap_or_else(|e| panic!("{e}")))
}

pub fn read_i64(path: &Path) -> (Vec<u64>, Vec<i64>) {
    let body = NpyBody::open(path).unwrap_or_else(|e| panic!("{e}"));
    let shape = body.shape.clone();
    (shape, body.read_i64(path).unwrap_or_else(|e| panic!("{e}")))
}

/// The reference README's check: `|a - b| <= 1e-4 + 1e-4 * |b|` for every element, and
/// no NaN or Inf. Panics naming the first offending element.
pub fn assert_close(what: &str, ours: &[f64], expected: &[f64], width: usize) {
    assert_eq!(ours.len(), expected.len(), "{what}: length");
    let mut worst = 0f64;
    for (k, (&a, &b)) in ours.iter().zip(expected).enumerate() {
        assert!(
            a.is_finite(),
            "{what}: non-finite value {a} at row {}",
            k / width
        );
        let err = (a - b).abs();
        worst = worst.max(err);
        assert!(
            err <= 1e-4 + 1e-4 * b.abs(),
            "{what}: row {}, column {}: ours {a}, expected {b} (|diff| = {err:e})",
            k / width,
            k % width
        );
    }
    eprintln!("{what}: max |diff| = {worst:e}");
}

/// An in-process coordinator and workers on ephemeral loopback ports, all stopped when it
/// is dropped. The coordinator's data root is the repository and its work dir
/// `<temp>/work`, unless the config edit says otherwise.
pub struct TestCluster {
    /// The coordinator's host:port.
    pub address: String,
    /// The temporary directory holding the coordinator's work dir (`work/`).
    pub temp: tempfile::TempDir,
    /// The coordinator first, then the workers.
    pub servers: Vec<distgat_runtime::RunningServer>,
}

impl TestCluster {
    /// Starts the coordinator (its config adjusted by `coordinator`) and `workers` workers
    /// (each config adjusted by `worker`; their coordinator address is already set).
    pub async fn start(
        workers: usize,
        coordinator: impl FnOnce(&mut distgat_runtime::CoordinatorConfig),
        worker: impl Fn(&mut distgat_runtime::WorkerConfig),
    ) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut config = distgat_runtime::CoordinatorConfig {
            data_root: repo_root(),
            work_dir: temp.path().join("work"),
            ..Default::default()
        };
        coordinator(&mut config);
        let server = distgat_runtime::start_coordinator(config)
            .await
            .expect("starting the coordinator");
        let mut cluster = TestCluster {
            address: server.addr.to_string(),
            temp,
            servers: vec![server],
        };
        for _ in 0..workers {
            cluster.add_worker(&worker).await;
        }
        cluster
    }

    /// Starts one more worker of this coordinator (its config adjusted by `edit`) and
    /// returns its server handle's index in `servers`.
    pub async fn add_worker(&mut self, edit: impl Fn(&mut distgat_runtime::WorkerConfig)) -> usize {
        let mut config = distgat_runtime::WorkerConfig {
            coordinator: self.address.clone(),
            ..Default::default()
        };
        edit(&mut config);
        let server = distgat_runtime::start_worker(config)
            .await
            .expect("starting a worker");
        self.servers.push(server);
        self.servers.len() - 1
    }

    /// The coordinator's work dir.
    pub fn work_dir(&self) -> PathBuf {
        self.temp.path().join("work")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for s in self.servers.drain(..) {
            let _ = s.shutdown.send(());
            s.join.abort();
        }
    }
}
