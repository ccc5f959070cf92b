//! Black-box tests of `distgat infer` on broken input.
//!
//! Every test starts from the valid `reference/quirks-n40-loops` case copied into a temporary
//! directory, breaks exactly one thing, and checks that the binary fails cleanly: non-zero
//! exit, an `error:` line that names the offending file (or flag) and says what is wrong, no
//! panic, and no output (final or `*.partial`) left behind.

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../reference/quirks-n40-loops"
);
const CASE_FILES: [&str; 5] = [
    "edge_index.npy",
    "x.npy",
    "model.json",
    "layer0.safetensors",
    "layer1.safetensors",
];
/// Nodes, feature columns and edges of the reference case.
const N: u64 = 40;
const F: u64 = 6;
const E: u64 = 104;

/// A valid run in a temporary directory; tests point a path elsewhere or overwrite a file.
struct Case {
    dir: tempfile::TempDir,
    graph: PathBuf,
    features: PathBuf,
    model: PathBuf,
    out: PathBuf,
    extra: Vec<OsString>,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in CASE_FILES {
            fs::copy(Path::new(REFERENCE).join(name), dir.path().join(name))
                .unwrap_or_else(|e| panic!("copying {name} from {REFERENCE}: {e}"));
        }
        fs::create_dir(dir.path().join("out")).expect("out dir");
        let p = |name: &str| dir.path().join(name);
        Case {
            graph: p("edge_index.npy"),
            features: p("x.npy"),
            model: p("model.json"),
            out: p("out/out.npy"),
            extra: Vec::new(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&mut self, arg: impl Into<OsString>) -> &mut Self {
        self.extra.push(arg.into());
        self
    }

    fn run(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_distgat"))
            .arg("infer")
            .arg("--graph")
            .arg(&self.graph)
            .arg("--features")
            .arg(&self.features)
            .arg("--model")
            .arg(&self.model)
            .arg("--out")
            .arg(&self.out)
            .args(&self.extra)
            .env_remove("RUST_LOG")
            .output()
            .expect("running distgat")
    }

    /// Runs and checks a clean failure whose stderr names `culprit` and contains every
    /// phrase of `problem`. Returns stderr.
    #[track_caller]
    fn expect_error(&self, culprit: &str, problem: &[&str]) -> String {
        let output = self.run();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success(),
            "distgat succeeded on bad input; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("error:"),
            "no 'error:' in stderr:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "distgat panicked:\n{stderr}");
        assert!(
            stderr.contains(culprit),
            "stderr does not name {culprit:?}:\n{stderr}"
        );
        for phrase in problem {
            assert!(
                stderr.contains(phrase),
                "stderr lacks {phrase:?}:\n{stderr}"
            );
        }
        assert!(
            !self.out.exists(),
            "{} exists after a failed run",
            self.out.display()
        );
        let out_dir = self.out.parent().expect("out has a parent");
        if out_dir.is_dir() {
            for entry in fs::read_dir(out_dir).expect("listing out dir") {
                let name = entry.expect("dir entry").file_name();
                assert!(
                    !name.to_string_lossy().ends_with(".partial"),
                    "temporary file {name:?} left in {}",
                    out_dir.display()
                );
            }
        }
        stderr
    }
}

fn read_npy<T: npyz::Deserialize>(path: &Path) -> (Vec<u64>, Vec<T>) {
    let bytes = fs::read(path).expect("read npy");
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec().expect("npy body"))
}

fn reference_edges() -> Vec<i64> {
    let (shape, ids) = read_npy::<i64>(&Path::new(REFERENCE).join("edge_index.npy"));
    assert_eq!(shape, [2, E]);
    ids
}

fn reference_features() -> Vec<f32> {
    let (shape, x) = read_npy::<f32>(&Path::new(REFERENCE).join("x.npy"));
    assert_eq!(shape, [N, F]);
    x
}

/// Rewrites `model.json` through `edit`.
fn edit_model(case: &Case, edit: impl FnOnce(&mut Value)) {
    let mut spec: Value =
        serde_json::from_str(&fs::read_to_string(&case.model).expect("model.json")).unwrap();
    edit(&mut spec);
    fs::write(&case.model, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
}

/// Rewrites a safetensors file through `edit`, which gets (name, view) pairs.
fn edit_weights(path: &Path, edit: impl FnOnce(&mut Vec<(String, TensorView<'_>)>)) {
    let bytes = fs::read(path).expect("weights");
    let tensors = SafeTensors::deserialize(&bytes).expect("valid weights");
    let mut list = tensors.tensors();
    edit(&mut list);
    safetensors::serialize_to_file(list, &None, path).expect("write weights");
}

/// A METIS ring over the 40 nodes: vertex v is linked to v - 1 and v + 1.
fn metis_ring(header_edges: u64, vertex_lines: u64) -> String {
    let mut text = format!("% ring\n{N} {header_edges}\n");
    for v in 1..=vertex_lines {
        let prev = if v == 1 { N } else { v - 1 };
        let next = if v == N { 1 } else { v + 1 };
        text.push_str(&format!("{prev} {next}\n"));
    }
    text
}

#[test]
fn valid_case_succeeds() {
    let case = Case::new();
    let output = case.run();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "valid run failed:\n{stderr}");
    let (shape, values) = read_npy::<f32>(&case.out);
    assert_eq!(shape, [N, 4]);
    assert!(values.iter().all(|v| v.is_finite()));
    // Text and METIS inputs of the same kind of graph also run.
    let mut text = Case::new();
    text.graph = text.path("g.txt");
    fs::write(&text.graph, "# comment\n0 1\n1 2\n2,3\n39\t0\n").unwrap();
    assert!(text.run().status.success());
    let mut metis = Case::new();
    metis.graph = metis.path("g.graph");
    fs::write(&metis.graph, metis_ring(N, N)).unwrap();
    assert!(metis.run().status.success());
}

#[test]
fn missing_graph_file() {
    let mut case = Case::new();
    case.graph = case.path("no_such_graph.npy");
    case.expect_error("no_such_graph.npy", &["No such file"]);
}

#[test]
fn missing_features_file() {
    let mut case = Case::new();
    case.features = case.path("no_such_x.npy");
    case.expect_error("no_such_x.npy", &["No such file"]);
}

#[test]
fn features_path_is_a_directory() {
    let mut case = Case::new();
    case.features = case.path("x_dir.npy");
    fs::create_dir(&case.features).unwrap();
    case.expect_error("x_dir.npy", &["directory"]);
}

#[test]
fn float32_edge_index() {
    let case = Case::new();
    let ids: Vec<f32> = reference_edges().iter().map(|&v| v as f32).collect();
    common::write_npy(&case.graph, &[2, E], &ids);
    case.expect_error("edge_index.npy", &["float32", "int64"]);
}

#[test]
fn uint8_features() {
    let case = Case::new();
    common::write_npy(&case.features, &[N, F], &vec![1u8; (N * F) as usize]);
    case.expect_error("x.npy", &["unsupported dtype", "float32"]);
}

#[test]
fn int64_features() {
    let case = Case::new();
    common::write_npy(&case.features, &[N, F], &vec![1i64; (N * F) as usize]);
    case.expect_error("x.npy", &["int64", "float32"]);
}

#[test]
fn edge_index_rank_1() {
    let case = Case::new();
    let ids = reference_edges();
    common::write_npy(&case.graph, &[2 * E], &ids);
    case.expect_error("edge_index.npy", &["shape [2, E]", "[208]"]);
}

#[test]
fn edge_index_three_rows() {
    let case = Case::new();
    let mut ids = reference_edges();
    ids.extend(0..E as i64);
    common::write_npy(&case.graph, &[3, E], &ids);
    case.expect_error("edge_index.npy", &["shape [2, E]", "[3, 104]"]);
}

#[test]
fn features_rank_1() {
    let case = Case::new();
    common::write_npy(&case.features, &[N * F], &reference_features());
    case.expect_error("x.npy", &["shape [N, F]", "[240]"]);
}

#[test]
fn truncated_npy_body() {
    let case = Case::new();
    let bytes = fs::read(&case.features).unwrap();
    fs::write(&case.features, &bytes[..bytes.len() - 10]).unwrap();
    case.expect_error("x.npy", &["truncated"]);
}

#[test]
fn corrupt_npy_header() {
    let case = Case::new();
    // Deterministic pseudo-random garbage (xorshift).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let garbage: Vec<u8> = (0..1792)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    fs::write(&case.graph, garbage).unwrap();
    case.expect_error("edge_index.npy", &["not a valid .npy file"]);
}

#[test]
fn npy_header_text_is_garbage() {
    let case = Case::new();
    // A correct magic and length, then a header that is not a Python dict.
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let text = format!("{:<117}\n", "{'descr': <f4 'shape' (40 6)");
    bytes.extend((text.len() as u16).to_le_bytes());
    bytes.extend(text.as_bytes());
    bytes.extend(vec![0u8; (N * F * 4) as usize]);
    fs::write(&case.features, bytes).unwrap();
    case.expect_error("x.npy", &["not a valid .npy file"]);
}

#[test]
fn negative_edge_id() {
    let case = Case::new();
    let mut ids = reference_edges();
    ids[E as usize + 7] = -3; // target of edge 7
    common::write_npy(&case.graph, &[2, E], &ids);
    case.expect_error("edge_index.npy", &["edge 7", "negative target id -3"]);
}

#[test]
fn edge_id_beyond_feature_rows() {
    let case = Case::new();
    let mut ids = reference_edges();
    ids[5] = N as i64; // source of edge 5
    common::write_npy(&case.graph, &[2, E], &ids);
    case.expect_error(
        "edge_index.npy",
        &["edge 5", "source id 40", "node count 40", "x.npy"],
    );
}

#[test]
fn edge_list_line_with_one_field() {
    let mut case = Case::new();
    case.graph = case.path("g.txt");
    fs::write(&case.graph, "0 1\n1 2\n3\n4 5\n").unwrap();
    case.expect_error("g.txt", &["line 3", "expected 2 fields", "found 1"]);
}

#[test]
fn edge_list_line_with_three_fields() {
    let mut case = Case::new();
    case.graph = case.path("g.edges");
    fs::write(&case.graph, "# header\n0 1\n1 2 7\n").unwrap();
    case.expect_error("g.edges", &["line 3", "expected 2 fields", "found 3"]);
}

#[test]
fn edge_list_non_numeric_token() {
    let mut case = Case::new();
    case.graph = case.path("g.csv");
    fs::write(&case.graph, "0,1\n1,2\n2,x3\n").unwrap();
    case.expect_error("g.csv", &["line 3", "'x3'", "not a non-negative integer"]);
}

#[test]
fn edge_list_negative_id() {
    let mut case = Case::new();
    case.graph = case.path("g.txt");
    fs::write(&case.graph, "0 1\n-1 2\n").unwrap();
    case.expect_error("g.txt", &["line 2", "'-1'", "not a non-negative integer"]);
}

#[test]
fn metis_too_few_vertex_lines() {
    let mut case = Case::new();
    case.graph = case.path("g.graph");
    fs::write(&case.graph, metis_ring(N, N - 1)).unwrap();
    case.expect_error("g.graph", &["declares 40 vertices", "only 39 vertex lines"]);
}

#[test]
fn metis_wrong_edge_count() {
    let mut case = Case::new();
    case.graph = case.path("g.graph");
    fs::write(&case.graph, metis_ring(N + 1, N)).unwrap();
    case.expect_error(
        "g.graph",
        &["declares 41 undirected edges", "80 adjacency entries"],
    );
}

#[test]
fn metis_too_many_vertex_lines() {
    let mut case = Case::new();
    case.graph = case.path("g.graph");
    let text = metis_ring(N, N) + "1 2\n";
    fs::write(&case.graph, text).unwrap();
    case.expect_error("g.graph", &["line 43", "more vertex lines"]);
}

#[test]
fn matrix_market_bad_banner() {
    let mut case = Case::new();
    case.graph = case.path("g.mtx");
    fs::write(
        &case.graph,
        "%%MatrixMarket tensor coordinate pattern general\n40 40 1\n1 2\n",
    )
    .unwrap();
    case.expect_error("g.mtx", &["line 1", "banner"]);
}

#[test]
fn matrix_market_missing_banner() {
    let mut case = Case::new();
    case.graph = case.path("g.mtx");
    fs::write(&case.graph, "40 40 1\n1 2\n").unwrap();
    case.expect_error("g.mtx", &["line 1", "banner"]);
}

#[test]
fn features_with_nan() {
    let case = Case::new();
    let mut x = reference_features();
    x[2 * F as usize + 3] = f32::NAN;
    common::write_npy(&case.features, &[N, F], &x);
    case.expect_error("x.npy", &["row 2, column 3", "NaN", "finite"]);
}

#[test]
fn an_overflowing_output_is_written_and_reported() {
    // Finite features so large that float32 overflows in the layers: the output is
    // written (PyG's float32 forward gives the same) and the warning counts the bad
    // values, whether the last layer's rows went only to the file or were kept for
    // the accuracy.
    let x = reference_features();
    let top = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let x: Vec<f32> = x.iter().map(|v| v / top * 3e38).collect();
    let inputs = Case::new();
    let labels = inputs.path("labels.npy");
    common::write_npy(&labels, &[N], &vec![0i64; N as usize]);
    let test_idx = inputs.path("test_idx.npy");
    common::write_npy(&test_idx, &[1], &[0i64]);
    let mut counts = Vec::new();
    for keep in [false, true] {
        let mut case = Case::new();
        common::write_npy(&case.features, &[N, F], &x);
        if keep {
            case.arg("--labels")
                .arg(&labels)
                .arg("--test-idx")
                .arg(&test_idx);
        }
        let output = case.run();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        assert!(case.out.exists());
        let (_, out) = read_npy::<f32>(&case.out);
        let bad = out.iter().filter(|v| !v.is_finite()).count();
        assert!(bad > 0, "no overflow to report");
        let want = format!("{bad} of {} output values are NaN or infinite", out.len());
        assert!(
            stderr.contains(&want),
            "keep = {keep}, want {want:?}:\n{stderr}"
        );
        counts.push(bad);
    }
    assert_eq!(counts[0], counts[1]);
}

#[test]
fn features_with_inf() {
    let case = Case::new();
    let mut x = reference_features();
    x[17 * F as usize] = f32::NEG_INFINITY;
    common::write_npy(&case.features, &[N, F], &x);
    case.expect_error("x.npy", &["row 17, column 0", "inf", "finite"]);
}

#[test]
fn float64_features_beyond_float32_range() {
    let case = Case::new();
    let mut x: Vec<f64> = reference_features().iter().map(|&v| v as f64).collect();
    x[1] = 1e300;
    common::write_npy(&case.features, &[N, F], &x);
    case.expect_error("x.npy", &["row 0, column 1", "float32 range"]);
}

#[test]
fn features_width_disagrees_with_model() {
    let case = Case::new();
    common::write_npy(
        &case.features,
        &[N, F + 1],
        &vec![0.5f32; (N * (F + 1)) as usize],
    );
    case.expect_error("x.npy", &["7 columns", "in_channels = 6"]);
}

#[test]
fn num_nodes_disagrees_with_feature_rows() {
    let mut case = Case::new();
    case.arg("--num-nodes").arg("41");
    case.expect_error("--num-nodes", &["41 nodes", "40 feature rows", "x.npy"]);
}

#[test]
fn model_json_does_not_parse() {
    let case = Case::new();
    fs::write(&case.model, "{\"format\": \"gat-model-v1\", \"layers\": [").unwrap();
    case.expect_error("model.json", &["not a valid model JSON"]);
}

#[test]
fn model_json_without_layers() {
    let case = Case::new();
    edit_model(&case, |m| m["layers"] = Value::Array(Vec::new()));
    case.expect_error("model.json", &["\"layers\" is empty"]);
}

#[test]
fn model_json_wrong_format() {
    let case = Case::new();
    edit_model(&case, |m| m["format"] = "gat-model-v2".into());
    case.expect_error(
        "model.json",
        &["\"format\" is \"gat-model-v2\"", "gat-model-v1"],
    );
}

#[test]
fn model_json_unknown_activation() {
    let case = Case::new();
    edit_model(&case, |m| m["activation"] = "gelu".into());
    case.expect_error("model.json", &["\"activation\" is \"gelu\""]);
}

#[test]
fn model_json_missing_weights_file() {
    let case = Case::new();
    edit_model(&case, |m| {
        m["layers"][1]["weights"] = "nope.safetensors".into()
    });
    case.expect_error("nope.safetensors", &["No such file"]);
}

#[test]
fn weights_missing_tensor() {
    let case = Case::new();
    let weights = case.path("layer0.safetensors");
    edit_weights(&weights, |list| list.retain(|(name, _)| name != "att_dst"));
    case.expect_error("layer0.safetensors", &["layers[0]", "'att_dst' is missing"]);
}

#[test]
fn weights_tensor_with_wrong_shape() {
    let case = Case::new();
    let weights = case.path("layer1.safetensors");
    edit_weights(&weights, |list| {
        for (name, view) in list.iter_mut() {
            if name == "att_src" {
                *view = TensorView::new(Dtype::F32, vec![1, 12], view.data()).unwrap();
            }
        }
    });
    case.expect_error(
        "layer1.safetensors",
        &[
            "layers[1]",
            "'att_src' has shape [1, 12]",
            "expected [1, 3, 4]",
        ],
    );
}

#[test]
fn weights_tensor_with_wrong_dtype() {
    let case = Case::new();
    let weights = case.path("layer0.safetensors");
    edit_weights(&weights, |list| {
        for (name, view) in list.iter_mut() {
            if name == "bias" {
                // The same 80 bytes (20 f32 values) relabelled as 20 i32 values
                // (F16/BF16/F64 would be widened; integers are refused).
                *view = TensorView::new(Dtype::I32, vec![20], view.data()).unwrap();
            }
        }
    });
    case.expect_error("layer0.safetensors", &["'bias' has dtype I32", "F32"]);
}

#[test]
fn weights_corrupt_header() {
    let case = Case::new();
    let mut bytes = 24u64.to_le_bytes().to_vec();
    bytes.extend(b"{this is not json at all");
    bytes.extend([0u8; 64]);
    fs::write(case.path("layer0.safetensors"), bytes).unwrap();
    case.expect_error("layer0.safetensors", &["not a valid safetensors file"]);
}

#[test]
fn weights_garbage_bytes() {
    let case = Case::new();
    fs::write(case.path("layer1.safetensors"), [0xffu8; 100]).unwrap();
    case.expect_error("layer1.safetensors", &["not a valid safetensors file"]);
}

#[test]
fn model_heads_disagree_with_tensors() {
    let case = Case::new();
    // 5 x 4 = 20 still matches lin.weight [20, 6], but not att_src [1, 4, 5].
    edit_model(&case, |m| {
        m["layers"][0]["heads"] = 5.into();
        m["layers"][0]["out_channels"] = 4.into();
    });
    case.expect_error(
        "layer0.safetensors",
        &[
            "'att_src' has shape [1, 4, 5]",
            "expected [1, 5, 4]",
            "heads = 5",
        ],
    );
}

#[test]
fn model_out_channels_disagree_with_tensors() {
    let case = Case::new();
    edit_model(&case, |m| m["layers"][1]["out_channels"] = 5.into());
    case.expect_error(
        "layer1.safetensors",
        &[
            "'lin.weight' has shape [12, 20]",
            "expected [15, in_channels]",
        ],
    );
}

#[test]
fn out_in_missing_directory() {
    let mut case = Case::new();
    case.out = case.path("no_such_dir/out.npy");
    case.expect_error("--out", &["no_such_dir", "does not exist"]);
}

#[test]
fn unknown_format_value() {
    let mut case = Case::new();
    case.arg("--format").arg("graphml");
    case.expect_error("--format", &["'graphml'"]);
}

#[test]
fn unknown_graph_extension() {
    let mut case = Case::new();
    case.graph = case.path("g.graphml");
    fs::write(&case.graph, "0 1\n").unwrap();
    case.expect_error("g.graphml", &["extension 'graphml'", "--format"]);
}

#[test]
fn format_flag_disagrees_with_file() {
    let mut case = Case::new();
    case.arg("--format").arg("edgelist");
    case.expect_error("edge_index.npy", &["line 1"]);
}

#[test]
fn zero_threads() {
    let mut case = Case::new();
    case.arg("--threads").arg("0");
    case.expect_error("--threads", &["at least 1"]);
}

// Known library bugs, each reproduced by the ignored test below; remove the `ignore` once
// fixed. Run them with `cargo test -p distgat-cli --test bad_input -- --ignored`.

#[test]
fn io_error_text_is_not_repeated() {
    let mut case = Case::new();
    case.graph = case.path("no_such_graph.npy");
    let stderr = case.expect_error("no_such_graph.npy", &["No such file"]);
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}

#[test]
fn edge_list_id_u64_max() {
    let mut case = Case::new();
    case.graph = case.path("g.txt");
    fs::write(&case.graph, "0 1\n0 18446744073709551615\n").unwrap();
    case.expect_error("g.txt", &["18446744073709551615"]);
}

#[test]
fn model_heads_times_channels_overflow() {
    let case = Case::new();
    edit_model(&case, |m| {
        m["layers"][0]["heads"] = (1u64 << 32).into();
        m["layers"][0]["out_channels"] = (1u64 << 32).into();
    });
    case.expect_error("layers[0]", &["heads"]);
}

#[test]
fn stats_json_in_missing_directory() {
    let mut case = Case::new();
    let stats = case.path("no_such_dir/stats.json");
    case.arg("--stats-json").arg(stats);
    case.expect_error("--stats-json", &["no_such_dir"]);
}

/// A text graph without line breaks (here `/dev/zero`: NUL bytes forever) is refused after
/// at most 64 MiB instead of being read into memory without end.
#[test]
fn text_graph_without_line_breaks_is_refused() {
    let mut case = Case::new();
    case.graph = PathBuf::from("/dev/zero");
    case.arg("--format").arg("edgelist");
    case.expect_error("/dev/zero", &["line 1", "longer than 64 MiB"]);
}

#[test]
fn stats_json_naming_the_output_is_refused() {
    let mut case = Case::new();
    let out = case.out.clone();
    case.arg("--stats-json").arg(&out);
    case.expect_error("--stats-json", &["also named by --out"]);
}

/// A worker stopped by SIGTERM or SIGINT while it still waits for its coordinator exits
/// with 128 + the signal's number and removes its temporary work directory (its help
/// says the directory goes when the worker stops; SIGTERM left it behind before).
#[test]
fn a_worker_stopped_while_starting_removes_its_work_dir() {
    for (signal, code) in [("-TERM", 143), ("-INT", 130)] {
        let tmp = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_distgat"))
            .args(["worker", "--coordinator", "127.0.0.1:1"])
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let work_dirs = || {
            fs::read_dir(tmp.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("distgat-worker-")
                })
                .count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while work_dirs() == 0 {
            assert!(std::time::Instant::now() < deadline, "no work directory");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Past the directory's creation, the signal handlers are up.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{signal}: {stderr}");
        assert!(stderr.contains("while starting"), "{stderr}");
        assert_eq!(work_dirs(), 0, "{signal}: the work directory is left");
    }
}
