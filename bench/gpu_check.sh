#!/usr/bin/env bash
# The GPU checks, from a plain checkout on a machine with a GPU and no network (nothing is
# installed: CuPy, NumPy, pytest and, optionally, pytest-timeout, pytest-xdist, PyTorch).
#
#   bash bench/gpu_check.sh [step ...]     steps: smoke gpu fusion memory streams (default: all)
#
#   smoke    bench/gpu_smoke.py: every GPU path once, one PASS/FAIL line each (< 2 minutes)
#   gpu      the GPU test tier (pytest -m gpu)
#   fusion   bench/bench_fusion.py      memory   bench/bench_memory.py
#   streams  bench/bench_streams.py
#
# The device tool allows 10 minutes per command and sends back at most 8 files from $OUT, so:
#   * the first session with a GPU runs `smoke gpu` in one command and `fusion streams` in the
#     next (docs/gpu-checklist.md says what each number decides);
#   * every step runs under `timeout`, and no step starts past GPU_CHECK_DEADLINE_S (default
#     560 s after the start), so the results are packed before the tool's limit;
#   * the log is written straight into $OUT as it runs (a killed command still returns it);
#   * everything else the run writes (its run directory and the new files in bench/results/)
#     goes back as ONE tarball: $OUT/gpu-check-results.tar.gz, paths relative to the checkout
#     (extract it in the checkout and commit bench/results/).
#
# Exit status: 0 every step passed; 1 a step failed or timed out; 3 no usable GPU (nothing ran).
# For the CPU tests: `--pack-only` packs GPU_CHECK_RUN_DIR into $OUT and exits;
# GPU_CHECK_DRY_RUN=1 skips the GPU check and prints each step's command instead of running it.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PYTHONUNBUFFERED=1
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
# one kernel cache inside the checkout (git-ignored), so later steps and commands reuse it
export CUPY_CACHE_DIR="$root/.cupy-kernel-cache"
mkdir -p "$CUPY_CACHE_DIR"

start=$(date +%s)
deadline=${GPU_CHECK_DEADLINE_S:-560}
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
run_dir=${GPU_CHECK_RUN_DIR:-bench/results/gpu-check-$stamp}
mkdir -p "$run_dir"
marker="$run_dir/.started"
[ -e "$marker" ] || touch "$marker"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  log="$OUT/gpu-check.log"
else
  log="$run_dir/gpu-check.log"
fi

pack() {
  # the run directory and every file bench/results/ gained during the run, as one tarball
  [ -n "${OUT:-}" ] || return 0
  [ "$log" -ef "$run_dir/gpu-check.log" ] || cp "$log" "$run_dir/gpu-check.log" 2>/dev/null
  local list
  list=$(mktemp)
  find "$run_dir" -type f ! -name .started >"$list"
  find bench/results -type f -newer "$marker" ! -path "$run_dir/*" >>"$list" 2>/dev/null
  tar -czf "$OUT/gpu-check-results.tar.gz" --ignore-failed-read -T "$list"
  echo "packed $(wc -l <"$list") files into \$OUT/gpu-check-results.tar.gz" | tee -a "$log"
  rm -f "$list"
}

if [ "${1:-}" = "--pack-only" ]; then
  pack
  exit 0
fi
trap 'echo "gpu_check: interrupted" | tee -a "$log"; pack; exit 1' TERM INT

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(smoke gpu fusion memory streams)
for step in "${steps[@]}"; do
  case "$step" in
    smoke | gpu | fusion | memory | streams) ;;
    *) echo "gpu_check: unknown step '$step' (use: smoke gpu fusion memory streams)" | tee -a "$log"; exit 2 ;;
  esac
done

{
  echo "# gpu_check $(date -u +%FT%TZ): ${steps[*]} (run dir $run_dir)"
  git log -1 --format='commit %H %s' 2>/dev/null
}  2>&1 | tee -a "$log"

# No GPU: say so at once and stop (the steps would only skip or time the CPU).
gpu_reason=$(timeout 60 python3 -c '
import sys
from gpugraph.backends.base import cupy_status
s = cupy_status()
print(s.reason)
sys.exit(0 if s.name == "cupy" else 3)' 2>&1)
gpu_rc=$?
[ -n "${GPU_CHECK_DRY_RUN:-}" ] && gpu_rc=0 && gpu_reason="dry run: no GPU check"
if [ $gpu_rc -ne 0 ]; then
  echo "gpu_check: no usable GPU ($gpu_reason); nothing run" | tee -a "$log"
  pack
  [ -n "${OUT:-}" ] || [ -n "${GPU_CHECK_RUN_DIR:-}" ] || rm -rf "$run_dir"  # nothing to keep
  exit 3
fi
{
  echo "$gpu_reason"
  timeout 60 python3 -m gpugraph info
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  python3 -c '
import importlib
for m in ("cupy", "numpy", "torch", "triton", "pytest", "xdist", "pytest_timeout"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:
        print(m, "absent:", type(e).__name__)'
} 2>&1 | tee -a "$log"

pytest_opts=(-q -rfE --tb=short -p no:cacheprovider)
python3 -c 'import pytest_timeout' 2>/dev/null && pytest_opts+=(--timeout=120)
python3 -c 'import xdist' 2>/dev/null && pytest_opts+=(-n "$(($(nproc) < 8 ? $(nproc) : 8))")

status=0
run_step() {
  local name=$1 budget=$2
  shift 2
  local left=$((deadline - ($(date +%s) - start)))
  if [ "$left" -lt 30 ]; then
    echo "## $name: skipped, ${left}s left of the ${deadline}s deadline" | tee -a "$log"
    status=1
    return
  fi
  [ "$budget" -gt "$left" ] && budget=$left
  echo "## $name (timeout ${budget}s) $(date -u +%T)" | tee -a "$log"
  local t0 rc
  t0=$(date +%s)
  local run=()
  [ -n "${GPU_CHECK_DRY_RUN:-}" ] && run=(echo "dry run:")
  timeout -k 10 "$budget" "${run[@]}" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && echo "## $name: TIMED OUT after ${budget}s" | tee -a "$log"
  echo "## $name: exit $rc in $(($(date +%s) - t0))s" | tee -a "$log"
  [ "$rc" -eq 0 ] || status=1
}

for step in "${steps[@]}"; do
  case "$step" in
    smoke) run_step smoke 150 python3 bench/gpu_smoke.py --json "$run_dir/smoke.json" ;;
    gpu) run_step gpu 360 python3 -m pytest "${pytest_opts[@]}" -m gpu \
      --junitxml="$run_dir/gpu-junit.xml" tests ;;
    fusion) run_step fusion 240 python3 bench/bench_fusion.py ;;
    memory) run_step memory 200 python3 bench/bench_memory.py ;;
    streams) run_step streams 150 python3 bench/bench_streams.py ;;
  esac
done
echo "gpu_check finished with status $status in $(($(date +%s) - start))s" | tee -a "$log"
pack
exit $status
