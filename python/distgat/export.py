"""Write a trained PyTorch Geometric attention model and its graph as distgat input files.

``export_model`` writes ``model.json`` (format ``pyg-attention-model-v1``) and a
safetensors file with the weights of every ``GATConv``, ``GATv2Conv`` and
``TransformerConv`` in the module. ``save_graph`` writes ``edges.npy``,
``features.npy`` and ``edge_attr.npy``. Then::

    distgat infer --graph edges.npy --features features.npy \\
        [--edge-features edge_attr.npy] --model model.json --out out.npy

torch and torch_geometric are imported only when a model is exported; numpy
and safetensors are the only install-time dependencies.
"""

from __future__ import annotations

import json
import numbers
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

__all__ = ["export_model", "save_graph", "NotExportedWarning", "MODEL_FORMAT",
           "ACTIVATIONS", "ATTENTION_KINDS", "GLOBAL_KINDS"]

MODEL_FORMAT = "pyg-attention-model-v1"
ACTIVATIONS = ("elu", "relu", "none")
ATTENTION_KINDS = ("GATConv", "GATv2Conv", "TransformerConv")
# Layers over all nodes (no graph needed unless they hold a conv): torch's
# MultiheadAttention, nystrom_attention's NystromAttention (when installed), PyG's GPSConv.
GLOBAL_KINDS = ("MultiheadAttention", "NystromAttention", "GPSConv")

# Constructor keyword arguments of each layer, in PyG 2.8's signature order.
ARG_ORDER: Dict[str, Tuple[str, ...]] = {
    "GATConv": ("in_channels", "out_channels", "heads", "concat", "negative_slope",
                "dropout", "add_self_loops", "edge_dim", "fill_value", "bias", "residual"),
    "GATv2Conv": ("in_channels", "out_channels", "heads", "concat", "negative_slope",
                  "dropout", "add_self_loops", "edge_dim", "fill_value", "bias",
                  "share_weights", "residual"),
    "TransformerConv": ("in_channels", "out_channels", "heads", "concat", "beta", "dropout",
                        "edge_dim", "bias", "root_weight"),
}

# The linear map whose weight's second dimension is the layer's input width.
_INPUT_LINEAR = {"GATConv": "lin", "GATv2Conv": "lin_l", "TransformerConv": "lin_key"}

ArrayLike = Any  # a numpy array or a torch.Tensor


class NotExportedWarning(UserWarning):
    """Some parameters or buffers of the module are not attention-layer tensors.

    distgat runs only the exported attention layers, so those tensors (a final
    ``Linear``, a norm, ...) take no part in its output.
    """


def _attention_classes() -> Dict[type, str]:
    try:
        from torch_geometric.nn import GATConv, GATv2Conv, TransformerConv
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "export_model needs torch and torch_geometric installed "
            "(pip install torch torch_geometric)") from e
    import torch
    from torch_geometric.nn import GPSConv
    classes = {GPSConv: "GPSConv", GATConv: "GATConv", GATv2Conv: "GATv2Conv",
               TransformerConv: "TransformerConv",
               torch.nn.MultiheadAttention: "MultiheadAttention"}
    try:
        from nystrom_attention import NystromAttention
        classes[NystromAttention] = "NystromAttention"
    except ImportError:  # optional package: its layers are then simply not found
        pass
    return classes


def _mha_args(m: Any, path: str) -> Dict[str, Any]:
    """torch.nn.MultiheadAttention's constructor arguments (self-attention only)."""
    where = f"MultiheadAttention at {_path_name(path)}"
    if m.bias_k is not None:
        raise ValueError(f"{where}: add_bias_kv=True is not supported by distgat")
    if not m._qkv_same_embed_dim:
        raise ValueError(f"{where}: kdim/vdim differ from embed_dim; distgat runs "
                         f"self-attention over one node set")
    return {"embed_dim": int(m.embed_dim), "num_heads": int(m.num_heads),
            "dropout": float(m.dropout), "bias": m.in_proj_bias is not None,
            "add_bias_kv": False, "add_zero_attn": bool(m.add_zero_attn),
            "kdim": int(m.kdim), "vdim": int(m.vdim), "batch_first": bool(m.batch_first)}


def _nystrom_args(m: Any, path: str) -> Dict[str, Any]:
    """nystrom_attention.NystromAttention's (0.0.14) constructor arguments."""
    if m.residual:
        raise ValueError(f"NystromAttention at {_path_name(path)}: residual=True (its depthwise "
                         f"convolution) is not supported by distgat; use residual=False")
    inner = int(m.to_qkv.out_features) // 3
    return {"dim": int(m.to_qkv.in_features), "dim_head": inner // int(m.heads),
            "heads": int(m.heads), "num_landmarks": int(m.num_landmarks),
            "pinv_iterations": int(m.pinv_iterations), "residual": False,
            "eps": float(m.eps), "dropout": float(m.to_out[1].p)}


def _gps_args(m: Any, path: str, classes: Dict[type, str]) -> Dict[str, Any]:
    """PyG GPSConv's constructor arguments, its conv as a nested {"kind", "args"}."""
    import torch
    from torch_geometric.nn.norm import BatchNorm, LayerNorm
    where = f"GPSConv at {_path_name(path)}"
    if m.attn_type != "multihead":
        raise ValueError(f"{where}: attn_type={m.attn_type!r}; distgat supports 'multihead'")
    conv = None
    if m.conv is not None:
        kind = _kind_of(m.conv, classes)
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"{where}: conv is a {type(m.conv).__name__}; distgat runs "
                             f"GATConv, GATv2Conv or TransformerConv there")
        conv = {"kind": kind, "args": _layer_args(m.conv, kind, f"{path}.conv")}
    act = m.mlp[1]
    if type(act) is torch.nn.ReLU:
        act_name = "relu"
    elif type(act) is torch.nn.GELU and act.approximate == "none":
        act_name = "gelu"
    else:
        raise ValueError(f"{where}: act {act!r} is not supported (relu or gelu)")
    norm, norm_kwargs = None, None
    if isinstance(m.norm1, BatchNorm):
        bn = m.norm1.module
        if not bn.track_running_stats:
            raise ValueError(f"{where}: BatchNorm without running statistics is not supported")
        norm, norm_kwargs = "batch_norm", {"eps": float(bn.eps), "affine": bool(bn.affine)}
    elif isinstance(m.norm1, LayerNorm):
        norm = "layer_norm"
        norm_kwargs = {"eps": float(m.norm1.eps), "affine": bool(m.norm1.affine),
                       "mode": m.norm1.mode}
    elif m.norm1 is not None:
        raise ValueError(f"{where}: norm {type(m.norm1).__name__} is not supported "
                         f"(batch_norm, layer_norm or None)")
    attn = _mha_args(m.attn, f"{path}.attn")
    return {"channels": int(m.channels), "conv": conv, "heads": int(m.heads),
            "dropout": float(m.dropout), "act": act_name, "act_kwargs": None,
            "norm": norm, "norm_kwargs": norm_kwargs, "attn_type": "multihead",
            "attn_kwargs": {"dropout": attn["dropout"], "bias": attn["bias"],
                            "add_zero_attn": attn["add_zero_attn"]}}


def _any_args(m: Any, kind: str, path: str, classes: Dict[type, str]) -> Tuple[Dict[str, Any], int, int]:
    """(args, input width, output width) of any exportable layer."""
    if kind == "MultiheadAttention":
        a = _mha_args(m, path)
        return a, a["embed_dim"], a["embed_dim"]
    if kind == "NystromAttention":
        a = _nystrom_args(m, path)
        return a, a["dim"], a["dim"]
    if kind == "GPSConv":
        a = _gps_args(m, path, classes)
        return a, a["channels"], a["channels"]
    a = _layer_args(m, kind, path)
    return a, a["in_channels"], _out_width(a)


def _kind_of(m: Any, classes: Dict[type, str]) -> Optional[str]:
    for cls, kind in classes.items():
        if isinstance(m, cls):
            return kind
    return None


def _path_name(path: str) -> str:
    return repr(path) if path else "the module itself"


def _is_uninitialized(t: Any) -> bool:
    import torch
    uninit = getattr(torch.nn.parameter, "UninitializedParameter", None)
    return uninit is not None and isinstance(t, uninit)


def _width_from_linear(m: Any, lin_name: str, path: str, what: str) -> int:
    lin = getattr(m, lin_name, None)
    weight = getattr(lin, "weight", None)
    if weight is None or _is_uninitialized(weight):
        raise ValueError(
            f"{type(m).__name__} at {_path_name(path)}: {what} is lazy (-1) and "
            f"{lin_name}.weight is not initialised yet; run one forward pass before exporting")
    return int(weight.shape[1])


def _fill_value(m: Any, path: str) -> Union[str, float]:
    fv = m.fill_value
    if isinstance(fv, str):
        return fv
    if isinstance(fv, bool):
        raise ValueError(f"{type(m).__name__} at {_path_name(path)}: "
                         f"fill_value={fv!r} is not a string or a number")
    if isinstance(fv, numbers.Real):
        return float(fv)
    numel = getattr(fv, "numel", None)
    if numel is not None and numel() == 1:
        return float(fv.reshape(-1)[0].item())
    raise ValueError(
        f"{type(m).__name__} at {_path_name(path)}: fill_value must be 'mean', 'add', 'max', 'min', 'mul' or a "
        f"single number for distgat, got {type(fv).__name__}"
        + (f" with {numel()} elements" if numel is not None else ""))


def _check_message_passing(m: Any, kind: str, path: str) -> None:
    where = f"{kind} at {_path_name(path)}"
    if isinstance(m.in_channels, (tuple, list)):
        raise ValueError(
            f"{where}: bipartite in_channels={tuple(m.in_channels)!r}; distgat runs only "
            f"layers with one node set (an int in_channels)")
    aggr = getattr(m, "aggr", "add")
    aggr_ok = aggr in ("add", "sum")
    if not aggr_ok:
        try:
            from torch_geometric.nn.aggr import SumAggregation
            aggr_ok = isinstance(getattr(m, "aggr_module", None), SumAggregation) and \
                not isinstance(aggr, (list, tuple))
        except ImportError:  # pragma: no cover
            pass
    if not aggr_ok:
        raise ValueError(f"{where}: aggr={aggr!r}; distgat supports only aggr='add'")
    flow = getattr(m, "flow", "source_to_target")
    if flow != "source_to_target":
        raise ValueError(f"{where}: flow={flow!r}; distgat supports only "
                         f"flow='source_to_target' (row 0 of edge_index = source)")


def _layer_args(m: Any, kind: str, path: str) -> Dict[str, Any]:
    """The constructor kwargs of layer ``m``, every one listed, under PyG's names."""
    _check_message_passing(m, kind, path)
    in_channels = int(m.in_channels)
    if in_channels <= 0:
        in_channels = _width_from_linear(m, _INPUT_LINEAR[kind], path, "in_channels")
    edge_dim = m.edge_dim
    if edge_dim is not None:
        edge_dim = int(edge_dim)
        if edge_dim <= 0:
            edge_dim = _width_from_linear(m, "lin_edge", path, "edge_dim")
    args: Dict[str, Any] = {
        "in_channels": in_channels,
        "out_channels": int(m.out_channels),
        "heads": int(m.heads),
        "concat": bool(m.concat),
        "dropout": float(m.dropout),
        "edge_dim": edge_dim,
    }
    if kind in ("GATConv", "GATv2Conv"):
        args["negative_slope"] = float(m.negative_slope)
        args["add_self_loops"] = bool(m.add_self_loops)
        args["fill_value"] = _fill_value(m, path)
        args["bias"] = m.bias is not None
        args["residual"] = getattr(m, "res", None) is not None
    if kind == "GATv2Conv":
        shared = m.lin_r is m.lin_l
        if bool(getattr(m, "share_weights", shared)) != shared:
            raise ValueError(f"{kind} at {_path_name(path)}: share_weights="
                             f"{m.share_weights} but lin_r {'is' if shared else 'is not'} lin_l")
        args["share_weights"] = shared
        if args["bias"] != (m.lin_l.bias is not None):
            raise ValueError(f"{kind} at {_path_name(path)}: bias and lin_l.bias disagree "
                             f"(PyG creates both or neither)")
    if kind == "TransformerConv":
        args["bias"] = m.lin_key.bias is not None
        # PyG stores beta = beta and root_weight, and lin_beta only when both hold.
        args["beta"] = bool(m.beta) and getattr(m, "lin_beta", None) is not None
        args["root_weight"] = bool(m.root_weight)
    return {k: args[k] for k in ARG_ORDER[kind]}


def _out_width(args: Dict[str, Any]) -> int:
    return args["out_channels"] * (args["heads"] if args["concat"] else 1)


def _to_f32(t: Any) -> np.ndarray:
    """A contiguous float32 numpy copy of a tensor (its own storage, never shared)."""
    import torch
    a = t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    return np.array(a, dtype=np.float32, order="C", copy=True)


def export_model(module: Any, out_dir: Union[str, Path], activation: str = "elu",
                 weights: str = "model.safetensors") -> Path:
    """Write ``module``'s attention layers as a distgat ``pyg-attention-model-v1`` model.

    Args:
        module: a ``torch.nn.Module`` that is, or contains, PyG ``GATConv``,
            ``GATv2Conv``, ``TransformerConv`` or ``GPSConv`` layers, torch
            ``MultiheadAttention`` (self-attention over all nodes as one sequence) or
            ``nystrom_attention.NystromAttention`` (residual=False; found only when
            that package is installed). A GPSConv's conv and attention are exported
            inside it (``args.conv`` is ``{"kind", "args"}``). They are taken in
            ``module.named_modules()`` order (registration order), which must
            be the order the model applies them in: distgat feeds layer k's
            output, through ``activation``, to layer k+1. Every layer gets the
            same ``edge_index`` and, if it has ``edge_dim``, the same edge features.
        out_dir: folder to write to; created if missing.
        activation: ``"elu"`` (alpha 1), ``"relu"`` or ``"none"``, applied between
            layers only (never after the last one). It cannot be read from a
            module, so say what your ``forward`` does.
        weights: file name, relative to ``out_dir``, of the safetensors file.

    Writes:
        ``out_dir/model.json``: ``{"format": "pyg-attention-model-v1", "activation": ...,
        "layers": [{"kind", "args", "weights", "prefix"}, ...]}``. ``kind`` is the PyG
        class name; ``args`` lists every constructor keyword argument under PyG's
        name, defaults included (``null`` = None). ``prefix`` is the layer's dotted
        path in ``module`` plus ``"."`` (``""`` when ``module`` is the layer).

        ``out_dir/<weights>``: the layers' ``state_dict`` tensors, F32, named
        ``<prefix><PyG name>`` (e.g. ``conv1.lin.weight`` ``[H*C, F_in]``,
        ``conv1.att_src`` ``[1, H, C]``). With ``share_weights`` both ``lin_l.*``
        and ``lin_r.*`` are stored, as separate identical copies.
        Tensors of other modules are not written; a :class:`NotExportedWarning`
        (on stderr by default) lists them.

    Returns:
        The path of ``model.json``.

    Raises:
        ValueError: ``module`` holds no attention layer; a layer has bipartite
            (tuple) ``in_channels``, an ``aggr`` other than ``'add'``, a ``flow``
            other than ``'source_to_target'``, a non-scalar tensor ``fill_value``
            or lazy weights not yet initialised; consecutive layers' widths do not
            chain; two layers want different ``edge_dim``; ``activation`` is not
            one of ``ACTIVATIONS``; ``weights`` is not a plain file name.
            Each message names the offending module path.
        ImportError: torch or torch_geometric is not installed.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    wpath = Path(weights)
    if wpath.is_absolute() or len(wpath.parts) != 1 or weights in (".", "..", "model.json"):
        raise ValueError(f"weights must be a plain file name inside out_dir, got {weights!r}")
    classes = _attention_classes()

    found: List[Tuple[str, Any, str]] = []
    for path, m in module.named_modules():
        kind = _kind_of(m, classes)
        if kind is None:
            continue
        if any(not p or path.startswith(p + ".") for p, _, _ in found):
            continue  # inside an attention layer already taken
        if type(m).__name__ != kind:
            warnings.warn(f"{_path_name(path)} is a {type(m).__name__}, exported as its PyG base "
                          f"class {kind}: distgat runs {kind}'s computation, not any override",
                          NotExportedWarning, stacklevel=2)
        found.append((path, m, kind))
    if not found:
        raise ValueError(f"{type(module).__name__} holds no GATConv, GATv2Conv, TransformerConv, "
                         f"MultiheadAttention, NystromAttention or GPSConv layer: nothing distgat "
                         f"can run")

    layers: List[Dict[str, Any]] = []
    tensors: Dict[str, np.ndarray] = {}
    prev: Optional[Tuple[str, int]] = None
    edge_dim: Optional[Tuple[str, int]] = None
    for path, m, kind in found:
        args, in_width, out_width = _any_args(m, kind, path, classes)
        prefix = f"{path}." if path else ""
        if prev is not None and in_width != prev[1]:
            raise ValueError(
                f"{kind} at {_path_name(path)} takes {in_width} input columns (in_channels) but the layer "
                f"before it ({_path_name(prev[0])}) outputs {prev[1]} columns: distgat chains the "
                f"attention layers directly (only the activation between them)")
        layer_edge_dim = args.get("edge_dim")
        if kind == "GPSConv" and args["conv"] is not None:
            layer_edge_dim = args["conv"]["args"].get("edge_dim")
        if layer_edge_dim is not None:
            if edge_dim is not None and edge_dim[1] != layer_edge_dim:
                raise ValueError(
                    f"{kind} at {_path_name(path)} has edge_dim={layer_edge_dim} but "
                    f"{_path_name(edge_dim[0])} has edge_dim={edge_dim[1]}: distgat gives every "
                    f"layer the same edge features")
            edge_dim = (path, layer_edge_dim)
        for name, t in m.state_dict().items():
            if t is None:
                continue
            if _is_uninitialized(t):
                raise ValueError(f"{kind} at {_path_name(path)}: {name} is not initialised yet; "
                                 f"run one forward pass before exporting")
            tensors[prefix + name] = _to_f32(t)
        layers.append({"kind": kind, "args": args, "weights": weights, "prefix": prefix})
        prev = (path, out_width)

    left_out = [k for k in module.state_dict().keys() if k not in tensors]
    if left_out:
        warnings.warn(
            f"distgat export: {len(left_out)} tensor(s) of the module are not in an attention "
            f"layer and were not exported; distgat will not run them: " + ", ".join(left_out),
            NotExportedWarning, stacklevel=2)

    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / weights))
    model_json = out / "model.json"
    doc = {"format": MODEL_FORMAT, "activation": activation, "layers": layers}
    model_json.write_text(json.dumps(doc, indent=2) + "\n")
    return model_json


def _as_numpy(a: ArrayLike, what: str) -> np.ndarray:
    if hasattr(a, "detach"):  # torch.Tensor, without importing torch
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype == object:
        raise ValueError(f"{what}: not a numeric array (dtype object)")
    return arr


def _float32_matrix(a: ArrayLike, what: str) -> np.ndarray:
    arr = _as_numpy(a, what)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{what}: dtype {arr.dtype} is not a real number type")
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array, got shape {tuple(arr.shape)}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{what}: contains NaN or Inf (after conversion to float32)")
    return out


def save_graph(out_dir: Union[str, Path], edge_index: ArrayLike, x: Optional[ArrayLike] = None,
               edge_attr: Optional[ArrayLike] = None) -> Dict[str, Path]:
    """Write a graph as the ``.npy`` files ``distgat infer`` reads.

    Args:
        out_dir: folder to write to; created if missing.
        edge_index: integer ``[2, E]`` (torch.Tensor or numpy array), PyG's
            convention: row 0 = source j, row 1 = target i (a message flows j -> i).
            Written as ``edges.npy``, int64 ``[2, E]``.
        x: node features ``[N, F]``, any real dtype; written as ``features.npy``,
            float32 ``[N, F]``. Node IDs in ``edge_index`` must be < N.
        edge_attr: edge features ``[E, D]`` (a 1-D ``[E]`` is taken as ``[E, 1]``,
            as PyG does); row e belongs to column e of ``edge_index``. Written as
            ``edge_attr.npy``, float32 ``[E, D]``.

    Returns:
        ``{"edges": path, "features": path, "edge_attr": path}`` with the files
        written (``features`` / ``edge_attr`` only when given).

    Raises:
        ValueError: ``edge_index`` is not an integer ``[2, E]`` array or has
            negative IDs, or IDs >= N when ``x`` is given; ``x`` is not 2-D;
            ``edge_attr`` does not have E rows; a float array holds NaN or Inf;
            a dtype is not numeric.
    """
    ei = _as_numpy(edge_index, "edge_index")
    if ei.dtype.kind not in "iu":
        raise ValueError(f"edge_index: dtype {ei.dtype} is not an integer type")
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape [2, E], got {tuple(ei.shape)}"
                         + (" (transpose it: edge_index.T)" if ei.ndim == 2 and ei.shape[1] == 2
                            else ""))
    if ei.dtype.kind == "u" and ei.size and ei.max() > np.iinfo(np.int64).max:
        raise ValueError("edge_index: node ID does not fit in int64")
    ei = np.ascontiguousarray(ei, dtype=np.int64)
    n_edges = ei.shape[1]
    if ei.size and ei.min() < 0:
        raise ValueError(f"edge_index: negative node ID {int(ei.min())}")

    feats = None
    if x is not None:
        feats = _float32_matrix(x, "x")
        if ei.size and ei.max() >= feats.shape[0]:
            raise ValueError(f"edge_index: node ID {int(ei.max())} >= N = {feats.shape[0]} "
                             f"(rows of x)")

    ea = None
    if edge_attr is not None:
        raw = _as_numpy(edge_attr, "edge_attr")
        if raw.ndim == 1:
            raw = raw.reshape(-1, 1)
        ea = _float32_matrix(raw, "edge_attr")
        if ea.shape[0] != n_edges:
            raise ValueError(f"edge_attr: {ea.shape[0]} rows but edge_index has E = {n_edges} "
                             f"columns")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: Dict[str, Path] = {"edges": out / "edges.npy"}
    np.save(paths["edges"], ei)
    if feats is not None:
        paths["features"] = out / "features.npy"
        np.save(paths["features"], feats)
    if ea is not None:
        paths["edge_attr"] = out / "edge_attr.npy"
        np.save(paths["edge_attr"], ea)
    return paths
