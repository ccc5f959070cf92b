//! `distgat infer --reorder rcm` against plain `distgat infer` on the reference cases: the
//! output and every attention file byte-identical (a renumbering keeps each row's
//! summation order), and a model with a layer that sums over all nodes refused by flag.

use std::path::{Path, PathBuf};
use std::process::Command;

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_distgat")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bytes of out.npy and of every attention file of one `distgat infer` run (with
/// `attention`; else of out.npy alone: the edges are then renamed in place).
fn infer(case: &str, dir: &Path, reorder: &str, attention: bool) -> Vec<(String, Vec<u8>)> {
    let src = repo().join("reference").join(case);
    let (out, att) = (
        dir.join(format!("{case}-{reorder}-{attention}.npy")),
        dir.join(format!("{case}-{reorder}-att")),
    );
    let mut cmd = Command::new(exe());
    cmd.arg("infer")
        .arg("--graph")
        .arg(src.join("edge_index.npy"))
        .arg("--features")
        .arg(src.join("x.npy"))
        .arg("--model")
        .arg(src.join("model.json"))
        .arg("--out")
        .arg(&out)
        .args(["--reorder", reorder, "--threads", "2"]);
    if attention {
        cmd.arg("--attention-dir").arg(&att);
    }
    if src.join("edge_attr.npy").exists() {
        cmd.arg("--edge-features").arg(src.join("edge_attr.npy"));
    }
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "{case} --reorder {reorder}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files = vec![("out.npy".to_string(), std::fs::read(&out).unwrap())];
    if !attention {
        return files;
    }
    let mut names: Vec<_> = std::fs::read_dir(&att)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        files.push((n.clone(), std::fs::read(att.join(&n)).unwrap()));
    }
    files
}

#[test]
fn rcm_gives_the_same_bytes_on_every_local_reference_case() {
    let dir = tempfile::tempdir().unwrap();
    for case in [
        "er-n200",
        "rmat-n5000",
        "quirks-n40-loops",
        "quirks-n40-noloops",
        "gatv2-n200",
        "gatv2-shared-edge-noloops-n150",
        "gat-residual-edge-n120",
        "transformer-edge-beta-n200",
        "transformer-mean-noroot-n150",
    ] {
        let plain = infer(case, dir.path(), "none", true);
        let rcm = infer(case, dir.path(), "rcm", true);
        let rcm_rows_only = infer(case, dir.path(), "rcm", false);
        assert!(
            rcm_rows_only[0] == plain[0],
            "{case}: out.npy differs with --reorder rcm and no --attention-dir"
        );
        assert!(plain.len() >= 3, "{case}: out.npy and attention files");
        assert_eq!(plain.len(), rcm.len(), "{case}");
        for ((name, a), (_, b)) in plain.iter().zip(&rcm) {
            assert!(a == b, "{case}: {name} differs with --reorder rcm");
        }
    }
}

#[test]
fn rcm_refuses_layers_that_sum_over_all_nodes() {
    let dir = tempfile::tempdir().unwrap();
    for (case, kind) in [
        ("gps-gat-bn-n200", "GPSConv"),
        ("mha-global-n256", "MultiheadAttention"),
    ] {
        let src = repo().join("reference").join(case);
        let mut cmd = Command::new(exe());
        cmd.arg("infer");
        if src.join("edge_index.npy").exists() {
            cmd.arg("--graph").arg(src.join("edge_index.npy"));
        }
        let output = cmd
            .arg("--features")
            .arg(src.join("x.npy"))
            .arg("--model")
            .arg(src.join("model.json"))
            .arg("--out")
            .arg(dir.path().join("o.npy"))
            .args(["--reorder", "rcm"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{case}");
        assert!(
            err.contains("--reorder") && err.contains(kind) && err.contains("local layers only"),
            "{case}: {err}"
        );
        assert!(!dir.path().join("o.npy").exists());
    }
}
