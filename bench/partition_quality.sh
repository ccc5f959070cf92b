#!/usr/bin/env bash
# Opt-in partition benchmark (not run by CI): METIS quality against Debian's gpmetis 5.1,
# and --method stream (Fennel) against METIS, with time and peak memory.
#
#   bench/partition_quality.sh DISTGAT GRAPH.graph [EDGES.npy ...]
#
# DISTGAT: the distgat binary; GRAPH.graph: a METIS-format graph (gpmetis reads it, distgat
# reads the same file). Needs `gpmetis` on PATH (apt-get install metis). Prints, for
# K = 2, 4, 8, 16, 32, the mean edge cut over seeds 0..7 of distgat (--trials 1 and 4) and
# of `gpmetis -seed=S`. Then, for GRAPH and every EDGES.npy, METIS vs stream: edge cut,
# communication volume, wall time and peak RSS of the whole `distgat partition` process.
# Issue 15's graphs are METIS's own sample graphs: 4elt (data/4elt/4elt.graph), copter2 and
# mdual (METIS's graphs/ folder, e.g. `apt-get source metis` then metis-5.1.0/graphs/; not
# committed, 11 MB).
set -euo pipefail
distgat=${1:?usage: $0 DISTGAT GRAPH.graph [EDGES.npy ...]}
graph=${2:?usage: $0 DISTGAT GRAPH.graph [EDGES.npy ...]}
shift 2
command -v gpmetis >/dev/null || { echo "gpmetis not found: apt-get install metis" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cut_of() { python3 -c "import json,sys; print(json.load(sys.stdin)['stats']['edge_cut'])"; }

echo "graph K distgat(1) distgat(--trials 4) gpmetis-5.1 ratio(1) ratio(4)"
cp "$graph" "$tmp/g.graph"
for k in 2 4 8 16 32; do
  d1=0; d4=0; g=0
  for s in 0 1 2 3 4 5 6 7; do
    c=$("$distgat" partition --graph "$graph" --parts "$k" --seed "$s" --out "$tmp/p" --force --json 2>/dev/null | cut_of)
    c4=$("$distgat" partition --graph "$graph" --parts "$k" --seed "$s" --trials 4 --out "$tmp/p" --force --json 2>/dev/null | cut_of)
    gc=$(cd "$tmp" && gpmetis -seed="$s" g.graph "$k" | sed -n 's/.*Edgecut: \([0-9]*\),.*/\1/p')
    d1=$((d1 + c)); d4=$((d4 + c4)); g=$((g + gc))
  done
  awk -v n="$(basename "$graph")" -v k="$k" -v a="$d1" -v b="$d4" -v g="$g" \
    'BEGIN { printf "%s %d %.1f %.1f %.1f %.3f %.3f\n", n, k, a/8, b/8, g/8, a/g, b/g }'
done

echo
echo "graph K method edge_cut comm_volume seconds peak_MiB"
for input in "$graph" "$@"; do
  for k in 2 8 32; do
    for m in metis stream; do
      /usr/bin/time -f "%e %M" -o "$tmp/time" "$distgat" partition --graph "$input" --parts "$k" \
        --method "$m" --out "$tmp/p" --force --json 2>/dev/null >"$tmp/json"
      read -r secs kib <"$tmp/time"
      python3 - "$tmp/json" "$(basename "$input")" "$k" "$m" "$secs" "$kib" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["stats"]
print(sys.argv[2], sys.argv[3], sys.argv[4], s["edge_cut"], s["communication_volume"],
      sys.argv[5], round(int(sys.argv[6]) / 1024))
PY
    done
  done
done
