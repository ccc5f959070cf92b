#!/usr/bin/env python3
"""End-to-end example of the distgat client API: register a graph, run a job, fetch results.

    python example.py --coordinator 127.0.0.1:50051 \\
        --graph data/cora/edges.npy --features data/cora/features.npy \\
        --normalize-features --model reference/cora-gat/model.json \\
        --labels data/cora/labels.npy --test-idx data/cora/test_idx.npy

--graph, --features and --model are paths on the coordinator, relative to its data root
(with --upload, --graph and --features are local files streamed to it instead).
--out, --compare, --labels and --test-idx are local files.

Exit status: 0 on success; 1 when the job does not succeed or a check fails (subset fetch,
--compare); 2 on a usage error or a failed RPC.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
import numpy as np

try:
    from distgat import client as distgat_client
    from distgat.client import pb, state_name
except ImportError as _err:  # the package is not installed: say so after --help
    _IMPORT_ERROR: ImportError | None = _err
else:
    _IMPORT_ERROR = None

SUBSET = [0, 5, 17]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get("DISTGAT_COORDINATOR", "")
    p = argparse.ArgumentParser(
        description="Run one distgat job through the coordinator's client API.",
    )
    p.add_argument(
        "--coordinator",
        default=env,
        metavar="HOST:PORT",
        help="coordinator address (default: $DISTGAT_COORDINATOR)",
    )
    p.add_argument("--graph", required=True, help="edge file (server-side path unless --upload)")
    p.add_argument(
        "--features", required=True, help="feature matrix .npy (server-side path unless --upload)"
    )
    p.add_argument(
        "--edge-features",
        default="",
        help="edge attributes .npy [E, D] for edge_dim layers (server-side path unless --upload)",
    )
    p.add_argument(
        "--model",
        required=True,
        help="model JSON, pyg-attention-model-v1 or gat-model-v1 (server-side path)",
    )
    p.add_argument(
        "--graph-format",
        default="",
        help="npy | edgelist | metis | mtx; empty: from the extension (required with --upload)",
    )
    p.add_argument("--name", default="", help="graph label shown in listings")
    p.add_argument(
        "--normalize-features", action="store_true", help="PyG NormalizeFeatures on the inputs"
    )
    p.add_argument("--parts", type=int, default=0, help="number of parts; 0 = one per worker")
    p.add_argument("--method", default="", help="metis | random | range; empty = metis")
    p.add_argument("--threads-per-worker", type=int, default=0, help="0 = all of each worker's cores")
    p.add_argument(
        "--attention",
        action="store_true",
        help="keep attention coefficients; print node 0's top-3 neighbours in layer 0",
    )
    p.add_argument(
        "--upload",
        action="store_true",
        help="stream local --graph/--features files instead of registering server-side paths",
    )
    p.add_argument("--out", metavar="FILE.npy", help="save the fetched output (np.save)")
    p.add_argument(
        "--compare",
        metavar="REF.npy",
        help="exit 1 unless the fetched output equals this array exactly",
    )
    p.add_argument("--labels", metavar="LABELS.npy", help="labels, for test accuracy")
    p.add_argument("--test-idx", metavar="IDX.npy", help="test node ids, for test accuracy")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="deadline in seconds of each unary call and fetch (default: 300)"
    )
    args = p.parse_args(argv)
    if not args.coordinator:
        p.error("no coordinator: pass --coordinator HOST:PORT or set DISTGAT_COORDINATOR")
    if args.upload and not args.graph_format:
        p.error("--upload needs --graph-format (npy | edgelist | metis | mtx)")
    if (args.labels is None) != (args.test_idx is None):
        p.error("--labels and --test-idx go together")
    if args.parts < 0:
        p.error("--parts must be >= 0")
    return args


def progress_line(info: pb.JobInfo) -> str:
    line = f"[{info.seconds:7.2f}s] {state_name(info.state)}"
    if info.state == pb.JOB_STATE_QUEUED:
        line += f" (queue position {info.queue_position})"
    if info.progress:
        layers = info.layers or "?"
        parts = " ".join(
            f"{p.part}:{p.layers_done}/{layers}" for p in sorted(info.progress, key=lambda p: p.part)
        )
        line += f"  parts {parts}"
    if info.error:
        line += f"  error: {info.error}"
    return line


def print_attention(resp: pb.FetchAttentionResponse) -> None:
    print(f"attention, layer {resp.layer} ({resp.heads} heads):")
    for node in resp.nodes:
        print(f"  node {node.node} (in-degree {node.in_degree}), top {len(node.top)}:")
        for nb in node.top:
            alphas = ", ".join(f"{a:.4f}" for a in nb.alpha)
            self_loop = " (self loop)" if nb.source == node.node else ""
            print(
                f"    source {nb.source}{self_loop}: mean alpha {nb.mean_alpha:.4f} "
                f"[{alphas}] (edge {nb.edge})"
            )


def run(args: argparse.Namespace) -> int:
    failed = False
    with distgat_client.connect(args.coordinator, timeout=args.timeout) as client:
        status = client.cluster_status()
        healthy = sum(1 for w in status.workers if w.healthy)
        print(
            f"coordinator {args.coordinator}: protocol v{status.protocol_version}, "
            f"{len(status.workers)} worker(s) ({healthy} healthy), "
            f"{status.queued_jobs} queued job(s)"
        )

        if args.upload:
            graph = client.upload_graph(
                args.graph,
                args.features,
                args.graph_format,
                name=args.name,
                edge_features_path=args.edge_features,
            )
        else:
            graph = client.register_graph(
                args.graph,
                args.features,
                graph_format=args.graph_format,
                name=args.name,
                edge_features=args.edge_features,
            )
        print(
            f"graph {graph.graph_id} ({graph.source}): {graph.nodes} nodes, {graph.edges} edges, "
            f"{graph.feature_width} features"
        )

        job = client.submit(
            graph.graph_id,
            args.model,
            parts=args.parts,
            method=args.method,
            normalize_features=args.normalize_features,
            attention=args.attention,
            threads_per_worker=args.threads_per_worker,
        )
        print(f"job {job.job_id} submitted")

        for info in client.watch(job.job_id):
            print(progress_line(info), flush=True)
        job = client.get_job(job.job_id)
        if job.state != pb.JOB_STATE_SUCCEEDED:
            print(
                f"job {job.job_id} ended {state_name(job.state)}: {job.error or '(no error given)'}",
                file=sys.stderr,
            )
            return 1
        print(
            f"job {job.job_id} succeeded in {job.seconds:.2f}s: {job.parts} part(s), "
            f"{job.layers} layer(s), output [{job.output_rows}, {job.output_width}]"
        )

        out = client.fetch_output(job.job_id)
        print(f"fetched output: shape {out.shape}, dtype {out.dtype}")
        if out.shape != (job.output_rows, job.output_width):
            print(
                f"FAIL: output shape {out.shape} != job's [{job.output_rows}, {job.output_width}]",
                file=sys.stderr,
            )
            failed = True

        subset = [n for n in SUBSET if n < out.shape[0]]
        if subset:
            rows = client.fetch_output(job.job_id, nodes=subset)
            if np.array_equal(rows, out[subset]):
                print(f"subset fetch of nodes {subset}: equal to the full fetch")
            else:
                print(f"FAIL: subset fetch of nodes {subset} differs from the full fetch",
                      file=sys.stderr)
                failed = True

        if args.attention:
            print_attention(client.fetch_attention(job.job_id, layer=0, nodes=[0], top_k=3))

    if args.out:
        np.save(args.out, out)
        print(f"wrote {args.out}")

    if args.labels:
        labels = np.load(args.labels)
        test_idx = np.load(args.test_idx)
        pred = np.argmax(out, axis=1)
        correct = int(np.count_nonzero(pred[test_idx] == labels[test_idx]))
        total = len(test_idx)
        print(f"test accuracy: {correct / total:.4f} ({correct}/{total})")

    if args.compare:
        ref = np.load(args.compare)
        if ref.shape != out.shape:
            print(f"FAIL: output shape {out.shape} != reference shape {ref.shape}",
                  file=sys.stderr)
            failed = True
        elif np.array_equal(out, ref):
            print(f"output equals {args.compare} exactly")
        else:
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            differing = int(np.count_nonzero(out != ref))
            print(
                f"FAIL: output differs from {args.compare}: max abs diff {np.nanmax(diff):.6g} "
                f"({differing} of {out.size} values differ)",
                file=sys.stderr,
            )
            failed = True

    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if _IMPORT_ERROR is not None:
        print(f"error: {_IMPORT_ERROR}", file=sys.stderr)
        return 2
    try:
        return run(args)
    except grpc.RpcError as err:
        print(f"error: RPC failed: {err.code().name}: {err.details()}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
