//! The single-process engine: a whole model over a whole graph. It is also the reference
//! the distributed runtime must match bit for bit.

use std::time::{Duration, Instant};

use distgat_graph::{EdgeList, Features, IncomingCsr};
use rayon::prelude::*;

use crate::buffer::RowBuffer;
use crate::edge_attr::entry_edge_attr;
use crate::error::{ModelError, Result};
use crate::exec::Execution;
use crate::kind::{aggregate_into, source_aux, transform_into, RowInputs};
use crate::model::Model;
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
        let view = |loops: bool| -> Result<Option<GraphView>> {
            let layers: Vec<_> = model
                .layers
                .iter()
                .filter(|l| l.add_self_loops() == loops)
                .collect();
            if layers.is_empty() {
                return Ok(None);
            }
            let (csr, attention_order) =
                IncomingCsr::build(edges, num_nodes, loops, want_attention)?;
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
    /// Fused softmax and aggregation.
    pub aggregate: Duration,
}

/// What a model run produces.
pub struct ModelOutput {
    /// `[num_nodes, width]`, row-major, original node order.
    pub values: Vec<f32>,
    pub width: usize,
    /// Per layer (when asked): coefficients `[E', heads]` in PyG's attention edge order.
    pub attention: Vec<Vec<f32>>,
    pub timings: Vec<LayerTiming>,
}

/// Runs every layer of `model` on `features` (`[num_nodes, in_features]`, consumed so its
/// memory is released after the first transform). `edge_attr` (`[E, edge_dim]`, row e for
/// edge e of the graph the topology was built from) is required exactly when a layer has
/// `edge_dim` (check with [`Model::check_edge_features`] first). `progress` is told as each
/// layer starts and as its entries are aggregated, for progress reporting.
pub fn run_model(
    model: &Model,
    topology: &Topology,
    features: Vec<f32>,
    edge_attr: Option<&Features>,
    exec: Execution,
    want_attention: bool,
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
    for (k, layer) in model.layers.iter().enumerate() {
        let layer = layer.as_ref();
        let entries = topology.view(layer.add_self_loops()).csr.num_entries() as u64;
        progress.start_layer(k, model.layers.len(), entries);
        let started = Instant::now();
        let mut source = RowBuffer::zeroed(n * layer.source_width());
        let mut target = vec![0f32; n * layer.target_width()];
        transform_into(layer, &x, exec, &mut source, &mut target);
        drop(x);
        let transformed = Instant::now();

        let view = topology.view(layer.add_self_loops());
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
                let keys = view.keys.as_ref().expect("keys built for edge_dim layers");
                Some(entry_edge_attr(
                    &view.csr.row_ptr,
                    keys,
                    d,
                    layer.fill_value(),
                    &ea.values,
                ))
            }
            None => None,
        };
        let mut out = vec![0f32; n * layer.out_width()];
        let mut alpha_csr =
            want_attention.then(|| vec![0f32; view.csr.num_entries() * layer.heads()]);
        let aux = source_aux(layer, &source);
        let inputs = RowInputs {
            source: &source,
            source_aux: &aux,
            target: &target,
            edge_attr: entry_attr.as_deref(),
        };
        aggregate_into(
            layer,
            &view.csr,
            &inputs,
            exec,
            &mut out,
            alpha_csr.as_deref_mut(),
            Some(progress),
        );
        drop(source);
        drop(target);
        timings.push(LayerTiming {
            transform: transformed - started,
            aggregate: transformed.elapsed(),
        });
        if let (Some(alpha_csr), Some(order)) = (alpha_csr, view.attention_order.as_ref()) {
            attention.push(to_attention_order(&alpha_csr, order, layer.heads(), exec));
        }
        if k + 1 < model.layers.len() {
            match exec {
                Execution::Sequential => model.activation.apply(&mut out),
                Execution::Parallel => out
                    .par_chunks_mut(64 * 1024)
                    .for_each(|c| model.activation.apply(c)),
            }
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
