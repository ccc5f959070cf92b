#!/usr/bin/env python3
"""Baseline: time ONE DGL ``GATConv`` forward on CPU, on the files distgat's bench writes.

Reads the same directory as ``pyg_layer_bench.py`` (``edge_index.npy`` int64 [2, E] with
row 0 = source j and row 1 = target i, ``x.npy`` float32 [N, F_in], ``layer.safetensors``
with PyG's names ``lin.weight`` [H*C, F_in], ``att_src``/``att_dst`` [1, H, C], ``bias``
[H*C], and ``layer.json``), and builds the same layer in DGL 2.1
(``dgl.nn.pytorch.GATConv(F_in, C, H)``, whose ``fc.weight``, ``attn_l``, ``attn_r`` and
``bias`` are PyG's ``lin.weight``, ``att_src``, ``att_dst`` and ``bias``). PyG's
``add_self_loops=True`` is reproduced on the graph: every input self loop removed, one loop
per node added (``dgl.remove_self_loop`` then ``dgl.add_self_loop``). Only ``concat=True``
is supported (the bench's layer); anything else is an error.

The graph is built once, untimed; ``--warmup`` untimed and ``--repeats`` timed forwards run
under ``torch.inference_mode()``. Prints ONE JSON line on stdout:

    {"median_ms", "times_ms", "peak_rss_mb", "num_nodes", "num_edges", "threads",
     "torch", "dgl"}

``peak_rss_mb`` is ``ru_maxrss / 1024`` (MiB) of this whole process. With ``--out OUT.npy``
the last output is saved as float32 [N, H*C] so the caller can compare it with distgat's.
Errors go to stderr with exit code 1.

Usage (DGL needs its own venv: dgl==2.1.0 torch==2.2.1 torchdata==0.7.1 pandas pydantic
pyyaml safetensors numpy, and DGLBACKEND=pytorch):

    DGLBACKEND=pytorch python dgl_layer_bench.py DIR --threads T --repeats R [--out OUT.npy]
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
import warnings


def fail(msg):
    print(f"dgl_layer_bench: error: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    p = argparse.ArgumentParser(description="Time one DGL GATConv forward (CPU, eval).")
    p.add_argument("dir", help="directory with edge_index.npy, x.npy, layer.safetensors, layer.json")
    p.add_argument("--threads", type=int, required=True, help="torch.set_num_threads value")
    p.add_argument("--repeats", type=int, required=True, help="number of timed forwards")
    p.add_argument("--warmup", type=int, default=1, help="untimed forwards first (default 1)")
    p.add_argument("--out", help="save the last output as float32 .npy")
    p.error = fail
    a = p.parse_args()
    if a.threads < 1 or a.repeats < 1 or a.warmup < 0:
        fail("--threads and --repeats must be >= 1, --warmup >= 0")
    os.environ.setdefault("DGLBACKEND", "pytorch")
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    import dgl
    from dgl.nn.pytorch import GATConv
    from safetensors.numpy import load_file

    torch.set_num_threads(a.threads)
    try:
        ei = np.load(os.path.join(a.dir, "edge_index.npy"))
        x = np.load(os.path.join(a.dir, "x.npy"))
        tensors = load_file(os.path.join(a.dir, "layer.safetensors"))
        with open(os.path.join(a.dir, "layer.json")) as f:
            cfg = json.load(f)
        heads, out_ch = int(cfg["heads"]), int(cfg["out_channels"])
    except Exception as e:
        fail(f"cannot load inputs from {a.dir}: {e}")
    if not cfg.get("concat", True):
        fail("layer.json: concat=false is not supported by this baseline")
    if not cfg.get("add_self_loops", True):
        fail("layer.json: add_self_loops=false is not supported by this baseline")
    unknown = set(tensors) - {"lin.weight", "att_src", "att_dst", "bias"}
    if unknown:
        fail(f"layer.safetensors: tensors this baseline does not map: {sorted(unknown)}")
    if ei.ndim != 2 or ei.shape[0] != 2:
        fail(f"edge_index.npy must be [2, E], got {list(ei.shape)}")
    n, f_in = x.shape

    src = torch.from_numpy(np.ascontiguousarray(ei[0], dtype=np.int64))
    dst = torch.from_numpy(np.ascontiguousarray(ei[1], dtype=np.int64))
    g = dgl.graph((src, dst), num_nodes=n)
    g = dgl.add_self_loop(dgl.remove_self_loop(g))

    conv = GATConv(
        f_in, out_ch, heads,
        negative_slope=float(cfg.get("negative_slope", 0.2)),
        bias="bias" in tensors,
        allow_zero_in_degree=True,
    ).eval()
    t = lambda k: torch.from_numpy(np.ascontiguousarray(tensors[k], dtype=np.float32))
    with torch.no_grad():
        conv.fc.weight.copy_(t("lin.weight"))
        conv.attn_l.copy_(t("att_src").reshape(1, heads, out_ch))
        conv.attn_r.copy_(t("att_dst").reshape(1, heads, out_ch))
        if "bias" in tensors:
            conv.bias.copy_(t("bias"))

    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    times = []
    with torch.inference_mode():
        for _ in range(a.warmup):
            out = conv(g, x_t)
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            out = conv(g, x_t)
            times.append((time.perf_counter() - t0) * 1e3)
    if a.out:
        np.save(a.out, out.reshape(n, heads * out_ch).numpy().astype(np.float32, copy=False))
    print(json.dumps({
        "median_ms": statistics.median(times),
        "times_ms": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "num_nodes": int(n),
        "num_edges": int(ei.shape[1]),
        "threads": a.threads,
        "torch": torch.__version__,
        "dgl": dgl.__version__,
    }))


if __name__ == "__main__":
    main()
