//! PyG's `GPSConv` (issue 12) against PyG 2.8.1's own forward in eval mode (cases made by
//! `reference/tools/gps_cases.py`), through the same path as `distgat infer`, and the
//! model errors a user can make when writing or exporting a GPSConv layer.

use std::path::PathBuf;

use distgat_attention::{Model, ModelError};
use distgat_cli::{run_infer, InferConfig};
use distgat_tests::{assert_close, read_f64, read_i64, reference_case};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use serde_json::{json, Value};

/// Runs `distgat infer` on a case with `threads` threads; returns the output and the
/// attention folder (kept alive by the temporary directory).
fn infer(case: &str, threads: usize) -> (tempfile::TempDir, Vec<u64>, Vec<f64>) {
    let dir = reference_case(case);
    let tmp = tempfile::tempdir().unwrap();
    let config = InferConfig {
        graph: dir.join("edge_index.npy"),
        features: dir.join("x.npy"),
        model: dir.join("model.json"),
        out: tmp.path().join("out.npy"),
        attention_dir: Some(tmp.path().join("attention")),
        threads: Some(threads),
        ..InferConfig::default()
    };
    run_infer(&config).unwrap_or_else(|e| panic!("{case}: {e}"));
    let (shape, out) = read_f64(&tmp.path().join("out.npy"));
    (tmp, shape, out)
}

fn check_case(case: &str, layers: usize) {
    let expected = reference_case(case).join("expected");
    let (tmp, shape, ours) = infer(case, 2);
    let (eshape, want) = read_f64(&expected.join("out_f64.npy"));
    assert_eq!(shape, eshape, "{case}: output shape");
    assert_close(&format!("{case} out"), &ours, &want, shape[1] as usize);
    // The conv's attention coefficients, written per GPSConv layer.
    for k in 0..layers {
        let att = tmp.path().join("attention");
        let (ishape, index) = read_i64(&att.join(format!("layer{k}_att_edge_index.npy")));
        let (eishape, eindex) = read_i64(&expected.join(format!("layer{k}_att_edge_index.npy")));
        assert_eq!(ishape, eishape, "{case} layer {k}: edge index shape");
        assert!(index == eindex, "{case} layer {k}: attention edge index");
        let (ashape, alpha) = read_f64(&att.join(format!("layer{k}_alpha.npy")));
        let (_, ealpha) = read_f64(&expected.join(format!("layer{k}_alpha.npy")));
        assert_close(
            &format!("{case} layer {k} alpha"),
            &alpha,
            &ealpha,
            ashape[1] as usize,
        );
    }
}

#[test]
fn gps_with_gat_conv_and_batch_norm_matches_pyg() {
    check_case("gps-gat-bn-n200", 1);
}

#[test]
fn gps_with_transformer_conv_layer_norm_and_gelu_matches_pyg() {
    check_case("gps-transformer-ln-n200", 1);
}

#[test]
fn two_chained_gps_layers_with_gatv2_conv_match_pyg() {
    check_case("gps2-gatv2-n200", 2);
}

#[test]
fn gps_output_bits_do_not_depend_on_thread_count() {
    let (_a, _, one) = infer("gps-transformer-ln-n200", 1);
    let (_b, _, three) = infer("gps-transformer-ln-n200", 3);
    assert!(one == three, "1 and 3 threads differ");
}

// ---- bad input ----

const CASE: &str = "gps-gat-bn-n200";

/// The case's model JSON with `edit` applied to its layer, written next to a copy of the
/// weights (or to `weights`, when given) in a temporary folder; loaded.
fn load_edited(
    edit: impl FnOnce(&mut Value),
    weights: Option<Vec<u8>>,
) -> (tempfile::TempDir, Result<Model, ModelError>) {
    let dir = reference_case(CASE);
    let tmp = tempfile::tempdir().unwrap();
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(dir.join("model.json")).unwrap()).unwrap();
    edit(&mut spec["layers"][0]);
    let bytes = weights.unwrap_or_else(|| std::fs::read(dir.join("model.safetensors")).unwrap());
    std::fs::write(tmp.path().join("model.safetensors"), bytes).unwrap();
    let path: PathBuf = tmp.path().join("model.json");
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let model = Model::load(&path);
    (tmp, model)
}

fn error_of(edit: impl FnOnce(&mut Value), weights: Option<Vec<u8>>) -> String {
    match load_edited(edit, weights).1 {
        Ok(_) => panic!("the edited model loaded"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(err: &str, words: &[&str]) {
    for w in words {
        assert!(err.contains(w), "error does not mention {w:?}: {err}");
    }
}

/// The case's weights with `drop` removed and `add` (name, shape) appended as zeros.
fn weights_with(drop: Option<&str>, add: Option<(&str, Vec<usize>)>) -> Vec<u8> {
    let bytes = std::fs::read(reference_case(CASE).join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| Some(n.as_str()) != drop)
        .collect();
    let extra;
    if let Some((name, shape)) = add {
        extra = vec![0u8; shape.iter().product::<usize>() * 4];
        tensors.push((
            name.to_string(),
            TensorView::new(safetensors::Dtype::F32, shape, &extra).unwrap(),
        ));
    }
    safetensors::serialize(tensors, &None).unwrap()
}

#[test]
fn the_unedited_case_loads() {
    let (_tmp, model) = load_edited(|_| {}, None);
    let model = model.unwrap();
    assert_eq!(model.layers[0].kind(), "GPSConv");
}

#[test]
fn a_conv_whose_width_is_not_channels_is_refused() {
    let err = error_of(|l| l["args"]["conv"]["args"]["concat"] = json!(false), None);
    assert_mentions(
        &err,
        &[
            "layers[0]",
            "args.conv (GATConv)",
            "8 columns",
            "channels is 32",
        ],
    );
}

#[test]
fn attn_type_performer_is_refused() {
    let err = error_of(|l| l["args"]["attn_type"] = json!("performer"), None);
    assert_mentions(&err, &["attn_type", "performer"]);
}

#[test]
fn an_unknown_norm_is_refused() {
    let err = error_of(|l| l["args"]["norm"] = json!("graph_norm"), None);
    assert_mentions(
        &err,
        &["norm is \"graph_norm\"", "batch_norm", "layer_norm"],
    );
}

#[test]
fn an_unknown_activation_and_an_unknown_argument_are_refused() {
    let err = error_of(|l| l["args"]["act"] = json!("swish"), None);
    assert_mentions(&err, &["act is \"swish\""]);
    let err = error_of(|l| l["args"]["edge_dim"] = json!(3), None);
    assert_mentions(&err, &["edge_dim"]);
}

#[test]
fn channels_not_divisible_by_heads_are_refused() {
    let err = error_of(|l| l["args"]["heads"] = json!(5), None);
    assert_mentions(&err, &["channels (32) is not divisible by heads (5)"]);
}

#[test]
fn a_missing_tensor_is_named() {
    let err = error_of(
        |_| {},
        Some(weights_with(
            Some("layers.0.norm2.module.running_var"),
            None,
        )),
    );
    assert_mentions(&err, &["layers.0.norm2.module.running_var", "missing"]);
    let err = error_of(
        |_| {},
        Some(weights_with(Some("layers.0.mlp.3.weight"), None)),
    );
    assert_mentions(&err, &["layers.0.mlp.3.weight", "missing"]);
}

#[test]
fn an_extra_tensor_is_named() {
    let err = error_of(
        |_| {},
        Some(weights_with(
            None,
            Some(("layers.0.mlp.5.weight", vec![32, 32])),
        )),
    );
    assert_mentions(&err, &["layers.0.mlp.5.weight", "used by no layer"]);
}

#[test]
fn layer_norm_weights_given_to_a_batch_norm_model_are_refused() {
    // norm = layer_norm over a file with BatchNorm tensors: norm1.weight is missing.
    let err = error_of(|l| l["args"]["norm"] = json!("layer_norm"), None);
    assert_mentions(&err, &["layers.0.norm1.weight", "missing"]);
}

#[test]
fn approx_with_more_landmarks_than_nodes_is_refused_when_run() {
    let dir = reference_case(CASE);
    let (tmp, model) = load_edited(
        |l| l["args"]["approx"] = json!({"method": "nystrom", "landmarks": 500}),
        None,
    );
    model.unwrap();
    let config = InferConfig {
        graph: dir.join("edge_index.npy"),
        features: dir.join("x.npy"),
        model: tmp.path().join("model.json"),
        out: tmp.path().join("out.npy"),
        ..InferConfig::default()
    };
    let err = run_infer(&config).unwrap_err().to_string();
    assert_mentions(&err, &["approx.landmarks is 500", "200"]);
}
