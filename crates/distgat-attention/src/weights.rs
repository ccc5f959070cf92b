//! Safetensors weight files: tensors fetched by name, widened to f32, and every tensor
//! accounted for (a tensor no layer consumes is an error, never silently ignored).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

/// One weights file and which of its tensors the layers have consumed.
pub(crate) struct WeightsFile {
    pub path: PathBuf,
    bytes: Vec<u8>,
    names: BTreeSet<String>,
    consumed: BTreeMap<String, usize>,
    /// Dtypes widened to F32, with how many tensors each.
    widened: BTreeMap<String, usize>,
}

/// A tensor widened to f32.
pub(crate) struct Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl WeightsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = distgat_graph::read_regular_file(path).map_err(|error| ModelError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_bytes(path, bytes)
    }

    /// A weights file received as bytes; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let names = SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelError::Weights {
                path: path.to_path_buf(),
                detail: format!(
                    "not a valid safetensors file ({e:?}): expected an 8-byte little-endian \
                     header length, a JSON header and the tensor data"
                ),
            })?
            .names()
            .into_iter()
            .cloned()
            .collect();
        Ok(WeightsFile {
            path: path.to_path_buf(),
            bytes,
            names,
            consumed: BTreeMap::new(),
            widened: BTreeMap::new(),
        })
    }

    pub fn err(&self, detail: String) -> ModelError {
        ModelError::Weights {
            path: self.path.clone(),
            detail,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The shape of `name`, if the file has it.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let tensors = SafeTensors::deserialize(&self.bytes).expect("parsed when opened");
        tensors.tensor(name).ok().map(|v| v.shape().to_vec())
    }

    /// Names starting with `prefix`, sorted.
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Fetches `name` (marking it consumed by `layer`), widening F16/BF16/F64 to f32 and
    /// rejecting other dtypes and non-finite values. `None` when the file has no such tensor.
    pub fn take(&mut self, layer: usize, name: &str) -> Result<Option<Tensor>> {
        if !self.names.contains(name) {
            return Ok(None);
        }
        let tensors = SafeTensors::deserialize(&self.bytes).expect("parsed when opened");
        let view = tensors.tensor(name).expect("name listed by the header");
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(self.err(format!(
                    "layers[{layer}]: tensor '{name}' has dtype {other:?}; expected a floating \
                     point tensor (F32, or F16/BF16/F64, which are widened to F32)"
                )))
            }
        };
        if view.dtype() != Dtype::F32 {
            *self
                .widened
                .entry(format!("{:?}", view.dtype()))
                .or_default() += 1;
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.err(format!(
                "layers[{layer}]: tensor '{name}' holds a non-finite value at flat index {i}{}",
                if view.dtype() == Dtype::F64 {
                    " (F64 values beyond the F32 range become infinite when widened)"
                } else {
                    ""
                }
            )));
        }
        let shape = view.shape().to_vec();
        self.consumed.entry(name.to_string()).or_insert(layer);
        Ok(Some(Tensor { shape, values }))
    }

    /// Marks `name` as read by `layer` although its values are not used (PyG keeps the
    /// tensor but never reads it, e.g. `lin_skip` with `root_weight=False`).
    pub fn mark_unused_by_pyg(&mut self, layer: usize, name: &str) {
        if self.names.contains(name) {
            self.consumed.entry(name.to_string()).or_insert(layer);
        }
    }

    /// Tensors no layer consumed.
    pub fn unconsumed(&self) -> Vec<&String> {
        self.names
            .iter()
            .filter(|n| !self.consumed.contains_key(*n))
            .collect()
    }

    /// Logs the dtypes this file had widened.
    pub fn log_widened(&self) {
        for (dtype, count) in &self.widened {
            tracing::warn!(
                file = %self.path.display(),
                "{count} {dtype} tensor(s) widened to F32 (computation runs in F32)"
            );
        }
    }
}
