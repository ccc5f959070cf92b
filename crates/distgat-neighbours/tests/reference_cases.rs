//! The neighbourhood reference cases (reference README 8.6): the edges must equal
//! `expected/edges.npy` exactly, whatever the search method and execution.

mod common;

use distgat_graph::NpyBody;
use distgat_neighbours::{knn_graph, radius_graph, Execution, Options, Points, Search};

fn expected(case: &str) -> Vec<i64> {
    let path = common::repo_root()
        .join("reference")
        .join(case)
        .join("expected/edges.npy");
    let body = NpyBody::open(&path).unwrap();
    assert_eq!(body.shape[0], 2);
    body.read_i64(&path).unwrap()
}

fn points(case: &str) -> Points {
    Points::read_npy(
        &common::repo_root()
            .join("reference")
            .join(case)
            .join("points.npy"),
    )
    .unwrap()
}

fn all_options() -> Vec<Options> {
    let mut out = Vec::new();
    for search in [Search::Auto, Search::Tree, Search::Brute] {
        for execution in [Execution::Sequential, Execution::Parallel] {
            out.push(Options {
                search,
                execution,
                ..Options::default()
            });
        }
    }
    out
}

#[test]
fn knn_gatv2_n400_edges_equal_the_reference() {
    let p = points("knn-gatv2-n400");
    assert_eq!((p.len(), p.dim()), (400, 3));
    let want = expected("knn-gatv2-n400");
    assert_eq!(want.len(), 2 * 3200);
    for options in all_options() {
        let got = knn_graph(&p, 8, &options).unwrap();
        assert_eq!(got.edge_index(), want, "{options:?}");
    }
}

#[test]
fn radius_gat_n400_edges_equal_the_reference() {
    let p = points("radius-gat-n400");
    let want = expected("radius-gat-n400");
    assert_eq!(want.len(), 2 * 4016);
    for options in all_options() {
        let got = radius_graph(&p, 0.203125, Some(64), &options).unwrap();
        assert_eq!(got.edge_index(), want, "{options:?}");
    }
}

#[test]
fn write_npy_round_trips_the_reference_edges() {
    let p = points("knn-gatv2-n400");
    let got = knn_graph(&p, 8, &Options::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edges.npy");
    got.write_npy(&out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let want =
        std::fs::read(common::repo_root().join("reference/knn-gatv2-n400/expected/edges.npy"))
            .unwrap();
    let body = NpyBody::open(&out).unwrap();
    assert_eq!(body.shape, vec![2, 3200]);
    assert_eq!(body.read_i64(&out).unwrap(), expected("knn-gatv2-n400"));
    // The same array; the header may differ only in padding/format details.
    assert_eq!(bytes[bytes.len() - 51200..], want[want.len() - 51200..]);
    let el = got.to_edge_list();
    assert_eq!(el.len(), 3200);
    assert_eq!(el.num_nodes, 400);
}
