//! Partitioning: METIS quality on real graphs, halo-plan invariants, and the partition
//! directory round trip.

use std::collections::{BTreeSet, HashMap};

use distgat_graph::{read_graph, EdgeList, Features};
use distgat_partition::{
    assign, graph_fingerprint, write_partition, HaloPlan, InputInfo, Method, NewPartition,
    PartPlan, PartitionDir, PartitionStats, RunInfo, SymmetricGraph,
};
use distgat_tests::repo_root;
use proptest::prelude::*;

fn partition(
    edges: &EdgeList,
    n: usize,
    method: &Method,
    parts: usize,
) -> (Vec<u32>, HaloPlan, PartitionStats) {
    let graph = SymmetricGraph::build(edges, n).unwrap();
    let mut in_degree = vec![0u64; n];
    edges.dst().iter().for_each(|&d| in_degree[d as usize] += 1);
    let assignment = assign(method, &graph, &in_degree, parts).unwrap();
    let plan = HaloPlan::build(edges, n, &assignment, parts).unwrap();
    let stats = PartitionStats::compute(&graph, &assignment, &plan, edges.len(), 64);
    (assignment, plan, stats)
}

fn metis(trials: u32) -> Method {
    metis_seeded(trials, 0)
}

fn metis_seeded(trials: u32, seed: u64) -> Method {
    match Method::metis_default() {
        Method::Metis {
            objective,
            recursive,
            imbalance,
            balance_edges,
            ..
        } => Method::Metis {
            objective,
            recursive,
            seed,
            imbalance,
            balance_edges,
            trials,
        },
        _ => unreachable!(),
    }
}

#[test]
fn metis_mean_cut_on_4elt_within_3_percent_of_gpmetis_5_1() {
    // Reference: Debian's gpmetis 5.1.0, `gpmetis -seed=S 4elt.graph K` for S = 0..7,
    // default options; the per-seed cuts are in data/README.md. Issue 15's bound: the mean
    // over 8 seeds of one METIS run each within 3% of gpmetis's mean. Unpatched METIS 5.2.1
    // gives 156.0 / 383.5 / 692.6 / 1124.1 / 1829.6 here (5-8% above): the vendored copy
    // restores 5.1.0's matching order, k-way refinement and coarsening depth
    // (third_party/metis-sys/DISTGAT.md).
    let edges = read_graph(&repo_root().join("data/4elt/4elt.graph"), None).unwrap();
    let n = edges.num_nodes as usize;
    for (parts, gpmetis_mean) in [
        (2, 147.125),
        (4, 357.0),
        (8, 637.625),
        (16, 1066.125),
        (32, 1722.5),
    ] {
        let cuts: Vec<u64> = (0..8u64)
            .map(|seed| {
                let (_, _, stats) = partition(&edges, n, &metis_seeded(1, seed), parts);
                assert!(
                    stats.node_imbalance <= 1.03 + 1e-9,
                    "K={parts} seed {seed}: imbalance {}",
                    stats.node_imbalance
                );
                stats.edge_cut
            })
            .collect();
        let mean = cuts.iter().sum::<u64>() as f64 / cuts.len() as f64;
        eprintln!("4elt K={parts}: cuts {cuts:?}, mean {mean} (gpmetis 5.1 {gpmetis_mean})");
        assert!(
            mean <= gpmetis_mean * 1.03,
            "K={parts}: mean cut {mean} over seeds 0..7, gpmetis 5.1's {gpmetis_mean}"
        );
    }
}

#[test]
fn metis_seeds_differ_and_trials_keep_the_best() {
    // glibc's srand treats seeds 0 and 1 alike: METIS once gave the same partition for
    // --seed 0 and --seed 1. `--trials T` runs METIS from seeds trial_seed(seed, 0..T)
    // (run 0 is the single run) and keeps the best balanced one. Checked against the
    // single runs from those seeds, computed separately here: the best of 4 is never worse
    // than one trial, it is exactly the minimum of the four single-run cuts, and when a
    // later run is better the result is that run's partition.
    let edges = read_graph(&repo_root().join("data/4elt/edges.npy"), None).unwrap();
    let n = edges.num_nodes as usize;
    let (a0, _, _) = partition(&edges, n, &metis_seeded(1, 0), 8);
    let (a1, _, _) = partition(&edges, n, &metis_seeded(1, 1), 8);
    assert_ne!(a0, a1, "--seed 0 and --seed 1 gave the same partition");
    let mut improved = 0;
    for seed in 0..4u64 {
        let singles: Vec<(Vec<u32>, u64, f64)> = (0..4)
            .map(|t| {
                let (a, _, s) = partition(
                    &edges,
                    n,
                    &metis_seeded(1, distgat_partition::trial_seed(seed, t)),
                    8,
                );
                (a, s.edge_cut, s.node_imbalance)
            })
            .collect();
        let cuts: Vec<u64> = singles.iter().map(|s| s.1).collect();
        assert!(
            cuts.windows(2).any(|w| w[0] != w[1]) || singles[0].0 != singles[1].0,
            "seed {seed}: the four trial seeds gave the same partition"
        );
        let (best_a, _, best) = partition(&edges, n, &metis_seeded(4, seed), 8);
        eprintln!(
            "4elt K=8 seed {seed}: single-run cuts {cuts:?}, best of 4 {}",
            best.edge_cut
        );
        assert!(
            best.edge_cut <= cuts[0],
            "seed {seed}: 4 trials worse than 1"
        );
        // Every single run here is within the 1.03 bound, so the best is the lowest cut,
        // the earliest on ties.
        assert!(singles.iter().all(|s| s.2 <= 1.03 + 5e-4));
        let min = *cuts.iter().min().unwrap();
        let first = cuts.iter().position(|&c| c == min).unwrap();
        assert_eq!(
            best.edge_cut, min,
            "seed {seed}: not the best of the 4 runs"
        );
        assert_eq!(
            best_a, singles[first].0,
            "seed {seed}: not run {first}'s partition"
        );
        improved += usize::from(best.edge_cut < cuts[0]);
    }
    assert!(
        improved > 0,
        "--trials 4 never improved on one run over 4 seeds"
    );
}

fn grid_2d(side: usize) -> EdgeList {
    let (mut src, mut dst) = (Vec::new(), Vec::new());
    for r in 0..side {
        for c in 0..side {
            let v = (r * side + c) as u64;
            if c + 1 < side {
                src.extend([v, v + 1]);
                dst.extend([v + 1, v]);
            }
            if r + 1 < side {
                src.extend([v, v + side as u64]);
                dst.extend([v + side as u64, v]);
            }
        }
    }
    EdgeList::from_pairs(&src, &dst)
}

#[test]
fn stream_is_valid_balanced_deterministic_and_far_better_than_random_on_a_grid() {
    let side = 60;
    let edges = grid_2d(side);
    let n = side * side;
    // A grid's optimal K-way cut is about side * (sqrt(K) - 1) * 2 for square blocks, or
    // side * (K - 1) for strips; random cuts (1 - 1/K) of its 2 * side * (side - 1) pairs.
    for parts in [2usize, 4, 8, 16] {
        for imbalance in [1.03, 1.1] {
            let method = Method::Stream { imbalance };
            let (a, plan, s) = partition(&edges, n, &method, parts);
            let (again, _, _) = partition(&edges, n, &method, parts);
            assert_eq!(a, again, "K={parts}: not deterministic");
            assert_eq!(a.len(), n);
            assert!(a.iter().all(|&p| (p as usize) < parts), "part out of range");
            let mut size = vec![0usize; parts];
            a.iter().for_each(|&p| size[p as usize] += 1);
            let max = *size.iter().max().unwrap() as f64;
            assert!(
                max <= (imbalance * n as f64 / parts as f64).max(n.div_ceil(parts) as f64),
                "K={parts}: largest part {max} of {n} nodes beyond --imbalance {imbalance}"
            );
            assert_eq!(plan.parts.iter().map(|p| p.owned.len()).sum::<usize>(), n);
            let (_, _, r) = partition(&edges, n, &Method::Random { seed: 3 }, parts);
            eprintln!(
                "grid {side}x{side} K={parts} imbalance {imbalance}: stream cut {} volume {}, \
                 random cut {} volume {}",
                s.edge_cut, s.communication_volume, r.edge_cut, r.communication_volume
            );
            // Measured: 5-20x below random for K <= 8, 3.7x at K = 16 (Fennel's single pass
            // in row-major order cuts about twice what strips would).
            assert!(
                s.edge_cut * 3 < r.edge_cut,
                "K={parts}: stream cut {} not far below random's {}",
                s.edge_cut,
                r.edge_cut
            );
        }
    }
}

#[test]
fn stream_rejects_a_bad_imbalance_and_handles_tiny_graphs() {
    let edges = grid_2d(3);
    let graph = SymmetricGraph::build(&edges, 9).unwrap();
    for bad in [0.5, f64::NAN, 11.0] {
        let err = assign(&Method::Stream { imbalance: bad }, &graph, &[], 2).unwrap_err();
        assert!(err.to_string().contains("--imbalance"), "{err}");
    }
    // As many parts as nodes: one node each.
    let a = assign(&Method::Stream { imbalance: 1.0 }, &graph, &[], 9).unwrap();
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..9).collect::<Vec<u32>>());
    let one = assign(&Method::Stream { imbalance: 1.03 }, &graph, &[], 1).unwrap();
    assert_eq!(one, vec![0; 9]);
}

#[test]
fn metis_needs_far_fewer_halo_rows_than_random() {
    for (file, parts) in [("data/4elt/edges.npy", 8), ("data/cora/edges.npy", 4)] {
        let edges = read_graph(&repo_root().join(file), None).unwrap();
        let n = edges.num_nodes as usize;
        let (_, _, m) = partition(&edges, n, &Method::metis_default(), parts);
        let (_, _, r) = partition(&edges, n, &Method::Random { seed: 1 }, parts);
        eprintln!(
            "{file} K={parts}: halo rows metis {} random {}",
            m.halo_rows_total, r.halo_rows_total
        );
        assert!(
            m.halo_rows_total * 4 < r.halo_rows_total,
            "{file}: METIS {} halo rows vs random {}",
            m.halo_rows_total,
            r.halo_rows_total
        );
    }
}

#[test]
fn metis_balance_edges_keeps_incoming_edges_balanced() {
    let edges = read_graph(
        &repo_root().join("reference/rmat-n5000/edge_index.npy"),
        None,
    )
    .unwrap();
    let n = 5000;
    let balanced = match metis(1) {
        Method::Metis {
            objective,
            recursive,
            seed,
            imbalance,
            trials,
            ..
        } => Method::Metis {
            objective,
            recursive,
            seed,
            imbalance,
            balance_edges: true,
            trials,
        },
        _ => unreachable!(),
    };
    let (_, _, plain) = partition(&edges, n, &metis(1), 4);
    let (_, _, with_edges) = partition(&edges, n, &balanced, 4);
    eprintln!(
        "edge imbalance: nodes only {:.3}, nodes + edges {:.3}",
        plain.edge_imbalance, with_edges.edge_imbalance
    );
    assert!(
        with_edges.edge_imbalance <= 1.1,
        "{}",
        with_edges.edge_imbalance
    );
    assert!(with_edges.edge_imbalance <= plain.edge_imbalance);
}

/// Checks every invariant of a halo plan against the graph it was built from.
fn check_plan(edges: &EdgeList, n: usize, assignment: &[u32], plan: &HaloPlan) {
    let parts = plan.parts.len();
    // Owned sets are disjoint, cover all nodes, and agree with the assignment.
    let mut owner = vec![u32::MAX; n];
    for p in &plan.parts {
        assert!(
            p.owned.windows(2).all(|w| w[0] < w[1]),
            "owned ids increase"
        );
        for &v in &p.owned {
            assert_eq!(owner[v as usize], u32::MAX, "node {v} owned twice");
            owner[v as usize] = p.part;
            assert_eq!(assignment[v as usize], p.part);
        }
    }
    assert!(owner.iter().all(|&o| o != u32::MAX), "every node is owned");
    let mut needed: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); parts];
    for p in &plan.parts {
        let local_to_global = |l: u32| -> u64 {
            let l = l as usize;
            if l < p.owned.len() {
                p.owned[l]
            } else {
                p.halo[l - p.owned.len()]
            }
        };
        // Every incoming edge of an owned row resolves to an owned or halo row, and is the
        // input edge it claims to be, in input order.
        let mut count = 0;
        for (r, &v) in p.owned.iter().enumerate() {
            let (a, b) = (p.row_ptr[r] as usize, p.row_ptr[r + 1] as usize);
            let ids = &p.edge_id[a..b];
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "input order within a row"
            );
            for k in a..b {
                let e = p.edge_id[k] as usize;
                assert_eq!(edges.dst()[e], v);
                assert_eq!(edges.src()[e], local_to_global(p.col[k]));
                count += 1;
            }
        }
        let incoming = edges
            .dst()
            .iter()
            .filter(|&&d| owner[d as usize] == p.part)
            .count();
        assert_eq!(
            count, incoming,
            "part {}: every incoming edge is present",
            p.part
        );
        // Halo = remote sources, exactly, ordered by (owner, id).
        let want: BTreeSet<u64> = edges
            .src()
            .iter()
            .zip(edges.dst())
            .filter(|&(&s, &d)| owner[d as usize] == p.part && owner[s as usize] != p.part)
            .map(|(&s, _)| s)
            .collect();
        assert_eq!(p.halo.iter().copied().collect::<BTreeSet<_>>(), want);
        let keys: Vec<(u32, u64)> = p
            .halo
            .iter()
            .zip(&p.halo_owner)
            .map(|(&g, &o)| (o, g))
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "halo ordered by (owner, id)"
        );
        for (&g, &o) in p.halo.iter().zip(&p.halo_owner) {
            assert_eq!(owner[g as usize], o);
        }
        needed[p.part as usize] = want;
    }
    // Send lists are exactly the peers' halo blocks, in the peers' order.
    for p in &plan.parts {
        for (q, rows) in &p.send {
            let sent: Vec<u64> = rows.iter().map(|&l| p.owned[l as usize]).collect();
            let peer = &plan.parts[*q as usize];
            let block: Vec<u64> = peer
                .halo
                .iter()
                .zip(&peer.halo_owner)
                .filter(|&(_, &o)| o == p.part)
                .map(|(&g, _)| g)
                .collect();
            assert_eq!(sent, block, "send list {} -> {q}", p.part);
        }
        let peers: HashMap<u32, usize> = p.send.iter().map(|(q, r)| (*q, r.len())).collect();
        for q in &plan.parts {
            let want = q.halo_owner.iter().filter(|&&o| o == p.part).count();
            assert_eq!(peers.get(&q.part).copied().unwrap_or(0), want);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn halo_plan_invariants(
        n in 1usize..40,
        raw in prop::collection::vec((0u64..1000, 0u64..1000), 0..150),
        parts in 1usize..6,
        method in 0u8..3,
        seed in 0u64..1000,
    ) {
        let parts = parts.min(n);
        let (src, dst): (Vec<u64>, Vec<u64>) = raw.iter().map(|&(s, d)| (s % n as u64, d % n as u64)).unzip();
        let edges = EdgeList::from_pairs(&src, &dst);
        let method = match method {
            0 => Method::metis_default(),
            1 => Method::Random { seed },
            _ => Method::Range,
        };
        let (assignment, plan, _) = partition(&edges, n, &method, parts);
        check_plan(&edges, n, &assignment, &plan);
    }
}

#[test]
fn partition_directory_round_trip() {
    let root = repo_root();
    let edges = read_graph(&root.join("data/cora/edges.npy"), None).unwrap();
    let features = Features::read_npy(&root.join("data/cora/features.npy")).unwrap();
    let n = features.num_nodes;
    let (assignment, plan, stats) = partition(&edges, n, &Method::metis_default(), 3);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cora-3");
    let info = |fp: String| InputInfo {
        path: "x".into(),
        rows: n,
        size: edges.len(),
        fingerprint: fp,
    };
    write_partition(
        &dir,
        NewPartition {
            graph: info(graph_fingerprint(&edges, n)),
            features: Some((
                info(distgat_partition::features_fingerprint(&features)),
                &features,
            )),
            features_in_shards: true,
            edge_features: None,
            method: Method::metis_default(),
            assignment: &assignment,
            plan: &plan,
            stats: stats.clone(),
            report: RunInfo::default(),
        },
        false,
    )
    .unwrap();
    let opened = PartitionDir::open(&dir).unwrap();
    opened.check_graph(&edges, n).unwrap();
    assert_eq!(opened.manifest.stats, stats);
    assert_eq!(opened.load_assignment().unwrap(), assignment);
    for part in &plan.parts {
        let shard = opened.load_shard(part.part).unwrap();
        assert_eq!(&shard.plan, part, "part {}", part.part);
        // Without the edge ids: the same plan but them, the same rows.
        let lean = opened
            .load_shard_with(part.part, distgat_partition::EdgeIds::Skip)
            .unwrap();
        let without = PartPlan {
            edge_id: Vec::new(),
            ..part.clone()
        };
        assert_eq!(lean.plan, without, "part {}", part.part);
        assert_eq!(lean.features, shard.features);
        let rows = shard.features.expect("features in shards");
        for (l, &g) in part.owned.iter().enumerate() {
            assert_eq!(rows.row(l), features.row(g as usize));
        }
    }
    // Another graph is refused.
    let other = EdgeList::from_pairs(&[0, 1], &[1, 0]);
    let err = opened.check_graph(&other, n).unwrap_err().to_string();
    assert!(err.contains("another graph"), "{err}");

    // The graph files: an int64 C-order .npy is fingerprinted from its bytes, equal to the
    // fingerprint of the edges read from it; other files are read (same verdicts).
    let cora = root.join("data/cora/edges.npy");
    assert_eq!(
        distgat_partition::npy_graph_fingerprint(&cora, n).unwrap(),
        Some(graph_fingerprint(&edges, n))
    );
    opened.check_graph_file(&cora, None, n).unwrap();
    let (src, dst) = (edges.src(), edges.dst());
    let text = tmp.path().join("cora.txt");
    let lines: String = src
        .iter()
        .zip(dst)
        .map(|(s, d)| format!("{s} {d}\n"))
        .collect();
    std::fs::write(&text, lines).unwrap();
    opened.check_graph_file(&text, None, n).unwrap();
    let as_i32 = tmp.path().join("cora-i32.npy");
    let ids: Vec<i32> = src.iter().chain(dst).map(|&v| v as i32).collect();
    distgat_graph::write_npy::<i32>(&as_i32, &[2, edges.len() as u64], &ids).unwrap();
    assert_eq!(
        distgat_partition::npy_graph_fingerprint(&as_i32, n).unwrap(),
        None
    );
    opened.check_graph_file(&as_i32, None, n).unwrap();
    let two = tmp.path().join("two.npy");
    distgat_graph::write_npy::<i64>(&two, &[2, 2], &[0, 1, 1, 0]).unwrap();
    let err = opened
        .check_graph_file(&two, None, n)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("another graph") && err.contains("2 edges"),
        "{err}"
    );
    let err = opened
        .check_graph_file(&tmp.path().join("missing.npy"), None, n)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.npy"), "{err}");
}
