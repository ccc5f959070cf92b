#!/usr/bin/env python3
"""Issue 13's recovery bench: what a worker loss costs a `distgat run` job.

The whole `distgat run --workers 2 --spares 1 --partition P` process on R-MAT 1M nodes /
10M edges (128 features, 2 GAT layers of 4 x 32: the `distgat-bench run --size large`
case, generated once by bench/shard_source_bench.sh), in rounds of three runs,
interleaved so that all see the same load:

  clean   no kill, --recovery job (no rows kept: the baseline of time and memory)
  keep    no kill, --recovery part (the default: every part keeps the halo rows it sends)
  kill    --spares 1, the busiest worker SIGKILLed at a random moment between 25% and
          75% of the clean job's time after the workers exist; the spare takes its part

Prints per run the wall time, the summary's recoveries and the workers' peak RSS (VmHWM,
sampled every 20 ms), then the targets:

  recovery time (kill - clean, medians) <= the lost part's share of the job
                                            (clean job seconds / parts) + 5 s
  peak RSS per worker (keep - clean)    <= one layer's halo (the largest per-layer halo
                                            bytes a part receives, from the summary)

Every output is compared byte for byte with the first clean run's.

  python3 bench/recovery_bench.py [--rounds 3] [--bin target/release/distgat]
                                  [--case /tmp/shard-source-bench/run-rmat-large]
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def children(pid):
    """Every descendant pid of `pid`."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for c in f.read().split():
                    out.append(int(c))
                    out.extend(children(int(c)))
    except OSError:
        pass
    return out


def role(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        return args[1].decode() if len(args) > 1 else ""
    except OSError:
        return ""


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return -1


def hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def run_once(args, work, tag, spares, kill_after, recovery="part"):
    out = os.path.join(work, f"{tag}.npy")
    summary = os.path.join(work, f"{tag}.json")
    case = args.case
    cmd = [
        args.bin, "run",
        "--graph", f"{case}/edge_index.npy",
        "--features", f"{case}/x.npy",
        "--model", f"{case}/model.json",
        "--partition", f"{case}/partition-2",
        "--out", out, "--summary-json", summary,
        "--workers", "2", "--spares", str(spares), "--recovery", recovery,
        "--threads-per-worker", "1",
    ]
    err = open(os.path.join(work, f"{tag}.stderr"), "w")
    start = time.monotonic()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    peak = {}
    killed = None
    workers_seen_at = None
    while child.poll() is None:
        workers = [p for p in children(child.pid) if role(p) == "worker"]
        for p in workers:
            h = hwm_kib(p)
            if h is not None:
                peak[p] = max(peak.get(p, 0), h)
        if workers_seen_at is None and len(workers) == 2 + spares:
            workers_seen_at = time.monotonic()
        if (kill_after is not None and killed is None and workers_seen_at is not None
                and time.monotonic() - workers_seen_at >= kill_after):
            busiest = max(workers, key=cpu_ticks)
            os.kill(busiest, signal.SIGKILL)
            killed = (busiest, time.monotonic() - start)
        time.sleep(0.02)
    wall = time.monotonic() - start
    err.close()
    if child.returncode != 0:
        sys.exit(f"{tag} failed (exit {child.returncode}): see {work}/{tag}.stderr")
    with open(summary) as f:
        s = json.load(f)
    return wall, s, peak, killed, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bin", default=os.path.join(repo, "target/release/distgat"))
    ap.add_argument("--case", default="/tmp/shard-source-bench/run-rmat-large")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if not os.path.exists(f"{args.case}/partition-2/manifest.json"):
        sys.exit(f"{args.case}/partition-2 is missing: run bench/shard_source_bench.sh 1 first "
                 "(it generates the case), or pass --case")
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    print(f"seed {seed}")
    work = tempfile.mkdtemp(prefix="recovery-bench-")
    times = {"clean": [], "keep": [], "kill": []}
    jobs = {"clean": [], "keep": [], "kill": []}
    peaks = {"clean": [], "keep": []}
    halo = []
    lost = []
    reference = None
    # One clean run first, not counted: the page cache warms, and the kill moments are
    # drawn from a warm job's time.
    _, s, _, _, out = run_once(args, work, "warmup", 0, None, "job")
    with open(out, "rb") as f:
        reference = f.read()
    os.remove(out)
    jobs["clean"].append(s["seconds"])
    print(f"warm-up  job {s['seconds']:6.2f} s (not counted)")
    missed = 0
    for r in range(args.rounds):
        for mode in ("clean", "keep", "kill"):
            kill_after = None
            if mode == "kill":
                clean_job = statistics.median(jobs["clean"])
                kill_after = clean_job * rng.uniform(0.25, 0.75)
            tag = f"{mode}-{r}"
            wall, s, peak, killed, out = run_once(
                args, work, tag, 1 if mode == "kill" else 0, kill_after,
                "job" if mode == "clean" else "part")
            with open(out, "rb") as f:
                data = f.read()
            if reference is None:
                reference = data
            elif data != reference:
                sys.exit(f"{tag}: output differs from the first clean run's")
            os.remove(out)
            rec = s.get("recoveries", [])
            if mode == "kill" and not rec:
                missed += 1
            else:
                times[mode].append(wall)
                jobs[mode].append(s["seconds"])
            if mode == "clean" and r == 0:
                jobs["clean"].pop(0)  # the warm-up's
            line = f"{tag:8s} wall {wall:6.2f} s  job {s['seconds']:6.2f} s"
            if mode in peaks:
                busy = sorted(peak.values(), reverse=True)[:2]
                peaks[mode].append(max(busy) / 1024)
                line += f"  worker peak RSS {', '.join(f'{v / 1024:.0f}' for v in busy)} MiB"
            if mode == "clean":
                # The most halo bytes one part receives in one layer: what the other part
                # sent it (two parts).
                per_layer = {}
                for w in s["workers"]:
                    for layer in w["layers"]:
                        per_layer.setdefault(layer["layer"], []).append(layer["halo_bytes_sent"])
                halo.append(max(max(v) for v in per_layer.values()) / 2**20)
            if killed:
                line += f"  killed pid {killed[0]} at {killed[1]:.2f} s"
            for x in rec:
                line += (f"  [{x['restarted']} restart of part {x['part']}: "
                         f"{x['lost_worker']} -> {x['replacement']}, detected at "
                         f"{x['detected_after_s']:.2f} s: {x['detail']}]")
                lost.append(x)
            if mode == "kill" and not rec:
                line += "  (the kill missed the job: no recovery; not counted)"
            print(line, flush=True)
    m = {k: statistics.median(v) for k, v in times.items()}
    clean_job = statistics.median(jobs["clean"])
    share = clean_job / 2
    cost = m["kill"] - m["clean"]
    print()
    print("outputs byte-identical in every run")
    for k, v in m.items():
        print(f"{k:6s} median wall {v:6.2f} s over {len(times[k])} runs")
    print(f"keep / clean          {m['keep'] / m['clean']:.3f}x (keeping sent rows, no loss)")
    print(f"recovery time         {cost:.2f} s (kill - clean medians); target <= "
          f"{share:.2f} + 5 = {share + 5:.2f} s (lost part's share of the {clean_job:.2f} s job "
          f"+ 5 s): {'met' if cost <= share + 5 else 'NOT met'}")
    extra = statistics.median(peaks["keep"]) - statistics.median(peaks["clean"])
    one_halo = statistics.median(halo)
    print(f"worker peak RSS       clean {statistics.median(peaks['clean']):.0f} MiB, keep "
          f"{statistics.median(peaks['keep']):.0f} MiB: +{extra:.0f} MiB; target <= one "
          f"layer's halo {one_halo:.0f} MiB: {'met' if extra <= one_halo else 'NOT met'}")
    print(f"part restarts {sum(x['restarted'] == 'part' for x in lost)} of {len(lost)} recoveries;"
          f" {missed} kill(s) missed the job")


if __name__ == "__main__":
    main()
