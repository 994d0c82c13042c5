#!/usr/bin/env bash
# Installs everything wsss-blocks needs on a fresh Debian machine with Python 3.11:
# the Fashion-MNIST package (data for the bundled MF-Seg set), a virtual environment
# with torch 2.14.1 (from the local wheel cache when present), and the package itself
# with its compiled C++ (and, where nvcc exists, CUDA) operator.
# Idempotent: re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "[install] apt: dataset-fashion-mnist"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "[install] torch 2.14.1 + torchvision 0.29.1"
  "$PIP" install -q torch==2.14.1 torchvision==0.29.1
fi
echo "[install] dependencies"
"$PIP" install -q -r requirements-dev.txt

# Build the extension: C++ always; CUDA too when nvcc is present (compiles without a GPU).
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
  export FORCE_CUDA=${FORCE_CUDA:-1}
fi
# Rebuild only when csrc/ or setup.py changed since the last build (or none exists).
so=$(ls wsss_blocks/_C*.so 2>/dev/null | head -n 1 || true)
if [ -n "$so" ] && [ -z "$(find csrc setup.py -newer "$so" -type f)" ] \
    && "$PIP" show wsss-blocks >/dev/null 2>&1; then
  echo "[install] wsss-blocks already built ($so)"
  exit 0
fi
echo "[install] wsss-blocks (building csrc/, FORCE_CUDA=${FORCE_CUDA:-0})"
start=$(date +%s)
CFLAGS=${CFLAGS:--g0} MAX_JOBS=${MAX_JOBS:-2} "$PIP" install -q --no-build-isolation --no-deps -e .
echo "[install] done (extension build $(( $(date +%s) - start )) s)"
