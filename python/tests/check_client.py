#!/usr/bin/env python3
"""Checks distgat.client against a running coordinator (DISTGAT_COORDINATOR, data root =
the repository root, at least one worker), from the repository root:

    python python/tests/check_client.py REFERENCE.npy

REFERENCE.npy is `distgat infer`'s output on Cora (data/cora, reference/cora-gat, row
normalisation). Checks: the committed stubs import; a Cora job's fetched output equals the
reference exactly (all rows, a range, a list in the order asked); explain gives each
node's top neighbours, largest first, with coefficients in (0, 1]; deletion refuses what
is in use (FAILED_PRECONDITION) and unknown ids (NOT_FOUND), and frees the job's output;
a kNN graph built through register_neighbourhood has the reference case's edges
(fetch_edges) and a job over it matches PyG's float64 output within 1e-4.
Exits 1 on the first failed check.
"""

from __future__ import annotations

import os
import sys

import grpc
import numpy as np

from distgat import client as distgat_client


def check(ok: bool, what: str) -> None:
    if not ok:
        print(f"check_client.py: FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok  {what}")


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    reference = np.load(sys.argv[1])
    address = os.environ["DISTGAT_COORDINATOR"]
    with distgat_client.connect(address, timeout=120) as c:
        c.wait_ready()
        g = c.register_graph("data/cora/edges.npy", "data/cora/features.npy", name="check")
        job = c.submit(g.graph_id, "reference/cora-gat/model.json",
                       normalize_features=True, attention=True)
        states = [distgat_client.state_name(i.state) for i in c.watch(job.job_id)]
        check(states[-1] == "SUCCEEDED", f"the job succeeded ({' -> '.join(states)})")

        out = c.fetch_output(job.job_id)
        check(out.dtype == np.float32 and np.array_equal(out, reference),
              "fetched output equals distgat infer's, bit for bit")
        check(np.array_equal(c.fetch_output(job.job_id, start=100, end=200), reference[100:200]),
              "a range of rows")
        check(np.array_equal(c.fetch_output(job.job_id, nodes=[17, 0, 5]), reference[[17, 0, 5]]),
              "a list of rows, in the order asked")

        up = c.upload_graph("data/cora/edges.npy", "data/cora/features.npy", graph_format="npy")
        check((up.nodes, up.edges) == (2708, 10556), "upload_graph streams a local graph")
        check(c.delete_graph(up.graph_id).bytes_freed > 0, "deleting an uploaded graph frees its files")

        top = c.explain(job.job_id, nodes=[0, 5], layer=0, top_k=3)
        check(sorted(top) == [0, 5] and all(1 <= len(v) <= 3 for v in top.values()),
              "explain: up to 3 neighbours for each node asked")
        for node, pairs in top.items():
            weights = [w for _, w in pairs]
            check(weights == sorted(weights, reverse=True) and all(0 < w <= 1 for w in weights),
                  f"explain: node {node}'s coefficients are in (0, 1], largest first")

        check(code_of(lambda: c.delete_graph(g.graph_id)) == grpc.StatusCode.FAILED_PRECONDITION,
              "a graph a job uses cannot be deleted")
        freed = c.delete_job(job.job_id).bytes_freed
        check(freed >= reference.nbytes, f"deleting the job freed {freed} bytes")
        check(code_of(lambda: c.get_job(job.job_id)) == grpc.StatusCode.NOT_FOUND,
              "a deleted job is gone")
        check(code_of(lambda: c.delete_job("job-none")) == grpc.StatusCode.NOT_FOUND,
              "deleting an unknown job is NOT_FOUND")
        check(g.graph_id in [x.graph_id for x in c.list_graphs()], "list_graphs lists the graph")
        check(any(p.graph_id == g.graph_id for p in c.list_partitions()),
              "list_partitions lists the partition the job made")

        # A graph built from points: its edges are the reference case's expected edges.
        case = "reference/knn-gatv2-n400"
        nb = c.register_neighbourhood(f"{case}/x.npy", points=f"{case}/points.npy", knn=8)
        check((nb.nodes, nb.edges, nb.neighbourhood) == (400, 3200, "knn:8"),
              f"register_neighbourhood builds knn:8 on {nb.spatial_parts} parts")
        edges = c.fetch_edges(nb.graph_id)
        check(edges.dtype == np.int64 and np.array_equal(edges, np.load(f"{case}/expected/edges.npy")),
              "fetch_edges returns the reference's expected edges")
        nb_job = c.submit(nb.graph_id, f"{case}/model.json")
        states = [distgat_client.state_name(i.state) for i in c.watch(nb_job.job_id)]
        check(states[-1] == "SUCCEEDED", "a job over the built neighbourhood succeeded")
        expected = np.load(f"{case}/expected/out_f64.npy")
        got = c.fetch_output(nb_job.job_id).astype(np.float64)
        check(bool(np.all(np.abs(got - expected) <= 1e-4 + 1e-4 * np.abs(expected))),
              "its output is within 1e-4 of PyG's float64 output")
        check(code_of(lambda: c.register_neighbourhood("data/cora/features.npy", knn=4,
                                                       points=f"{case}/points.npy"))
              == grpc.StatusCode.INVALID_ARGUMENT,
              "points whose rows differ from the features' are INVALID_ARGUMENT")
    print("check_client.py: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
