#!/usr/bin/env bash
# `fmtrain topology`: plans for the saved topologies, this machine, and usage errors.
set -euo pipefail
exe=${FMTRAIN_EXE:?}
fx=${FMTRAIN_SOURCE_DIR:?}/tests/topology
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fail() { echo "FAIL: $*"; echo "--- output:"; cat "$out"; exit 1; }

# Two sockets, 4 ranks: a quarter of the node each, in package/NUMA order.
"$exe" topology --xml "$fx/two-socket.xml" --ranks-per-node 4 >"$out" || fail "two-socket plan"
grep -q "2 packages, 8 NUMA nodes, 128 cores, 256 PUs" "$out" || fail "machine summary"
grep -Eq "^   0  two-socket.xml  auto    0-31,128-159    0-1 +32 +32  core    no GPU" "$out" || fail "rank 0 row"
grep -Eq "^   3  two-socket.xml  auto    96-127,224-255  6-7 +32 +32  core    no GPU" "$out" || fail "rank 3 row"
if grep -q warning "$out"; then fail "unexpected warning"; fi

# Inside a launcher binding with the numa mode and a thread override.
"$exe" topology --xml "$fx/two-socket.xml" --ranks-per-node 2 --binding 64-127 --bind numa --threads 8 >"$out" \
  || fail "bound plan"
grep -q "starting binding: 64-127 (narrower than the node: kept, never widened)" "$out" || fail "binding line"
grep -Eq "^   1  two-socket.xml  numa    96-127 +6-7 +32 +8  set" "$out" || fail "numa row"

# GPUs: 4 ranks on the four-GPU node, one GPU each.
"$exe" topology --xml "$fx/four-gpu.xml" --ranks-per-node 4 --gpus >"$out" || fail "gpu plan"
grep -Eq "^   2  four-gpu.xml  auto    24-35,72-83  2 +12 +12  core    cuda2 \(NVIDIA A100-SXM4-80GB\)" "$out" \
  || fail "gpu row"

# This machine: more ranks than cores warns and still succeeds; OMP_NUM_THREADS is honoured.
cores=$("$exe" topology | sed -n 's/.* \([0-9]*\) cores\{0,1\}, .*/\1/p')
[ -n "$cores" ] || fail "core count of this machine"
"$exe" topology --ranks-per-node $((cores + 1)) >"$out" || fail "oversubscribed plan must not fail"
grep -q "ranks share $cores core" "$out" || fail "oversubscription warning"
OMP_NUM_THREADS=3 "$exe" topology >"$out" || fail "OMP_NUM_THREADS plan"
grep -q "threads from OMP_NUM_THREADS" "$out" || fail "OMP_NUM_THREADS source"

# Usage errors exit 2 and say what is wrong; a broken XML file exits 3.
set +e
"$exe" topology --bind sockets >"$out" 2>&1; rc=$?
set -e
[ $rc -eq 2 ] || fail "--bind sockets: exit $rc, expected 2"
grep -q "not one of auto, socket, numa, core, none" "$out" || fail "bind message"
set +e
"$exe" topology --ranks-per-node 0 >"$out" 2>&1; rc=$?
set -e
[ $rc -eq 2 ] || fail "--ranks-per-node 0: exit $rc"
echo "<topology>" >"$out.xml"
set +e
"$exe" topology --xml "$out.xml" >"$out" 2>&1; rc=$?
set -e
rm -f "$out.xml"
[ $rc -eq 3 ] || fail "broken xml: exit $rc, expected 3"
echo "fmtrain topology: all checks passed"
