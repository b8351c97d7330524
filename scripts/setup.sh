#!/usr/bin/env bash
# Fetches what fraudscore needs at run time into the git-ignored .tools/ folder: the ONNX Runtime
# shared library, from the PyPI wheel onnxruntime==1.31.1 (pip, no Python needed afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
ORT_LIB=.tools/onnxruntime/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION
if [ ! -f "$ORT_LIB" ]; then
  echo "setup: fetching ONNX Runtime $ORT_VERSION from PyPI into .tools/onnxruntime" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target .tools/onnxruntime "onnxruntime==$ORT_VERSION"
fi
test -f "$ORT_LIB" || { echo "setup: $ORT_LIB missing after install" >&2; exit 1; }
