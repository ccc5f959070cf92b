//! Black-box tests of `distgat neighbours`: the two reference cases give exactly the
//! expected edges, and every bad input fails with a non-zero exit, an `error:` line that
//! names the flag or file, no panic, and no output (final or partial) left behind.

mod common;
use common::{body, reference, s};

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn distgat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distgat"))
        .arg("neighbours")
        .args(args)
        .output()
        .expect("running distgat")
}

fn write_f32(path: &Path, shape: &[u64], data: &[f32]) {
    distgat_graph::write_npy(path, shape, data).unwrap();
}

/// Runs a command that must fail; checks the message parts and that `dir` holds only
/// `inputs` afterwards.
fn fails(args: &[&str], parts: &[&str], dir: &Path, inputs: usize) {
    let out = distgat(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    for p in parts {
        assert!(
            stderr.contains(p),
            "{args:?}: {stderr:?} does not mention {p:?}"
        );
    }
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left.len(), inputs, "{args:?} left files behind: {left:?}");
}

#[test]
fn knn_reference_case_gives_exactly_the_expected_edges() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edges.npy");
    for threads in ["1", "2"] {
        let run = distgat(&[
            "--points",
            s(&reference("knn-gatv2-n400", "points.npy")),
            "--knn",
            "8",
            "--threads",
            threads,
            "--out",
            s(&out),
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(
            body(&out),
            body(&reference("knn-gatv2-n400", "expected/edges.npy"))
        );
    }
}

#[test]
fn radius_reference_case_gives_exactly_the_expected_edges() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edges.npy");
    let run = distgat(&[
        "--points",
        s(&reference("radius-gat-n400", "points.npy")),
        "--radius",
        "0.203125",
        "--max-neighbours",
        "64",
        "--out",
        s(&out),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        body(&out),
        body(&reference("radius-gat-n400", "expected/edges.npy"))
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("4016 edges over 400 nodes"), "{stderr}");
}

#[test]
fn hops_over_a_text_graph_with_loop() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("g.txt");
    // 0 -> 1 -> 2 -> 3; within 2 hops into 3: {1, 2}; into 2: {0, 1}; into 1: {0}.
    fs::write(&graph, "0 1\n1 2\n2 3\n").unwrap();
    let out = dir.path().join("hops.npy");
    let run = distgat(&[
        "--hops",
        "2",
        "--graph",
        s(&graph),
        "--loop",
        "--out",
        s(&out),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got: Vec<i64> = body(&out)
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // (source, target) sorted by target: 0->0; 0->1 1->1; 0->2 1->2 2->2; 1->3 2->3 3->3.
    let src = [0, 0, 1, 0, 1, 2, 1, 2, 3];
    let dst = [0, 1, 1, 2, 2, 2, 3, 3, 3];
    assert_eq!(got, [&src[..], &dst[..]].concat());
}

#[test]
fn bad_flags_name_the_flag_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let points = dir.path().join("p.npy");
    write_f32(
        &points,
        &[5, 2],
        &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    );
    let out = dir.path().join("out.npy");
    let (p, o) = (s(&points), s(&out));
    let d = dir.path();
    fails(
        &["--points", p, "--knn", "0", "--out", o],
        &["error:", "--knn", "k = 0", "at least 1"],
        d,
        1,
    );
    fails(
        &["--points", p, "--knn", "5", "--out", o],
        &["--knn", "less than the number of points (5)"],
        d,
        1,
    );
    fails(
        &["--points", p, "--knn", "6", "--loop", "--out", o],
        &["--knn", "at most the number of points (5)"],
        d,
        1,
    );
    fails(
        &["--points", p, "--radius", "0", "--out", o],
        &["--radius", "greater than 0"],
        d,
        1,
    );
    fails(
        &["--points", p, "--radius", "NaN", "--out", o],
        &["--radius", "r = NaN"],
        d,
        1,
    );
    fails(
        &["--points", p, "--radius", "inf", "--out", o],
        &["--radius", "r = inf"],
        d,
        1,
    );
    fails(
        &[
            "--points",
            p,
            "--radius",
            "1",
            "--max-neighbours",
            "0",
            "--out",
            o,
        ],
        &["--max-neighbours", "at least 1"],
        d,
        1,
    );
    fails(
        &[
            "--points",
            p,
            "--knn",
            "2",
            "--max-neighbours",
            "3",
            "--out",
            o,
        ],
        &["--max-neighbours", "not --knn"],
        d,
        1,
    );
    fails(
        &["--points", p, "--knn", "2", "--threads", "0", "--out", o],
        &["--threads", "at least 1"],
        d,
        1,
    );
    // clap: exactly one rule, --hops needs --graph, K must be a number.
    fails(
        &["--points", p, "--knn", "2", "--radius", "1", "--out", o],
        &["--knn", "--radius"],
        d,
        1,
    );
    fails(
        &["--points", p, "--out", o],
        &["--knn", "--radius", "--hops"],
        d,
        1,
    );
    fails(&["--hops", "2", "--out", o], &["--graph"], d, 1);
    fails(
        &[
            "--hops", "1", "--graph", p, "--metric", "cosine", "--out", o,
        ],
        &["--metric", "only by --knn and --radius"],
        d,
        1,
    );
    fails(
        &["--points", p, "--knn", "two", "--out", o],
        &["--knn", "two"],
        d,
        1,
    );
    fails(
        &[
            "--points",
            p,
            "--knn",
            "2",
            "--metric",
            "manhattan",
            "--out",
            o,
        ],
        &["--metric", "manhattan"],
        d,
        1,
    );
}

#[test]
fn bad_files_name_the_file_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out.npy");
    let o = s(&out);

    let missing = d.join("missing.npy");
    fails(
        &["--points", s(&missing), "--knn", "2", "--out", o],
        &["missing.npy"],
        d,
        0,
    );

    let nan = d.join("nan.npy");
    write_f32(&nan, &[3, 2], &[0.0, 1.0, 2.0, f32::NAN, 4.0, 5.0]);
    fails(
        &["--points", s(&nan), "--knn", "1", "--out", o],
        &["nan.npy", "row 1, column 1", "not finite"],
        d,
        1,
    );

    let flat = d.join("flat.npy");
    write_f32(&flat, &[4], &[0.0; 4]);
    fails(
        &["--points", s(&flat), "--knn", "1", "--out", o],
        &["flat.npy", "[N, D]"],
        d,
        2,
    );

    let ints = d.join("ints.npy");
    distgat_graph::write_npy(&ints, &[2, 2], &[1i64, 2, 3, 4]).unwrap();
    fails(
        &["--points", s(&ints), "--knn", "1", "--out", o],
        &["ints.npy", "int64"],
        d,
        3,
    );

    let zero = d.join("zero.npy");
    write_f32(&zero, &[3, 2], &[1.0, 1.0, 0.0, 0.0, 2.0, 1.0]);
    fails(
        &[
            "--points",
            s(&zero),
            "--knn",
            "1",
            "--metric",
            "cosine",
            "--out",
            o,
        ],
        &["zero.npy", "row 1", "zero vector"],
        d,
        4,
    );

    let graph = d.join("g.txt");
    fs::write(&graph, "0 1\n1 7\n").unwrap();
    let small = d.join("small.npy");
    write_f32(&small, &[3, 1], &[0.0, 1.0, 2.0]);
    fails(
        &[
            "--points",
            s(&small),
            "--hops",
            "1",
            "--graph",
            s(&graph),
            "--out",
            o,
        ],
        &["g.txt", "edge 1", "node id 7", "node count 3"],
        d,
        6,
    );

    let bad_graph = d.join("bad.txt");
    fs::write(&bad_graph, "0 x\n").unwrap();
    fails(
        &["--hops", "1", "--graph", s(&bad_graph), "--out", o],
        &["bad.txt", "line 1"],
        d,
        7,
    );

    // An output directory that does not exist.
    let p = d.join("ok.npy");
    write_f32(&p, &[3, 1], &[0.0, 1.0, 2.0]);
    fails(
        &[
            "--points",
            s(&p),
            "--knn",
            "1",
            "--out",
            s(&d.join("nowhere/out.npy")),
        ],
        &["nowhere/out.npy", "does not exist"],
        d,
        8,
    );
}
