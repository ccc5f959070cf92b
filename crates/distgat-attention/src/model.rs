//! The `gat-model-v1` model spec and its safetensors weights (PyG `GATConv` tensor names).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::error::{ModelError, Result};

pub const MODEL_FORMAT: &str = "gat-model-v1";

/// Widest layer accepted (heads x out_channels): far beyond any GAT, small enough that
/// buffer sizes cannot overflow.
const MAX_WIDTH: usize = 1 << 20;

/// The non-linearity applied between layers (never after the last one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Elu,
    Relu,
    None,
}

impl Activation {
    pub fn apply(self, values: &mut [f32]) {
        match self {
            // torch's ELU (alpha = 1) evaluates exp(x) - 1 as expm1 for x <= 0.
            Activation::Elu => values.iter_mut().for_each(|v| {
                if *v <= 0.0 {
                    *v = v.exp_m1();
                }
            }),
            Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::None => {}
        }
    }
}

/// One `GATConv` layer, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct GatLayer {
    pub in_features: usize,
    pub heads: usize,
    pub channels: usize,
    pub concat: bool,
    pub negative_slope: f32,
    pub add_self_loops: bool,
    /// `lin.weight` transposed: row-major `[in_features, heads * channels]`.
    pub weight_t: Vec<f32>,
    /// `att_src` flattened `[heads * channels]`: weighs the sending node.
    pub att_src: Vec<f32>,
    /// `att_dst` flattened `[heads * channels]`: weighs the receiving node.
    pub att_dst: Vec<f32>,
    /// `[out_width]`, or empty for a layer without bias.
    pub bias: Vec<f32>,
}

impl GatLayer {
    /// Width of the transformed rows `z`: heads * channels.
    pub fn hidden_width(&self) -> usize {
        self.heads * self.channels
    }
    /// Width of the layer output: heads * channels with concat, channels without.
    pub fn out_width(&self) -> usize {
        if self.concat {
            self.heads * self.channels
        } else {
            self.channels
        }
    }

    /// Builds a layer from PyG-shaped tensors (`lin_weight` is `[H*C, F_in]` row-major).
    #[allow(clippy::too_many_arguments)]
    pub fn from_pyg(
        in_features: usize,
        heads: usize,
        channels: usize,
        concat: bool,
        negative_slope: f32,
        add_self_loops: bool,
        lin_weight: &[f32],
        att_src: Vec<f32>,
        att_dst: Vec<f32>,
        bias: Vec<f32>,
    ) -> Self {
        let hc = heads * channels;
        assert_eq!(lin_weight.len(), hc * in_features, "lin.weight shape");
        let mut weight_t = vec![0f32; lin_weight.len()];
        for o in 0..hc {
            for f in 0..in_features {
                weight_t[f * hc + o] = lin_weight[o * in_features + f];
            }
        }
        GatLayer {
            in_features,
            heads,
            channels,
            concat,
            negative_slope,
            add_self_loops,
            weight_t,
            att_src,
            att_dst,
            bias,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub layers: Vec<GatLayer>,
    pub activation: Activation,
}

impl Model {
    pub fn out_width(&self) -> usize {
        self.layers.last().map_or(0, GatLayer::out_width)
    }

    /// Checks that the model accepts `width` input features.
    pub fn check_input_width(&self, width: usize, features: &Path) -> Result<()> {
        let want = self.layers[0].in_features;
        if want != width {
            return Err(ModelError::Mismatch(format!(
                "{}: features have {width} columns, but layer 0's lin.weight expects \
                 in_channels = {want}",
                features.display()
            )));
        }
        Ok(())
    }

    /// Reads a `gat-model-v1` JSON file and the weights it names (relative to the JSON).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| ModelError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let spec: ModelSpec = serde_json::from_str(&text).map_err(|e| ModelError::Spec {
            path: path.to_path_buf(),
            detail: format!("not a valid model JSON: {e}"),
        })?;
        let spec_err = |detail: String| ModelError::Spec {
            path: path.to_path_buf(),
            detail,
        };
        if spec.format != MODEL_FORMAT {
            return Err(spec_err(format!(
                "\"format\" is \"{}\", expected \"{MODEL_FORMAT}\"",
                spec.format
            )));
        }
        if spec.layers.is_empty() {
            return Err(spec_err(
                "\"layers\" is empty: a model needs at least one layer".into(),
            ));
        }
        let activation = match spec.activation.as_deref().unwrap_or("elu") {
            "elu" => Activation::Elu,
            "relu" => Activation::Relu,
            "none" => Activation::None,
            other => {
                return Err(spec_err(format!(
                    "\"activation\" is \"{other}\", expected \"elu\", \"relu\" or \"none\""
                )))
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut files: HashMap<PathBuf, Vec<u8>> = HashMap::new();
        let mut layers: Vec<GatLayer> = Vec::with_capacity(spec.layers.len());
        for (k, ls) in spec.layers.iter().enumerate() {
            if ls.heads == 0 || ls.out_channels == 0 {
                return Err(spec_err(format!(
                    "layers[{k}]: heads ({}) and out_channels ({}) must be at least 1",
                    ls.heads, ls.out_channels
                )));
            }
            if ls
                .heads
                .checked_mul(ls.out_channels)
                .is_none_or(|hc| hc > MAX_WIDTH)
            {
                return Err(spec_err(format!(
                    "layers[{k}]: heads x out_channels = {} x {} is beyond the supported \
                     width of {MAX_WIDTH} columns",
                    ls.heads, ls.out_channels
                )));
            }
            let slope = ls.negative_slope.unwrap_or(0.2);
            if !slope.is_finite() {
                return Err(spec_err(format!(
                    "layers[{k}]: negative_slope must be finite"
                )));
            }
            let weights_path = base.join(&ls.weights);
            if !files.contains_key(&weights_path) {
                let bytes = std::fs::read(&weights_path).map_err(|error| ModelError::Io {
                    path: weights_path.clone(),
                    error,
                })?;
                files.insert(weights_path.clone(), bytes);
            }
            let layer = load_layer(k, ls, slope, &weights_path, &files[&weights_path])?;
            if let Some(declared) = ls.in_channels {
                if declared != layer.in_features {
                    return Err(spec_err(format!(
                        "layers[{k}]: \"in_channels\" is {declared}, but {}lin.weight in {} \
                         has {} input columns",
                        ls.prefix.as_deref().unwrap_or(""),
                        weights_path.display(),
                        layer.in_features
                    )));
                }
            }
            if let Some(prev) = layers.last() {
                if prev.out_width() != layer.in_features {
                    return Err(ModelError::Weights {
                        path: weights_path,
                        detail: format!(
                            "layers[{k}]: {}lin.weight expects {} input features, but layer {} \
                             outputs {} columns",
                            ls.prefix.as_deref().unwrap_or(""),
                            layer.in_features,
                            k - 1,
                            prev.out_width()
                        ),
                    });
                }
            }
            layers.push(layer);
        }
        Ok(Model { layers, activation })
    }
}

#[derive(Debug, Deserialize)]
struct ModelSpec {
    format: String,
    activation: Option<String>,
    layers: Vec<LayerSpec>,
}

#[derive(Debug, Deserialize)]
struct LayerSpec {
    weights: String,
    #[serde(default)]
    prefix: Option<String>,
    heads: usize,
    out_channels: usize,
    concat: Option<bool>,
    negative_slope: Option<f32>,
    add_self_loops: Option<bool>,
    /// Informational in the spec; `false` allows a weights file without `bias`.
    bias: Option<bool>,
    /// Informational; checked against `lin.weight` when present.
    in_channels: Option<usize>,
}

fn load_layer(
    k: usize,
    spec: &LayerSpec,
    negative_slope: f32,
    path: &Path,
    bytes: &[u8],
) -> Result<GatLayer> {
    let werr = |detail: String| ModelError::Weights {
        path: path.to_path_buf(),
        detail,
    };
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| {
        werr(format!(
            "not a valid safetensors file ({e:?}): expected an 8-byte little-endian \
                 header length, a JSON header and the tensor data"
        ))
    })?;
    let prefix = spec.prefix.as_deref().unwrap_or("");
    let (heads, channels) = (spec.heads, spec.out_channels);
    let hc = heads * channels;
    let concat = spec.concat.unwrap_or(true);

    let fetch = |name: &str, required: bool| -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let full = format!("{prefix}{name}");
        let view = match tensors.tensor(&full) {
            Ok(v) => v,
            Err(_) if !required => return Ok(None),
            Err(_) => {
                let mut names: Vec<String> = tensors
                    .names()
                    .into_iter()
                    .filter(|n| n.starts_with(prefix))
                    .cloned()
                    .collect();
                names.sort();
                return Err(werr(format!(
                    "layers[{k}]: tensor '{full}' is missing (tensors with prefix '{prefix}': {names:?})"
                )));
            }
        };
        if view.dtype() != Dtype::F32 {
            return Err(werr(format!(
                "layers[{k}]: tensor '{full}' has dtype {:?}, expected F32",
                view.dtype()
            )));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<f32>>();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(werr(format!(
                "layers[{k}]: tensor '{full}' holds a non-finite value at flat index {i}"
            )));
        }
        Ok(Some((view.shape().to_vec(), values)))
    };
    let shape_err = |name: &str, want: String, found: &[usize]| {
        werr(format!(
            "layers[{k}]: tensor '{prefix}{name}' has shape {found:?}, expected {want} \
             (heads = {heads}, out_channels = {channels}, concat = {concat})"
        ))
    };

    let (w_shape, lin_weight) = fetch("lin.weight", true)?.expect("required");
    if w_shape.len() != 2 || w_shape[0] != hc {
        return Err(shape_err(
            "lin.weight",
            format!("[{hc}, in_channels]"),
            &w_shape,
        ));
    }
    let in_features = w_shape[1];
    let mut att = Vec::with_capacity(2);
    for name in ["att_src", "att_dst"] {
        let (shape, values) = fetch(name, true)?.expect("required");
        if shape != [1, heads, channels] {
            return Err(shape_err(name, format!("[1, {heads}, {channels}]"), &shape));
        }
        att.push(values);
    }
    let out_width = if concat { hc } else { channels };
    let bias = match fetch("bias", spec.bias != Some(false))? {
        Some((shape, values)) => {
            if shape != [out_width] {
                return Err(shape_err("bias", format!("[{out_width}]"), &shape));
            }
            values
        }
        None => Vec::new(),
    };
    let att_dst = att.pop().expect("two");
    let att_src = att.pop().expect("two");
    Ok(GatLayer::from_pyg(
        in_features,
        heads,
        channels,
        concat,
        negative_slope,
        spec.add_self_loops.unwrap_or(true),
        &lin_weight,
        att_src,
        att_dst,
        bias,
    ))
}
