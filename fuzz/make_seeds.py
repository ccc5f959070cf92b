#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/ from the repository's small files and a few
hand-made inputs (no numpy needed). Run from the repository root: python3 fuzz/make_seeds.py
The protobuf seeds come from `cargo test -p distgat-fuzz-targets -- --ignored write_proto_seeds`."""
import os, shutil, struct

C = "fuzz/corpus"

def put(target, name, data):
    os.makedirs(f"{C}/{target}", exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(f"{C}/{target}/{name}", "wb") as f:
        f.write(data)

def copy(target, name, src):
    os.makedirs(f"{C}/{target}", exist_ok=True)
    shutil.copyfile(src, f"{C}/{target}/{name}")

def npy(descr, shape, body, fortran=False):
    shape_s = "(" + "".join(f"{d}, " for d in shape)[:-2] + ("," if len(shape) == 1 else "") + ")"
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False", shape_s)
    pad = 64 - (10 + len(header) + 1) % 64
    header += " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body

f32 = lambda xs: struct.pack(f"<{len(xs)}f", *xs)
f64 = lambda xs: struct.pack(f"<{len(xs)}d", *xs)
i32 = lambda xs: struct.pack(f"<{len(xs)}i", *xs)
i64 = lambda xs: struct.pack(f"<{len(xs)}q", *xs)

R = "reference"
# npy: features, edge attributes, outputs.
copy("npy_features", "quirks-x.npy", f"{R}/quirks-n40-loops/x.npy")
copy("npy_features", "quirks-out.npy", f"{R}/quirks-n40-loops/expected/out.npy")
put("npy_features", "f64-2x3.npy", npy("<f8", (2, 3), f64([1, 2, 3, 4, 5, 6])))
put("npy_features", "f32-fortran-3x2.npy", npy("<f4", (3, 2), f32([1, 2, 3, 4, 5, 6]), fortran=True))
put("npy_features", "f32-0x5.npy", npy("<f4", (0, 5), b""))
put("npy_features", "f32-nan.npy", npy("<f4", (1, 2), f32([1, float("nan")])))
put("npy_features", "huge-rows.npy", npy("<f4", (10**12, 4), b""))
put("npy_features", "i64-2x2.npy", npy("<i8", (2, 2), i64([1, 2, 3, 4])))
# npy: edge index.
copy("npy_edges", "quirks-edge_index.npy", f"{R}/quirks-n40-loops/edge_index.npy")
put("npy_edges", "i32-2x3.npy", npy("<i4", (2, 3), i32([0, 1, 2, 1, 2, 0])))
put("npy_edges", "i64-fortran-2x3.npy", npy("<i8", (2, 3), i64([0, 1, 1, 2, 2, 0]), fortran=True))
put("npy_edges", "negative.npy", npy("<i8", (2, 1), i64([0, -1])))
put("npy_edges", "huge-edges.npy", npy("<i8", (2, 10**12), b""))
put("npy_edges", "empty.npy", npy("<i8", (2, 0), b""))
# npy: points.
put("npy_points", "f32-4x2.npy", npy("<f4", (4, 2), f32([0, 0, 1, 0, 0, 1, 1, 1])))
put("npy_points", "f64-fortran-3x3.npy", npy("<f8", (3, 3), f64(range(9)), fortran=True))
put("npy_points", "zero-dim.npy", npy("<f4", (3, 0), b""))
put("npy_points", "huge.npy", npy("<f4", (10**12, 3), b""))
# Text edge lists.
put("edgelist", "space.txt", "# comment\n0 1\n1 2\n2 0\n")
put("edgelist", "csv.csv", "\ufeffsrc,dst\n0,1\n1,2\n")
put("edgelist", "csv-plain.csv", "0,1\r\n1,2\r\n% other comment\n\n2,0\n")
put("edgelist", "empty-field.csv", "0,,1\n")
put("edgelist", "tabs.tsv", "0\t1\n1\t9223372036854775807\n")
# METIS.
put("metis", "triangle.graph", "% triangle\n3 3\n2 3\n1 3\n1 2\n")
put("metis", "weights.graph", "3 2 011 2\n1 1 2 5\n2 3 1 5 3 7\n4 5 2 7\n")
put("metis", "sizes.graph", "2 1 100\n7 2\n8 1\n")
put("metis", "isolated.graph", "4 1\n2\n1\n\n\n")
with open("data/4elt/4elt.graph") as f:
    lines = f.read().splitlines()[:1]
put("metis", "4elt-header-only.graph", "\n".join(lines) + "\n")
# Matrix Market.
put("mtx", "pattern-general.mtx", "%%MatrixMarket matrix coordinate pattern general\n% c\n3 3 3\n1 2\n2 3\n3 1\n")
put("mtx", "real-symmetric.mtx", "%%MatrixMarket matrix coordinate real symmetric\n3 3 2\n2 1 0.5\n3 3 1e-3\n")
put("mtx", "integer.mtx", "%%MatrixMarket matrix coordinate integer general\n2 4 1\n1 4 -7\n")
put("mtx", "array.mtx", "%%MatrixMarket matrix array real general\n2 2\n1\n2\n3\n4\n")
# Models: every reference model JSON; the weights under a fixed pyg model JSON.
for case in sorted(os.listdir(R)):
    if os.path.isfile(f"{R}/{case}/model.json"):
        copy("model_json", f"{case}.json", f"{R}/{case}/model.json")
    if os.path.isfile(f"{R}/{case}/model.safetensors") and os.path.getsize(f"{R}/{case}/model.safetensors") < 20000:
        copy("safetensors", f"{case}.safetensors", f"{R}/{case}/model.safetensors")
copy("safetensors", "quirks-layer0.safetensors", f"{R}/quirks-n40-loops/layer0.safetensors")
# Partition directory (fuzz/fixtures/partition: quirks-n40-loops in 2 parts).
copy("partition_manifest", "manifest.json", "fuzz/fixtures/partition/manifest.json")
copy("partition_shard", "part-00000.safetensors", "fuzz/fixtures/partition/part-00000.safetensors")
copy("partition_shard", "part-00001.safetensors", "fuzz/fixtures/partition/part-00001.safetensors")
