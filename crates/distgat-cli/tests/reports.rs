//! What `distgat partition` reports must be true: the edge cut as a share of the graph's
//! undirected pairs (a known cut on a ring), and a warning for parts left empty.

use std::process::Command;

mod common;
use common::write_npy;

fn partition(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_distgat"))
        .arg("partition")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn edge_cut_is_a_share_of_the_undirected_pairs() {
    // A ring of 10 nodes has 10 undirected pairs whether its edges are given one way
    // (10 directed edges) or both ways (20). Two contiguous halves cut exactly 2 of them.
    let tmp = tempfile::tempdir().unwrap();
    let n = 10i64;
    let src: Vec<i64> = (0..n).collect();
    let dst: Vec<i64> = (0..n).map(|v| (v + 1) % n).collect();
    let one_way = tmp.path().join("one_way.npy");
    write_npy::<i64>(
        &one_way,
        &[2, n as u64],
        &[src.clone(), dst.clone()].concat(),
    );
    let both = tmp.path().join("both.npy");
    write_npy::<i64>(
        &both,
        &[2, 2 * n as u64],
        &[src.clone(), dst.clone(), dst, src].concat(),
    );
    for (name, graph) in [("one way", &one_way), ("both ways", &both)] {
        let out = tmp.path().join(format!("{name}-p"));
        let (ok, stdout, stderr) = partition(&[
            "--graph",
            graph.to_str().unwrap(),
            "--num-nodes",
            "10",
            "--parts",
            "2",
            "--method",
            "range",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{name}: {stderr}");
        assert!(
            stdout.contains("edge cut 2 undirected pairs (20.00% of 10)"),
            "{name}: {stdout}"
        );
    }
}

#[test]
fn empty_parts_are_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 10i64;
    let src: Vec<i64> = (0..n).collect();
    let dst: Vec<i64> = (0..n).map(|v| (v + 1) % n).collect();
    let graph = tmp.path().join("ring.npy");
    write_npy::<i64>(&graph, &[2, n as u64], &[src, dst].concat());
    // Part 2 of 4 gets no node.
    let parts = tmp.path().join("parts.npy");
    write_npy::<i64>(&parts, &[10], &[0, 0, 0, 1, 1, 1, 3, 3, 3, 3]);
    let out = tmp.path().join("p");
    let method = format!("file:{}", parts.display());
    let (ok, stdout, stderr) = partition(&[
        "--graph",
        graph.to_str().unwrap(),
        "--num-nodes",
        "10",
        "--parts",
        "4",
        "--method",
        &method,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("1 of 4 parts own no node (parts [2])"),
        "{all}"
    );
    // A partition without empty parts says nothing of the kind.
    let out = tmp.path().join("p2");
    let (ok, stdout, stderr) = partition(&[
        "--graph",
        graph.to_str().unwrap(),
        "--num-nodes",
        "10",
        "--parts",
        "2",
        "--method",
        "range",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok);
    assert!(!format!("{stdout}{stderr}").contains("own no node"));
}
