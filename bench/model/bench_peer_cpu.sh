#!/usr/bin/env bash
# bench_peer_cpu.sh — fmtrain against PyTorch on the same CPU cores: GPT-2 124M training steps, B=4,
# T=64 (or SEQ), P threads, interleaved so that every trainer sees the same neighbours. Per round:
#   fmtrain-bench fp32, PyTorch fp32 eager, PyTorch fp32 torch.compile,
#   fmtrain-bench bf16, PyTorch bf16 autocast eager, PyTorch bf16 autocast torch.compile
# (PyTorch: bench/cuda/peer_gpt2.py --device cpu: SDPA, fused AdamW, random tokens).
#
# Usage: bench/model/bench_peer_cpu.sh BENCH_EXE PYTHON [ROUNDS] [THREADS] [SEQ]
#   PYTHON: an interpreter that imports torch (e.g. a venv with `pip install torch numpy`; Debian's
#   python3-torch 1.13 has no CPU torch.compile worth measuring). Defaults: 2 rounds, 2 threads, T 64.
# Prints one line per run: <UTC time> <trainer> <precision> <mode> tokens_per_s=<x> load=<a>-><b>,
# then nothing else: ratios are for the reader, from runs of the same round.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
exe=$1 py=$2 rounds=${3:-2} threads=${4:-2} seq=${5:-64}
here=$(cd "$(dirname "$0")" && pwd)
peer=$here/../cuda/peer_gpt2.py
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
"$py" -c 'import torch' || { echo "$py cannot import torch" >&2; exit 2; }
load() { cut -d' ' -f1 /proc/loadavg; }
fm() { # fm PRECISION
  local l0 out
  l0=$(load)
  out=$("$exe" --layers 12 --heads 12 --dim 768 --vocab 50257 --max-seq 1024 --batch 4 \
        --threads "$threads" --steps 5 --warmup 1 --clock wall --seq "$seq" --precision "$1" 2>&1 | tail -1)
  echo "$(date -u +%T) fmtrain $1 - $(echo "$out" | grep -o 'tokens_per_s=[0-9.]*')" \
    "$(echo "$out" | grep -o 'fraction_of_peak=[0-9.]*') load=$l0->$(load)"
}
pt() { # pt PRECISION MODE
  local out
  out=$(OMP_NUM_THREADS=$threads "$py" "$peer" --device cpu --threads "$threads" --precision "$1" \
        --mode "$2" --batch 4 --seq "$seq" --steps 5 --warmup 2 2>&1 | tail -1)
  echo "$(date -u +%T) torch $1 $2 $(echo "$out" | grep -o 'tokens_per_s=[0-9.]*') $(echo "$out" | grep -o 'load=.*')"
}
for r in $(seq 1 "$rounds"); do
  echo "# round $r"
  fm fp32; pt fp32 eager; pt fp32 compile
  fm bf16; pt bf16 eager; pt bf16 compile
done
