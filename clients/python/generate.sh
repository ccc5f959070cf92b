#!/usr/bin/env bash
# Generates the Python gRPC stubs for distgat.v1 from the repository's proto/ tree.
#
#   ./generate.sh            # into clients/python/gen/
#   ./generate.sh OUT_DIR    # somewhere else
#
# Uses the Python on PATH (activate the venv with requirements.txt installed first);
# set PYTHON to choose another interpreter.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
out="${1:-${here}/gen}"
python="${PYTHON:-python}"
proto="distgat/v1/distgat.proto"

if [[ ! -f "${repo}/proto/${proto}" ]]; then
  echo "generate.sh: ${repo}/proto/${proto} not found" >&2
  exit 1
fi
if ! "${python}" -c 'import grpc_tools.protoc' 2>/dev/null; then
  echo "generate.sh: grpc_tools is not importable by '${python}';" \
    "run: pip install -r ${here}/requirements.txt" >&2
  exit 1
fi

mkdir -p "${out}"
"${python}" -m grpc_tools.protoc \
  -I"${repo}/proto" \
  --python_out="${out}" \
  --grpc_python_out="${out}" \
  "${proto}"

# Make distgat and distgat.v1 regular packages (not namespace packages), so that an
# unrelated `distgat` elsewhere on sys.path cannot shadow them.
touch "${out}/distgat/__init__.py" "${out}/distgat/v1/__init__.py"

echo "generated ${out}/distgat/v1/distgat_pb2.py and distgat_pb2_grpc.py"
