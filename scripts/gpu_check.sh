#!/usr/bin/env bash
# One command that checks a GPU machine (make gpu-check): installs what is missing,
# runs the CUDA tests, a 50-iteration CUDA + AMP CoSA run on a VOC-format tree written
# for it, and the CSC benchmark (CUDA vs CPU vs reference), then prints a summary.
#
# WSSS_PYTHON=/path/to/python uses that interpreter's own CUDA PyTorch instead of the
# project's .venv (a cluster or container image whose torch matches its driver): nothing
# is installed, the extension is built in place for it (TORCH_CUDA_ARCH_LIST, default the
# visible GPU's). The image needs the packages of requirements-dev.txt that the tests import.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=$(mktemp -d)
if [ -n "${WSSS_PYTHON:-}" ]; then
  PY=$WSSS_PYTHON
  echo "[gpu-check] building the extension in place for $PY"
  start=$(date +%s)
  FORCE_CUDA=1 CFLAGS=-g0 MAX_JOBS=${MAX_JOBS:-8} "$PY" setup.py -q build_ext --inplace \
      >"$LOG/build.txt" 2>&1 || { tail -30 "$LOG/build.txt"; exit 1; }
  echo "[gpu-check] built in $(( $(date +%s) - start )) s"
else
  PY=.venv/bin/python
  bash scripts/install.sh || exit 1
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'" || exit 1
status=0
echo "[gpu-check] CUDA tests"
$PY -m pytest -q -p no:cacheprovider tests/cuda tests/ops >"$LOG/tests.txt" 2>&1 || status=1
tail -3 "$LOG/tests.txt"
echo "[gpu-check] 50 CUDA + AMP iterations of CoSA on a VOC-format tree"
$PY - >"$LOG/run.txt" 2>&1 <<'PYEOF' || status=1
import sys, tempfile
from pathlib import Path
sys.path.insert(0, "tests")
from conftest import write_voc_tree
from examples.cosa import train
root = Path(tempfile.mkdtemp())
voc = write_voc_tree(root, 16, 8)
train.main(["--config", "examples/cosa/configs/voc_vit_b16.yaml"] + sum([["--set", s] for s in [
    f"data.root={voc.parent}", "model.pretrained=false", "model.backbone=vit_small_patch16_224",
    "model.img_size=null", "train.device=cuda", "train.amp=bf16", "data.crop_size=224",
    "train.batch_size=8", "train.iterations=50", "train.warmup_iterations=10",
    "train.lr_warmup_iterations=5", "eval.interval=50", "data.cpl_eval_images=16",
    f"output_dir={root / 'run'}"]], []))
PYEOF
grep FINAL "$LOG/run.txt" || tail -20 "$LOG/run.txt"
echo "[gpu-check] CSC benchmark"
$PY -m pytest -q -p no:cacheprovider benchmarks/bench_csc_devices.py --benchmark-enable \
    --benchmark-only -s 2>&1 | grep "CSC N=" | tee "$LOG/bench.txt" || status=1
echo "[gpu-check] summary: $(tail -1 "$LOG/tests.txt" | tr -d '=')"
echo "[gpu-check] logs in $LOG; exit $status"
exit $status
