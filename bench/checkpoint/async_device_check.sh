#!/usr/bin/env bash
# async_device_check.sh — run from the repository root of a release build with the CUDA backend, on a GPU node:
# [checkpoint] async on CUDA (pinned snapshot through the backend) bit-identical to sync on 2 ranks,
# then bench_async.sh on the GPU and on the node's CPUs (2 ranks x 8 threads). About 6 minutes.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
B=$PWD/build/release
nvidia-smi -L; nproc; uptime
ldd "$B/fmtrain" | grep "not found" && exit 3
echo "== correctness on CUDA: async vs sync, tiny model, 2 ranks"
export FMTRAIN_EXE=$B/fmtrain FMTRAIN_BINARY_DIR=$B
# shellcheck source=tests/train/lib.sh disable=SC1091
source tests/train/lib.sh
d=/tmp/dc; rm -rf "$d"; mkdir -p "$d"
"$MAKE_DATASET" "$d/d.h5" repeat 32 1024 16 2 >/dev/null
write_ini "$d/p.ini" "$d/d.h5" "$d/x"
for m in false true; do
  timeout 120 mpiexec -n 2 "$B/fmtrain" train "$d/p.ini" --set runtime.device=cuda --set train.steps=30 --set checkpoint.every_steps=10 --set checkpoint.keep_last=5 --set run.dir="$d/$m" --set checkpoint.async=$m >"$d/$m.txt" 2>&1 || tail -20 "$d/$m.txt"
  grep -E "checkpoint step|backend|device" "$d/$m.txt" | head -8
done
/usr/bin/python3 - "$d" <<'PY'
import sys, h5py, numpy as np
d = sys.argv[1]; n = 0
for s in (10, 20, 30):
    fa, fb = (h5py.File(f"{d}/{m}/checkpoints/step-{s:08d}.h5", "r") for m in ("false", "true"))
    for g in ("params", "adam_m", "adam_v"):
        for k in fa[g]:
            assert np.array_equal(fa[g][k][()].view(np.uint32), fb[g][k][()].view(np.uint32)), (s, g, k)
            n += 1
print("CUDA async vs sync: %d datasets bit-identical" % n)
PY
echo "== bench GPT-2 124M, 2 ranks on the GPU"
FMTRAIN_BENCH_SET="--set runtime.device=cuda" timeout 200 bench/checkpoint/bench_async.sh "$B" /tmp/bg 1 2 2>&1 | tail -9
echo "== bench GPT-2 124M, 2 ranks x 8 threads on the CPUs"
FMTRAIN_BENCH_SET="--set runtime.threads=8" timeout 240 bench/checkpoint/bench_async.sh "$B" /tmp/bc 1 2 2>&1 | tail -9
