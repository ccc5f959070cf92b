//! Helpers shared by the black-box tests of the `distgat` binary over the reference cases.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};

/// The repository root.
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `reference/<case>/<file>` in the repository.
pub fn reference(case: &str, file: &str) -> PathBuf {
    Path::new(ROOT).join("reference").join(case).join(file)
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The array bytes of an `.npy` (everything after the header).
pub fn body(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize + 10;
    bytes[header_len..].to_vec()
}

/// `Coordinator.RunJob` on a running coordinator: the summary JSON, or the status message.
pub fn run_job(
    coordinator: &str,
    request: distgat_proto::v1::RunJobRequest,
) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = distgat_proto::v1::coordinator_client::CoordinatorClient::connect(
            format!("http://{coordinator}"),
        )
        .await
        .unwrap();
        client
            .run_job(request)
            .await
            .map(|r| r.into_inner().summary_json)
            .map_err(|status| status.message().to_string())
    })
}

/// Processes of a test cluster (`distgat coordinator`, `distgat worker`), killed and
/// reaped on drop, so a failing test leaves nothing running. Each runs with `TMPDIR` in a
/// directory of the cluster's own, removed after the kill: a SIGKILLed worker cannot
/// remove its temporary work dir itself, and those piled up in `/tmp` (32 MB each).
pub struct Children(pub Vec<std::process::Child>, tempfile::TempDir);

impl Default for Children {
    fn default() -> Self {
        Children(Vec::new(), tempfile::tempdir().expect("a temporary dir"))
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Children {
    /// Spawns `cmd` (stdout piped; stderr as `cmd` says, inherited by default), keeps it,
    /// and returns the address of its first stdout line, `listening on ADDR`. `what` names
    /// the process in panics.
    pub fn start(&mut self, cmd: std::process::Command, what: &str) -> String {
        self.start_with_stderr(cmd, what).0
    }

    /// [`Children::start`], also handing back the child's stderr when `cmd` pipes it.
    pub fn start_with_stderr(
        &mut self,
        mut cmd: std::process::Command,
        what: &str,
    ) -> (String, Option<std::process::ChildStderr>) {
        use std::io::BufRead;
        let mut child = cmd
            .env("TMPDIR", self.1.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take();
        self.0.push(child);
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading {what}'s first line: {e}"));
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{what}: unexpected first line '{line}'"))
            .to_string();
        (addr, stderr)
    }
}

/// Writes `data` as an `.npy` of `shape` (dtype from `T`).
pub fn write_npy<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[u64],
    data: &[T],
) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    use npyz::WriterBuilder;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut file)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
    std::io::Write::flush(&mut file).unwrap();
}

/// A GATConv stack with random weights in `dir`: `layer{k}.safetensors` per layer and
/// `model.json` (ELU between layers), returned. `layers` are `(F_in, heads, out_channels,
/// concat)`; `uniform(len, scale)` gives `len` values in `[-scale, scale]`, drawn tensor by
/// tensor in the order lin.weight, att_src, att_dst, bias.
pub fn write_random_gat_model(
    dir: &Path,
    layers: &[(usize, usize, usize, bool)],
    mut uniform: impl FnMut(usize, f32) -> Vec<f32>,
) -> PathBuf {
    let mut specs = Vec::new();
    for (k, &(fin, h, c, concat)) in layers.iter().enumerate() {
        let out = if concat { h * c } else { c };
        let tensors = [
            ("lin.weight", vec![h * c, fin], uniform(h * c * fin, 0.1)),
            ("att_src", vec![1, h, c], uniform(h * c, 0.3)),
            ("att_dst", vec![1, h, c], uniform(h * c, 0.3)),
            ("bias", vec![out], uniform(out, 0.1)),
        ];
        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|t| t.2.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views: Vec<_> = tensors
            .iter()
            .zip(&bytes)
            .map(|(t, b)| {
                (
                    t.0.to_string(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.1.clone(), b)
                        .unwrap(),
                )
            })
            .collect();
        let name = format!("layer{k}.safetensors");
        safetensors::serialize_to_file(views, &None, &dir.join(&name)).unwrap();
        specs.push(
            serde_json::json!({"weights": name, "heads": h, "out_channels": c, "concat": concat}),
        );
    }
    let model = serde_json::json!({"format": "gat-model-v1", "activation": "elu", "layers": specs});
    let path = dir.join("model.json");
    std::fs::write(&path, model.to_string()).unwrap();
    path
}
