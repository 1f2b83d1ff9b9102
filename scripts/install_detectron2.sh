#!/usr/bin/env bash
# detectron2, the second segmentation engine, built into a venv from the vendored source
# (no package registry carries a wheel for this torch). Skipped when it already imports.
#   scripts/install_detectron2.sh [VENV]      (default .venv; DETECTRON2_SOURCE names the tarball)
# Build isolation must be off: detectron2's setup.py imports the venv's torch to build its C++
# (and, with nvcc, CUDA) ops. It takes a few minutes on two cores, once.
set -euo pipefail
venv=${1:-.venv}
source=${DETECTRON2_SOURCE:-../shared/vendor/detectron2-02b5c4e.tar.gz}
check='from detectron2 import _C; from detectron2.projects import point_rend'
if "$venv/bin/python" -c "$check" 2>/dev/null; then
  exit 0
fi
if [ ! -f "$source" ]; then
  echo "detectron2 source not found at $source (set DETECTRON2_SOURCE to the tarball)" >&2
  exit 1
fi
echo "building detectron2 from $source into $venv (a few minutes, once)"
"$venv/bin/pip" install -q --no-build-isolation "$source"
"$venv/bin/python" -c "$check"
echo "detectron2 installed in $venv"
