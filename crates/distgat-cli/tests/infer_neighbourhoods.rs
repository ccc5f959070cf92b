//! `distgat infer` over neighbourhoods it builds (`--knn`, `--radius`, `--hops` in place of
//! a graph): the two reference cases against PyG's float64 output and the expected edges,
//! and each way the options can be given wrongly.

mod common;
use common::{body, reference, s};

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use distgat_graph::Features;

fn infer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distgat"))
        .arg("infer")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running distgat")
}

/// Runs the model of `name` over the neighbourhood `rule` builds from its points, and
/// checks the output against PyG's float64 output and the built edges against the case's.
fn reference_case(name: &str, rule: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (out, edges) = (dir.path().join("out.npy"), dir.path().join("edges.npy"));
    let points = reference(name, "points.npy");
    let (x, model) = (reference(name, "x.npy"), reference(name, "model.json"));
    let mut args = vec!["--points", s(&points)];
    args.extend_from_slice(rule);
    args.extend_from_slice(&["--features", s(&x), "--model", s(&model)]);
    args.extend_from_slice(&["--out", s(&out), "--neighbours-out", s(&edges)]);
    let run = infer(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        body(&edges),
        body(&reference(name, "expected/edges.npy")),
        "{name}: built edges"
    );
    let got = Features::read_npy(&out).unwrap();
    let want = Features::read_npy(&reference(name, "expected/out_f64.npy")).unwrap();
    assert_eq!((got.num_nodes, got.width), (want.num_nodes, want.width));
    let worst = got
        .values
        .iter()
        .zip(&want.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4, "{name}: max abs diff {worst} vs PyG float64");

    // The same bits as running over the expected edges given as a graph.
    let out2 = dir.path().join("out2.npy");
    let run = infer(&[
        "--graph",
        s(&reference(name, "expected/edges.npy")),
        "--features",
        s(&x),
        "--model",
        s(&model),
        "--out",
        s(&out2),
    ]);
    assert!(run.status.success());
    assert_eq!(fs::read(&out).unwrap(), fs::read(&out2).unwrap(), "{name}");
}

#[test]
fn knn_reference_case_matches_pyg() {
    reference_case("knn-gatv2-n400", &["--knn", "8"]);
}

#[test]
fn radius_reference_case_matches_pyg() {
    reference_case(
        "radius-gat-n400",
        &["--radius", "0.203125", "--max-neighbours", "64"],
    );
}

#[test]
fn hops_run_over_the_graph_they_build() {
    // --hops 2 over the kNN graph: the same bits as infer over the 2-hop edges that
    // `distgat neighbours` writes.
    let dir = tempfile::tempdir().unwrap();
    let name = "knn-gatv2-n400";
    let (graph, x, model) = (
        reference(name, "expected/edges.npy"),
        reference(name, "x.npy"),
        reference(name, "model.json"),
    );
    let (out, built) = (dir.path().join("out.npy"), dir.path().join("hops.npy"));
    let run = infer(&[
        "--graph",
        s(&graph),
        "--hops",
        "2",
        "--max-neighbours",
        "40",
        "--features",
        s(&x),
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--neighbours-out",
        s(&built),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let separate = dir.path().join("hops2.npy");
    let run = Command::new(env!("CARGO_BIN_EXE_distgat"))
        .args(["neighbours", "--graph", s(&graph), "--hops", "2"])
        .args(["--max-neighbours", "40", "--out", s(&separate)])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(body(&built), body(&separate));
    let out2 = dir.path().join("out2.npy");
    let run = infer(&[
        "--graph",
        s(&separate),
        "--features",
        s(&x),
        "--model",
        s(&model),
        "--out",
        s(&out2),
    ]);
    assert!(run.status.success());
    assert_eq!(fs::read(&out).unwrap(), fs::read(&out2).unwrap());
}

/// A command that must fail with a message naming `flag`, leaving no output behind.
fn refused(args: &[&str], names: &[&str], dir: &Path) {
    let run = infer(args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in names {
        assert!(
            stderr.contains(n),
            "{args:?}: {stderr:?} does not name {n:?}"
        );
    }
    let left: Vec<_> = fs::read_dir(dir).unwrap().collect();
    assert!(left.is_empty(), "{args:?} left {left:?}");
}

#[test]
fn neighbourhood_options_given_wrongly_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out.npy");
    let name = "knn-gatv2-n400";
    let (points, x, model, graph) = (
        reference(name, "points.npy"),
        reference(name, "x.npy"),
        reference(name, "model.json"),
        reference(name, "edge_index.npy"),
    );
    let (p, x, m, g, o) = (s(&points), s(&x), s(&model), s(&graph), s(&out));
    let other = reference("gatv2-n200", "x.npy");
    let base = ["--features", x, "--model", m, "--out", o];
    // A graph next to --knn would be silently replaced: refused.
    refused(
        &[&["--graph", g, "--points", p, "--knn", "8"][..], &base[..]].concat(),
        &["--graph", "--knn"],
        dir,
    );
    // Points for another node count.
    refused(
        &[&["--points", s(&other), "--knn", "8"][..], &base[..]].concat(),
        &["--points", "200 rows", "400"],
        dir,
    );
    // Options of a neighbourhood without a rule.
    for stray in [
        &["--metric", "cosine"][..],
        &["--loop"][..],
        &["--max-neighbours", "3"][..],
    ] {
        refused(
            &[&["--graph", g][..], stray, &base[..]].concat(),
            &[stray[0], "--knn"],
            dir,
        );
    }
    refused(
        &[
            &["--graph", g, "--neighbours-out", s(&dir.join("e.npy"))][..],
            &base[..],
        ]
        .concat(),
        &["--neighbours-out"],
        dir,
    );
    // --max-neighbours with --knn, --metric with --hops, K too large, a bad radius.
    refused(
        &[
            &["--points", p, "--knn", "8", "--max-neighbours", "3"][..],
            &base[..],
        ]
        .concat(),
        &["--max-neighbours"],
        dir,
    );
    refused(
        &[
            &["--graph", g, "--hops", "2", "--metric", "cosine"][..],
            &base[..],
        ]
        .concat(),
        &["--metric", "--hops"],
        dir,
    );
    refused(
        &[&["--points", p, "--knn", "400"][..], &base[..]].concat(),
        &["--knn"],
        dir,
    );
    refused(
        &[&["--points", p, "--radius", "-1"][..], &base[..]].concat(),
        &["--radius"],
        dir,
    );
    // The edges would overwrite the output, or land in a directory after all the work.
    refused(
        &[
            &["--points", p, "--knn", "8", "--neighbours-out", o][..],
            &base[..],
        ]
        .concat(),
        &["--neighbours-out", "--out"],
        dir,
    );
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    let run = infer(
        &[
            &["--points", p, "--knn", "8", "--neighbours-out", s(&sub)][..],
            &base[..],
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("--neighbours-out") && stderr.contains("is a directory"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("building"),
        "checked only after the work: {stderr}"
    );
    assert!(!out.exists());
    fs::remove_dir(&sub).unwrap();
    // Edge features cannot belong to built edges.
    refused(
        &[
            &["--points", p, "--knn", "8", "--edge-features", x][..],
            &base[..],
        ]
        .concat(),
        &["--edge-features", "--knn"],
        dir,
    );
    // --hops over a graph whose ids reach beyond the features' rows: named by the file
    // and its largest id (the walked graph's edge numbers are not the file's).
    let few = s(&other);
    refused(
        &[
            "--graph",
            g,
            "--hops",
            "2",
            "--features",
            few,
            "--model",
            m,
            "--out",
            o,
        ],
        &[
            "edge_index.npy",
            "node ids up to 399",
            "has only 200 feature rows",
        ],
        dir,
    );
    // --hops without a graph to walk.
    refused(
        &[&["--points", p, "--hops", "2"][..], &base[..]].concat(),
        &["--graph"],
        dir,
    );
}
