#!/usr/bin/env python3
"""``distgat neighbours --knn`` against scipy and scikit-learn (opt-in, not in CI).

Up to three workloads, each timed as the median of R runs, distgat and the baseline interleaved
(A B A B ...) so that both see the same load on a shared machine (the load average is
printed before and after each workload):

1. low dimension: N = 1M uniform [0, 1)^3 float32 points, k = 16.
   - distgat: the whole process ``distgat neighbours --points P --knn 16 --threads T
     --out E.npy``, wall time around ``subprocess.run`` (reading the points, the k-d
     tree, exact re-ranking, writing the int64 [2, E] file);
   - scipy: ``cKDTree(points).query(points, k=17, workers=T)`` in this process, build
     plus query (17 because the query point itself comes back first), no file I/O.
2. high dimension: N = 100k uniform [0, 1)^128 float32 points, k = 16.
   - distgat: as above (blocked float32 GEMM candidates, exact float64 re-rank);
   - scikit-learn: ``NearestNeighbors(n_neighbors=17, algorithm='brute',
     n_jobs=T).fit(points).kneighbors(points)``, fit plus query.

3. distributed (``--distributed``): the same 1M 3-D points, k = 16, the attention model
   of ``reference/knn-gatv2-n400`` over random 16-wide features: the whole process
   ``distgat run --points P --knn 16 --workers 2 --threads-per-worker 1`` against the
   whole single-process ``distgat infer --points P --knn 16 --threads 2``, interleaved;
   the outputs must be byte-identical. Prints each part's point bytes fetched from its
   peer against the bytes of fetched points that became neighbours.

The comparison is generous to the Python side: its timings exclude interpreter start-up
and file I/O, distgat's include them. distgat's edges are also checked against scipy's
neighbour sets for the 3-D case (identical up to ties at the k-th distance, which have
probability ~0 for random float32 points).

Usage (in a virtualenv with numpy, scipy and scikit-learn):

    python bench/neighbours_bench.py --distgat target/release/distgat \\
        [--threads 2] [--repeats 3] [--n-low 1000000] [--n-high 100000] [--work-dir DIR]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def interleaved(fn_a, fn_b, repeats):
    """Runs A B A B ... (``repeats`` each), so that both see the same machine load; returns
    (median A, times A, last result A, median B, times B, last result B)."""
    ta, tb = [], []
    ra = rb = None
    for _ in range(repeats):
        for fn, times, slot in ((fn_a, ta, 0), (fn_b, tb, 1)):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
            if slot == 0:
                ra = result
            else:
                rb = result
    return statistics.median(ta), ta, ra, statistics.median(tb), tb, rb


def load():
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_distgat(binary, points_path, k, threads, out_path):
    def go():
        subprocess.run(
            [binary, "neighbours", "--points", points_path, "--knn", str(k),
             "--threads", str(threads), "--out", out_path],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return go


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--distgat", required=True, help="path of the distgat binary (release build)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every tool")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per tool (median reported)")
    ap.add_argument("--k", type=int, default=16, help="neighbours per point")
    ap.add_argument("--n-low", type=int, default=1_000_000, help="points in the 3-D workload")
    ap.add_argument("--n-high", type=int, default=100_000, help="points in the 128-D workload")
    ap.add_argument("--dim-high", type=int, default=128, help="dimension of the high-D workload")
    ap.add_argument("--work-dir", default=None, help="where to write the inputs (default: a temp dir)")
    ap.add_argument("--skip-high", action="store_true", help="only the 3-D workload")
    ap.add_argument("--skip-low", action="store_true", help="only the high-D workload")
    ap.add_argument("--distributed", action="store_true",
                    help="also run --points on 2 workers against infer --points (needs --model)")
    ap.add_argument("--model", default=None,
                    help="model for --distributed (reference/knn-gatv2-n400/model.json)")
    args = ap.parse_args()

    from scipy.spatial import cKDTree
    from sklearn.neighbors import NearestNeighbors
    import scipy
    import sklearn

    work = args.work_dir or tempfile.mkdtemp(prefix="nbr-bench-")
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(12345)
    k, t, r = args.k, args.threads, args.repeats
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}; "
          f"threads {t}, repeats {r}, k {k}; inputs in {work}")

    rows = []

    # 1. 3-D, k-d trees.
    pts = rng.random((args.n_low, 3), dtype=np.float32)
    p_path = os.path.join(work, "low.npy")
    np.save(p_path, pts)
    if not args.skip_low:  # the points are still drawn: the high-D ones come next
        e_path = os.path.join(work, "low_edges.npy")
        def scipy_knn():
            tree = cKDTree(pts)
            return tree.query(pts, k=k + 1, workers=t)
        print(f"3-D start: {load()}", flush=True)
        d_med, d_all, _, s_med, s_all, (_, idx) = interleaved(
            run_distgat(args.distgat, p_path, k, t, e_path), scipy_knn, r)
        print(f"3-D end: {load()}", flush=True)
        edges = np.load(e_path)
        ok = check_against(edges, idx, k)
        rows.append((f"{args.n_low:,} x 3-D, k={k}", "scipy cKDTree", d_med, s_med, d_all, s_all, ok))

    # 3. Distributed: run --points on 2 workers against infer --points.
    if args.distributed:
        if not args.model:
            sys.exit("--distributed needs --model (reference/knn-gatv2-n400/model.json)")
        x = rng.standard_normal((args.n_low, 16), dtype=np.float32)
        x_path = os.path.join(work, "low_x.npy")
        np.save(x_path, x)
        outs = {w: os.path.join(work, f"dist_out_{w}.npy") for w in ("infer", "run")}
        summary = os.path.join(work, "dist_summary.json")
        common = ["--points", p_path, "--knn", str(k), "--features", x_path,
                  "--model", args.model]
        def infer():
            subprocess.run([args.distgat, "infer", *common, "--threads", str(t),
                            "--out", outs["infer"]],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        def run():
            subprocess.run([args.distgat, "run", *common, "--workers", "2",
                            "--threads-per-worker", str(max(1, t // 2)),
                            "--out", outs["run"], "--summary-json", summary],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"distributed start: {load()}", flush=True)
        r_med, r_all, _, i_med, i_all, _ = interleaved(run, infer, r)
        print(f"distributed end: {load()}", flush=True)
        with open(outs["infer"], "rb") as a, open(outs["run"], "rb") as b:
            same = a.read() == b.read()
        import json
        parts = json.load(open(summary))["neighbourhood"]["parts"]
        for p in parts:
            print(f"  part {p['part']}: {p['points']} points, {p['boundary_centres']} boundary "
                  f"centres, {p['bytes_fetched']} point bytes fetched, {p['bytes_needed']} of "
                  f"them neighbours")
        rows.append((f"{args.n_low:,} x 3-D, k={k}, GATv2 x2: run --workers 2",
                     "distgat infer", r_med, i_med, r_all, i_all,
                     "outputs byte-identical" if same else "OUTPUTS DIFFER"))

    # 2. 128-D, brute force.
    if not args.skip_high:
        pts = rng.random((args.n_high, args.dim_high), dtype=np.float32)
        p_path = os.path.join(work, "high.npy")
        np.save(p_path, pts)
        e_path = os.path.join(work, "high_edges.npy")
        def sk_knn():
            nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", n_jobs=t).fit(pts)
            return nn.kneighbors(pts)
        print(f"high-D start: {load()}", flush=True)
        d_med, d_all, _, s_med, s_all, (_, idx) = interleaved(
            run_distgat(args.distgat, p_path, k, t, e_path), sk_knn, r)
        print(f"high-D end: {load()}", flush=True)
        edges = np.load(e_path)
        ok = check_against(edges, idx, k)
        rows.append((f"{args.n_high:,} x {args.dim_high}-D, k={k}",
                     "sklearn brute", d_med, s_med, d_all, s_all, ok))

    print()
    print(f"| workload | baseline | distgat s (median) | baseline s (median) | distgat / baseline | same neighbour sets |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name, base, d, s, d_all, s_all, ok in rows:
        print(f"| {name} | {base} | {d:.2f} | {s:.2f} | {d / s:.2f} | {ok} |")
    print()
    for name, base, d, s, d_all, s_all, ok in rows:
        print(f"{name}: distgat runs {[round(x, 2) for x in d_all]}, {base} runs {[round(x, 2) for x in s_all]}")


def check_against(edges, idx, k):
    """Fraction of centres whose distgat neighbour set equals the baseline's k nearest
    (baseline rows: the point itself plus k others, in some order)."""
    n = idx.shape[0]
    src, dst = edges
    if len(src) != n * k or not np.all(dst == np.repeat(np.arange(n), k)):
        return "shape differs"
    ours = np.sort(src.reshape(n, k), axis=1)
    theirs = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        row = idx[i][idx[i] != i]
        theirs[i] = np.sort(row[:k])
    same = np.all(ours == theirs, axis=1)
    return f"{same.mean() * 100:.4f}% of centres"


if __name__ == "__main__":
    sys.exit(main())
