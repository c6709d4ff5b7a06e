#!/usr/bin/env bash
# The GPU checks, from a plain checkout on a machine with a GPU and no network (no pip install:
# CuPy, NumPy, pytest, hypothesis, pynvml and PyTorch are expected to be installed already).
#
#   bash bench/gpu_check.sh [step ...]      steps: gpu suite fusion memory streams (default: all)
#
#   gpu      the GPU test tier (pytest -m gpu)
#   suite    the whole suite (backend="auto" is NumPy in tests, see tests/conftest.py)
#   fusion   bench/bench_fusion.py     memory   bench/bench_memory.py
#   streams  bench/bench_streams.py
#
# Results and a log land in bench/results/; commit them. When $OUT is set (the device tool
# sends back what a command writes there) they are copied into $OUT/results as well. The lent
# device machine allows 10 minutes per command: run one or two steps per call.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(gpu suite fusion memory streams)
mkdir -p bench/results
log="bench/results/gpu-check-$(date -u +%Y-%m-%d).txt"
{
  echo "# gpu_check $(date -u +%FT%TZ): ${steps[*]}"
  python3 -m gpugraph info
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
  python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee -a "$log"
status=0
run_step() {
  echo "## $1" | tee -a "$log"
  case "$1" in
    gpu) python3 -m pytest -q -m gpu -rs 2>&1 | tee -a "$log" ;;
    suite) python3 -m pytest -q 2>&1 | tail -15 | tee -a "$log" ;;
    fusion | memory | streams) timeout 540 python3 "bench/bench_$1.py" 2>&1 | tee -a "$log" ;;
    *) echo "unknown step '$1' (use: gpu suite fusion memory streams)" | tee -a "$log"; false ;;
  esac
}
for step in "${steps[@]}"; do
  run_step "$step" || status=1
done
echo "gpu_check finished with status $status; results in bench/results/" | tee -a "$log"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/results" && cp bench/results/* "$OUT/results/"
fi
exit $status
