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

/// W in-process "workers" exchanging through shared memory: a [`Collective`] per thread,
/// for tests that split a global layer's rows over workers without the network.
///
/// [`Collective`]: distgat_attention::Collective
pub mod loopback {
    use std::borrow::Cow;
    use std::sync::{Arc, Barrier, Mutex};

    use distgat_attention::{Collective, Result};

    struct Shared {
        barrier: Barrier,
        slots: Mutex<Vec<Vec<u8>>>,
        /// Every part's ids, in part order.
        ids: Vec<Vec<usize>>,
        n: usize,
    }

    /// One member of a group made by [`group`].
    pub struct Member {
        shared: Arc<Shared>,
        part: usize,
    }

    /// Members owning the nodes `assign[v] == p` for each part p (`parts` of them).
    pub fn group(assign: &[usize], parts: usize) -> Vec<Member> {
        let mut ids = vec![Vec::new(); parts];
        for (v, &p) in assign.iter().enumerate() {
            ids[p].push(v);
        }
        let shared = Arc::new(Shared {
            barrier: Barrier::new(parts),
            slots: Mutex::new(vec![Vec::new(); parts]),
            ids,
            n: assign.len(),
        });
        (0..parts)
            .map(|part| Member {
                shared: shared.clone(),
                part,
            })
            .collect()
    }

    impl Collective for Member {
        fn num_nodes(&self) -> usize {
            self.shared.n
        }
        fn own_ids(&self) -> &[usize] {
            &self.shared.ids[self.part]
        }
        fn all_gather_rows<'a>(&mut self, own: &'a [f32], width: usize) -> Result<Cow<'a, [f32]>> {
            let bytes = own.iter().flat_map(|v| v.to_le_bytes()).collect();
            let all = self.all_gather_bytes(bytes)?;
            let mut rows = vec![f32::NAN; self.shared.n * width];
            for (p, bytes) in all.iter().enumerate() {
                for (i, &v) in self.shared.ids[p].iter().enumerate() {
                    for j in 0..width {
                        let at = 4 * (i * width + j);
                        rows[v * width + j] =
                            f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
                    }
                }
            }
            Ok(Cow::Owned(rows))
        }
        fn all_gather_bytes(&mut self, own: Vec<u8>) -> Result<Vec<Vec<u8>>> {
            self.shared.slots.lock().unwrap()[self.part] = own;
            self.shared.barrier.wait();
            let all = self.shared.slots.lock().unwrap().clone();
            self.shared.barrier.wait();
            Ok(all)
        }
    }
}
