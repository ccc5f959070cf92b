//! Black-box tests of `distgat infer` (and `distgat run`) with global attention layers
//! (`MultiheadAttention`, `NystromAttention`): no graph needed, the reference cases
//! reproduced, the approximation error reported, and every bad model refused with an error
//! naming the file and the field or tensor.

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
        Case { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `distgat infer --features x.npy --model model.json --out out.npy` plus `extra`.
    fn infer(&self, extra: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_distgat"))
            .arg("infer")
            .arg("--features")
            .arg(self.path("x.npy"))
            .arg("--model")
            .arg(self.path("model.json"))
            .arg("--out")
            .arg(self.path("out.npy"))
            .args(extra)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    #[track_caller]
    fn expect_error(&self, extra: &[&str], phrases: &[&str]) -> String {
        let output = self.infer(extra);
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

    fn edit_model(&self, edit: impl FnOnce(&mut Value)) {
        let path = self.path("model.json");
        let mut spec: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut spec);
        fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    }

    /// Rewrites `model.safetensors` with one tensor reshaped to `shape` (same bytes).
    fn reshape_tensor(&self, name: &str, shape: Vec<usize>) {
        let path = self.path("model.safetensors");
        let bytes = fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let list: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                let s = if n == name {
                    shape.clone()
                } else {
                    v.shape().to_vec()
                };
                (n, v.dtype(), s, v.data().to_vec())
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = list
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, &None, &path).unwrap();
    }
}

fn read_f64(path: &Path) -> Vec<f64> {
    let bytes = fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    match npy.dtype() {
        npyz::DType::Plain(t) if t.size_field() == 4 => npy
            .into_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
        _ => npy.into_vec::<f64>().unwrap(),
    }
}

#[track_caller]
fn assert_matches_reference(case: &Case, name: &str) {
    let ours = read_f64(&case.path("out.npy"));
    let want = read_f64(&reference(name).join("expected/out_f64.npy"));
    assert_eq!(ours.len(), want.len());
    for (k, (a, b)) in ours.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 + 1e-4 * b.abs(),
            "{name}: element {k}: ours {a}, expected {b}"
        );
    }
}

#[test]
fn multihead_attention_runs_without_a_graph_and_matches_torch() {
    let case = Case::new("mha-global-n256");
    let output = case.infer(&["--threads", "2"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_matches_reference(&case, "mha-global-n256");
}

#[test]
fn nystrom_matches_the_package_and_reports_its_error() {
    let case = Case::new("nystrom-n512-m32");
    let stats = case.path("stats.json");
    let output = case.infer(&[
        "--report-approximation-error",
        "--stats-json",
        stats.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_matches_reference(&case, "nystrom-n512-m32");
    assert!(
        stdout.contains(
            "layer 0 (NystromAttention): relative Frobenius error vs exact attention: 4.417"
        ),
        "{stdout}"
    );
    let report: Value = serde_json::from_str(&fs::read_to_string(&stats).unwrap()).unwrap();
    let err = report["layers"][0]["approximation_error"].as_f64().unwrap();
    // The manifest's rel_fro_err_nystrom_f64_vs_exact: 0.04417189818218729.
    assert!((err - 0.044_171_898).abs() < 1e-5, "{err}");
    assert_eq!(report["layers"][0]["kind"], "NystromAttention");
}

#[test]
fn multihead_attention_with_approx_runs_and_reports() {
    let case = Case::new("mha-global-n256");
    case.edit_model(|m| {
        m["layers"][0]["args"]["approx"] =
            serde_json::json!({"method": "nystrom", "landmarks": 48, "pinv_iterations": 6});
    });
    let output = case.infer(&["--report-approximation-error"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 256 = 5·48 + 16: 32 padded rows; random features, so a coarse approximation.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("layer 0 (MultiheadAttention): relative Frobenius error"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let err: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(err > 0.0 && err < 1.0, "{line}");
}

#[test]
fn the_report_flag_without_an_approximated_layer_is_an_error() {
    Case::new("mha-global-n256").expect_error(
        &["--report-approximation-error"],
        &[
            "--report-approximation-error",
            "no layer of",
            "approximates",
        ],
    );
}

#[test]
fn graph_inputs_for_a_global_model_are_refused() {
    let case = Case::new("mha-global-n256");
    let graph = reference("gatv2-n200").join("edge_index.npy");
    case.expect_error(
        &["--graph", graph.to_str().unwrap()],
        &["--graph", "global attention over all nodes", "drop it"],
    );
    let ea = reference("gat-residual-edge-n120").join("edge_attr.npy");
    case.expect_error(
        &["--edge-features", ea.to_str().unwrap()],
        &["--edge-features", "reads no edge features"],
    );
    let dir = case.path("att");
    case.expect_error(
        &["--attention-dir", dir.to_str().unwrap()],
        &["--attention-dir", "no per-edge coefficients"],
    );
}

#[test]
fn a_graph_model_without_a_graph_is_refused() {
    let case = Case::new("gatv2-n200");
    case.expect_error(
        &[],
        &[
            "--graph",
            "missing",
            "layers[0] (GATv2Conv)",
            "attends over a graph",
        ],
    );
}

/// `distgat run` plus `args`; stderr is checked for panics.
fn run(args: &[&std::ffi::OsStr]) -> Output {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_distgat"))
        .arg("run")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    output
}

/// Issue 12's distributed global attention: `distgat run` without a graph gives exactly
/// `distgat infer`'s bytes for exact MultiheadAttention, NystromAttention and a Nyström
/// `approx` whose landmarks do not divide N, on 1-4 workers, with contiguous (`range`,
/// the default without a graph) and scattered (`random`) node splits; each part reports
/// the bytes it sent.
#[test]
fn distgat_run_gives_infers_bytes_for_global_models_on_any_worker_count() {
    let approx = Case::new("mha-global-n256");
    approx.edit_model(|spec| {
        spec["layers"][0]["args"]["approx"] =
            serde_json::json!({"method": "nystrom", "landmarks": 7});
    });
    for (case, workers) in [
        (Case::new("mha-global-n256"), &[1usize, 2, 3][..]),
        (Case::new("nystrom-n512-m32"), &[2, 4][..]),
        (approx, &[3][..]),
    ] {
        let out = case.infer(&[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = common::body(&case.path("out.npy"));
        for &w in workers {
            for method in ["range", "random"] {
                let dest = case.path(&format!("run-{w}-{method}.npy"));
                let summary = case.path(&format!("run-{w}-{method}.json"));
                let output = run(&[
                    "--features".as_ref(),
                    case.path("x.npy").as_os_str(),
                    "--model".as_ref(),
                    case.path("model.json").as_os_str(),
                    "--out".as_ref(),
                    dest.as_os_str(),
                    "--workers".as_ref(),
                    w.to_string().as_ref(),
                    "--method".as_ref(),
                    method.as_ref(),
                    "--summary-json".as_ref(),
                    summary.as_os_str(),
                ]);
                let stderr = String::from_utf8_lossy(&output.stderr);
                assert!(output.status.success(), "{w} workers, {method}: {stderr}");
                assert!(
                    common::body(&dest) == want,
                    "{w} workers, {method}: the output differs from infer's"
                );
                let summary: Value = serde_json::from_slice(&fs::read(&summary).unwrap()).unwrap();
                let text = summary.to_string();
                if w > 1 {
                    assert!(text.contains("bytes_sent"), "{text}");
                }
            }
        }
    }
}

/// A model with a global layer then a graph layer (MultiheadAttention, then layer 1 of
/// gatv2-n200, ELU between) and GPSConv with graph-mode LayerNorm run over METIS parts of
/// one graph with exactly `distgat infer`'s output and attention coefficients.
#[test]
fn distgat_run_chains_global_and_graph_layers_and_runs_gpsconv() {
    let tmp = tempfile::tempdir().unwrap();
    let mha = reference("mha-global-n256");
    let gat = reference("gatv2-n200");
    let gat_spec: Value =
        serde_json::from_slice(&fs::read(gat.join("model.json")).unwrap()).unwrap();
    let mha_spec: Value =
        serde_json::from_slice(&fs::read(mha.join("model.json")).unwrap()).unwrap();
    let mut first = mha_spec["layers"][0].clone();
    first["weights"] = Value::from(mha.join("model.safetensors").to_str().unwrap());
    // Only layer 1's tensors (an unused tensor is an error).
    let bytes = fs::read(gat.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name.starts_with("layers.1."))
        .collect();
    let weights = tmp.path().join("layer1.safetensors");
    fs::write(&weights, safetensors::serialize(kept, &None).unwrap()).unwrap();
    let mut second = gat_spec["layers"][1].clone();
    second["weights"] = Value::from(weights.to_str().unwrap());
    let chained = serde_json::json!({
        "format": "pyg-attention-model-v1",
        "activation": "elu",
        "layers": [first, second],
    });
    let model = tmp.path().join("chained.json");
    fs::write(&model, serde_json::to_vec(&chained).unwrap()).unwrap();
    // 200 nodes x 32 features, from mha-global-n256's first rows.
    let x: Vec<f32> = read_f64(&mha.join("x.npy"))
        .iter()
        .take(200 * 32)
        .map(|&v| v as f32)
        .collect();
    let features = tmp.path().join("x.npy");
    distgat_graph::write_npy::<f32>(&features, &[200, 32], &x).unwrap();

    let gps = reference("gps-transformer-ln-n200");
    for (i, (graph, features, model, workers)) in [
        (gat.join("edge_index.npy"), features, model, [2usize, 3]),
        (
            gps.join("edge_index.npy"),
            gps.join("x.npy"),
            gps.join("model.json"),
            [2, 4],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let common = |out: &Path, att: &Path| -> Vec<std::ffi::OsString> {
            [
                "--graph".as_ref(),
                graph.as_os_str(),
                "--features".as_ref(),
                features.as_os_str(),
                "--model".as_ref(),
                model.as_os_str(),
                "--out".as_ref(),
                out.as_os_str(),
                "--attention-dir".as_ref(),
                att.as_os_str(),
            ]
            .into_iter()
            .map(|s: &std::ffi::OsStr| s.to_owned())
            .collect()
        };
        let (out, att) = (
            tmp.path().join(format!("infer{i}.npy")),
            tmp.path().join(format!("infer{i}-att")),
        );
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_distgat"))
            .arg("infer")
            .args(common(&out, &att))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for w in workers {
            let (rout, ratt) = (
                tmp.path().join(format!("run{i}-{w}.npy")),
                tmp.path().join(format!("run{i}-{w}-att")),
            );
            let mut args = common(&rout, &ratt);
            args.extend(["--workers".into(), w.to_string().into()]);
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            let output = run(&args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success(),
                "{}, {w} workers: {stderr}",
                model.display()
            );
            assert!(
                common::body(&rout) == common::body(&out),
                "{}: {w} workers",
                model.display()
            );
            let mut names: Vec<_> = fs::read_dir(&att)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            assert_eq!(names.len(), 2, "{names:?}: one graph layer's two files");
            for name in names {
                assert!(
                    fs::read(att.join(&name)).unwrap() == fs::read(ratt.join(&name)).unwrap(),
                    "{}: {name:?} differs",
                    model.display()
                );
            }
        }
    }
}

/// Refusals of `distgat run` around global layers, each naming the flag, before any
/// output is written.
#[test]
fn distgat_run_refusals_around_global_layers() {
    let case = Case::new("mha-global-n256");
    let graph = reference("gatv2-n200").join("edge_index.npy");
    let gat_model = reference("gatv2-n200").join("model.json");
    let x = case.path("x.npy");
    let out = case.path("out.npy");
    let m = case.path("model.json");
    let att = case.path("att");
    for (args, phrases) in [
        (
            vec![
                "--graph".as_ref(),
                graph.as_os_str(),
                "--features".as_ref(),
                x.as_os_str(),
                "--model".as_ref(),
                m.as_os_str(),
                "--out".as_ref(),
                out.as_os_str(),
            ],
            &["--graph", "every layer", "global attention", "drop it"][..],
        ),
        (
            vec![
                "--features".as_ref(),
                x.as_os_str(),
                "--model".as_ref(),
                gat_model.as_os_str(),
                "--out".as_ref(),
                out.as_os_str(),
            ],
            &["--graph", "layers[0]", "GATv2Conv", "give --graph"][..],
        ),
        (
            vec![
                "--features".as_ref(),
                x.as_os_str(),
                "--model".as_ref(),
                m.as_os_str(),
                "--out".as_ref(),
                out.as_os_str(),
                "--attention-dir".as_ref(),
                att.as_os_str(),
            ],
            &["--attention-dir", "no per-edge"][..],
        ),
        (
            vec![
                "--features".as_ref(),
                x.as_os_str(),
                "--model".as_ref(),
                m.as_os_str(),
            ],
            &["--out", "required without --graph"][..],
        ),
    ] {
        let output = run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        for p in phrases {
            assert!(stderr.contains(p), "lacks {p:?}: {stderr}");
        }
        assert!(!out.exists() && !att.exists());
    }
}

#[test]
fn bad_approx_options_are_errors_naming_the_field() {
    for (approx, phrases) in [
        (
            serde_json::json!({"method": "linformer", "landmarks": 8}),
            vec!["approx.method is \"linformer\"", "expected \"nystrom\""],
        ),
        (
            serde_json::json!({"method": "nystrom", "landmarks": 0}),
            vec!["approx.landmarks is 0", "at least 1"],
        ),
        (
            serde_json::json!({"method": "nystrom", "landmarks": -3}),
            vec!["approx.landmarks is -3", "at least 1"],
        ),
        (
            serde_json::json!({"method": "nystrom", "landmarks": 257}),
            vec!["approx.landmarks is 257", "256 nodes"],
        ),
        (
            serde_json::json!({"method": "nystrom", "landmarks": 100_000}),
            vec!["approx.landmarks is 100000", "above the supported 2048"],
        ),
        (
            serde_json::json!({"method": "nystrom", "landmarks": 8, "iterations": 6}),
            vec!["unknown field `iterations`"],
        ),
    ] {
        let case = Case::new("mha-global-n256");
        case.edit_model(|m| m["layers"][0]["args"]["approx"] = approx);
        let mut want = vec!["model.json", "layers[0]"];
        want.extend(phrases);
        case.expect_error(&[], &want);
    }
}

#[test]
fn bad_multihead_arguments_and_weights_are_errors() {
    let case = Case::new("mha-global-n256");
    case.edit_model(|m| m["layers"][0]["args"]["num_heads"] = 5.into());
    case.expect_error(
        &[],
        &[
            "model.json",
            "layers[0]",
            "embed_dim (32) is not divisible by num_heads (5)",
        ],
    );
    let case = Case::new("mha-global-n256");
    case.edit_model(|m| m["layers"][0]["args"]["add_bias_kv"] = true.into());
    case.expect_error(&[], &["model.json", "layers[0]", "add_bias_kv"]);
    let case = Case::new("mha-global-n256");
    case.edit_model(|m| m["layers"][0]["args"]["kdim"] = 16.into());
    case.expect_error(&[], &["model.json", "kdim is 16"]);
    let case = Case::new("mha-global-n256");
    case.edit_model(|m| m["layers"][0]["args"]["embed_dims"] = 32.into());
    case.expect_error(
        &[],
        &[
            "layers[0].args (MultiheadAttention)",
            "unknown field `embed_dims`",
        ],
    );
    let case = Case::new("mha-global-n256");
    case.reshape_tensor("layers.0.in_proj_weight", vec![32, 96]);
    case.expect_error(
        &[],
        &[
            "model.safetensors",
            "'layers.0.in_proj_weight' has shape [32, 96]",
            "expected [96, 32]",
        ],
    );
    let case = Case::new("mha-global-n256");
    case.reshape_tensor("layers.0.out_proj.bias", vec![4, 8]);
    case.expect_error(
        &[],
        &["'layers.0.out_proj.bias' has shape [4, 8]", "expected [32]"],
    );
    // bias=false leaves the file's biases unused: an error naming them, not ignored.
    let case = Case::new("mha-global-n256");
    case.edit_model(|m| m["layers"][0]["args"]["bias"] = false.into());
    case.expect_error(
        &[],
        &["model.safetensors", "in_proj_bias", "used by no layer"],
    );
}

#[test]
fn bad_nystrom_arguments_and_weights_are_errors() {
    let case = Case::new("nystrom-n512-m32");
    case.edit_model(|m| m["layers"][0]["args"]["residual"] = true.into());
    case.expect_error(
        &[],
        &[
            "model.json",
            "layers[0]",
            "residual is true",
            "res_conv.weight",
        ],
    );
    let case = Case::new("nystrom-n512-m32");
    case.edit_model(|m| {
        m["layers"][0]["args"]
            .as_object_mut()
            .unwrap()
            .remove("residual");
    });
    case.expect_error(&[], &["residual is not given", "default is true"]);
    let case = Case::new("nystrom-n512-m32");
    case.edit_model(|m| m["layers"][0]["args"]["num_landmarks"] = 0.into());
    case.expect_error(&[], &["model.json", "num_landmarks is 0"]);
    let case = Case::new("nystrom-n512-m32");
    case.edit_model(|m| m["layers"][0]["args"]["num_landmarks"] = 1_000_000.into());
    case.expect_error(
        &[],
        &["model.json", "num_landmarks is 1000000", "1 to 2048"],
    );
    let case = Case::new("nystrom-n512-m32");
    case.edit_model(|m| m["layers"][0]["args"]["heads"] = 2.into());
    case.expect_error(
        &[],
        &[
            "'layers.0.to_qkv.weight' has shape [96, 32]",
            "expected [48, 32]",
            "heads = 2",
        ],
    );
    let case = Case::new("nystrom-n512-m32");
    case.reshape_tensor("layers.0.to_out.0.weight", vec![1024]);
    case.expect_error(&[], &["'layers.0.to_out.0.weight' has shape [1024]"]);
}
