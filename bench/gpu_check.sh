#!/usr/bin/env bash
# One command for a machine with a GPU and no network: run the GPU test tier, the whole suite
# on the CuPy backend, and every benchmark, from a plain checkout (no pip install: CuPy, NumPy,
# pytest, hypothesis, pynvml and PyTorch are expected to be installed already). Results land in
# bench/results/; commit them.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
stamp="$(date -u +%Y-%m-%d)"
mkdir -p bench/results
log="bench/results/gpu-check-$stamp.txt"
{
  echo "# gpu_check $(date -u +%FT%TZ)"
  python3 -m gpugraph info
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
  python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee "$log"
status=0
echo "## GPU test tier" | tee -a "$log"
python3 -m pytest -q -m gpu -rs 2>&1 | tee -a "$log" || status=1
echo "## full suite (backend=\"auto\" is NumPy in tests: tests/conftest.py; GPU tests use CuPy)" | tee -a "$log"
python3 -m pytest -q -x 2>&1 | tail -15 | tee -a "$log" || status=1
for bench in bench/bench_*.py; do
  echo "## $bench" | tee -a "$log"
  timeout 900 python3 "$bench" 2>&1 | tee -a "$log" || status=1
done
echo "gpu_check finished with status $status; results in bench/results/" | tee -a "$log"
exit $status
