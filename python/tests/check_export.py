#!/usr/bin/env python3
"""Checks distgat.export_model / save_graph on small random PyG models.

Run with a Python that has torch, torch_geometric and the distgat package:

    python python/tests/check_export.py                         # files only
    DISTGAT_BIN=target/release/distgat python python/tests/check_export.py

Without DISTGAT_BIN it checks the written files: model.json's format, kinds,
args and prefixes; the tensor names, shapes and values; that the safetensors
file loads; and that PyG layers rebuilt from model.json's args with those
tensors (load_state_dict strict) reproduce the model's output. It also checks
the refusals (ValueError) and the not-exported warning.

With DISTGAT_BIN it also runs `$DISTGAT_BIN infer ... --out out.npy` on every
exported model and compares out.npy with PyG's eval-mode output computed in
float64 (model.double() on float64 inputs): |a - b| <= 1e-4 + 1e-4 |b|.

Ends with "N passed, M failed"; exits 1 if anything failed.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from torch import nn
from torch_geometric.nn import GATConv, GATv2Conv, GPSConv, TransformerConv

from distgat import NotExportedWarning, export_model, save_graph

ATOL = RTOL = 1e-4
N, F, D = 60, 16, 3

RESULTS = {"passed": 0, "failed": 0}


def check(name, fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - report every failure and go on
        RESULTS["failed"] += 1
        print(f"FAIL {name}")
        traceback.print_exc(file=sys.stdout)
    else:
        RESULTS["passed"] += 1
        print(f"ok   {name}")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


# ---------------------------------------------------------------- models

def _act(name, h):
    return {"elu": torch.nn.functional.elu, "relu": torch.relu, "none": lambda t: t}[name](h)


class Chain(nn.Module):
    """Attention layers applied one after the other, `act` between them; an
    optional `head` module that distgat does not run (not in forward's output
    compared here, only there to be warned about)."""

    def __init__(self, convs, act="elu", head=None):
        super().__init__()
        self.act = act
        for i, c in enumerate(convs):
            self.add_module(f"conv{i + 1}", c)
        self.n = len(convs)
        if head is not None:
            self.head = head

    def forward(self, x, edge_index, edge_attr=None):
        for i in range(self.n):
            conv = getattr(self, f"conv{i + 1}")
            if conv.edge_dim is not None:
                x = conv(x, edge_index, edge_attr)
            else:
                x = conv(x, edge_index)
            if i + 1 < self.n:
                x = _act(self.act, x)
        return x


def randomize_biases(model, seed):
    """Biases start at 0 in PyG; redraw them so that they are tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def make_graph(seed):
    """N nodes, random edges with 4 duplicate pairs, 3 self loops, 2 isolated nodes."""
    rng = np.random.default_rng(seed)
    e = 5 * N
    src = rng.integers(0, N - 2, e)
    dst = rng.integers(0, N - 2, e)
    src[:4], dst[:4] = src[4:8], dst[4:8]          # duplicates
    dst[8:11] = src[8:11]                          # self loops
    ei = np.stack([src, dst]).astype(np.int64)
    x = rng.standard_normal((N, F)).astype(np.float32)
    ea = rng.standard_normal((e, D)).astype(np.float32)
    return ei, x, ea


def build_cases():
    torch.manual_seed(0)
    cases = {}
    # (name, model, activation, expected prefixes, uses edge_attr)
    m = GATConv(F, 8, heads=4, residual=True, edge_dim=D)
    cases["gat-residual-edge"] = (m, "elu", [""], True)
    m = Chain([GATv2Conv(F, 8, heads=4, share_weights=True),
               GATv2Conv(32, 5, heads=2, concat=False, share_weights=True)], act="relu")
    cases["gatv2-shared"] = (m, "relu", ["conv1.", "conv2."], False)
    m = TransformerConv(F, 8, heads=4, beta=True, edge_dim=D)
    cases["transformer-beta-edge"] = (m, "elu", [""], True)
    m = Chain([GATConv(F, 8, heads=4, edge_dim=D, fill_value="add"),
               TransformerConv(32, 6, heads=2, concat=False, edge_dim=D)],
              act="elu", head=nn.Linear(6, 3))
    cases["mixed-gat-transformer"] = (m, "elu", ["conv1.", "conv2."], True)
    # Every fill_value PyG accepts for the added self loops' edge attributes, and layers
    # without bias.
    m = Chain([GATConv(F, 8, heads=2, edge_dim=D, fill_value="max", bias=False),
               GATConv(16, 8, heads=2, edge_dim=D, fill_value="min"),
               GATv2Conv(16, 6, heads=2, edge_dim=D, fill_value="mul", bias=False),
               GATConv(12, 4, heads=2, concat=False, edge_dim=D, fill_value=0.5)], act="elu")
    cases["fill-values-no-bias"] = (m, "elu", ["conv1.", "conv2.", "conv3.", "conv4."], True)
    m = TransformerConv(F, 8, heads=2, root_weight=False, bias=False)
    cases["transformer-noroot-nobias"] = (m, "elu", [""], False)
    for i, (m, *_rest) in enumerate(cases.values()):
        randomize_biases(m, 100 + i)
        m.eval()
    return cases


def reference_f64(model, x, ei, ea, uses_edge):
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        args = (torch.from_numpy(x).double(), torch.from_numpy(ei))
        if uses_edge:
            args = args + (torch.from_numpy(ea).double(),)
        return m(*args).numpy()


CLASSES = {"GATConv": GATConv, "GATv2Conv": GATv2Conv, "TransformerConv": TransformerConv}


def rebuild_from_files(out):
    """Rebuild the layers from model.json and the safetensors file alone."""
    doc = json.loads((out / "model.json").read_text())
    layers = []
    for L in doc["layers"]:
        sd = load_file(str(out / L["weights"]))
        own = {k[len(L["prefix"]):]: torch.from_numpy(v) for k, v in sd.items()
               if k.startswith(L["prefix"])}
        layer = CLASSES[L["kind"]](**L["args"])
        layer.load_state_dict(own, strict=True)
        layers.append((layer.eval(), L["args"]["edge_dim"] is not None))
    return doc["activation"], layers


def run_rebuilt(act, layers, x, ei, ea):
    h = torch.from_numpy(x).double()
    ei_t = torch.from_numpy(ei)
    ea_t = torch.from_numpy(ea).double()
    with torch.no_grad():
        for k, (layer, edge) in enumerate(layers):
            layer = layer.double()
            h = layer(h, ei_t, ea_t) if edge else layer(h, ei_t)
            if k + 1 < len(layers):
                h = _act(act, h)
    return h.numpy()


def close(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    expect(a.shape == b.shape, f"shape {a.shape} != {b.shape}")
    expect(np.isfinite(a).all(), "non-finite values")
    err = np.abs(a - b) - (ATOL + RTOL * np.abs(b))
    worst = float(np.abs(a - b).max()) if a.size else 0.0
    expect((err <= 0).all(), f"max |a-b| = {worst:.3e} exceeds atol=rtol={ATOL}")
    return worst


# ---------------------------------------------------------------- checks

def check_case(name, model, act, prefixes, uses_edge, root, distgat):
    out = root / name
    ei, x, ea = make_graph(seed=len(name))

    def export():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            p = export_model(model, out, activation=act)
        expect(p == out / "model.json", f"returned {p}")
        left = [str(x.message) for x in w if issubclass(x.category, NotExportedWarning)]
        if hasattr(model, "head"):
            expect(len(left) == 1 and "head.weight" in left[0] and "head.bias" in left[0],
                   f"expected a warning naming head.weight/head.bias, got {left}")
        else:
            expect(not left, f"unexpected warning {left}")
        paths = save_graph(out, torch.from_numpy(ei), x=torch.from_numpy(x),
                           edge_attr=ea if uses_edge else None)
        want = {"edges", "features"} | ({"edge_attr"} if uses_edge else set())
        expect(set(paths) == want, f"save_graph returned {sorted(paths)}")
    check(f"{name}: export_model + save_graph", export)

    def files():
        doc = json.loads((out / "model.json").read_text())
        expect(doc["format"] == "pyg-attention-model-v1", doc["format"])
        expect(doc["activation"] == act, doc["activation"])
        expect([L["prefix"] for L in doc["layers"]] == prefixes,
               f"prefixes {[L['prefix'] for L in doc['layers']]}")
        sd = load_file(str(out / "model.safetensors"))
        state = model.state_dict()
        names = set()
        for L in doc["layers"]:
            expect(L["weights"] == "model.safetensors", L["weights"])
            mod = model.get_submodule(L["prefix"].rstrip("."))
            expect(L["kind"] == type(mod).__name__, f"kind {L['kind']}")
            expect(L["args"] == expected_args(mod), f"args {L['args']} != {expected_args(mod)}")
            names |= {L["prefix"] + k for k in mod.state_dict()}
        expect(set(sd) == names, f"tensor names {sorted(set(sd) ^ names)}")
        for k, v in sd.items():
            expect(v.dtype == np.float32, f"{k} dtype {v.dtype}")
            expect(tuple(v.shape) == tuple(state[k].shape), f"{k} shape {v.shape}")
            expect(np.array_equal(v, state[k].detach().numpy()), f"{k} values differ")
        e = np.load(out / "edges.npy")
        expect(e.dtype == np.int64 and e.shape == ei.shape and (e == ei).all(), "edges.npy")
        f = np.load(out / "features.npy")
        expect(f.dtype == np.float32 and f.shape == (N, F) and (f == x).all(), "features.npy")
        if uses_edge:
            a = np.load(out / "edge_attr.npy")
            expect(a.dtype == np.float32 and a.shape == (ei.shape[1], D) and (a == ea).all(),
                   "edge_attr.npy")
        else:
            expect(not (out / "edge_attr.npy").exists(), "edge_attr.npy written unasked")
    check(f"{name}: model.json, tensor names/shapes/values, npy files", files)

    ref = reference_f64(model, x, ei, ea, uses_edge)

    def rebuilt():
        act2, layers = rebuild_from_files(out)
        got = run_rebuilt(act2, layers, x, ei, ea)
        worst = close(got, ref)
        expect(worst < 1e-12, f"rebuilt model differs by {worst:.3e}")
    check(f"{name}: PyG rebuilt from model.json + safetensors reproduces the model", rebuilt)

    if distgat is None:
        return
    def infer():
        cmd = [distgat, "infer", "--graph", str(out / "edges.npy"),
               "--features", str(out / "features.npy")]
        if uses_edge:
            cmd += ["--edge-features", str(out / "edge_attr.npy")]
        cmd += ["--model", str(out / "model.json"), "--out", str(out / "out.npy")]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        expect(r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        got = np.load(out / "out.npy")
        worst = close(got, ref)
        print(f"     distgat vs PyG f64: max |a-b| = {worst:.2e}")
    check(f"{name}: distgat infer matches PyG float64", infer)


def expected_args(m):
    """Independently written: what model.json's args must be for layer m."""
    if isinstance(m, TransformerConv):
        return {"in_channels": m.in_channels, "out_channels": m.out_channels, "heads": m.heads,
                "concat": m.concat, "beta": m.beta, "dropout": m.dropout,
                "edge_dim": m.edge_dim, "bias": m.lin_key.bias is not None,
                "root_weight": m.root_weight}
    a = {"in_channels": m.in_channels, "out_channels": m.out_channels, "heads": m.heads,
         "concat": m.concat, "negative_slope": m.negative_slope, "dropout": m.dropout,
         "add_self_loops": m.add_self_loops, "edge_dim": m.edge_dim,
         "fill_value": m.fill_value, "bias": m.bias is not None, "residual": m.residual}
    if isinstance(m, GATv2Conv):
        a["share_weights"] = m.share_weights
    return a


# ------------------------------------------------- global attention and GPSConv

class SelfAttention(nn.Module):
    """torch MultiheadAttention as distgat runs it: all N nodes as one sequence."""

    def __init__(self, e, h):
        super().__init__()
        self.attn = nn.MultiheadAttention(e, h, batch_first=True)

    def forward(self, x, edge_index=None):
        return self.attn(x[None], x[None], x[None], need_weights=False)[0][0]


class Nystrom(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, edge_index=None):
        return self.layer(x[None])[0]


def randomize_all(model, seed):
    """Random parameters and BatchNorm running statistics (PyG starts them trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.2))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.5)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def global_cases():
    torch.manual_seed(1)
    cases = {
        "mha": (SelfAttention(32, 4), False),
        "gps-gat-batchnorm": (GPSConv(32, GATConv(32, 8, heads=4), heads=4), True),
        "gps-transformer-layernorm-gelu": (
            GPSConv(32, TransformerConv(32, 8, heads=4), heads=4, norm="layer_norm",
                    act="gelu"), True),
        "gps-noconv-nonorm": (GPSConv(32, None, heads=2, norm=None), False),
    }
    try:
        from nystrom_attention import NystromAttention
        cases["nystrom"] = (Nystrom(NystromAttention(dim=32, dim_head=8, heads=4,
                                                     num_landmarks=16, residual=False)), False)
    except ImportError:
        print("     nystrom_attention not installed: NystromAttention export not checked")
    for i, (m, _) in enumerate(cases.values()):
        randomize_all(m, 200 + i)
    return cases


def check_global_case(name, model, uses_graph, root, distgat):
    out = root / name
    ei, _, _ = make_graph(seed=len(name))
    x = np.random.default_rng(len(name)).standard_normal((N, 32)).astype(np.float32)

    def export():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            export_model(model, out, activation="none")
        left = [str(x.message) for x in w if issubclass(x.category, NotExportedWarning)]
        expect(not left, f"unexpected warning {left}")
        save_graph(out, torch.from_numpy(ei), x=torch.from_numpy(x))
        doc = json.loads((out / "model.json").read_text())
        expect(len(doc["layers"]) == 1, f"{len(doc['layers'])} layers")
        sd = load_file(str(out / "model.safetensors"))
        state = model.state_dict()
        expect(set(sd) == set(state), f"tensor names {sorted(set(sd) ^ set(state))}")
        for k, v in sd.items():
            expect(np.array_equal(v, state[k].detach().float().numpy()), f"{k} values differ")
    check(f"{name}: export_model writes every tensor of the module", export)

    if distgat is None:
        return

    def infer():
        m = copy.deepcopy(model).double().eval()
        with torch.no_grad():
            ref = m(torch.from_numpy(x).double(), torch.from_numpy(ei)).numpy()
        cmd = [distgat, "infer"]
        if uses_graph:
            cmd += ["--graph", str(out / "edges.npy")]
        cmd += ["--features", str(out / "features.npy"), "--model", str(out / "model.json"),
                "--out", str(out / "out.npy")]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        expect(r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        worst = close(np.load(out / "out.npy"), ref)
        print(f"     distgat vs torch f64: max |a-b| = {worst:.2e}")
    check(f"{name}: distgat infer matches torch float64", infer)


def check_refusals(root):
    def raises(fn, *words):
        try:
            fn()
        except ValueError as e:
            for w in words:
                expect(w in str(e), f"message {str(e)!r} lacks {w!r}")
            return
        raise AssertionError(f"no ValueError (expected one mentioning {words})")

    out = root / "refusals"
    check("refuse bipartite in_channels (names the path)",
          lambda: raises(lambda: export_model(Chain([GATConv((F, 8), 4)]), out),
                         "conv1", "bipartite"))
    check("refuse aggr='mean'",
          lambda: raises(lambda: export_model(Chain([GATConv(F, 4, aggr="mean")]), out),
                         "conv1", "aggr"))
    check("refuse flow='target_to_source'",
          lambda: raises(lambda: export_model(
              Chain([TransformerConv(F, 4, flow="target_to_source")]), out), "conv1", "flow"))
    check("refuse a module without attention layers",
          lambda: raises(lambda: export_model(nn.Sequential(nn.Linear(F, 4)), out),
                         "Sequential"))
    check("refuse unchained widths",
          lambda: raises(lambda: export_model(Chain([GATConv(F, 4, heads=2), GATConv(F, 4)]), out),
                         "conv2", "in_channels"))
    check("refuse an unknown activation",
          lambda: raises(lambda: export_model(GATConv(F, 4), out, activation="gelu"),
                         "activation"))
    ei, x, ea = make_graph(seed=1)
    check("save_graph refuses edge_index [E, 2]",
          lambda: raises(lambda: save_graph(out, ei.T, x=x), "[2, E]"))
    check("save_graph refuses float edge_index",
          lambda: raises(lambda: save_graph(out, ei.astype(np.float32)), "integer"))
    check("save_graph refuses edge_attr with the wrong row count",
          lambda: raises(lambda: save_graph(out, ei, x=x, edge_attr=ea[:-1]), "rows"))
    check("save_graph refuses node IDs >= N",
          lambda: raises(lambda: save_graph(out, ei, x=x[:10]), ">= N"))

    def lazy():
        m = GATConv(-1, 4, heads=2)
        raises(lambda: export_model(m, out), "forward")
        with torch.no_grad():
            m(torch.from_numpy(x), torch.from_numpy(ei))
        export_model(m, out / "lazy")
        doc = json.loads((out / "lazy" / "model.json").read_text())
        expect(doc["layers"][0]["args"]["in_channels"] == F, doc["layers"][0]["args"])
    check("lazy in_channels=-1: refused before, exported with F after a forward pass", lazy)


def main():
    distgat = os.environ.get("DISTGAT_BIN") or None
    if distgat is not None and not os.access(distgat, os.X_OK):
        print(f"DISTGAT_BIN={distgat} is not an executable file")
        print("0 passed, 1 failed")
        return 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="distgat-export-") as tmp:
        root = Path(tmp)
        for name, (model, act, prefixes, uses_edge) in build_cases().items():
            check_case(name, model, act, prefixes, uses_edge, root, distgat)
        for name, (model, uses_graph) in global_cases().items():
            check_global_case(name, model, uses_graph, root, distgat)
        check_refusals(root)
    if distgat is None:
        print("DISTGAT_BIN not set: distgat infer was not run (files checked only)")
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
