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
