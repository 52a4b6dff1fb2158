#!/usr/bin/env bash
# Installs fedward into .venv with the pinned versions. Used by the README, CI and the container images.
# PyTorch is pinned to 2.13.0, a CPU wheel on these machines: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV="${VENV:-.venv}"
EXTRAS="${FEDWARD_EXTRAS-dev}"  # unset: dev tools and tests; set but empty: the runtime only
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=23.2"
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
SPEC="."
if [ -n "$EXTRAS" ]; then SPEC=".[${EXTRAS}]"; fi
"$VENV/bin/python" -m pip install --quiet -e "$SPEC"
"$VENV/bin/python" -c "import torch, flwr, opacus, fedward.common; print('fedward installed: torch', torch.__version__)"
