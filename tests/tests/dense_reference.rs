//! Property tests: the fused kernel against a plain dense float64 implementation of PyG's
//! `GATConv` written here from `../shared/reference/README.md` (section 5), on small random graphs
//! with duplicate edges, self loops and isolated nodes.

use distgat_attention::{
    run_model, Activation, Execution, GatConv, Layer, Model, Progress, RowBuffer, Topology,
};
use distgat_graph::EdgeList;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    n: usize,
    src: Vec<u64>,
    dst: Vec<u64>,
    f_in: usize,
    heads: usize,
    channels: usize,
    concat: bool,
    add_self_loops: bool,
    slope: f32,
    x: Vec<f32>,
    w: Vec<f32>,
    att_src: Vec<f32>,
    att_dst: Vec<f32>,
    bias: Vec<f32>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..10,
        1usize..5,
        1usize..4,
        1usize..5,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(n, f_in, heads, channels, concat, loops)| {
            let hc = heads * channels;
            let out_width = if concat { hc } else { channels };
            (
                prop::collection::vec((0..n as u64, 0..n as u64), 0..30),
                prop::sample::select(vec![0.2f32, 0.01, 0.5]),
                prop::collection::vec(-2.0f32..2.0, n * f_in),
                prop::collection::vec(-1.0f32..1.0, hc * f_in),
                prop::collection::vec(-1.0f32..1.0, hc),
                prop::collection::vec(-1.0f32..1.0, hc),
                prop::collection::vec(-1.0f32..1.0, out_width),
            )
                .prop_map(move |(edges, slope, x, w, att_src, att_dst, bias)| {
                    // Duplicate a few edges so repeated pairs are common.
                    let mut edges = edges;
                    let dups: Vec<_> = edges.iter().step_by(4).copied().collect();
                    edges.extend(dups);
                    Case {
                        n,
                        src: edges.iter().map(|e| e.0).collect(),
                        dst: edges.iter().map(|e| e.1).collect(),
                        f_in,
                        heads,
                        channels,
                        concat,
                        add_self_loops: loops,
                        slope,
                        x,
                        w,
                        att_src,
                        att_dst,
                        bias,
                    }
                })
        })
}

/// Dense float64 GATConv: returns (output [n, width], alpha [E', H] in PyG order).
fn dense_reference(c: &Case) -> (Vec<f64>, Vec<f64>) {
    let (n, h, ch) = (c.n, c.heads, c.channels);
    let hc = h * ch;
    let mut z = vec![0f64; n * hc];
    for i in 0..n {
        for o in 0..hc {
            z[i * hc + o] = (0..c.f_in)
                .map(|f| c.x[i * c.f_in + f] as f64 * c.w[o * c.f_in + f] as f64)
                .sum();
        }
    }
    let score = |i: usize, hd: usize, att: &[f32]| -> f64 {
        (0..ch)
            .map(|k| z[i * hc + hd * ch + k] * att[hd * ch + k] as f64)
            .sum()
    };
    // PyG's attention edge list.
    let mut edges: Vec<(usize, usize)> = c
        .src
        .iter()
        .zip(&c.dst)
        .map(|(&s, &d)| (s as usize, d as usize))
        .filter(|&(s, d)| !(c.add_self_loops && s == d))
        .collect();
    if c.add_self_loops {
        edges.extend((0..n).map(|i| (i, i)));
    }
    let e_score = |(s, d): (usize, usize), hd: usize| -> f64 {
        let v = score(s, hd, &c.att_src) + score(d, hd, &c.att_dst);
        if v > 0.0 {
            v
        } else {
            c.slope as f64 * v
        }
    };
    let mut alpha = vec![0f64; edges.len() * h];
    let mut agg = vec![0f64; n * hc];
    for hd in 0..h {
        for i in 0..n {
            let incoming: Vec<usize> = (0..edges.len()).filter(|&k| edges[k].1 == i).collect();
            let m = incoming
                .iter()
                .map(|&k| e_score(edges[k], hd))
                .fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = incoming
                .iter()
                .map(|&k| (e_score(edges[k], hd) - m).exp())
                .sum();
            for &k in &incoming {
                let a = (e_score(edges[k], hd) - m).exp() / (sum + 1e-16);
                alpha[k * h + hd] = a;
                for q in 0..ch {
                    agg[i * hc + hd * ch + q] += a * z[edges[k].0 * hc + hd * ch + q];
                }
            }
        }
    }
    let width = if c.concat { hc } else { ch };
    let mut out = vec![0f64; n * width];
    for i in 0..n {
        for q in 0..width {
            let v = if c.concat {
                agg[i * hc + q]
            } else {
                (0..h).map(|hd| agg[i * hc + hd * ch + q]).sum::<f64>() / h as f64
            };
            out[i * width + q] = v + c.bias[q] as f64;
        }
    }
    (out, alpha)
}

fn ours(c: &Case, exec: Execution) -> (Vec<f32>, Vec<f32>) {
    let layer = GatConv::from_pyg(
        c.f_in,
        c.heads,
        c.channels,
        c.concat,
        c.slope,
        c.add_self_loops,
        &c.w,
        c.att_src.clone(),
        c.att_dst.clone(),
        c.bias.clone(),
    );
    let model = Model {
        layers: vec![Layer::Local(Box::new(layer))],
        activation: Activation::Elu,
    };
    let edges = EdgeList::from_pairs(&c.src, &c.dst);
    let topology = Topology::build(&edges, c.n, &model, true).unwrap();
    // The final rows handed to a sink while the layer computes (what `distgat infer`
    // writes to its output file): every row exactly once, with the output's bits.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(usize, Vec<f32>)>::new()));
    let progress = Progress::default();
    progress.set_final_rows_sink(Some({
        let received = received.clone();
        std::sync::Arc::new(move |first, rows: &[f32]| {
            received.lock().unwrap().push((first, rows.to_vec()))
        })
    }));
    // The parallel run (the one compared with the reference) puts its source rows into
    // spare memory full of NaN bits, as `infer` does with the edge ids' memory: the rows
    // must not see what was there.
    let spare = matches!(exec, Execution::Parallel)
        .then(|| RowBuffer::spare_words(vec![u64::MAX; c.n * 1024]));
    let out = run_model(
        &model,
        &topology,
        c.x.clone(),
        spare,
        None,
        exec,
        true,
        false,
        &progress,
    )
    .unwrap();
    let width = out.width;
    let mut seen = vec![0usize; c.n];
    for (first, rows) in received.lock().unwrap().iter() {
        assert_eq!(rows.len() % width, 0);
        for (r, row) in rows.chunks_exact(width).enumerate() {
            seen[first + r] += 1;
            let want = &out.values[(first + r) * width..(first + r + 1) * width];
            assert!(row
                .iter()
                .map(|v| v.to_bits())
                .eq(want.iter().map(|v| v.to_bits())));
        }
    }
    assert!(
        seen.iter().all(|&k| k == 1),
        "every final row once: {seen:?}"
    );
    (out.values, out.attention.into_iter().next().unwrap())
}

fn close(a: f32, b: f64) -> bool {
    a.is_finite() && ((a as f64) - b).abs() <= 1e-4 + 1e-4 * b.abs()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fused_kernel_matches_dense_reference(c in case()) {
        let (want_out, want_alpha) = dense_reference(&c);
        let (out, alpha) = ours(&c, Execution::Parallel);
        prop_assert_eq!(out.len(), want_out.len());
        prop_assert_eq!(alpha.len(), want_alpha.len());
        for (k, (&a, &b)) in out.iter().zip(&want_out).enumerate() {
            prop_assert!(close(a, b), "out[{}]: ours {} reference {}", k, a, b);
        }
        for (k, (&a, &b)) in alpha.iter().zip(&want_alpha).enumerate() {
            prop_assert!(close(a, b), "alpha[{}]: ours {} reference {}", k, a, b);
        }
        let (seq_out, seq_alpha) = ours(&c, Execution::Sequential);
        prop_assert!(seq_out.iter().map(|v| v.to_bits()).eq(out.iter().map(|v| v.to_bits())));
        prop_assert!(seq_alpha.iter().map(|v| v.to_bits()).eq(alpha.iter().map(|v| v.to_bits())));
    }
}
