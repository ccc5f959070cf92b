//! The single-process engine: a whole model over a whole graph. It is also the reference
//! the distributed runtime must match bit for bit.

use std::time::{Duration, Instant};

use distgat_graph::{EdgeList, Features, IncomingCsr};
use rayon::prelude::*;

use crate::buffer::RowBuffer;
use crate::collective::SingleProcess;
use crate::edge_attr::entry_edge_attr;
use crate::error::{ModelError, Result};
use crate::exec::Execution;
use crate::global::relative_frobenius_error;
use crate::kind::{
    aggregate_into, aggregate_to_sink, source_aux, transform_in_place, transform_into,
    AttentionKind, RowInputs,
};
use crate::model::{Layer, Model};
use crate::progress::Progress;

/// The CSRs a model needs (one per self-loop setting its layers use).
pub struct Topology {
    pub num_nodes: usize,
    /// Edges of the input graph (rows of its edge attributes).
    pub num_edges: usize,
    with_loops: Option<GraphView>,
    without_loops: Option<GraphView>,
}

struct GraphView {
    csr: IncomingCsr,
    /// CSR position of each attention edge in PyG order (only when attention is wanted).
    attention_order: Option<Vec<usize>>,
    /// Per CSR entry, its input edge or `-(v + 1)` for the loop of `v` (only when a layer
    /// of this setting reads edge attributes).
    keys: Option<Vec<i64>>,
}

impl Topology {
    /// Builds the CSRs for `model` over `edges` (ids already checked against `num_nodes`).
    pub fn build(
        edges: &EdgeList,
        num_nodes: usize,
        model: &Model,
        want_attention: bool,
    ) -> Result<Self> {
        Self::build_with_scratch(edges, num_nodes, model, want_attention, &mut Vec::new())
    }

    /// [`Topology::build`] whose CSR builds take their temporary memory from `scratch`
    /// (see [`IncomingCsr::build_with_scratch`]); its values on return are unspecified.
    pub fn build_with_scratch(
        edges: &EdgeList,
        num_nodes: usize,
        model: &Model,
        want_attention: bool,
        scratch: &mut Vec<f32>,
    ) -> Result<Self> {
        let mut view = |loops: bool| -> Result<Option<GraphView>> {
            let layers: Vec<_> = model
                .layers
                .iter()
                .filter(|l| l.add_self_loops() == Some(loops))
                .collect();
            if layers.is_empty() {
                return Ok(None);
            }
            let (csr, attention_order) =
                IncomingCsr::build_with_scratch(edges, num_nodes, loops, want_attention, scratch)?;
            let keys = layers
                .iter()
                .any(|l| l.edge_dim().is_some())
                .then(|| csr.entry_keys(edges));
            Ok(Some(GraphView {
                csr,
                attention_order,
                keys,
            }))
        };
        Ok(Topology {
            num_nodes,
            num_edges: edges.len(),
            with_loops: view(true)?,
            without_loops: view(false)?,
        })
    }

    /// The topology of a model whose layers are all global: `num_nodes` nodes and no graph
    /// (see [`Model::first_local`]; a local layer run on it is an error).
    pub fn without_graph(num_nodes: usize) -> Self {
        Topology {
            num_nodes,
            num_edges: 0,
            with_loops: None,
            without_loops: None,
        }
    }

    fn try_view(&self, add_self_loops: bool) -> Option<&GraphView> {
        if add_self_loops {
            self.with_loops.as_ref()
        } else {
            self.without_loops.as_ref()
        }
    }

    fn view(&self, add_self_loops: bool) -> &GraphView {
        let v = if add_self_loops {
            &self.with_loops
        } else {
            &self.without_loops
        };
        v.as_ref()
            .expect("Topology::build made a CSR for every setting the model uses")
    }

    pub fn csr(&self, add_self_loops: bool) -> &IncomingCsr {
        &self.view(add_self_loops).csr
    }
}

#[derive(Debug, Clone, Default)]
pub struct LayerTiming {
    /// Dense transforms (GEMMs, per-node scores).
    pub transform: Duration,
    /// Fused softmax and aggregation (for a global layer: the whole attention, after the
    /// q/k/v projection, including the output projection).
    pub aggregate: Duration,
    /// Global layers with an approximation, when asked: the relative Frobenius error of
    /// the layer's output against exact blockwise attention on the same input.
    pub approximation_error: Option<f64>,
}

/// What a model run produces.
pub struct ModelOutput {
    /// `[num_nodes, width]`, row-major, original node order; empty when the last layer
    /// handed its rows only to the sink of [`Progress::set_final_rows_sink_only`].
    pub values: Vec<f32>,
    pub width: usize,
    /// Per layer (when asked): coefficients `[E', heads]` in PyG's attention edge order;
    /// empty for global layers (they have no edges).
    pub attention: Vec<Vec<f32>>,
    pub timings: Vec<LayerTiming>,
}

/// A layer's edge attributes per CSR entry ([`entry_edge_attr`]: `[entries, edge_dim]`),
/// kept for the later layers that would build the same ones (the same graph view, width
/// and self-loop fill): the build reads `edge_dim` values an entry at random from the
/// edge features, and its array is fresh memory each time.
struct EntryAttr {
    key: AttrKey,
    values: Vec<f32>,
}

/// What a layer's per-entry edge attributes depend on besides the graph and the edge
/// features: (`add_self_loops`, `edge_dim`, `fill_value`).
type AttrKey = (bool, usize, crate::kind::FillValue);

fn attr_key(layer: &dyn AttentionKind) -> Option<AttrKey> {
    layer
        .edge_dim()
        .map(|d| (layer.add_self_loops(), d, layer.fill_value()))
}

/// Runs every layer of `model` on `features` (`[num_nodes, in_features]`, consumed so its
/// memory is released after the first transform). `edge_attr` (`[E, edge_dim]`, row e for
/// edge e of the graph the topology was built from) is required exactly when a layer has
/// `edge_dim` (check with [`Model::check_edge_features`] first). `progress` is told as each
/// layer starts and as its entries are aggregated, for progress reporting (a global layer
/// counts its N query rows as its entries). Global layers run through
/// [`crate::global::GlobalKind::forward`] and need no graph ([`Topology::without_graph`]); with
/// `report_approximation`, each approximating global layer also runs exactly on the same
/// input and its error goes into [`LayerTiming::approximation_error`].
///
/// `spare` is memory the caller no longer needs and whose pages are resident (`infer`
/// gives the edge ids' once the CSR is built, [`RowBuffer::spare_words`]): the first
/// layer's source rows go there when it has room, instead of into new pages (each a fault
/// and a kernel zero fill); otherwise it is dropped before the first transform.
#[allow(clippy::too_many_arguments)]
pub fn run_model(
    model: &Model,
    topology: &Topology,
    features: Vec<f32>,
    spare: Option<RowBuffer>,
    edge_attr: Option<&Features>,
    exec: Execution,
    want_attention: bool,
    report_approximation: bool,
    progress: &Progress,
) -> Result<ModelOutput> {
    let n = topology.num_nodes;
    let in_width = model.layers[0].in_features();
    if features.len() != n * in_width {
        return Err(ModelError::Mismatch(format!(
            "features hold {} values, expected {n} nodes x {in_width} columns",
            features.len()
        )));
    }
    let mut x = features;
    let mut attention = Vec::new();
    let mut timings = Vec::with_capacity(model.layers.len());
    // A local layer's source rows, kept for the next local layer with room in them.
    let mut kept_source = spare.filter(|_| !matches!(model.layers[0], Layer::Global(_)));
    let mut entry_attr: Option<EntryAttr> = None;
    for (k, layer) in model.layers.iter().enumerate() {
        // Kept only while a layer from here on builds the same ones.
        if let Some(kept) = &entry_attr {
            let needed = model.layers[k..]
                .iter()
                .filter_map(Layer::local)
                .any(|l| attr_key(l) == Some(kept.key));
            if !needed {
                entry_attr = None;
            }
        }
        let layer = match layer {
            Layer::Local(l) => l.as_ref(),
            Layer::Global(g) => {
                let g = g.as_ref();
                progress.start_global_layer(k, model.layers.len(), n as u64);
                let started = Instant::now();
                let mut comm = SingleProcess::with_progress(n, progress);
                let mut out = g.forward_part(&x, &mut comm, exec)?;
                let aggregate = started.elapsed();
                let approximation_error = match (report_approximation, g.approximation()) {
                    (true, Some(_)) => {
                        let exact = g.forward_exact(&x, exec)?;
                        Some(relative_frobenius_error(&out, &exact))
                    }
                    _ => None,
                };
                drop(x);
                timings.push(LayerTiming {
                    transform: Duration::ZERO,
                    aggregate,
                    approximation_error,
                });
                if want_attention {
                    attention.push(Vec::new());
                }
                if k + 1 < model.layers.len() {
                    activate(model, &mut out, exec);
                }
                x = out;
                continue;
            }
            Layer::Gps(g) => {
                // The conv's edges, then the N attention rows.
                let entries = match &g.conv {
                    Some(conv) => local_entries(conv.as_ref(), topology, k)?,
                    None => 0,
                };
                progress.start_layer(k, model.layers.len(), entries + n as u64);
                let started = Instant::now();
                let conv = match &g.conv {
                    Some(conv) => Some(run_local(
                        conv.as_ref(),
                        topology,
                        k,
                        x.clone(),
                        edge_attr,
                        exec,
                        want_attention,
                        progress,
                        &mut kept_source,
                        &mut entry_attr,
                    )?),
                    None => None,
                };
                let transform = started.elapsed();
                let (alpha, conv_out) = match conv {
                    Some(run) => (run.alpha, Some(run.out)),
                    None => (want_attention.then(Vec::new), None),
                };
                let (mut out, approximation_error) =
                    g.forward(&x, conv_out, exec, report_approximation)?;
                progress.add_entries(n as u64);
                drop(x);
                timings.push(LayerTiming {
                    transform,
                    aggregate: started.elapsed() - transform,
                    approximation_error,
                });
                attention.extend(alpha);
                if k + 1 < model.layers.len() {
                    activate(model, &mut out, exec);
                }
                x = out;
                continue;
            }
        };
        let entries = local_entries(layer, topology, k)?;
        progress.start_layer(k, model.layers.len(), entries);
        // The last layer's aggregated rows are the output (no activation follows).
        let last = k + 1 == model.layers.len();
        progress.set_final_layer(last);
        let run = run_local(
            layer,
            topology,
            k,
            x,
            edge_attr,
            exec,
            want_attention,
            progress,
            &mut kept_source,
            &mut entry_attr,
        );
        progress.set_final_layer(false);
        let run = run?;
        timings.push(LayerTiming {
            transform: run.transform,
            aggregate: run.aggregate,
            approximation_error: None,
        });
        attention.extend(run.alpha);
        let mut out = run.out;
        if k + 1 < model.layers.len() {
            activate(model, &mut out, exec);
        }
        x = out;
    }
    Ok(ModelOutput {
        values: x,
        width: model.out_width(),
        attention,
        timings,
    })
}

/// Whether [`run_model`], given a sink by [`Progress::set_final_rows_sink_only`], writes
/// `model`'s source rows over the features it is given (a one-layer model whose layer is
/// local and whose source rows are as wide as its input rows) instead of into a new
/// buffer. The aggregation then gathers rows from the features' own allocation, so a
/// caller reading large features should put them in transparent huge pages
/// (`Features::read_npy_in_huge_pages`): with 4 KiB pages the gathers miss the TLB.
pub fn transforms_features_in_place(model: &Model) -> bool {
    match model.layers.as_slice() {
        [Layer::Local(l)] => l.source_width() == l.in_features(),
        _ => false,
    }
}

/// What [`run_local`] produces.
struct LocalRun {
    out: Vec<f32>,
    /// Coefficients in PyG's attention edge order, when asked.
    alpha: Option<Vec<f32>>,
    transform: Duration,
    aggregate: Duration,
}

/// The graph view `layer` (`layers[k]`, or its conv) runs on, or an error when the model
/// was run without a graph.
fn view_for<'t>(
    layer: &dyn AttentionKind,
    topology: &'t Topology,
    k: usize,
) -> Result<&'t GraphView> {
    topology.try_view(layer.add_self_loops()).ok_or_else(|| {
        ModelError::Mismatch(format!(
            "layers[{k}] ({}) attends over a graph's edges, but the model was run without \
             a graph",
            layer.kind()
        ))
    })
}

/// The CSR entries `layer` aggregates over (for progress).
fn local_entries(layer: &dyn AttentionKind, topology: &Topology, k: usize) -> Result<u64> {
    Ok(view_for(layer, topology, k)?.csr.num_entries() as u64)
}

/// One local attention layer (`layers[k]`, or a GPSConv's conv) over the graph: `x`
/// `[N, in_features]` (consumed) into `[N, out_width]`.
#[allow(clippy::too_many_arguments)]
fn run_local(
    layer: &dyn AttentionKind,
    topology: &Topology,
    k: usize,
    x: Vec<f32>,
    edge_attr: Option<&Features>,
    exec: Execution,
    want_attention: bool,
    progress: &Progress,
    kept_source: &mut Option<RowBuffer>,
    kept_attr: &mut Option<EntryAttr>,
) -> Result<LocalRun> {
    let n = topology.num_nodes;
    let view = view_for(layer, topology, k)?;
    let started = Instant::now();
    // The last layer of a run whose caller takes the output rows only through the
    // progress sink: no `[N, out_width]` array at all (`aggregate_to_sink`).
    let to_sink = progress.sinks_final_rows() && progress.final_rows_sink_only();
    let sw = layer.source_width();
    let mut target = vec![0f32; n * layer.target_width()];
    // Fresh pages cost a fault and a kernel zero fill each, about what the aggregation's
    // gathers cost on a VM, so the rows go into allocations whose pages are resident:
    // the previous layer's source rows (or the caller's spare memory) when they have room
    // for this layer's; else, in a one-layer model streamed to its sink, the features
    // themselves, transformed in place (see `transforms_features_in_place`); else new ones.
    let kept = kept_source.take().filter(|b| b.room() >= n * sw);
    let (source, x) = if kept.is_none() && to_sink && k == 0 && sw == layer.in_features() {
        let mut x = x;
        transform_in_place(layer, &mut x, exec, &mut target);
        (RowBuffer::from_vec(x), None)
    } else {
        let mut source = RowBuffer::zeroed_reusing(kept, n * sw, exec);
        transform_into(layer, &x, exec, &mut source, &mut target);
        (source, Some(x))
    };
    // The input's allocation becomes the output (same reason).
    let mut out = match x {
        Some(x) if !to_sink => zeroed_reusing(x, n * layer.out_width(), exec),
        _ => Vec::new(),
    };
    let transformed = Instant::now();

    let entry_attr = match layer.edge_dim() {
        Some(d) => {
            let ea = edge_attr.ok_or_else(|| {
                ModelError::Mismatch(format!(
                    "layers[{k}] ({}) has edge_dim = {d} but no edge features were given",
                    layer.kind()
                ))
            })?;
            if ea.width != d || ea.num_nodes != topology.num_edges {
                return Err(ModelError::Mismatch(format!(
                    "edge features are [{}, {}], but the graph has {} edges and layers[{k}] \
                     has edge_dim = {d}",
                    ea.num_nodes, ea.width, topology.num_edges
                )));
            }
            let key = attr_key(layer).expect("an edge_dim layer");
            if kept_attr.as_ref().is_none_or(|kept| kept.key != key) {
                // The other attributes go first: they would not be in memory at once before.
                *kept_attr = None;
                let keys = view.keys.as_ref().expect("keys built for edge_dim layers");
                *kept_attr = Some(EntryAttr {
                    key,
                    values: entry_edge_attr(
                        &view.csr.row_ptr,
                        keys,
                        d,
                        layer.fill_value(),
                        &ea.values,
                        exec,
                    ),
                });
            }
            kept_attr.as_ref().map(|kept| kept.values.as_slice())
        }
        None => None,
    };
    let mut alpha_csr = want_attention.then(|| vec![0f32; view.csr.num_entries() * layer.heads()]);
    let aux = source_aux(layer, &source, exec);
    let inputs = RowInputs {
        source: &source,
        source_aux: &aux,
        target: &target,
        edge_attr: entry_attr,
    };
    if to_sink {
        aggregate_to_sink(
            layer,
            &view.csr,
            &inputs,
            exec,
            alpha_csr.as_deref_mut(),
            progress,
        );
    } else {
        aggregate_into(
            layer,
            &view.csr,
            &inputs,
            exec,
            &mut out,
            alpha_csr.as_deref_mut(),
            Some(progress),
        );
    }
    let aggregate = transformed.elapsed();
    let alpha = match (alpha_csr, view.attention_order.as_ref()) {
        (Some(alpha_csr), Some(order)) => {
            Some(to_attention_order(&alpha_csr, order, layer.heads(), exec))
        }
        _ => None,
    };
    *kept_source = Some(source);
    Ok(LocalRun {
        out,
        alpha,
        transform: transformed - started,
        aggregate,
    })
}

/// `[len]` zeros in `buf`'s allocation when it has room (its pages are resident: zeroing
/// them is a memset, where fresh pages cost a fault and a kernel zero fill each), else a
/// new buffer.
fn zeroed_reusing(mut buf: Vec<f32>, len: usize, exec: Execution) -> Vec<f32> {
    if buf.capacity() < len {
        return vec![0.0; len];
    }
    buf.truncate(len);
    match exec {
        Execution::Sequential => buf.fill(0.0),
        Execution::Parallel => buf.par_chunks_mut(64 * 1024).for_each(|c| c.fill(0.0)),
    }
    buf.resize(len, 0.0);
    buf
}

/// The activation between layers, over a layer's output.
fn activate(model: &Model, out: &mut [f32], exec: Execution) {
    match exec {
        Execution::Sequential => model.activation.apply(out),
        Execution::Parallel => out
            .par_chunks_mut(64 * 1024)
            .for_each(|c| model.activation.apply(c)),
    }
}

/// Reorders per-CSR-entry coefficients into PyG's attention edge order.
fn to_attention_order(
    alpha_csr: &[f32],
    order: &[usize],
    heads: usize,
    exec: Execution,
) -> Vec<f32> {
    let mut out = vec![0f32; order.len() * heads];
    let gather = |(dst, &pos): (&mut [f32], &usize)| {
        dst.copy_from_slice(&alpha_csr[pos * heads..(pos + 1) * heads]);
    };
    match exec {
        Execution::Sequential => out.chunks_exact_mut(heads).zip(order).for_each(gather),
        Execution::Parallel => out
            .par_chunks_exact_mut(heads)
            .zip(order.par_iter())
            .for_each(gather),
    }
    out
}
