#!/usr/bin/env bash
# Builds ccn._core with the CPU backend and an *emulated* CUDA backend into build/emu, so that
# the CUDA kernels run (slowly) on a machine without a GPU and every device-fixture test,
# tests/test_cuda_matches_cpu.py included, checks them against the CPU:
#
#     bash tools/cuda_emu/build.sh
#     CCN_BUILD_DIR=build/emu PYTHONPATH=python python -m pytest -q tests
#
# How: transform.py rewrites each csrc/cuda/*.cu launch `k<<<grid, block, smem, stream>>>(args)`
# into a call of emu::launch and each `__shared__` array into the emulator's block buffer; the
# .cu files compile as C++ against include/cuda_runtime.h, a stand-in for the CUDA runtime
# (device memory is host memory, one device), with -fsanitize=thread so that every load and
# store of a kernel reaches emu.cpp's checker (no sanitizer runtime is linked: emu.cpp defines
# the hooks). emu.cpp runs blocks in a random order and a block's threads as fibers, and fails
# a launch on: a read of __shared__ memory no thread of the block wrote, a race between blocks
# through device memory, threads reaching different numbers of barriers, warp intrinsics
# (__shfl*_sync, __ballot_sync, __syncwarp, __any/__all_sync) whose lanes do not all arrive,
# launches over the limits. The seed is printed; CCN_EMU_SEED=n repeats a run. It counts
# coalescing and bank conflicts on sampled blocks (a float2/float4 is one access, see emu.cpp;
# a misaligned one fails the launch) (CCN_EMU_REPORT=file: a JSON line per
# launch; tools/cuda_emu/check_counters.py reads them). Timings mean nothing. Dynamic
# `extern __shared__` arrays are not supported. With EXTRA="-fsanitize=address" (and, when
# running, LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so.6)"
# ASAN_OPTIONS=detect_leaks=0) out-of-bounds accesses are caught instead (the checker is off).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EMU=$ROOT/tools/cuda_emu
OUT=${OUT_DIR:-$ROOT/build/emu}
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-2}
# ccache (when installed) keeps rebuilds after an emulator change short.
CXX=${CXX:-$(command -v ccache >/dev/null && echo "ccache g++" || echo g++)}
mkdir -p "$OUT/gen" "$OUT/obj"

for cu in "$ROOT"/csrc/cuda/*.cu; do
  gen=$OUT/gen/$(basename "$cu" .cu)_cu.cpp
  "$PYTHON" "$EMU/transform.py" "$cu" >"$gen.new"
  if cmp -s "$gen.new" "$gen"; then rm "$gen.new"; else mv "$gen.new" "$gen"; fi
done

blas_include=$("$PYTHON" -c "import scipy_openblas32 as s; print(s.get_include_dir())")
blas_lib=$("$PYTHON" -c "import scipy_openblas32 as s; print(s.get_lib_dir())")
flags=(-O2 -g -fPIC -std=c++17 -DCCN_WITH_CUDA=1 -DCCN_CUDA_EMULATED=1 -I"$EMU/include" -I"$ROOT/csrc" -I"$blas_include"
       -Wall -Wno-unknown-pragmas -fvisibility=hidden ${EXTRA:-} $("$PYTHON" -m pybind11 --includes))
# The kernels' accesses go to the checker, unless another sanitizer is asked for.
kernel_flags=(-fsanitize=thread --param tsan-instrument-func-entry-exit=0)
case "${EXTRA:-}" in *-fsanitize=*) kernel_flags=() ;; esac
objects=()
for src in "$ROOT"/csrc/*/*.cpp "$OUT"/gen/*.cpp "$EMU/emu.cpp"; do
  obj=$OUT/obj/$(basename "$(dirname "$src")")_$(basename "$src" .cpp).o
  objects+=("$obj")
  # Rebuild when the source or any header it may include changed.
  if [ ! -f "$obj" ] || [ -n "$(find "$src" "$ROOT/csrc" "$EMU" -newer "$obj" \( -name '*.h' -o -name '*.cuh' -o -name '*.inc' -o -samefile "$src" \) -print -quit)" ]; then
    echo "compiling $src"
    extra=()
    case "$src" in "$OUT"/gen/*) extra=("${kernel_flags[@]}") ;; esac
    $CXX "${flags[@]}" "${extra[@]}" -c "$src" -o "$obj" &
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  fi
done
wait
suffix=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
g++ -shared ${EXTRA:-} -o "$OUT/_core$suffix" "${objects[@]}" -L"$blas_lib" -lscipy_openblas -Wl,-rpath,"$blas_lib" -lpthread -ldl
echo "built $OUT/_core$suffix"
