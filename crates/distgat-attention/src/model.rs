//! Model files: `pyg-attention-model-v1` (any of PyG's `GATConv`, `GATv2Conv`,
//! `TransformerConv`, named by class with PyG's constructor arguments) and the older
//! `gat-model-v1` (GATConv only), with their safetensors weights.
//!
//! Strictness is the point: every JSON key is known or an error naming it, every argument
//! is one distgat honours or an error, and every tensor of a weights file is consumed by a
//! layer or an error naming it. A model distgat cannot run exactly is refused, never run
//! with something silently dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::dense::Linear;
use crate::error::{ModelError, Result};
use crate::gat::GatConv;
use crate::gatv2::GatV2Conv;
use crate::global::{Blocks, GlobalAttention, GlobalKind, Method};
use crate::gps::{GpsActivation, GpsConv, GpsNorm};
use crate::kind::{AttentionKind, FillValue};
use crate::transformer::TransformerConv;
use crate::weights::WeightsFile;

/// The original GATConv-only format.
pub const MODEL_FORMAT: &str = "gat-model-v1";
/// The attention-family format (reference README section 8.2).
pub const PYG_MODEL_FORMAT: &str = "pyg-attention-model-v1";

/// Widest layer accepted (heads x out_channels): far beyond any attention layer, small
/// enough that buffer sizes cannot overflow.
const MAX_WIDTH: usize = 1 << 20;

/// Most Nyström landmarks accepted: each head keeps several float64 `m x m` matrices and
/// the pinv iteration costs `O(m³)` per head and step.
pub const MAX_LANDMARKS: usize = 2048;

/// The non-linearity applied between layers (never after the last one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Elu,
    Relu,
    None,
}

impl Activation {
    /// Applies the activation to every value in place. ELU is [`elu`], compiled for AVX2
    /// where the CPU has it ([`crate::kind::with_wide_vectors`]: the same operations in
    /// the same order, so the same bits, four f64 lanes instead of two).
    pub fn apply(self, values: &mut [f32]) {
        match self {
            Activation::Elu => {
                crate::kind::with_wide_vectors(|| values.iter_mut().for_each(|v| *v = elu(*v)))
            }
            Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::None => {}
        }
    }
}

/// ELU with alpha = 1, as torch's `F.elu`: `x` for `x > 0`, `expm1(x)` for `x <= 0` (so
/// `-0.0` stays `-0.0`; NaN stays NaN).
///
/// `expm1` is evaluated in f64 and rounded once to f32, which gives the correctly rounded
/// f32 `expm1` for every f32 in [-20, 0] (checked exhaustively when this was written, 1.1e9
/// values; the unit test checks a sample), where glibc's `expm1f` is off by one ulp for
/// 0.4% of them; below -18 the result rounds to -1. Branch-free, so the loop vectorizes:
/// 2.3x glibc's scalar `expm1f` on this machine. Method: x = k ln2 + r with |r| <= ln2/2
/// (Cody-Waite, ln2 in two parts), expm1(r) by its Taylor series to r^13 (remainder below
/// 2e-17 relative), expm1(x) = 2^k expm1(r) + (2^k - 1), the last term exact.
#[inline(always)]
pub fn elu(x: f32) -> f32 {
    // fdlibm's split of ln 2: LN2_HI's low 21 mantissa bits are zero, so k * LN2_HI is exact.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const INV_LN2: f64 = std::f64::consts::LOG2_E;
    // 1.5 * 2^52: adding it rounds to the nearest integer, held in the low mantissa bits.
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    let xd = (x as f64).clamp(-18.0, 0.0);
    let t = xd * INV_LN2 + MAGIC;
    let k = t - MAGIC;
    let r = (xd - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0 / 6_227_020_800.0;
    for c in [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
    ] {
        p = p * r + c;
    }
    // k is in -26..=0: its two's complement sits in t's low bits, so 2^k is built without
    // a float-to-int conversion.
    let k_bits = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f64::from_bits(k_bits.wrapping_add(1023) << 52);
    let y = (scale * (p * r) + (scale - 1.0)) as f32;
    if x >= 0.0 || x.is_nan() {
        x
    } else {
        y
    }
}

/// One layer of a model: local attention over a graph's edges, or global attention over
/// all nodes. The engine dispatches on this once per layer; everything else goes through
/// the two seams ([`AttentionKind`], [`GlobalKind`]).
#[derive(Debug)]
pub enum Layer {
    /// Attention over the incoming edges of each node (`GATConv`, `GATv2Conv`,
    /// `TransformerConv`).
    Local(Box<dyn AttentionKind>),
    /// Attention over all nodes as one sequence (`MultiheadAttention`, `NystromAttention`).
    Global(Box<dyn GlobalKind>),
    /// PyG's `GPSConv`: a local kind and global attention side by side, then an MLP
    /// ([`GpsConv`]). It reads the graph through its conv ([`Layer::local`]).
    Gps(Box<GpsConv>),
}

impl Layer {
    /// The model file's class name.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Local(l) => l.kind(),
            Layer::Global(g) => g.kind(),
            Layer::Gps(_) => "GPSConv",
        }
    }
    pub fn in_features(&self) -> usize {
        match self {
            Layer::Local(l) => l.in_features(),
            Layer::Global(g) => g.in_features(),
            Layer::Gps(g) => g.channels,
        }
    }
    /// The model argument that sets [`Layer::in_features`] (`in_channels`, `embed_dim`,
    /// `dim`), for errors.
    pub fn in_features_arg(&self) -> &'static str {
        match self {
            Layer::Local(_) => "in_channels",
            Layer::Global(g) => g.in_features_arg(),
            Layer::Gps(_) => "channels",
        }
    }
    pub fn out_width(&self) -> usize {
        match self {
            Layer::Local(l) => l.out_width(),
            Layer::Global(g) => g.out_width(),
            Layer::Gps(g) => g.channels,
        }
    }
    /// The graph attention kind the layer runs over the graph's edges, if any: the layer
    /// itself, or a GPSConv's `conv`.
    pub fn local(&self) -> Option<&dyn AttentionKind> {
        match self {
            Layer::Local(l) => Some(l.as_ref()),
            Layer::Global(_) => None,
            Layer::Gps(g) => g.conv.as_deref(),
        }
    }
    /// The layer as a global attention kind, if it is one (not a GPSConv's part).
    pub fn global(&self) -> Option<&dyn GlobalKind> {
        match self {
            Layer::Global(g) => Some(g.as_ref()),
            Layer::Local(_) | Layer::Gps(_) => None,
        }
    }
    /// `Some(description)` when the layer (or its attention part) approximates exact
    /// softmax attention.
    pub fn approximation(&self) -> Option<String> {
        match self {
            Layer::Local(_) => None,
            Layer::Global(g) => g.approximation(),
            Layer::Gps(g) => g.attn.approximation(),
        }
    }
    /// `add_self_loops` of a local layer; `None` for a global one (it reads no graph).
    pub fn add_self_loops(&self) -> Option<bool> {
        self.local().map(|l| l.add_self_loops())
    }
    /// `edge_dim` of a local layer (`None` for global layers).
    pub fn edge_dim(&self) -> Option<usize> {
        self.local().and_then(|l| l.edge_dim())
    }
}

#[derive(Debug)]
pub struct Model {
    pub layers: Vec<Layer>,
    pub activation: Activation,
}

impl Model {
    pub fn out_width(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out_width())
    }

    /// Whether any layer attends over all nodes (`Global`, or `Gps` with its global
    /// half). In a distributed job such layers take collective steps across every part,
    /// so a part cannot recompute them alone (the runtime restarts such jobs whole).
    pub fn has_collective_layers(&self) -> bool {
        self.layers
            .iter()
            .any(|l| matches!(l, Layer::Global(_) | Layer::Gps(_)))
    }

    /// The first local layer (index and kind), if any: a model with one needs a graph.
    pub fn first_local(&self) -> Option<(usize, &'static str)> {
        self.layers
            .iter()
            .enumerate()
            .find_map(|(k, l)| l.local().map(|l| (k, l.kind())))
    }

    /// The layers as graph attention kinds, for runners that only run those (the
    /// distributed runtime). `runner` names the refusing program in the error, which names
    /// the first global layer's index and kind.
    pub fn local_layers(&self, runner: &str) -> Result<Vec<&dyn AttentionKind>> {
        self.layers
            .iter()
            .enumerate()
            .map(|(k, l)| match l {
                Layer::Local(l) => Ok(l.as_ref()),
                Layer::Global(g) => Err(ModelError::Mismatch(format!(
                    "layers[{k}] is {} (global attention over all nodes), which {runner} does \
                     not run: it runs graph attention layers only",
                    g.kind()
                ))),
                Layer::Gps(_) => Err(ModelError::Mismatch(format!(
                    "layers[{k}] is GPSConv (a graph transformer layer with global attention \
                     over all nodes), which {runner} does not run: it runs graph attention \
                     layers only"
                ))),
            })
            .collect()
    }

    /// Checks that the model accepts `width` input features.
    pub fn check_input_width(&self, width: usize, features: &Path) -> Result<()> {
        let want = self.layers[0].in_features();
        if want != width {
            return Err(ModelError::Mismatch(format!(
                "{}: features have {width} columns, but layer 0 ({}) expects {} = {want}",
                features.display(),
                self.layers[0].kind(),
                self.layers[0].in_features_arg()
            )));
        }
        Ok(())
    }

    /// The edge-attribute width the model needs, if any layer has `edge_dim`.
    pub fn edge_dim(&self) -> Option<usize> {
        self.layers.iter().find_map(|l| l.edge_dim())
    }

    /// Checks edge features against the model: given exactly when some layer has
    /// `edge_dim`, with that many columns. `flag` is what the user typed
    /// (`--edge-features`), `edge_attr` the file and its width, if given.
    pub fn check_edge_features(&self, flag: &str, edge_attr: Option<(&Path, usize)>) -> Result<()> {
        match (
            self.layers
                .iter()
                .enumerate()
                .find_map(|(k, l)| l.edge_dim().map(|d| (k, l, d))),
            edge_attr,
        ) {
            (None, None) => Ok(()),
            (Some((k, l, d)), None) => Err(ModelError::Mismatch(format!(
                "layers[{k}] ({}) has edge_dim = {d}, so it needs edge features: pass {flag} \
                 E.npy (float32 [E, {d}], row e belonging to edge e of the graph)",
                l.kind()
            ))),
            (None, Some((path, _))) => Err(ModelError::Mismatch(format!(
                "{flag} {}: no layer of the model has edge_dim, so the edge features would be \
                 ignored; drop {flag} or use a model whose layers were trained with edge_dim",
                path.display()
            ))),
            (Some(_), Some((path, width))) => {
                for (k, l) in self.layers.iter().enumerate() {
                    if let Some(d) = l.edge_dim() {
                        if d != width {
                            return Err(ModelError::Mismatch(format!(
                                "{flag} {}: the edge features have {width} columns, but \
                                 layers[{k}] ({}) has edge_dim = {d}",
                                path.display(),
                                l.kind()
                            )));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Reads a model JSON (`pyg-attention-model-v1` or `gat-model-v1`) and the weights it
    /// names (paths relative to the JSON).
    ///
    /// Errors: unreadable files; a JSON that is not a model (a safetensors or npy file
    /// given by mistake is named as such); unknown keys, kinds or arguments; arguments
    /// distgat cannot honour (bipartite layers, another `aggr`); missing, misshapen,
    /// non-float or non-finite tensors; tensors no layer consumes; layers whose widths do
    /// not chain.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = distgat_graph::read_regular_file(path).map_err(|error| ModelError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::load_from(path, bytes, None)
    }

    /// Reads the model JSON at `path` and every weights file it names, as bytes (what the
    /// coordinator streams to a worker). Each file is read once, with every spelling the
    /// JSON uses for it. The files are not validated here; [`Model::from_files`] does that.
    pub fn read_files(path: &Path) -> Result<ModelFiles> {
        let json = distgat_graph::read_regular_file(path).map_err(|error| ModelError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let spec_err = |detail: String| ModelError::Spec {
            path: path.to_path_buf(),
            detail,
        };
        let value: serde_json::Value = serde_json::from_slice(&json)
            .map_err(|e| spec_err(format!("not a valid model JSON: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut weights: Vec<(PathBuf, WeightsBytes)> = Vec::new();
        let layers = value.get("layers").and_then(|l| l.as_array());
        for (k, layer) in layers.into_iter().flatten().enumerate() {
            let Some(name) = layer.get("weights").and_then(|w| w.as_str()) else {
                continue; // Model::from_files names what is missing
            };
            let canonical =
                std::fs::canonicalize(base.join(name)).map_err(|error| ModelError::Io {
                    path: base.join(name),
                    error: std::io::Error::new(
                        error.kind(),
                        format!("layers[{k}].weights: {error}"),
                    ),
                })?;
            match weights.iter_mut().find(|(c, _)| *c == canonical) {
                Some((_, w)) => {
                    if !w.names.iter().any(|n| n == name) {
                        w.names.push(name.to_string());
                    }
                }
                None => {
                    let bytes = distgat_graph::read_regular_file(&canonical).map_err(|error| {
                        ModelError::Io {
                            path: canonical.clone(),
                            error,
                        }
                    })?;
                    weights.push((
                        canonical,
                        WeightsBytes {
                            names: vec![name.to_string()],
                            bytes,
                        },
                    ));
                }
            }
        }
        Ok(ModelFiles {
            json,
            weights: weights.into_iter().map(|(_, w)| w).collect(),
        })
    }

    /// Loads a model received as bytes, with every check of [`Model::load`]; `label` (the
    /// model's path where it came from) names it in errors, and each weights file is found
    /// by the spelling its layer uses.
    pub fn from_files(label: &Path, files: ModelFiles) -> Result<Self> {
        Self::load_from(label, files.json, Some(files.weights))
    }

    fn load_from(path: &Path, bytes: Vec<u8>, received: Option<Vec<WeightsBytes>>) -> Result<Self> {
        let mut received = received;
        let spec_err = |detail: String| ModelError::Spec {
            path: path.to_path_buf(),
            detail,
        };
        if let Some(what) = sniff_binary(&bytes) {
            return Err(spec_err(format!(
                "expected a model JSON (\"format\": \"{PYG_MODEL_FORMAT}\" or \"{MODEL_FORMAT}\"), \
                 found {what}; pass the JSON that names the weights file"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            spec_err("expected a model JSON, found a file that is not UTF-8 text".into())
        })?;
        let spec: ModelSpec = serde_json::from_str(text.trim_start_matches('\u{feff}'))
            .map_err(|e| spec_err(format!("not a valid model JSON: {e}")))?;
        let pyg = match spec.format.as_str() {
            PYG_MODEL_FORMAT => true,
            MODEL_FORMAT => false,
            other => {
                return Err(spec_err(format!(
                "\"format\" is \"{other}\", expected \"{PYG_MODEL_FORMAT}\" or \"{MODEL_FORMAT}\""
            )))
            }
        };
        if spec.layers.is_empty() {
            return Err(spec_err(
                "\"layers\" is empty: a model needs at least one layer".into(),
            ));
        }
        // The activation between layers changes every number: the attention format says
        // it explicitly (gat-model-v1 documented elu as its default).
        let activation = match spec.activation.as_deref() {
            None if pyg && spec.layers.len() > 1 => {
                return Err(spec_err(format!(
                    "\"activation\" is missing: a {PYG_MODEL_FORMAT} model with several layers \
                     must say what runs between them (\"elu\", \"relu\" or \"none\")"
                )))
            }
            None => "elu",
            Some(a) => a,
        };
        let activation = match activation {
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
        let mut files: BTreeMap<PathBuf, WeightsFile> = BTreeMap::new();
        let mut layers: Vec<Layer> = Vec::with_capacity(spec.layers.len());
        for (k, raw) in spec.layers.iter().enumerate() {
            // Each layer is parsed from its own text, so a key given twice is an error
            // (through a generic JSON value the last copy would silently win).
            let (weights, prefix, parsed) = if pyg {
                let l: PygLayerSpec = serde_json::from_str(raw.get())
                    .map_err(|e| spec_err(format!("layers[{k}]: {e}")))?;
                let args = parse_args(&l.kind, l.args.get())
                    .map_err(|e| spec_err(format!("layers[{k}].args ({}): {e}", l.kind)))?;
                (l.weights, l.prefix.unwrap_or_default(), (args, None))
            } else {
                let l: GatV1LayerSpec = serde_json::from_str(raw.get())
                    .map_err(|e| spec_err(format!("layers[{k}]: {e}")))?;
                let args = Args::Gat(GatArgs {
                    in_channels: l.in_channels.map(Value::from),
                    out_channels: l.out_channels,
                    heads: Some(l.heads),
                    concat: l.concat,
                    negative_slope: l.negative_slope,
                    dropout: None,
                    add_self_loops: l.add_self_loops,
                    edge_dim: None,
                    fill_value: None,
                    bias: l.bias,
                    residual: None,
                });
                (l.weights, l.prefix.unwrap_or_default(), (args, l.tensors))
            };
            let (args, declared_tensors) = parsed;
            if weights.is_empty() {
                return Err(spec_err(format!(
                    "layers[{k}].weights is empty: name the layer's safetensors file"
                )));
            }
            // One file reached by two spellings is one file (its tensors are accounted once).
            let weights_path = match &mut received {
                None => {
                    std::fs::canonicalize(base.join(&weights)).map_err(|error| ModelError::Io {
                        path: base.join(&weights),
                        error: std::io::Error::new(
                            error.kind(),
                            format!("layers[{k}].weights: {error}"),
                        ),
                    })?
                }
                Some(got) => {
                    // Keyed by the received file's position (its spellings are one file).
                    let Some(i) = got.iter().position(|w| w.names.contains(&weights)) else {
                        return Err(ModelError::Io {
                            path: base.join(&weights),
                            error: std::io::Error::new(
                                std::io::ErrorKind::NotFound,
                                format!("layers[{k}].weights: not among the files received"),
                            ),
                        });
                    };
                    let key = PathBuf::from(format!("received file {i}"));
                    if !files.contains_key(&key) {
                        let bytes = std::mem::take(&mut got[i].bytes);
                        files.insert(
                            key.clone(),
                            WeightsFile::from_bytes(&base.join(&weights), bytes)?,
                        );
                    }
                    key
                }
            };
            if !files.contains_key(&weights_path) {
                files.insert(weights_path.clone(), WeightsFile::open(&weights_path)?);
            }
            let file = files.get_mut(&weights_path).expect("inserted");
            let mut t = LayerTensors {
                model: path,
                file,
                prefix: &prefix,
                k,
                v1: !pyg,
                context: String::new(),
            };
            let layer: Layer = match args {
                Args::Gat(a) => Layer::Local(Box::new(load_gat(&a, &mut t)?)),
                Args::GatV2(a) => Layer::Local(Box::new(load_gatv2(&a, &mut t)?)),
                Args::Transformer(a) => Layer::Local(Box::new(load_transformer(&a, &mut t)?)),
                Args::Mha(a) => Layer::Global(Box::new(load_mha(&a, &mut t)?)),
                Args::Nystrom(a) => Layer::Global(Box::new(load_nystrom(&a, &mut t)?)),
                Args::Gps(a) => Layer::Gps(Box::new(load_gps(&a, &mut t)?)),
            };
            if let Some(declared) = &declared_tensors {
                t.check_declared(declared)?;
            }
            if let Some(prev) = layers.last() {
                if prev.out_width() != layer.in_features() {
                    return Err(t.file.err(format!(
                        "layers[{k}] ({}): its weights expect {} input features, but layer {} \
                         ({}) outputs {} columns",
                        layer.kind(),
                        layer.in_features(),
                        k - 1,
                        prev.kind(),
                        prev.out_width()
                    )));
                }
            }
            layers.push(layer);
        }
        for file in files.values() {
            let left = file.unconsumed();
            if let Some(first) = left.first() {
                return Err(file.err(format!(
                    "tensor '{first}' is used by no layer{} ({} unused in all: {:?}); distgat \
                     does not run it, so the output would differ from the PyG model. Export \
                     only the attention layers' tensors, or fix the layer's \"prefix\"/arguments{}",
                    hint_for(first),
                    left.len(),
                    left.iter().take(8).collect::<Vec<_>>(),
                    if pyg { "" } else { " (edge_dim, residual and other kinds need \"format\": \"pyg-attention-model-v1\")" }
                )));
            }
            file.log_widened();
        }
        Ok(Model { layers, activation })
    }
}

/// A model JSON and the weights files it names, as bytes.
#[derive(Debug, Clone, Default)]
pub struct ModelFiles {
    pub json: Vec<u8>,
    pub weights: Vec<WeightsBytes>,
}

/// One weights file: every spelling of it in the model JSON, and its bytes.
#[derive(Debug, Clone, Default)]
pub struct WeightsBytes {
    pub names: Vec<String>,
    pub bytes: Vec<u8>,
}

/// Names binary formats a user may pass where a model JSON belongs.
fn sniff_binary(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x93NUMPY") {
        return Some("a .npy array");
    }
    if bytes.len() >= 9 {
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if bytes[8] == b'{' && n > 1 && n <= bytes.len() as u64 - 8 {
            return Some("a safetensors weights file");
        }
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return Some("a zip archive (a torch.save checkpoint?)");
    }
    None
}

/// What an unconsumed tensor name suggests.
fn hint_for(name: &str) -> &'static str {
    let base = name.rsplit('.').next().unwrap_or(name);
    if name.contains("lin_edge") || base == "att_edge" {
        " (an edge_dim tensor: is \"edge_dim\" missing from the layer's args?)"
    } else if name.contains("res.") {
        " (a residual tensor: is \"residual\": true missing?)"
    } else if name.contains("res_conv") {
        " (NystromAttention's residual convolution: distgat does not implement residual=True)"
    } else if name.contains("lin_beta") {
        " (is \"beta\": true missing?)"
    } else if base == "bias" {
        " (is \"bias\": false set although the layer has a bias?)"
    } else {
        ""
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpec {
    format: String,
    activation: Option<String>,
    layers: Vec<Box<serde_json::value::RawValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PygLayerSpec {
    kind: String,
    args: Box<serde_json::value::RawValue>,
    weights: String,
    prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatV1LayerSpec {
    weights: String,
    prefix: Option<String>,
    heads: usize,
    out_channels: usize,
    concat: Option<bool>,
    negative_slope: Option<f64>,
    add_self_loops: Option<bool>,
    /// `false` allows a weights file without `bias`.
    bias: Option<bool>,
    /// Checked against `lin.weight` when present.
    in_channels: Option<usize>,
    /// Names -> shapes; checked against the file when present.
    tensors: Option<BTreeMap<String, Vec<usize>>>,
}

enum Args {
    Gat(GatArgs),
    GatV2(GatV2Args),
    Transformer(TransformerArgs),
    Mha(MhaArgs),
    Nystrom(NystromArgs),
    Gps(Box<GpsArgs>),
}

/// `torch.nn.MultiheadAttention`'s constructor arguments (torch 2.15), plus distgat's
/// `approx`. `dropout` is inert in eval mode; `batch_first` only says how torch laid out
/// its batch (distgat runs one sequence of all nodes either way).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MhaArgs {
    embed_dim: usize,
    num_heads: usize,
    dropout: Option<f64>,
    bias: Option<bool>,
    add_bias_kv: Option<bool>,
    add_zero_attn: Option<bool>,
    kdim: Option<usize>,
    vdim: Option<usize>,
    batch_first: Option<bool>,
    approx: Option<ApproxArgs>,
}

/// `"approx"` of a MultiheadAttention layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproxArgs {
    method: String,
    landmarks: i64,
    pinv_iterations: Option<usize>,
}

/// `nystrom_attention.NystromAttention`'s constructor arguments (0.0.14), with its
/// defaults. `eps` only enters with a mask (distgat has none), `dropout` is inert in eval
/// mode, `residual_conv_kernel` only matters with `residual`, which is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NystromArgs {
    dim: usize,
    dim_head: Option<usize>,
    heads: Option<usize>,
    num_landmarks: Option<usize>,
    pinv_iterations: Option<usize>,
    residual: Option<bool>,
    residual_conv_kernel: Option<usize>,
    eps: Option<f64>,
    dropout: Option<f64>,
}

/// `GPSConv`'s constructor arguments (PyG 2.8.1), plus distgat's `approx` for its
/// attention. `conv` is a nested layer spec (`{"kind", "args"}`, tensors under `conv.`) or
/// null; `dropout` is inert in eval mode; `attn_kwargs` go to `MultiheadAttention`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpsArgs {
    channels: usize,
    conv: Option<ConvSpec>,
    heads: Option<usize>,
    dropout: Option<f64>,
    act: Option<String>,
    act_kwargs: Option<serde_json::Map<String, Value>>,
    /// Absent: PyG's default `"batch_norm"`; null: no normalisation.
    #[serde(default = "default_gps_norm")]
    norm: Value,
    norm_kwargs: Option<NormKwargs>,
    attn_type: Option<String>,
    attn_kwargs: Option<AttnKwargs>,
    approx: Option<ApproxArgs>,
}

fn default_gps_norm() -> Value {
    Value::String("batch_norm".into())
}

/// GPSConv's `conv`: a local layer given as in a model's `layers` list, without weights.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvSpec {
    kind: String,
    args: Box<serde_json::value::RawValue>,
}

/// GPSConv's `norm_kwargs` (for `BatchNorm` or PyG's `LayerNorm`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NormKwargs {
    eps: Option<f64>,
    affine: Option<bool>,
    /// LayerNorm only: `"graph"` (PyG's default) or `"node"`.
    mode: Option<String>,
    /// BatchNorm only; inert in eval mode.
    momentum: Option<Value>,
    /// BatchNorm only; false would normalise with the batch's own statistics.
    track_running_stats: Option<bool>,
    /// BatchNorm only; in eval mode the running statistics are used either way.
    allow_single_element: Option<bool>,
}

/// GPSConv's `attn_kwargs`: the `MultiheadAttention` arguments it passes on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttnKwargs {
    dropout: Option<f64>,
    bias: Option<bool>,
    add_bias_kv: Option<bool>,
    add_zero_attn: Option<bool>,
    kdim: Option<usize>,
    vdim: Option<usize>,
}

/// `GATConv`'s constructor arguments (PyG 2.8.1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatArgs {
    in_channels: Option<Value>,
    out_channels: usize,
    heads: Option<usize>,
    concat: Option<bool>,
    negative_slope: Option<f64>,
    dropout: Option<f64>,
    add_self_loops: Option<bool>,
    edge_dim: Option<usize>,
    fill_value: Option<Value>,
    bias: Option<bool>,
    residual: Option<bool>,
}

/// `GATv2Conv`'s constructor arguments (PyG 2.8.1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatV2Args {
    in_channels: Option<Value>,
    out_channels: usize,
    heads: Option<usize>,
    concat: Option<bool>,
    negative_slope: Option<f64>,
    dropout: Option<f64>,
    add_self_loops: Option<bool>,
    edge_dim: Option<usize>,
    fill_value: Option<Value>,
    bias: Option<bool>,
    share_weights: Option<bool>,
    residual: Option<bool>,
}

/// `TransformerConv`'s constructor arguments (PyG 2.8.1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformerArgs {
    in_channels: Option<Value>,
    out_channels: usize,
    heads: Option<usize>,
    concat: Option<bool>,
    beta: Option<bool>,
    dropout: Option<f64>,
    edge_dim: Option<usize>,
    bias: Option<bool>,
    root_weight: Option<bool>,
}

fn parse_args(kind: &str, args: &str) -> std::result::Result<Args, String> {
    let hint = |e: serde_json::Error| {
        let s = e.to_string();
        if ["`aggr`", "`flow`", "`node_dim`", "`decomposed_layers`"]
            .iter()
            .any(|k| s.contains(k))
        {
            format!("{s} (distgat runs PyG's default message passing: sum aggregation, source_to_target)")
        } else {
            s
        }
    };
    let args = match kind {
        "GATConv" => Args::Gat(serde_json::from_str(args).map_err(hint)?),
        "GATv2Conv" => Args::GatV2(serde_json::from_str(args).map_err(hint)?),
        "TransformerConv" => Args::Transformer(serde_json::from_str(args).map_err(hint)?),
        "MultiheadAttention" => Args::Mha(serde_json::from_str(args).map_err(|e| e.to_string())?),
        "NystromAttention" => Args::Nystrom(serde_json::from_str(args).map_err(|e| e.to_string())?),
        "GPSConv" => Args::Gps(serde_json::from_str(args).map_err(|e| e.to_string())?),
        other => {
            return Err(format!(
                "unknown kind \"{other}\"; supported kinds: GATConv, GATv2Conv, \
                 TransformerConv, MultiheadAttention, NystromAttention, GPSConv"
            ))
        }
    };
    Ok(args)
}

/// The shape arguments every kind shares, checked.
struct LayerShape {
    heads: usize,
    channels: usize,
    slope: f32,
    concat: bool,
    /// heads * channels
    hc: usize,
    /// The output width: `hc` with concat, `channels` without.
    ow: usize,
}

/// Checks the arguments every kind shares (and names them in later shape errors).
fn check_common(
    t: &mut LayerTensors<'_>,
    in_channels: &Option<Value>,
    heads: Option<usize>,
    out_channels: usize,
    concat: Option<bool>,
    dropout: Option<f64>,
    negative_slope: Option<f64>,
) -> Result<LayerShape> {
    let heads = heads.unwrap_or(1);
    if heads == 0 || out_channels == 0 {
        return Err(t.spec(format!(
            "heads ({heads}) and out_channels ({out_channels}) must be at least 1"
        )));
    }
    if heads
        .checked_mul(out_channels)
        .is_none_or(|hc| hc > MAX_WIDTH)
    {
        return Err(t.spec(format!(
            "heads x out_channels = {heads} x {out_channels} is beyond the supported width of \
             {MAX_WIDTH} columns"
        )));
    }
    match in_channels {
        None | Some(Value::Number(_)) => {}
        Some(Value::Array(_)) => {
            return Err(t.spec(
                "in_channels is a pair: bipartite layers (separate source and target node \
                 sets) are not supported; distgat runs one node set"
                    .into(),
            ))
        }
        Some(other) => return Err(t.spec(format!("in_channels is {other}, expected an integer"))),
    }
    if let Some(p) = dropout {
        if !(0.0..=1.0).contains(&p) {
            return Err(t.spec(format!("dropout is {p}, expected a probability in [0, 1]")));
        }
    }
    let slope = negative_slope.unwrap_or(0.2);
    if !slope.is_finite() {
        return Err(t.spec("negative_slope must be finite".into()));
    }
    let concat = concat.unwrap_or(true);
    t.context = format!(" (heads = {heads}, out_channels = {out_channels}, concat = {concat})");
    let hc = heads * out_channels;
    Ok(LayerShape {
        heads,
        channels: out_channels,
        slope: slope as f32,
        concat,
        hc,
        ow: if concat { hc } else { out_channels },
    })
}

fn check_in_channels(
    t: &LayerTensors<'_>,
    declared: &Option<Value>,
    found: usize,
    from: &str,
) -> Result<()> {
    if let Some(Value::Number(n)) = declared {
        if n.as_i64() != Some(-1) && n.as_u64() != Some(found as u64) {
            return Err(t.weights(format!(
                "in_channels is {n}, but {}{from} has {found} input columns",
                t.prefix
            )));
        }
    }
    Ok(())
}

fn parse_fill(t: &LayerTensors<'_>, v: &Option<Value>) -> Result<FillValue> {
    Ok(match v {
        None => FillValue::Mean,
        Some(Value::String(s)) => match s.as_str() {
            "mean" => FillValue::Mean,
            "add" | "sum" => FillValue::Add,
            "max" => FillValue::Max,
            "min" => FillValue::Min,
            "mul" => FillValue::Mul,
            other => {
                return Err(t.spec(format!(
                    "fill_value is \"{other}\", expected \"mean\", \"add\", \"max\", \"min\", \
                     \"mul\" or a number"
                )))
            }
        },
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN) as f32;
            if !v.is_finite() {
                return Err(t.spec(format!("fill_value {n} is not a finite float32")));
            }
            FillValue::Constant(v)
        }
        Some(other) => {
            return Err(t.spec(format!(
                "fill_value is {other}, expected a reduction name or a number (a tensor \
                 fill_value is not supported)"
            )))
        }
    })
}

/// A layer's view of its weights file.
struct LayerTensors<'a> {
    /// The model JSON (for errors in its arguments).
    model: &'a Path,
    file: &'a mut WeightsFile,
    prefix: &'a str,
    k: usize,
    v1: bool,
    /// The layer's shape arguments, for shape errors.
    context: String,
}

impl LayerTensors<'_> {
    /// The same layer's tensors under `prefix` (a GPSConv's parts).
    fn nested<'b>(&'b mut self, prefix: &'b str) -> LayerTensors<'b> {
        LayerTensors {
            model: self.model,
            file: &mut *self.file,
            prefix,
            k: self.k,
            v1: false,
            context: String::new(),
        }
    }
    fn spec(&self, detail: String) -> ModelError {
        ModelError::Spec {
            path: self.model.to_path_buf(),
            detail: format!("layers[{}]: {detail}", self.k),
        }
    }
    fn weights(&self, detail: String) -> ModelError {
        self.file.err(format!("layers[{}]: {detail}", self.k))
    }
    fn has(&self, name: &str) -> bool {
        self.file.contains(&format!("{}{name}", self.prefix))
    }

    /// Fetches `name` with a shape matching `want` (`None` = any size); missing -> error.
    fn required(&mut self, name: &str, want: &[Option<usize>]) -> Result<(Vec<usize>, Vec<f32>)> {
        match self.optional(name, want)? {
            Some(t) => Ok(t),
            None => {
                let names = self.file.names_with_prefix(self.prefix);
                Err(self.weights(format!(
                    "tensor '{}{name}' is missing (tensors with prefix '{}': {names:?})",
                    self.prefix, self.prefix
                )))
            }
        }
    }

    fn optional(
        &mut self,
        name: &str,
        want: &[Option<usize>],
    ) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let full = format!("{}{name}", self.prefix);
        let Some(t) = self.file.take(self.k, &full)? else {
            return Ok(None);
        };
        let fits = t.shape.len() == want.len()
            && t.shape
                .iter()
                .zip(want)
                .all(|(&s, w)| w.is_none_or(|w| w == s) && s > 0);
        if !fits {
            let want: Vec<String> = want
                .iter()
                .map(|w| w.map_or("in_channels".to_string(), |w| w.to_string()))
                .collect();
            return Err(self.weights(format!(
                "tensor '{full}' has shape {:?}, expected [{}]{}",
                t.shape,
                want.join(", "),
                self.context
            )));
        }
        Ok(Some((t.shape, t.values)))
    }

    fn linear(
        &mut self,
        name: &str,
        out: usize,
        in_features: Option<usize>,
        bias: bool,
    ) -> Result<Linear> {
        let (shape, w) = self.required(&format!("{name}.weight"), &[Some(out), in_features])?;
        let b = if bias {
            self.required(&format!("{name}.bias"), &[Some(out)])?.1
        } else {
            Vec::new()
        };
        Ok(Linear::from_torch(&w, out, shape[1], b))
    }

    /// Checks a `gat-model-v1` layer's informational `tensors` map against the file.
    fn check_declared(&mut self, declared: &BTreeMap<String, Vec<usize>>) -> Result<()> {
        for (name, shape) in declared {
            let full = format!("{}{name}", self.prefix);
            if !self.file.contains(&full) {
                return Err(self.weights(format!(
                    "\"tensors\" lists '{name}', but the file has no tensor '{full}'"
                )));
            }
            let found = self.file.shape(&full).expect("contains");
            if &found != shape {
                return Err(self.weights(format!(
                    "\"tensors\" gives '{name}' the shape {shape:?}, but '{full}' in the file \
                     has {found:?}"
                )));
            }
        }
        Ok(())
    }
}

fn load_gat(a: &GatArgs, t: &mut LayerTensors<'_>) -> Result<GatConv> {
    let LayerShape {
        heads,
        channels,
        slope,
        concat,
        hc,
        ow,
    } = check_common(
        t,
        &a.in_channels,
        a.heads,
        a.out_channels,
        a.concat,
        a.dropout,
        a.negative_slope,
    )?;
    // The shared linear map: `lin` (PyG >= 2.3), `lin_src`/`lin_dst` (older 2.x), or
    // `lin_l`/`lin_r` (1.x). Two different maps make a bipartite layer.
    let older = !t.has("lin.weight") && (t.has("lin_src.weight") || t.has("lin_l.weight"));
    let (from, lin_w) = if older {
        let (a_name, b_name) = if t.has("lin_src.weight") {
            ("lin_src.weight", "lin_dst.weight")
        } else {
            ("lin_l.weight", "lin_r.weight")
        };
        let src = t.required(a_name, &[Some(hc), None])?;
        if let Some(dst) = t.optional(b_name, &[Some(hc), None])? {
            if dst != src {
                return Err(t.weights(format!(
                    "'{p}{a_name}' and '{p}{b_name}' differ: a bipartite GATConv (separate \
                     source and target maps) is not supported; distgat runs one node set",
                    p = t.prefix
                )));
            }
        }
        (a_name, src)
    } else {
        ("lin.weight", t.required("lin.weight", &[Some(hc), None])?)
    };
    let f = lin_w.0[1];
    check_in_channels(t, &a.in_channels, f, from)?;
    let (src_name, dst_name) = if t.has("att_src") || !t.has("att_l") {
        ("att_src", "att_dst")
    } else {
        ("att_l", "att_r")
    };
    let att_src = t
        .required(src_name, &[Some(1), Some(heads), Some(channels)])?
        .1;
    let att_dst = t
        .required(dst_name, &[Some(1), Some(heads), Some(channels)])?
        .1;
    let mut layer = GatConv::from_pyg(
        f,
        heads,
        channels,
        concat,
        slope,
        a.add_self_loops.unwrap_or(true),
        &lin_w.1,
        att_src,
        att_dst,
        Vec::new(),
    );
    layer.fill_value = parse_fill(t, &a.fill_value)?;
    if let Some(d) = a.edge_dim {
        let w = t.required("lin_edge.weight", &[Some(hc), Some(d)])?.1;
        let att_edge = t
            .required("att_edge", &[Some(1), Some(heads), Some(channels)])?
            .1;
        layer.edge_score = Some((d, GatConv::fold_edge(heads, channels, d, &w, &att_edge)));
    }
    if a.residual.unwrap_or(false) {
        let (_, w) = t.required("res.weight", &[Some(ow), Some(f)])?;
        layer.res = Some(Linear::from_torch(&w, ow, f, Vec::new()));
    }
    layer.bias = bias_vector(t, a.bias, ow)?;
    Ok(layer)
}

/// The output bias: required with `bias=True`; with `gat-model-v1` (which only had an
/// informational `bias` key) used when present unless `bias` is false.
fn bias_vector(t: &mut LayerTensors<'_>, bias: Option<bool>, ow: usize) -> Result<Vec<f32>> {
    if t.v1 {
        return Ok(match bias {
            Some(false) => Vec::new(),
            _ => t.required("bias", &[Some(ow)])?.1,
        });
    }
    Ok(if bias.unwrap_or(true) {
        t.required("bias", &[Some(ow)])?.1
    } else {
        Vec::new()
    })
}

fn load_gatv2(a: &GatV2Args, t: &mut LayerTensors<'_>) -> Result<GatV2Conv> {
    let LayerShape {
        heads,
        channels,
        slope,
        concat,
        hc,
        ow,
    } = check_common(
        t,
        &a.in_channels,
        a.heads,
        a.out_channels,
        a.concat,
        a.dropout,
        a.negative_slope,
    )?;
    let bias = a.bias.unwrap_or(true);
    let lin_l = t.linear("lin_l", hc, None, bias)?;
    let f = lin_l.in_features;
    check_in_channels(t, &a.in_channels, f, "lin_l.weight")?;
    let lin_r = if a.share_weights.unwrap_or(false) {
        // One module under two names: the file holds two identical copies (PyG's
        // state_dict lists both); a copy that differs is not what PyG would run.
        if t.has("lin_r.weight") {
            let r = t.linear("lin_r", hc, Some(f), bias)?;
            if r != lin_l {
                return Err(t.weights(format!(
                    "share_weights is true, but '{p}lin_r' differs from '{p}lin_l' (with shared \
                     weights they are one module)",
                    p = t.prefix
                )));
            }
        }
        lin_l.clone()
    } else {
        t.linear("lin_r", hc, Some(f), bias)?
    };
    let att = t
        .required("att", &[Some(1), Some(heads), Some(channels)])?
        .1;
    let lin_edge = match a.edge_dim {
        Some(d) => Some(t.linear("lin_edge", hc, Some(d), false)?),
        None => None,
    };
    let res = if a.residual.unwrap_or(false) {
        Some(t.linear("res", ow, Some(f), false)?)
    } else {
        None
    };
    let out_bias = if bias {
        t.required("bias", &[Some(ow)])?.1
    } else {
        Vec::new()
    };
    Ok(GatV2Conv {
        heads,
        channels,
        concat,
        negative_slope: slope,
        add_self_loops: a.add_self_loops.unwrap_or(true),
        fill_value: parse_fill(t, &a.fill_value)?,
        lin_l,
        lin_r,
        att,
        lin_edge,
        res,
        bias: out_bias,
    })
}

fn load_transformer(a: &TransformerArgs, t: &mut LayerTensors<'_>) -> Result<TransformerConv> {
    let LayerShape {
        heads,
        channels,
        concat,
        hc,
        ow,
        ..
    } = check_common(
        t,
        &a.in_channels,
        a.heads,
        a.out_channels,
        a.concat,
        a.dropout,
        None,
    )?;
    let bias = a.bias.unwrap_or(true);
    let lin_query = t.linear("lin_query", hc, None, bias)?;
    let f = lin_query.in_features;
    check_in_channels(t, &a.in_channels, f, "lin_query.weight")?;
    let lin_key = t.linear("lin_key", hc, Some(f), bias)?;
    let lin_value = t.linear("lin_value", hc, Some(f), bias)?;
    let lin_edge = match a.edge_dim {
        Some(d) => Some(t.linear("lin_edge", hc, Some(d), false)?),
        None => None,
    };
    let root = a.root_weight.unwrap_or(true);
    // PyG: `self.beta = beta and root_weight`, and `lin_skip` exists either way.
    let beta = a.beta.unwrap_or(false) && root;
    let lin_skip = if root {
        Some(t.linear("lin_skip", ow, Some(f), bias)?)
    } else {
        for name in ["lin_skip.weight", "lin_skip.bias"] {
            let full = format!("{}{name}", t.prefix);
            t.file.mark_unused_by_pyg(t.k, &full);
        }
        if a.beta.unwrap_or(false) {
            tracing::warn!(
                layer = t.k,
                "TransformerConv: beta has no effect without root_weight (as in PyG)"
            );
        }
        None
    };
    let lin_beta = if beta {
        Some(t.required("lin_beta.weight", &[Some(1), Some(3 * ow)])?.1)
    } else {
        None
    };
    Ok(TransformerConv {
        heads,
        channels,
        concat,
        lin_query,
        lin_key,
        lin_value,
        lin_edge,
        lin_skip,
        lin_beta,
    })
}

fn check_dropout(t: &LayerTensors<'_>, dropout: Option<f64>) -> Result<()> {
    match dropout {
        Some(p) if !(0.0..=1.0).contains(&p) => {
            Err(t.spec(format!("dropout is {p}, expected a probability in [0, 1]")))
        }
        _ => Ok(()),
    }
}

/// `torch.nn.MultiheadAttention` (README 8.7), exact or with `approx`.
fn load_mha(a: &MhaArgs, t: &mut LayerTensors<'_>) -> Result<GlobalAttention> {
    let (e, h) = (a.embed_dim, a.num_heads);
    if e == 0 || h == 0 {
        return Err(t.spec(format!(
            "embed_dim ({e}) and num_heads ({h}) must be at least 1"
        )));
    }
    if e > MAX_WIDTH {
        return Err(t.spec(format!(
            "embed_dim = {e} is beyond the supported width of {MAX_WIDTH} columns"
        )));
    }
    if e % h != 0 {
        return Err(t.spec(format!(
            "embed_dim ({e}) is not divisible by num_heads ({h}): each head gets \
             embed_dim / num_heads columns (torch requires the same)"
        )));
    }
    check_dropout(t, a.dropout)?;
    for (name, value) in [
        ("add_bias_kv", a.add_bias_kv),
        ("add_zero_attn", a.add_zero_attn),
    ] {
        if value == Some(true) {
            return Err(t.spec(format!(
                "{name} is true: the extra key/value row it appends is not supported"
            )));
        }
    }
    for (name, value) in [("kdim", a.kdim), ("vdim", a.vdim)] {
        if let Some(v) = value.filter(|&v| v != e) {
            return Err(t.spec(format!(
                "{name} is {v}, not embed_dim ({e}): separate key/value widths \
                 (q_proj_weight, k_proj_weight, v_proj_weight) are not supported; distgat \
                 runs self-attention over one node set"
            )));
        }
    }
    let _ = a.batch_first;
    let method = match &a.approx {
        None => Method::Exact,
        Some(ap) => {
            if ap.method != "nystrom" {
                return Err(t.spec(format!(
                    "approx.method is \"{}\", expected \"nystrom\" (the only approximation)",
                    ap.method
                )));
            }
            if ap.landmarks < 1 {
                return Err(t.spec(format!(
                    "approx.landmarks is {}, expected at least 1",
                    ap.landmarks
                )));
            }
            if ap.landmarks > MAX_LANDMARKS as i64 {
                return Err(t.spec(format!(
                    "approx.landmarks is {}, above the supported {MAX_LANDMARKS} (the m x m \
                     landmark matrices and the O(m³) pinv per head)",
                    ap.landmarks
                )));
            }
            Method::Nystrom {
                landmarks: usize::try_from(ap.landmarks).expect("positive"),
                pinv_iterations: ap.pinv_iterations.unwrap_or(6),
            }
        }
    };
    let bias = a.bias.unwrap_or(true);
    t.context = format!(" (embed_dim = {e}, num_heads = {h}, bias = {bias})");
    let (_, w) = t.required("in_proj_weight", &[Some(3 * e), Some(e)])?;
    let b = if bias {
        t.required("in_proj_bias", &[Some(3 * e)])?.1
    } else {
        Vec::new()
    };
    let qkv = Linear::from_torch(&w, 3 * e, e, b);
    let out = t.linear("out_proj", e, Some(e), bias)?;
    Ok(GlobalAttention {
        kind: "MultiheadAttention",
        dim: e,
        heads: h,
        head_dim: e / h,
        qkv,
        out,
        method,
        blocks: Blocks::default(),
        model: t.model.to_path_buf(),
        layer: t.k,
    })
}

/// `nystrom_attention.NystromAttention` 0.0.14 (README 8.8), `residual=False` only.
fn load_nystrom(a: &NystromArgs, t: &mut LayerTensors<'_>) -> Result<GlobalAttention> {
    if a.residual.unwrap_or(true) {
        return Err(t.spec(format!(
            "residual is {} (the package's default is true): its depthwise convolution \
             'res_conv.weight' is not implemented, so the output would differ; export the \
             layer with residual=False",
            if a.residual.is_some() {
                "true"
            } else {
                "not given"
            }
        )));
    }
    let dim = a.dim;
    let heads = a.heads.unwrap_or(8);
    let d = a.dim_head.unwrap_or(64);
    let m = a.num_landmarks.unwrap_or(256);
    if dim == 0 || heads == 0 || d == 0 {
        return Err(t.spec(format!(
            "dim ({dim}), heads ({heads}) and dim_head ({d}) must be at least 1"
        )));
    }
    if m == 0 || m > MAX_LANDMARKS {
        return Err(t.spec(format!(
            "num_landmarks is {m}, expected 1 to {MAX_LANDMARKS} (the m x m landmark \
             matrices and the O(m³) pinv per head bound it)"
        )));
    }
    if heads.checked_mul(d).is_none_or(|w| w > MAX_WIDTH) || dim > MAX_WIDTH {
        return Err(t.spec(format!(
            "dim = {dim} or heads x dim_head = {heads} x {d} is beyond the supported width of \
             {MAX_WIDTH} columns"
        )));
    }
    check_dropout(t, a.dropout)?;
    let _ = (a.eps, a.residual_conv_kernel);
    let inner = heads * d;
    t.context = format!(" (dim = {dim}, heads = {heads}, dim_head = {d})");
    let (_, w) = t.required("to_qkv.weight", &[Some(3 * inner), Some(dim)])?;
    let qkv = Linear::from_torch(&w, 3 * inner, dim, Vec::new());
    let out = t.linear("to_out.0", dim, Some(inner), true)?;
    Ok(GlobalAttention {
        kind: "NystromAttention",
        dim,
        heads,
        head_dim: d,
        qkv,
        out,
        method: Method::Nystrom {
            landmarks: m,
            pinv_iterations: a.pinv_iterations.unwrap_or(6),
        },
        blocks: Blocks::default(),
        model: t.model.to_path_buf(),
        layer: t.k,
    })
}

/// PyG's `GPSConv` (2.8.1) in eval mode: `conv` under `conv.`, `MultiheadAttention` under
/// `attn.`, the MLP's linears `mlp.0` and `mlp.3`, and `norm1..3` (see [`crate::gps`]).
fn load_gps(a: &GpsArgs, t: &mut LayerTensors<'_>) -> Result<GpsConv> {
    let c = a.channels;
    let heads = a.heads.unwrap_or(1);
    if c == 0 || heads == 0 {
        return Err(t.spec(format!(
            "channels ({c}) and heads ({heads}) must be at least 1"
        )));
    }
    if c > MAX_WIDTH / 2 {
        return Err(t.spec(format!(
            "channels = {c} is beyond the supported width of {} columns (the MLP is 2 x channels wide)",
            MAX_WIDTH / 2
        )));
    }
    if !c.is_multiple_of(heads) {
        return Err(t.spec(format!(
            "channels ({c}) is not divisible by heads ({heads}): each attention head gets \
             channels / heads columns (torch's MultiheadAttention requires the same)"
        )));
    }
    check_dropout(t, a.dropout)?;
    match a.attn_type.as_deref().unwrap_or("multihead") {
        "multihead" => {}
        "performer" => {
            return Err(t.spec(
                "attn_type is \"performer\": PyG's PerformerAttention (random feature \
                 attention) is not supported; distgat runs attn_type \"multihead\" (exact, or \
                 Nyström with \"approx\")"
                    .into(),
            ))
        }
        other => {
            return Err(t.spec(format!(
                "attn_type is \"{other}\", expected \"multihead\" (\"performer\" is not \
                 supported)"
            )))
        }
    }
    let act_name = a.act.as_deref().unwrap_or("relu");
    let act = match act_name.to_lowercase().replace('_', "").as_str() {
        "relu" => GpsActivation::Relu,
        "gelu" => GpsActivation::Gelu,
        _ => {
            return Err(t.spec(format!(
                "act is \"{act_name}\", expected \"relu\" or \"gelu\" (the activations distgat \
                 implements for GPSConv's MLP)"
            )))
        }
    };
    if let Some(kw) = a.act_kwargs.as_ref().filter(|kw| !kw.is_empty()) {
        return Err(t.spec(format!(
            "act_kwargs {:?} are not supported (GELU's \"approximate\" and other activation \
             options change the output); pass act_kwargs null",
            kw.keys().collect::<Vec<_>>()
        )));
    }
    let parent = t.prefix.to_string();

    let conv: Option<Box<dyn AttentionKind>> = match &a.conv {
        None => None,
        Some(spec) => {
            let args = parse_args(&spec.kind, spec.args.get())
                .map_err(|e| t.spec(format!("args.conv ({}): {e}", spec.kind)))?;
            // The declared output width, checked before the tensors (whose shapes follow it).
            let (heads_c, out_c, concat_c) = match &args {
                Args::Gat(a) => (a.heads, a.out_channels, a.concat),
                Args::GatV2(a) => (a.heads, a.out_channels, a.concat),
                Args::Transformer(a) => (a.heads, a.out_channels, a.concat),
                _ => (None, c, None),
            };
            let declared = if concat_c.unwrap_or(true) {
                heads_c.unwrap_or(1).saturating_mul(out_c)
            } else {
                out_c
            };
            if declared != c {
                return Err(t.spec(format!(
                    "args.conv ({}) outputs {declared} columns (heads x out_channels with \
                     concat, out_channels without), but channels is {c}: GPSConv adds conv(x) \
                     to x, so they must be equal",
                    spec.kind
                )));
            }
            let prefix = format!("{parent}conv.");
            let mut sub = t.nested(&prefix);
            let conv: Box<dyn AttentionKind> = match args {
                Args::Gat(a) => Box::new(load_gat(&a, &mut sub)?),
                Args::GatV2(a) => Box::new(load_gatv2(&a, &mut sub)?),
                Args::Transformer(a) => Box::new(load_transformer(&a, &mut sub)?),
                Args::Mha(_) | Args::Nystrom(_) | Args::Gps(_) => {
                    return Err(t.spec(format!(
                        "args.conv.kind is \"{}\": GPSConv's conv must be a local message \
                         passing kind (GATConv, GATv2Conv or TransformerConv)",
                        spec.kind
                    )))
                }
            };
            if conv.in_features() != c {
                return Err(t.weights(format!(
                    "args.conv ({}) takes {} input columns ('{prefix}' tensors), but \
                     channels is {c}: GPSConv runs conv on its own input",
                    spec.kind,
                    conv.in_features()
                )));
            }
            if conv.out_width() != c {
                return Err(t.spec(format!(
                    "args.conv ({}) outputs {} columns (heads x out_channels with concat, \
                     out_channels without), but channels is {c}: GPSConv adds conv(x) to x, \
                     so they must be equal",
                    spec.kind,
                    conv.out_width()
                )));
            }
            Some(conv)
        }
    };

    let kw = a.attn_kwargs.as_ref();
    let mha = MhaArgs {
        embed_dim: c,
        num_heads: heads,
        dropout: kw.and_then(|k| k.dropout),
        bias: kw.and_then(|k| k.bias),
        add_bias_kv: kw.and_then(|k| k.add_bias_kv),
        add_zero_attn: kw.and_then(|k| k.add_zero_attn),
        kdim: kw.and_then(|k| k.kdim),
        vdim: kw.and_then(|k| k.vdim),
        batch_first: Some(true),
        approx: a.approx.clone(),
    };
    let attn = {
        let prefix = format!("{parent}attn.");
        load_mha(&mha, &mut t.nested(&prefix))?
    };

    let (mlp_in, mlp_out) = {
        let prefix = format!("{parent}mlp.");
        let mut sub = t.nested(&prefix);
        sub.context =
            format!(" (channels = {c}: mlp = Linear(C, 2C), act, Dropout, Linear(2C, C), Dropout)");
        (
            sub.linear("0", 2 * c, Some(c), true)?,
            sub.linear("3", c, Some(2 * c), true)?,
        )
    };

    let norm_name = match &a.norm {
        Value::Null => None,
        Value::String(s) => Some(s.as_str()),
        other => {
            return Err(t.spec(format!(
                "norm is {other}, expected \"batch_norm\", \"layer_norm\" or null"
            )))
        }
    };
    let nk = a.norm_kwargs.as_ref();
    let norms = match norm_name.map(|n| (n, n.to_lowercase().replace('_', ""))) {
        None => {
            if nk.is_some() {
                return Err(t.spec("norm_kwargs is given but norm is null".into()));
            }
            [None, None, None]
        }
        Some((_, kind)) if kind == "batchnorm" => {
            if let Some(k) = nk {
                if k.mode.is_some() {
                    return Err(t.spec(
                        "norm_kwargs.mode is a LayerNorm argument; norm is batch_norm".into(),
                    ));
                }
                if k.track_running_stats == Some(false) {
                    return Err(t.spec(
                        "norm_kwargs.track_running_stats is false: BatchNorm then normalises \
                         with the statistics of the batch even in eval mode, which distgat \
                         does not implement"
                            .into(),
                    ));
                }
                let _ = (&k.momentum, k.allow_single_element);
            }
            let eps = nk.and_then(|k| k.eps).unwrap_or(1e-5);
            let affine = nk.and_then(|k| k.affine).unwrap_or(true);
            let mut norms = [None, None, None];
            for (i, slot) in norms.iter_mut().enumerate() {
                let prefix = format!("{parent}norm{}.module.", i + 1);
                let mut sub = t.nested(&prefix);
                sub.context = format!(" (BatchNorm1d({c}))");
                let mean = sub.required("running_mean", &[Some(c)])?.1;
                let var = sub.required("running_var", &[Some(c)])?.1;
                if let Some(j) = var.iter().position(|&v| f64::from(v) + eps <= 0.0) {
                    return Err(sub.weights(format!(
                        "tensor '{prefix}running_var' has {} at index {j}: a variance must \
                         be non-negative",
                        var[j]
                    )));
                }
                let wb = if affine {
                    Some((
                        sub.required("weight", &[Some(c)])?.1,
                        sub.required("bias", &[Some(c)])?.1,
                    ))
                } else {
                    None
                };
                // Read by BatchNorm only in training (momentum=None); an integer tensor.
                let nbt = format!("{prefix}num_batches_tracked");
                sub.file.mark_unused_by_pyg(sub.k, &nbt);
                *slot = Some(GpsNorm::batch(
                    &mean,
                    &var,
                    eps,
                    wb.as_ref().map(|(w, b)| (w.as_slice(), b.as_slice())),
                ));
            }
            norms
        }
        Some((_, kind)) if kind == "layernorm" => {
            if let Some(k) = nk {
                if k.momentum.is_some()
                    || k.track_running_stats.is_some()
                    || k.allow_single_element.is_some()
                {
                    return Err(t.spec(
                        "norm_kwargs: momentum, track_running_stats and allow_single_element \
                         are BatchNorm arguments; norm is layer_norm"
                            .into(),
                    ));
                }
            }
            let eps = nk.and_then(|k| k.eps).unwrap_or(1e-5);
            let affine = nk.and_then(|k| k.affine).unwrap_or(true);
            let graph = match nk.and_then(|k| k.mode.as_deref()).unwrap_or("graph") {
                "graph" => true,
                "node" => false,
                other => {
                    return Err(t.spec(format!(
                        "norm_kwargs.mode is \"{other}\", expected \"graph\" (PyG's default) \
                         or \"node\""
                    )))
                }
            };
            let mut norms = [None, None, None];
            for (i, slot) in norms.iter_mut().enumerate() {
                let prefix = format!("{parent}norm{}.", i + 1);
                let mut sub = t.nested(&prefix);
                sub.context = format!(" (LayerNorm({c}))");
                let affine = if affine {
                    Some((
                        sub.required("weight", &[Some(c)])?.1,
                        sub.required("bias", &[Some(c)])?.1,
                    ))
                } else {
                    None
                };
                *slot = Some(if graph {
                    GpsNorm::Graph { eps, affine }
                } else {
                    GpsNorm::Node { eps, affine }
                });
            }
            norms
        }
        Some((name, _)) => {
            return Err(t.spec(format!(
                "norm is \"{name}\", expected \"batch_norm\", \"layer_norm\" or null (the \
                 normalisations distgat implements for GPSConv)"
            )))
        }
    };
    Ok(GpsConv {
        channels: c,
        conv,
        attn,
        mlp_in,
        act,
        mlp_out,
        norms,
    })
}

#[cfg(test)]
mod tests {
    use super::elu;

    /// Every 613th f32 in [-20, 0] (1.8 million values, all binades): the f64 `expm1`
    /// rounded to f32.
    #[test]
    fn elu_is_the_correctly_rounded_expm1_below_zero() {
        let mut bits = (-0.0f32).to_bits();
        let mut checked = 0;
        while f32::from_bits(bits) >= -20.0 {
            let x = f32::from_bits(bits);
            let want = (x as f64).exp_m1() as f32;
            assert_eq!(elu(x).to_bits(), want.to_bits(), "elu({x:e})");
            bits += 613;
            checked += 1;
        }
        assert!(checked > 1_000_000);
    }

    /// `Activation::apply` runs ELU compiled for the widest vectors the CPU has; the
    /// portable build of the same function (this loop) must give the same bits.
    #[test]
    fn elu_in_wide_vectors_has_the_portable_bits() {
        let mut bits = 0x2545_f491u32;
        let values: Vec<f32> = (0..1 << 20)
            .map(|_| {
                bits ^= bits << 13;
                bits ^= bits >> 17;
                bits ^= bits << 5;
                f32::from_bits(bits)
            })
            .chain([0.0, -0.0, -1e-45, -20.0, -18.5, f32::NEG_INFINITY, f32::NAN])
            .collect();
        let mut wide = values.clone();
        super::Activation::Elu.apply(&mut wide);
        let mut avx2 = values.clone();
        crate::kind::with_widest(crate::kind::Vectors::Avx2, || {
            super::Activation::Elu.apply(&mut avx2)
        });
        for ((x, w), a) in values.iter().zip(&wide).zip(&avx2) {
            assert_eq!(elu(*x).to_bits(), w.to_bits(), "elu({x:e})");
            assert_eq!(elu(*x).to_bits(), a.to_bits(), "elu({x:e}) in AVX2");
        }
    }

    #[test]
    fn elu_keeps_positives_signed_zeros_and_nan_and_saturates() {
        for x in [0.0f32, -0.0, 1e-30, 0.5, 3.0, f32::MAX, f32::INFINITY] {
            assert_eq!(elu(x).to_bits(), x.to_bits(), "elu({x})");
        }
        assert!(elu(f32::NAN).is_nan());
        for x in [-18.0f32, -25.0, -1e30, f32::MIN, f32::NEG_INFINITY] {
            assert_eq!(elu(x), -1.0, "elu({x})");
        }
        let tiny = -f32::from_bits(1); // the smallest negative subnormal
        assert_eq!(elu(tiny).to_bits(), tiny.to_bits());
        assert_eq!(elu(-1.0), (-1.0f64).exp_m1() as f32);
    }
}
