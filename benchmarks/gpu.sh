#!/usr/bin/env bash
# GPU checks in ONE command (under 8 minutes on an H100/H200): the CuPy tests, then the GPU benchmarks.
#
#   bash benchmarks/gpu.sh OUT_DIR
#
# The GPU machine has CuPy, torch, numba, pytest and hypothesis but neither array-api-compat nor array-api-strict,
# and no network: both are installed from the wheels in .whl/ (made here with
#   pip download --no-deps array-api-compat==1.16.0 array-api-strict==2.6.1 -d .whl/
# .whl/ is git-ignored: carry it with the run). arrayrl itself is used from this tree (PYTHONPATH), not installed.
# Needs neither torchrl nor gymnasium; without torch the torch columns are left out.
# Writes OUT_DIR/{env.txt, tests.txt, bench.log, estimators-gpu.md, losses-gpu.md}; exits non-zero if a step failed.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu.sh OUT_DIR}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
status=0

if ! python -c "import array_api_compat, array_api_strict" 2>/dev/null; then
    python -m pip install --no-index --find-links .whl array-api-compat array-api-strict >"$OUT/pip.log" 2>&1 \
        || { echo "pip install from .whl failed (see $OUT/pip.log)"; status=1; }
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
    python -c "import sys, numpy, cupy; print(sys.version); print('numpy', numpy.__version__, 'cupy', cupy.__version__)"
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 || true
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. tests: every test whose id names cupy (the xp fixture's cupy backend, the taped namespace over CuPy,
#    the CuPy kernels' agreement tests)
timeout 270 python -m pytest -q -p no:cacheprovider --continue-on-collection-errors -k cupy tests/ 2>&1 | tee "$OUT/tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# 2. benchmarks (tables written by the script into OUT)
timeout 180 python benchmarks/gpu_bench.py --out "$OUT" 2>&1 | tee "$OUT/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "gpu.sh: done (status $status); results in $OUT"
exit $status
