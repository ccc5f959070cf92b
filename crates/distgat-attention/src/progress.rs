//! Progress of a model run inside each layer, for progress bars and log lines.
//!
//! The kernels add the attention entries (edges, self loops included) they have aggregated;
//! a reporter thread reads a [`ProgressSnapshot`] whenever it likes. The counters are
//! relaxed atomics: a progress bar needs no ordering with the computation, and reading them
//! never changes a bit of the output.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

/// Receives rows of the model's output as soon as they are final: `(first_row, values)`,
/// `values` being whole rows `[rows, out_width]` (see [`Progress::set_final_rows_sink`]).
pub type FinalRowsSink = Arc<dyn Fn(usize, &[f32]) + Send + Sync>;

/// Shared progress of [`run_model`](crate::run_model) (or of a worker's layers).
#[derive(Default)]
pub struct Progress {
    /// 1-based layer being computed; 0 before the first.
    layer: AtomicUsize,
    layers: AtomicUsize,
    entries_total: AtomicU64,
    entries_done: AtomicU64,
    /// Whether the current layer counts rows (a global layer) rather than edges.
    counts_rows: std::sync::atomic::AtomicBool,
    on_layer: Option<Box<dyn Fn(usize, usize) + Send + Sync>>,
    /// Set by the engine while the last layer (a local one: its aggregation's rows are
    /// the model's output) is aggregated.
    final_layer: AtomicBool,
    final_rows: RwLock<Option<FinalRowsSink>>,
    /// Set by [`Progress::set_final_rows_sink_only`]: the engine need not keep the rows
    /// it hands to the sink.
    sink_only: AtomicBool,
}

/// What [`Progress::snapshot`] read: layer `layer` of `layers` (1-based; 0 = not started)
/// has aggregated `entries_done` of its `entries_total` attention entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgressSnapshot {
    pub layer: usize,
    pub layers: usize,
    pub entries_done: u64,
    pub entries_total: u64,
    /// What the entries are: `"edges"` (a graph layer) or `"rows"` (a global layer).
    pub unit: &'static str,
}

impl ProgressSnapshot {
    /// Fraction of the current layer's entries done, in [0, 1] (0 when it has none yet).
    pub fn layer_fraction(&self) -> f64 {
        if self.entries_total == 0 {
            0.0
        } else {
            (self.entries_done as f64 / self.entries_total as f64).min(1.0)
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Progress").field(&self.snapshot()).finish()
    }
}

impl Progress {
    /// A progress that also calls `on_layer(k, layers)` as layer k (0-based) starts.
    pub fn with_layer_hook(on_layer: impl Fn(usize, usize) + Send + Sync + 'static) -> Self {
        Self {
            on_layer: Some(Box::new(on_layer)),
            ..Self::default()
        }
    }

    /// Layer `k` (0-based) of `layers` starts; it will aggregate `entries` attention entries.
    pub fn start_layer(&self, k: usize, layers: usize, entries: u64) {
        self.counts_rows.store(false, Relaxed);
        self.start(k, layers, entries);
    }

    /// Global layer `k` (0-based) of `layers` starts; it will compute `rows` output rows.
    pub fn start_global_layer(&self, k: usize, layers: usize, rows: u64) {
        self.counts_rows.store(true, Relaxed);
        self.start(k, layers, rows);
    }

    fn start(&self, k: usize, layers: usize, entries: u64) {
        self.entries_done.store(0, Relaxed);
        self.entries_total.store(entries, Relaxed);
        self.layers.store(layers, Relaxed);
        self.layer.store(k + 1, Relaxed);
        if let Some(f) = &self.on_layer {
            f(k, layers);
        }
    }

    /// `entries` more attention entries of the current layer are aggregated.
    pub fn add_entries(&self, entries: u64) {
        self.entries_done.fetch_add(entries, Relaxed);
    }

    /// Hands every row of the model's output, as soon as it is final, to `sink` (`None`
    /// stops it). The engine calls the sink from the aggregation's threads, once per
    /// edge-balanced chunk of the last layer (with [`Progress::set_final_rows_sink_only`],
    /// once per piece of at most 1024 rows of one), when that layer is a local one (GATConv,
    /// GATv2Conv, TransformerConv: no activation follows it); each output row then goes
    /// to the sink exactly once. With a global or GPSConv last layer the sink gets
    /// nothing, so a caller compares the rows it received with N. `distgat infer` uses
    /// it to write the output file while the rest of the layer computes.
    pub fn set_final_rows_sink(&self, sink: Option<FinalRowsSink>) {
        self.sink_only.store(false, Relaxed);
        *self.final_rows.write().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    /// [`Progress::set_final_rows_sink`], for a caller that needs the output rows only
    /// through `sink`: when the last layer is a local one, the engine then aggregates it
    /// chunk by chunk into small buffers ([`crate::kind::aggregate_to_sink`]) instead of
    /// a `[N, out_width]` array, and [`crate::ModelOutput::values`] comes back empty.
    /// With a global or GPSConv last layer nothing changes: the sink gets no rows and
    /// the values are returned as usual.
    pub fn set_final_rows_sink_only(&self, sink: FinalRowsSink) {
        *self.final_rows.write().unwrap_or_else(|e| e.into_inner()) = Some(sink);
        self.sink_only.store(true, Relaxed);
    }

    /// Whether a sink set by [`Progress::set_final_rows_sink_only`] takes the last
    /// layer's rows (so the engine need not keep them).
    pub(crate) fn final_rows_sink_only(&self) -> bool {
        self.sink_only.load(Relaxed) && self.has_sink()
    }

    /// Whether rows now done reach a sink (a sink is set and the current layer is final).
    pub(crate) fn sinks_final_rows(&self) -> bool {
        self.final_layer.load(Relaxed) && self.has_sink()
    }

    fn has_sink(&self) -> bool {
        self.final_rows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether the layer now aggregated produces the model's final rows (set by the
    /// engine around the last layer when it is local; a worker sets it around the part
    /// of that layer whose rows it hands to the sink as they are done).
    pub fn set_final_layer(&self, on: bool) {
        self.final_layer.store(on, Relaxed);
    }

    /// Rows `first..first + values.len() / width` of the current layer's output are done;
    /// they go to the sink when that layer is the last.
    pub(crate) fn rows_done(&self, first: usize, values: &[f32]) {
        if !self.final_layer.load(Relaxed) {
            return;
        }
        let sink = self.final_rows.read().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = sink.as_ref() {
            sink(first, values);
        }
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            layer: self.layer.load(Relaxed),
            layers: self.layers.load(Relaxed),
            entries_done: self.entries_done.load(Relaxed),
            entries_total: self.entries_total.load(Relaxed),
            unit: if self.counts_rows.load(Relaxed) {
                "rows"
            } else {
                "edges"
            },
        }
    }
}
