#!/usr/bin/env python3
"""Baseline: time ONE PyTorch Geometric ``GATConv`` forward on CPU.

Reads the inputs that distgat's Rust bench writes to a directory DIR:

    DIR/edge_index.npy      int64 [2, E]  row 0 = source j, row 1 = target i (PyG)
    DIR/x.npy               float32 [N, F_in]
    DIR/layer.safetensors   F32 tensors ``lin.weight`` [H*C, F_in],
                            ``att_src`` [1, H, C], ``att_dst`` [1, H, C],
                            ``bias`` [H*C] (or [C] when concat is false)
    DIR/layer.json          {"heads": H, "out_channels": C, "concat": true,
                             "negative_slope": 0.2, "add_self_loops": true}

builds ``GATConv(F_in, C, heads=H, ...)`` in eval mode, loads the weights
with ``load_state_dict``, runs ``--warmup`` untimed and ``--repeats`` timed
forwards under ``torch.inference_mode()`` and prints ONE JSON line on stdout:

    {"median_ms", "times_ms", "peak_rss_mb", "num_nodes", "num_edges",
     "threads", "torch", "torch_geometric"}

``peak_rss_mb`` is ``ru_maxrss / 1024`` of this process (Linux: KiB -> MiB),
so it includes the Python/torch runtime itself.  With ``--out OUT.npy`` the
output of the last forward is saved as float32 [N, H*C] (or [N, C]).
Errors go to stderr with exit code 1.

Usage (run with the PyG virtualenv, e.g. /root/pyg-venv/bin/python):

    python pyg_layer_bench.py DIR --threads T --repeats R [--warmup 1] [--out OUT.npy]
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
    print(f"pyg_layer_bench: error: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    p = argparse.ArgumentParser(description="Time one PyG GATConv forward (CPU, eval).")
    p.add_argument("dir", help="directory with edge_index.npy, x.npy, layer.safetensors, layer.json")
    p.add_argument("--threads", type=int, required=True, help="torch.set_num_threads value")
    p.add_argument("--repeats", type=int, required=True, help="number of timed forwards")
    p.add_argument("--warmup", type=int, default=1, help="untimed forwards first (default 1)")
    p.add_argument("--out", help="save the last output as float32 .npy")
    p.error = fail  # usage errors also exit with 1
    a = p.parse_args()
    if a.threads < 1 or a.repeats < 1 or a.warmup < 0:
        fail("--threads and --repeats must be >= 1, --warmup >= 0")

    warnings.filterwarnings("ignore")  # keep stderr for real errors (torch.jit deprecations etc.)
    import numpy as np
    import torch
    import torch_geometric
    from safetensors.numpy import load_file
    from torch_geometric.nn import GATConv

    torch.set_num_threads(a.threads)

    try:
        ei = np.load(os.path.join(a.dir, "edge_index.npy"))
        x = np.load(os.path.join(a.dir, "x.npy"))
        tensors = load_file(os.path.join(a.dir, "layer.safetensors"))
        with open(os.path.join(a.dir, "layer.json")) as f:
            cfg = json.load(f)
        heads, out_ch = int(cfg["heads"]), int(cfg["out_channels"])
    except Exception as e:  # missing file, bad npy/safetensors/json, missing key
        fail(f"cannot load inputs from {a.dir}: {e}")

    if ei.ndim != 2 or ei.shape[0] != 2:
        fail(f"edge_index.npy must be [2, E], got {list(ei.shape)}")
    if x.ndim != 2:
        fail(f"x.npy must be [N, F_in], got {list(x.shape)}")
    n, f_in = x.shape
    if ei.size and (ei.min() < 0 or ei.max() >= n):
        fail(f"edge_index has node ids outside [0, {n})")

    conv = GATConv(
        f_in, out_ch, heads=heads,
        concat=bool(cfg.get("concat", True)),
        negative_slope=float(cfg.get("negative_slope", 0.2)),
        add_self_loops=bool(cfg.get("add_self_loops", True)),
        bias="bias" in tensors,
    ).eval()

    # PyG 2.8 names the shared projection `lin`; older releases used lin_src/lin_dst.
    expected = conv.state_dict().keys()
    state = {}
    for k, v in tensors.items():
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        if k == "lin.weight" and "lin.weight" not in expected:
            for alias in ("lin_src.weight", "lin_dst.weight"):
                if alias in expected:
                    state[alias] = t
        else:
            state[k] = t
    try:
        conv.load_state_dict(state, strict=True)
    except RuntimeError as e:
        fail(f"layer.safetensors does not fit GATConv({f_in}, {out_ch}, heads={heads}): {e}")

    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    ei_t = torch.from_numpy(np.ascontiguousarray(ei, dtype=np.int64))

    times = []
    with torch.inference_mode():
        for _ in range(a.warmup):
            out = conv(x_t, ei_t)
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            out = conv(x_t, ei_t)
            times.append((time.perf_counter() - t0) * 1e3)

    if a.out:
        try:
            np.save(a.out, out.numpy().astype(np.float32, copy=False))
        except OSError as e:
            fail(f"cannot write {a.out}: {e}")

    print(json.dumps({
        "median_ms": statistics.median(times),
        "times_ms": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "num_nodes": int(n),
        "num_edges": int(ei.shape[1]),
        "threads": a.threads,
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
    }))


if __name__ == "__main__":
    main()
