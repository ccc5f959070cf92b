//! Shared helpers of the integration tests: locating the shipped data and the PyG
//! reference cases, reading `.npy` files, the reference tolerance, an in-process cluster,
//! throwaway certificates ([`certs`]) and metrics scrapes ([`scrape`]).

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

/// Throwaway TLS certificates made with rcgen at test time (no key is committed): the
/// integration tests' and the `test_certs` example's (which python/tests/check_client_tls.py
/// runs).
pub mod certs {
    use std::path::{Path, PathBuf};

    use distgat_client::TlsFiles;

    /// A CA and one certificate it signed (for 127.0.0.1 and localhost), as PEM files
    /// `<name>-ca.pem`, `<name>-cert.pem` and `<name>-key.pem`.
    pub struct Pki {
        pub ca: PathBuf,
        pub cert: PathBuf,
        pub key: PathBuf,
    }

    /// Makes a new CA named `name` and a certificate it signed for 127.0.0.1 and localhost
    /// (usable by servers and as a client certificate), written into `dir`.
    pub fn pki(dir: &Path, name: &str) -> std::io::Result<Pki> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let bad = |e: rcgen::Error| std::io::Error::other(format!("rcgen: {e}"));
        let ca_key = KeyPair::generate().map_err(bad)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let ca = params.self_signed(&ca_key).map_err(bad)?;
        let key = KeyPair::generate().map_err(bad)?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .map_err(bad)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} node"));
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(bad)?;
        let write = |file: &str, text: String| {
            let path = dir.join(format!("{name}-{file}"));
            std::fs::write(&path, text)?;
            Ok::<_, std::io::Error>(path)
        };
        Ok(Pki {
            ca: write("ca.pem", ca.pem())?,
            cert: write("cert.pem", cert.pem())?,
            key: write("key.pem", key.serialize_pem())?,
        })
    }

    impl Pki {
        /// A server's (coordinator's or worker's) files: certificate, key and CA.
        pub fn server(&self) -> TlsFiles {
            TlsFiles {
                cert: Some(self.cert.clone()),
                key: Some(self.key.clone()),
                ca: Some(self.ca.clone()),
                ..Default::default()
            }
        }

        /// What a CLI or Python user has: the CA only.
        pub fn client(&self) -> TlsFiles {
            TlsFiles {
                ca: Some(self.ca.clone()),
                ..Default::default()
            }
        }
    }
}

/// Reading a `--metrics-listen` endpoint.
pub mod scrape {
    /// `GET path` over HTTP/1.1 on `addr`: the status line and the body.
    pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
        (
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        )
    }

    /// The value of the sample `name` (with its labels, as exposed) in a scrape, if listed.
    pub fn find_sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .map(|v| v.trim().parse().unwrap())
    }

    /// The value of the sample `name` in a scrape; panics when it is not listed.
    pub fn sample(text: &str, name: &str) -> f64 {
        find_sample(text, name).unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
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
