#!/usr/bin/env bash
# cluster/slurm/distgat.sbatch on a real, one-node Slurm cluster on this machine:
#   1. installs slurm-wlm and munge with apt-get if they are missing (it runs as root);
#   2. starts its own munged, slurmctld and slurmd from a private slurm.conf in a temp dir
#      (the node's real CPUs and memory from `slurmd -C`, free ports, its own state, spool,
#      log and pid files, its own munge key and socket), so a Slurm already running on the
#      machine is left alone;
#   3. waits for the node to be idle, submits the sbatch script with the Cora job
#      (DISTGAT_SUBMIT_ARGS, DISTGAT_FETCH_OUT) and waits for it to complete;
#   4. checks that the job completed with exit code 0, that its output and the steps' logs
#      have no srun or slurmstepd error (no step Killed, Terminated or CANCELLED), that no
#      step process is left on the node, and that the fetched output equals `distgat infer`
#      on the same inputs byte for byte;
#   5. stops (in an EXIT trap) only the daemons it started, by their pid files, and removes
#      the temp dir.
#
#   bash cluster/tests/slurm.sh
#
# Environment: DISTGAT_BIN (default: <repo>/target/release/distgat), SLURM_TEST_TIMEOUT
# (seconds for the job, default 120), SLURM_TEST_KEEP=1 (keep the temp dir and print it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cluster="$(dirname "$here")"
repo="$(dirname "$cluster")"
bin="${DISTGAT_BIN:-$repo/target/release/distgat}"
job_timeout="${SLURM_TEST_TIMEOUT:-120}"
started=$SECONDS

say() { echo "slurm.sh: $*"; }
die() { echo "slurm.sh: FAILED: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
PATH="$PATH:/usr/sbin:/sbin"   # munged, slurmctld, slurmd

((EUID == 0)) || die "run it as root: its slurmd (SlurmdUser=root) starts the job's processes"
[[ -x "$bin" ]] || die "no distgat binary at $bin: cargo build --release -p distgat-cli, or set DISTGAT_BIN"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

# --- 1. packages -------------------------------------------------------------------------
tools=(munged mungekey slurmctld slurmd sbatch sinfo squeue scontrol scancel srun)
missing=()
for t in "${tools[@]}"; do have "$t" || missing+=("$t"); done
if ((${#missing[@]} > 0)); then
  have apt-get || die "missing ${missing[*]} and no apt-get to install slurm-wlm and munge"
  say "installing slurm-wlm munge with apt-get (missing: ${missing[*]})"
  apt_log="$(mktemp)"
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o DPkg::Lock::Timeout=120 slurm-wlm munge >>"$apt_log" 2>&1
  }
  # An old or missing package list: update it once and try again.
  if ! apt_install && ! { apt-get update -qq -o DPkg::Lock::Timeout=120 >>"$apt_log" 2>&1 && apt_install; }; then
    tail -n 20 "$apt_log" >&2
    rm -f "$apt_log"
    die "apt-get install slurm-wlm munge failed (log above)"
  fi
  rm -f "$apt_log"
  for t in "${tools[@]}"; do have "$t" || die "$t still missing after installing slurm-wlm and munge"; done
  say "installed in $((SECONDS - started)) s"
fi

# --- the private cluster's files -------------------------------------------------------------
node="$(hostname -s)"
getent hosts "$node" >/dev/null \
  || die "the host name $node does not resolve: slurmctld, slurmd and the sbatch script need it to"
tmp="$(mktemp -d /tmp/distgat-slurm.XXXXXX)"
chmod 755 "$tmp"   # munged wants its socket reachable by all users
mkdir -p "$tmp"/{munge,state,spool,log,run,submit,work}
export SLURM_CONF="$tmp/slurm.conf"
job=""
daemons=()   # name:pidfile:binary, in start order

# A process is ours if its pid file names a live process running the binary we started.
ours() {   # ours PIDFILE BINARY -> prints the pid
  local pid exe
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [[ "$exe" == "$(readlink -f "$2")" ]] && echo "$pid"
}

# Wait until "$@" succeeds: wait_for SECONDS WHAT command...
wait_for() {
  local limit="$1" what="$2" deadline=$((SECONDS + $1))
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || { echo "slurm.sh: timed out after $limit s waiting for $what" >&2; return 1; }
    sleep 0.5
  done
}

show_logs() {
  local f
  for f in "$tmp/job.out" "$tmp"/work/logs/*.log "$tmp"/log/*.log; do
    [[ -s "$f" ]] || continue
    echo "--- ${f#"$tmp"/} (last 25 lines)" >&2
    tail -n 25 "$f" >&2
  done
}

# shellcheck disable=SC2317,SC2329  # invoked by the EXIT trap
teardown() {
  local rc=$? i name pidfile binary pid pids
  trap - EXIT INT TERM
  trap '' PIPE   # a closed stdout/stderr (| head) must not stop the teardown half-way
  set +e
  ((rc == 0)) || show_logs
  # A job still queued or running (a failure or a timeout): cancel it while slurmd runs, so
  # no step outlives the cluster.
  if [[ -n "$job" ]] && [[ -n "$(squeue -h -j "$job" -o %i 2>/dev/null)" ]]; then
    scancel "$job" 2>/dev/null
    wait_for 30 "job $job to end after scancel" job_gone || rc=1
  fi
  # Processes of the job that slurmd still tracks (none, normally) would outlive it.
  if [[ -n "$job" ]] && pids="$(scontrol listpids 2>/dev/null | awk 'NR > 1 { print $1 }')" \
    && [[ -n "$pids" ]]; then
    echo "slurm.sh: killing the job's leftover processes: $(echo "$pids" | xargs)" >&2
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $pids 2>/dev/null
    rc=1
  fi
  for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do   # slurmd, slurmctld, munged
    IFS=: read -r name pidfile binary <<<"${daemons[$i]}"
    pid="$(ours "$pidfile" "$binary")" || continue
    kill -TERM "$pid" 2>/dev/null
    if ! wait_for 15 "$name (pid $pid) to exit after SIGTERM" not_running "$pid"; then
      echo "slurm.sh: killing $name (pid $pid) with SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
      rc=1
    fi
  done
  if [[ "${SLURM_TEST_KEEP:-}" == 1 ]]; then say "kept $tmp"; else rm -rf "$tmp"; fi
  exit "$rc"
}
trap teardown EXIT
trap 'echo "slurm.sh: interrupted (SIGINT)" >&2; exit 130' INT
trap 'echo "slurm.sh: interrupted (SIGTERM)" >&2; exit 143' TERM

not_running() { [[ ! -e "/proc/$1" ]] || [[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" == Z ]]; }
job_gone() { [[ -z "$(squeue -h -j "$job" -o %i 2>/dev/null)" ]]; }

# Free TCP ports: not listening now (IPv4 or IPv6), distinct, below Linux's ephemeral range
# and away from the usual Slurm (6817/6818) and distgat (50051) ports.
listening=""
while read -r _ local_address _ st _; do   # st 0A: LISTEN; the port is the address's hex tail
  if [[ "$st" == 0A ]]; then listening+="$((16#${local_address##*:}))"$'\n'; fi
done < <(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null)
free_port() {
  local p tries
  for ((tries = 0; tries < 200; tries++)); do
    p=$((20000 + RANDOM % 12000))
    if ! grep -qx "$p" <<<"$listening"; then echo "$p"; return 0; fi
  done
  return 1
}
ports=()
for _ in 1 2 3; do   # slurmctld, slurmd, the distgat coordinator
  p="$(free_port)" || die "found no free TCP port for slurmctld, slurmd and the coordinator"
  listening+="$p"$'\n'
  ports+=("$p")
done
ctld_port="${ports[0]}" slurmd_port="${ports[1]}" distgat_port="${ports[2]}"

node_line="$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=')" || die "slurmd -C printed no NodeName line"
[[ "$node_line" == "NodeName=$node "* ]] || die "slurmd -C names another node than $node: $node_line"

cat >"$SLURM_CONF" <<EOF
# One-node test cluster of cluster/tests/slurm.sh (everything under $tmp).
ClusterName=distgattest
SlurmctldHost=$node
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/munge.socket
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/run/slurmctld.pid
SlurmdPidFile=$tmp/run/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
PlugStackConfig=$tmp/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=10
MailProg=/bin/true
$node_line State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
: >"$tmp/plugstack.conf"

# --- 2. daemons ----------------------------------------------------------------------------
mungekey --create --keyfile="$tmp/munge/munge.key" >/dev/null 2>&1 \
  || die "mungekey --create failed"
chmod 600 "$tmp/munge/munge.key"

start() {   # start NAME PIDFILE command...: a daemon that forks and writes PIDFILE
  local name="$1" pidfile="$2" binary
  shift 2
  binary="$(command -v "$1")"
  daemons+=("$name:$pidfile:$binary")
  "$@" >>"$tmp/log/$name.start.log" 2>&1 || die "$name did not start: $(tail -n 5 "$tmp/log/$name.start.log")"
  wait_for 20 "$name to write $pidfile" ours "$pidfile" "$binary" >/dev/null \
    || die "$name did not start (no live process in $pidfile)"
}
start munged "$tmp/run/munged.pid" munged --socket="$tmp/munge/munge.socket" \
  --key-file="$tmp/munge/munge.key" --pid-file="$tmp/run/munged.pid" \
  --log-file="$tmp/log/munged.log" --seed-file="$tmp/munge/munged.seed"
start slurmctld "$tmp/run/slurmctld.pid" slurmctld -f "$SLURM_CONF"
start slurmd "$tmp/run/slurmd.pid" slurmd -f "$SLURM_CONF"

node_idle() { [[ "$(sinfo -h -n "$node" -o %T 2>/dev/null)" == idle ]]; }
wait_for 30 "node $node to be idle (sinfo)" node_idle \
  || die "the node did not become idle: $(sinfo -h -N -o '%N %T %E' 2>&1)"
say "Slurm up in $((SECONDS - started)) s: $node ${node_line#NodeName="$node" }, slurmctld port $ctld_port, slurmd port $slurmd_port"

# --- 3. the job ----------------------------------------------------------------------------
# Paths in the job are under the data root, the repository.
graph=data/cora/edges.npy features=data/cora/features.npy model=reference/cora-gat/model.json
fetched="$tmp/fetched.npy"
job="$(cd "$tmp/submit" && env DISTGAT_BIN="$bin" DISTGAT_PORT="$distgat_port" \
  DISTGAT_DATA_ROOT="$repo" DISTGAT_WORK_DIR="$tmp/work" DISTGAT_WAIT_TIMEOUT=60 \
  DISTGAT_SUBMIT_ARGS="--graph $graph --features $features --model $model --normalize-features" \
  DISTGAT_FETCH_OUT="$fetched" \
  sbatch --parsable --nodes=1 --time=10 --output="$tmp/job.out" "$cluster/slurm/distgat.sbatch")" \
  || die "sbatch failed"
job="${job%%;*}"
say "submitted job $job (cluster/slurm/distgat.sbatch, Cora); waiting up to $job_timeout s"

job_field() { scontrol show job "$job" 2>/dev/null | grep -o "\b$1=[^ ]*" | head -n 1 | cut -d= -f2; }
job_done() { [[ "$(job_field JobState)" =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE)$ ]]; }
wait_for "$job_timeout" "job $job to finish" job_done || die "job $job did not finish in $job_timeout s"
state="$(job_field JobState)" exit_code="$(job_field ExitCode)"
say "job $job: $state, exit code $exit_code, $((SECONDS - started)) s since start"

# --- 4. checks -----------------------------------------------------------------------------
[[ "$state" == COMPLETED && "$exit_code" == 0:0 ]] \
  || die "job $job ended $state with exit code $exit_code"
if grep -HnE 'srun: (error|Job step aborted|forcing job termination)|slurmstepd.*error|CANCELLED|Killed|Terminated' \
  "$tmp/job.out" "$tmp"/work/logs/*.log >&2; then
  die "the job output or a step's log reports steps that did not end cleanly (lines above)"
fi
grep -q "^COORDINATOR=$node:$distgat_port\$" "$tmp/job.out" \
  || die "the job output has no COORDINATOR=$node:$distgat_port line"
no_steps() { [[ -z "$(scontrol listpids 2>/dev/null | awk 'NR > 1')" ]]; }
wait_for 15 "the job's processes to end (scontrol listpids)" no_steps \
  || die "processes of job $job are still running: $(scontrol listpids 2>&1)"
[[ -s "$fetched" ]] || die "the job fetched no output to $fetched"

(cd "$repo" && "$bin" infer --graph "$graph" --features "$features" --normalize-features row \
  --model "$model" --out "$tmp/infer.npy" >"$tmp/infer.log" 2>&1) \
  || { cat "$tmp/infer.log" >&2; die "distgat infer failed"; }
cmp "$fetched" "$tmp/infer.npy" \
  || die "the Slurm job's output differs from distgat infer's ($fetched vs $tmp/infer.npy)"
say "fetched output of job $job equals distgat infer's, byte for byte ($(stat -c %s "$fetched") bytes)"
say "OK in $((SECONDS - started)) s"
