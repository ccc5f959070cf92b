//! Conformance with PyTorch Geometric 2.8.1 on every reference case, through the same
//! code path as `distgat infer` (files in, files out).

use std::path::{Path, PathBuf};

use distgat_cli::{run_infer, InferConfig};
use distgat_graph::Normalization;
use distgat_tests::{assert_close, read_f64, read_i64, reference_case, repo_root};

struct Run {
    _dir: tempfile::TempDir,
    out: PathBuf,
    attention: PathBuf,
}

fn config_for(case: &str) -> InferConfig {
    let dir = reference_case(case);
    if case == "cora-gat" {
        let cora = repo_root().join("data/cora");
        InferConfig {
            graph: cora.join("edges.npy"),
            features: cora.join("features.npy"),
            normalize: Normalization::Row,
            model: dir.join("model.json"),
            labels: Some(cora.join("labels.npy")),
            test_idx: Some(cora.join("test_idx.npy")),
            ..InferConfig::default()
        }
    } else {
        let edge_attr = dir.join("edge_attr.npy");
        InferConfig {
            graph: dir.join("edge_index.npy"),
            features: dir.join("x.npy"),
            model: dir.join("model.json"),
            edge_features: edge_attr.exists().then_some(edge_attr),
            ..InferConfig::default()
        }
    }
}

fn run(case: &str, threads: usize) -> (Run, distgat_cli::InferReport) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.npy");
    let attention = tmp.path().join("attention");
    let config = InferConfig {
        out: out.clone(),
        attention_dir: Some(attention.clone()),
        threads: Some(threads),
        ..config_for(case)
    };
    let report = run_infer(&config).unwrap_or_else(|e| panic!("{case}: {e}"));
    (
        Run {
            _dir: tmp,
            out,
            attention,
        },
        report,
    )
}

fn check_case(case: &str) {
    let expected = reference_case(case).join("expected");
    let (run, _) = run(case, 2);
    let (shape, ours) = read_f64(&run.out);
    let (eshape, want) = read_f64(&expected.join("out_f64.npy"));
    assert_eq!(shape, eshape, "{case}: output shape");
    assert_close(&format!("{case} out"), &ours, &want, shape[1] as usize);

    let layers = std::fs::read_dir(&expected)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with("_alpha.npy")
        })
        .count();
    assert!(layers >= 2, "{case}: expected per-layer attention files");
    for k in 0..layers {
        let (ishape, index) = read_i64(&run.attention.join(format!("layer{k}_att_edge_index.npy")));
        let (eishape, eindex) = read_i64(&expected.join(format!("layer{k}_att_edge_index.npy")));
        assert_eq!(
            ishape, eishape,
            "{case} layer {k}: attention edge index shape"
        );
        assert!(
            index == eindex,
            "{case} layer {k}: attention edge index differs"
        );
        let (ashape, alpha) = read_f64(&run.attention.join(format!("layer{k}_alpha.npy")));
        let (eashape, ealpha) = read_f64(&expected.join(format!("layer{k}_alpha.npy")));
        assert_eq!(ashape, eashape, "{case} layer {k}: alpha shape");
        assert_close(
            &format!("{case} layer {k} alpha"),
            &alpha,
            &ealpha,
            ashape[1] as usize,
        );
    }
}

#[test]
fn er_n200_matches_pyg() {
    check_case("er-n200");
}

#[test]
fn rmat_n5000_matches_pyg() {
    check_case("rmat-n5000");
}

#[test]
fn quirks_with_self_loops_match_pyg() {
    check_case("quirks-n40-loops");
}

#[test]
fn quirks_without_self_loops_match_pyg() {
    check_case("quirks-n40-noloops");
}

#[test]
fn cora_trained_model_matches_pyg() {
    check_case("cora-gat");
}

#[test]
fn gat_with_residual_and_edge_features_matches_pyg() {
    // fill_value 'mean' (layer 0) and 'add' (layer 1), duplicates, self loops replaced.
    check_case("gat-residual-edge-n120");
}

#[test]
fn gatv2_matches_pyg() {
    check_case("gatv2-n200");
}

#[test]
fn gatv2_shared_weights_edge_features_without_loops_matches_pyg() {
    check_case("gatv2-shared-edge-noloops-n150");
}

#[test]
fn transformer_with_beta_and_edge_features_matches_pyg() {
    check_case("transformer-edge-beta-n200");
}

#[test]
fn wide_heads_with_pass_two_in_registers_match_pyg() {
    // H*C of 128 (16- and 8-lane blocks) and 256, TransformerConv's value rows after its
    // keys: the shapes whose weighted sum keeps its accumulator in registers.
    check_case("wide-heads-n120");
}

#[test]
fn transformer_mean_without_root_matches_pyg() {
    // The file's unused lin_skip is accepted (PyG keeps it and never reads it).
    check_case("transformer-mean-noroot-n150");
}

/// A one-layer model in `tmp`: layer 0 of reference case `dir`'s model, with a copy of
/// its weights file `weights`.
fn layer0_model(dir: &Path, tmp: &Path, weights: &str) -> PathBuf {
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    spec["layers"].as_array_mut().unwrap().truncate(1);
    std::fs::copy(dir.join(weights), tmp.join(weights)).unwrap();
    let model = tmp.join("model.json");
    std::fs::write(&model, spec.to_string()).unwrap();
    model
}

#[test]
fn layer_outputs_match_pyg_layer_by_layer() {
    // The final output could hide two compensating errors; every layer's raw output is
    // checked too (against PyG's float32 output, the tolerance covers f32 vs f64).
    for case in [
        "gat-residual-edge-n120",
        "gatv2-n200",
        "gatv2-shared-edge-noloops-n150",
        "transformer-edge-beta-n200",
        "transformer-mean-noroot-n150",
        "wide-heads-n120",
    ] {
        let dir = reference_case(case);
        let (want_shape, want) = read_f64(&dir.join("expected/layer0_out.npy"));
        let tmp = tempfile::tempdir().unwrap();
        let model = layer0_model(&dir, tmp.path(), "model.safetensors");
        let out = tmp.path().join("out.npy");
        let config = InferConfig {
            model,
            out: out.clone(),
            threads: Some(2),
            ..config_for(case)
        };
        // Layer 1's tensors are in the file but unused by a one-layer model: refused.
        let err = run_infer(&config).unwrap_err().to_string();
        assert!(err.contains("layers.1."), "{case}: {err}");
        // With only layer 0's tensors in the file, it runs.
        let file = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&file).unwrap();
        let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| n.starts_with("layers.0."))
            .collect();
        safetensors::serialize_to_file(kept, &None, &tmp.path().join("model.safetensors")).unwrap();
        run_infer(&config).unwrap_or_else(|e| panic!("{case}: {e}"));
        let (shape, ours) = read_f64(&out);
        assert_eq!(shape, want_shape, "{case}: layer 0 shape");
        assert_close(&format!("{case} layer 0"), &ours, &want, shape[1] as usize);
    }
}

#[test]
fn a_one_layer_model_with_its_source_rows_over_its_input_matches_pyg() {
    // F_in = heads x out_channels = 64: a one-layer model's transform writes its source
    // rows over the features and its rows go only to the output file. Checked against
    // PyG's layer 0, and byte for byte against the path that keeps the rows in memory
    // (taken when the accuracy needs them).
    for case in ["er-n200", "rmat-n5000"] {
        let dir = reference_case(case);
        let (want_shape, want) = read_f64(&dir.join("expected/layer0_out.npy"));
        let tmp = tempfile::tempdir().unwrap();
        let model = layer0_model(&dir, tmp.path(), "layer0.safetensors");
        let n = want_shape[0];
        let labels = tmp.path().join("labels.npy");
        distgat_graph::write_npy(&labels, &[n], &vec![0i64; n as usize]).unwrap();
        let test_idx = tmp.path().join("test_idx.npy");
        distgat_graph::write_npy(&test_idx, &[2], &[0i64, 1]).unwrap();
        let mut outputs = Vec::new();
        for keep_rows in [false, true] {
            let out = tmp.path().join(format!("out-{keep_rows}.npy"));
            let config = InferConfig {
                model: model.clone(),
                out: out.clone(),
                threads: Some(2),
                labels: keep_rows.then(|| labels.clone()),
                test_idx: keep_rows.then(|| test_idx.clone()),
                ..config_for(case)
            };
            run_infer(&config).unwrap_or_else(|e| panic!("{case}: {e}"));
            let (shape, ours) = read_f64(&out);
            assert_eq!(shape, want_shape, "{case}: layer 0 shape");
            assert_close(&format!("{case} layer 0"), &ours, &want, shape[1] as usize);
            outputs.push(bytes(&out));
        }
        assert!(outputs[0] == outputs[1], "{case}: the two paths differ");
    }
}

#[test]
fn cora_predictions_and_accuracy_match_pyg() {
    let (run, report) = run("cora-gat", 2);
    let (shape, out) = read_f64(&run.out);
    let width = shape[1] as usize;
    let (_, predictions) = read_i64(&reference_case("cora-gat").join("expected/predictions.npy"));
    assert_eq!(predictions.len(), shape[0] as usize);
    for (i, row) in out.chunks_exact(width).enumerate() {
        let best = (0..width).fold(0, |b, c| if row[c] > row[b] { c } else { b });
        assert_eq!(best as i64, predictions[i], "node {i}: predicted class");
    }
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reference_case("cora-gat").join("results.json")).unwrap(),
    )
    .unwrap();
    let accuracy = report.accuracy.expect("labels were given");
    assert_eq!(accuracy.total, 1000);
    assert_eq!(
        accuracy.correct as u64,
        results["correct"]["test"].as_u64().unwrap(),
        "test accuracy differs from PyG's results.json"
    );
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn output_bits_do_not_depend_on_thread_count() {
    for case in ["rmat-n5000", "cora-gat"] {
        let (one, _) = run(case, 1);
        for threads in [2, 4] {
            let (other, _) = run(case, threads);
            assert!(
                bytes(&one.out) == bytes(&other.out),
                "{case}: output differs between 1 and {threads} threads"
            );
            for k in 0..2 {
                let name = format!("layer{k}_alpha.npy");
                assert!(
                    bytes(&one.attention.join(&name)) == bytes(&other.attention.join(&name)),
                    "{case}: {name} differs between 1 and {threads} threads"
                );
            }
        }
    }
}
