#!/usr/bin/env bash
# Build + GPU tests + sanitizers + kernel benchmarks in one call, for a machine with a GPU
# and no network (the H100 / H200 machines). Run from anywhere:
#
#     bash benchmarks/gpu_check.sh
#
# Steps (each with a time limit, and all within GPU_CHECK_BUDGET seconds, default 570, so
# that the summary is written inside a 10-minute call; about 5 minutes on an H100):
#   1. environment: GPU, driver, nvcc, Python packages             -> env.log
#   2. pip install --no-build-isolation --no-deps . with CUDA on, for the visible GPU's
#      architecture                                                 -> build.log
#   3. python -m pytest -q tests (device-fixture tests run on cuda:0 too) -> tests.log
#   4. compute-sanitizer memcheck and racecheck on tests/test_cuda_matches_cpu.py (racecheck
#      without the batch-128 cases; skipped, with a note, when compute-sanitizer is absent)
#                                                                   -> memcheck.log, racecheck.log
#   5. python benchmarks/bench_ops.py --device=cuda --layers=alexnet --batch=128, if present
#                                                                   -> bench.log
#   6. benchmarks/kernel_lab/lab.py --gpu for filterActs, imgActs and weightActs on AlexNet's
#      conv2: every numbered version checked at full size and timed (CUDA events, L2 flushed)
#                                                                   -> lab.log
# Everything goes to $OUT when it is set, else ./gpu_check_out, with summary.txt listing
# each step's status and time. Exit status: non-zero when the build, a test or a sanitizer
# check fails (a sanitizer run that only times out is reported, not counted as a failure).
#
# Missing Python packages (the build needs scipy-openblas32, which the GPU image lacks) are
# installed offline from the wheels in $CCN_WHEELS (default: .whl in the repository root).
# Fetch it on a machine with network, from the repository root:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux2014_x86_64 -d .whl scipy-openblas32
set -u -o pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
OUT_DIR=${OUT:-$REPO/gpu_check_out}
mkdir -p "$OUT_DIR"
SUMMARY=$OUT_DIR/summary.txt
: >"$SUMMARY"
PYTHON=${PYTHON:-python3}
WHEELS=${CCN_WHEELS:-$REPO/.whl}
unset CCN_BUILD_DIR  # test the installed package, not a development build
export PYTHONUNBUFFERED=1
failed=0
DEADLINE=$((SECONDS + ${GPU_CHECK_BUDGET:-570}))

note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME LIMIT_SECONDS COMMAND...: runs COMMAND with its output in NAME.log, notes the
# outcome and returns COMMAND's exit status (124 on timeout, or when no time is left).
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - SECONDS))
  [ $left -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    note "$(printf '%-10s %-24s' "$name" "skipped: out of time")"
    return 124
  fi
  local start=$SECONDS
  echo "== $name: $*" >"$OUT_DIR/$name.log"
  timeout --kill-after=10 "$limit" "$@" >>"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  local outcome=ok
  [ $rc -eq 124 ] && outcome="TIMEOUT after ${limit}s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && outcome="FAILED (exit $rc)"
  note "$(printf '%-10s %-24s %4ds  %s.log' "$name" "$outcome" $((SECONDS - start)) "$name")"
  return $rc
}

# The last line of a pytest log that says how many tests passed / failed.
pytest_result() { grep -E '(passed|failed|error|skipped|no tests ran)' "$OUT_DIR/$1.log" | tail -n 1; }

note "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) in $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"

# ---- 1. environment ------------------------------------------------------------------
arch=""
if command -v nvidia-smi >/dev/null; then
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
  note "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1), compute capability ${arch:-unknown}"
else
  note "gpu: none visible (nvidia-smi absent): CUDA tests will skip"
fi
step env 60 bash -c "nvidia-smi; nvcc --version; $PYTHON --version; $PYTHON -m pip list 2>/dev/null | grep -iE '^(numpy|torch|pybind11|scikit-build-core|cmake|ninja|pytest|scipy-openblas32) '"

missing=$($PYTHON - <<'EOF'
import importlib.util
needed = {"scipy_openblas32": "scipy-openblas32", "pybind11": "pybind11", "scikit_build_core": "scikit-build-core",
          "numpy": "numpy", "pytest": "pytest"}
print(" ".join(dist for mod, dist in needed.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [ -n "$missing" ]; then
  note "missing Python packages: $missing; installing from $WHEELS"
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --find-links "$WHEELS" $missing >>"$OUT_DIR/env.log" 2>&1 ||
      note "could not install $missing from $WHEELS (see env.log)"
  else
    note "no wheels in $WHEELS: the build will fail (see this script's header to fetch them)"
  fi
fi

# ---- 2. build --------------------------------------------------------------------------
build_args=(--config-settings=cmake.define.CONVNET_CUDA=ON)
[ -n "$arch" ] && build_args+=(--config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES="$arch")
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
if ! step build 300 $PYTHON -m pip install --no-build-isolation --no-deps -v "${build_args[@]}" "$REPO"; then
  note "build failed: nothing else runs"
  exit 1
fi
backend=$(cd /tmp && $PYTHON -c "from ccn import _core; print(_core.has_cuda_backend, _core.cuda_device_count())" 2>&1)
note "installed ccn: has_cuda_backend, cuda_device_count = $backend"
case "$backend" in
  "True "[1-9]*) ;;
  *) note "the installed engine has no usable CUDA backend"; failed=1 ;;
esac

# ---- 3. tests --------------------------------------------------------------------------
step tests 240 $PYTHON -m pytest -q -rs tests || failed=1
note "           $(pytest_result tests)"

# ---- 4. compute-sanitizer --------------------------------------------------------------
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -z "$sanitizer" ]; then
  note "sanitizer  skipped: compute-sanitizer not found"
else
  for tool in memcheck racecheck; do
    # racecheck instruments every shared-memory access: batch 128 (the same tiles as 7, only
    # more of them) would take most of the budget.
    selection=()
    [ $tool = racecheck ] && selection=(-k "not 128")
    step $tool 90 "$sanitizer" --tool $tool --error-exitcode 86 --target-processes all \
      $PYTHON -m pytest -q -x -p no:cacheprovider tests/test_cuda_matches_cpu.py "${selection[@]}"
    rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && failed=1
    note "           $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT_DIR/$tool.log" | tail -n 1) $(pytest_result $tool)"
  done
fi

# ---- 5. benchmarks ---------------------------------------------------------------------
if [ -f benchmarks/bench_ops.py ]; then
  step bench 150 $PYTHON benchmarks/bench_ops.py --device=cuda --layers=alexnet --batch=128 ||
    note "           (benchmarks do not decide the exit status)"
else
  note "bench      skipped: benchmarks/bench_ops.py not present"
fi

# ---- 6. kernel lab: every numbered version checked at full size and timed -----------------
# (the emulator's H100 model of the same kernels is in RESULTS.md, to set beside these times)
step lab 120 bash -c "for op in filter_acts img_acts weight_acts; do echo \"## \$op conv2\"; \
  $PYTHON benchmarks/kernel_lab/lab.py \$op --layer conv2 --gpu || exit 1; done" ||
  note "           (the lab does not decide the exit status)"

note "result: $([ $failed -eq 0 ] && echo PASS || echo FAIL)  (logs in $OUT_DIR)"
exit $failed
