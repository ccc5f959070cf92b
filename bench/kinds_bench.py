#!/usr/bin/env python3
"""One layer of each attention kind: PyTorch Geometric against ``distgat infer``.

For every size and every kind (GATConv, GATv2Conv, TransformerConv; F_in = 128,
heads = 4, out_channels = 32, concat, PyG's defaults otherwise) this script:

1. writes an Erdos-Renyi graph ``edge_index.npy`` (int64 [2, E], row 0 = source,
   row 1 = target; ``numpy.random.default_rng(seed).integers``) and features
   ``x.npy`` (float32 uniform(-1, 1) [N, 128]) once per size under
   ``WORK_DIR/<size>/`` (reused when ``meta.json`` says they match);
2. builds the PyG layer with ``torch.manual_seed(seed)``, in eval mode, exports it
   with ``distgat.export_model(layer, WORK_DIR/<size>/<kind>, activation="none")``
   and saves its ``state_dict`` for the PyG child;
3. PyG: in a fresh child process per kind (this same script, ``--pyg-child``),
   ``torch.set_num_threads(T)``, loads the inputs, one warm-up forward then R timed
   forwards under ``torch.inference_mode()``; median ms, peak RSS of the child
   (``ru_maxrss``). If the child fails or is killed (OOM at the large size) that is
   recorded and the bench goes on;
4. distgat: R runs of the whole process ``distgat infer ... --threads T
   --stats-json stats.json``, wall time measured around ``subprocess.run``; peak RSS
   from ``stats.json``'s ``peak_rss_bytes``; kernel time = the layer's
   ``transform_ms + aggregate_ms`` from ``stats.json``;
5. max |distgat - PyG| and whether every element is within 1e-4 + 1e-4 |pyg|.

Sizes: small N=10k E=100k, medium N=100k E=2M, large N=1M E=10M (opt-in).

Usage (run with the PyG virtualenv):

    python bench/kinds_bench.py --distgat target/release/distgat \\
        --sizes small,medium[,large] --kinds GATConv,GATv2Conv,TransformerConv \\
        --threads 2 --repeats 3 [--work-dir DIR] [--json OUT.json]

Exit status 1 (message on stderr) when the setup fails or ``distgat`` itself
fails; a failed PyG child is only recorded.
"""

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

SIZES = {
    "small": (10_000, 100_000),
    "medium": (100_000, 2_000_000),
    "large": (1_000_000, 10_000_000),
}
KINDS = ("GATConv", "GATv2Conv", "TransformerConv")
F_IN, HEADS, OUT_CH = 128, 4, 32
HC = HEADS * OUT_CH
ATOL = RTOL = 1e-4

GATV2_BYTES_FORMULA = (
    "GATv2 aggregation bytes = E_att * (H*C*4 + 4) + N * 2 * H*C*4, "
    "E_att = E - self-loops in the input + N (GATv2Conv adds a self loop per node): "
    "per attention edge the source row x_l[j] (H*C f32) and its CSR column (u32), "
    "per node the target row x_r[i] (H*C f32) read and the output row (H*C f32) written. "
    "A lower bound: x_l[j] is read in both passes, the second time from cache."
)


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fail(msg):
    print(f"kinds_bench: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def make_layer(kind):
    from torch_geometric.nn import GATConv, GATv2Conv, TransformerConv
    cls = {"GATConv": GATConv, "GATv2Conv": GATv2Conv, "TransformerConv": TransformerConv}[kind]
    return cls(F_IN, OUT_CH, heads=HEADS, concat=True)


# --------------------------------------------------------------------------- PyG child

def pyg_child(a):
    """Runs in a fresh process: time the forward of one layer; one JSON line on stdout."""
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    layer = make_layer(a.kind)
    layer.load_state_dict(torch.load(os.path.join(a.kind_dir, "pyg_state.pt")), strict=True)
    layer.eval()
    ei = torch.from_numpy(np.load(os.path.join(a.size_dir, "edge_index.npy")))
    x = torch.from_numpy(np.load(os.path.join(a.size_dir, "x.npy")))
    times = []
    with torch.inference_mode():
        out = layer(x, ei)  # warm-up
        for _ in range(a.repeats):
            del out
            t0 = time.perf_counter()
            out = layer(x, ei)
            times.append((time.perf_counter() - t0) * 1e3)
    np.save(os.path.join(a.kind_dir, "pyg_out.npy"), out.numpy())
    print(json.dumps({
        "median_ms": statistics.median(times),
        "times_ms": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }), flush=True)


# --------------------------------------------------------------------------- inputs

def write_inputs(size_dir, n, e, seed):
    import numpy as np
    meta_path = size_dir / "meta.json"
    want = {"num_nodes": n, "num_edges": e, "in_features": F_IN, "seed": seed,
            "generator": "er-default_rng-integers-v1"}
    ei_path, x_path = size_dir / "edge_index.npy", size_dir / "x.npy"
    if meta_path.exists() and ei_path.exists() and x_path.exists():
        try:
            if json.loads(meta_path.read_text()) == want:
                if np.load(ei_path, mmap_mode="r").shape == (2, e):
                    return _count_self_loops(ei_path)
        except (OSError, ValueError):
            pass
    size_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    src = rng.integers(0, n, size=e, dtype=np.int64)
    dst = rng.integers(0, n, size=e, dtype=np.int64)
    ei = np.stack([src, dst])
    del src, dst
    np.save(ei_path, ei)
    del ei
    x = rng.random((n, F_IN), dtype=np.float32)
    x *= 2.0
    x -= 1.0
    np.save(x_path, x)
    del x
    meta_path.write_text(json.dumps(want) + "\n")
    log(f"  wrote {ei_path} and {x_path} in {time.perf_counter() - t0:.1f} s")
    return _count_self_loops(ei_path)


def _count_self_loops(ei_path):
    import numpy as np
    ei = np.load(ei_path, mmap_mode="r")
    return int(np.count_nonzero(ei[0] == ei[1]))


def export_kind(kind, kind_dir, seed):
    import torch
    import distgat
    torch.manual_seed(seed)
    layer = make_layer(kind).eval()
    kind_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        distgat.export_model(layer, kind_dir, activation="none")
    torch.save(layer.state_dict(), kind_dir / "pyg_state.pt")


# --------------------------------------------------------------------------- runs

def run_pyg(size_dir, kind_dir, kind, threads, repeats, timeout):
    out = kind_dir / "pyg_out.npy"
    if out.exists():
        out.unlink()
    cmd = [sys.executable, os.path.abspath(__file__), "--pyg-child",
           "--kind", kind, "--size-dir", str(size_dir), "--kind-dir", str(kind_dir),
           "--threads", str(threads), "--repeats", str(repeats)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s"}
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        if p.returncode < 0:
            sig = signal.Signals(-p.returncode).name
            why = f"killed by {sig}" + (" (likely the OOM killer)" if sig == "SIGKILL" else "")
        else:
            why = f"exit status {p.returncode}"
        tail = p.stderr.strip().splitlines()[-3:]
        return {"ok": False, "error": why + (": " + " | ".join(tail) if tail else ""),
                "child_wall_s": wall}
    try:
        res = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"no JSON from the PyG child; stdout={p.stdout[-300:]!r} "
                                      f"stderr={p.stderr[-300:]!r}"}
    res["ok"] = True
    res["child_wall_s"] = wall
    return res


def run_distgat(binary, size_dir, kind_dir, threads, repeats):
    out, stats = kind_dir / "out.npy", kind_dir / "stats.json"
    cmd = [binary, "infer", "--graph", str(size_dir / "edge_index.npy"),
           "--features", str(size_dir / "x.npy"), "--model", str(kind_dir / "model.json"),
           "--out", str(out), "--threads", str(threads), "--stats-json", str(stats)]
    walls, kernels, transforms, aggregates, rss, phases = [], [], [], [], [], []
    for r in range(repeats):
        if stats.exists():
            stats.unlink()
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise BenchError(f"cannot run {binary}: {e}")
        wall = (time.perf_counter() - t0) * 1e3
        if p.returncode != 0:
            raise BenchError(f"distgat infer failed (status {p.returncode}) on {kind_dir}:\n"
                             f"  command: {' '.join(cmd)}\n  stderr: {p.stderr.strip()}")
        try:
            s = json.loads(stats.read_text())
            layer = s["layers"][0]
            t, a = float(layer["transform_ms"]), float(layer["aggregate_ms"])
            peak = s["peak_rss_bytes"]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            raise BenchError(f"distgat wrote no usable {stats}: {e!r}")
        walls.append(wall)
        transforms.append(t)
        aggregates.append(a)
        kernels.append(t + a)
        rss.append(float(peak) / 2**20 if peak is not None else float("nan"))
        phases.append({k: s.get(k) for k in ("read_graph_ms", "read_features_ms",
                                             "load_model_ms", "build_csr_ms", "write_ms",
                                             "total_ms")})
    med = statistics.median
    return {"wall_ms": med(walls), "walls_ms": walls, "kernel_ms": med(kernels),
            "transform_ms": med(transforms), "aggregate_ms": med(aggregates),
            "kernels_ms": kernels, "peak_rss_mb": max(rss), "phases": phases[-1],
            "command": " ".join(cmd)}


def compare(dist_path, pyg_path):
    import numpy as np
    d = np.load(dist_path, mmap_mode="r")
    p = np.load(pyg_path, mmap_mode="r")
    if d.shape != p.shape:
        return {"max_abs_diff": float("nan"), "within_tol": False,
                "note": f"shapes differ: distgat {d.shape}, PyG {p.shape}"}
    worst, ok, bad = 0.0, True, 0
    step = max(1, (1 << 24) // max(1, d.shape[1]))
    for i in range(0, d.shape[0], step):
        dd = np.asarray(d[i:i + step], dtype=np.float64)
        pp = np.asarray(p[i:i + step], dtype=np.float64)
        diff = np.abs(dd - pp)
        if not np.all(np.isfinite(diff)):
            ok = False
            worst = float("nan")
            break
        worst = max(worst, float(diff.max(initial=0.0)))
        over = diff > ATOL + RTOL * np.abs(pp)
        bad += int(np.count_nonzero(over))
    return {"max_abs_diff": worst, "within_tol": ok and bad == 0, "elements_over_tol": bad}


# --------------------------------------------------------------------------- report

def machine_facts():
    model, cores = "unknown", os.cpu_count()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 2**20
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    import torch
    import torch_geometric
    return {"cpu": model, "logical_cores": cores, "usable_cores": usable,
            "mem_gib": round(mem, 1) if mem else None, "kernel": platform.release(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__}


def fmt_rate(x):
    return "-" if x is None else f"{x:.3g}"


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def print_table(rows):
    head = ["size", "kind", "N", "E", "PyG ms", "PyG edges/s", "distgat wall ms",
            "distgat edges/s", "kernel ms (t+a)", "speed-up whole", "speed-up kernel",
            "PyG RSS MB", "distgat RSS MB", "RSS distgat/PyG", "max abs diff", "match"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 3) + ["---"]) + "|")
    for r in rows:
        pyg, d = r["pyg"], r["distgat"]
        e = r["num_edges"]
        pms = pyg.get("median_ms") if pyg.get("ok") else None
        prss = pyg.get("peak_rss_mb") if pyg.get("ok") else None
        cmp_ = r.get("compare")
        cells = [
            r["size"], r["kind"], f"{r['num_nodes']:,}", f"{e:,}",
            fmt(pms, ".1f") if pms else "FAILED",
            fmt_rate(e / pms * 1e3 if pms else None),
            f"{d['wall_ms']:.0f}", fmt_rate(e / d["wall_ms"] * 1e3),
            f"{d['kernel_ms']:.1f} ({d['transform_ms']:.1f}+{d['aggregate_ms']:.1f})",
            fmt(pms / d["wall_ms"] if pms else None, ".1f") + ("x" if pms else ""),
            fmt(pms / d["kernel_ms"] if pms else None, ".1f") + ("x" if pms else ""),
            fmt(prss, ".0f"), f"{d['peak_rss_mb']:.0f}",
            fmt(d["peak_rss_mb"] / prss if prss else None, ".3f"),
            fmt(cmp_["max_abs_diff"], ".1e") if cmp_ else "-",
            ("yes" if cmp_["within_tol"] else "NO") if cmp_ else "-",
        ]
        print("| " + " | ".join(cells) + " |")
    for r in rows:
        if not r["pyg"].get("ok"):
            print(f"- {r['size']} {r['kind']}: PyG failed: {r['pyg']['error']}")
        c = r.get("compare")
        if c and not c["within_tol"]:
            print(f"- {r['size']} {r['kind']}: outputs differ beyond 1e-4 + 1e-4|pyg| "
                  f"({c.get('elements_over_tol', '?')} elements){'; ' + c['note'] if 'note' in c else ''}")
    v2 = [r for r in rows if r["kind"] == "GATv2Conv"]
    if v2:
        print()
        print(GATV2_BYTES_FORMULA)
        print()
        print("| size | N | E_att | aggregation bytes | aggregate ms | effective GB/s |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in v2:
            g = r["gatv2_traffic"]
            print(f"| {r['size']} | {r['num_nodes']:,} | {g['attention_edges']:,} | "
                  f"{g['bytes'] / 1e9:.3f} GB | {r['distgat']['aggregate_ms']:.1f} | "
                  f"{g['gb_per_s']:.2f} |")


# --------------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--distgat", help="path of the distgat binary (target/release/distgat)")
    p.add_argument("--sizes", default="small,medium", help="comma list of small,medium,large")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma list of " + ",".join(KINDS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-large", type=int, default=None,
                   help="repeats at the large size (default: --repeats)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", help="directory for inputs, models and outputs "
                   "(default: a temporary directory, removed at the end)")
    p.add_argument("--json", help="also write every measurement to this JSON file")
    p.add_argument("--pyg-timeout", type=float, default=None,
                   help="seconds before a PyG child is killed (default: none)")
    p.add_argument("--skip-pyg", action="store_true", help="only run distgat")
    # internal: the PyG child
    p.add_argument("--pyg-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--size-dir", help=argparse.SUPPRESS)
    p.add_argument("--kind-dir", help=argparse.SUPPRESS)
    p.error = fail  # usage errors also exit with status 1
    a = p.parse_args()

    if a.pyg_child:
        pyg_child(a)
        return

    if not a.distgat:
        fail("--distgat is required (the distgat binary, e.g. target/release/distgat)")
    if not a.work_dir:
        import atexit
        import shutil
        import tempfile
        a.work_dir = tempfile.mkdtemp(prefix="kinds-bench-")
        atexit.register(shutil.rmtree, a.work_dir, ignore_errors=True)
    binary = os.path.abspath(a.distgat)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        fail(f"{a.distgat} is not an executable file (build it: cargo build --release -p distgat-cli)")
    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    for s in sizes:
        if s not in SIZES:
            fail(f"unknown size {s!r}; choose from {', '.join(SIZES)}")
    for k in kinds:
        if k not in KINDS:
            fail(f"unknown kind {k!r}; choose from {', '.join(KINDS)}")
    if a.threads < 1 or a.repeats < 1:
        fail("--threads and --repeats must be >= 1")
    work = Path(a.work_dir).resolve()
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"cannot create --work-dir {work}: {e}")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
        import torch_geometric  # noqa: F401
        import distgat
        distgat.export_model  # noqa: B018
    except (ImportError, AttributeError) as e:
        fail(f"run this with the PyG virtualenv that has numpy, torch, torch_geometric and the "
             f"distgat exporter (pip install ./python): {e}")

    facts = machine_facts()
    print(f"machine: {facts['cpu']}, {facts['logical_cores']} logical cores "
          f"({facts['usable_cores']} usable), {facts['mem_gib']} GiB; Linux {facts['kernel']}; "
          f"Python {facts['python']}, torch {facts['torch']}, "
          f"torch_geometric {facts['torch_geometric']}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min)")
    print(f"threads {a.threads}, repeats {a.repeats}"
          + (f" ({a.repeats_large} at large)" if a.repeats_large and "large" in sizes else "")
          + f", seed {a.seed}; F_in {F_IN}, heads {HEADS}, out_channels {OUT_CH}, concat; "
          f"medians; speed-up = PyG forward ms / distgat ms; "
          f"match = |distgat - PyG| <= {ATOL} + {RTOL}|PyG| everywhere", flush=True)

    rows = []
    try:
        for size in sizes:
            n, e = SIZES[size]
            reps = a.repeats_large if (size == "large" and a.repeats_large) else a.repeats
            size_dir = work / size
            log(f"[{size}] N={n:,} E={e:,}")
            loops = write_inputs(size_dir, n, e, a.seed)
            for kind in kinds:
                kind_dir = size_dir / kind
                log(f"[{size}] {kind}: export")
                export_kind(kind, kind_dir, a.seed)
                log(f"[{size}] {kind}: distgat infer x{reps}")
                d = run_distgat(binary, size_dir, kind_dir, a.threads, reps)
                log(f"    wall {d['walls_ms']} ms, kernel {d['kernels_ms']} ms, "
                    f"peak {d['peak_rss_mb']:.0f} MB")
                if a.skip_pyg:
                    pyg = {"ok": False, "error": "skipped (--skip-pyg)"}
                else:
                    log(f"[{size}] {kind}: PyG child x{reps}")
                    pyg = run_pyg(size_dir, kind_dir, kind, a.threads, reps, a.pyg_timeout)
                    log(f"    {pyg}")
                row = {"size": size, "kind": kind, "num_nodes": n, "num_edges": e,
                       "input_self_loops": loops, "repeats": reps, "pyg": pyg, "distgat": d}
                if pyg.get("ok"):
                    row["compare"] = compare(kind_dir / "out.npy", kind_dir / "pyg_out.npy")
                    log(f"    compare {row['compare']}")
                if kind == "GATv2Conv":
                    e_att = e - loops + n
                    nbytes = e_att * (HC * 4 + 4) + n * 2 * HC * 4
                    row["gatv2_traffic"] = {
                        "attention_edges": e_att, "bytes": nbytes,
                        "gb_per_s": nbytes / (d["aggregate_ms"] / 1e3) / 1e9,
                        "formula": GATV2_BYTES_FORMULA}
                rows.append(row)
    except BenchError as e:
        fail(str(e))
    except OSError as e:
        fail(f"I/O error: {e}")

    print()
    print(f"load average at end: {os.getloadavg()[0]:.2f} (1 min)")
    print_table(rows)
    if a.json:
        try:
            Path(a.json).write_text(json.dumps({"machine": facts, "argv": sys.argv,
                                                "threads": a.threads, "rows": rows},
                                               indent=2) + "\n")
        except OSError as e:
            fail(f"cannot write {a.json}: {e}")


if __name__ == "__main__":
    main()
