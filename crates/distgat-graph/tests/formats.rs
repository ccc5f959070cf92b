//! Positive and negative tests of every graph input format (`read_graph`) and of
//! `Features::read_npy`, on small hand-written files with exact expected edges.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use distgat_graph::{read_graph, EdgeList, Features, GraphError, GraphFormat};
use npyz::{Order, WriterBuilder};

const DATA_4ELT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/4elt");

/// A temporary directory to write input files into.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().expect("temp dir"))
    }

    fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.path().join(name);
        fs::write(&path, contents).expect("write input");
        path
    }

    fn npy<T>(&self, name: &str, shape: &[u64], order: Order, data: &[T]) -> PathBuf
    where
        T: npyz::Serialize + npyz::AutoSerialize + Copy,
    {
        let path = self.0.path().join(name);
        let mut file = std::io::BufWriter::new(fs::File::create(&path).expect("create npy"));
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(shape)
            .order(order)
            .writer(&mut file)
            .begin_nd()
            .expect("npy header");
        writer.extend(data.iter().copied()).expect("npy body");
        writer.finish().expect("npy finish");
        file.flush().expect("npy flush");
        path
    }

    /// A `.npy` with a hand-written header `descr` / `shape` and raw `body` bytes.
    fn raw_npy(&self, name: &str, descr: &str, fortran: bool, shape: &str, body: &[u8]) -> PathBuf {
        let fortran = if fortran { "True" } else { "False" };
        let dict =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
        let mut header = format!("{dict:<117}");
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(body);
        self.file(name, bytes)
    }
}

/// Reads `path` (format from the extension) and returns (src, dst, num_nodes).
#[track_caller]
fn read_ok(path: &Path) -> (Vec<u64>, Vec<u64>, u64) {
    let edges =
        read_graph(path, None).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        edges.warnings.is_empty(),
        "unexpected warnings: {:?}",
        edges.warnings
    );
    (edges.src().to_vec(), edges.dst().to_vec(), edges.num_nodes)
}

/// Checks that `result` is an error naming `path` and containing every phrase.
#[track_caller]
fn assert_error<T: std::fmt::Debug>(result: Result<T, GraphError>, path: &Path, phrases: &[&str]) {
    let err = result.expect_err("expected an error");
    let text = err.to_string();
    match &err {
        GraphError::Io { path: p, .. }
        | GraphError::Format { path: p, .. }
        | GraphError::Invalid { path: p, .. } => assert_eq!(p, path, "{text}"),
        GraphError::Argument { .. } => {}
    }
    assert!(
        text.contains(&path.display().to_string()),
        "error does not name {}: {text}",
        path.display()
    );
    for phrase in phrases {
        assert!(text.contains(phrase), "error lacks {phrase:?}: {text}");
    }
}

#[track_caller]
fn graph_error(dir: &Dir, name: &str, contents: &str, phrases: &[&str]) {
    let path = dir.file(name, contents);
    assert_error(read_graph(&path, None), &path, phrases);
}

// ---------------------------------------------------------------------------------------
// Text edge lists

#[test]
fn edge_list_comments_blank_lines_and_separators() {
    let dir = Dir::new();
    let path = dir.file(
        "g.txt",
        "# a comment\n\
         % another comment\n\
         \n\
         \x20  \t \n\
         0 1\n\
         1,2\n\
         2\t3\n\
         3, 4\n\
         \x20 5   6  \n\
         \t# indented comment\n\
         6 7\r\n\
         7,\t0\r\n\
         8 8\n",
    );
    let (src, dst, n) = read_ok(&path);
    assert_eq!(src, [0, 1, 2, 3, 5, 6, 7, 8]);
    assert_eq!(dst, [1, 2, 3, 4, 6, 7, 0, 8]);
    assert_eq!(n, 9);
}

#[test]
fn edge_list_keeps_order_and_duplicates() {
    let dir = Dir::new();
    let path = dir.file("g.el", "3 0\n0 3\n3 0\n10 2\n");
    let (src, dst, n) = read_ok(&path);
    assert_eq!(src, [3, 0, 3, 10]);
    assert_eq!(dst, [0, 3, 0, 2]);
    assert_eq!(n, 11);
}

#[test]
fn edge_list_crlf_file() {
    let dir = Dir::new();
    let path = dir.file("g.csv", "# src,dst\r\n0,1\r\n\r\n2,0\r\n");
    let (src, dst, n) = read_ok(&path);
    assert_eq!(src, [0, 2]);
    assert_eq!(dst, [1, 0]);
    assert_eq!(n, 3);
}

#[test]
fn edge_list_without_final_newline() {
    let dir = Dir::new();
    let path = dir.file("g.txt", "0 1\n1 2");
    let (src, dst, n) = read_ok(&path);
    assert_eq!((src, dst, n), (vec![0, 1], vec![1, 2], 3));
}

#[test]
fn edge_list_extensions() {
    let dir = Dir::new();
    for ext in ["txt", "tsv", "csv", "el", "edges", "TXT", "Edges"] {
        let path = dir.file(&format!("g.{ext}"), "4\t2\n2\t4\n");
        assert_eq!(
            GraphFormat::from_path(&path).unwrap(),
            GraphFormat::EdgeList
        );
        let (src, dst, n) = read_ok(&path);
        assert_eq!((src, dst, n), (vec![4, 2], vec![2, 4], 5), ".{ext}");
    }
}

#[test]
fn edge_list_empty_file() {
    let dir = Dir::new();
    let path = dir.file("g.txt", "# nothing here\n\n");
    let (src, dst, n) = read_ok(&path);
    assert!(src.is_empty() && dst.is_empty());
    assert_eq!(n, 0);
}

#[test]
fn explicit_format_overrides_extension() {
    let dir = Dir::new();
    let path = dir.file("g.dat", "1 0\n");
    let edges = read_graph(&path, Some(GraphFormat::EdgeList)).unwrap();
    assert_eq!(
        (edges.src(), edges.dst(), edges.num_nodes),
        (&[1][..], &[0][..], 2)
    );
    // A .txt file read as METIS.
    let path = dir.file("m.txt", "2 1\n2\n1\n");
    let edges = read_graph(&path, Some(GraphFormat::Metis)).unwrap();
    assert_eq!((edges.src(), edges.dst()), (&[0, 1][..], &[1, 0][..]));
}

#[test]
fn edge_list_errors() {
    let dir = Dir::new();
    graph_error(
        &dir,
        "one.txt",
        "0 1\n\n3\n",
        &["line 3", "expected 2 fields", "found 1"],
    );
    graph_error(
        &dir,
        "three.txt",
        "0 1 2\n",
        &["line 1", "expected 2 fields", "found 3"],
    );
    graph_error(
        &dir,
        "comma3.csv",
        "# h\n0,1\n1,2,3\n",
        &["line 3", "found 3"],
    );
    // An empty field is an error naming the line, never skipped: `0,,1` is not 0 -> 1.
    graph_error(
        &dir,
        "empty.csv",
        "0,1\n0,,1\n",
        &["line 2", "field 2 is empty", "'0,,1'"],
    );
    graph_error(
        &dir,
        "trailing.csv",
        "0,1,\n",
        &["line 1", "field 3 is empty"],
    );
    graph_error(
        &dir,
        "leading.csv",
        ",0,1\n",
        &["line 1", "field 1 is empty"],
    );
    graph_error(
        &dir,
        "word.tsv",
        "0\t1\n1\ttwo\n",
        &["line 2", "target id 'two'", "not a non-negative integer"],
    );
    graph_error(&dir, "neg.txt", "-1 0\n", &["line 1", "source id '-1'"]);
    graph_error(&dir, "float.txt", "0 1\n0 1.5\n", &["line 2", "'1.5'"]);
    graph_error(
        &dir,
        "huge.txt",
        "0 18446744073709551616\n",
        &["line 1", "not a non-negative integer"],
    );
    let path = dir.file("bin.txt", b"0 1\n\xff\xfe 2\n");
    assert_error(read_graph(&path, None), &path, &["line 2", "UTF-8"]);
    let missing = dir.0.path().join("missing.txt");
    assert!(matches!(
        read_graph(&missing, None),
        Err(GraphError::Io { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// METIS

/// A 4-vertex graph: 1-2, 1-3, 2-3, 3-4 (1-based), as adjacency entries in file order.
const METIS_SRC: [u64; 8] = [0, 0, 1, 1, 2, 2, 2, 3];
const METIS_DST: [u64; 8] = [1, 2, 0, 2, 0, 1, 3, 2];

#[test]
fn metis_plain() {
    let dir = Dir::new();
    let path = dir.file(
        "g.graph",
        "% a comment\n4 4\n2 3\n1 3\n% between vertices\n1 2 4\n3\n",
    );
    let (src, dst, n) = read_ok(&path);
    assert_eq!(src, METIS_SRC);
    assert_eq!(dst, METIS_DST);
    assert_eq!(n, 4);
}

#[test]
fn metis_fmt_000_explicit_and_trailing_blank_lines() {
    let dir = Dir::new();
    let path = dir.file("g.graph", "4 4 000\n 2  3 \n1 3\n1 2 4\n3\n\n\n");
    let (src, dst, n) = read_ok(&path);
    assert_eq!(
        (src.as_slice(), dst.as_slice(), n),
        (&METIS_SRC[..], &METIS_DST[..], 4)
    );
}

#[track_caller]
fn assert_weighted(edges: &EdgeList) {
    assert_eq!(edges.src(), METIS_SRC);
    assert_eq!(edges.dst(), METIS_DST);
    assert_eq!(edges.num_nodes, 4);
}

#[test]
fn metis_edge_weights() {
    let dir = Dir::new();
    for fmt in ["1", "01", "001"] {
        let path = dir.file(
            "w.graph",
            format!("4 4 {fmt}\n2 5 3 7\n1 5 3 1\n1 7 2 1 4 9\n3 9\n"),
        );
        let edges = read_graph(&path, None).unwrap();
        assert_weighted(&edges);
        assert_eq!(edges.warnings.len(), 1, "fmt {fmt}: {:?}", edges.warnings);
        assert!(
            edges.warnings[0].contains("edge weights"),
            "{:?}",
            edges.warnings
        );
        assert!(
            edges.warnings[0].contains("w.graph"),
            "{:?}",
            edges.warnings
        );
    }
}

#[test]
fn metis_vertex_and_edge_weights() {
    let dir = Dir::new();
    // fmt 011: one vertex weight, then (neighbour, weight) pairs.
    let path = dir.file(
        "vw.graph",
        "4 4 011\n10 2 5 3 7\n20 1 5 3 1\n30 1 7 2 1 4 9\n40 3 9\n",
    );
    let edges = read_graph(&path, None).unwrap();
    assert_weighted(&edges);
    assert_eq!(edges.warnings.len(), 1);
    // fmt 011 with ncon = 2: two vertex weights per line.
    let path = dir.file(
        "vw2.graph",
        "4 4 011 2\n10 1 2 5 3 7\n20 2 1 5 3 1\n30 3 1 7 2 1 4 9\n40 4 3 9\n",
    );
    let edges = read_graph(&path, None).unwrap();
    assert_weighted(&edges);
    // fmt 010: vertex weights only, no warning.
    let path = dir.file("v.graph", "4 4 10\n10 2 3\n20 1 3\n30 1 2 4\n40 3\n");
    let (src, dst, n) = read_ok(&path);
    assert_eq!(
        (src.as_slice(), dst.as_slice(), n),
        (&METIS_SRC[..], &METIS_DST[..], 4)
    );
}

#[test]
fn metis_vertex_sizes() {
    let dir = Dir::new();
    let path = dir.file("s.graph", "4 4 100\n1 2 3\n1 1 3\n2 1 2 4\n1 3\n");
    let (src, dst, n) = read_ok(&path);
    assert_eq!(
        (src.as_slice(), dst.as_slice(), n),
        (&METIS_SRC[..], &METIS_DST[..], 4)
    );
    // fmt 111: size, one vertex weight, weighted neighbours.
    let path = dir.file(
        "all.graph",
        "4 4 111\n1 10 2 5 3 7\n1 20 1 5 3 1\n2 30 1 7 2 1 4 9\n1 40 3 9\n",
    );
    let edges = read_graph(&path, None).unwrap();
    assert_weighted(&edges);
}

#[test]
fn metis_isolated_vertices() {
    let dir = Dir::new();
    // Vertex 2 (in the middle) and vertex 5 (last) have empty adjacency lines.
    let path = dir.file("iso.graph", "5 2\n3\n\n1 4\n3\n\n");
    let (src, dst, n) = read_ok(&path);
    assert_eq!(src, [0, 2, 2, 3]);
    assert_eq!(dst, [2, 0, 3, 2]);
    assert_eq!(n, 5, "the header's vertex count includes isolated vertices");
    // No edges at all.
    let path = dir.file("empty.graph", "3 0\n\n\n\n");
    let (src, _, n) = read_ok(&path);
    assert!(src.is_empty());
    assert_eq!(n, 3);
}

#[test]
fn metis_errors() {
    let dir = Dir::new();
    graph_error(
        &dir,
        "few.graph",
        "4 4\n2 3\n1 3\n1 2 4\n",
        &["declares 4 vertices", "only 3 vertex lines"],
    );
    graph_error(
        &dir,
        "many.graph",
        "2 1\n2\n1\n1\n",
        &["line 4", "more vertex lines"],
    );
    graph_error(
        &dir,
        "m.graph",
        "4 5\n2 3\n1 3\n1 2 4\n3\n",
        &[
            "declares 5 undirected edges",
            "10 adjacency entries",
            "lists 8",
        ],
    );
    graph_error(
        &dir,
        "zero.graph",
        "2 1\n0\n1\n",
        &["line 2", "vertex 1", "neighbour 0", "outside 1..=2"],
    );
    graph_error(&dir, "big.graph", "2 1\n2\n3\n", &["line 3", "neighbour 3"]);
    graph_error(&dir, "word.graph", "2 1\n2\nx\n", &["line 3", "'x'"]);
    graph_error(&dir, "fmt.graph", "2 1 2\n2\n1\n", &["line 1", "fmt '2'"]);
    graph_error(
        &dir,
        "fmt4.graph",
        "2 1 0001\n2\n1\n",
        &["line 1", "fmt '0001'"],
    );
    graph_error(
        &dir,
        "ncon.graph",
        "2 1 001 2\n2 1\n1 1\n",
        &["line 1", "ncon = 2"],
    );
    graph_error(&dir, "hdr.graph", "2\n2\n1\n", &["line 1", "METIS header"]);
    graph_error(
        &dir,
        "hdr5.graph",
        "2 1 0 0 0\n2\n1\n",
        &["line 1", "METIS header"],
    );
    graph_error(
        &dir,
        "pairs.graph",
        "2 1 1\n2 1\n1\n",
        &["line 3", "vertex 2", "pairs"],
    );
    graph_error(
        &dir,
        "vw.graph",
        "2 1 011 3\n1 1\n1 1 1 1 1\n",
        &["line 2", "vertex 1"],
    );
    graph_error(
        &dir,
        "wt.graph",
        "2 1 1\n2 w\n1 1\n",
        &["line 2", "edge weight 'w'"],
    );
    graph_error(
        &dir,
        "nothing.graph",
        "% only a comment\n\n",
        &["empty METIS file"],
    );
}

#[test]
fn metis_4elt_matches_edges_npy() {
    let dir = Path::new(DATA_4ELT);
    let metis = read_graph(&dir.join("4elt.graph"), None).expect("4elt.graph");
    let npy = read_graph(&dir.join("edges.npy"), None).expect("edges.npy");
    assert!(metis.warnings.is_empty());
    assert_eq!(metis.len(), 91756);
    assert_eq!(npy.len(), 91756);
    assert_eq!(metis.num_nodes, 15606);
    assert_eq!(npy.num_nodes, 15606);
    let pairs = |e: &EdgeList| {
        let mut p: Vec<(u64, u64)> = e
            .src()
            .iter()
            .copied()
            .zip(e.dst().iter().copied())
            .collect();
        p.sort_unstable();
        p
    };
    let (m, n) = (pairs(&metis), pairs(&npy));
    assert!(
        m.windows(2).all(|w| w[0] != w[1]),
        "4elt.graph has duplicate entries"
    );
    assert_eq!(m, n, "4elt.graph and edges.npy differ as edge sets");
    // edges.npy is documented as sorted by (source, target).
    assert_eq!(
        n.as_slice(),
        npy.src()
            .iter()
            .copied()
            .zip(npy.dst().iter().copied())
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// Matrix Market

#[test]
fn matrix_market_pattern_general() {
    let dir = Dir::new();
    let path = dir.file(
        "g.mtx",
        "%%MatrixMarket matrix coordinate pattern general\n\
         % a comment\n\
         %\n\
         5 5 4\n\
         1 2\n\
         \n\
         3 1\n\
         2 2\n\
         1 2\n",
    );
    let (src, dst, n) = read_ok(&path);
    assert_eq!(src, [0, 2, 1, 0]);
    assert_eq!(dst, [1, 0, 1, 1]);
    assert_eq!(n, 5, "node count from the size line, not the largest index");
}

#[test]
fn matrix_market_real_symmetric() {
    let dir = Dir::new();
    let path = dir.file(
        "s.mtx",
        "%%MatrixMarket matrix coordinate real symmetric\n\
         4 4 3\n\
         2 1 0.5\n\
         3 3 1.0\n\
         4 2 -2e3\n",
    );
    let (src, dst, n) = read_ok(&path);
    // Off-diagonal entries appear in both directions, the diagonal once.
    assert_eq!(src, [1, 0, 2, 3, 1]);
    assert_eq!(dst, [0, 1, 2, 1, 3]);
    assert_eq!(n, 4);
}

#[test]
fn matrix_market_integer_and_case() {
    let dir = Dir::new();
    let path = dir.file(
        "i.mtx",
        "%%matrixmarket MATRIX Coordinate Integer General\n3 3 2\n1 3 7\n3 2 -1\n",
    );
    let (src, dst, n) = read_ok(&path);
    assert_eq!((src, dst, n), (vec![0, 2], vec![2, 1], 3));
    // Rectangular: the node count is the larger dimension.
    let path = dir.file(
        "r.mtx",
        "%%MatrixMarket matrix coordinate pattern general\n2 6 1\n2 6\n",
    );
    let (src, dst, n) = read_ok(&path);
    assert_eq!((src, dst, n), (vec![1], vec![5], 6));
    // No entries.
    let path = dir.file(
        "e.mtx",
        "%%MatrixMarket matrix coordinate pattern symmetric\n7 7 0\n",
    );
    let (src, _, n) = read_ok(&path);
    assert!(src.is_empty());
    assert_eq!(n, 7);
}

#[test]
fn matrix_market_errors() {
    let dir = Dir::new();
    let b = "%%MatrixMarket matrix coordinate pattern general\n";
    graph_error(
        &dir,
        "banner.mtx",
        "%%MatrixMarket tensor coordinate pattern general\n1 1 0\n",
        &["line 1", "banner"],
    );
    graph_error(&dir, "nobanner.mtx", "2 2 1\n1 2\n", &["line 1", "banner"]);
    graph_error(
        &dir,
        "short.mtx",
        "%%MatrixMarket matrix coordinate pattern\n2 2 0\n",
        &["line 1", "banner"],
    );
    graph_error(
        &dir,
        "array.mtx",
        "%%MatrixMarket matrix array real general\n2 2\n",
        &["line 1", "'array'"],
    );
    graph_error(
        &dir,
        "complex.mtx",
        "%%MatrixMarket matrix coordinate complex general\n1 1 0\n",
        &["line 1", "'complex'"],
    );
    graph_error(
        &dir,
        "herm.mtx",
        "%%MatrixMarket matrix coordinate real hermitian\n1 1 0\n",
        &["line 1", "'hermitian'"],
    );
    graph_error(&dir, "empty.mtx", "", &["empty file"]);
    graph_error(&dir, "nosize.mtx", b, &["no size line"]);
    graph_error(
        &dir,
        "size.mtx",
        &format!("{b}2 2\n"),
        &["line 2", "size line"],
    );
    graph_error(
        &dir,
        "range.mtx",
        &format!("{b}2 2 1\n3 1\n"),
        &["line 3", "(3, 1)", "2 x 2"],
    );
    graph_error(
        &dir,
        "zero.mtx",
        &format!("{b}2 2 1\n0 1\n"),
        &["line 3", "(0, 1)", "1-based"],
    );
    graph_error(
        &dir,
        "many.mtx",
        &format!("{b}2 2 1\n1 2\n2 1\n"),
        &["line 4", "more entries than the 1"],
    );
    graph_error(
        &dir,
        "few.mtx",
        &format!("{b}2 2 3\n1 2\n2 1\n"),
        &["declares 3 entries", "has 2"],
    );
    graph_error(
        &dir,
        "fields.mtx",
        &format!("{b}2 2 1\n1 2 1.0\n"),
        &["line 3", "expected 2 fields", "found 3"],
    );
    graph_error(
        &dir,
        "value.mtx",
        "%%MatrixMarket matrix coordinate real general\n2 2 1\n1 2 abc\n",
        &["line 3", "'abc' is not real"],
    );
    graph_error(
        &dir,
        "novalue.mtx",
        "%%MatrixMarket matrix coordinate integer general\n2 2 1\n1 2\n",
        &["line 3", "expected 3 fields", "found 2"],
    );
}

// ---------------------------------------------------------------------------------------
// .npy edge index

#[test]
fn npy_int64_edge_index() {
    let dir = Dir::new();
    let path = dir.npy::<i64>("e.npy", &[2, 4], Order::C, &[0, 3, 3, 9, 1, 0, 2, 0]);
    let (src, dst, n) = read_ok(&path);
    assert_eq!((src, dst, n), (vec![0, 3, 3, 9], vec![1, 0, 2, 0], 10));
}

#[test]
fn npy_int32_edge_index() {
    let dir = Dir::new();
    let path = dir.npy::<i32>("e.npy", &[2, 3], Order::C, &[5, 0, 2, 1, 1, 7]);
    let (src, dst, n) = read_ok(&path);
    assert_eq!((src, dst, n), (vec![5, 0, 2], vec![1, 1, 7], 8));
}

#[test]
fn npy_fortran_order_edge_index() {
    let dir = Dir::new();
    // Fortran order stores column by column: (src, dst) of each edge in turn.
    let path = dir.npy::<i64>("f.npy", &[2, 3], Order::Fortran, &[5, 1, 0, 1, 2, 7]);
    let (src, dst, n) = read_ok(&path);
    assert_eq!((src, dst, n), (vec![5, 0, 2], vec![1, 1, 7], 8));
    let path = dir.npy::<i32>("f32.npy", &[2, 2], Order::Fortran, &[3, 4, 4, 3]);
    let (src, dst, n) = read_ok(&path);
    assert_eq!((src, dst, n), (vec![3, 4], vec![4, 3], 5));
}

#[test]
fn npy_empty_edge_index() {
    let dir = Dir::new();
    let path = dir.npy::<i64>("e.npy", &[2, 0], Order::C, &[]);
    let (src, dst, n) = read_ok(&path);
    assert!(src.is_empty() && dst.is_empty());
    assert_eq!(n, 0);
}

#[test]
fn npy_edge_index_errors() {
    let dir = Dir::new();
    let p = dir.npy::<i64>("neg.npy", &[2, 3], Order::C, &[0, 1, 2, 1, -4, 0]);
    assert_error(
        read_graph(&p, None),
        &p,
        &["edge 1", "negative target id -4"],
    );
    let p = dir.npy::<i64>("negf.npy", &[2, 3], Order::Fortran, &[0, 1, -2, 1, 2, 0]);
    assert_error(
        read_graph(&p, None),
        &p,
        &["edge 1", "negative source id -2"],
    );
    let p = dir.npy::<f32>("float.npy", &[2, 2], Order::C, &[0.0, 1.0, 1.0, 0.0]);
    assert_error(read_graph(&p, None), &p, &["float32", "int64"]);
    let p = dir.npy::<u8>("u8.npy", &[2, 2], Order::C, &[0, 1, 1, 0]);
    assert_error(read_graph(&p, None), &p, &["unsupported dtype"]);
    let p = dir.npy::<i64>("rank1.npy", &[4], Order::C, &[0, 1, 1, 0]);
    assert_error(read_graph(&p, None), &p, &["[2, E]", "[4]"]);
    let p = dir.npy::<i64>("rows3.npy", &[3, 2], Order::C, &[0, 1, 1, 0, 2, 2]);
    assert_error(read_graph(&p, None), &p, &["[2, E]", "[3, 2]"]);
    let p = dir.raw_npy("be.npy", ">i8", false, "(2, 1)", &[0u8; 16]);
    assert_error(read_graph(&p, None), &p, &["unsupported dtype >i8"]);
    let p = dir.raw_npy("trunc.npy", "<i8", false, "(2, 3)", &[0u8; 40]);
    assert_error(
        read_graph(&p, None),
        &p,
        &["truncated body", "48 bytes", "only 40"],
    );
    let p = dir.raw_npy("trail.npy", "<i8", false, "(2, 1)", &[0u8; 20]);
    assert_error(read_graph(&p, None), &p, &["4 unexpected trailing bytes"]);
    let p = dir.file("junk.npy", b"PK\x03\x04 definitely not numpy");
    assert_error(read_graph(&p, None), &p, &["not a valid .npy file"]);
    let p = dir.file("tiny.npy", b"\x93NUM");
    assert_error(read_graph(&p, None), &p, &["not a valid .npy file"]);
}

#[test]
fn edge_ids_checked_against_node_count() {
    let edges = EdgeList::from_pairs(&[0, 1, 2], &[1, 5, 0]);
    let path = Path::new("g.txt");
    edges.check_ids(6, path, "the 6 feature rows").unwrap();
    let err = edges
        .check_ids(5, path, "the 5 feature rows")
        .unwrap_err()
        .to_string();
    assert!(err.contains("g.txt"), "{err}");
    assert!(err.contains("edge 1: target id 5"), "{err}");
    assert!(err.contains("the 5 feature rows"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Format from the extension / name

#[test]
fn format_from_path() {
    let cases = [
        ("a.npy", GraphFormat::Npy),
        ("a.NPY", GraphFormat::Npy),
        ("dir.with.dots/a.graph", GraphFormat::Metis),
        ("a.mtx", GraphFormat::MatrixMarket),
        ("a.tsv", GraphFormat::EdgeList),
    ];
    for (name, format) in cases {
        assert_eq!(
            GraphFormat::from_path(Path::new(name)).unwrap(),
            format,
            "{name}"
        );
    }
    for name in ["g.graphml", "g.mtx.gz", "graph", "g.", "g.json"] {
        let err = GraphFormat::from_path(Path::new(name)).unwrap_err();
        assert!(matches!(err, GraphError::Argument { .. }), "{name}: {err}");
        let text = err.to_string();
        assert!(text.contains(name), "{name}: {text}");
        assert!(text.contains("--format"), "{name}: {text}");
        assert!(text.contains("npy, edgelist, metis, mtx"), "{name}: {text}");
    }
    // read_graph reports the same error without touching the file.
    let err = read_graph(Path::new("no/such/file.xyz"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--format") && err.contains("'xyz'"), "{err}");
}

#[test]
fn format_from_name() {
    for (name, format) in [
        ("npy", GraphFormat::Npy),
        ("EdgeList", GraphFormat::EdgeList),
        ("csv", GraphFormat::EdgeList),
        ("metis", GraphFormat::Metis),
        ("graph", GraphFormat::Metis),
        ("mtx", GraphFormat::MatrixMarket),
        ("matrixmarket", GraphFormat::MatrixMarket),
    ] {
        assert_eq!(GraphFormat::from_name(name).unwrap(), format, "{name}");
    }
    let err = GraphFormat::from_name("graphml").unwrap_err().to_string();
    assert!(
        err.contains("--format") && err.contains("'graphml'"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Features

#[test]
fn features_float32() {
    let dir = Dir::new();
    let values = [1.0f32, -2.5, 0.0, 3.25, 1e-30, -0.0];
    let path = dir.npy("x.npy", &[3, 2], Order::C, &values);
    let x = Features::read_npy(&path).unwrap();
    assert_eq!((x.num_nodes, x.width), (3, 2));
    assert_eq!(x.values, values);
    assert_eq!(x.row(1), [0.0, 3.25]);
}

#[test]
fn features_float64_rounded_to_float32() {
    let dir = Dir::new();
    let values = [0.1f64, 1.0 / 3.0, -2.5, 1e-50, 3.4e38, 123_456_789.0];
    let path = dir.npy("x64.npy", &[2, 3], Order::C, &values);
    let x = Features::read_npy(&path).unwrap();
    assert_eq!((x.num_nodes, x.width), (2, 3));
    let want: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    assert_eq!(x.values, want);
    assert_eq!(x.values[0], 0.1f32);
    assert_eq!(x.values[3], 0.0, "float64 underflow becomes 0");
}

#[test]
fn features_fortran_order() {
    let dir = Dir::new();
    // [[1, 2], [3, 4], [5, 6]] stored column by column.
    let path = dir.npy(
        "xf.npy",
        &[3, 2],
        Order::Fortran,
        &[1.0f32, 3.0, 5.0, 2.0, 4.0, 6.0],
    );
    let x = Features::read_npy(&path).unwrap();
    assert_eq!((x.num_nodes, x.width), (3, 2));
    assert_eq!(x.values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let path = dir.npy(
        "xf64.npy",
        &[2, 3],
        Order::Fortran,
        &[1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0],
    );
    let x = Features::read_npy(&path).unwrap();
    assert_eq!(x.values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

#[test]
fn features_empty_shapes() {
    let dir = Dir::new();
    let path = dir.npy::<f32>("x0.npy", &[0, 4], Order::C, &[]);
    let x = Features::read_npy(&path).unwrap();
    assert_eq!((x.num_nodes, x.width, x.values.len()), (0, 4, 0));
    let path = dir.npy::<f32>("x00.npy", &[3, 0], Order::C, &[]);
    let x = Features::read_npy(&path).unwrap();
    assert_eq!((x.num_nodes, x.width, x.values.len()), (3, 0, 0));
}

#[test]
fn features_errors() {
    let dir = Dir::new();
    let p = dir.npy(
        "nan.npy",
        &[2, 3],
        Order::C,
        &[0.0f32, 1.0, 2.0, 3.0, f32::NAN, 5.0],
    );
    assert_error(
        Features::read_npy(&p),
        &p,
        &["row 1, column 1", "NaN", "finite"],
    );
    let p = dir.npy(
        "inf.npy",
        &[2, 2],
        Order::C,
        &[0.0f32, f32::INFINITY, 2.0, 3.0],
    );
    assert_error(
        Features::read_npy(&p),
        &p,
        &["row 0, column 1", "inf", "finite"],
    );
    let p = dir.npy("nan64.npy", &[1, 2], Order::C, &[f64::NAN, 0.0]);
    assert_error(Features::read_npy(&p), &p, &["row 0, column 0", "NaN"]);
    let p = dir.npy("big64.npy", &[2, 2], Order::C, &[0.0f64, 0.0, 0.0, 1e300]);
    assert_error(
        Features::read_npy(&p),
        &p,
        &["row 1, column 1", "inf", "float32 range"],
    );
    // In Fortran order the position is reported in (row, column) of the matrix.
    let p = dir.npy(
        "nanf.npy",
        &[3, 2],
        Order::Fortran,
        &[0.0f32, 0.0, 0.0, 0.0, f32::NAN, 0.0],
    );
    assert_error(Features::read_npy(&p), &p, &["row 1, column 1"]);
    let p = dir.npy::<i64>("int.npy", &[2, 2], Order::C, &[1, 2, 3, 4]);
    assert_error(Features::read_npy(&p), &p, &["int64", "float32 or float64"]);
    let p = dir.npy::<u8>("u8.npy", &[2, 2], Order::C, &[1, 2, 3, 4]);
    assert_error(Features::read_npy(&p), &p, &["unsupported dtype"]);
    let p = dir.npy::<f32>("rank1.npy", &[4], Order::C, &[1.0, 2.0, 3.0, 4.0]);
    assert_error(Features::read_npy(&p), &p, &["[N, F]", "[4]"]);
    let p = dir.npy::<f32>("rank3.npy", &[1, 2, 2], Order::C, &[1.0, 2.0, 3.0, 4.0]);
    assert_error(Features::read_npy(&p), &p, &["[N, F]", "[1, 2, 2]"]);
    let p = dir.raw_npy("trunc.npy", "<f4", false, "(3, 2)", &[0u8; 23]);
    assert_error(
        Features::read_npy(&p),
        &p,
        &["truncated body", "24 bytes", "only 23"],
    );
    let p = dir.raw_npy("be.npy", ">f4", false, "(1, 1)", &[0u8; 4]);
    assert_error(Features::read_npy(&p), &p, &["unsupported dtype >f4"]);
    let p = dir.file(
        "junk.npy",
        b"\x00\x01\x02\x03 random bytes, not an npy file at all",
    );
    assert_error(Features::read_npy(&p), &p, &["not a valid .npy file"]);
    let missing = dir.0.path().join("missing.npy");
    assert!(matches!(
        Features::read_npy(&missing),
        Err(GraphError::Io { .. })
    ));
}

#[test]
fn edge_list_id_u64_max() {
    let dir = Dir::new();
    graph_error(
        &dir,
        "max.txt",
        "0 1\n0 18446744073709551615\n",
        &["18446744073709551615"],
    );
}

#[test]
fn npy_file_read_as_text_says_it_is_npy() {
    let dir = Dir::new();
    let path = dir.npy::<i64>("e.npy", &[2, 2], Order::C, &[0, 1, 1, 0]);
    for format in [
        GraphFormat::EdgeList,
        GraphFormat::Metis,
        GraphFormat::MatrixMarket,
    ] {
        assert_error(
            read_graph(&path, Some(format)),
            &path,
            &["line 1", "is a .npy array", "npy format"],
        );
    }
}

#[test]
fn write_npy_bytes_equal_npyz_element_writer() {
    // The fast path writes the values' bytes after npyz's header: the file must be the
    // one npyz writes element by element (the reference here), for each dtype we write.
    fn check<T>(dir: &Dir, name: &str, shape: &[u64], data: &[T])
    where
        T: npyz::Serialize + npyz::AutoSerialize + bytemuck::Pod,
    {
        let ours = dir.0.path().join(name);
        distgat_graph::write_npy(&ours, shape, data).unwrap();
        let reference = dir.npy(&format!("ref-{name}"), shape, Order::C, data);
        assert_eq!(
            fs::read(&ours).unwrap(),
            fs::read(&reference).unwrap(),
            "{name}"
        );
    }
    let dir = Dir::new();
    let floats: Vec<f32> = (0..3000).map(|i| (i as f32).sin() * 1e3).collect();
    check(&dir, "f32.npy", &[1000, 3], &floats);
    let doubles: Vec<f64> = floats.iter().map(|&v| f64::from(v) / 7.0).collect();
    check(&dir, "f64.npy", &[3000], &doubles);
    let ids: Vec<i64> = (0..4000).map(|i| i * 7919 - 10).collect();
    check(&dir, "i64.npy", &[2, 2000], &ids);
    check::<i32>(&dir, "empty.npy", &[0, 5], &[]);
}

// ---------------------------------------------------------------------------------------
// Inputs of fuzz/README.md's crash table: each once panicked or hung.

#[test]
fn fuzz_npy_body_length_near_u64_max_is_an_error() {
    // 2^61 - 1 float64 elements: a body of 2^64 - 8 bytes, plus the header overflowed.
    let dir = Dir::new();
    let path = dir.raw_npy("huge.npy", "<f8", false, "(2305843009213693951,)", b"");
    assert_error(Features::read_npy(&path), &path, &["overflows"]);
    let path = dir.raw_npy(
        "huge_edges.npy",
        "<i8",
        false,
        "(2, 1152921504606846975)",
        b"",
    );
    assert_error(read_graph(&path, None), &path, &["overflows"]);
}

#[test]
fn empty_features_with_a_huge_width_stream_without_a_buffer() {
    // [0, 2^40] in C order is a 128-byte file: the block readers (scan, read_rows, the
    // coordinator's fingerprint pass) sized a 4 TiB buffer by the row before counting rows.
    let dir = Dir::new();
    let path = dir.raw_npy("x.npy", "<f4", false, "(0, 1099511627776)", b"");
    assert_eq!(
        Features::scan(&path, "features").unwrap(),
        (0, 1 << 40, f32::INFINITY)
    );
    let blocks = Features::blocks(&path, "features").unwrap();
    let mut calls = 0;
    blocks
        .for_each(|_, _| {
            calls += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(calls, 0);
    let none = Features::read_rows(&path, "features", &[]).unwrap();
    assert_eq!((none.num_nodes, none.width), (0, 1 << 40));
}

#[test]
fn fuzz_empty_fortran_features_with_a_huge_width_are_read_at_once() {
    // [0, 10^15] in Fortran order: the transpose looped 10^15 times over nothing.
    let dir = Dir::new();
    let path = dir.raw_npy("x.npy", "<f4", true, "(0, 1000000000000000)", b"");
    let f = Features::read_npy(&path).expect("an empty matrix");
    assert_eq!(
        (f.num_nodes, f.width, f.values.len()),
        (0, 1_000_000_000_000_000, 0)
    );
}

#[test]
fn fuzz_metis_edge_count_beyond_int64_is_an_error() {
    // 2 m overflowed for m >= 2^63.
    let dir = Dir::new();
    graph_error(
        &dir,
        "m.graph",
        "1 9223372036854775808\n\n",
        &["line 1", "edge count", "int64"],
    );
}

#[test]
fn fuzz_metis_huge_ncon_is_an_error() {
    // sizes + ncon vertex weights overflowed for ncon = usize::MAX.
    let dir = Dir::new();
    graph_error(
        &dir,
        "ncon.graph",
        "1 0 110 18446744073709551615\n1 2\n",
        &["line 2", "vertex size/weight fields"],
    );
}

#[test]
fn fuzz_npy_shape_whose_product_overflows_is_an_error() {
    // npyz multiplied the dimensions unchecked (a panic with overflow checks), also for
    // the strides of a shape with a zero.
    let dir = Dir::new();
    let path = dir.raw_npy("a.npy", "<i8", false, "(4294967296, 10000000000000)", b"");
    assert_error(read_graph(&path, None), &path, &["overflows"]);
    let path = dir.raw_npy("b.npy", "<f4", true, "(0, 4294967296, 10000000000000)", b"");
    assert_error(Features::read_npy(&path), &path, &["overflows"]);
}

#[test]
fn fuzz_npy_shape_with_arithmetic_is_an_error() {
    // npyz evaluates `a-b` in the shape tuple, which hid an overflowing product from the
    // check above; numpy writes plain integers only.
    let dir = Dir::new();
    let path = dir.raw_npy("c.npy", "<i8", false, "(4294967296, 10000000000000-1)", b"");
    assert_error(
        read_graph(&path, None),
        &path,
        &["'10000000000000-1' is not an integer"],
    );
}

#[test]
fn fuzz_npy_repeated_shape_key_is_checked_too() {
    // npyz keeps the last of repeated keys: every `shape` is checked.
    let dir = Dir::new();
    let path = dir.raw_npy(
        "d.npy",
        "<f8",
        true,
        "(3, 3), 'shape': (4294967296, 10000000000000)",
        b"",
    );
    assert_error(Features::read_npy(&path), &path, &["overflows"]);
}

#[test]
fn fuzz_npy_header_length_beyond_the_file_is_an_error() {
    // A version 3 pre-header claiming a 3 GiB header: npyz allocated it before reading
    // (out of memory under libFuzzer's limit). The claim must fit in the file.
    let dir = Dir::new();
    let mut bytes = b"\x93NUMPY\x03\x00".to_vec();
    bytes.extend_from_slice(&0xb97b_0076u32.to_le_bytes());
    bytes.extend_from_slice(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n");
    let path = dir.file("v3.npy", &bytes);
    assert_error(
        Features::read_npy(&path),
        &path,
        &["header claims 3111846006 bytes"],
    );
    assert_error(read_graph(&path, None), &path, &["header claims"]);
    // Version 1 too, with a u16 length past the end of a short file.
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&60_000u16.to_le_bytes());
    bytes.extend_from_slice(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n");
    let path = dir.file("v1.npy", &bytes);
    assert_error(
        Features::read_npy(&path),
        &path,
        &["header claims 60000 bytes"],
    );
}

#[test]
fn fuzz_npy_header_nested_too_deep_is_an_error() {
    // `{{{{...` in the header: npyz's Python-literal parser backtracks exponentially in
    // the nesting (12 braces took over a minute in the fuzz build). More than 4 levels
    // are refused first.
    let dir = Dir::new();
    for (name, open) in [
        ("braces.npy", "{"),
        ("lists.npy", "["),
        ("mixed.npy", "{[("),
    ] {
        let header = format!("{{'descr': '<f4', {}\n", open.repeat(60 / open.len()));
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        let path = dir.file(name, &bytes);
        let started = std::time::Instant::now();
        assert_error(
            Features::read_npy(&path),
            &path,
            &["nests brackets 61 deep"],
        );
        assert_error(read_graph(&path, None), &path, &["nests brackets"]);
        assert!(
            started.elapsed().as_secs() < 5,
            "{name}: {:?}",
            started.elapsed()
        );
    }
    // numpy's own headers (a dict holding a tuple) still read.
    let path = dir.npy("ok.npy", &[2, 1], Order::C, &[1.0f32, 2.0]);
    assert_eq!(
        Features::read_npy(&path).expect("features").values,
        [1.0, 2.0]
    );
}

/// The edge ids' memory is offered for reuse (as gathered rows) only when an int64 `.npy`
/// edge index was read into huge pages, in either memory order, and never for int32 or
/// text input; where the memory lies does not change the value.
#[test]
fn spare_ids_only_from_npy_input() {
    let dir = Dir::new();
    let (src, dst) = ([0u64, 1, 2], [1u64, 2, 0]);
    let ids: Vec<i64> = src.iter().chain(&dst).map(|&v| v as i64).collect();
    let c = dir.npy("c.npy", &[2, 3], Order::C, &ids);
    let pairs: Vec<i64> = src
        .iter()
        .zip(&dst)
        .flat_map(|(&s, &d)| [s as i64, d as i64])
        .collect();
    let f = dir.npy("f.npy", &[2, 3], Order::Fortran, &pairs);
    let text = dir.file("g.txt", "0 1\n1 2\n2 0\n");
    let ids32: Vec<i32> = ids.iter().map(|&v| v as i32).collect();
    let c32 = dir.npy("c32.npy", &[2, 3], Order::C, &ids32);
    let want = EdgeList::from_pairs(&src, &dst);
    for path in [&c, &f] {
        let edges = read_graph(path, None).unwrap();
        assert_eq!(edges, want, "{}", path.display());
        let spare = edges.into_spare_ids().expect("npy ids are offered");
        assert_eq!(spare, [0, 1, 2, 1, 2, 0]);
    }
    // int32 ids are converted into a vector of their own (4 KiB pages): not offered.
    for path in [&c32, &text] {
        let edges = read_graph(path, None).unwrap();
        assert_eq!(edges, want, "{}", path.display());
        assert!(edges.into_spare_ids().is_none(), "{}", path.display());
    }
    assert!(want.into_spare_ids().is_none());
}
