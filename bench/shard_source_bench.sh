#!/usr/bin/env bash
# Issue 14's cost of shard streaming and of TLS: the whole `distgat run --workers 2`
# process on R-MAT 1M nodes / 10M edges (128 features, 2 GAT layers of 4 x 32, the
# distgat-bench `run --size large` case), over one METIS partition, in three modes run
# interleaved (shared, stream, stream with TLS and a token) so that all see the same load.
# Prints each time and the medians' ratios stream/shared and tls/stream, and checks that
# the three outputs are byte-identical.
#
#   bash bench/shard_source_bench.sh [ROUNDS]        (default 8; about 35 s per round)
#
# Env: DISTGAT_BIN (default target/release/distgat), WORK (default /tmp/shard-source-bench;
# the generated case and the partition are reused when present). The throwaway test CA is
# made under $WORK by the rcgen example `test_certs` (never committed).
set -euo pipefail
rounds=${1:-8}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${DISTGAT_BIN:-$repo/target/release/distgat}
bench=$(dirname "$bin")/distgat-bench
work=${WORK:-/tmp/shard-source-bench}
case_dir=$work/run-rmat-large
mkdir -p "$work"

if [ ! -f "$case_dir/partition-2/manifest.json" ]; then
  echo "generating R-MAT 1M/10M and its 2-part METIS partition (once)" >&2
  "$bench" run --workers 2 --size large --repeats 1 --work-dir "$work" >/dev/null
fi

tls=$work/tls
if [ ! -f "$tls/token" ]; then
  # Throwaway certificates from rcgen (the tests' own generator), never committed.
  cargo run --quiet --release --locked --manifest-path "$repo/Cargo.toml" \
    -p distgat-tests --example test_certs -- "$tls" >/dev/null
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tls/token"
fi

times=$work/times.txt
: >"$times"
for i in $(seq 1 "$rounds"); do
  for mode in shared stream tls; do
    extra=(--shard-source stream)
    case $mode in
      shared) extra=(--shard-source shared) ;;
      tls) extra=(--shard-source stream --tls-cert "$tls/node-cert.pem" --tls-key "$tls/node-key.pem"
        --tls-ca "$tls/node-ca.pem" --auth-token-file "$tls/token") ;;
    esac
    start=$(date +%s.%N)
    "$bin" run --graph "$case_dir/edge_index.npy" --features "$case_dir/x.npy" \
      --model "$case_dir/model.json" --out "$work/out-$mode.npy" --workers 2 \
      --partition "$case_dir/partition-2" --threads-per-worker 1 "${extra[@]}" \
      >/dev/null 2>"$work/$mode-$i.log"
    end=$(date +%s.%N)
    echo "$mode $i $(echo "$end - $start" | bc)" | tee -a "$times"
  done
done
cmp "$work/out-shared.npy" "$work/out-stream.npy"
cmp "$work/out-stream.npy" "$work/out-tls.npy"
echo "outputs byte-identical across the three modes"
python3 - "$times" <<'EOF'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    mode, _, s = line.split()
    t.setdefault(mode, []).append(float(s))
m = {k: statistics.median(v) for k, v in t.items()}
for k, v in m.items():
    print(f"{k:7s} median {v:7.2f} s over {len(t[k])} runs")
print(f"stream / shared {m['stream'] / m['shared']:.3f}x (target at most 1.1x)")
print(f"tls / stream    {m['tls'] / m['stream']:.3f}x (target at most 1.1x)")
EOF
