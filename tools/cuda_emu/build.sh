#!/usr/bin/env bash
# Builds ccn._core with the CPU backend and an *emulated* CUDA backend into build/emu, so that
# the CUDA kernels run (slowly) on a machine without a GPU and every device-fixture test,
# tests/test_cuda_matches_cpu.py included, checks them against the CPU:
#
#     bash tools/cuda_emu/build.sh
#     CCN_BUILD_DIR=build/emu PYTHONPATH=python python -m pytest -q tests
#
# How: transform.py rewrites each csrc/cuda/*.cu launch `k<<<grid, block, smem, stream>>>(args)`
# into a call of emu::launch, and the .cu files compile as C++ against include/cuda_runtime.h,
# a stand-in for the CUDA runtime (device memory is host memory, one device). emu.cpp runs a
# block's threads as fibers switched at __syncthreads(), in a random order per phase: a
# missing barrier gives wrong results; launch limits (1024 threads, grid y/z <= 65535, 48 KiB
# of dynamic shared memory) are checked. Blocks run one at a time, so races between blocks go
# unseen; warp intrinsics (__shfl*, __ballot*) and dynamic `extern __shared__` arrays are not
# supported; timings mean nothing. With EXTRA="-fsanitize=address" (and, when running,
# LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so.6)"
# ASAN_OPTIONS=detect_leaks=0) out-of-bounds global and __shared__ accesses are caught.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EMU=$ROOT/tools/cuda_emu
OUT=${OUT_DIR:-$ROOT/build/emu}
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-2}
mkdir -p "$OUT/gen" "$OUT/obj"

for cu in "$ROOT"/csrc/cuda/*.cu; do
  gen=$OUT/gen/$(basename "$cu" .cu)_cu.cpp
  "$PYTHON" "$EMU/transform.py" "$cu" >"$gen.new"
  if cmp -s "$gen.new" "$gen"; then rm "$gen.new"; else mv "$gen.new" "$gen"; fi
done

blas_include=$("$PYTHON" -c "import scipy_openblas32 as s; print(s.get_include_dir())")
blas_lib=$("$PYTHON" -c "import scipy_openblas32 as s; print(s.get_lib_dir())")
flags=(-O2 -g -fPIC -std=c++17 -DCCN_WITH_CUDA=1 -I"$EMU/include" -I"$ROOT/csrc" -I"$blas_include"
       -Wall -Wno-unknown-pragmas -fvisibility=hidden ${EXTRA:-} $("$PYTHON" -m pybind11 --includes))
objects=()
for src in "$ROOT"/csrc/*/*.cpp "$OUT"/gen/*.cpp "$EMU/emu.cpp"; do
  obj=$OUT/obj/$(basename "$(dirname "$src")")_$(basename "$src" .cpp).o
  objects+=("$obj")
  # Rebuild when the source or any header it may include changed.
  if [ ! -f "$obj" ] || [ -n "$(find "$src" "$ROOT/csrc" "$EMU" -newer "$obj" \( -name '*.h' -o -name '*.cuh' -o -name '*.inc' -o -samefile "$src" \) -print -quit)" ]; then
    echo "compiling $src"
    g++ "${flags[@]}" -c "$src" -o "$obj" &
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  fi
done
wait
suffix=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
g++ -shared ${EXTRA:-} -o "$OUT/_core$suffix" "${objects[@]}" -L"$blas_lib" -lscipy_openblas -Wl,-rpath,"$blas_lib" -lpthread
echo "built $OUT/_core$suffix"
