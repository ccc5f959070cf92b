//! Property tests: every attention kind (`GATConv` with `edge_dim`/`residual`/`fill_value`,
//! `GATv2Conv`, `TransformerConv`) run through the engine against plain dense float64
//! implementations written here, independently of distgat's code, from PyG 2.8.1's eval-mode
//! semantics as described in `../shared/reference/README.md` sections 8.3-8.5 (and 5 for the
//! shared self-loop, softmax and edge-order rules). Graphs are small and random, with
//! duplicate edges, self loops, isolated nodes and nodes without incoming edges. Checked:
//! the output rows, the attention coefficients in PyG's attention edge order, and that
//! sequential and parallel execution give the same bits.

use distgat_attention::{
    run_model, Activation, AttentionKind, Execution, FillValue, GatConv, GatV2Conv, Layer, Linear,
    Model, Progress, Topology, TransformerConv,
};
use distgat_graph::{EdgeList, Features};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const CASES: u32 = 128;

// ---------------------------------------------------------------------------------------
// Random graphs and parameters.

#[derive(Debug, Clone)]
struct Graph {
    n: usize,
    src: Vec<u64>,
    dst: Vec<u64>,
    f_in: usize,
    /// `[n, f_in]`
    x: Vec<f32>,
    /// Edge attribute width D (used only by layers with `edge_dim`).
    d: usize,
    /// `[E, d]`
    edge_attr: Vec<f32>,
}

impl Graph {
    fn num_edges(&self) -> usize {
        self.src.len()
    }
}

fn graph() -> impl Strategy<Value = Graph> {
    (1usize..10, 1usize..5, 1usize..4).prop_flat_map(|(n, f_in, d)| {
        (
            prop::collection::vec((0..n as u64, 0..n as u64), 0..24),
            prop::collection::vec(-2.0f32..2.0, n * f_in),
        )
            .prop_flat_map(move |(edges, x)| {
                // Duplicate every fourth edge so repeated pairs are common.
                let mut edges = edges;
                let dups: Vec<_> = edges.iter().step_by(4).copied().collect();
                edges.extend(dups);
                let e = edges.len();
                prop::collection::vec(-2.0f32..2.0, e * d).prop_map(move |edge_attr| Graph {
                    n,
                    src: edges.iter().map(|p| p.0).collect(),
                    dst: edges.iter().map(|p| p.1).collect(),
                    f_in,
                    x: x.clone(),
                    d,
                    edge_attr,
                })
            })
    })
}

fn fill_value() -> impl Strategy<Value = FillValue> {
    prop_oneof![
        Just(FillValue::Mean),
        Just(FillValue::Add),
        Just(FillValue::Max),
        Just(FillValue::Min),
        Just(FillValue::Mul),
        (-1.5f32..1.5).prop_map(FillValue::Constant),
    ]
}

fn weights(len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-1.0f32..1.0, len)
}

/// Shape and switches common to the three kinds.
#[derive(Debug, Clone)]
struct Shape {
    heads: usize,
    channels: usize,
    concat: bool,
    /// `add_self_loops` (GAT, GATv2); `root_weight` (Transformer).
    flag_a: bool,
    /// `edge_dim` on.
    edge: bool,
    /// `residual` (GAT, GATv2); `beta` (Transformer).
    flag_b: bool,
    /// `bias` (GAT, GATv2: all bias vectors; Transformer: `lin_skip` bias).
    bias: bool,
    /// `share_weights` (GATv2 only).
    share: bool,
    slope: f32,
    fill: FillValue,
}

impl Shape {
    fn hc(&self) -> usize {
        self.heads * self.channels
    }
    fn out_width(&self) -> usize {
        if self.concat {
            self.hc()
        } else {
            self.channels
        }
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        1usize..4,
        1usize..5,
        any::<[bool; 7]>(),
        prop::sample::select(vec![0.2f32, 0.01, 0.5]),
        fill_value(),
    )
        .prop_map(|(heads, channels, b, slope, fill)| Shape {
            heads,
            channels,
            concat: b[0],
            flag_a: b[1],
            edge: b[2],
            flag_b: b[3],
            bias: b[4],
            share: b[5] && b[6],
            slope,
            fill,
        })
}

/// A graph, a shape, and a pool of weight vectors whose lengths `sizes(shape, graph)` gives.
#[derive(Debug, Clone)]
struct Case {
    g: Graph,
    s: Shape,
    w: Vec<Vec<f32>>,
}

fn case(sizes: fn(&Shape, &Graph) -> Vec<usize>) -> impl Strategy<Value = Case> {
    (graph(), shape()).prop_flat_map(move |(g, s)| {
        let lens = sizes(&s, &g);
        let pools: Vec<_> = lens.into_iter().map(weights).collect();
        (Just(g), Just(s), pools).prop_map(|(g, s, w)| Case { g, s, w })
    })
}

// ---------------------------------------------------------------------------------------
// Dense float64 building blocks.

/// `y = x W^T (+ b)` for `x` `[n, f]`, `w` `[out, f]` (PyTorch layout), `b` `[out]` or empty.
fn dense_linear(x: &[f32], n: usize, f: usize, w: &[f32], out: usize, b: &[f32]) -> Vec<f64> {
    let mut y = vec![0f64; n * out];
    for i in 0..n {
        for o in 0..out {
            let mut v: f64 = (0..f)
                .map(|k| x[i * f + k] as f64 * w[o * f + k] as f64)
                .sum();
            if !b.is_empty() {
                v += b[o] as f64;
            }
            y[i * out + o] = v;
        }
    }
    y
}

fn leaky(v: f64, slope: f32) -> f64 {
    if v > 0.0 {
        v
    } else {
        slope as f64 * v
    }
}

/// PyG's attention edges `(source, target)` and their `[E', d]` attributes: with
/// `add_self_loops`, the non-loop input edges in input order then one loop per node, whose
/// attribute reduces the node's remaining incoming attributes with `fill`; without, the
/// input edges as given.
fn attention_edges(g: &Graph, loops: bool, fill: FillValue) -> (Vec<(usize, usize)>, Vec<f64>) {
    let d = g.d;
    let mut edges = Vec::new();
    let mut attr = Vec::new();
    for k in 0..g.num_edges() {
        let (s, t) = (g.src[k] as usize, g.dst[k] as usize);
        if loops && s == t {
            continue;
        }
        edges.push((s, t));
        attr.extend(g.edge_attr[k * d..(k + 1) * d].iter().map(|&v| v as f64));
    }
    if loops {
        let kept = edges.len();
        for i in 0..g.n {
            let rows: Vec<&[f64]> = (0..kept)
                .filter(|&k| edges[k].1 == i)
                .map(|k| &attr[k * d..(k + 1) * d])
                .collect();
            let mut row = vec![0f64; d];
            for (q, r) in row.iter_mut().enumerate() {
                let vals = rows.iter().map(|a| a[q]);
                *r = match fill {
                    FillValue::Constant(c) => c as f64,
                    // PyG's product starts from ones; the other reductions from zeros.
                    FillValue::Mul => vals.product(),
                    _ if rows.is_empty() => 0.0,
                    FillValue::Mean => vals.sum::<f64>() / rows.len() as f64,
                    FillValue::Add => vals.sum(),
                    FillValue::Max => vals.fold(f64::NEG_INFINITY, f64::max),
                    FillValue::Min => vals.fold(f64::INFINITY, f64::min),
                };
            }
            edges.push((i, i));
            attr.extend(row);
        }
    }
    (edges, attr)
}

/// Per-target, per-head softmax of `scores` (`[E', h]`) with PyG's 1e-16 epsilon.
fn softmax(edges: &[(usize, usize)], n: usize, h: usize, scores: &[f64]) -> Vec<f64> {
    let mut alpha = vec![0f64; edges.len() * h];
    for i in 0..n {
        let incoming: Vec<usize> = (0..edges.len()).filter(|&k| edges[k].1 == i).collect();
        for hd in 0..h {
            let m = incoming
                .iter()
                .map(|&k| scores[k * h + hd])
                .fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = incoming
                .iter()
                .map(|&k| (scores[k * h + hd] - m).exp())
                .sum();
            for &k in &incoming {
                alpha[k * h + hd] = (scores[k * h + hd] - m).exp() / (sum + 1e-16);
            }
        }
    }
    alpha
}

/// `agg[i] = sum over edges k into i of alpha[k, h] * msg(k)[h, :]` (`[n, h*c]`).
fn aggregate(
    edges: &[(usize, usize)],
    n: usize,
    h: usize,
    c: usize,
    alpha: &[f64],
    msg: impl Fn(usize) -> Vec<f64>,
) -> Vec<f64> {
    let hc = h * c;
    let mut agg = vec![0f64; n * hc];
    for (k, &(_, i)) in edges.iter().enumerate() {
        let m = msg(k);
        for hd in 0..h {
            for q in 0..c {
                agg[i * hc + hd * c + q] += alpha[k * h + hd] * m[hd * c + q];
            }
        }
    }
    agg
}

/// Concat (`[n, h*c]`) or head mean (`[n, c]`).
fn combine(agg: &[f64], n: usize, h: usize, c: usize, concat: bool) -> Vec<f64> {
    if concat {
        return agg.to_vec();
    }
    let hc = h * c;
    let mut out = vec![0f64; n * c];
    for i in 0..n {
        for q in 0..c {
            out[i * c + q] = (0..h).map(|hd| agg[i * hc + hd * c + q]).sum::<f64>() / h as f64;
        }
    }
    out
}

/// `out[i] += v[i]` for `[n, width]` rows.
fn add_rows(out: &mut [f64], v: &[f64]) {
    out.iter_mut().zip(v).for_each(|(o, b)| *o += b);
}

/// `out[i, :] += bias` (no-op for an empty bias).
fn add_bias(out: &mut [f64], bias: &[f32]) {
    if bias.is_empty() {
        return;
    }
    for row in out.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(o, &b)| *o += b as f64);
    }
}

/// `ee[k] = attr[k] lin_edge^T` (`[E', hc]`), `lin_edge` `[hc, d]`.
fn edge_embedding(attr: &[f64], d: usize, lin_edge: &[f32], hc: usize) -> Vec<f64> {
    let e = attr.len() / d;
    let mut ee = vec![0f64; e * hc];
    for k in 0..e {
        for o in 0..hc {
            ee[k * hc + o] = (0..d)
                .map(|q| attr[k * d + q] * lin_edge[o * d + q] as f64)
                .sum();
        }
    }
    ee
}

// ---------------------------------------------------------------------------------------
// Running distgat and comparing.

/// Runs `layer` in parallel and sequentially, checks both give the same bits, and returns
/// the output rows and the attention coefficients.
fn run(
    layer: Box<dyn AttentionKind>,
    g: &Graph,
    with_attr: bool,
) -> Result<(Vec<f32>, Vec<f32>), TestCaseError> {
    let model = Model {
        layers: vec![Layer::Local(layer)],
        activation: Activation::Elu,
    };
    let topology = Topology::build(&EdgeList::from_pairs(&g.src, &g.dst), g.n, &model, true)
        .map_err(|e| TestCaseError::fail(format!("topology: {e}")))?;
    let edge_attr = with_attr.then(|| Features::new(g.num_edges(), g.d, g.edge_attr.clone()));
    let go = |exec| {
        run_model(
            &model,
            &topology,
            g.x.clone(),
            None,
            edge_attr.as_ref(),
            exec,
            true,
            false,
            &Progress::default(),
        )
        .map(|mut out| (out.values, out.attention.remove(0)))
        .map_err(|e| TestCaseError::fail(format!("run_model: {e}")))
    };
    let (out, alpha) = go(Execution::Parallel)?;
    let (seq_out, seq_alpha) = go(Execution::Sequential)?;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    prop_assert_eq!(bits(&seq_out), bits(&out), "sequential output differs");
    prop_assert_eq!(
        bits(&seq_alpha),
        bits(&alpha),
        "sequential attention differs"
    );
    Ok((out, alpha))
}

fn close(a: f32, b: f64) -> bool {
    a.is_finite() && ((a as f64) - b).abs() <= 1e-4 + 1e-4 * b.abs()
}

fn compare(what: &str, ours: &[f32], want: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(ours.len(), want.len(), "{} length", what);
    for (k, (&a, &b)) in ours.iter().zip(want).enumerate() {
        prop_assert!(close(a, b), "{}[{}]: ours {} reference {}", what, k, a, b);
    }
    Ok(())
}

fn check(
    layer: Box<dyn AttentionKind>,
    c: &Case,
    want: (Vec<f64>, Vec<f64>),
) -> Result<(), TestCaseError> {
    let (out, alpha) = run(layer, &c.g, c.s.edge)?;
    compare("out", &out, &want.0)?;
    compare("alpha", &alpha, &want.1)
}

// ---------------------------------------------------------------------------------------
// GATConv (section 8.3).
// Pool: lin [hc, f], att_src [hc], att_dst [hc], lin_edge [hc, d], att_edge [hc],
// res [ow, f], bias [ow].

fn gat_sizes(s: &Shape, g: &Graph) -> Vec<usize> {
    let (hc, ow, f) = (s.hc(), s.out_width(), g.f_in);
    vec![hc * f, hc, hc, hc * g.d, hc, ow * f, ow]
}

fn gat_layer(c: &Case) -> GatConv {
    let (s, g, w) = (&c.s, &c.g, &c.w);
    let (hc, ow) = (s.hc(), s.out_width());
    GatConv {
        heads: s.heads,
        channels: s.channels,
        concat: s.concat,
        negative_slope: s.slope,
        add_self_loops: s.flag_a,
        fill_value: s.fill,
        lin: Linear::from_torch(&w[0], hc, g.f_in, Vec::new()),
        att_src: w[1].clone(),
        att_dst: w[2].clone(),
        edge_score: s.edge.then(|| {
            (
                g.d,
                GatConv::fold_edge(s.heads, s.channels, g.d, &w[3], &w[4]),
            )
        }),
        res: s
            .flag_b
            .then(|| Linear::from_torch(&w[5], ow, g.f_in, Vec::new())),
        bias: if s.bias { w[6].clone() } else { Vec::new() },
    }
}

fn gat_reference(c: &Case) -> (Vec<f64>, Vec<f64>) {
    let (s, g, w) = (&c.s, &c.g, &c.w);
    let (n, h, ch, hc, ow) = (g.n, s.heads, s.channels, s.hc(), s.out_width());
    let z = dense_linear(&g.x, n, g.f_in, &w[0], hc, &[]);
    let node_score = |i: usize, hd: usize, att: &[f32]| -> f64 {
        (0..ch)
            .map(|q| z[i * hc + hd * ch + q] * att[hd * ch + q] as f64)
            .sum()
    };
    let (edges, attr) = attention_edges(g, s.flag_a, s.fill);
    let ee = edge_embedding(&attr, g.d, &w[3], hc);
    let mut scores = vec![0f64; edges.len() * h];
    for (k, &(j, i)) in edges.iter().enumerate() {
        for hd in 0..h {
            let mut v = node_score(j, hd, &w[1]) + node_score(i, hd, &w[2]);
            if s.edge {
                v += (0..ch)
                    .map(|q| ee[k * hc + hd * ch + q] * w[4][hd * ch + q] as f64)
                    .sum::<f64>();
            }
            scores[k * h + hd] = leaky(v, s.slope);
        }
    }
    let alpha = softmax(&edges, n, h, &scores);
    let agg = aggregate(&edges, n, h, ch, &alpha, |k| {
        let j = edges[k].0;
        z[j * hc..(j + 1) * hc].to_vec()
    });
    let mut out = combine(&agg, n, h, ch, s.concat);
    if s.flag_b {
        add_rows(&mut out, &dense_linear(&g.x, n, g.f_in, &w[5], ow, &[]));
    }
    if s.bias {
        add_bias(&mut out, &w[6]);
    }
    (out, alpha)
}

// ---------------------------------------------------------------------------------------
// GATv2Conv (section 8.4).
// Pool: lin_l [hc, f], lin_l.bias [hc], lin_r [hc, f], lin_r.bias [hc], att [hc],
// lin_edge [hc, d], res [ow, f], bias [ow].

fn gatv2_sizes(s: &Shape, g: &Graph) -> Vec<usize> {
    let (hc, ow, f) = (s.hc(), s.out_width(), g.f_in);
    vec![hc * f, hc, hc * f, hc, hc, hc * g.d, ow * f, ow]
}

/// `(lin_l weight, lin_l bias, lin_r weight, lin_r bias)` as the layer sees them.
fn gatv2_maps(c: &Case) -> (&[f32], &[f32], &[f32], &[f32]) {
    let (s, w) = (&c.s, &c.w);
    let none: &[f32] = &[];
    let bl = if s.bias { &w[1][..] } else { none };
    if s.share {
        (&w[0], bl, &w[0], bl)
    } else {
        let br = if s.bias { &w[3][..] } else { none };
        (&w[0], bl, &w[2], br)
    }
}

fn gatv2_layer(c: &Case) -> GatV2Conv {
    let (s, g, w) = (&c.s, &c.g, &c.w);
    let (hc, ow) = (s.hc(), s.out_width());
    let (wl, bl, wr, br) = gatv2_maps(c);
    let lin_l = Linear::from_torch(wl, hc, g.f_in, bl.to_vec());
    let lin_r = if s.share {
        lin_l.clone()
    } else {
        Linear::from_torch(wr, hc, g.f_in, br.to_vec())
    };
    GatV2Conv {
        heads: s.heads,
        channels: s.channels,
        concat: s.concat,
        negative_slope: s.slope,
        add_self_loops: s.flag_a,
        fill_value: s.fill,
        lin_l,
        lin_r,
        att: w[4].clone(),
        lin_edge: s
            .edge
            .then(|| Linear::from_torch(&w[5], hc, g.d, Vec::new())),
        res: s
            .flag_b
            .then(|| Linear::from_torch(&w[6], ow, g.f_in, Vec::new())),
        bias: if s.bias { w[7].clone() } else { Vec::new() },
    }
}

fn gatv2_reference(c: &Case) -> (Vec<f64>, Vec<f64>) {
    let (s, g, w) = (&c.s, &c.g, &c.w);
    let (n, h, ch, hc, ow) = (g.n, s.heads, s.channels, s.hc(), s.out_width());
    let (wl, bl, wr, br) = gatv2_maps(c);
    let x_l = dense_linear(&g.x, n, g.f_in, wl, hc, bl);
    let x_r = dense_linear(&g.x, n, g.f_in, wr, hc, br);
    let (edges, attr) = attention_edges(g, s.flag_a, s.fill);
    let ee = edge_embedding(&attr, g.d, &w[5], hc);
    let mut scores = vec![0f64; edges.len() * h];
    for (k, &(j, i)) in edges.iter().enumerate() {
        for hd in 0..h {
            scores[k * h + hd] = (0..ch)
                .map(|q| {
                    let o = hd * ch + q;
                    let mut m = x_l[j * hc + o] + x_r[i * hc + o];
                    if s.edge {
                        m += ee[k * hc + o];
                    }
                    w[4][o] as f64 * leaky(m, s.slope)
                })
                .sum();
        }
    }
    let alpha = softmax(&edges, n, h, &scores);
    let agg = aggregate(&edges, n, h, ch, &alpha, |k| {
        let j = edges[k].0;
        x_l[j * hc..(j + 1) * hc].to_vec()
    });
    let mut out = combine(&agg, n, h, ch, s.concat);
    if s.flag_b {
        add_rows(&mut out, &dense_linear(&g.x, n, g.f_in, &w[6], ow, &[]));
    }
    if s.bias {
        add_bias(&mut out, &w[7]);
    }
    (out, alpha)
}

// ---------------------------------------------------------------------------------------
// TransformerConv (section 8.5).
// Pool: lin_query [hc, f] + bias [hc], lin_key + bias, lin_value + bias, lin_edge [hc, d],
// lin_skip [ow, f] + bias [ow], lin_beta [3 ow].

fn transformer_sizes(s: &Shape, g: &Graph) -> Vec<usize> {
    let (hc, ow, f) = (s.hc(), s.out_width(), g.f_in);
    vec![
        hc * f,
        hc,
        hc * f,
        hc,
        hc * f,
        hc,
        hc * g.d,
        ow * f,
        ow,
        3 * ow,
    ]
}

fn transformer_layer(c: &Case) -> TransformerConv {
    let (s, g, w) = (&c.s, &c.g, &c.w);
    let (hc, ow, f) = (s.hc(), s.out_width(), g.f_in);
    let root = s.flag_a;
    TransformerConv {
        heads: s.heads,
        channels: s.channels,
        concat: s.concat,
        lin_query: Linear::from_torch(&w[0], hc, f, w[1].clone()),
        lin_key: Linear::from_torch(&w[2], hc, f, w[3].clone()),
        lin_value: Linear::from_torch(&w[4], hc, f, w[5].clone()),
        lin_edge: s
            .edge
            .then(|| Linear::from_torch(&w[6], hc, g.d, Vec::new())),
        lin_skip: root.then(|| {
            let b = if s.bias { w[8].clone() } else { Vec::new() };
            Linear::from_torch(&w[7], ow, f, b)
        }),
        lin_beta: (root && s.flag_b).then(|| w[9].clone()),
    }
}

fn transformer_reference(c: &Case) -> (Vec<f64>, Vec<f64>) {
    let (s, g, w) = (&c.s, &c.g, &c.w);
    let (n, h, ch, hc, ow, f) = (g.n, s.heads, s.channels, s.hc(), s.out_width(), g.f_in);
    let q = dense_linear(&g.x, n, f, &w[0], hc, &w[1]);
    let key = dense_linear(&g.x, n, f, &w[2], hc, &w[3]);
    let val = dense_linear(&g.x, n, f, &w[4], hc, &w[5]);
    // No self loops are added: the input edges, loops and duplicates included.
    let (edges, attr) = attention_edges(g, false, FillValue::Mean);
    let ee = edge_embedding(&attr, g.d, &w[6], hc);
    let with_edge = |base: &[f64], k: usize, j: usize| -> Vec<f64> {
        (0..hc)
            .map(|o| base[j * hc + o] + if s.edge { ee[k * hc + o] } else { 0.0 })
            .collect()
    };
    let scale = (ch as f64).sqrt();
    let mut scores = vec![0f64; edges.len() * h];
    for (k, &(j, i)) in edges.iter().enumerate() {
        let kk = with_edge(&key, k, j);
        for hd in 0..h {
            let dot: f64 = (0..ch)
                .map(|t| q[i * hc + hd * ch + t] * kk[hd * ch + t])
                .sum();
            scores[k * h + hd] = dot / scale;
        }
    }
    let alpha = softmax(&edges, n, h, &scores);
    let agg = aggregate(&edges, n, h, ch, &alpha, |k| with_edge(&val, k, edges[k].0));
    let mut out = combine(&agg, n, h, ch, s.concat);
    if s.flag_a {
        let skip_bias: &[f32] = if s.bias { &w[8] } else { &[] };
        let r = dense_linear(&g.x, n, f, &w[7], ow, skip_bias);
        if s.flag_b {
            let wb = &w[9];
            for i in 0..n {
                let o = &mut out[i * ow..(i + 1) * ow];
                let ri = &r[i * ow..(i + 1) * ow];
                let logit: f64 = (0..ow)
                    .map(|t| {
                        o[t] * wb[t] as f64
                            + ri[t] * wb[ow + t] as f64
                            + (o[t] - ri[t]) * wb[2 * ow + t] as f64
                    })
                    .sum();
                let b = 1.0 / (1.0 + (-logit).exp());
                for t in 0..ow {
                    o[t] = b * ri[t] + (1.0 - b) * o[t];
                }
            }
        } else {
            add_rows(&mut out, &r);
        }
    }
    (out, alpha)
}

// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn gatconv_matches_dense_reference(c in case(gat_sizes)) {
        check(Box::new(gat_layer(&c)), &c, gat_reference(&c))?;
    }

    #[test]
    fn gatv2conv_matches_dense_reference(c in case(gatv2_sizes)) {
        check(Box::new(gatv2_layer(&c)), &c, gatv2_reference(&c))?;
    }

    #[test]
    fn transformerconv_matches_dense_reference(c in case(transformer_sizes)) {
        check(Box::new(transformer_layer(&c)), &c, transformer_reference(&c))?;
    }
}

// ---------------------------------------------------------------------------------------
// Stacked edge_dim layers: the engine keeps a layer's per-entry edge attributes for the
// later layers that build the same ones (same self loops, width and fill). Each layer's
// rows must be those of the same layer run alone on the previous layer's rows (a path
// that builds them afresh and that the tests above check against the dense reference).

/// A `GATConv` of `f -> f` (one head of `f` channels) with `edge_dim = d`, weights from
/// `seed`.
fn stacked_gat(f: usize, d: usize, loops: bool, fill: FillValue, seed: u32) -> GatConv {
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
    let mut w = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    };
    let (lin, att_src, att_dst, lin_edge, att_edge, bias) =
        (w(f * f), w(f), w(f), w(f * d), w(f), w(f));
    GatConv {
        heads: 1,
        channels: f,
        concat: true,
        negative_slope: 0.2,
        add_self_loops: loops,
        fill_value: fill,
        lin: Linear::from_torch(&lin, f, f, Vec::new()),
        att_src,
        att_dst,
        edge_score: Some((d, GatConv::fold_edge(1, f, d, &lin_edge, &att_edge))),
        res: None,
        bias,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn stacked_edge_dim_layers_equal_each_layer_alone(g in graph(), fill in fill_value()) {
        // Same attributes twice (kept), another fill (rebuilt), no self loops (another
        // view), then the first kind again (rebuilt once more).
        let plan = [
            (true, FillValue::Mean),
            (true, FillValue::Mean),
            (true, fill),
            (false, fill),
            (true, FillValue::Mean),
        ];
        let layer = |k: usize| -> Box<dyn AttentionKind> {
            let (loops, fill) = plan[k];
            Box::new(stacked_gat(g.f_in, g.d, loops, fill, k as u32))
        };
        let edges = EdgeList::from_pairs(&g.src, &g.dst);
        let edge_attr = Features::new(g.num_edges(), g.d, g.edge_attr.clone());
        let run = |layers: Vec<Layer>, x: Vec<f32>| -> Result<Vec<f32>, TestCaseError> {
            let model = Model { layers, activation: Activation::None };
            let topology = Topology::build(&edges, g.n, &model, false)
                .map_err(|e| TestCaseError::fail(format!("topology: {e}")))?;
            run_model(
                &model,
                &topology,
                x,
                None,
                Some(&edge_attr),
                Execution::Parallel,
                false,
                false,
                &Progress::default(),
            )
            .map(|out| out.values)
            .map_err(|e| TestCaseError::fail(format!("run_model: {e}")))
        };
        let stacked = run((0..plan.len()).map(|k| Layer::Local(layer(k))).collect(), g.x.clone())?;
        let mut alone = g.x.clone();
        for k in 0..plan.len() {
            alone = run(vec![Layer::Local(layer(k))], alone)?;
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&stacked), bits(&alone));
    }
}
