#!/usr/bin/env bash
# Start, stop or inspect a distgat cluster (1 coordinator + K workers) on loopback.
#
#   cluster/local.sh K        start; prints `export DISTGAT_COORDINATOR=host:port` on stdout
#                             (so `eval "$(cluster/local.sh K)"` sets it in your shell)
#   cluster/local.sh stop     stop what the last start started
#   cluster/local.sh status   show which recorded processes are alive
#
# Everything lives in one state dir so that `stop` can find exactly what `start` started.
# See cluster/README.md for the environment variables.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${DISTGAT_LOCAL_DIR:-$REPO/.distgat-local}"
PIDS="$STATE/pids"          # coordinator first, then worker 1..K, one PID per line
BIN_RECORD="$STATE/bin"     # the binary path the PIDs were started with (for PID-reuse checks)
START_TIMEOUT=60            # seconds, for each wait during start
STOP_TIMEOUT=10             # seconds between SIGTERM and SIGKILL

usage() {
  cat <<EOF
usage: cluster/local.sh K        start a coordinator and K workers on 127.0.0.1
       cluster/local.sh stop     stop the processes the last start recorded
       cluster/local.sh status   show which recorded processes are alive

State dir: \${DISTGAT_LOCAL_DIR:-<repo>/.distgat-local} (now: $STATE)
Binary:    \${DISTGAT_BIN:-<repo>/target/release/distgat} (built if missing)
Data root: \${DISTGAT_DATA_ROOT:-<repo>}
On success, start prints exactly one line, export DISTGAT_COORDINATOR=host:port, on
stdout: eval "$(cluster/local.sh K)" sets the variable the distgat client commands read.
EOF
}

log() { printf 'local.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# True if PID is a live process that is not a zombie (an exited child not yet reaped).
proc_alive() {
  local stat
  [[ "$1" =~ ^[0-9]+$ ]] || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"          # drop "pid (comm) "; comm may contain spaces
  [[ "${stat%% *}" != Z ]]
}

# True if PID is alive and runs the recorded binary: guards `stop` against PIDs that the
# kernel reused after our process died. For a script run through an interpreter the binary
# is argv[1], not argv[0]; either is accepted. An empty BIN skips the cmdline check: used
# only for our own unreaped children, which may not have exec'd the binary yet.
is_ours() {
  local pid="$1" bin="$2" args=()
  proc_alive "$pid" || return 1
  [[ -z "$bin" ]] && return 0
  mapfile -d '' -n 2 args 2>/dev/null <"/proc/$pid/cmdline" || return 1
  [[ "${args[0]:-}" == "$bin" || "${args[1]:-}" == "$bin" ]]
}

recorded_bin() { [[ -f "$BIN_RECORD" ]] && cat "$BIN_RECORD"; }

# Prints the recorded PIDs that are still ours.
alive_pids() {
  local bin pid
  [[ -f "$PIDS" ]] || return 0
  bin="$(recorded_bin)" || return 0
  while read -r pid; do
    if is_ours "$pid" "$bin"; then echo "$pid"; fi
  done <"$PIDS"
}

# SIGTERM each given PID that is still ours, wait up to STOP_TIMEOUT s, then SIGKILL.
terminate() {
  local bin="$1"; shift
  local pid left tick
  for pid in "$@"; do
    if is_ours "$pid" "$bin"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for ((tick = 0; ; tick++)); do   # 5 ticks a second
    left=()
    for pid in "$@"; do
      if is_ours "$pid" "$bin"; then left+=("$pid"); fi
    done
    ((${#left[@]} == 0)) && return 0
    ((tick >= STOP_TIMEOUT * 5)) && break
    sleep 0.2
  done
  log "still running after ${STOP_TIMEOUT}s, sending SIGKILL: ${left[*]}"
  for pid in "${left[@]}"; do
    if is_ours "$pid" "$bin"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
}

cmd_stop() {
  local pids=() bin
  if [[ -d "$STATE" ]]; then
    # Wait for a start in progress to finish (or fail) rather than race it.
    exec 9>"$STATE/lock"
    flock -w $((START_TIMEOUT * 3)) 9 || die "a start in $STATE is still in progress"
  fi
  mapfile -t pids < <(alive_pids)
  if ((${#pids[@]} == 0)); then
    log "nothing running (state dir $STATE)"
  else
    bin="$(recorded_bin)"
    log "stopping ${#pids[@]} process(es): ${pids[*]}"
    terminate "$bin" "${pids[@]}"
    log "stopped"
  fi
  rm -f "$PIDS"
}

# Exit status like an init script's: 0 all alive, 1 some dead, 3 nothing running.
cmd_status() {
  local bin pid i=0 role alive=0 total=0
  if [[ ! -f "$PIDS" ]]; then
    echo "no cluster recorded in $STATE"
    return 3
  fi
  bin="$(recorded_bin)" || bin="(unknown binary)"   # then no PID counts as ours
  if [[ -f "$STATE/env" ]]; then cat "$STATE/env"; fi
  while read -r pid; do
    if ((i == 0)); then role=coordinator; else role="worker-$i"; fi
    total=$((total + 1))
    if is_ours "$pid" "$bin"; then
      alive=$((alive + 1))
      echo "$role pid $pid alive"
    else
      echo "$role pid $pid dead"
    fi
    i=$((i + 1))
  done <"$PIDS"
  ((alive == total)) && return 0
  ((alive == 0)) && return 3
  return 1
}

# ---- start -------------------------------------------------------------------------------

STARTED=()      # PIDs started by this invocation, stopped again if the start fails
START_OK=0
WAITER=""       # the running `distgat workers/health` check, if any

# On any failed start (error, timeout, Ctrl-C): stop what this invocation started, so a
# half-started cluster never lingers.
cleanup_failed_start() {
  if [[ -n "$WAITER" ]]; then kill -TERM "$WAITER" 2>/dev/null || true; fi
  if ((START_OK == 0 && ${#STARTED[@]} > 0)); then
    log "start failed: stopping the ${#STARTED[@]} process(es) started"
    terminate "" "${STARTED[@]}"
    rm -f "$PIDS"
  fi
}

tail_log() {
  log "last lines of $1:"
  tail -n 20 "$1" >&2 2>/dev/null || true
}

# Launch "$@" detached (own session, stdin from /dev/null, output to a log file) and record
# its PID. setsid/nohup keep it alive after this script and its terminal are gone. fd 9 is
# the start lock; the daemons must not inherit it.
spawn() {
  local logfile="$1"; shift
  "${DETACH[@]}" "$@" </dev/null >"$logfile" 2>&1 9>&- &
  local pid=$!
  STARTED+=("$pid")
  echo "$pid" >>"$PIDS"
}

# Fail (with the log tail of the first dead one) if any process we started has died.
check_alive() {
  local i pid role logfile
  for i in "${!STARTED[@]}"; do
    pid="${STARTED[$i]}"
    if ! proc_alive "$pid"; then
      if ((i == 0)); then role=coordinator; logfile="$STATE/coordinator.log"
      else role="worker $i"; logfile="$STATE/worker-$i.log"; fi
      log "$role (pid $pid) exited during start"
      tail_log "$logfile"
      exit 1
    fi
  done
}

# Run a command (in the background) until it exits 0, retrying on failure, while polling
# that every started process stays alive: a crashed worker fails the start at once instead
# of after a timeout. Its output goes to a log file, so stdout stays one line.
wait_for() {
  local what="$1" logfile="$2"; shift 2
  local pid rc deadline=$((SECONDS + START_TIMEOUT + 10))
  while :; do
    "$@" </dev/null >>"$logfile" 2>&1 9>&- &
    pid=$!
    WAITER=$pid
    while kill -0 "$pid" 2>/dev/null && check_alive_quiet && ((SECONDS < deadline)); do
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then   # a process died or the deadline passed
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      check_alive
      tail_log "$logfile"
      die "timed out waiting for $what"
    fi
    rc=0
    wait "$pid" || rc=$?
    WAITER=""
    ((rc == 0)) && return 0
    check_alive
    if ((SECONDS >= deadline)); then
      tail_log "$logfile"
      die "$what: '$*' kept failing (last exit $rc)"
    fi
    sleep 0.5
  done
}

check_alive_quiet() {
  local pid
  for pid in "${STARTED[@]}"; do proc_alive "$pid" || return 1; done
}

# Resolve the binary to an absolute path: it is what /proc/PID/cmdline will show, and what
# stop compares against.
resolve_bin() {
  local default="$REPO/target/release/distgat"
  BIN="${DISTGAT_BIN:-$default}"
  if [[ "$BIN" != */* ]]; then
    BIN="$(command -v -- "$BIN")" || die "DISTGAT_BIN=$DISTGAT_BIN not found on PATH"
  elif [[ "$BIN" != /* ]]; then
    BIN="$PWD/$BIN"
  fi
  if [[ ! -x "$BIN" ]]; then
    [[ "$BIN" == "$default" ]] || die "DISTGAT_BIN=$BIN does not exist or is not executable"
    log "$BIN missing: cargo build --release -p distgat-cli"
    (cd "$REPO" && cargo build --release -p distgat-cli) >&2
    [[ -x "$BIN" ]] || die "cargo build did not produce $BIN"
  fi
}

cmd_start() {
  local k="$1" i addr waddr deadline data_root
  if ! [[ "$k" =~ ^[0-9]{1,6}$ ]] || ((10#$k == 0)); then
    die "K must be a positive integer, got '$k'"
  fi
  k=$((10#$k))

  mkdir -p "$STATE"
  # Keep the state dir (inside the repo by default) out of git without touching .gitignore.
  [[ -e "$STATE/.gitignore" ]] || echo '*' >"$STATE/.gitignore"
  # One start at a time per state dir (two concurrent starts would interleave the pids file).
  exec 9>"$STATE/lock"
  flock -n 9 || die "another local.sh is starting a cluster in $STATE"

  local running=()
  mapfile -t running < <(alive_pids)
  if ((${#running[@]} > 0)); then
    die "a cluster from $STATE is still running (pids ${running[*]}); run 'cluster/local.sh stop' first"
  fi

  resolve_bin
  data_root="${DISTGAT_DATA_ROOT:-$REPO}"
  if command -v setsid >/dev/null; then DETACH=(setsid nohup); else DETACH=(nohup); fi

  # Fresh per-run files; a stale addr file would be read as the new coordinator's address.
  rm -f "$PIDS" "$STATE/env" "$STATE"/*.addr "$STATE"/*.log
  mkdir -p "$STATE/work"
  echo "$BIN" >"$BIN_RECORD"
  trap cleanup_failed_start EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  log "starting coordinator (log $STATE/coordinator.log)"
  spawn "$STATE/coordinator.log" "$BIN" coordinator --listen 127.0.0.1:0 \
    --addr-file "$STATE/coordinator.addr" --data-root "$data_root" --work-dir "$STATE/work"

  # The coordinator writes its bound host:port to the addr file (atomically) once listening.
  deadline=$((SECONDS + START_TIMEOUT))
  while [[ ! -s "$STATE/coordinator.addr" ]]; do
    check_alive
    ((SECONDS < deadline)) || die "coordinator did not write $STATE/coordinator.addr within ${START_TIMEOUT}s"
    sleep 0.1
  done
  addr="$(tr -d '[:space:]' <"$STATE/coordinator.addr")"
  [[ -n "$addr" ]] || die "empty $STATE/coordinator.addr"
  log "coordinator at $addr"

  for ((i = 1; i <= k; i++)); do
    # Each worker its own work dir (its shard cache), as on separate machines.
    spawn "$STATE/worker-$i.log" "$BIN" worker --coordinator "$addr" --listen 127.0.0.1:0 \
      --addr-file "$STATE/worker-$i.addr" --work-dir "$STATE/worker-$i"
  done
  log "started $k worker(s), waiting for them to register"

  wait_for "$k registered workers" "$STATE/startup.log" \
    "$BIN" workers --coordinator "$addr" --wait "$k" --timeout "$START_TIMEOUT"
  wait_for "coordinator health" "$STATE/startup.log" "$BIN" health "$addr"
  # A worker reports SERVING once registered; its addr file is written once it is bound.
  for ((i = 1; i <= k; i++)); do
    waddr="$(tr -d '[:space:]' 2>/dev/null <"$STATE/worker-$i.addr")" \
      || die "worker $i did not write $STATE/worker-$i.addr"
    wait_for "worker $i health" "$STATE/startup.log" "$BIN" health "$waddr"
  done
  check_alive

  echo "export DISTGAT_COORDINATOR=$addr" >"$STATE/env"
  START_OK=1
  log "cluster up: coordinator $addr, $k worker(s); logs in $STATE; stop with: cluster/local.sh stop"
  echo "export DISTGAT_COORDINATOR=$addr"
}

case "${1:-}" in
  -h | --help | help) usage ;;
  "") usage >&2; exit 2 ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    (($# == 1)) || { usage >&2; exit 2; }
    cmd_start "$1"
    ;;
esac
