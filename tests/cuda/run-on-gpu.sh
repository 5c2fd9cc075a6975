#!/usr/bin/env bash
# run-on-gpu.sh — run the CUDA tests and the GPT-2 124M benchmark on a machine with a GPU, from an
# EXISTING build directory (it builds nothing). Prints everything; exits non-zero when a test fails.
#
# Usage: tests/cuda/run-on-gpu.sh [BUILD_DIR]        (default: build/release, then build-cuda)
#   FM_BENCH_BATCHES="64 32 16" micro-batches to try, largest first (the first that fits is reported)
#   FM_BENCH_STEPS=10           timed steps
#   FM_BENCH_PEAK_TFLOPS=989    stated peak for MFU (H100 SXM dense bf16; the backend is fp32 for now)
#   FM_SKIP_BENCH=1             tests only
#
# The build must have been configured with the CUDA backend (FMTRAIN_CUDA=ON or AUTO with nvcc) for an
# architecture of this GPU (CMAKE_CUDA_ARCHITECTURES, default 80;90: A100, H100/GH200).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${1:-}
if [[ -z $build ]]; then
  for d in "$src/build/release" "$src/build-cuda"; do
    if [[ -d $d/tests/cuda ]]; then build=$d; break; fi
  done
fi
if [[ -z $build || ! -x $build/tests/cuda/test_cuda_registry ]]; then
  echo "run-on-gpu.sh: no build with the CUDA tests found (${build:-build/release, build-cuda});" \
       "configure with -DFMTRAIN_CUDA=ON and build the targets test_kernels_backend_ops test_cuda_model" \
       "test_model_families" \
       "test_cuda_registry fmtrain-bench first" >&2
  exit 2
fi
build=$(cd "$build" && pwd)

# the CUDA runtime and cuBLAS the build linked against
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
         /usr/local/cuda/targets/sbsa-linux/lib; do
  if [[ -d $d ]]; then LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
done
export LD_LIBRARY_PATH

echo "=== machine"
date -u
uname -a
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm --format=csv
else
  echo "nvidia-smi not found"
fi
if command -v nvcc >/dev/null; then nvcc --version | tail -2; fi
grep -E "CMAKE_CUDA_ARCHITECTURES|FMTRAIN_CUDA|CMAKE_BUILD_TYPE" "$build/CMakeCache.txt" || true
echo "build: $build"
echo "source: $src ($(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"

status=0
for t in cuda/test_cuda_registry kernels/test_kernels_backend_ops cuda/test_cuda_model \
         model/test_model_families; do
  echo "=== $t"
  start=$(date +%s.%N)
  FM_TEST_REQUIRE_BACKENDS=cuda "$build/tests/$t"
  rc=$?
  end=$(date +%s.%N)
  echo "=== $t: exit $rc ($(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s)"
  if [[ $rc -eq 77 ]]; then
    echo "$t SKIPPED: no GPU visible to this process"
    status=1
  elif [[ $rc -ne 0 ]]; then
    status=1
  fi
done
echo "=== ctest -L cuda (the same tests as CTest reports them)"
(cd "$build" && ctest -L cuda --output-on-failure) || status=1

if [[ ${FM_SKIP_BENCH:-0} != 1 ]]; then
  bench=$build/bench/model/fmtrain-bench
  echo "=== fmtrain-bench on the CUDA backend: GPT-2 124M, seq 1024"
  if [[ ! -x $bench ]]; then
    echo "fmtrain-bench not built ($bench)"; status=1
  else
    ok=0
    for B in ${FM_BENCH_BATCHES:-64 32 16 8 4 2 1}; do
      echo "--- batch $B"
      if "$bench" --device cuda --layers 12 --heads 12 --dim 768 --vocab 50257 --seq 1024 \
           --max-seq 1024 --batch "$B" --threads 4 --steps "${FM_BENCH_STEPS:-10}" --warmup 2 \
           --peak-size 8192 --peak-tflops "${FM_BENCH_PEAK_TFLOPS:-989}"; then
        ok=1; break
      fi
      echo "--- batch $B failed (out of memory, or the bench lacks --device/--peak-tflops: see above)"
    done
    [[ $ok == 1 ]] || status=1
  fi
fi
echo "=== run-on-gpu.sh: $([[ $status == 0 ]] && echo 'all CUDA tests passed' || echo 'FAILURES or skips above')"
exit $status
