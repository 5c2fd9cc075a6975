#!/usr/bin/env bash
# pack-for-device.sh — builds the bare-GPU-node configuration HERE (preset cuda-bare: no MPI, HDF5 or
# hwloc; sm_90 by default) and packs what tests/cuda/run-on-gpu.sh needs on a GPU machine into OUTDIR
# (default .device/, git-ignored): bin/ (the CUDA tests, test_model_families, fmtrain-bench,
# fmtrain-kernel-profile), lib.tar.xz
# (every non-system shared library ldd names for them: CMocka, OpenBLAS, oneDNN, libgomp, ...;
# compressed to stay far below 64 MiB), MANIFEST (commit, flags, sizes). NOT packed: the CUDA
# libraries (libcudart, libcublas, libcublasLt, cuDNN, NCCL: the device has them under
# /usr/local/cuda/lib64 or in PyTorch's nvidia/*/lib, which run-on-gpu.sh adds to LD_LIBRARY_PATH) and
# the C runtime (libc, libm, libstdc++, libgcc_s, ...). The scripts themselves travel with the
# working tree.
#
# Usage: tests/cuda/pack-for-device.sh [OUTDIR]
#   FM_PACK_ARCH=90        CMAKE_CUDA_ARCHITECTURES of the build (H100/H200: 90)
#   FM_PACK_JOBS=2         parallel build jobs
#   FM_PACK_BUILD=DIR      build directory (default build/cuda-bare)
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$src/.device}
build=${FM_PACK_BUILD:-$src/build/cuda-bare}
arch=${FM_PACK_ARCH:-90}
targets=(test_cuda_registry test_kernels_backend_ops test_cuda_model test_model_families fmtrain-bench
         fmtrain-kernel-profile)

cd "$src"
cmake --preset cuda-bare -B "$build" -DCMAKE_CUDA_ARCHITECTURES="$arch" >/dev/null
cmake --build "$build" -j"${FM_PACK_JOBS:-2}" --target "${targets[@]}"

rm -rf "${out:?}/bin" "${out:?}/lib" "$out/lib.tar.xz" "$out/MANIFEST"
mkdir -p "$out/bin"
libs=$(mktemp -d)
trap 'rm -rf "$libs"' EXIT
# the C runtime and the CUDA libraries stay behind (see above)
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libgcc_s\.|libstdc\+\+\.|libcuda\.|libcudart\.|libcublas\.|libcublasLt\.|libcudnn|libnccl|libnvrtc|libnvJitLink|libcufft|libcurand|libcusparse|libcusolver)'
for t in "${targets[@]}"; do
  exe=$(find "$build" -name "$t" -type f -perm -u+x | head -1)
  [[ -n $exe ]] || { echo "pack-for-device.sh: $t was not built in $build" >&2; exit 1; }
  cp "$exe" "$out/bin/"
  if ldd "$exe" | grep -E "(libmpi|libhdf5|libhwloc)"; then
    echo "pack-for-device.sh: $t links MPI, HDF5 or hwloc (above): not a bare-node build" >&2; exit 1
  fi
  ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
    if [[ $name =~ $skip ]]; then continue; fi
    cp -L "$path" "$libs/$name"
  done
done
tar -C "$libs" -cJf "$out/lib.tar.xz" .
{
  echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) from $(git -C "$src" rev-parse --short HEAD)$(git -C "$src" diff --quiet HEAD || echo '+uncommitted changes')"
  echo "build $build: CUDA architectures $arch; $(grep -E '^CMAKE_BUILD_TYPE:' "$build/CMakeCache.txt")"
  echo "libraries (lib.tar.xz): $(find "$libs" -type f -printf '%f ')"
  (cd "$out" && du -b bin/* lib.tar.xz | awk '{printf "  %s %.1f MiB\n", $2, $1 / 1048576}')
} > "$out/MANIFEST"
cat "$out/MANIFEST"
total=$(du -sb "$out" | awk '{print $1}')
echo "pack-for-device.sh: $out holds $((total / 1048576)) MiB"
if (( total > 60 * 1048576 )); then
  echo "pack-for-device.sh: more than 60 MiB: the device copy allows 64 MiB in all" >&2; exit 1
fi
