//! The incoming-edge CSR against a reference written here (a stable sort of the edges by
//! target, PyG's self-loop handling), built on 1 and on several threads: the parallel
//! build must give the same rows, entry keys and attention order.

use distgat_graph::{EdgeList, IncomingCsr};

/// splitmix64: a fixed pseudo-random stream, so the test graph is the same every run.
fn stream(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Per row: (source, input edge index or -(v+1) for v's added loop), in summation order.
fn reference(src: &[u64], dst: &[u64], n: usize, loops: bool) -> Vec<Vec<(u32, i64)>> {
    let mut rows = vec![Vec::new(); n];
    for k in 0..src.len() {
        if !(loops && src[k] == dst[k]) {
            rows[dst[k] as usize].push((src[k] as u32, k as i64));
        }
    }
    if loops {
        for (v, row) in rows.iter_mut().enumerate() {
            row.push((v as u32, -(v as i64) - 1));
        }
    }
    rows
}

fn build_on(
    threads: usize,
    edges: &EdgeList,
    n: usize,
    loops: bool,
) -> (IncomingCsr, Vec<usize>, Vec<i64>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let (csr, order) = IncomingCsr::build(edges, n, loops, true).unwrap();
        let keys = csr.entry_keys(edges);
        (csr, order.unwrap(), keys)
    })
}

#[test]
fn parallel_build_equals_the_stable_sort_reference() {
    // Enough edges for the parallel path (a hub, duplicates, self loops, isolated nodes).
    let (n, e) = (3000usize, 300_000usize);
    let mut next = stream(7);
    let mut src = Vec::with_capacity(e);
    let mut dst = Vec::with_capacity(e);
    for k in 0..e {
        let s = next() % n as u64;
        // Every 5th edge into node 17 (a hub); nodes >= 2900 get no edges.
        let d = if k % 5 == 0 { 17 } else { next() % 2900 };
        let s = if k % 101 == 0 { d } else { s };
        src.push(s);
        dst.push(d);
    }
    let edges = EdgeList::from_pairs(&src, &dst);
    for loops in [false, true] {
        let want = reference(&src, &dst, n, loops);
        for threads in [1, 2, 3] {
            let (csr, order, keys) = build_on(threads, &edges, n, loops);
            assert_eq!(csr.num_nodes, n);
            for (i, row) in want.iter().enumerate() {
                let got: Vec<(u32, i64)> = csr
                    .row(i)
                    .iter()
                    .zip(&keys[csr.row_ptr[i]..csr.row_ptr[i + 1]])
                    .map(|(&s, &k)| (s, k))
                    .collect();
                assert_eq!(&got, row, "row {i}, loops {loops}, {threads} threads");
            }
            let kept = want.iter().map(Vec::len).sum::<usize>() - if loops { n } else { 0 };
            assert_eq!(csr.kept_edges, kept);
            // The attention order: kept input edges in input order, then the loops.
            let mut expected_order = Vec::new();
            for k in 0..e {
                if !(loops && src[k] == dst[k]) {
                    expected_order.push(keys.iter().position(|&x| x == k as i64).unwrap());
                }
                if expected_order.len() == 50 {
                    break;
                }
            }
            assert_eq!(&order[..50], &expected_order[..], "{threads} threads");
            for (j, &pos) in order.iter().enumerate().take(kept).skip(50).step_by(997) {
                let k = keys[pos];
                assert!(
                    k >= 0 && (j == 0 || k > keys[order[j - 1]]),
                    "order entry {j}"
                );
            }
        }
    }
}

/// The blocked build over many blocks and several edge chunks (70k nodes: 137 blocks of
/// 512 rows; 700k edges: 3 chunks), with duplicates and self loops, and small corner
/// cases: a single node, no edges, nodes beyond every edge.
#[test]
fn blocked_build_equals_the_stable_sort_reference_on_many_blocks() {
    let mut next = stream(11);
    let mut cases = Vec::new();
    let (n, e) = (70_000usize, 700_000usize);
    let (mut src, mut dst) = (Vec::with_capacity(e), Vec::with_capacity(e));
    for k in 0..e {
        // Targets skewed to low ids (a power law of sorts), some duplicates and loops.
        let d = (next() % n as u64) >> (next() % 4);
        let s = match k % 53 {
            0 => d,
            1 => src.last().copied().unwrap_or(0),
            _ => next() % n as u64,
        };
        src.push(s);
        dst.push(if k % 53 == 1 {
            dst.last().copied().unwrap_or(d)
        } else {
            d
        });
    }
    cases.push((src, dst, n));
    cases.push((vec![0, 0, 0], vec![0, 0, 0], 1));
    cases.push((vec![], vec![], 5));
    cases.push((vec![], vec![], 0));
    cases.push((vec![3, 1, 3, 2], vec![1, 3, 1, 1], 300));
    for (src, dst, n) in cases {
        let edges = EdgeList::from_pairs(&src, &dst);
        for loops in [false, true] {
            let want = reference(&src, &dst, n, loops);
            for threads in [1, 2, 5] {
                let (csr, _, keys) = build_on(threads, &edges, n, loops);
                assert_eq!(csr.row_ptr.len(), n + 1);
                assert_eq!(csr.row_ptr[0], 0);
                assert_eq!(csr.num_entries(), want.iter().map(Vec::len).sum::<usize>());
                for (i, row) in want.iter().enumerate() {
                    let got: Vec<(u32, i64)> = csr
                        .row(i)
                        .iter()
                        .zip(&keys[csr.row_ptr[i]..csr.row_ptr[i + 1]])
                        .map(|(&s, &k)| (s, k))
                        .collect();
                    assert_eq!(
                        &got, row,
                        "n {n}, row {i}, loops {loops}, {threads} threads"
                    );
                }
            }
        }
    }
}

/// The build with caller-given scratch memory (`build_with_scratch`): old values in the
/// scratch (NaN bits, ids beyond every node, a previous build's leftovers) never leak into
/// the CSR, a scratch too short is replaced, and one longer keeps its length, so the
/// caller can read its features into it. Checked against the reference, not `build`.
#[test]
fn build_with_dirty_scratch_equals_the_stable_sort_reference() {
    let mut next = stream(31);
    let (n, e) = (20_000usize, 400_000usize);
    let (mut src, mut dst) = (Vec::with_capacity(e), Vec::with_capacity(e));
    for k in 0..e {
        let d = (next() % n as u64) >> (next() % 3);
        let s = if k % 37 == 0 { d } else { next() % n as u64 };
        src.push(s);
        dst.push(d);
    }
    let edges = EdgeList::from_pairs(&src, &dst);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    // Too short (replaced), exactly two values per edge, and longer than needed; each
    // filled with bits that would show up as wrong sources or rows if read before written.
    let lengths = [10usize, 2 * e, 2 * e + 12_345];
    for (case, &len) in lengths.iter().enumerate() {
        let fill = f32::from_bits(if case == 1 { 0x7fc0_0001 } else { 0xffff_ffff });
        let mut scratch = vec![fill; len];
        for loops in [true, false] {
            let want = reference(&src, &dst, n, loops);
            let (csr, _) = pool
                .install(|| IncomingCsr::build_with_scratch(&edges, n, loops, false, &mut scratch))
                .unwrap();
            assert!(scratch.len() >= len.max(2 * csr.kept_edges), "case {case}");
            assert_eq!(csr.row_ptr[0], 0);
            for (i, row) in want.iter().enumerate() {
                let got: Vec<u32> = csr.row(i).to_vec();
                let expected: Vec<u32> = row.iter().map(|&(s, _)| s).collect();
                assert_eq!(got, expected, "case {case}, row {i}, loops {loops}");
            }
            assert_eq!(csr.row_ptr[n], csr.num_entries());
        }
    }
}

/// An id beyond the node count is an error naming the edge, not a dropped edge.
#[test]
fn an_id_beyond_the_nodes_is_an_error() {
    let edges = EdgeList::from_pairs(&[0, 1, 2], &[1, 9, 0]);
    for loops in [false, true] {
        let e = IncomingCsr::build(&edges, 3, loops, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("edge 1") && e.contains("1 -> 9"), "{e}");
    }
}

/// The parallel undirected adjacency (the RCM order's input) against a reference written
/// here: row `v` lists the other end of every edge at `v`, in input edge order, self
/// loops left out, duplicates kept. Many blocks and several edge chunks, on 1, 2 and 5
/// threads; it must also equal the sequential build the partitioners use.
#[test]
fn undirected_adjacency_equals_the_reference_on_any_threads() {
    let mut next = stream(23);
    let (n, e) = (40_000usize, 300_000usize);
    let (mut src, mut dst) = (Vec::with_capacity(e), Vec::with_capacity(e));
    for k in 0..e {
        let d = (next() % n as u64) >> (next() % 4);
        let s = if k % 41 == 0 { d } else { next() % n as u64 };
        src.push(s);
        dst.push(d);
        if k % 97 == 0 {
            src.push(s);
            dst.push(d);
        }
    }
    let mut rows = vec![Vec::new(); n];
    for (&s, &d) in src.iter().zip(&dst) {
        if s != d {
            rows[s as usize].push(d as u32);
            rows[d as usize].push(s as u32);
        }
    }
    let edges = EdgeList::from_pairs(&src, &dst);
    let sequential = distgat_graph::reorder::undirected_offsets(&edges, n);
    let sequential = (
        sequential.clone(),
        distgat_graph::reorder::undirected_entries(&edges, &sequential),
    );
    for threads in [1, 2, 5] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (offsets, entries) = pool
            .install(|| distgat_graph::csr::undirected_adjacency(&edges, n))
            .unwrap();
        assert_eq!(offsets.len(), n + 1);
        for (v, row) in rows.iter().enumerate() {
            assert_eq!(
                &entries[offsets[v]..offsets[v + 1]],
                row.as_slice(),
                "row {v}, {threads} threads"
            );
        }
        assert_eq!(offsets[n], entries.len());
        assert_eq!((offsets, entries), sequential);
    }
    let bad = EdgeList::from_pairs(&[0, 1], &[1, 7]);
    let err = distgat_graph::csr::undirected_adjacency(&bad, 3).unwrap_err();
    assert!(err.to_string().contains("1 -> 7"), "{err}");
}
