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
        InferConfig {
            graph: dir.join("edge_index.npy"),
            features: dir.join("x.npy"),
            model: dir.join("model.json"),
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
