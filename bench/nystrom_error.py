#!/usr/bin/env python3
"""Nyström's approximation error against m on a real feature matrix (Cora).

Cora's bag-of-words rows (``data/cora/features.npy``, 2708 x 1433) are row-normalised
(PyG's NormalizeFeatures), projected to E = 64 columns by a fixed Gaussian matrix
(``numpy.random.default_rng(seed)``, scaled by 1/sqrt(1433)) and standardised per column;
a ``torch.nn.MultiheadAttention(64, 4)`` made under ``torch.manual_seed(seed)`` is
exported as a ``pyg-attention-model-v1`` model with ``"approx": {"method": "nystrom",
"landmarks": m}``. For each m, ``distgat infer --report-approximation-error`` gives the
relative Frobenius error ``||approx - exact||_F / ||exact||_F`` of the layer's output
against exact attention with the same weights (from ``--stats-json``).

Usage: python bench/nystrom_error.py --distgat target/release/distgat \\
           [--landmarks 8,16,32,64,128,256,512] [--weight-scale S] [--work-dir DIR]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

E, HEADS = 64, 4


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--distgat", required=True)
    p.add_argument("--landmarks", default="8,16,32,64,128,256,512")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="/tmp/distgat-nystrom-error")
    p.add_argument("--weight-scale", type=float, default=1.0,
                   help="multiply in_proj_weight (sharper attention for > 1)")
    a = p.parse_args()
    import numpy as np
    import torch
    from safetensors.torch import save_file

    root = Path(__file__).resolve().parent.parent
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    x = np.load(root / "data/cora/features.npy").astype(np.float64)
    x = x / np.maximum(x.sum(axis=1, keepdims=True), 1e-300)
    proj = np.random.default_rng(a.seed).standard_normal((x.shape[1], E)) / np.sqrt(x.shape[1])
    y = x @ proj
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    np.save(work / "x.npy", y.astype(np.float32))
    torch.manual_seed(a.seed)
    mha = torch.nn.MultiheadAttention(E, HEADS, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.mul_(a.weight_scale)
    state = {f"layers.0.{k}": v.contiguous() for k, v in mha.state_dict().items()}
    save_file(state, str(work / "model.safetensors"))
    print(f"Cora, N = {y.shape[0]}, E = {E}, {HEADS} heads, in_proj_weight x {a.weight_scale}")
    print("| m | relative Frobenius error |")
    print("|---:|---:|")
    for m in [int(v) for v in a.landmarks.split(",")]:
        model = {
            "format": "pyg-attention-model-v1", "activation": "none",
            "layers": [{"kind": "MultiheadAttention",
                        "args": {"embed_dim": E, "num_heads": HEADS, "bias": True,
                                 "batch_first": True,
                                 "approx": {"method": "nystrom", "landmarks": m}},
                        "weights": "model.safetensors", "prefix": "layers.0."}],
        }
        (work / "model.json").write_text(json.dumps(model))
        r = subprocess.run([a.distgat, "infer", "--features", str(work / "x.npy"),
                            "--model", str(work / "model.json"), "--out",
                            str(work / "out.npy"), "--report-approximation-error",
                            "--stats-json", str(work / "stats.json")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"nystrom_error: distgat failed:\n{r.stderr}")
        stats = json.loads((work / "stats.json").read_text())
        err = stats["layers"][0]["approximation_error"]
        print(f"| {m} | {err:.4f} |", flush=True)


if __name__ == "__main__":
    main()
