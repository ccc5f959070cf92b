#!/usr/bin/env bash
# Opt-in check that two distgat builds write the same partition directories:
#   bench/partition_compare.sh OLD_DISTGAT NEW_DISTGAT GRAPH... [-- PARTITION FLAGS]
# Every shard and assignment file must be byte-identical (cmp); the manifests must be equal
# except the run report (seconds, peak_rss_bytes). Also prints each build's peak RSS.
set -euo pipefail
old=${1:?usage: $0 OLD NEW GRAPH... [-- FLAGS]}; new=${2:?}; shift 2
graphs=(); while [ $# -gt 0 ] && [ "$1" != -- ]; do graphs+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
status=0
for g in "${graphs[@]}"; do
  for k in 2 8; do
    for b in old new; do
      bin=$old; [ $b = new ] && bin=$new
      /usr/bin/time -f "%M" -o "$tmp/$b.kib" "$bin" partition --graph "$g" --parts $k \
        --out "$tmp/$b" "$@" >/dev/null 2>&1
    done
    same=yes
    for f in "$tmp"/old/*; do
      name=$(basename "$f")
      if [ "$name" = manifest.json ]; then
        python3 - "$f" "$tmp/new/$name" <<'PY' || same=no
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for m in (a, b):
    m.pop("report", None)
sys.exit(0 if a == b else 1)
PY
      else
        cmp -s "$f" "$tmp/new/$name" || same=no
      fi
    done
    echo "$g K=$k identical=$same peak_MiB old=$(($(cat "$tmp/old.kib") / 1024)) new=$(($(cat "$tmp/new.kib") / 1024))"
    [ $same = yes ] || status=1
    rm -rf "$tmp/old" "$tmp/new"
  done
done
exit $status
