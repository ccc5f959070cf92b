//! Progress of a model run inside each layer, for progress bars and log lines.
//!
//! The kernels add the attention entries (edges, self loops included) they have aggregated;
//! a reporter thread reads a [`ProgressSnapshot`] whenever it likes. The counters are
//! relaxed atomics: a progress bar needs no ordering with the computation, and reading them
//! never changes a bit of the output.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

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
