#!/usr/bin/env bash
# Behavioural test of cluster/local.sh and cluster/slurm/distgat.sbatch, run by
# cluster/validate.sh. It needs no Rust build and no Slurm: tests/fake-distgat stands in for
# the binary (same command line, files instead of gRPC) and tests/fake-slurm/ for srun and
# scontrol. Set SMOKE_BIN=/path/to/distgat to run the local.sh part against a real binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cluster="$(dirname "$here")"
tmp="$(mktemp -d)"
export DISTGAT_LOCAL_DIR="$tmp/local" FAKE_DISTGAT_STATE="$tmp/fake"
export DISTGAT_BIN="${SMOKE_BIN:-$here/fake-distgat}"
passed=0 failed=0
batch_pid=""

# Whatever happens, stop every process this test started.
# shellcheck disable=SC2317,SC2329
finish() {
  "$cluster/local.sh" stop >/dev/null 2>&1 || true
  if [[ -n "$batch_pid" ]]; then kill -TERM "$batch_pid" 2>/dev/null || true; wait "$batch_pid" 2>/dev/null || true; fi
  if [[ -n "${SMOKE_KEEP:-}" ]]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap finish EXIT

ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() {   # check "description" command...
  local what="$1"; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}

# Predicates for check.
alive() { [[ -e "/proc/$1" ]] && [[ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]]; }
none_alive() { local p; for p in "$@"; do if alive "$p"; then return 1; fi; done; }
all_alive() { local p; for p in "$@"; do alive "$p" || return 1; done; }
exits() {   # exits CODE command...: the command (output discarded) exits with CODE
  local want="$1" rc=0; shift
  "$@" >/dev/null 2>&1 || rc=$?
  ((rc == want))
}
fails() { ! "$@" >/dev/null 2>&1; }
matches() { [[ "$1" =~ $2 ]]; }
equal() { [[ "$1" == "$2" ]]; }
procs() { pgrep -cf "$1" || true; }   # how many processes' command lines match a regex
no_fakes() { [[ "$(procs "^bash $fake ")" == 0 ]]; }

fake="$here/fake-distgat"
local_sh="$cluster/local.sh"

echo "== local.sh"
check "no args: usage, non-zero" fails "$local_sh"
check "-h: exit 0" exits 0 "$local_sh" -h
for k in 0 -2 x 1.5; do
  check "K=$k refused" fails "$local_sh" "$k"
done
check "stop with nothing running: exit 0" exits 0 "$local_sh" stop

out="$("$local_sh" 3 2>"$tmp/start.err")" || { cat "$tmp/start.err"; bad "start 3"; }
check "start prints exactly one line export DISTGAT_COORDINATOR=host:port" \
  matches "$out" '^export DISTGAT_COORDINATOR=[^[:space:]]+:[0-9]+$'
check "env file matches stdout" equal "$(cat "$DISTGAT_LOCAL_DIR/env")" "$out"
mapfile -t pids <"$DISTGAT_LOCAL_DIR/pids"
check "4 PIDs recorded" equal "${#pids[@]}" 4
check "recorded PIDs alive" all_alive "${pids[@]}"
check "status: exit 0" exits 0 "$local_sh" status
check "status: 4 alive" equal "$("$local_sh" status | grep -c ' alive$')" 4
check "second start refused while running" fails "$local_sh" 2
check "still running after the refused start" all_alive "${pids[@]}"

# A recorded PID now used by an unrelated process must survive stop (PID reuse).
sleep 60 &
other=$!
echo "$other" >>"$DISTGAT_LOCAL_DIR/pids"
check "status: exit 1 with a foreign PID" exits 1 "$local_sh" status
check "status: the foreign PID is dead" matches "$("$local_sh" status || true)" "pid $other dead"
"$local_sh" stop 2>/dev/null
check "stop ends all started processes" none_alive "${pids[@]}"
check "stop leaves an unrelated process alone" alive "$other"
kill "$other"; wait "$other" 2>/dev/null || true
check "pids file removed" test ! -e "$DISTGAT_LOCAL_DIR/pids"
check "status after stop: exit 3" exits 3 "$local_sh" status

if [[ -z "${SMOKE_BIN:-}" ]]; then
  rc=0
  env FAKE_DISTGAT_FAIL=worker "$local_sh" 3 >/dev/null 2>"$tmp/fail.err" || rc=$?
  check "a worker dying during start fails the start" test "$rc" -ne 0
  check "... and shows its log" grep -q "injected failure" "$tmp/fail.err"
  check "... and stops the others" no_fakes
  check "... and leaves no pids file" test ! -e "$DISTGAT_LOCAL_DIR/pids"
  check "a coordinator dying during start fails the start" \
    fails env FAKE_DISTGAT_FAIL=coordinator "$local_sh" 2

  rm -rf "$FAKE_DISTGAT_STATE"
  env FAKE_DISTGAT_IGNORE_TERM=1 "$local_sh" 1 >/dev/null 2>&1
  mapfile -t pids <"$DISTGAT_LOCAL_DIR/pids"
  "$local_sh" stop 2>"$tmp/stop.err"
  check "stop falls back to SIGKILL after 10 s" none_alive "${pids[@]}"
  check "... and says so" grep -q SIGKILL "$tmp/stop.err"
fi

echo "== slurm/distgat.sbatch (fake srun/scontrol/scancel, fake binary)"
rm -rf "$FAKE_DISTGAT_STATE"
mkdir -p "$tmp/submit"
slurm_env=(env "PATH=$here/fake-slurm:$PATH" "DISTGAT_BIN=$fake" "SLURM_JOB_ID=7"
  "SLURM_JOB_NUM_NODES=3" "SLURM_JOB_NODELIST=nodeA,nodeB,nodeC"
  "SLURM_SUBMIT_DIR=$tmp/submit" "DISTGAT_PORT=45999" "FAKE_SLURM_STATE=$tmp/slurm")
# A step that srun had to kill, as the fake srun reports it (like the real one).
srun_noise() { grep -E 'srun: (error|forcing)|Killed|Terminated' "$1"; }
batch_rc=0
(cd "$tmp/submit" && "${slurm_env[@]}" DISTGAT_SUBMIT_ARGS="--partition p --model m.json" \
  DISTGAT_FETCH_OUT="$tmp/submit/out.npy" \
  bash "$cluster/slurm/distgat.sbatch" >"$tmp/batch.out" 2>&1) || batch_rc=$?
check "sbatch: exits 0 after the job" equal "$batch_rc" 0
check "sbatch: submits to the first node's coordinator" \
  grep -qx "submitted: --coordinator nodeA:45999 --partition p --model m.json --watch" "$tmp/batch.out"
check "sbatch: DISTGAT_FETCH_OUT fetches the job's output" grep -qx "fetched job-1" "$tmp/submit/out.npy"
check "sbatch: 3 workers, one log each" test -s "$tmp/submit/distgat-work/7/logs/worker-2.log"
check "sbatch: nothing left running after the job" no_fakes
check "sbatch: the steps stop on scancel's SIGINT, none killed by srun" fails srun_noise "$tmp/batch.out"

# Servers that ignore the signal: srun stops their steps after DISTGAT_STOP_TIMEOUT.
rm -rf "$FAKE_DISTGAT_STATE"
(cd "$tmp/submit" && "${slurm_env[@]}" DISTGAT_SUBMIT_ARGS="--model m.json" FAKE_DISTGAT_IGNORE_TERM=1 \
  DISTGAT_STOP_TIMEOUT=1 bash "$cluster/slurm/distgat.sbatch" >"$tmp/batch3.out" 2>&1) || true
check "sbatch: steps that ignore SIGINT are stopped after DISTGAT_STOP_TIMEOUT" no_fakes
check "... and the script says so" grep -q "still runs 1 s after SIGINT" "$tmp/batch3.out"

(cd "$tmp/submit" && exec "${slurm_env[@]}" bash "$cluster/slurm/distgat.sbatch" >"$tmp/batch2.out" 2>&1) &
batch_pid=$!
for _ in $(seq 50); do grep -qs "^COORDINATOR=" "$tmp/batch2.out" && break; sleep 0.2; done
check "sbatch without a job: cluster stays up" all_alive "$batch_pid"
check "... with 3 workers, each advertising its host name" \
  equal "$(procs "^bash $fake worker .*--advertise-host $(hostname)\$")" 3
kill -TERM "$batch_pid"
wait "$batch_pid" 2>/dev/null || true
batch_pid=""
check "... and SIGTERM (end of allocation) stops every step" no_fakes
check "... cleanly (no step killed by srun)" fails srun_noise "$tmp/batch2.out"

echo "$passed passed, $failed failed"
((failed == 0))
