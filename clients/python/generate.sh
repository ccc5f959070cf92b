#!/usr/bin/env bash
# Generates the Python gRPC stubs for distgat.v1 from the repository's proto/ tree into
# the `distgat` package (python/distgat/v1/), where they are committed.
#
#   clients/python/generate.sh            # regenerate python/distgat/v1/distgat_pb2*.py(i)
#   clients/python/generate.sh --check    # exit 1 if the committed stubs differ from proto/
#
# Uses the Python on PATH with grpcio-tools (clients/python/requirements.txt); set PYTHON
# to choose another interpreter.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
package="${repo}/python"
python="${PYTHON:-python}"
proto="distgat/v1/distgat.proto"
files=(distgat_pb2.py distgat_pb2.pyi distgat_pb2_grpc.py)

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: generate.sh [--check]" >&2; exit 2 ;;
esac
if [[ ! -f "${repo}/proto/${proto}" ]]; then
  echo "generate.sh: ${repo}/proto/${proto} not found" >&2
  exit 1
fi
if ! "${python}" -c 'import grpc_tools.protoc' 2>/dev/null; then
  echo "generate.sh: grpc_tools is not importable by '${python}';" \
    "run: pip install -r ${here}/requirements.txt" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${python}" -m grpc_tools.protoc \
  -I"${repo}/proto" \
  --python_out="${tmp}" \
  --pyi_out="${tmp}" \
  --grpc_python_out="${tmp}" \
  "${proto}"

if ((check)); then
  stale=0
  for f in "${files[@]}"; do
    if ! cmp -s "${tmp}/distgat/v1/${f}" "${package}/distgat/v1/${f}"; then
      echo "generate.sh: python/distgat/v1/${f} differs from what proto/${proto} generates" >&2
      stale=1
    fi
  done
  if ((stale)); then
    echo "generate.sh: run clients/python/generate.sh and commit the result" >&2
    exit 1
  fi
  echo "generate.sh: the committed stubs match proto/${proto}"
  exit 0
fi

mkdir -p "${package}/distgat/v1"
for f in "${files[@]}"; do
  cp "${tmp}/distgat/v1/${f}" "${package}/distgat/v1/${f}"
done
echo "generated python/distgat/v1/{distgat_pb2.py,distgat_pb2.pyi,distgat_pb2_grpc.py}"
