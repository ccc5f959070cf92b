//! One test per bad input: each must fail, and the message must name the problem.

use distgat_graph::{write_npy, EdgeList};
use distgat_neighbours::{
    build, hop_graph, knn_graph, radius_graph, Metric, NeighbourRule, Options, Points,
};

fn pts(n: usize, dim: usize) -> Points {
    let values = (0..n * dim).map(|v| (v as f32 * 0.37).sin()).collect();
    Points::new(n, dim, values, "points").unwrap()
}

fn message<T: std::fmt::Debug>(r: Result<T, distgat_neighbours::NeighbourError>) -> String {
    r.expect_err("must fail").to_string()
}

fn has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{msg:?} does not mention {p:?}");
    }
}

#[test]
fn nan_coordinate_names_row_and_column() {
    let mut v = vec![0.5f32; 12];
    v[7] = f32::NAN; // row 2, column 1 of [4, 3]
    has(
        &message(Points::new(4, 3, v, "pos")),
        &["pos", "row 2, column 1", "NaN", "not finite"],
    );
}

#[test]
fn infinite_coordinate_in_a_file_names_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.npy");
    let mut v = vec![0.25f32; 10];
    v[9] = f32::NEG_INFINITY; // row 4, column 1 of [5, 2]
    write_npy(&path, &[5, 2], &v).unwrap();
    has(
        &message(Points::read_npy(&path)),
        &["p.npy", "row 4, column 1", "inf", "not finite"],
    );
}

#[test]
fn float64_beyond_float32_range_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.npy");
    let mut v = vec![0.5f64; 6];
    v[3] = 1e300; // row 1, column 0 of [2, 3]
    write_npy(&path, &[2, 3], &v).unwrap();
    has(
        &message(Points::read_npy(&path)),
        &["big.npy", "row 1, column 0", "float32 range"],
    );
}

#[test]
fn float64_points_are_rounded_to_float32() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p64.npy");
    let v = [0.1f64, 0.2, 0.3, 0.4];
    write_npy(&path, &[2, 2], &v).unwrap();
    let p = Points::read_npy(&path).unwrap();
    assert_eq!(p.values(), &[0.1f32, 0.2, 0.3, 0.4]);
}

#[test]
fn one_dimensional_points_array_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flat.npy");
    write_npy(&path, &[6], &[0f32; 6]).unwrap();
    has(
        &message(Points::read_npy(&path)),
        &["flat.npy", "2-D array [N, D]", "[6]"],
    );
}

#[test]
fn zero_columns_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.npy");
    write_npy::<f32>(&path, &[4, 0], &[]).unwrap();
    has(
        &message(Points::read_npy(&path)),
        &["empty.npy", "D >= 1", "[4, 0]"],
    );
}

#[test]
fn wrong_dtype_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ints.npy");
    write_npy(&path, &[2, 2], &[1i64, 2, 3, 4]).unwrap();
    has(
        &message(Points::read_npy(&path)),
        &["ints.npy", "int64", "float32 or float64"],
    );
}

#[test]
fn missing_points_file_is_named() {
    has(
        &message(Points::read_npy(std::path::Path::new("/nonexistent/p.npy"))),
        &["/nonexistent/p.npy"],
    );
}

#[test]
fn k_below_one() {
    has(
        &message(knn_graph(&pts(5, 2), 0, &Options::default())),
        &["k = 0", "at least 1"],
    );
}

#[test]
fn k_at_least_n_without_loop() {
    has(
        &message(knn_graph(&pts(5, 2), 5, &Options::default())),
        &["k = 5", "less than the number of points (5)"],
    );
    assert!(knn_graph(&pts(5, 2), 4, &Options::default()).is_ok());
}

#[test]
fn k_above_n_with_loop() {
    let with_loop = Options {
        self_loops: true,
        ..Options::default()
    };
    has(
        &message(knn_graph(&pts(5, 2), 6, &with_loop)),
        &["k = 6", "at most the number of points (5)"],
    );
    // k = N with loops: everything, the centre included.
    let all = knn_graph(&pts(5, 2), 5, &with_loop).unwrap();
    assert_eq!(all.num_edges(), 25);
}

#[test]
fn radius_not_positive_or_not_finite() {
    for r in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        has(
            &message(radius_graph(&pts(5, 2), r, None, &Options::default())),
            &[&format!("r = {r}"), "finite number greater than 0"],
        );
    }
}

#[test]
fn max_neighbours_below_one() {
    has(
        &message(radius_graph(&pts(5, 2), 1.0, Some(0), &Options::default())),
        &["max_neighbours = 0", "at least 1"],
    );
    let g = EdgeList::from_pairs(&[0, 1], &[1, 2]);
    has(
        &message(hop_graph(&g, None, 1, Some(0), &Options::default())),
        &["max_neighbours = 0", "at least 1"],
    );
}

#[test]
fn hops_below_one() {
    let g = EdgeList::from_pairs(&[0, 1], &[1, 2]);
    has(
        &message(hop_graph(&g, None, 0, None, &Options::default())),
        &["hops = 0", "at least 1"],
    );
}

#[test]
fn hops_without_a_graph() {
    let rule = NeighbourRule::Hops {
        hops: 2,
        max_neighbours: None,
    };
    has(
        &message(build(&rule, Some(&pts(4, 2)), None, &Options::default())),
        &["hops rule needs a graph"],
    );
}

#[test]
fn knn_without_points() {
    has(
        &message(build(
            &NeighbourRule::Knn { k: 2 },
            None,
            None,
            &Options::default(),
        )),
        &["knn rule needs points"],
    );
}

#[test]
fn graph_id_beyond_the_node_count() {
    let g = EdgeList::from_pairs(&[0, 1, 9], &[1, 2, 0]);
    has(
        &message(hop_graph(&g, Some(5), 1, None, &Options::default())),
        &["edge 2", "node id 9", "node count 5"],
    );
}

#[test]
fn cosine_with_a_zero_vector_names_the_row() {
    let mut v = vec![1.0f32; 8];
    v[4] = 0.0;
    v[5] = 0.0; // row 2 of [4, 2]
    let p = Points::new(4, 2, v, "pos.npy").unwrap();
    let cosine = Options {
        metric: Metric::Cosine,
        ..Options::default()
    };
    has(
        &message(knn_graph(&p, 1, &cosine)),
        &["pos.npy", "row 2", "zero vector", "cosine"],
    );
    // The euclidean metric has no such problem.
    assert!(knn_graph(&p, 1, &Options::default()).is_ok());
}

#[test]
fn fuzz_empty_fortran_points_with_a_huge_dimension_are_read_at_once() {
    // [0, 10^15] in Fortran order (fuzz/README.md, bug 3): the transpose looped 10^15 times
    // over nothing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.npy");
    let dict = "{'descr': '<f4', 'fortran_order': True, 'shape': (0, 1000000000000000), }";
    let header = format!("{dict:<117}\n");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    std::fs::write(&path, bytes).unwrap();
    let p = Points::read_npy(&path).expect("no points");
    assert_eq!((p.len(), p.dim()), (0, 1_000_000_000_000_000));
}
