#!/usr/bin/env python3
"""Global attention: torch ``nn.MultiheadAttention`` against ``distgat infer``.

1. **Exact.** For N nodes (default 20,000), E = 64, 4 heads: random features
   ``x.npy`` (float32 N(0, 1) [N, 64], ``numpy.random.default_rng(seed)``) and a
   ``torch.nn.MultiheadAttention(64, 4, batch_first=True)`` made under
   ``torch.manual_seed(seed)``, exported to ``model.safetensors`` +
   ``model.json`` (``pyg-attention-model-v1``, kind ``MultiheadAttention``).
   torch runs in a fresh child (this script, ``--torch-child``) with
   ``torch.set_num_threads(T)``, eval, ``no_grad``: one warm-up, then R timed
   ``mha(x, x, x, need_weights=False)`` on the whole sequence; median ms and the
   child's peak RSS (``ru_maxrss``). distgat: R runs of the whole process
   ``distgat infer --features x.npy --model model.json --out out.npy --threads T
   --stats-json s.json`` (no graph), wall time around ``subprocess.run``, peak RSS
   from ``resource.getrusage(RUSAGE_CHILDREN)`` of a wrapper child per run. Reports
   medians, the ratios torch/distgat (time) and distgat/torch (RSS), and
   max |distgat - torch|.
2. **Nyström vs N.** The same layer with ``"approx": {"method": "nystrom",
   "landmarks": 64, "pinv_iterations": 6}`` over N in ``--nystrom-sizes``
   (default 10k,100k,1M): median wall and kernel ms (from ``--stats-json``) per
   node, to show the cost is linear in N.

3. **Distributed** (``--workers W``): the exact layer at ``--distributed-n`` nodes and
   the Nyström layer at every size also run as ``distgat run --features x.npy
   --model model.json --out run.npy --workers W --threads-per-worker T/W`` (the same
   cores); reported: median wall ms against the same-run ``infer``, whether the output
   is byte-identical to ``infer``'s, and the largest bytes one worker sent for the
   layer (``halo_bytes_sent`` of ``--summary-json``: the all-gathered rows for exact
   attention, the landmark and A3 partials for Nyström).

Usage (with the PyG/torch virtualenv):

    python bench/global_bench.py --distgat target/release/distgat \\
        [--n 20000] [--nystrom-sizes 10000,100000,1000000] [--threads 2] \\
        [--repeats 3] [--work-dir DIR] [--json OUT.json]
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

E, HEADS = 64, 4


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def make_inputs(work: Path, n: int, seed: int, approx=None):
    import numpy as np
    import torch
    from safetensors.torch import save_file

    work.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).standard_normal((n, E), dtype=np.float32)
    np.save(work / "x.npy", x)
    torch.manual_seed(seed)
    mha = torch.nn.MultiheadAttention(E, HEADS, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_(0, 0.1)
        mha.out_proj.bias.normal_(0, 0.1)
    state = {f"layers.0.{k}": v.contiguous() for k, v in mha.state_dict().items()}
    save_file(state, str(work / "model.safetensors"))
    torch.save(mha.state_dict(), work / "mha.pt")
    args = {"embed_dim": E, "num_heads": HEADS, "bias": True, "batch_first": True}
    if approx:
        args["approx"] = approx
    model = {
        "format": "pyg-attention-model-v1",
        "activation": "none",
        "layers": [
            {
                "kind": "MultiheadAttention",
                "args": args,
                "weights": "model.safetensors",
                "prefix": "layers.0.",
            }
        ],
    }
    (work / "model.json").write_text(json.dumps(model, indent=1))


def torch_child(work: Path, threads: int, repeats: int):
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    mha = torch.nn.MultiheadAttention(E, HEADS, batch_first=True)
    mha.load_state_dict(torch.load(work / "mha.pt"))
    mha.eval()
    x = torch.from_numpy(np.load(work / "x.npy"))[None]
    times = []
    with torch.no_grad():
        out = mha(x, x, x, need_weights=False)[0]
        for _ in range(repeats):
            t = time.perf_counter()
            out = mha(x, x, x, need_weights=False)[0]
            times.append((time.perf_counter() - t) * 1e3)
    np.save(work / "torch_out.npy", out[0].numpy())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"ms": times, "rss": rss}))


def run_distgat(distgat: str, work: Path, threads: int, extra=()):
    """One whole `distgat infer` process in a wrapper child, so that
    RUSAGE_CHILDREN of the wrapper is this run's peak RSS alone."""
    cmd = [
        distgat, "infer", "--features", str(work / "x.npy"), "--model",
        str(work / "model.json"), "--out", str(work / "out.npy"), "--threads",
        str(threads), "--stats-json", str(work / "stats.json"), *extra,
    ]
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "ms = (time.perf_counter() - t) * 1e3\n"
        "print(json.dumps({'rc': r.returncode, 'err': r.stderr, 'ms': ms,\n"
        "  'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))\n"
    )
    res = json.loads(subprocess.run([sys.executable, "-c", wrapper, *cmd],
                                    capture_output=True, text=True, check=True).stdout)
    if res["rc"] != 0:
        sys.exit(f"global_bench: error: {' '.join(cmd)} failed:\n{res['err']}")
    stats = json.loads((work / "stats.json").read_text())
    kernel = sum(l["transform_ms"] + l["aggregate_ms"] for l in stats["layers"])
    return res["ms"], res["rss"], kernel


def run_distributed(distgat: str, work: Path, threads: int, workers: int):
    """One whole `distgat run` process: wall ms, byte-identical to infer's out.npy,
    and the largest bytes one worker sent for the layer."""
    cmd = [
        distgat, "run", "--features", str(work / "x.npy"), "--model",
        str(work / "model.json"), "--out", str(work / "run.npy"), "--workers",
        str(workers), "--threads-per-worker", str(max(1, threads // workers)),
        "--summary-json", str(work / "summary.json"),
    ]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    ms = (time.perf_counter() - t) * 1e3
    if r.returncode != 0:
        sys.exit(f"global_bench: error: {' '.join(cmd)} failed:\n{r.stderr}")
    same = (work / "run.npy").read_bytes() == (work / "out.npy").read_bytes()
    summary = json.loads((work / "summary.json").read_text())
    sent = max(l["halo_bytes_sent"] for w in summary["workers"] for l in w["layers"])
    return ms, same, sent


def distributed_rows(a, label, work, infer_ms):
    runs = [run_distributed(a.distgat, work, a.threads, a.workers)
            for _ in range(a.repeats)]
    ms = statistics.median(r[0] for r in runs)
    row = {"layer": label, "N": None, "workers": a.workers, "run_wall_ms": ms,
           "infer_wall_ms": infer_ms, "run_over_infer": ms / infer_ms,
           "identical": all(r[1] for r in runs),
           "max_bytes_sent_per_worker": max(r[2] for r in runs)}
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--distgat", required=True)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--nystrom-sizes", default="10000,100000,1000000")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="/tmp/distgat-global-bench")
    p.add_argument("--json")
    p.add_argument("--workers", type=int, default=0,
                   help="also run distributed with W workers (0: skip)")
    p.add_argument("--distributed-n", type=int, default=5000,
                   help="nodes of the distributed exact run")
    p.add_argument("--skip-torch", action="store_true",
                   help="skip the exact torch comparison (with --workers)")
    p.add_argument("--torch-child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.torch_child:
        torch_child(Path(a.torch_child), a.threads, a.repeats)
        return
    import numpy as np

    root = Path(a.work_dir)
    result = {"threads": a.threads, "repeats": a.repeats}

    distributed = []
    if a.workers:
        work = root / f"exact-dist-{a.distributed_n}"
        log(f"== exact MultiheadAttention distributed, N = {a.distributed_n}")
        make_inputs(work, a.distributed_n, a.seed)
        infer_ms = statistics.median(run_distgat(a.distgat, work, a.threads)[0]
                                     for _ in range(a.repeats))
        row = distributed_rows(a, "exact", work, infer_ms)
        row["N"] = a.distributed_n
        distributed.append(row)
    if a.skip_torch:
        a.n = 0
    work = root / f"exact-{a.n}"
    if a.n:
        log(f"== exact MultiheadAttention, N = {a.n}, E = {E}, {HEADS} heads")
        make_inputs(work, a.n, a.seed)
        child = subprocess.run(
            [sys.executable, __file__, "--distgat", a.distgat, "--torch-child", str(work),
             "--threads", str(a.threads), "--repeats", str(a.repeats)],
            capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"global_bench: error: torch child failed:\n{child.stderr}")
        t = json.loads(child.stdout.strip().splitlines()[-1])
        runs = [run_distgat(a.distgat, work, a.threads) for _ in range(a.repeats)]
        d_ms = statistics.median(r[0] for r in runs)
        d_rss = max(r[1] for r in runs)
        d_kernel = statistics.median(r[2] for r in runs)
        t_ms = statistics.median(t["ms"])
        diff = float(np.abs(np.load(work / "out.npy") - np.load(work / "torch_out.npy")).max())
        exact = {
            "N": a.n, "torch_ms": t_ms, "torch_rss_mb": t["rss"] / 2**20,
            "distgat_wall_ms": d_ms, "distgat_kernel_ms": d_kernel,
            "distgat_rss_mb": d_rss / 2**20, "time_torch_over_distgat": t_ms / d_ms,
            "rss_distgat_over_torch": d_rss / t["rss"], "max_abs_diff": diff,
        }
        result["exact"] = exact
        print("| N | torch ms | distgat wall ms | distgat kernel ms | torch/distgat time | "
              "torch RSS MB | distgat RSS MB | RSS distgat/torch | max abs diff |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {a.n:,} | {t_ms:.1f} | {d_ms:.1f} | {d_kernel:.1f} | "
              f"{exact['time_torch_over_distgat']:.2f}x | {exact['torch_rss_mb']:.0f} | "
              f"{exact['distgat_rss_mb']:.0f} | {exact['rss_distgat_over_torch']:.3f} | {diff:.1e} |")

    sizes = [int(s) for s in a.nystrom_sizes.split(",") if s]
    approx = {"method": "nystrom", "landmarks": 64, "pinv_iterations": 6}
    rows = []
    print()
    print("| N | Nyström m=64 wall ms | kernel ms | kernel ns/node | RSS MB |")
    print("|---:|---:|---:|---:|---:|")
    for n in sizes:
        work = root / f"nystrom-{n}"
        log(f"== Nyström m = 64, N = {n}")
        make_inputs(work, n, a.seed, approx)
        runs = [run_distgat(a.distgat, work, a.threads) for _ in range(a.repeats)]
        row = {
            "N": n, "wall_ms": statistics.median(r[0] for r in runs),
            "kernel_ms": statistics.median(r[2] for r in runs),
            "rss_mb": max(r[1] for r in runs) / 2**20,
        }
        row["kernel_ns_per_node"] = row["kernel_ms"] * 1e6 / n
        rows.append(row)
        print(f"| {n:,} | {row['wall_ms']:.1f} | {row['kernel_ms']:.1f} | "
              f"{row['kernel_ns_per_node']:.0f} | {row['rss_mb']:.0f} |", flush=True)
        if a.workers:
            d = distributed_rows(a, "nystrom m=64", work, row["wall_ms"])
            d["N"] = n
            distributed.append(d)
    result["nystrom"] = rows
    if distributed:
        result["distributed"] = distributed
        print()
        print(f"| layer | N | infer wall ms | run --workers {a.workers} wall ms | "
              "run/infer | identical to infer | max bytes sent by a worker |")
        print("|---|---:|---:|---:|---:|---|---:|")
        for d in distributed:
            print(f"| {d['layer']} | {d['N']:,} | {d['infer_wall_ms']:.1f} | "
                  f"{d['run_wall_ms']:.1f} | {d['run_over_infer']:.2f} | "
                  f"{'yes' if d['identical'] else 'NO'} | "
                  f"{d['max_bytes_sent_per_worker']:,} |")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
