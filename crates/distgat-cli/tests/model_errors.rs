//! Black-box tests of `distgat infer` on models and edge features it must refuse (or
//! accept exactly): nothing a model file says, and no tensor it holds, is ever silently
//! ignored. Each test copies one attention reference case into a temporary directory,
//! changes one thing and checks the exit status, the `error:` line and that no output is
//! left behind.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn reference(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../reference")
        .join(case)
}

struct Case {
    dir: tempfile::TempDir,
    edge_features: Option<PathBuf>,
    extra: Vec<String>,
}

impl Case {
    fn new(case: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(reference(case)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
            }
        }
        let ea = dir.path().join("edge_attr.npy");
        Case {
            edge_features: ea.exists().then_some(ea),
            dir,
            extra: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_with_model(&self, model: &Path) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_distgat"));
        cmd.arg("infer")
            .arg("--graph")
            .arg(self.path("edge_index.npy"))
            .arg("--features")
            .arg(self.path("x.npy"))
            .arg("--model")
            .arg(model)
            .arg("--out")
            .arg(self.path("out.npy"))
            .args(&self.extra)
            .env_remove("RUST_LOG");
        if let Some(e) = &self.edge_features {
            cmd.arg("--edge-features").arg(e);
        }
        cmd.output().unwrap()
    }

    fn run(&self) -> Output {
        self.run_with_model(&self.path("model.json"))
    }

    #[track_caller]
    fn expect_error(&self, phrases: &[&str]) -> String {
        self.expect_error_output(self.run(), phrases)
    }

    #[track_caller]
    fn expect_error_output(&self, output: Output, phrases: &[&str]) -> String {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success(),
            "succeeded on bad input:\n{stderr}"
        );
        assert!(stderr.contains("error:"), "no 'error:' line:\n{stderr}");
        assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
        for p in phrases {
            assert!(stderr.contains(p), "stderr lacks {p:?}:\n{stderr}");
        }
        assert!(!self.path("out.npy").exists(), "output left behind");
        stderr
    }

    #[track_caller]
    fn expect_success(&self) -> Vec<f32> {
        let output = self.run();
        assert!(
            output.status.success(),
            "failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        read_f32(&self.path("out.npy"))
    }

    fn edit_model(&self, edit: impl FnOnce(&mut Value)) {
        let path = self.path("model.json");
        let mut spec: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut spec);
        fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    }

    /// Rewrites `model.safetensors` from (name, dtype, shape, bytes) entries.
    fn edit_weights(&self, edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) {
        let path = self.path("model.safetensors");
        let bytes = fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut list: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
            .collect();
        edit(&mut list);
        let views: Vec<(String, TensorView<'_>)> = list
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, &None, &path).unwrap();
    }
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = fs::read(path).unwrap();
    npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap()
}

fn rename_tensor(list: &mut [(String, Dtype, Vec<usize>, Vec<u8>)], from: &str, to: &str) {
    let t = list
        .iter_mut()
        .find(|t| t.0 == from)
        .unwrap_or_else(|| panic!("no {from}"));
    t.0 = to.to_string();
}

#[test]
fn misspelt_argument_is_an_error() {
    let case = Case::new("gat-residual-edge-n120");
    case.edit_model(|m| {
        let args = m["layers"][0]["args"].as_object_mut().unwrap();
        let v = args.remove("add_self_loops").unwrap();
        args.insert("add_self_loop".into(), v);
    });
    case.expect_error(&[
        "model.json",
        "layers[0].args (GATConv)",
        "unknown field `add_self_loop`",
    ]);
}

#[test]
fn misspelt_key_in_gat_model_v1_is_an_error() {
    let case = Case::new("er-n200");
    case.edit_model(|m| {
        let l = m["layers"][1].as_object_mut().unwrap();
        let v = l.remove("add_self_loops").unwrap();
        l.insert("add_self_loop".into(), v);
    });
    case.expect_error(&["model.json", "layers[1]", "unknown field `add_self_loop`"]);
}

#[test]
fn unknown_top_level_and_layer_keys_are_errors() {
    let case = Case::new("gatv2-n200");
    case.edit_model(|m| m["activaton"] = "relu".into());
    case.expect_error(&["model.json", "unknown field `activaton`"]);
    let case = Case::new("gatv2-n200");
    case.edit_model(|m| m["layers"][1]["prefx"] = "layers.1.".into());
    case.expect_error(&["model.json", "layers[1]", "unknown field `prefx`"]);
}

#[test]
fn message_passing_options_distgat_does_not_run_are_errors() {
    let case = Case::new("transformer-mean-noroot-n150");
    case.edit_model(|m| m["layers"][0]["args"]["aggr"] = "mean".into());
    case.expect_error(&[
        "layers[0].args (TransformerConv)",
        "`aggr`",
        "sum aggregation",
    ]);
}

#[test]
fn unknown_kinds_and_other_kinds_arguments_are_errors() {
    let case = Case::new("gatv2-n200");
    case.edit_model(|m| m["layers"][0]["kind"] = "GATv3Conv".into());
    case.expect_error(&[
        "unknown kind \"GATv3Conv\"",
        "GATConv, GATv2Conv, TransformerConv",
    ]);
    // A global kind is known: GATv2Conv's arguments are not its arguments.
    let case = Case::new("gatv2-n200");
    case.edit_model(|m| m["layers"][1]["kind"] = "MultiheadAttention".into());
    case.expect_error(&[
        "layers[1].args (MultiheadAttention)",
        "unknown field `add_self_loops`",
    ]);
}

#[test]
fn bipartite_layers_are_refused() {
    let case = Case::new("gatv2-n200");
    case.edit_model(|m| m["layers"][0]["args"]["in_channels"] = serde_json::json!([16, 16]));
    case.expect_error(&["layers[0]", "bipartite"]);
    // GATConv with separate source and target maps (older PyG names).
    let case = Case::new("er-n200");
    let path = case.path("layer0.safetensors");
    let bytes = fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("lin.weight").unwrap();
    let mut other = w.data().to_vec();
    other[0] ^= 1;
    let mut views: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "lin.weight")
        .collect();
    views.push(("lin_src.weight".into(), w.clone()));
    views.push((
        "lin_dst.weight".into(),
        TensorView::new(Dtype::F32, w.shape().to_vec(), &other).unwrap(),
    ));
    safetensors::serialize_to_file(views, &None, &path).unwrap();
    case.expect_error(&[
        "layer0.safetensors",
        "'lin_src.weight' and 'lin_dst.weight' differ",
        "bipartite",
    ]);
}

#[test]
fn a_tensor_no_layer_uses_is_an_error() {
    // A classifier head saved with the model would be silently dropped.
    let case = Case::new("gatv2-n200");
    case.edit_weights(|list| {
        list.push(("head.weight".into(), Dtype::F32, vec![2, 2], vec![0u8; 16]));
    });
    case.expect_error(&["model.safetensors", "'head.weight' is used by no layer"]);
}

#[test]
fn residual_and_edge_tensors_without_their_flags_are_errors() {
    // The failure that motivated all this: residual=True / edge_dim trained, but the
    // model file does not say so. Before, distgat exited 0 with wrong numbers.
    let case = Case::new("gat-residual-edge-n120");
    case.edit_model(|m| m["layers"][0]["args"]["residual"] = false.into());
    case.expect_error(&["'layers.0.res.weight' is used by no layer", "residual"]);
    let mut case = Case::new("gat-residual-edge-n120");
    case.edit_model(|m| {
        for l in m["layers"].as_array_mut().unwrap() {
            l["args"]["edge_dim"] = Value::Null;
        }
    });
    case.edge_features = None;
    case.expect_error(&["used by no layer", "edge_dim"]);
}

#[test]
fn wrong_tensor_shape_for_each_kind() {
    for (case, tensor, expect) in [
        (
            "gat-residual-edge-n120",
            "layers.0.att_edge",
            "expected [1, 4, 8]",
        ),
        ("gatv2-n200", "layers.1.lin_r.weight", "expected [18, 32]"),
        (
            "transformer-edge-beta-n200",
            "layers.0.lin_beta.weight",
            "expected [1, 96]",
        ),
    ] {
        let c = Case::new(case);
        c.edit_weights(|list| {
            let t = list.iter_mut().find(|t| t.0 == tensor).unwrap();
            let n: usize = t.2.iter().product();
            t.2 = vec![n];
        });
        c.expect_error(&["model.safetensors", tensor, expect]);
    }
}

#[test]
fn missing_tensor_is_named() {
    let case = Case::new("transformer-edge-beta-n200");
    case.edit_weights(|list| list.retain(|t| t.0 != "layers.1.lin_edge.weight"));
    case.expect_error(&["layers[1]", "'layers.1.lin_edge.weight' is missing"]);
}

#[test]
fn edge_features_are_checked_against_graph_and_model() {
    let mut case = Case::new("gat-residual-edge-n120");
    let ea = read_f32(&case.path("edge_attr.npy"));
    let rows = ea.len() / 3;
    // Rows != edges.
    let short = case.path("short.npy");
    common::write_npy(&short, &[rows as u64 - 1, 3], &ea[..ea.len() - 3]);
    case.edge_features = Some(short);
    case.expect_error(&[
        "short.npy",
        &format!("{} rows of edge features", rows - 1),
        &format!("{rows} edges"),
    ]);
    // Width != edge_dim.
    let wide = case.path("wide.npy");
    common::write_npy(&wide, &[rows as u64, 1], &ea[..rows]);
    case.edge_features = Some(wide);
    case.expect_error(&["--edge-features", "wide.npy", "1 columns", "edge_dim = 3"]);
    // NaN.
    let mut bad = ea.clone();
    bad[7] = f32::NAN;
    let nan = case.path("nan.npy");
    common::write_npy(&nan, &[rows as u64, 3], &bad);
    case.edge_features = Some(nan);
    case.expect_error(&["nan.npy", "row 2, column 1", "edge features must be finite"]);
    // Missing while the model needs them.
    case.edge_features = None;
    case.expect_error(&["layers[0] (GATConv) has edge_dim = 3", "--edge-features"]);
}

#[test]
fn edge_features_for_a_model_without_edge_dim_are_an_error() {
    let mut case = Case::new("gatv2-n200");
    let e = read_f32(&case.path("x.npy")).len(); // any float file of the right shape
    let _ = e;
    let edges: Vec<i64> = {
        let bytes = fs::read(case.path("edge_index.npy")).unwrap();
        npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap()
    };
    let ea = case.path("edge_attr.npy");
    common::write_npy(
        &ea,
        &[edges.len() as u64 / 2, 3],
        &vec![0.5; edges.len() / 2 * 3],
    );
    case.edge_features = Some(ea);
    case.expect_error(&[
        "--edge-features",
        "no layer of the model has edge_dim",
        "ignored",
    ]);
}

#[test]
fn a_safetensors_file_given_as_the_model_is_named() {
    let case = Case::new("gatv2-n200");
    let output = case.run_with_model(&case.path("model.safetensors"));
    case.expect_error_output(
        output,
        &[
            "model.safetensors",
            "expected a model JSON",
            "found a safetensors weights file",
        ],
    );
}

#[test]
fn half_and_double_weights_are_widened() {
    let reference = Case::new("gatv2-n200").expect_success();
    for dtype in [Dtype::F64, Dtype::F16, Dtype::BF16] {
        let case = Case::new("gatv2-n200");
        case.edit_weights(|list| {
            for t in list.iter_mut() {
                let values: Vec<f32> =
                    t.3.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                t.3 = match dtype {
                    Dtype::F64 => values
                        .iter()
                        .flat_map(|&v| (v as f64).to_le_bytes())
                        .collect(),
                    Dtype::F16 => values
                        .iter()
                        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                        .collect(),
                    _ => values
                        .iter()
                        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                        .collect(),
                };
                t.1 = dtype;
            }
        });
        let out = case.expect_success();
        // F64 -> F32 is exact here (the values were F32); halves lose precision.
        let tol = if dtype == Dtype::F64 { 0.0 } else { 0.05 };
        let worst = out
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= tol, "{dtype:?}: max difference {worst}");
    }
}

#[test]
fn older_pyg_state_dict_names_give_the_same_output() {
    let want = Case::new("gat-residual-edge-n120").expect_success();
    // PyG 2.0-2.2: lin_src / lin_dst (one tensor, saved twice).
    let case = Case::new("gat-residual-edge-n120");
    case.edit_weights(|list| {
        let copy = list
            .iter()
            .find(|t| t.0 == "layers.0.lin.weight")
            .unwrap()
            .clone();
        rename_tensor(list, "layers.0.lin.weight", "layers.0.lin_src.weight");
        list.push(("layers.0.lin_dst.weight".into(), copy.1, copy.2, copy.3));
    });
    assert_eq!(case.expect_success(), want);
    // PyG 1.x: lin_l / lin_r, att_l (source) / att_r (target).
    let case = Case::new("gat-residual-edge-n120");
    case.edit_weights(|list| {
        rename_tensor(list, "layers.1.lin.weight", "layers.1.lin_l.weight");
        rename_tensor(list, "layers.1.att_src", "layers.1.att_l");
        rename_tensor(list, "layers.1.att_dst", "layers.1.att_r");
    });
    assert_eq!(case.expect_success(), want);
}

#[test]
fn gatv2_shared_weights_must_really_be_shared() {
    let case = Case::new("gatv2-shared-edge-noloops-n150");
    case.edit_weights(|list| {
        let t = list
            .iter_mut()
            .find(|t| t.0 == "layers.0.lin_r.weight")
            .unwrap();
        t.3[0] ^= 1;
    });
    case.expect_error(&["share_weights is true", "'layers.0.lin_r' differs"]);
}

#[test]
fn a_key_given_twice_is_an_error_not_last_one_wins() {
    let case = Case::new("gatv2-n200");
    let path = case.path("model.json");
    let text = fs::read_to_string(&path).unwrap();
    // The first "negative_slope" gets a second copy with another value.
    let doubled = text.replacen(
        "\"negative_slope\": 0.2,",
        "\"negative_slope\": 0.2, \"negative_slope\": 5.0,",
        1,
    );
    assert_ne!(doubled, text);
    fs::write(&path, doubled).unwrap();
    case.expect_error(&[
        "model.json",
        "layers[0]",
        "duplicate field `negative_slope`",
    ]);
}

#[test]
fn a_multi_layer_attention_model_must_name_its_activation() {
    let case = Case::new("gatv2-n200");
    case.edit_model(|m| {
        m.as_object_mut().unwrap().remove("activation");
    });
    case.expect_error(&["model.json", "\"activation\" is missing"]);
}

#[test]
fn one_weights_file_named_two_ways_is_one_file() {
    let want = Case::new("gatv2-n200").expect_success();
    let case = Case::new("gatv2-n200");
    let absolute = case.path("model.safetensors").display().to_string();
    case.edit_model(|m| m["layers"][1]["weights"] = absolute.into());
    assert_eq!(case.expect_success(), want);
}

#[test]
fn outputs_that_cannot_be_written_are_refused_before_any_work() {
    let mut case = Case::new("gatv2-n200");
    fs::write(case.path("afile"), b"x").unwrap();
    case.extra = vec![
        "--attention-dir".into(),
        case.path("afile").display().to_string(),
    ];
    case.expect_error(&["--attention-dir", "afile", "is not a directory"]);
    case.extra = vec!["--stats-json".into(), case.dir.path().display().to_string()];
    case.expect_error(&["--stats-json", "is a directory"]);
}

/// A weights file or model JSON that is a device (`/dev/zero` never ends), a directory or
/// a FIFO is refused by name before it is read.
#[test]
fn weights_and_model_files_must_be_regular_files() {
    let case = Case::new("gatv2-n200");
    case.edit_model(|m| m["layers"][0]["weights"] = Value::from("/dev/zero"));
    case.expect_error(&["/dev/zero", "not a regular file (a device, FIFO or socket)"]);

    let case = Case::new("gatv2-n200");
    let output = case.run_with_model(Path::new("/dev/zero"));
    case.expect_error_output(output, &["/dev/zero", "not a regular file"]);

    let case = Case::new("gatv2-n200");
    let output = case.run_with_model(case.dir.path());
    case.expect_error_output(output, &["not a regular file (a directory)"]);
}
