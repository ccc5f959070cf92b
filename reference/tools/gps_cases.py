"""Oracle for distgat's GPSConv cases (issue 12): PyG 2.8.1's own GPSConv, eval mode.

    /tmp/pyg-venv/bin/python reference/tools/gps_cases.py reference/

writes three `attention-case-v1` folders (random ER graph, N = 200, 1 600 edges):

* gps-gat-bn-n200:     GPSConv(32, GATConv(32, 8, heads=4), heads=4), batch_norm with
                       random running statistics, act relu
* gps-transformer-ln-n200: GPSConv(32, TransformerConv(32, 8, heads=4), heads=4),
                       layer_norm (PyG's graph mode), act gelu
* gps2-gatv2-n200:     two GPSConv(32, GATv2Conv(32, 8, heads=4), heads=4) layers,
                       batch_norm, relu between them

expected/out_f64.npy is the float64 forward of the same module (out.npy the float32
one); expected/layer{k}_alpha.npy are the conv's attention coefficients on the layer's
input (return_attention_weights), in PyG's attention edge order.
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch_geometric
from safetensors.torch import save_file
from torch_geometric.nn import GATConv, GATv2Conv, GPSConv, TransformerConv

N, C, HEADS, E = 200, 32, 4, 1600


def er_graph(rng):
    pairs = set()
    while len(pairs) < E:
        s, t = rng.integers(0, N, 2)
        if s != t:
            pairs.add((int(s), int(t)))
    return np.array(sorted(pairs), dtype=np.int64).T.copy()


def randomize(module, gen):
    """Random weights, biases and BatchNorm running statistics (all non-trivial)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.dim() > 1 else 0.2))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.5)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) * 1.5 + 0.25)
            elif name.endswith("num_batches_tracked"):
                b.fill_(17)


def conv_spec(kind):
    if kind == "GATConv":
        return GATConv(C, C // HEADS, heads=HEADS), {"in_channels": C, "out_channels": C // HEADS, "heads": HEADS}
    if kind == "GATv2Conv":
        return GATv2Conv(C, C // HEADS, heads=HEADS), {"in_channels": C, "out_channels": C // HEADS, "heads": HEADS}
    if kind == "TransformerConv":
        return TransformerConv(C, C // HEADS, heads=HEADS), {"in_channels": C, "out_channels": C // HEADS, "heads": HEADS}
    raise ValueError(kind)


class Stack(torch.nn.Module):
    def __init__(self, layers, act):
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)
        self.act = act

    def forward(self, x, ei):
        outs = []
        for k, layer in enumerate(self.layers):
            x = layer(x, ei)
            outs.append(x)
            if k + 1 < len(self.layers) and self.act == "relu":
                x = torch.relu(x)
        return x, outs


def make_case(root, name, conv_kind, norm, act, layers, seed, description):
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    ei = er_graph(rng)
    x = rng.standard_normal((N, C)).astype(np.float32)
    mods, specs = [], []
    for k in range(layers):
        conv, conv_args = conv_spec(conv_kind)
        mods.append(GPSConv(C, conv, heads=HEADS, act=act, norm=norm))
        specs.append({
            "kind": "GPSConv",
            "args": {
                "channels": C,
                "conv": {"kind": conv_kind, "args": conv_args},
                "heads": HEADS,
                "dropout": 0.0,
                "act": act,
                "norm": norm,
                "attn_type": "multihead",
            },
            "weights": "model.safetensors",
            "prefix": f"layers.{k}.",
        })
    model = Stack(mods, "relu")
    randomize(model, gen)
    model.eval()
    out = Path(root) / name
    (out / "expected").mkdir(parents=True, exist_ok=True)
    np.save(out / "x.npy", x)
    np.save(out / "edge_index.npy", ei)
    np.save(out / "partition.npy", rng.integers(0, 4, N).astype(np.int64))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "model.json").write_text(json.dumps({
        "format": "pyg-attention-model-v1",
        "activation": "relu",
        "layers": specs,
    }, indent=2) + "\n")
    xt, eit = torch.from_numpy(x), torch.from_numpy(ei)
    with torch.no_grad():
        y32, outs = model(xt, eit)
        m64 = Stack([m for m in mods], "relu").double().eval()
        y64, outs64 = m64(xt.double(), eit)
        # The conv's attention coefficients on each layer's input (float64 run).
        h = xt.double()
        for k, layer in enumerate(m64.layers):
            _, (aei, alpha) = layer.conv(h, eit, return_attention_weights=True)
            np.save(out / f"expected/layer{k}_alpha.npy", alpha.numpy().astype(np.float32))
            np.save(out / f"expected/layer{k}_att_edge_index.npy", aei.numpy().astype(np.int64))
            np.save(out / f"expected/layer{k}_out.npy", outs64[k].numpy().astype(np.float32))
            h = outs64[k]
            if k + 1 < len(m64.layers):
                h = torch.relu(h)
    np.save(out / "expected/out.npy", y32.numpy())
    np.save(out / "expected/out_f64.npy", y64.numpy())
    diff = float((y32.double() - y64).abs().max())
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        "format": "attention-case-v1",
        "name": name,
        "description": description,
        "N": N,
        "F": C,
        "kinds": ["GPSConv", conv_kind],
        "graph": {"file": "edge_index.npy", "generator": "er (distinct pairs, no self loops)", "num_edges": E,
                  "convention": "row 0 = source j, row 1 = target i (PyG flow source_to_target)"},
        "features": {"file": "x.npy", "dtype": "<f4", "shape": [N, C], "distribution": "standard normal"},
        "partition": {"file": "partition.npy", "parts": 4, "note": "random node->part map"},
        "model": "model.json",
        "activation_between_layers": "relu" if layers > 1 else "none (one layer)",
        "weights": "random normal; BatchNorm running_mean ~ N(0, 0.5^2), running_var ~ U(0.25, 1.75), num_batches_tracked = 17",
        "eval_mode": True,
        "max_abs_diff_f32_vs_f64": diff,
        "versions": {"torch": torch.__version__, "torch_geometric": torch_geometric.__version__},
        "command": f"python reference/tools/gps_cases.py <root> (seed {seed})",
        "sha256": {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(name, "f32 vs f64 max diff", diff)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "reference"
    torch.set_default_dtype(torch.float32)
    make_case(root, "gps-gat-bn-n200", "GATConv", "batch_norm", "relu", 1, 12,
              "PyG GPSConv(32, GATConv(32, 8, heads=4), heads=4, norm='batch_norm', act='relu'), eval mode, random running statistics")
    make_case(root, "gps-transformer-ln-n200", "TransformerConv", "layer_norm", "gelu", 1, 13,
              "PyG GPSConv(32, TransformerConv(32, 8, heads=4), heads=4, norm='layer_norm' (PyG LayerNorm, mode='graph'), act='gelu'), eval mode")
    make_case(root, "gps2-gatv2-n200", "GATv2Conv", "batch_norm", "relu", 2, 14,
              "two PyG GPSConv(32, GATv2Conv(32, 8, heads=4), heads=4, norm='batch_norm') layers, relu between them, eval mode")


if __name__ == "__main__":
    main()
